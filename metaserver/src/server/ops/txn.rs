//! Cross-group transactions: two-phase commit with intent records.
//!
//! An operation whose rows live in several Raft groups (a rename between
//! directories of different groups, a directory placed in another group than
//! its parent, a hard link or unlink of an inode that lives elsewhere) is cut
//! into per-group steps. The client drives it:
//!
//! 0. the coordinator (the group of the entry that appears, else of the one
//!    that goes) records the transaction as begun (`TxBegin`);
//! 1. every participant but one prepares (`TxPrepare`): it checks its steps
//!    against its state, takes locks on the entries and inodes they touch and
//!    records an intent with the steps, the coordinator and all participants;
//!    an inode to create is created now (nothing points at it yet);
//! 2. the coordinator checks and applies its own steps and records
//!    "committed" in the same log entry (`TxCommit`): the commit point. If its
//!    check fails, it records "aborted". It commits only a transaction that
//!    began and is undecided: once recovery aborted one and every group
//!    forgot it, a late commit finds no record and is refused;
//! 3. every participant applies or drops its intent (`TxFinish`), then the
//!    coordinator forgets the decision (`TxForget`).
//!
//! If the client dies between steps, each group's leader finds intents (and,
//! as coordinator, begun transactions) older than a few seconds and asks the
//! coordinator (`TxResolve`), which answers the decision or, if there is none
//! yet, records "aborted" so that a late commit cannot happen; the leader then
//! finishes the transaction everywhere.
//! Plain single-group operations answer Busy (and are retried) while they
//! would touch a locked entry or inode, so what a participant checked at
//! prepare time still holds when it commits.

use crate::MetaError;
use crate::request::{IntentInfo, MetaResponse, MetaResult, TxId, TxStep};
use crate::server::ops::quota::{new_inode_charge, uncharge};
use crate::server::ops::{Ctx, MAX_LINKS, OpResult, tri};
use crate::server::store::{DbError, Rows, RowsMut, decode, key};
use crate::types::*;

/// A prepared transaction, as a participant keeps it until it finishes.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub struct Intent {
    pub info: IntentInfo,
    pub steps: Vec<TxStep>,
    /// Inodes created at prepare time: removed again if the transaction aborts.
    pub created: Vec<Ino>,
    pub locks: Vec<Vec<u8>>,
}

/// Every intent of group `g`.
pub fn intents<T: Rows>(t: &T, g: GroupId) -> Result<Vec<Intent>, DbError> {
    t.scan(&key::intent_prefix(g), None, usize::MAX)?
        .into_iter()
        .map(|(_, v)| decode(&v))
        .collect()
}

/// What recovery looks at in group `g`: its intents, and the transactions it
/// coordinates that began and are not decided.
pub fn pending<T: Rows>(t: &T, g: GroupId) -> Result<Vec<IntentInfo>, DbError> {
    let mut out: Vec<IntentInfo> = intents(t, g)?.into_iter().map(|i| i.info).collect();
    for (_, v) in t.scan(&key::begun_prefix(g), None, usize::MAX)? {
        out.push(decode(&v)?);
    }
    Ok(out)
}

fn busy(what: &str) -> MetaError {
    MetaError::Busy(format!("{what} is part of a pending cross-group operation"))
}

impl<T: RowsMut> Ctx<'_, T> {
    pub fn tx_prepare(
        &mut self,
        fs: FsId,
        tx: TxId,
        coord: GroupId,
        participants: Vec<GroupId>,
        steps: Vec<TxStep>,
        now: Timestamp,
    ) -> Result<MetaResult, DbError> {
        let ikey = key::intent(self.g, tx);
        if let Some(done) = self.t.load::<Intent>(&ikey)? {
            return Ok(Ok(MetaResponse::TxApplied(
                self.created_inodes(fs, &done.created)?,
            )));
        }
        let locks = tri!(self.check_steps(fs, &steps)?);
        let mut created = Vec::new();
        let mut answer = Vec::new();
        for step in &steps {
            if let TxStep::CreateInode { .. } = step {
                let (inode, _) = tri!(self.apply_step(fs, step, now)?).expect("creates");
                created.push(inode.ino);
                answer.push((inode, false));
            }
        }
        let mut locks = locks;
        locks.extend(created.iter().map(|&ino| key::inode_lock(self.g, fs, ino)));
        for l in &locks {
            self.t.put(l, &tx)?;
        }
        let intent = Intent {
            info: IntentInfo {
                tx,
                fs,
                coord,
                participants,
                prepared: now,
            },
            steps,
            created,
            locks,
        };
        self.t.put(&ikey, &intent)?;
        Ok(Ok(MetaResponse::TxApplied(answer)))
    }

    pub fn tx_begin(
        &mut self,
        fs: FsId,
        tx: TxId,
        participants: Vec<GroupId>,
        now: Timestamp,
    ) -> Result<MetaResult, DbError> {
        if self.t.load::<bool>(&key::decision(self.g, tx))?.is_some() {
            return Ok(Err(MetaError::TxAborted));
        }
        let info = IntentInfo {
            tx,
            fs,
            coord: self.g,
            participants,
            prepared: now,
        };
        self.t.put(&key::begun(self.g, tx), &info)?;
        Ok(Ok(MetaResponse::Ok))
    }

    pub fn tx_commit(
        &mut self,
        fs: FsId,
        tx: TxId,
        steps: Vec<TxStep>,
        now: Timestamp,
    ) -> Result<MetaResult, DbError> {
        let dkey = key::decision(self.g, tx);
        match self.t.load::<bool>(&dkey)? {
            Some(false) => return Ok(Err(MetaError::TxAborted)),
            // Applied already (a retry the dedup table no longer remembers).
            Some(true) => return Ok(Ok(MetaResponse::TxApplied(vec![]))),
            None => {}
        }
        let bkey = key::begun(self.g, tx);
        if self.t.load_raw(&bkey)?.is_none() {
            // Aborted by recovery and forgotten (or never begun): the
            // participants may have dropped their intents already.
            return Ok(Err(MetaError::TxAborted));
        }
        match self.check_steps(fs, &steps)? {
            Ok(_) => {}
            // Nothing is decided while busy: the client aborts and starts over.
            Err(e @ MetaError::Busy(_)) => return Ok(Err(e)),
            Err(e) => {
                self.t.del(&bkey)?;
                self.t.put(&dkey, &false)?;
                return Ok(Err(e));
            }
        }
        self.t.del(&bkey)?;
        let mut answer = Vec::new();
        for step in &steps {
            if let Some(changed) = tri!(self.apply_step(fs, step, now)?) {
                answer.push(changed);
            }
        }
        self.t.put(&dkey, &true)?;
        Ok(Ok(MetaResponse::TxApplied(answer)))
    }

    pub fn tx_resolve(&mut self, tx: TxId) -> Result<MetaResult, DbError> {
        let dkey = key::decision(self.g, tx);
        let decision = match self.t.load::<bool>(&dkey)? {
            Some(d) => d,
            None => {
                self.t.del(&key::begun(self.g, tx))?;
                self.t.put(&dkey, &false)?;
                false
            }
        };
        Ok(Ok(MetaResponse::Decision(decision)))
    }

    pub fn tx_forget(&mut self, tx: TxId) -> Result<MetaResult, DbError> {
        self.t.del(&key::decision(self.g, tx))?;
        Ok(Ok(MetaResponse::Ok))
    }

    pub fn tx_finish(
        &mut self,
        fs: FsId,
        tx: TxId,
        commit: bool,
        now: Timestamp,
    ) -> Result<MetaResult, DbError> {
        let ikey = key::intent(self.g, tx);
        let Some(intent) = self.t.load::<Intent>(&ikey)? else {
            // Finished already, by the client or by recovery.
            return Ok(Ok(MetaResponse::TxApplied(vec![])));
        };
        for l in &intent.locks {
            self.t.del(l)?;
        }
        self.t.del(&ikey)?;
        let mut answer = Vec::new();
        if commit {
            for step in &intent.steps {
                if matches!(step, TxStep::CreateInode { .. }) {
                    continue;
                }
                match self.apply_step(fs, step, now)? {
                    Ok(Some(changed)) => answer.push(changed),
                    Ok(None) => {}
                    // The locks make this unreachable; keep going so the
                    // other steps still land.
                    Err(e) => tracing::error!(tx, ?step, error = %e, "prepared step failed"),
                }
            }
            answer.extend(self.created_inodes(fs, &intent.created)?);
        } else {
            for &ino in &intent.created {
                if let Ok(inode) = self.inode(fs, ino)? {
                    self.release(fs, &[uncharge(&inode)])?;
                    self.t.del(&key::inode(self.g, fs, ino))?;
                    self.add_usage(fs, -1, -(inode.size as i64))?;
                }
            }
        }
        Ok(Ok(MetaResponse::TxApplied(answer)))
    }

    fn created_inodes(&self, fs: FsId, inos: &[Ino]) -> Result<Vec<(Inode, bool)>, DbError> {
        let mut out = Vec::new();
        for &ino in inos {
            if let Ok(i) = self.inode(fs, ino)? {
                out.push((i, false));
            }
        }
        Ok(out)
    }

    /// Checks `steps` against this group's state; returns the locks they need.
    fn check_steps(&self, fs: FsId, steps: &[TxStep]) -> OpResult<Vec<Vec<u8>>> {
        let g = self.g;
        let mut locks: Vec<Vec<u8>> = Vec::new();
        let free = |k: &Vec<u8>| -> Result<bool, DbError> { Ok(self.t.load_raw(k)?.is_none()) };
        for step in steps {
            match step {
                TxStep::CreateInode { new, .. } => {
                    if (new.kind == FileType::Symlink) != new.symlink.is_some() {
                        return Ok(Err(MetaError::Invalid(
                            "a symlink needs a target, and only a symlink".into(),
                        )));
                    }
                }
                TxStep::PutDentry {
                    parent,
                    name,
                    replace,
                    ..
                } => {
                    tri!(validate_name(name));
                    tri!(self.outside_quota_trees(fs, *parent)?);
                    let dir = tri!(self.inode(fs, *parent)?);
                    if dir.kind != FileType::Dir {
                        return Ok(Err(MetaError::NotDir));
                    }
                    if dir.nlink == 0 {
                        return Ok(Err(MetaError::NotFound));
                    }
                    let current = self.t.load::<Dentry>(&key::dentry(g, fs, *parent, name))?;
                    match (current.map(|d| d.ino), replace) {
                        (None, None) => {}
                        (Some(_), None) => return Ok(Err(MetaError::Exists)),
                        (Some(a), Some(b)) if a == *b => {}
                        // The target changed since the client looked: start over.
                        _ => return Ok(Err(busy("the target name"))),
                    }
                    let l = key::dentry_lock(g, fs, *parent, name);
                    if !free(&l)? || !free(&key::inode_lock(g, fs, *parent))? {
                        return Ok(Err(busy("the target name")));
                    }
                    locks.push(l);
                }
                TxStep::DelDentry { parent, name, ino } => {
                    tri!(self.outside_quota_trees(fs, *parent)?);
                    match self.t.load::<Dentry>(&key::dentry(g, fs, *parent, name))? {
                        Some(d) if d.ino == *ino => {}
                        Some(_) => return Ok(Err(busy("the source name"))),
                        None => return Ok(Err(MetaError::NotFound)),
                    }
                    let l = key::dentry_lock(g, fs, *parent, name);
                    if !free(&l)? {
                        return Ok(Err(busy("the source name")));
                    }
                    locks.push(l);
                }
                TxStep::AddLink { ino } => {
                    let inode = tri!(self.inode(fs, *ino)?);
                    if inode.kind == FileType::Dir {
                        return Ok(Err(MetaError::NotPermitted(
                            "hard links to directories are not allowed".into(),
                        )));
                    }
                    if inode.nlink == 0 {
                        return Ok(Err(MetaError::NotFound));
                    }
                    if inode.nlink >= MAX_LINKS {
                        return Ok(Err(MetaError::TooManyLinks));
                    }
                    // Its links all lie under the quotas it is charged to.
                    tri!(self.outside_quota_trees(fs, inode.parent)?);
                    locks.push(tri!(self.inode_lock(fs, *ino)?));
                }
                TxStep::Moved { ino, .. } => {
                    tri!(self.inode(fs, *ino)?);
                    locks.push(tri!(self.inode_lock(fs, *ino)?));
                }
                TxStep::DropLink { ino, dir } => {
                    let inode = tri!(self.inode(fs, *ino)?);
                    match (*dir, inode.kind == FileType::Dir) {
                        (true, false) => return Ok(Err(MetaError::NotDir)),
                        (false, true) => return Ok(Err(MetaError::IsDir)),
                        (true, true) if !tri!(self.empty_dir(fs, *ino)?) => {
                            return Ok(Err(MetaError::NotEmpty));
                        }
                        _ => {}
                    }
                    locks.push(tri!(self.inode_lock(fs, *ino)?));
                }
                TxStep::TouchDir { ino, .. } => {
                    let dir = tri!(self.inode(fs, *ino)?);
                    if dir.kind != FileType::Dir {
                        return Ok(Err(MetaError::NotDir));
                    }
                }
            }
        }
        Ok(Ok(locks))
    }

    /// A tree under a directory quota (other than the root's) stays in its
    /// quota's group, so no change that spans groups adds to it or takes
    /// from it: such a rename or link is refused as crossing the quota's
    /// boundary (EXDEV; `mv` copies), and a new directory there stays in
    /// its parent's group (decision 60).
    fn outside_quota_trees(&self, fs: FsId, dir: Ino) -> OpResult<()> {
        if self.in_quota_tree(fs, dir)? {
            return Ok(Err(MetaError::QuotaBoundary(format!(
                "directory {dir} is in a quota's tree, which stays in one metadata group"
            ))));
        }
        Ok(Ok(()))
    }

    fn inode_lock(&self, fs: FsId, ino: Ino) -> OpResult<Vec<u8>> {
        let l = key::inode_lock(self.g, fs, ino);
        if self.t.load_raw(&l)?.is_some() {
            return Ok(Err(busy(&format!("inode {ino}"))));
        }
        Ok(Ok(l))
    }

    /// Applies one checked step; returns the inode it changed, if any.
    fn apply_step(
        &mut self,
        fs: FsId,
        step: &TxStep,
        now: Timestamp,
    ) -> OpResult<Option<(Inode, bool)>> {
        let g = self.g;
        Ok(Ok(match step {
            TxStep::CreateInode { new, parent } => {
                // The filesystem's, the owner's and the group's quotas count
                // it here (its directory's tree quotas are in another group,
                // and a tree with one never spans groups: decision 60).
                let charge = new_inode_charge(*parent, new);
                tri!(self.charge(fs, &[charge])?);
                let ino = match self.alloc_ino(fs, *parent)? {
                    Ok(ino) => ino,
                    Err(e) => {
                        self.release(fs, &[charge.undone()])?;
                        return Ok(Err(e));
                    }
                };
                let inode = Inode::new(ino, new.clone(), *parent, now);
                self.save(fs, &inode)?;
                self.add_usage(fs, 1, inode.size as i64)?;
                Some((inode, false))
            }
            TxStep::PutDentry {
                parent,
                name,
                ino,
                kind,
                ..
            } => {
                self.t.put(
                    &key::dentry(g, fs, *parent, name),
                    &Dentry {
                        ino: *ino,
                        kind: *kind,
                    },
                )?;
                None
            }
            TxStep::DelDentry { parent, name, .. } => {
                self.t.del(&key::dentry(g, fs, *parent, name))?;
                None
            }
            TxStep::AddLink { ino } => {
                let mut inode = tri!(self.inode(fs, *ino)?);
                inode.nlink += 1;
                inode.ctime = now;
                self.save(fs, &inode)?;
                Some((inode, false))
            }
            TxStep::Moved { ino, new_parent } => {
                let mut inode = tri!(self.inode(fs, *ino)?);
                inode.ctime = now;
                // A file's parent too: a subtree grant reaches a file through it.
                inode.parent = *new_parent;
                self.save(fs, &inode)?;
                Some((inode, false))
            }
            TxStep::DropLink { ino, .. } => {
                let inode = tri!(self.inode(fs, *ino)?);
                Some(self.drop_link(fs, inode, None, now)?)
            }
            TxStep::TouchDir { ino, nlink } => {
                let mut dir = tri!(self.inode(fs, *ino)?);
                dir.nlink = dir.nlink.saturating_add_signed(*nlink);
                dir.mtime = now;
                dir.ctime = now;
                self.save(fs, &dir)?;
                None
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{ReadRequest, WriteRequest};
    use crate::server::ops::apply;
    use crate::server::store::SM;
    use redb::ReadableDatabase;
    use redb::backends::InMemoryBackend;

    const COORD: GroupId = 1;

    /// Applies `req` to group `COORD` of a fresh in-memory table per test.
    fn run(db: &redb::Database, req: WriteRequest) -> MetaResult {
        let w = db.begin_write().unwrap();
        let res = {
            let mut t = w.open_table(SM).unwrap();
            apply(&mut t, COORD, req).unwrap()
        };
        w.commit().unwrap();
        res
    }

    fn db() -> redb::Database {
        redb::Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .unwrap()
    }

    fn begin(tx: TxId) -> WriteRequest {
        WriteRequest::TxBegin {
            fs: 1,
            tx,
            participants: vec![2],
            now: Timestamp::now(),
        }
    }

    fn commit(tx: TxId) -> WriteRequest {
        WriteRequest::TxCommit {
            fs: 1,
            tx,
            steps: vec![],
            now: Timestamp::now(),
        }
    }

    fn pending(db: &redb::Database) -> Vec<TxId> {
        let r = db.begin_read().unwrap();
        let t = r.open_table(SM).unwrap();
        match crate::server::ops::read_rows(&t, COORD, ReadRequest::ListIntents)
            .unwrap()
            .unwrap()
        {
            MetaResponse::Intents(i) => i.into_iter().map(|i| i.tx).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_commit_after_recovery_aborted_and_forgot_is_refused() {
        let db = db();
        assert_eq!(run(&db, begin(7)), Ok(MetaResponse::Ok));
        assert_eq!(
            pending(&db),
            vec![7],
            "a begun transaction waits for recovery"
        );
        // Recovery: the coordinator decides "aborted", participants drop
        // their intents, the coordinator forgets.
        assert_eq!(
            run(&db, WriteRequest::TxResolve { tx: 7 }),
            Ok(MetaResponse::Decision(false))
        );
        assert!(pending(&db).is_empty());
        assert_eq!(run(&db, commit(7)), Err(MetaError::TxAborted));
        run(&db, WriteRequest::TxForget { tx: 7 }).unwrap();
        // The client's commit arrives late: nothing may commit now.
        assert_eq!(run(&db, commit(7)), Err(MetaError::TxAborted));
        // Nor may a transaction that never began.
        assert_eq!(run(&db, commit(8)), Err(MetaError::TxAborted));
    }

    #[test]
    fn a_begun_transaction_commits_once_and_resolves_as_committed() {
        let db = db();
        run(&db, begin(9)).unwrap();
        assert_eq!(run(&db, commit(9)), Ok(MetaResponse::TxApplied(vec![])));
        assert!(pending(&db).is_empty(), "decided: nothing left to recover");
        assert_eq!(
            run(&db, WriteRequest::TxResolve { tx: 9 }),
            Ok(MetaResponse::Decision(true))
        );
        // A begin replayed after the decision does not reopen it.
        assert_eq!(run(&db, begin(9)), Err(MetaError::TxAborted));
    }
}
