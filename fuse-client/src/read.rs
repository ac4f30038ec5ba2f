//! The read path: chunk maps resolved to block ranges, blocks from the
//! caches or the store, and prefetch for sequential readers.
//!
//! A reader whose reads follow each other gets a prefetch window that doubles
//! with every read that keeps up (up to `FsConfig::max_prefetch_blocks`):
//! whole blocks ahead of it are fetched in the background into the caches
//! (`BlockCache::prefetch`: into memory only where they push out nothing a
//! reader has not read through yet, else onto disk alone).
//! A reader that jumps around gets no window and fetches only the bytes it
//! asks for (one ranged GET per block touched), unless the block is cached
//! already or it reads most of the block anyway.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use strata_meta::{Ino, Slice};

use crate::error::{FsError, FsResult};
use crate::file::{FileData, PrefetchedKeys};
use crate::fs::Filesystem;
use crate::slices::{Extent, resolve};

/// Reads that start this close to where the last one ended still count as
/// sequential: the kernel's readahead (at most 1 MiB, see `fuse.rs`) sends a
/// few reads at once, and they need not arrive in order.
const SEQUENTIAL_SLACK: u64 = 1 << 20;

/// One piece of a read: `len` bytes at `offset` of block `key`, copied to
/// `dst` in the answer.
struct BlockPart {
    dst: usize,
    len: usize,
    key: String,
    offset: u64,
    block_len: u32,
}

impl Filesystem {
    pub async fn read(&self, ino: Ino, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        match self.read_once(ino, fh, offset, size).await {
            // A block of a slice that left the chunk map (compacted or
            // truncated by another client) after this client cached the map,
            // and deleted since: read the map again.
            Err(e) if e.errno == libc::ESTALE => {
                let of = self.open_file(ino)?;
                of.data.lock().await.chunks.clear();
                self.read_once(ino, fh, offset, size)
                    .await
                    .map_err(|e| e.with_errno(libc::EIO))
            }
            other => other,
        }
    }

    async fn read_once(&self, ino: Ino, _fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let of = self.open_file(ino)?;
        // Under the lock: commit own writes (reads see them), pin the chunk
        // maps and update the reader's state. Fetches run after it is
        // released, so concurrent reads of one file overlap.
        let (plan, sequential) = {
            let mut d = of.data.lock().await;
            self.commit(ino, &mut d).await?;
            if let Some(wb) = &self.writeback
                && wb.wait_inode(ino).await?
            {
                // The attributes and maps this handle has predate the commit.
                let fresh = self.meta.getattr(ino).await?;
                d.invalidate(&fresh);
            }
            let file_size = d.attr.size;
            if offset >= file_size || size == 0 {
                return Ok(Bytes::new());
            }
            let end = file_size.min(offset + size as u64);
            let sequential = d.read.next > 0
                && offset + SEQUENTIAL_SLACK >= d.read.next
                && offset <= d.read.next + SEQUENTIAL_SLACK;
            let max = self.config.max_prefetch_blocks;
            d.read.window = if sequential {
                (d.read.window.max(1) * 2).min(max)
            } else {
                0
            };
            d.read.next = end;
            let plan = self.plan(ino, &mut d, offset, end).await?;
            let prefetch = if d.read.window > 0 {
                let from = end.max(d.read.prefetched_to);
                let to = file_size.min(end + d.read.window as u64 * self.block_size() as u64);
                if from < to {
                    d.read.prefetched_to = to;
                    self.plan(ino, &mut d, from, to).await?
                } else {
                    Vec::new()
                }
            } else {
                d.read.prefetched_to = 0;
                Vec::new()
            };
            self.start_prefetch(prefetch, &mut d.read.started);
            (plan, sequential)
        };
        if let [(slices, start, stop)] = &plan[..] {
            // One chunk: its bytes as they come, without another copy.
            return self
                .read_extents(&resolve(slices, *start, *stop), sequential)
                .await;
        }
        let mut out = BytesMut::with_capacity(size as usize);
        for (slices, start, stop) in plan {
            let extents = resolve(&slices, start, stop);
            out.extend_from_slice(&self.read_extents(&extents, sequential).await?);
        }
        Ok(out.freeze())
    }

    /// The chunk maps covering `[from, to)` of the file, each with the range
    /// inside its chunk; maps not cached yet are read from the metaserver.
    async fn plan(
        &self,
        ino: Ino,
        d: &mut FileData,
        from: u64,
        to: u64,
    ) -> FsResult<Vec<(Arc<Vec<Slice>>, u32, u32)>> {
        let cs = self.chunk_size();
        let mut plan = Vec::new();
        let mut at = from;
        while at < to {
            let chunk = (at / cs) as u32;
            let pos = (at % cs) as u32;
            let n = (to - at).min(cs - pos as u64) as u32;
            let slices = match d.chunks.get(&chunk) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(self.meta.read_chunk(ino, chunk).await?);
                    d.chunks.insert(chunk, s.clone());
                    s
                }
            };
            plan.push((slices, pos, pos + n));
            at += n as u64;
        }
        Ok(plan)
    }

    /// The block pieces behind `extents` (contiguous; holes have none).
    fn block_parts(&self, extents: &[Extent]) -> (usize, Vec<BlockPart>) {
        let bs = self.block_size();
        let mut parts = Vec::new();
        let mut at = 0usize;
        for e in extents {
            if let Some(src) = e.source {
                // Split the extent at block boundaries of its slice.
                let mut off = e.pos - src.slice_pos;
                let stop = off + e.len;
                let mut dst = at;
                while off < stop {
                    let index = off / bs;
                    let in_block = off % bs;
                    let block_len = bs.min(src.slice_len - index * bs);
                    let n = (block_len - in_block).min(stop - off);
                    parts.push(BlockPart {
                        dst,
                        len: n as usize,
                        key: self.block_key(src.id, index, block_len),
                        offset: in_block as u64,
                        block_len,
                    });
                    off += n;
                    dst += n as usize;
                }
            }
            at += e.len as usize;
        }
        (at, parts)
    }

    /// The bytes of `extents`, fetched concurrently: whole blocks for a
    /// sequential reader (they are cached for the reads that follow), only
    /// the bytes asked for otherwise.
    pub(crate) async fn read_extents(
        &self,
        extents: &[Extent],
        sequential: bool,
    ) -> FsResult<Bytes> {
        let (total, parts) = self.block_parts(extents);
        let fetched = futures::future::join_all(parts.iter().map(|p| async move {
            // A block only on disk serves a small read from its pages.
            let whole = sequential
                || p.len as u64 * 2 >= p.block_len as u64
                || self.cache.in_memory(&p.key);
            if whole {
                // A read that takes all of the block: the kernel's page
                // cache keeps it (a direct-IO reader asked for the device
                // anyway), so the memory cache need not (`get_whole_block`).
                let block = if p.offset == 0 && p.len as u64 == p.block_len as u64 {
                    self.cache.get_whole_block(&p.key).await?
                } else {
                    self.cache.get_block(&p.key).await?
                };
                if block.len() != p.block_len as usize {
                    return Err(strata_cache::StoreError::S3 {
                        op: "GET",
                        key: p.key.clone(),
                        message: format!(
                            "block has {} bytes, its slice says {}",
                            block.len(),
                            p.block_len
                        ),
                    });
                }
                if sequential && p.offset + p.len as u64 == p.block_len as u64 {
                    self.cache.read_through(&p.key);
                }
                Ok(block.slice(p.offset as usize..p.offset as usize + p.len))
            } else {
                self.cache.get_range(&p.key, p.offset, p.len as u64).await
            }
        }))
        .await;
        let mut got_parts = Vec::with_capacity(parts.len());
        for (p, got) in parts.iter().zip(fetched) {
            let bytes = got.map_err(|e| {
                // ESTALE: the caller may read the chunk map again and retry.
                let errno = if e.is_not_found() {
                    libc::ESTALE
                } else {
                    libc::EIO
                };
                FsError::new(errno, format!("reading block {}", p.key)).with_source(e)
            })?;
            if bytes.len() != p.len {
                return Err(FsError::new(
                    libc::EIO,
                    format!("block {} is shorter than its slice says", p.key),
                ));
            }
            got_parts.push(bytes);
        }
        if let [only] = &got_parts[..]
            && only.len() == total
        {
            // The whole range is one piece of one block: no copy.
            return Ok(only.clone());
        }
        let mut out = vec![0u8; total];
        for (p, bytes) in parts.iter().zip(&got_parts) {
            out[p.dst..p.dst + p.len].copy_from_slice(bytes);
        }
        Ok(Bytes::from(out))
    }

    /// Fetches the blocks behind `plan` into the caches in the background,
    /// at most `max_prefetches` at once. Blocks cached already or asked for
    /// by an earlier prefetch of this file (`started`) are skipped.
    fn start_prefetch(&self, plan: Vec<(Arc<Vec<Slice>>, u32, u32)>, started: &mut PrefetchedKeys) {
        let mut keys = Vec::new();
        for (slices, start, stop) in plan {
            let (_, parts) = self.block_parts(&resolve(&slices, start, stop));
            for p in parts {
                if started.insert(&p.key) && !self.cache.is_cached(&p.key) {
                    keys.push(p.key);
                }
            }
        }
        if keys.is_empty() {
            return;
        }
        let (cache, slots) = (self.cache.clone(), self.prefetch_slots.clone());
        tokio::spawn(async move {
            for key in keys {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                tracing::debug!(key = %key, "prefetch");
                let cache = cache.clone();
                crate::metrics::metrics().prefetch_issued();
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Err(e) = cache.prefetch(&key).await {
                        crate::metrics::metrics().prefetch_failed();
                        tracing::debug!(key = %key, error = %e, "prefetch failed");
                    }
                });
            }
        });
    }
}
