//! Directory quotas: a row beside each limited directory's inode holds its
//! limits and what lies below it. Every change that adds or frees inodes
//! or bytes charges the quotas above the directory it happens in, in the
//! same log entry, after checking that none would go over (decision 58).
//!
//! A file is charged to its `parent`: the directory it was made in, or
//! moved to last. Files in the trash are not charged. The walk up from a
//! directory follows parent pointers while this group holds them.

use std::collections::BTreeMap;

use crate::MetaError;
use crate::request::{BudgetOp, MetaResponse, MetaResult, QuotaBook};
use crate::server::ops::{Ctx, OpResult, tri};
use crate::server::store::{DbError, Rows, RowsMut, key};
use crate::types::*;

/// How deep a walk up the tree goes before it takes the chain for broken:
/// deeper than any path the kernel can name (PATH_MAX / 2).
const MAX_DEPTH: usize = 2048;

/// What one change adds below `dir` (negative: frees), for inodes of
/// `owner` (uid, gid).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Charge {
    pub dir: Ino,
    pub owner: (u32, u32),
    pub inodes: i64,
    pub bytes: i64,
}

impl Charge {
    /// `inodes` and `bytes` of `inode`'s owner, below where it is charged.
    pub(crate) fn of(inode: &Inode, inodes: i64, bytes: i64) -> Charge {
        Charge {
            dir: inode.parent,
            owner: (inode.uid, inode.gid),
            inodes,
            bytes,
        }
    }

    /// The charge that takes this one back.
    pub(crate) fn undone(self) -> Charge {
        Charge {
            inodes: -self.inodes,
            bytes: -self.bytes,
            ..self
        }
    }

    /// The same charge below another directory.
    pub(crate) fn below(self, dir: Ino) -> Charge {
        Charge { dir, ..self }
    }
}

/// A new inode `new` in directory `parent`.
pub(crate) fn new_inode_charge(parent: Ino, new: &NewInode) -> Charge {
    Charge {
        dir: parent,
        owner: (new.uid, new.gid),
        inodes: 1,
        bytes: 0,
    }
}

/// The bytes a quota counts for `inode`: a regular file's size.
fn counted_bytes(inode: &Inode, size: u64) -> i64 {
    if inode.kind == FileType::File {
        size as i64
    } else {
        0
    }
}

/// What a file or directory leaving the tree frees: itself, and a regular
/// file's bytes.
pub(crate) fn uncharge(inode: &Inode) -> Charge {
    Charge::of(inode, -1, -counted_bytes(inode, inode.size))
}

/// A regular file's size going to `size`: what its quotas gain (nothing for
/// a file in the trash, which they no longer count).
pub(crate) fn file_growth(inode: &Inode, size: u64) -> Vec<Charge> {
    if inode.nlink == 0 || inode.kind != FileType::File {
        return Vec::new();
    }
    vec![Charge::of(inode, 0, size as i64 - inode.size as i64)]
}

/// `inode` (of `size` bytes after the change) passing to another owner:
/// its user's and group's quotas give it up and the new ones take it (the
/// directory quotas see both and stay as they are).
pub(crate) fn owner_change(inode: &Inode, size: u64, owner: (u32, u32)) -> Vec<Charge> {
    if inode.nlink == 0 || owner == (inode.uid, inode.gid) {
        return Vec::new();
    }
    let bytes = counted_bytes(inode, size);
    let leaving = Charge::of(inode, -1, -bytes);
    vec![
        leaving,
        Charge {
            owner,
            inodes: 1,
            bytes,
            ..leaving
        },
    ]
}

/// Where a quota's numbers are kept in this group.
enum Holder {
    /// The quota's own row (a directory's, or a global quota at its home).
    Home(Vec<u8>, Quota),
    /// This group's share of a global quota homed elsewhere.
    Share(Vec<u8>, QuotaShare),
}

/// The key of a quota's own row.
pub(crate) fn home_key(g: GroupId, fs: FsId, s: QuotaSubject) -> Vec<u8> {
    match s {
        QuotaSubject::Dir(d) => key::quota(g, fs, d),
        owner => key::quota_owner(g, fs, owner),
    }
}

fn has_rows<T: Rows>(t: &T, g: GroupId, tag: u8, fs: FsId) -> Result<bool, DbError> {
    Ok(!t.scan(&key::rows_of(g, tag, fs), None, 1)?.is_empty())
}

/// What this group's live inodes of `subject` use (the root's subject: all
/// of them). The root itself is charged nowhere.
pub(crate) fn count_owned<T: Rows>(
    t: &T,
    g: GroupId,
    fs: FsId,
    subject: QuotaSubject,
) -> Result<MetaResult, DbError> {
    let mut used = Usage::default();
    for (_, v) in t.scan(&key::rows_of(g, key::INODE, fs), None, usize::MAX)? {
        let inode: Inode = crate::server::store::decode(&v)?;
        let counted = match subject {
            QuotaSubject::Dir(d) if d == ROOT_INO => true,
            QuotaSubject::Dir(_) => {
                return Ok(Err(MetaError::Invalid(
                    "a directory's tree is counted by walking it".into(),
                )));
            }
            QuotaSubject::User(u) => inode.uid == u,
            QuotaSubject::Group(gid) => inode.gid == gid,
        };
        if counted && inode.nlink > 0 && inode.ino != ROOT_INO {
            used.inodes += 1;
            used.bytes += counted_bytes(&inode, inode.size) as u64;
        }
    }
    Ok(Ok(MetaResponse::Budget(used)))
}

/// The global quotas' rows of `fs` in group `g`.
pub(crate) fn quota_book<T: Rows>(t: &T, g: GroupId, fs: FsId) -> Result<MetaResult, DbError> {
    use crate::server::store::decode;
    let mut book = QuotaBook::default();
    let rows = |tag| t.scan(&key::rows_of(g, tag, fs), None, usize::MAX);
    for (k, v) in rows(key::QUOTA_OWNER)? {
        if let Some(s) = key::quota_subject(&k) {
            book.owners.push((s, decode(&v)?));
        }
    }
    for (k, v) in rows(key::QUOTA_LENT)? {
        if let Some(s) = key::quota_subject(&k) {
            book.lent.push((s, decode(&v)?));
        }
    }
    for (k, v) in rows(key::QUOTA_SHARE)? {
        if let Some(s) = key::quota_subject(&k) {
            book.shares.push((s, decode(&v)?));
        }
    }
    Ok(Ok(MetaResponse::QuotaBook(book)))
}

/// Why this group's share cannot take `inodes` and `bytes` more: the
/// budget its home lent is used up (the client asks the home for more).
fn over_budget(
    fs: FsId,
    s: QuotaSubject,
    share: &QuotaShare,
    inodes: i64,
    bytes: i64,
) -> Option<MetaError> {
    let short = |budget: u64, used: u64, add: i64| {
        if add <= 0 {
            0
        } else {
            used.saturating_add(add as u64).saturating_sub(budget)
        }
    };
    let need = Usage {
        inodes: short(share.budget.inodes, share.used.inodes, inodes),
        bytes: short(share.budget.bytes, share.used.bytes, bytes),
    };
    (need != Usage::default()).then_some(MetaError::QuotaBudget {
        fs,
        subject: s,
        home: share.home,
        need,
    })
}

fn add(u: Usage, inodes: i64, bytes: i64) -> Usage {
    Usage {
        inodes: u.inodes.saturating_add_signed(inodes),
        bytes: u.bytes.saturating_add_signed(bytes),
    }
}

pub(crate) fn list_quotas<T: Rows>(
    t: &T,
    g: GroupId,
    fs: FsId,
    dir: Option<Ino>,
) -> Result<MetaResult, DbError> {
    if let Some(dir) = dir {
        return Ok(Ok(MetaResponse::Quotas(quotas_above(t, g, fs, dir)?)));
    }
    let mut out = Vec::new();
    for (k, v) in t.scan(&key::rows_of(g, key::QUOTA, fs), None, usize::MAX)? {
        out.push((
            key::quota_dir(&k),
            crate::server::store::decode::<Quota>(&v)?,
        ));
    }
    Ok(Ok(MetaResponse::Quotas(out)))
}

/// Whether any directory of `fs` in group `g` has a quota (most
/// filesystems have none, and their changes skip the walk).
fn any_quota<T: Rows>(t: &T, g: GroupId, fs: FsId) -> Result<bool, DbError> {
    Ok(!t
        .scan(&key::rows_of(g, key::QUOTA, fs), None, 1)?
        .is_empty())
}

/// The directories with a quota at and above `dir`, nearest first, as far
/// up as this group holds the chain.
pub(crate) fn quotas_above<T: Rows>(
    t: &T,
    g: GroupId,
    fs: FsId,
    dir: Ino,
) -> Result<Vec<(Ino, Quota)>, DbError> {
    let mut out = Vec::new();
    if !any_quota(t, g, fs)? {
        return Ok(out);
    }
    let mut at = dir;
    for _ in 0..MAX_DEPTH {
        if let Some(q) = t.load::<Quota>(&key::quota(g, fs, at))? {
            out.push((at, q));
        }
        if at == ROOT_INO {
            break;
        }
        // An ancestor in another group ends what this group can see.
        let Some(inode) = t.load::<Inode>(&key::inode(g, fs, at))? else {
            break;
        };
        if inode.parent == at {
            break;
        }
        at = inode.parent;
    }
    Ok(out)
}

/// The directories with a quota at and above `dir` other than the root
/// (whose quota counts every group's inodes, as a global one).
fn tree_quotas_above<T: Rows>(
    t: &T,
    g: GroupId,
    fs: FsId,
    dir: Ino,
) -> Result<Vec<(Ino, Quota)>, DbError> {
    let mut all = quotas_above(t, g, fs, dir)?;
    all.retain(|(d, _)| *d != ROOT_INO);
    Ok(all)
}

impl<T: RowsMut> Ctx<'_, T> {
    /// Where this group keeps the numbers of global quota `s`: its home
    /// row, a share, or nowhere (no such quota).
    fn global_holder(&self, fs: FsId, s: QuotaSubject) -> Result<Option<Holder>, DbError> {
        let k = home_key(self.g, fs, s);
        if let Some(q) = self.t.load::<Quota>(&k)? {
            return Ok(Some(Holder::Home(k, q)));
        }
        let k = key::quota_share(self.g, fs, s);
        Ok(self
            .t
            .load::<QuotaShare>(&k)?
            .map(|share| Holder::Share(k, share)))
    }

    /// Applies `charges` to every quota they concern (the directory quotas
    /// above their directories; the filesystem's, their owner's and their
    /// group's), or, if any would go over, changes nothing and says which.
    /// Freeing never fails.
    pub(crate) fn charge(&mut self, fs: FsId, charges: &[Charge]) -> OpResult<()> {
        let (g, t) = (self.g, &*self.t);
        // Most filesystems have no quota at all, and their changes stop here.
        let any = has_rows(t, g, key::QUOTA, fs)?
            || has_rows(t, g, key::QUOTA_OWNER, fs)?
            || has_rows(t, g, key::QUOTA_SHARE, fs)?;
        if !any {
            return Ok(Ok(()));
        }
        let mut net: BTreeMap<QuotaSubject, (Holder, i64, i64)> = BTreeMap::new();
        for c in charges.iter().filter(|c| (c.inodes, c.bytes) != (0, 0)) {
            let mut concerned: Vec<(QuotaSubject, Option<Holder>)> = Vec::new();
            for (dir, q) in tree_quotas_above(t, g, fs, c.dir)? {
                concerned.push((
                    QuotaSubject::Dir(dir),
                    Some(Holder::Home(key::quota(g, fs, dir), q)),
                ));
            }
            for s in [
                QuotaSubject::Dir(ROOT_INO),
                QuotaSubject::User(c.owner.0),
                QuotaSubject::Group(c.owner.1),
            ] {
                let holder = match net.contains_key(&s) {
                    true => None,
                    false => self.global_holder(fs, s)?,
                };
                concerned.push((s, holder));
            }
            for (s, holder) in concerned {
                match (net.get_mut(&s), holder) {
                    (Some(e), _) => {
                        e.1 += c.inodes;
                        e.2 += c.bytes;
                    }
                    (None, Some(h)) => {
                        net.insert(s, (h, c.inodes, c.bytes));
                    }
                    (None, None) => {}
                }
            }
        }
        for (s, (h, inodes, bytes)) in &net {
            let refused = match h {
                Holder::Home(_, q) => self.over_limit(fs, *s, q, *inodes, *bytes)?,
                Holder::Share(_, share) => over_budget(fs, *s, share, *inodes, *bytes),
            };
            if let Some(e) = refused {
                return Ok(Err(e));
            }
        }
        for (_, (h, inodes, bytes)) in net {
            if (inodes, bytes) == (0, 0) {
                continue;
            }
            match h {
                Holder::Home(k, mut q) => {
                    q.used = add(q.used, inodes, bytes);
                    self.t.put(&k, &q)?;
                }
                Holder::Share(k, mut share) => {
                    share.used = add(share.used, inodes, bytes);
                    self.t.put(&k, &share)?;
                }
            }
        }
        Ok(Ok(()))
    }

    /// Why quota `q` of `s` cannot take `inodes` and `bytes` more, if it
    /// cannot.
    fn over_limit(
        &self,
        fs: FsId,
        s: QuotaSubject,
        q: &Quota,
        inodes: i64,
        bytes: i64,
    ) -> Result<Option<MetaError>, DbError> {
        let over = |max: Option<u64>, used: u64, add: i64| {
            add > 0 && max.is_some_and(|m| used.saturating_add(add as u64) > m)
        };
        let what = if over(q.max_inodes, q.used.inodes, inodes) {
            format!(
                "{s} holds {} of its {} inodes",
                q.used.inodes,
                q.max_inodes.unwrap_or_default()
            )
        } else if over(q.max_bytes, q.used.bytes, bytes) {
            format!(
                "{s} holds {} of its {} bytes; {bytes} more asked",
                q.used.bytes,
                q.max_bytes.unwrap_or_default()
            )
        } else {
            return Ok(None);
        };
        // Part of what it holds may be budget lent to other groups and not
        // used there: the client asks for it back and tries again.
        let lent = self
            .t
            .load::<Usage>(&key::quota_lent(self.g, fs, s))?
            .unwrap_or_default();
        if s.is_global() && lent != Usage::default() {
            return Ok(Some(MetaError::QuotaLent { fs, subject: s }));
        }
        Ok(Some(MetaError::QuotaExceeded(what)))
    }

    /// Frees what `charges` name (all of them zero or negative).
    pub(crate) fn release(&mut self, fs: FsId, charges: &[Charge]) -> Result<(), DbError> {
        debug_assert!(charges.iter().all(|c| c.inodes <= 0 && c.bytes <= 0));
        match self.charge(fs, charges)? {
            Ok(()) => Ok(()),
            Err(e) => Err(DbError::Corrupt(format!("freeing quota usage failed: {e}"))),
        }
    }

    /// Whether `a` and `b` lie below the same directory quotas (so what
    /// moves between them needs no charge).
    pub(crate) fn same_quotas(&self, fs: FsId, a: Ino, b: Ino) -> Result<bool, DbError> {
        if a == b {
            return Ok(true);
        }
        let dirs = |d| -> Result<Vec<Ino>, DbError> {
            Ok(tree_quotas_above(&*self.t, self.g, fs, d)?
                .into_iter()
                .map(|(i, _)| i)
                .collect())
        };
        Ok(dirs(a)? == dirs(b)?)
    }

    /// Whether directory `dir` lies in the tree of a directory quota (other
    /// than the root's). Such a tree stays in one group (decision 60).
    pub(crate) fn in_quota_tree(&self, fs: FsId, dir: Ino) -> Result<bool, DbError> {
        Ok(!tree_quotas_above(&*self.t, self.g, fs, dir)?.is_empty())
    }

    /// The nearest directory with a quota (other than the root's) at or
    /// above `dir`.
    pub(crate) fn nearest_quota(&self, fs: FsId, dir: Ino) -> Result<Option<Ino>, DbError> {
        Ok(tree_quotas_above(&*self.t, self.g, fs, dir)?
            .first()
            .map(|(d, _)| *d))
    }

    /// What moving `inode`'s link from directory `from` to `to` does to
    /// the quotas: nothing when the same quotas are above both; a file's or
    /// a directory with its own quota's usage leaving one set and joining
    /// the other. Refused for a directory without a quota of its own, whose
    /// subtree's usage no row holds, and for a file with other links, which
    /// would stay under the quotas it leaves (all links of a file lie
    /// under the same quotas, so a count of a tree finds each file it is
    /// charged for).
    pub(crate) fn move_charges(
        &self,
        fs: FsId,
        inode: &Inode,
        from: Ino,
        to: Ino,
    ) -> OpResult<Vec<Charge>> {
        if self.same_quotas(fs, from, to)? {
            return Ok(Ok(Vec::new()));
        }
        if inode.kind != FileType::Dir && inode.nlink > 1 {
            return Ok(Err(MetaError::QuotaBoundary(format!(
                "inode {} has other links under the quotas it would leave",
                inode.ino
            ))));
        }
        let from = if inode.kind == FileType::Dir {
            from
        } else {
            // Charged where it was made or moved last, which has the same
            // quotas as its one link's directory.
            inode.parent
        };
        let (inodes, bytes) = match inode.kind {
            FileType::File => (1, inode.size as i64),
            FileType::Dir => match self.t.load::<Quota>(&key::quota(self.g, fs, inode.ino))? {
                Some(q) => (q.used.inodes as i64 + 1, q.used.bytes as i64),
                None => {
                    return Ok(Err(MetaError::QuotaBoundary(format!(
                        "directory {} would move between quotas without one of its own \
                         (what is below it is not counted on its own)",
                        inode.ino
                    ))));
                }
            },
            _ => (1, 0),
        };
        // The owner's quotas see the same inodes leave and come back: only
        // the directory quotas change.
        let leaving = Charge::of(inode, -inodes, -bytes).below(from);
        Ok(Ok(vec![
            leaving,
            Charge {
                dir: to,
                inodes,
                bytes,
                ..leaving
            },
        ]))
    }

    /// One step of moving a global quota's budget (decision 60).
    pub(crate) fn quota_budget(
        &mut self,
        fs: FsId,
        s: QuotaSubject,
        op: BudgetOp,
    ) -> Result<MetaResult, DbError> {
        if !s.is_global() {
            return Ok(Err(MetaError::Invalid(format!(
                "{s}'s quota is kept in one group and lends nothing"
            ))));
        }
        let home = home_key(self.g, fs, s);
        let lent_key = key::quota_lent(self.g, fs, s);
        let share_key = key::quota_share(self.g, fs, s);
        let lent = self.t.load::<Usage>(&lent_key)?.unwrap_or_default();
        Ok(Ok(match op {
            BudgetOp::Lend { to, need, want } => {
                let Some(mut q) = self.t.load::<Quota>(&home)? else {
                    return Ok(Err(MetaError::NotFound));
                };
                let room =
                    |max: Option<u64>, used: u64| max.map_or(u64::MAX, |m| m.saturating_sub(used));
                let room = Usage {
                    inodes: room(q.max_inodes, q.used.inodes),
                    bytes: room(q.max_bytes, q.used.bytes),
                };
                if need.inodes > room.inodes || need.bytes > room.bytes {
                    if lent != Usage::default() {
                        return Ok(Err(MetaError::QuotaLent { fs, subject: s }));
                    }
                    return Ok(Err(MetaError::QuotaExceeded(format!(
                        "{s} has room for {} inodes and {} bytes; group {to} needs {} and {}",
                        room.inodes, room.bytes, need.inodes, need.bytes
                    ))));
                }
                let grant = Usage {
                    inodes: want.inodes.max(need.inodes).min(room.inodes),
                    bytes: want.bytes.max(need.bytes).min(room.bytes),
                };
                q.used = q.used.plus(grant);
                self.t.put(&home, &q)?;
                self.t.put(&lent_key, &lent.plus(grant))?;
                MetaResponse::Budget(grant)
            }
            BudgetOp::Unlend { amount } => {
                if let Some(mut q) = self.t.load::<Quota>(&home)? {
                    q.used = q.used.minus(amount);
                    self.t.put(&home, &q)?;
                    self.t.put(&lent_key, &lent.minus(amount))?;
                }
                MetaResponse::Ok
            }
            BudgetOp::Add { amount } => {
                let Some(mut share) = self.t.load::<QuotaShare>(&share_key)? else {
                    return Ok(Err(MetaError::NotFound));
                };
                share.budget = share.budget.plus(amount);
                self.t.put(&share_key, &share)?;
                MetaResponse::Ok
            }
            BudgetOp::Return => {
                let Some(mut share) = self.t.load::<QuotaShare>(&share_key)? else {
                    return Ok(Ok(MetaResponse::Budget(Usage::default())));
                };
                let spare = share.budget.minus(share.used);
                share.budget = share.budget.minus(spare);
                self.t.put(&share_key, &share)?;
                MetaResponse::Budget(spare)
            }
            BudgetOp::SetShare { home, used } => {
                let share = QuotaShare {
                    home,
                    budget: used,
                    used,
                };
                self.t.put(&share_key, &share)?;
                MetaResponse::Ok
            }
            BudgetOp::DropShare => {
                self.t.del(&share_key)?;
                MetaResponse::Ok
            }
            BudgetOp::SetHome { local, lent } => {
                let Some(mut q) = self.t.load::<Quota>(&home)? else {
                    return Ok(Err(MetaError::NotFound));
                };
                q.used = local.plus(lent);
                self.t.put(&home, &q)?;
                self.t.put(&lent_key, &lent)?;
                MetaResponse::Quotas(vec![])
            }
        }))
    }

    /// Sets a user's or group's limits at the quota's home (this group).
    pub(crate) fn set_owner_quota(
        &mut self,
        fs: FsId,
        s: QuotaSubject,
        (max_bytes, max_inodes): (Option<u64>, Option<u64>),
    ) -> Result<MetaResult, DbError> {
        if let QuotaSubject::Dir(_) = s {
            return Ok(Err(MetaError::Invalid(
                "a directory's quota is set with SetQuota".into(),
            )));
        }
        let k = key::quota_owner(self.g, fs, s);
        let used = self
            .t
            .load::<Quota>(&k)?
            .map(|q| q.used)
            .unwrap_or_default();
        self.t.put(
            &k,
            &Quota {
                max_bytes,
                max_inodes,
                used,
            },
        )?;
        Ok(Ok(MetaResponse::Ok))
    }

    pub(crate) fn delete_owner_quota(
        &mut self,
        fs: FsId,
        s: QuotaSubject,
    ) -> Result<MetaResult, DbError> {
        let k = key::quota_owner(self.g, fs, s);
        if self.t.load_raw(&k)?.is_none() {
            return Ok(Err(MetaError::NotFound));
        }
        self.t.del(&k)?;
        self.t.del(&key::quota_lent(self.g, fs, s))?;
        Ok(Ok(MetaResponse::Ok))
    }

    pub(crate) fn set_quota(
        &mut self,
        fs: FsId,
        dir: Ino,
        (max_bytes, max_inodes): (Option<u64>, Option<u64>),
        counted: Usage,
    ) -> Result<MetaResult, DbError> {
        let inode = tri!(self.inode(fs, dir)?);
        if inode.kind != FileType::Dir {
            return Ok(Err(MetaError::NotDir));
        }
        let k = key::quota(self.g, fs, dir);
        let used = match self.t.load::<Quota>(&k)? {
            Some(q) => q.used,
            None => counted,
        };
        let q = Quota {
            max_bytes,
            max_inodes,
            used,
        };
        self.t.put(&k, &q)?;
        Ok(Ok(MetaResponse::Quotas(vec![(dir, q)])))
    }

    pub(crate) fn delete_quota(&mut self, fs: FsId, dir: Ino) -> Result<MetaResult, DbError> {
        let k = key::quota(self.g, fs, dir);
        if self.t.load_raw(&k)?.is_none() {
            return Ok(Err(MetaError::NotFound));
        }
        self.t.del(&k)?;
        self.t
            .del(&key::quota_lent(self.g, fs, QuotaSubject::Dir(dir)))?;
        Ok(Ok(MetaResponse::Ok))
    }

    pub(crate) fn set_quota_usage(
        &mut self,
        fs: FsId,
        dir: Ino,
        used: Usage,
    ) -> Result<MetaResult, DbError> {
        let k = key::quota(self.g, fs, dir);
        let Some(mut q) = self.t.load::<Quota>(&k)? else {
            return Ok(Err(MetaError::NotFound));
        };
        q.used = used;
        self.t.put(&k, &q)?;
        Ok(Ok(MetaResponse::Quotas(vec![(dir, q)])))
    }
}
