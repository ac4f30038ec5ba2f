//! Unit tests of the block cache: memory, disk and store tiers, shared
//! fetches, prefetch and eviction, against an in-memory store that counts
//! its calls.

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

#[tokio::test]
async fn where_the_disk_may_be_read_here_a_disk_hit_needs_no_other_task() {
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::with(&[("a/1", DATA), ("a/2", DATA)]);
    let c = BlockCache::new(store.clone(), both(dir.path())).unwrap();
    for key in ["a/1", "a/2"] {
        c.get_block(key).await.unwrap();
    }
    settle(&c).await;
    drop(c);
    // A restarted client: both blocks on disk only.
    let c = BlockCache::new(store.clone(), both(dir.path())).unwrap();

    // Without leave, a disk hit is read by another task: the first poll
    // has no answer yet.
    let mut elsewhere = Box::pin(c.get_block("a/1"));
    assert!(futures::poll!(elsewhere.as_mut()).is_pending());
    assert_eq!(elsewhere.await.unwrap(), DATA);

    // With it, the answer (read and checked from disk) comes on the first
    // poll, and is kept in memory as any disk hit is.
    let here = disk_reads_here(|| c.get_block("a/2").now_or_never());
    assert_eq!(here.expect("answered on the first poll").unwrap(), DATA);
    assert!(c.in_memory("a/2"));
    let s = c.stats();
    assert_eq!((s.disk_hits, s.store_fetches), (2, 0));
    assert!(!may_read_disk_here(), "the leave ends with the closure");

    // A damaged copy is dropped, and the store's fetched as before.
    let file = dir.path().join("blocks/a/1");
    let c = BlockCache::new(store.clone(), disk_only(dir.path())).unwrap();
    let mut raw = std::fs::read(&file).unwrap();
    raw[3] ^= 0xff;
    std::fs::write(&file, raw).unwrap();
    let first = disk_reads_here(|| c.get_block("a/1").now_or_never());
    assert!(first.is_none(), "a damaged copy is no answer");
    assert_eq!(c.get_block("a/1").await.unwrap(), DATA);
    assert_eq!(TestStore::count(&store.gets), 3);
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
    // The disk takes what memory cannot: windows are not cut.
    assert_eq!(c.prefetch_room(), None);
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
    // So readers get windows that fit in half of it (`prefetch_room`).
    assert_eq!(c.prefetch_room(), Some(15));
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
    assert_eq!(c.fetch("a/1", FetchFor::Read).await.unwrap(), DATA);
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

#[test]
fn prefetches_count_as_used_when_read_and_as_wasted_when_pushed_out_unread() {
    let m = crate::metrics::metrics();
    let p = Prefetched::default();
    let (used, wasted) = m.prefetch_counts();
    p.issued("a");
    p.issued("b");
    p.read("a");
    p.read("a");
    p.read("never prefetched");
    // Other tests prefetch too: at least this one's counts.
    assert!(m.prefetch_counts().0 > used);
    assert_eq!(p.count.load(Ordering::Relaxed), 1, "only b is still unread");
    for i in 0..PREFETCH_WINDOW {
        p.issued(&format!("k{i}"));
    }
    assert!(m.prefetch_counts().1 > wasted, "b was pushed out unread");
    let (set, order) = &*p.keys.lock().unwrap();
    assert!(!set.contains("b") && set.len() == PREFETCH_WINDOW);
    assert!(order.len() <= 2 * set.len() + 1024);
}

/// A block a read takes whole goes to the kernel's page cache with the
/// answer: with a disk cache it is not kept in memory too, whether it came
/// from the store or from disk; a block read in part is.
#[tokio::test]
async fn a_block_read_whole_is_not_kept_in_memory_beside_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::with(&[("b/1", b"block....1"), ("b/2", b"block....2")]);
    let cfg = BlockCacheConfig {
        mem_bytes: 1 << 20,
        disk: disk_cfg(dir.path()),
    };
    let c = BlockCache::new(store.clone(), cfg).unwrap();
    assert_eq!(c.get_whole_block("b/1").await.unwrap(), &b"block....1"[..]);
    settle(&c).await;
    assert!(!c.in_memory("b/1") && c.is_cached("b/1"), "to disk alone");
    assert_eq!(c.get_whole_block("b/1").await.unwrap(), &b"block....1"[..]);
    assert!(!c.in_memory("b/1"), "a disk hit read whole stays on disk");
    assert_eq!(c.stats().disk_hits, 1);
    assert_eq!(c.get_block("b/1").await.unwrap(), &b"block....1"[..]);
    assert!(
        c.in_memory("b/1"),
        "a block read in part is kept for the rest"
    );
    assert_eq!((TestStore::count(&store.gets), c.stats().disk_hits), (1, 2));

    // Without a disk cache, memory is the only place.
    let cfg = BlockCacheConfig {
        mem_bytes: 1 << 20,
        disk: None,
    };
    let c = BlockCache::new(store.clone(), cfg).unwrap();
    c.get_whole_block("b/2").await.unwrap();
    assert!(c.in_memory("b/2"));
}
