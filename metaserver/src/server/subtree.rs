//! Subtree grants: a client whose certificate or token names a directory
//! reaches only the inodes below it. Which inodes a request touches is read
//! off the request (`reach`); whether an inode lies below the grant's root
//! is found by walking parent pointers up (`place`): a directory's parent
//! is its one parent, a file's the directory it was made in or moved to
//! last (decision 56).
//!
//! Walks read each inode from this node's replica of its group, and
//! remember the parents they found for `PARENT_TTL`. Only "inside" is taken
//! from what was remembered or from a follower's replica: an inode that
//! seems outside (or missing) is walked again from each group's leader
//! before the request is refused, so a directory made a moment ago on
//! another node is never refused. The price: an inode another client moved
//! out of the subtree stays reachable for up to `PARENT_TTL`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::MetaError;
use crate::request::{MetaRequest, MetaResponse, ReadRequest, TxStep, WriteRequest};
use crate::types::*;
use crate::wire::Request;

use super::{MetaNode, state_machine};

/// How long a parent found by a walk is taken as still true.
const PARENT_TTL: Duration = Duration::from_secs(5);

/// Parents remembered at most; the memory is dropped whole beyond it.
const MAX_REMEMBERED: usize = 100_000;

/// Deepest walk: a longer chain of parents is a loop, taken as outside.
const MAX_DEPTH: usize = 4096;

/// The subtree a connection is confined to: its path as granted, and its
/// root's inode once looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Subtree {
    pub(super) path: String,
    pub(super) root: Option<Ino>,
}

impl Subtree {
    pub(super) fn new(path: String) -> Subtree {
        Subtree { path, root: None }
    }
}

/// What a request touches of a filesystem's tree.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Reach {
    /// Inodes it reads or changes: each must lie in the subtree.
    inside: Vec<Ino>,
    /// Inodes it only keeps alive (holds, locks) or names as an entry's
    /// target: refused only when found outside, since an open file's
    /// directory may be gone and a new inode may not exist yet.
    not_outside: Vec<Ino>,
    /// A lookup of `..` in this directory: refused at the subtree's root.
    dotdot_in: Option<Ino>,
    /// It lists or cleans the whole filesystem (scans, trash, garbage).
    whole_fs: bool,
}

/// Where an inode lies relative to a subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Inside,
    Outside,
    /// The inode, or a directory above it, does not exist (any more).
    Missing,
}

/// Parents found by walks, and the partition tables they routed by.
#[derive(Default)]
pub(super) struct ParentMemory {
    parents: std::sync::Mutex<HashMap<(FsId, Ino), (Ino, tokio::time::Instant)>>,
    partitions: std::sync::Mutex<HashMap<FsId, Vec<Partition>>>,
    /// This node's own client of the cluster, for inodes of groups it does
    /// not host (or does not lead, when a walk must be current).
    client: tokio::sync::OnceCell<Arc<crate::MetaClient>>,
}

impl ParentMemory {
    fn parent(&self, fs: FsId, ino: Ino) -> Option<Ino> {
        let parents = self.parents.lock().unwrap();
        parents
            .get(&(fs, ino))
            .filter(|(_, at)| at.elapsed() < PARENT_TTL)
            .map(|(p, _)| *p)
    }

    fn remember(&self, fs: FsId, ino: Ino, parent: Ino) {
        let mut parents = self.parents.lock().unwrap();
        if parents.len() >= MAX_REMEMBERED {
            parents.clear();
        }
        parents.insert((fs, ino), (parent, tokio::time::Instant::now()));
    }
}

/// The inodes `req` touches.
pub(super) fn reach(req: &Request) -> Reach {
    let mut r = Reach::default();
    let Request::Meta { req, .. } = req else {
        return r;
    };
    match req {
        MetaRequest::Read(read) => read_reach(read, &mut r),
        MetaRequest::Write(write) => write_reach(write, &mut r),
    }
    r
}

fn read_reach(req: &ReadRequest, r: &mut Reach) {
    use ReadRequest as R;
    match req {
        R::Lookup { parent, name, .. } => {
            r.inside.push(*parent);
            if name == b".." {
                r.dotdot_in = Some(*parent);
            }
        }
        R::GetAttr { ino, .. }
        | R::GetAttrAndChunk { ino, .. }
        | R::ReadDir { ino, .. }
        | R::ReadChunk { ino, .. }
        | R::GetXattr { ino, .. }
        | R::ListXattrs { ino, .. }
        | R::GetLock { ino, .. } => r.inside.push(*ino),
        R::ListInodes { .. }
        | R::GarbageWork { .. }
        | R::ListTrash { .. }
        | R::ListChunks { .. }
        | R::DumpRows { .. }
        | R::ListQuotas { dir: None, .. }
        | R::QuotaBook { .. }
        | R::CountOwned { .. } => r.whole_fs = true,
        // The quota numbers above a subtree's root are shown to it (df).
        R::ListQuotas { dir: Some(d), .. } => r.inside.push(*d),
        // The filesystem as a whole (its partitions, usage, settings), or
        // not a filesystem's tree at all: the grant's filesystem decides.
        R::GetClusterMap
        | R::GetFs { .. }
        | R::ListFs
        | R::ListPartitions { .. }
        | R::Usage { .. }
        | R::LiveUsage { .. }
        | R::ListIntents
        | R::GetTrashDays { .. }
        | R::ListTokens
        | R::GetToken { .. }
        | R::ListSnapshots { .. } => {}
    }
}

fn write_reach(req: &WriteRequest, r: &mut Reach) {
    use WriteRequest as W;
    match req {
        W::SetAttr { ino, .. }
        | W::WriteSlices { ino, .. }
        | W::PunchHole { ino, .. }
        | W::ReserveAppend { ino, .. }
        | W::CompactChunk { ino, .. }
        | W::SetXattr { ino, .. }
        | W::RemoveXattr { ino, .. }
        | W::SetLock { ino, .. } => r.inside.push(*ino),
        W::Create { parent, .. } | W::Unlink { parent, .. } | W::Rmdir { parent, .. } => {
            r.inside.push(*parent)
        }
        W::Link { ino, parent, .. } => r.inside.extend([*ino, *parent]),
        // The new inode does not exist yet; its number was reserved.
        W::CreateFile { parent, ino, .. } => {
            r.inside.push(*parent);
            r.not_outside.push(*ino);
        }
        W::Rename {
            parent, new_parent, ..
        }
        | W::RenameWith {
            parent, new_parent, ..
        } => r.inside.extend([*parent, *new_parent]),
        W::TxPrepare { steps, .. } | W::TxCommit { steps, .. } => {
            for step in steps {
                step_reach(step, r);
            }
        }
        W::HoldInodes { inos, .. } | W::RenewLocks { inos, .. } => {
            r.not_outside.extend(inos.iter().copied())
        }
        W::ReleaseLocks { ino, .. } => r.not_outside.push(*ino),
        W::PurgeTrash { .. } | W::AckDeletions { .. } | W::RestoreTrash { .. } => r.whole_fs = true,
        // The filesystem as a whole (partitions, slice ids, a transaction's
        // begin and end, whose steps were checked when prepared), or the
        // cluster's administration, which the grant's filesystem refuses.
        W::RegisterNode { .. }
        | W::UnregisterNode { .. }
        | W::CreateFs { .. }
        | W::CreateFsSized { .. }
        | W::MarkFsReady { .. }
        | W::AddPartition { .. }
        | W::AllocSliceIds { .. }
        | W::ReserveInos { .. }
        | W::SetBorrowed { .. }
        | W::RaiseSliceFloor { .. }
        | W::InitPartition { .. }
        | W::InitRoot { .. }
        | W::TxBegin { .. }
        | W::TxResolve { .. }
        | W::TxFinish { .. }
        | W::TxForget { .. }
        | W::SetTrashDays { .. }
        | W::CreateSnapshot { .. }
        | W::SnapshotReady { .. }
        | W::DeleteSnapshot { .. }
        | W::SetFreeze { .. }
        | W::CopyFs { .. }
        | W::CopyInodes { .. }
        | W::DropFs { .. }
        | W::LoadRows { .. }
        | W::SealSnapshot { .. }
        | W::PutToken { .. }
        | W::RevokeToken { .. }
        | W::SetQuota { .. }
        | W::DeleteQuota { .. }
        | W::SetQuotaUsage { .. }
        | W::SetOwnerQuota { .. }
        | W::DeleteOwnerQuota { .. }
        // Budget moves name no inode; any write below the subtree may need one.
        | W::QuotaBudget { .. } => {}
    }
}

fn step_reach(step: &TxStep, r: &mut Reach) {
    match step {
        TxStep::CreateInode { parent, .. } => r.inside.push(*parent),
        TxStep::PutDentry { parent, ino, .. } => {
            r.inside.push(*parent);
            // The inode of a create across groups is made in the same
            // transaction, so it may not exist yet.
            r.not_outside.push(*ino);
        }
        TxStep::DelDentry { parent, .. } => r.inside.push(*parent),
        TxStep::AddLink { ino } | TxStep::DropLink { ino, .. } | TxStep::TouchDir { ino, .. } => {
            r.inside.push(*ino)
        }
        TxStep::Moved { ino, new_parent } => r.inside.extend([*ino, *new_parent]),
    }
}

impl MetaNode {
    /// Refuses `req` if it reaches outside `sub` of filesystem `fs`
    /// (looking the subtree's root up first, once per connection).
    pub(super) async fn check_subtree(
        &self,
        fs: FsId,
        sub: &mut Subtree,
        req: &Request,
    ) -> Result<(), MetaError> {
        let reach = reach(req);
        if reach == Reach::default() {
            return Ok(());
        }
        let root = self.subtree_root(fs, sub).await?;
        let denied = |what: String| {
            Err(MetaError::Denied(format!(
                "this client may use {} only, not {what}",
                sub.path
            )))
        };
        if reach.whole_fs {
            return denied("the whole filesystem's listings, trash or garbage".into());
        }
        if reach.dotdot_in == Some(root) {
            return denied("the parent of its root".into());
        }
        for &ino in &reach.inside {
            if self.place(fs, root, ino).await? != Place::Inside {
                return denied(format!("inode {ino}"));
            }
        }
        for &ino in &reach.not_outside {
            if self.place(fs, root, ino).await? == Place::Outside {
                return denied(format!("inode {ino}"));
            }
        }
        Ok(())
    }

    /// The inode of the subtree's root, looked up from the filesystem's
    /// root by its path the first time.
    pub(super) async fn subtree_root(&self, fs: FsId, sub: &mut Subtree) -> Result<Ino, MetaError> {
        if let Some(root) = sub.root {
            return Ok(root);
        }
        let mut cur = ROOT_INO;
        for name in sub.path.split('/').filter(|n| !n.is_empty()) {
            let lookup = ReadRequest::Lookup {
                fs,
                parent: cur,
                name: name.as_bytes().to_vec(),
            };
            let (ino, kind) = match self.read_current(fs, cur, lookup).await {
                Ok(MetaResponse::Inode(i)) => (i.ino, i.kind),
                Ok(MetaResponse::Remote(d)) => (d.ino, d.kind),
                Ok(other) => {
                    return Err(MetaError::Protocol(format!("unexpected answer {other:?}")));
                }
                Err(MetaError::NotFound) => {
                    return Err(MetaError::Denied(format!(
                        "the granted directory {} does not exist",
                        sub.path
                    )));
                }
                Err(e) => return Err(e),
            };
            if kind != FileType::Dir {
                return Err(MetaError::Denied(format!(
                    "the granted {} is not a directory",
                    sub.path
                )));
            }
            cur = ino;
        }
        sub.root = Some(cur);
        Ok(cur)
    }

    /// Where `ino` lies relative to the subtree rooted at `root`: from
    /// remembered parents and local replicas when that says inside, else
    /// walked again from the leaders.
    async fn place(&self, fs: FsId, root: Ino, ino: Ino) -> Result<Place, MetaError> {
        match self.walk(fs, root, ino, false).await? {
            Place::Inside => Ok(Place::Inside),
            _ => self.walk(fs, root, ino, true).await,
        }
    }

    async fn walk(&self, fs: FsId, root: Ino, ino: Ino, current: bool) -> Result<Place, MetaError> {
        let mut cur = ino;
        for _ in 0..MAX_DEPTH {
            if cur == root {
                return Ok(Place::Inside);
            }
            if cur == ROOT_INO {
                return Ok(Place::Outside);
            }
            let remembered = if current {
                None
            } else {
                self.parent_memory.parent(fs, cur)
            };
            let parent = match remembered {
                Some(p) => p,
                None => match self.inode_parent(fs, cur, current).await? {
                    Some(p) => p,
                    None => return Ok(Place::Missing),
                },
            };
            cur = parent;
        }
        Ok(Place::Outside)
    }

    /// The parent pointer of inode `ino` (None: no such inode), read from
    /// this node's replica of its group, or (`current`, and this node does
    /// not lead that group within a read lease) from the group's leader.
    async fn inode_parent(
        &self,
        fs: FsId,
        ino: Ino,
        current: bool,
    ) -> Result<Option<Ino>, MetaError> {
        let get = ReadRequest::GetAttr { fs, ino };
        match self.read_current_or_local(fs, ino, get, current).await {
            Ok(MetaResponse::Inode(i)) => {
                self.parent_memory.remember(fs, ino, i.parent);
                Ok(Some(i.parent))
            }
            Ok(other) => Err(MetaError::Protocol(format!("unexpected answer {other:?}"))),
            Err(MetaError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `req` about inode `ino`, answered as its group's leader sees it now.
    async fn read_current(
        &self,
        fs: FsId,
        ino: Ino,
        req: ReadRequest,
    ) -> Result<MetaResponse, MetaError> {
        self.read_current_or_local(fs, ino, req, true).await
    }

    async fn read_current_or_local(
        &self,
        fs: FsId,
        ino: Ino,
        req: ReadRequest,
        current: bool,
    ) -> Result<MetaResponse, MetaError> {
        let Some(g) = self.group_of_ino(fs, ino).await? else {
            return Err(MetaError::NotFound);
        };
        let local = self
            .raft(g)
            .is_some_and(|raft| !current || self.holds_read_lease(g, &raft));
        if local {
            return self.read_local(g, req);
        }
        self.own_client().await?.call(g, req).await
    }

    /// The group holding inode `ino` of `fs` (None: in no partition),
    /// from the partition table as last read, read again on a miss.
    async fn group_of_ino(&self, fs: FsId, ino: Ino) -> Result<Option<GroupId>, MetaError> {
        let known = |mem: &ParentMemory| {
            let parts = mem.partitions.lock().unwrap();
            parts
                .get(&fs)
                .and_then(|p| partition_of(p, ino))
                .map(|p| p.group)
        };
        if let Some(g) = known(&self.parent_memory) {
            return Ok(Some(g));
        }
        let list = ReadRequest::ListPartitions { fs };
        let answer = if self.raft(CLUSTER_GROUP).is_some() {
            self.read_local(CLUSTER_GROUP, list)
        } else {
            self.own_client().await?.call(CLUSTER_GROUP, list).await
        };
        match answer? {
            MetaResponse::Partitions(parts) => {
                self.parent_memory
                    .partitions
                    .lock()
                    .unwrap()
                    .insert(fs, parts);
            }
            other => return Err(MetaError::Protocol(format!("unexpected answer {other:?}"))),
        }
        Ok(known(&self.parent_memory))
    }

    /// This node's client of the cluster, made on first use.
    async fn own_client(&self) -> Result<&Arc<crate::MetaClient>, MetaError> {
        self.parent_memory
            .client
            .get_or_try_init(|| async {
                let mut seeds = vec![self.addr.clone()];
                if let Ok(Ok(MetaResponse::ClusterMap(map))) =
                    state_machine::read(&self.db, CLUSTER_GROUP, ReadRequest::GetClusterMap)
                {
                    seeds.extend(map.nodes.into_values().filter(|a| *a != self.addr));
                }
                crate::MetaClient::connect_with(
                    &seeds,
                    crate::rpc::Credentials::tls(self.tls.clone()),
                )
                .await
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(req: impl Into<MetaRequest>) -> Request {
        Request::Meta {
            group: 1,
            req: req.into(),
            origin: None,
        }
    }

    #[test]
    fn requests_reach_the_inodes_they_name() {
        let now = Timestamp::default();
        let lookup = meta(ReadRequest::Lookup {
            fs: 1,
            parent: 7,
            name: b"..".to_vec(),
        });
        assert_eq!(
            reach(&lookup),
            Reach {
                inside: vec![7],
                dotdot_in: Some(7),
                ..Default::default()
            }
        );
        let rename = meta(WriteRequest::Rename {
            fs: 1,
            parent: 7,
            name: b"a".to_vec(),
            new_parent: 9,
            new_name: b"b".to_vec(),
            now,
        });
        assert_eq!(reach(&rename).inside, vec![7, 9]);
        let prepare = meta(WriteRequest::TxPrepare {
            fs: 1,
            tx: 1,
            coord: 1,
            participants: vec![1, 2],
            steps: vec![
                TxStep::PutDentry {
                    parent: 7,
                    name: b"x".to_vec(),
                    ino: 40,
                    kind: FileType::File,
                    replace: None,
                },
                TxStep::Moved {
                    ino: 40,
                    new_parent: 7,
                },
            ],
            now,
        });
        let r = reach(&prepare);
        assert_eq!((r.inside, r.not_outside), (vec![7, 40, 7], vec![40]));
        let scan = meta(ReadRequest::ListInodes {
            fs: 1,
            after: 0,
            limit: 10,
        });
        assert!(reach(&scan).whole_fs);
        assert_eq!(reach(&meta(ReadRequest::Usage { fs: 1 })), Reach::default());
    }
}
