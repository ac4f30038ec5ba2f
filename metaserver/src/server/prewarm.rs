//! Reading the state database into the page cache after a start.
//!
//! A node that restarts (or whose host dropped its page cache) finds its
//! rows on disk only: each lookup then waits for a random read of a B-tree
//! page, so a filesystem of millions of inodes answers a fraction of its
//! usual rate until its working set has been read back page by page. Where
//! the whole database fits in memory with room to spare, a node started
//! with `--prewarm` reads it through once, sequentially and in the
//! background, right after it starts serving, at the lowest CPU and IO
//! priority, so that its pages are in the kernel's cache (the same idea as
//! PostgreSQL's pg_prewarm). It is off by default: the node's writes are
//! slower while it reads.

use std::path::{Path, PathBuf};
use std::time::Instant;

/// The database is read ahead only while it is at most this share of the
/// memory available at start: more would push out pages other processes
/// (and the node's own log and snapshots) need.
const MEMORY_SHARE: u64 = 2;
/// Bytes read at a time, so that a shutdown stops it soon.
const CHUNK: u64 = 4 << 20;

// ioprio_set(2): libc has the call's number, not its constants.
const IOPRIO_WHO_PROCESS: libc::c_int = 1;
const IOPRIO_CLASS_IDLE: libc::c_int = 3;
const IOPRIO_CLASS_SHIFT: libc::c_int = 13;

/// What a read-ahead did.
#[derive(Debug, PartialEq, Eq)]
enum Prewarm {
    /// Read the first `bytes` of the file (all of it unless stopped).
    Read { bytes: u64 },
    /// The file is larger than the share of memory it may take.
    TooLarge { bytes: u64, available: u64 },
}

/// Whether a database of `db_bytes` may be read ahead with `available`
/// bytes of memory available.
fn fits(db_bytes: u64, available: u64) -> bool {
    db_bytes <= available / MEMORY_SHARE
}

/// Memory available for new allocations without swapping, from
/// /proc/meminfo (`MemAvailable`); None where it cannot be read.
fn memory_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Reads `path` through once, `CHUNK` at a time, until done or `stop` says
/// so; only if it fits in `available` bytes. The bytes are dropped: what
/// stays is the file's pages in the kernel's cache. (`posix_fadvise`'s
/// WILLNEED would spare the copy, but Linux reads only a few MiB ahead per
/// call: a 7 GiB database was 0.9 GiB cached after it.)
fn read_ahead(path: &Path, available: u64, stop: impl Fn() -> bool) -> std::io::Result<Prewarm> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let bytes = file.metadata()?.len();
    if !fits(bytes, available) {
        return Ok(Prewarm::TooLarge { bytes, available });
    }
    let mut buf = vec![0u8; CHUNK as usize];
    let mut at = 0;
    while !stop() {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => at += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Prewarm::Read { bytes: at })
}

/// Reads the database at `path` ahead on a thread of its own, logging
/// what it did; `shutdown` stops it.
pub(super) fn start(path: PathBuf, shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some(available) = memory_available() else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("strata-prewarm".into())
        .spawn(move || {
            // The lowest CPU priority and the idle IO class: requests
            // served meanwhile come first. Best effort (a scheduler without
            // IO classes ignores the second).
            // SAFETY: plain syscalls about this thread's own id.
            unsafe {
                let tid = libc::gettid();
                libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
                libc::syscall(
                    libc::SYS_ioprio_set,
                    IOPRIO_WHO_PROCESS,
                    tid,
                    IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
                );
            }
            let began = Instant::now();
            match read_ahead(&path, available, || *shutdown.borrow()) {
                Ok(Prewarm::Read { bytes }) => tracing::info!(
                    mib = bytes >> 20,
                    secs = began.elapsed().as_secs_f64(),
                    "read the state database into the page cache"
                ),
                Ok(Prewarm::TooLarge { bytes, available }) => tracing::info!(
                    mib = bytes >> 20,
                    available_mib = available >> 20,
                    "the state database is more than half the available memory; not reading it into the page cache"
                ),
                Err(e) => tracing::warn!(error = %e, "could not read the state database into the page cache"),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start reading the state database into the page cache");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_is_read_ahead_only_within_half_the_available_memory() {
        assert!(fits(0, 0));
        assert!(fits(4 << 30, 8 << 30));
        assert!(!fits((4 << 30) + 1, 8 << 30));
        assert!(!fits(1, 1));
    }

    #[test]
    fn read_ahead_covers_the_whole_file_unless_stopped_or_too_large() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let len = CHUNK + 12345;
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(len).unwrap();
        assert_eq!(
            read_ahead(&path, 4 * len, || false).unwrap(),
            Prewarm::Read { bytes: len }
        );
        // Stopped after its first chunk.
        let asked = std::cell::Cell::new(0);
        let stop = || {
            asked.set(asked.get() + 1);
            asked.get() > 1
        };
        assert_eq!(
            read_ahead(&path, 4 * len, stop).unwrap(),
            Prewarm::Read { bytes: CHUNK }
        );
        assert_eq!(
            read_ahead(&path, len, || false).unwrap(),
            Prewarm::TooLarge {
                bytes: len,
                available: len
            }
        );
        assert!(read_ahead(&dir.path().join("missing"), len, || false).is_err());
    }
}
