//! The metaserver node: hosts Raft groups, serves clients and peers on one port.

mod log_store;
mod network;
pub mod ops;
mod state_machine;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};
use redb::{Database, ReadableDatabase};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::MetaError;
use crate::raft_types::Raft;
use crate::request::{LogRequest, MetaRequest, MetaResult, Origin};
use crate::rpc::ConnPool;
use crate::types::*;
use crate::wire::{self, Frame, Request, Response};

pub use log_store::LogStore;
pub use state_machine::StateMachine;

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
}

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
    groups: HashMap<GroupId, Raft>,
    shutdown: tokio::sync::watch::Sender<bool>,
    /// The accept loop and every connection task, so shutdown can wait for them.
    tasks: tokio_util::task::TaskTracker,
}

fn raft_config() -> Arc<Config> {
    let cfg = Config {
        cluster_name: "strata".into(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(20_000),
        max_in_snapshot_log_to_keep: 1_000,
        // Keeps snapshot chunks far below the wire's frame limit.
        snapshot_max_chunk_size: 4 << 20,
        ..Default::default()
    };
    Arc::new(cfg.validate().expect("static raft config is valid"))
}

impl MetaNode {
    /// Opens (or creates) the node's state under `data_dir`, starts its groups
    /// and begins serving. A fresh data dir becomes a one-node cluster.
    pub async fn start(cfg: NodeConfig) -> Result<Arc<MetaNode>, ServerError> {
        let dd = |reason: String| ServerError::DataDir {
            path: cfg.data_dir.clone(),
            reason,
        };
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| dd(e.to_string()))?;
        let db = store::open(&cfg.data_dir.join("meta.redb"))?;
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
        let fresh = record.is_none();
        let record = match record {
            Some(r) if r.id != cfg.id => {
                return Err(ServerError::WrongNode {
                    found: r.id,
                    wanted: cfg.id,
                });
            }
            Some(r) => r,
            None => {
                let r = NodeRecord {
                    id: cfg.id,
                    groups: (0..=DEFAULT_PARTITION_GROUPS).collect(),
                };
                write_node_record(&db, &r)?;
                r
            }
        };

        let pool = ConnPool::default();
        let snapshot_dir = cfg.data_dir.join("snapshots");
        let mut groups = HashMap::new();
        for &g in &record.groups {
            let raft = Raft::new(
                cfg.id,
                raft_config(),
                network::NetworkFactory {
                    group: g,
                    pool: pool.clone(),
                },
                LogStore::new(db.clone(), g),
                StateMachine::new(db.clone(), g, snapshot_dir.clone()),
            )
            .await
            .map_err(|e| ServerError::Raft {
                group: g,
                reason: e.to_string(),
            })?;
            if fresh {
                let members = BTreeMap::from([(cfg.id, BasicNode { addr: addr.clone() })]);
                raft.initialize(members)
                    .await
                    .map_err(|e| ServerError::Raft {
                        group: g,
                        reason: e.to_string(),
                    })?;
            }
            groups.insert(g, raft);
        }

        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let node = Arc::new(MetaNode {
            id: cfg.id,
            addr: addr.clone(),
            db,
            groups,
            shutdown,
            tasks: tokio_util::task::TaskTracker::new(),
        });
        node.tasks
            .spawn(accept_loop(node.clone(), listener, shutdown_rx));

        // The cluster map must carry this node's current address (embedded
        // mode binds a new port at every start).
        let register = MetaRequest::RegisterNode {
            id: cfg.id,
            addr,
            groups: record.groups.clone(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match node.handle(CLUSTER_GROUP, register.clone(), None).await {
                Ok(_) => break,
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                    // Waits for this node's own election after a restart.
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
        tracing::info!(id = cfg.id, addr = %node.addr, groups = ?record.groups, "metaserver ready");
        Ok(node)
    }

    pub fn groups(&self) -> Vec<GroupId> {
        let mut g: Vec<_> = self.groups.keys().copied().collect();
        g.sort();
        g
    }

    pub fn raft(&self, g: GroupId) -> Option<&Raft> {
        self.groups.get(&g)
    }

    /// Serves one client request for group `g` on this node.
    pub async fn handle(&self, g: GroupId, req: MetaRequest, origin: Option<Origin>) -> MetaResult {
        let raft = self.groups.get(&g).ok_or(MetaError::NoSuchGroup(g))?;
        if req.is_read() {
            raft.ensure_linearizable().await.map_err(|e| match e {
                RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => {
                    MetaError::NotLeader {
                        group: g,
                        leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                    }
                }
                other => MetaError::Unavailable(other.to_string()),
            })?;
            let db = self.db.clone();
            return tokio::task::spawn_blocking(move || state_machine::read(&db, g, req))
                .await
                .map_err(|e| MetaError::Storage(e.to_string()))?
                .map_err(MetaError::from)?;
        }
        match raft.client_write(LogRequest { req, origin }).await {
            Ok(resp) => resp.data,
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(MetaError::NotLeader {
                    group: g,
                    leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                })
            }
            Err(e) => Err(MetaError::Unavailable(e.to_string())),
        }
    }

    async fn handle_frame(&self, req: Request) -> Response {
        match req {
            Request::Meta { group, req, origin } => {
                Response::Meta(self.handle(group, req, origin).await)
            }
            Request::Append { group, rpc } => Response::Append(match self.groups.get(&group) {
                Some(r) => r.append_entries(rpc).await.map_err(|e| e.to_string()),
                None => Err(MetaError::NoSuchGroup(group).to_string()),
            }),
            Request::Vote { group, rpc } => Response::Vote(match self.groups.get(&group) {
                Some(r) => r.vote(rpc).await.map_err(|e| e.to_string()),
                None => Err(MetaError::NoSuchGroup(group).to_string()),
            }),
            Request::Snapshot { group, rpc } => Response::Snapshot(match self.groups.get(&group) {
                Some(r) => r.install_snapshot(rpc).await.map_err(|e| e.to_string()),
                None => Err(MetaError::NoSuchGroup(group).to_string()),
            }),
        }
    }

    /// Stops serving and shuts every group down; the database stays consistent.
    /// Returns once no task of this node uses the database any more.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        self.tasks.close();
        self.tasks.wait().await;
        for raft in self.groups.values() {
            let _ = raft.shutdown().await;
        }
    }

    /// A handle that dies with the last user of the database (tests reopen it).
    pub fn database_weak(&self) -> std::sync::Weak<Database> {
        Arc::downgrade(&self.db)
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
    let mut writer = FramedWrite::new(wr, wire::codec());
    let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(1024);
    let write_task = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if writer.send(b).await.is_err() {
                break;
            }
        }
    });
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
        let node = node.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let body = node.handle_frame(frame.body).await;
            match wire::encode(&Frame { id: frame.id, body }) {
                Ok(b) => {
                    let _ = tx.send(b).await;
                }
                Err(e) => tracing::error!(error = %e, "cannot encode a response"),
            }
        });
    }
    drop(tx);
    let _ = write_task.await;
}

/// Where a data dir keeps the address of the node that runs on it, so tools can
/// find a running embedded metaserver.
pub fn addr_file(data_dir: &Path) -> PathBuf {
    data_dir.join("meta.addr")
}
