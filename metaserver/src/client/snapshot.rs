//! Client side of snapshots (see `server::ops::snapshot`): taking one across
//! every group, listing and deleting them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::unexpected;
use super::{FsClient, MetaClient};
use crate::MetaError;
use crate::request::{MetaResponse, ReadRequest, WriteRequest};
use crate::types::*;

/// Inodes per `CopyInodes` request of a snapshot of one tree.
const SUBTREE_BATCH: usize = 16_384;
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
        subtree: Option<&str>,
        max_freeze: Duration,
    ) -> Result<SnapshotInfo, MetaError> {
        let subtree = subtree.filter(|p| p.split('/').any(|c| !c.is_empty()));
        let req = WriteRequest::CreateSnapshot {
            source: source.into(),
            name: name.into(),
            now: Timestamp::now(),
            loading: false,
            path: subtree.map(String::from),
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
                    let freeze = WriteRequest::SetFreeze {
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
                    match self.call(g, ReadRequest::ListIntents).await? {
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
            // What an earlier, failed attempt under this name copied is
            // from another moment: start from nothing.
            for &g in &frozen {
                let drop = WriteRequest::DropFs {
                    fs: snap.id,
                    source: snap.source,
                };
                self.call_patient(g, drop, max_freeze).await?;
            }
            match subtree {
                None => {
                    let pause = copy_pause();
                    for &g in &frozen {
                        let copy = WriteRequest::CopyFs {
                            from: snap.source,
                            to: snap.id,
                        };
                        self.call_patient(g, copy, max_freeze).await?;
                        if let Some(p) = pause {
                            tokio::time::sleep(p).await;
                        }
                    }
                }
                Some(path) => {
                    let src = self.open_fs(source).await?;
                    self.copy_subtree(&src, &snap, path, max_freeze).await?;
                    for &g in &frozen {
                        let seal = WriteRequest::SealSnapshot {
                            fs: snap.id,
                            source: snap.source,
                        };
                        self.call_patient(g, seal, max_freeze).await?;
                    }
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
            let lift = WriteRequest::SetFreeze {
                fs: snap.source,
                until: None,
            };
            if let Err(e) = self.call(g, lift).await {
                tracing::error!(group = g, error = %e, "could not lift the snapshot freeze (it ends by itself)");
            }
        }
        cut?;
        let req = WriteRequest::SnapshotReady {
            source: source.into(),
            name: name.into(),
        };
        match self.call(CLUSTER_GROUP, req).await? {
            MetaResponse::Snapshot(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Copies the tree under `path` of frozen filesystem `src` into `snap`,
    /// whose root (inode 1) becomes that directory.
    async fn copy_subtree(
        &self,
        src: &FsClient,
        snap: &SnapshotInfo,
        path: &str,
        patience: Duration,
    ) -> Result<(), MetaError> {
        let mut root = ROOT_INO;
        for name in path.split('/').filter(|c| !c.is_empty()) {
            let child = src.lookup(root, name.as_bytes()).await?;
            if child.kind != FileType::Dir {
                return Err(MetaError::NotDir);
            }
            root = child.ino;
        }
        let root_inode = src.getattr(root).await?;
        // Walk the tree (frozen: it does not change under the walk).
        let mut per_group: BTreeMap<GroupId, Vec<Ino>> = BTreeMap::new();
        let mut links: HashMap<Ino, (u32, u32)> = HashMap::new();
        let mut root_entries = Vec::new();
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            let mut after = None;
            loop {
                let page = src.readdir(dir, after.clone(), 1024).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.name.clone());
                for e in page {
                    let ino = e.dentry.ino;
                    if dir == root {
                        root_entries.push((e.name.clone(), e.dentry));
                    }
                    if e.dentry.kind == FileType::Dir {
                        dirs.push(ino);
                    } else {
                        let nlink = match &e.attr {
                            Some(a) => a.nlink,
                            None => src.getattr(ino).await?.nlink,
                        };
                        let seen = links.entry(ino).or_insert((0, nlink));
                        seen.0 += 1;
                        if seen.0 > 1 {
                            continue;
                        }
                    }
                    per_group
                        .entry(src.group_of(ino).await?)
                        .or_default()
                        .push(ino);
                }
            }
        }
        // Files also linked from outside the tree have fewer links in it.
        let nlink: HashMap<Ino, u32> = links
            .into_iter()
            .filter(|(_, (inside, all))| inside < all)
            .map(|(ino, (inside, _))| (ino, inside))
            .collect();
        for (g, inos) in per_group {
            for batch in inos.chunks(SUBTREE_BATCH) {
                let req = WriteRequest::CopyInodes {
                    from: snap.source,
                    to: snap.id,
                    root,
                    inos: batch.to_vec(),
                    nlink: batch
                        .iter()
                        .filter_map(|i| nlink.get(i).map(|n| (*i, *n)))
                        .collect(),
                };
                self.call_patient(g, req, patience).await?;
            }
        }
        // The tree's top directory becomes the snapshot's root, in the
        // group that holds inode 1.
        let mut rows = vec![TreeRow::Inode(Inode {
            ino: ROOT_INO,
            parent: ROOT_INO,
            ..root_inode
        })];
        rows.extend(
            root_entries
                .into_iter()
                .map(|(name, entry)| TreeRow::Entry {
                    parent: ROOT_INO,
                    name,
                    entry,
                }),
        );
        let root_group = src.group_of(ROOT_INO).await?;
        for batch in rows.chunks(super::dump::LOAD_BATCH) {
            let req = WriteRequest::LoadRows {
                fs: snap.id,
                layout: snap.source,
                rows: batch.to_vec(),
            };
            self.call_patient(root_group, req, patience).await?;
        }
        Ok(())
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
        let req = WriteRequest::CreateSnapshot {
            source: source.into(),
            name: name.into(),
            now: created,
            loading: true,
            path: None,
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
            let seal = WriteRequest::SealSnapshot {
                fs: snap.id,
                source: snap.source,
            };
            self.call_patient(g, seal, DROP_PATIENCE).await?;
        }
        let req = WriteRequest::SnapshotReady {
            source: source.into(),
            name: snap.name.clone(),
        };
        self.call(CLUSTER_GROUP, req).await?;
        Ok(())
    }

    pub async fn list_snapshots(&self, source: &str) -> Result<Vec<SnapshotInfo>, MetaError> {
        let req = ReadRequest::ListSnapshots {
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
            let drop = WriteRequest::DropFs {
                fs: snap.id,
                source: snap.source,
            };
            self.call_patient(g, drop, DROP_PATIENCE).await?;
        }
        let req = WriteRequest::DeleteSnapshot {
            source: source.into(),
            name: name.into(),
        };
        self.call(CLUSTER_GROUP, req).await?;
        Ok(())
    }
}
