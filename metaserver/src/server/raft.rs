//! Each group's Raft instance: its type and its configuration.

use std::sync::Arc;

use openraft::{Config, SnapshotPolicy};

use super::StateMachine;

/// One group's Raft instance on this node.
pub(crate) type Raft = openraft::Raft<crate::raft_types::TypeConfig, StateMachine>;

/// Raft timing, shared by `raft_config` and the read lease.
pub(super) const HEARTBEAT_MS: u64 = 100;
pub(super) const ELECTION_TIMEOUT_MIN_MS: u64 = 400;
pub(super) const ELECTION_TIMEOUT_MAX_MS: u64 = 800;

pub(super) fn raft_config(snapshot_logs: u64) -> Arc<Config> {
    let cfg = Config {
        cluster_name: "strata".into(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_logs.max(1)),
        // Keep a tail of the log so a briefly lagging follower needs no snapshot.
        max_in_snapshot_log_to_keep: (snapshot_logs / 10).min(1_000),
        // Keeps snapshot chunks far below the wire's frame limit.
        snapshot_max_chunk_size: 4 << 20,
        ..Default::default()
    };
    Arc::new(cfg.validate().expect("static raft config is valid"))
}
