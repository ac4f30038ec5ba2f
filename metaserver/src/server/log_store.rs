//! A group's Raft log: openraft's view of one group in the node's
//! write-ahead log (`wal.rs`).

use std::fmt::Debug;
use std::ops::RangeBounds;

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};

use crate::raft_types::{Entry, LogId, TypeConfig, Vote};
use crate::server::wal::Wal;
use crate::types::GroupId;

#[derive(Clone)]
pub struct LogStore {
    wal: Wal,
    group: GroupId,
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
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
    ) -> Result<Vec<Entry>, std::io::Error> {
        Ok(self.wal.entries(self.group, range))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, std::io::Error> {
        Ok(self.wal.vote(self.group))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, std::io::Error> {
        let (purged, last) = self.wal.log_state(self.group);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), std::io::Error> {
        self.wal.save_vote(self.group, *vote).await.map_err(io_err)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), std::io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.wal
            .append(self.group, entries.into_iter().collect(), callback);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), std::io::Error> {
        // Everything after `last_log_id` goes: from its next index on.
        let from = last_log_id.map_or(0, |l| l.index + 1);
        self.wal.truncate(self.group, from).await.map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), std::io::Error> {
        self.wal.purge(self.group, log_id).await.map_err(io_err)
    }
}
