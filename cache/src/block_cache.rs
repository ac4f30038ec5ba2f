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
        }))
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
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
        if let Some(hit) = self.memory_hit(key) {
            return Ok(hit);
        }
        self.fetch(key, false).await
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
        self.fetch(key, true).await.map(|_| ())
    }

    /// Joins the fetch of `key` under way, or starts one (`speculative`: for
    /// `prefetch`). The fetch runs as its own task, so it completes (and
    /// fills the caches) even if every caller waiting on it gives up.
    fn fetch(&self, key: &str, speculative: bool) -> Fetch {
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
                    bump(&counters.disk_hits);
                    if let Some(m) = &mem {
                        if speculative {
                            m.insert_if_room(&k, hit.clone());
                        } else {
                            m.insert(&k, hit.clone());
                        }
                    }
                    return Ok(hit);
                }
            }
            bump(&counters.store_fetches);
            let data = store.get(&k).await?;
            // A prefetch with a disk to fall back on takes only free room in
            // memory (see `prefetch`); the disk copy is written either way.
            let mem = if speculative && disk.is_some() {
                if let Some(m) = &mem {
                    m.insert_if_room(&k, data.clone());
                }
                None
            } else {
                mem
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
            // page cache, cost less than a hop to a blocking thread.
            let hit = if len <= INLINE_DISK_READ {
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
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32};
    use tokio::sync::{Notify, Semaphore};

    /// An in-memory store that counts its calls. Whole-block GETs wait for
    /// a permit of `gate` (plenty unless a test closes it), announce that
    /// they started, and fail while `fail` is set.
    struct TestStore {
        objects: Mutex<HashMap<String, Bytes>>,
        gets: AtomicU32,
        ranges: AtomicU32,
        puts: AtomicU32,
        gate: Semaphore,
        started: Notify,
        fail: AtomicBool,
    }

    impl TestStore {
        fn new() -> Arc<TestStore> {
            Arc::new(TestStore {
                objects: Mutex::default(),
                gets: AtomicU32::new(0),
                ranges: AtomicU32::new(0),
                puts: AtomicU32::new(0),
                gate: Semaphore::new(Semaphore::MAX_PERMITS),
                started: Notify::new(),
                fail: AtomicBool::new(false),
            })
        }

        fn with(objects: &[(&str, &'static [u8])]) -> Arc<TestStore> {
            let s = TestStore::new();
            for (k, v) in objects {
                s.objects
                    .lock()
                    .unwrap()
                    .insert(k.to_string(), Bytes::from_static(v));
            }
            s
        }

        fn gated(objects: &[(&str, &'static [u8])]) -> Arc<TestStore> {
            let s = TestStore::with(objects);
            s.gate.forget_permits(Semaphore::MAX_PERMITS);
            s
        }

        fn count(c: &AtomicU32) -> u32 {
            c.load(Ordering::SeqCst)
        }

        fn has(&self, key: &str) -> bool {
            self.objects.lock().unwrap().contains_key(key)
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for TestStore {
        async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
            self.puts.fetch_add(1, Ordering::SeqCst);
            self.objects.lock().unwrap().insert(key.to_string(), data);
            Ok(())
        }

        async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
            self.ranges.fetch_add(1, Ordering::SeqCst);
            let obj = self.objects.lock().unwrap().get(key).cloned();
            let obj = obj.ok_or_else(|| StoreError::NotFound {
                key: key.to_string(),
            })?;
            slice(key, &obj, offset, len)
        }

        async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            self.started.notify_one();
            self.gate.acquire().await.unwrap().forget();
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::S3Transient {
                    op: "GET",
                    key: key.to_string(),
                    message: "HTTP 503 SlowDown".into(),
                });
            }
            let obj = self.objects.lock().unwrap().get(key).cloned();
            obj.ok_or_else(|| StoreError::NotFound {
                key: key.to_string(),
            })
        }

        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.objects.lock().unwrap().remove(key);
            Ok(())
        }

        async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
            let mut out: Vec<_> = self
                .objects
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.len() as u64))
                .collect();
            out.sort();
            Ok(out)
        }

        fn describe(&self) -> String {
            "test".into()
        }
    }

    fn disk_cfg(dir: &std::path::Path) -> Option<DiskCacheConfig> {
        Some(DiskCacheConfig {
            dir: dir.to_path_buf(),
            capacity: 1 << 20,
            free_ratio: 0.0,
        })
    }

    fn both(dir: &std::path::Path) -> BlockCacheConfig {
        BlockCacheConfig {
            mem_bytes: 1 << 20,
            disk: disk_cfg(dir),
        }
    }

    fn disk_only(dir: &std::path::Path) -> BlockCacheConfig {
        BlockCacheConfig {
            mem_bytes: 0,
            disk: disk_cfg(dir),
        }
    }

    const DATA: &[u8] = b"0123456789";

    #[tokio::test]
    async fn blocks_come_from_memory_then_disk_then_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = TestStore::with(&[("a/1", DATA)]);
        let c = BlockCache::new(store.clone(), both(dir.path())).unwrap();
        assert!(!c.is_cached("a/1"));
        assert_eq!(c.get_block("a/1").await.unwrap(), DATA);
        assert!(c.is_cached("a/1"));
        assert_eq!(c.get_block("a/1").await.unwrap(), DATA);
        settle(&c).await;
        let s = c.stats();
        assert_eq!((s.store_fetches, s.mem_hits, s.disk_hits), (1, 1, 0));
        // On disk: the bytes, one page checksum and the footer.
        assert_eq!((s.mem_bytes, s.disk_bytes), (10, 22));
        drop(c);

        // A new cache over the same dir (a restarted client) has it on disk.
        let c = BlockCache::new(store.clone(), both(dir.path())).unwrap();
        assert!(c.is_cached("a/1"));
        assert_eq!(c.get_block("a/1").await.unwrap(), DATA);
        assert_eq!(c.get_block("a/1").await.unwrap(), DATA);
        let s = c.stats();
        assert_eq!((s.store_fetches, s.mem_hits, s.disk_hits), (0, 1, 1));
        assert_eq!(TestStore::count(&store.gets), 1);
        assert!(c.get_block("nope").await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn ranges_of_uncached_blocks_are_fetched_alone_and_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = TestStore::with(&[("a/1", DATA)]);
        let c = BlockCache::new(store.clone(), both(dir.path())).unwrap();
        assert_eq!(c.get_range("a/1", 2, 3).await.unwrap(), &b"234"[..]);
        assert!(!c.is_cached("a/1"));
        assert_eq!(
            (
                TestStore::count(&store.ranges),
                TestStore::count(&store.gets)
            ),
            (1, 0)
        );
        assert_eq!(c.stats().store_range_fetches, 1);

        // Once the whole block is cached, ranges come from it.
        c.get_block("a/1").await.unwrap();
        assert_eq!(c.get_range("a/1", 7, 3).await.unwrap(), &b"789"[..]);
        assert_eq!(c.get_range("a/1", 0, 0).await.unwrap(), &b""[..]);
        let e = c.get_range("a/1", 8, 3).await.unwrap_err();
        assert!(!e.is_transient());
        assert_eq!(TestStore::count(&store.ranges), 1);
        assert_eq!(c.stats().mem_hits, 3);
    }

    /// Waits until the disk copies written in the background are written.
    async fn settle(c: &BlockCache) {
        while !c.pending.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn ranges_come_from_the_disk_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = TestStore::with(&[("a/1", DATA)]);
        let c = BlockCache::new(store.clone(), disk_only(dir.path())).unwrap();
        c.get_block("a/1").await.unwrap();
        settle(&c).await;
        assert_eq!(c.get_range("a/1", 1, 2).await.unwrap(), &b"12"[..]);
        let s = c.stats();
        assert_eq!((s.disk_hits, s.mem_hits, s.mem_bytes), (1, 0, 0));
        assert_eq!(TestStore::count(&store.ranges), 0);
    }

    #[tokio::test]
    async fn damaged_or_missing_disk_files_are_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = TestStore::with(&[("a/1", DATA)]);
        let c = BlockCache::new(store.clone(), disk_only(dir.path())).unwrap();
        c.get_block("a/1").await.unwrap();
        settle(&c).await;
        let file = dir.path().join("blocks/a/1");
        let mut raw = std::fs::read(&file).unwrap();
        raw[3] ^= 0xff;
        std::fs::write(&file, raw).unwrap();
        assert_eq!(c.get_block("a/1").await.unwrap(), DATA);
        settle(&c).await;
        assert_eq!(c.get_range("a/1", 3, 1).await.unwrap(), &b"3"[..]);
        assert_eq!(TestStore::count(&store.gets), 2);

        std::fs::remove_file(&file).unwrap();
        assert_eq!(c.get_range("a/1", 3, 1).await.unwrap(), &b"3"[..]);
        assert_eq!(TestStore::count(&store.ranges), 1);
        assert_eq!(c.get_block("a/1").await.unwrap(), DATA);
        assert_eq!(TestStore::count(&store.gets), 3);
        assert_eq!(c.stats().disk_hits, 1);
    }

    /// Starts `n` get_block calls on a gated store and returns once one is in
    /// the store and the others wait on it.
    async fn concurrent_gets(
        c: &Arc<BlockCache>,
        store: &TestStore,
        n: u64,
    ) -> Vec<tokio::task::JoinHandle<Result<Bytes, StoreError>>> {
        let before = c.stats().shared_fetches;
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.get_block("a/1").await })
            })
            .collect();
        store.started.notified().await;
        while c.stats().shared_fetches < before + n - 1 {
            tokio::task::yield_now().await;
        }
        tasks
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_of_a_block_share_one_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let store = TestStore::gated(&[("a/1", DATA)]);
        let c = BlockCache::new(store.clone(), both(dir.path())).unwrap();
        let tasks = concurrent_gets(&c, &store, 8).await;
        // A ranged read of the block joins the fetch too.
        let range = {
            let c = c.clone();
            tokio::spawn(async move { c.get_range("a/1", 4, 2).await })
        };
        while c.stats().shared_fetches < 8 {
            tokio::task::yield_now().await;
        }
        store.gate.add_permits(1);
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), DATA);
        }
        assert_eq!(range.await.unwrap().unwrap(), &b"45"[..]);
        assert_eq!(TestStore::count(&store.gets), 1);
        assert_eq!(TestStore::count(&store.ranges), 0);
        let s = c.stats();
        assert_eq!((s.store_fetches, s.shared_fetches), (1, 8));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_shared_fetch_fails_every_waiter_and_is_retried_next_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = TestStore::gated(&[("a/1", DATA)]);
        store.fail.store(true, Ordering::SeqCst);
        let c = BlockCache::new(store.clone(), both(dir.path())).unwrap();
        let tasks = concurrent_gets(&c, &store, 5).await;
        store.gate.add_permits(1);
        for t in tasks {
            let e = t.await.unwrap().unwrap_err();
            assert!(e.is_transient());
            assert!(e.to_string().contains("SlowDown"), "{e}");
        }
        assert_eq!(TestStore::count(&store.gets), 1);
        assert!(!c.is_cached("a/1"));

        store.fail.store(false, Ordering::SeqCst);
        store.gate.add_permits(1);
        assert_eq!(c.get_block("a/1").await.unwrap(), DATA);
        assert_eq!(TestStore::count(&store.gets), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fetch_whose_callers_gave_up_still_fills_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = TestStore::gated(&[("a/1", DATA)]);
        let c = BlockCache::new(store.clone(), both(dir.path())).unwrap();
        let task = {
            let c = c.clone();
            tokio::spawn(async move { c.get_block("a/1").await })
        };
        store.started.notified().await;
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        store.gate.add_permits(1);
        while !c.is_cached("a/1") {
            tokio::task::yield_now().await;
        }
        assert_eq!(c.get_block("a/1").await.unwrap(), DATA);
        assert_eq!(TestStore::count(&store.gets), 1);
    }

    #[tokio::test]
    async fn put_block_uploads_and_keeps_the_block() {
        let dir = tempfile::tempdir().unwrap();
        let store = TestStore::new();
        let c = BlockCache::new(store.clone(), disk_only(dir.path())).unwrap();
        c.put_block("b/1", Bytes::from_static(DATA), Keep::MemoryAndDisk)
            .await
            .unwrap();
        assert!(store.has("b/1"));
        assert!(c.is_cached("b/1"));
        assert_eq!(c.get_block("b/1").await.unwrap(), DATA);
        // The disk copy is written in the background.
        while c.stats().disk_bytes != 22 {
            tokio::task::yield_now().await;
        }
        assert_eq!(TestStore::count(&store.gets), 0);
        assert_eq!(TestStore::count(&store.puts), 1);
        // Kept in memory only: nothing more on disk.
        c.put_block("b/2", Bytes::from_static(DATA), Keep::Memory)
            .await
            .unwrap();
        assert!(!c.is_cached("b/2"), "no memory cache here, and not on disk");
        assert_eq!(c.stats().disk_bytes, 22);
    }

    /// A large write's block lives in memory only. Read through by a
    /// sequential reader it is copied to disk before it may be the first to
    /// leave memory, so losing it never costs a GET; a block already on disk
    /// is marked as it is.
    #[tokio::test]
    async fn a_memory_only_block_read_through_gets_a_disk_copy_and_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = TestStore::with(&[("f/1", DATA)]);
        let cfg = BlockCacheConfig {
            mem_bytes: 30,
            disk: disk_cfg(dir.path()),
        };
        let c = BlockCache::new(store.clone(), cfg).unwrap();
        c.put_block("w/1", Bytes::from_static(b"written..1"), Keep::Memory)
            .await
            .unwrap();
        c.put_block("w/2", Bytes::from_static(b"written..2"), Keep::Memory)
            .await
            .unwrap();
        assert_eq!(c.get_block("f/1").await.unwrap(), DATA); // fetched: disk too
        settle(&c).await;
        assert_eq!(c.stats().disk_bytes, 22);
        c.read_through("w/2");
        c.read_through("f/1");
        settle(&c).await;
        assert_eq!(c.stats().disk_bytes, 44, "w/2 was copied to disk");
        // Room for two more blocks: the read-through ones go, newest first,
        // and w/1 (least recently used, but not read through) stays.
        c.insert("n/1", Bytes::from_static(b"new......1"), Keep::Memory);
        assert!(!c.in_memory("f/1") && c.in_memory("w/2") && c.in_memory("w/1"));
        c.insert("n/2", Bytes::from_static(b"new......2"), Keep::Memory);
        assert!(!c.in_memory("w/2") && c.in_memory("w/1"));
        let gets = TestStore::count(&store.gets);
        assert_eq!(c.get_block("w/2").await.unwrap(), &b"written..2"[..]);
        assert_eq!(c.get_block("f/1").await.unwrap(), DATA);
        assert_eq!(TestStore::count(&store.gets), gets, "both came from disk");
        assert_eq!(c.stats().disk_hits, 2);
    }

    /// Three written blocks fill memory (30 bytes), as a writer's do before
    /// its reader comes back for them.
    async fn full_of_written_blocks(
        dir: &std::path::Path,
        disk: bool,
    ) -> (Arc<TestStore>, Arc<BlockCache>) {
        let store = TestStore::with(&[("p/1", b"fetched..1"), ("p/2", b"fetched..2")]);
        let cfg = BlockCacheConfig {
            mem_bytes: 30,
            disk: if disk { disk_cfg(dir) } else { None },
        };
        let c = BlockCache::new(store.clone(), cfg).unwrap();
        for i in 1..=3 {
            let data = Bytes::from(format!("written..{i}"));
            c.put_block(&format!("w/{i}"), data, Keep::Memory)
                .await
                .unwrap();
        }
        (store, c)
    }

    #[tokio::test]
    async fn a_prefetch_does_not_push_out_blocks_not_read_through() {
        let dir = tempfile::tempdir().unwrap();
        let (store, c) = full_of_written_blocks(dir.path(), true).await;
        c.prefetch("p/1").await.unwrap();
        assert_eq!(TestStore::count(&store.gets), 1);
        for w in ["w/1", "w/2", "w/3"] {
            assert!(c.in_memory(w), "{w} was pushed out by a prefetch");
        }
        settle(&c).await;
        assert!(
            !c.in_memory("p/1") && c.is_cached("p/1"),
            "p/1 went to disk alone"
        );
        // A prefetch of a cached block fetches nothing.
        c.prefetch("p/1").await.unwrap();
        assert_eq!(TestStore::count(&store.gets), 1);
        // The read that follows gets it from disk.
        assert_eq!(c.get_block("p/1").await.unwrap(), &b"fetched..1"[..]);
        assert_eq!((TestStore::count(&store.gets), c.stats().disk_hits), (1, 1));
        // Room a read-through block leaves is a prefetch's to take.
        c.read_through("p/1");
        c.prefetch("p/2").await.unwrap();
        assert!(c.in_memory("p/2") && !c.in_memory("p/1"));
        assert!(c.in_memory("w/2") && c.in_memory("w/3"));
    }

    #[tokio::test]
    async fn without_a_disk_cache_a_prefetch_takes_room_in_memory() {
        let (store, c) = full_of_written_blocks(std::path::Path::new("/nonexistent"), false).await;
        c.prefetch("p/1").await.unwrap();
        assert!(c.in_memory("p/1"), "memory is the only place for it");
        c.stats(); // settles moka's evictions
        assert!(
            !c.in_memory("w/1"),
            "the least recently used block made room"
        );
        assert_eq!(c.get_block("p/1").await.unwrap(), &b"fetched..1"[..]);
        assert_eq!(TestStore::count(&store.gets), 1);
    }

    #[tokio::test]
    async fn insert_keeps_a_block_without_uploading_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = TestStore::new();
        let c = BlockCache::new(store.clone(), disk_only(dir.path())).unwrap();
        c.insert("b/1", Bytes::from_static(DATA), Keep::MemoryAndDisk);
        // Served at once, though no memory cache is configured: the disk
        // copy may still be on its way.
        assert!(c.is_cached("b/1"));
        assert_eq!(c.get_block("b/1").await.unwrap(), DATA);
        assert_eq!(c.get_range("b/1", 9, 1).await.unwrap(), &b"9"[..]);
        while c.stats().disk_bytes == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!store.has("b/1"));
        assert_eq!(TestStore::count(&store.puts), 0);
        assert_eq!(TestStore::count(&store.gets), 0);
        drop(c);
        let c = BlockCache::new(store.clone(), disk_only(dir.path())).unwrap();
        assert_eq!(c.get_block("b/1").await.unwrap(), DATA);
        assert_eq!(c.stats().disk_hits, 1);
    }

    #[test]
    fn insert_works_outside_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let c = BlockCache::new(TestStore::new(), disk_only(dir.path())).unwrap();
        c.insert("b/1", Bytes::from_static(DATA), Keep::MemoryAndDisk);
        assert_eq!(c.stats().disk_bytes, 22);
    }

    #[tokio::test]
    async fn delete_drops_the_object_and_both_cached_copies() {
        let dir = tempfile::tempdir().unwrap();
        let store = TestStore::new();
        let c = BlockCache::new(store.clone(), both(dir.path())).unwrap();
        c.put_block("b/1", Bytes::from_static(DATA), Keep::MemoryAndDisk)
            .await
            .unwrap();
        // Once its disk copy is written (in the background)...
        while c.stats().disk_bytes == 0 {
            tokio::task::yield_now().await;
        }
        c.delete("b/1").await.unwrap();
        assert!(!store.has("b/1"));
        assert!(!c.is_cached("b/1"));
        let s = c.stats();
        assert_eq!((s.mem_bytes, s.disk_bytes), (0, 0));
        assert!(!dir.path().join("blocks/b/1").exists());
        assert!(c.get_block("b/1").await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn without_caches_every_read_goes_to_the_store() {
        let store = TestStore::with(&[("a/1", DATA)]);
        let c = BlockCache::new(store.clone(), BlockCacheConfig::default()).unwrap();
        assert_eq!(c.get_block("a/1").await.unwrap(), DATA);
        assert_eq!(c.get_block("a/1").await.unwrap(), DATA);
        c.insert("x", Bytes::from_static(DATA), Keep::MemoryAndDisk);
        assert!(!c.is_cached("a/1") && !c.is_cached("x"));
        assert_eq!(TestStore::count(&store.gets), 2);
        assert_eq!(
            c.stats(),
            CacheStats {
                store_fetches: 2,
                ..CacheStats::default()
            }
        );
    }

    /// A reader that missed memory just before a fetch of the same block
    /// finished (and left `inflight`) must not fetch the block again.
    #[tokio::test]
    async fn a_block_fetched_since_the_memory_lookup_is_not_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = TestStore::with(&[("a/1", DATA)]);
        let c = BlockCache::new(store.clone(), both(dir.path())).unwrap();
        // The state that race leaves: the block in memory, no fetch under
        // way, and the caller past its own memory lookup.
        c.insert("a/1", Bytes::from_static(DATA), Keep::Memory);
        assert_eq!(c.fetch("a/1", false).await.unwrap(), DATA);
        assert_eq!(TestStore::count(&store.gets), 0);
        assert_eq!(c.stats().store_fetches, 0);
    }

    #[test]
    fn a_bad_disk_config_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BlockCacheConfig {
            mem_bytes: 0,
            disk: Some(DiskCacheConfig {
                dir: dir.path().to_path_buf(),
                capacity: 1,
                free_ratio: 2.0,
            }),
        };
        let e = BlockCache::new(TestStore::new(), cfg).err().unwrap();
        assert!(e.to_string().contains("opening the disk cache"), "{e}");
    }
}
