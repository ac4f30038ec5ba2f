//! `MetaClient`: sends a request to the leader of its group, following
//! NotLeader hints, retrying through outages and elections, and numbering
//! writes so a retried one is applied once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::unexpected;
use crate::MetaError;
use crate::request::{MetaRequest, MetaResponse, Origin, ReadRequest};
use crate::rpc::{ConnPool, Credentials, RpcError};
use crate::types::*;
use crate::wire::{Request, Response};

/// How long a call keeps retrying before it reports the metaserver unavailable.
pub(super) const CALL_DEADLINE: Duration = Duration::from_secs(60);
/// A first contact fails sooner: a wrong address should not stall a command.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// One attempt at one node. Short, so that a node that hangs (paused, stuck
/// on its disk) costs a few seconds before the next node is tried, not the
/// whole deadline; a retried write is deduplicated, so giving up on a slow
/// attempt is safe.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts of a change refused because a snapshot is being taken.
const FROZEN_RETRY: Duration = Duration::from_millis(20);
/// Longest pause between rounds of attempts. Short: while a group elects a
/// new leader (about a second) every waiting call is stalled, and a round
/// costs each node one small request.
const MAX_BACKOFF: Duration = Duration::from_millis(200);
/// How many times a write is sent again after borrowing quota budget for
/// it before it gives up (other clients may take each loan first).
const BUDGET_ROUNDS: usize = 8;
/// A digest hashes a whole group.
const DIGEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Sequence numbers of this client's writes still waiting for an answer.
#[derive(Default)]
struct Writes {
    next: std::sync::atomic::AtomicU64,
    in_flight: std::sync::Mutex<std::collections::BTreeSet<u64>>,
}

impl Writes {
    fn begin(&self, client: u64) -> Origin {
        let seq = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let mut in_flight = self.in_flight.lock().unwrap();
        in_flight.insert(seq);
        let done_below = *in_flight.first().expect("just inserted");
        Origin {
            client,
            seq,
            done_below,
        }
    }

    fn end(&self, seq: u64) {
        self.in_flight.lock().unwrap().remove(&seq);
    }
}

pub struct MetaClient {
    /// Random per client process: names this client's writes for deduplication.
    pub(super) client_id: u64,
    writes: Writes,
    seeds: Vec<String>,
    pool: ConnPool,
    map: RwLock<ClusterMap>,
    leaders: RwLock<HashMap<GroupId, String>>,
}

impl MetaClient {
    /// This client process's random id (names its writes and its locks).
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// Connects to any of `addrs` and loads the cluster map.
    pub async fn connect(addrs: &[String]) -> Result<Arc<MetaClient>, MetaError> {
        Self::connect_with(addrs, Credentials::default()).await
    }

    /// `connect` with `creds`: over TLS when they hold TLS (TCP addresses;
    /// a Unix socket is never TLS), presenting their token if any.
    pub async fn connect_with(
        addrs: &[String],
        creds: Credentials,
    ) -> Result<Arc<MetaClient>, MetaError> {
        if addrs.is_empty() {
            return Err(MetaError::Invalid("no metaserver address given".into()));
        }
        let client = Arc::new(MetaClient {
            client_id: uuid::Uuid::new_v4().as_u64_pair().0,
            writes: Writes::default(),
            seeds: addrs.to_vec(),
            pool: ConnPool::new(creds),
            map: RwLock::new(ClusterMap::default()),
            leaders: RwLock::new(HashMap::new()),
        });
        client
            .load_map(CONNECT_DEADLINE)
            .await
            .map_err(|e| match e {
                MetaError::Unavailable(why) => MetaError::Unavailable(format!(
                    "{why}; is `strata meta serve` running at {}?",
                    addrs.join(",")
                )),
                other => other,
            })?;
        Ok(client)
    }

    pub async fn refresh_map(&self) -> Result<ClusterMap, MetaError> {
        self.load_map(CALL_DEADLINE).await
    }

    pub(super) async fn load_map(&self, deadline: Duration) -> Result<ClusterMap, MetaError> {
        match self
            .call_until(CLUSTER_GROUP, ReadRequest::GetClusterMap, deadline)
            .await?
        {
            MetaResponse::ClusterMap(m) => {
                *self.map.write().unwrap() = m.clone();
                Ok(m)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Applied index and state hash of group `g` on the node at `addr` (that
    /// replica itself, not the leader).
    pub async fn replica_digest(
        &self,
        addr: &str,
        g: GroupId,
    ) -> Result<(Option<u64>, u64), MetaError> {
        match self
            .pool
            .call(addr, Request::Digest { group: g }, DIGEST_TIMEOUT)
            .await
        {
            Ok(Response::Digest(r)) => r,
            Ok(other) => Err(MetaError::Protocol(format!("unexpected answer {other:?}"))),
            Err(e) => Err(MetaError::Unavailable(e.to_string())),
        }
    }

    /// What this client may do, as the nodes see it: its grant and the
    /// inode its view of a filesystem starts at. Asks the first node that
    /// answers.
    pub async fn identity(&self) -> Result<crate::wire::Identity, MetaError> {
        let mut last = MetaError::Unavailable("no metaserver to ask".into());
        for addr in self.candidates(CLUSTER_GROUP) {
            match self
                .pool
                .call(&addr, Request::Identity, CALL_DEADLINE)
                .await
            {
                Ok(Response::Identity(i)) => return Ok(i),
                Ok(Response::Denied(why)) => return Err(MetaError::Denied(why)),
                Ok(other) => {
                    return Err(MetaError::Protocol(format!("unexpected answer {other:?}")));
                }
                Err(e) => last = MetaError::Unavailable(e.to_string()),
            }
        }
        Err(last)
    }

    /// The inode this client's view of filesystem `fs` starts at (its
    /// root, or the directory a subtree grant names), and whether it may
    /// only read.
    pub(super) async fn view_of(&self, fs: &str) -> Result<(Ino, bool), MetaError> {
        if !self.pool.credentials().may_be_confined() {
            let read_only = matches!(
                self.pool.credentials().tls.as_ref().and_then(|t| t.grant()),
                Some(Grant::Fs {
                    read_only: true,
                    ..
                })
            );
            return Ok((ROOT_INO, read_only));
        }
        let me = self.identity().await?;
        match me.grant {
            Some(Grant::Fs { fs: granted, .. }) if granted != fs => Err(MetaError::Denied(
                format!("this client may use filesystem {granted:?} only"),
            )),
            Some(Grant::Fs { read_only, .. }) => Ok((me.root, read_only)),
            _ => Ok((me.root, false)),
        }
    }

    pub fn cluster_map(&self) -> ClusterMap {
        self.map.read().unwrap().clone()
    }

    /// Addresses to try for group `g`, the known leader first.
    pub(super) fn candidates(&self, g: GroupId) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(l) = self.leaders.read().unwrap().get(&g) {
            out.push(l.clone());
        }
        let map = self.map.read().unwrap();
        if let Some(members) = map.groups.get(&g) {
            for id in members {
                if let Some(a) = map.nodes.get(id) {
                    out.push(a.clone());
                }
            }
        }
        out.extend(self.seeds.iter().cloned());
        let mut seen = std::collections::HashSet::new();
        out.retain(|a| seen.insert(a.clone()));
        out
    }

    /// Sends `req` to group `g`, retrying on other nodes until `CALL_DEADLINE`.
    pub async fn call(
        &self,
        g: GroupId,
        req: impl Into<MetaRequest>,
    ) -> Result<MetaResponse, MetaError> {
        self.call_until(g, req, CALL_DEADLINE).await
    }

    /// `call` that keeps trying for `patience` (long operations: a
    /// snapshot's copy of a large filesystem).
    pub async fn call_patient(
        &self,
        g: GroupId,
        req: impl Into<MetaRequest>,
        patience: Duration,
    ) -> Result<MetaResponse, MetaError> {
        self.call_until(g, req, patience).await
    }

    pub(super) async fn call_until(
        &self,
        g: GroupId,
        req: impl Into<MetaRequest>,
        patience: Duration,
    ) -> Result<MetaResponse, MetaError> {
        let req = req.into();
        if let MetaRequest::Read(_) = req {
            return self.send(g, &req, None, patience).await;
        }
        // A write sent again after its group was lent quota budget is a new
        // write: the refused one changed nothing.
        let mut reclaimed = false;
        for _ in 0..BUDGET_ROUNDS {
            // A write keeps its sequence number through every retry, so the
            // group applies it once even when an answer was lost.
            let origin = self.writes.begin(self.client_id);
            let result = self.send(g, &req, Some(origin), patience).await;
            self.writes.end(origin.seq);
            match result {
                Err(MetaError::QuotaBudget {
                    fs,
                    subject,
                    home,
                    need,
                }) => {
                    // Boxed: lending calls the groups through here again.
                    Box::pin(self.lend_budget(fs, subject, (home, g), need)).await?
                }
                Err(MetaError::QuotaLent { fs, subject }) if !reclaimed => {
                    Box::pin(self.reclaim_budget(fs, subject, g)).await?;
                    reclaimed = true;
                }
                Err(MetaError::QuotaLent { subject, .. }) => {
                    return Err(MetaError::QuotaExceeded(format!(
                        "{subject}'s quota is used up in every group"
                    )));
                }
                other => return other,
            }
        }
        Err(MetaError::QuotaExceeded(format!(
            "group {g} found its quota budget used up {BUDGET_ROUNDS} times in a row"
        )))
    }

    pub(super) async fn send(
        &self,
        g: GroupId,
        req: &MetaRequest,
        origin: Option<Origin>,
        patience: Duration,
    ) -> Result<MetaResponse, MetaError> {
        use tracing::Instrument;
        let kind = req.kind();
        let start = std::time::Instant::now();
        // The same client and seq name the write in the nodes' logs (the
        // `request` span and the apply), so one operation can be followed.
        let span = tracing::debug_span!(
            "meta_rpc",
            kind,
            group = g,
            client = origin.map(|o| o.client),
            seq = origin.map(|o| o.seq)
        );
        let result = self
            .send_until_answered(g, req, origin, patience)
            .instrument(span)
            .await;
        crate::metrics::client().done(kind, start, result.is_ok());
        result
    }

    async fn send_until_answered(
        &self,
        g: GroupId,
        req: &MetaRequest,
        origin: Option<Origin>,
        patience: Duration,
    ) -> Result<MetaResponse, MetaError> {
        let metrics = crate::metrics::client();
        let kind = req.kind();
        let mut tries = 0u32;
        let mut deadline = tokio::time::Instant::now() + patience;
        let mut backoff = Duration::from_millis(20);
        let mut last_err = MetaError::Unavailable("no metaserver reachable".into());
        let mut just_hinted = false;
        'attempts: loop {
            let mut hinted = None;
            for addr in self.candidates(g) {
                let body = Request::Meta {
                    group: g,
                    req: req.clone(),
                    origin,
                };
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let timeout = ATTEMPT_TIMEOUT.min(left.max(Duration::from_millis(200)));
                tries += 1;
                if tries > 1 {
                    metrics.retried(kind);
                }
                match self.pool.call(&addr, body, timeout).await {
                    Ok(Response::Meta(Ok(resp))) => {
                        self.leaders.write().unwrap().insert(g, addr);
                        return Ok(resp);
                    }
                    Ok(Response::Meta(Err(MetaError::NotLeader { leader, .. }))) => {
                        tracing::debug!(%addr, group = g, ?leader, "not the leader");
                        metrics.not_leader(kind);
                        self.leaders.write().unwrap().remove(&g);
                        if let Some((_, hint)) = leader
                            && hint != addr
                        {
                            hinted = Some(hint);
                            break;
                        }
                        last_err = MetaError::Unavailable(format!("group {g} has no leader yet"));
                    }
                    Ok(Response::Meta(Err(MetaError::Frozen))) => {
                        // A snapshot is being taken: the leader answered, so
                        // wait a little and ask it again, for as long as the
                        // freeze lasts (it ends by itself at its end time).
                        self.leaders.write().unwrap().insert(g, addr);
                        tokio::time::sleep(FROZEN_RETRY).await;
                        deadline = tokio::time::Instant::now() + patience;
                        continue 'attempts;
                    }
                    Ok(Response::Meta(Err(e))) if e.is_retryable() => {
                        tracing::debug!(%addr, group = g, error = %e, "retrying elsewhere");
                        last_err = e
                    }
                    Ok(Response::Meta(Err(e))) => return Err(e),
                    Ok(other) => {
                        return Err(MetaError::Protocol(format!("unexpected answer {other:?}")));
                    }
                    Err(RpcError::Denied { addr, reason }) => {
                        return Err(MetaError::Denied(format!("{addr}: {reason}")));
                    }
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "metaserver call failed");
                        last_err = MetaError::Unavailable(e.to_string());
                    }
                }
            }
            if let Some(h) = hinted {
                self.leaders.write().unwrap().insert(g, h);
                // Follow a hint at once, but only once in a row: two nodes
                // pointing at each other must not make this loop spin.
                if !just_hinted {
                    just_hinted = true;
                    continue;
                }
            }
            just_hinted = false;
            if tokio::time::Instant::now() >= deadline {
                return Err(last_err);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
