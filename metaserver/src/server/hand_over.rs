//! A leader that hears from no quorum hands its group to another voter.
//!
//! A follower refuses to vote for anyone while it hears from a leader
//! (the leader's lease). A leader whose incoming traffic is cut, so that it
//! can send but not receive, goes on sending the entries it cannot get
//! acknowledged: its followers keep hearing it and never elect another,
//! and the group takes no write until the link heals (openraft's
//! quorum-loss probing silences only heartbeats, not replication). Such a
//! leader can still send, so it asks a follower to take over: openraft's
//! leader transfer is sent to every voter, each stops honouring the old
//! leader's lease, and the chosen one starts an election at once. A
//! leader cut off both ways sends nothing, and its followers' leases run
//! out as before. A leader that hears a quorum again simply goes on (a
//! transfer only happens after `UNHEARD_FOR` of silence), and one that
//! handed over steps down when it hears the new leader's term.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::Instant as _;
use openraft::async_runtime::WatchReceiver;
use tokio::time::Instant;

use super::MetaNode;
use super::raft::{ELECTION_TIMEOUT_MAX_MS, HEARTBEAT_MS};
use crate::types::{GroupId, NodeId};

/// Silence from every quorum after which a leader hands over: more than
/// two follower leases, so that acknowledgements merely slowed by a busy
/// disk (a heartbeat is answered without one) do not move leaders.
const UNHEARD_FOR: Duration = Duration::from_millis(2 * ELECTION_TIMEOUT_MAX_MS + 4 * HEARTBEAT_MS);

/// How often the leaders' last acknowledgements are looked at.
const CHECK_EVERY: Duration = Duration::from_millis(2 * HEARTBEAT_MS);

/// Per group led: since when this node has seen itself lead it (a leader
/// no quorum ever acknowledged has no acknowledgement time), its last
/// hand-over, and how many it tried, to pick the next voter in turn.
#[derive(Default)]
struct Watch {
    leading_since: Option<Instant>,
    last_try: Option<Instant>,
    tries: usize,
}

pub(super) async fn hand_over_when_unheard(
    node: Arc<MetaNode>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut watches: HashMap<GroupId, Watch> = HashMap::new();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        for g in node.groups() {
            let Some(raft) = node.raft(g) else { continue };
            let (heard, others) = {
                let m = raft.metrics();
                let m = m.borrow_watched();
                if m.current_leader != Some(node.id) {
                    watches.remove(&g);
                    continue;
                }
                let mut others: Vec<(NodeId, Option<u64>)> = m
                    .membership_config
                    .membership()
                    .voter_ids()
                    .filter(|v| *v != node.id)
                    .map(|v| {
                        let matched = m
                            .replication
                            .as_ref()
                            .and_then(|r| r.get(&v).cloned().flatten())
                            .map(|l| l.index);
                        (v, matched)
                    })
                    .collect();
                // The most caught-up first: it needs the least to take over.
                others.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                (m.last_quorum_acked.as_ref().map(|t| t.elapsed()), others)
            };
            let w = watches.entry(g).or_default();
            let since = *w.leading_since.get_or_insert(now);
            if others.is_empty() {
                continue;
            }
            let leading_for = now.saturating_duration_since(since);
            let unheard = heard.map_or(leading_for, |ago| ago.min(leading_for));
            if unheard < UNHEARD_FOR
                || w.last_try
                    .is_some_and(|t| now.saturating_duration_since(t) < UNHEARD_FOR)
            {
                continue;
            }
            let to = others[w.tries % others.len()].0;
            w.tries += 1;
            w.last_try = Some(now);
            tracing::warn!(
                group = g,
                to,
                unheard_ms = unheard.as_millis() as u64,
                "no quorum has answered this leader; handing the group over"
            );
            crate::metrics::node().leader_handed_over();
            if raft.trigger().transfer_leader(to).await.is_err() {
                return;
            }
        }
    }
}
