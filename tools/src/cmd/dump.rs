//! `strata dump FS OUT` and `strata load IN NEWFS`: a filesystem's
//! metadata as one portable, versioned, gzip-compressed file of JSON lines,
//! and a new filesystem made from it that reads the same blocks.
//!
//! The file: a header line, then a section per filesystem (the dumped one,
//! then with `--include-snapshots` each of its snapshots): an `Fs` line,
//! one `Row` line per inode, directory entry, chunk map and extended
//! attribute, and an `End` line with the row count, so a truncated file is
//! refused rather than loaded in part.
//!
//! Blocks: by default the loaded filesystem gets a new uuid and borrows the
//! dumped one's objects (reads them, never deletes them), so both can live
//! on: its new writes go under its own uuid. `--take-over` keeps the uuid
//! instead and owns the objects from then on, for moving a filesystem to
//! another cluster or restoring lost metadata; the dumped filesystem must
//! not be used again after that. Either way the blocks must outlive the
//! copy: dump a snapshot, or keep the original's files, while a borrowing
//! copy needs them.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use clap::Args;
use serde::{Deserialize, Serialize};
use strata_meta::client::dump::LOAD_BATCH;
use strata_meta::{
    BorrowedBlocks, FsClient, FsInfo, FsSpec, GroupId, Partition, Timestamp, TreeRow, TreeRowKind,
    snapshot_fs_name,
};

use super::place::Place;
use super::{CliError, CliResult};

const FORMAT: &str = "strata-dump";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
enum Line {
    Header {
        format: String,
        version: u32,
        created: i64,
    },
    Fs {
        info: FsInfo,
        partitions: Vec<Partition>,
        /// For a snapshot section: the snapshot's name and when it was taken.
        snapshot: Option<(String, Timestamp)>,
        /// Days deleted files stay in the trash (absent in snapshot sections).
        #[serde(default)]
        trash_days: Option<u32>,
    },
    Row(TreeRow),
    End {
        rows: u64,
    },
}

#[derive(Args)]
pub struct DumpArgs {
    /// Metaserver addresses, comma separated [default: the embedded
    /// default's running mount].
    #[arg(long)]
    pub meta: Option<String>,
    /// The filesystem (or a snapshot, `FS@NAME`).
    pub name: String,
    /// Where to write: a path, or `s3://bucket/key` (standard AWS configuration).
    pub out: String,
    /// Also dump the filesystem's snapshots (`strata load` recreates them).
    #[arg(long)]
    pub include_snapshots: bool,
}

#[derive(Args)]
pub struct LoadArgs {
    /// Metaserver addresses, comma separated [default: the embedded
    /// default's running mount].
    #[arg(long)]
    pub meta: Option<String>,
    /// The dump: a path, or `s3://bucket/key`.
    pub input: String,
    /// The new filesystem's name.
    pub name: String,
    /// Keep the dumped filesystem's uuid and own its objects from now on
    /// (moving a filesystem, or restoring its lost metadata; do not use
    /// the dumped filesystem afterwards). Without it the new filesystem
    /// borrows them: reads them, never deletes them.
    #[arg(long)]
    pub take_over: bool,
}

/// `s3://bucket/dir/key` as the place `s3://bucket/dir` and `key`; a local
/// path as itself.
enum Target {
    S3(Place, String),
    Local(PathBuf),
}

async fn target(url: &str) -> Result<Target, CliError> {
    if url.starts_with("s3://") {
        let (dir, key) = url
            .rsplit_once('/')
            .filter(|(d, k)| d.len() > "s3:/".len() && !k.is_empty())
            .ok_or_else(|| {
                CliError(format!(
                    "{url}: name an object, like s3://bucket/backups/fs.dump"
                ))
            })?;
        return Ok(Target::S3(Place::open(dir).await?, key.to_string()));
    }
    if url.contains("://") {
        return Err(CliError(format!("{url}: use a path or s3://bucket/key")));
    }
    Ok(Target::Local(PathBuf::from(url)))
}

fn temp_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "strata-dump-{}-{}",
        std::process::id(),
        strata_meta::client::new_uuid()
    ))
}

fn write_line(w: &mut impl Write, line: &Line) -> Result<(), CliError> {
    serde_json::to_writer(&mut *w, line).map_err(|e| CliError(format!("writing: {e}")))?;
    w.write_all(b"\n")?;
    Ok(())
}

/// Writes one filesystem's section; returns its row count.
async fn dump_fs(
    fs: &FsClient,
    snapshot: Option<(String, Timestamp)>,
    w: &mut impl Write,
) -> Result<u64, CliError> {
    let partitions = fs.meta().partitions(fs.info.id).await?;
    let trash_days = match snapshot {
        None => Some(fs.trash_days().await?),
        Some(_) => None,
    };
    write_line(
        w,
        &Line::Fs {
            info: fs.info.clone(),
            partitions,
            snapshot,
            trash_days,
        },
    )?;
    let mut rows = 0;
    for g in fs.groups() {
        for kind in [
            TreeRowKind::Inodes,
            TreeRowKind::Entries,
            TreeRowKind::Chunks,
            TreeRowKind::Xattrs,
        ] {
            let mut after = None;
            loop {
                let (page, next) = fs.dump_rows(g, kind, after).await?;
                rows += page.len() as u64;
                for r in page {
                    write_line(w, &Line::Row(r))?;
                }
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
    }
    write_line(w, &Line::End { rows })?;
    Ok(rows)
}

pub async fn dump(a: DumpArgs) -> CliResult {
    let started = Instant::now();
    let dest = target(&a.out).await?;
    let client = super::connect(a.meta.as_deref()).await?;
    let fs = client.open_fs(&a.name).await?;
    let path = match &dest {
        Target::Local(p) => p.clone(),
        Target::S3(..) => temp_path(),
    };
    let partial = path.with_extension("partial");
    let file = std::fs::File::create(&partial)
        .map_err(|e| CliError(format!("creating {}: {e}", partial.display())))?;
    let mut w = flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::fast());
    write_line(
        &mut w,
        &Line::Header {
            format: FORMAT.into(),
            version: VERSION,
            created: Timestamp::now().sec,
        },
    )?;
    let mut rows = dump_fs(&fs, None, &mut w).await?;
    let mut snapshots = 0;
    if a.include_snapshots {
        for s in client.list_snapshots(&a.name).await? {
            if !s.ready {
                continue;
            }
            let snap = client.open_fs(&snapshot_fs_name(&a.name, &s.name)).await?;
            rows += dump_fs(&snap, Some((s.name.clone(), s.created)), &mut w).await?;
            snapshots += 1;
        }
    }
    let file = w
        .finish()?
        .into_inner()
        .map_err(|e| CliError(e.to_string()))?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&partial, &path)?;
    let size = std::fs::metadata(&path)?.len();
    if let Target::S3(place, key) = &dest {
        let data = Bytes::from(std::fs::read(&path)?);
        let _ = std::fs::remove_file(&path);
        place
            .put_in_parts(key, data, 64 << 20, &HashMap::new())
            .await?;
    }
    println!(
        "dumped {} ({rows} rows, {snapshots} snapshots) to {} in {:.1}s: {size} bytes",
        a.name,
        a.out,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Formatted partitions are `count` ranges of one size from inode 1; a dump
/// must have that shape to be laid out again.
fn partition_shape(parts: &[Partition]) -> Result<(u32, u64), CliError> {
    let mut sorted = parts.to_vec();
    sorted.sort_by_key(|p| p.start);
    let size = sorted.first().map(|p| p.end - p.start).unwrap_or(0);
    let regular = size > 0
        && sorted
            .iter()
            .enumerate()
            .all(|(i, p)| p.start == 1 + i as u64 * size && p.end - p.start == size);
    if !regular {
        return Err(CliError(
            "the dump's partitions are not equal ranges from inode 1; cannot lay them out again"
                .into(),
        ));
    }
    Ok((sorted.len() as u32, size))
}

pub async fn load(a: LoadArgs) -> CliResult {
    let started = Instant::now();
    let (path, temp) = match target(&a.input).await? {
        Target::Local(p) => (p, false),
        Target::S3(place, key) => {
            let data = place
                .read_all(&key)
                .await?
                .ok_or_else(|| CliError(format!("{}: no such object", a.input)))?;
            let p = temp_path();
            std::fs::write(&p, &data)?;
            (p, true)
        }
    };
    let result = load_file(&a, &path).await;
    if temp {
        let _ = std::fs::remove_file(&path);
    }
    let (rows, snapshots) = result?;
    println!(
        "loaded {} from {} ({rows} rows, {snapshots} snapshots) in {:.1}s",
        a.name,
        a.input,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn load_file(a: &LoadArgs, path: &std::path::Path) -> Result<(u64, u64), CliError> {
    let file =
        std::fs::File::open(path).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
    let mut lines = BufReader::new(flate2::read::GzDecoder::new(file)).lines();
    let mut n = 0u64;
    let mut next = move || -> Result<Option<Line>, CliError> {
        let Some(text) = lines.next() else {
            return Ok(None);
        };
        n += 1;
        let text = text.map_err(|e| CliError(format!("reading the dump: {e}")))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| CliError(format!("line {n} of the dump: {e}")))
    };
    match next()? {
        Some(Line::Header {
            format, version, ..
        }) if format == FORMAT && version <= VERSION => {}
        _ => {
            return Err(CliError(format!(
                "{} is not a strata dump this version reads ({FORMAT} up to version {VERSION})",
                path.display()
            )));
        }
    }
    let Some(Line::Fs {
        info,
        partitions,
        snapshot: None,
        trash_days,
    }) = next()?
    else {
        return Err(CliError("the dump does not start with a filesystem".into()));
    };
    let (count, size) = partition_shape(&partitions)?;
    let client = super::connect(a.meta.as_deref()).await?;
    if client
        .list_fs()
        .await?
        .iter()
        .any(|f| f.name == a.name && f.ready)
    {
        return Err(CliError(format!(
            "filesystem {} exists already; nothing loaded",
            a.name
        )));
    }
    let mut borrowed = info.borrowed.clone();
    let uuid = if a.take_over {
        info.uuid.clone()
    } else {
        strata_meta::client::new_uuid()
    };
    let spec = FsSpec {
        name: a.name.clone(),
        uuid,
        storage: info.storage.clone(),
        s3_endpoint: info.s3_endpoint.clone(),
        block_size: info.block_size,
        chunk_size: info.chunk_size,
        partitions: count,
        partition_size: size,
        borrowed: Vec::new(),
    };
    // The rows come first: the highest slice id bounds what is borrowed.
    // SAFETY: getuid/getgid only read the process's ids.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut created = client.create_fs(&spec, (uid, gid)).await?;
    let fs = client.open_loading_fs(&a.name).await?;
    if let Some(days) = trash_days {
        fs.set_trash_days(days).await?;
    }
    let (mut rows, max_slice) = load_rows(&fs, fs.info.id, &mut next).await?;
    if !a.take_over {
        borrowed.push(BorrowedBlocks {
            uuid: info.uuid.clone(),
            below: max_slice + 1,
        });
    }
    if borrowed != created.borrowed {
        created = client.set_borrowed(&a.name, borrowed).await?;
    }
    client.raise_slice_floor(created.id, max_slice + 1).await?;
    let groups = fs.groups();
    let mut snapshots = 0;
    while let Some(line) = next()? {
        let Line::Fs {
            snapshot: Some((name, taken)),
            ..
        } = line
        else {
            return Err(CliError("expected a snapshot section in the dump".into()));
        };
        let snap = client
            .register_loaded_snapshot(&a.name, &name, taken)
            .await?;
        let (n, _) = load_rows(&fs, snap.id, &mut next).await?;
        rows += n;
        client
            .finish_loaded_snapshot(&a.name, &snap, &groups)
            .await?;
        snapshots += 1;
    }
    client.mark_fs_ready(&a.name).await?;
    Ok((rows, snapshots))
}

/// Loads one section's rows into `into` (routed by `fs`'s partitions) up
/// to its `End`; returns the row count and the highest slice id seen.
async fn load_rows(
    fs: &FsClient,
    into: strata_meta::FsId,
    next: &mut impl FnMut() -> Result<Option<Line>, CliError>,
) -> Result<(u64, u64), CliError> {
    let mut batches: HashMap<GroupId, Vec<TreeRow>> = HashMap::new();
    let mut rows = 0u64;
    let mut max_slice = 0;
    loop {
        match next()? {
            Some(Line::Row(r)) => {
                if let TreeRow::Chunk { slices, .. } = &r {
                    max_slice = slices.iter().map(|s| s.id).fold(max_slice, u64::max);
                }
                let g = fs.group_of(r.home()).await?;
                let batch = batches.entry(g).or_default();
                batch.push(r);
                rows += 1;
                if batch.len() >= LOAD_BATCH {
                    fs.load_rows(g, into, std::mem::take(batch)).await?;
                }
            }
            Some(Line::End { rows: expected }) => {
                if expected != rows {
                    return Err(CliError(format!(
                        "the dump says {expected} rows in a section that has {rows}: damaged"
                    )));
                }
                break;
            }
            _ => {
                return Err(CliError(
                    "the dump ends in the middle of a section (truncated?)".into(),
                ));
            }
        }
    }
    for (g, batch) in batches {
        if !batch.is_empty() {
            fs.load_rows(g, into, batch).await?;
        }
    }
    Ok((rows, max_slice))
}
