//! The filesystem core: plain async Rust over the metaserver client and the
//! object store. The FUSE adapter calls one method per kernel request.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use strata_cache::{BlockCache, Staging};
use strata_meta::client::Written;
use strata_meta::request::RenameMode;
use strata_meta::{
    ChangeStamp, Dentry, DirEntry, FileType, FsClient, Ino, Inode, SetAttr, Timestamp,
};
use tokio::sync::{Mutex, Semaphore};

use crate::error::{FsError, FsResult};
use crate::garbage::Compactor;
use crate::writeback::Writeback;

#[derive(Debug, Clone)]
pub struct FsConfig {
    /// How long the kernel may cache attributes.
    pub attr_ttl: Duration,
    /// How long the kernel may cache name lookups.
    pub entry_ttl: Duration,
    /// Bytes written to an open file before they are committed without
    /// waiting for close.
    pub file_buffer: usize,
    pub read_only: bool,
    /// Bytes of full blocks on their way to the store at once; writers wait
    /// beyond it. (Each file being written also holds its last partial block.)
    pub buffer_size: usize,
    /// Block uploads running at once.
    pub max_uploads: usize,
    /// Most blocks fetched ahead of a sequential reader (0: no prefetch).
    pub max_prefetch_blocks: u32,
    /// Block fetches running at once for prefetch.
    pub max_prefetches: usize,
    /// How often the background garbage worker runs.
    pub gc_interval: Duration,
    /// How long objects of a slice that left every chunk map stay before they
    /// are deleted, so reads that started from the old map still find them.
    pub deletion_delay: Duration,
    /// Keep full blocks of large writes in the disk cache too (partial
    /// blocks always go there). On by default since disk-cache files are
    /// written around the page cache, which made the copy cheap.
    pub cache_large_writes: bool,
    /// How long this client's file locks outlive it if it dies (they are
    /// renewed every third of it while it runs).
    pub lock_lease: Duration,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            attr_ttl: Duration::from_secs(1),
            entry_ttl: Duration::from_secs(1),
            file_buffer: 64 << 20,
            read_only: false,
            buffer_size: 300 << 20,
            max_uploads: 20,
            max_prefetch_blocks: 16,
            max_prefetches: 32,
            gc_interval: Duration::from_secs(10),
            deletion_delay: Duration::from_secs(60),
            cache_large_writes: true,
            lock_lease: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// State of one inode while at least one handle has it open.
pub(crate) struct OpenFile {
    pub handles: AtomicUsize,
    pub data: Mutex<crate::file::FileData>,
    /// When the last write arrived (the compactor waits for a pause).
    pub last_write: std::sync::Mutex<Option<tokio::time::Instant>>,
}

struct DirHandle {
    ino: Ino,
    /// Cookies handed out in the last page, so a continuation resumes at the right name.
    last_page: Vec<(u64, Vec<u8>)>,
}

pub struct Filesystem {
    pub(crate) meta: Arc<FsClient>,
    pub(crate) cache: Arc<BlockCache>,
    pub(crate) config: FsConfig,
    /// Bytes of blocks being stored (see `FsConfig::buffer_size`).
    pub(crate) buffer_budget: Arc<Semaphore>,
    pub(crate) upload_slots: Arc<Semaphore>,
    pub(crate) prefetch_slots: Arc<Semaphore>,
    pub(crate) writeback: Option<Arc<Writeback>>,
    pub(crate) compactor: Arc<Compactor>,
    /// Unlinked files this client has open, held out of the trash purge.
    pub(crate) held: std::sync::Mutex<HashSet<Ino>>,
    pub(crate) xattr_names: crate::xattr::XattrNames,
    pub(crate) locks: crate::locks::HeldLocks,
    /// Each file's stamp as of the last time the pages the kernel caches of
    /// it were known to match the metaserver: its creation or last open here,
    /// or this client's own commit onto that very stamp since.
    opened: std::sync::Mutex<HashMap<Ino, ChangeStamp>>,
    /// Handles opened with O_APPEND: their writes go where the metaserver
    /// says the file ends, whatever offset the kernel computed.
    appending: std::sync::Mutex<HashSet<u64>>,
    /// Handles whose reads and writes bypass the kernel's page cache
    /// (`bypasses_page_cache`): what they write is not in its cached pages.
    direct: std::sync::Mutex<HashSet<u64>>,
    pub(crate) open_files: std::sync::Mutex<HashMap<Ino, Arc<OpenFile>>>,
    handles: std::sync::Mutex<HashMap<u64, Ino>>,
    dirs: std::sync::Mutex<HashMap<u64, DirHandle>>,
    next_fh: AtomicU64,
    pub(crate) slice_ids: Mutex<(u64, u64)>,
}

/// Whether a file opened with `flags` bypasses the kernel's page cache:
/// O_DIRECT does, as on a local filesystem; so does O_APPEND, whose writes
/// land where the metaserver says the file ends rather than where the
/// kernel thinks it does.
pub fn bypasses_page_cache(flags: i32) -> bool {
    flags & (libc::O_DIRECT | libc::O_APPEND) != 0
}

const SYMLINK_MAX: usize = strata_meta::MAX_SYMLINK_LEN;
/// Files whose state at open is remembered before the memory is cleared.
const OPENED_KEPT: usize = 100_000;
/// What statfs reports as capacity: object stores have no meaningful size.
const REPORTED_CAPACITY: u64 = 1 << 50;
const REPORTED_INODES: u64 = 1 << 40;

impl Filesystem {
    /// A filesystem core over `meta` and the block cache in front of its
    /// store; with `writeback`, blocks and commits are staged there first
    /// (and what a previous run left staged is finished in the background).
    /// Call `start_background` to run the garbage worker and compactor.
    pub fn new(
        meta: FsClient,
        cache: Arc<BlockCache>,
        config: FsConfig,
        writeback: Option<Staging>,
    ) -> FsResult<Arc<Filesystem>> {
        let meta = Arc::new(meta);
        let compactor = Arc::new(Compactor::new(meta.info.chunk_size as u64));
        let writeback = match writeback {
            Some(staging) => {
                let wb = Arc::new(Writeback::open(staging)?);
                wb.start(meta.clone(), cache.clone(), compactor.clone());
                Some(wb)
            }
            None => None,
        };
        Ok(Arc::new(Filesystem {
            buffer_budget: Arc::new(Semaphore::new(config.buffer_size.max(1))),
            upload_slots: Arc::new(Semaphore::new(config.max_uploads.max(1))),
            prefetch_slots: Arc::new(Semaphore::new(config.max_prefetches)),
            meta,
            cache,
            config,
            writeback,
            compactor,
            held: Default::default(),
            xattr_names: Default::default(),
            locks: Default::default(),
            opened: Default::default(),
            appending: Default::default(),
            direct: Default::default(),
            open_files: Default::default(),
            handles: Default::default(),
            dirs: Default::default(),
            next_fh: AtomicU64::new(1),
            slice_ids: Mutex::new((0, 0)),
        }))
    }

    /// The block cache (for statistics).
    pub fn cache(&self) -> &Arc<BlockCache> {
        &self.cache
    }

    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    pub fn info(&self) -> &strata_meta::FsInfo {
        &self.meta.info
    }

    fn check_writable(&self) -> FsResult<()> {
        if self.config.read_only {
            return Err(FsError::new(libc::EROFS, "mounted read-only"));
        }
        Ok(())
    }

    /// Attributes as this client sees them: buffered writes, and write-back
    /// commits still on their way, count toward the size.
    pub(crate) async fn overlay(&self, mut inode: Inode) -> Inode {
        let of = self.open_files.lock().unwrap().get(&inode.ino).cloned();
        if let Some(of) = of {
            of.data.lock().await.overlay_attr(&mut inode);
        }
        if let Some((end, written)) = self.writeback.as_ref().and_then(|w| w.pending(inode.ino)) {
            inode.size = inode.size.max(end);
            inode.mtime = inode.mtime.max(written);
            inode.ctime = inode.ctime.max(written);
        }
        inode
    }

    pub async fn lookup(&self, parent: Ino, name: &[u8]) -> FsResult<Inode> {
        let inode = self.meta.lookup(parent, name).await?;
        Ok(self.overlay(inode).await)
    }

    pub async fn getattr(&self, ino: Ino) -> FsResult<Inode> {
        let inode = self.meta.getattr(ino).await?;
        Ok(self.overlay(inode).await)
    }

    pub async fn setattr(&self, ino: Ino, set: SetAttr) -> FsResult<Inode> {
        self.check_writable()?;
        let of = self.open_files.lock().unwrap().get(&ino).cloned();
        if let Some(of) = of {
            // Buffered writes land first so a truncate cuts them too.
            let mut d = of.data.lock().await;
            self.commit(ino, &mut d).await?;
            self.wait_written_back(ino).await?;
            let inode = self.meta.setattr(ino, set).await?;
            d.invalidate(&inode);
            return Ok(inode);
        }
        self.wait_written_back(ino).await?;
        Ok(self.meta.setattr(ino, set).await?)
    }

    /// With write-back, waits until `ino`'s journaled commits have landed.
    async fn wait_written_back(&self, ino: Ino) -> FsResult<()> {
        if let Some(wb) = &self.writeback {
            wb.wait_inode(ino).await?;
        }
        Ok(())
    }

    pub async fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>> {
        let inode = self.meta.getattr(ino).await?;
        inode
            .symlink
            .ok_or_else(|| FsError::new(libc::EINVAL, "not a symlink"))
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn mknod(
        &self,
        parent: Ino,
        name: &[u8],
        kind: FileType,
        mode: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<Inode> {
        self.check_writable()?;
        if kind == FileType::Dir || kind == FileType::Symlink {
            return Err(FsError::new(
                libc::EINVAL,
                "mknod cannot make directories or symlinks",
            ));
        }
        Ok(self
            .meta
            .create(
                parent,
                name,
                strata_meta::NewInode {
                    kind,
                    mode,
                    uid,
                    gid,
                    rdev,
                    symlink: None,
                },
            )
            .await?)
    }

    pub async fn mkdir(
        &self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<Inode> {
        self.check_writable()?;
        Ok(self
            .meta
            .create(
                parent,
                name,
                strata_meta::NewInode::plain(FileType::Dir, mode, uid, gid),
            )
            .await?)
    }

    pub async fn symlink(
        &self,
        parent: Ino,
        name: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> FsResult<Inode> {
        self.check_writable()?;
        if target.len() > SYMLINK_MAX {
            return Err(FsError::new(libc::ENAMETOOLONG, "symlink target too long"));
        }
        Ok(self
            .meta
            .create(
                parent,
                name,
                strata_meta::NewInode {
                    kind: FileType::Symlink,
                    mode: 0o777,
                    uid,
                    gid,
                    rdev: 0,
                    symlink: Some(target.to_vec()),
                },
            )
            .await?)
    }

    pub async fn unlink(&self, parent: Ino, name: &[u8]) -> FsResult<()> {
        self.check_writable()?;
        let held = self.hold_if_open(parent, name).await;
        let gone = self.meta.unlink(parent, name).await;
        self.unlinked(held, gone.as_ref().ok().copied().flatten())
            .await;
        gone?;
        Ok(())
    }

    pub async fn rmdir(&self, parent: Ino, name: &[u8]) -> FsResult<()> {
        self.check_writable()?;
        Ok(self.meta.rmdir(parent, name).await?)
    }

    pub async fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        new_parent: Ino,
        new_name: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        self.check_writable()?;
        const NOREPLACE: u32 = libc::RENAME_NOREPLACE;
        const EXCHANGE: u32 = libc::RENAME_EXCHANGE;
        let mode = match flags {
            0 => RenameMode::Replace,
            NOREPLACE => RenameMode::NoReplace,
            EXCHANGE => RenameMode::Exchange,
            _ => {
                return Err(FsError::new(
                    libc::EINVAL,
                    "rename flags: RENAME_NOREPLACE or RENAME_EXCHANGE (whiteouts are not supported)",
                ));
            }
        };
        let held = match mode {
            RenameMode::Replace => self.hold_if_open(new_parent, new_name).await,
            _ => None,
        };
        let replaced = self
            .meta
            .rename(parent, name, new_parent, new_name, mode)
            .await;
        let gone = replaced
            .as_ref()
            .ok()
            .and_then(|r| r.as_ref())
            .filter(|r| r.nlink == 0 && r.kind != FileType::Dir)
            .map(|r| r.ino);
        self.unlinked(held, gone).await;
        replaced?;
        Ok(())
    }

    pub async fn link(&self, ino: Ino, new_parent: Ino, new_name: &[u8]) -> FsResult<Inode> {
        self.check_writable()?;
        let inode = self.meta.link(ino, new_parent, new_name).await?;
        Ok(self.overlay(inode).await)
    }

    fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    pub async fn open(&self, ino: Ino, flags: i32) -> FsResult<u64> {
        Ok(self.open_cached(ino, flags).await?.0)
    }

    /// Opens `ino`; also says whether the kernel may keep the pages it has
    /// cached of it: only if the file's stamp is the one `opened` holds, so
    /// nothing but this client's own writes changed it since its previous
    /// open here (close-to-open: a change from anywhere else drops them).
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
        let fh = self.register_handle(inode.clone(), flags);
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
        let keep = self.note_pages(ino, seen) == Some(seen);
        Ok((fh, keep))
    }

    /// Records that the kernel's pages of `ino` match the file as of
    /// `stamp`; returns the stamp recorded before.
    fn note_pages(&self, ino: Ino, stamp: ChangeStamp) -> Option<ChangeStamp> {
        let mut opened = self.opened.lock().unwrap();
        if opened.len() >= OPENED_KEPT {
            opened.clear();
        }
        opened.insert(ino, stamp)
    }

    /// After this client committed its writes of `ino`: if the file was,
    /// just before, as the kernel's pages show it, they now show it as
    /// committed (the writes went through them), and the next open may keep
    /// them. Otherwise (another client's change came in between, or some of
    /// the writes bypassed the pages) the next open drops them.
    pub(crate) fn note_own_commit(&self, ino: Ino, written: &Written, bypassed: bool) {
        let mut opened = self.opened.lock().unwrap();
        let current =
            !bypassed && written.before.is_some() && opened.get(&ino).copied() == written.before;
        if current {
            opened.insert(ino, written.inode.stamp());
        } else {
            opened.remove(&ino);
        }
    }

    /// Opens a handle on `inode` with open `flags`. The first handle of an
    /// inode starts from the attributes just read, which is what gives
    /// close-to-open consistency.
    fn register_handle(&self, inode: Inode, flags: i32) -> u64 {
        let ino = inode.ino;
        {
            let mut files = self.open_files.lock().unwrap();
            match files.get(&ino) {
                Some(of) => {
                    of.handles.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    files.insert(
                        ino,
                        Arc::new(OpenFile {
                            handles: AtomicUsize::new(1),
                            data: Mutex::new(crate::file::FileData::new(inode)),
                            last_write: std::sync::Mutex::new(None),
                        }),
                    );
                }
            }
        }
        let fh = self.new_fh();
        self.handles.lock().unwrap().insert(fh, ino);
        if flags & libc::O_APPEND != 0 {
            self.appending.lock().unwrap().insert(fh);
        }
        if bypasses_page_cache(flags) {
            self.direct.lock().unwrap().insert(fh);
        }
        fh
    }

    pub async fn create(
        &self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        flags: i32,
        uid: u32,
        gid: u32,
    ) -> FsResult<(Inode, u64)> {
        self.check_writable()?;
        let inode = self
            .meta
            .create(
                parent,
                name,
                strata_meta::NewInode::plain(FileType::File, mode, uid, gid),
            )
            .await?;
        // A new file has no extended attributes: the kernel's
        // security.capability lookup before its first write needs no round
        // trip (as fresh as names read from the metaserver now would be).
        self.xattr_names.put(inode.ino, Default::default());
        // The kernel has no pages of a new file: none to disagree with it.
        self.note_pages(inode.ino, inode.stamp());
        let fh = self.register_handle(inode.clone(), flags);
        Ok((inode, fh))
    }

    /// Whether handle `fh` was opened with O_APPEND.
    pub(crate) fn is_appending(&self, fh: u64) -> bool {
        self.appending.lock().unwrap().contains(&fh)
    }

    /// Whether handle `fh`'s writes bypass the kernel's page cache.
    pub(crate) fn is_direct(&self, fh: u64) -> bool {
        self.direct.lock().unwrap().contains(&fh)
    }

    pub(crate) fn open_file(&self, ino: Ino) -> FsResult<Arc<OpenFile>> {
        self.open_files
            .lock()
            .unwrap()
            .get(&ino)
            .cloned()
            .ok_or_else(|| FsError::new(libc::EBADF, "file is not open"))
    }

    /// Attributes of an inode this client changed less than the attribute
    /// TTL ago, with what is left of the TTL: as fresh as what the kernel
    /// would have cached had it kept them, and no round trip. None while
    /// this client has writes of it not committed yet (its size is theirs).
    pub fn recent_attr(&self, ino: Ino) -> Option<(Inode, Duration)> {
        if !self.nothing_to_flush(ino)
            || self
                .writeback
                .as_ref()
                .is_some_and(|w| w.pending(ino).is_some())
        {
            return None;
        }
        self.meta.recent_attr(ino, self.config.attr_ttl)
    }

    /// What a lookup of `parent/name` would answer, from this client's
    /// memory of a lookup less than the entry TTL ago and of the inode's
    /// attributes less than the attribute TTL ago, with what is left of the
    /// shorter: the kernel would still hold both had it kept them.
    pub fn recent_lookup(&self, parent: Ino, name: &[u8]) -> Option<(Inode, Duration)> {
        let (ino, entry_left) = self
            .meta
            .recent_entry(parent, name, self.config.entry_ttl)?;
        let (inode, attr_left) = self.recent_attr(ino)?;
        Some((inode, entry_left.min(attr_left)))
    }

    /// Whether a flush of `ino` would have nothing to commit, known without
    /// waiting: then the caller may answer at once.
    pub fn nothing_to_flush(&self, ino: Ino) -> bool {
        let Ok(of) = self.open_file(ino) else {
            return true;
        };
        of.data.try_lock().is_ok_and(|d| !d.has_pending())
    }

    /// Releases handle `fh` of `ino` without waiting when it has nothing to
    /// commit; returns false (and does nothing) otherwise.
    pub fn try_release_now(&self, ino: Ino, fh: u64) -> bool {
        if !self.nothing_to_flush(ino) || self.held.lock().unwrap().contains(&ino) {
            return false;
        }
        self.forget_handle(ino, fh);
        true
    }

    /// Drops handle `fh`; returns whether it was `ino`'s last one here.
    fn forget_handle(&self, ino: Ino, fh: u64) -> bool {
        self.handles.lock().unwrap().remove(&fh);
        self.appending.lock().unwrap().remove(&fh);
        self.direct.lock().unwrap().remove(&fh);
        let mut files = self.open_files.lock().unwrap();
        if let Some(of) = files.get(&ino)
            && of.handles.fetch_sub(1, Ordering::Relaxed) == 1
        {
            files.remove(&ino);
            return true;
        }
        false
    }

    pub async fn flush(&self, ino: Ino, _fh: u64) -> FsResult<()> {
        let Ok(of) = self.open_file(ino) else {
            return Ok(());
        };
        let mut d = of.data.lock().await;
        self.commit(ino, &mut d).await
    }

    pub async fn fsync(&self, ino: Ino, fh: u64) -> FsResult<()> {
        // Commits are acknowledged by a Raft quorum after the blocks are stored,
        // so a commit is already durable.
        self.flush(ino, fh).await
    }

    pub async fn release(&self, ino: Ino, fh: u64) -> FsResult<()> {
        let res = self.flush(ino, fh).await;
        if self.forget_handle(ino, fh) {
            self.closed(ino).await;
        }
        res
    }

    /// Commits every buffered write of every open file (unmount, shutdown).
    pub async fn flush_all(&self) -> FsResult<()> {
        let files: Vec<(Ino, Arc<OpenFile>)> = self
            .open_files
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let mut first_err = None;
        for (ino, of) in files {
            let mut d = of.data.lock().await;
            if let Err(e) = self.commit(ino, &mut d).await {
                tracing::error!(ino, error = %e, "flushing at shutdown failed");
                first_err.get_or_insert(e);
            }
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

    pub async fn opendir(&self, ino: Ino) -> FsResult<u64> {
        let inode = self.meta.getattr(ino).await?;
        if inode.kind != FileType::Dir {
            return Err(FsError::new(libc::ENOTDIR, "not a directory"));
        }
        let fh = self.new_fh();
        self.dirs.lock().unwrap().insert(
            fh,
            DirHandle {
                ino,
                last_page: Vec::new(),
            },
        );
        Ok(fh)
    }

    /// Entries after cookie `offset`, each with the cookie of the next entry.
    /// Cookies 1 and 2 are "." and ".."; later cookies count entries.
    pub async fn readdir(
        &self,
        ino: Ino,
        fh: u64,
        offset: u64,
        max: usize,
    ) -> FsResult<Vec<(u64, DirEntry)>> {
        let mut out = Vec::new();
        let max = max.max(1);
        let mut cookie = offset;
        if cookie < 2 {
            let me = self.meta.getattr(ino).await?;
            if cookie == 0 {
                out.push((1, dot(b".", &me)));
                cookie = 1;
            }
            if out.len() < max {
                let parent = if me.parent == ino {
                    me.clone()
                } else {
                    self.meta.getattr(me.parent).await?
                };
                out.push((2, dot(b"..", &parent)));
                cookie = 2;
            }
        }
        if out.len() >= max {
            return Ok(out);
        }
        // Resume after the name the cookie stands for.
        let after = if cookie <= 2 {
            None
        } else {
            let dirs = self.dirs.lock().unwrap();
            let h = dirs
                .get(&fh)
                .filter(|h| h.ino == ino)
                .ok_or_else(|| FsError::new(libc::EBADF, "directory handle is not open"))?;
            let name = h
                .last_page
                .iter()
                .find(|(c, _)| *c == cookie)
                .map(|(_, n)| n.clone());
            Some(name.ok_or_else(|| FsError::new(libc::EINVAL, "stale directory offset"))?)
        };
        let want = (max - out.len()).min(strata_meta::MAX_READDIR as usize) as u32;
        let entries = self.meta.readdir(ino, after, want).await?;
        let mut page = Vec::with_capacity(entries.len());
        for e in entries {
            cookie += 1;
            page.push((cookie, e.name.clone()));
            let attr = match e.attr {
                Some(a) => Some(self.overlay(a).await),
                None => None,
            };
            let e = DirEntry { attr, ..e };
            out.push((cookie, e));
        }
        if let Some(h) = self.dirs.lock().unwrap().get_mut(&fh)
            && !page.is_empty()
        {
            h.last_page = page;
        }
        Ok(out)
    }

    pub async fn releasedir(&self, _ino: Ino, fh: u64) -> FsResult<()> {
        self.dirs.lock().unwrap().remove(&fh);
        Ok(())
    }

    pub async fn statfs(&self) -> FsResult<StatFs> {
        let usage = self.meta.usage().await?;
        let bsize = 4096u64;
        let used_blocks = usage.bytes.div_ceil(bsize);
        let blocks = (REPORTED_CAPACITY / bsize).max(used_blocks);
        Ok(StatFs {
            blocks,
            bfree: blocks - used_blocks,
            bavail: blocks - used_blocks,
            files: REPORTED_INODES.max(usage.inodes),
            ffree: REPORTED_INODES.saturating_sub(usage.inodes),
            bsize: bsize as u32,
            namelen: strata_meta::MAX_NAME_LEN as u32,
            frsize: bsize as u32,
        })
    }

    /// Reserves one slice id, taking a batch from group 0 when the local range runs out.
    pub(crate) async fn next_slice_id(&self) -> FsResult<u64> {
        let mut ids = self.slice_ids.lock().await;
        if ids.0 >= ids.1 {
            const BATCH: u64 = 1000;
            let start = self.meta.alloc_slice_ids(BATCH).await?;
            *ids = (start, start + BATCH);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    pub fn now() -> Timestamp {
        Timestamp::now()
    }
}

fn dot(name: &[u8], inode: &Inode) -> DirEntry {
    DirEntry {
        name: name.to_vec(),
        dentry: Dentry {
            ino: inode.ino,
            kind: FileType::Dir,
        },
        attr: Some(inode.clone()),
    }
}
