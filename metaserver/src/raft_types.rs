//! The openraft type configuration shared by every group.

use openraft::type_config::alias;

use crate::request::{LogRequest, MetaResult};
use crate::types::NodeId;

openraft::declare_raft_types!(
    pub TypeConfig:
        D = LogRequest,
        R = MetaResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

pub type Entry = alias::EntryOf<TypeConfig>;
pub type LogId = alias::LogIdOf<TypeConfig>;
pub type Vote = alias::VoteOf<TypeConfig>;
pub type StoredMembership = alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = alias::SnapshotMetaOf<TypeConfig>;
/// Snapshots are files on disk so a large group never sits in memory whole.
pub type SnapshotData = tokio::fs::File;
pub type Snapshot = alias::SnapshotOf<TypeConfig, SnapshotData>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
/// Leaders are identified by term and node (several may share a term).
pub type CommittedLeaderId = alias::CommittedLeaderIdOf<TypeConfig>;
