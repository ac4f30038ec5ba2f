//! File contents in the metadata: chunk maps, committing written slices,
//! O_APPEND reservations, holes, and slice ids.

use super::{FsClient, expect_answer, unexpected};
use crate::MetaError;
use crate::request::{MetaResponse, ReadRequest, WriteRequest};
use crate::types::*;

/// A commit of written slices, as `FsClient::write_slices` answers it.
#[derive(Clone, Debug)]
pub struct Written {
    /// The inode's stamp just before the commit (None from a metaserver
    /// that predates it: then nothing can be told from it).
    pub before: Option<ChangeStamp>,
    /// The inode just after.
    pub inode: Inode,
    /// Chunks whose slice lists are long enough to be worth compacting.
    pub crowded: Vec<u32>,
}

impl FsClient {
    /// The inode and the slices of its chunk `index`, read together: one
    /// round trip where getattr and read_chunk would take two.
    pub async fn getattr_and_chunk(
        &self,
        ino: Ino,
        index: u32,
    ) -> Result<(Inode, Vec<Slice>), MetaError> {
        let r = self
            .call(
                ino,
                ReadRequest::GetAttrAndChunk {
                    fs: self.info.id,
                    ino,
                    index,
                },
            )
            .await?;
        let (inode, slices) =
            expect_answer!(r, MetaResponse::AttrAndSlices { inode, slices } => (inode, slices))?;
        self.recent.note([inode.clone()]);
        Ok((inode, slices))
    }

    pub async fn read_chunk(&self, ino: Ino, index: u32) -> Result<Vec<Slice>, MetaError> {
        let r = self
            .call(
                ino,
                ReadRequest::ReadChunk {
                    fs: self.info.id,
                    ino,
                    index,
                },
            )
            .await?;
        expect_answer!(r, MetaResponse::Slices(s) => s)
    }

    /// Adds written slices to their chunk maps, setting mtime and ctime to
    /// `written` (when the last of them was written).
    pub async fn write_slices(
        &self,
        ino: Ino,
        slices: Vec<(u32, Slice)>,
        end: u64,
        written: Timestamp,
    ) -> Result<Written, MetaError> {
        if let Some(created) = self.write_deferred(ino, &slices, end, written).await {
            return created;
        }
        let r = self
            .call(
                ino,
                WriteRequest::WriteSlices {
                    fs: self.info.id,
                    ino,
                    slices,
                    end,
                    // The file changed when it was written, not when the
                    // writes were committed.
                    now: written,
                },
            )
            .await?;
        let written = match r {
            MetaResponse::WrittenOver {
                before,
                inode,
                crowded,
            } => Written {
                before: Some(before),
                inode,
                crowded,
            },
            // Remembered from before `WrittenOver` existed.
            MetaResponse::Written { inode, crowded } => Written {
                before: None,
                inode,
                crowded,
            },
            // Remembered from before `Written` existed.
            MetaResponse::Inode(inode) => Written {
                before: None,
                inode,
                crowded: Vec::new(),
            },
            other => return Err(unexpected(other)),
        };
        self.recent.note([written.inode.clone()]);
        Ok(written)
    }

    /// Reserves `len` bytes at the end of file `ino` for an O_APPEND write
    /// (at `at_least` or beyond); returns where they start.
    pub async fn reserve_append(
        &self,
        ino: Ino,
        at_least: u64,
        len: u64,
    ) -> Result<u64, MetaError> {
        let req = WriteRequest::ReserveAppend {
            fs: self.info.id,
            ino,
            at_least,
            len,
            now: Timestamp::now(),
        };
        match self.call(ino, req).await? {
            MetaResponse::Reserved { offset, inode } => {
                self.recent.note([inode]);
                Ok(offset)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Makes `[offset, offset + len)` of file `ino` read as zeros.
    pub async fn punch_hole(&self, ino: Ino, offset: u64, len: u64) -> Result<Inode, MetaError> {
        let req = WriteRequest::PunchHole {
            fs: self.info.id,
            ino,
            offset,
            len,
            now: Timestamp::now(),
        };
        let inode = expect_answer!(self.call(ino, req).await?, MetaResponse::Inode(i) => i)?;
        self.recent.note([inode.clone()]);
        Ok(inode)
    }

    /// Reserves `count` consecutive slice ids and returns the first.
    pub async fn alloc_slice_ids(&self, count: u64) -> Result<SliceId, MetaError> {
        let r = self
            .meta
            .call(
                CLUSTER_GROUP,
                WriteRequest::AllocSliceIds {
                    fs: self.info.id,
                    count,
                },
            )
            .await?;
        expect_answer!(r, MetaResponse::SliceIds { start } => start)
    }
}
