//! The node's redb database: table definitions, key layout and value codec.
//!
//! All groups of a node share one database file so that one fsync can cover
//! log appends of many groups. Every key starts with the big-endian group id,
//! so a group's rows form one contiguous range (snapshots scan it, installs
//! replace it).

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Serialize, de::DeserializeOwned};

use crate::types::*;

/// Raft log entries: group ++ index.
pub const LOG: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raft_log");
/// Raft bookkeeping per group (vote, purged id, current snapshot): group ++ name.
pub const RAFT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raft_meta");
/// State-machine rows: group ++ tag ++ fields.
pub const SM: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
/// Last applied log id and membership per group, committed with the rows it describes.
pub const APPLIED: TableDefinition<u32, &[u8]> = TableDefinition::new("applied");
/// Node identity and hosted groups.
pub const NODE: TableDefinition<&str, &[u8]> = TableDefinition::new("node");

/// Values are small; a row larger than this is corruption, not data.
const MAX_VALUE: usize = 256 << 20;

/// An error of the node's own storage: the redb tables, the write-ahead
/// log and snapshot files (not to be confused with the object store's
/// errors in strata-cache).
#[derive(thiserror::Error, Debug)]
pub enum DbError {
    #[error("metadata database error: {0}")]
    Storage(String),
    #[error("corrupt metadata row: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Format(String),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self { DbError::Storage(e.to_string()) }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<DbError> for crate::MetaError {
    fn from(e: DbError) -> Self {
        crate::MetaError::Storage(e.to_string())
    }
}

pub fn open(path: &Path) -> Result<Arc<Database>, DbError> {
    let created = if crate::server::power_loss::enabled() {
        crate::server::power_loss::SyncedImage::open(path)
            .map_err(redb::DatabaseError::from)
            .and_then(|b| Database::builder().create_with_backend(b))
    } else {
        Database::create(path)
    };
    let db = created.map_err(|e| {
        DbError::Storage(format!(
            "cannot open {}: {e} (is another strata process using this data dir?)",
            path.display()
        ))
    })?;
    let tx = begin_durable_write(&db)?;
    {
        tx.open_table(LOG)?;
        tx.open_table(RAFT)?;
        tx.open_table(SM)?;
        tx.open_table(APPLIED)?;
        tx.open_table(NODE)?;
    }
    tx.commit()?;
    Ok(Arc::new(db))
}

/// The version of what this build stores in a data dir (rows, log records,
/// snapshot files). Raise it with any change that older builds cannot read
/// or that this build cannot read from older data; each data dir records the
/// version that wrote it, so a mismatch is refused with a message instead of
/// failing on the first row that does not decode.
pub const FORMAT: u32 = 1;
const FORMAT_KEY: &str = "format";

/// Refuses a data dir written in another format; says whether it is marked
/// with this one. A data dir without a version is taken as it is (it is new,
/// or older than versions: then rows that do not decode say so), and
/// `record_format` marks it once it opened.
pub fn check_format(db: &Database) -> Result<bool, DbError> {
    let tx = redb::ReadableDatabase::begin_read(db)?;
    let Some(v) = tx.open_table(NODE)?.get(FORMAT_KEY)? else {
        return Ok(false);
    };
    let found: u32 = decode(v.value())?;
    match found.cmp(&FORMAT) {
        std::cmp::Ordering::Equal => Ok(true),
        std::cmp::Ordering::Greater => Err(DbError::Format(format!(
            "this data dir was written by a newer Strata (data format {found}; this one \
             reads format {FORMAT}): run that version"
        ))),
        std::cmp::Ordering::Less => Err(DbError::Format(format!(
            "this data dir was written by an older Strata (data format {found}; this one \
             reads format {FORMAT}): dump its filesystems with that version \
             (`strata dump`) and load them with this one (`strata load`)"
        ))),
    }
}

/// Records that the data dir is in this build's format.
pub fn record_format(db: &Database) -> Result<(), DbError> {
    let tx = begin_durable_write(db)?;
    tx.open_table(NODE)?
        .insert(FORMAT_KEY, encode(&FORMAT).as_slice())?;
    tx.commit()?;
    Ok(())
}

/// A write transaction committed durably (redb's default) that also saves
/// redb's allocator state: after a crash redb goes back to the last durable
/// commit, and without that state it rebuilds it by walking the whole file
/// (23 s for a data dir holding 10 M inodes; decision 70). Every durable
/// commit needs it, since one without it drops the saved state.
pub fn begin_durable_write(db: &Database) -> Result<redb::WriteTransaction, DbError> {
    let mut tx = db.begin_write()?;
    tx.set_quick_repair(true);
    Ok(tx)
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .expect("in-memory bincode encoding cannot fail")
}

pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, DbError> {
    decode_within::<T, MAX_VALUE>(b)
}

/// `decode` for values that may be larger than a row: at most `LIMIT` bytes.
pub fn decode_within<T: DeserializeOwned, const LIMIT: usize>(b: &[u8]) -> Result<T, DbError> {
    let cfg = bincode::config::standard().with_limit::<LIMIT>();
    let (v, used) =
        bincode::serde::decode_from_slice(b, cfg).map_err(|e| DbError::Corrupt(e.to_string()))?;
    if used != b.len() {
        return Err(DbError::Corrupt("trailing bytes".into()));
    }
    Ok(v)
}

/// Key builders. Tags keep row kinds apart inside a group's range.
pub mod key {
    use super::*;

    pub const FS: u8 = 1;
    pub const PARTITION: u8 = 2;
    pub const COUNTER: u8 = 3;
    pub const CLUSTER: u8 = 4;
    pub const INODE: u8 = 10;
    pub const DENTRY: u8 = 11;
    pub const CHUNK: u8 = 12;
    pub const PART_STATE: u8 = 13;
    pub const USAGE: u8 = 14;
    pub const DEDUP: u8 = 15;
    pub const TX_LOCK: u8 = 16;
    pub const TX_INTENT: u8 = 17;
    pub const TX_DECISION: u8 = 18;
    pub const TX_BEGUN: u8 = 19;
    pub const TRASH: u8 = 20;
    pub const TRASH_INO: u8 = 21;
    pub const DELETIONS: u8 = 22;
    pub const TRASH_USAGE: u8 = 23;
    pub const HOLD: u8 = 24;
    pub const XATTR: u8 = 25;
    pub const LOCKS: u8 = 26;
    pub const SNAPSHOT: u8 = 27;
    pub const SNAP_REF: u8 = 28;
    pub const TOKEN: u8 = 29;
    pub const QUOTA: u8 = 30;
    pub const QUOTA_OWNER: u8 = 31;
    pub const QUOTA_SHARE: u8 = 32;
    pub const QUOTA_LENT: u8 = 33;

    pub fn group(g: GroupId) -> Vec<u8> {
        g.to_be_bytes().to_vec()
    }
    fn tagged(g: GroupId, tag: u8) -> Vec<u8> {
        let mut k = group(g);
        k.push(tag);
        k
    }
    pub fn fs(g: GroupId, name: &str) -> Vec<u8> {
        let mut k = tagged(g, FS);
        k.extend_from_slice(name.as_bytes());
        k
    }
    pub fn fs_prefix(g: GroupId) -> Vec<u8> {
        tagged(g, FS)
    }
    pub fn partition(g: GroupId, fs: FsId, id: PartitionId) -> Vec<u8> {
        let mut k = partition_prefix(g, fs);
        k.extend_from_slice(&id.to_be_bytes());
        k
    }
    pub fn partition_prefix(g: GroupId, fs: FsId) -> Vec<u8> {
        let mut k = tagged(g, PARTITION);
        k.extend_from_slice(&fs.to_be_bytes());
        k
    }
    pub fn counter(g: GroupId, name: &str) -> Vec<u8> {
        let mut k = tagged(g, COUNTER);
        k.extend_from_slice(name.as_bytes());
        k
    }
    pub fn token_prefix(g: GroupId) -> Vec<u8> {
        tagged(g, TOKEN)
    }
    pub fn token(g: GroupId, id: &str) -> Vec<u8> {
        let mut k = token_prefix(g);
        k.extend_from_slice(id.as_bytes());
        k
    }
    pub fn cluster(g: GroupId) -> Vec<u8> {
        tagged(g, CLUSTER)
    }
    pub fn inode(g: GroupId, fs: FsId, ino: Ino) -> Vec<u8> {
        let mut k = tagged(g, INODE);
        k.extend_from_slice(&fs.to_be_bytes());
        k.extend_from_slice(&ino.to_be_bytes());
        k
    }
    pub fn dentry_prefix(g: GroupId, fs: FsId, parent: Ino) -> Vec<u8> {
        let mut k = tagged(g, DENTRY);
        k.extend_from_slice(&fs.to_be_bytes());
        k.extend_from_slice(&parent.to_be_bytes());
        k
    }
    pub fn dentry(g: GroupId, fs: FsId, parent: Ino, name: &[u8]) -> Vec<u8> {
        let mut k = dentry_prefix(g, fs, parent);
        k.extend_from_slice(name);
        k
    }
    pub fn chunk_prefix(g: GroupId, fs: FsId, ino: Ino) -> Vec<u8> {
        let mut k = tagged(g, CHUNK);
        k.extend_from_slice(&fs.to_be_bytes());
        k.extend_from_slice(&ino.to_be_bytes());
        k
    }
    pub fn chunk(g: GroupId, fs: FsId, ino: Ino, index: u32) -> Vec<u8> {
        let mut k = chunk_prefix(g, fs, ino);
        k.extend_from_slice(&index.to_be_bytes());
        k
    }
    pub fn part_state_prefix(g: GroupId, fs: FsId) -> Vec<u8> {
        let mut k = tagged(g, PART_STATE);
        k.extend_from_slice(&fs.to_be_bytes());
        k
    }
    pub fn part_state(g: GroupId, fs: FsId, id: PartitionId) -> Vec<u8> {
        let mut k = part_state_prefix(g, fs);
        k.extend_from_slice(&id.to_be_bytes());
        k
    }
    /// Every filesystem's usage row in group `g`.
    pub fn usage_prefix(g: GroupId) -> Vec<u8> {
        tagged(g, USAGE)
    }
    pub fn usage(g: GroupId, fs: FsId) -> Vec<u8> {
        let mut k = tagged(g, USAGE);
        k.extend_from_slice(&fs.to_be_bytes());
        k
    }
    /// Trashed inodes of a filesystem, oldest deletion first.
    pub fn trash_prefix(g: GroupId, fs: FsId) -> Vec<u8> {
        let mut k = tagged(g, TRASH);
        k.extend_from_slice(&fs.to_be_bytes());
        k
    }
    pub fn trash(g: GroupId, fs: FsId, deleted_sec: u64, ino: Ino) -> Vec<u8> {
        let mut k = trash_prefix(g, fs);
        k.extend_from_slice(&deleted_sec.to_be_bytes());
        k.extend_from_slice(&ino.to_be_bytes());
        k
    }
    /// The inode at the end of a trash key.
    pub fn trash_ino(k: &[u8]) -> Ino {
        let tail: [u8; 8] = k[k.len() - 8..]
            .try_into()
            .expect("trash keys end in a u64");
        u64::from_be_bytes(tail)
    }
    /// The deletion second inside a trash key.
    pub fn trash_sec(k: &[u8]) -> u64 {
        let mid: [u8; 8] = k[k.len() - 16..k.len() - 8]
            .try_into()
            .expect("trash keys hold a u64 second");
        u64::from_be_bytes(mid)
    }
    /// Where a trashed inode's trash row is: ino -> deletion second.
    pub fn trash_index(g: GroupId, fs: FsId, ino: Ino) -> Vec<u8> {
        let mut k = tagged(g, TRASH_INO);
        k.extend_from_slice(&fs.to_be_bytes());
        k.extend_from_slice(&ino.to_be_bytes());
        k
    }
    pub fn trash_usage(g: GroupId, fs: FsId) -> Vec<u8> {
        let mut k = tagged(g, TRASH_USAGE);
        k.extend_from_slice(&fs.to_be_bytes());
        k
    }
    /// Inodes a client holds open: not purged from the trash until then.
    pub fn hold(g: GroupId, fs: FsId, ino: Ino) -> Vec<u8> {
        let mut k = tagged(g, HOLD);
        k.extend_from_slice(&fs.to_be_bytes());
        k.extend_from_slice(&ino.to_be_bytes());
        k
    }
    /// Extended attributes of one inode, by name.
    pub fn xattr_prefix(g: GroupId, fs: FsId, ino: Ino) -> Vec<u8> {
        let mut k = tagged(g, XATTR);
        k.extend_from_slice(&fs.to_be_bytes());
        k.extend_from_slice(&ino.to_be_bytes());
        k
    }
    pub fn xattr(g: GroupId, fs: FsId, ino: Ino, name: &[u8]) -> Vec<u8> {
        let mut k = xattr_prefix(g, fs, ino);
        k.extend_from_slice(name);
        k
    }
    /// Group 0: the snapshots of filesystem `source`, by name.
    pub fn snapshot_prefix(g: GroupId, source: FsId) -> Vec<u8> {
        let mut k = tagged(g, SNAPSHOT);
        k.extend_from_slice(&source.to_be_bytes());
        k
    }
    pub fn snapshot(g: GroupId, source: FsId, name: &str) -> Vec<u8> {
        let mut k = snapshot_prefix(g, source);
        k.extend_from_slice(name.as_bytes());
        k
    }
    /// How many snapshots of `source` reference slice `slice` (kept in the
    /// group of the chunk that holds it).
    pub fn snap_ref(g: GroupId, source: FsId, slice: SliceId) -> Vec<u8> {
        let mut k = tagged(g, SNAP_REF);
        k.extend_from_slice(&source.to_be_bytes());
        k.extend_from_slice(&slice.to_be_bytes());
        k
    }
    /// The rows of kind `tag` of filesystem `fs` in group `g` (the fs id
    /// follows the tag).
    pub fn rows_of(g: GroupId, tag: u8, fs: FsId) -> Vec<u8> {
        let mut k = tagged(g, tag);
        k.extend_from_slice(&fs.to_be_bytes());
        k
    }
    /// Every quota row of group `g`, of every filesystem.
    pub fn quota_prefix(g: GroupId) -> Vec<u8> {
        tagged(g, QUOTA)
    }
    /// Every user's and group's quota of group `g`, of every filesystem.
    pub fn quota_owner_prefix(g: GroupId) -> Vec<u8> {
        tagged(g, QUOTA_OWNER)
    }
    /// The quota of directory `dir`.
    pub fn quota(g: GroupId, fs: FsId, dir: Ino) -> Vec<u8> {
        let mut k = rows_of(g, QUOTA, fs);
        k.extend_from_slice(&dir.to_be_bytes());
        k
    }
    /// The directory a quota row's key names.
    pub fn quota_dir(k: &[u8]) -> Ino {
        Ino::from_be_bytes(k[k.len() - 8..].try_into().expect("8-byte inode number"))
    }
    /// A global quota's subject as key bytes (kind, then id).
    fn subject_bytes(k: &mut Vec<u8>, s: QuotaSubject) {
        match s {
            QuotaSubject::Dir(d) => {
                k.push(0);
                k.extend_from_slice(&d.to_be_bytes());
            }
            QuotaSubject::User(u) => {
                k.push(1);
                k.extend_from_slice(&u.to_be_bytes());
            }
            QuotaSubject::Group(g) => {
                k.push(2);
                k.extend_from_slice(&g.to_be_bytes());
            }
        }
    }
    /// The subject a `quota_owner`, `quota_share` or `quota_lent` key names
    /// (after the `rows_of` prefix).
    pub fn quota_subject(k: &[u8]) -> Option<QuotaSubject> {
        let rest = k.get(9..)?;
        let (&kind, id) = rest.split_first()?;
        match kind {
            0 => Some(QuotaSubject::Dir(Ino::from_be_bytes(id.try_into().ok()?))),
            1 => Some(QuotaSubject::User(u32::from_be_bytes(id.try_into().ok()?))),
            2 => Some(QuotaSubject::Group(u32::from_be_bytes(id.try_into().ok()?))),
            _ => None,
        }
    }
    /// A user's or group's quota, in its home group.
    pub fn quota_owner(g: GroupId, fs: FsId, s: QuotaSubject) -> Vec<u8> {
        let mut k = rows_of(g, QUOTA_OWNER, fs);
        subject_bytes(&mut k, s);
        k
    }
    /// This group's share of a global quota homed elsewhere.
    pub fn quota_share(g: GroupId, fs: FsId, s: QuotaSubject) -> Vec<u8> {
        let mut k = rows_of(g, QUOTA_SHARE, fs);
        subject_bytes(&mut k, s);
        k
    }
    /// What a global quota's home lent other groups.
    pub fn quota_lent(g: GroupId, fs: FsId, s: QuotaSubject) -> Vec<u8> {
        let mut k = rows_of(g, QUOTA_LENT, fs);
        subject_bytes(&mut k, s);
        k
    }
    /// Every row kind that belongs to one filesystem's tree in a partition
    /// group, as key prefixes.
    pub fn fs_rows(g: GroupId, fs: FsId) -> Vec<Vec<u8>> {
        [
            INODE,
            DENTRY,
            CHUNK,
            XATTR,
            USAGE,
            PART_STATE,
            LOCKS,
            TRASH,
            TRASH_INO,
            TRASH_USAGE,
            HOLD,
            QUOTA,
            QUOTA_OWNER,
            QUOTA_SHARE,
            QUOTA_LENT,
        ]
        .into_iter()
        .map(|tag| rows_of(g, tag, fs))
        .collect()
    }
    /// `k` (a key of a row kind in `fs_rows`) with its filesystem id replaced.
    pub fn with_fs(k: &[u8], fs: FsId) -> Vec<u8> {
        let mut out = k.to_vec();
        out[5..9].copy_from_slice(&fs.to_be_bytes());
        out
    }
    /// The file locks on one inode.
    pub fn locks(g: GroupId, fs: FsId, ino: Ino) -> Vec<u8> {
        let mut k = tagged(g, LOCKS);
        k.extend_from_slice(&fs.to_be_bytes());
        k.extend_from_slice(&ino.to_be_bytes());
        k
    }
    /// Slices whose objects are to be deleted.
    pub fn deletion_prefix(g: GroupId, fs: FsId) -> Vec<u8> {
        let mut k = tagged(g, DELETIONS);
        k.extend_from_slice(&fs.to_be_bytes());
        k
    }
    pub fn deletion(g: GroupId, fs: FsId, slice: SliceId) -> Vec<u8> {
        let mut k = deletion_prefix(g, fs);
        k.extend_from_slice(&slice.to_be_bytes());
        k
    }
    /// The slice id at the end of a deletion key.
    pub fn deletion_slice(k: &[u8]) -> SliceId {
        let tail: [u8; 8] = k[k.len() - 8..]
            .try_into()
            .expect("deletion keys end in a u64");
        u64::from_be_bytes(tail)
    }
    /// Every transaction lock of a group.
    pub fn lock_prefix(g: GroupId) -> Vec<u8> {
        tagged(g, TX_LOCK)
    }
    pub fn inode_lock(g: GroupId, fs: FsId, ino: Ino) -> Vec<u8> {
        let mut k = tagged(g, TX_LOCK);
        k.extend_from_slice(&fs.to_be_bytes());
        k.push(0);
        k.extend_from_slice(&ino.to_be_bytes());
        k
    }
    /// Locks on entries of one directory: a directory with one is not empty.
    pub fn dentry_lock_prefix(g: GroupId, fs: FsId, parent: Ino) -> Vec<u8> {
        let mut k = tagged(g, TX_LOCK);
        k.extend_from_slice(&fs.to_be_bytes());
        k.push(1);
        k.extend_from_slice(&parent.to_be_bytes());
        k
    }
    pub fn dentry_lock(g: GroupId, fs: FsId, parent: Ino, name: &[u8]) -> Vec<u8> {
        let mut k = dentry_lock_prefix(g, fs, parent);
        k.extend_from_slice(name);
        k
    }
    pub fn intent_prefix(g: GroupId) -> Vec<u8> {
        tagged(g, TX_INTENT)
    }
    pub fn intent(g: GroupId, tx: u64) -> Vec<u8> {
        let mut k = tagged(g, TX_INTENT);
        k.extend_from_slice(&tx.to_be_bytes());
        k
    }
    pub fn begun_prefix(g: GroupId) -> Vec<u8> {
        tagged(g, TX_BEGUN)
    }
    pub fn begun(g: GroupId, tx: u64) -> Vec<u8> {
        let mut k = tagged(g, TX_BEGUN);
        k.extend_from_slice(&tx.to_be_bytes());
        k
    }
    #[cfg(test)]
    pub fn decision_prefix(g: GroupId) -> Vec<u8> {
        tagged(g, TX_DECISION)
    }
    pub fn decision(g: GroupId, tx: u64) -> Vec<u8> {
        let mut k = tagged(g, TX_DECISION);
        k.extend_from_slice(&tx.to_be_bytes());
        k
    }
    pub fn dedup_prefix(g: GroupId, client: u64) -> Vec<u8> {
        let mut k = tagged(g, DEDUP);
        k.extend_from_slice(&client.to_be_bytes());
        k
    }
    pub fn dedup(g: GroupId, client: u64, seq: u64) -> Vec<u8> {
        let mut k = dedup_prefix(g, client);
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }
    /// The sequence number at the end of a dedup key.
    pub fn dedup_seq(k: &[u8]) -> u64 {
        let tail: [u8; 8] = k[k.len() - 8..]
            .try_into()
            .expect("dedup keys end in a u64");
        u64::from_be_bytes(tail)
    }
    /// A log entry's key in the `LOG` table, where logs lived before the
    /// write-ahead log; the move out of it reads the table whole, so only
    /// the test that fills an old-style table needs the key.
    #[cfg(test)]
    pub fn log(g: GroupId, index: u64) -> Vec<u8> {
        let mut k = group(g);
        k.extend_from_slice(&index.to_be_bytes());
        k
    }
    pub fn raft(g: GroupId, name: &str) -> Vec<u8> {
        let mut k = group(g);
        k.extend_from_slice(name.as_bytes());
        k
    }

    /// The first key after every key that starts with `prefix`, or None when
    /// the prefix is all 0xff (then the range is open-ended).
    pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
        let mut end = prefix.to_vec();
        while let Some(last) = end.pop() {
            if last != 0xff {
                end.push(last + 1);
                return Some(end);
            }
        }
        None
    }
}

/// A raw key and value.
pub type Row = (Vec<u8>, Vec<u8>);

/// Typed access to one key-value table, over a read or a write transaction.
pub trait Rows {
    fn load_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError>;
    /// Rows whose key starts with `prefix` and is greater than `after`, in order.
    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Vec<Row>, DbError>;

    fn load<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, DbError> {
        self.load_raw(key)?.map(|v| decode(&v)).transpose()
    }
}

fn scan_table<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &T,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<Row>, DbError> {
    use std::ops::Bound;
    let start = match after {
        Some(a) => Bound::Excluded(a),
        None => Bound::Included(prefix),
    };
    let end_key = key::prefix_end(prefix);
    let end = match &end_key {
        Some(e) => Bound::Excluded(e.as_slice()),
        None => Bound::Unbounded,
    };
    let mut out = Vec::new();
    for row in t.range::<&[u8]>((start, end))? {
        let (k, v) = row?;
        if out.len() >= limit {
            break;
        }
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

impl Rows for redb::ReadOnlyTable<&'static [u8], &'static [u8]> {
    fn load_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self.get(key)?.map(|v| v.value().to_vec()))
    }
    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Vec<Row>, DbError> {
        scan_table(self, prefix, after, limit)
    }
}

impl Rows for redb::Table<'_, &'static [u8], &'static [u8]> {
    fn load_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self.get(key)?.map(|v| v.value().to_vec()))
    }
    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Vec<Row>, DbError> {
        scan_table(self, prefix, after, limit)
    }
}

/// The rows under a prefix, a page at a time: between pages the caller may
/// write to the table it reads (a redb range cannot stay open across writes).
pub struct Pages {
    prefix: Vec<u8>,
    after: Option<Vec<u8>>,
    size: usize,
}

impl Pages {
    pub fn new(prefix: Vec<u8>, size: usize) -> Pages {
        Pages {
            prefix,
            after: None,
            size,
        }
    }

    /// Starts after `key` instead of at the prefix's first row.
    pub fn after(mut self, key: Vec<u8>) -> Pages {
        self.after = Some(key);
        self
    }

    /// The next page, or None once every row was handed out.
    pub fn next<T: Rows + ?Sized>(&mut self, t: &T) -> Result<Option<Vec<Row>>, DbError> {
        let page = t.scan(&self.prefix, self.after.as_deref(), self.size)?;
        let Some((last, _)) = page.last() else {
            return Ok(None);
        };
        self.after = Some(last.clone());
        Ok(Some(page))
    }
}

/// Writes on a write transaction's table.
pub trait RowsMut: Rows {
    fn put<T: Serialize>(&mut self, key: &[u8], v: &T) -> Result<(), DbError>;
    /// Stores an already encoded value.
    fn put_raw(&mut self, key: &[u8], v: &[u8]) -> Result<(), DbError>;
    fn del(&mut self, key: &[u8]) -> Result<(), DbError>;
}

impl RowsMut for redb::Table<'_, &'static [u8], &'static [u8]> {
    fn put<T: Serialize>(&mut self, key: &[u8], v: &T) -> Result<(), DbError> {
        self.insert(key, encode(v).as_slice())?;
        Ok(())
    }
    fn put_raw(&mut self, key: &[u8], v: &[u8]) -> Result<(), DbError> {
        self.insert(key, v)?;
        Ok(())
    }
    fn del(&mut self, key: &[u8]) -> Result<(), DbError> {
        self.remove(key)?;
        Ok(())
    }
}

/// The row store in memory, for tests of the state machine without redb,
/// Raft or a network (`ops::model_tests`).
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct MemRows(pub std::collections::BTreeMap<Vec<u8>, Vec<u8>>);

#[cfg(test)]
impl Rows for MemRows {
    fn load_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self.0.get(key).cloned())
    }
    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Vec<Row>, DbError> {
        use std::ops::Bound;
        let start = match after {
            Some(a) => Bound::Excluded(a.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        Ok(self
            .0
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

#[cfg(test)]
impl RowsMut for MemRows {
    fn put<T: Serialize>(&mut self, key: &[u8], v: &T) -> Result<(), DbError> {
        self.0.insert(key.to_vec(), encode(v));
        Ok(())
    }
    fn put_raw(&mut self, key: &[u8], v: &[u8]) -> Result<(), DbError> {
        self.0.insert(key.to_vec(), v.to_vec());
        Ok(())
    }
    fn del(&mut self, key: &[u8]) -> Result<(), DbError> {
        self.0.remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_of_another_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir.path().join("meta.redb")).unwrap();
        // New (no version yet): taken, then marked.
        assert!(!check_format(&db).unwrap());
        record_format(&db).unwrap();
        assert!(check_format(&db).unwrap());
        let mark = |v: u32| {
            let tx = db.begin_write().unwrap();
            tx.open_table(NODE)
                .unwrap()
                .insert(FORMAT_KEY, encode(&v).as_slice())
                .unwrap();
            tx.commit().unwrap();
        };
        mark(FORMAT + 1);
        let e = check_format(&db).unwrap_err().to_string();
        assert!(e.contains("newer Strata"), "{e}");
        mark(FORMAT - 1);
        let e = check_format(&db).unwrap_err().to_string();
        assert!(
            e.contains("older Strata") && e.contains("strata dump"),
            "{e}"
        );
    }

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(key::prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(key::prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(key::prefix_end(&[0xff, 0xff]), None);
    }

    #[test]
    fn dentries_of_one_directory_are_contiguous_and_ordered() {
        let a = key::dentry(1, 1, 5, b"a");
        let b = key::dentry(1, 1, 5, b"b");
        let other = key::dentry(1, 1, 6, b"a");
        let p = key::dentry_prefix(1, 1, 5);
        assert!(a.starts_with(&p) && b.starts_with(&p) && !other.starts_with(&p));
        assert!(a < b && b < other);
    }

    #[test]
    fn scan_respects_prefix_after_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir.path().join("t.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(SM).unwrap();
            for name in [&b"a"[..], b"b", b"c"] {
                t.put(&key::dentry(1, 1, 5, name), &name.to_vec()).unwrap();
            }
            t.put(&key::dentry(1, 1, 6, b"z"), &1u8).unwrap();
            let all = t.scan(&key::dentry_prefix(1, 1, 5), None, 10).unwrap();
            assert_eq!(all.len(), 3);
            let after_a = t
                .scan(
                    &key::dentry_prefix(1, 1, 5),
                    Some(&key::dentry(1, 1, 5, b"a")),
                    1,
                )
                .unwrap();
            assert_eq!(after_a.len(), 1);
            assert_eq!(after_a[0].0, key::dentry(1, 1, 5, b"b"));
        }
        tx.commit().unwrap();
    }
}
