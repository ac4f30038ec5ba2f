//! The client's share of garbage collection (see the metaserver's
//! `server::garbage`): a background worker purges due trash entries, deletes
//! the objects of queued slices and acknowledges them, renews holds on
//! unlinked files this client still has open, and compacts crowded chunks.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use strata_meta::{Deletion, Ino, Slice, Timestamp};
use tokio::sync::mpsc;

use crate::error::{FsError, FsResult};
use crate::fs::Filesystem;
use crate::slices::resolve;

/// A hold keeps an unlinked file that is open here this long, renewed well
/// before it runs out; a client that dies lets go within it.
const HOLD: Duration = Duration::from_secs(300);
const HOLD_RENEW: Duration = Duration::from_secs(60);
/// Objects deleted at once.
const DELETE_CONCURRENCY: usize = 16;

/// What one garbage pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GarbagePass {
    pub purged_inodes: u64,
    pub deleted_slices: u64,
    pub deleted_objects: u64,
}

/// Chunks waiting to be compacted, each queued once.
pub(crate) struct Compactor {
    tx: mpsc::UnboundedSender<(Ino, u32)>,
    rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<(Ino, u32)>>>,
    queued: std::sync::Mutex<HashSet<(Ino, u32)>>,
}

impl Compactor {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Compactor {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            queued: Default::default(),
        }
    }

    /// Asks for chunk `index` of `ino` to be compacted in the background.
    pub fn request(&self, ino: Ino, index: u32) {
        if self.queued.lock().unwrap().insert((ino, index)) {
            let _ = self.tx.send((ino, index));
        }
    }

    fn done(&self, ino: Ino, index: u32) {
        self.queued.lock().unwrap().remove(&(ino, index));
    }
}

fn age(t: Timestamp) -> Duration {
    let then = std::time::UNIX_EPOCH + Duration::new(t.sec.max(0) as u64, t.nsec);
    std::time::SystemTime::now()
        .duration_since(then)
        .unwrap_or_default()
}

fn later(d: Duration) -> Timestamp {
    let now = Timestamp::now();
    Timestamp {
        sec: now.sec + d.as_secs() as i64,
        nsec: now.nsec,
    }
}

impl Filesystem {
    /// Starts the background garbage worker and compactor; they stop when
    /// the filesystem is dropped.
    pub fn start_background(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let interval = self.config.gc_interval;
        tokio::spawn(async move {
            let mut last_renew = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(interval).await;
                let Some(fs) = weak.upgrade() else { return };
                if last_renew.elapsed() >= HOLD_RENEW {
                    last_renew = tokio::time::Instant::now();
                    fs.renew_holds().await;
                }
                if let Err(e) = fs.garbage_pass().await {
                    tracing::warn!(error = %e, "garbage pass failed; trying again later");
                }
            }
        });
        let weak = Arc::downgrade(self);
        let renew = self.config.lock_lease / 3;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(renew).await;
                let Some(fs) = weak.upgrade() else { return };
                fs.renew_locks().await;
            }
        });
        let rx = self.compactor.rx.lock().unwrap().take();
        if let Some(rx) = rx {
            tokio::spawn(compact_loop(Arc::downgrade(self), rx));
        }
    }

    /// Purges due trash entries and deletes the objects of queued slices
    /// older than the deletion delay, in every group of the filesystem.
    pub async fn garbage_pass(&self) -> FsResult<GarbagePass> {
        let mut pass = GarbagePass::default();
        if self.config.read_only {
            return Ok(pass);
        }
        const PAGE: u32 = 1000;
        for g in self.meta.groups() {
            loop {
                let (due, _) = self.meta.garbage_work(g, 0, 1).await?;
                if due == 0 {
                    break;
                }
                let n = self.meta.purge_trash(g, PAGE).await?;
                pass.purged_inodes += n;
                if n < PAGE as u64 {
                    break;
                }
            }
            let mut after = 0;
            loop {
                let (_, page) = self.meta.garbage_work(g, after, PAGE).await?;
                let Some(last) = page.last() else { break };
                after = last.slice;
                let ready: Vec<Deletion> = page
                    .into_iter()
                    .filter(|d| age(d.queued) >= self.config.deletion_delay)
                    .collect();
                let (slices, objects) = self.delete_slices(&ready).await;
                pass.deleted_objects += objects;
                pass.deleted_slices += slices.len() as u64;
                if !slices.is_empty() {
                    self.meta.ack_deletions(g, slices).await?;
                }
            }
        }
        Ok(pass)
    }

    /// Deletes every object of `slices`; returns the slices now gone
    /// completely and how many objects were deleted.
    async fn delete_slices(&self, slices: &[Deletion]) -> (Vec<u64>, u64) {
        let bs = self.block_size();
        let mut gone = Vec::new();
        let mut objects = 0;
        for batch in slices.chunks(DELETE_CONCURRENCY) {
            let deletes = batch.iter().map(|d| {
                // Borrowed objects (a loaded filesystem's older slices)
                // belong to the dumped filesystem: only the entry goes.
                let owned = if self.meta.info.owns_blocks(d.slice) {
                    d.len.div_ceil(bs)
                } else {
                    0
                };
                let keys: Vec<String> = (0..owned)
                    .map(|i| self.block_key(d.slice, i, (d.len - i * bs).min(bs)))
                    .collect();
                let cache = self.cache.clone();
                let slice = d.slice;
                async move {
                    for key in &keys {
                        if let Err(e) = cache.delete(key).await {
                            return (slice, Err(format!("{key}: {e}")));
                        }
                    }
                    (slice, Ok(keys.len() as u64))
                }
            });
            for (slice, r) in futures::future::join_all(deletes).await {
                match r {
                    Ok(n) => {
                        gone.push(slice);
                        objects += n;
                    }
                    Err(e) => {
                        tracing::warn!(slice, error = %e, "deleting a slice's objects failed")
                    }
                }
            }
        }
        (gone, objects)
    }

    /// Before `parent/name` is unlinked or replaced: if this client has the
    /// file open, holds it so the trash purge leaves it alone while it stays
    /// open (the purge may run the moment the last link goes). Returns the
    /// inode held.
    pub(crate) async fn hold_if_open(&self, parent: Ino, name: &[u8]) -> Option<Ino> {
        if self.open_files.lock().unwrap().is_empty() {
            return None;
        }
        let ino = self.meta.lookup(parent, name).await.ok()?.ino;
        if !self.open_files.lock().unwrap().contains_key(&ino) {
            return None;
        }
        match self.meta.hold(&[ino], later(HOLD)).await {
            Ok(()) => Some(ino),
            Err(e) => {
                tracing::warn!(ino, error = %e, "could not hold an open file being unlinked");
                None
            }
        }
    }

    /// After an unlink or a replacing rename: `held` is what `hold_if_open`
    /// held, `gone` the inode whose last link went. A held inode whose last
    /// link went stays held until its last handle here closes; any other
    /// hold is let go.
    pub(crate) async fn unlinked(&self, held: Option<Ino>, gone: Option<Ino>) {
        let Some(ino) = held else { return };
        if gone == Some(ino) {
            self.held.lock().unwrap().insert(ino);
            if self.open_files.lock().unwrap().contains_key(&ino) {
                return;
            }
            // Closed meanwhile: nothing of this client needs it any more.
            self.held.lock().unwrap().remove(&ino);
        }
        if let Err(e) = self.meta.hold(&[ino], Timestamp::now()).await {
            tracing::debug!(ino, error = %e, "releasing a hold failed; it runs out by itself");
        }
    }

    /// The last handle of `ino` closed: a hold on it can go.
    pub(crate) async fn closed(&self, ino: Ino) {
        if !self.held.lock().unwrap().remove(&ino) {
            return;
        }
        if let Err(e) = self.meta.hold(&[ino], Timestamp::now()).await {
            tracing::debug!(ino, error = %e, "releasing a hold failed; it runs out by itself");
        }
    }

    async fn renew_holds(&self) {
        let inos: Vec<Ino> = self.held.lock().unwrap().iter().copied().collect();
        if inos.is_empty() {
            return;
        }
        if let Err(e) = self.meta.hold(&inos, later(HOLD)).await {
            tracing::warn!(error = %e, "renewing holds on unlinked open files failed");
        }
    }

    /// Rewrites the visible bytes of chunk `index` of `ino` as one slice and
    /// swaps it in for the slices it replaces, unless the chunk changed
    /// meanwhile. Returns whether the chunk was compacted.
    pub async fn compact(&self, ino: Ino, index: u32) -> FsResult<bool> {
        if self.config.read_only {
            return Ok(false);
        }
        let old = self.meta.read_chunk(ino, index).await?;
        if old.len() < 2 {
            return Ok(false);
        }
        let start = old.iter().map(|s| s.pos).min().unwrap_or(0);
        let end = old.iter().map(|s| s.pos + s.len).max().unwrap_or(0);
        let data = self.read_extents(&resolve(&old, start, end), false).await?;
        let id = self.next_slice_id().await?;
        let bs = self.block_size() as usize;
        let stores = data.chunks(bs).enumerate().map(|(i, block)| {
            let key = self.block_key(id, i as u32, block.len() as u32);
            let block = bytes::Bytes::copy_from_slice(block);
            async move {
                self.cache
                    .put_block(&key, block, strata_cache::Keep::Memory)
                    .await
            }
        });
        for r in futures::future::join_all(stores).await {
            r.map_err(|e| FsError::new(libc::EIO, format!("compaction upload: {e}")))?;
        }
        let new = Slice {
            id,
            pos: start,
            len: end - start,
        };
        let done = self.meta.compact_chunk(ino, index, old, new).await?;
        if done {
            let of = self.open_files.lock().unwrap().get(&ino).cloned();
            if let Some(of) = of {
                of.data.lock().await.chunks.remove(&index);
            }
        }
        Ok(done)
    }
}

async fn compact_loop(fs: Weak<Filesystem>, mut rx: mpsc::UnboundedReceiver<(Ino, u32)>) {
    while let Some((ino, index)) = rx.recv().await {
        let Some(fs) = fs.upgrade() else { return };
        match fs.compact(ino, index).await {
            Ok(done) => tracing::debug!(ino, index, done, "compaction"),
            Err(e) => tracing::warn!(ino, index, error = %e, "compaction failed"),
        }
        fs.compactor.done(ino, index);
    }
}
