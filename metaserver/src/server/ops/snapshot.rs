//! Snapshots: a read-only copy of a filesystem's metadata at one point,
//! registered as filesystem `SOURCE@NAME` with the source's block layout,
//! so it reads the same immutable objects.
//!
//! Taking one (driven by `MetaClient::create_snapshot`): group 0 registers
//! it; every partition group of the source freezes it (changes wait, new
//! cross-group transactions abort and are retried by their clients), and
//! once no transaction is pending anywhere each group copies its rows in one
//! log entry; then the freezes lift and group 0 marks the snapshot ready.
//! Because no change is applied anywhere between the first copy and the
//! last, the copies together are one cut of the filesystem: a change that
//! is in the snapshot was never preceded by one that is not.
//!
//! A freeze carries an end time on the leader's clock, compared with the
//! time each log entry was proposed (`LogRequest::at`), so a snapshot tool
//! that dies mid-way cannot leave the filesystem frozen.
//!
//! Each group counts, per shared slice, how many snapshots reference it,
//! and the deletion queue keeps a slice's objects while that count is
//! above zero.

use crate::MetaError;
use crate::request::{MetaResponse, MetaResult, WriteRequest};
use crate::server::ops::{Ctx, tri};
use crate::server::store::{DbError, Pages, Rows, RowsMut, decode, key};
use crate::types::*;

/// Rows copied or dropped per scan, so memory stays bounded however large
/// the filesystem.
const PAGE: usize = 4096;

fn freeze_key(g: GroupId, fs: FsId) -> Vec<u8> {
    key::counter(g, &format!("freeze:{fs}"))
}

fn read_only_key(g: GroupId, fs: FsId) -> Vec<u8> {
    key::counter(g, &format!("read_only:{fs}"))
}

/// Why `req`, proposed at `at`, may not apply now in group `g`: the
/// filesystem it changes is frozen for a snapshot.
pub(crate) fn freeze_refusal<T: Rows>(
    t: &T,
    g: GroupId,
    req: &WriteRequest,
    at: Timestamp,
) -> Result<Option<MetaError>, DbError> {
    let Some(fs) = req.changes_fs() else {
        return Ok(None);
    };
    if req.settles_tx() {
        return Ok(None);
    }
    let Some(until) = t.load::<Timestamp>(&freeze_key(g, fs))? else {
        return Ok(None);
    };
    if at >= until {
        return Ok(None);
    }
    Ok(Some(if req.starts_tx() {
        MetaError::Busy("a snapshot is being taken".into())
    } else {
        MetaError::Frozen
    }))
}

/// Whether `fs` is a snapshot in group `g` (no changes to its tree).
pub(crate) fn read_only<T: Rows>(t: &T, g: GroupId, fs: FsId) -> Result<bool, DbError> {
    Ok(t.load_raw(&read_only_key(g, fs))?.is_some())
}

/// How many snapshots hold slice `slice` of `fs` in group `g`.
pub(crate) fn slice_refs<T: Rows>(
    t: &T,
    g: GroupId,
    fs: FsId,
    slice: SliceId,
) -> Result<u64, DbError> {
    Ok(t.load(&key::snap_ref(g, fs, slice))?.unwrap_or(0))
}

/// Answers `ListSnapshots` (group 0).
pub(crate) fn list<T: Rows>(t: &T, g: GroupId, source: &str) -> Result<MetaResult, DbError> {
    let Some(src) = t.load::<FsInfo>(&key::fs(g, source))? else {
        return Ok(Err(MetaError::FsNotFound(source.to_string())));
    };
    let mut out = Vec::new();
    for (_, v) in t.scan(&key::snapshot_prefix(g, src.id), None, usize::MAX)? {
        out.push(decode::<SnapshotInfo>(&v)?);
    }
    Ok(Ok(MetaResponse::Snapshots(out)))
}

fn check_name(name: &str) -> Result<(), MetaError> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(MetaError::Invalid(format!(
            "snapshot name {name:?}: use 1 to 63 letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

impl<T: RowsMut> Ctx<'_, T> {
    /// Group 0: registers a snapshot (idempotent while it is not ready, so
    /// an interrupted `snapshot create` can run again).
    pub(crate) fn create_snapshot(
        &mut self,
        source: &str,
        name: &str,
        now: Timestamp,
        loading: bool,
        path: Option<String>,
    ) -> Result<MetaResult, DbError> {
        tri!(check_name(name));
        let Some(src) = self.t.load::<FsInfo>(&key::fs(self.g, source))? else {
            return Ok(Err(MetaError::FsNotFound(source.to_string())));
        };
        if (!src.ready && !loading) || src.name.contains('@') {
            return Ok(Err(MetaError::Invalid(format!(
                "{source} is not a ready filesystem of its own (snapshots of snapshots are not taken)"
            ))));
        }
        let sk = key::snapshot(self.g, src.id, name);
        if let Some(existing) = self.t.load::<SnapshotInfo>(&sk)? {
            if existing.ready {
                return Ok(Err(MetaError::FsExists(snapshot_fs_name(source, name))));
            }
            return Ok(Ok(MetaResponse::Snapshot(existing)));
        }
        let id = self.next_counter("fs", 1, 1)? as FsId;
        let info = FsInfo {
            id,
            name: snapshot_fs_name(source, name),
            created: now,
            ready: false,
            ..src.clone()
        };
        self.t.put(&key::fs(self.g, &info.name), &info)?;
        let snap = SnapshotInfo {
            id,
            source: src.id,
            name: name.to_string(),
            created: now,
            ready: false,
            path,
        };
        self.t.put(&sk, &snap)?;
        Ok(Ok(MetaResponse::Snapshot(snap)))
    }

    fn snapshot_record(
        &self,
        source: &str,
        name: &str,
    ) -> Result<Result<(Vec<u8>, SnapshotInfo), MetaError>, DbError> {
        let Some(src) = self.t.load::<FsInfo>(&key::fs(self.g, source))? else {
            return Ok(Err(MetaError::FsNotFound(source.to_string())));
        };
        let sk = key::snapshot(self.g, src.id, name);
        Ok(match self.t.load::<SnapshotInfo>(&sk)? {
            Some(s) => Ok((sk, s)),
            None => Err(MetaError::FsNotFound(snapshot_fs_name(source, name))),
        })
    }

    /// Group 0: every group holds its copy. The snapshot takes the source's
    /// partitions as they are now: any partition its copies use existed
    /// before the freeze lifted.
    pub(crate) fn snapshot_ready(
        &mut self,
        source: &str,
        name: &str,
    ) -> Result<MetaResult, DbError> {
        let (sk, mut snap) = tri!(self.snapshot_record(source, name)?);
        for p in self.partitions(snap.source)? {
            self.t.put(
                &key::partition(self.g, snap.id, p.id),
                &Partition { fs: snap.id, ..p },
            )?;
        }
        snap.ready = true;
        self.t.put(&sk, &snap)?;
        let fk = key::fs(self.g, &snapshot_fs_name(source, name));
        if let Some(mut info) = self.t.load::<FsInfo>(&fk)? {
            info.ready = true;
            self.t.put(&fk, &info)?;
        }
        Ok(Ok(MetaResponse::Snapshot(snap)))
    }

    pub(crate) fn delete_snapshot(
        &mut self,
        source: &str,
        name: &str,
    ) -> Result<MetaResult, DbError> {
        let (sk, snap) = tri!(self.snapshot_record(source, name)?);
        self.t.del(&sk)?;
        self.t
            .del(&key::fs(self.g, &snapshot_fs_name(source, name)))?;
        for (k, _) in self
            .t
            .scan(&key::partition_prefix(self.g, snap.id), None, usize::MAX)?
        {
            self.t.del(&k)?;
        }
        Ok(Ok(MetaResponse::Snapshot(snap)))
    }

    pub(crate) fn set_freeze(
        &mut self,
        fs: FsId,
        until: Option<Timestamp>,
    ) -> Result<MetaResult, DbError> {
        let k = freeze_key(self.g, fs);
        match until {
            Some(until) => self.t.put(&k, &until)?,
            None => self.t.del(&k)?,
        }
        Ok(Ok(MetaResponse::Ok))
    }

    /// Copies this group's rows of `from` to `to`, page by page inside this
    /// one transaction; files in the trash stay behind.
    pub(crate) fn copy_fs(&mut self, from: FsId, to: FsId) -> Result<MetaResult, DbError> {
        if read_only(&*self.t, self.g, to)? {
            // Copied already (a retried request).
            return Ok(Ok(MetaResponse::Ok));
        }
        let mut usage = Usage::default();
        // Inodes, entries, chunk maps and xattrs; usage is recounted.
        for tag in [key::INODE, key::DENTRY, key::CHUNK, key::XATTR] {
            let mut pages = Pages::new(key::rows_of(self.g, tag, from), PAGE);
            while let Some(page) = pages.next(&*self.t)? {
                for (k, v) in page {
                    if !self.copies(tag, from, &k, &v, &mut usage)? {
                        continue;
                    }
                    self.t.put_raw(&key::with_fs(&k, to), &v)?;
                }
            }
        }
        self.t.put(&key::usage(self.g, to), &usage)?;
        let chunk_size: Option<u32> = self
            .t
            .load(&key::counter(self.g, &format!("chunk_size:{from}")))?;
        if let Some(cs) = chunk_size {
            self.t
                .put(&key::counter(self.g, &format!("chunk_size:{to}")), &cs)?;
        }
        self.t.put(&read_only_key(self.g, to), &true)?;
        Ok(Ok(MetaResponse::Ok))
    }

    /// Copies inodes of the tree under `root` (see `WriteRequest::CopyInodes`).
    pub(crate) fn copy_inodes(
        &mut self,
        from: FsId,
        to: FsId,
        root: Ino,
        inos: Vec<Ino>,
        nlink: Vec<(Ino, u32)>,
    ) -> Result<MetaResult, DbError> {
        if read_only(&*self.t, self.g, to)? {
            return Ok(Err(MetaError::ReadOnly(format!("snapshot {to} is sealed"))));
        }
        let nlink: std::collections::HashMap<Ino, u32> = nlink.into_iter().collect();
        let remap = |ino: Ino| if ino == root { ROOT_INO } else { ino };
        let mut added = Usage::default();
        for ino in inos {
            let Some(mut inode) = self.t.load::<Inode>(&key::inode(self.g, from, ino))? else {
                continue;
            };
            if ino == root || inode.nlink == 0 {
                continue;
            }
            inode.parent = remap(inode.parent);
            if let Some(&n) = nlink.get(&ino) {
                inode.nlink = n;
            }
            if self.t.load_raw(&key::inode(self.g, to, ino))?.is_none() {
                added.inodes += 1;
                added.bytes += inode.size;
            }
            self.t.put(&key::inode(self.g, to, ino), &inode)?;
            for prefix in [
                key::dentry_prefix(self.g, from, ino),
                key::chunk_prefix(self.g, from, ino),
                key::xattr_prefix(self.g, from, ino),
            ] {
                let mut pages = Pages::new(prefix, PAGE);
                while let Some(page) = pages.next(&*self.t)? {
                    for (k, v) in page {
                        self.t.put_raw(&key::with_fs(&k, to), &v)?;
                    }
                }
            }
        }
        self.add_usage(to, added.inodes as i64, added.bytes as i64)?;
        Ok(Ok(MetaResponse::Ok))
    }

    /// Whether row `k` (of kind `tag`) of `from` goes into a snapshot;
    /// counts what it adds to the usage and the slices it shares.
    fn copies(
        &mut self,
        tag: u8,
        from: FsId,
        k: &[u8],
        v: &[u8],
        usage: &mut Usage,
    ) -> Result<bool, DbError> {
        let ino_at = |k: &[u8]| u64::from_be_bytes(k[9..17].try_into().expect("8 bytes"));
        match tag {
            key::INODE => {
                let inode: Inode = decode(v)?;
                if inode.nlink == 0 {
                    return Ok(false);
                }
                usage.inodes += 1;
                usage.bytes += inode.size;
            }
            key::CHUNK | key::XATTR => {
                let ino = ino_at(k);
                let live = self
                    .t
                    .load::<Inode>(&key::inode(self.g, from, ino))?
                    .is_some_and(|i| i.nlink > 0);
                if !live {
                    return Ok(false);
                }
                if tag == key::CHUNK {
                    for s in decode::<Vec<Slice>>(v)? {
                        if s.id != 0 {
                            let rk = key::snap_ref(self.g, from, s.id);
                            let n: u64 = self.t.load(&rk)?.unwrap_or(0);
                            self.t.put(&rk, &(n + 1))?;
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(true)
    }

    /// Makes snapshot `fs` of `source`, whose rows `strata load` wrote into
    /// this group, read-only, and counts the slices it shares.
    pub(crate) fn seal_snapshot(&mut self, fs: FsId, source: FsId) -> Result<MetaResult, DbError> {
        if read_only(&*self.t, self.g, fs)? {
            return Ok(Ok(MetaResponse::Ok));
        }
        let mut pages = Pages::new(key::rows_of(self.g, key::CHUNK, fs), PAGE);
        while let Some(page) = pages.next(&*self.t)? {
            for (_, v) in page {
                for s in decode::<Vec<Slice>>(&v)? {
                    if s.id != 0 {
                        let rk = key::snap_ref(self.g, source, s.id);
                        let n: u64 = self.t.load(&rk)?.unwrap_or(0);
                        self.t.put(&rk, &(n + 1))?;
                    }
                }
            }
        }
        self.t.put(&read_only_key(self.g, fs), &true)?;
        Ok(Ok(MetaResponse::Ok))
    }

    /// Drops snapshot `fs` of `source` from this group.
    /// Also drops what a failed attempt left of a snapshot: rows without the
    /// seal, whose slices were never counted (so none are released).
    pub(crate) fn drop_fs(&mut self, fs: FsId, source: FsId) -> Result<MetaResult, DbError> {
        if fs == source {
            return Ok(Err(MetaError::Invalid(format!(
                "filesystem {fs} is not a snapshot of itself"
            ))));
        }
        let sealed = read_only(&*self.t, self.g, fs)?;
        for prefix in key::fs_rows(self.g, fs) {
            loop {
                let page = self.t.scan(&prefix, None, PAGE)?;
                if page.is_empty() {
                    break;
                }
                for (k, v) in page {
                    if sealed && prefix[4] == key::CHUNK {
                        for s in decode::<Vec<Slice>>(&v)? {
                            if s.id != 0 {
                                self.release_slice(source, s.id)?;
                            }
                        }
                    }
                    self.t.del(&k)?;
                }
            }
        }
        self.t
            .del(&key::counter(self.g, &format!("chunk_size:{fs}")))?;
        self.t.del(&read_only_key(self.g, fs))?;
        Ok(Ok(MetaResponse::Ok))
    }

    fn release_slice(&mut self, source: FsId, slice: SliceId) -> Result<(), DbError> {
        let rk = key::snap_ref(self.g, source, slice);
        match self.t.load::<u64>(&rk)? {
            Some(n) if n > 1 => self.t.put(&rk, &(n - 1)),
            _ => self.t.del(&rk),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{LogRequest, Origin};
    use crate::server::ops::apply_logged;
    use crate::server::store::SM;
    use redb::backends::InMemoryBackend;

    const G: GroupId = 1;

    fn at(sec: i64) -> Timestamp {
        Timestamp { sec, nsec: 0 }
    }

    fn run(db: &redb::Database, req: WriteRequest, seq: u64, when: Timestamp) -> MetaResult {
        let w = db.begin_write().unwrap();
        let res = {
            let mut t = w.open_table(SM).unwrap();
            let entry = LogRequest {
                req,
                origin: Some(Origin {
                    client: 7,
                    seq,
                    done_below: 0,
                }),
                at: when,
            };
            apply_logged(&mut t, G, entry).unwrap()
        };
        w.commit().unwrap();
        res
    }

    fn chmod(fs: FsId) -> WriteRequest {
        WriteRequest::SetAttr {
            fs,
            ino: ROOT_INO,
            set: SetAttr {
                mode: Some(0o700),
                ..Default::default()
            },
            now: at(1),
        }
    }

    #[test]
    fn a_freeze_holds_changes_until_lifted_or_run_out_and_is_not_remembered() {
        let db = redb::Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .unwrap();
        let freeze = |until| WriteRequest::SetFreeze { fs: 1, until };
        assert!(run(&db, freeze(Some(at(100))), 1, at(10)).is_ok());
        // Frozen: a change waits, a new transaction aborts, another
        // filesystem and a transaction's commit are not held.
        assert!(matches!(
            run(&db, chmod(1), 2, at(50)),
            Err(MetaError::Frozen)
        ));
        let begin = WriteRequest::TxBegin {
            fs: 1,
            tx: 9,
            participants: vec![2],
            now: at(50),
        };
        assert!(matches!(
            run(&db, begin, 3, at(50)),
            Err(MetaError::Busy(_))
        ));
        assert!(!matches!(
            run(&db, chmod(2), 4, at(50)),
            Err(MetaError::Frozen)
        ));
        let commit = WriteRequest::TxCommit {
            fs: 1,
            tx: 9,
            steps: vec![],
            now: at(50),
        };
        assert!(!matches!(
            run(&db, commit, 5, at(50)),
            Err(MetaError::Frozen)
        ));
        // The retry of the refused change (same sequence number) is decided
        // afresh once the freeze ran out by the leader's clock.
        assert!(!matches!(
            run(&db, chmod(1), 2, at(100)),
            Err(MetaError::Frozen)
        ));
        // Lifted before its end: changes go through at once.
        assert!(run(&db, freeze(Some(at(200))), 6, at(150)).is_ok());
        assert!(matches!(
            run(&db, chmod(1), 7, at(151)),
            Err(MetaError::Frozen)
        ));
        assert!(run(&db, freeze(None), 8, at(152)).is_ok());
        assert!(!matches!(
            run(&db, chmod(1), 7, at(153)),
            Err(MetaError::Frozen)
        ));
    }
}
