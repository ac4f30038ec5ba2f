//! The Raft network of one group: its RPCs travel over the node's shared
//! connections, tagged with the group id. Snapshots go in chunks (openraft's
//! v1 protocol through `openraft_legacy`'s adapter), each chunk one frame.

use std::time::Duration;

use openraft::AnyError;
use openraft::BasicNode;
use openraft::error::{NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft_legacy::network_v1::{
    Adapter, InstallSnapshotError, InstallSnapshotRequest, InstallSnapshotResponse, RaftNetwork,
};

use crate::raft_types::{SnapshotData, TypeConfig};
use crate::rpc::ConnPool;
use crate::types::{GroupId, NodeId};
use crate::wire::{Request, Response};

/// openraft 0.10 gives replication and heartbeats the heartbeat interval
/// (100 ms) as their timeout and leaves enforcing it to the network. A
/// follower busy with a large batch or a slow fsync takes longer than that
/// without being gone, and a timed-out call drops its connection; so an
/// append waits at least this long.
const MIN_APPEND_TIMEOUT: Duration = Duration::from_secs(1);

pub struct NetworkFactory {
    pub group: GroupId,
    pub pool: ConnPool,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Adapter<TypeConfig, GroupNetwork, SnapshotData>;

    async fn new_client(&mut self, _target: NodeId, node: &BasicNode) -> Self::Network {
        Adapter::new(GroupNetwork {
            group: self.group,
            addr: node.addr.clone(),
            pool: self.pool.clone(),
        })
    }
}

pub struct GroupNetwork {
    group: GroupId,
    addr: String,
    pool: ConnPool,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<TypeConfig, RaftError<TypeConfig, E>>;

impl GroupNetwork {
    async fn send<E: std::error::Error>(
        &self,
        req: Request,
        ttl: Duration,
    ) -> Result<Response, RPCError<TypeConfig, E>> {
        self.pool
            .call(&self.addr, req, ttl)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }
}

fn remote<E: std::error::Error>(msg: String) -> RPCError<TypeConfig, E> {
    RPCError::Network(NetworkError::new(&AnyError::error(msg)))
}

impl RaftNetwork<TypeConfig> for GroupNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RpcErr> {
        let req = Request::Append {
            group: self.group,
            rpc,
        };
        let ttl = option.hard_ttl().max(MIN_APPEND_TIMEOUT);
        match self.send(req, ttl).await? {
            Response::Append(r) => r.map_err(remote),
            other => Err(remote(format!("unexpected answer {other:?}"))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<TypeConfig>, RpcErr<InstallSnapshotError>> {
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
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcErr> {
        let req = Request::Vote {
            group: self.group,
            rpc,
        };
        match self.send(req, option.hard_ttl()).await? {
            Response::Vote(r) => r.map_err(remote),
            other => Err(remote(format!("unexpected answer {other:?}"))),
        }
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let req = Request::TransferLeader {
            group: self.group,
            rpc,
        };
        match self.send(req, option.hard_ttl()).await? {
            Response::TransferLeader(r) => r.map_err(remote),
            other => Err(remote(format!("unexpected answer {other:?}"))),
        }
    }
}
