//! Creates this client answered but has not sent yet (decision 71). A
//! regular file's create waits for the file's first commit and goes to
//! its group with it, as one `CreateFile`: creating, writing and closing a
//! small file is one log entry instead of two. The inode number comes
//! from a range this client reserved in the parent's group beforehand.
//!
//! Everything else this client sends that could see the file, or its
//! name, sends the create first ("settles" it): a request is checked
//! against the pending creates before it goes (`settle_before`), so no
//! request finds a file missing that this client said exists. Other
//! clients see the file once it is settled: at its first flush, fsync or
//! close, or when this client does anything else with it or its name.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::MetaError;
use crate::client::expect_answer;
use crate::client::fs_client::FsClient;
use crate::request::{FileCreated, MetaRequest, MetaResponse, ReadRequest, WriteRequest};
use crate::types::*;

use super::Written;

/// Inode numbers reserved at once per group.
const INOS_PER_RESERVE: u32 = 64;

/// The pending creates and the reserved inode numbers not used yet.
#[derive(Default)]
pub(super) struct DeferredCreates {
    files: Mutex<HashMap<Ino, Arc<Deferred>>>,
    /// Per group, reserved numbers `start..end` not handed out yet.
    reserved: Mutex<HashMap<GroupId, Vec<(Ino, Ino)>>>,
    /// Inodes whose create the metaserver refused: the kernel may still
    /// hold their names, and is told they are stale.
    refused: Mutex<HashSet<Ino>>,
    /// After a refusal for want of room (or any other than a name taken),
    /// creates go at open until then, where the refusal belongs.
    paused_until: Mutex<Option<Instant>>,
}

/// Refused inodes remembered before the memory starts over.
const REFUSED_KEPT: usize = 4096;
/// How long creates go at open after a refusal.
const PAUSE: Duration = Duration::from_secs(1);

/// One create this client answered and has not sent.
struct Deferred {
    group: GroupId,
    parent: Ino,
    name: Vec<u8>,
    /// The inode as this client told the kernel it is.
    inode: Inode,
    state: tokio::sync::Mutex<State>,
}

enum State {
    Pending,
    /// The create went and was applied: the file exists.
    Sent,
    /// The metaserver refused it: the file was never made. Kept until the
    /// file's own commit or settle reports it.
    Refused(MetaError),
}

/// A file's first commit, sent with its create.
#[derive(Clone, Copy)]
struct FirstWrite<'a> {
    slices: &'a [(u32, Slice)],
    end: u64,
    /// When the last of the slices was written.
    written: Timestamp,
}

/// What a request may see of pending creates, so must find settled.
#[derive(Default)]
struct Scope {
    all: bool,
    /// The inodes themselves.
    inos: Vec<Ino>,
    /// Every pending create in these directories.
    dirs: Vec<Ino>,
    /// The pending create of this name, if any.
    names: Vec<(Ino, Vec<u8>)>,
}

impl DeferredCreates {
    fn due(&self, scope: &Scope) -> Vec<Arc<Deferred>> {
        let files = self.files.lock().unwrap();
        if files.is_empty() {
            return Vec::new();
        }
        files
            .values()
            .filter(|d| {
                scope.all
                    || scope.inos.contains(&d.inode.ino)
                    || scope.dirs.contains(&d.parent)
                    || scope
                        .names
                        .iter()
                        .any(|(p, n)| *p == d.parent && *n == d.name)
            })
            .cloned()
            .collect()
    }

    fn get(&self, ino: Ino) -> Option<Arc<Deferred>> {
        self.files.lock().unwrap().get(&ino).cloned()
    }

    fn forget(&self, ino: Ino) {
        self.files.lock().unwrap().remove(&ino);
    }

    fn refuse(&self, ino: Ino, e: &MetaError) {
        let mut refused = self.refused.lock().unwrap();
        if refused.len() >= REFUSED_KEPT {
            refused.clear();
        }
        refused.insert(ino);
        if !matches!(e, MetaError::Exists) {
            *self.paused_until.lock().unwrap() = Some(Instant::now() + PAUSE);
        }
    }

    fn paused(&self) -> bool {
        self.paused_until
            .lock()
            .unwrap()
            .is_some_and(|until| Instant::now() < until)
    }

    /// A stale-handle error if `scope` names an inode whose create was refused.
    fn stale(&self, scope: &Scope) -> Result<(), MetaError> {
        let refused = self.refused.lock().unwrap();
        match scope.inos.iter().find(|ino| refused.contains(ino)) {
            Some(ino) => Err(MetaError::Stale(format!(
                "inode {ino} was never created: the metaserver refused it"
            ))),
            None => Ok(()),
        }
    }

    fn take_reserved(&self, g: GroupId) -> Option<Ino> {
        let mut reserved = self.reserved.lock().unwrap();
        let ranges = reserved.get_mut(&g)?;
        let (start, end) = ranges.last_mut()?;
        let ino = *start;
        *start += 1;
        if start == end {
            ranges.pop();
        }
        Some(ino)
    }
}

impl FsClient {
    /// Creates regular file `parent/name` (in directory `dir`, as this
    /// client last saw it) here only, to be sent with its first commit;
    /// None when it cannot be (its group has no inode numbers left to
    /// reserve): then create it at once.
    pub async fn create_later(
        &self,
        dir: &Inode,
        name: &[u8],
        new: NewInode,
    ) -> Result<Option<Inode>, MetaError> {
        validate_name(name)?;
        if new.kind != FileType::File || new.symlink.is_some() || dir.kind != FileType::Dir {
            return Ok(None);
        }
        if self.deferred.paused() {
            return Ok(None);
        }
        let parent = dir.ino;
        // A create of this name still pending here: it goes first, and
        // this one then meets it as the metaserver would.
        let same = Scope {
            names: vec![(parent, name.to_vec())],
            ..Scope::default()
        };
        if !self.deferred.due(&same).is_empty() {
            return Ok(None);
        }
        let g = self.group_of(parent).await?;
        let Some(ino) = self.reserved_ino(g).await? else {
            return Ok(None);
        };
        // BSD group semantics under a setgid directory, as the metaserver
        // applies them (it has the last word when the create arrives).
        let new = if dir.mode & 0o2000 != 0 {
            NewInode {
                gid: dir.gid,
                ..new
            }
        } else {
            new
        };
        let inode = Inode::new(ino, new, parent, Timestamp::now());
        let d = Deferred {
            group: g,
            parent,
            name: name.to_vec(),
            inode: inode.clone(),
            state: tokio::sync::Mutex::new(State::Pending),
        };
        self.deferred.files.lock().unwrap().insert(ino, Arc::new(d));
        self.count_create(g).await;
        Ok(Some(inode))
    }

    /// A reserved inode number of group `g`; reserves more when none is
    /// left. None when the group has no room.
    async fn reserved_ino(&self, g: GroupId) -> Result<Option<Ino>, MetaError> {
        if let Some(ino) = self.deferred.take_reserved(g) {
            return Ok(Some(ino));
        }
        let req = WriteRequest::ReserveInos {
            fs: self.info.id,
            count: INOS_PER_RESERVE,
        };
        let (start, count) = match self.send_now(g, req.into()).await {
            Ok(MetaResponse::Inos { start, count }) => (start, count),
            Ok(other) => return Err(super::unexpected(other)),
            Err(MetaError::PartitionsFull) => return Ok(None),
            Err(e) => return Err(e),
        };
        self.deferred
            .reserved
            .lock()
            .unwrap()
            .entry(g)
            .or_default()
            .push((start, start + count as u64));
        Ok(self.deferred.take_reserved(g))
    }

    /// Whether `ino` is a create this client has not sent yet (or one the
    /// metaserver refused, not reported yet).
    pub fn is_deferred(&self, ino: Ino) -> bool {
        self.deferred.get(ino).is_some()
    }

    /// Sends the create of `ino` if it is still pending here; reports a
    /// refused one (once).
    pub async fn settle(&self, ino: Ino) -> Result<(), MetaError> {
        match self.deferred.get(ino) {
            Some(d) => self.send_deferred(&d, None, true).await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// Sends every create pending here (unmount).
    pub async fn settle_all(&self) -> Result<(), MetaError> {
        let all = Scope {
            all: true,
            ..Scope::default()
        };
        let mut first_err = None;
        for d in self.deferred.due(&all) {
            if let Err(e) = self.send_deferred(&d, None, false).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Before `req` goes: sends the pending creates it could see. A create
    /// the metaserver refuses is left for its file's commit to report; a
    /// create that could not be sent fails `req` too (it would miss it).
    pub(super) async fn settle_before(&self, req: &MetaRequest) -> Result<(), MetaError> {
        if self.deferred.files.lock().unwrap().is_empty()
            && self.deferred.refused.lock().unwrap().is_empty()
        {
            return Ok(());
        }
        let scope = scope_of(req);
        self.settle_scope(&scope).await?;
        self.deferred.stale(&scope)
    }

    /// Before a cross-group transaction (whose steps go around
    /// `call_group`): every pending create goes.
    pub(super) async fn settle_for_transaction(&self) -> Result<(), MetaError> {
        self.settle_scope(&Scope {
            all: true,
            ..Scope::default()
        })
        .await
    }

    /// Sends the pending creates in `scope`. A refused one is left for its
    /// file's commit to report; one that could not be sent is an error.
    async fn settle_scope(&self, scope: &Scope) -> Result<(), MetaError> {
        for d in self.deferred.due(scope) {
            match self.send_deferred(&d, None, false).await {
                Err(e) if still_pending(&e) => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// `write_slices` of a file whose create is still pending here: the
    /// create goes with the slices. None when it is not pending (any more):
    /// then the slices go on their own.
    pub(super) async fn write_deferred(
        &self,
        ino: Ino,
        slices: &[(u32, Slice)],
        end: u64,
        written: Timestamp,
    ) -> Option<Result<Written, MetaError>> {
        let d = self.deferred.get(ino)?;
        let first = FirstWrite {
            slices,
            end,
            written,
        };
        self.send_deferred(&d, Some(first), true).await.transpose()
    }

    /// Sends `d`'s create (with `slices`, if any) unless it went already.
    /// Answers what the slices made of the file when they went with it. A
    /// refusal stays on record until the file's `own` settle or commit
    /// reports it.
    async fn send_deferred(
        &self,
        d: &Deferred,
        first: Option<FirstWrite<'_>>,
        own: bool,
    ) -> Result<Option<Written>, MetaError> {
        let mut state = d.state.lock().await;
        match &*state {
            State::Pending => {}
            State::Sent => return Ok(None),
            State::Refused(e) => {
                if own {
                    self.deferred.forget(d.inode.ino);
                }
                return Err(e.clone());
            }
        }
        let FirstWrite {
            slices,
            end,
            written,
        } = first.unwrap_or(FirstWrite {
            slices: &[],
            end: 0,
            written: d.inode.mtime,
        });
        let req = WriteRequest::CreateFile {
            fs: self.info.id,
            parent: d.parent,
            name: d.name.clone(),
            ino: d.inode.ino,
            new: NewInode::plain(FileType::File, d.inode.mode, d.inode.uid, d.inode.gid),
            slices: slices.to_vec(),
            end,
            now: d.inode.ctime,
            written,
        };
        let r = match self.send_now(d.group, req.into()).await {
            Ok(r) => r,
            Err(e) if still_pending(&e) => return Err(e),
            Err(e) => {
                tracing::warn!(ino = d.inode.ino, error = %e, "a deferred create was refused");
                *state = State::Refused(e.clone());
                self.deferred.refuse(d.inode.ino, &e);
                if own {
                    self.deferred.forget(d.inode.ino);
                }
                return Err(e);
            }
        };
        *state = State::Sent;
        self.deferred.forget(d.inode.ino);
        let FileCreated { created, written } = *expect_answer!(
            self.note_changed(r),
            MetaResponse::FileCreated(f) => f
        )?;
        self.note_recent(&created);
        match written {
            _ if slices.is_empty() => Ok(None),
            Ok((inode, crowded)) => {
                self.note_recent(&inode);
                Ok(Some(Written {
                    before: Some(d.inode.stamp()),
                    inode,
                    crowded,
                }))
            }
            // The file was made; its slices were refused (a quota).
            Err(e) => Err(e),
        }
    }

    /// Sends `req` to group `g` without settling anything first (it is a
    /// settle, or a reservation).
    async fn send_now(&self, g: GroupId, req: MetaRequest) -> Result<MetaResponse, MetaError> {
        self.retrying(|| self.meta.call(g, req.clone())).await
    }
}

/// Errors after which the create may not have been applied, so stays
/// pending (to be sent again; a create applied already is answered from
/// its first application, by its write number).
fn still_pending(e: &MetaError) -> bool {
    matches!(
        e,
        MetaError::Unavailable(_) | MetaError::NotLeader { .. } | MetaError::Busy(_)
    )
}

/// The pending creates `req` could see.
fn scope_of(req: &MetaRequest) -> Scope {
    let mut s = Scope::default();
    match req {
        MetaRequest::Read(r) => read_scope(r, &mut s),
        MetaRequest::Write(w) => write_scope(w, &mut s),
    }
    s
}

fn read_scope(req: &ReadRequest, s: &mut Scope) {
    use ReadRequest as R;
    match req {
        R::Lookup { parent, name, .. } => s.names.push((*parent, name.clone())),
        R::GetAttr { ino, .. }
        | R::GetAttrAndChunk { ino, .. }
        | R::ReadChunk { ino, .. }
        | R::GetXattr { ino, .. }
        | R::ListXattrs { ino, .. }
        | R::GetLock { ino, .. } => s.inos.push(*ino),
        R::ReadDir { ino, .. } => s.dirs.push(*ino),
        // The filesystem as a whole: its inodes, rows, usage and counts.
        R::Usage { .. }
        | R::LiveUsage { .. }
        | R::ListInodes { .. }
        | R::GarbageWork { .. }
        | R::ListTrash { .. }
        | R::ListChunks { .. }
        | R::DumpRows { .. }
        | R::CountOwned { .. } => s.all = true,
        // Not about files: the cluster, settings, tokens, snapshots'
        // records, quotas' limits (asked before a create is deferred).
        R::GetClusterMap
        | R::GetFs { .. }
        | R::ListFs
        | R::ListPartitions { .. }
        | R::ListIntents
        | R::GetTrashDays { .. }
        | R::ListTokens
        | R::GetToken { .. }
        | R::ListSnapshots { .. }
        | R::ListQuotas { .. }
        | R::QuotaBook { .. } => {}
    }
}

fn write_scope(req: &WriteRequest, s: &mut Scope) {
    use WriteRequest as W;
    match req {
        W::SetAttr { ino, .. }
        | W::WriteSlices { ino, .. }
        | W::PunchHole { ino, .. }
        | W::ReserveAppend { ino, .. }
        | W::CompactChunk { ino, .. }
        | W::SetXattr { ino, .. }
        | W::RemoveXattr { ino, .. }
        | W::SetLock { ino, .. }
        | W::ReleaseLocks { ino, .. } => s.inos.push(*ino),
        W::HoldInodes { inos, .. } | W::RenewLocks { inos, .. } => s.inos.extend(inos),
        W::Create { parent, name, .. } | W::Unlink { parent, name, .. } => {
            s.names.push((*parent, name.clone()))
        }
        W::Link {
            ino, parent, name, ..
        } => {
            s.inos.push(*ino);
            s.names.push((*parent, name.clone()));
        }
        // Removing or replacing a directory needs it empty, and these name
        // it only by its entry: everything goes first.
        W::Rmdir { .. }
        | W::Rename { .. }
        | W::RenameWith { .. }
        | W::TxBegin { .. }
        | W::TxPrepare { .. }
        | W::TxCommit { .. } => s.all = true,
        // The filesystem as a whole: snapshots, copies, the trash, quotas.
        W::CreateSnapshot { .. }
        | W::SetFreeze { .. }
        | W::CopyFs { .. }
        | W::CopyInodes { .. }
        | W::DropFs { .. }
        | W::SealSnapshot { .. }
        | W::PurgeTrash { .. }
        | W::RestoreTrash { .. }
        | W::SetQuota { .. }
        | W::SetQuotaUsage { .. }
        | W::SetOwnerQuota { .. } => s.all = true,
        // Settles themselves, and what no file of this client's shows in.
        W::CreateFile { .. }
        | W::ReserveInos { .. }
        | W::RegisterNode { .. }
        | W::UnregisterNode { .. }
        | W::CreateFs { .. }
        | W::CreateFsSized { .. }
        | W::MarkFsReady { .. }
        | W::AddPartition { .. }
        | W::AllocSliceIds { .. }
        | W::SetBorrowed { .. }
        | W::RaiseSliceFloor { .. }
        | W::InitPartition { .. }
        | W::InitRoot { .. }
        | W::TxResolve { .. }
        | W::TxFinish { .. }
        | W::TxForget { .. }
        | W::SetTrashDays { .. }
        | W::AckDeletions { .. }
        | W::SnapshotReady { .. }
        | W::DeleteSnapshot { .. }
        | W::LoadRows { .. }
        | W::PutToken { .. }
        | W::RevokeToken { .. }
        | W::DeleteQuota { .. }
        | W::DeleteOwnerQuota { .. }
        | W::QuotaBudget { .. } => {}
    }
}
