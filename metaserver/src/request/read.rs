//! Reads: answered from a group's state machine, never written to its log.

use serde::{Deserialize, Serialize};

use crate::types::*;

/// A read of one group's rows. The leader answers it from its state
/// machine once it knows that state is current (a read lease or a
/// confirmed heartbeat); it is never proposed to the Raft log, which takes
/// only `WriteRequest`s.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, strum::IntoStaticStr)]
pub enum ReadRequest {
    // ---- group 0: the cluster map, filesystems, partitions ----
    GetClusterMap,
    GetFs {
        name: String,
    },
    ListFs,
    ListPartitions {
        fs: FsId,
    },

    // ---- names, attributes and chunk maps (`server::ops::namespace`, `chunks`) ----
    Lookup {
        fs: FsId,
        parent: Ino,
        name: Vec<u8>,
    },
    GetAttr {
        fs: FsId,
        ino: Ino,
    },
    /// GetAttr and ReadChunk of `index` in one read (an open, which reads
    /// the attributes and is usually followed by a read of the first chunk).
    GetAttrAndChunk {
        fs: FsId,
        ino: Ino,
        index: u32,
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
    Usage {
        fs: FsId,
    },
    /// This group's usage without its trash (what new directories are
    /// placed by; `Usage` counts the trash, as used space does).
    LiveUsage {
        fs: FsId,
    },
    /// Inodes of this group with numbers above `after`, in order (fsck).
    ListInodes {
        fs: FsId,
        after: Ino,
        limit: u32,
    },

    // ---- cross-group transactions (`server::ops::txn`) ----
    /// Transactions waiting in this group: prepared here and not finished,
    /// or begun with this group as coordinator and not decided.
    ListIntents,

    // ---- garbage (`server::ops::garbage`) ----
    /// The filesystem's trash days as this group keeps them.
    GetTrashDays {
        fs: FsId,
    },
    /// How many trashed inodes are due for purging at `now`, and a page
    /// of the deletion queue after slice `after`.
    GarbageWork {
        fs: FsId,
        now: Timestamp,
        after: SliceId,
        limit: u32,
    },
    /// Trashed inodes with numbers above `after`.
    ListTrash {
        fs: FsId,
        after: Ino,
        limit: u32,
    },
    /// Chunk maps of this group after `(ino, index)`, in order (gc).
    ListChunks {
        fs: FsId,
        after: Option<(Ino, u32)>,
        limit: u32,
    },

    // ---- extended attributes and locks (`server::ops::xattr`, `locks`) ----
    /// One extended attribute's value.
    GetXattr {
        fs: FsId,
        ino: Ino,
        name: Vec<u8>,
    },
    /// The names of an inode's extended attributes.
    ListXattrs {
        fs: FsId,
        ino: Ino,
    },
    /// The first live lock of another owner in the way of `lock`.
    GetLock {
        fs: FsId,
        ino: Ino,
        lock: FileLock,
        now: Timestamp,
    },

    // ---- access tokens (`server::ops::tokens`) ----
    /// Group 0: every token (ids, grants, expiry; hashes, not secrets).
    ListTokens,
    /// Group 0: one token by id.
    GetToken {
        id: String,
    },

    // ---- snapshots and dumps (`server::ops::snapshot`, `dump`) ----
    /// Group 0: the snapshots of `source`.
    ListSnapshots {
        source: String,
    },
    /// Partition group: a page of one kind of `fs`'s rows after the
    /// key `after` (as returned with the previous page); files in the
    /// trash are left out.
    DumpRows {
        fs: FsId,
        kind: TreeRowKind,
        after: Option<Vec<u8>>,
        limit: u32,
    },

    // ---- quotas (`server::ops::quota`) ----
    /// Partition group: the quotas of directories held here (`dir`: None),
    /// or those at and above `dir` as far as this group holds its
    /// ancestors, nearest first.
    ListQuotas {
        fs: FsId,
        dir: Option<Ino>,
    },
    /// Partition group: the global quotas' rows here (users' and groups'
    /// quotas at their home, what the home lent, and this group's shares).
    QuotaBook {
        fs: FsId,
    },
    /// Partition group: what this group's live inodes (not in the trash)
    /// of `subject` use: all of them for the root, a user's or a group's.
    CountOwned {
        fs: FsId,
        subject: QuotaSubject,
    },
}

impl ReadRequest {
    /// Reads of a few rows, cheaper to answer than a task hand-off: a leader
    /// within its read lease answers them in the connection's own task.
    pub fn is_point_read(&self) -> bool {
        matches!(
            self,
            ReadRequest::Lookup { .. }
                | ReadRequest::GetAttr { .. }
                | ReadRequest::ReadChunk { .. }
                | ReadRequest::GetAttrAndChunk { .. }
                | ReadRequest::GetXattr { .. }
                | ReadRequest::ListXattrs { .. }
                | ReadRequest::GetLock { .. }
        )
    }
}
