//! Consistency check of one filesystem's metadata across every group: each
//! entry points at an inode that exists, link counts match the entries, every
//! inode is reachable from the root, and no transaction is left half done.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::FsClient;
use crate::MetaError;
use crate::types::*;

#[derive(Debug, Default)]
pub struct Report {
    pub directories: u64,
    pub files: u64,
    /// Files in the trash (no links; kept until purged).
    pub trashed: u64,
    /// `parent/name -> ino` entries whose inode does not exist.
    pub dangling: Vec<(Ino, Vec<u8>, Ino)>,
    /// Inodes whose nlink differs from what the entries say: (ino, nlink, expected).
    pub bad_nlink: Vec<(Ino, u32, u32)>,
    /// Inodes no entry reaches.
    pub unreachable: Vec<Ino>,
    /// Directories reached through more than one entry.
    pub multiply_linked_dirs: Vec<Ino>,
    /// Transactions still prepared, per group.
    pub pending_transactions: Vec<(GroupId, u64)>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.dangling.is_empty()
            && self.bad_nlink.is_empty()
            && self.unreachable.is_empty()
            && self.multiply_linked_dirs.is_empty()
            && self.pending_transactions.is_empty()
    }
}

/// Walks the whole tree; meant for a quiet filesystem (a concurrent change can
/// show up as a problem that is not one).
pub async fn check(fs: &FsClient) -> Result<Report, MetaError> {
    let mut report = Report::default();
    let mut links: BTreeMap<Ino, u32> = BTreeMap::new();
    let mut subdirs: BTreeMap<Ino, u32> = BTreeMap::new();
    let mut seen_dirs = BTreeSet::from([ROOT_INO]);
    let mut queue = VecDeque::from([ROOT_INO]);
    while let Some(dir) = queue.pop_front() {
        report.directories += 1;
        let mut after = None;
        loop {
            let page = fs.readdir(dir, after.clone(), 4096).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            for e in page {
                let Some(attr) = e.attr else {
                    report.dangling.push((dir, e.name, e.dentry.ino));
                    continue;
                };
                if attr.kind == FileType::Dir {
                    *subdirs.entry(dir).or_default() += 1;
                    if seen_dirs.insert(attr.ino) {
                        queue.push_back(attr.ino);
                    } else {
                        report.multiply_linked_dirs.push(attr.ino);
                    }
                } else {
                    *links.entry(attr.ino).or_default() += 1;
                }
            }
        }
    }
    for g in fs.groups() {
        let mut after = 0;
        loop {
            let page = fs.list_inodes(g, after).await?;
            let Some(last) = page.last() else { break };
            after = last.ino;
            for inode in page {
                let expected = if inode.kind == FileType::Dir {
                    if !seen_dirs.contains(&inode.ino) {
                        report.unreachable.push(inode.ino);
                        continue;
                    }
                    2 + subdirs.get(&inode.ino).copied().unwrap_or(0)
                } else if inode.nlink == 0 {
                    // In the trash: unreachable on purpose.
                    report.trashed += 1;
                    continue;
                } else {
                    report.files += 1;
                    match links.get(&inode.ino) {
                        Some(&n) => n,
                        None => {
                            report.unreachable.push(inode.ino);
                            continue;
                        }
                    }
                };
                if inode.nlink != expected {
                    report.bad_nlink.push((inode.ino, inode.nlink, expected));
                }
            }
        }
        for i in fs.intents(g).await? {
            report.pending_transactions.push((g, i.tx));
        }
    }
    Ok(report)
}
