//! What the metadata layer counts. The client side: RPCs by kind (count,
//! latency, retries, errors, NotLeader redirects). The node side: requests
//! by kind and result, connections, proposals, log fsyncs, read-lease
//! hits, snapshots built; and, read at scrape time, the database's size
//! and each Raft group's leader, term and indexes.

use std::sync::{LazyLock, Mutex, Weak};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use strata_metrics::Labeled;

use crate::types::{GroupId, NodeId};
use crate::wire::Response;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindResult {
    kind: &'static str,
    result: &'static str,
}

fn latency_histograms<L>() -> Labeled<L, Histogram>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug,
{
    Labeled::new(Family::new_with_constructor(
        strata_metrics::latency_histogram,
    ))
}

/// The client's side: what it asked of the metaservers.
pub struct ClientMetrics {
    rpcs: Labeled<KindLabel, Counter>,
    durations: Labeled<KindLabel, Histogram>,
    retries: Labeled<KindLabel, Counter>,
    errors: Labeled<KindLabel, Counter>,
    not_leader: Labeled<KindLabel, Counter>,
}

static CLIENT: LazyLock<ClientMetrics> = LazyLock::new(|| {
    let m = ClientMetrics {
        rpcs: Labeled::default(),
        durations: latency_histograms(),
        retries: Labeled::default(),
        errors: Labeled::default(),
        not_leader: Labeled::default(),
    };
    strata_metrics::register(
        "meta_rpcs",
        "Metadata requests made (once each, however many tries), by kind",
        m.rpcs.family(),
    );
    strata_metrics::register(
        "meta_rpc_duration_seconds",
        "Time from a metadata request to its answer, retries included, by kind",
        m.durations.family(),
    );
    strata_metrics::register(
        "meta_rpc_retries",
        "Metadata requests sent again (to another node, or after a pause), by kind",
        m.retries.family(),
    );
    strata_metrics::register(
        "meta_rpc_errors",
        "Metadata requests answered with an error, by kind",
        m.errors.family(),
    );
    strata_metrics::register(
        "meta_rpc_not_leader",
        "Answers from a node that does not lead the group asked, by kind",
        m.not_leader.family(),
    );
    m
});

pub fn client() -> &'static ClientMetrics {
    &CLIENT
}

impl ClientMetrics {
    pub(crate) fn retried(&self, kind: &'static str) {
        self.retries.with(&KindLabel { kind }, Counter::inc);
    }

    pub(crate) fn not_leader(&self, kind: &'static str) {
        self.not_leader.with(&KindLabel { kind }, Counter::inc);
    }

    pub(crate) fn done(&self, kind: &'static str, start: Instant, ok: bool) {
        let label = KindLabel { kind };
        self.rpcs.with(&label, Counter::inc);
        self.durations
            .with(&label, |h| h.observe(strata_metrics::seconds_since(start)));
        if !ok {
            self.errors.with(&label, Counter::inc);
        }
    }
}

/// The node's side: what it was asked and how its groups stand.
pub struct NodeMetrics {
    requests: Labeled<KindResult, Counter>,
    durations: Labeled<KindLabel, Histogram>,
    connections: Gauge,
    fsyncs: Histogram,
    lease_reads: Labeled<ResultLabel, Counter>,
    proposals: Labeled<ResultLabel, Histogram>,
    snapshots: Histogram,
    snapshot_bytes: Gauge,
    hand_overs: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

static NODE: LazyLock<NodeMetrics> = LazyLock::new(|| {
    let m = NodeMetrics {
        requests: Labeled::default(),
        durations: latency_histograms(),
        connections: Gauge::default(),
        fsyncs: strata_metrics::latency_histogram(),
        lease_reads: Labeled::default(),
        proposals: latency_histograms(),
        snapshots: strata_metrics::latency_histogram(),
        snapshot_bytes: Gauge::default(),
        hand_overs: Counter::default(),
    };
    strata_metrics::register(
        "node_requests",
        "Requests this node answered (clients' and peers'), by kind and result",
        m.requests.family(),
    );
    strata_metrics::register(
        "node_request_duration_seconds",
        "Time from a request's arrival to its answer, by kind",
        m.durations.family(),
    );
    strata_metrics::register(
        "node_connections",
        "Connections open to this node (clients and peers)",
        m.connections.clone(),
    );
    strata_metrics::register(
        "node_log_fsync_duration_seconds",
        "Time one write and fdatasync of the Raft log took",
        m.fsyncs.clone(),
    );
    strata_metrics::register(
        "node_lease_reads",
        "Reads that needed no leadership check (hit: within a read lease) and those that did (miss)",
        m.lease_reads.family(),
    );
    strata_metrics::register(
        "node_proposal_duration_seconds",
        "Time from proposing a write to its group's log to its result (ok: \
         committed and applied; error: refused, as by a node not leading)",
        m.proposals.family(),
    );
    strata_metrics::register(
        "node_snapshot_duration_seconds",
        "Snapshots of a group's state this node built, and how long each took",
        m.snapshots.clone(),
    );
    strata_metrics::register(
        "node_last_snapshot_bytes",
        "Size of the last snapshot this node built",
        m.snapshot_bytes.clone(),
    );
    strata_metrics::register(
        "node_leader_hand_overs",
        "Groups this node led and handed to another voter because no quorum \
         answered it (it could send but not receive)",
        m.hand_overs.clone(),
    );
    strata_metrics::register_collector(GroupCollector);
    m
});

pub fn node() -> &'static NodeMetrics {
    &NODE
}

/// A request being served, counted with its result when answered.
pub(crate) struct Served {
    kind: &'static str,
    start: Instant,
}

impl Served {
    pub(crate) fn start(kind: &'static str) -> Served {
        Served {
            kind,
            start: Instant::now(),
        }
    }

    pub(crate) fn answered(self, body: &Response) {
        let m = node();
        let result = result_of(body);
        m.requests.with(
            &KindResult {
                kind: self.kind,
                result,
            },
            Counter::inc,
        );
        m.durations.with(&KindLabel { kind: self.kind }, |h| {
            h.observe(strata_metrics::seconds_since(self.start))
        });
    }
}

/// "ok", the error's name (`NotLeader`, `NotFound`, ...), "denied", or
/// "error" for a peer's Raft RPC that failed.
fn result_of(body: &Response) -> &'static str {
    match body {
        Response::Meta(Err(e)) | Response::Join(Err(e)) => e.into(),
        Response::Digest(Err(e)) => e.into(),
        Response::Append(Err(_))
        | Response::Vote(Err(_))
        | Response::Snapshot(Err(_))
        | Response::TransferLeader(Err(_)) => "error",
        Response::Denied(_) => "denied",
        _ => "ok",
    }
}

/// A connection to this node, counted open while this lives.
pub(crate) struct OpenConnection;

impl OpenConnection {
    pub(crate) fn new() -> OpenConnection {
        node().connections.inc();
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        node().connections.dec();
    }
}

impl NodeMetrics {
    pub(crate) fn fsynced(&self, start: Instant) {
        self.fsyncs.observe(strata_metrics::seconds_since(start));
    }

    pub(crate) fn proposed(&self, start: Instant, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.proposals.with(&ResultLabel { result }, |h| {
            h.observe(strata_metrics::seconds_since(start))
        });
    }

    pub(crate) fn snapshot_built(&self, start: Instant, bytes: u64) {
        self.snapshots.observe(strata_metrics::seconds_since(start));
        self.snapshot_bytes.set(bytes as i64);
    }

    pub(crate) fn leader_handed_over(&self) {
        self.hand_overs.inc();
    }

    pub(crate) fn lease_read(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.lease_reads.with(&ResultLabel { result }, Counter::inc);
    }
}

/// One group as this node sees it, for a scrape.
pub(crate) struct GroupGauges {
    pub group: GroupId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log: Option<u64>,
    pub committed: Option<u64>,
    pub applied: Option<u64>,
}

/// Something whose groups a scrape reports: a running node.
pub(crate) trait GroupSource: Send + Sync {
    fn node_id(&self) -> NodeId;
    fn group_gauges(&self) -> Vec<GroupGauges>;
    /// Bytes of the node's database file.
    fn db_bytes(&self) -> u64;
    /// Inodes and bytes per filesystem in each group this node leads
    /// (one report per group across the cluster).
    fn led_usage(&self) -> Vec<(GroupId, crate::types::FsId, crate::types::Usage)>;
    /// Quotas per filesystem in each group this node leads, and how many
    /// of them are at 90 % of a limit or more.
    fn led_quotas(&self) -> Vec<(GroupId, crate::types::FsId, QuotaCounts)>;
}

/// A filesystem's quotas in one group, for a scrape.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct QuotaCounts {
    pub quotas: u64,
    /// Those at 90 % of a limit or more.
    pub near_limit: u64,
}

/// The nodes this process runs (tests run several; a server one).
static SOURCES: Mutex<Vec<Weak<dyn GroupSource>>> = Mutex::new(Vec::new());

/// Reports `source`'s groups in the metrics for as long as it lives.
pub(crate) fn watch_groups(source: Weak<dyn GroupSource>) {
    LazyLock::force(&NODE);
    let mut sources = SOURCES.lock().unwrap();
    sources.retain(|s| s.strong_count() > 0);
    sources.push(source);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    node: NodeId,
    group: GroupId,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: NodeId,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UsageLabels {
    node: NodeId,
    group: GroupId,
    fs: crate::types::FsId,
}

#[derive(Debug)]
struct GroupCollector;

impl Collector for GroupCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let live: Vec<_> = SOURCES
            .lock()
            .unwrap()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let groups: Vec<(GroupLabels, GroupGauges)> = live
            .iter()
            .flat_map(|s| {
                let node = s.node_id();
                s.group_gauges().into_iter().map(move |g| {
                    (
                        GroupLabels {
                            node,
                            group: g.group,
                        },
                        g,
                    )
                })
            })
            .collect();
        type Read = fn(NodeId, &GroupGauges) -> i64;
        let gauges: [(&str, &str, Read); 7] = [
            (
                "raft_is_leader",
                "1 where this node leads the group, else 0",
                |node, g| i64::from(g.leader == Some(node)),
            ),
            (
                "raft_has_leader",
                "1 where this node knows a leader of the group, else 0",
                |_, g| i64::from(g.leader.is_some()),
            ),
            ("raft_term", "The group's current term here", |_, g| {
                g.term as i64
            }),
            (
                "raft_last_log_index",
                "Index of the last entry in this node's log of the group",
                |_, g| g.last_log.unwrap_or(0) as i64,
            ),
            (
                "raft_committed_index",
                "Index of the last entry this node knows committed in the group",
                |_, g| g.committed.unwrap_or(0) as i64,
            ),
            (
                "raft_applied_index",
                "Index of the last entry this node applied to the group's state",
                |_, g| g.applied.unwrap_or(0) as i64,
            ),
            (
                "raft_apply_lag",
                "Committed entries of the group this node has not applied yet",
                |_, g| {
                    g.committed
                        .unwrap_or(0)
                        .saturating_sub(g.applied.unwrap_or(0)) as i64
                },
            ),
        ];
        let mut db = encoder.encode_descriptor(
            "node_db_bytes",
            "Size of the node's database file (redb)",
            None,
            MetricType::Gauge,
        )?;
        for s in &live {
            let node = NodeLabel { node: s.node_id() };
            db.encode_family(&node)?.encode_gauge(&s.db_bytes())?;
        }
        let usage: Vec<_> = live
            .iter()
            .flat_map(|s| {
                let node = s.node_id();
                s.led_usage()
                    .into_iter()
                    .map(move |(group, fs, u)| (UsageLabels { node, group, fs }, u))
            })
            .collect();
        type Part = fn(&crate::types::Usage) -> u64;
        let parts: [(&str, &str, Part); 2] = [
            (
                "fs_inodes",
                "Inodes of a filesystem in one group (its partition there), trash included, from the group's leader",
                |u| u.inodes,
            ),
            (
                "fs_bytes",
                "Bytes of a filesystem's files in one group, trash included, from the group's leader",
                |u| u.bytes,
            ),
        ];
        for (name, help, read) in parts {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, u) in &usage {
                family.encode_family(labels)?.encode_gauge(&read(u))?;
            }
        }
        let quotas: Vec<_> = live
            .iter()
            .flat_map(|s| {
                let node = s.node_id();
                s.led_quotas()
                    .into_iter()
                    .map(move |(group, fs, q)| (UsageLabels { node, group, fs }, q))
            })
            .collect();
        type Count = fn(&QuotaCounts) -> u64;
        let counts: [(&str, &str, Count); 2] = [
            (
                "quotas",
                "Directory quotas of a filesystem in one group, from the group's leader",
                |q| q.quotas,
            ),
            (
                "quotas_near_limit",
                "Directory quotas that have used 90 % or more of their bytes or inodes \
                 (`strata quota list` names them)",
                |q| q.near_limit,
            ),
        ];
        for (name, help, read) in counts {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, q) in &quotas {
                family.encode_family(labels)?.encode_gauge(&read(q))?;
            }
        }
        for (name, help, read) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, status) in &groups {
                family
                    .encode_family(labels)?
                    .encode_gauge(&read(labels.node, status))?;
            }
        }
        Ok(())
    }
}
