//! Client side of a filesystem's garbage (see `server::ops::garbage`): trash
//! settings, holds on open unlinked files, purges, the deletion queue,
//! compaction and the listings `strata gc` and `strata trash` use.

use super::FsClient;
use super::unexpected;
use crate::MetaError;
use crate::request::{MetaResponse, ReadRequest, WriteRequest};
use crate::types::*;

impl FsClient {
    /// Sets how many days files whose last link went stay in the trash, in
    /// every group holding this filesystem.
    pub async fn set_trash_days(&self, days: u32) -> Result<(), MetaError> {
        for g in self.groups() {
            let req = WriteRequest::SetTrashDays {
                fs: self.info.id,
                days,
            };
            self.call_group(g, req).await?;
        }
        Ok(())
    }

    /// Days deleted files stay in the trash.
    pub async fn trash_days(&self) -> Result<u32, MetaError> {
        let g = self.group_of(ROOT_INO).await?;
        match self
            .call_group(g, ReadRequest::GetTrashDays { fs: self.info.id })
            .await?
        {
            MetaResponse::TrashDays(d) => Ok(d),
            other => Err(unexpected(other)),
        }
    }

    /// Keeps inodes `inos` (open here) out of the trash purge until `until`;
    /// an `until` not in the future lets them go.
    pub async fn hold(&self, inos: &[Ino], until: Timestamp) -> Result<(), MetaError> {
        for (g, inos) in self.by_group(inos).await? {
            let req = WriteRequest::HoldInodes {
                fs: self.info.id,
                inos,
                until,
                now: Timestamp::now(),
            };
            self.call_group(g, req).await?;
        }
        Ok(())
    }

    /// Trash entries due in group `g`, and queued deletions after `after`.
    pub async fn garbage_work(
        &self,
        g: GroupId,
        after: SliceId,
        limit: u32,
    ) -> Result<(u64, Vec<Deletion>), MetaError> {
        let req = ReadRequest::GarbageWork {
            fs: self.info.id,
            now: Timestamp::now(),
            after,
            limit,
        };
        match self.call_group(g, req).await? {
            MetaResponse::GarbageWork {
                trash_due,
                deletions,
            } => Ok((trash_due, deletions)),
            other => Err(unexpected(other)),
        }
    }

    /// Purges up to `limit` due trash entries of group `g`.
    pub async fn purge_trash(&self, g: GroupId, limit: u32) -> Result<u64, MetaError> {
        let req = WriteRequest::PurgeTrash {
            fs: self.info.id,
            now: Timestamp::now(),
            limit,
        };
        match self.call_group(g, req).await? {
            MetaResponse::Purged(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// Drops deletion-queue entries of group `g` whose objects are deleted.
    pub async fn ack_deletions(&self, g: GroupId, slices: Vec<SliceId>) -> Result<(), MetaError> {
        let req = WriteRequest::AckDeletions {
            fs: self.info.id,
            slices,
        };
        self.call_group(g, req).await?;
        Ok(())
    }

    /// Swaps the first `old.len()` slices of chunk `index` of `ino` for `new`
    /// if nobody changed them meanwhile; returns whether it did (if not, `new`
    /// was queued for deletion).
    pub async fn compact_chunk(
        &self,
        ino: Ino,
        index: u32,
        old: Vec<Slice>,
        new: Slice,
    ) -> Result<bool, MetaError> {
        let req = WriteRequest::CompactChunk {
            fs: self.info.id,
            ino,
            index,
            old,
            new,
            now: Timestamp::now(),
        };
        match self.call_group(self.group_of(ino).await?, req).await? {
            MetaResponse::Compacted(done) => Ok(done),
            other => Err(unexpected(other)),
        }
    }

    /// One page of group `g`'s trash, inode numbers above `after`.
    pub async fn list_trash(&self, g: GroupId, after: Ino) -> Result<Vec<TrashEntry>, MetaError> {
        let req = ReadRequest::ListTrash {
            fs: self.info.id,
            after,
            limit: 1024,
        };
        match self.call_group(g, req).await? {
            MetaResponse::Trash(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    /// Links trashed inode `ino` back under the name it was removed from
    /// (with `.restored-INO` appended if that name is taken).
    pub async fn restore_trash(&self, ino: Ino) -> Result<Inode, MetaError> {
        let req = WriteRequest::RestoreTrash {
            fs: self.info.id,
            ino,
            now: Timestamp::now(),
        };
        match self
            .call_group(self.group_of(ino).await?, req)
            .await?
            .split_changed()
            .0
        {
            MetaResponse::Inode(i) => Ok(i),
            other => Err(unexpected(other)),
        }
    }

    /// One page of group `g`'s chunk maps after `(ino, index)`.
    pub async fn list_chunks(
        &self,
        g: GroupId,
        after: Option<(Ino, u32)>,
    ) -> Result<Vec<(Ino, u32, Vec<Slice>)>, MetaError> {
        let req = ReadRequest::ListChunks {
            fs: self.info.id,
            after,
            limit: 1024,
        };
        match self.call_group(g, req).await? {
            MetaResponse::Chunks(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    /// Every slice the filesystem's chunk maps reference, and every slice
    /// queued for deletion, over all groups (a walk; for `strata gc`).
    pub async fn all_slices(&self) -> Result<(Vec<Slice>, Vec<Deletion>), MetaError> {
        let mut live = Vec::new();
        let mut queued = Vec::new();
        for g in self.groups() {
            let mut after = None;
            loop {
                let page = self.list_chunks(g, after).await?;
                let Some(&(ino, idx, _)) = page.last() else {
                    break;
                };
                after = Some((ino, idx));
                live.extend(page.into_iter().flat_map(|(_, _, s)| s));
            }
            let mut after = 0;
            loop {
                let (_, page) = self.garbage_work(g, after, 4096).await?;
                let Some(last) = page.last() else { break };
                after = last.slice;
                queued.extend(page);
            }
        }
        live.retain(|s| s.id != 0);
        Ok((live, queued))
    }
}
