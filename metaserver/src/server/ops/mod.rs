//! Metadata operations of a group's state machine.
//!
//! `apply` runs inside the write transaction of a log batch; each operation
//! validates everything before its first write, so a refused request leaves no
//! trace. `read` answers read-only requests from a read transaction.
//!
//! This file dispatches a request to its operation; the operations live by
//! family: `cluster` (group 0's rows), `namespace`, `rename`, `chunks`,
//! `txn` (cross-group transactions), `garbage` (trash, deletion queue,
//! compaction), `xattr`, `locks`, `snapshot`, `dump`, `quota`.

mod chunks;
mod cluster;
pub(crate) mod dump;
pub(crate) mod garbage;
pub(crate) mod locks;
#[cfg(test)]
mod model_tests;
mod namespace;
pub(crate) mod quota;
mod rename;
pub(crate) mod snapshot;
mod tokens;
pub(crate) mod txn;
pub(crate) mod xattr;

use crate::MetaError;
use crate::request::{LogRequest, MetaResponse, MetaResult, ReadRequest, RenameMode, WriteRequest};
use crate::server::store::{DbError, Rows, RowsMut, key};
use crate::types::*;

use cluster::new_fs_info;
pub(crate) use namespace::get_dir;
use namespace::{lookup, readdir};

/// Bounds of the inodes per partition a filesystem may be formatted with.
pub const MIN_PARTITION_SIZE: u64 = 16;
pub const MAX_PARTITION_SIZE: u64 = 1 << 40;
/// Most partitions one filesystem may have (about 2^30 inodes at the default size).
pub const MAX_PARTITIONS: usize = 1 << 10;
/// Hard links one inode may have.
pub const MAX_LINKS: u32 = 65_000;

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug)]
pub(crate) struct PartState {
    pub(crate) part: Partition,
    pub(crate) next_ino: Ino,
}

/// One group's rows inside the write transaction of a log batch.
pub(crate) struct Ctx<'a, T> {
    pub(crate) t: &'a mut T,
    pub(crate) g: GroupId,
}

pub(crate) type OpResult<T> = Result<Result<T, MetaError>, DbError>;

/// Unwraps the inner result of an `OpResult`, returning a refusal as is.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        }
    };
}
pub(crate) use tri;

/// Applies a log entry, answering a retried client write from the result of
/// its first application.
pub fn apply_logged<T: RowsMut>(
    t: &mut T,
    g: GroupId,
    entry: LogRequest,
) -> Result<MetaResult, DbError> {
    let LogRequest { req, origin, at } = entry;
    let mut remember = None;
    if let Some(o) = origin {
        let answered = t.scan(&key::dedup_prefix(g, o.client), None, usize::MAX)?;
        for (k, _) in answered
            .iter()
            .filter(|(k, _)| key::dedup_seq(k) < o.done_below)
        {
            t.del(k)?;
        }
        let k = key::dedup(g, o.client, o.seq);
        if let Some(first) = t.load::<MetaResult>(&k)? {
            return Ok(first);
        }
        remember = Some(k);
    }
    // Refused changes are not remembered either: the retry (same sequence
    // number) is decided afresh once the freeze is over.
    if let Some(refused) = snapshot::freeze_refusal(&*t, g, &req, at)? {
        return Ok(Err(refused));
    }
    let result = apply(t, g, req)?;
    // A busy answer changed nothing and the client sends the request again
    // under a new sequence number; remembering it would only take space.
    if let Some(k) = remember
        && !matches!(result, Err(MetaError::Busy(_)))
    {
        t.put(&k, &result)?;
    }
    Ok(result)
}

pub fn apply<T: RowsMut>(t: &mut T, g: GroupId, req: WriteRequest) -> Result<MetaResult, DbError> {
    if let Some(fs) = req.changes_fs()
        && snapshot::read_only(&*t, g, fs)?
    {
        return Ok(Err(MetaError::ReadOnly(format!(
            "filesystem {fs} is a snapshot"
        ))));
    }
    let mut c = Ctx { t, g };
    use WriteRequest as R;
    let res = match req {
        R::RegisterNode { id, addr, groups } => c.register_node(id, addr, groups)?,
        R::UnregisterNode { id } => c.unregister_node(id)?,
        R::CreateFs {
            name,
            uuid,
            storage,
            s3_endpoint,
            block_size,
            chunk_size,
            partitions,
            now,
        } => {
            let info = new_fs_info(
                name,
                uuid,
                storage,
                s3_endpoint,
                block_size,
                chunk_size,
                now,
            );
            c.create_fs(info, partitions, DEFAULT_PARTITION_SIZE)?
        }
        R::CreateFsSized {
            name,
            uuid,
            storage,
            s3_endpoint,
            block_size,
            chunk_size,
            partitions,
            partition_size,
            borrowed,
            now,
        } => {
            let mut info = new_fs_info(
                name,
                uuid,
                storage,
                s3_endpoint,
                block_size,
                chunk_size,
                now,
            );
            info.borrowed = borrowed;
            c.create_fs(info, partitions, partition_size)?
        }
        R::AddPartition { fs, group, seen } => c.add_partition(fs, group, seen)?,
        R::MarkFsReady { name } => c.mark_ready(&name)?,
        R::SetBorrowed { name, borrowed } => c.set_borrowed(&name, borrowed)?,
        R::AllocSliceIds { fs, count } => c.alloc_slices(fs, count)?,
        R::InitPartition { part, chunk_size } => c.init_partition(part, chunk_size)?,
        R::InitRoot {
            fs,
            mode,
            uid,
            gid,
            now,
        } => c.init_root(fs, mode, uid, gid, now)?,
        R::SetAttr { fs, ino, set, now } => c.setattr(fs, ino, set, now)?.map(MetaResponse::Inode),
        R::Create {
            fs,
            parent,
            name,
            new,
            now,
        } => c
            .create(fs, (parent, &name), new, now)?
            .map(|(inode, dir)| MetaResponse::created(inode, dir)),
        R::ReserveInos { fs, count } => c
            .reserve_inos(fs, count)?
            .map(|(start, count)| MetaResponse::Inos { start, count }),
        R::CreateFile {
            fs,
            parent,
            name,
            ino,
            new,
            slices,
            end,
            now,
            written,
        } => c.create_file(fs, (parent, &name), ino, new, (slices, end), (now, written))?,
        R::Link {
            fs,
            ino,
            parent,
            name,
            now,
        } => c
            .link(fs, ino, parent, &name, now)?
            .map(|(inode, dir)| MetaResponse::created(inode, dir)),
        R::Unlink {
            fs,
            parent,
            name,
            now,
        } => c.unlink(fs, parent, &name, now)?,
        R::Rmdir {
            fs,
            parent,
            name,
            now,
        } => c.rmdir(fs, parent, &name, now)?,
        R::Rename {
            fs,
            parent,
            name,
            new_parent,
            new_name,
            now,
        } => c.rename(
            fs,
            (parent, &name),
            (new_parent, &new_name),
            RenameMode::Replace,
            now,
        )?,
        R::RenameWith {
            fs,
            parent,
            name,
            new_parent,
            new_name,
            mode,
            now,
        } => c.rename(fs, (parent, &name), (new_parent, &new_name), mode, now)?,
        R::PunchHole {
            fs,
            ino,
            offset,
            len,
            now,
        } => c
            .punch_hole(fs, ino, offset, len, now)?
            .map(MetaResponse::Inode),
        R::SetLock { fs, ino, lock, now } => c.set_lock(fs, ino, lock, now)?,
        R::ReserveAppend {
            fs,
            ino,
            at_least,
            len,
            now,
        } => c.reserve_append(fs, ino, at_least, len, now)?,
        R::CreateSnapshot {
            source,
            name,
            now,
            loading,
            path,
        } => c.create_snapshot(&source, &name, now, loading, path)?,
        R::CopyInodes {
            from,
            to,
            root,
            inos,
            nlink,
        } => c.copy_inodes(from, to, root, inos, nlink)?,
        R::SnapshotReady { source, name } => c.snapshot_ready(&source, &name)?,
        R::DeleteSnapshot { source, name } => c.delete_snapshot(&source, &name)?,
        R::SetFreeze { fs, until } => c.set_freeze(fs, until)?,
        R::LoadRows { fs, layout, rows } => c.load_rows(fs, layout, rows)?,
        R::SealSnapshot { fs, source } => c.seal_snapshot(fs, source)?,
        R::SetQuota {
            fs,
            dir,
            max_bytes,
            max_inodes,
            counted,
        } => c.set_quota(fs, dir, (max_bytes, max_inodes), counted)?,
        R::DeleteQuota { fs, dir } => c.delete_quota(fs, dir)?,
        R::SetQuotaUsage { fs, dir, used } => c.set_quota_usage(fs, dir, used)?,
        R::SetOwnerQuota {
            fs,
            subject,
            max_bytes,
            max_inodes,
        } => c.set_owner_quota(fs, subject, (max_bytes, max_inodes))?,
        R::DeleteOwnerQuota { fs, subject } => c.delete_owner_quota(fs, subject)?,
        R::QuotaBudget { fs, subject, op } => c.quota_budget(fs, subject, op)?,
        R::RaiseSliceFloor { fs, at_least } => c.raise_slice_floor(fs, at_least)?,
        R::CopyFs { from, to } => c.copy_fs(from, to)?,
        R::DropFs { fs, source } => c.drop_fs(fs, source)?,
        R::ReleaseLocks {
            fs,
            ino,
            client,
            owner,
        } => c.release_locks(fs, ino, client, owner)?,
        R::RenewLocks {
            fs,
            client,
            inos,
            until,
        } => c.renew_locks(fs, client, &inos, until)?,
        R::WriteSlices {
            fs,
            ino,
            slices,
            end,
            now,
        } => c
            .write_slices(fs, ino, slices, end, now)?
            .map(|(before, inode, crowded)| MetaResponse::WrittenOver {
                before,
                inode,
                crowded,
            }),
        R::TxPrepare {
            fs,
            tx,
            coord,
            participants,
            steps,
            now,
        } => c.tx_prepare(fs, tx, coord, participants, steps, now)?,
        R::TxCommit { fs, tx, steps, now } => c.tx_commit(fs, tx, steps, now)?,
        R::TxResolve { tx } => c.tx_resolve(tx)?,
        R::TxFinish {
            fs,
            tx,
            commit,
            now,
        } => c.tx_finish(fs, tx, commit, now)?,
        R::TxForget { tx } => c.tx_forget(tx)?,
        R::TxBegin {
            fs,
            tx,
            participants,
            now,
        } => c.tx_begin(fs, tx, participants, now)?,
        R::SetTrashDays { fs, days } => c.set_trash_days(fs, days)?,
        R::HoldInodes {
            fs,
            inos,
            until,
            now,
        } => c.hold(fs, &inos, until, now)?,
        R::PurgeTrash { fs, now, limit } => c.purge_trash(fs, now, limit)?,
        R::AckDeletions { fs, slices } => c.ack_deletions(fs, &slices)?,
        R::RestoreTrash { fs, ino, now } => c
            .restore_trash(fs, ino, now)?
            .map(|(inode, dir)| MetaResponse::created(inode, dir)),
        R::CompactChunk {
            fs,
            ino,
            index,
            old,
            new,
            now,
        } => c.compact_chunk(fs, ino, index, &old, new, now)?,
        R::SetXattr {
            fs,
            ino,
            name,
            value,
            mode,
            now,
        } => c.set_xattr(fs, ino, &name, value, mode, now)?,
        R::RemoveXattr { fs, ino, name, now } => c.remove_xattr(fs, ino, &name, now)?,
        R::PutToken { token } => c.put_token(token)?,
        R::RevokeToken { id } => c.revoke_token(&id)?,
    };
    Ok(res)
}

/// Answers a read: every read is a few point lookups or one bounded page.
pub fn read_rows<T: Rows>(t: &T, g: GroupId, req: ReadRequest) -> Result<MetaResult, DbError> {
    use ReadRequest as R;
    Ok(match req {
        R::GetClusterMap => Ok(MetaResponse::ClusterMap(
            t.load(&key::cluster(g))?.unwrap_or_default(),
        )),
        R::GetFs { name } => match t.load::<FsInfo>(&key::fs(g, &name))? {
            Some(fs) => Ok(MetaResponse::Fs(fs)),
            None => Err(MetaError::FsNotFound(name)),
        },
        R::ListFs => {
            let rows = t.scan(&key::fs_prefix(g), None, usize::MAX)?;
            let mut list = Vec::with_capacity(rows.len());
            for (_, v) in rows {
                list.push(crate::server::store::decode(&v)?);
            }
            Ok(MetaResponse::FsList(list))
        }
        R::ListPartitions { fs } => {
            let rows = t.scan(&key::partition_prefix(g, fs), None, usize::MAX)?;
            let mut list = Vec::with_capacity(rows.len());
            for (_, v) in rows {
                list.push(crate::server::store::decode(&v)?);
            }
            Ok(MetaResponse::Partitions(list))
        }
        R::Lookup { fs, parent, name } => lookup(t, g, fs, parent, &name)?,
        R::GetAttr { fs, ino } => match t.load::<Inode>(&key::inode(g, fs, ino))? {
            Some(i) => Ok(MetaResponse::Inode(i)),
            None => Err(MetaError::NotFound),
        },
        R::ReadDir {
            fs,
            ino,
            after,
            limit,
        } => readdir(t, g, fs, ino, after, limit)?.map(MetaResponse::Entries),
        R::ReadChunk { fs, ino, index } => Ok(MetaResponse::Slices(
            t.load(&key::chunk(g, fs, ino, index))?.unwrap_or_default(),
        )),
        R::GetAttrAndChunk { fs, ino, index } => match t.load::<Inode>(&key::inode(g, fs, ino))? {
            Some(inode) => Ok(MetaResponse::AttrAndSlices {
                inode,
                slices: t.load(&key::chunk(g, fs, ino, index))?.unwrap_or_default(),
            }),
            None => Err(MetaError::NotFound),
        },
        R::Usage { fs } => Ok(MetaResponse::Usage(
            t.load(&key::usage(g, fs))?.unwrap_or_default(),
        )),
        R::LiveUsage { fs } => {
            let all: Usage = t.load(&key::usage(g, fs))?.unwrap_or_default();
            let trash: Usage = t.load(&key::trash_usage(g, fs))?.unwrap_or_default();
            Ok(MetaResponse::Usage(Usage {
                inodes: all.inodes.saturating_sub(trash.inodes),
                bytes: all.bytes.saturating_sub(trash.bytes),
            }))
        }
        R::ListInodes { fs, after, limit } => {
            let prefix = key::inode(g, fs, 0);
            let prefix = &prefix[..prefix.len() - 8];
            let rows = t.scan(
                prefix,
                Some(&key::inode(g, fs, after)),
                limit.clamp(1, MAX_READDIR) as usize,
            )?;
            let mut list = Vec::with_capacity(rows.len());
            for (_, v) in rows {
                list.push(crate::server::store::decode(&v)?);
            }
            Ok(MetaResponse::Inodes(list))
        }
        R::ListIntents => Ok(MetaResponse::Intents(crate::server::ops::txn::pending(
            t, g,
        )?)),
        R::GarbageWork {
            fs,
            now,
            after,
            limit,
        } => return garbage::garbage_work(t, g, fs, now, after, limit),
        R::ListTrash { fs, after, limit } => return garbage::list_trash(t, g, fs, after, limit),
        R::ListChunks { fs, after, limit } => {
            return garbage::list_chunks(t, g, fs, after, limit);
        }
        R::GetXattr { fs, ino, name } => return xattr::get(t, g, fs, ino, &name),
        R::ListXattrs { fs, ino } => return xattr::list(t, g, fs, ino),
        R::GetLock { fs, ino, lock, now } => return locks::get(t, g, fs, ino, lock, now),
        R::ListSnapshots { source } => return snapshot::list(t, g, &source),
        R::DumpRows {
            fs,
            kind,
            after,
            limit,
        } => return dump::dump_rows(t, g, fs, kind, after, limit),
        R::GetTrashDays { fs } => Ok(MetaResponse::TrashDays(garbage::trash_days(t, g, fs)?)),
        R::ListTokens => return tokens::tokens(t, g, None),
        R::GetToken { id } => return tokens::tokens(t, g, Some(&id)),
        R::ListQuotas { fs, dir } => return quota::list_quotas(t, g, fs, dir),
        R::QuotaBook { fs } => return quota::quota_book(t, g, fs),
        R::CountOwned { fs, subject } => return quota::count_owned(t, g, fs, subject),
    })
}
