//! Requests a client sends to one Raft group, and their answers.
//!
//! Writes go through the group's Raft log and are applied by the state machine;
//! reads are served from the state machine after a linearizability check.

use serde::{Deserialize, Serialize};

use crate::types::*;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum MetaRequest {
    // ---- group 0 (cluster) ----
    GetClusterMap,
    /// Records a node and the groups it serves (a one-node cluster does this at bootstrap).
    RegisterNode {
        id: NodeId,
        addr: String,
        groups: Vec<GroupId>,
    },
    /// Removes a node from the cluster map (after it left every group).
    UnregisterNode {
        id: NodeId,
    },
    /// Creates the filesystem record and its partitions. Idempotent while the
    /// filesystem is not ready yet, so an interrupted format can run again.
    CreateFs {
        name: String,
        uuid: String,
        storage: String,
        s3_endpoint: Option<String>,
        block_size: u32,
        chunk_size: u32,
        partitions: u32,
        now: Timestamp,
    },
    MarkFsReady {
        name: String,
    },
    GetFs {
        name: String,
    },
    ListFs,
    ListPartitions {
        fs: FsId,
    },
    /// Reserves `count` consecutive slice ids.
    AllocSliceIds {
        fs: FsId,
        count: u64,
    },

    // ---- partition groups ----
    InitPartition {
        part: Partition,
        chunk_size: u32,
    },
    InitRoot {
        fs: FsId,
        mode: u32,
        uid: u32,
        gid: u32,
        now: Timestamp,
    },
    Lookup {
        fs: FsId,
        parent: Ino,
        name: Vec<u8>,
    },
    GetAttr {
        fs: FsId,
        ino: Ino,
    },
    SetAttr {
        fs: FsId,
        ino: Ino,
        set: SetAttr,
        now: Timestamp,
    },
    /// Creates a file, directory, symlink or special file in `parent`.
    Create {
        fs: FsId,
        parent: Ino,
        name: Vec<u8>,
        kind: FileType,
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u32,
        symlink: Option<Vec<u8>>,
        now: Timestamp,
    },
    Link {
        fs: FsId,
        ino: Ino,
        parent: Ino,
        name: Vec<u8>,
        now: Timestamp,
    },
    Unlink {
        fs: FsId,
        parent: Ino,
        name: Vec<u8>,
        now: Timestamp,
    },
    Rmdir {
        fs: FsId,
        parent: Ino,
        name: Vec<u8>,
        now: Timestamp,
    },
    Rename {
        fs: FsId,
        parent: Ino,
        name: Vec<u8>,
        new_parent: Ino,
        new_name: Vec<u8>,
        now: Timestamp,
    },
    /// Entries of a directory after `after` (exclusive), at most `limit`.
    ReadDir {
        fs: FsId,
        ino: Ino,
        after: Option<Vec<u8>>,
        limit: u32,
    },
    ReadChunk {
        fs: FsId,
        ino: Ino,
        index: u32,
    },
    /// Adds written slices to the chunk map and raises the size to at least `end`.
    WriteSlices {
        fs: FsId,
        ino: Ino,
        slices: Vec<(u32, Slice)>,
        end: u64,
        now: Timestamp,
    },
    Usage {
        fs: FsId,
    },
}

impl MetaRequest {
    /// Reads are answered from the state machine without a log entry.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            MetaRequest::GetClusterMap
                | MetaRequest::GetFs { .. }
                | MetaRequest::ListFs
                | MetaRequest::ListPartitions { .. }
                | MetaRequest::Lookup { .. }
                | MetaRequest::GetAttr { .. }
                | MetaRequest::ReadDir { .. }
                | MetaRequest::ReadChunk { .. }
                | MetaRequest::Usage { .. }
        )
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum MetaResponse {
    Ok,
    ClusterMap(ClusterMap),
    Fs(FsInfo),
    FsList(Vec<FsInfo>),
    Partitions(Vec<Partition>),
    SliceIds {
        start: SliceId,
    },
    Inode(Inode),
    /// The inode that lost a link, and whether it is gone for good.
    Unlinked {
        inode: Inode,
        removed: bool,
    },
    /// Rename: the inode that was replaced at the target, if any.
    Renamed {
        replaced: Option<Inode>,
    },
    Entries(Vec<DirEntry>),
    Slices(Vec<Slice>),
    Usage(Usage),
}

pub type MetaResult<T = MetaResponse> = Result<T, crate::MetaError>;

/// Who sent a write, so a retried write is answered from the first attempt's
/// result instead of being applied twice.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub client: u64,
    pub seq: u64,
    /// Every write of this client below this sequence number has been answered
    /// and will not be retried, so its remembered result can be dropped.
    pub done_below: u64,
}

/// A log entry's payload: the request and, for client writes, its origin.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LogRequest {
    pub req: MetaRequest,
    pub origin: Option<Origin>,
}
