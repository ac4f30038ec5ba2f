//! The metadata model shared by the metaserver, its clients and the wire.

use serde::{Deserialize, Serialize};

pub type FsId = u32;
pub type Ino = u64;
pub type GroupId = u32;
pub type NodeId = u64;
pub type SliceId = u64;
pub type PartitionId = u32;

pub const ROOT_INO: Ino = 1;
/// Group 0 holds the cluster map; partition groups are numbered from 1.
pub const CLUSTER_GROUP: GroupId = 0;
/// Longest name a directory entry may have, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Longest symlink target, in bytes (Linux PATH_MAX).
pub const MAX_SYMLINK_LEN: usize = 4096;
/// Inode ids a partition owns by default.
pub const DEFAULT_PARTITION_SIZE: u64 = 1 << 20;
pub const DEFAULT_BLOCK_SIZE: u32 = 4 << 20;
pub const DEFAULT_CHUNK_SIZE: u32 = 64 << 20;
/// Inode partitions a new filesystem starts with.
pub const DEFAULT_PARTITIONS: u32 = 4;
/// The largest file size: 256 TiB, where a chunk index still fits its u32
/// at the smallest chunk size (64 KiB). Larger sizes fail with EFBIG.
pub const MAX_FILE_SIZE: u64 = 1 << 48;
/// Readdir pages are capped so one answer stays far below the frame limit.
pub const MAX_READDIR: u32 = 4096;
/// Trash days of a filesystem whose groups were never told (formatted
/// before trash existed), and the default of `strata format --trash-days`.
pub const DEFAULT_TRASH_DAYS: u32 = 1;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

/// Seconds and nanoseconds since the Unix epoch; signed so times before 1970 survive.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

impl Timestamp {
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        }
    }

    /// This time plus `d`.
    pub fn plus(self, d: std::time::Duration) -> Self {
        let nsec = self.nsec as u64 + d.subsec_nanos() as u64;
        Timestamp {
            sec: self.sec + d.as_secs() as i64 + (nsec / 1_000_000_000) as i64,
            nsec: (nsec % 1_000_000_000) as u32,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    pub ino: Ino,
    pub kind: FileType,
    /// Permission bits including setuid/setgid/sticky (0o7777); the type lives in `kind`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub rdev: u32,
    pub symlink: Option<Vec<u8>>,
    pub generation: u64,
    pub flags: u32,
    /// For directories: the parent, so `..` resolves without a scan. For
    /// other files: the directory of the link made or moved last (the
    /// creating one for files not renamed since this was kept for them);
    /// a subtree grant reaches a file through it (decision 56).
    pub parent: Ino,
}

/// What of an inode changes whenever its contents do: a client that finds
/// the same stamp again knows the file is as it last saw it (the ctime
/// catches a change whose writer set mtime and size back by hand).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeStamp {
    pub size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
}

/// What a new inode is made of: the caller's part of a create.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NewInode {
    pub kind: FileType,
    /// Permission bits (0o7777); the type is `kind`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Device number of a character or block device.
    pub rdev: u32,
    /// The target, for a symlink and only for one.
    pub symlink: Option<Vec<u8>>,
}

impl NewInode {
    /// A regular file, directory, fifo or socket (no device number, no target).
    pub fn plain(kind: FileType, mode: u32, uid: u32, gid: u32) -> NewInode {
        NewInode {
            kind,
            mode,
            uid,
            gid,
            rdev: 0,
            symlink: None,
        }
    }
}

impl Inode {
    /// Inode `ino` as created at `now` in directory `parent` (the parent
    /// pointer matters for directories only): one link, or two for a
    /// directory; a symlink's size is its target's length.
    pub fn new(ino: Ino, spec: NewInode, parent: Ino, now: Timestamp) -> Inode {
        let NewInode {
            kind,
            mode,
            uid,
            gid,
            rdev,
            symlink,
        } = spec;
        Inode {
            ino,
            kind,
            mode: mode & 0o7777,
            uid,
            gid,
            nlink: if kind == FileType::Dir { 2 } else { 1 },
            size: symlink.as_ref().map_or(0, |s| s.len() as u64),
            atime: now,
            mtime: now,
            ctime: now,
            rdev,
            symlink,
            generation: 0,
            flags: 0,
            parent,
        }
    }

    pub fn stamp(&self) -> ChangeStamp {
        ChangeStamp {
            size: self.size,
            mtime: self.mtime,
            ctime: self.ctime,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dentry {
    pub ino: Ino,
    pub kind: FileType,
}

/// A contiguous run of bytes written at once into one chunk. Slice id 0 is a hole
/// (reads as zeros); truncation uses it to hide bytes beyond the new size.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    pub id: SliceId,
    /// Offset of the slice's first byte inside the chunk.
    pub pos: u32,
    pub len: u32,
}

/// Settings of a filesystem, fixed at format time and kept in group 0.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FsInfo {
    pub id: FsId,
    pub name: String,
    pub uuid: String,
    pub storage: String,
    pub s3_endpoint: Option<String>,
    pub block_size: u32,
    pub chunk_size: u32,
    pub created: Timestamp,
    /// False until every partition and the root directory exist.
    pub ready: bool,
    /// Set on a filesystem made by `strata load`: slices below the last
    /// `BorrowedBlocks::below` are the dumped filesystem's objects (or, for
    /// lower ranges, those it borrowed itself), read under their owner's
    /// uuid and never deleted by this one. Sorted by `below`.
    pub borrowed: Vec<BorrowedBlocks>,
}

/// Blocks a loaded filesystem reads but does not own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BorrowedBlocks {
    /// The uuid the objects are stored under.
    pub uuid: String,
    /// Slices with smaller ids are borrowed.
    pub below: SliceId,
}

impl FsInfo {
    /// The uuid slice `slice`'s objects are stored under.
    pub fn block_owner(&self, slice: SliceId) -> &str {
        self.borrowed
            .iter()
            .find(|b| slice < b.below)
            .map_or(&self.uuid, |b| &b.uuid)
    }

    /// Whether this filesystem may delete slice `slice`'s objects.
    pub fn owns_blocks(&self, slice: SliceId) -> bool {
        self.borrowed.last().is_none_or(|b| slice >= b.below)
    }
}

/// One row of a filesystem's tree, as `strata dump` writes it and `strata
/// load` reads it (`ReadRequest::DumpRows`, `WriteRequest::LoadRows`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum TreeRow {
    Inode(Inode),
    Entry {
        parent: Ino,
        name: Vec<u8>,
        entry: Dentry,
    },
    Chunk {
        ino: Ino,
        index: u32,
        slices: Vec<Slice>,
    },
    Xattr {
        ino: Ino,
        name: Vec<u8>,
        value: Vec<u8>,
    },
}

impl TreeRow {
    /// The inode whose group holds the row (an entry lives with its directory).
    pub fn home(&self) -> Ino {
        match self {
            TreeRow::Inode(i) => i.ino,
            TreeRow::Entry { parent, .. } => *parent,
            TreeRow::Chunk { ino, .. } | TreeRow::Xattr { ino, .. } => *ino,
        }
    }
}

/// The kinds of `TreeRow`, dumped one kind at a time.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeRowKind {
    Inodes,
    Entries,
    Chunks,
    Xattrs,
}

/// A contiguous inode range of one filesystem, hosted by one Raft group.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    pub fs: FsId,
    pub id: PartitionId,
    pub start: Ino,
    /// Exclusive.
    pub end: Ino,
    pub group: GroupId,
}

impl Partition {
    pub fn contains(&self, ino: Ino) -> bool {
        self.start <= ino && ino < self.end
    }
}

/// The partition of `parts` that owns `ino`.
pub fn partition_of(parts: &[Partition], ino: Ino) -> Option<&Partition> {
    parts.iter().find(|p| p.contains(ino))
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct ClusterMap {
    /// node id -> address clients and peers connect to.
    pub nodes: std::collections::BTreeMap<NodeId, String>,
    /// group id -> voter node ids.
    pub groups: std::collections::BTreeMap<GroupId, Vec<NodeId>>,
}

/// Inode and byte counts of one filesystem inside one group.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Usage {
    pub inodes: u64,
    pub bytes: u64,
}

impl Usage {
    pub fn plus(self, o: Usage) -> Usage {
        Usage {
            inodes: self.inodes.saturating_add(o.inodes),
            bytes: self.bytes.saturating_add(o.bytes),
        }
    }

    /// `self` less `o`, each count stopping at zero.
    pub fn minus(self, o: Usage) -> Usage {
        Usage {
            inodes: self.inodes.saturating_sub(o.inodes),
            bytes: self.bytes.saturating_sub(o.bytes),
        }
    }
}

/// A directory's limits and what lies below it (files in the trash not
/// counted). The row lives beside the directory's inode, in its group.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Quota {
    /// Most bytes (the sum of file sizes) below the directory; None: no limit.
    pub max_bytes: Option<u64>,
    /// Most inodes below the directory; None: no limit.
    pub max_inodes: Option<u64>,
    pub used: Usage,
}

/// Whom a quota limits. A directory's quota counts its tree; the root's
/// (the whole filesystem's), a user's and a group's count inodes wherever
/// they are, so every metadata group charges them (decision 60).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QuotaSubject {
    Dir(Ino),
    User(u32),
    Group(u32),
}

impl QuotaSubject {
    /// Counted in every group (the root's, a user's, a group's), not only
    /// in one directory's tree.
    pub fn is_global(&self) -> bool {
        !matches!(self, QuotaSubject::Dir(d) if *d != ROOT_INO)
    }
}

impl std::fmt::Display for QuotaSubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuotaSubject::Dir(d) if *d == ROOT_INO => write!(f, "the filesystem"),
            QuotaSubject::Dir(d) => write!(f, "directory {d}"),
            QuotaSubject::User(u) => write!(f, "uid {u}"),
            QuotaSubject::Group(g) => write!(f, "gid {g}"),
        }
    }
}

/// A group's part of a global quota whose row (its home) is in another
/// group: what the home lent it (`budget`) and what this group's inodes
/// use of it. This group refuses a change that would go past the budget
/// until the home lends more, so the quota holds exactly (decision 60).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct QuotaShare {
    pub home: GroupId,
    pub budget: Usage,
    pub used: Usage,
}

/// A file whose last link went, kept in its group's trash until the
/// filesystem's trash days have passed and no client holds it open.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TrashEntry {
    pub inode: Inode,
    pub deleted: Timestamp,
    /// The directory and name it was removed from (`name` is empty when the
    /// removal crossed groups and only the creating directory is known).
    pub parent: Ino,
    pub name: Vec<u8>,
    /// A client has it open until then (renewed while it stays open).
    pub held_until: Option<Timestamp>,
}

/// A slice whose objects are queued for deletion.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deletion {
    pub slice: SliceId,
    pub len: u32,
    /// When it left the last chunk map: a reader that read the map just
    /// before may still fetch its blocks for a while.
    pub queued: Timestamp,
}

/// A read-only, point-in-time copy of a filesystem's metadata, itself
/// registered as filesystem `SOURCE@NAME` (sharing the source's blocks).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The snapshot's own filesystem id.
    pub id: FsId,
    pub source: FsId,
    pub name: String,
    pub created: Timestamp,
    /// False until every group's copy is done.
    pub ready: bool,
    /// The directory it is of (`/a/b`), or None for the whole filesystem.
    pub path: Option<String>,
}

/// The filesystem name a snapshot is registered under.
pub fn snapshot_fs_name(source: &str, name: &str) -> String {
    format!("{source}@{name}")
}

/// The kind of a file lock.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    Read,
    Write,
    /// In a request: drop the range.
    Unlock,
}

/// A byte-range lock (POSIX fcntl; flock is a lock over the whole file) held
/// by one lock owner of one client, until released or until its lease runs
/// out (its client stopped renewing it: it died).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLock {
    /// The client process (its random id).
    pub client: u64,
    /// The kernel's lock owner within that client.
    pub owner: u64,
    /// Reported by F_GETLK.
    pub pid: u32,
    pub kind: LockKind,
    pub start: u64,
    /// Inclusive; u64::MAX or i64::MAX for "to the end of the file".
    pub end: u64,
    pub expires: Timestamp,
}

impl FileLock {
    pub fn same_owner(&self, other: &FileLock) -> bool {
        (self.client, self.owner) == (other.client, other.owner)
    }

    pub fn overlaps(&self, other: &FileLock) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// Whether `other`, held by someone else, keeps `self` from being taken.
    pub fn conflicts_with(&self, other: &FileLock) -> bool {
        !self.same_owner(other)
            && self.overlaps(other)
            && (self.kind == LockKind::Write || other.kind == LockKind::Write)
    }
}

/// Attributes to change in a setattr; `None` leaves the field alone.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
    pub ctime: Option<Timestamp>,
}

/// One entry of a directory listing, with the child's attributes when its inode
/// lives in the same group (readdirplus without extra round trips).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub dentry: Dentry,
    pub attr: Option<Inode>,
}

/// What a client may do: the grant of its certificate (or token).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(from = "StoredGrant", into = "StoredGrant")]
pub enum Grant {
    /// Everything: format, nodes, snapshots, gc, tokens, every filesystem.
    Admin,
    /// The tree of filesystem `fs` (its inodes, entries, data, locks), and
    /// nothing of the cluster's administration; with `read_only` every
    /// change fails with EROFS (locks and holds on open files excepted);
    /// with `subdir` (an absolute path, `/a/b`) only the tree below that
    /// directory, which the client sees as its root.
    Fs {
        fs: String,
        read_only: bool,
        subdir: Option<String>,
    },
}

/// A grant as token rows, log records and frames encode it: a grant
/// without a subdirectory keeps the encoding it had before subdirectories
/// were added, so tokens made then still read.
#[derive(Serialize, Deserialize, Clone)]
enum StoredGrant {
    Admin,
    Fs {
        fs: String,
        read_only: bool,
    },
    Subtree {
        fs: String,
        read_only: bool,
        subdir: String,
    },
}

impl From<StoredGrant> for Grant {
    fn from(g: StoredGrant) -> Grant {
        match g {
            StoredGrant::Admin => Grant::Admin,
            StoredGrant::Fs { fs, read_only } => Grant::Fs {
                fs,
                read_only,
                subdir: None,
            },
            StoredGrant::Subtree {
                fs,
                read_only,
                subdir,
            } => Grant::Fs {
                fs,
                read_only,
                subdir: Some(subdir),
            },
        }
    }
}

impl From<Grant> for StoredGrant {
    fn from(g: Grant) -> StoredGrant {
        match g {
            Grant::Admin => StoredGrant::Admin,
            Grant::Fs {
                fs,
                read_only,
                subdir: None,
            } => StoredGrant::Fs { fs, read_only },
            Grant::Fs {
                fs,
                read_only,
                subdir: Some(subdir),
            } => StoredGrant::Subtree {
                fs,
                read_only,
                subdir,
            },
        }
    }
}

impl Grant {
    /// The grant's text form, as certificates carry it (their subject's
    /// organization) and tokens show it: `strata:admin`, or
    /// `strata:fs=NAME`, then `:ro` for reading only, then `:dir=/PATH` for
    /// one subtree (the path last: it may hold colons).
    pub fn parse(s: &str) -> Result<Grant, String> {
        let bad = || {
            format!(
                "{s:?} is not a grant (strata:admin, or strata:fs=NAME with :ro and :dir=/PATH as options)"
            )
        };
        let rest = s.strip_prefix("strata:").ok_or_else(bad)?;
        if rest == "admin" {
            return Ok(Grant::Admin);
        }
        let rest = rest.strip_prefix("fs=").ok_or_else(bad)?;
        let (fs, options) = match rest.split_once(':') {
            Some((fs, options)) => (fs, Some(options)),
            None => (rest, None),
        };
        if fs.is_empty() {
            return Err(bad());
        }
        let (read_only, dir) = match options {
            None => (false, None),
            Some("ro") => (true, None),
            Some(o) => match o.strip_prefix("ro:") {
                Some(d) => (true, Some(d)),
                None => (false, Some(o)),
            },
        };
        let subdir = match dir {
            None => None,
            Some(d) => {
                let path = d.strip_prefix("dir=").ok_or_else(bad)?;
                normalize_subdir(path).map_err(|e| format!("{s:?}: {e}"))?
            }
        };
        Ok(Grant::Fs {
            fs: fs.to_string(),
            read_only,
            subdir,
        })
    }
}

/// A grant's subdirectory in its one spelling: absolute, no empty, `.` or
/// `..` components, no trailing slash; None for the whole filesystem (`/`).
pub fn normalize_subdir(path: &str) -> Result<Option<String>, String> {
    let bad = |why: &str| Err(format!("subdirectory {path:?} {why}"));
    let Some(rel) = path.strip_prefix('/') else {
        return bad("must be an absolute path within the filesystem, such as /projects/a");
    };
    let mut out = String::new();
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return bad("may not hold . or ..");
        }
        if part.len() > MAX_NAME_LEN || part.contains('\0') {
            return bad("has a name that is too long or holds NUL");
        }
        out.push('/');
        out.push_str(part);
    }
    Ok((!out.is_empty()).then_some(out))
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grant::Admin => write!(f, "strata:admin"),
            Grant::Fs {
                fs,
                read_only,
                subdir,
            } => {
                write!(f, "strata:fs={fs}")?;
                if *read_only {
                    write!(f, ":ro")?;
                }
                if let Some(d) = subdir {
                    write!(f, ":dir={d}")?;
                }
                Ok(())
            }
        }
    }
}

/// An access token as group 0 keeps it: the SHA-256 of its secret (never
/// the secret itself), what it grants, and until when.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The public half of the token (`strata_ID_SECRET`), naming its row.
    pub id: String,
    pub secret_sha256: Vec<u8>,
    pub grant: Grant,
    pub created: Timestamp,
    /// None: until revoked.
    pub expires: Option<Timestamp>,
}

impl Token {
    /// The prefix of every token's text, `strata_ID_SECRET`.
    pub const PREFIX: &'static str = "strata_";

    /// A new token granting `grant`: its row (id, the secret's hash) and
    /// its text, which holds the secret and is shown once.
    pub fn generate(
        grant: Grant,
        created: Timestamp,
        expires: Option<Timestamp>,
    ) -> (Token, String) {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let text = format!("{}{id}_{secret}", Token::PREFIX);
        let token = Token {
            id,
            secret_sha256: Token::hash(&secret),
            grant,
            created,
            expires,
        };
        (token, text)
    }

    /// The id and secret of a token's text.
    pub fn split(text: &str) -> Result<(&str, &str), String> {
        text.trim()
            .strip_prefix(Token::PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .filter(|(id, secret)| !id.is_empty() && !secret.is_empty())
            .ok_or_else(|| {
                "not a Strata token (strata_ID_SECRET, from `strata token create`)".into()
            })
    }

    pub fn hash(secret: &str) -> Vec<u8> {
        ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
            .as_ref()
            .to_vec()
    }

    /// Whether `secret` is this token's, compared in constant time.
    pub fn matches(&self, secret: &str) -> bool {
        let h = Token::hash(secret);
        h.len() == self.secret_sha256.len()
            && h.iter()
                .zip(&self.secret_sha256)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// Whether the token is past its expiry at `now`.
    pub fn expired(&self, now: Timestamp) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }
}

/// Checks a directory entry name: 1..=255 bytes, no `/` or NUL, not `.` or `..`.
pub fn validate_name(name: &[u8]) -> Result<(), crate::MetaError> {
    if name.is_empty() || name == b"." || name == b".." {
        return Err(crate::MetaError::Invalid(format!(
            "invalid entry name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(crate::MetaError::NameTooLong);
    }
    if name.iter().any(|&b| b == b'/' || b == 0) {
        return Err(crate::MetaError::Invalid(
            "entry names may not contain '/' or NUL".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inodes_route_to_the_partition_owning_their_range() {
        let parts: Vec<Partition> = (0..3)
            .map(|i| Partition {
                fs: 1,
                id: i,
                start: 1 + i as u64 * 100,
                end: 101 + i as u64 * 100,
                group: 1 + i % 2,
            })
            .collect();
        assert_eq!(partition_of(&parts, ROOT_INO).map(|p| p.id), Some(0));
        assert_eq!(partition_of(&parts, 100).map(|p| p.id), Some(0));
        assert_eq!(
            partition_of(&parts, 101).map(|p| (p.id, p.group)),
            Some((1, 2))
        );
        assert_eq!(partition_of(&parts, 300).map(|p| p.id), Some(2));
        assert_eq!(partition_of(&parts, 301), None);
        assert_eq!(partition_of(&parts, 0), None);
    }

    #[test]
    fn grants_read_back_from_their_text() {
        let fs = |read_only, subdir: Option<&str>| Grant::Fs {
            fs: "data".into(),
            read_only,
            subdir: subdir.map(String::from),
        };
        for g in [
            Grant::Admin,
            fs(false, None),
            fs(true, None),
            fs(false, Some("/a")),
            fs(true, Some("/a/b c/d:e")),
        ] {
            assert_eq!(Grant::parse(&g.to_string()), Ok(g));
        }
        assert_eq!(
            Grant::parse("strata:fs=data:ro:dir=/a//b/"),
            Ok(fs(true, Some("/a/b")))
        );
        assert_eq!(Grant::parse("strata:fs=data:dir=/"), Ok(fs(false, None)));
        for bad in [
            "",
            "admin",
            "strata:",
            "strata:fs=",
            "strata:fs=a:rw",
            "strata:root",
            "strata:fs=a:dir=rel",
            "strata:fs=a:dir=/x/../y",
            "strata:fs=a:ro:/x",
            "strata:fs=:dir=/x",
        ] {
            assert!(Grant::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_grant_without_a_subdirectory_keeps_its_old_encoding() {
        // The shape grants had before subdirectories.
        #[derive(Serialize)]
        enum Before {
            #[allow(dead_code)]
            Admin,
            Fs {
                fs: String,
                read_only: bool,
            },
        }
        let cfg = bincode::config::standard();
        let old = bincode::serde::encode_to_vec(
            Before::Fs {
                fs: "data".into(),
                read_only: true,
            },
            cfg,
        )
        .unwrap();
        let g = Grant::Fs {
            fs: "data".into(),
            read_only: true,
            subdir: None,
        };
        assert_eq!(bincode::serde::encode_to_vec(&g, cfg).unwrap(), old);
        let (back, _): (Grant, usize) = bincode::serde::decode_from_slice(&old, cfg).unwrap();
        assert_eq!(back, g);
        let sub = Grant::Fs {
            fs: "data".into(),
            read_only: true,
            subdir: Some("/a".into()),
        };
        let bytes = bincode::serde::encode_to_vec(&sub, cfg).unwrap();
        let (back, _): (Grant, usize) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, sub);
    }

    #[test]
    fn a_token_is_its_secret_and_nothing_else() {
        let grant = Grant::Fs {
            fs: "d".into(),
            read_only: false,
            subdir: None,
        };
        let (token, text) = Token::generate(grant, Timestamp::default(), None);
        let (id, secret) = Token::split(&text).unwrap();
        assert_eq!(id, token.id);
        assert!(token.matches(secret));
        assert!(!token.matches(&secret.replace('a', "b").replace('0', "1")));
        assert!(!text.contains(&format!("{:?}", token.secret_sha256)));
        assert!(Token::split("strata_").is_err());
        assert!(Token::split("bearer abc").is_err());
        let expiring = Token {
            expires: Some(Timestamp { sec: 10, nsec: 0 }),
            ..token
        };
        assert!(!expiring.expired(Timestamp { sec: 9, nsec: 0 }));
        assert!(expiring.expired(Timestamp { sec: 10, nsec: 0 }));
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name(b"a").is_ok());
        assert!(validate_name(&[b'x'; 255]).is_ok());
        assert_eq!(
            validate_name(&[b'x'; 256]),
            Err(crate::MetaError::NameTooLong)
        );
        assert!(validate_name(b"").is_err());
        assert!(validate_name(b".").is_err());
        assert!(validate_name(b"..").is_err());
        assert!(validate_name(b"a/b").is_err());
        assert!(validate_name(b"a\0b").is_err());
    }
}
