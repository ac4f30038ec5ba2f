//! A group's state machine: metadata rows in redb, applied from the log, and
//! snapshots written to files from a read transaction.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use openraft_legacy::network_v1::SnapshotReceiverFactory;
use redb::{Database, Durability, ReadableDatabase, ReadableTable};

use crate::raft_types::{
    Entry, LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
};
use crate::request::{MetaResponse, MetaResult};
use crate::server::ops;
use crate::server::store::{self, APPLIED, DbError, RAFT, Rows, RowsMut, SM, key};
use crate::types::{FsId, GroupId, Usage};

#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    group: GroupId,
    snapshot_dir: PathBuf,
    /// When an apply last committed durably (see `apply_batch`).
    last_durable: Arc<std::sync::Mutex<std::time::Instant>>,
}

/// How often an apply commits durably although the log already is.
const DURABLE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

type Applied = (Option<LogId>, StoredMembership);

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Where the current snapshot of a group lives.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotRecord {
    meta: SnapshotMeta,
    file: PathBuf,
}

impl StateMachine {
    pub fn new(db: Arc<Database>, group: GroupId, snapshot_dir: PathBuf) -> Self {
        StateMachine {
            db,
            group,
            snapshot_dir,
            last_durable: Arc::new(std::sync::Mutex::new(std::time::Instant::now())),
        }
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&StateMachine) -> Result<R, DbError> + Send + 'static,
    ) -> Result<R, DbError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| DbError::Storage(format!("storage task failed: {e}")))?
    }

    fn applied(tx: &redb::ReadTransaction, g: GroupId) -> Result<Applied, DbError> {
        let t = tx.open_table(APPLIED)?;
        match t.get(g)? {
            Some(v) => store::decode(v.value()),
            None => Ok((None, StoredMembership::default())),
        }
    }

    fn apply_batch(&self, entries: Vec<Entry>) -> Result<Vec<MetaResult>, DbError> {
        let g = self.group;
        let mut tx = self.db.begin_write()?;
        // Not fsynced here: the log entries are already durable, and a restart
        // re-applies whatever this commit loses (last_applied rolls back with it).
        // Once a second one is, because redb keeps the pages freed by
        // non-durable commits in memory until a durable one.
        let durable = {
            let mut last = self.last_durable.lock().unwrap();
            let due = last.elapsed() >= DURABLE_EVERY;
            if due {
                *last = std::time::Instant::now();
            }
            due
        };
        tx.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        // As `store::begin_durable_write`: the durable commit, once a
        // second, saves redb's allocator state (decision 70).
        tx.set_quick_repair(durable);
        let mut results = Vec::with_capacity(entries.len());
        let mut applied: Applied = {
            let t = tx.open_table(APPLIED)?;
            match t.get(g)? {
                Some(v) => store::decode(v.value())?,
                None => (None, StoredMembership::default()),
            }
        };
        {
            let mut t = tx.open_table(SM)?;
            for e in entries {
                applied.0 = Some(e.log_id);
                match e.payload {
                    EntryPayload::Blank => results.push(Ok(MetaResponse::Ok)),
                    EntryPayload::Normal(req) => {
                        let kind: &'static str = (&req.req).into();
                        tracing::debug!(
                            group = g,
                            index = e.log_id.index,
                            kind,
                            client = req.origin.map(|o| o.client),
                            seq = req.origin.map(|o| o.seq),
                            "apply"
                        );
                        results.push(ops::apply_logged(&mut t, g, req)?)
                    }
                    EntryPayload::Membership(m) => {
                        applied.1 = StoredMembership::new(Some(e.log_id), m);
                        results.push(Ok(MetaResponse::Ok));
                    }
                }
            }
        }
        tx.open_table(APPLIED)?
            .insert(g, store::encode(&applied).as_slice())?;
        tx.commit()?;
        Ok(results)
    }

    /// A new file name for a snapshot of the group at `last`: term, index
    /// and the time, so a rebuilt or received snapshot never overwrites the
    /// current one before it is recorded.
    fn new_snapshot_path(&self, last: Option<LogId>) -> PathBuf {
        let id = format!(
            "{}-{}-{}",
            last.map(|l| l.leader_id.term).unwrap_or(0),
            last.map(|l| l.index).unwrap_or(0),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        self.snapshot_dir
            .join(format!("group-{}-{id}.snap", self.group))
    }

    /// Writes every row of the group as `len key len value` records.
    fn build(&self) -> Result<(SnapshotMeta, PathBuf), DbError> {
        let g = self.group;
        let tx = self.db.begin_read()?;
        let (last, membership) = Self::applied(&tx, g)?;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
        };
        std::fs::create_dir_all(&self.snapshot_dir).map_err(|e| DbError::Storage(e.to_string()))?;
        let path = self.new_snapshot_path(last);
        let tmp = path.with_extension("tmp");
        let file = std::fs::File::create(&tmp).map_err(|e| DbError::Storage(e.to_string()))?;
        let mut w = BufWriter::new(file);
        let t = tx.open_table(SM)?;
        let lo = key::group(g);
        let hi = key::group(g + 1);
        let io = |e: std::io::Error| DbError::Storage(format!("writing snapshot: {e}"));
        for row in t.range::<&[u8]>(lo.as_slice()..hi.as_slice())? {
            let (k, v) = row?;
            for part in [k.value(), v.value()] {
                w.write_all(&(part.len() as u32).to_be_bytes())
                    .map_err(io)?;
                w.write_all(part).map_err(io)?;
            }
        }
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        self.set_current(&meta, &path)?;
        Ok((meta, path))
    }

    /// Records `path` as the current snapshot and removes the one it replaces.
    fn set_current(&self, meta: &SnapshotMeta, path: &std::path::Path) -> Result<(), DbError> {
        let k = key::raft(self.group, "snapshot");
        let old: Option<SnapshotRecord> = {
            let tx = self.db.begin_read()?;
            tx.open_table(RAFT)?.load(&k)?
        };
        let tx = store::begin_durable_write(&self.db)?;
        tx.open_table(RAFT)?.put(
            &k,
            &SnapshotRecord {
                meta: meta.clone(),
                file: path.to_path_buf(),
            },
        )?;
        tx.commit()?;
        if let Some(old) = old
            && old.file != path
        {
            let _ = std::fs::remove_file(old.file);
        }
        Ok(())
    }

    fn install(&self, meta: &SnapshotMeta, src: std::fs::File) -> Result<(), DbError> {
        let g = self.group;
        let io = |e: std::io::Error| DbError::Storage(format!("reading snapshot: {e}"));
        std::fs::create_dir_all(&self.snapshot_dir).map_err(io)?;
        let path = self.new_snapshot_path(meta.last_log_id);
        {
            let mut src = BufReader::new(src);
            let mut dst = std::fs::File::create(&path).map_err(io)?;
            std::io::copy(&mut src, &mut dst).map_err(io)?;
            dst.sync_all().map_err(io)?;
        }
        let mut r = BufReader::new(std::fs::File::open(&path).map_err(io)?);
        let tx = store::begin_durable_write(&self.db)?;
        {
            let mut t = tx.open_table(SM)?;
            let lo = key::group(g);
            let hi = key::group(g + 1);
            t.retain_in::<&[u8], _>(lo.as_slice()..hi.as_slice(), |_, _| false)?;
            let read_part = |r: &mut BufReader<std::fs::File>| -> Result<Option<Vec<u8>>, DbError> {
                let mut len = [0u8; 4];
                match r.read_exact(&mut len) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                    Err(e) => return Err(io(e)),
                }
                let len = u32::from_be_bytes(len) as usize;
                if len > 256 << 20 {
                    return Err(DbError::Corrupt(format!("snapshot record of {len} bytes")));
                }
                let mut buf = vec![0u8; len];
                r.read_exact(&mut buf).map_err(io)?;
                Ok(Some(buf))
            };
            while let Some(k) = read_part(&mut r)? {
                let v = read_part(&mut r)?
                    .ok_or_else(|| DbError::Corrupt("snapshot ends inside a record".into()))?;
                if !k.starts_with(&lo) {
                    return Err(DbError::Corrupt("snapshot row of another group".into()));
                }
                t.insert(k.as_slice(), v.as_slice())?;
            }
        }
        let applied: Applied = (meta.last_log_id, meta.last_membership.clone());
        tx.open_table(APPLIED)?
            .insert(g, store::encode(&applied).as_slice())?;
        tx.commit()?;
        self.set_current(meta, &path)
    }

    fn current(&self) -> Result<Option<SnapshotRecord>, DbError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(RAFT)?;
        t.load(&key::raft(self.group, "snapshot"))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, std::io::Error> {
        let start = std::time::Instant::now();
        let (meta, path) = self.blocking(|sm| sm.build()).await.map_err(io_err)?;
        let file = tokio::fs::File::open(&path).await?;
        let bytes = file.metadata().await.map_or(0, |m| m.len());
        crate::metrics::node().snapshot_built(start, bytes);
        Ok(Snapshot {
            meta,
            snapshot: file,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<Applied, std::io::Error> {
        self.blocking(|sm| {
            let tx = sm.db.begin_read()?;
            Self::applied(&tx, sm.group)
        })
        .await
        .map_err(io_err)
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), std::io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, std::io::Error>>
            + Unpin
            + Send,
    {
        // The whole batch in one transaction, answered once it commits.
        let mut batch = Vec::new();
        let mut responders = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            batch.push(entry);
            responders.push(responder);
        }
        // Inline, not on a blocking thread: an apply commits without fsync
        // (see `apply_batch`) and takes less time than the thread handoff,
        // which more than halved the create rate.
        let results = self.apply_batch(batch).map_err(io_err)?;
        for (result, responder) in results.into_iter().zip(responders) {
            if let Some(r) = responder {
                r.send(result);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), std::io::Error> {
        let meta = meta.clone();
        let mut file = snapshot.into_std().await;
        use std::io::Seek;
        self.blocking(move |sm| {
            file.rewind().map_err(|e| DbError::Storage(e.to_string()))?;
            sm.install(&meta, file)
        })
        .await
        .map_err(io_err)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, std::io::Error> {
        let rec = self.blocking(|sm| sm.current()).await.map_err(io_err)?;
        let Some(rec) = rec else { return Ok(None) };
        let f = tokio::fs::File::open(&rec.file).await?;
        Ok(Some(Snapshot {
            meta: rec.meta,
            snapshot: f,
        }))
    }
}

impl SnapshotReceiverFactory<TypeConfig> for StateMachine {
    type SnapshotReceiver = SnapshotData;

    async fn begin_receiving_snapshot(&mut self) -> Result<SnapshotData, std::io::Error> {
        let dir = self.snapshot_dir.clone();
        let g = self.group;
        let file = self
            .blocking(move |_| {
                std::fs::create_dir_all(&dir).map_err(|e| DbError::Storage(e.to_string()))?;
                tempfile_in(&dir, g)
            })
            .await
            .map_err(io_err)?;
        Ok(tokio::fs::File::from_std(file))
    }
}

/// An anonymous-ish file for an incoming snapshot; removed once installed or on restart.
fn tempfile_in(dir: &std::path::Path, g: GroupId) -> Result<std::fs::File, DbError> {
    let name = format!(
        "incoming-{g}-{}.tmp",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let path = dir.join(name);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| DbError::Storage(e.to_string()))?;
    // Unlinked at once: the open handle is all install_snapshot needs.
    let _ = std::fs::remove_file(&path);
    Ok(f)
}

/// Answers a read-only request from the group's current state.
/// A replica's applied index and a hash of every state row of group `g`, read
/// in one transaction: replicas at the same index must have the same hash.
pub fn digest(db: &Database, g: GroupId) -> Result<(Option<u64>, u64), DbError> {
    use std::hash::{Hash, Hasher};
    let tx = db.begin_read()?;
    let applied = StateMachine::applied(&tx, g)?.0.map(|l| l.index);
    let t = tx.open_table(SM)?;
    // DefaultHasher::new() uses fixed keys, so every node computes the same.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (k, v) in t.scan(&key::group(g), None, usize::MAX)? {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    Ok((applied, h.finish()))
}

/// Whether the leader may refuse `req` at once because its filesystem is
/// frozen for a snapshot (`snapshot::freeze_refusal` at the current time),
/// sparing a log entry per resent change while the freeze lasts. Only a
/// refusal is decided here; what applies is still decided in the log.
pub fn early_refusal(
    db: &Database,
    g: GroupId,
    req: &crate::request::WriteRequest,
) -> Result<Option<crate::MetaError>, DbError> {
    if req.changes_fs().is_none() {
        return Ok(None);
    }
    let tx = db.begin_read()?;
    let t = tx.open_table(SM)?;
    crate::server::ops::snapshot::freeze_refusal(&t, g, req, crate::types::Timestamp::now())
}

/// Inodes and bytes of each filesystem with rows in group `g` (its
/// partition there), trash included, as `Usage` reads them.
pub fn usage_by_fs(db: &Database, g: GroupId) -> Result<Vec<(FsId, Usage)>, DbError> {
    let tx = db.begin_read()?;
    let t = tx.open_table(SM)?;
    let prefix = key::usage_prefix(g);
    // A filesystem per row: far fewer than a page.
    t.scan(&prefix, None, 100_000)?
        .into_iter()
        .filter_map(|(k, v)| {
            let fs = FsId::from_be_bytes(k.get(prefix.len()..)?.try_into().ok()?);
            Some(store::decode(&v).map(|u| (fs, u)))
        })
        .collect()
}

/// How many quotas each filesystem has in group `g`, and how many of those
/// have used 90 % or more of a limit.
pub(crate) fn quotas_by_fs(
    db: &Database,
    g: GroupId,
) -> Result<Vec<(FsId, crate::metrics::QuotaCounts)>, DbError> {
    let tx = db.begin_read()?;
    let t = tx.open_table(SM)?;
    let mut out: std::collections::BTreeMap<FsId, crate::metrics::QuotaCounts> = Default::default();
    // Directories' quotas, and users' and groups' at their home (whose
    // usage counts what the home lent other groups, decision 60).
    for prefix in [key::quota_prefix(g), key::quota_owner_prefix(g)] {
        let mut after = None;
        loop {
            let page = t.scan(&prefix, after.as_deref(), 4096)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (k, v) in &page {
                let Some(fs) = k.get(prefix.len()..prefix.len() + 4) else {
                    continue;
                };
                let fs = FsId::from_be_bytes(fs.try_into().expect("4 bytes"));
                let q: crate::types::Quota = store::decode(v)?;
                let near = |used: u64, max: Option<u64>| {
                    max.is_some_and(|m| u128::from(used) * 10 >= u128::from(m) * 9)
                };
                let e = out.entry(fs).or_default();
                e.quotas += 1;
                e.near_limit +=
                    u64::from(near(q.used.bytes, q.max_bytes) || near(q.used.inodes, q.max_inodes));
            }
        }
    }
    Ok(out.into_iter().collect())
}

pub fn read(
    db: &Database,
    g: GroupId,
    req: crate::request::ReadRequest,
) -> Result<MetaResult, DbError> {
    let tx = db.begin_read()?;
    let t = tx.open_table(SM)?;
    ops::read_rows(&t, g, req)
}
