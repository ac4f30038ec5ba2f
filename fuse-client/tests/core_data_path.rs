//! The data path of the filesystem core, without FUSE, over a real one-node
//! metaserver and a local-directory object store (wrapped to count or hold
//! requests where a test needs to see them): caches, the write budget,
//! prefetch, compaction, the trash and garbage collection.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use strata_cache::{
    BlockCache, BlockCacheConfig, DiskCacheConfig, LocalStore, ObjectStore, StoreError,
};
use strata_fuse::{Filesystem, FsConfig, Owner};
use strata_meta::server::MetaNode;
use strata_meta::{FsClient, Ino, MetaClient, SetAttr};
use strata_testkit::{Rng, node_with_fs};

const ROOT: Owner = Owner::ROOT;

const BLOCK: u32 = 64 << 10;
const CHUNK: u32 = 256 << 10;

/// An object store that counts what passes through it and can hold PUTs
/// until the test lets them go.
struct Watched {
    inner: LocalStore,
    whole_gets: AtomicU64,
    range_gets: AtomicU64,
    bytes_got: AtomicU64,
    puts_in_flight: AtomicU64,
    max_put_bytes_in_flight: AtomicU64,
    put_bytes_in_flight: AtomicU64,
    /// While Some, each PUT waits for one permit.
    gate: std::sync::Mutex<Option<Arc<tokio::sync::Semaphore>>>,
}

impl Watched {
    fn new(dir: &Path) -> Arc<Watched> {
        Arc::new(Watched {
            inner: LocalStore::new(dir).unwrap(),
            whole_gets: AtomicU64::new(0),
            range_gets: AtomicU64::new(0),
            bytes_got: AtomicU64::new(0),
            puts_in_flight: AtomicU64::new(0),
            max_put_bytes_in_flight: AtomicU64::new(0),
            put_bytes_in_flight: AtomicU64::new(0),
            gate: std::sync::Mutex::new(None),
        })
    }
}

#[async_trait::async_trait]
impl ObjectStore for Watched {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let len = data.len() as u64;
        self.puts_in_flight.fetch_add(1, Ordering::SeqCst);
        let now = self.put_bytes_in_flight.fetch_add(len, Ordering::SeqCst) + len;
        self.max_put_bytes_in_flight
            .fetch_max(now, Ordering::SeqCst);
        let gate = self.gate.lock().unwrap().clone();
        if let Some(g) = gate {
            g.acquire().await.unwrap().forget();
        }
        let r = self.inner.put(key, data).await;
        self.put_bytes_in_flight.fetch_sub(len, Ordering::SeqCst);
        self.puts_in_flight.fetch_sub(1, Ordering::SeqCst);
        r
    }
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        self.range_gets.fetch_add(1, Ordering::SeqCst);
        self.bytes_got.fetch_add(len, Ordering::SeqCst);
        self.inner.get_range(key, offset, len).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let b = self.inner.get(key).await?;
        self.whole_gets.fetch_add(1, Ordering::SeqCst);
        self.bytes_got.fetch_add(b.len() as u64, Ordering::SeqCst);
        Ok(b)
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.list(prefix).await
    }
    fn describe(&self) -> String {
        "watched local store".into()
    }
}

struct Env {
    dir: tempfile::TempDir,
    node: Arc<MetaNode>,
    client: Arc<MetaClient>,
    store: Arc<Watched>,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = node_with_fs(&dir.path().join("meta"), "t", BLOCK, CHUNK).await;
    let store = Watched::new(&dir.path().join("blocks"));
    Env {
        dir,
        node,
        client,
        store,
    }
}

impl Env {
    async fn meta(&self) -> FsClient {
        self.client.open_fs("t").await.unwrap()
    }

    /// A client with the given caches (disk caches under `name`).
    async fn mount(
        &self,
        name: &str,
        mem: u64,
        disk: Option<u64>,
        config: FsConfig,
    ) -> Arc<Filesystem> {
        let cache = BlockCache::new(
            self.store.clone(),
            BlockCacheConfig {
                mem_bytes: mem,
                disk: disk.map(|capacity| DiskCacheConfig {
                    dir: self.dir.path().join("cache").join(name),
                    capacity,
                    free_ratio: 0.0,
                }),
            },
        )
        .unwrap();
        Filesystem::new(self.meta().await, cache, config, None).unwrap()
    }

    /// Every object in the store.
    async fn objects(&self) -> HashSet<String> {
        self.store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }
}

fn quick_gc() -> FsConfig {
    FsConfig {
        deletion_delay: Duration::ZERO,
        ..Default::default()
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(2_654_435_761).wrapping_add(seed) as u8)
        .collect()
}

async fn read_all(fs: &Filesystem, ino: Ino) -> Vec<u8> {
    let fh = fs.open(ino, libc::O_RDONLY).await.unwrap();
    let size = fs.getattr(ino).await.unwrap().size;
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let got = fs.read(ino, fh, out.len() as u64, 100_000).await.unwrap();
        assert!(!got.is_empty(), "short read at {}", out.len());
        out.extend_from_slice(&got);
    }
    fs.release(ino, fh, None).await.unwrap();
    out
}

/// Random writes, reads and truncates of one file against an in-memory
/// model; then a second client with the same caches reads it back whole.
async fn model_run(fs: &Filesystem, other: &Filesystem, seed: u64) {
    let (file, fh) = fs
        .create(1, format!("m{seed}").as_bytes(), 0o644, libc::O_RDWR, ROOT)
        .await
        .unwrap();
    let mut model: Vec<u8> = Vec::new();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9) | 1);
    for step in 0..150u64 {
        match rng.below(12) {
            0 => {
                let size = rng.below(900_000);
                fs.setattr(
                    file.ino,
                    SetAttr {
                        size: Some(size),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
                model.resize(size as usize, 0);
            }
            1 => fs.flush(file.ino, fh, None).await.unwrap(),
            2..=4 => {
                let off = rng.below(model.len() as u64 + 1);
                let len = rng.below(200_000) as u32;
                let got = fs.read(file.ino, fh, off, len).await.unwrap();
                let end = (off as usize + len as usize).min(model.len());
                let want = if off as usize >= model.len() {
                    &[][..]
                } else {
                    &model[off as usize..end]
                };
                assert!(
                    got == want,
                    "seed {seed} step {step}: read [{off}, +{len}) differs"
                );
            }
            _ => {
                let off = rng.below(800_000);
                let len = 1 + rng.below(150_000) as usize;
                let data = pattern(len, step ^ seed);
                fs.write(file.ino, fh, off, &data).await.unwrap();
                let end = off as usize + len;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&data);
            }
        }
    }
    fs.release(file.ino, fh, None).await.unwrap();
    assert!(
        read_all(fs, file.ino).await == model,
        "seed {seed}: own re-read differs"
    );
    assert!(
        read_all(other, file.ino).await == model,
        "seed {seed}: other client differs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_writes_match_a_model_with_every_cache_setup() {
    let env = env().await;
    // (label, memory cache bytes, disk cache bytes): off, memory only, disk
    // only, and both so small that blocks are evicted all the time.
    let setups: [(&str, u64, Option<u64>); 4] = [
        ("off", 0, None),
        ("memory", 64 << 20, None),
        ("disk", 0, Some(64 << 20)),
        ("evicting", 3 * BLOCK as u64, Some(4 * BLOCK as u64)),
    ];
    for (i, (label, mem, disk)) in setups.into_iter().enumerate() {
        let a = env
            .mount(&format!("{label}-a"), mem, disk, FsConfig::default())
            .await;
        let b = env
            .mount(&format!("{label}-b"), mem, disk, FsConfig::default())
            .await;
        model_run(&a, &b, 11 + i as u64).await;
        if label == "evicting" {
            let s = a.cache().stats();
            assert!(s.mem_bytes <= mem, "{label}: memory cache over its size");
            assert!(
                s.disk_bytes <= disk.unwrap(),
                "{label}: disk cache over its size"
            );
        }
    }
    env.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_writes_match_a_model_with_write_back() {
    let env = env().await;
    let staging = strata_cache::Staging::open(&env.dir.path().join("staging")).unwrap();
    let cache = BlockCache::new(
        env.store.clone(),
        BlockCacheConfig {
            mem_bytes: 1 << 20,
            disk: None,
        },
    )
    .unwrap();
    let wb = Filesystem::new(env.meta().await, cache, FsConfig::default(), Some(staging)).unwrap();
    let other = env.mount("plain", 0, None, FsConfig::default()).await;
    model_run(&wb, &other, 21).await;
    env.node.shutdown().await;
}

/// Yields until `cond` holds, failing after `secs` seconds.
async fn until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_wait_while_the_buffer_budget_is_spent() {
    let env = env().await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *env.store.gate.lock().unwrap() = Some(gate.clone());
    let budget = 4 * BLOCK as usize;
    let fs = env
        .mount(
            "w",
            0,
            None,
            FsConfig {
                buffer_size: budget,
                ..Default::default()
            },
        )
        .await;
    let (file, fh) = fs
        .create(1, b"big", 0o644, libc::O_RDWR, ROOT)
        .await
        .unwrap();
    let data = pattern(40 * BLOCK as usize, 7);
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (fs, data, written) = (fs.clone(), data.clone(), written.clone());
        tokio::spawn(async move {
            for (i, piece) in data.chunks(BLOCK as usize / 2).enumerate() {
                fs.write(file.ino, fh, (i * piece.len()) as u64, piece)
                    .await
                    .unwrap();
                written.fetch_add(piece.len(), Ordering::SeqCst);
            }
            fs.release(file.ino, fh, None).await.unwrap();
        })
    };
    // Nothing is stored while the gate is shut: the writer fills the budget
    // (4 blocks) and then waits.
    until(20, "four blocks in flight", || {
        env.store.puts_in_flight.load(Ordering::SeqCst) == 4
    })
    .await;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(env.store.puts_in_flight.load(Ordering::SeqCst), 4);
    assert!(
        written.load(Ordering::SeqCst) <= 5 * BLOCK as usize,
        "the writer went on past the budget: {} bytes accepted",
        written.load(Ordering::SeqCst)
    );
    assert!(!writer.is_finished());
    // Let the store go: the writer finishes and the file is whole.
    gate.add_permits(1 << 20);
    writer.await.unwrap();
    assert!(
        env.store.max_put_bytes_in_flight.load(Ordering::SeqCst)
            <= (budget + BLOCK as usize) as u64,
        "bytes in flight went over the budget"
    );
    *env.store.gate.lock().unwrap() = None;
    assert!(read_all(&fs, file.ino).await == data);
    env.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_reads_fetch_what_they_need_and_sequential_reads_prefetch() {
    let env = env().await;
    let writer = env.mount("w", 0, None, FsConfig::default()).await;
    let (file, fh) = writer
        .create(1, b"f", 0o644, libc::O_RDWR, ROOT)
        .await
        .unwrap();
    let blocks = 256usize;
    let data = pattern(blocks * BLOCK as usize, 3);
    writer.write(file.ino, fh, 0, &data).await.unwrap();
    writer.release(file.ino, fh, None).await.unwrap();

    let reader = env
        .mount(
            "r",
            64 << 20,
            None,
            FsConfig {
                max_prefetch_blocks: 8,
                ..Default::default()
            },
        )
        .await;
    let fh = reader.open(file.ino, libc::O_RDONLY).await.unwrap();
    let before = env.store.bytes_got.load(Ordering::SeqCst);
    let mut rng = Rng(99);
    let mut asked = 0;
    let mut last_end = 0u64;
    for _ in 0..40 {
        // Far from where the last read ended: nothing looks sequential.
        let off = loop {
            let off = rng.below(data.len() as u64 - 4096);
            if off.abs_diff(last_end) > 4 << 20 {
                break off;
            }
        };
        last_end = off + 4096;
        let got = reader.read(file.ino, fh, off, 4096).await.unwrap();
        assert!(got[..] == data[off as usize..off as usize + 4096]);
        asked += 4096;
    }
    let fetched = env.store.bytes_got.load(Ordering::SeqCst) - before;
    // Small random reads fetch their own bytes: no whole blocks, no prefetch.
    assert_eq!(
        fetched, asked,
        "random reads fetched {fetched} bytes for {asked}"
    );
    assert_eq!(env.store.whole_gets.load(Ordering::SeqCst), 0);

    // Sequential reads: after the first blocks, blocks ahead of the reader
    // arrive in the cache before it asks for them.
    // Block 6 of the file: the third block of chunk 1 (chunks hold 4 blocks).
    let slices = env.meta().await.read_chunk(file.ino, 1).await.unwrap();
    assert_eq!(slices.len(), 1);
    let id_key = strata_cache::block_key(&reader.info().uuid, slices[0].id, 2, BLOCK);
    let mut off = 0u64;
    while off < 3 * BLOCK as u64 {
        let got = reader.read(file.ino, fh, off, 32 << 10).await.unwrap();
        assert!(got[..] == data[off as usize..off as usize + got.len()]);
        off += got.len() as u64;
    }
    until(20, "block 6 prefetched", || {
        reader.cache().is_cached(&id_key)
    })
    .await;
    while off < data.len() as u64 {
        let got = reader.read(file.ino, fh, off, 32 << 10).await.unwrap();
        assert!(got[..] == data[off as usize..off as usize + got.len()]);
        off += got.len() as u64;
    }
    reader.release(file.ino, fh, None).await.unwrap();
    // Each block came from the store once.
    assert_eq!(env.store.whole_gets.load(Ordering::SeqCst), blocks as u64);
    env.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_during_reads_and_writes_keeps_the_contents() {
    let env = env().await;
    let fs = env.mount("c", 8 << 20, None, quick_gc()).await;
    let (file, fh) = fs
        .create(1, b"frag", 0o644, libc::O_RDWR, ROOT)
        .await
        .unwrap();
    let mut model = vec![0u8; 600_000];
    fs.write(file.ino, fh, 0, &model).await.unwrap();
    fs.flush(file.ino, fh, None).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let compactions = Arc::new(AtomicU64::new(0));
    let compactor = {
        let (fs, stop, compactions) = (fs.clone(), stop.clone(), compactions.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                for chunk in 0..3 {
                    if fs.compact(file.ino, chunk).await.unwrap() {
                        compactions.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let mut rng = Rng(5);
    for step in 0..300u64 {
        let off = rng.below(model.len() as u64 - 10_000) as usize;
        let len = 1 + rng.below(9_000) as usize;
        let data = pattern(len, step);
        fs.write(file.ino, fh, off as u64, &data).await.unwrap();
        model[off..off + len].copy_from_slice(&data);
        // Every write its own slice: chunks crowd up fast.
        fs.flush(file.ino, fh, None).await.unwrap();
        let roff = rng.below(model.len() as u64 - 50_000) as usize;
        let got = fs.read(file.ino, fh, roff as u64, 50_000).await.unwrap();
        assert!(
            got[..] == model[roff..roff + 50_000],
            "step {step}: read differs"
        );
    }
    stop.store(true, Ordering::SeqCst);
    compactor.await.unwrap();
    fs.release(file.ino, fh, None).await.unwrap();
    assert!(
        compactions.load(Ordering::SeqCst) > 0,
        "nothing was compacted"
    );
    for chunk in 0..3 {
        fs.compact(file.ino, chunk).await.unwrap();
        let slices = env.meta().await.read_chunk(file.ino, chunk).await.unwrap();
        assert!(
            slices.len() <= 1,
            "chunk {chunk} still has {} slices",
            slices.len()
        );
    }
    let other = env.mount("c2", 0, None, FsConfig::default()).await;
    assert!(read_all(&other, file.ino).await == model);
    env.node.shutdown().await;
}

/// Every object the chunk maps reference, as keys.
async fn referenced(meta: &FsClient) -> HashSet<String> {
    let (live, queued) = meta.all_slices().await.unwrap();
    assert!(queued.is_empty(), "deletions still queued: {queued:?}");
    let bs = meta.info.block_size;
    let mut keys = HashSet::new();
    for s in live {
        for i in 0..s.len.div_ceil(bs) {
            keys.insert(strata_cache::block_key(
                &meta.info.uuid,
                s.id,
                i,
                (s.len - i * bs).min(bs),
            ));
        }
    }
    keys
}

async fn collect(fs: &Filesystem) {
    // A pass purges the trash and queues; the next deletes what that queued.
    for _ in 0..3 {
        fs.garbage_pass().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_deletes_exactly_the_unreferenced_objects() {
    let env = env().await;
    env.meta().await.set_trash_days(0).await.unwrap();
    let fs = env.mount("g", 4 << 20, None, quick_gc()).await;
    let mut files = Vec::new();
    for i in 0..6u64 {
        let (f, fh) = fs
            .create(1, format!("f{i}").as_bytes(), 0o644, libc::O_RDWR, ROOT)
            .await
            .unwrap();
        let data = pattern(300_000 + i as usize * 70_000, i);
        fs.write(f.ino, fh, 0, &data).await.unwrap();
        fs.release(f.ino, fh, None).await.unwrap();
        files.push((f.ino, data));
    }
    // Overwrites (compacted away), a truncate past whole chunks, an unlink,
    // and a rename over an existing file.
    let (ino0, data0) = &mut files[0];
    let fh = fs.open(*ino0, libc::O_RDWR).await.unwrap();
    for k in 0..25u64 {
        let piece = pattern(5_000, 100 + k);
        let off = (k * 9_000) as usize;
        fs.write(*ino0, fh, off as u64, &piece).await.unwrap();
        fs.flush(*ino0, fh, None).await.unwrap();
        data0[off..off + piece.len()].copy_from_slice(&piece);
    }
    fs.release(*ino0, fh, None).await.unwrap();
    assert!(fs.compact(*ino0, 0).await.unwrap());
    fs.setattr(
        files[1].0,
        SetAttr {
            size: Some(10_000),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    files[1].1.truncate(10_000);
    fs.unlink(1, b"f2").await.unwrap();
    fs.rename(1, b"f3", 1, b"f4", 0).await.unwrap();
    let before = env.objects().await;
    collect(&fs).await;
    let meta = env.meta().await;
    let want = referenced(&meta).await;
    let now = env.objects().await;
    assert!(now.len() < before.len(), "nothing was deleted");
    let leaked: Vec<_> = now.difference(&want).collect();
    let lost: Vec<_> = want.difference(&now).collect();
    assert!(leaked.is_empty(), "unreferenced objects left: {leaked:?}");
    assert!(lost.is_empty(), "referenced objects deleted: {lost:?}");
    // What is still linked reads back whole.
    for (i, (ino, data)) in files.iter().enumerate() {
        if i == 2 || i == 4 {
            continue;
        }
        assert!(read_all(&fs, *ino).await == *data, "file {i} differs");
    }
    assert!(read_all(&fs, fs.lookup(1, b"f4").await.unwrap().ino).await == files[3].1);
    env.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trash_keeps_deleted_files_until_due_and_restores_them() {
    let env = env().await;
    let fs = env.mount("t", 0, None, quick_gc()).await;
    let meta = env.meta().await;
    let (f, fh) = fs
        .create(1, b"keep", 0o644, libc::O_RDWR, ROOT)
        .await
        .unwrap();
    let data = pattern(200_000, 9);
    fs.write(f.ino, fh, 0, &data).await.unwrap();
    fs.release(f.ino, fh, None).await.unwrap();
    let usage = fs.statfs(strata_meta::ROOT_INO).await.unwrap();
    fs.unlink(1, b"keep").await.unwrap();
    collect(&fs).await;
    // Still there: one trash day has not passed.
    let objects = env.objects().await;
    assert_eq!(objects.len(), 4, "200 000 bytes in 64 KiB blocks");
    let g = meta.group_of(f.ino).await.unwrap();
    let trash = meta.list_trash(g, 0).await.unwrap();
    assert_eq!(trash.len(), 1);
    assert_eq!(
        (trash[0].inode.ino, &trash[0].name[..]),
        (f.ino, &b"keep"[..])
    );
    assert_eq!(
        fs.statfs(strata_meta::ROOT_INO).await.unwrap(),
        usage,
        "trash still counts as used"
    );
    assert_eq!(fs.lookup(1, b"keep").await.unwrap_err().errno, libc::ENOENT);
    meta.restore_trash(f.ino).await.unwrap();
    let back = fs.lookup(1, b"keep").await.unwrap();
    assert_eq!((back.ino, back.nlink), (f.ino, 1));
    assert!(read_all(&fs, f.ino).await == data);
    assert!(meta.list_trash(g, 0).await.unwrap().is_empty());
    // With no trash days the next pass takes it.
    meta.set_trash_days(0).await.unwrap();
    fs.unlink(1, b"keep").await.unwrap();
    collect(&fs).await;
    assert!(env.objects().await.is_empty());
    assert!(meta.list_trash(g, 0).await.unwrap().is_empty());
    assert_eq!(meta.usage().await.unwrap().bytes, 0);
    env.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlinked_open_file_works_until_its_last_close() {
    let env = env().await;
    env.meta().await.set_trash_days(0).await.unwrap();
    let fs = env.mount("o", 0, None, quick_gc()).await;
    let (f, fh) = fs
        .create(1, b"open", 0o644, libc::O_RDWR, ROOT)
        .await
        .unwrap();
    let mut data = pattern(150_000, 4);
    fs.write(f.ino, fh, 0, &data).await.unwrap();
    fs.flush(f.ino, fh, None).await.unwrap();
    fs.unlink(1, b"open").await.unwrap();
    collect(&fs).await;
    // Held: the handle reads and writes on.
    let got = fs.read(f.ino, fh, 0, 150_000).await.unwrap();
    assert!(got[..] == data[..]);
    let more = pattern(70_000, 5);
    fs.write(f.ino, fh, 150_000, &more).await.unwrap();
    fs.flush(f.ino, fh, None).await.unwrap();
    data.extend_from_slice(&more);
    let got = fs.read(f.ino, fh, 0, 300_000).await.unwrap();
    assert!(got[..] == data[..]);
    assert!(!env.objects().await.is_empty());
    fs.release(f.ino, fh, None).await.unwrap();
    collect(&fs).await;
    assert!(env.objects().await.is_empty(), "closed: purged and deleted");
    assert_eq!(
        env.meta().await.usage().await.unwrap().inodes,
        1,
        "only the root"
    );
    env.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_space_is_the_sum_of_file_sizes() {
    let env = env().await;
    env.meta().await.set_trash_days(0).await.unwrap();
    let fs = env.mount("u", 0, None, quick_gc()).await;
    let mut sizes = std::collections::HashMap::new();
    let mut rng = Rng(77);
    for step in 0..60u64 {
        let name = format!("u{}", rng.below(8));
        match rng.below(4) {
            0 => {
                if fs.unlink(1, name.as_bytes()).await.is_ok() {
                    sizes.remove(&name);
                }
            }
            1 => {
                if let Ok(i) = fs.lookup(1, name.as_bytes()).await {
                    let size = rng.below(300_000);
                    fs.setattr(
                        i.ino,
                        SetAttr {
                            size: Some(size),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                    sizes.insert(name, size);
                }
            }
            _ => {
                let (ino, fh) = match fs.lookup(1, name.as_bytes()).await {
                    Ok(i) => (i.ino, fs.open(i.ino, libc::O_RDWR).await.unwrap()),
                    Err(_) => {
                        let (i, fh) = fs
                            .create(1, name.as_bytes(), 0o644, libc::O_RDWR, ROOT)
                            .await
                            .unwrap();
                        (i.ino, fh)
                    }
                };
                let off = rng.below(400_000);
                let len = 1 + rng.below(100_000);
                fs.write(ino, fh, off, &pattern(len as usize, step))
                    .await
                    .unwrap();
                fs.release(ino, fh, None).await.unwrap();
                let s = sizes.entry(name).or_insert(0);
                *s = (*s).max(off + len);
            }
        }
        collect(&fs).await;
        let usage = env.meta().await.usage().await.unwrap();
        assert_eq!(usage.bytes, sizes.values().sum::<u64>(), "step {step}");
        assert_eq!(usage.inodes, 1 + sizes.len() as u64, "step {step}");
    }
    env.node.shutdown().await;
}
