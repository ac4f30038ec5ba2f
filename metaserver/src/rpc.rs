//! Multiplexed request/response connections over the wire protocol, shared by
//! `MetaClient` and the Raft network between nodes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::{Mutex, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::tls::{self, Tls};
use crate::transport::{self, ConnectError, WriteHalf};
use crate::wire::{self, Frame, Request, Response};

#[derive(thiserror::Error, Debug, Clone)]
pub enum RpcError {
    #[error("cannot connect to metaserver {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("connection to metaserver {addr} closed")]
    Closed { addr: String },
    #[error("metaserver {addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("bad frame from {addr}: {reason}")]
    Protocol { addr: String, reason: String },
    #[error("metaserver {addr} refused this client: {reason}")]
    Denied { addr: String, reason: String },
}

/// How long a node may take to look a token up (it may ask group 0's leader).
const AUTHENTICATE_TIMEOUT: Duration = Duration::from_secs(10);

type Pending = Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

/// Marks a connection closed and wakes every caller with an error when one
/// of its tasks ends, however it ends: on EOF, on a bad frame, or dropped
/// with the runtime that ran it (a connection outlives the runtime that
/// opened it when a client is shared between runtimes).
struct ClosedOnDrop {
    closed: Arc<AtomicBool>,
    pending: Pending,
}

impl Drop for ClosedOnDrop {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        self.pending.lock().unwrap().clear();
    }
}

/// The sending half of a connection, written by the callers themselves: a
/// frame goes out from the task that made it, with no handoff to a writer
/// task (each handoff is a thread wake-up, which costs more than the write).
/// A caller cancelled in the middle of a write leaves the rest of its frame
/// buffered in the `FramedWrite`, and the next writer sends it first, so
/// frames never interleave.
pub type FrameSink = Mutex<FramedWrite<WriteHalf, LengthDelimitedCodec>>;

pub struct Connection {
    addr: String,
    next_id: AtomicU64,
    pending: Pending,
    out: FrameSink,
    closed: Arc<AtomicBool>,
    /// Why the node ended this connection, when it was a verdict on this
    /// client (a TLS alert after the handshake) rather than a broken link.
    denied: Arc<std::sync::Mutex<Option<String>>>,
}

/// How a client proves who it is: TLS (with or without a certificate of its
/// own) on TCP connections, and a token presented on every connection.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub tls: Option<Tls>,
    /// An access token's text (`strata token create`).
    pub token: Option<String>,
}

impl Credentials {
    pub fn tls(tls: Option<Tls>) -> Credentials {
        Credentials { tls, token: None }
    }

    /// Whether what these credentials grant may be less than a whole
    /// filesystem's tree: a token's grant is known only to the nodes, a
    /// certificate's says so itself.
    pub fn may_be_confined(&self) -> bool {
        self.token.is_some()
            || matches!(
                self.tls.as_ref().and_then(|t| t.grant()),
                Some(crate::types::Grant::Fs {
                    subdir: Some(_),
                    ..
                })
            )
    }
}

impl Connection {
    /// A plain connection (TCP, or a Unix socket).
    pub async fn connect(addr: &str) -> Result<Arc<Connection>, RpcError> {
        Self::connect_as(addr, &Credentials::default()).await
    }

    /// A connection that is TLS over TCP when `tls` is given.
    pub async fn connect_with(addr: &str, tls: Option<&Tls>) -> Result<Arc<Connection>, RpcError> {
        Self::connect_as(addr, &Credentials::tls(tls.cloned())).await
    }

    /// A connection made with `creds`: TLS as they say, and their token
    /// presented before anything else, so a refused one fails here.
    pub async fn connect_as(addr: &str, creds: &Credentials) -> Result<Arc<Connection>, RpcError> {
        let conn = Self::open(addr, creds.tls.as_ref()).await?;
        if let Some(token) = &creds.token {
            let req = Request::Authenticate {
                token: token.clone(),
            };
            match conn.call(req, AUTHENTICATE_TIMEOUT).await? {
                Response::Authenticated(_) => {}
                other => {
                    return Err(RpcError::Protocol {
                        addr: addr.to_string(),
                        reason: format!("unexpected answer to a token: {other:?}"),
                    });
                }
            }
        }
        Ok(conn)
    }

    async fn open(addr: &str, tls: Option<&Tls>) -> Result<Arc<Connection>, RpcError> {
        let err = |reason: String| RpcError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let (rd, wr) = transport::connect(addr, tls).await.map_err(|e| match e {
            ConnectError::Failed(reason) => err(reason),
            ConnectError::Denied(reason) => RpcError::Denied {
                addr: addr.to_string(),
                reason,
            },
        })?;
        let pending: Pending = Default::default();
        let closed = Arc::new(AtomicBool::new(false));
        let out = Mutex::new(FramedWrite::new(wr, wire::codec()));

        let mut reader = FramedRead::new(rd, wire::codec());
        let r_pending = pending.clone();
        let r_guard = ClosedOnDrop {
            closed: closed.clone(),
            pending: pending.clone(),
        };
        let r_addr = addr.to_string();
        let denied: Arc<std::sync::Mutex<Option<String>>> = Default::default();
        let r_denied = denied.clone();
        tokio::spawn(async move {
            let _guard = r_guard;
            loop {
                let buf = match reader.next().await {
                    Some(Ok(buf)) => buf,
                    Some(Err(e)) => {
                        // With TLS 1.3 a node's verdict on this client's
                        // certificate arrives after the handshake, as an
                        // alert on the first read.
                        if tls::is_refusal(&e) {
                            *r_denied.lock().unwrap() = Some(format!("TLS: {e}"));
                        }
                        break;
                    }
                    None => break,
                };
                match wire::decode::<Response>(&buf) {
                    Ok(frame) => {
                        let waiter = r_pending.lock().unwrap().remove(&frame.id);
                        if let Some(w) = waiter {
                            let _ = w.send(frame.body);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(addr = %r_addr, error = %e, "dropping connection after a bad frame");
                        break;
                    }
                }
            }
        });

        Ok(Arc::new(Connection {
            addr: addr.to_string(),
            next_id: AtomicU64::new(1),
            pending,
            out,
            closed,
            denied,
        }))
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub async fn call(&self, body: Request, timeout: Duration) -> Result<Response, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = wire::encode(&Frame { id, body }).map_err(|e| RpcError::Protocol {
            addr: self.addr.clone(),
            reason: e.to_string(),
        })?;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let closed = || match self.denied.lock().unwrap().clone() {
            Some(reason) => RpcError::Denied {
                addr: self.addr.clone(),
                reason,
            },
            None => RpcError::Closed {
                addr: self.addr.clone(),
            },
        };
        if self.is_closed() || self.out.lock().await.send(bytes).await.is_err() {
            self.closed.store(true, Ordering::Release);
            self.pending.lock().unwrap().remove(&id);
            return Err(closed());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Response::Denied(reason))) => Err(RpcError::Denied {
                addr: self.addr.clone(),
                reason,
            }),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(closed()),
            Err(_) => {
                self.pending.lock().unwrap().remove(&id);
                Err(RpcError::Timeout {
                    addr: self.addr.clone(),
                    timeout,
                })
            }
        }
    }
}

/// One live connection per address, re-established after it breaks.
/// One address's connection, behind its own lock so that connecting to a
/// node that hangs (a full accept queue makes `connect` wait) holds up only
/// the calls to that node.
type Slot = Arc<Mutex<Option<Arc<Connection>>>>;

#[derive(Default, Clone)]
pub struct ConnPool {
    conns: Arc<std::sync::Mutex<HashMap<String, Slot>>>,
    /// How every connection of the pool is made.
    creds: Credentials,
}

impl ConnPool {
    /// A pool whose connections are made with `creds`.
    pub fn new(creds: Credentials) -> ConnPool {
        ConnPool {
            conns: Default::default(),
            creds,
        }
    }

    /// How this pool's connections are made.
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    fn slot(&self, addr: &str) -> Slot {
        self.conns
            .lock()
            .unwrap()
            .entry(addr.to_string())
            .or_default()
            .clone()
    }

    pub async fn get(&self, addr: &str) -> Result<Arc<Connection>, RpcError> {
        let slot = self.slot(addr);
        let mut conn = slot.lock().await;
        if let Some(c) = conn.as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let c = Connection::connect_as(addr, &self.creds).await?;
        *conn = Some(c.clone());
        Ok(c)
    }

    pub async fn call(
        &self,
        addr: &str,
        body: Request,
        timeout: Duration,
    ) -> Result<Response, RpcError> {
        let conn = self.get(addr).await?;
        let result = conn.call(body, timeout).await;
        if result.is_err() {
            let slot = self.slot(addr);
            let mut current = slot.lock().await;
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                *current = None;
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client shared between runtimes: the runtime that opened a pooled
    /// connection ends, and the pool must not hand out the dead connection.
    #[test]
    fn a_connection_whose_runtime_ended_is_not_reused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let pool = ConnPool::default();
        let opener = tokio::runtime::Runtime::new().unwrap();
        let first = opener.block_on(pool.get(&addr)).unwrap();
        let (_server_side, _) = listener.accept().unwrap();
        assert!(!first.is_closed());
        drop(opener);
        assert!(first.is_closed(), "its tasks are gone with the runtime");
        let other = tokio::runtime::Runtime::new().unwrap();
        let second = other.block_on(pool.get(&addr)).unwrap();
        assert!(!Arc::ptr_eq(&first, &second), "a fresh connection");
    }
}
