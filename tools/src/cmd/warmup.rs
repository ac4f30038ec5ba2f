//! `strata warmup PATH...`: reads every regular file under the given paths once
//! through the mount, so a dataset's blocks are in Strata's caches before a
//! job needs them.
//!
//! Reading through the mount (rather than asking the mount process to fetch)
//! keeps this a plain client of the filesystem: it works on any directory,
//! Strata or not, and fills exactly what a reader would fill. Files are cut
//! into ranges read by `--jobs` threads, so a few huge files warm as fast as
//! many small ones. After each range the kernel is told to drop its copy
//! (`posix_fadvise(DONTNEED)`): the point is Strata's cache, and a second copy
//! in the page cache would only push out memory the job needs.

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Instant;

use clap::Args;
use indicatif::{BinaryBytes, ProgressBar, ProgressStyle};

use super::{CliError, CliResult};

/// Files larger than this are split into ranges read in parallel.
const RANGE: u64 = 64 << 20;
/// Bytes asked for per read call.
const READ_BUF: usize = 1 << 20;

#[derive(Args)]
pub struct WarmupArgs {
    /// Files or directories to read; directories are walked recursively
    /// (symbolic links inside them are not followed).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Parallel readers. Each waits on one object-store GET at a time, so
    /// a store far away wants many: 64 warmed 2 000 small files 1.4x as fast
    /// as 16 with 20 ms per GET, and the plain S3 client's limit bounded it.
    #[arg(long, short = 'j', default_value_t = 64)]
    pub jobs: usize,
}

pub async fn run(a: WarmupArgs) -> CliResult {
    tokio::task::spawn_blocking(move || warmup(a))
        .await
        .map_err(|e| CliError(format!("warmup stopped: {e}")))?
}

/// A regular file found by the walk.
struct FileEntry {
    path: PathBuf,
    size: u64,
    /// Ranges not yet read; the file is done when this reaches zero.
    ranges_left: AtomicU32,
    failed: AtomicBool,
}

/// One unit of work: `len` bytes of a file from `offset`.
struct Range {
    file: usize,
    offset: u64,
    len: u64,
}

fn warmup(a: WarmupArgs) -> CliResult {
    if a.jobs == 0 || a.jobs > 1024 {
        return Err(CliError("--jobs must be between 1 and 1024".into()));
    }
    // Check every path before reading anything, so a typo costs nothing.
    let bad: Vec<String> = a
        .paths
        .iter()
        .filter_map(|p| {
            let e = std::fs::metadata(p).err()?;
            Some(format!("{}: {e}", p.display()))
        })
        .collect();
    if !bad.is_empty() {
        return Err(CliError(format!("nothing read: {}", bad.join("; "))));
    }

    let scan = ProgressBar::new_spinner().with_message("scanning");
    scan.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut walk = Walk::default();
    for p in &a.paths {
        walk.add_root(p, &scan);
    }
    scan.finish_and_clear();
    for e in &walk.errors {
        eprintln!("strata: warmup: {e}");
    }

    let files = walk.files;
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    let ranges = split_into_ranges(&files);
    let jobs = a.jobs.min(ranges.len()).max(1);

    let bar = ProgressBar::new(total_bytes).with_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {msg}",
        )
        .expect("the progress template is valid")
        .progress_chars("=> "),
    );
    bar.set_message(format!("files 0/{}", files.len()));
    let next = AtomicUsize::new(0);
    let files_done = AtomicUsize::new(0);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                let mut buf = vec![0u8; READ_BUF];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(r) = ranges.get(i) else { break };
                    let f = &files[r.file];
                    // Once a file failed its other ranges would fail alike: skip them.
                    if !f.failed.load(Ordering::Relaxed)
                        && let Err(e) = read_range(&f.path, r, &mut buf, &bar)
                        && !f.failed.swap(true, Ordering::Relaxed)
                    {
                        let msg = format!("{}: {e}", f.path.display());
                        bar.suspend(|| eprintln!("strata: warmup: {msg}"));
                        failures.lock().expect("no reader panics").push(msg);
                    }
                    if f.ranges_left.fetch_sub(1, Ordering::AcqRel) == 1 {
                        let done = files_done.fetch_add(1, Ordering::Relaxed) + 1;
                        bar.set_message(format!("files {done}/{}", files.len()));
                    }
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let read = bar.position();
    bar.finish_and_clear();

    let failed = failures.into_inner().expect("no reader panics").len();
    println!(
        "warmed {} files, {} ({read} bytes) in {secs:.2} s ({:.1} MiB/s)",
        files.len() - failed,
        BinaryBytes(read),
        read as f64 / (1 << 20) as f64 / secs.max(1e-9)
    );
    let unlisted = walk.errors.len();
    match (failed, unlisted) {
        (0, 0) => Ok(()),
        (f, 0) => Err(CliError(format!(
            "{f} of {} files could not be read (listed above)",
            files.len()
        ))),
        (f, d) => Err(CliError(format!(
            "{f} of {} files could not be read and {d} director{} could not be listed (listed above)",
            files.len(),
            if d == 1 { "y" } else { "ies" }
        ))),
    }
}

/// Reads one range and drops the kernel's copy of it.
fn read_range(path: &Path, r: &Range, buf: &mut [u8], bar: &ProgressBar) -> std::io::Result<()> {
    let file = File::open(path)?;
    let fd = file.as_raw_fd();
    let (off, len) = (r.offset as libc::off_t, r.len as libc::off_t);
    // SAFETY: fd is open for the whole call; advice only changes caching.
    unsafe { libc::posix_fadvise(fd, off, len, libc::POSIX_FADV_SEQUENTIAL) };
    let end = r.offset + r.len;
    let mut pos = r.offset;
    while pos < end {
        let want = buf.len().min((end - pos) as usize);
        let n = match file.read_at(&mut buf[..want], pos) {
            Ok(0) => break, // The file shrank since the walk; what is left is warm.
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        pos += n as u64;
        bar.inc(n as u64);
    }
    // SAFETY: as above.
    unsafe { libc::posix_fadvise(fd, off, len, libc::POSIX_FADV_DONTNEED) };
    Ok(())
}

fn split_into_ranges(files: &[FileEntry]) -> Vec<Range> {
    let mut ranges = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let mut offset = 0;
        // An empty file still gets one (empty) range: opening it is the work.
        loop {
            let len = RANGE.min(f.size - offset);
            ranges.push(Range {
                file: i,
                offset,
                len,
            });
            offset += len;
            if offset >= f.size {
                break;
            }
        }
        f.ranges_left.store(
            u32::try_from(f.size.div_ceil(RANGE).max(1)).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
    }
    ranges
}

/// The regular files under the roots, each once (hard links and overlapping
/// roots are read once), plus what could not be listed.
#[derive(Default)]
struct Walk {
    files: Vec<FileEntry>,
    seen: HashSet<(u64, u64)>,
    errors: Vec<String>,
}

impl Walk {
    /// Adds a root given on the command line; a symbolic link there is
    /// followed, since the user named it.
    fn add_root(&mut self, root: &Path, scan: &ProgressBar) {
        let meta = match std::fs::metadata(root) {
            Ok(m) => m,
            Err(e) => {
                self.errors.push(format!("{}: {e}", root.display()));
                return;
            }
        };
        if meta.is_file() {
            self.add_file(root.to_path_buf(), &meta);
            return;
        }
        if !meta.is_dir() {
            return;
        }
        // An explicit stack: deep trees must not overflow the thread's stack.
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(it) => it,
                Err(e) => {
                    self.errors.push(format!("{}: {e}", dir.display()));
                    continue;
                }
            };
            for entry in entries {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        self.errors.push(format!("{}: {e}", dir.display()));
                        break;
                    }
                };
                // DirEntry::metadata does not follow symbolic links.
                match entry.metadata() {
                    Ok(m) if m.is_dir() => dirs.push(entry.path()),
                    Ok(m) if m.is_file() => self.add_file(entry.path(), &m),
                    Ok(_) => {} // Symbolic links, devices, sockets, FIFOs.
                    Err(e) => self.errors.push(format!("{}: {e}", entry.path().display())),
                }
            }
            scan.set_message(format!(
                "scanning: {} files in {}",
                self.files.len(),
                dir.display()
            ));
        }
    }

    fn add_file(&mut self, path: PathBuf, meta: &std::fs::Metadata) {
        if self.seen.insert((meta.dev(), meta.ino())) {
            self.files.push(FileEntry {
                path,
                size: meta.len(),
                ranges_left: AtomicU32::new(0),
                failed: AtomicBool::new(false),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_file_is_cut_into_ranges_and_an_empty_one_gets_one() {
        let entry = |size| FileEntry {
            path: PathBuf::new(),
            size,
            ranges_left: AtomicU32::new(0),
            failed: AtomicBool::new(false),
        };
        let files = vec![entry(0), entry(RANGE * 2 + 5), entry(RANGE)];
        let ranges = split_into_ranges(&files);
        let got: Vec<(usize, u64, u64)> =
            ranges.iter().map(|r| (r.file, r.offset, r.len)).collect();
        assert_eq!(
            got,
            vec![
                (0, 0, 0),
                (1, 0, RANGE),
                (1, RANGE, RANGE),
                (1, 2 * RANGE, 5),
                (2, 0, RANGE),
            ]
        );
        let left: Vec<u32> = files
            .iter()
            .map(|f| f.ranges_left.load(Ordering::Relaxed))
            .collect();
        assert_eq!(left, vec![1, 3, 1]);
    }

    #[test]
    fn the_walk_skips_symlinks_and_reads_hard_links_once() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::fs::write(d.join("a/one"), b"1").unwrap();
        std::fs::write(d.join("a/b/two"), b"22").unwrap();
        std::fs::hard_link(d.join("a/one"), d.join("a/b/one-again")).unwrap();
        std::os::unix::fs::symlink(d.join("a/b"), d.join("a/link")).unwrap();
        let mut walk = Walk::default();
        let bar = ProgressBar::hidden();
        walk.add_root(&d.join("a"), &bar);
        walk.add_root(&d.join("a/b"), &bar); // overlaps the first root
        let mut sizes: Vec<u64> = walk.files.iter().map(|f| f.size).collect();
        sizes.sort();
        assert_eq!(sizes, vec![1, 2]);
        assert!(walk.errors.is_empty());
    }
}
