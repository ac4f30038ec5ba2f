//! A block cache on local disk: whole immutable blocks as files, each ending
//! in a CRC32 per 16 KiB page, evicted least-recently-used by total size. A
//! file that is missing or fails its checksum is treated as a miss, never
//! served. The index is rebuilt from the directory at start, so a restarted
//! client keeps its cache. Whole files are written and read with O_DIRECT
//! (`direct_io`): the memory cache above already holds hot blocks, so a
//! page-cache copy would only cost memory and CPU. Range reads stay buffered,
//! so random small reads of one block find its pages in the page cache.
//!
//! Besides its own capacity the cache keeps a share of the filesystem free
//! (`free_ratio`): the cache dir usually shares a disk with other things, and
//! a cache that fills the disk breaks them. Before each write it asks the
//! filesystem how much is free (statvfs), evicts old blocks until the write
//! leaves at least that share free, and skips the write if even an empty
//! cache could not.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

use crate::direct_io;

/// Size and free space of a filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsSpace {
    pub total: u64,
    /// What unprivileged writers may still use (statvfs `f_bavail`).
    pub available: u64,
}

/// The space of the filesystem holding `path`.
pub fn fs_space(path: &Path) -> std::io::Result<FsSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs only writes into the zeroed struct we own, and `c` is a
    // valid NUL-terminated path for the duration of the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = st.f_frsize as u64;
    Ok(FsSpace {
        total: (st.f_blocks as u64).saturating_mul(unit),
        available: (st.f_bavail as u64).saturating_mul(unit),
    })
}

/// Asks how much space the filesystem holding the cache has; tests replace it.
type SpaceProbe = Box<dyn Fn(&Path) -> std::io::Result<FsSpace> + Send + Sync>;

/// The share of the filesystem `DiskCache::open` keeps free.
pub const DEFAULT_FREE_RATIO: f64 = 0.1;

struct Entry {
    size: u64,
    last_use: u64,
}

/// What is cached, in least-recently-used order. `last_use` values come from
/// one counter, so they are unique and order the `lru` map.
#[derive(Default)]
struct Index {
    entries: HashMap<String, Entry>,
    lru: BTreeMap<u64, String>,
    used: u64,
    clock: u64,
    /// Bytes of writes that have made room but are not in `entries` yet: the
    /// filesystem does not show them yet, so room is made for them too.
    writing: u64,
}

impl Index {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn touch(&mut self, key: &str) -> bool {
        let now = self.tick();
        match self.entries.get_mut(key) {
            Some(e) => {
                self.lru.remove(&e.last_use);
                e.last_use = now;
                self.lru.insert(now, key.to_string());
                true
            }
            None => false,
        }
    }

    fn insert(&mut self, key: &str, size: u64) {
        self.remove(key);
        let last_use = self.tick();
        self.entries
            .insert(key.to_string(), Entry { size, last_use });
        self.lru.insert(last_use, key.to_string());
        self.used += size;
    }

    fn remove(&mut self, key: &str) -> Option<u64> {
        let e = self.entries.remove(key)?;
        self.lru.remove(&e.last_use);
        self.used -= e.size;
        Some(e.size)
    }

    fn pop_oldest(&mut self) -> Option<(String, u64)> {
        let (_, key) = self.lru.pop_first()?;
        let e = self.entries.remove(&key).expect("lru and entries agree");
        self.used -= e.size;
        Some((key, e.size))
    }
}

pub struct DiskCache {
    dir: PathBuf,
    capacity: u64,
    free_ratio: f64,
    probe: SpaceProbe,
    index: Mutex<Index>,
}

/// Checksums cover pages of this many bytes, so a range read checks only
/// the pages it reads.
const PAGE: usize = 16 << 10;
/// A cache file: the block's bytes, a CRC32 per page, then the block's
/// length and a CRC32 of the page checksums and the length (all LE u32).
const FOOTER: usize = 8;

/// Bytes a cached block of `len` bytes takes on disk.
fn file_len(len: usize) -> usize {
    len + 4 * len.div_ceil(PAGE) + FOOTER
}

/// The block length of a cache file of `size` bytes, if any fits.
fn block_len(size: usize) -> Option<usize> {
    // size - FOOTER = len + 4 * pages, with pages = ceil(len / PAGE).
    let x = size.checked_sub(FOOTER)?;
    let around = x / (PAGE + 4);
    (around.saturating_sub(1)..=around + 1)
        .filter_map(|pages| x.checked_sub(4 * pages))
        .find(|&len| file_len(len) == size)
}

fn encode_tail(data: &[u8]) -> Vec<u8> {
    let mut tail = Vec::with_capacity(file_len(data.len()) - data.len());
    for page in data.chunks(PAGE) {
        tail.extend_from_slice(&crc32fast::hash(page).to_le_bytes());
    }
    tail.extend_from_slice(&(data.len() as u32).to_le_bytes());
    let sum = crc32fast::hash(&tail);
    tail.extend_from_slice(&sum.to_le_bytes());
    tail
}

/// The page checksums of a cache file of `file_len` bytes whose last bytes
/// (from the start of the checksums) are `tail`, and the block length;
/// None if they do not add up.
fn decode_tail(tail: &[u8]) -> Option<(Vec<u32>, usize)> {
    let n = tail.len();
    if n < FOOTER {
        return None;
    }
    let sum = u32::from_le_bytes(tail[n - 4..].try_into().ok()?);
    if crc32fast::hash(&tail[..n - 4]) != sum {
        return None;
    }
    let len = u32::from_le_bytes(tail[n - 8..n - 4].try_into().ok()?) as usize;
    let crcs = tail[..n - 8]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect::<Vec<_>>();
    (crcs.len() == len.div_ceil(PAGE)).then_some((crcs, len))
}

impl DiskCache {
    /// Opens (creating) the cache under `dir`, holding at most `capacity`
    /// bytes and keeping 10% of the filesystem free.
    pub fn open(dir: &Path, capacity: u64) -> std::io::Result<DiskCache> {
        Self::open_with(dir, capacity, DEFAULT_FREE_RATIO)
    }

    /// Like `open`, keeping `free_ratio` (0.0 to below 1.0) of the filesystem free.
    pub fn open_with(dir: &Path, capacity: u64, free_ratio: f64) -> std::io::Result<DiskCache> {
        Self::open_with_probe(dir, capacity, free_ratio, fs_space)
    }

    /// Like `open_with`, asking `probe` instead of statvfs how much space the
    /// filesystem has (tests model a disk that fills up this way).
    pub fn open_with_probe(
        dir: &Path,
        capacity: u64,
        free_ratio: f64,
        probe: impl Fn(&Path) -> std::io::Result<FsSpace> + Send + Sync + 'static,
    ) -> std::io::Result<DiskCache> {
        if !(0.0..1.0).contains(&free_ratio) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the free-space ratio must be at least 0 and below 1, not {free_ratio}"),
            ));
        }
        let dir = dir.join("blocks");
        std::fs::create_dir_all(&dir)?;
        let cache = DiskCache {
            dir,
            capacity,
            free_ratio,
            probe: Box::new(probe),
            index: Mutex::new(Index::default()),
        };
        let mut found = Vec::new();
        scan(&cache.dir, &cache.dir, &mut found)?;
        // Oldest first, so the order of last use survives a restart as far
        // as mtimes (whole seconds) tell it.
        found.sort_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0)));
        {
            let mut idx = cache.index.lock().unwrap();
            for (key, size, _mtime) in found {
                idx.insert(&key, size);
            }
        }
        cache.make_room(0);
        Ok(cache)
    }

    /// Bytes of cached block files.
    pub fn used(&self) -> u64 {
        self.index.lock().unwrap().used
    }

    /// Whether `key` is cached, by the index alone (no IO): a file damaged
    /// since is found out by `get`.
    pub fn contains(&self, key: &str) -> bool {
        self.index.lock().unwrap().entries.contains_key(key)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// Drops `key` from the cache; a missing key is fine.
    pub fn remove(&self, key: &str) {
        self.index.lock().unwrap().remove(key);
        let _ = std::fs::remove_file(self.path(key));
    }

    /// The cached block, if present and intact.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        if !self.index.lock().unwrap().touch(key) {
            return None;
        }
        let intact = direct_io::read_all(&self.path(key)).ok().and_then(|raw| {
            let len = block_len(raw.len())?;
            let (crcs, stated) = decode_tail(&raw[len..])?;
            let pages_ok = stated == len
                && raw[..len]
                    .chunks(PAGE)
                    .zip(&crcs)
                    .all(|(page, crc)| crc32fast::hash(page) == *crc);
            pages_ok.then(|| raw.slice(..len))
        });
        if intact.is_none() {
            tracing::warn!(key, "cached block missing or damaged; fetching it again");
            self.remove(key);
        }
        intact
    }

    /// `len` bytes at `offset` of the cached block, reading and checking
    /// only the pages they lie in. None if the block is not cached, is
    /// damaged (it is dropped), or is shorter than asked.
    pub fn get_range(&self, key: &str, offset: u64, len: u64) -> Option<Bytes> {
        use std::os::unix::fs::FileExt;
        {
            let mut idx = self.index.lock().unwrap();
            let size = idx.entries.get(key)?.size as usize;
            let fits = block_len(size)
                .is_some_and(|b| offset.checked_add(len).is_some_and(|end| end <= b as u64));
            if !fits {
                return None;
            }
            idx.touch(key);
        }
        let read = || -> Option<Bytes> {
            let f = std::fs::File::open(self.path(key)).ok()?;
            let size = f.metadata().ok()?.len() as usize;
            let block = block_len(size)?;
            let mut tail = vec![0u8; size - block];
            f.read_exact_at(&mut tail, block as u64).ok()?;
            let (crcs, stated) = decode_tail(&tail)?;
            if stated != block {
                return None;
            }
            let end = offset.checked_add(len)? as usize;
            if end > block {
                return None;
            }
            let first = offset as usize / PAGE;
            let last = end.div_ceil(PAGE).max(first + 1).min(crcs.len());
            let from = first * PAGE;
            let to = (last * PAGE).min(block);
            let mut pages = vec![0u8; to - from];
            f.read_exact_at(&mut pages, from as u64).ok()?;
            let intact = pages
                .chunks(PAGE)
                .zip(&crcs[first..last])
                .all(|(page, crc)| crc32fast::hash(page) == *crc);
            if !intact {
                return None;
            }
            let start = offset as usize - from;
            Some(Bytes::from(pages).slice(start..start + len as usize))
        };
        let got = read();
        if got.is_none() {
            tracing::warn!(key, "cached block missing or damaged; fetching it again");
            self.remove(key);
        }
        got
    }

    /// Stores a block; errors only cost the cache entry. Blocks are
    /// immutable, so a key already cached is only marked as used. A block
    /// that does not fit (over the capacity, or no room above the free-space
    /// floor even after evicting) is not stored.
    pub fn put(&self, key: &str, data: &[u8]) {
        if self.index.lock().unwrap().touch(key) {
            return;
        }
        let size = file_len(data.len()) as u64;
        if size > self.capacity || !self.make_room(size) {
            tracing::debug!(
                key,
                size,
                "no room in the disk cache; not caching the block"
            );
            return;
        }
        let path = self.path(key);
        let write = || -> std::io::Result<()> {
            let parent = path.parent().expect("cache paths have a parent");
            std::fs::create_dir_all(parent)?;
            let tmp = parent.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
            // No fsync: after a crash a torn file fails its checksum and is a miss.
            let res = direct_io::write_new(&tmp, &[data, &encode_tail(data)])
                .and_then(|()| std::fs::rename(&tmp, &path));
            if res.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            res
        };
        let res = write();
        let mut idx = self.index.lock().unwrap();
        idx.writing -= size;
        match res {
            Ok(()) => idx.insert(key, size),
            Err(e) => tracing::warn!(key, error = %e, "cannot write to the disk cache"),
        }
    }

    /// Evicts least-recently-used blocks until `incoming` more bytes fit
    /// under the capacity and above the free-space floor; if they fit,
    /// reserves them (in `writing`) and says so. When the filesystem is below
    /// the floor for other reasons the cache shrinks anyway, even if that
    /// cannot make room: giving the space back is the point of the floor.
    fn make_room(&self, incoming: u64) -> bool {
        let space = if self.free_ratio > 0.0 {
            match (self.probe)(&self.dir) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e,
                        "cannot tell the free space of the cache's filesystem");
                    None
                }
            }
        } else {
            None
        };
        let mut victims = Vec::new();
        let fits = {
            let mut idx = self.index.lock().unwrap();
            let over_capacity = |idx: &Index| idx.used + idx.writing + incoming > self.capacity;
            // Bytes still to free before the write leaves the floor free.
            let mut below_floor = space.map_or(0, |s| {
                let floor = (s.total as f64 * self.free_ratio).ceil() as u64;
                let available = s.available.saturating_sub(idx.writing);
                (floor + incoming).saturating_sub(available)
            });
            while over_capacity(&idx) || below_floor > 0 {
                let Some((key, size)) = idx.pop_oldest() else {
                    break;
                };
                below_floor = below_floor.saturating_sub(size);
                victims.push(key);
            }
            let fits = !over_capacity(&idx) && below_floor == 0;
            if fits {
                idx.writing += incoming;
            }
            fits
        };
        crate::metrics::metrics().evicted("disk", victims.len() as u64);
        for k in victims {
            let _ = std::fs::remove_file(self.path(&k));
        }
        fits
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A filesystem of `total` bytes where `others` belong to someone else
    /// and the cache's files take what they take, so the free-space floor is
    /// tested without filling a real disk.
    struct FakeFs {
        total: u64,
        others: AtomicU64,
    }

    fn du(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let md = e.metadata().unwrap();
                if md.is_dir() { du(&e.path()) } else { md.len() }
            })
            .sum()
    }

    impl FakeFs {
        fn new(total: u64) -> Arc<FakeFs> {
            Arc::new(FakeFs {
                total,
                others: AtomicU64::new(0),
            })
        }

        fn probe(
            self: &Arc<Self>,
        ) -> impl Fn(&Path) -> std::io::Result<FsSpace> + Send + Sync + use<> {
            let fs = self.clone();
            move |dir| {
                let taken = fs.others.load(Ordering::SeqCst) + du(dir);
                Ok(FsSpace {
                    total: fs.total,
                    available: fs.total.saturating_sub(taken),
                })
            }
        }
    }

    const BLOCK: u64 = 100 + 4 + FOOTER as u64;

    fn cached(c: &DiskCache, keys: impl IntoIterator<Item = String>) -> Vec<bool> {
        keys.into_iter().map(|k| c.contains(&k)).collect()
    }

    #[test]
    fn keeps_the_free_share_of_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FakeFs::new(10_000);
        let c = DiskCache::open_with_probe(dir.path(), 1 << 30, 0.1, fs.probe()).unwrap();
        for i in 0..100 {
            c.put(&format!("k{i:03}"), &[1u8; 100]);
        }
        // 1 000 bytes stay free: 80 blocks of 112 bytes leave 1 040.
        assert_eq!(c.used(), 80 * BLOCK);
        assert_eq!(du(c.dir()), 80 * BLOCK);
        assert!(
            cached(&c, (0..20).map(|i| format!("k{i:03}")))
                .iter()
                .all(|&x| !x)
        );
        assert!(
            cached(&c, (20..100).map(|i| format!("k{i:03}")))
                .iter()
                .all(|&x| x)
        );

        // Someone else takes 5 000 bytes: the next write first evicts the 10
        // oldest blocks, enough to leave 1 000 free after it.
        fs.others.store(5_000, Ordering::SeqCst);
        c.put("new", &[2u8; 100]);
        assert_eq!(c.used(), 71 * BLOCK);
        assert!(
            cached(&c, (20..30).map(|i| format!("k{i:03}")))
                .iter()
                .all(|&x| !x)
        );
        assert!(c.contains("k030") && c.contains("new"));
        assert_eq!(c.get("new").as_deref(), Some(&[2u8; 100][..]));
    }

    #[test]
    fn refuses_blocks_when_even_an_empty_cache_leaves_too_little_free() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FakeFs::new(10_000);
        fs.others.store(9_000, Ordering::SeqCst);
        let c = DiskCache::open_with_probe(dir.path(), 1 << 30, 0.1, fs.probe()).unwrap();
        c.put("a", &[1u8; 100]);
        assert_eq!(c.get("a"), None);
        assert_eq!(c.used(), 0);
        assert_eq!(du(c.dir()), 0, "nothing was written");
        fs.others.store(8_000, Ordering::SeqCst);
        c.put("a", &[1u8; 100]);
        assert_eq!(c.get("a").as_deref(), Some(&[1u8; 100][..]));
    }

    #[test]
    fn open_evicts_down_to_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FakeFs::new(10_000);
        let c = DiskCache::open_with_probe(dir.path(), 1 << 30, 0.0, fs.probe()).unwrap();
        for i in 0..10 {
            c.put(&format!("k{i}"), &[1u8; 100]);
        }
        drop(c);
        // 460 bytes free: 540 short of the floor, so 6 blocks go, oldest first.
        fs.others.store(8_500, Ordering::SeqCst);
        let c = DiskCache::open_with_probe(dir.path(), 1 << 30, 0.1, fs.probe()).unwrap();
        assert_eq!(c.used(), 4 * BLOCK);
        assert_eq!(
            cached(&c, (0..10).map(|i| format!("k{i}"))),
            [
                false, false, false, false, false, false, true, true, true, true
            ]
        );
    }

    #[test]
    fn a_failing_probe_does_not_stop_caching() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open_with_probe(dir.path(), 1 << 20, 0.1, |_: &Path| {
            Err(std::io::Error::other("no statvfs here"))
        })
        .unwrap();
        c.put("a", b"x");
        assert_eq!(c.get("a").as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn free_ratio_must_be_a_share() {
        let dir = tempfile::tempdir().unwrap();
        for r in [-0.1, 1.0, f64::NAN] {
            let e = DiskCache::open_with(dir.path(), 1, r).err().unwrap();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{r}");
        }
    }

    #[test]
    fn statvfs_reports_the_real_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let s = fs_space(dir.path()).unwrap();
        assert!(s.total > 0 && s.available <= s.total, "{s:?}");
        assert!(fs_space(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn blocks_over_the_capacity_are_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open_with(dir.path(), 2 * BLOCK, 0.0).unwrap();
        c.put("a", &[1u8; 100]);
        c.put("big", &[1u8; 300]);
        assert_eq!(c.get("big"), None);
        assert!(c.contains("a"), "a block too big evicts nothing");
        assert_eq!(c.used(), BLOCK);
    }

    #[test]
    fn corrupt_or_missing_files_are_misses() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open_with(dir.path(), 1 << 20, 0.0).unwrap();
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
        let c = DiskCache::open_with(dir.path(), 3 * BLOCK, 0.0).unwrap();
        for k in ["k1", "k2", "k3"] {
            c.put(k, &[7u8; 100]);
        }
        assert!(c.get("k1").is_some()); // k2 is now the oldest
        c.put("k4", &[7u8; 100]);
        assert!(c.get("k2").is_none());
        assert!(c.get("k1").is_some() && c.get("k3").is_some() && c.get("k4").is_some());
        drop(c);
        let c = DiskCache::open_with(dir.path(), 1 << 20, 0.0).unwrap();
        assert_eq!(c.used(), 3 * BLOCK);
        assert_eq!(c.get("k4").as_deref(), Some(&[7u8; 100][..]));
    }

    #[test]
    fn ranges_are_read_and_checked_page_by_page() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open_with(dir.path(), 1 << 30, 0.0).unwrap();
        let data: Vec<u8> = (0..(3 * PAGE + 123)).map(|i| (i * 7) as u8).collect();
        c.put("k", &data);
        for (off, len) in [
            (0, 10),
            (PAGE - 5, 10),
            (2 * PAGE, PAGE + 123),
            (0, data.len()),
        ] {
            let got = c.get_range("k", off as u64, len as u64).unwrap();
            assert_eq!(&got[..], &data[off..off + len], "[{off}, +{len})");
        }
        assert_eq!(
            c.get_range("k", data.len() as u64 - 1, 2),
            None,
            "past the end"
        );
        for len in [0, 1, PAGE - 1, PAGE, PAGE + 1, 5 * PAGE] {
            assert_eq!(block_len(file_len(len)), Some(len), "{len}");
        }
        // A damaged page fails the range that reads it (and drops the
        // block), not before.
        let p = dir.path().join("blocks/k");
        let mut raw = std::fs::read(&p).unwrap();
        raw[2 * PAGE + 1] ^= 1;
        std::fs::write(&p, raw).unwrap();
        assert!(c.get_range("k", 0, 100).is_some(), "page 0 is intact");
        assert_eq!(c.get_range("k", 2 * PAGE as u64, 10), None);
        assert!(!c.contains("k"));
    }
}
