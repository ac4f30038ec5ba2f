//! The memory block cache: whole blocks keyed by object key, weighted by
//! their size in bytes, least recently used out first (moka with its LRU
//! policy). Not moka's default TinyLFU: its admission test turns away a new
//! block whose key is no more frequent than the one it would evict, which
//! for a sequential reader is every block, so prefetched blocks were
//! dropped on arrival and fetched again when read. Blocks are immutable, so
//! an entry never goes stale; it only leaves to make room or when its object
//! is deleted.
//!
//! Plain LRU is flushed by a scan: a file read once from end to end pushes
//! out everything else (blocks just written, blocks random readers use) and
//! keeps only the scan's own tail, which the next pass of the same scan needs
//! last. So a block a sequential reader has read to its end is marked read
//! through, and read-through blocks make room before any other, the most
//! recently marked first (kernels treat pages used once the same way). A
//! file or dataset larger than the cache keeps its first part cached from
//! one pass to the next, and a scan no longer evicts the rest of the cache.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use moka::sync::Cache;

#[derive(Clone)]
pub struct MemCache {
    cache: Cache<String, Bytes>,
    capacity: u64,
    read_through: Arc<Mutex<ReadThrough>>,
}

/// The blocks marked read through: `order` is a stack, newest on top;
/// `keys` says which of its entries still count (a key removed or evicted
/// meanwhile stays in `order` until popped or compacted away).
#[derive(Default)]
struct ReadThrough {
    order: Vec<String>,
    keys: HashSet<String>,
}

impl MemCache {
    /// A cache holding at most `capacity_bytes` bytes of block data.
    pub fn new(capacity_bytes: u64) -> MemCache {
        let cache = Cache::builder()
            .max_capacity(capacity_bytes)
            // moka weighs in u32; a block over 4 GiB does not fit anyway.
            .weigher(|_key: &String, data: &Bytes| u32::try_from(data.len()).unwrap_or(u32::MAX))
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .eviction_listener(|_key, _data, cause| {
                if cause.was_evicted() {
                    crate::metrics::metrics().evicted("memory", 1);
                }
            })
            .build();
        MemCache {
            cache,
            capacity: capacity_bytes,
            read_through: Arc::default(),
        }
    }

    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.cache.get(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.cache.contains_key(key)
    }

    /// Keeps a block. One larger than the whole cache is not kept: it would
    /// only push everything else out on its way through. Room is made from
    /// read-through blocks first; moka's LRU evicts only when they run out.
    pub fn insert(&self, key: &str, data: Bytes) {
        let len = data.len() as u64;
        if len > self.capacity {
            return;
        }
        if !self.cache.contains_key(key) {
            self.make_room(len);
        }
        self.cache.insert(key.to_string(), data);
    }

    /// Keeps a block only if it fits without pushing out a block that is not
    /// read through (read-through ones make room as in `insert`); returns
    /// whether it was kept. For blocks fetched on speculation (prefetch):
    /// they must not evict blocks someone may still read, such as a
    /// writer's blocks its reader has not reached yet.
    pub fn insert_if_room(&self, key: &str, data: Bytes) -> bool {
        let len = data.len() as u64;
        if len > self.capacity {
            return false;
        }
        if !self.cache.contains_key(key) && !self.make_room_from(len, true) {
            return false;
        }
        self.cache.insert(key.to_string(), data);
        true
    }

    /// Drops read-through blocks, newest first, until `len` more bytes fit.
    fn make_room(&self, len: u64) {
        self.make_room_from(len, false);
    }

    /// `make_room`, returning whether `len` more bytes fit now. With no
    /// read-through block it only looks when `must_fit` (settling moka's
    /// counts costs a little, and `insert` lets LRU decide anyway).
    fn make_room_from(&self, len: u64, must_fit: bool) -> bool {
        let mut rt = self.read_through.lock().unwrap();
        if rt.keys.is_empty() && !must_fit {
            return false;
        }
        // moka settles sizes lazily; the count must be current to decide.
        self.cache.run_pending_tasks();
        let mut used = self.cache.weighted_size();
        while used + len > self.capacity {
            let Some(key) = rt.order.pop() else { break };
            if !rt.keys.remove(&key) {
                continue;
            }
            if let Some(gone) = self.cache.remove(&key) {
                crate::metrics::metrics().evicted("memory", 1);
                used = used.saturating_sub(gone.len() as u64);
            }
        }
        used + len <= self.capacity
    }

    /// Marks a cached block as read through by a sequential reader: it goes
    /// before the others when room is needed. A block marked already keeps
    /// its place, so a second pass does not reorder the first one's blocks.
    pub fn mark_read_through(&self, key: &str) {
        if !self.cache.contains_key(key) {
            return;
        }
        let mut rt = self.read_through.lock().unwrap();
        if !rt.keys.insert(key.to_string()) {
            return;
        }
        rt.order.push(key.to_string());
        if rt.order.len() > 2 * rt.keys.len() + 1024 {
            // Entries of blocks removed or evicted since: drop them, in order.
            let ReadThrough { order, keys } = &mut *rt;
            keys.retain(|k| self.cache.contains_key(k));
            order.retain(|k| keys.contains(k));
        }
    }

    pub fn remove(&self, key: &str) {
        self.cache.invalidate(key);
        self.read_through.lock().unwrap().keys.remove(key);
    }

    /// Bytes of block data held. moka settles evictions lazily, so this
    /// settles them first (cheap, and only stats ask).
    pub fn used_bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(byte: u8, len: usize) -> Bytes {
        Bytes::from(vec![byte; len])
    }

    /// A sequential reader's blocks arrive in a full cache one after the
    /// other, each new: every one must be kept (until older ones make room),
    /// or a prefetched block is gone before it is read.
    #[test]
    fn new_blocks_displace_the_least_recently_used_ones() {
        let c = MemCache::new(1000);
        for i in 0..10u8 {
            c.insert(&format!("old{i}"), block(i, 100));
        }
        // Used often: under a frequency-based policy these would stay.
        for _ in 0..5 {
            for i in 0..10u8 {
                assert!(c.get(&format!("old{i}")).is_some());
            }
        }
        for i in 0..10u8 {
            let key = format!("new{i}");
            c.insert(&key, block(i, 100));
            c.used_bytes(); // settles moka's admission and eviction
            assert!(c.contains(&key), "{key} was turned away");
        }
        assert!(!c.contains("old0"));
        assert_eq!(c.used_bytes(), 1000);
    }

    #[test]
    fn keeps_blocks_and_counts_their_bytes() {
        let c = MemCache::new(1000);
        assert_eq!(c.get("a"), None);
        c.insert("a", block(1, 100));
        c.insert("b", block(2, 250));
        assert_eq!(c.get("a"), Some(block(1, 100)));
        assert_eq!(c.get("b"), Some(block(2, 250)));
        assert!(c.contains("a") && !c.contains("z"));
        assert_eq!(c.used_bytes(), 350);
        c.remove("a");
        assert_eq!(c.get("a"), None);
        assert_eq!(c.used_bytes(), 250);
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        let c = MemCache::new(1000);
        for i in 0..50 {
            c.insert(&format!("k{i}"), block(i as u8, 100));
            assert!(c.used_bytes() <= 1000, "after {i}: {}", c.used_bytes());
        }
        assert_eq!(c.used_bytes(), 1000);
        let kept = (0..50)
            .filter(|i| c.get(&format!("k{i}")).is_some())
            .count();
        assert_eq!(kept, 10);
    }

    #[test]
    fn blocks_larger_than_the_cache_are_not_kept() {
        let c = MemCache::new(1000);
        c.insert("small", block(1, 10));
        c.insert("huge", block(2, 1001));
        assert_eq!(c.get("huge"), None);
        assert_eq!(c.get("small"), Some(block(1, 10)));
        assert_eq!(c.used_bytes(), 10);
        // Exactly the capacity fits.
        let exact = MemCache::new(1000);
        exact.insert("full", block(3, 1000));
        assert_eq!(exact.get("full"), Some(block(3, 1000)));
    }

    #[test]
    fn replacing_a_key_does_not_count_twice() {
        let c = MemCache::new(1000);
        c.insert("a", block(1, 100));
        c.insert("a", block(1, 100));
        assert_eq!(c.used_bytes(), 100);
    }

    /// Blocks a sequential reader has read through make room before any
    /// other, the most recently read through first.
    #[test]
    fn read_through_blocks_make_room_first_newest_first() {
        let c = MemCache::new(1000);
        for i in 0..10u8 {
            c.insert(&format!("k{i}"), block(i, 100));
        }
        // k0 is the least recently used; under plain LRU it would go first.
        for i in [3u8, 5, 7] {
            c.mark_read_through(&format!("k{i}"));
        }
        c.insert("new1", block(11, 100));
        assert!(!c.contains("k7"), "the newest read-through block stays");
        assert!(c.contains("k0") && c.contains("k3") && c.contains("k5"));
        c.insert("new2", block(12, 150));
        assert!(!c.contains("k5") && !c.contains("k3"));
        assert!(c.contains("k0"));
        assert!(c.contains("new1") && c.contains("new2"));
        assert!(c.used_bytes() <= 1000);
        // None left to drop: back to least recently used.
        c.insert("new3", block(13, 100));
        c.used_bytes(); // settles moka's own eviction
        assert!(!c.contains("k0"));
        assert!(c.contains("new3"));
        assert!(c.used_bytes() <= 1000);
    }

    /// A scan twice the cache's size, read twice: the second pass finds the
    /// first part of the first one (under plain LRU it finds nothing: every
    /// block is evicted before the pass comes back to it).
    #[test]
    fn a_scan_larger_than_the_cache_keeps_its_first_part() {
        let c = MemCache::new(1000);
        let scan = |c: &MemCache| {
            let mut hits = Vec::new();
            for i in 0..20u8 {
                let key = format!("s{i}");
                if c.get(&key).is_some() {
                    hits.push(i);
                } else {
                    c.insert(&key, block(i, 100));
                }
                c.mark_read_through(&key);
            }
            hits
        };
        assert_eq!(scan(&c), Vec::<u8>::new());
        assert_eq!(scan(&c), (0..9).collect::<Vec<u8>>());
        assert_eq!(scan(&c), (0..9).collect::<Vec<u8>>());
        assert!(c.used_bytes() <= 1000);
    }

    #[test]
    fn a_removed_block_is_no_longer_read_through() {
        let c = MemCache::new(300);
        for k in ["a", "b", "c"] {
            c.insert(k, block(1, 100));
        }
        c.mark_read_through("b");
        c.remove("b");
        c.mark_read_through("zzz"); // not cached: ignored
        c.insert("b", block(2, 100)); // back, not read through
        c.insert("d", block(3, 100));
        c.used_bytes(); // settles moka's own eviction
        // Nothing read through: LRU evicts the oldest, a.
        assert!(!c.contains("a"));
        assert!(c.contains("b") && c.contains("c") && c.contains("d"));
    }
}
