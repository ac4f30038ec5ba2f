//! A snapshot after so many bytes of log, not only after so many entries.
//!
//! openraft snapshots a group every `snapshot_logs` entries, and its log
//! is purged up to the snapshot. Entries are usually a few hundred bytes,
//! but `strata load` sends a thousand rows in one, so 20 000 entries could
//! hold a gigabyte: the write-ahead log's checkpoint (every live entry of
//! every group, rewritten at each new segment) grew past what a record may
//! hold, and the node could not start again. So each node also snapshots a
//! group once it appended `snapshot_logs` times `BYTES_PER_ENTRY` bytes
//! since its last such snapshot, which keeps the live log to about that.

use std::sync::Arc;
use std::time::Duration;

use super::MetaNode;

/// The bytes an entry is allowed on average before a snapshot comes early:
/// 20 000 entries (the default `snapshot_logs`) make 312 MiB, a third of a
/// write-ahead log record's bound, and far above what ordinary metadata
/// writes reach between count-based snapshots.
pub(super) const BYTES_PER_ENTRY: u64 = 16 << 10;

/// How often the groups' appended bytes are looked at: a load appends a few
/// MB a second, so a second's lag matters little against the bound.
const CHECK_EVERY: Duration = Duration::from_secs(1);

pub(super) async fn snapshot_when_the_log_grows(
    node: Arc<MetaNode>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let bound = node.snapshot_logs.max(1).saturating_mul(BYTES_PER_ENTRY);
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        for g in node.groups() {
            if !node.wal.appended_over(g, bound) {
                continue;
            }
            let Some(raft) = node.raft(g) else { continue };
            tracing::info!(
                group = g,
                bound,
                "the group's log passed its size bound; snapshotting"
            );
            // A snapshot already being built is left to finish; the purge
            // after it bounds the log just as well.
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::warn!(group = g, error = %e, "could not start a snapshot");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{LogRequest, WriteRequest};
    use crate::server::NodeConfig;
    use openraft::async_runtime::WatchReceiver;

    /// 30 entries of 100 KiB: 3 MB, past 100 entries' worth of bytes long
    /// before 100 entries (the count that snapshots otherwise).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_whose_log_passes_its_byte_bound_is_snapshotted() {
        let dir = tempfile::tempdir().unwrap();
        let node = MetaNode::start(NodeConfig {
            id: 1,
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            snapshot_logs: 100,
            tls: None,
            prewarm: false,
        })
        .await
        .unwrap();
        node.bootstrap().await.unwrap();
        let raft = node.raft(0).unwrap();
        for i in 0..30u8 {
            raft.client_write(LogRequest {
                req: WriteRequest::RegisterNode {
                    id: 99,
                    addr: char::from(b'a' + i % 26).to_string().repeat(100 << 10),
                    groups: Vec::new(),
                },
                origin: None,
                at: crate::types::Timestamp::now(),
            })
            .await
            .unwrap();
        }
        let applied = raft.metrics().borrow_watched().last_applied.unwrap().index;
        assert!(applied < 100, "{applied} entries would snapshot by count");
        raft.wait(Some(Duration::from_secs(60)))
            .metrics(|m| m.snapshot.is_some(), "a snapshot of group 0")
            .await
            .expect("the group is snapshotted once its log passes the byte bound");
        node.shutdown().await;
    }
}
