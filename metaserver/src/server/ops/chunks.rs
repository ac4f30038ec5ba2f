//! File contents in the rows: committing written slices, cutting chunk maps
//! at a new size, holes, and O_APPEND reservations.

use std::collections::HashSet;

use super::garbage;
use super::quota::file_growth;
use crate::MetaError;
use crate::request::{MetaResponse, MetaResult};
use crate::server::ops::{Ctx, OpResult, tri};
use crate::server::store::{DbError, Pages, RowsMut, key};
use crate::types::*;

impl<T: RowsMut> Ctx<'_, T> {
    pub(crate) fn reserve_append(
        &mut self,
        fs: FsId,
        ino: Ino,
        at_least: u64,
        len: u64,
        now: Timestamp,
    ) -> Result<MetaResult, DbError> {
        let mut inode = tri!(self.inode(fs, ino)?);
        if inode.kind != FileType::File {
            return Ok(Err(MetaError::Invalid(
                "only regular files are appended to".into(),
            )));
        }
        tri!(self.check_unlocked(fs, &[ino], &[])?);
        let offset = inode.size.max(at_least);
        let Some(end) = offset.checked_add(len).filter(|&e| e <= MAX_FILE_SIZE) else {
            return Ok(Err(MetaError::FileTooBig(format!(
                "appending {len} bytes at {offset} (files end by {MAX_FILE_SIZE})"
            ))));
        };
        let old_size = inode.size;
        tri!(self.charge(fs, &file_growth(&inode, end))?);
        self.add_usage(fs, 0, (end - old_size) as i64)?;
        inode.size = end;
        inode.mtime = now;
        inode.ctime = now;
        self.trash_resized(fs, &inode, old_size)?;
        self.save(fs, &inode)?;
        Ok(Ok(MetaResponse::Reserved { offset, inode }))
    }

    /// Hides `[offset, offset + len)` (clipped to the size) behind hole
    /// slices, so it reads as zeros; objects of slices it covers stay until
    /// compaction rewrites the chunk.
    pub(crate) fn punch_hole(
        &mut self,
        fs: FsId,
        ino: Ino,
        offset: u64,
        len: u64,
        now: Timestamp,
    ) -> OpResult<Inode> {
        let mut inode = tri!(self.inode(fs, ino)?);
        if inode.kind != FileType::File {
            return Ok(Err(MetaError::Invalid(
                "only regular files have holes to punch".into(),
            )));
        }
        tri!(self.check_unlocked(fs, &[ino], &[])?);
        let cs = self.chunk_size(fs)?;
        let end = offset.saturating_add(len).min(inode.size);
        if offset < end {
            // Only chunks that have slices: one with none reads as zeros
            // already, and a hole over a huge sparse range costs nothing.
            for idx in self.chunks_with_slices(fs, ino, offset / cs, end.div_ceil(cs))? {
                let chunk_start = idx as u64 * cs;
                let pos = offset.max(chunk_start) - chunk_start;
                let stop = end.min(chunk_start + cs) - chunk_start;
                let k = key::chunk(self.g, fs, ino, idx);
                if let Some(mut slices) = self.t.load::<Vec<Slice>>(&k)? {
                    slices.push(Slice {
                        id: 0,
                        pos: pos as u32,
                        len: (stop - pos) as u32,
                    });
                    self.t.put(&k, &slices)?;
                }
            }
        }
        inode.mtime = now;
        inode.ctime = now;
        self.save(fs, &inode)?;
        Ok(Ok(inode))
    }

    /// Indexes in `[from, to)` of `ino`'s chunks that have a slice list, in
    /// order: a range scan of the rows that exist, so the cost follows the
    /// data, not the size of the range.
    pub(crate) fn chunks_with_slices(
        &self,
        fs: FsId,
        ino: Ino,
        from: u64,
        to: u64,
    ) -> Result<Vec<u32>, DbError> {
        let prefix = key::chunk_prefix(self.g, fs, ino);
        let mut pages = Pages::new(prefix.clone(), 4096);
        if let Some(before) = from.checked_sub(1) {
            pages = pages.after(key::chunk(
                self.g,
                fs,
                ino,
                before.min(u32::MAX as u64) as u32,
            ));
        }
        let mut out = Vec::new();
        while let Some(page) = pages.next(&*self.t)? {
            for (k, _) in page {
                let tail: [u8; 4] = k[prefix.len()..]
                    .try_into()
                    .map_err(|_| DbError::Corrupt(format!("chunk key {k:?}")))?;
                let idx = u32::from_be_bytes(tail);
                if u64::from(idx) >= to {
                    return Ok(out);
                }
                out.push(idx);
            }
        }
        Ok(out)
    }

    /// The chunk size is recorded per partition state so partition groups need not ask group 0.
    pub(crate) fn chunk_size(&self, fs: FsId) -> Result<u64, DbError> {
        Ok(self
            .t
            .load::<u32>(&key::counter(self.g, &format!("chunk_size:{fs}")))?
            .map(u64::from)
            .unwrap_or(DEFAULT_CHUNK_SIZE as u64))
    }

    /// Hides bytes in [new_size, old_size): whole chunks are dropped, the chunk
    /// holding the new end gets a hole slice over its tail.
    pub(crate) fn cut_chunks(
        &mut self,
        fs: FsId,
        ino: Ino,
        new_size: u64,
        old_size: u64,
        chunk_size: u64,
        now: Timestamp,
    ) -> Result<(), DbError> {
        let first_whole = new_size.div_ceil(chunk_size);
        let last = old_size.div_ceil(chunk_size);
        // Only the chunks that exist: a sparse file of a huge size has few.
        for idx in self.chunks_with_slices(fs, ino, first_whole, last)? {
            let k = key::chunk(self.g, fs, ino, idx);
            if let Some(slices) = self.t.load::<Vec<Slice>>(&k)? {
                self.queue_slices(fs, slices, now)?;
                self.t.del(&k)?;
            }
        }
        let pos = new_size % chunk_size;
        if pos != 0 {
            let idx = (new_size / chunk_size) as u32;
            let k = key::chunk(self.g, fs, ino, idx);
            if let Some(mut slices) = self.t.load::<Vec<Slice>>(&k)? {
                slices.push(Slice {
                    id: 0,
                    pos: pos as u32,
                    len: (chunk_size - pos) as u32,
                });
                self.t.put(&k, &slices)?;
            }
        }
        Ok(())
    }

    pub(crate) fn write_slices(
        &mut self,
        fs: FsId,
        ino: Ino,
        slices: Vec<(u32, Slice)>,
        end: u64,
        now: Timestamp,
    ) -> OpResult<(ChangeStamp, Inode, Vec<u32>)> {
        let mut inode = tri!(self.inode(fs, ino)?);
        let before = inode.stamp();
        if inode.kind != FileType::File {
            return Ok(Err(MetaError::Invalid(
                "data can only be written to regular files".into(),
            )));
        }
        if end > MAX_FILE_SIZE {
            return Ok(Err(MetaError::FileTooBig(format!(
                "size {end} (at most {MAX_FILE_SIZE})"
            ))));
        }
        let chunk_size = self.chunk_size(fs)?;
        for (idx, s) in &slices {
            let slice_end = *idx as u64 * chunk_size + s.pos as u64 + s.len as u64;
            if s.len == 0 || s.pos as u64 + s.len as u64 > chunk_size || s.id == 0 {
                return Ok(Err(MetaError::Invalid(format!(
                    "slice {s:?} does not fit chunk {idx}"
                ))));
            }
            if slice_end > MAX_FILE_SIZE {
                return Ok(Err(MetaError::FileTooBig(format!(
                    "a slice ending at {slice_end} (at most {MAX_FILE_SIZE})"
                ))));
            }
        }
        if end > inode.size {
            tri!(self.charge(fs, &file_growth(&inode, end))?);
        }
        // Each chunk's list is read and written once, however many slices
        // it gets (a commit of random writes brings thousands).
        let mut by_chunk: Vec<(u32, Vec<Slice>)> = Vec::new();
        for (idx, s) in slices {
            match by_chunk.iter_mut().find(|(i, _)| *i == idx) {
                Some((_, new)) => new.push(s),
                None => by_chunk.push((idx, vec![s])),
            }
        }
        let mut crowded = Vec::new();
        for (idx, new) in by_chunk {
            let k = key::chunk(self.g, fs, ino, idx);
            let mut list: Vec<Slice> = self.t.load(&k)?.unwrap_or_default();
            // A slice committed again (a write-back client replaying its
            // journal after a crash) is not added twice.
            let mut known: HashSet<SliceId> = list.iter().map(|x| x.id).collect();
            list.extend(new.into_iter().filter(|s| known.insert(s.id)));
            if list.len() >= garbage::COMPACT_AT {
                crowded.push(idx);
            }
            self.t.put(&k, &list)?;
        }
        if end > inode.size {
            self.add_usage(fs, 0, (end - inode.size) as i64)?;
            let old_size = inode.size;
            inode.size = end;
            self.trash_resized(fs, &inode, old_size)?;
        }
        inode.mtime = now;
        inode.ctime = now;
        self.save(fs, &inode)?;
        Ok(Ok((before, inode, crowded)))
    }
}
