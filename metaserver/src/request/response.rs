//! Answers of a group to a read or a write.

use serde::{Deserialize, Serialize};

use crate::types::*;

use super::IntentInfo;
use crate::MetaError;

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
    /// Lookup: the entry exists but its inode lives in another group.
    Remote(Dentry),
    Inodes(Vec<Inode>),
    /// Inodes a transaction step changed in this group, each with whether it
    /// is gone for good (a dropped last link).
    TxApplied(Vec<(Inode, bool)>),
    /// TxResolve: whether the transaction committed.
    Decision(bool),
    Intents(Vec<IntentInfo>),
    /// A namespace change's answer with the other inodes it changed (the
    /// directories, a moved inode), as they are right after it, so a client
    /// can answer the kernel's next look at them without another round trip.
    InDirs {
        answer: Box<MetaResponse>,
        changed: Vec<Inode>,
    },
    /// WriteSlices: the inode, and chunks whose slice lists grew long enough
    /// to be worth compacting.
    Written {
        inode: Inode,
        crowded: Vec<u32>,
    },
    GarbageWork {
        trash_due: u64,
        deletions: Vec<Deletion>,
    },
    /// How many trashed inodes were purged.
    Purged(u64),
    /// CompactChunk: whether the chunk now holds the new slice.
    Compacted(bool),
    Trash(Vec<TrashEntry>),
    Chunks(Vec<(Ino, u32, Vec<Slice>)>),
    /// GetXattr: the value.
    Xattr(Vec<u8>),
    /// ListXattrs: the names.
    XattrNames(Vec<Vec<u8>>),
    /// GetLock: the lock in the way, if any.
    Lock(Option<FileLock>),
    /// ReserveAppend: where the reserved bytes start, and the inode.
    Reserved {
        offset: u64,
        inode: Inode,
    },
    Snapshots(Vec<SnapshotInfo>),
    Snapshot(SnapshotInfo),
    TrashDays(u32),
    /// A page of `DumpRows` and the cursor for the next (None: the last page).
    Rows {
        rows: Vec<TreeRow>,
        next: Option<Vec<u8>>,
    },
    /// GetAttrAndChunk: the inode and the chunk's slices.
    AttrAndSlices {
        inode: Inode,
        slices: Vec<Slice>,
    },
    /// WriteSlices: as `Written`, with the inode's stamp from just before,
    /// so the writer can tell whether anyone else changed the file since it
    /// last saw it (it then knows what the kernel's cached pages hold).
    /// `Written` stays for answers remembered before this one existed.
    WrittenOver {
        before: ChangeStamp,
        inode: Inode,
        crowded: Vec<u32>,
    },
    /// ListTokens; GetToken (empty when there is no such token).
    Tokens(Vec<Token>),
    /// ListQuotas: directories with a quota, and each one's.
    Quotas(Vec<(Ino, Quota)>),
    /// QuotaBook.
    QuotaBook(QuotaBook),
    /// CountOwned; QuotaBudget's Lend and Return.
    Budget(Usage),
    /// ReserveInos: inode numbers `start..start + count`.
    Inos {
        start: Ino,
        count: u32,
    },
    /// CreateFile.
    FileCreated(Box<FileCreated>),
}

/// The answer to `CreateFile`: the file as created, and how its slices
/// went: the file after them (with chunks crowded as in `WrittenOver`), or
/// why they were refused (a quota): the file then stays, empty.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileCreated {
    pub created: Inode,
    pub written: Result<(Inode, Vec<u32>), MetaError>,
}

/// A group's rows of global quotas (`ReadRequest::QuotaBook`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct QuotaBook {
    /// Users' and groups' quotas whose home is this group.
    pub owners: Vec<(QuotaSubject, Quota)>,
    /// What the home lent other groups, per global quota homed here.
    pub lent: Vec<(QuotaSubject, Usage)>,
    /// This group's shares of global quotas homed elsewhere.
    pub shares: Vec<(QuotaSubject, QuotaShare)>,
}

impl MetaResponse {
    pub fn in_dirs(answer: MetaResponse, changed: Vec<Inode>) -> MetaResponse {
        MetaResponse::InDirs {
            answer: Box::new(answer),
            changed,
        }
    }

    /// A new inode and the directory that holds it.
    pub fn created(inode: Inode, dir: Inode) -> MetaResponse {
        Self::in_dirs(MetaResponse::Inode(inode), vec![dir])
    }

    /// The answer without the other changed inodes, and those.
    pub fn split_changed(self) -> (MetaResponse, Vec<Inode>) {
        match self {
            MetaResponse::InDirs { answer, changed } => (*answer, changed),
            other => (other, Vec::new()),
        }
    }
}
