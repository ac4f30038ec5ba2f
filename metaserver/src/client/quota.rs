//! Directory quotas from the client's side: setting, listing and removing
//! them, and counting a directory's subtree to start or check one.

use crate::MetaError;
use crate::client::{FsClient, expect_answer};
use crate::request::{MetaResponse, ReadRequest, WriteRequest};
use crate::types::*;

/// One quota whose recorded usage differs from a count of its subtree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaDrift {
    pub dir: Ino,
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
        let counted = match self.quota(dir).await? {
            Some(_) => Usage::default(),
            None => self.count_below(dir).await?,
        };
        let req = WriteRequest::SetQuota {
            fs: self.info.id,
            dir,
            max_bytes,
            max_inodes,
            counted,
        };
        let r = self.call(dir, req).await?;
        let mut set = expect_answer!(r, MetaResponse::Quotas(q) => q)?;
        set.pop()
            .map(|(_, q)| q)
            .ok_or_else(|| MetaError::Protocol("SetQuota answered no quota".into()))
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
        expect_answer!(self.call(dir, req).await?, MetaResponse::Quotas(q) => q)
    }

    /// Every quota of the filesystem, by directory.
    pub async fn quotas(&self) -> Result<Vec<(Ino, Quota)>, MetaError> {
        self.reload_partitions().await?;
        let mut all = Vec::new();
        for g in self.groups() {
            all.extend(self.group_quotas(g).await?);
        }
        all.sort_by_key(|(d, _)| *d);
        Ok(all)
    }

    /// The quotas of directories group `g` holds.
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
        self.call(dir, req).await.map(|_| ())
    }

    /// Counts the quotas of `dirs` (all of them when empty) again from the
    /// tree and returns those whose recorded usage differs; with `repair`,
    /// records the counts. A change made while counting can show as drift
    /// that is not there: check again on a quiet tree before repairing.
    pub async fn check_quotas(
        &self,
        dirs: &[Ino],
        repair: bool,
    ) -> Result<Vec<QuotaDrift>, MetaError> {
        let mut drift = Vec::new();
        for (dir, q) in self.quotas().await? {
            if !dirs.is_empty() && !dirs.contains(&dir) {
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
                dir,
                recorded: q.used,
                counted,
            });
        }
        Ok(drift)
    }

    /// What a quota on `dir` counts: every directory below it, and every
    /// other inode reached below it that is charged there (its `parent`,
    /// where it was made or moved last, is one of those directories),
    /// once however many links it has, with regular files' sizes.
    pub async fn count_below(&self, dir: Ino) -> Result<Usage, MetaError> {
        let mut usage = Usage::default();
        let mut tree = std::collections::HashSet::from([dir]);
        let mut files = std::collections::HashMap::new();
        let mut dirs = vec![dir];
        while let Some(d) = dirs.pop() {
            let mut after = None;
            loop {
                let page = self.readdir(d, after.clone(), MAX_READDIR).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.name.clone());
                for e in &page {
                    if e.name == b"." || e.name == b".." {
                        continue;
                    }
                    let inode = match &e.attr {
                        Some(i) => i.clone(),
                        None => self.getattr(e.dentry.ino).await?,
                    };
                    if inode.kind == FileType::Dir {
                        usage.inodes += 1;
                        tree.insert(inode.ino);
                        dirs.push(inode.ino);
                    } else {
                        files.insert(inode.ino, inode);
                    }
                }
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
