//! Client side of metadata dump and load (see `server::ops::dump`).

use super::unexpected;
use super::{FsClient, MetaClient};
use crate::MetaError;
use crate::request::{MetaResponse, ReadRequest, WriteRequest};
use crate::types::*;

/// Rows sent per `LoadRows` request.
pub const LOAD_BATCH: usize = 1024;

impl FsClient {
    /// One page of group `g`'s rows of one kind, and the cursor for the next
    /// page (None after the last).
    pub async fn dump_rows(
        &self,
        g: GroupId,
        kind: TreeRowKind,
        after: Option<Vec<u8>>,
    ) -> Result<(Vec<TreeRow>, Option<Vec<u8>>), MetaError> {
        let req = ReadRequest::DumpRows {
            fs: self.info.id,
            kind,
            after,
            limit: 2048,
        };
        match self.call_group(g, req).await? {
            MetaResponse::Rows { rows, next } => Ok((rows, next)),
            other => Err(unexpected(other)),
        }
    }

    /// Writes rows that all live in group `g` (by this filesystem's
    /// partitions) into filesystem `into`: this one while it loads, or a
    /// snapshot of it being loaded.
    pub async fn load_rows(
        &self,
        g: GroupId,
        into: FsId,
        rows: Vec<TreeRow>,
    ) -> Result<(), MetaError> {
        let req = WriteRequest::LoadRows {
            fs: into,
            layout: self.info.id,
            rows,
        };
        self.call_group(g, req).await?;
        Ok(())
    }
}

impl MetaClient {
    /// New slices of `fs` get ids from `at_least` on.
    pub async fn raise_slice_floor(&self, fs: FsId, at_least: SliceId) -> Result<(), MetaError> {
        self.call(
            CLUSTER_GROUP,
            WriteRequest::RaiseSliceFloor { fs, at_least },
        )
        .await?;
        Ok(())
    }

    /// Records what filesystem `name`, still loading, borrows.
    pub async fn set_borrowed(
        &self,
        name: &str,
        borrowed: Vec<BorrowedBlocks>,
    ) -> Result<FsInfo, MetaError> {
        let req = WriteRequest::SetBorrowed {
            name: name.into(),
            borrowed,
        };
        match self.call(CLUSTER_GROUP, req).await? {
            MetaResponse::Fs(f) => Ok(f),
            other => Err(unexpected(other)),
        }
    }
}
