//! Client side of snapshots (see `server::snapshot`): taking one across
//! every group, listing and deleting them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::MetaError;
use crate::client::MetaClient;
use crate::request::{MetaRequest, MetaResponse};
use crate::types::*;

/// How long a snapshot's deletion may take per group.
const DROP_PATIENCE: Duration = Duration::from_secs(3600);
/// Clocks of the client and the leaders differ a little: a snapshot whose
/// copies ended this close to the freeze's end is not trusted.
const FREEZE_MARGIN: Duration = Duration::from_secs(5);
/// Default of `create_snapshot`'s `max_freeze`.
pub const DEFAULT_MAX_FREEZE: Duration = Duration::from_secs(300);

/// Tests widen the gap between the groups' copies (environment variable
/// `STRATA_TEST_SNAPSHOT_PAUSE_MS`) so that a snapshot that was not one cut
/// would show it.
fn copy_pause() -> Option<Duration> {
    let ms = std::env::var("STRATA_TEST_SNAPSHOT_PAUSE_MS").ok()?;
    ms.parse().ok().map(Duration::from_millis)
}

fn unexpected(r: MetaResponse) -> MetaError {
    MetaError::Protocol(format!("unexpected answer {r:?}"))
}

impl MetaClient {
    /// Takes snapshot `name` of filesystem `source` while clients keep
    /// working: every change acknowledged before the call is in it, nothing
    /// begun after it returned is. Changes wait while the groups copy; if
    /// that takes longer than `max_freeze` the snapshot fails (and changes
    /// resume on their own at that time even if this caller died).
    pub async fn create_snapshot(
        self: &Arc<Self>,
        source: &str,
        name: &str,
        max_freeze: Duration,
    ) -> Result<SnapshotInfo, MetaError> {
        let req = MetaRequest::CreateSnapshot {
            source: source.into(),
            name: name.into(),
            now: Timestamp::now(),
            loading: false,
        };
        let snap = match self.call(CLUSTER_GROUP, req).await? {
            MetaResponse::Snapshot(s) => s,
            other => return Err(unexpected(other)),
        };
        let started = tokio::time::Instant::now();
        let until = Timestamp::now().plus(max_freeze);
        let mut frozen = BTreeSet::new();
        let cut = async {
            // Freeze every group the filesystem has partitions in; a
            // partition added meanwhile brings its group in too.
            loop {
                let groups: BTreeSet<GroupId> = self
                    .partitions(snap.source)
                    .await?
                    .iter()
                    .map(|p| p.group)
                    .collect();
                let new: Vec<GroupId> = groups.difference(&frozen).copied().collect();
                if new.is_empty() {
                    break;
                }
                for g in new {
                    let freeze = MetaRequest::SetFreeze {
                        fs: snap.source,
                        until: Some(until),
                    };
                    self.call(g, freeze).await?;
                    frozen.insert(g);
                }
            }
            // Transactions already under way finish (or their leaders
            // recover them); new ones abort and their clients retry later.
            loop {
                let mut pending = 0;
                for &g in &frozen {
                    match self.call(g, MetaRequest::ListIntents).await? {
                        MetaResponse::Intents(l) => {
                            pending += l.iter().filter(|i| i.fs == snap.source).count()
                        }
                        other => return Err(unexpected(other)),
                    }
                }
                if pending == 0 {
                    break;
                }
                if started.elapsed() > max_freeze / 2 {
                    return Err(MetaError::Unavailable(format!(
                        "{pending} cross-group transactions still pending after {}s",
                        started.elapsed().as_secs()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let pause = copy_pause();
            for &g in &frozen {
                let copy = MetaRequest::CopyFs {
                    from: snap.source,
                    to: snap.id,
                };
                self.call_patient(g, copy, max_freeze).await?;
                if let Some(p) = pause {
                    tokio::time::sleep(p).await;
                }
            }
            // Every copy must have been taken while all groups were still
            // frozen, or the copies are not one cut.
            if started.elapsed() + FREEZE_MARGIN > max_freeze {
                return Err(MetaError::Unavailable(format!(
                    "copying took {}s, longer than the freeze allows ({}s): \
                     delete the snapshot and take it again with a longer freeze",
                    started.elapsed().as_secs(),
                    max_freeze.as_secs()
                )));
            }
            Ok(())
        }
        .await;
        // Lift whatever happened; a failed snapshot can be taken again.
        for &g in &frozen {
            let lift = MetaRequest::SetFreeze {
                fs: snap.source,
                until: None,
            };
            if let Err(e) = self.call(g, lift).await {
                tracing::error!(group = g, error = %e, "could not lift the snapshot freeze (it ends by itself)");
            }
        }
        cut?;
        let req = MetaRequest::SnapshotReady {
            source: source.into(),
            name: name.into(),
        };
        match self.call(CLUSTER_GROUP, req).await? {
            MetaResponse::Snapshot(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// `strata load`: registers snapshot `name` of `source` (still
    /// loading); its rows are then written with `FsClient::load_rows` and
    /// `finish_loaded_snapshot` seals it.
    pub async fn register_loaded_snapshot(
        &self,
        source: &str,
        name: &str,
        created: Timestamp,
    ) -> Result<SnapshotInfo, MetaError> {
        let req = MetaRequest::CreateSnapshot {
            source: source.into(),
            name: name.into(),
            now: created,
            loading: true,
        };
        match self.call(CLUSTER_GROUP, req).await? {
            MetaResponse::Snapshot(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Seals a loaded snapshot in every group of its source and marks it ready.
    pub async fn finish_loaded_snapshot(
        &self,
        source: &str,
        snap: &SnapshotInfo,
        groups: &[GroupId],
    ) -> Result<(), MetaError> {
        for &g in groups {
            let seal = MetaRequest::SealSnapshot {
                fs: snap.id,
                source: snap.source,
            };
            self.call_patient(g, seal, DROP_PATIENCE).await?;
        }
        let req = MetaRequest::SnapshotReady {
            source: source.into(),
            name: snap.name.clone(),
        };
        self.call(CLUSTER_GROUP, req).await?;
        Ok(())
    }

    pub async fn list_snapshots(&self, source: &str) -> Result<Vec<SnapshotInfo>, MetaError> {
        let req = MetaRequest::ListSnapshots {
            source: source.into(),
        };
        match self.call(CLUSTER_GROUP, req).await? {
            MetaResponse::Snapshots(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes snapshot `name` of `source`: each group drops its copy (the
    /// slices only it held become deletable), then group 0 forgets it.
    pub async fn delete_snapshot(
        self: &Arc<Self>,
        source: &str,
        name: &str,
    ) -> Result<(), MetaError> {
        let snap = self
            .list_snapshots(source)
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| MetaError::FsNotFound(snapshot_fs_name(source, name)))?;
        let src = self.open_fs(source).await?;
        for g in src.groups() {
            let drop = MetaRequest::DropFs {
                fs: snap.id,
                source: snap.source,
            };
            match self.call_patient(g, drop, DROP_PATIENCE).await {
                // Never copied there (a snapshot that failed half way).
                Ok(_) | Err(MetaError::Invalid(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let req = MetaRequest::DeleteSnapshot {
            source: source.into(),
            name: name.into(),
        };
        self.call(CLUSTER_GROUP, req).await?;
        Ok(())
    }
}
