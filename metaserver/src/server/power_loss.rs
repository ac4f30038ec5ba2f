//! What a test needs to simulate a power loss on a node (issue 26): after
//! a SIGKILL the kernel still holds every write, so a log that never
//! fsynced would pass a kill test. With `STRATA_TEST_POWER_LOSS` set, a
//! node keeps, beside each file it fsyncs, what that file held at its last
//! fsync: the tables (redb) are copied to `meta.redb.synced` after every
//! sync, and each log segment's durable length goes to `SEGMENT.synced`.
//! The test then "powers off" a killed node by putting those back (and
//! tearing a log's unsynced tail), and starts it again: whatever was
//! acknowledged must still be there. Nothing of this runs otherwise.

use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// The environment variable that turns the images on.
pub const ENV: &str = "STRATA_TEST_POWER_LOSS";

/// Whether this process keeps images for a power-loss test.
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os(ENV).is_some())
}

/// Where the image of `path` as of its last fsync is kept.
pub fn image_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".synced");
    PathBuf::from(name)
}

/// Records that the first `len` bytes of log segment `segment` are
/// durable (after the fsync that made them so).
pub fn record_synced_len(segment: &Path, len: u64) {
    if enabled() {
        // Renamed into place: a kill mid-write leaves the previous length.
        let image = image_of(segment);
        let mut tmp = image.as_os_str().to_owned();
        tmp.push(".tmp");
        if std::fs::write(&tmp, len.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &image);
        }
    }
}

/// fdatasync of log segment `segment`'s `file`, whose first `len` bytes
/// are then durable: recorded only by the fsync itself, so a log that
/// skipped it would lose them in the test, as it would on a power loss.
pub fn sync_data(file: &File, segment: &Path, len: u64) -> io::Result<()> {
    file.sync_data()?;
    record_synced_len(segment, len);
    Ok(())
}

/// A redb file that, after every sync, copies itself to its image.
pub struct SyncedImage {
    inner: FileBackend,
    path: PathBuf,
}

impl SyncedImage {
    pub fn open(path: &Path) -> io::Result<SyncedImage> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(SyncedImage {
            inner: new_backend(file)?,
            path: path.to_path_buf(),
        })
    }
}

fn new_backend(file: File) -> io::Result<FileBackend> {
    FileBackend::new(file).map_err(io::Error::other)
}

impl fmt::Debug for SyncedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SyncedImage({})", self.path.display())
    }
}

impl StorageBackend for SyncedImage {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.inner.sync_data()?;
        // Copied whole and renamed into place: a kill mid-copy leaves the
        // previous image.
        let image = image_of(&self.path);
        let mut tmp = image.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::copy(&self.path, &tmp)?;
        std::fs::rename(&tmp, &image)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
