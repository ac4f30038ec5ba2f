//! Who serves which group: joining, forming a cluster from a one-node one,
//! adding and removing nodes, each through the leader of the group changed.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::BasicNode;
use openraft::async_runtime::WatchReceiver;

use super::start::read_node_record;
use super::{DEFAULT_PARTITION_GROUPS, MetaNode, state_machine};
use crate::MetaError;
use crate::request::{MetaRequest, MetaResult, ReadRequest, WriteRequest};
use crate::types::*;
use crate::wire::{Request, Response};

impl MetaNode {
    /// Hosts `groups` as a member-to-be: Raft instances that wait for a leader
    /// to add them.
    pub(super) async fn join(&self, groups: &[GroupId]) -> Result<(), MetaError> {
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
            .serve(CLUSTER_GROUP, ReadRequest::GetClusterMap, None)
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
                WriteRequest::RegisterNode {
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
    pub(super) async fn change_members(
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
            .on_leader_meta(CLUSTER_GROUP, ReadRequest::GetClusterMap)
            .await?
        {
            crate::request::MetaResponse::ClusterMap(m) => Ok(m),
            _ => Err(MetaError::Protocol("unexpected answer".into())),
        }
    }

    /// A metadata request through whichever node leads `g`.
    pub(super) async fn on_leader_meta(
        &self,
        g: GroupId,
        req: impl Into<MetaRequest>,
    ) -> MetaResult {
        // Every node this one knows of, itself first: it may have just left group 0.
        let mut seeds = vec![self.addr.clone()];
        if let Ok(Ok(crate::request::MetaResponse::ClusterMap(map))) =
            state_machine::read(&self.db, CLUSTER_GROUP, ReadRequest::GetClusterMap)
        {
            seeds.extend(map.nodes.into_values().filter(|a| *a != self.addr));
        }
        let client =
            crate::MetaClient::connect_with(&seeds, crate::rpc::Credentials::tls(self.tls.clone()))
                .await?;
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
            WriteRequest::RegisterNode { id, addr, groups },
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
        self.on_leader_meta(CLUSTER_GROUP, WriteRequest::UnregisterNode { id })
            .await?;
        Ok(())
    }
}
