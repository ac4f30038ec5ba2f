//! The read path's block cache: memory (moka), then local disk, then the
//! object store. Blocks are immutable objects, so a cached block never goes
//! stale and whole blocks are what the caches hold.
//!
//! - `get_block` wants the whole block (sequential readers, prefetch): it is
//!   fetched with one GET and kept in both caches. Concurrent calls for the
//!   same block share one fetch, so a reader and a prefetch of the same block
//!   do not download it twice.
//! - `get_range` wants a few bytes (random readers): served from a cached
//!   block if there is one, or from a whole-block fetch already under way;
//!   otherwise one ranged GET that is not cached, so a random reader fetches
//!   only what it reads.
//!
//! Disk IO runs on tokio's blocking threads, never on the runtime's workers.
//! A disk file that is missing or fails its checksum is a miss.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::StoreError;
use crate::disk::DiskCache;
use crate::mem::MemCache;
use crate::object_store::ObjectStore;

#[derive(Debug, Clone, PartialEq)]
pub struct DiskCacheConfig {
    pub dir: PathBuf,
    /// Bytes of cached blocks at most.
    pub capacity: u64,
    /// Share of the filesystem kept free (0.1 = 10%), see `DiskCache`.
    pub free_ratio: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlockCacheConfig {
    /// Bytes of blocks kept in memory; 0 = no memory cache.
    pub mem_bytes: u64,
    /// None = no disk cache.
    pub disk: Option<DiskCacheConfig>,
}

/// Disk-cache range reads up to this size run on the calling task.
const INLINE_DISK_READ: u64 = 64 << 10;

thread_local! {
    /// Set while this thread may wait for the local disk (`disk_reads_here`).
    static DISK_READS_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread allowed to wait for the local disk: a block
/// found in the disk cache is read right here, instead of on a blocking
/// thread whose answer another thread then takes up. For a thread whose
/// caller waits for the answer anyway (a FUSE thread serving a read),
/// that is two thread handoffs fewer per block, each of which cost more
/// than the read on a small machine (decision 72). Async code polled on
/// a runtime worker never runs with this set, so workers keep not waiting
/// on disk.
pub fn disk_reads_here<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            DISK_READS_HERE.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(DISK_READS_HERE.with(|c| c.replace(true)));
    f()
}

fn may_read_disk_here() -> bool {
    DISK_READS_HERE.with(std::cell::Cell::get)
}

/// Where `put_block` and `insert` keep a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The memory cache only: a block unlikely to be read again soon, or
    /// with a copy on local disk already.
    Memory,
    MemoryAndDisk,
}

/// Counters since the cache was made, and the caches' sizes now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub mem_bytes: u64,
    pub disk_bytes: u64,
    /// Reads served from memory (including blocks still on their way to disk).
    pub mem_hits: u64,
    pub disk_hits: u64,
    /// Whole-block GETs.
    pub store_fetches: u64,
    /// Ranged GETs of `get_range` misses (not cached).
    pub store_range_fetches: u64,
    /// Reads that waited on a fetch another call had started.
    pub shared_fetches: u64,
}

#[derive(Default)]
struct Counters {
    mem_hits: AtomicU64,
    disk_hits: AtomicU64,
    store_fetches: AtomicU64,
    store_range_fetches: AtomicU64,
    shared_fetches: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A whole-block fetch any number of callers can wait on.
type Fetch = Shared<BoxFuture<'static, Result<Bytes, StoreError>>>;

/// Blocks given to `insert` whose disk copy is still being written, with
/// how many writes of each are under way; they are served from here.
type Pending = Mutex<HashMap<String, (Bytes, u32)>>;

pub struct BlockCache {
    store: Arc<dyn ObjectStore>,
    mem: Option<MemCache>,
    disk: Option<Arc<DiskCache>>,
    pending: Arc<Pending>,
    inflight: Arc<Mutex<HashMap<String, Fetch>>>,
    counters: Arc<Counters>,
    prefetched: Prefetched,
}

/// Blocks fetched by a prefetch and not read since, so the metrics can
/// tell prefetches that paid off (read later) from wasted ones (not read
/// before `PREFETCH_WINDOW` later prefetches).
#[derive(Default)]
struct Prefetched {
    /// How many keys `keys` holds, read without the lock on every read.
    count: std::sync::atomic::AtomicUsize,
    keys: Mutex<(
        std::collections::HashSet<String>,
        std::collections::VecDeque<String>,
    )>,
}

/// Prefetches remembered; an older one not read yet counts as wasted.
const PREFETCH_WINDOW: usize = 4096;

impl Prefetched {
    fn issued(&self, key: &str) {
        let mut k = self.keys.lock().unwrap();
        let (set, order) = &mut *k;
        if !set.insert(key.to_string()) {
            return;
        }
        order.push_back(key.to_string());
        while order.len() > PREFETCH_WINDOW {
            if let Some(old) = order.pop_front()
                && set.remove(&old)
            {
                crate::metrics::metrics().prefetch_wasted();
            }
        }
        self.count.store(set.len(), Ordering::Relaxed);
    }

    fn read(&self, key: &str) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut k = self.keys.lock().unwrap();
        let (set, order) = &mut *k;
        if set.remove(key) {
            crate::metrics::metrics().prefetch_used();
            // The queue keeps the key until it reaches the front; compact
            // it when it holds many keys already read.
            if order.len() > 2 * set.len() + 1024 {
                order.retain(|o| set.contains(o));
            }
            self.count.store(set.len(), Ordering::Relaxed);
        }
    }
}

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f)
        .await
        .expect("disk cache task panicked")
}

/// `len` bytes at `offset` of a whole block.
fn slice(key: &str, block: &Bytes, offset: u64, len: u64) -> Result<Bytes, StoreError> {
    match offset.checked_add(len) {
        Some(end) if end <= block.len() as u64 => Ok(block.slice(offset as usize..end as usize)),
        _ => Err(StoreError::Io {
            context: format!(
                "reading {len} bytes at {offset} of {key}: the object is shorter ({} bytes)",
                block.len()
            ),
            source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        }),
    }
}

/// Why a block is fetched, which decides where a copy read from the disk
/// cache goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FetchFor {
    /// A read of part of the block: more reads of it follow, so the block
    /// is kept in memory.
    Read,
    /// A read that takes the whole block at once (a small file read whole,
    /// say). Where a disk cache exists, the block, read from it or fetched
    /// from the store, is not kept in memory: the kernel's page cache keeps
    /// what the answer carries, and a second copy here cost fresh memory,
    /// page-faulted in for every block, while the cache filled. Without a
    /// disk cache, memory is the only place, as for `Read`.
    ReadWhole,
    /// A prefetch: only free room in memory (see `BlockCache::prefetch`).
    Prefetch,
}

/// Counts a block read from the disk cache and keeps it in memory as
/// `why` says.
fn keep_disk_hit(
    mem: &Option<MemCache>,
    counters: &Counters,
    key: &str,
    hit: &Bytes,
    why: FetchFor,
) {
    bump(&counters.disk_hits);
    if let Some(m) = mem {
        match why {
            FetchFor::Read => m.insert(key, hit.clone()),
            FetchFor::ReadWhole => {}
            FetchFor::Prefetch => {
                m.insert_if_room(key, hit.clone());
            }
        }
    }
}

/// Keeps a block in memory at once and, with `Keep::MemoryAndDisk`, on disk
/// from a blocking thread; until the disk copy is written the block is
/// served from `pending`, so nobody waits for the disk.
fn keep_block(
    mem: &Option<MemCache>,
    disk: &Option<Arc<DiskCache>>,
    pending: &Arc<Pending>,
    key: &str,
    data: Bytes,
    keep: Keep,
) {
    if let Some(m) = mem {
        m.insert(key, data.clone());
    }
    if keep == Keep::Memory {
        return;
    }
    let Some(disk) = disk.clone() else {
        return;
    };
    {
        let mut pending = pending.lock().unwrap();
        let e = pending
            .entry(key.to_string())
            .or_insert_with(|| (data.clone(), 0));
        e.1 += 1;
    }
    let pending = pending.clone();
    let key = key.to_string();
    let write = move || {
        disk.put(&key, &data);
        let deleted = {
            let mut p = pending.lock().unwrap();
            match p.get_mut(&key) {
                Some(e) if e.1 > 1 => {
                    e.1 -= 1;
                    false
                }
                Some(_) => {
                    p.remove(&key);
                    false
                }
                None => true,
            }
        };
        // `delete` ran while this was being written. Races here can only
        // drop a cache entry, never serve wrong bytes: a key's bytes
        // never change.
        if deleted {
            disk.remove(&key);
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn_blocking(write);
        }
        Err(_) => write(),
    }
}

/// Takes a finished (or abandoned) fetch out of the in-flight map, however
/// the fetch task ends.
struct InflightGuard {
    inflight: Arc<Mutex<HashMap<String, Fetch>>>,
    key: String,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.inflight.lock().unwrap().remove(&self.key);
    }
}

impl BlockCache {
    /// Opens the caches `cfg` asks for in front of `store`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        cfg: BlockCacheConfig,
    ) -> Result<Arc<BlockCache>, StoreError> {
        let mem = (cfg.mem_bytes > 0).then(|| MemCache::new(cfg.mem_bytes));
        let disk = match cfg.disk {
            None => None,
            Some(d) => Some(Arc::new(
                DiskCache::open_with(&d.dir, d.capacity, d.free_ratio).map_err(|source| {
                    StoreError::Io {
                        context: format!("opening the disk cache in {}", d.dir.display()),
                        source,
                    }
                })?,
            )),
        };
        Ok(Arc::new(BlockCache {
            store,
            mem,
            disk,
            pending: Arc::default(),
            inflight: Arc::default(),
            counters: Arc::default(),
            prefetched: Prefetched::default(),
        }))
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The most bytes of blocks fetched ahead of their readers that this
    /// cache can hold until they are read: None where a disk cache takes
    /// what memory cannot. Without one, memory alone holds them, and its LRU
    /// pushes out the oldest blocks fetched ahead, the next ones to be read,
    /// once a reader's window outgrows it: then each read fetches its block
    /// again (a 32 MiB memory cache and a window of 16 blocks of 4 MiB read
    /// at a third of the speed, with four times the CPU). Half of memory
    /// leaves the rest to the block being read and to other readers.
    pub fn prefetch_room(&self) -> Option<u64> {
        if self.disk.is_some() {
            return None;
        }
        Some(self.mem.as_ref().map_or(0, |m| m.capacity() / 2))
    }

    /// The block from memory or from the blocks on their way to disk.
    fn memory_hit(&self, key: &str) -> Option<Bytes> {
        let hit = self
            .mem
            .as_ref()
            .and_then(|m| m.get(key))
            .or_else(|| self.pending.lock().unwrap().get(key).map(|p| p.0.clone()));
        if hit.is_some() {
            bump(&self.counters.mem_hits);
        }
        hit
    }

    /// The whole block: from memory, else disk, else one GET of the object,
    /// which then fills both caches. Concurrent calls for one block share
    /// one fetch and its outcome; after a failure the next call tries again.
    pub async fn get_block(&self, key: &str) -> Result<Bytes, StoreError> {
        self.get_block_for(key, FetchFor::Read).await
    }

    /// `get_block` for a read that takes the whole block at once: with a
    /// disk cache, the block is not kept in memory too (`FetchFor::ReadWhole`).
    pub async fn get_whole_block(&self, key: &str) -> Result<Bytes, StoreError> {
        self.get_block_for(key, FetchFor::ReadWhole).await
    }

    async fn get_block_for(&self, key: &str, why: FetchFor) -> Result<Bytes, StoreError> {
        self.prefetched.read(key);
        if let Some(hit) = self.memory_hit(key) {
            return Ok(hit);
        }
        if may_read_disk_here()
            && let Some(hit) = self.disk_hit_here(key, why)
        {
            return Ok(hit);
        }
        self.fetch(key, why).await
    }

    /// The block from the disk cache, read on this thread (see
    /// `disk_reads_here`), and kept in memory as `fetch` keeps it. None if
    /// the disk does not hold it intact, or a fetch of it is under way
    /// (joined instead: one read of a block at a time).
    fn disk_hit_here(&self, key: &str, why: FetchFor) -> Option<Bytes> {
        let d = self.disk.as_ref()?;
        if !d.contains(key) || self.inflight.lock().unwrap().contains_key(key) {
            return None;
        }
        let hit = d.get(key)?;
        keep_disk_hit(&self.mem, &self.counters, key, &hit, why);
        Some(hit)
    }

    /// Fetches a whole block a sequential reader will probably read soon
    /// into the caches, unless it is cached already. With a disk cache it
    /// goes to memory only where it fits without pushing out a block not
    /// read through (`MemCache::insert_if_room`), else to disk alone:
    /// speculation must not evict blocks still to be read, such as a
    /// writer's that its reader has not reached yet (a reader then gets the
    /// block from disk). Without a disk cache, memory is the only place.
    pub async fn prefetch(&self, key: &str) -> Result<(), StoreError> {
        if self.is_cached(key) {
            return Ok(());
        }
        self.prefetched.issued(key);
        self.fetch(key, FetchFor::Prefetch).await.map(|_| ())
    }

    /// Joins the fetch of `key` under way, or starts one (`why` says where
    /// the block is kept). The fetch runs as its own task, so it completes (and
    /// fills the caches) even if every caller waiting on it gives up.
    fn fetch(&self, key: &str, why: FetchFor) -> Fetch {
        let mut inflight = self.inflight.lock().unwrap();
        if let Some(f) = inflight.get(key) {
            bump(&self.counters.shared_fetches);
            return f.clone();
        }
        // A fetch that finished since the caller looked in memory has put
        // its block there before leaving `inflight`: look again, or the
        // block would be fetched twice.
        if let Some(hit) = self.memory_hit(key) {
            return futures::future::ready(Ok(hit)).boxed().shared();
        }
        let guard = InflightGuard {
            inflight: self.inflight.clone(),
            key: key.to_string(),
        };
        let (store, mem, disk, pending, counters) = (
            self.store.clone(),
            self.mem.clone(),
            self.disk.clone(),
            self.pending.clone(),
            self.counters.clone(),
        );
        let k = key.to_string();
        let task = tokio::spawn(async move {
            // Dropped when the task ends, however it ends.
            let _guard = guard;
            if let Some(d) = disk.as_ref().filter(|d| d.contains(&k)) {
                let (d, key) = (d.clone(), k.clone());
                if let Some(hit) = blocking(move || d.get(&key)).await {
                    keep_disk_hit(&mem, &counters, &k, &hit, why);
                    return Ok(hit);
                }
            }
            bump(&counters.store_fetches);
            let data = store.get(&k).await?;
            // With a disk to fall back on, a prefetch takes only free room in
            // memory (see `prefetch`), and a read of the whole block none
            // (see `FetchFor::ReadWhole`); the disk copy is written either
            // way, and served from `pending` until it is.
            let mem = match (why, disk.is_some()) {
                (FetchFor::Prefetch, true) => {
                    if let Some(m) = &mem {
                        m.insert_if_room(&k, data.clone());
                    }
                    None
                }
                (FetchFor::ReadWhole, true) => None,
                _ => mem,
            };
            keep_block(&mem, &disk, &pending, &k, data.clone(), Keep::MemoryAndDisk);
            Ok(data)
        });
        let k = key.to_string();
        let f = async move {
            task.await.unwrap_or_else(|e| {
                Err(StoreError::Io {
                    context: format!("fetching {k}"),
                    source: std::io::Error::other(format!("the fetch task failed: {e}")),
                })
            })
        }
        .boxed()
        .shared();
        inflight.insert(key.to_string(), f.clone());
        f
    }

    /// `len` bytes at `offset`: from a cached block, or from a whole-block
    /// fetch under way, else one ranged GET whose bytes are not cached.
    pub async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        self.prefetched.read(key);
        if let Some(hit) = self.memory_hit(key) {
            return slice(key, &hit, offset, len);
        }
        let under_way = self.inflight.lock().unwrap().get(key).cloned();
        if let Some(f) = under_way {
            bump(&self.counters.shared_fetches);
            return slice(key, &f.await?, offset, len);
        }
        // The same race as in `fetch`: a whole-block fetch may have ended
        // between the two looks above.
        if let Some(hit) = self.memory_hit(key) {
            return slice(key, &hit, offset, len);
        }
        if let Some(d) = self.disk.as_ref().filter(|d| d.contains(key)) {
            // Only the pages asked for are read (and checked) from disk. A
            // small range is read right here: a few pages, usually in the
            // page cache, cost less than a hop to a blocking thread. So is
            // any range where this thread may wait for the disk.
            let hit = if len <= INLINE_DISK_READ || may_read_disk_here() {
                d.get_range(key, offset, len)
            } else {
                let (d, k) = (d.clone(), key.to_string());
                blocking(move || d.get_range(&k, offset, len)).await
            };
            if let Some(hit) = hit {
                bump(&self.counters.disk_hits);
                return Ok(hit);
            }
        }
        bump(&self.counters.store_range_fetches);
        self.store.get_range(key, offset, len).await
    }

    /// Whether the block is in memory (no IO, no fetching).
    pub fn in_memory(&self, key: &str) -> bool {
        self.mem.as_ref().is_some_and(|m| m.contains(key))
            || self.pending.lock().unwrap().contains_key(key)
    }

    /// Tells the memory cache a sequential reader has read the block to its
    /// end: it makes room before blocks not read through (`MemCache`).
    /// Losing it from memory must not cost a GET, so with a disk cache a
    /// block only memory holds (a large write's, which skips the disk
    /// cache) is first copied there, in the background as fetched blocks
    /// are. Without the copy, every later random read that loads a block
    /// from disk would push out one that then had to come from the store.
    pub fn read_through(&self, key: &str) {
        let Some(m) = &self.mem else { return };
        if let Some(d) = &self.disk
            && !d.contains(key)
            && !self.pending.lock().unwrap().contains_key(key)
        {
            let Some(block) = m.get(key) else { return };
            keep_block(
                &None,
                &self.disk,
                &self.pending,
                key,
                block,
                Keep::MemoryAndDisk,
            );
        }
        m.mark_read_through(key);
    }

    /// Whether the block is in memory or on disk (no IO, no fetching).
    pub fn is_cached(&self, key: &str) -> bool {
        self.mem.as_ref().is_some_and(|m| m.contains(key))
            || self.pending.lock().unwrap().contains_key(key)
            || self.disk.as_ref().is_some_and(|d| d.contains(key))
    }

    /// Uploads a block, then keeps it as `keep` says (its writer or a reader
    /// nearby may read it soon); the upload does not wait for the disk copy.
    pub async fn put_block(&self, key: &str, data: Bytes, keep: Keep) -> Result<(), StoreError> {
        self.store.put(key, data.clone()).await?;
        self.insert(key, data, keep);
        Ok(())
    }

    /// Keeps a block in the caches without uploading it. Memory takes it at
    /// once; a disk copy (with `Keep::MemoryAndDisk`) is written on a
    /// blocking thread, and until it is the block is served from memory
    /// anyway.
    pub fn insert(&self, key: &str, data: Bytes, keep: Keep) {
        keep_block(&self.mem, &self.disk, &self.pending, key, data, keep);
    }

    /// Deletes the object and drops it from both caches.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        if let Some(m) = &self.mem {
            m.remove(key);
        }
        self.pending.lock().unwrap().remove(key);
        if let Some(d) = &self.disk {
            let (d, k) = (d.clone(), key.to_string());
            blocking(move || d.remove(&k)).await;
        }
        self.store.delete(key).await
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            mem_bytes: self.mem.as_ref().map_or(0, |m| m.used_bytes()),
            disk_bytes: self.disk.as_ref().map_or(0, |d| d.used()),
            mem_hits: c.mem_hits.load(Ordering::Relaxed),
            disk_hits: c.disk_hits.load(Ordering::Relaxed),
            store_fetches: c.store_fetches.load(Ordering::Relaxed),
            store_range_fetches: c.store_range_fetches.load(Ordering::Relaxed),
            shared_fetches: c.shared_fetches.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
