//! `strata export FS@SNAPSHOT s3://bucket/prefix`: every regular file of a
//! snapshot (or filesystem) becomes an ordinary object at
//! `prefix/relative/path`, with a manifest listing everything (see
//! `manifest`), so tools that know nothing of Strata can use the data.
//!
//! Files are read through the filesystem core (its block cache and
//! prefetch) and written by `--jobs` workers; large files go up as
//! multipart uploads whose parts are written in parallel too.
//!
//! Resuming: each object carries where it came from (filesystem, inode,
//! size, mtime) and its checksum. A second run skips objects whose origin
//! and size match: a snapshot's file never changes, so the same origin
//! means the same bytes. For multipart objects, whose metadata is fixed
//! before the checksum is known, a small record under
//! `prefix/.strata-export/` holds the checksum until the manifest is
//! written; the records are removed then.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use clap::Args;
use futures::StreamExt;
use indicatif::ProgressBar;
use strata_fuse::Filesystem;
use strata_meta::{FileType, FsClient, Ino, Inode, ROOT_INO};
use tokio::sync::Semaphore;

use super::manifest::{self, Entry, Header, MANIFEST};
use super::place::Place;
use super::{CliError, CliResult, parse_size};

/// Prefix of the checksum records of multipart objects, while an export runs.
const RECORDS: &str = ".strata-export";
/// Bytes asked of the filesystem per read call.
const READ_PIECE: u64 = 4 << 20;

#[derive(Args)]
pub struct ExportArgs {
    /// Metaserver addresses, comma separated [default: the embedded
    /// default's running mount].
    #[arg(long)]
    pub meta: Option<String>,
    /// What to export: a snapshot `FS@NAME` (point in time), or a
    /// filesystem `FS` (files changing meanwhile may be caught mid-change).
    pub source: String,
    /// Where to: `s3://bucket/prefix` (credentials, region and endpoint from
    /// the standard AWS configuration: AWS_* variables, ~/.aws) or
    /// `file:///dir`.
    pub dest: Option<String>,
    /// The destination, as a flag (same forms as DEST).
    #[arg(long, conflicts_with = "dest")]
    pub to: Option<String>,
    /// Files (and parts of large files) written at once.
    #[arg(long, short = 'j', default_value_t = 16)]
    pub jobs: usize,
    /// Files larger than this go up in parts of this size (at least 5M).
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    pub part_size: u64,
    /// No progress bar (the summary is still printed).
    #[arg(long)]
    pub quiet: bool,
}

/// A regular file to export.
struct FileItem {
    path: String,
    inode: Inode,
}

/// Shared by the workers.
struct Ctx {
    core: Arc<Filesystem>,
    place: Place,
    /// Where objects come from: the filesystem's uuid and id.
    origin: String,
    part_size: u64,
    parts: Semaphore,
    bar: ProgressBar,
    bytes_done: AtomicU64,
    files_done: AtomicU64,
    /// Checksums a previous complete export recorded, by path, with the
    /// origin they were computed for.
    previous: HashMap<String, (String, String)>,
    /// What the destination holds already, by path, with sizes: objects
    /// not listed are not asked about one by one.
    present: HashMap<String, u64>,
}

enum Outcome {
    Written(String),
    Skipped(String),
}

pub async fn run(a: ExportArgs) -> CliResult {
    let dest =
        a.dest.clone().or(a.to.clone()).ok_or_else(|| {
            CliError("say where to export: s3://bucket/prefix or file:///dir".into())
        })?;
    if a.jobs == 0 || a.jobs > 1024 {
        return Err(CliError("--jobs must be between 1 and 1024".into()));
    }
    if a.part_size < 5 << 20 || a.part_size > 5 << 30 {
        return Err(CliError(
            "--part-size must be between 5M and 5G (S3's limits)".into(),
        ));
    }
    let client = super::connect(a.meta.as_deref()).await?;
    let fs = client.open_fs(&a.source).await?;
    if !a.source.contains('@') {
        eprintln!(
            "note: {} is a live filesystem; files changed during the export may be caught mid-change \
             (export a snapshot for a point-in-time copy: strata snapshot create)",
            a.source
        );
    }
    let place = Place::open(&dest).await?;
    let started = Instant::now();
    let (files, mut entries, skipped_names) = walk(&fs).await?;
    let total_bytes: u64 = files.iter().map(|f| f.inode.size).sum();
    let origin = format!("{}/{}", fs.info.uuid, fs.info.id);
    let previous = previous_checksums(&place).await;
    let present: HashMap<String, u64> = place.list().await?.into_iter().collect();
    let core = super::open::filesystem(fs, true, 512 << 20).await?;
    let bar = super::place::progress_bar(total_bytes, a.quiet);
    let ctx = Arc::new(Ctx {
        core,
        place,
        origin,
        part_size: a.part_size,
        parts: Semaphore::new(a.jobs),
        bar,
        bytes_done: AtomicU64::new(0),
        files_done: AtomicU64::new(0),
        previous,
        present,
    });
    let nfiles = files.len() as u64;
    ctx.bar.set_message(format!("0/{nfiles} files"));
    let results: Vec<(FileItem, Result<Outcome, CliError>)> = futures::stream::iter(files)
        .map(|f| {
            let ctx = ctx.clone();
            async move {
                let r = export_file(&ctx, &f).await;
                let done = ctx.files_done.fetch_add(1, Ordering::Relaxed) + 1;
                ctx.bar.set_message(format!("{done}/{nfiles} files"));
                (f, r)
            }
        })
        .buffer_unordered(a.jobs)
        .collect()
        .await;
    ctx.bar.finish_and_clear();
    let mut failed = Vec::new();
    let mut skipped = 0u64;
    let mut checksums = HashMap::new();
    for (f, r) in results {
        match r {
            Ok(Outcome::Written(c)) => {
                checksums.insert(f.path.clone(), (origin_of(&ctx, &f), c));
            }
            Ok(Outcome::Skipped(c)) => {
                skipped += 1;
                checksums.insert(f.path.clone(), (origin_of(&ctx, &f), c));
            }
            Err(e) => failed.push(format!("{}: {e}", f.path)),
        }
    }
    if !failed.is_empty() {
        failed.sort();
        for f in failed.iter().take(20) {
            eprintln!("failed: {f}");
        }
        return Err(CliError(format!(
            "{} of {nfiles} files failed (listed above; run the same command again to finish: \
             exported files are skipped); no manifest written",
            failed.len()
        )));
    }
    for e in entries.iter_mut().filter(|e| e.kind == "file") {
        if let Some((origin, checksum)) = checksums.remove(&e.path) {
            e.origin = Some(origin);
            e.checksum = Some(checksum);
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let header = Header {
        format: manifest::FORMAT.into(),
        version: manifest::VERSION,
        source: a.source.clone(),
        exported: strata_meta::Timestamp::now().sec,
        files: nfiles,
        bytes: total_bytes,
    };
    let text = manifest::render(&header, &entries);
    ctx.place
        .put_in_parts(MANIFEST, Bytes::from(text), ctx.part_size, &HashMap::new())
        .await?;
    remove_records(&ctx.place).await;
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let written = ctx.bytes_done.load(Ordering::Relaxed);
    println!(
        "exported {} to {}: {nfiles} files ({} bytes, {skipped} already there), {} directories, \
         {} symlinks, {} other entries in {secs:.1}s: {:.1} MiB/s, {:.0} files/s",
        a.source,
        ctx.place.describe(),
        total_bytes,
        entries.iter().filter(|e| e.kind == "dir").count(),
        entries.iter().filter(|e| e.kind == "symlink").count(),
        entries
            .iter()
            .filter(|e| !matches!(e.kind.as_str(), "file" | "dir" | "symlink"))
            .count(),
        written as f64 / secs / (1 << 20) as f64,
        (nfiles - skipped) as f64 / secs,
    );
    if skipped_names > 0 {
        println!(
            "{skipped_names} entries with names that are not UTF-8 were left out (object keys are UTF-8)"
        );
    }
    Ok(())
}

fn kind_name(k: FileType) -> &'static str {
    match k {
        FileType::File => "file",
        FileType::Dir => "dir",
        FileType::Symlink => "symlink",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharDev => "char",
        FileType::BlockDev => "block",
    }
}

fn entry_of(path: String, i: &Inode) -> Entry {
    Entry {
        path,
        kind: kind_name(i.kind).into(),
        size: if i.kind == FileType::File { i.size } else { 0 },
        mode: i.mode & 0o7777,
        uid: i.uid,
        gid: i.gid,
        mtime: i.mtime.sec,
        mtime_nsec: i.mtime.nsec,
        checksum: None,
        origin: None,
        target: i
            .symlink
            .as_ref()
            .map(|t| String::from_utf8_lossy(t).into_owned()),
        link: (i.kind == FileType::File && i.nlink > 1).then_some(i.ino),
        empty: false,
        rdev: matches!(i.kind, FileType::CharDev | FileType::BlockDev).then_some(i.rdev),
    }
}

/// Every entry under the root: the regular files to copy, the manifest
/// entries of everything, and how many names were left out.
async fn walk(fs: &FsClient) -> Result<(Vec<FileItem>, Vec<Entry>, u64), CliError> {
    let mut files = Vec::new();
    let mut entries = Vec::new();
    let mut bad_names = 0;
    // Directories to list, with their manifest entry (None: the root).
    let mut dirs: Vec<(Ino, String, Option<usize>)> = vec![(ROOT_INO, String::new(), None)];
    while let Some((dir, prefix, entry)) = dirs.pop() {
        let mut after = None;
        let mut any = false;
        loop {
            let page = fs.readdir(dir, after.clone(), 1024).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            for e in page {
                any = true;
                let Ok(name) = String::from_utf8(e.name.clone()) else {
                    bad_names += 1;
                    continue;
                };
                let path = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                };
                let inode = match e.attr {
                    Some(i) => i,
                    None => fs.getattr(e.dentry.ino).await?,
                };
                entries.push(entry_of(path.clone(), &inode));
                match inode.kind {
                    FileType::Dir => dirs.push((inode.ino, path, Some(entries.len() - 1))),
                    FileType::File => files.push(FileItem { path, inode }),
                    _ => {}
                }
            }
        }
        if !any && let Some(i) = entry {
            entries[i].empty = true;
        }
    }
    Ok((files, entries, bad_names))
}

/// Where `f` comes from, as recorded with its object.
fn origin_of(ctx: &Ctx, f: &FileItem) -> String {
    let i = &f.inode;
    format!(
        "{}/{}/{}.{:09}/{}",
        ctx.origin, i.ino, i.mtime.sec, i.mtime.nsec, i.size
    )
}

async fn export_file(ctx: &Ctx, f: &FileItem) -> Result<Outcome, CliError> {
    let origin = origin_of(ctx, f);
    let size = f.inode.size;
    if ctx.present.get(&f.path) == Some(&size)
        && let Some(have) = ctx.place.existing(&f.path).await?
        && have.size == size
        && have.meta.get("strata-origin") == Some(&origin)
    {
        let known = match have.meta.get("strata-checksum") {
            Some(c) => Some(c.clone()),
            None => match ctx.previous.get(&f.path) {
                Some((o, c)) if *o == origin => Some(c.clone()),
                _ => record_of(ctx, &f.path, &origin).await,
            },
        };
        if let Some(c) = known {
            ctx.bar.inc(size);
            return Ok(Outcome::Skipped(c));
        }
    }
    let fh = ctx
        .core
        .open(f.inode.ino, libc::O_RDONLY)
        .await
        .map_err(|e| CliError(format!("opening: {e}")))?;
    let r = copy_file(ctx, f, fh, &origin).await;
    let _ = ctx.core.release(f.inode.ino, fh, None).await;
    r.map(Outcome::Written)
}

/// Reads `len` bytes of the file from `offset`.
async fn read_range(
    ctx: &Ctx,
    ino: Ino,
    fh: u64,
    offset: u64,
    len: u64,
) -> Result<Bytes, CliError> {
    let mut buf = BytesMut::with_capacity(len as usize);
    let mut at = offset;
    while at < offset + len {
        let want = READ_PIECE.min(offset + len - at) as u32;
        let got = ctx
            .core
            .read(ino, fh, at, want)
            .await
            .map_err(|e| CliError(format!("reading at {at}: {e}")))?;
        if got.is_empty() {
            return Err(CliError(format!("the file ended at {at}, before its size")));
        }
        at += got.len() as u64;
        buf.extend_from_slice(&got);
        ctx.bar.inc(got.len() as u64);
        ctx.bytes_done
            .fetch_add(got.len() as u64, Ordering::Relaxed);
    }
    Ok(buf.freeze())
}

async fn copy_file(ctx: &Ctx, f: &FileItem, fh: u64, origin: &str) -> Result<String, CliError> {
    let (ino, size) = (f.inode.ino, f.inode.size);
    let mut meta = HashMap::from([("strata-origin".to_string(), origin.to_string())]);
    if size <= ctx.part_size {
        let _slot = ctx.parts.acquire().await.expect("never closed");
        let data = read_range(ctx, ino, fh, 0, size).await?;
        let checksum = manifest::checksum_text(crc32fast::hash(&data));
        meta.insert("strata-checksum".into(), checksum.clone());
        ctx.place.put(&f.path, data, &meta).await?;
        return Ok(checksum);
    }
    let up = ctx.place.begin(&f.path, &meta).await?;
    let count = size.div_ceil(ctx.part_size);
    let up_ref = &up;
    let parts = futures::future::join_all((0..count).map(|n| async move {
        let _slot = ctx.parts.acquire().await.expect("never closed");
        let offset = n * ctx.part_size;
        let len = ctx.part_size.min(size - offset);
        let data = read_range(ctx, ino, fh, offset, len).await?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&data);
        let part = ctx
            .place
            .put_part(up_ref, n as i32 + 1, offset, data)
            .await?;
        Ok::<_, CliError>((part, crc))
    }))
    .await;
    let mut done = Vec::new();
    let mut crc = crc32fast::Hasher::new();
    for p in parts {
        match p {
            Ok((part, c)) => {
                crc.combine(&c);
                done.push(part);
            }
            Err(e) => {
                ctx.place.abort(up).await;
                return Err(e);
            }
        }
    }
    let checksum = manifest::checksum_text(crc.finalize());
    meta.insert("strata-checksum".into(), checksum.clone());
    ctx.place.finish(up, done, &meta).await?;
    if let Place::S3(_) = ctx.place {
        // The object's metadata was fixed before its checksum was known.
        let record = serde_json::to_vec(&(origin, &checksum)).expect("encodes");
        ctx.place
            .put(&record_key(&f.path), Bytes::from(record), &HashMap::new())
            .await?;
    }
    Ok(checksum)
}

fn record_key(path: &str) -> String {
    format!("{RECORDS}/{path}")
}

/// The checksum a previous, interrupted run recorded for a multipart object
/// with this origin.
async fn record_of(ctx: &Ctx, path: &str, origin: &str) -> Option<String> {
    let bytes = ctx.place.read_all(&record_key(path)).await.ok()??;
    let (o, c): (String, String) = serde_json::from_slice(&bytes).ok()?;
    (o == origin).then_some(c)
}

/// Checksums from the manifest of a previous complete export, by path.
async fn previous_checksums(place: &Place) -> HashMap<String, (String, String)> {
    let Ok(Some(text)) = place.read_all(MANIFEST).await else {
        return HashMap::new();
    };
    let Ok((_, entries)) = manifest::parse(&text) else {
        return HashMap::new();
    };
    entries
        .into_iter()
        .filter_map(|e| Some((e.path, (e.origin?, e.checksum?))))
        .collect()
}

/// Drops the checksum records once the manifest holds the checksums.
async fn remove_records(place: &Place) {
    if let Place::S3(s) = place {
        use strata_cache::ObjectStore;
        let Ok(records) = s.list(RECORDS).await else {
            return;
        };
        for (k, _) in records {
            let _ = s.delete(&k).await;
        }
    }
}
