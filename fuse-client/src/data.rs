//! File data: the write buffer of an open file and the read path.
//!
//! Writes collect in pending slices; every full block is uploaded as soon as
//! it fills, the rest at flush. A flush (close, fsync, size change, or a full
//! buffer) waits for all uploads and then commits the slices to the chunk map
//! in one metaserver call. Reads assemble chunks from their slice lists.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use strata_cache::{ObjectStore, StoreError, block_key};
use strata_meta::{Ino, Inode, Slice, SliceId};
use tokio::task::JoinHandle;

use crate::error::{FsError, FsResult};
use crate::fs::Filesystem;
use crate::slices::{Extent, resolve};

type Upload = JoinHandle<Result<(), StoreError>>;

struct PendingSlice {
    chunk: u32,
    pos: u32,
    id: SliceId,
    data: BytesMut,
    /// Uploads of the leading full blocks, by block index.
    uploads: Vec<Upload>,
}

/// Per-inode state shared by the open handles of one client.
pub(crate) struct FileData {
    /// Attributes as of open or the last commit.
    attr: Inode,
    pending: Vec<PendingSlice>,
    pending_bytes: usize,
    /// Highest byte offset written and not yet committed.
    pending_end: u64,
    chunks: HashMap<u32, Arc<Vec<Slice>>>,
}

impl FileData {
    pub fn new(attr: Inode) -> Self {
        FileData {
            attr,
            pending: Vec::new(),
            pending_bytes: 0,
            pending_end: 0,
            chunks: HashMap::new(),
        }
    }

    /// Raises `inode`'s size to cover buffered writes.
    pub fn overlay_attr(&self, inode: &mut Inode) {
        if !self.pending.is_empty() && self.pending_end > inode.size {
            inode.size = self.pending_end;
        }
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Forgets cached chunk maps after the file changed under them.
    pub fn invalidate(&mut self, attr: &Inode) {
        self.attr = attr.clone();
        self.chunks.clear();
    }
}

fn store_key(fs: &Filesystem, id: SliceId, index: u32, len: u32) -> String {
    block_key(&fs.meta.info.uuid, id, index, len)
}

impl Filesystem {
    fn block_size(&self) -> u32 {
        self.meta.info.block_size
    }

    fn chunk_size(&self) -> u64 {
        self.meta.info.chunk_size as u64
    }

    pub async fn write(&self, ino: Ino, _fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        if self.config.read_only {
            return Err(FsError::new(libc::EROFS, "mounted read-only"));
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= i64::MAX as u64)
            .ok_or_else(|| FsError::new(libc::EFBIG, "write beyond the largest file size"))?;
        let of = self.open_file(ino)?;
        let mut d = of.data.lock().await;
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
        if d.pending_bytes >= self.config.file_buffer {
            self.commit(ino, &mut d).await?;
        }
        Ok(data.len() as u32)
    }

    /// Appends to the newest pending slice when the write continues it, else starts a new one.
    async fn buffer(&self, d: &mut FileData, chunk: u32, pos: u32, bytes: &[u8]) -> FsResult<()> {
        let continues = d
            .pending
            .last()
            .is_some_and(|s| s.chunk == chunk && s.pos as usize + s.data.len() == pos as usize);
        if !continues {
            let id = self.next_slice_id().await?;
            d.pending.push(PendingSlice {
                chunk,
                pos,
                id,
                data: BytesMut::new(),
                uploads: Vec::new(),
            });
        }
        d.pending_bytes += bytes.len();
        let bs = self.block_size() as usize;
        let s = d.pending.last_mut().expect("a pending slice exists");
        s.data.extend_from_slice(bytes);
        // Full blocks go up at once so close has less to wait for.
        while (s.uploads.len() + 1) * bs <= s.data.len() {
            let index = s.uploads.len();
            let block = Bytes::copy_from_slice(&s.data[index * bs..(index + 1) * bs]);
            let key = store_key(self, s.id, index as u32, bs as u32);
            let store = self.store.clone();
            s.uploads
                .push(tokio::spawn(async move { store.put(&key, block).await }));
        }
        Ok(())
    }

    /// Uploads what is left of the buffered slices and commits them.
    pub(crate) async fn commit(&self, ino: Ino, d: &mut FileData) -> FsResult<()> {
        if d.pending.is_empty() {
            return Ok(());
        }
        let bs = self.block_size() as usize;
        for s in &mut d.pending {
            let full = s.uploads.len();
            let mut failed = Vec::new();
            for (i, up) in s.uploads.drain(..).enumerate() {
                match up.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "block upload failed; retrying");
                        failed.push(i);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "block upload task failed; retrying");
                        failed.push(i);
                    }
                }
            }
            let tail_blocks = (full..s.data.len().div_ceil(bs)).collect::<Vec<_>>();
            let mut tasks = Vec::new();
            for i in failed.into_iter().chain(tail_blocks) {
                let start = i * bs;
                let end = (start + bs).min(s.data.len());
                let block = Bytes::copy_from_slice(&s.data[start..end]);
                let key = store_key(self, s.id, i as u32, (end - start) as u32);
                let store = self.store.clone();
                tasks.push(tokio::spawn(async move { store.put(&key, block).await }));
            }
            for t in tasks {
                t.await
                    .map_err(|e| FsError::new(libc::EIO, format!("upload task failed: {e}")))??;
            }
            // Uploads of the leading blocks are done; mark them so a retry of this
            // commit does not upload them again.
            s.uploads.clear();
        }
        let slices: Vec<(u32, Slice)> = d
            .pending
            .iter()
            .map(|s| {
                (
                    s.chunk,
                    Slice {
                        id: s.id,
                        pos: s.pos,
                        len: s.data.len() as u32,
                    },
                )
            })
            .collect();
        let attr = self.commit_slices(ino, slices, d.pending_end).await?;
        d.pending.clear();
        d.pending_bytes = 0;
        d.pending_end = 0;
        d.invalidate(&attr);
        Ok(())
    }

    pub async fn read(&self, ino: Ino, _fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let of = self.open_file(ino)?;
        // Under the lock: commit own writes (reads see them) and pin the chunk
        // maps. The block fetches run after it is released, so concurrent
        // reads of one file (kernel readahead) overlap.
        let mut plan: Vec<(Arc<Vec<Slice>>, u32, u32)> = Vec::new();
        {
            let mut d = of.data.lock().await;
            self.commit(ino, &mut d).await?;
            let file_size = d.attr.size;
            if offset >= file_size || size == 0 {
                return Ok(Bytes::new());
            }
            let end = file_size.min(offset + size as u64);
            let cs = self.chunk_size();
            let mut at = offset;
            while at < end {
                let chunk = (at / cs) as u32;
                let pos = (at % cs) as u32;
                let n = (end - at).min(cs - pos as u64) as u32;
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
        }
        let mut out = BytesMut::new();
        for (slices, start, stop) in plan {
            out.extend_from_slice(&self.read_extents(&resolve(&slices, start, stop)).await?);
        }
        Ok(out.freeze())
    }

    /// Fetches the bytes of `extents` (contiguous) with concurrent ranged GETs.
    async fn read_extents(&self, extents: &[Extent]) -> FsResult<Vec<u8>> {
        let bs = self.block_size();
        let mut parts: Vec<(usize, usize, String, u64)> = Vec::new(); // (out offset, len, key, offset in object)
        let total: u32 = extents.iter().map(|e| e.len).sum();
        let mut out = vec![0u8; total as usize];
        let mut at = 0usize;
        for e in extents {
            if let Some(src) = e.source {
                // Split the extent at block boundaries of its slice.
                let mut off = e.pos - src.slice_pos; // offset inside the slice
                let stop = off + e.len;
                let mut dst = at;
                while off < stop {
                    let index = off / bs;
                    let in_block = off % bs;
                    let block_len = bs.min(src.slice_len - index * bs);
                    let n = (block_len - in_block).min(stop - off);
                    let key = block_key(&self.meta.info.uuid, src.id, index, block_len);
                    parts.push((dst, n as usize, key, in_block as u64));
                    off += n;
                    dst += n as usize;
                }
            }
            at += e.len as usize;
        }
        let store: &Arc<dyn ObjectStore> = &self.store;
        let fetched = futures::future::join_all(
            parts
                .iter()
                .map(|(_, len, key, off)| store.get_range(key, *off, *len as u64)),
        )
        .await;
        for ((dst, len, key, _), got) in parts.iter().zip(fetched) {
            let bytes =
                got.map_err(|e| FsError::new(libc::EIO, format!("reading block {key}: {e}")))?;
            if bytes.len() != *len {
                return Err(FsError::new(
                    libc::EIO,
                    format!("block {key} is shorter than its slice says"),
                ));
            }
            out[*dst..*dst + len].copy_from_slice(&bytes);
        }
        Ok(out)
    }
}
