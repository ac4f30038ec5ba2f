//! The metaserver node: hosts Raft groups, serves clients and peers on one port.

pub mod dump;
pub mod garbage;
pub mod locks;
mod log_store;
mod network;
pub mod ops;
mod rename;
pub mod snapshot;
pub(crate) mod state_machine;
pub mod store;
pub mod txn;
mod wal;
pub mod xattr;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::raft::ReadPolicy;
use openraft::{BasicNode, Config, SnapshotPolicy};
use openraft_legacy::network_v1::ChunkedSnapshotReceiver;
use redb::{Database, ReadableDatabase};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::MetaError;
use crate::request::{LogRequest, MetaRequest, MetaResult, Origin};
use crate::rpc::ConnPool;
use crate::types::*;
use crate::wire::{self, Frame, GroupStatus, Request, Response};

pub use log_store::LogStore;
pub use state_machine::StateMachine;
pub use wal::Wal;

/// One group's Raft instance on this node.
pub type Raft = openraft::Raft<crate::raft_types::TypeConfig, StateMachine>;

/// Partition groups a fresh single-node cluster creates next to group 0.
pub const DEFAULT_PARTITION_GROUPS: u32 = 1;

#[derive(thiserror::Error, Debug)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error(transparent)]
    Store(#[from] store::StoreError),
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
}

/// Default of `NodeConfig::snapshot_logs`.
pub const DEFAULT_SNAPSHOT_LOGS: u64 = 20_000;

#[derive(serde::Serialize, serde::Deserialize)]
struct NodeRecord {
    id: NodeId,
    groups: Vec<GroupId>,
}

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
    snapshot_dir: PathBuf,
    snapshot_logs: u64,
    /// The logs and votes of all groups, one fsync per batch (see `Wal`).
    wal: Wal,
    /// Per group this node leads: until when reads need no confirmation.
    read_leases: std::sync::Mutex<HashMap<GroupId, ReadLease>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    /// The accept loop and every connection task, so shutdown can wait for them.
    tasks: tokio_util::task::TaskTracker,
}

/// Raft timing, shared by `raft_config` and the read lease.
const HEARTBEAT_MS: u64 = 100;
const ELECTION_TIMEOUT_MIN_MS: u64 = 400;
const ELECTION_TIMEOUT_MAX_MS: u64 = 800;
/// How long after a confirmed heartbeat the leader serves reads alone: half
/// the lease openraft's followers grant (see `MetaNode::confirm_leadership`).
const READ_LEASE: Duration = Duration::from_millis(ELECTION_TIMEOUT_MAX_MS / 2);

/// A leader's right to serve reads without confirming leadership, valid
/// while its term and membership (`epoch`) stay the same.
struct ReadLease {
    epoch: (u64, Option<crate::raft_types::LogId>),
    until: tokio::time::Instant,
}

fn raft_config(snapshot_logs: u64) -> Arc<Config> {
    let cfg = Config {
        cluster_name: "strata".into(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_logs.max(1)),
        // Keep a tail of the log so a briefly lagging follower needs no snapshot.
        max_in_snapshot_log_to_keep: (snapshot_logs / 10).min(1_000),
        // Keeps snapshot chunks far below the wire's frame limit.
        snapshot_max_chunk_size: 4 << 20,
        ..Default::default()
    };
    Arc::new(cfg.validate().expect("static raft config is valid"))
}

impl MetaNode {
    /// Opens the node's state under `data_dir` and starts serving. A node with
    /// no state waits: the first client request makes it a one-node cluster,
    /// or `strata meta init` on another node makes it a member of that cluster.
    pub async fn start(cfg: NodeConfig) -> Result<Arc<MetaNode>, ServerError> {
        let dd = |reason: String| ServerError::DataDir {
            path: cfg.data_dir.clone(),
            reason,
        };
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| dd(e.to_string()))?;
        let db = store::open(&cfg.data_dir.join("meta.redb"))?;
        let marked = store::check_format(&db).map_err(|e| dd(e.to_string()))?;
        let listener = TcpListener::bind(&cfg.listen)
            .await
            .map_err(|e| ServerError::Listen {
                addr: cfg.listen.clone(),
                reason: e.to_string(),
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| ServerError::Listen {
                addr: cfg.listen.clone(),
                reason: e.to_string(),
            })?
            .to_string();
        let record = read_node_record(&db)?;
        if let Some(r) = &record
            && r.id != cfg.id
        {
            return Err(ServerError::WrongNode {
                found: r.id,
                wanted: cfg.id,
            });
        }
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let wal = Wal::open(&cfg.data_dir.join("wal"), &db)?;
        if !marked {
            // Everything read back: the data dir is in this build's format.
            store::record_format(&db)?;
        }
        let node = Arc::new(MetaNode {
            id: cfg.id,
            addr,
            db,
            groups: Default::default(),
            membership_lock: Default::default(),
            pool: ConnPool::default(),
            snapshot_dir: cfg.data_dir.join("snapshots"),
            snapshot_logs: cfg.snapshot_logs,
            wal,
            read_leases: Default::default(),
            shutdown,
            tasks: tokio_util::task::TaskTracker::new(),
        });
        if let Some(r) = &record {
            for &g in &r.groups {
                node.start_group(g).await?;
            }
        }
        node.tasks
            .spawn(recover_transactions(node.clone(), shutdown_rx.clone()));
        node.tasks
            .spawn(accept_loop(node.clone(), listener, shutdown_rx));
        if let Some(r) = record {
            // The cluster map must carry this node's current address (the
            // embedded default binds a new port at every start).
            node.register_self(&r.groups).await?;
        }
        tracing::info!(id = node.id, addr = %node.addr, groups = ?node.groups(), "metaserver ready");
        Ok(node)
    }

    async fn start_group(&self, g: GroupId) -> Result<Raft, ServerError> {
        if let Some(r) = self.raft(g) {
            return Ok(r);
        }
        let raft = Raft::new(
            self.id,
            raft_config(self.snapshot_logs),
            network::NetworkFactory {
                group: g,
                pool: self.pool.clone(),
            },
            LogStore::new(self.wal.clone(), g),
            StateMachine::new(self.db.clone(), g, self.snapshot_dir.clone()),
        )
        .await
        .map_err(|e| ServerError::Raft {
            group: g,
            reason: e.to_string(),
        })?;
        self.groups.write().unwrap().insert(g, raft.clone());
        Ok(raft)
    }

    fn save_groups(&self) -> Result<(), ServerError> {
        write_node_record(
            &self.db,
            &NodeRecord {
                id: self.id,
                groups: self.groups(),
            },
        )?;
        Ok(())
    }

    /// Records this node's address in group 0, through whichever node leads it.
    async fn register_self(&self, groups: &[GroupId]) -> Result<(), ServerError> {
        let req = MetaRequest::RegisterNode {
            id: self.id,
            addr: self.addr.clone(),
            groups: groups.to_vec(),
        };
        if self.is_registered(&req)? {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let res = match self.serve(CLUSTER_GROUP, req.clone(), None).await {
                Err(MetaError::NotLeader {
                    leader: Some((_, addr)),
                    ..
                }) => match self
                    .pool
                    .call(
                        &addr,
                        Request::Meta {
                            group: CLUSTER_GROUP,
                            req: req.clone(),
                            origin: None,
                        },
                        Duration::from_secs(5),
                    )
                    .await
                {
                    Ok(Response::Meta(r)) => r,
                    Ok(_) => Err(MetaError::Protocol("unexpected answer".into())),
                    Err(e) => Err(MetaError::Unavailable(e.to_string())),
                },
                other => other,
            };
            match res {
                Ok(_) => return Ok(()),
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                    // Waits for an election after a restart.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    return Err(ServerError::Raft {
                        group: CLUSTER_GROUP,
                        reason: format!("registering the node failed: {e}"),
                    });
                }
            }
        }
    }

    /// Whether the local copy of the cluster map already has this exact entry.
    fn is_registered(&self, req: &MetaRequest) -> Result<bool, ServerError> {
        let MetaRequest::RegisterNode { id, addr, groups } = req else {
            return Ok(false);
        };
        let map = match state_machine::read(&self.db, CLUSTER_GROUP, MetaRequest::GetClusterMap)? {
            Ok(crate::request::MetaResponse::ClusterMap(m)) => m,
            _ => return Ok(false),
        };
        Ok(map.nodes.get(id) == Some(addr)
            && groups
                .iter()
                .all(|g| map.groups.get(g).is_some_and(|m| m.contains(id))))
    }

    /// Makes a node without state a one-node cluster: group 0 and the
    /// partition groups, each with this node as its only voter.
    async fn bootstrap(&self) -> Result<(), MetaError> {
        let _guard = self.membership_lock.lock().await;
        if read_node_record(&self.db)?.is_some() {
            return Ok(());
        }
        let groups: Vec<GroupId> = (0..=DEFAULT_PARTITION_GROUPS).collect();
        for &g in &groups {
            let raft = self
                .start_group(g)
                .await
                .map_err(|e| MetaError::Unavailable(e.to_string()))?;
            let members = BTreeMap::from([(
                self.id,
                BasicNode {
                    addr: self.addr.clone(),
                },
            )]);
            raft.initialize(members)
                .await
                .map_err(|e| MetaError::Unavailable(format!("bootstrapping group {g}: {e}")))?;
        }
        self.save_groups()
            .map_err(|e| MetaError::Storage(e.to_string()))?;
        self.register_self(&groups)
            .await
            .map_err(|e| MetaError::Unavailable(e.to_string()))?;
        tracing::info!(id = self.id, "bootstrapped a one-node cluster");
        Ok(())
    }

    /// Hosts `groups` as a member-to-be: Raft instances that wait for a leader
    /// to add them.
    async fn join(&self, groups: &[GroupId]) -> Result<(), MetaError> {
        let _guard = self.membership_lock.lock().await;
        for &g in groups {
            self.start_group(g)
                .await
                .map_err(|e| MetaError::Unavailable(e.to_string()))?;
        }
        self.save_groups()
            .map_err(|e| MetaError::Storage(e.to_string()))
    }

    /// Asks node `id` at `addr` to host `groups` as a member-to-be.
    async fn send_join(&self, id: NodeId, addr: &str, groups: &[GroupId]) -> Result<(), MetaError> {
        let req = Request::Join {
            groups: groups.to_vec(),
        };
        match self.pool.call(addr, req, Duration::from_secs(10)).await {
            Ok(Response::Join(r)) => r,
            Ok(_) => Err(MetaError::Protocol(format!("node {id} answered oddly"))),
            Err(e) => Err(MetaError::Unavailable(format!("node {id} at {addr}: {e}"))),
        }
    }

    /// Forms a cluster from this one-node cluster and fresh `peers`: they join
    /// every group, become voters, and `partition_groups` partition groups exist.
    pub async fn init_cluster(
        &self,
        peers: BTreeMap<NodeId, String>,
        partition_groups: u32,
    ) -> Result<(), MetaError> {
        if read_node_record(&self.db)?.is_none() {
            self.bootstrap().await?;
        }
        let map = match self
            .serve(CLUSTER_GROUP, MetaRequest::GetClusterMap, None)
            .await?
        {
            crate::request::MetaResponse::ClusterMap(m) => m,
            _ => return Err(MetaError::Protocol("unexpected answer".into())),
        };
        if map.nodes.len() > 1 {
            return Err(MetaError::Invalid(
                "this node is already part of a multi-node cluster".into(),
            ));
        }
        let mut members: BTreeMap<NodeId, BasicNode> = peers
            .iter()
            .map(|(id, a)| (*id, BasicNode { addr: a.clone() }))
            .collect();
        members.insert(
            self.id,
            BasicNode {
                addr: self.addr.clone(),
            },
        );
        let all_groups: Vec<GroupId> =
            (0..=partition_groups.max(DEFAULT_PARTITION_GROUPS)).collect();
        for (id, addr) in &peers {
            if *id == self.id {
                continue;
            }
            self.send_join(*id, addr, &all_groups).await?;
        }
        let voters: std::collections::BTreeSet<NodeId> = members.keys().copied().collect();
        for &g in &all_groups {
            let existed = self.raft(g).is_some();
            let raft = self
                .start_group(g)
                .await
                .map_err(|e| MetaError::Unavailable(e.to_string()))?;
            let err = |e: String| MetaError::Unavailable(format!("group {g}: {e}"));
            if existed {
                for (id, node) in &members {
                    if *id != self.id {
                        raft.add_learner(*id, node.clone(), true)
                            .await
                            .map_err(|e| err(e.to_string()))?;
                    }
                }
                raft.change_membership(voters.clone(), false)
                    .await
                    .map_err(|e| err(e.to_string()))?;
            } else {
                raft.initialize(members.clone())
                    .await
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        self.save_groups()
            .map_err(|e| MetaError::Storage(e.to_string()))?;
        for (id, addr) in &members {
            self.serve(
                CLUSTER_GROUP,
                MetaRequest::RegisterNode {
                    id: *id,
                    addr: addr.addr.clone(),
                    groups: all_groups.clone(),
                },
                None,
            )
            .await?;
        }
        tracing::info!(nodes = ?voters, groups = ?all_groups, "cluster formed");
        Ok(())
    }

    /// Adds and/or removes one voter of group `g`; this node must lead it.
    async fn change_members(
        &self,
        g: GroupId,
        add: Option<(NodeId, String)>,
        remove: Option<NodeId>,
    ) -> Result<(), MetaError> {
        let raft = self.raft(g).ok_or(MetaError::NoSuchGroup(g))?;
        let m = raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(self.id) {
            let leader = m.current_leader.and_then(|l| {
                m.membership_config
                    .membership()
                    .get_node(&l)
                    .map(|n| (l, n.addr.clone()))
            });
            return Err(MetaError::NotLeader { group: g, leader });
        }
        let mut voters: std::collections::BTreeSet<NodeId> =
            m.membership_config.membership().voter_ids().collect();
        let err = |e: String| MetaError::Unavailable(format!("group {g}: {e}"));
        if let Some((id, addr)) = add {
            raft.add_learner(id, BasicNode { addr }, true)
                .await
                .map_err(|e| err(e.to_string()))?;
            voters.insert(id);
        }
        if let Some(id) = remove {
            voters.remove(&id);
        }
        if voters.is_empty() {
            return Err(MetaError::Invalid(
                "a group cannot lose its last voter".into(),
            ));
        }
        raft.change_membership(voters, false)
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(())
    }

    /// Changes the voters of `g` on its leader, wherever it is.
    async fn on_leader(
        &self,
        g: GroupId,
        add: Option<(NodeId, String)>,
        remove: Option<NodeId>,
    ) -> Result<(), MetaError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut target = self.addr.clone();
        loop {
            let req = Request::Members {
                group: g,
                add: add.clone(),
                remove,
            };
            let res = match self.pool.call(&target, req, Duration::from_secs(60)).await {
                Ok(Response::Join(r)) => r,
                Ok(_) => Err(MetaError::Protocol("unexpected answer".into())),
                Err(e) => Err(MetaError::Unavailable(e.to_string())),
            };
            match res {
                Err(MetaError::NotLeader {
                    leader: Some((_, addr)),
                    ..
                }) => target = addr,
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    target = self.addr.clone();
                }
                Err(e) => return Err(MetaError::Unavailable(format!("group {g}: {e}"))),
                Ok(()) => return Ok(()),
            }
        }
    }

    async fn cluster_map(&self) -> Result<ClusterMap, MetaError> {
        match self
            .on_leader_meta(CLUSTER_GROUP, MetaRequest::GetClusterMap)
            .await?
        {
            crate::request::MetaResponse::ClusterMap(m) => Ok(m),
            _ => Err(MetaError::Protocol("unexpected answer".into())),
        }
    }

    /// A metadata request through whichever node leads `g`.
    async fn on_leader_meta(&self, g: GroupId, req: MetaRequest) -> MetaResult {
        // Every node this one knows of, itself first: it may have just left group 0.
        let mut seeds = vec![self.addr.clone()];
        if let Ok(Ok(crate::request::MetaResponse::ClusterMap(map))) =
            state_machine::read(&self.db, CLUSTER_GROUP, MetaRequest::GetClusterMap)
        {
            seeds.extend(map.nodes.into_values().filter(|a| *a != self.addr));
        }
        let client = crate::MetaClient::connect(&seeds).await?;
        client.call(g, req).await
    }

    /// Adds a fresh node to every group as a voter, then to the cluster map.
    pub async fn add_node(&self, id: NodeId, addr: String) -> Result<(), MetaError> {
        let map = self.cluster_map().await?;
        if map.nodes.contains_key(&id) {
            return Err(MetaError::Invalid(format!("node {id} is already a member")));
        }
        let groups: Vec<GroupId> = map.groups.keys().copied().collect();
        self.send_join(id, &addr, &groups).await?;
        for &g in &groups {
            self.on_leader(g, Some((id, addr.clone())), None).await?;
        }
        self.on_leader_meta(
            CLUSTER_GROUP,
            MetaRequest::RegisterNode { id, addr, groups },
        )
        .await?;
        Ok(())
    }

    /// Takes a node out of every group, then out of the cluster map.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), MetaError> {
        let map = self.cluster_map().await?;
        if !map.nodes.contains_key(&id) {
            return Err(MetaError::Invalid(format!("node {id} is not a member")));
        }
        if map.nodes.len() <= 1 {
            return Err(MetaError::Invalid("cannot remove the last node".into()));
        }
        for &g in map.groups.keys() {
            self.on_leader(g, None, Some(id)).await?;
        }
        self.on_leader_meta(CLUSTER_GROUP, MetaRequest::UnregisterNode { id })
            .await?;
        Ok(())
    }

    pub fn groups(&self) -> Vec<GroupId> {
        let mut g: Vec<_> = self.groups.read().unwrap().keys().copied().collect();
        g.sort();
        g
    }

    pub fn raft(&self, g: GroupId) -> Option<Raft> {
        self.groups.read().unwrap().get(&g).cloned()
    }

    /// Leader, term, log and applied index of every group on this node.
    pub fn status(&self) -> Vec<GroupStatus> {
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

    /// Serves one client request for group `g` on this node; the first one a
    /// node without state receives makes it a one-node cluster.
    pub async fn handle(&self, g: GroupId, req: MetaRequest, origin: Option<Origin>) -> MetaResult {
        if self.groups.read().unwrap().is_empty() && read_node_record(&self.db)?.is_none() {
            self.bootstrap().await?;
        }
        self.serve(g, req, origin).await
    }

    /// Makes sure this node still leads group `g` and its state machine holds
    /// every acknowledged write, so a read from it is linearizable: within a
    /// read lease from the last confirmation, without asking anyone.
    ///
    /// Why a lease is safe: `ensure_linearizable` returns once a quorum has
    /// answered a heartbeat sent after `asked`, and a follower refuses to vote
    /// for another leader for openraft's follower lease (the election timeout
    /// maximum) after such a heartbeat. So until `asked + READ_LEASE` (half of
    /// that) no other leader can exist, every write acknowledged meanwhile was
    /// applied here before its answer, and the confirmation applied every
    /// earlier one. The lease also ends with this node's term or membership.
    async fn confirm_leadership(&self, g: GroupId, raft: &Raft) -> Result<(), MetaError> {
        let epoch = |m: &crate::raft_types::RaftMetrics| {
            (m.current_leader == Some(self.id))
                .then(|| (m.current_term, *m.membership_config.log_id()))
        };
        let now_epoch = epoch(&raft.metrics().borrow_watched());
        if let Some(e) = now_epoch
            && let Some(lease) = self.read_leases.lock().unwrap().get(&g)
            && lease.epoch == e
            && tokio::time::Instant::now() < lease.until
        {
            return Ok(());
        }
        let asked = tokio::time::Instant::now();
        raft.ensure_linearizable(ReadPolicy::ReadIndex)
            .await
            .map_err(|e| match e {
                RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => {
                    MetaError::NotLeader {
                        group: g,
                        leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                    }
                }
                other => {
                    tracing::warn!(group = g, error = %other, "read refused");
                    MetaError::Unavailable(other.to_string())
                }
            })?;
        // Only if nothing changed since before the confirmation.
        if let Some(e) = now_epoch
            && epoch(&raft.metrics().borrow_watched()) == Some(e)
        {
            self.read_leases.lock().unwrap().insert(
                g,
                ReadLease {
                    epoch: e,
                    until: asked + READ_LEASE,
                },
            );
        }
        Ok(())
    }

    /// Whether this node led group `g` at a confirmation less than a read
    /// lease ago and nothing changed since (see `confirm_leadership`).
    fn holds_read_lease(&self, g: GroupId, raft: &Raft) -> bool {
        let epoch = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            if m.current_leader != Some(self.id) {
                return false;
            }
            (m.current_term, *m.membership_config.log_id())
        };
        self.read_leases
            .lock()
            .unwrap()
            .get(&g)
            .is_some_and(|l| l.epoch == epoch && tokio::time::Instant::now() < l.until)
    }

    async fn serve(&self, g: GroupId, req: MetaRequest, origin: Option<Origin>) -> MetaResult {
        let raft = self.raft(g).ok_or(MetaError::NoSuchGroup(g))?;
        if req.is_read() {
            self.confirm_leadership(g, &raft).await?;
            // Inline, not on a blocking thread: every read is a few point
            // lookups or one bounded page, shorter than the thread handoff.
            return self.read_local(g, req);
        }
        // Only a leader within its read lease knows its state is current: a
        // deposed or lagging node sends the change to the log, which decides.
        if self.holds_read_lease(g, &raft)
            && let Some(refused) = state_machine::early_refusal(&self.db, g, &req)?
        {
            return Err(refused);
        }
        match raft
            .client_write(LogRequest {
                req,
                origin,
                at: Timestamp::now(),
            })
            .await
        {
            Ok(resp) => resp.data,
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(MetaError::NotLeader {
                    group: g,
                    leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                })
            }
            Err(e) => {
                tracing::warn!(group = g, error = %e, "write refused");
                Err(MetaError::Unavailable(e.to_string()))
            }
        }
    }

    /// Whether `req` is a point read this node may answer at once: it leads
    /// group `g` within a read lease, so `serve` would not ask anyone either.
    fn answers_inline(&self, g: GroupId, req: &MetaRequest) -> bool {
        req.is_point_read()
            && self
                .raft(g)
                .is_some_and(|raft| self.holds_read_lease(g, &raft))
    }

    /// Answers a read from this node's state as of its last applied entry;
    /// the caller has made sure that state is current.
    fn read_local(&self, g: GroupId, req: MetaRequest) -> MetaResult {
        state_machine::read(&self.db, g, req).map_err(MetaError::from)?
    }

    async fn handle_frame(&self, req: Request) -> Response {
        match req {
            Request::Meta { group, req, origin } => {
                Response::Meta(self.handle(group, req, origin).await)
            }
            Request::Append { group, rpc } => Response::Append(match self.raft(group) {
                Some(r) => r.append_entries(rpc).await.map_err(|e| e.to_string()),
                None => Err(MetaError::NoSuchGroup(group).to_string()),
            }),
            Request::Vote { group, rpc } => Response::Vote(match self.raft(group) {
                Some(r) => r.vote(rpc).await.map_err(|e| e.to_string()),
                None => Err(MetaError::NoSuchGroup(group).to_string()),
            }),
            Request::Snapshot { group, rpc } => Response::Snapshot(match self.raft(group) {
                Some(r) => r.install_snapshot(rpc).await.map_err(|e| e.to_string()),
                None => Err(MetaError::NoSuchGroup(group).to_string()),
            }),
            Request::Join { groups } => Response::Join(self.join(&groups).await),
            Request::InitCluster {
                peers,
                partition_groups,
            } => Response::Join(self.init_cluster(peers, partition_groups).await),
            Request::Digest { group } => Response::Digest(if self.raft(group).is_none() {
                Err(MetaError::NoSuchGroup(group))
            } else {
                let db = self.db.clone();
                match tokio::task::spawn_blocking(move || state_machine::digest(&db, group)).await {
                    Ok(r) => r.map_err(MetaError::from),
                    Err(e) => Err(MetaError::Storage(e.to_string())),
                }
            }),
            Request::Status => Response::Status {
                id: self.id,
                groups: self.status(),
            },
            Request::Members { group, add, remove } => {
                Response::Join(self.change_members(group, add, remove).await)
            }
            Request::AddNode { id, addr } => Response::Join(self.add_node(id, addr).await),
            Request::RemoveNode { id } => Response::Join(self.remove_node(id).await),
        }
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

/// How often a leader looks for transactions whose client went away.
const TX_RECOVERY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// A prepared transaction this old is presumed abandoned by its client. A
/// live client that is slower than this only sees its operation retried.
const TX_STALE_SECS: i64 = 5;

/// Finishes, from the leader of each of this node's partition groups, the
/// transactions whose client stopped between prepare and finish.
async fn recover_transactions(node: Arc<MetaNode>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let client: tokio::sync::Mutex<Option<Arc<crate::MetaClient>>> = Default::default();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(TX_RECOVERY_INTERVAL) => {}
        }
        let sweep = async {
            for g in node.groups() {
                if g == CLUSTER_GROUP {
                    continue;
                }
                let Some(raft) = node.raft(g) else { continue };
                if raft.metrics().borrow_watched().current_leader != Some(node.id) {
                    continue;
                }
                let db = node.db.clone();
                let read = tokio::task::spawn_blocking(move || {
                    state_machine::read(&db, g, MetaRequest::ListIntents)
                })
                .await;
                let Ok(Ok(Ok(crate::request::MetaResponse::Intents(intents)))) = read else {
                    continue;
                };
                let now = Timestamp::now().sec;
                let stale: Vec<_> = intents
                    .into_iter()
                    .filter(|i| now - i.prepared.sec >= TX_STALE_SECS)
                    .collect();
                if stale.is_empty() {
                    continue;
                }
                let mut client = client.lock().await;
                if client.is_none() {
                    match crate::MetaClient::connect(std::slice::from_ref(&node.addr)).await {
                        Ok(c) => *client = Some(c),
                        Err(e) => {
                            tracing::warn!(error = %e, "transaction recovery cannot reach the cluster");
                            continue;
                        }
                    }
                }
                let c = client.as_ref().expect("just set");
                for intent in stale {
                    match c.resolve_transaction(&intent).await {
                        Ok(committed) => {
                            tracing::info!(
                                tx = intent.tx,
                                group = g,
                                committed,
                                "finished an abandoned transaction"
                            )
                        }
                        Err(e) => {
                            tracing::warn!(tx = intent.tx, error = %e, "transaction recovery failed")
                        }
                    }
                }
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = sweep => {}
        }
    }
}

fn read_node_record(db: &Database) -> Result<Option<NodeRecord>, store::StoreError> {
    let tx = db.begin_read()?;
    let t = tx.open_table(store::NODE)?;
    match t.get("node")? {
        Some(v) => Ok(Some(store::decode(v.value())?)),
        None => Ok(None),
    }
}

fn write_node_record(db: &Database, r: &NodeRecord) -> Result<(), store::StoreError> {
    let tx = db.begin_write()?;
    tx.open_table(store::NODE)?
        .insert("node", store::encode(r).as_slice())?;
    tx.commit()?;
    Ok(())
}

async fn accept_loop(
    node: Arc<MetaNode>,
    listener: TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "connection");
                    node.tasks.spawn(serve_connection(node.clone(), stream, stop.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn serve_connection(
    node: Arc<MetaNode>,
    stream: TcpStream,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (rd, wr) = stream.into_split();
    let mut reader = FramedRead::new(rd, wire::codec());
    // Each request's task writes its own answer (see `rpc::FrameSink`).
    let writer: Arc<crate::rpc::FrameSink> =
        Arc::new(tokio::sync::Mutex::new(FramedWrite::new(wr, wire::codec())));
    let mut requests = tokio::task::JoinSet::new();
    loop {
        let next = tokio::select! {
            _ = stop.changed() => break,
            n = reader.next() => n,
        };
        let buf = match next {
            Some(Ok(buf)) => buf,
            Some(Err(e)) => {
                tracing::warn!(%peer, error = %e, "closing connection: unreadable frame");
                break;
            }
            None => break,
        };
        let frame: Frame<Request> = match wire::decode(&buf) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection: malformed frame");
                break;
            }
        };
        let id = frame.id;
        // Point reads under a read lease are answered here: a spawned task
        // would cost more than the read, often waking another worker thread.
        let body = match frame.body {
            Request::Meta { group, req, .. } if node.answers_inline(group, &req) => {
                answer(&writer, id, Response::Meta(node.read_local(group, req))).await;
                continue;
            }
            body => body,
        };
        let node = node.clone();
        let writer = writer.clone();
        requests.spawn(async move {
            let body = node.handle_frame(body).await;
            answer(&writer, id, body).await;
        });
        // Reap finished requests so the set stays as small as what is in flight.
        while requests.try_join_next().is_some() {}
    }
    // Requests already taken still get their answers.
    while requests.join_next().await.is_some() {}
}

/// Writes the answer to request `id` on its connection.
async fn answer(writer: &crate::rpc::FrameSink, id: u64, body: Response) {
    match wire::encode(&Frame { id, body }) {
        Ok(b) => {
            let _ = writer.lock().await.send(b).await;
        }
        Err(e) => tracing::error!(error = %e, "cannot encode a response"),
    }
}

/// Where a data dir keeps the address of the node that runs on it, so tools can
/// find a running embedded metaserver.
pub fn addr_file(data_dir: &Path) -> PathBuf {
    data_dir.join("meta.addr")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FileType, MetaClient};

    /// Point reads are answered in the connection's task only by a leader
    /// within its read lease; writes and page reads always go the long way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_point_reads_under_a_read_lease_are_answered_inline() {
        let dir = tempfile::tempdir().unwrap();
        let node = MetaNode::start(NodeConfig {
            id: 1,
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            snapshot_logs: DEFAULT_SNAPSHOT_LOGS,
        })
        .await
        .unwrap();
        let client = MetaClient::connect(std::slice::from_ref(&node.addr))
            .await
            .unwrap();
        client
            .format(
                "t",
                "file:///tmp/x",
                None,
                1 << 20,
                8 << 20,
                1,
                1 << 20,
                (0, 0),
            )
            .await
            .unwrap();
        let fs = client.open_fs("t").await.unwrap();
        let f = fs
            .create(1, b"f", FileType::File, 0o644, 0, 0, 0, None)
            .await
            .unwrap();
        let id = fs.info.id;
        let lookup = MetaRequest::Lookup {
            fs: id,
            parent: 1,
            name: b"f".to_vec(),
        };
        let g = node
            .groups()
            .into_iter()
            .find(|&g| {
                g != CLUSTER_GROUP
                    && matches!(
                        state_machine::read(
                            &node.db,
                            g,
                            MetaRequest::GetAttr { fs: id, ino: f.ino }
                        ),
                        Ok(Ok(_))
                    )
            })
            .expect("a group holds the file");
        // A read through the normal path confirms leadership: a lease follows.
        let before = node
            .handle(g, MetaRequest::GetAttr { fs: id, ino: 1 }, None)
            .await;
        assert!(before.is_ok(), "{before:?}");
        assert!(node.holds_read_lease(g, &node.raft(g).unwrap()));
        assert!(node.answers_inline(g, &lookup));
        match node.read_local(g, lookup.clone()) {
            Ok(crate::request::MetaResponse::Inode(i)) => assert_eq!(i.ino, f.ino),
            other => panic!("expected the file's inode, got {other:?}"),
        }
        let page = MetaRequest::ReadDir {
            fs: id,
            ino: 1,
            after: None,
            limit: 10,
        };
        assert!(!node.answers_inline(g, &page), "a page read is spawned");
        let write = MetaRequest::Unlink {
            fs: id,
            parent: 1,
            name: b"f".to_vec(),
            now: Timestamp::now(),
        };
        assert!(!node.answers_inline(g, &write), "a write is never inline");
        // Once the lease is gone the read waits for a confirmation instead.
        node.read_leases.lock().unwrap().clear();
        assert!(!node.answers_inline(g, &lookup));
        assert!(!node.answers_inline(99, &lookup), "no such group");
        node.shutdown().await;
    }
}
