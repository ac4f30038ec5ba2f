//! Quotas from the client's side: setting, listing and removing them, and
//! counting what they cover to start or check one. A directory's quota
//! (other than the root's) lives in its directory's group with its whole
//! tree; the filesystem's (the root's), users' and groups' quotas have
//! their home in the root's group and a share in every other group
//! (decision 60).

use crate::MetaError;
use crate::client::{FsClient, expect_answer};
use crate::request::{BudgetOp, MetaResponse, QuotaBook, ReadRequest, WriteRequest};
use crate::types::*;

/// One quota whose recorded usage differs from a count of what it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaDrift {
    pub subject: QuotaSubject,
    pub recorded: Usage,
    pub counted: Usage,
}

impl FsClient {
    /// Sets (or changes) the limits of directory `dir`. A new quota starts
    /// from a count of what is below the directory now.
    pub async fn set_quota(
        &self,
        dir: Ino,
        max_bytes: Option<u64>,
        max_inodes: Option<u64>,
    ) -> Result<Quota, MetaError> {
        let existed = self.quota(dir).await?.is_some();
        let counted = match existed || dir == ROOT_INO {
            true => Usage::default(),
            false => self.count_below(dir).await?,
        };
        if !existed && dir != ROOT_INO {
            self.check_one_group(dir).await?;
        }
        let req = WriteRequest::SetQuota {
            fs: self.info.id,
            dir,
            max_bytes,
            max_inodes,
            counted,
        };
        let r = self.call(dir, req).await?;
        expect_answer!(r, MetaResponse::Quotas(_) => ())?;
        if !existed && dir == ROOT_INO {
            let counts = self.count_global(QuotaSubject::Dir(ROOT_INO)).await?;
            self.restart_global(QuotaSubject::Dir(ROOT_INO), &counts)
                .await?;
        }
        self.quota(dir)
            .await?
            .ok_or_else(|| MetaError::Protocol("SetQuota left no quota".into()))
    }

    /// Refuses a quota on `dir` whose tree spans metadata groups: such a
    /// tree's changes would be charged in groups that do not hold the
    /// quota (decision 60).
    async fn check_one_group(&self, dir: Ino) -> Result<(), MetaError> {
        let home = self.group_of(dir).await?;
        for e in self.entries_below(dir).await? {
            let g = self.group_of(e.dentry.ino).await?;
            if g != home {
                return Err(MetaError::Invalid(format!(
                    "the tree below directory {dir} (metadata group {home}) has inode {} \
                     in group {g}; a directory quota needs its tree in one group \
                     (move the tree into a new directory made under the quota's \
                     parent, or set the quota before filling it)",
                    e.dentry.ino
                )));
            }
        }
        Ok(())
    }

    /// Every entry below `dir` but `.` and `..`, in every directory below.
    async fn entries_below(&self, dir: Ino) -> Result<Vec<DirEntry>, MetaError> {
        let mut out = Vec::new();
        let mut dirs = vec![dir];
        while let Some(d) = dirs.pop() {
            let mut after = None;
            loop {
                let page = self.readdir(d, after.clone(), MAX_READDIR).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.name.clone());
                for e in page {
                    if e.name == b"." || e.name == b".." {
                        continue;
                    }
                    if e.dentry.kind == FileType::Dir {
                        dirs.push(e.dentry.ino);
                    }
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    /// The quota of directory `dir` itself, if it has one.
    pub async fn quota(&self, dir: Ino) -> Result<Option<Quota>, MetaError> {
        Ok(self
            .quotas_above(dir)
            .await?
            .into_iter()
            .find(|(d, _)| *d == dir)
            .map(|(_, q)| q))
    }

    /// The quotas at and above `dir`, nearest first, as far as the group
    /// of `dir` holds its ancestors.
    pub async fn quotas_above(&self, dir: Ino) -> Result<Vec<(Ino, Quota)>, MetaError> {
        let req = ReadRequest::ListQuotas {
            fs: self.info.id,
            dir: Some(dir),
        };
        let mut quotas = expect_answer!(self.call(dir, req).await?, MetaResponse::Quotas(q) => q)?;
        self.with_shares(&mut quotas).await?;
        Ok(quotas)
    }

    /// The root's quota in `quotas` with what every group uses of it (its
    /// row counts what it lent other groups instead).
    async fn with_shares(&self, quotas: &mut [(Ino, Quota)]) -> Result<(), MetaError> {
        if let Some((_, q)) = quotas.iter_mut().find(|(d, _)| *d == ROOT_INO) {
            q.used = self
                .global_used(QuotaSubject::Dir(ROOT_INO), q.used)
                .await?;
        }
        Ok(())
    }

    /// The group holding the rows of the global quotas: the root's.
    async fn home(&self) -> Result<GroupId, MetaError> {
        self.group_of(ROOT_INO).await
    }

    async fn book(&self, g: GroupId) -> Result<QuotaBook, MetaError> {
        let req = ReadRequest::QuotaBook { fs: self.info.id };
        expect_answer!(self.call_group(g, req).await?, MetaResponse::QuotaBook(b) => b)
    }

    /// What every group uses of global quota `s`, whose home row says
    /// `home_used` (its own use plus what it lent).
    async fn global_used(&self, s: QuotaSubject, home_used: Usage) -> Result<Usage, MetaError> {
        let home = self.home().await?;
        let lent = lent_of(&self.book(home).await?, s);
        if lent == Usage::default() {
            return Ok(home_used);
        }
        let mut used = home_used.minus(lent);
        for g in self.groups().into_iter().filter(|g| *g != home) {
            if let Some((_, share)) = self.book(g).await?.shares.iter().find(|(x, _)| *x == s) {
                used = used.plus(share.used);
            }
        }
        Ok(used)
    }

    /// What each group's live inodes use of global quota `s`.
    async fn count_global(&self, s: QuotaSubject) -> Result<Vec<(GroupId, Usage)>, MetaError> {
        self.reload_partitions().await?;
        let mut counts = Vec::new();
        for g in self.groups() {
            let req = ReadRequest::CountOwned {
                fs: self.info.id,
                subject: s,
            };
            let u = expect_answer!(self.call_group(g, req).await?, MetaResponse::Budget(u) => u)?;
            counts.push((g, u));
        }
        Ok(counts)
    }

    /// Starts global quota `s` over from `counts`: every group but the
    /// home gets a share of what it counted, and the home its own count
    /// plus what it thereby lent.
    async fn restart_global(
        &self,
        s: QuotaSubject,
        counts: &[(GroupId, Usage)],
    ) -> Result<(), MetaError> {
        let home = self.home().await?;
        let mut local = Usage::default();
        let mut lent = Usage::default();
        for &(g, used) in counts {
            if g == home {
                local = used;
                continue;
            }
            lent = lent.plus(used);
            let op = BudgetOp::SetShare { home, used };
            self.budget_op(g, s, op).await?;
        }
        self.budget_op(home, s, BudgetOp::SetHome { local, lent })
            .await
    }

    async fn budget_op(&self, g: GroupId, s: QuotaSubject, op: BudgetOp) -> Result<(), MetaError> {
        let req = WriteRequest::QuotaBudget {
            fs: self.info.id,
            subject: s,
            op,
        };
        self.call_group(g, req).await.map(|_| ())
    }

    /// Drops every group's share of global quota `s`.
    async fn drop_shares(&self, s: QuotaSubject) -> Result<(), MetaError> {
        let home = self.home().await?;
        for g in self.groups().into_iter().filter(|g| *g != home) {
            self.budget_op(g, s, BudgetOp::DropShare).await?;
        }
        Ok(())
    }

    /// A user's or group's quota (`s`), with what every group uses of it.
    pub async fn owner_quota(&self, s: QuotaSubject) -> Result<Option<Quota>, MetaError> {
        let home = self.home().await?;
        let Some((_, mut q)) = self
            .book(home)
            .await?
            .owners
            .into_iter()
            .find(|(x, _)| *x == s)
        else {
            return Ok(None);
        };
        q.used = self.global_used(s, q.used).await?;
        Ok(Some(q))
    }

    /// Every user's and group's quota, with what every group uses of it.
    pub async fn owner_quotas(&self) -> Result<Vec<(QuotaSubject, Quota)>, MetaError> {
        let home = self.home().await?;
        let mut out = Vec::new();
        for (s, mut q) in self.book(home).await?.owners {
            q.used = self.global_used(s, q.used).await?;
            out.push((s, q));
        }
        Ok(out)
    }

    /// Sets (or changes) a user's or group's limits. A new quota starts
    /// from a count of what the owner's inodes use in every group.
    pub async fn set_owner_quota(
        &self,
        s: QuotaSubject,
        max_bytes: Option<u64>,
        max_inodes: Option<u64>,
    ) -> Result<Quota, MetaError> {
        if !matches!(s, QuotaSubject::User(_) | QuotaSubject::Group(_)) {
            return Err(MetaError::Invalid(format!("{s} is not a user or a group")));
        }
        let existed = self.owner_quota(s).await?.is_some();
        let req = WriteRequest::SetOwnerQuota {
            fs: self.info.id,
            subject: s,
            max_bytes,
            max_inodes,
        };
        self.call_group(self.home().await?, req).await?;
        if !existed {
            let counts = self.count_global(s).await?;
            self.restart_global(s, &counts).await?;
        }
        self.owner_quota(s)
            .await?
            .ok_or_else(|| MetaError::Protocol("SetOwnerQuota left no quota".into()))
    }

    pub async fn delete_owner_quota(&self, s: QuotaSubject) -> Result<(), MetaError> {
        let req = WriteRequest::DeleteOwnerQuota {
            fs: self.info.id,
            subject: s,
        };
        self.call_group(self.home().await?, req).await?;
        self.drop_shares(s).await
    }

    /// Whether `dir` is in the tree of a directory quota other than the
    /// root's.
    pub async fn in_quota_tree(&self, dir: Ino) -> Result<bool, MetaError> {
        Ok(self
            .quotas_above(dir)
            .await?
            .iter()
            .any(|(d, _)| *d != ROOT_INO))
    }

    /// Every quota of the filesystem, by directory.
    pub async fn quotas(&self) -> Result<Vec<(Ino, Quota)>, MetaError> {
        self.reload_partitions().await?;
        let mut all = Vec::new();
        for g in self.groups() {
            all.extend(self.group_quotas(g).await?);
        }
        all.sort_by_key(|(d, _)| *d);
        self.with_shares(&mut all).await?;
        Ok(all)
    }

    /// The quotas of directories group `g` holds.
    /// Whether no quota counts what is created in group `g`: no directory
    /// quota there, and no global one (a user's, a group's, the root's)
    /// homed or shared anywhere it could reach.
    pub async fn counts_no_quota(&self, g: GroupId) -> Result<bool, MetaError> {
        if !self.group_quotas(g).await?.is_empty() {
            return Ok(false);
        }
        let home = self.book(self.home().await?).await?;
        if !home.owners.is_empty() || !home.lent.is_empty() || !home.shares.is_empty() {
            return Ok(false);
        }
        Ok(self.book(g).await?.shares.is_empty())
    }

    pub async fn group_quotas(&self, g: GroupId) -> Result<Vec<(Ino, Quota)>, MetaError> {
        let req = ReadRequest::ListQuotas {
            fs: self.info.id,
            dir: None,
        };
        expect_answer!(self.call_group(g, req).await?, MetaResponse::Quotas(q) => q)
    }

    pub async fn delete_quota(&self, dir: Ino) -> Result<(), MetaError> {
        let req = WriteRequest::DeleteQuota {
            fs: self.info.id,
            dir,
        };
        self.call(dir, req).await?;
        if dir == ROOT_INO {
            self.drop_shares(QuotaSubject::Dir(ROOT_INO)).await?;
        }
        Ok(())
    }

    /// Counts the quotas of `only` (all of them when empty) again, from the
    /// trees for directories' and from every group's inodes for the
    /// filesystem's, users' and groups', and returns those whose recorded
    /// usage differs; with `repair`, records the counts. A change made
    /// while counting can show as drift that is not there: check again on
    /// a quiet tree before repairing.
    pub async fn check_quotas(
        &self,
        only: &[QuotaSubject],
        repair: bool,
    ) -> Result<Vec<QuotaDrift>, MetaError> {
        let wanted = |s: &QuotaSubject| only.is_empty() || only.contains(s);
        let mut drift = Vec::new();
        for (dir, q) in self.quotas().await? {
            let subject = QuotaSubject::Dir(dir);
            if !wanted(&subject) {
                continue;
            }
            if dir == ROOT_INO {
                drift.extend(self.check_global(subject, q.used, repair).await?);
                continue;
            }
            let counted = self.count_below(dir).await?;
            if counted == q.used {
                continue;
            }
            if repair {
                let req = WriteRequest::SetQuotaUsage {
                    fs: self.info.id,
                    dir,
                    used: counted,
                };
                self.call(dir, req).await?;
            }
            drift.push(QuotaDrift {
                subject,
                recorded: q.used,
                counted,
            });
        }
        for (s, q) in self.owner_quotas().await? {
            if wanted(&s) {
                drift.extend(self.check_global(s, q.used, repair).await?);
            }
        }
        Ok(drift)
    }

    /// `check_quotas` for one global quota whose groups together record
    /// `recorded`. A repair also settles what was lent but never reached
    /// a group (a client stopped halfway through a loan).
    async fn check_global(
        &self,
        s: QuotaSubject,
        recorded: Usage,
        repair: bool,
    ) -> Result<Option<QuotaDrift>, MetaError> {
        let counts = self.count_global(s).await?;
        let counted = counts.iter().fold(Usage::default(), |a, (_, u)| a.plus(*u));
        if repair {
            self.restart_global(s, &counts).await?;
        }
        Ok((counted != recorded).then_some(QuotaDrift {
            subject: s,
            recorded,
            counted,
        }))
    }

    /// What a quota on `dir` counts: every directory below it, and every
    /// other inode reached below it that is charged there (its `parent`,
    /// where it was made or moved last, is one of those directories),
    /// once however many links it has, with regular files' sizes.
    pub async fn count_below(&self, dir: Ino) -> Result<Usage, MetaError> {
        let mut usage = Usage::default();
        let mut tree = std::collections::HashSet::from([dir]);
        let mut files = std::collections::HashMap::new();
        for e in self.entries_below(dir).await? {
            let inode = match e.attr {
                Some(i) => i,
                None => self.getattr(e.dentry.ino).await?,
            };
            if inode.kind == FileType::Dir {
                usage.inodes += 1;
                tree.insert(inode.ino);
            } else {
                files.insert(inode.ino, inode);
            }
        }
        // Decided once the whole tree is known: a file's parent may be a
        // directory listed after it.
        for f in files.values().filter(|f| tree.contains(&f.parent)) {
            usage.inodes += 1;
            if f.kind == FileType::File {
                usage.bytes += f.size;
            }
        }
        Ok(usage)
    }
}

/// What the home of global quota `s` lent, per its book.
fn lent_of(book: &QuotaBook, s: QuotaSubject) -> Usage {
    book.lent
        .iter()
        .find(|(x, _)| *x == s)
        .map(|(_, u)| *u)
        .unwrap_or_default()
}
