//! `strata import s3://bucket/prefix FS[:/path]`: the reverse of export.
//! With a manifest (`.strata-manifest.jsonl`, written by `strata export`)
//! the tree comes back with its modes, owners, times, symbolic links,
//! hard links, special files and empty directories, and every file's
//! checksum is verified as it is read. Without one, any prefix of plain
//! objects becomes a tree of files (0644, directories 0755, owned by the
//! caller).
//!
//! Resuming: a file already at its path with the manifest's size and
//! modification time is skipped (import sets the time last, after the
//! contents are committed).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::Args;
use futures::StreamExt;
use indicatif::ProgressBar;
use strata_fuse::{Filesystem, Owner};
use strata_meta::{FileType, Ino, ROOT_INO, SetAttr, Timestamp};

use super::manifest::{self, Entry, MANIFEST};
use super::place::Place;
use super::{CliError, CliResult, parse_size};

#[derive(Args)]
pub struct ImportArgs {
    /// Metaserver addresses, comma separated [default: the embedded
    /// default's running mount].
    #[arg(long)]
    pub meta: Option<String>,
    /// Where from: `s3://bucket/prefix` (standard AWS configuration) or
    /// `file:///dir`.
    pub source: String,
    /// The filesystem, optionally with a directory inside it to import
    /// into (created if missing): `FS` or `FS:/path`.
    pub target: String,
    /// Files read and written at once.
    #[arg(long, short = 'j', default_value_t = 16)]
    pub jobs: usize,
    /// Bytes read from the source per request.
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    pub piece_size: u64,
    /// No progress bar (the summary is still printed).
    #[arg(long)]
    pub quiet: bool,
}

fn kind_of(name: &str) -> Option<FileType> {
    Some(match name {
        "file" => FileType::File,
        "dir" => FileType::Dir,
        "symlink" => FileType::Symlink,
        "fifo" => FileType::Fifo,
        "socket" => FileType::Socket,
        "char" => FileType::CharDev,
        "block" => FileType::BlockDev,
        _ => return None,
    })
}

/// Entries for a prefix of plain objects: a file per object, the
/// directories their keys imply.
fn entries_from_listing(objects: Vec<(String, u64)>) -> Vec<Entry> {
    // SAFETY: getuid/getgid only read the process's ids.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let now = Timestamp::now();
    let plain = |path: String, kind: &str, size: u64, mode: u32| Entry {
        path,
        kind: kind.into(),
        size,
        mode,
        uid,
        gid,
        mtime: now.sec,
        mtime_nsec: 0,
        checksum: None,
        origin: None,
        target: None,
        link: None,
        empty: false,
        rdev: None,
    };
    let mut dirs = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (key, size) in objects {
        if key == MANIFEST || key.starts_with(".strata-export/") {
            continue;
        }
        let key = key.trim_end_matches('/');
        if key.is_empty()
            || key
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            continue;
        }
        let mut at = 0;
        while let Some(i) = key[at..].find('/') {
            dirs.insert(key[..at + i].to_string());
            at += i + 1;
        }
        out.push(plain(key.to_string(), "file", size, 0o644));
    }
    out.retain(|e| !dirs.contains(&e.path));
    out.extend(dirs.into_iter().map(|d| plain(d, "dir", 0, 0o755)));
    out
}

/// Whether a file was there already, and its inode.
type Imported = (bool, Ino);

struct Ctx {
    core: Arc<Filesystem>,
    place: Place,
    piece: u64,
    bar: ProgressBar,
    files_done: AtomicU64,
}

fn fs_err(what: &str) -> impl FnOnce(strata_fuse::FsError) -> CliError + '_ {
    move |e| CliError(format!("{what}: {e}"))
}

pub async fn run(a: ImportArgs) -> CliResult {
    if a.jobs == 0 || a.jobs > 1024 {
        return Err(CliError("--jobs must be between 1 and 1024".into()));
    }
    if a.piece_size == 0 || a.piece_size > 1 << 30 {
        return Err(CliError(
            "--piece-size must be between 1 byte and 1G".into(),
        ));
    }
    let (fs_name, sub) = match a.target.split_once(':') {
        Some((f, p)) => (f.to_string(), p.to_string()),
        None => (a.target.clone(), String::new()),
    };
    if fs_name.contains('@') {
        return Err(CliError(format!(
            "{fs_name} is a snapshot: snapshots are read-only"
        )));
    }
    let place = Place::open(&a.source).await?;
    let started = Instant::now();
    let (entries, verified) = match place.read_all(MANIFEST).await? {
        Some(text) => {
            let (_, entries) = manifest::parse(&text)
                .map_err(|e| CliError(format!("{MANIFEST} in {}: {e}", a.source)))?;
            (entries, true)
        }
        None => (entries_from_listing(place.list().await?), false),
    };
    for e in &entries {
        if kind_of(&e.kind).is_none() {
            return Err(CliError(format!(
                "{}: unknown type {:?}; nothing imported",
                e.path, e.kind
            )));
        }
        if e.path.is_empty()
            || e.path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(CliError(format!(
                "{:?}: not a relative path; nothing imported",
                e.path
            )));
        }
    }
    let client = super::connect(a.meta.as_deref()).await?;
    let fs = client.open_fs(&fs_name).await?;
    let core = super::open::filesystem(fs, false, 256 << 20).await?;
    let root = make_dirs(&core, ROOT_INO, sub.split('/').filter(|c| !c.is_empty())).await?;
    let total: u64 = entries
        .iter()
        .filter(|e| e.kind == "file")
        .map(|e| e.size)
        .sum();
    let bar = super::place::progress_bar(total, a.quiet);
    let ctx = Arc::new(Ctx {
        core,
        place,
        piece: a.piece_size,
        bar,
        files_done: AtomicU64::new(0),
    });

    // Directories first, parents before children.
    let mut dirs: BTreeMap<String, Ino> = BTreeMap::from([(String::new(), root)]);
    let mut dir_entries: Vec<&Entry> = entries.iter().filter(|e| e.kind == "dir").collect();
    dir_entries.sort_by(|a, b| a.path.cmp(&b.path));
    for e in &dir_entries {
        let (parent, name) = split(&e.path);
        let p = parent_ino(&ctx, &mut dirs, parent).await?;
        let ino = make_dirs(&ctx.core, p, std::iter::once(name)).await?;
        dirs.insert(e.path.clone(), ino);
    }
    // Files (one path per hard-linked group gets the contents).
    let mut linked: HashMap<u64, &Entry> = HashMap::new();
    let mut later_links = Vec::new();
    let mut files = Vec::new();
    for e in entries.iter().filter(|e| e.kind == "file") {
        let (parent, _) = split(&e.path);
        let p = parent_ino(&ctx, &mut dirs, parent).await?;
        match e.link {
            Some(l) if linked.contains_key(&l) => later_links.push((e, p, l)),
            _ => {
                if let Some(l) = e.link {
                    linked.insert(l, e);
                }
                files.push((e, p));
            }
        }
    }
    let nfiles = files.len() as u64;
    let results: Vec<(String, Result<Imported, CliError>)> = futures::stream::iter(files)
        .map(|(e, p)| {
            let ctx = ctx.clone();
            async move {
                let r = import_file(&ctx, e, p, verified).await;
                let done = ctx.files_done.fetch_add(1, Ordering::Relaxed) + 1;
                ctx.bar.set_message(format!("{done}/{nfiles} files"));
                (e.path.clone(), r)
            }
        })
        .buffer_unordered(a.jobs)
        .collect()
        .await;
    ctx.bar.finish_and_clear();
    let mut failed = Vec::new();
    let mut skipped = 0;
    let mut inos: HashMap<String, Ino> = HashMap::new();
    for (path, r) in results {
        match r {
            Ok((was_there, ino)) => {
                skipped += was_there as u64;
                inos.insert(path, ino);
            }
            Err(e) => failed.push(format!("{path}: {e}")),
        }
    }
    if !failed.is_empty() {
        failed.sort();
        for f in failed.iter().take(20) {
            eprintln!("failed: {f}");
        }
        return Err(CliError(format!(
            "{} of {nfiles} files failed (listed above; run the same command again to finish)",
            failed.len()
        )));
    }
    for (e, p, l) in later_links {
        let first = &linked[&l].path;
        let (_, name) = split(&e.path);
        if ctx.core.lookup(p, name.as_bytes()).await.is_ok() {
            continue;
        }
        ctx.core
            .link(inos[first], p, name.as_bytes())
            .await
            .map_err(fs_err(&e.path))?;
    }
    // Symbolic links and special files.
    for e in entries
        .iter()
        .filter(|e| !matches!(e.kind.as_str(), "file" | "dir"))
    {
        let (parent, name) = split(&e.path);
        let p = parent_ino(&ctx, &mut dirs, parent).await?;
        if ctx.core.lookup(p, name.as_bytes()).await.is_ok() {
            continue;
        }
        let kind = kind_of(&e.kind).expect("checked above");
        let owner = Owner {
            uid: e.uid,
            gid: e.gid,
        };
        let made = if kind == FileType::Symlink {
            let target = e.target.clone().unwrap_or_default();
            ctx.core
                .symlink(p, name.as_bytes(), target.as_bytes(), owner)
                .await
        } else {
            let rdev = e.rdev.unwrap_or(0);
            ctx.core
                .mknod(p, name.as_bytes(), kind, e.mode, rdev, owner)
                .await
        }
        .map_err(fs_err(&e.path))?;
        set_attrs(&ctx.core, made.ino, e, kind != FileType::Symlink).await?;
    }
    // Directory attributes last (their children's creation changed the times),
    // deepest first.
    for e in dir_entries.iter().rev() {
        set_attrs(&ctx.core, dirs[&e.path], e, true).await?;
    }
    ctx.core
        .flush_all()
        .await
        .map_err(fs_err("committing the last writes"))?;
    let secs = started.elapsed().as_secs_f64().max(0.001);
    println!(
        "imported {} into {}: {nfiles} files ({total} bytes, {skipped} already there), {} directories, \
         {} other entries in {secs:.1}s: {:.1} MiB/s, {:.0} files/s{}",
        ctx.place.describe(),
        a.target,
        dir_entries.len(),
        entries.len() - dir_entries.len() - nfiles as usize,
        total as f64 / secs / (1 << 20) as f64,
        nfiles as f64 / secs,
        if verified { "; checksums verified" } else { "" }
    );
    Ok(())
}

/// `path`'s parent path and its last name.
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// The directory at `path` (relative to the import root), made if missing
/// (a listing without a manifest names only files).
async fn parent_ino(
    ctx: &Ctx,
    dirs: &mut BTreeMap<String, Ino>,
    path: &str,
) -> Result<Ino, CliError> {
    if let Some(&ino) = dirs.get(path) {
        return Ok(ino);
    }
    let root = dirs[""];
    let ino = make_dirs(&ctx.core, root, path.split('/')).await?;
    dirs.insert(path.to_string(), ino);
    Ok(ino)
}

/// Walks `names` from `from`, making the directories that are missing.
async fn make_dirs<'a>(
    core: &Filesystem,
    from: Ino,
    names: impl Iterator<Item = &'a str>,
) -> Result<Ino, CliError> {
    let mut at = from;
    // SAFETY: getuid/getgid only read the process's ids.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let owner = Owner { uid, gid };
    for name in names {
        at = match core.lookup(at, name.as_bytes()).await {
            Ok(i) if i.kind == FileType::Dir => i.ino,
            Ok(_) => return Err(CliError(format!("{name}: exists and is not a directory"))),
            Err(_) => match core.mkdir(at, name.as_bytes(), 0o755, owner).await {
                Ok(i) => i.ino,
                // Made meanwhile by someone else.
                Err(e) if e.errno == libc::EEXIST => {
                    core.lookup(at, name.as_bytes())
                        .await
                        .map_err(fs_err(name))?
                        .ino
                }
                Err(e) => return Err(CliError(format!("making directory {name}: {e}"))),
            },
        };
    }
    Ok(at)
}

async fn set_attrs(core: &Filesystem, ino: Ino, e: &Entry, mode: bool) -> Result<(), CliError> {
    let set = SetAttr {
        mode: mode.then_some(e.mode & 0o7777),
        uid: Some(e.uid),
        gid: Some(e.gid),
        mtime: Some(Timestamp {
            sec: e.mtime,
            nsec: e.mtime_nsec,
        }),
        ..Default::default()
    };
    core.setattr(ino, set).await.map_err(fs_err(&e.path))?;
    Ok(())
}

/// Imports one file into directory `parent`; says whether it was there already.
async fn import_file(
    ctx: &Ctx,
    e: &Entry,
    parent: Ino,
    verify: bool,
) -> Result<Imported, CliError> {
    let (_, name) = split(&e.path);
    if let Ok(have) = ctx.core.lookup(parent, name.as_bytes()).await {
        if have.kind == FileType::File
            && have.size == e.size
            && have.mtime.sec == e.mtime
            && have.mtime.nsec == e.mtime_nsec
        {
            ctx.bar.inc(e.size);
            return Ok((true, have.ino));
        }
        // Left half-done by an interrupted import (or different): again.
        if have.kind == FileType::Dir {
            return Err(CliError("a directory is in the way".into()));
        }
        ctx.core
            .unlink(parent, name.as_bytes())
            .await
            .map_err(fs_err("replacing it"))?;
    }
    let (inode, fh) = ctx
        .core
        .create(
            parent,
            name.as_bytes(),
            e.mode & 0o7777,
            libc::O_WRONLY,
            Owner {
                uid: e.uid,
                gid: e.gid,
            },
        )
        .await
        .map_err(fs_err("creating"))?;
    let copied = copy_in(ctx, e, inode.ino, fh, verify).await;
    let closed = ctx
        .core
        .release(inode.ino, fh, None)
        .await
        .map_err(fs_err("committing"));
    copied?;
    closed?;
    set_attrs(&ctx.core, inode.ino, e, true).await?;
    Ok((false, inode.ino))
}

async fn copy_in(ctx: &Ctx, e: &Entry, ino: Ino, fh: u64, verify: bool) -> Result<(), CliError> {
    let mut crc = crc32fast::Hasher::new();
    let mut at = 0;
    while at < e.size {
        let len = ctx.piece.min(e.size - at);
        let data = ctx.place.read(&e.path, at, len).await?;
        crc.update(&data);
        let mut off = 0;
        while off < data.len() {
            let n = ctx
                .core
                .write(ino, fh, at + off as u64, &data[off..])
                .await
                .map_err(fs_err("writing"))?;
            off += n as usize;
        }
        at += len;
        ctx.bar.inc(len);
    }
    let got = manifest::checksum_text(crc.finalize());
    if verify
        && let Some(want) = &e.checksum
        && *want != got
    {
        return Err(CliError(format!(
            "checksum mismatch: the manifest says {want}, the object has {got} (changed since the export?)"
        )));
    }
    Ok(())
}
