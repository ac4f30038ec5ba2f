//! A group's Raft log: openraft's view of one group in the node's
//! write-ahead log (`wal.rs`).

use std::fmt::Debug;
use std::ops::RangeBounds;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, RaftLogReader, StorageIOError};

use crate::raft_types::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::server::wal::Wal;
use crate::types::GroupId;

#[derive(Clone)]
pub struct LogStore {
    wal: Wal,
    group: GroupId,
}

fn io_err(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

impl LogStore {
    pub fn new(wal: Wal, group: GroupId) -> Self {
        LogStore { wal, group }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.wal.entries(self.group, range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let (purged, last) = self.wal.log_state(self.group);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.wal
            .save_vote(self.group, *vote)
            .await
            .map_err(|e| StorageIOError::write_vote(io_err(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.wal.vote(self.group))
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
        self.wal
            .append(self.group, entries.into_iter().collect(), callback);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.wal
            .truncate(self.group, log_id.index)
            .await
            .map_err(|e| StorageIOError::write_logs(io_err(e)).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.wal
            .purge(self.group, log_id)
            .await
            .map_err(|e| StorageIOError::write_logs(io_err(e)).into())
    }
}
