//! The node's write-ahead log: the Raft logs and votes of every group in one
//! append-only file, one fdatasync per batch of writes.
//!
//! Why not redb: a durable redb commit costs about 3.5 times an fdatasync of
//! an append to a preallocated file on the same disk (about 0.36 ms against
//! 0.10 ms here), and it holds redb's single writer lock, so state-machine
//! applies wait behind log fsyncs. The log is a sequence, not a tree: it needs
//! no pages, no copy-on-write, and no lock shared with the state machine.
//!
//! Layout: `DIR/<seq as 16 hex digits>.wal` segment files, preallocated.
//! Each record is `len: u32 | crc32(lsn ++ payload): u32 | lsn: u64 | payload`
//! with big-endian integers and a bincode payload. Within a segment records
//! follow each other with consecutive log sequence numbers; a zero length, a
//! bad checksum or a break in the sequence ends the segment (a torn tail, whose
//! writes were never acknowledged). Every segment starts with a checkpoint
//! record holding the whole live state, written when the log opens and when a
//! segment fills up; once it is durable the older segments are deleted, and
//! nothing is ever written into a segment after a restart, so a torn tail is
//! always the last thing in its segment.
//!
//! Every group's live log, vote and purge point are also kept in memory
//! (bounded by the snapshot policy: entries leave at purge), so readers never
//! touch the disk and an appended entry is readable before it is durable, as
//! openraft requires.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::IOFlushed;
use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::raft_types::{Entry, LogId, TypeConfig, Vote};
use crate::server::power_loss;
use crate::server::store::{self, DbError, LOG, RAFT, key};
use crate::types::GroupId;

/// Bytes preallocated per segment; a new segment starts when one is full.
pub const SEGMENT_BYTES: u64 = 64 << 20;
const HEADER: usize = 16;
/// A record longer than this is corruption, not data.
const MAX_RECORD: usize = 1 << 30;

/// One group's log as it stands after every write made so far.
#[derive(Default, Clone, Serialize, Deserialize)]
struct GroupLog {
    vote: Option<Vote>,
    purged: Option<LogId>,
    entries: BTreeMap<u64, Entry>,
}

#[derive(Serialize, Deserialize)]
enum Record {
    /// The whole state; replaces whatever came before.
    Checkpoint(Vec<(GroupId, GroupLog)>),
    Append {
        group: GroupId,
        entries: Vec<Entry>,
    },
    /// Removes entries with index `from` and above.
    Truncate {
        group: GroupId,
        from: u64,
    },
    /// Removes entries up to and including `upto`.
    Purge {
        group: GroupId,
        upto: LogId,
    },
    Vote {
        group: GroupId,
        vote: Vote,
    },
}

type Groups = HashMap<GroupId, GroupLog>;

fn apply(groups: &mut Groups, record: Record) {
    match record {
        Record::Checkpoint(all) => *groups = all.into_iter().collect(),
        Record::Append { group, entries } => {
            let g = groups.entry(group).or_default();
            for e in entries {
                g.entries.insert(e.log_id.index, e);
            }
        }
        Record::Truncate { group, from } => {
            groups.entry(group).or_default().entries.split_off(&from);
        }
        Record::Purge { group, upto } => {
            let g = groups.entry(group).or_default();
            g.entries = g.entries.split_off(&(upto.index + 1));
            g.purged = Some(upto);
        }
        Record::Vote { group, vote } => groups.entry(group).or_default().vote = Some(vote),
    }
}

/// What to tell the writer of a record once it is durable (or failed).
enum Done {
    Flushed(IOFlushed<TypeConfig>),
    Reply(tokio::sync::oneshot::Sender<Result<(), String>>),
}

impl Done {
    fn finish(self, result: &Result<(), String>) {
        match self {
            Done::Flushed(cb) => {
                cb.io_completed(result.clone().map_err(std::io::Error::other));
            }
            Done::Reply(tx) => {
                let _ = tx.send(result.clone());
            }
        }
    }
}

enum Job {
    Write(Vec<u8>, Done),
    /// The thread ends after the jobs queued before this one.
    Stop,
}

/// The node's write-ahead log. Clones share it.
#[derive(Clone)]
pub struct Wal {
    groups: Arc<Mutex<Groups>>,
    /// Bytes of entries each group appended since `appended_over` last said
    /// so (see `server/log_bound.rs`).
    appended: Arc<Mutex<HashMap<GroupId, u64>>>,
    jobs: std::sync::mpsc::Sender<Job>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

fn io(what: &str, path: &Path, e: std::io::Error) -> DbError {
    DbError::Storage(format!("{what} {}: {e}", path.display()))
}

/// Segments in `dir`, oldest first.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, DbError> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| io("cannot list", dir, e))? {
        let item = item.map_err(|e| io("cannot list", dir, e))?;
        let name = item.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| u64::from_str_radix(n, 16).ok())
        else {
            continue;
        };
        out.push((seq, item.path()));
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), DbError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync", dir, e))
}

/// The valid records of one segment, in order.
fn read_segment(path: &Path) -> Result<Vec<Record>, DbError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| io("cannot read", path, e))?;
    let mut records = Vec::new();
    let mut pos = 0usize;
    let mut expect_lsn: Option<u64> = None;
    while pos + HEADER <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = u32::from_be_bytes(bytes[pos + 4..pos + 8].try_into().unwrap());
        let lsn = u64::from_be_bytes(bytes[pos + 8..pos + 16].try_into().unwrap());
        let end = pos + HEADER + len;
        if len == 0 || len > MAX_RECORD || end > bytes.len() {
            break;
        }
        if crc32fast::hash(&bytes[pos + 8..end]) != crc || expect_lsn.is_some_and(|l| l != lsn) {
            break;
        }
        // A checkpoint holds every live entry, far more than one row's
        // bound: the record's own length bound is the limit (a node that
        // loaded 10 M inodes wrote a 1 GB checkpoint it then could not read).
        let record = match store::decode_within::<Record, MAX_RECORD>(&bytes[pos + HEADER..end]) {
            Ok(r) => r,
            // A record whose checksum holds but which does not decode was
            // written by a different program: refuse rather than drop data.
            Err(e) => {
                return Err(DbError::Corrupt(format!(
                    "{}: record {lsn} at byte {pos} does not decode ({e}); a log written \
                     by another version of Strata?",
                    path.display()
                )));
            }
        };
        records.push(record);
        expect_lsn = Some(lsn + 1);
        pos = end;
    }
    Ok(records)
}

/// Appends `payload` as one framed record to `buf`.
fn frame(buf: &mut Vec<u8>, lsn: u64, payload: &[u8]) {
    let mut h = crc32fast::Hasher::new();
    h.update(&lsn.to_be_bytes());
    h.update(payload);
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(&h.finalize().to_be_bytes());
    buf.extend_from_slice(&lsn.to_be_bytes());
    buf.extend_from_slice(payload);
}

/// The segment being written, owned by the writer thread.
struct Segment {
    dir: PathBuf,
    seq: u64,
    file: File,
    offset: u64,
    /// Bytes a new segment gets (a checkpoint larger than half of it gets more).
    size: u64,
    capacity: u64,
    next_lsn: u64,
}

impl Segment {
    /// Creates segment `seq` holding a checkpoint of `groups`, durably, and
    /// then deletes every older segment.
    fn create(dir: &Path, seq: u64, size: u64, groups: &Groups) -> Result<Segment, DbError> {
        let mut all: Vec<(GroupId, GroupLog)> =
            groups.iter().map(|(g, l)| (*g, l.clone())).collect();
        all.sort_by_key(|(g, _)| *g);
        let payload = store::encode(&Record::Checkpoint(all));
        if payload.len() > MAX_RECORD {
            // Written, it would read back as a torn tail: every entry lost.
            return Err(DbError::Storage(format!(
                "the log's live entries take {} bytes, more than a checkpoint may ({MAX_RECORD})",
                payload.len()
            )));
        }
        let mut buf = Vec::with_capacity(payload.len() + HEADER);
        frame(&mut buf, 0, &payload);
        let path = dir.join(segment_name(seq));
        let capacity = size.max(2 * buf.len() as u64);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io("cannot create", &path, e))?;
        preallocate(&file, capacity).map_err(|e| io("cannot preallocate", &path, e))?;
        file.write_all_at(&buf, 0)
            .and_then(|()| file.sync_all())
            .map_err(|e| io("cannot write", &path, e))?;
        sync_dir(dir)?;
        power_loss::record_synced_len(&path, buf.len() as u64);
        for (old, p) in segments(dir)? {
            if old < seq {
                std::fs::remove_file(&p).map_err(|e| io("cannot remove", &p, e))?;
            }
        }
        sync_dir(dir)?;
        Ok(Segment {
            dir: dir.to_path_buf(),
            seq,
            file,
            offset: buf.len() as u64,
            size,
            capacity,
            next_lsn: 1,
        })
    }

    /// Writes `payloads` after what is there and makes them durable.
    fn write(&mut self, payloads: &[&[u8]]) -> Result<(), String> {
        if let Some(p) = payloads.iter().find(|p| p.len() > MAX_RECORD) {
            return Err(format!("a log record of {} bytes is too large", p.len()));
        }
        let mut buf = Vec::new();
        for p in payloads {
            frame(&mut buf, self.next_lsn, p);
            self.next_lsn += 1;
        }
        let start = std::time::Instant::now();
        let path = self.dir.join(segment_name(self.seq));
        let end = self.offset + buf.len() as u64;
        self.file
            .write_all_at(&buf, self.offset)
            .and_then(|()| power_loss::sync_data(&self.file, &path, end))
            .inspect(|()| crate::metrics::node().fsynced(start))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        self.offset = end;
        Ok(())
    }

    fn fits(&self, payloads: &[&[u8]]) -> bool {
        let need: u64 = payloads.iter().map(|p| (p.len() + HEADER) as u64).sum();
        self.offset + need <= self.capacity
    }
}

/// Reserves `len` bytes so later writes change no file metadata (an
/// fdatasync then flushes data only). Falls back to nothing where the
/// filesystem cannot preallocate: the log still works, only slower.
fn preallocate(file: &File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on a file descriptor we own, with no pointers.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(()),
        _ => Err(err),
    }
}

/// Reads the logs a node kept in redb before the write-ahead log existed.
fn legacy_state(db: &Database) -> Result<Groups, DbError> {
    let mut groups = Groups::new();
    let tx = db.begin_read()?;
    let log = tx.open_table(LOG)?;
    for row in log.iter()? {
        let (k, v) = row?;
        let g = GroupId::from_be_bytes(k.value()[..4].try_into().unwrap_or_default());
        let e: Entry = store::decode(v.value())?;
        groups
            .entry(g)
            .or_default()
            .entries
            .insert(e.log_id.index, e);
    }
    let raft = tx.open_table(RAFT)?;
    for row in raft.iter()? {
        let (k, v) = row?;
        let k = k.value();
        let g = GroupId::from_be_bytes(k[..4].try_into().unwrap_or_default());
        match &k[4..] {
            b"vote" => groups.entry(g).or_default().vote = Some(store::decode(v.value())?),
            b"purged" => {
                groups.entry(g).or_default().purged = store::decode::<Option<LogId>>(v.value())?
            }
            _ => {}
        }
    }
    Ok(groups)
}

/// Deletes the redb log rows once the write-ahead log holds them.
fn drop_legacy(db: &Database, groups: &Groups) -> Result<(), DbError> {
    let tx = store::begin_durable_write(db)?;
    {
        let mut log = tx.open_table(LOG)?;
        log.retain(|_, _| false)?;
        let mut raft = tx.open_table(RAFT)?;
        for g in groups.keys() {
            raft.remove(key::raft(*g, "vote").as_slice())?;
            raft.remove(key::raft(*g, "purged").as_slice())?;
        }
    }
    tx.commit()?;
    Ok(())
}

impl Wal {
    /// Opens the log in `dir` (creating it), replays it, and starts the
    /// writer thread. A node whose logs are still in `legacy` (written by an
    /// older Strata) has them moved here.
    pub fn open(dir: &Path, legacy: &Database) -> Result<Wal, DbError> {
        Self::open_sized(dir, legacy, SEGMENT_BYTES)
    }

    fn open_sized(dir: &Path, legacy: &Database, segment_bytes: u64) -> Result<Wal, DbError> {
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        let existing = segments(dir)?;
        let mut groups = Groups::new();
        let mut last_seq = 0;
        for (seq, path) in &existing {
            for record in read_segment(path)? {
                apply(&mut groups, record);
            }
            last_seq = *seq;
        }
        let migrated = existing.is_empty() && {
            groups = legacy_state(legacy)?;
            !groups.is_empty()
        };
        let segment = Segment::create(dir, last_seq + 1, segment_bytes, &groups)?;
        if migrated {
            drop_legacy(legacy, &groups)?;
        }
        let groups = Arc::new(Mutex::new(groups));
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let state = groups.clone();
        let thread = std::thread::Builder::new()
            .name("strata-wal".into())
            .spawn(move || write_loop(segment, rx, state))
            .map_err(|e| DbError::Storage(format!("cannot start the log writer: {e}")))?;
        Ok(Wal {
            groups,
            appended: Default::default(),
            jobs,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Writes what is queued, then ends the writer thread and waits for it.
    pub async fn stop(&self) {
        let _ = self.jobs.send(Job::Stop);
        let thread = self.thread.lock().unwrap().take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }

    /// Applies `record` to the in-memory state and queues it for the disk, in
    /// one step so the order on disk is the order in memory.
    fn submit(&self, record: Record, done: Done) {
        let payload = store::encode(&record);
        if let Record::Append { group, .. } = &record {
            *self.appended.lock().unwrap().entry(*group).or_default() += payload.len() as u64;
        }
        let mut groups = self.groups.lock().unwrap();
        apply(&mut groups, record);
        if let Err(std::sync::mpsc::SendError(Job::Write(_, done))) =
            self.jobs.send(Job::Write(payload, done))
        {
            done.finish(&Err("the log writer stopped".into()));
        }
    }

    async fn submit_and_wait(&self, record: Record) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(record, Done::Reply(tx));
        rx.await.map_err(|_| "the log writer stopped".to_string())?
    }

    /// Queues `entries`; they are readable at once, and `callback` fires once
    /// they are durable.
    pub fn append(&self, group: GroupId, entries: Vec<Entry>, callback: IOFlushed<TypeConfig>) {
        self.submit(Record::Append { group, entries }, Done::Flushed(callback));
    }

    pub async fn truncate(&self, group: GroupId, from: u64) -> Result<(), String> {
        self.submit_and_wait(Record::Truncate { group, from }).await
    }

    pub async fn purge(&self, group: GroupId, upto: LogId) -> Result<(), String> {
        self.submit_and_wait(Record::Purge { group, upto }).await
    }

    pub async fn save_vote(&self, group: GroupId, vote: Vote) -> Result<(), String> {
        self.submit_and_wait(Record::Vote { group, vote }).await
    }

    /// Whether `group` appended more than `bytes` of entries since this
    /// last answered yes for it; a yes starts the count again.
    pub fn appended_over(&self, group: GroupId, bytes: u64) -> bool {
        let mut appended = self.appended.lock().unwrap();
        let n = appended.entry(group).or_default();
        let over = *n > bytes;
        if over {
            *n = 0;
        }
        over
    }

    pub fn vote(&self, group: GroupId) -> Option<Vote> {
        self.groups.lock().unwrap().get(&group).and_then(|g| g.vote)
    }

    /// (last purged, last present) log ids of `group`.
    pub fn log_state(&self, group: GroupId) -> (Option<LogId>, Option<LogId>) {
        let groups = self.groups.lock().unwrap();
        let Some(g) = groups.get(&group) else {
            return (None, None);
        };
        let last = g
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(g.purged);
        (g.purged, last)
    }

    pub fn entries(&self, group: GroupId, range: impl std::ops::RangeBounds<u64>) -> Vec<Entry> {
        let groups = self.groups.lock().unwrap();
        groups
            .get(&group)
            .map(|g| g.entries.range(range).map(|(_, e)| e.clone()).collect())
            .unwrap_or_default()
    }
}

/// The writer thread: takes whatever queued up, writes it as one batch with
/// one fdatasync, then answers every job in the batch.
fn write_loop(
    mut segment: Segment,
    rx: std::sync::mpsc::Receiver<Job>,
    groups: Arc<Mutex<Groups>>,
) {
    // After a failed write the page cache may not match the disk, so nothing
    // more is acknowledged (the node must restart and replay).
    let mut failed: Option<String> = None;
    let mut stopping = false;
    while !stopping && let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        for job in std::iter::once(first).chain(rx.try_iter()) {
            match job {
                Job::Write(p, d) if !stopping => batch.push((p, d)),
                Job::Write(_, d) => d.finish(&Err("the log writer stopped".into())),
                Job::Stop => stopping = true,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let result = match &failed {
            Some(why) => Err(why.clone()),
            None => {
                let payloads: Vec<&[u8]> = batch.iter().map(|(p, _)| p.as_slice()).collect();
                if segment.fits(&payloads) {
                    segment.write(&payloads)
                } else {
                    rotate(&mut segment, &rx, &groups, &mut batch, &mut stopping)
                }
            }
        };
        if let Err(why) = &result {
            tracing::error!(error = %why, "write-ahead log write failed; this node stops acknowledging writes");
            failed = Some(why.clone());
        }
        for (_, done) in batch {
            done.finish(&result);
        }
    }
}

/// Starts the next segment with a checkpoint of the state, which covers the
/// batch in hand and every job queued so far (taken under the same lock that
/// orders them), so none of them is written separately.
fn rotate(
    segment: &mut Segment,
    rx: &std::sync::mpsc::Receiver<Job>,
    groups: &Mutex<Groups>,
    batch: &mut Vec<(Vec<u8>, Done)>,
    stopping: &mut bool,
) -> Result<(), String> {
    let state = {
        let g = groups.lock().unwrap();
        for job in rx.try_iter() {
            match job {
                Job::Write(p, d) => batch.push((p, d)),
                Job::Stop => *stopping = true,
            }
        }
        g.clone()
    };
    *segment = Segment::create(&segment.dir, segment.seq + 1, segment.size, &state)
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft_types::CommittedLeaderId;
    use openraft::EntryPayload;
    use openraft::vote::RaftLeaderId;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn legacy(dir: &Path) -> Arc<Database> {
        store::open(&dir.join("meta.redb")).unwrap()
    }

    fn indexes(wal: &Wal, g: GroupId) -> Vec<u64> {
        wal.entries(g, ..).iter().map(|e| e.log_id.index).collect()
    }

    async fn write(wal: &Wal, g: GroupId, entries: Vec<Entry>) {
        // Through truncate's reply: it is durable only after the append
        // queued before it, so returning means both are on disk.
        let (tx, rx) = tokio::sync::oneshot::channel();
        wal.submit(Record::Append { group: g, entries }, Done::Reply(tx));
        rx.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn writes_survive_a_reopen_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = legacy(dir.path());
        let wdir = dir.path().join("wal");
        {
            let wal = Wal::open(&wdir, &db).unwrap();
            write(&wal, 1, (1..=5).map(|i| entry(1, i)).collect()).await;
            write(&wal, 2, vec![entry(1, 1)]).await;
            wal.truncate(1, 4).await.unwrap();
            wal.purge(1, LogId::new(CommittedLeaderId::new(1, 1), 2))
                .await
                .unwrap();
            wal.save_vote(1, Vote::new(3, 1)).await.unwrap();
            wal.stop().await;
        }
        // Garbage after the last record, as a crash mid-write leaves.
        let (_, seg) = segments(&wdir).unwrap().pop().unwrap();
        let bytes = std::fs::read(&seg).unwrap();
        let end = {
            let mut pos = 0;
            loop {
                let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
                if len == 0 {
                    break pos;
                }
                pos += HEADER + len;
            }
        };
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(
            &[0, 0, 0, 40, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 99, 7],
            end as u64,
        )
        .unwrap();
        let wal = Wal::open(&wdir, &db).unwrap();
        assert_eq!(indexes(&wal, 1), vec![3]);
        assert_eq!(indexes(&wal, 2), vec![1]);
        assert_eq!(wal.vote(1), Some(Vote::new(3, 1)));
        assert_eq!(wal.log_state(1).0.map(|l| l.index), Some(2));
        // Opening wrote a checkpoint into a new segment and dropped the old.
        assert_eq!(segments(&wdir).unwrap().len(), 1);
        write(&wal, 1, vec![entry(2, 4)]).await;
        wal.stop().await;
        let wal = Wal::open(&wdir, &db).unwrap();
        assert_eq!(indexes(&wal, 1), vec![3, 4]);
        wal.stop().await;
    }

    #[tokio::test]
    async fn a_full_segment_rolls_over_to_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let db = legacy(dir.path());
        let wdir = dir.path().join("wal");
        let wal = Wal::open_sized(&wdir, &db, 16 << 10).unwrap();
        // Far more than one 16 KiB segment holds, purging as a snapshotting
        // group would, so the live state stays small.
        for r in 0..200u64 {
            write(
                &wal,
                1,
                (r * 50 + 1..=(r + 1) * 50).map(|i| entry(1, i)).collect(),
            )
            .await;
            let upto = LogId::new(CommittedLeaderId::new(1, 1), (r + 1) * 50 - 10);
            wal.purge(1, upto).await.unwrap();
        }
        let segs = segments(&wdir).unwrap();
        assert_eq!(segs.len(), 1, "older segments are deleted");
        assert!(segs[0].0 > 2, "the log rolled over more than once");
        wal.stop().await;
        let wal = Wal::open(&wdir, &db).unwrap();
        assert_eq!(indexes(&wal, 1), (9_991..=10_000).collect::<Vec<_>>());
        wal.stop().await;
    }

    #[tokio::test]
    async fn logs_kept_in_redb_move_into_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = legacy(dir.path());
        {
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(LOG).unwrap();
                for i in 1..=3 {
                    t.insert(
                        key::log(2, i).as_slice(),
                        store::encode(&entry(1, i)).as_slice(),
                    )
                    .unwrap();
                }
                tx.open_table(RAFT)
                    .unwrap()
                    .insert(
                        key::raft(2, "vote").as_slice(),
                        store::encode(&Vote::new(1, 1)).as_slice(),
                    )
                    .unwrap();
            }
            tx.commit().unwrap();
        }
        let wdir = dir.path().join("wal");
        let wal = Wal::open(&wdir, &db).unwrap();
        assert_eq!(indexes(&wal, 2), vec![1, 2, 3]);
        assert_eq!(wal.vote(2), Some(Vote::new(1, 1)));
        wal.stop().await;
        let tx = db.begin_read().unwrap();
        assert_eq!(tx.open_table(LOG).unwrap().iter().unwrap().count(), 0);
        let wal = Wal::open(&wdir, &db).unwrap();
        assert_eq!(indexes(&wal, 2), vec![1, 2, 3]);
        wal.stop().await;
    }

    /// A node that loaded 10 M inodes wrote a checkpoint of about 1 GB and
    /// then refused to start: records were decoded with a row's bound
    /// (256 MiB). A checkpoint above that bound must read back.
    #[tokio::test]
    async fn a_checkpoint_larger_than_a_row_reads_back() {
        use crate::request::{LogRequest, WriteRequest};
        let dir = tempfile::tempdir().unwrap();
        let db = legacy(dir.path());
        let wdir = dir.path().join("wal");
        // A string field: bincode copies it whole, where a Vec<u8> goes a
        // byte at a time (minutes for these 260 MiB in a debug build).
        let big = |index: u64| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(LogRequest {
                req: WriteRequest::RegisterNode {
                    id: index,
                    addr: char::from(b'a' + (index % 26) as u8)
                        .to_string()
                        .repeat(1 << 20),
                    groups: Vec::new(),
                },
                origin: None,
                at: crate::types::Timestamp { sec: 1, nsec: 0 },
            }),
        };
        let count = 260u64;
        {
            let wal = Wal::open(&wdir, &db).unwrap();
            for i in 1..=count {
                write(&wal, 1, vec![big(i)]).await;
            }
            wal.stop().await;
        }
        // This open reads the appends and writes them as one checkpoint
        // (over 256 MiB); the next one reads that checkpoint.
        Wal::open(&wdir, &db).unwrap().stop().await;
        let wal = Wal::open(&wdir, &db).unwrap();
        assert_eq!(indexes(&wal, 1), (1..=count).collect::<Vec<_>>());
        assert_eq!(wal.entries(1, count..), vec![big(count)]);
        wal.stop().await;
    }

    #[test]
    fn appended_bytes_are_counted_per_group_until_they_pass_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let db = legacy(dir.path());
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let wal = Wal::open(&dir.path().join("wal"), &db).unwrap();
            write(&wal, 1, (1..=100).map(|i| entry(1, i)).collect()).await;
            let one_append = store::encode(&Record::Append {
                group: 1,
                entries: (1..=100).map(|i| entry(1, i)).collect(),
            })
            .len() as u64;
            assert!(!wal.appended_over(2, 0), "group 2 appended nothing");
            assert!(!wal.appended_over(1, one_append), "not more than the bound");
            assert!(wal.appended_over(1, one_append - 1));
            assert!(!wal.appended_over(1, 0), "a yes starts the count again");
            wal.stop().await;
        });
    }
}
