//! A block cache on local disk: whole immutable blocks as files, each ending
//! in a CRC32 of its bytes, evicted least-recently-used by total size. A file
//! that is missing or fails its checksum is treated as a miss, never served.
//! The index is rebuilt from the directory at start, so a restarted client
//! keeps its cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::StoreError;
use crate::object_store::ObjectStore;

struct Entry {
    size: u64,
    last_use: u64,
}

#[derive(Default)]
struct Index {
    entries: HashMap<String, Entry>,
    used: u64,
    clock: u64,
}

pub struct DiskCache {
    dir: PathBuf,
    capacity: u64,
    index: Mutex<Index>,
}

const TRAILER: usize = 4;

impl DiskCache {
    /// Opens (creating) the cache under `dir`, holding at most `capacity` bytes.
    pub fn open(dir: &Path, capacity: u64) -> std::io::Result<DiskCache> {
        let dir = dir.join("blocks");
        std::fs::create_dir_all(&dir)?;
        let cache = DiskCache {
            dir,
            capacity,
            index: Mutex::new(Index::default()),
        };
        let mut found = Vec::new();
        scan(&cache.dir, &cache.dir, &mut found)?;
        {
            let mut idx = cache.index.lock().unwrap();
            for (key, size, mtime) in found {
                idx.used += size;
                idx.entries.insert(
                    key,
                    Entry {
                        size,
                        last_use: mtime,
                    },
                );
            }
            idx.clock = idx.entries.values().map(|e| e.last_use).max().unwrap_or(0) + 1;
        }
        cache.evict();
        Ok(cache)
    }

    pub fn used(&self) -> u64 {
        self.index.lock().unwrap().used
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    fn touch(&self, key: &str) -> bool {
        let mut idx = self.index.lock().unwrap();
        idx.clock += 1;
        let now = idx.clock;
        match idx.entries.get_mut(key) {
            Some(e) => {
                e.last_use = now;
                true
            }
            None => false,
        }
    }

    fn forget(&self, key: &str) {
        let mut idx = self.index.lock().unwrap();
        if let Some(e) = idx.entries.remove(key) {
            idx.used -= e.size;
        }
        let _ = std::fs::remove_file(self.path(key));
    }

    /// The cached block, if present and intact.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        if !self.touch(key) {
            return None;
        }
        let raw = match std::fs::read(self.path(key)) {
            Ok(r) => r,
            Err(_) => {
                self.forget(key);
                return None;
            }
        };
        if raw.len() < TRAILER {
            self.forget(key);
            return None;
        }
        let (data, sum) = raw.split_at(raw.len() - TRAILER);
        if crc32fast::hash(data).to_le_bytes() != sum {
            tracing::warn!(key, "cached block failed its checksum; fetching it again");
            self.forget(key);
            return None;
        }
        let mut raw = raw;
        raw.truncate(raw.len() - TRAILER);
        Some(Bytes::from(raw))
    }

    /// Stores a block; errors only cost the cache entry.
    pub fn put(&self, key: &str, data: &[u8]) {
        let path = self.path(key);
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let parent = path.parent().expect("cache paths have a parent");
            std::fs::create_dir_all(parent)?;
            let tmp = parent.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(data)?;
            f.write_all(&crc32fast::hash(data).to_le_bytes())?;
            drop(f);
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            tracing::warn!(key, error = %e, "cannot write to the disk cache");
            return;
        }
        let size = (data.len() + TRAILER) as u64;
        {
            let mut idx = self.index.lock().unwrap();
            idx.clock += 1;
            let last_use = idx.clock;
            if let Some(old) = idx
                .entries
                .insert(key.to_string(), Entry { size, last_use })
            {
                idx.used -= old.size;
            }
            idx.used += size;
        }
        self.evict();
    }

    fn evict(&self) {
        let victims: Vec<String> = {
            let mut idx = self.index.lock().unwrap();
            if idx.used <= self.capacity {
                return;
            }
            let mut by_age: Vec<(u64, String, u64)> = idx
                .entries
                .iter()
                .map(|(k, e)| (e.last_use, k.clone(), e.size))
                .collect();
            by_age.sort();
            let mut out = Vec::new();
            for (_, k, size) in by_age {
                if idx.used <= self.capacity {
                    break;
                }
                idx.entries.remove(&k);
                idx.used -= size;
                out.push(k);
            }
            out
        };
        for k in victims {
            let _ = std::fs::remove_file(self.path(&k));
        }
    }
}

fn scan(root: &Path, dir: &Path, out: &mut Vec<(String, u64, u64)>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        let md = e.metadata()?;
        if md.is_dir() {
            scan(root, &p, out)?;
        } else if e.file_name().to_string_lossy().starts_with(".tmp-") {
            let _ = std::fs::remove_file(&p);
        } else {
            let key = p
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let mtime = md
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            out.push((key, md.len(), mtime));
        }
    }
    Ok(())
}

/// An object store with a disk cache in front: reads fetch and keep whole
/// blocks (objects are immutable, so a cached block never goes stale);
/// writes go to the store first, then into the cache.
pub struct CachedStore {
    inner: Arc<dyn ObjectStore>,
    cache: Arc<DiskCache>,
}

impl CachedStore {
    pub fn new(inner: Arc<dyn ObjectStore>, cache: Arc<DiskCache>) -> Self {
        CachedStore { inner, cache }
    }
}

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f)
        .await
        .expect("cache task panicked")
}

#[async_trait::async_trait]
impl ObjectStore for CachedStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.inner.put(key, data.clone()).await?;
        let (cache, key) = (self.cache.clone(), key.to_string());
        blocking(move || cache.put(&key, &data)).await;
        Ok(())
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        let block = self.get(key).await?;
        let end = offset.checked_add(len).filter(|&e| e <= block.len() as u64);
        match end {
            Some(end) => Ok(block.slice(offset as usize..end as usize)),
            None => Err(StoreError::Io {
                context: format!("reading {len} bytes at {offset} of {key}: the object is shorter"),
                source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            }),
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let (cache, k) = (self.cache.clone(), key.to_string());
        if let Some(hit) = blocking(move || cache.get(&k)).await {
            return Ok(hit);
        }
        let data = self.inner.get(key).await?;
        let (cache, k, d) = (self.cache.clone(), key.to_string(), data.clone());
        blocking(move || cache.put(&k, &d)).await;
        Ok(data)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let (cache, k) = (self.cache.clone(), key.to_string());
        blocking(move || cache.forget(&k)).await;
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.list(prefix).await
    }

    fn describe(&self) -> String {
        format!(
            "{} (disk cache {})",
            self.inner.describe(),
            self.cache.dir.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalStore;

    #[test]
    fn corrupt_or_missing_files_are_misses() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 1 << 20).unwrap();
        c.put("a/1", b"hello");
        assert_eq!(c.get("a/1").as_deref(), Some(&b"hello"[..]));
        // Flip one byte: the checksum catches it and the entry is dropped.
        let p = dir.path().join("blocks/a/1");
        let mut raw = std::fs::read(&p).unwrap();
        raw[0] ^= 1;
        std::fs::write(&p, raw).unwrap();
        assert_eq!(c.get("a/1"), None);
        assert_eq!(c.used(), 0);
        c.put("b", b"x");
        std::fs::remove_file(dir.path().join("blocks/b")).unwrap();
        assert_eq!(c.get("b"), None);
    }

    #[test]
    fn evicts_least_recently_used_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 3 * (100 + TRAILER as u64)).unwrap();
        for k in ["k1", "k2", "k3"] {
            c.put(k, &[7u8; 100]);
        }
        assert!(c.get("k1").is_some()); // k2 is now the oldest
        c.put("k4", &[7u8; 100]);
        assert!(c.get("k2").is_none());
        assert!(c.get("k1").is_some() && c.get("k3").is_some() && c.get("k4").is_some());
        drop(c);
        let c = DiskCache::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(c.used(), 3 * (100 + TRAILER as u64));
        assert_eq!(c.get("k4").as_deref(), Some(&[7u8; 100][..]));
    }

    #[tokio::test]
    async fn cached_store_serves_ranges_from_whole_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn ObjectStore> =
            Arc::new(LocalStore::new(dir.path().join("store")).unwrap());
        inner
            .put("blk", Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        let cache = Arc::new(DiskCache::open(&dir.path().join("cache"), 1 << 20).unwrap());
        let s = CachedStore::new(inner.clone(), cache.clone());
        assert_eq!(
            s.get_range("blk", 2, 3).await.unwrap(),
            Bytes::from_static(b"234")
        );
        // Served from the cache now, even with the object gone from the store.
        inner.delete("blk").await.unwrap();
        assert_eq!(
            s.get_range("blk", 7, 3).await.unwrap(),
            Bytes::from_static(b"789")
        );
        assert!(s.get_range("blk", 8, 3).await.is_err());
        s.put("new", Bytes::from_static(b"abc")).await.unwrap();
        assert_eq!(inner.get("new").await.unwrap(), Bytes::from_static(b"abc"));
        assert!(cache.get("new").is_some());
    }
}
