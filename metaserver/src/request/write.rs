//! Writes: proposed to a group's Raft log and applied by its state machine.

use serde::{Deserialize, Serialize};

use crate::types::*;

/// A change to one group's rows: the payload of its Raft log entries.
/// Applied once per replica, in log order; a retried one (same client
/// origin) is answered from the first application. The log stores it with
/// the tags of `log_tags`, not its declaration order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, strum::IntoStaticStr)]
pub enum WriteRequest {
    // ---- group 0: nodes, filesystems, partitions, ids (`server::ops::cluster`) ----
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
    /// `CreateFs` with the number of inodes per partition. (`CreateFs` stays
    /// so log entries written before it was added still apply.)
    CreateFsSized {
        name: String,
        uuid: String,
        storage: String,
        s3_endpoint: Option<String>,
        block_size: u32,
        chunk_size: u32,
        partitions: u32,
        partition_size: u64,
        /// `strata load`: the dumped filesystem's blocks this one reads.
        borrowed: Vec<BorrowedBlocks>,
        now: Timestamp,
    },
    MarkFsReady {
        name: String,
    },
    /// Group 0: adds a partition in `group` for `fs` unless that group has
    /// more than `seen` partitions already (another client added one).
    /// Answers every partition of `fs`.
    AddPartition {
        fs: FsId,
        group: GroupId,
        seen: u32,
    },
    /// Reserves `count` consecutive slice ids.
    AllocSliceIds {
        fs: FsId,
        count: u64,
    },
    /// Group 0: the blocks filesystem `name`, being loaded, borrows.
    SetBorrowed {
        name: String,
        borrowed: Vec<BorrowedBlocks>,
    },
    /// Group 0: slice ids of `fs` are allocated from `at_least` on.
    RaiseSliceFloor {
        fs: FsId,
        at_least: SliceId,
    },

    // ---- partition groups: names and attributes (`server::ops::namespace`, `rename`) ----
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
        /// Encoded in place, as its fields were before they were one struct.
        new: NewInode,
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
    /// `Rename` with renameat2's flags.
    RenameWith {
        fs: FsId,
        parent: Ino,
        name: Vec<u8>,
        new_parent: Ino,
        new_name: Vec<u8>,
        mode: RenameMode,
        now: Timestamp,
    },

    // ---- file contents (`server::ops::chunks`) ----
    /// Adds written slices to the chunk map and raises the size to at least `end`.
    WriteSlices {
        fs: FsId,
        ino: Ino,
        slices: Vec<(u32, Slice)>,
        end: u64,
        now: Timestamp,
    },
    /// Makes `[offset, offset + len)` of a file read as zeros (fallocate's
    /// PUNCH_HOLE and ZERO_RANGE); the size does not change.
    PunchHole {
        fs: FsId,
        ino: Ino,
        offset: u64,
        len: u64,
        now: Timestamp,
    },
    /// O_APPEND: reserves `len` bytes at the end of the file (no lower than
    /// `at_least`, where this client's own uncommitted writes end) by
    /// growing it; answers where they start. Appends of different clients
    /// get ranges that do not overlap.
    ReserveAppend {
        fs: FsId,
        ino: Ino,
        at_least: u64,
        len: u64,
        now: Timestamp,
    },

    // ---- cross-group transactions (`server::ops::txn`) ----
    /// The coordinator records a transaction as begun, before any participant
    /// prepares. `TxCommit` commits only a begun, undecided transaction, so a
    /// commit arriving after recovery aborted and forgot it is refused.
    TxBegin {
        fs: FsId,
        tx: TxId,
        participants: Vec<GroupId>,
        now: Timestamp,
    },
    /// A participant checks its steps, locks what they touch and records an
    /// intent; inodes to create are created now (unreachable until commit).
    TxPrepare {
        fs: FsId,
        tx: TxId,
        coord: GroupId,
        participants: Vec<GroupId>,
        steps: Vec<TxStep>,
        now: Timestamp,
    },
    /// The coordinator checks and applies its steps and records the decision,
    /// in one entry: this is the transaction's commit point.
    TxCommit {
        fs: FsId,
        tx: TxId,
        steps: Vec<TxStep>,
        now: Timestamp,
    },
    /// The coordinator's decision; records "aborted" if none was made yet.
    TxResolve {
        tx: TxId,
    },
    /// A participant applies (or drops) its prepared steps and unlocks.
    TxFinish {
        fs: FsId,
        tx: TxId,
        commit: bool,
        now: Timestamp,
    },
    /// The coordinator forgets a decision every participant has carried out.
    TxForget {
        tx: TxId,
    },

    // ---- garbage: trash, deletion queue, compaction (`server::ops::garbage`) ----
    /// Partition group: days a file whose last link went stays in the trash
    /// (0: only while a client holds it open, and a minute's grace).
    SetTrashDays {
        fs: FsId,
        days: u32,
    },
    /// Inodes this client has open stay out of the trash purge until
    /// `until` (renewed while open; sent before unlinking one); an `until`
    /// not after `now` lets them go.
    HoldInodes {
        fs: FsId,
        inos: Vec<Ino>,
        until: Timestamp,
        now: Timestamp,
    },
    /// Deletes up to `limit` trashed inodes due at `now`, queuing their slices.
    PurgeTrash {
        fs: FsId,
        now: Timestamp,
        limit: u32,
    },
    /// Drops deletion-queue entries whose objects are gone.
    AckDeletions {
        fs: FsId,
        slices: Vec<SliceId>,
    },
    /// Replaces the first `old.len()` slices of a chunk with `new` if they are
    /// still exactly `old`; otherwise queues `new` for deletion instead.
    CompactChunk {
        fs: FsId,
        ino: Ino,
        index: u32,
        old: Vec<Slice>,
        new: Slice,
        now: Timestamp,
    },
    /// Links a trashed inode back under the name it was removed from.
    RestoreTrash {
        fs: FsId,
        ino: Ino,
        now: Timestamp,
    },

    // ---- extended attributes (`server::ops::xattr`) ----
    /// Sets an extended attribute; `mode` says whether it must exist or not.
    SetXattr {
        fs: FsId,
        ino: Ino,
        name: Vec<u8>,
        value: Vec<u8>,
        mode: XattrMode,
        now: Timestamp,
    },
    RemoveXattr {
        fs: FsId,
        ino: Ino,
        name: Vec<u8>,
        now: Timestamp,
    },

    // ---- file locks (`server::ops::locks`) ----
    /// Takes (or with `LockKind::Unlock` drops) a lock; answers WouldBlock if
    /// another owner's live lock is in the way.
    SetLock {
        fs: FsId,
        ino: Ino,
        lock: FileLock,
        now: Timestamp,
    },
    /// Drops every lock of `client` on `ino` (of `owner` only, if given).
    ReleaseLocks {
        fs: FsId,
        ino: Ino,
        client: u64,
        owner: Option<u64>,
    },
    /// Extends the leases of `client`'s locks on `inos` to `until`.
    RenewLocks {
        fs: FsId,
        client: u64,
        inos: Vec<Ino>,
        until: Timestamp,
    },

    // ---- access tokens (`server::ops::tokens`) ----
    /// Group 0: records a new token (refused if its id is taken).
    PutToken {
        token: Token,
    },
    /// Group 0: forgets a token; connections using it lose their rights
    /// at their next check.
    RevokeToken {
        id: String,
    },

    // ---- snapshots, dump and load (`server::ops::snapshot`, `dump`) ----
    /// Group 0: registers snapshot `name` of `source` (filesystem
    /// `SOURCE@NAME`, same blocks, the source's partitions), not ready yet.
    CreateSnapshot {
        source: String,
        name: String,
        now: Timestamp,
        /// `strata load` registers the snapshots of a filesystem it is
        /// still loading (not ready yet).
        loading: bool,
        /// The directory the snapshot is of, if not the whole filesystem.
        path: Option<String>,
    },
    /// Group 0: marks a snapshot whose groups all hold their copy ready.
    SnapshotReady {
        source: String,
        name: String,
    },
    /// Group 0: forgets a snapshot whose groups dropped their copy.
    DeleteSnapshot {
        source: String,
        name: String,
    },
    /// Partition group: until `until` (leader clock; None lifts it) changes
    /// to `fs` wait (answer Frozen) and new cross-group transactions abort
    /// (Busy), so a snapshot sees one cut of every group.
    SetFreeze {
        fs: FsId,
        until: Option<Timestamp>,
    },
    /// Partition group: copies this group's part of filesystem `from`
    /// (inodes, entries, chunk maps, xattrs; not the trash) to `to`, and
    /// counts the slices `to` now shares.
    CopyFs {
        from: FsId,
        to: FsId,
    },
    /// Partition group: copies inodes `inos` of `from` (with their entries,
    /// chunk maps and xattrs) to snapshot `to`, for a snapshot of the tree
    /// under `root`: entries' and subdirectories' references to `root`
    /// become references to the snapshot's root (inode 1), `root` itself
    /// is left to the caller, and `nlink` overrides the link counts of
    /// files also linked from outside the tree.
    CopyInodes {
        from: FsId,
        to: FsId,
        root: Ino,
        inos: Vec<Ino>,
        nlink: Vec<(Ino, u32)>,
    },
    /// Partition group: drops snapshot `fs` of `source` here, releasing its
    /// references to shared slices.
    DropFs {
        fs: FsId,
        source: FsId,
    },
    /// Partition group: writes rows of a filesystem being loaded (not
    /// ready yet), counting usage and moving inode allocation past them.
    LoadRows {
        fs: FsId,
        /// The filesystem whose partitions place the rows: `fs` itself, or
        /// for a snapshot being loaded, its source.
        layout: FsId,
        rows: Vec<TreeRow>,
    },
    /// Partition group: snapshot `fs` of `source`, loaded here by `LoadRows`,
    /// becomes read-only and its slices are counted as shared.
    SealSnapshot {
        fs: FsId,
        source: FsId,
    },

    // ---- quotas (`server::ops::quota`) ----
    /// Group of `dir`: sets its limits. A new quota starts from `counted`
    /// (what the client found below the directory); an existing one keeps
    /// its usage.
    SetQuota {
        fs: FsId,
        dir: Ino,
        max_bytes: Option<u64>,
        max_inodes: Option<u64>,
        counted: Usage,
    },
    /// Group of `dir`: removes its quota.
    DeleteQuota {
        fs: FsId,
        dir: Ino,
    },
    /// Group of `dir`: replaces its usage by a recount (`quota check --repair`).
    SetQuotaUsage {
        fs: FsId,
        dir: Ino,
        used: Usage,
    },
    /// The home group (the root's): sets a user's or group's limits,
    /// keeping the usage of an existing quota (a new one starts empty; the
    /// client then sets what it counted with `QuotaBudget`).
    SetOwnerQuota {
        fs: FsId,
        subject: QuotaSubject,
        max_bytes: Option<u64>,
        max_inodes: Option<u64>,
    },
    /// The home group: removes a user's or group's quota.
    DeleteOwnerQuota {
        fs: FsId,
        subject: QuotaSubject,
    },
    /// Moves budget of a global quota between its home and the groups
    /// holding shares of it (decision 60).
    QuotaBudget {
        fs: FsId,
        subject: QuotaSubject,
        op: BudgetOp,
    },

    // ---- a client's own inode numbers: creates that travel with their first writes ----
    /// Partition group: reserves up to `count` inode numbers of one of its
    /// partitions for the asking client, which names them in `CreateFile`
    /// (decision 71). Answers `Inos`; numbers never used are just skipped.
    ReserveInos {
        fs: FsId,
        count: u32,
    },
    /// Creates regular file `parent/name` as inode `ino` (reserved with
    /// `ReserveInos` from a partition of this group, and never used), and
    /// adds its first written slices as `WriteSlices` would: one log entry
    /// for a small file's create, write and close. Answers `FileCreated`.
    CreateFile {
        fs: FsId,
        parent: Ino,
        name: Vec<u8>,
        ino: Ino,
        new: NewInode,
        slices: Vec<(u32, Slice)>,
        end: u64,
        /// When the file was created.
        now: Timestamp,
        /// When the last of the slices was written (the file's mtime).
        written: Timestamp,
    },
}

/// One step of lending a global quota's budget (`WriteRequest::QuotaBudget`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum BudgetOp {
    /// At the home: lends group `to` at least `need`, up to `want` if the
    /// limit leaves room; answers `Budget(lent)`.
    Lend {
        to: GroupId,
        need: Usage,
        want: Usage,
    },
    /// In a share's group: adds what the home lent.
    Add { amount: Usage },
    /// In a share's group: gives back the budget it does not use; answers
    /// `Budget(given back)`.
    Return,
    /// At the home: takes back what a share gave back.
    Unlend { amount: Usage },
    /// In a share's group: starts (or restarts) the share with `used`
    /// counted and as much budget (setting a quota, `quota check --repair`).
    SetShare { home: GroupId, used: Usage },
    /// In a share's group: drops the share (its quota is gone).
    DropShare,
    /// At the home: what the home's own inodes use, and what it has lent
    /// (setting a quota, `quota check --repair`).
    SetHome { local: Usage, lent: Usage },
}

/// What a rename does to an existing target.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameMode {
    /// Replace it (plain rename).
    Replace,
    /// Fail with Exists (RENAME_NOREPLACE).
    NoReplace,
    /// Swap the two entries; the target must exist (RENAME_EXCHANGE).
    Exchange,
}

/// What `SetXattr` requires of the attribute's current state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrMode {
    /// Create or replace.
    Any,
    /// Fail with Exists if it exists (XATTR_CREATE).
    Create,
    /// Fail with NoXattr if it does not exist (XATTR_REPLACE).
    Replace,
}

/// Names a cross-group transaction; chosen at random by the client.
pub type TxId = u64;

/// One change a transaction makes in one group. Each is checked when the group
/// prepares (or, for the coordinator, commits) and applied at commit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum TxStep {
    /// A new inode in this group; its number is picked from this group's partitions.
    CreateInode {
        /// Encoded in place, as its fields were before they were one struct.
        new: NewInode,
        parent: Ino,
    },
    /// `parent/name -> ino`; `replace` is the inode the name must point to
    /// now (`None`: the name must be free).
    PutDentry {
        parent: Ino,
        name: Vec<u8>,
        ino: Ino,
        kind: FileType,
        replace: Option<Ino>,
    },
    /// Removes `parent/name`, which must point to `ino`.
    DelDentry {
        parent: Ino,
        name: Vec<u8>,
        ino: Ino,
    },
    /// One more link to a file (hard link).
    AddLink { ino: Ino },
    /// A renamed inode: its ctime, and for a directory its parent pointer.
    Moved { ino: Ino, new_parent: Ino },
    /// Drops one link; a directory must be empty and goes at once. `dir`
    /// says which kind the caller saw, so a changed kind fails the check.
    DropLink { ino: Ino, dir: bool },
    /// A directory whose entries changed: mtime/ctime, and nlink by `nlink`.
    TouchDir { ino: Ino, nlink: i32 },
}

/// A transaction prepared in a group and not finished yet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct IntentInfo {
    pub tx: TxId,
    pub fs: FsId,
    pub coord: GroupId,
    pub participants: Vec<GroupId>,
    pub prepared: Timestamp,
}

impl WriteRequest {
    /// The filesystem a change to a file tree applies to (None for cluster,
    /// transaction-control and snapshot-management requests).
    pub fn changes_fs(&self) -> Option<FsId> {
        use WriteRequest as R;
        match self {
            R::SetAttr { fs, .. }
            | R::Create { fs, .. }
            | R::CreateFile { fs, .. }
            | R::Link { fs, .. }
            | R::Unlink { fs, .. }
            | R::Rmdir { fs, .. }
            | R::Rename { fs, .. }
            | R::RenameWith { fs, .. }
            | R::WriteSlices { fs, .. }
            | R::TxPrepare { fs, .. }
            | R::TxCommit { fs, .. }
            | R::TxBegin { fs, .. }
            | R::SetXattr { fs, .. }
            | R::RemoveXattr { fs, .. }
            | R::PunchHole { fs, .. }
            | R::ReserveAppend { fs, .. }
            | R::CompactChunk { fs, .. }
            | R::RestoreTrash { fs, .. }
            | R::HoldInodes { fs, .. }
            | R::PurgeTrash { fs, .. } => Some(*fs),
            _ => None,
        }
    }

    /// Requests that free space or finish what was begun (removals,
    /// releases, transactions under way, lock renewals): a node short of
    /// disk still takes them (`server::disk_room`).
    pub fn frees_or_finishes(&self) -> bool {
        use WriteRequest as R;
        matches!(
            self,
            R::Unlink { .. }
                | R::Rmdir { .. }
                | R::PurgeTrash { .. }
                | R::AckDeletions { .. }
                | R::ReleaseLocks { .. }
                | R::RenewLocks { .. }
                | R::TxCommit { .. }
                | R::TxResolve { .. }
                | R::TxFinish { .. }
                | R::TxForget { .. }
                | R::DeleteSnapshot { .. }
                | R::DropFs { .. }
                | R::UnregisterNode { .. }
                | R::RevokeToken { .. }
                | R::DeleteQuota { .. }
                | R::DeleteOwnerQuota { .. }
        )
    }

    /// Requests that finish a transaction already under way: they pass a
    /// snapshot's freeze, which waits for them.
    pub fn settles_tx(&self) -> bool {
        matches!(self, WriteRequest::TxCommit { .. })
    }

    /// Requests that start a cross-group transaction: a freeze makes them
    /// fail (Busy), so the client aborts and retries the whole operation.
    pub fn starts_tx(&self) -> bool {
        matches!(
            self,
            WriteRequest::TxBegin { .. } | WriteRequest::TxPrepare { .. }
        )
    }
}
