//! The metaserver node: hosts Raft groups, serves clients and peers on one port.
//!
//! The node (this file) and its rooms: `start` (data dir, groups, the
//! one-node bootstrap), `membership` (joins, cluster formation, adding and
//! removing nodes), `serve` (a client request: reads under a read lease,
//! writes through the log), `listener` (the port and frame dispatch),
//! `recovery` (transactions a client left half done), `prewarm` (the
//! state database read ahead after a start), `raft` (a group's
//! Raft type and configuration), `network` (Raft RPCs between nodes),
//! `wal` and `log_store` (the Raft logs), `state_machine` and `store` (the
//! rows in redb), and `ops/` (what each request does to the rows).

mod access;
mod disk_room;
mod hand_over;
mod listener;
mod log_bound;
mod log_store;
mod membership;
mod network;
pub(crate) mod ops;
mod power_loss;
mod prewarm;
mod raft;
mod recovery;
mod serve;
mod start;
pub(crate) mod state_machine;
#[cfg(test)]
mod storage_suite;
pub(crate) mod store;
mod subtree;
mod wal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use redb::Database;

use crate::rpc::ConnPool;
use crate::types::*;
use crate::wire::GroupStatus;

pub(crate) use log_store::LogStore;
pub(crate) use raft::Raft;
use serve::ReadLease;
pub(crate) use state_machine::StateMachine;
pub(crate) use wal::Wal;

/// Partition groups a fresh single-node cluster creates next to group 0.
pub(crate) const DEFAULT_PARTITION_GROUPS: u32 = 1;

#[derive(thiserror::Error, Debug)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error(transparent)]
    Db(#[from] store::DbError),
    #[error("data dir {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    #[error(
        "this data dir belongs to node {found}, not node {wanted}; pass --id {found} or use another --data-dir"
    )]
    WrongNode { found: NodeId, wanted: NodeId },
    #[error("raft group {group} failed to start: {reason}")]
    Raft { group: GroupId, reason: String },
}

pub struct NodeConfig {
    pub id: NodeId,
    /// Address to bind, e.g. `127.0.0.1:7700`; port 0 picks a free one.
    pub listen: String,
    pub data_dir: PathBuf,
    /// Log entries applied since the last snapshot that trigger a new one.
    pub snapshot_logs: u64,
    /// TLS with mutual authentication for the TCP listener and for this
    /// node's connections to other nodes (None: plain TCP).
    pub tls: Option<crate::tls::Tls>,
    /// Read the state database into the page cache after starting, where
    /// it fits (`prewarm`).
    pub prewarm: bool,
}

/// Default of `NodeConfig::snapshot_logs`.
pub const DEFAULT_SNAPSHOT_LOGS: u64 = 20_000;

pub struct MetaNode {
    pub id: NodeId,
    /// The address peers and clients reach this node at.
    pub addr: String,
    db: Arc<Database>,
    /// Raft instances by group; grows when the node bootstraps or joins.
    groups: std::sync::RwLock<HashMap<GroupId, Raft>>,
    /// Serialises bootstrap, joins and cluster formation.
    membership_lock: tokio::sync::Mutex<()>,
    pool: ConnPool,
    /// This node's TLS, also used when it calls other nodes as a client.
    tls: Option<crate::tls::Tls>,
    /// Filesystem numbers by name, for clients whose grant names one.
    fs_ids: std::sync::Mutex<HashMap<String, FsId>>,
    /// Parents found for clients confined to a subtree (see `subtree`).
    parent_memory: subtree::ParentMemory,
    /// Where the node keeps its database, logs and snapshots.
    data_dir: PathBuf,
    snapshot_dir: PathBuf,
    snapshot_logs: u64,
    /// The logs and votes of all groups, one fsync per batch (see `Wal`).
    wal: Wal,
    /// Room on the data disk, checked before taking a change.
    disk_room: disk_room::DiskRoom,
    /// Per group this node leads: until when reads need no confirmation.
    read_leases: std::sync::Mutex<HashMap<GroupId, ReadLease>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    /// The accept loop and every connection task, so shutdown can wait for them.
    tasks: tokio_util::task::TaskTracker,
}

impl MetaNode {
    pub fn groups(&self) -> Vec<GroupId> {
        let mut g: Vec<_> = self.groups.read().unwrap().keys().copied().collect();
        g.sort();
        g
    }

    pub(crate) fn raft(&self, g: GroupId) -> Option<Raft> {
        self.groups.read().unwrap().get(&g).cloned()
    }

    /// Leader, term, log and applied index of every group on this node.
    pub(crate) fn status(&self) -> Vec<GroupStatus> {
        let mut out: Vec<GroupStatus> = self
            .groups
            .read()
            .unwrap()
            .iter()
            .map(|(g, raft)| {
                let m = raft.metrics().borrow_watched().clone();
                GroupStatus {
                    group: *g,
                    leader: m.current_leader,
                    term: m.current_term,
                    last_log: m.last_log_index,
                    applied: m.last_applied.map(|l| l.index),
                    voters: m.membership_config.membership().voter_ids().collect(),
                }
            })
            .collect();
        out.sort_by_key(|s| s.group);
        out
    }

    /// Stops serving and shuts every group down; the database stays consistent.
    /// Returns once no task of this node uses the database any more.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        self.tasks.close();
        self.tasks.wait().await;
        let rafts: Vec<Raft> = self.groups.read().unwrap().values().cloned().collect();
        for raft in rafts {
            let _ = raft.shutdown().await;
        }
        self.wal.stop().await;
    }

    /// A handle that dies with the last user of the database (tests reopen it).
    pub fn database_weak(&self) -> std::sync::Weak<Database> {
        Arc::downgrade(&self.db)
    }
}

impl crate::metrics::GroupSource for MetaNode {
    fn node_id(&self) -> NodeId {
        self.id
    }

    fn group_gauges(&self) -> Vec<crate::metrics::GroupGauges> {
        self.groups
            .read()
            .unwrap()
            .iter()
            .map(|(g, raft)| {
                let m = raft.metrics().borrow_watched().clone();
                crate::metrics::GroupGauges {
                    group: *g,
                    leader: m.current_leader,
                    term: m.current_term,
                    last_log: m.last_log_index,
                    committed: m.local_committed.map(|l| l.index),
                    applied: m.last_applied.map(|l| l.index),
                }
            })
            .collect()
    }

    fn db_bytes(&self) -> u64 {
        std::fs::metadata(self.data_dir.join("meta.redb")).map_or(0, |m| m.len())
    }

    fn led_quotas(&self) -> Vec<(GroupId, FsId, crate::metrics::QuotaCounts)> {
        self.per_led_group(state_machine::quotas_by_fs)
    }

    fn led_usage(&self) -> Vec<(GroupId, FsId, Usage)> {
        self.per_led_group(state_machine::usage_by_fs)
    }
}

/// Reads one group's rows per filesystem (usage, quotas) for a scrape.
type PerFs<T> = fn(&Database, GroupId) -> Result<Vec<(FsId, T)>, store::DbError>;

impl MetaNode {
    /// `read` of each group this node leads, per filesystem, for a scrape.
    fn per_led_group<T>(&self, read: PerFs<T>) -> Vec<(GroupId, FsId, T)> {
        crate::metrics::GroupSource::group_gauges(self)
            .into_iter()
            .filter(|g| g.leader == Some(self.id))
            .flat_map(|g| {
                read(&self.db, g.group)
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |(fs, v)| (g.group, fs, v))
            })
            .collect()
    }
}

/// Where a data dir keeps the address of the node that runs on it, so tools can
/// find a running embedded metaserver.
pub fn addr_file(data_dir: &Path) -> PathBuf {
    data_dir.join("meta.addr")
}
