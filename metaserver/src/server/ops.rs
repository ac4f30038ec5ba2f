//! Metadata operations of a group's state machine.
//!
//! `apply` runs inside the write transaction of a log batch; each operation
//! validates everything before its first write, so a refused request leaves no
//! trace. `read` answers read-only requests from a read transaction.

use std::collections::HashSet;

use crate::MetaError;
use crate::request::{LogRequest, MetaRequest, MetaResponse, MetaResult, RenameMode};
use crate::server::store::{Rows, RowsMut, StoreError, key};
use crate::server::{dump, garbage, locks, snapshot, xattr};
use crate::types::*;

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

pub(crate) type OpResult<T> = Result<Result<T, MetaError>, StoreError>;

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
) -> Result<MetaResult, StoreError> {
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

pub fn apply<T: RowsMut>(
    t: &mut T,
    g: GroupId,
    req: MetaRequest,
) -> Result<MetaResult, StoreError> {
    if let Some(fs) = req.changes_fs()
        && snapshot::read_only(&*t, g, fs)?
    {
        return Ok(Err(MetaError::ReadOnly(format!(
            "filesystem {fs} is a snapshot"
        ))));
    }
    let mut c = Ctx { t, g };
    use MetaRequest as R;
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
            kind,
            mode,
            uid,
            gid,
            rdev,
            symlink,
            now,
        } => c
            .create(fs, parent, &name, kind, mode, uid, gid, rdev, symlink, now)?
            .map(|(inode, dir)| MetaResponse::created(inode, dir)),
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
        read => return read_rows(&*c.t, g, read),
    };
    Ok(res)
}

/// Answers a read-only request.
pub fn read_rows<T: Rows>(t: &T, g: GroupId, req: MetaRequest) -> Result<MetaResult, StoreError> {
    use MetaRequest as R;
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
        R::ListIntents => Ok(MetaResponse::Intents(crate::server::txn::pending(t, g)?)),
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
        other => Err(MetaError::Invalid(format!(
            "request {other:?} must go through the log"
        ))),
    })
}

fn lookup<T: Rows>(
    t: &T,
    g: GroupId,
    fs: FsId,
    parent: Ino,
    name: &[u8],
) -> OpResult<MetaResponse> {
    tri!(validate_lookup_name(name));
    let dir = tri!(get_dir(t, g, fs, parent)?);
    if name == b"." {
        return Ok(Ok(MetaResponse::Inode(dir)));
    }
    let d = if name == b".." {
        Dentry {
            ino: dir.parent,
            kind: FileType::Dir,
        }
    } else {
        match t.load::<Dentry>(&key::dentry(g, fs, parent, name))? {
            Some(d) => d,
            None => return Ok(Err(MetaError::NotFound)),
        }
    };
    match t.load::<Inode>(&key::inode(g, fs, d.ino))? {
        Some(i) => Ok(Ok(MetaResponse::Inode(i))),
        // The client asks the inode's own group.
        None => Ok(Ok(MetaResponse::Remote(d))),
    }
}

fn validate_lookup_name(name: &[u8]) -> Result<(), MetaError> {
    if name == b"." || name == b".." {
        return Ok(());
    }
    validate_name(name)
}

pub(crate) fn get_dir<T: Rows>(t: &T, g: GroupId, fs: FsId, ino: Ino) -> OpResult<Inode> {
    match t.load::<Inode>(&key::inode(g, fs, ino))? {
        None => Ok(Err(MetaError::NotFound)),
        Some(i) if i.kind != FileType::Dir => Ok(Err(MetaError::NotDir)),
        Some(i) => Ok(Ok(i)),
    }
}

fn readdir<T: Rows>(
    t: &T,
    g: GroupId,
    fs: FsId,
    ino: Ino,
    after: Option<Vec<u8>>,
    limit: u32,
) -> OpResult<Vec<DirEntry>> {
    tri!(get_dir(t, g, fs, ino)?);
    let prefix = key::dentry_prefix(g, fs, ino);
    let after_key = after.map(|a| key::dentry(g, fs, ino, &a));
    let rows = t.scan(
        &prefix,
        after_key.as_deref(),
        limit.clamp(1, MAX_READDIR) as usize,
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        let dentry: Dentry = crate::server::store::decode(&v)?;
        let attr = t.load::<Inode>(&key::inode(g, fs, dentry.ino))?;
        out.push(DirEntry {
            name: k[prefix.len()..].to_vec(),
            dentry,
            attr,
        });
    }
    Ok(Ok(out))
}

impl<T: RowsMut> Ctx<'_, T> {
    fn register_node(
        &mut self,
        id: NodeId,
        addr: String,
        groups: Vec<GroupId>,
    ) -> Result<MetaResult, StoreError> {
        let k = key::cluster(self.g);
        let mut map: ClusterMap = self.t.load(&k)?.unwrap_or_default();
        map.nodes.insert(id, addr);
        for gid in groups {
            let members = map.groups.entry(gid).or_default();
            if !members.contains(&id) {
                members.push(id);
            }
        }
        self.t.put(&k, &map)?;
        Ok(Ok(MetaResponse::Ok))
    }

    fn unregister_node(&mut self, id: NodeId) -> Result<MetaResult, StoreError> {
        let k = key::cluster(self.g);
        let mut map: ClusterMap = self.t.load(&k)?.unwrap_or_default();
        map.nodes.remove(&id);
        for members in map.groups.values_mut() {
            members.retain(|m| *m != id);
        }
        self.t.put(&k, &map)?;
        Ok(Ok(MetaResponse::Ok))
    }

    pub(crate) fn next_counter(
        &mut self,
        name: &str,
        count: u64,
        first: u64,
    ) -> Result<u64, StoreError> {
        let k = key::counter(self.g, name);
        let cur: u64 = self.t.load(&k)?.unwrap_or(first);
        self.t.put(&k, &(cur + count))?;
        Ok(cur)
    }

    fn create_fs(
        &mut self,
        mut info: FsInfo,
        partitions: u32,
        partition_size: u64,
    ) -> Result<MetaResult, StoreError> {
        let k = key::fs(self.g, &info.name);
        if let Some(existing) = self.t.load::<FsInfo>(&k)? {
            if existing.ready {
                return Ok(Err(MetaError::FsExists(info.name)));
            }
            return Ok(Ok(MetaResponse::Fs(existing)));
        }
        if info.name.is_empty()
            || info.name.len() > 63
            || !info
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Ok(Err(MetaError::Invalid(format!(
                "filesystem name {:?}: use 1 to 63 letters, digits, '-' or '_'",
                info.name
            ))));
        }
        if !info.block_size.is_power_of_two()
            || info.block_size < 64 << 10
            || !info.chunk_size.is_multiple_of(info.block_size)
            || info.chunk_size < info.block_size
        {
            return Ok(Err(MetaError::Invalid(format!(
                "block size {} / chunk size {}: the block size must be a power of two of at least 64 KiB and divide the chunk size",
                info.block_size, info.chunk_size
            ))));
        }
        let map: ClusterMap = self.t.load(&key::cluster(self.g))?.unwrap_or_default();
        let groups: Vec<GroupId> = map
            .groups
            .keys()
            .copied()
            .filter(|&g| g != CLUSTER_GROUP)
            .collect();
        if groups.is_empty() {
            return Ok(Err(MetaError::Unavailable(
                "the cluster has no partition groups yet".into(),
            )));
        }
        if !(MIN_PARTITION_SIZE..=MAX_PARTITION_SIZE).contains(&partition_size) {
            return Ok(Err(MetaError::Invalid(format!(
                "{partition_size} inodes per partition: use {MIN_PARTITION_SIZE} to {MAX_PARTITION_SIZE}"
            ))));
        }
        info.id = self.next_counter("fs", 1, 1)? as FsId;
        for i in 0..partitions.max(1) {
            self.new_partition(info.id, groups[i as usize % groups.len()], partition_size)?;
        }
        self.t.put(&k, &info)?;
        Ok(Ok(MetaResponse::Fs(info)))
    }

    /// Records partition number `next` of `fs`, right after the last one.
    fn new_partition(&mut self, fs: FsId, group: GroupId, size: u64) -> Result<(), StoreError> {
        let id = self.next_counter(&format!("part:{fs}"), 1, 0)? as PartitionId;
        let start = self
            .partitions(fs)?
            .iter()
            .map(|p| p.end)
            .max()
            .unwrap_or(1);
        let part = Partition {
            fs,
            id,
            start,
            end: start + size,
            group,
        };
        self.t.put(&key::partition(self.g, fs, id), &part)
    }

    pub(crate) fn partitions(&self, fs: FsId) -> Result<Vec<Partition>, StoreError> {
        self.t
            .scan(&key::partition_prefix(self.g, fs), None, usize::MAX)?
            .into_iter()
            .map(|(_, v)| crate::server::store::decode(&v))
            .collect()
    }

    fn add_partition(
        &mut self,
        fs: FsId,
        group: GroupId,
        seen: u32,
    ) -> Result<MetaResult, StoreError> {
        let parts = self.partitions(fs)?;
        let Some(first) = parts.first() else {
            return Ok(Err(MetaError::Invalid(format!(
                "filesystem {fs} has no partitions"
            ))));
        };
        if parts.iter().filter(|p| p.group == group).count() as u32 <= seen {
            if parts.len() >= MAX_PARTITIONS {
                return Ok(Err(MetaError::NoSpace(format!(
                    "the filesystem has {MAX_PARTITIONS} inode partitions, the most it may have"
                ))));
            }
            let size = first.end - first.start;
            self.new_partition(fs, group, size)?;
        }
        Ok(Ok(MetaResponse::Partitions(self.partitions(fs)?)))
    }

    fn mark_ready(&mut self, name: &str) -> Result<MetaResult, StoreError> {
        let k = key::fs(self.g, name);
        let Some(mut info) = self.t.load::<FsInfo>(&k)? else {
            return Ok(Err(MetaError::FsNotFound(name.into())));
        };
        info.ready = true;
        self.t.put(&k, &info)?;
        Ok(Ok(MetaResponse::Fs(info)))
    }

    /// `strata load`: which objects the filesystem being loaded borrows.
    fn set_borrowed(
        &mut self,
        name: &str,
        borrowed: Vec<BorrowedBlocks>,
    ) -> Result<MetaResult, StoreError> {
        let k = key::fs(self.g, name);
        let Some(mut info) = self.t.load::<FsInfo>(&k)? else {
            return Ok(Err(MetaError::FsNotFound(name.into())));
        };
        if info.ready {
            return Ok(Err(MetaError::Invalid(format!(
                "{name} is in use: what it borrows is set only while it is loaded"
            ))));
        }
        info.borrowed = borrowed;
        self.t.put(&k, &info)?;
        Ok(Ok(MetaResponse::Fs(info)))
    }

    fn alloc_slices(&mut self, fs: FsId, count: u64) -> Result<MetaResult, StoreError> {
        if count == 0 || count > 1 << 20 {
            return Ok(Err(MetaError::Invalid(format!(
                "slice id batch of {count}"
            ))));
        }
        // Slice id 0 means "hole", so real ids start at 1.
        let start = self.next_counter(&format!("slice:{fs}"), count, 1)?;
        Ok(Ok(MetaResponse::SliceIds { start }))
    }

    fn init_partition(
        &mut self,
        part: Partition,
        chunk_size: u32,
    ) -> Result<MetaResult, StoreError> {
        self.t.put(
            &key::counter(self.g, &format!("chunk_size:{}", part.fs)),
            &chunk_size,
        )?;
        let k = key::part_state(self.g, part.fs, part.id);
        if self.t.load::<PartState>(&k)?.is_none() {
            // Ino 1 is the root; it is created by InitRoot, never allocated.
            let next_ino = part.start.max(ROOT_INO + 1);
            self.t.put(&k, &PartState { part, next_ino })?;
        }
        Ok(Ok(MetaResponse::Ok))
    }

    fn init_root(
        &mut self,
        fs: FsId,
        mode: u32,
        uid: u32,
        gid: u32,
        now: Timestamp,
    ) -> Result<MetaResult, StoreError> {
        let k = key::inode(self.g, fs, ROOT_INO);
        if let Some(root) = self.t.load::<Inode>(&k)? {
            return Ok(Ok(MetaResponse::Inode(root)));
        }
        let root = Inode::new(
            ROOT_INO,
            NewInode::plain(FileType::Dir, mode, uid, gid),
            ROOT_INO,
            now,
        );
        self.t.put(&k, &root)?;
        self.add_usage(fs, 1, 0)?;
        Ok(Ok(MetaResponse::Inode(root)))
    }

    pub(crate) fn add_usage(
        &mut self,
        fs: FsId,
        inodes: i64,
        bytes: i64,
    ) -> Result<(), StoreError> {
        let k = key::usage(self.g, fs);
        let mut u: Usage = self.t.load(&k)?.unwrap_or_default();
        u.inodes = u.inodes.saturating_add_signed(inodes);
        u.bytes = u.bytes.saturating_add_signed(bytes);
        self.t.put(&k, &u)
    }

    pub(crate) fn inode(&self, fs: FsId, ino: Ino) -> OpResult<Inode> {
        if let Some(i) = self.t.load(&key::inode(self.g, fs, ino))? {
            return Ok(Ok(i));
        }
        if self.owns(fs, ino)? {
            Ok(Err(MetaError::NotFound))
        } else {
            Ok(Err(MetaError::CrossGroup(format!(
                "inode {ino} is not in group {}",
                self.g
            ))))
        }
    }

    /// Whether `ino` falls in one of this group's partitions.
    fn owns(&self, fs: FsId, ino: Ino) -> Result<bool, StoreError> {
        for (_, v) in self
            .t
            .scan(&key::part_state_prefix(self.g, fs), None, usize::MAX)?
        {
            if crate::server::store::decode::<PartState>(&v)?
                .part
                .contains(ino)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Busy if a prepared transaction holds a lock on one of these inodes or
    /// entries. One seek when no transaction is pending, which is the rule.
    pub(crate) fn check_unlocked(
        &self,
        fs: FsId,
        inodes: &[Ino],
        dentries: &[(Ino, &[u8])],
    ) -> OpResult<()> {
        if self.t.scan(&key::lock_prefix(self.g), None, 1)?.is_empty() {
            return Ok(Ok(()));
        }
        for &ino in inodes {
            if self
                .t
                .load_raw(&key::inode_lock(self.g, fs, ino))?
                .is_some()
            {
                return Ok(Err(MetaError::Busy(format!(
                    "inode {ino} is part of a pending cross-group operation"
                ))));
            }
        }
        for (parent, name) in dentries {
            if self
                .t
                .load_raw(&key::dentry_lock(self.g, fs, *parent, name))?
                .is_some()
            {
                return Ok(Err(MetaError::Busy(format!(
                    "an entry of directory {parent} is part of a pending cross-group operation"
                ))));
            }
        }
        Ok(Ok(()))
    }

    pub(crate) fn save(&mut self, fs: FsId, inode: &Inode) -> Result<(), StoreError> {
        self.t.put(&key::inode(self.g, fs, inode.ino), inode)
    }

    /// A new inode number, from the parent's partition when it has room so the
    /// entry and the inode stay together.
    pub(crate) fn alloc_ino(&mut self, fs: FsId, near: Ino) -> OpResult<Ino> {
        let rows = self
            .t
            .scan(&key::part_state_prefix(self.g, fs), None, usize::MAX)?;
        let mut parts = Vec::with_capacity(rows.len());
        for (_, v) in rows {
            parts.push(crate::server::store::decode::<PartState>(&v)?);
        }
        parts.sort_by_key(|p| !p.part.contains(near));
        for mut p in parts {
            if p.next_ino < p.part.end {
                let ino = p.next_ino;
                p.next_ino += 1;
                self.t.put(&key::part_state(self.g, fs, p.part.id), &p)?;
                return Ok(Ok(ino));
            }
        }
        Ok(Err(MetaError::PartitionsFull))
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        fs: FsId,
        parent: Ino,
        name: &[u8],
        kind: FileType,
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u32,
        symlink: Option<Vec<u8>>,
        now: Timestamp,
    ) -> OpResult<(Inode, Inode)> {
        tri!(validate_name(name));
        if let Some(target) = &symlink
            && (target.is_empty() || target.len() > MAX_SYMLINK_LEN)
        {
            return Ok(Err(MetaError::Invalid(format!(
                "symlink target of {} bytes (1 to {MAX_SYMLINK_LEN} allowed)",
                target.len()
            ))));
        }
        if (kind == FileType::Symlink) != symlink.is_some() {
            return Ok(Err(MetaError::Invalid(
                "a symlink needs a target, and only a symlink".into(),
            )));
        }
        let mut dir = tri!(get_dir(&*self.t, self.g, fs, parent)?);
        if dir.nlink == 0 {
            return Ok(Err(MetaError::NotFound));
        }
        let dkey = key::dentry(self.g, fs, parent, name);
        if self.t.load_raw(&dkey)?.is_some() {
            return Ok(Err(MetaError::Exists));
        }
        tri!(self.check_unlocked(fs, &[parent], &[(parent, name)])?);
        if kind == FileType::Dir && dir.nlink >= MAX_LINKS {
            return Ok(Err(MetaError::TooManyLinks));
        }
        let ino = tri!(self.alloc_ino(fs, parent)?);
        // BSD group semantics under a setgid directory: the entry takes the
        // directory's group, and subdirectories inherit the setgid bit.
        let (gid, mode) = if dir.mode & 0o2000 != 0 {
            (
                dir.gid,
                if kind == FileType::Dir {
                    mode | 0o2000
                } else {
                    mode
                },
            )
        } else {
            (gid, mode)
        };
        let spec = NewInode {
            kind,
            mode,
            uid,
            gid,
            rdev,
            symlink,
        };
        let inode = Inode::new(ino, spec, parent, now);
        self.t.put(&dkey, &Dentry { ino, kind })?;
        self.save(fs, &inode)?;
        if kind == FileType::Dir {
            dir.nlink += 1;
        }
        dir.mtime = now;
        dir.ctime = now;
        self.save(fs, &dir)?;
        self.add_usage(fs, 1, inode.size as i64)?;
        Ok(Ok((inode, dir)))
    }

    fn link(
        &mut self,
        fs: FsId,
        ino: Ino,
        parent: Ino,
        name: &[u8],
        now: Timestamp,
    ) -> OpResult<(Inode, Inode)> {
        tri!(validate_name(name));
        let mut inode = tri!(self.inode(fs, ino)?);
        if inode.kind == FileType::Dir {
            return Ok(Err(MetaError::NotPermitted(
                "hard links to directories are not allowed".into(),
            )));
        }
        if inode.nlink == 0 {
            // In the trash: only `strata trash restore` brings it back.
            return Ok(Err(MetaError::NotFound));
        }
        if inode.nlink >= MAX_LINKS {
            return Ok(Err(MetaError::TooManyLinks));
        }
        let mut dir = tri!(get_dir(&*self.t, self.g, fs, parent)?);
        if dir.nlink == 0 {
            return Ok(Err(MetaError::NotFound));
        }
        let dkey = key::dentry(self.g, fs, parent, name);
        if self.t.load_raw(&dkey)?.is_some() {
            return Ok(Err(MetaError::Exists));
        }
        tri!(self.check_unlocked(fs, &[parent, ino], &[(parent, name)])?);
        self.t.put(
            &dkey,
            &Dentry {
                ino,
                kind: inode.kind,
            },
        )?;
        inode.nlink += 1;
        inode.ctime = now;
        self.save(fs, &inode)?;
        dir.mtime = now;
        dir.ctime = now;
        self.save(fs, &dir)?;
        Ok(Ok((inode, dir)))
    }

    /// Drops one link of `inode`, which `from` (parent, name) named when
    /// known. A directory goes at once; a file whose last link went moves to
    /// the trash (see `garbage`). Returns whether the last link went.
    pub(crate) fn drop_link(
        &mut self,
        fs: FsId,
        mut inode: Inode,
        from: Option<(Ino, &[u8])>,
        now: Timestamp,
    ) -> Result<(Inode, bool), StoreError> {
        inode.nlink = inode.nlink.saturating_sub(1);
        inode.ctime = now;
        if inode.kind == FileType::Dir {
            inode.nlink = 0;
            self.delete_inode(fs, &inode, now)?;
            return Ok((inode, true));
        }
        self.save(fs, &inode)?;
        if inode.nlink == 0 {
            self.trash(fs, &inode, from, now)?;
            return Ok((inode, true));
        }
        Ok((inode, false))
    }

    fn unlink(
        &mut self,
        fs: FsId,
        parent: Ino,
        name: &[u8],
        now: Timestamp,
    ) -> Result<MetaResult, StoreError> {
        tri!(validate_name(name));
        let mut dir = tri!(get_dir(&*self.t, self.g, fs, parent)?);
        let dkey = key::dentry(self.g, fs, parent, name);
        let Some(d) = self.t.load::<Dentry>(&dkey)? else {
            return Ok(Err(MetaError::NotFound));
        };
        if d.kind == FileType::Dir {
            return Ok(Err(MetaError::IsDir));
        }
        let inode = tri!(self.inode(fs, d.ino)?);
        tri!(self.check_unlocked(fs, &[d.ino], &[(parent, name)])?);
        self.t.del(&dkey)?;
        let (inode, removed) = self.drop_link(fs, inode, Some((parent, name)), now)?;
        dir.mtime = now;
        dir.ctime = now;
        self.save(fs, &dir)?;
        Ok(Ok(MetaResponse::in_dirs(
            MetaResponse::Unlinked { inode, removed },
            vec![dir],
        )))
    }

    /// Empty: no entries, and none about to be added by a prepared
    /// transaction (that answers Busy: it may still abort).
    pub(crate) fn empty_dir(&self, fs: FsId, ino: Ino) -> OpResult<bool> {
        if !self
            .t
            .scan(&key::dentry_prefix(self.g, fs, ino), None, 1)?
            .is_empty()
        {
            return Ok(Ok(false));
        }
        if !self
            .t
            .scan(&key::dentry_lock_prefix(self.g, fs, ino), None, 1)?
            .is_empty()
        {
            return Ok(Err(MetaError::Busy(format!(
                "directory {ino} has a pending cross-group entry"
            ))));
        }
        Ok(Ok(true))
    }

    fn rmdir(
        &mut self,
        fs: FsId,
        parent: Ino,
        name: &[u8],
        now: Timestamp,
    ) -> Result<MetaResult, StoreError> {
        if name == b"." {
            return Ok(Err(MetaError::Invalid("cannot remove '.'".into())));
        }
        if name == b".." {
            return Ok(Err(MetaError::NotEmpty));
        }
        tri!(validate_name(name));
        let mut dir = tri!(get_dir(&*self.t, self.g, fs, parent)?);
        let dkey = key::dentry(self.g, fs, parent, name);
        let Some(d) = self.t.load::<Dentry>(&dkey)? else {
            return Ok(Err(MetaError::NotFound));
        };
        if d.kind != FileType::Dir {
            return Ok(Err(MetaError::NotDir));
        }
        let child = tri!(self.inode(fs, d.ino)?);
        if !tri!(self.empty_dir(fs, d.ino)?) {
            return Ok(Err(MetaError::NotEmpty));
        }
        tri!(self.check_unlocked(fs, &[d.ino], &[(parent, name)])?);
        self.t.del(&dkey)?;
        let (inode, removed) = self.drop_link(fs, child, None, now)?;
        dir.nlink = dir.nlink.saturating_sub(1);
        dir.mtime = now;
        dir.ctime = now;
        self.save(fs, &dir)?;
        Ok(Ok(MetaResponse::in_dirs(
            MetaResponse::Unlinked { inode, removed },
            vec![dir],
        )))
    }

    fn setattr(&mut self, fs: FsId, ino: Ino, set: SetAttr, now: Timestamp) -> OpResult<Inode> {
        let mut inode = tri!(self.inode(fs, ino)?);
        if let Some(size) = set.size {
            match inode.kind {
                FileType::File => {}
                FileType::Dir => return Ok(Err(MetaError::IsDir)),
                _ => {
                    return Ok(Err(MetaError::Invalid(
                        "only regular files can be truncated".into(),
                    )));
                }
            }
            if size > i64::MAX as u64 {
                return Ok(Err(MetaError::Invalid(format!("file size {size}"))));
            }
            let chunk_size = self.chunk_size(fs)?;
            if size < inode.size {
                self.cut_chunks(fs, ino, size, inode.size, chunk_size, now)?;
            }
            self.add_usage(fs, 0, size as i64 - inode.size as i64)?;
            let old_size = inode.size;
            inode.size = size;
            inode.mtime = now;
            self.trash_resized(fs, &inode, old_size)?;
        }
        if let Some(mode) = set.mode {
            inode.mode = mode & 0o7777;
        }
        if let Some(uid) = set.uid {
            inode.uid = uid;
        }
        if let Some(gid) = set.gid {
            inode.gid = gid;
        }
        if let Some(t) = set.atime {
            inode.atime = t;
        }
        if let Some(t) = set.mtime {
            inode.mtime = t;
        }
        inode.ctime = set.ctime.unwrap_or(now);
        self.save(fs, &inode)?;
        Ok(Ok(inode))
    }

    fn reserve_append(
        &mut self,
        fs: FsId,
        ino: Ino,
        at_least: u64,
        len: u64,
        now: Timestamp,
    ) -> Result<MetaResult, StoreError> {
        let mut inode = tri!(self.inode(fs, ino)?);
        if inode.kind != FileType::File {
            return Ok(Err(MetaError::Invalid(
                "only regular files are appended to".into(),
            )));
        }
        tri!(self.check_unlocked(fs, &[ino], &[])?);
        let offset = inode.size.max(at_least);
        let Some(end) = offset.checked_add(len).filter(|&e| e <= i64::MAX as u64) else {
            return Ok(Err(MetaError::Invalid(
                "append beyond the largest file size".into(),
            )));
        };
        let old_size = inode.size;
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
    fn punch_hole(
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
        let mut at = offset;
        while at < end {
            let idx = at / cs;
            let pos = at % cs;
            let n = (end - at).min(cs - pos);
            let k = key::chunk(self.g, fs, ino, idx as u32);
            // A chunk with no slices reads as zeros already.
            if let Some(mut slices) = self.t.load::<Vec<Slice>>(&k)? {
                slices.push(Slice {
                    id: 0,
                    pos: pos as u32,
                    len: n as u32,
                });
                self.t.put(&k, &slices)?;
            }
            at += n;
        }
        inode.mtime = now;
        inode.ctime = now;
        self.save(fs, &inode)?;
        Ok(Ok(inode))
    }

    /// The chunk size is recorded per partition state so partition groups need not ask group 0.
    pub(crate) fn chunk_size(&self, fs: FsId) -> Result<u64, StoreError> {
        Ok(self
            .t
            .load::<u32>(&key::counter(self.g, &format!("chunk_size:{fs}")))?
            .map(u64::from)
            .unwrap_or(DEFAULT_CHUNK_SIZE as u64))
    }

    /// Hides bytes in [new_size, old_size): whole chunks are dropped, the chunk
    /// holding the new end gets a hole slice over its tail.
    fn cut_chunks(
        &mut self,
        fs: FsId,
        ino: Ino,
        new_size: u64,
        old_size: u64,
        chunk_size: u64,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let first_whole = new_size.div_ceil(chunk_size);
        let last = old_size.div_ceil(chunk_size);
        for idx in first_whole..last {
            let k = key::chunk(self.g, fs, ino, idx as u32);
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

    fn write_slices(
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
        let chunk_size = self.chunk_size(fs)?;
        for (idx, s) in &slices {
            if s.len == 0 || s.pos as u64 + s.len as u64 > chunk_size || s.id == 0 {
                return Ok(Err(MetaError::Invalid(format!(
                    "slice {s:?} does not fit chunk {idx}"
                ))));
            }
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

/// A filesystem record not yet numbered nor ready.
fn new_fs_info(
    name: String,
    uuid: String,
    storage: String,
    s3_endpoint: Option<String>,
    block_size: u32,
    chunk_size: u32,
    now: Timestamp,
) -> FsInfo {
    FsInfo {
        id: 0,
        name,
        uuid,
        storage,
        s3_endpoint,
        block_size,
        chunk_size,
        created: now,
        ready: false,
        borrowed: Vec::new(),
    }
}
