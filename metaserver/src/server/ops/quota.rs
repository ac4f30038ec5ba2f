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
use crate::request::{MetaResponse, MetaResult};
use crate::server::ops::{Ctx, OpResult, tri};
use crate::server::store::{DbError, Rows, RowsMut, key};
use crate::types::*;

/// How deep a walk up the tree goes before it takes the chain for broken:
/// deeper than any path the kernel can name (PATH_MAX / 2).
const MAX_DEPTH: usize = 2048;

/// What one change adds below `dir` (negative: frees).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Charge {
    pub dir: Ino,
    pub inodes: i64,
    pub bytes: i64,
}

impl Charge {
    pub(crate) fn new(dir: Ino, inodes: i64, bytes: i64) -> Charge {
        Charge { dir, inodes, bytes }
    }
}

/// What a file or directory leaving the tree frees: itself, and a regular
/// file's bytes.
pub(crate) fn uncharge(inode: &Inode) -> Charge {
    let bytes = if inode.kind == FileType::File {
        inode.size as i64
    } else {
        0
    };
    Charge::new(inode.parent, -1, -bytes)
}

/// A regular file's size going to `size`: what its quotas gain (nothing for
/// a file in the trash, which they no longer count).
pub(crate) fn file_growth(inode: &Inode, size: u64) -> Vec<Charge> {
    if inode.nlink == 0 || inode.kind != FileType::File {
        return Vec::new();
    }
    vec![Charge::new(
        inode.parent,
        0,
        size as i64 - inode.size as i64,
    )]
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

impl<T: RowsMut> Ctx<'_, T> {
    /// Applies `charges` to every quota above their directories, or, if
    /// any quota would go over its limit, changes nothing and says which.
    /// Freeing never fails.
    pub(crate) fn charge(&mut self, fs: FsId, charges: &[Charge]) -> OpResult<()> {
        let mut net: BTreeMap<Ino, (Quota, i64, i64)> = BTreeMap::new();
        for c in charges.iter().filter(|c| (c.inodes, c.bytes) != (0, 0)) {
            for (dir, q) in quotas_above(&*self.t, self.g, fs, c.dir)? {
                let e = net.entry(dir).or_insert((q, 0, 0));
                e.1 += c.inodes;
                e.2 += c.bytes;
            }
        }
        for (dir, (q, inodes, bytes)) in &net {
            let over = |max: Option<u64>, used: u64, add: i64| {
                add > 0 && max.is_some_and(|m| used.saturating_add(add as u64) > m)
            };
            if over(q.max_inodes, q.used.inodes, *inodes) {
                return Ok(Err(MetaError::QuotaExceeded(format!(
                    "directory {dir} holds {} of its {} inodes",
                    q.used.inodes,
                    q.max_inodes.unwrap_or_default()
                ))));
            }
            if over(q.max_bytes, q.used.bytes, *bytes) {
                return Ok(Err(MetaError::QuotaExceeded(format!(
                    "directory {dir} holds {} of its {} bytes; {bytes} more asked",
                    q.used.bytes,
                    q.max_bytes.unwrap_or_default()
                ))));
            }
        }
        for (dir, (mut q, inodes, bytes)) in net {
            q.used.inodes = q.used.inodes.saturating_add_signed(inodes);
            q.used.bytes = q.used.bytes.saturating_add_signed(bytes);
            self.t.put(&key::quota(self.g, fs, dir), &q)?;
        }
        Ok(Ok(()))
    }

    /// Frees what `charges` name (all of them zero or negative).
    pub(crate) fn release(&mut self, fs: FsId, charges: &[Charge]) -> Result<(), DbError> {
        debug_assert!(charges.iter().all(|c| c.inodes <= 0 && c.bytes <= 0));
        match self.charge(fs, charges)? {
            Ok(()) => Ok(()),
            Err(e) => Err(DbError::Corrupt(format!("freeing quota usage failed: {e}"))),
        }
    }

    /// Whether `a` and `b` lie below the same quotas (so what moves between
    /// them needs no charge).
    pub(crate) fn same_quotas(&self, fs: FsId, a: Ino, b: Ino) -> Result<bool, DbError> {
        if a == b {
            return Ok(true);
        }
        let dirs = |d| -> Result<Vec<Ino>, DbError> {
            Ok(quotas_above(&*self.t, self.g, fs, d)?
                .into_iter()
                .map(|(i, _)| i)
                .collect())
        };
        Ok(dirs(a)? == dirs(b)?)
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
        Ok(Ok(vec![
            Charge::new(from, -inodes, -bytes),
            Charge::new(to, inodes, bytes),
        ]))
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
