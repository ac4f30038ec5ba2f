//! `strata bench DIR`: a standard workload on any directory, in the spirit of
//! `juicefs bench`, so a mount can be checked in one command and compared with
//! other filesystems run through the same steps.
//!
//! In a fresh subdirectory of `DIR` each thread writes one big file in
//! `--block-size` writes and reads it back, then writes `--small-files` small
//! files, reads them and stats them. Rates count until the last `close()`
//! returns, as `juicefs bench` does; everything written is read back and
//! compared, so a fast but wrong filesystem does not pass. Between a write and
//! the following reads the kernel page cache is dropped (as root), so reads
//! reach the filesystem instead of memory. The subdirectory is removed at the
//! end, also after an error.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::Instant;

use clap::Args;
use indicatif::{BinaryBytes, ProgressBar, ProgressStyle};

use super::{CliError, CliResult, parse_size};

/// Bytes at the start of each block that say which block it is, so a block
/// read from the wrong place or file does not compare equal.
const STAMP: usize = 16;

#[derive(Args)]
pub struct BenchArgs {
    /// Directory to run in; a fresh subdirectory is created there and removed.
    pub dir: PathBuf,
    /// Size of each big file (one per thread).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub big_file_size: u64,
    /// Size of each small file.
    #[arg(long, default_value = "128K", value_parser = parse_size)]
    pub small_file_size: u64,
    /// Small files per thread (0 skips the small-file steps).
    #[arg(long, default_value_t = 100)]
    pub small_files: u64,
    /// Threads, each with its own files.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub threads: usize,
    /// Bytes per read and write call.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub block_size: u64,
}

pub async fn run(a: BenchArgs) -> CliResult {
    tokio::task::spawn_blocking(move || bench(a))
        .await
        .map_err(|e| CliError(format!("bench stopped: {e}")))?
}

/// One line of the result table.
struct Row {
    item: &'static str,
    value: String,
    unit: &'static str,
    cost: String,
}

fn bench(a: BenchArgs) -> CliResult {
    check_args(&a)?;
    let work = BenchDir::create(&a.dir)?;
    let mut cache = PageCache::new();
    let mut rows = Vec::new();
    let t = a.threads;
    let blocks_per_big = a.big_file_size.div_ceil(a.block_size);
    let big = FileSet {
        dir: &work.0,
        prefix: "big",
        files: 1,
        size: a.big_file_size,
        block: a.block_size,
        per_block: true,
    };
    let mib = |bytes: u64, secs: f64| bytes as f64 / (1 << 20) as f64 / secs;
    let total_big = a.big_file_size * t as u64;

    let secs = phase("write big file", t, blocks_per_big, |i, bar| {
        big.write(i, bar)
    })?;
    rows.push(Row {
        item: "Write big file",
        value: format!("{:.2}", mib(total_big, secs)),
        unit: "MiB/s",
        cost: format!("{secs:.2} s/file"),
    });
    cache.drop_all();
    let secs = phase("read big file", t, blocks_per_big, |i, bar| {
        big.read(i, bar)
    })?;
    rows.push(Row {
        item: "Read big file",
        value: format!("{:.2}", mib(total_big, secs)),
        unit: "MiB/s",
        cost: format!("{secs:.2} s/file"),
    });

    if a.small_files > 0 {
        let small = FileSet {
            dir: &work.0,
            prefix: "small",
            files: a.small_files,
            size: a.small_file_size,
            block: a.block_size,
            per_block: false,
        };
        let n = a.small_files;
        let per_sec = |secs: f64| format!("{:.1}", (n * t as u64) as f64 / secs);
        let cost = |secs: f64| format!("{:.2} ms/file", secs * 1000.0 / n as f64);
        let secs = phase("write small files", t, n, |i, bar| small.write(i, bar))?;
        rows.push(Row {
            item: "Write small file",
            value: per_sec(secs),
            unit: "files/s",
            cost: cost(secs),
        });
        cache.drop_all();
        let secs = phase("read small files", t, n, |i, bar| small.read(i, bar))?;
        rows.push(Row {
            item: "Read small file",
            value: per_sec(secs),
            unit: "files/s",
            cost: cost(secs),
        });
        cache.drop_all();
        let secs = phase("stat small files", t, n, |i, bar| small.stat(i, bar))?;
        rows.push(Row {
            item: "Stat file",
            value: per_sec(secs),
            unit: "files/s",
            cost: cost(secs),
        });
    }
    work.remove()?;

    println!(
        "block size {}, big file {}, small file {}, {} small files per thread, {} thread{}",
        BinaryBytes(a.block_size),
        BinaryBytes(a.big_file_size),
        BinaryBytes(a.small_file_size),
        a.small_files,
        t,
        if t == 1 { "" } else { "s" }
    );
    print_table(&rows);
    Ok(())
}

fn check_args(a: &BenchArgs) -> CliResult {
    let positive = [
        ("--big-file-size", a.big_file_size),
        ("--small-file-size", a.small_file_size),
        ("--block-size", a.block_size),
    ];
    if let Some((flag, _)) = positive.iter().find(|(_, v)| *v == 0) {
        return Err(CliError(format!("{flag} must be above zero")));
    }
    if a.block_size > 1 << 30 {
        return Err(CliError("--block-size must be at most 1G".into()));
    }
    if a.threads == 0 || a.threads > 1024 {
        return Err(CliError("--threads must be between 1 and 1024".into()));
    }
    match std::fs::metadata(&a.dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(CliError(format!("{} is not a directory", a.dir.display()))),
        Err(e) => Err(CliError(format!("{}: {e}", a.dir.display()))),
    }
}

/// Runs `work(thread, bar)` on `threads` threads at once and returns the
/// seconds from the common start until the last one finished. `ops_per_thread`
/// sizes the progress bar that `work` advances.
fn phase<F>(name: &str, threads: usize, ops_per_thread: u64, work: F) -> Result<f64, CliError>
where
    F: Fn(usize, &ProgressBar) -> Result<(), String> + Sync,
{
    let bar = ProgressBar::new(ops_per_thread * threads as u64).with_style(
        ProgressStyle::with_template("{msg:>18} [{wide_bar}] {pos}/{len} {elapsed}")
            .expect("the progress template is valid")
            .progress_chars("=> "),
    );
    bar.set_message(name.to_string());
    let start_line = Barrier::new(threads + 1);
    let (secs, results) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (work, bar, start_line) = (&work, &bar, &start_line);
                s.spawn(move || {
                    start_line.wait();
                    work(i, bar)
                })
            })
            .collect();
        start_line.wait();
        let started = Instant::now();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a thread panicked".into())))
            .collect();
        (started.elapsed().as_secs_f64(), results)
    });
    bar.finish_and_clear();
    match results.into_iter().find_map(Result::err) {
        Some(e) => Err(CliError(format!("{name}: {e}"))),
        None => Ok(secs.max(1e-9)),
    }
}

/// The files of one kind a thread owns: `PREFIX.THREAD.INDEX`, each `size`
/// bytes written and read `block` bytes per call.
struct FileSet<'a> {
    dir: &'a Path,
    prefix: &'static str,
    files: u64,
    size: u64,
    block: u64,
    /// The progress bar counts blocks (big files) instead of files.
    per_block: bool,
}

impl FileSet<'_> {
    fn path(&self, thread: usize, index: u64) -> PathBuf {
        self.dir.join(format!("{}.{thread}.{index}", self.prefix))
    }

    /// The blocks of one file: (number, length).
    fn blocks(&self) -> impl Iterator<Item = (u64, usize)> + use<'_> {
        (0..self.size.div_ceil(self.block)).map(|j| {
            let len = self.block.min(self.size - j * self.block);
            (j, len as usize)
        })
    }

    /// Writes this thread's files.
    fn write(&self, thread: usize, bar: &ProgressBar) -> Result<(), String> {
        let mut buf = pattern(thread, self.block as usize);
        for i in 0..self.files {
            let path = self.path(thread, i);
            let mut f = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            for (j, len) in self.blocks() {
                stamp(&mut buf, thread, i, j);
                f.write_all(&buf[..len])
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                if self.per_block {
                    bar.inc(1);
                }
            }
            // close() reports what the filesystem could not store.
            close(f).map_err(|e| format!("{}: {e}", path.display()))?;
            if !self.per_block {
                bar.inc(1);
            }
        }
        Ok(())
    }

    /// Reads this thread's files back and checks every byte.
    fn read(&self, thread: usize, bar: &ProgressBar) -> Result<(), String> {
        let mut want = pattern(thread, self.block as usize);
        let mut got = vec![0u8; self.block as usize];
        for i in 0..self.files {
            let path = self.path(thread, i);
            let mut f = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            for (j, len) in self.blocks() {
                let n = read_full(&mut f, &mut got[..len])
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                stamp(&mut want, thread, i, j);
                if n != len {
                    return Err(format!(
                        "{}: ended at byte {} of {}",
                        path.display(),
                        j * self.block + n as u64,
                        self.size
                    ));
                }
                if got[..len] != want[..len] {
                    return Err(format!(
                        "{}: block at byte {} reads back different data",
                        path.display(),
                        j * self.block
                    ));
                }
                if self.per_block {
                    bar.inc(1);
                }
            }
            if !self.per_block {
                bar.inc(1);
            }
        }
        Ok(())
    }

    fn stat(&self, thread: usize, bar: &ProgressBar) -> Result<(), String> {
        for i in 0..self.files {
            let path = self.path(thread, i);
            let m = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if m.len() != self.size {
                return Err(format!(
                    "{}: size {} instead of {}",
                    path.display(),
                    m.len(),
                    self.size
                ));
            }
            bar.inc(1);
        }
        Ok(())
    }
}

/// Incompressible bytes, different for every thread.
fn pattern(thread: usize, len: usize) -> Vec<u8> {
    // xorshift64*: fast, and good enough that no store can compress it.
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (thread as u64 + 1);
    let mut buf = Vec::with_capacity(len + 8);
    while buf.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        buf.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    buf.truncate(len);
    buf
}

/// Marks a block with its thread, file and block number (as much as fits).
fn stamp(buf: &mut [u8], thread: usize, file: u64, block: u64) {
    let mut s = [0u8; STAMP];
    s[..4].copy_from_slice(&(thread as u32).to_le_bytes());
    s[4..8].copy_from_slice(&(file as u32).to_le_bytes());
    s[8..].copy_from_slice(&block.to_le_bytes());
    let n = STAMP.min(buf.len());
    buf[..n].copy_from_slice(&s[..n]);
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Closes a file and returns close()'s error, which `drop` would swallow.
fn close(f: File) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = f.into_raw_fd();
    // SAFETY: fd was just taken from the File, so it is open and owned here.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The fresh subdirectory the benchmark works in; removed when dropped, so an
/// error leaves nothing behind.
struct BenchDir(PathBuf);

impl BenchDir {
    fn create(parent: &Path) -> Result<Self, CliError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = parent.join(format!("strata-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir)
            .map_err(|e| CliError(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Self(dir))
    }

    /// Removes the directory, reporting a failure (dropping only warns).
    fn remove(self) -> CliResult {
        let dir = self.0.clone();
        std::mem::forget(self);
        std::fs::remove_dir_all(&dir)
            .map_err(|e| CliError(format!("cannot remove {}: {e}", dir.display())))
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("strata: bench: cannot remove {}: {e}", self.0.display());
        }
    }
}

/// Drops the kernel page cache between phases when allowed, and says once
/// when it cannot, since reads then measure memory rather than the filesystem.
struct PageCache {
    warned: bool,
}

impl PageCache {
    fn new() -> Self {
        Self { warned: false }
    }

    fn drop_all(&mut self) {
        // SAFETY: sync and geteuid have no preconditions.
        unsafe { libc::sync() };
        let why = if unsafe { libc::geteuid() } != 0 {
            "not running as root".to_string()
        } else {
            match std::fs::write("/proc/sys/vm/drop_caches", "3") {
                Ok(()) => return,
                Err(e) => format!("/proc/sys/vm/drop_caches: {e}"),
            }
        };
        if !self.warned {
            self.warned = true;
            eprintln!(
                "strata: bench: the page cache is not dropped between phases ({why}); reads may come from memory"
            );
        }
    }
}

fn print_table(rows: &[Row]) {
    let header = ["ITEM", "VALUE", "UNIT", "COST"];
    let cells: Vec<[&str; 4]> = rows
        .iter()
        .map(|r| [r.item, r.value.as_str(), r.unit, r.cost.as_str()])
        .collect();
    let mut width = header.map(str::len);
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.len());
        }
    }
    let rule: String = width
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+";
    println!("{rule}");
    let head: String = header
        .iter()
        .zip(width)
        .map(|(h, w)| format!("| {h:^w$} "))
        .collect();
    println!("{head}|");
    println!("{rule}");
    for c in &cells {
        let line: String = c
            .iter()
            .zip(width)
            .enumerate()
            .map(|(i, (s, w))| {
                if i == 0 {
                    format!("| {s:<w$} ")
                } else {
                    format!("| {s:>w$} ")
                }
            })
            .collect();
        println!("{line}|");
    }
    println!("{rule}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_the_file_with_a_short_last_one() {
        let dir = PathBuf::new();
        let set = FileSet {
            dir: &dir,
            prefix: "x",
            files: 1,
            size: 10,
            block: 4,
            per_block: true,
        };
        assert_eq!(
            set.blocks().collect::<Vec<_>>(),
            vec![(0, 4), (1, 4), (2, 2)]
        );
    }

    #[test]
    fn stamps_tell_blocks_apart_even_when_short() {
        let mut a = pattern(0, 64);
        let mut b = a.clone();
        stamp(&mut a, 0, 0, 1);
        stamp(&mut b, 0, 0, 2);
        assert_ne!(a, b);
        let mut tiny = vec![0u8; 3];
        stamp(&mut tiny, 1, 0, 0);
        assert_eq!(tiny, vec![1, 0, 0]);
        assert_ne!(pattern(0, 64), pattern(1, 64));
    }

    #[test]
    fn a_run_on_a_plain_directory_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let args = BenchArgs {
            dir: tmp.path().to_path_buf(),
            big_file_size: 3 << 20,
            small_file_size: 5000,
            small_files: 7,
            threads: 2,
            block_size: 1 << 20,
        };
        bench(args).unwrap();
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn zero_sizes_and_missing_directories_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let ok = || BenchArgs {
            dir: tmp.path().to_path_buf(),
            big_file_size: 1 << 20,
            small_file_size: 1 << 10,
            small_files: 1,
            threads: 1,
            block_size: 1 << 20,
        };
        let err = |a: BenchArgs| check_args(&a).unwrap_err().0;
        assert_eq!(
            err(BenchArgs {
                block_size: 0,
                ..ok()
            }),
            "--block-size must be above zero"
        );
        assert_eq!(
            err(BenchArgs { threads: 0, ..ok() }),
            "--threads must be between 1 and 1024"
        );
        assert!(
            err(BenchArgs {
                dir: tmp.path().join("nope"),
                ..ok()
            })
            .contains("No such file or directory")
        );
        assert!(check_args(&ok()).is_ok());
    }
}
