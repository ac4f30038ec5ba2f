//! The client's share of garbage collection (see the metaserver's
//! `strata_meta::server::ops::garbage`): a background worker purges due trash entries, deletes
//! the objects of queued slices and acknowledges them, renews holds on
//! unlinked files this client still has open, and compacts crowded chunks.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use strata_meta::{Deletion, Ino, Slice, Timestamp};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::{FsError, FsResult};
use crate::fs::Filesystem;
use crate::metrics::metrics;
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

/// A crowded chunk waits this long after the last commit to it before it is
/// compacted: a file still being written at random would crowd it again at
/// once, and each compaction copies the whole range the slices span (a
/// 64 MiB chunk for a few KiB written), so compacting while the writes go
/// on multiplies the bytes stored many times over.
const COMPACT_QUIET: Duration = Duration::from_secs(3);
/// ... unless this client has written a whole chunk's worth of bytes into
/// it since it was first found crowded (so compaction never copies more
/// than was written), or this many slices: reads and commits of a chunk
/// cost more with every slice, so a writer that never pauses gets its
/// chunks compacted anyway.
const COMPACT_BUSY_SLICES: u64 = 8192;

/// Chunks waiting to be compacted (see `COMPACT_QUIET`).
pub(crate) struct Compactor {
    chunk_size: u64,
    waiting: std::sync::Mutex<HashMap<(Ino, u32), Waiting>>,
    wake: Arc<Notify>,
}

struct Waiting {
    last_commit: Instant,
    added_slices: u64,
    added_bytes: u64,
}

impl Waiting {
    fn busy(&self, chunk_size: u64) -> bool {
        self.added_bytes >= chunk_size || self.added_slices >= COMPACT_BUSY_SLICES
    }
}

impl Compactor {
    /// Chunks waiting for their turn.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.lock().unwrap().len()
    }

    pub fn new(chunk_size: u64) -> Self {
        Compactor {
            chunk_size,
            waiting: Default::default(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Notes a commit of `slices` to `ino` after which the metaserver found
    /// the chunks `crowded`: they are compacted in the background when due.
    pub fn committed(&self, ino: Ino, slices: &[(u32, Slice)], crowded: &[u32]) {
        if crowded.is_empty() {
            return;
        }
        let mut waiting = self.waiting.lock().unwrap();
        let now = Instant::now();
        for &index in crowded {
            let w = waiting.entry((ino, index)).or_insert(Waiting {
                last_commit: now,
                added_slices: 0,
                added_bytes: 0,
            });
            w.last_commit = now;
            for (_, s) in slices.iter().filter(|(c, _)| *c == index) {
                w.added_slices += 1;
                w.added_bytes += s.len as u64;
            }
            if w.busy(self.chunk_size) {
                self.wake.notify_one();
            }
        }
    }

    /// Takes the chunks due for compaction at `now`; also says when the
    /// next of the others is due. A file still `writing` (written lately, or
    /// with writes buffered) is not quiet, however long ago its last commit was.
    fn take_due(
        &self,
        now: Instant,
        writing: impl Fn(Ino) -> bool,
    ) -> (Vec<(Ino, u32)>, Option<Instant>) {
        let mut waiting = self.waiting.lock().unwrap();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        waiting.retain(|&(ino, index), w| {
            if w.last_commit + COMPACT_QUIET <= now && writing(ino) {
                w.last_commit = now;
            }
            let at = w.last_commit + COMPACT_QUIET;
            if at <= now || w.busy(self.chunk_size) {
                due.push((ino, index));
                false
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
                true
            }
        });
        (due, next)
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
        tokio::spawn(compact_loop(
            Arc::downgrade(self),
            self.compactor.wake.clone(),
        ));
    }

    /// Purges due trash entries and deletes the objects of queued slices
    /// older than the deletion delay, in every group of the filesystem.
    pub async fn garbage_pass(&self) -> FsResult<GarbagePass> {
        let mut pass = GarbagePass::default();
        // The whole filesystem's garbage is for its clients that may
        // change all of it.
        if self.config.read_only || self.meta.confined() {
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
                metrics().purged(n);
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
                metrics().deleted(slices.len() as u64, objects);
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
        if self.handles.no_open_files() {
            return None;
        }
        let ino = self.meta.lookup(parent, name).await.ok()?.ino;
        if !self.handles.is_open(ino) {
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
        // Not marked if closed meanwhile: nothing of this client needs it
        // any more.
        if gone == Some(ino) && self.handles.hold(ino) {
            return;
        }
        self.release_hold(ino).await;
    }

    /// Lets go of the hold on `ino` (its last handle here closed, or it
    /// needs none).
    pub(crate) async fn release_hold(&self, ino: Ino) {
        if let Err(e) = self.meta.hold(&[ino], Timestamp::now()).await {
            tracing::debug!(ino, error = %e, "releasing a hold failed; it runs out by itself");
        }
    }

    async fn renew_holds(&self) {
        let inos = self.handles.held();
        if inos.is_empty() {
            return;
        }
        if let Err(e) = self.meta.hold(&inos, later(HOLD)).await {
            tracing::warn!(error = %e, "renewing holds on unlinked open files failed");
        }
    }

    /// Whether `ino` was written here less than `COMPACT_QUIET` ago or has
    /// writes buffered.
    fn writing(&self, ino: Ino, now: Instant) -> bool {
        self.handles.file(ino).is_some_and(|of| {
            let last = *of.last_write.lock().unwrap();
            last.is_some_and(|t| t + COMPACT_QUIET > now)
                // Locked: a write, read or commit is under way; the write
                // time above tells.
                || of.data.try_lock().is_ok_and(|d| !d.pending.is_empty())
        })
    }

    /// Rewrites the visible bytes of chunk `index` of `ino` as one slice and
    /// swaps it in for the slices it replaces, unless the chunk changed
    /// meanwhile. A file in the trash is left as it is: it is going away,
    /// and copying it would only add to what there is to delete. Returns
    /// whether the chunk was compacted.
    pub async fn compact(&self, ino: Ino, index: u32) -> FsResult<bool> {
        if self.config.read_only {
            return Ok(false);
        }
        match self.meta.getattr(ino).await {
            Ok(inode) if inode.nlink > 0 => {}
            Ok(_) | Err(strata_meta::MetaError::NotFound) => return Ok(false),
            Err(e) => return Err(e.into()),
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
            r.map_err(|e| FsError::new(libc::EIO, "compaction upload").with_source(e))?;
        }
        let new = Slice {
            id,
            pos: start,
            len: end - start,
        };
        let done = self.meta.compact_chunk(ino, index, old, new).await?;
        if done {
            metrics().compacted();
        }
        if done && let Some(of) = self.handles.file(ino) {
            of.data.lock().await.chunks.remove(&index);
        }
        Ok(done)
    }
}

async fn compact_loop(fs: Weak<Filesystem>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(fs) = fs.upgrade() else { return };
            let now = Instant::now();
            let (due, next) = fs.compactor.take_due(now, |ino| fs.writing(ino, now));
            for (ino, index) in due {
                match fs.compact(ino, index).await {
                    Ok(done) => tracing::debug!(ino, index, done, "compaction"),
                    Err(e) => tracing::warn!(ino, index, error = %e, "compaction failed"),
                }
            }
            next
        };
        // Woken early for a busy chunk (a wake-up sent meanwhile is kept);
        // otherwise a look every second at most, so that a dropped
        // filesystem ends the loop soon.
        let second = Instant::now() + Duration::from_secs(1);
        let until = next.map_or(second, |n| n.min(second));
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u64 = 64 << 20;

    fn slices(chunk: u32, n: u32, len: u32) -> Vec<(u32, Slice)> {
        (0..n)
            .map(|i| {
                let s = Slice {
                    id: i as u64 + 1,
                    pos: i * len,
                    len,
                };
                (chunk, s)
            })
            .collect()
    }

    #[test]
    fn a_crowded_chunk_waits_until_its_file_is_quiet() {
        let c = Compactor::new(CHUNK);
        let t0 = Instant::now();
        c.committed(7, &slices(0, 30, 4096), &[0]);
        // Chunks the metaserver did not find crowded are not queued.
        c.committed(7, &slices(1, 3, 4096), &[]);
        let idle = |_| false;
        let (due, next) = c.take_due(t0, idle);
        assert!(due.is_empty());
        assert!(next.is_some_and(|n| n > t0));
        let later = t0 + COMPACT_QUIET + Duration::from_millis(10);
        // Still writing: not quiet, however long since the commit.
        let (due, _) = c.take_due(later, |_| true);
        assert!(due.is_empty());
        let (due, _) = c.take_due(later + COMPACT_QUIET, idle);
        assert_eq!(due, vec![(7, 0)]);
        // Taken once.
        let (due, next) = c.take_due(later + COMPACT_QUIET * 2, idle);
        assert!(due.is_empty() && next.is_none());
    }

    #[test]
    fn a_chunk_written_over_by_a_whole_chunk_of_bytes_is_compacted_at_once() {
        let c = Compactor::new(CHUNK);
        let t0 = Instant::now();
        // 63 MiB in 1 MiB slices: not yet.
        c.committed(9, &slices(2, 63, 1 << 20), &[2]);
        assert!(c.take_due(t0, |_| true).0.is_empty());
        c.committed(9, &slices(2, 1, 1 << 20), &[2]);
        assert_eq!(c.take_due(t0, |_| true).0, vec![(9, 2)]);
        // So is one with very many small slices.
        c.committed(9, &slices(3, COMPACT_BUSY_SLICES as u32, 16), &[3]);
        assert_eq!(c.take_due(t0, |_| true).0, vec![(9, 3)]);
    }
}
