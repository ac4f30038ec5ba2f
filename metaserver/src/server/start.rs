//! Starting a node: opening its data dir, its groups and its listener; and
//! making a node without state a one-node cluster on its first request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use redb::{Database, ReadableDatabase};

use super::listener::accept_loop;
use super::raft::{Raft, raft_config};
use super::recovery::recover_transactions;
use super::{
    DEFAULT_PARTITION_GROUPS, LogStore, MetaNode, NodeConfig, ServerError, StateMachine, Wal,
    network, state_machine, store,
};
use crate::MetaError;
use crate::request::{ReadRequest, WriteRequest};
use crate::rpc::ConnPool;
use crate::transport::Listener;
use crate::types::*;
use crate::wire::{Request, Response};

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct NodeRecord {
    id: NodeId,
    groups: Vec<GroupId>,
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
        let db_path = cfg.data_dir.join("meta.redb");
        let db = store::open(&db_path)?;
        let marked = store::check_format(&db).map_err(|e| dd(e.to_string()))?;
        let listen_err = |reason: String| ServerError::Listen {
            addr: cfg.listen.clone(),
            reason,
        };
        let listener = Listener::bind(&cfg.listen, cfg.tls.as_ref())
            .await
            .map_err(listen_err)?;
        let addr = listener.address().map_err(listen_err)?;
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
            pool: ConnPool::new(crate::rpc::Credentials::tls(cfg.tls.clone())),
            tls: cfg.tls.clone(),
            fs_ids: Default::default(),
            parent_memory: Default::default(),
            data_dir: cfg.data_dir.clone(),
            snapshot_dir: cfg.data_dir.join("snapshots"),
            snapshot_logs: cfg.snapshot_logs,
            wal,
            disk_room: super::disk_room::DiskRoom::new(
                &cfg.data_dir,
                &cfg.data_dir.join("snapshots"),
            ),
            read_leases: Default::default(),
            shutdown,
            tasks: tokio_util::task::TaskTracker::new(),
        });
        let weak: std::sync::Weak<MetaNode> = Arc::downgrade(&node);
        crate::metrics::watch_groups(weak);
        if let Some(r) = &record {
            for &g in &r.groups {
                node.start_group(g).await?;
            }
        }
        node.tasks
            .spawn(recover_transactions(node.clone(), shutdown_rx.clone()));
        node.tasks.spawn(super::hand_over::hand_over_when_unheard(
            node.clone(),
            shutdown_rx.clone(),
        ));
        node.tasks
            .spawn(super::log_bound::snapshot_when_the_log_grows(
                node.clone(),
                shutdown_rx.clone(),
            ));
        if cfg.prewarm {
            // Serving does not wait for it: it only speeds reads up.
            super::prewarm::start(db_path, shutdown_rx.clone());
        }
        node.tasks
            .spawn(accept_loop(node.clone(), listener, shutdown_rx));
        if let Some(r) = record {
            // The cluster map must carry this node's current address. That
            // needs group 0's quorum: a node restarting while most of the
            // cluster is down (all nodes restarted one by one, say) serves
            // at once and keeps trying in the background, or no node could
            // ever come back.
            let first = tokio::time::timeout(REGISTER_AT_START, node.register_self(&r.groups));
            if !matches!(first.await, Ok(Ok(()))) {
                tracing::warn!(
                    "group 0 has no leader yet; recording this node's address once it has"
                );
                node.tasks
                    .spawn(register_later(Arc::downgrade(&node), r.groups.clone()));
            }
        }
        tracing::info!(id = node.id, addr = %node.addr, groups = ?node.groups(), "metaserver ready");
        Ok(node)
    }

    pub(super) async fn start_group(&self, g: GroupId) -> Result<Raft, ServerError> {
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

    pub(super) fn save_groups(&self) -> Result<(), ServerError> {
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
        let req = WriteRequest::RegisterNode {
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
                            req: req.clone().into(),
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
    fn is_registered(&self, req: &WriteRequest) -> Result<bool, ServerError> {
        let WriteRequest::RegisterNode { id, addr, groups } = req else {
            return Ok(false);
        };
        let map = match state_machine::read(&self.db, CLUSTER_GROUP, ReadRequest::GetClusterMap)? {
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
    pub(super) async fn bootstrap(&self) -> Result<(), MetaError> {
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
}

pub(super) fn read_node_record(db: &Database) -> Result<Option<NodeRecord>, store::DbError> {
    let tx = db.begin_read()?;
    let t = tx.open_table(store::NODE)?;
    match t.get("node")? {
        Some(v) => Ok(Some(store::decode(v.value())?)),
        None => Ok(None),
    }
}

fn write_node_record(db: &Database, r: &NodeRecord) -> Result<(), store::DbError> {
    let tx = store::begin_durable_write(db)?;
    tx.open_table(store::NODE)?
        .insert("node", store::encode(r).as_slice())?;
    tx.commit()?;
    Ok(())
}

/// How long a starting node waits to record its address before it serves
/// anyway (see `register_later`).
const REGISTER_AT_START: Duration = Duration::from_secs(3);

/// Records the node's address in group 0 once a leader can commit it,
/// trying until it is done or the node shuts down.
async fn register_later(node: std::sync::Weak<MetaNode>, groups: Vec<GroupId>) {
    let Some(mut stop) = node.upgrade().map(|n| n.shutdown.subscribe()) else {
        return;
    };
    loop {
        let Some(n) = node.upgrade() else { return };
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            r = n.register_self(&groups) => match r {
                Ok(()) => {
                    tracing::info!(id = n.id, addr = %n.addr, "node address recorded in the cluster map");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "recording the node's address; trying again"),
            },
            _ = stop.changed() => return,
        }
        drop(n);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}
