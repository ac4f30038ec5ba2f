//! The filesystem core: plain async Rust over the metaserver client and the
//! object store. The FUSE adapter calls one method per kernel request.
//!
//! The requests live by concern: names and attributes in `namespace.rs`,
//! opening and closing files in `open.rs`, directory listings in `dir.rs`,
//! the data path in `read.rs` and `write.rs`, locks in `locks.rs`, extended
//! attributes in `xattr.rs`; what this file has is the core itself and
//! statfs.

use std::sync::Arc;
use std::time::Duration;

use strata_cache::{BlockCache, Staging};
use strata_meta::{FsClient, Ino, Inode, Timestamp};
use tokio::sync::{Mutex, Semaphore};

use crate::error::{FsError, FsResult};
use crate::garbage::Compactor;
use crate::handles::HandleTable;
use crate::open::CachedPages;
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
    /// Send a regular file's create with its first commit (decision 71),
    /// where nothing but another client's view until then can tell.
    pub defer_creates: bool,
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
            defer_creates: false,
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

/// Who a new inode belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };
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
    pub(crate) xattr_names: crate::xattr::XattrNames,
    pub(crate) locks: crate::locks::HeldLocks,
    /// The file and directory handles open here, and the state of the
    /// inodes they have open.
    pub(crate) handles: HandleTable,
    /// Which files the kernel's cached pages are current for.
    pub(crate) cached_pages: CachedPages,
    pub(crate) slice_ids: Mutex<(u64, u64)>,
    /// The quotas above directories written in, as last read.
    pub(crate) quotas: crate::quota::QuotaView,
}

/// Whether a file opened with `flags` bypasses the kernel's page cache:
/// O_DIRECT does, as on a local filesystem; so does O_APPEND, whose writes
/// land where the metaserver says the file ends rather than where the
/// kernel thinks it does.
pub fn bypasses_page_cache(flags: i32) -> bool {
    flags & (libc::O_DIRECT | libc::O_APPEND) != 0
}

/// The most blocks a sequential reader gets fetched ahead: `asked`, or
/// fewer where they would not fit in `room` (see `BlockCache::prefetch_room`).
pub(crate) fn prefetch_window(asked: u32, room: Option<u64>, block_size: u32) -> u32 {
    match room {
        None => asked,
        Some(room) => {
            let fits = room / u64::from(block_size.max(1));
            asked.min(u32::try_from(fits).unwrap_or(u32::MAX))
        }
    }
}

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
        mut config: FsConfig,
        writeback: Option<Staging>,
    ) -> FsResult<Arc<Filesystem>> {
        let window = prefetch_window(
            config.max_prefetch_blocks,
            cache.prefetch_room(),
            meta.info.block_size,
        );
        if window < config.max_prefetch_blocks {
            tracing::info!(
                asked = config.max_prefetch_blocks,
                window,
                "prefetch window cut to half of the memory cache (no disk cache)"
            );
            config.max_prefetch_blocks = window;
        }
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
        let fs = Arc::new(Filesystem {
            buffer_budget: Arc::new(Semaphore::new(config.buffer_size.max(1))),
            upload_slots: Arc::new(Semaphore::new(config.max_uploads.max(1))),
            prefetch_slots: Arc::new(Semaphore::new(config.max_prefetches)),
            meta,
            cache,
            config,
            writeback,
            compactor,
            xattr_names: Default::default(),
            locks: Default::default(),
            handles: Default::default(),
            cached_pages: Default::default(),
            slice_ids: Mutex::new((0, 0)),
            quotas: Default::default(),
        });
        crate::metrics::watch_mount(Arc::downgrade(&fs));
        Ok(fs)
    }

    /// Bytes of written data held in memory until stored, and the most
    /// there may be (`FsConfig::buffer_size`).
    pub fn write_buffer(&self) -> (u64, u64) {
        let limit = self.config.buffer_size.max(1);
        let free = self.buffer_budget.available_permits().min(limit);
        ((limit - free) as u64, limit as u64)
    }

    /// Commits waiting in the write-back journal (0 without write-back).
    pub fn writeback_queued(&self) -> usize {
        self.writeback.as_ref().map_or(0, |wb| wb.queued())
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

    /// The inode this mount shows as its root: the filesystem's, or the
    /// directory of a subtree grant.
    pub fn root(&self) -> Ino {
        self.meta.root()
    }

    pub(crate) fn check_writable(&self) -> FsResult<()> {
        if self.config.read_only {
            return Err(FsError::new(libc::EROFS, "mounted read-only"));
        }
        Ok(())
    }

    /// Attributes as this client sees them: buffered writes, and write-back
    /// commits still on their way, count toward the size.
    pub(crate) async fn overlay(&self, mut inode: Inode) -> Inode {
        if let Some(of) = self.handles.file(inode.ino) {
            of.data.lock().await.overlay_attr(&mut inode);
        }
        if let Some((end, written)) = self.writeback.as_ref().and_then(|w| w.pending(inode.ino)) {
            inode.size = inode.size.max(end);
            inode.mtime = inode.mtime.max(written);
            inode.ctime = inode.ctime.max(written);
        }
        inode
    }

    /// With write-back, waits until `ino`'s journaled commits have landed.
    pub(crate) async fn wait_written_back(&self, ino: Ino) -> FsResult<()> {
        if let Some(wb) = &self.writeback {
            wb.wait_inode(ino).await?;
        }
        Ok(())
    }

    /// The filesystem's size and use as `df` shows it at `ino`: below a
    /// directory quota (the nearest at or above `ino`), its limits and
    /// usage, so a volume backed by a quota directory reports its own size.
    pub async fn statfs(&self, ino: Ino) -> FsResult<StatFs> {
        let mut usage = self.meta.usage().await?;
        let (mut capacity, mut inodes) = (REPORTED_CAPACITY, REPORTED_INODES);
        let dir = match self.meta.getattr(ino).await {
            Ok(i) if i.kind == strata_meta::FileType::Dir => i.ino,
            Ok(i) => i.parent,
            Err(_) => self.root(),
        };
        let quotas = self.meta.quotas_above(dir).await?;
        if let Some((_, q)) = quotas.iter().find(|(_, q)| q.max_bytes.is_some()) {
            capacity = q.max_bytes.unwrap_or(capacity);
            usage.bytes = q.used.bytes;
        }
        if let Some((_, q)) = quotas.iter().find(|(_, q)| q.max_inodes.is_some()) {
            inodes = q.max_inodes.unwrap_or(inodes);
            usage.inodes = q.used.inodes;
        }
        let bsize = 4096u64;
        let used_blocks = usage.bytes.div_ceil(bsize);
        let blocks = (capacity / bsize).max(used_blocks);
        Ok(StatFs {
            blocks,
            bfree: blocks - used_blocks,
            bavail: blocks - used_blocks,
            files: inodes.max(usage.inodes),
            ffree: inodes.saturating_sub(usage.inodes),
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

#[cfg(test)]
mod tests {
    use super::prefetch_window;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_prefetch_window_fits_where_its_blocks_wait() {
        let block = 4 << 20;
        // A disk cache takes what memory cannot: the window asked for.
        assert_eq!(prefetch_window(16, None, block), 16);
        // Memory alone: half of it (room 16 MiB of a 32 MiB cache).
        assert_eq!(prefetch_window(16, Some(16 * MIB), block), 4);
        assert_eq!(prefetch_window(16, Some(128 * MIB), block), 16);
        assert_eq!(prefetch_window(2, Some(128 * MIB), block), 2);
        // Less than a block of room, or none at all: no prefetch.
        assert_eq!(prefetch_window(16, Some(3 * MIB), block), 0);
        assert_eq!(prefetch_window(16, Some(0), block), 0);
    }
}
