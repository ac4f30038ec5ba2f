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
}

fn io_err(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

impl LogStore {
    pub fn new(db: Arc<Database>, group: GroupId) -> Self {
        LogStore { db, group }
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
        self.blocking(move |db, g| {
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
        .map_err(|e| StorageIOError::read_logs(io_err(e)).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.blocking(|db, g| {
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
        .map_err(|e| StorageIOError::read_logs(io_err(e)).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        self.blocking(move |db, g| Self::write_meta(db, g, "vote", &vote))
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
        // Durable before the callback: openraft counts this entry toward a quorum.
        let res = self
            .blocking(move |db, g| {
                let mut tx = db.begin_write()?;
                tx.set_durability(Durability::Immediate)?;
                {
                    let mut t = tx.open_table(LOG)?;
                    for e in &entries {
                        t.put(&key::log(g, e.log_id.index), e)?;
                    }
                }
                tx.commit()?;
                Ok(())
            })
            .await;
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(io_err(e)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |db, g| {
            let mut tx = db.begin_write()?;
            tx.set_durability(Durability::Immediate)?;
            {
                let mut t = tx.open_table(LOG)?;
                let lo = key::log(g, log_id.index);
                let hi = key::log(g + 1, 0);
                t.retain_in::<&[u8], _>(lo.as_slice()..hi.as_slice(), |_, _| false)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(io_err(e)).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |db, g| {
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
