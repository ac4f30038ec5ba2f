//! The Raft network of one group: its RPCs travel over the node's shared
//! connections, tagged with the group id.

use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};

use crate::raft_types::TypeConfig;
use crate::rpc::ConnPool;
use crate::types::{GroupId, NodeId};
use crate::wire::{Request, Response};

pub struct NetworkFactory {
    pub group: GroupId,
    pub pool: ConnPool,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(&mut self, _target: NodeId, node: &BasicNode) -> GroupNetwork {
        GroupNetwork {
            group: self.group,
            addr: node.addr.clone(),
            pool: self.pool.clone(),
        }
    }
}

pub struct GroupNetwork {
    group: GroupId,
    addr: String,
    pool: ConnPool,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl GroupNetwork {
    async fn send<E: std::error::Error>(
        &self,
        req: Request,
        ttl: Duration,
    ) -> Result<Response, RpcErr<E>> {
        self.pool
            .call(&self.addr, req, ttl)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }
}

fn remote<E: std::error::Error>(msg: String) -> RpcErr<E> {
    RPCError::Network(NetworkError::new(&AnyError::error(msg)))
}

impl RaftNetwork<TypeConfig> for GroupNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        let req = Request::Append {
            group: self.group,
            rpc,
        };
        match self.send(req, option.hard_ttl()).await? {
            Response::Append(r) => r.map_err(remote),
            other => Err(remote(format!("unexpected answer {other:?}"))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        let req = Request::Snapshot {
            group: self.group,
            rpc,
        };
        match self.send(req, option.hard_ttl()).await? {
            Response::Snapshot(r) => r.map_err(remote),
            other => Err(remote(format!("unexpected answer {other:?}"))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        let req = Request::Vote {
            group: self.group,
            rpc,
        };
        match self.send(req, option.hard_ttl()).await? {
            Response::Vote(r) => r.map_err(remote),
            other => Err(remote(format!("unexpected answer {other:?}"))),
        }
    }
}
