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
        // A leader that hears from no quorum for a lease (it can send but
        // not receive: a one-way cut) stops its heartbeats for this long,
        // in turns with sending them, so that its followers elect another
        // leader instead of hearing from one that cannot commit. It works
        // for an idle group; one with entries not yet acknowledged keeps
        // hearing them sent again (openraft does not gate replication),
        // which `hand_over` answers by handing the group to a follower
        // (`tests/network_faults.rs`, Deafen; decision 67). At least a
        // lease (the election timeout's maximum) plus an election timeout.
        quorum_loss_probe_interval: Some(2 * ELECTION_TIMEOUT_MAX_MS),
        ..Default::default()
    };
    Arc::new(cfg.validate().expect("static raft config is valid"))
}
