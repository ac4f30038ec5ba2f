//! The node's port: accepting connections, reading frames, and dispatching
//! each to client serving, Raft, or cluster administration.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use openraft_legacy::network_v1::ChunkedSnapshotReceiver;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::access::Rights;
use super::{MetaNode, state_machine};
use crate::MetaError;
use crate::metrics::{OpenConnection, Served};
use crate::request::MetaRequest;
use crate::rpc::FrameSink;
use crate::transport::{Accepted, Incoming, Listener, ReadHalf};
use crate::wire::{self, Frame, Request, Response};
use tracing::Instrument;

impl MetaNode {
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
            Request::TransferLeader { group, rpc } => {
                Response::TransferLeader(match self.raft(group) {
                    Some(r) => r
                        .handle_transfer_leader(rpc)
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err(MetaError::NoSuchGroup(group).to_string()),
                })
            }
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
            // Taken by the connection itself before it gets here.
            Request::Authenticate { .. } | Request::Identity => {
                Response::Denied("authenticate once, before other requests".into())
            }
        }
    }
}

pub(super) async fn accept_loop(
    node: Arc<MetaNode>,
    listener: Listener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    tracing::debug!(peer = %conn.peer, "connection");
                    node.tasks.spawn(serve_connection(node.clone(), conn, stop.clone()));
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
    incoming: Incoming,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let _open = OpenConnection::new();
    let peer = incoming.peer.clone();
    let conn = tokio::select! {
        _ = stop.changed() => return,
        c = incoming.establish() => c,
    };
    let Accepted {
        read: rd,
        write: wr,
        peer,
        who,
        refused,
    } = match conn {
        Ok(c) => c,
        Err(why) => {
            tracing::warn!(%peer, %why, "refused a connection");
            return;
        }
    };
    let mut reader = FramedRead::new(rd, wire::codec());
    // Each request's task writes its own answer (see `rpc::FrameSink`).
    let writer: Arc<crate::rpc::FrameSink> =
        Arc::new(tokio::sync::Mutex::new(FramedWrite::new(wr, wire::codec())));
    if let Some(reason) = refused {
        tracing::warn!(%peer, %reason, "refusing a connection");
        refuse(&mut reader, &writer, reason).await;
        return;
    }
    let mut rights = Rights::of(&who);
    let mut requests = tokio::task::JoinSet::new();
    loop {
        let next = tokio::select! {
            _ = stop.changed() => break,
            n = reader.next() => n,
        };
        let buf = match next {
            Some(Ok(buf)) => buf,
            // A TLS client that exits without saying goodbye (close_notify)
            // ends between frames like one that closes its TCP stream.
            Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
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
        let served = Served::start(frame.body.kind());
        // A token replaces the connection's rights with its own, which
        // are narrower than any other way in but an unknown peer's.
        if let Request::Authenticate { token } = &frame.body {
            let body = match node.authenticate(token).await {
                Ok((granted, grant)) => {
                    rights = granted;
                    Response::Authenticated(grant)
                }
                Err(refusal) => {
                    tracing::warn!(%peer, %refusal, "refused a token");
                    Response::Denied(refusal.to_string())
                }
            };
            answer(&writer, id, body, served).await;
            continue;
        }
        if let Request::Identity = &frame.body {
            let body = match node.identity(&mut rights).await {
                Ok(identity) => Response::Identity(identity),
                Err(refusal) => Response::Denied(refusal.to_string()),
            };
            answer(&writer, id, body, served).await;
            continue;
        }
        if let Err(refusal) = node.check(&mut rights, &frame.body).await {
            tracing::warn!(%peer, ?who, token = ?rights.token_id(), %refusal, "refused a request");
            let body = match frame.body {
                Request::Meta { .. } => Response::Meta(Err(refusal)),
                _ => Response::Denied(refusal.to_string()),
            };
            answer(&writer, id, body, served).await;
            continue;
        }
        // Point reads under a read lease are answered here: a spawned task
        // would cost more than the read, often waking another worker thread.
        let body = match frame.body {
            Request::Meta {
                group,
                req: MetaRequest::Read(req),
                ..
            } if node.answers_inline(group, &req) => {
                crate::metrics::node().lease_read(true);
                let body = Response::Meta(node.read_local(group, req));
                answer(&writer, id, body, served).await;
                continue;
            }
            body => body,
        };
        let span = request_span(&body);
        let node = node.clone();
        let writer = writer.clone();
        requests.spawn(
            async move {
                let body = node.handle_frame(body).await;
                answer(&writer, id, body, served).await;
            }
            .instrument(span),
        );
        // Reap finished requests so the set stays as small as what is in flight.
        while requests.try_join_next().is_some() {}
        // A peer that sends faster than its requests finish waits here: the
        // node reads its next frame once one of them is done, so one
        // connection holds at most this many requests' memory.
        while requests.len() >= MAX_IN_FLIGHT {
            tokio::select! {
                _ = stop.changed() => break,
                _ = requests.join_next() => {}
            }
        }
    }
    // Requests already taken still get their answers.
    while requests.join_next().await.is_some() {}
}

/// What a client's request logs carry: its kind and group and, for a
/// write, the client and sequence number its `meta_rpc` span shows too.
/// At debug, like the client's: a span at the default level would cost
/// every request a few microseconds (measured: most of what metrics and
/// spans together added to a create).
fn request_span(body: &Request) -> tracing::Span {
    match body {
        Request::Meta { group, origin, .. } => tracing::debug_span!(
            "request",
            kind = body.kind(),
            group,
            client = origin.map(|o| o.client),
            seq = origin.map(|o| o.seq)
        ),
        // Raft traffic: too frequent for a span of its own.
        _ => tracing::trace_span!("request", kind = body.kind()),
    }
}

/// Requests of one connection being served at once. A client keeps far
/// fewer in flight (one per caller waiting on it).
const MAX_IN_FLIGHT: usize = 1024;

/// How long a refused peer has to send the request it is told off in.
const REFUSAL_WAIT: Duration = Duration::from_secs(10);

/// Answers a refused connection's first request with why, so its client
/// can say which check failed, and lets the connection go.
async fn refuse(
    reader: &mut FramedRead<ReadHalf, LengthDelimitedCodec>,
    writer: &FrameSink,
    why: String,
) {
    if let Ok(Some(Ok(buf))) = tokio::time::timeout(REFUSAL_WAIT, reader.next()).await
        && let Ok(frame) = wire::decode::<Request>(&buf)
    {
        let served = Served::start(frame.body.kind());
        answer(writer, frame.id, Response::Denied(why), served).await;
    }
}

/// Writes the answer to request `id` on its connection, counting it.
async fn answer(writer: &crate::rpc::FrameSink, id: u64, body: Response, served: Served) {
    served.answered(&body);
    match wire::encode(&Frame { id, body }) {
        Ok(b) => {
            let _ = writer.lock().await.send(b).await;
        }
        Err(e) => tracing::error!(error = %e, "cannot encode a response"),
    }
}
