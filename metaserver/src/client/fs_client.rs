//! `FsClient`: typed calls for one filesystem, each routed ino -> partition
//! -> group, retried while a transaction's lock is in the way.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::deferred::DeferredCreates;
use super::recent::{RecentAttrs, RecentEntries};
use super::routing::CALL_DEADLINE;
use super::{MetaClient, expect_answer};
use crate::MetaError;
use crate::request::{IntentInfo, MetaRequest, MetaResponse, ReadRequest};
use crate::types::*;

/// Typed metadata calls for one filesystem.
pub struct FsClient {
    pub(super) meta: Arc<MetaClient>,
    pub info: FsInfo,
    /// Where this client's view starts: the filesystem's root, or the
    /// directory its subtree grant names (it may not go above it).
    pub(super) root: Ino,
    /// This client's certificate or token lets it only read.
    pub(super) granted_read_only: bool,
    pub(super) partitions: RwLock<Vec<Partition>>,
    pub(super) dir_spread_slack: std::sync::atomic::AtomicU64,
    /// Inodes per group when last asked, counted up by this client's creates since.
    pub(super) loads: tokio::sync::Mutex<Option<(tokio::time::Instant, HashMap<GroupId, u64>)>>,
    pub(super) recent: RecentAttrs,
    pub(super) entries: RecentEntries,
    pub(super) deferred: DeferredCreates,
}

/// Whether an operation's failure means "try the whole operation again".
fn transient(e: &MetaError) -> bool {
    matches!(e, MetaError::Busy(_) | MetaError::TxAborted)
}

/// A short random pause, so two operations that collided do not collide again.
async fn jitter(attempt: u32) {
    let cap = 5u64 << attempt.min(6);
    let ms = 1 + uuid::Uuid::new_v4().as_u64_pair().0 % cap;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

impl FsClient {
    pub fn meta(&self) -> &Arc<MetaClient> {
        &self.meta
    }

    /// The inode this client's view starts at: `ROOT_INO`, or the
    /// directory of a subtree grant, which it sees as its root.
    pub fn root(&self) -> Ino {
        self.root
    }

    /// Whether this client's certificate or token lets it only read (every
    /// change would fail with EROFS).
    pub fn granted_read_only(&self) -> bool {
        self.granted_read_only
    }

    /// Whether this client sees only a subtree of the filesystem.
    pub fn confined(&self) -> bool {
        self.root != ROOT_INO
    }

    /// The directory at `path` (absolute, from this client's root).
    pub async fn resolve_path(&self, path: &str) -> Result<Ino, MetaError> {
        let mut cur = self.root;
        for name in path.split('/').filter(|n| !n.is_empty()) {
            let inode = self.lookup(cur, name.as_bytes()).await?;
            if inode.kind != FileType::Dir {
                return Err(MetaError::NotDir);
            }
            cur = inode.ino;
        }
        Ok(cur)
    }

    /// A new directory goes to the least-loaded group once its parent's group
    /// holds more than `slack` inodes beyond it (0: every directory goes to the
    /// least-loaded group). Small trees stay in one group, where every
    /// operation is one log entry; big ones spread over the cluster.
    pub fn set_dir_spread_slack(&self, slack: u64) {
        self.dir_spread_slack
            .store(slack, std::sync::atomic::Ordering::Relaxed);
    }

    /// Attributes of `ino` as a change by this client left them less than
    /// `max_age` ago, and how much of `max_age` is left. Changes by other
    /// clients since are not in them: use them only where attributes that
    /// old are acceptable (the kernel's attribute cache).
    pub fn recent_attr(&self, ino: Ino, max_age: Duration) -> Option<(Inode, Duration)> {
        self.recent.get(ino, max_age)
    }

    /// The inode `parent/name` named when this client looked it up less than
    /// `max_age` ago, and how much of `max_age` is left; None if this client
    /// changed that name since. Changes by other clients since are not in
    /// it: use it only where an entry that old is acceptable (the kernel's
    /// dentry cache).
    pub fn recent_entry(
        &self,
        parent: Ino,
        name: &[u8],
        max_age: Duration,
    ) -> Option<(Ino, Duration)> {
        self.entries.get(parent, name, max_age)
    }

    /// Remembers `inode` as a change of this client left it.
    pub(crate) fn note_recent(&self, inode: &Inode) {
        self.recent.note([inode.clone()]);
    }

    /// Takes the changed inodes off a namespace change's answer and
    /// remembers them with the inodes the answer itself carries.
    pub(super) fn note_changed(&self, r: MetaResponse) -> MetaResponse {
        let (answer, changed) = r.split_changed();
        self.recent.note(changed);
        match &answer {
            MetaResponse::Inode(inode)
            | MetaResponse::Unlinked { inode, .. }
            | MetaResponse::Renamed {
                replaced: Some(inode),
            } => self.recent.note([inode.clone()]),
            _ => {}
        }
        answer
    }

    pub(super) fn known_group(&self, ino: Ino) -> Option<GroupId> {
        partition_of(&self.partitions.read().unwrap(), ino).map(|p| p.group)
    }

    /// `inos` sorted by the group that holds each.
    pub async fn by_group(
        &self,
        inos: &[Ino],
    ) -> Result<std::collections::BTreeMap<GroupId, Vec<Ino>>, MetaError> {
        let mut out: std::collections::BTreeMap<GroupId, Vec<Ino>> = Default::default();
        for &ino in inos {
            out.entry(self.group_of(ino).await?).or_default().push(ino);
        }
        Ok(out)
    }

    /// The group holding `ino`; reloads the partition list for an inode of a
    /// partition created after this client started.
    pub async fn group_of(&self, ino: Ino) -> Result<GroupId, MetaError> {
        if let Some(g) = self.known_group(ino) {
            return Ok(g);
        }
        self.reload_partitions().await?;
        self.known_group(ino)
            .ok_or_else(|| MetaError::Invalid(format!("inode {ino} is in no partition")))
    }

    pub(super) async fn reload_partitions(&self) -> Result<(), MetaError> {
        let parts = self.meta.partitions(self.info.id).await?;
        *self.partitions.write().unwrap() = parts;
        Ok(())
    }

    /// The groups holding this filesystem's partitions.
    pub fn groups(&self) -> Vec<GroupId> {
        let mut gs: Vec<GroupId> = self
            .partitions
            .read()
            .unwrap()
            .iter()
            .map(|p| p.group)
            .collect();
        gs.sort();
        gs.dedup();
        gs
    }

    /// Sends `req` to group `g`; a request that met a pending transaction's
    /// lock is sent again after a short pause.
    pub(crate) async fn call_group(
        &self,
        g: GroupId,
        req: impl Into<MetaRequest>,
    ) -> Result<MetaResponse, MetaError> {
        let req = req.into();
        self.settle_before(&req).await?;
        self.retrying(|| self.meta.call(g, req.clone())).await
    }

    pub(super) async fn call(
        &self,
        ino: Ino,
        req: impl Into<MetaRequest>,
    ) -> Result<MetaResponse, MetaError> {
        self.call_group(self.group_of(ino).await?, req).await
    }

    /// Runs `op` again while it fails for a transient reason (a lock or an
    /// aborted transaction), until the call deadline.
    pub(super) async fn retrying<F, Fut, T>(&self, mut op: F) -> Result<T, MetaError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, MetaError>>,
    {
        let deadline = tokio::time::Instant::now() + CALL_DEADLINE;
        let mut attempt = 0;
        loop {
            match op().await {
                Err(e) if transient(&e) && tokio::time::Instant::now() < deadline => {
                    attempt += 1;
                    jitter(attempt).await;
                }
                other => return other,
            }
        }
    }

    pub async fn usage(&self) -> Result<Usage, MetaError> {
        self.meta.usage(self.info.id).await
    }

    /// One page of the inodes group `g` holds, numbers above `after`.
    pub async fn list_inodes(&self, g: GroupId, after: Ino) -> Result<Vec<Inode>, MetaError> {
        let req = ReadRequest::ListInodes {
            fs: self.info.id,
            after,
            limit: 4096,
        };
        expect_answer!(self.meta.call(g, req).await?, MetaResponse::Inodes(l) => l)
    }

    /// Transactions prepared in group `g` and not finished yet.
    pub async fn intents(&self, g: GroupId) -> Result<Vec<IntentInfo>, MetaError> {
        expect_answer!(self.meta.call(g, ReadRequest::ListIntents).await?, MetaResponse::Intents(l) => l)
    }
}
