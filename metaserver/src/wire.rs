//! Frames on a metaserver connection.
//!
//! A frame is a 4-byte big-endian length followed by a bincode body. Every
//! frame carries a request id so one connection multiplexes many calls. Client
//! calls and Raft traffic share the port and are routed by group id. Frames
//! longer than `MAX_FRAME` or that do not decode close the connection.

use bytes::{Bytes, BytesMut};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft_legacy::network_v1::{InstallSnapshotRequest, InstallSnapshotResponse};
use serde::{Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

use crate::raft_types::TypeConfig;
use crate::request::{MetaRequest, MetaResult, Origin};
use crate::types::{GroupId, NodeId};

/// Largest frame accepted in either direction. Raft batches and snapshot chunks
/// are sized to stay well below it.
pub const MAX_FRAME: usize = 64 << 20;

#[derive(Serialize, Deserialize, Debug, strum::IntoStaticStr)]
pub enum Request {
    Meta {
        group: GroupId,
        req: MetaRequest,
        origin: Option<Origin>,
    },
    Append {
        group: GroupId,
        rpc: AppendEntriesRequest<TypeConfig>,
    },
    Vote {
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
    },
    Snapshot {
        group: GroupId,
        rpc: InstallSnapshotRequest<TypeConfig>,
    },
    /// Host these groups and wait to be added to them (sent by `meta init`).
    Join { groups: Vec<GroupId> },
    /// Turn this one-node cluster and the fresh `peers` into one cluster.
    InitCluster {
        peers: std::collections::BTreeMap<NodeId, String>,
        partition_groups: u32,
    },
    /// This node's view of its groups.
    Status,
    /// Change one group's voters; only its leader does it.
    Members {
        group: GroupId,
        add: Option<(NodeId, String)>,
        remove: Option<NodeId>,
    },
    /// Add a fresh node to every group of the cluster as a voter.
    AddNode { id: NodeId, addr: String },
    /// Take a node out of every group and the cluster map.
    RemoveNode { id: NodeId },
    /// This replica's applied index and a hash of group `group`'s state.
    Digest { group: GroupId },
    /// From here on, this connection may do what token `token` grants
    /// (`strata token create`); answered `Authenticated` or `Denied`.
    Authenticate { token: String },
    /// What this connection may do; answered `Identity` or `Denied`.
    Identity,
    /// A leader handing group `group` to another voter (sent to every
    /// voter, so that each stops honouring the old leader's lease).
    TransferLeader {
        group: GroupId,
        rpc: TransferLeaderRequest<TypeConfig>,
    },
}

impl Request {
    /// What is asked: a client's request by its own name (`Lookup`), the
    /// rest by theirs (`Append`, `Vote`, `Status`): a metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Meta { req, .. } => req.kind(),
            other => other.into(),
        }
    }
}

/// Per-group state a node reports in `strata meta status`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    pub group: GroupId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log: Option<u64>,
    pub applied: Option<u64>,
    pub voters: Vec<NodeId>,
}

/// Raft RPC failures travel as text: the caller only needs to know it failed.
#[derive(Serialize, Deserialize, Debug)]
pub enum Response {
    Meta(MetaResult),
    Append(Result<AppendEntriesResponse<TypeConfig>, String>),
    Vote(Result<VoteResponse<TypeConfig>, String>),
    Snapshot(Result<InstallSnapshotResponse<TypeConfig>, String>),
    Join(MetaResult<()>),
    Status {
        id: NodeId,
        groups: Vec<GroupStatus>,
    },
    Digest(MetaResult<(Option<u64>, u64)>),
    /// This request may not be served, or (for a peer refused outright,
    /// told once before the node closes the connection) none: why.
    Denied(String),
    /// A token was taken: what it grants.
    Authenticated(crate::types::Grant),
    Identity(Identity),
    TransferLeader(Result<TransferLeaderResponse<TypeConfig>, String>),
}

/// What a connection may do: its grant (None: everything, as a node or
/// the node's own user) and the inode its view of the filesystem starts
/// at (the root, or a subtree grant's directory).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub grant: Option<crate::types::Grant>,
    pub root: crate::types::Ino,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Frame<T> {
    pub id: u64,
    pub body: T,
}

#[derive(thiserror::Error, Debug)]
pub enum WireError {
    #[error("frame does not decode: {0}")]
    Decode(String),
    #[error("frame has {0} trailing bytes")]
    Trailing(usize),
    #[error("frame does not encode: {0}")]
    Encode(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

pub fn encode<T: Serialize>(frame: &Frame<T>) -> Result<Bytes, WireError> {
    bincode::serde::encode_to_vec(frame, config())
        .map(Bytes::from)
        .map_err(|e| WireError::Encode(e.to_string()))
}

pub fn decode<T: for<'de> Deserialize<'de>>(buf: &[u8]) -> Result<Frame<T>, WireError> {
    let (frame, used) = bincode::serde::decode_from_slice(buf, config())
        .map_err(|e| WireError::Decode(e.to_string()))?;
    if used != buf.len() {
        return Err(WireError::Trailing(buf.len() - used));
    }
    Ok(frame)
}

/// The length-prefix codec with the frame size limit applied.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

pub fn decode_bytes<T: for<'de> Deserialize<'de>>(buf: BytesMut) -> Result<Frame<T>, WireError> {
    decode(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{ReadRequest, WriteRequest};
    use crate::types::Timestamp;
    use futures::{SinkExt, StreamExt};
    use tokio_util::codec::{FramedRead, FramedWrite};

    #[test]
    fn request_round_trips() {
        let frame = Frame {
            id: 7,
            body: Request::Meta {
                group: 3,
                req: WriteRequest::Unlink {
                    fs: 1,
                    parent: 1,
                    name: b"a".to_vec(),
                    now: Timestamp { sec: 5, nsec: 6 },
                }
                .into(),
                origin: None,
            },
        };
        let bytes = encode(&frame).unwrap();
        let back: Frame<Request> = decode(&bytes).unwrap();
        assert_eq!(back.id, 7);
        match back.body {
            Request::Meta { group: 3, req, .. } => assert_eq!(
                req,
                MetaRequest::Write(WriteRequest::Unlink {
                    fs: 1,
                    parent: 1,
                    name: b"a".to_vec(),
                    now: Timestamp { sec: 5, nsec: 6 }
                })
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn raft_append_round_trips() {
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: crate::raft_types::Vote::new(2, 1),
            prev_log_id: None,
            entries: vec![openraft::Entry {
                log_id: crate::raft_types::LogId::new(
                    crate::raft_types::CommittedLeaderId {
                        term: 2,
                        node_id: 1,
                    },
                    1,
                ),
                payload: openraft::EntryPayload::Normal(crate::request::LogRequest {
                    req: WriteRequest::UnregisterNode { id: 4 },
                    origin: None,
                    at: crate::types::Timestamp::default(),
                }),
            }],
            leader_commit: None,
        };
        let bytes = encode(&Frame {
            id: 1,
            body: Request::Append { group: 0, rpc },
        })
        .unwrap();
        let back: Frame<Request> = decode(&bytes).unwrap();
        assert!(matches!(back.body, Request::Append { group: 0, rpc } if rpc.entries.len() == 1));
    }

    #[test]
    fn malformed_frames_are_rejected() {
        assert!(decode::<Request>(&[]).is_err());
        assert!(decode::<Request>(&[0xff; 16]).is_err());
        // A valid frame with garbage after it is refused, not half-read.
        let mut bytes = encode(&Frame {
            id: 1,
            body: Request::Meta {
                group: 0,
                req: ReadRequest::ListFs.into(),
                origin: None,
            },
        })
        .unwrap()
        .to_vec();
        bytes.push(0);
        assert!(matches!(
            decode::<Request>(&bytes),
            Err(WireError::Trailing(1))
        ));
    }

    #[test]
    fn huge_length_prefix_inside_a_frame_is_rejected() {
        // A name claiming 2^40 bytes must fail on the limit, not try to allocate.
        let mut bytes = vec![1u8]; // id
        bytes.push(0); // Request::Meta
        bytes.push(0); // group 0
        bytes.push(14); // ReadRequest::Lookup
        bytes.extend([1, 1]); // fs, parent
        bytes.push(253); // u64 length marker
        bytes.extend((1u64 << 40).to_le_bytes());
        assert!(decode::<Request>(&bytes).is_err());
    }

    #[tokio::test]
    async fn oversized_frame_fails_the_stream() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut reader = FramedRead::new(b, codec());
        let mut raw = FramedWrite::new(
            a,
            LengthDelimitedCodec::builder()
                .length_field_length(4)
                .max_frame_length(usize::MAX)
                .new_codec(),
        );
        // Only the header is sent: the reader must refuse on the length alone.
        tokio::spawn(async move {
            let _ = raw.send(Bytes::from(vec![0u8; MAX_FRAME + 1])).await;
        });
        let got = reader.next().await.expect("an item");
        assert!(got.is_err());
    }
}
