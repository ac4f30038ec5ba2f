//! A group's Raft log in the node's redb database.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, RaftLogReader, StorageIOError};
use redb::{Database, Durability, ReadableDatabase};

use crate::raft_types::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::server::store::{self, LOG, RAFT, Rows, RowsMut, key};
use crate::types::GroupId;

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    group: GroupId,
    writer: LogWriter,
}

/// Entries appended but not yet durable, by log key, so readers see them at
/// once (openraft reads what it appended before the append is flushed).
type Pending = Arc<std::sync::Mutex<std::collections::BTreeMap<Vec<u8>, Entry>>>;

/// A write the log writer runs in its place in the queue.
type InOrderWrite = Box<dyn FnOnce(&Database) -> Result<(), store::StoreError> + Send>;

/// Something the log writer thread does, in the order it was asked.
enum Job {
    Append {
        group: GroupId,
        entries: Vec<Entry>,
        callback: LogFlushed<TypeConfig>,
    },
    /// A truncate, purge or vote: runs after every append queued before it.
    Run(
        InOrderWrite,
        tokio::sync::oneshot::Sender<Result<(), String>>,
    ),
    /// Shutdown: the thread ends after the jobs queued before this one.
    Stop,
}

/// Writes the Raft logs of every group of a node, on one thread, so one
/// durable commit (one fsync) covers every append that queued up meanwhile,
/// whichever group it belongs to. An append returns as soon as its entries are
/// queued and readable from `pending`; its callback, which lets openraft count
/// the entries toward a quorum, fires after the commit that made them durable.
#[derive(Clone)]
pub struct LogWriter {
    jobs: std::sync::mpsc::Sender<Job>,
    pending: Pending,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl LogWriter {
    /// Starts the writer thread; it ends when the last clone is gone.
    pub fn start(db: &Arc<Database>) -> LogWriter {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let pending: Pending = Default::default();
        // Weak, so a node that shut down can have its database reopened.
        let db = Arc::downgrade(db);
        let written = pending.clone();
        let thread = std::thread::Builder::new()
            .name("strata-log-writer".into())
            .spawn(move || {
                let mut stopping = false;
                while !stopping && let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let Some(db) = db.upgrade() else {
                        fail_all(batch, "the database is closed");
                        continue;
                    };
                    let mut appends = Vec::new();
                    for job in batch {
                        match job {
                            _ if stopping => fail_all(vec![job], "the log writer stopped"),
                            Job::Append { .. } => appends.push(job),
                            Job::Run(f, reply) => {
                                write_appends(&db, &written, std::mem::take(&mut appends));
                                let _ = reply.send(f(&db).map_err(|e| e.to_string()));
                            }
                            Job::Stop => {
                                write_appends(&db, &written, std::mem::take(&mut appends));
                                stopping = true;
                            }
                        }
                    }
                    write_appends(&db, &written, appends);
                }
            })
            .expect("the log writer thread starts");
        LogWriter {
            jobs,
            pending,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        }
    }

    /// Writes what is queued, then ends the thread and waits for it, so the
    /// database is not held once this returns.
    pub async fn stop(&self) {
        let _ = self.jobs.send(Job::Stop);
        let thread = self.thread.lock().unwrap().take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }

    /// Queues `f` behind every append queued so far and waits for it.
    async fn run(
        &self,
        f: impl FnOnce(&Database) -> Result<(), store::StoreError> + Send + 'static,
    ) -> Result<(), String> {
        let (reply, done) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job::Run(Box::new(f), reply))
            .map_err(|_| "the log writer stopped".to_string())?;
        done.await
            .map_err(|_| "the log writer stopped".to_string())?
    }
}

fn fail_all(batch: Vec<Job>, why: &str) {
    for job in batch {
        match job {
            Job::Append { callback, .. } => {
                callback.log_io_completed(Err(std::io::Error::other(why.to_string())))
            }
            Job::Run(_, reply) => {
                let _ = reply.send(Err(why.to_string()));
            }
            Job::Stop => {}
        }
    }
}

/// Writes `appends` in one durable commit, then answers their callbacks.
fn write_appends(db: &Database, pending: &Pending, appends: Vec<Job>) {
    if appends.is_empty() {
        return;
    }
    let commit = || -> Result<(), store::StoreError> {
        let mut tx = db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        {
            let mut t = tx.open_table(LOG)?;
            for job in &appends {
                if let Job::Append { group, entries, .. } = job {
                    for e in entries {
                        t.put(&key::log(*group, e.log_id.index), e)?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    };
    let result = commit().map_err(|e| e.to_string());
    if result.is_ok() {
        let mut p = pending.lock().unwrap();
        for job in &appends {
            if let Job::Append { group, entries, .. } = job {
                for e in entries {
                    let k = key::log(*group, e.log_id.index);
                    // Only if not replaced by a later append since.
                    if p.get(&k).is_some_and(|x| x.log_id == e.log_id) {
                        p.remove(&k);
                    }
                }
            }
        }
    }
    for job in appends {
        if let Job::Append { callback, .. } = job {
            callback.log_io_completed(result.clone().map_err(std::io::Error::other));
        }
    }
}

fn io_err(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

impl LogStore {
    pub fn new(db: Arc<Database>, group: GroupId, writer: LogWriter) -> Self {
        LogStore { db, group, writer }
    }

    /// Runs a write behind every append queued so far (openraft needs every
    /// write of a group's log and vote done in the order it asked for them).
    async fn in_order(
        &self,
        f: impl FnOnce(&Database, GroupId) -> Result<(), store::StoreError> + Send + 'static,
    ) -> Result<(), String> {
        let g = self.group;
        self.writer.run(move |db| f(db, g)).await
    }

    /// Entries of this group not yet durable, with index in `start..end`.
    fn pending(&self, start: u64, end: Option<u64>) -> Vec<Entry> {
        let lo = key::log(self.group, start);
        let hi = match end {
            Some(e) => key::log(self.group, e),
            None => key::log(self.group + 1, 0),
        };
        self.writer
            .pending
            .lock()
            .unwrap()
            .range(lo..hi)
            .map(|(_, e)| e.clone())
            .collect()
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Database, GroupId) -> Result<R, store::StoreError> + Send + 'static,
    ) -> Result<R, store::StoreError> {
        let db = self.db.clone();
        let g = self.group;
        tokio::task::spawn_blocking(move || f(&db, g))
            .await
            .map_err(|e| store::StoreError::Db(format!("storage task failed: {e}")))?
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        db: &Database,
        g: GroupId,
        name: &str,
    ) -> Result<Option<T>, store::StoreError> {
        let tx = db.begin_read()?;
        let t = tx.open_table(RAFT)?;
        t.load(&key::raft(g, name))
    }

    fn write_meta<T: serde::Serialize>(
        db: &Database,
        g: GroupId,
        name: &str,
        v: &T,
    ) -> Result<(), store::StoreError> {
        let mut tx = db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        tx.open_table(RAFT)?.put(&key::raft(g, name), v)?;
        tx.commit()?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Some(i + 1),
            Bound::Excluded(&i) => Some(i),
            Bound::Unbounded => None,
        };
        // Pending first: an entry leaves it only once it is in the database.
        let pending = self.pending(start, end);
        let stored = self
            .blocking(move |db, g| {
                let tx = db.begin_read()?;
                let t = tx.open_table(LOG)?;
                let lo = key::log(g, start);
                let hi = match end {
                    Some(e) => key::log(g, e),
                    None => key::log(g + 1, 0),
                };
                let mut out = Vec::new();
                for row in t.range::<&[u8]>(lo.as_slice()..hi.as_slice())? {
                    let (_, v) = row?;
                    out.push(store::decode::<Entry>(v.value())?);
                }
                Ok(out)
            })
            .await
            .map_err(|e| StorageIOError::read_logs(io_err(e)))?;
        let mut by_index: std::collections::BTreeMap<u64, Entry> =
            stored.into_iter().map(|e| (e.log_id.index, e)).collect();
        by_index.extend(pending.into_iter().map(|e| (e.log_id.index, e)));
        Ok(by_index.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let pending_last = self.pending(0, None).last().map(|e| e.log_id);
        let mut state = self
            .blocking(|db, g| {
                let purged: Option<LogId> = Self::read_meta(db, g, "purged")?.flatten();
                let tx = db.begin_read()?;
                let t = tx.open_table(LOG)?;
                let lo = key::log(g, 0);
                let hi = key::log(g + 1, 0);
                let last = match t.range::<&[u8]>(lo.as_slice()..hi.as_slice())?.next_back() {
                    Some(row) => Some(store::decode::<Entry>(row?.1.value())?.log_id),
                    None => purged,
                };
                Ok(LogState {
                    last_purged_log_id: purged,
                    last_log_id: last,
                })
            })
            .await
            .map_err(|e| StorageIOError::read_logs(io_err(e)))?;
        if pending_last > state.last_log_id {
            state.last_log_id = pending_last;
        }
        Ok(state)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        self.in_order(move |db, g| Self::write_meta(db, g, "vote", &vote))
            .await
            .map_err(|e| StorageIOError::write_vote(io_err(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.blocking(|db, g| Self::read_meta(db, g, "vote"))
            .await
            .map_err(|e| StorageIOError::read_vote(io_err(e)).into())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        {
            let mut p = self.writer.pending.lock().unwrap();
            for e in &entries {
                p.insert(key::log(self.group, e.log_id.index), e.clone());
            }
        }
        let job = Job::Append {
            group: self.group,
            entries,
            callback,
        };
        if let Err(std::sync::mpsc::SendError(job)) = self.writer.jobs.send(job) {
            fail_all(vec![job], "the log writer stopped");
            return Err(StorageIOError::write_logs(io_err("the log writer stopped")).into());
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let pending = self.writer.pending.clone();
        self.in_order(move |db, g| {
            let lo = key::log(g, log_id.index);
            let hi = key::log(g + 1, 0);
            // Appends queued before this one are in the database by now.
            pending.lock().unwrap().retain(|k, _| *k < lo || *k >= hi);
            let mut tx = db.begin_write()?;
            tx.set_durability(Durability::Immediate)?;
            {
                let mut t = tx.open_table(LOG)?;
                t.retain_in::<&[u8], _>(lo.as_slice()..hi.as_slice(), |_, _| false)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(io_err(e)).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.in_order(move |db, g| {
            let mut tx = db.begin_write()?;
            tx.set_durability(Durability::Immediate)?;
            {
                tx.open_table(RAFT)?
                    .put(&key::raft(g, "purged"), &Some(log_id))?;
                let mut t = tx.open_table(LOG)?;
                let lo = key::log(g, 0);
                let hi = key::log(g, log_id.index + 1);
                t.retain_in::<&[u8], _>(lo.as_slice()..hi.as_slice(), |_, _| false)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(io_err(e)).into())
    }
}
