//! Group 0's rows: nodes, filesystems, partitions and id allocators; and a
//! partition group's record of the partitions it holds.

use crate::MetaError;
use crate::request::{MetaResponse, MetaResult};
use crate::server::ops::{Ctx, MAX_PARTITION_SIZE, MAX_PARTITIONS, MIN_PARTITION_SIZE, PartState};
use crate::server::store::{DbError, RowsMut, key};
use crate::types::*;

impl<T: RowsMut> Ctx<'_, T> {
    pub(crate) fn register_node(
        &mut self,
        id: NodeId,
        addr: String,
        groups: Vec<GroupId>,
    ) -> Result<MetaResult, DbError> {
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

    pub(crate) fn unregister_node(&mut self, id: NodeId) -> Result<MetaResult, DbError> {
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
    ) -> Result<u64, DbError> {
        let k = key::counter(self.g, name);
        let cur: u64 = self.t.load(&k)?.unwrap_or(first);
        self.t.put(&k, &(cur + count))?;
        Ok(cur)
    }

    pub(crate) fn create_fs(
        &mut self,
        mut info: FsInfo,
        partitions: u32,
        partition_size: u64,
    ) -> Result<MetaResult, DbError> {
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
    pub(crate) fn new_partition(
        &mut self,
        fs: FsId,
        group: GroupId,
        size: u64,
    ) -> Result<(), DbError> {
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

    pub(crate) fn partitions(&self, fs: FsId) -> Result<Vec<Partition>, DbError> {
        self.t
            .scan(&key::partition_prefix(self.g, fs), None, usize::MAX)?
            .into_iter()
            .map(|(_, v)| crate::server::store::decode(&v))
            .collect()
    }

    pub(crate) fn add_partition(
        &mut self,
        fs: FsId,
        group: GroupId,
        seen: u32,
    ) -> Result<MetaResult, DbError> {
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

    pub(crate) fn mark_ready(&mut self, name: &str) -> Result<MetaResult, DbError> {
        let k = key::fs(self.g, name);
        let Some(mut info) = self.t.load::<FsInfo>(&k)? else {
            return Ok(Err(MetaError::FsNotFound(name.into())));
        };
        info.ready = true;
        self.t.put(&k, &info)?;
        Ok(Ok(MetaResponse::Fs(info)))
    }

    /// `strata load`: which objects the filesystem being loaded borrows.
    pub(crate) fn set_borrowed(
        &mut self,
        name: &str,
        borrowed: Vec<BorrowedBlocks>,
    ) -> Result<MetaResult, DbError> {
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

    pub(crate) fn alloc_slices(&mut self, fs: FsId, count: u64) -> Result<MetaResult, DbError> {
        if count == 0 || count > 1 << 20 {
            return Ok(Err(MetaError::Invalid(format!(
                "slice id batch of {count}"
            ))));
        }
        // Slice id 0 means "hole", so real ids start at 1.
        let start = self.next_counter(&format!("slice:{fs}"), count, 1)?;
        Ok(Ok(MetaResponse::SliceIds { start }))
    }

    pub(crate) fn init_partition(
        &mut self,
        part: Partition,
        chunk_size: u32,
    ) -> Result<MetaResult, DbError> {
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
}

/// A filesystem record not yet numbered nor ready.
pub(crate) fn new_fs_info(
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
