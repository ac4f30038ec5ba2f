//! Opening and closing files: file handles, close-to-open consistency
//! (which cached pages the kernel may keep), and what a close does: commit
//! the buffered writes, drop the closing owner's locks, and let go of the
//! inode when its last handle goes.

use std::collections::HashMap;
use std::sync::Arc;

use strata_meta::NewInode;
use strata_meta::client::Written;
use strata_meta::{ChangeStamp, FileType, Ino, Inode};

use crate::error::{FsError, FsResult};
use crate::file::OpenFile;
use crate::fs::{Filesystem, Owner};

/// Files whose cached pages are remembered before the memory is cleared.
const CACHED_PAGES_KEPT: usize = 100_000;

/// Each file's stamp as of the last time the pages the kernel caches of it
/// were known to match the metaserver: its creation or last open here, or
/// this client's own commit onto that very stamp since. Per inode, open or
/// not (the kernel keeps pages past the last close), and bounded.
#[derive(Default)]
pub(crate) struct CachedPages(std::sync::Mutex<HashMap<Ino, ChangeStamp>>);

impl CachedPages {
    /// Records that the kernel's pages of `ino` match the file as of
    /// `stamp`; returns the stamp recorded before.
    fn record(&self, ino: Ino, stamp: ChangeStamp) -> Option<ChangeStamp> {
        let mut stamps = self.0.lock().unwrap();
        if stamps.len() >= CACHED_PAGES_KEPT {
            stamps.clear();
        }
        stamps.insert(ino, stamp)
    }

    /// After this client committed its writes of `ino`: if the file was,
    /// just before, as the kernel's pages show it, they now show it as
    /// committed (the writes went through them), and the next open may keep
    /// them. Otherwise (another client's change came in between, or some of
    /// the writes bypassed the pages) the next open drops them.
    pub fn after_own_commit(&self, ino: Ino, written: &Written, bypassed: bool) {
        let mut stamps = self.0.lock().unwrap();
        let current =
            !bypassed && written.before.is_some() && stamps.get(&ino).copied() == written.before;
        if current {
            stamps.insert(ino, written.inode.stamp());
        } else {
            stamps.remove(&ino);
        }
    }
}

impl Filesystem {
    pub async fn open(&self, ino: Ino, flags: i32) -> FsResult<u64> {
        Ok(self.open_cached(ino, flags).await?.0)
    }

    /// Opens `ino`; also says whether the kernel may keep the pages it has
    /// cached of it: only if the file's stamp is the one `cached_pages`
    /// holds, so nothing but this client's own writes changed it since its
    /// previous open here (close-to-open: a change from anywhere else drops
    /// them).
    pub async fn open_cached(&self, ino: Ino, flags: i32) -> FsResult<(u64, bool)> {
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if writes {
            self.check_writable()?;
        }
        // Close-to-open holds for this client's own write-back commits too.
        self.wait_written_back(ino).await?;
        // The first chunk's map comes along: most reads after an open start
        // there, and a small file is all first chunk.
        let (inode, first_chunk) = self.meta.getattr_and_chunk(ino, 0).await?;
        match inode.kind {
            FileType::Dir => return Err(FsError::new(libc::EISDIR, "is a directory")),
            FileType::File => {}
            _ => {}
        }
        let fh = self.handles.open_file(inode.clone(), flags);
        // Another handle may have kept older attributes; without buffered
        // writes of our own, this open's fresh view wins (close-to-open).
        let of = self.open_file(ino)?;
        let mut d = of.data.lock().await;
        if !d.has_pending() {
            // The map read with the attributes is current only if no commit
            // of another handle here changed the file since: then the
            // handle's attributes still equal those just read.
            let current = d.attr == inode;
            d.invalidate(&inode);
            if current {
                d.chunks.insert(0, Arc::new(first_chunk));
            }
        }
        let seen = inode.stamp();
        let keep = self.cached_pages.record(ino, seen) == Some(seen);
        Ok((fh, keep))
    }

    /// Creates and opens a file with permission bits `mode` and open(2)
    /// `flags`.
    pub async fn create(
        &self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        flags: i32,
        owner: Owner,
    ) -> FsResult<(Inode, u64)> {
        self.check_writable()?;
        let Owner { uid, gid } = owner;
        let new = NewInode::plain(FileType::File, mode, uid, gid);
        let inode = match self.create_later(parent, name, &new, flags).await? {
            Some(inode) => inode,
            None => self.meta.create(parent, name, new).await?,
        };
        // A new file has no extended attributes: the kernel's
        // security.capability lookup before its first write needs no round
        // trip (as fresh as names read from the metaserver now would be).
        self.xattr_names.put(inode.ino, Default::default());
        // The kernel has no pages of a new file: none to disagree with it.
        self.cached_pages.record(inode.ino, inode.stamp());
        let fh = self.handles.open_file(inode.clone(), flags);
        Ok((inode, fh))
    }

    /// Creates `parent/name` to be sent with the file's first commit
    /// (decision 71) where nothing can tell the difference but another
    /// client's view until then: not for O_EXCL (a lock file's create must
    /// win or fail at once), nor where a quota counts creates (it refuses
    /// at create), nor with write-back (its journal commits files that
    /// exist), and only with the directory's attributes at hand (its setgid
    /// bit decides the file's group). None: create it now.
    async fn create_later(
        &self,
        parent: Ino,
        name: &[u8],
        new: &NewInode,
        flags: i32,
    ) -> FsResult<Option<Inode>> {
        if !self.config.defer_creates || flags & libc::O_EXCL != 0 || self.writeback.is_some() {
            return Ok(None);
        }
        let Some((dir, _)) = self.recent_attr(parent) else {
            return Ok(None);
        };
        if !self
            .creates_uncounted(self.meta.group_of(parent).await?)
            .await?
        {
            return Ok(None);
        }
        Ok(self.meta.create_later(&dir, name, new.clone()).await?)
    }

    /// The state of `ino` its open handles share.
    pub(crate) fn open_file(&self, ino: Ino) -> FsResult<Arc<OpenFile>> {
        self.handles
            .file(ino)
            .ok_or_else(|| FsError::new(libc::EBADF, "file is not open"))
    }

    /// Whether a flush of `ino` would have nothing to commit, known without
    /// waiting: then the caller may answer at once.
    pub fn nothing_to_flush(&self, ino: Ino) -> bool {
        if self.meta.is_deferred(ino) {
            return false;
        }
        let Ok(of) = self.open_file(ino) else {
            return true;
        };
        of.data.try_lock().is_ok_and(|d| !d.has_pending())
    }

    /// Whether `flush(ino, fh, lock_owner)` would do nothing, known
    /// without waiting: nothing buffered, no locks of `lock_owner` to drop
    /// and no dropped writes to report. Then the caller may answer at once.
    pub fn flush_is_noop(&self, ino: Ino, fh: u64, lock_owner: Option<u64>) -> bool {
        self.nothing_to_flush(ino)
            && !lock_owner.is_some_and(|o| self.holds_locks(ino, o))
            && self.handles.dropped_since_open(fh).is_none()
    }

    /// Releases handle `fh` of `ino` without waiting when that takes no
    /// round trip: nothing to commit, no locks of `lock_owner` to drop, no
    /// hold to let go. Returns false (and does nothing) otherwise.
    pub fn try_release_now(&self, ino: Ino, fh: u64, lock_owner: Option<u64>) -> bool {
        if !self.flush_is_noop(ino, fh, lock_owner) {
            return false;
        }
        self.handles.close_file_unless_held(fh)
    }

    /// Commits what was written to `ino` through any of its handles here.
    async fn commit_open(&self, ino: Ino) -> FsResult<()> {
        let Ok(of) = self.open_file(ino) else {
            return Ok(self.meta.settle(ino).await?);
        };
        let mut d = of.data.lock().await;
        self.commit(ino, &mut d).await
    }

    /// The kernel's flush, at every close(2) of a descriptor: commits the
    /// buffered writes of `ino`, and with `lock_owner` (the closing process)
    /// drops its POSIX locks on the file, as closing any descriptor does.
    /// Writes through `fh` that an earlier commit dropped (`DroppedWrites`)
    /// fail the close as well.
    pub async fn flush(&self, ino: Ino, fh: u64, lock_owner: Option<u64>) -> FsResult<()> {
        let locks = match lock_owner {
            Some(owner) => self.release_locks(ino, owner).await,
            None => Ok(()),
        };
        self.commit_open(ino).await.and(locks)?;
        self.handles.dropped_since_open(fh).map_or(Ok(()), Err)
    }

    /// Commits are acknowledged by a Raft quorum after the blocks are
    /// stored, so a commit is already durable. Writes that an earlier
    /// commit dropped since this handle's last fsync fail it, whichever
    /// descriptor's flush met the refusal (`DroppedWrites`).
    pub async fn fsync(&self, ino: Ino, fh: u64) -> FsResult<()> {
        let committed = self.commit_open(ino).await;
        let dropped = self.handles.dropped_since_fsync(fh);
        committed?;
        dropped.map_or(Ok(()), Err)
    }

    /// The last close of handle `fh`: commits the buffered writes of `ino`,
    /// and forgets the handle. With `lock_owner` (the last close of an
    /// flock'ed file), the owner's locks go. The inode's last handle here
    /// lets go of the hold on it, if any.
    pub async fn release(&self, ino: Ino, fh: u64, lock_owner: Option<u64>) -> FsResult<()> {
        let locks = match lock_owner {
            Some(owner) => self.release_locks(ino, owner).await,
            None => Ok(()),
        };
        let res = self.commit_open(ino).await;
        if let Some(last) = self.handles.close_file(fh)
            && last.held
        {
            self.release_hold(last.ino).await;
        }
        res.and(locks)
    }

    /// Commits every buffered write of every open file (unmount, shutdown).
    pub async fn flush_all(&self) -> FsResult<()> {
        let mut first_err = None;
        for (ino, of) in self.handles.open_files() {
            let mut d = of.data.lock().await;
            if let Err(e) = self.commit(ino, &mut d).await {
                tracing::error!(ino, error = %e, "flushing at shutdown failed");
                first_err.get_or_insert(e);
            }
        }
        // Files created here and closed without a write are created with
        // their first commit; the commits above sent the rest.
        if let Err(e) = self.meta.settle_all().await {
            tracing::error!(error = %e, "sending creates at shutdown failed");
            first_err.get_or_insert(e.into());
        }
        self.release_all_locks().await;
        if let Some(wb) = &self.writeback {
            // Other clients see written-back data once it is committed; the
            // journal would finish it at the next start, but not for them.
            tracing::info!("waiting for write-back uploads to finish");
            if let Err(e) = wb.wait_all().await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}
