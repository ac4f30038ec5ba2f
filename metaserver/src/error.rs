//! `MetaError`: what a metadata request can fail with, on both sides of the
//! wire, and the errno each becomes.

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// Errors of the metadata layer. They cross the wire, so they carry strings, not sources.
#[derive(
    thiserror::Error, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, strum::IntoStaticStr,
)]
pub enum MetaError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("file name too long (at most 255 bytes)")]
    NameTooLong,
    #[error("too many links")]
    TooManyLinks,
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("operation not permitted: {0}")]
    NotPermitted(String),
    #[error("no space: {0}")]
    NoSpace(String),
    /// The operation touches an inode of another group; the client retries it
    /// as a cross-group transaction. Never reaches a filesystem call.
    #[error("operation spans groups: {0}")]
    CrossGroup(String),
    #[error("filesystem {0:?} not found; create it with `strata format`")]
    FsNotFound(String),
    #[error("filesystem {0:?} already exists")]
    FsExists(String),
    #[error("this node is not the leader of group {group}; leader is {leader:?}")]
    NotLeader {
        group: u32,
        leader: Option<(NodeId, String)>,
    },
    #[error("group {0} is not hosted by this node")]
    NoSuchGroup(u32),
    #[error("metaserver unavailable: {0}")]
    Unavailable(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("metaserver storage error: {0}")]
    Storage(String),
    // New variants go last: results are stored (dedup rows) and travel as bincode.
    /// A cross-group transaction holds a lock on what the operation touches;
    /// nothing was changed, and the client tries again shortly.
    #[error("busy: {0}")]
    Busy(String),
    /// The transaction was aborted (by recovery, or a failed step elsewhere).
    #[error("transaction aborted")]
    TxAborted,
    /// Every inode partition of the filesystem in this group is used up; the
    /// client adds a partition and tries again.
    #[error("no free inode number in this group's partitions")]
    PartitionsFull,
    /// The extended attribute asked for does not exist.
    #[error("no such extended attribute")]
    NoXattr,
    /// An extended attribute (or all of an inode's) over the size limit.
    #[error("extended attribute too large: {0}")]
    TooBig(String),
    /// Another owner holds a lock in the way.
    #[error("the range is locked by another owner")]
    WouldBlock,
    /// A snapshot of the filesystem is being taken: the change waits and is
    /// sent again (same sequence number) until the freeze lifts.
    #[error("the filesystem is frozen while a snapshot is taken")]
    Frozen,
    /// The filesystem is a snapshot: it does not change.
    #[error("read-only filesystem: {0}")]
    ReadOnly(String),
    /// The metaserver does not let this client in (who it is, or how it
    /// connected); retrying changes nothing.
    #[error("the metaserver refused this client: {0}")]
    Denied(String),
    /// A size beyond `MAX_FILE_SIZE`.
    #[error("file too large: {0}")]
    FileTooBig(String),
    /// A directory quota (of the directory or one above) would be exceeded.
    #[error("disk quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The change would move what a directory holds from one quota's
    /// reach to another's, which this kind of change cannot carry (as
    /// XFS and ext4 project quotas answer); `mv` copies instead.
    #[error("crosses a quota boundary: {0}")]
    QuotaBoundary(String),
    /// This group's share of a global quota is used up: the client asks
    /// the quota's home group to lend `need` or more, then sends the
    /// change again (decision 60).
    #[error(
        "the share of {subject}'s quota in this group is used up ({need:?} more needed from group {home})"
    )]
    QuotaBudget {
        fs: crate::types::FsId,
        subject: crate::types::QuotaSubject,
        home: crate::types::GroupId,
        need: crate::types::Usage,
    },
    /// A global quota is full only counting what it lent other groups:
    /// the client asks them to give back what they do not use, then sends
    /// the change again.
    #[error("{subject}'s quota is full unless other groups give back what they do not use")]
    QuotaLent {
        fs: crate::types::FsId,
        subject: crate::types::QuotaSubject,
    },
    /// Never sent by a metaserver: the inode is one this client created
    /// without sending the create yet, and the metaserver then refused
    /// it (decision 71). ESTALE makes the kernel look its name up again.
    #[error("stale file handle: {0}")]
    Stale(String),
}

impl MetaError {
    /// The errno a filesystem call should return for this error.
    pub fn errno(&self) -> i32 {
        match self {
            MetaError::NotFound | MetaError::FsNotFound(_) => libc_errno::ENOENT,
            MetaError::Exists | MetaError::FsExists(_) => libc_errno::EEXIST,
            MetaError::NotDir => libc_errno::ENOTDIR,
            MetaError::IsDir => libc_errno::EISDIR,
            MetaError::NotEmpty => libc_errno::ENOTEMPTY,
            MetaError::NameTooLong => libc_errno::ENAMETOOLONG,
            MetaError::TooManyLinks => libc_errno::EMLINK,
            MetaError::Invalid(_) => libc_errno::EINVAL,
            MetaError::NotPermitted(_) => libc_errno::EPERM,
            MetaError::NoSpace(_) | MetaError::PartitionsFull => libc_errno::ENOSPC,
            MetaError::CrossGroup(_) => libc_errno::EXDEV,
            MetaError::Busy(_) | MetaError::TxAborted => libc_errno::EAGAIN,
            MetaError::NoXattr => libc_errno::ENODATA,
            MetaError::TooBig(_) => libc_errno::E2BIG,
            MetaError::WouldBlock => libc_errno::EAGAIN,
            MetaError::ReadOnly(_) => libc_errno::EROFS,
            MetaError::Denied(_) => libc_errno::EACCES,
            MetaError::FileTooBig(_) => libc_errno::EFBIG,
            MetaError::QuotaExceeded(_) => libc_errno::EDQUOT,
            MetaError::QuotaBoundary(_) => libc_errno::EXDEV,
            MetaError::QuotaBudget { .. } | MetaError::QuotaLent { .. } => libc_errno::EDQUOT,
            MetaError::Stale(_) => libc_errno::ESTALE,
            _ => libc_errno::EIO,
        }
    }

    /// Worth retrying on another node or after a pause.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            MetaError::NotLeader { .. } | MetaError::Unavailable(_)
        )
    }
}

/// Linux errno values, kept here so this crate needs no libc dependency.
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const EAGAIN: i32 = 11;
    pub const EACCES: i32 = 13;
    pub const EXDEV: i32 = 18;
    pub const EEXIST: i32 = 17;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const ENOSPC: i32 = 28;
    pub const EMLINK: i32 = 31;
    pub const ENAMETOOLONG: i32 = 36;
    pub const EDQUOT: i32 = 122;
    pub const ENOTEMPTY: i32 = 39;
    pub const ENODATA: i32 = 61;
    pub const E2BIG: i32 = 7;
    pub const ESTALE: i32 = 116;
    pub const EROFS: i32 = 30;
    pub const EFBIG: i32 = 27;
}
