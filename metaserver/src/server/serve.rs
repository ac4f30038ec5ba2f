//! Serving a client request on this node: reads from the state machine once
//! leadership is confirmed (or within a read lease), writes through the
//! group's Raft log.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::raft::ReadPolicy;

use super::raft::{ELECTION_TIMEOUT_MAX_MS, Raft};
use super::start::read_node_record;
use super::{MetaNode, state_machine};
use crate::MetaError;
use crate::request::{LogRequest, MetaRequest, MetaResult, Origin, ReadRequest, WriteRequest};
use crate::types::*;

/// How long after a confirmed heartbeat the leader serves reads alone: half
/// the lease openraft's followers grant (see `MetaNode::confirm_leadership`).
const READ_LEASE: Duration = Duration::from_millis(ELECTION_TIMEOUT_MAX_MS / 2);

/// A leader's right to serve reads without confirming leadership, valid
/// while its term and membership (`epoch`) stay the same.
pub(super) struct ReadLease {
    epoch: (u64, Option<crate::raft_types::LogId>),
    until: tokio::time::Instant,
}

impl MetaNode {
    /// Serves one client request for group `g` on this node; the first one a
    /// node without state receives makes it a one-node cluster.
    pub(crate) async fn handle(
        &self,
        g: GroupId,
        req: MetaRequest,
        origin: Option<Origin>,
    ) -> MetaResult {
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
            crate::metrics::node().lease_read(true);
            return Ok(());
        }
        crate::metrics::node().lease_read(false);
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
    pub(super) fn holds_read_lease(&self, g: GroupId, raft: &Raft) -> bool {
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

    pub(super) async fn serve(
        &self,
        g: GroupId,
        req: impl Into<MetaRequest>,
        origin: Option<Origin>,
    ) -> MetaResult {
        match req.into() {
            MetaRequest::Read(r) => self.serve_read(g, r).await,
            MetaRequest::Write(w) => self.serve_write(g, w, origin).await,
        }
    }

    /// A read, from this node's state machine once it knows that state is
    /// current.
    async fn serve_read(&self, g: GroupId, req: ReadRequest) -> MetaResult {
        let raft = self.raft(g).ok_or(MetaError::NoSuchGroup(g))?;
        self.confirm_leadership(g, &raft).await?;
        // Inline, not on a blocking thread: every read is a few point
        // lookups or one bounded page, shorter than the thread handoff.
        self.read_local(g, req)
    }

    /// A write, through the group's Raft log.
    async fn serve_write(
        &self,
        g: GroupId,
        req: WriteRequest,
        origin: Option<Origin>,
    ) -> MetaResult {
        let raft = self.raft(g).ok_or(MetaError::NoSuchGroup(g))?;
        if !req.frees_or_finishes() {
            self.disk_room.check()?;
        }
        // Only a leader within its read lease knows its state is current: a
        // deposed or lagging node sends the change to the log, which decides.
        if self.holds_read_lease(g, &raft)
            && let Some(refused) = state_machine::early_refusal(&self.db, g, &req)?
        {
            return Err(refused);
        }
        let proposed = std::time::Instant::now();
        let written = raft
            .client_write(LogRequest {
                req,
                origin,
                at: Timestamp::now(),
            })
            .await;
        crate::metrics::node().proposed(proposed, written.is_ok());
        match written {
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
    /// (A write never is: it is not a `ReadRequest`.)
    pub(super) fn answers_inline(&self, g: GroupId, req: &ReadRequest) -> bool {
        req.is_point_read()
            && self
                .raft(g)
                .is_some_and(|raft| self.holds_read_lease(g, &raft))
    }

    /// Answers a read from this node's state as of its last applied entry;
    /// the caller has made sure that state is current.
    pub(super) fn read_local(&self, g: GroupId, req: ReadRequest) -> MetaResult {
        state_machine::read(&self.db, g, req).map_err(MetaError::from)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{DEFAULT_SNAPSHOT_LOGS, NodeConfig};
    use crate::{FileType, FsSpec, MetaClient};

    /// Point reads are answered in the connection's task only by a leader
    /// within its read lease; page reads always go the long way (and writes
    /// cannot be asked: they are not `ReadRequest`s).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_point_reads_under_a_read_lease_are_answered_inline() {
        let dir = tempfile::tempdir().unwrap();
        let node = MetaNode::start(NodeConfig {
            id: 1,
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            snapshot_logs: DEFAULT_SNAPSHOT_LOGS,
            tls: None,
            prewarm: false,
        })
        .await
        .unwrap();
        let client = MetaClient::connect(std::slice::from_ref(&node.addr))
            .await
            .unwrap();
        client
            .format(
                &FsSpec {
                    block_size: 1 << 20,
                    chunk_size: 8 << 20,
                    partitions: 1,
                    partition_size: 1 << 20,
                    ..FsSpec::new("t", "file:///tmp/x")
                },
                (0, 0),
            )
            .await
            .unwrap();
        let fs = client.open_fs("t").await.unwrap();
        let f = fs
            .create(1, b"f", NewInode::plain(FileType::File, 0o644, 0, 0))
            .await
            .unwrap();
        let id = fs.info.id;
        let lookup = ReadRequest::Lookup {
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
                            ReadRequest::GetAttr { fs: id, ino: f.ino }
                        ),
                        Ok(Ok(_))
                    )
            })
            .expect("a group holds the file");
        // A read through the normal path confirms leadership: a lease follows.
        let before = node
            .handle(g, ReadRequest::GetAttr { fs: id, ino: 1 }.into(), None)
            .await;
        assert!(before.is_ok(), "{before:?}");
        assert!(node.holds_read_lease(g, &node.raft(g).unwrap()));
        assert!(node.answers_inline(g, &lookup));
        match node.read_local(g, lookup.clone()) {
            Ok(crate::request::MetaResponse::Inode(i)) => assert_eq!(i.ino, f.ino),
            other => panic!("expected the file's inode, got {other:?}"),
        }
        let page = ReadRequest::ReadDir {
            fs: id,
            ino: 1,
            after: None,
            limit: 10,
        };
        assert!(!node.answers_inline(g, &page), "a page read is spawned");
        // Once the lease is gone the read waits for a confirmation instead.
        node.read_leases.lock().unwrap().clear();
        assert!(!node.answers_inline(g, &lookup));
        assert!(!node.answers_inline(99, &lookup), "no such group");
        node.shutdown().await;
    }
}
