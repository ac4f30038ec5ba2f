//! The memory block cache: whole blocks keyed by object key, weighted by
//! their size in bytes, least recently used out first (moka with its LRU
//! policy). Not moka's default TinyLFU: its admission test turns away a new
//! block whose key is no more frequent than the one it would evict, which
//! for a sequential reader is every block, so prefetched blocks were
//! dropped on arrival and fetched again when read. Blocks are immutable, so
//! an entry never goes stale; it only leaves to make room or when its object
//! is deleted.

use bytes::Bytes;
use moka::sync::Cache;

#[derive(Clone)]
pub struct MemCache {
    cache: Cache<String, Bytes>,
    capacity: u64,
}

impl MemCache {
    /// A cache holding at most `capacity_bytes` bytes of block data.
    pub fn new(capacity_bytes: u64) -> MemCache {
        let cache = Cache::builder()
            .max_capacity(capacity_bytes)
            // moka weighs in u32; a block over 4 GiB does not fit anyway.
            .weigher(|_key: &String, data: &Bytes| u32::try_from(data.len()).unwrap_or(u32::MAX))
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .build();
        MemCache {
            cache,
            capacity: capacity_bytes,
        }
    }

    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.cache.get(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.cache.contains_key(key)
    }

    /// Keeps a block. One larger than the whole cache is not kept: it would
    /// only push everything else out on its way through.
    pub fn insert(&self, key: &str, data: Bytes) {
        if data.len() as u64 > self.capacity {
            return;
        }
        self.cache.insert(key.to_string(), data);
    }

    pub fn remove(&self, key: &str) {
        self.cache.invalidate(key);
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
}
