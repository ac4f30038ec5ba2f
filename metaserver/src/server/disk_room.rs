//! Room on the node's data disk. A Raft group whose log or snapshot
//! cannot be written stops for good (openraft takes a storage error as
//! fatal) until the node restarts, and its clients get EIO. So a leader
//! refuses client changes that add data with ENOSPC while its data disk
//! has less free than the next log segment and snapshot need; changes that
//! free space or finish what was begun still go through, and writes are
//! taken again as soon as there is room (no restart).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::wal::SEGMENT_BYTES;
use crate::MetaError;

/// How long a measurement of the disk is used.
const FRESH: Duration = Duration::from_millis(500);
/// Room kept beyond a log segment and a snapshot.
const MARGIN: u64 = 16 << 20;

pub(crate) struct DiskRoom {
    data_dir: PathBuf,
    snapshot_dir: PathBuf,
    /// When last measured: free bytes, and the room needed.
    last: Mutex<Option<(Instant, u64, u64)>>,
}

impl DiskRoom {
    pub(crate) fn new(data_dir: &Path, snapshot_dir: &Path) -> DiskRoom {
        DiskRoom {
            data_dir: data_dir.to_path_buf(),
            snapshot_dir: snapshot_dir.to_path_buf(),
            last: Mutex::new(None),
        }
    }

    /// Refuses with NoSpace when the data disk has less free than a new
    /// log segment, a snapshot as large as the largest kept, and a margin.
    pub(crate) fn check(&self) -> Result<(), MetaError> {
        let mut last = self.last.lock().unwrap();
        let (free, needed) = match *last {
            Some((at, free, needed)) if at.elapsed() < FRESH => (free, needed),
            _ => {
                let Some(free) = free_bytes(&self.data_dir) else {
                    return Ok(());
                };
                let needed = SEGMENT_BYTES + largest_file(&self.snapshot_dir) + MARGIN;
                *last = Some((Instant::now(), free, needed));
                (free, needed)
            }
        };
        if free < needed {
            return Err(MetaError::NoSpace(format!(
                "the metaserver's data disk ({}) has {} MiB free; it keeps {} MiB for its log \
                 and snapshots (delete files, or give it room)",
                self.data_dir.display(),
                free >> 20,
                needed >> 20
            )));
        }
        Ok(())
    }
}

/// Bytes an unprivileged writer may still use on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: a zeroed statvfs is a valid value for the call to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs(3) with a NUL-terminated path and a live struct.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// The size of the largest file directly in `dir` (0 if none).
fn largest_file(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}
