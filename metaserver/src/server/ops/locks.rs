//! File locks, kept in the inode's group so every client sees the same ones:
//! POSIX byte-range locks (fcntl) and BSD flock (a lock over the whole file).
//! A lock belongs to one lock owner of one client and carries a lease the
//! client renews while it runs; a lock whose lease ran out (its client died)
//! no longer conflicts with anything and is dropped at the next change.

use crate::MetaError;
use crate::request::{MetaResponse, MetaResult};
use crate::server::ops::{Ctx, tri};
use crate::server::store::{DbError, Rows, RowsMut, key};
use crate::types::*;

/// Locks one inode may carry (a cap, so a client cannot grow a row forever).
pub const MAX_LOCKS_PER_INODE: usize = 10_000;

fn live<T: Rows>(
    t: &T,
    g: GroupId,
    fs: FsId,
    ino: Ino,
    now: Timestamp,
) -> Result<Vec<FileLock>, DbError> {
    let mut locks: Vec<FileLock> = t.load(&key::locks(g, fs, ino))?.unwrap_or_default();
    locks.retain(|l| l.expires > now);
    Ok(locks)
}

/// Answers `GetLock`.
pub(crate) fn get<T: Rows>(
    t: &T,
    g: GroupId,
    fs: FsId,
    ino: Ino,
    lock: FileLock,
    now: Timestamp,
) -> Result<MetaResult, DbError> {
    if t.load_raw(&key::inode(g, fs, ino))?.is_none() {
        return Ok(Err(MetaError::NotFound));
    }
    let held = live(t, g, fs, ino, now)?;
    Ok(Ok(MetaResponse::Lock(
        held.into_iter().find(|h| lock.conflicts_with(h)),
    )))
}

/// `locks` with `new` applied for its owner: the owner's ranges overlapping
/// it are cut away, then `new` (unless an unlock) is added. POSIX semantics:
/// a lock replaces (or converts) what its owner held over the same bytes.
fn apply(locks: Vec<FileLock>, new: FileLock) -> Vec<FileLock> {
    let mut out = Vec::with_capacity(locks.len() + 2);
    for l in locks {
        if !l.same_owner(&new) || !l.overlaps(&new) {
            out.push(l);
            continue;
        }
        if l.start < new.start {
            out.push(FileLock {
                end: new.start - 1,
                ..l
            });
        }
        if l.end > new.end {
            out.push(FileLock {
                start: new.end + 1,
                ..l
            });
        }
    }
    if new.kind != LockKind::Unlock {
        out.push(new);
    }
    out
}

impl<T: RowsMut> Ctx<'_, T> {
    fn save_locks(&mut self, fs: FsId, ino: Ino, locks: &[FileLock]) -> Result<(), DbError> {
        let k = key::locks(self.g, fs, ino);
        if locks.is_empty() {
            self.t.del(&k)
        } else {
            self.t.put(&k, &locks)
        }
    }

    pub(crate) fn set_lock(
        &mut self,
        fs: FsId,
        ino: Ino,
        lock: FileLock,
        now: Timestamp,
    ) -> Result<MetaResult, DbError> {
        if lock.start > lock.end {
            return Ok(Err(MetaError::Invalid(format!(
                "lock range {}..={} is empty",
                lock.start, lock.end
            ))));
        }
        tri!(self.inode(fs, ino)?);
        let held = live(&*self.t, self.g, fs, ino, now)?;
        if lock.kind != LockKind::Unlock && held.iter().any(|h| lock.conflicts_with(h)) {
            return Ok(Err(MetaError::WouldBlock));
        }
        let locks = apply(held, lock);
        if locks.len() > MAX_LOCKS_PER_INODE {
            return Ok(Err(MetaError::NoSpace(format!(
                "more than {MAX_LOCKS_PER_INODE} locks on one file"
            ))));
        }
        self.save_locks(fs, ino, &locks)?;
        Ok(Ok(MetaResponse::Ok))
    }

    pub(crate) fn release_locks(
        &mut self,
        fs: FsId,
        ino: Ino,
        client: u64,
        owner: Option<u64>,
    ) -> Result<MetaResult, DbError> {
        let mut locks: Vec<FileLock> = self
            .t
            .load(&key::locks(self.g, fs, ino))?
            .unwrap_or_default();
        locks.retain(|l| l.client != client || owner.is_some_and(|o| o != l.owner));
        self.save_locks(fs, ino, &locks)?;
        Ok(Ok(MetaResponse::Ok))
    }

    pub(crate) fn renew_locks(
        &mut self,
        fs: FsId,
        client: u64,
        inos: &[Ino],
        until: Timestamp,
    ) -> Result<MetaResult, DbError> {
        for &ino in inos {
            let k = key::locks(self.g, fs, ino);
            let Some(mut locks) = self.t.load::<Vec<FileLock>>(&k)? else {
                continue;
            };
            for l in locks.iter_mut().filter(|l| l.client == client) {
                l.expires = l.expires.max(until);
            }
            self.t.put(&k, &locks)?;
        }
        Ok(Ok(MetaResponse::Ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(owner: u64, kind: LockKind, start: u64, end: u64) -> FileLock {
        FileLock {
            client: 1,
            owner,
            pid: owner as u32,
            kind,
            start,
            end,
            expires: Timestamp { sec: 100, nsec: 0 },
        }
    }

    #[test]
    fn a_lock_cuts_and_replaces_its_owners_ranges() {
        use LockKind::*;
        let held = vec![lock(1, Read, 0, 99), lock(2, Read, 0, 99)];
        // Owner 1 write-locks the middle: its read lock splits around it.
        let after = apply(held, lock(1, Write, 40, 59));
        assert_eq!(
            after,
            vec![
                lock(1, Read, 0, 39),
                lock(1, Read, 60, 99),
                lock(2, Read, 0, 99),
                lock(1, Write, 40, 59),
            ]
        );
        // Unlocking a range that covers one piece and cuts two others.
        let after = apply(after, lock(1, Unlock, 30, 69));
        assert_eq!(
            after,
            vec![
                lock(1, Read, 0, 29),
                lock(1, Read, 70, 99),
                lock(2, Read, 0, 99)
            ]
        );
    }

    #[test]
    fn only_other_owners_writes_or_write_requests_conflict() {
        use LockKind::*;
        assert!(!lock(1, Read, 0, 9).conflicts_with(&lock(2, Read, 5, 15)));
        assert!(lock(1, Write, 0, 9).conflicts_with(&lock(2, Read, 5, 15)));
        assert!(lock(1, Read, 0, 9).conflicts_with(&lock(2, Write, 9, 9)));
        assert!(!lock(1, Write, 0, 9).conflicts_with(&lock(2, Write, 10, 20)));
        assert!(!lock(1, Write, 0, 9).conflicts_with(&lock(1, Write, 0, 9)));
        let other_client = FileLock {
            client: 2,
            ..lock(1, Write, 0, 9)
        };
        assert!(lock(1, Read, 0, 0).conflicts_with(&other_client));
    }
}
