//! The write path: buffered writes, block uploads and commits.
//!
//! Writes collect in pending slices (one per run of consecutive offsets in a
//! chunk). Every block that fills goes to the store at once, in parallel,
//! holding its bytes against the client-wide buffer budget until it is stored,
//! so writers wait instead of the client growing without bound. A commit
//! (flush, fsync, close, a size change, or enough bytes pending) stores the
//! partial tails, waits for every block and then records the slices in the
//! chunk maps with one metaserver call; with write-back the blocks and the
//! commit go to local disk first and the upload follows (`writeback.rs`).

use bytes::{Bytes, BytesMut};
use strata_cache::{Keep, StoreError, block_key};
use strata_meta::{Ino, MetaError, Slice, SliceId};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;

use crate::error::{FsError, FsResult};
use crate::file::{BlockState, FileData, PendingSlice};
use crate::fs::Filesystem;

impl Filesystem {
    pub(crate) fn block_size(&self) -> u32 {
        self.meta.info.block_size
    }

    pub(crate) fn chunk_size(&self) -> u64 {
        self.meta.info.chunk_size as u64
    }

    /// The object keys of the blocks of `d`'s pending slices.
    fn pending_block_keys(&self, d: &FileData) -> Vec<String> {
        let bs = self.meta.info.block_size;
        let mut keys = Vec::new();
        for s in &d.pending {
            for i in 0..s.len.div_ceil(bs) {
                keys.push(self.block_key(s.id, i, (s.len - i * bs).min(bs)));
            }
        }
        keys
    }

    pub(crate) fn block_key(&self, id: SliceId, index: u32, len: u32) -> String {
        // A loaded filesystem reads its older slices under the dumped one's uuid.
        block_key(self.meta.info.block_owner(id), id, index, len)
    }

    pub async fn write(&self, ino: Ino, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        if self.config.read_only {
            return Err(FsError::new(libc::EROFS, "mounted read-only"));
        }
        let of = self.open_file(ino)?;
        *of.last_write.lock().unwrap() = Some(tokio::time::Instant::now());
        let mut d = of.data.lock().await;
        let flags = self.handles.flags(fh);
        let offset = if flags.append {
            // The kernel's offset is its cached size, which another client
            // may have outgrown: the metaserver hands out the end instead,
            // past this client's own writes not committed yet.
            let mine = self
                .writeback
                .as_ref()
                .and_then(|w| w.pending(ino))
                .map_or(0, |(end, _)| end);
            self.meta
                .reserve_append(ino, d.pending_end.max(mine), data.len() as u64)
                .await?
        } else {
            offset
        };
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= strata_meta::MAX_FILE_SIZE)
            .ok_or_else(|| FsError::new(libc::EFBIG, "write beyond the largest file size"))?;
        if !flags.append {
            // An append's growth was checked when its range was reserved.
            self.check_quota_room(&d, end).await?;
        }
        let cs = self.chunk_size();
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let chunk = (at / cs) as u32;
            let pos = (at % cs) as u32;
            let n = rest.len().min((cs - pos as u64) as usize);
            self.buffer(&mut d, chunk, pos, &rest[..n]).await?;
            at += n as u64;
            rest = &rest[n..];
        }
        d.pending_end = d.pending_end.max(end);
        d.pending_len += data.len() as u64;
        d.pending_mtime = strata_meta::Timestamp::now();
        d.pending_bypassed |= flags.direct;
        if d.pending_len >= self.config.file_buffer as u64 {
            self.commit(ino, &mut d).await?;
        }
        Ok(data.len() as u32)
    }

    /// Appends to the newest pending slice when the write continues it, else
    /// starts a new one; full blocks leave for the store at once.
    async fn buffer(&self, d: &mut FileData, chunk: u32, pos: u32, bytes: &[u8]) -> FsResult<()> {
        let continues = d.pending.last().is_some_and(|s| {
            !s.sealed && s.chunk == chunk && s.pos as u64 + s.len as u64 == pos as u64
        });
        if !continues {
            let id = self.next_slice_id().await?;
            d.pending.push(PendingSlice {
                chunk,
                pos,
                id,
                len: 0,
                tail: BytesMut::new(),
                blocks: Vec::new(),
                sealed: false,
            });
        }
        let bs = self.block_size() as usize;
        let mut rest = bytes;
        while !rest.is_empty() {
            let s = d.pending.last_mut().expect("a pending slice exists");
            let n = rest.len().min(bs - s.tail.len());
            if s.tail.capacity() - s.tail.len() < n {
                let streaming = !s.blocks.is_empty();
                make_room(&mut s.tail, n, bs, streaming);
            }
            s.tail.extend_from_slice(&rest[..n]);
            s.len += n as u32;
            rest = &rest[n..];
            if s.tail.len() == bs {
                let block = s.tail.split().freeze();
                let index = s.blocks.len() as u32;
                let key = self.block_key(s.id, index, bs as u32);
                // Waits here while the budget is spent: the writer slows to
                // the store's pace instead of buffering without bound.
                let permit = self.budget_for(block.len()).await;
                let s = d.pending.last_mut().expect("a pending slice exists");
                s.blocks
                    .push(BlockState::Storing(self.spawn_store(key, block, permit)));
            }
        }
        Ok(())
    }

    /// Where a written block of `len` bytes is kept: in memory and on disk,
    /// except full blocks of large writes when `cache_large_writes` is off
    /// (memory only, for a disk too slow or small to take every write).
    pub(crate) fn keep_written(&self, len: usize) -> Keep {
        if self.config.cache_large_writes || len < self.block_size() as usize {
            Keep::MemoryAndDisk
        } else {
            Keep::Memory
        }
    }

    async fn budget_for(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        let n = len.min(self.config.buffer_size).max(1) as u32;
        if let Ok(permit) = self.buffer_budget.clone().try_acquire_many_owned(n) {
            return Some(permit);
        }
        let start = std::time::Instant::now();
        let permit = self.buffer_budget.clone().acquire_many_owned(n).await.ok();
        crate::metrics::metrics().buffer_waited(start);
        permit
    }

    /// Stores one block in the background: uploads it, or with write-back
    /// stages it on local disk. A failure hands the bytes back for a retry.
    fn spawn_store(
        &self,
        key: String,
        block: Bytes,
        permit: Option<OwnedSemaphorePermit>,
    ) -> JoinHandle<Result<(), (StoreError, Bytes)>> {
        let cache = self.cache.clone();
        let slots = self.upload_slots.clone();
        let staging = self.writeback.as_ref().map(|w| w.staging());
        let keep = self.keep_written(block.len());
        tokio::spawn(async move {
            let _budget = permit;
            match staging {
                Some(staging) => {
                    let (k, b) = (key.clone(), block.clone());
                    let staged = tokio::task::spawn_blocking(move || staging.put_block(&k, &b))
                        .await
                        .map_err(std::io::Error::other)
                        .and_then(|r| r);
                    match staged {
                        Ok(()) => {
                            // The staged file is the local copy until the upload.
                            cache.insert(&key, block, Keep::Memory);
                            Ok(())
                        }
                        // The local disk is full: the block goes to the
                        // object store now instead (the journal's upload
                        // finds it there), and the write goes on.
                        Err(e) if is_disk_full(&e) => {
                            tracing::warn!(%key, "the write-back disk is full; uploading the block directly");
                            let _slot = slots.acquire_owned().await;
                            cache
                                .put_block(&key, block.clone(), Keep::Memory)
                                .await
                                .map_err(|e| (e, block))
                        }
                        Err(e) => Err((
                            StoreError::Io {
                                context: format!("staging block {key}"),
                                source: e,
                            },
                            block,
                        )),
                    }
                }
                None => {
                    let _slot = slots.acquire_owned().await;
                    cache
                        .put_block(&key, block.clone(), keep)
                        .await
                        .map_err(|e| (e, block))
                }
            }
        })
    }

    /// Stores every block of the pending slices (tails included) and waits
    /// for them; a block that failed is tried once more.
    async fn store_pending(&self, d: &mut FileData) -> FsResult<()> {
        let bs = self.block_size();
        for s in &mut d.pending {
            s.sealed = true;
            if !s.tail.is_empty() {
                let block = s.tail.split().freeze();
                let key = self.block_key(s.id, s.blocks.len() as u32, block.len() as u32);
                s.blocks
                    .push(BlockState::Storing(self.spawn_store(key, block, None)));
            }
        }
        let mut failure = None;
        for s in &mut d.pending {
            for (i, b) in s.blocks.iter_mut().enumerate() {
                if let BlockState::Storing(task) = b {
                    *b = match task.await {
                        Ok(Ok(())) => BlockState::Stored,
                        Ok(Err((e, bytes))) => {
                            tracing::warn!(error = %e, "storing a block failed; trying again");
                            BlockState::Failed(bytes)
                        }
                        Err(e) => {
                            // The bytes went with the task (the runtime is
                            // shutting down): nothing to try again with.
                            return Err(
                                FsError::new(libc::EIO, "a block upload task ended").with_source(e)
                            );
                        }
                    };
                }
                if let BlockState::Failed(bytes) = b {
                    let len = (s.len - i as u32 * bs).min(bs);
                    let key = self.block_key(s.id, i as u32, len);
                    match self.spawn_store(key, bytes.clone(), None).await {
                        Ok(Ok(())) => *b = BlockState::Stored,
                        Ok(Err((e, _))) => {
                            failure.get_or_insert(e);
                        }
                        Err(e) => {
                            return Err(
                                FsError::new(libc::EIO, "a block upload task ended").with_source(e)
                            );
                        }
                    }
                }
            }
        }
        match failure {
            // The bytes stay pending, so a later flush or fsync tries again.
            Some(e) => Err(FsError::new(libc::EIO, "storing file data failed").with_source(e)),
            None => Ok(()),
        }
    }

    /// Stores what is left of the buffered slices and commits them.
    pub(crate) async fn commit(&self, ino: Ino, d: &mut FileData) -> FsResult<()> {
        if d.pending.is_empty() {
            // A file created here and not written: its create goes now
            // (decision 71), so a close, flush or fsync leaves it there.
            return Ok(self.meta.settle(ino).await?);
        }
        self.store_pending(d).await?;
        let slices: Vec<(u32, Slice)> = d.pending.iter().map(|s| (s.chunk, s.slice())).collect();
        let journaled = match &self.writeback {
            Some(wb) => {
                match wb
                    .commit(ino, slices.clone(), d.pending_end, d.pending_mtime, &d.attr)
                    .await
                {
                    Ok(attr) => Some(attr),
                    // No room for the journal record: once the commits
                    // journaled before it have landed (they must land
                    // first), this one goes to the metaserver directly.
                    Err(e) if e.errno == libc::ENOSPC => {
                        tracing::warn!(ino, "the write-back disk is full; committing directly");
                        wb.wait_inode(ino).await?;
                        let keys = self.pending_block_keys(d);
                        wb.upload_now(&keys, &self.cache, self.meta.info.block_size)
                            .await?;
                        None
                    }
                    Err(e) => return Err(e),
                }
            }
            None => None,
        };
        let attr = match journaled {
            Some(attr) => attr,
            None => {
                let written = match self
                    .meta
                    .write_slices(ino, slices.clone(), d.pending_end, d.pending_mtime)
                    .await
                {
                    Ok(w) => w,
                    Err(e @ MetaError::QuotaExceeded(_)) => {
                        // Refused for good: sending the same bytes again
                        // cannot fit either, so they are dropped (their
                        // objects are left to `strata gc`). This flush,
                        // fsync or close gets EDQUOT, and so do the fsync
                        // and close of every handle open meanwhile: this
                        // commit may be another descriptor's (`DroppedWrites`).
                        d.pending.clear();
                        d.pending_len = 0;
                        d.pending_end = 0;
                        d.pending_bypassed = false;
                        let attr = d.attr.clone();
                        d.invalidate(&attr);
                        self.quotas.forget(attr.parent);
                        let e = FsError::from(e);
                        d.dropped.record(&e);
                        return Err(e);
                    }
                    Err(e) => return Err(e.into()),
                };
                self.compactor.committed(ino, &slices, &written.crowded);
                self.cached_pages
                    .after_own_commit(ino, &written, d.pending_bypassed);
                written.inode
            }
        };
        d.pending.clear();
        d.pending_len = 0;
        d.pending_end = 0;
        d.pending_bypassed = false;
        d.invalidate(&attr);
        Ok(())
    }
}

/// Makes room for `incoming` more bytes in a pending slice's tail. A tail
/// that will be a large block (its slice already filled one, or it reaches a
/// quarter of a block) gets a page-aligned buffer of a whole block at once:
/// it is not copied again as it grows, nor on its way into the disk cache
/// (O_DIRECT takes it as it is). Growing by doubling copied about 3 MiB per
/// 4 MiB block written in 1 MiB pieces, and the bounce buffer 4 MiB more.
/// Small files grow as usual and keep small buffers.
fn make_room(tail: &mut BytesMut, incoming: usize, block: usize, streaming: bool) {
    if streaming || tail.len() + incoming >= block / 4 {
        let mut whole = strata_cache::aligned_buffer(block);
        whole.extend_from_slice(tail);
        *tail = whole;
    } else {
        tail.reserve(incoming);
    }
}

/// An error of a full local disk (or of a quota on it).
fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_tails_get_one_aligned_block_and_small_ones_stay_small() {
        let block = 4 << 20;
        let mut tail = BytesMut::new();
        make_room(&mut tail, 16 << 10, block, false);
        assert!(
            tail.capacity() < block / 4,
            "a small file's tail stays small"
        );
        tail.extend_from_slice(&[1; 16 << 10]);
        make_room(&mut tail, 1 << 20, block, false);
        assert!(tail.capacity() >= block);
        assert!((tail.as_ptr() as usize).is_multiple_of(4096));
        assert_eq!(&tail[..], &[1; 16 << 10][..], "what was there is kept");
        let mut next = BytesMut::new();
        make_room(&mut next, 4096, block, true);
        assert!(next.capacity() >= block, "a streaming slice's next block");
    }
}
