//! File locks for the kernel (fcntl F_GETLK/F_SETLK/F_SETLKW and flock),
//! kept by the metaserver so they hold across clients (see
//! `strata_meta::server::ops::locks`). Each lock carries a lease this client
//! renews while it runs; if it dies its locks lapse within
//! `FsConfig::lock_lease`.
//! A blocked F_SETLKW polls with growing pauses and gives up (EINTR) when
//! its owner closes the file.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use strata_meta::{FileLock, Ino, LockKind, MetaError, Timestamp};

use crate::error::{FsError, FsResult};
use crate::fs::Filesystem;

/// Locks this client holds or waits for, by inode and owner.
#[derive(Default)]
pub(crate) struct HeldLocks {
    held: std::sync::Mutex<HashMap<Ino, HashSet<u64>>>,
    /// Bumped when an owner lets go of a file, waking its blocked waits.
    released: std::sync::Mutex<HashMap<(Ino, u64), u64>>,
}

fn after(d: Duration) -> Timestamp {
    let now = Timestamp::now();
    let nanos = now.nsec as u64 + d.subsec_nanos() as u64;
    Timestamp {
        sec: now.sec + d.as_secs() as i64 + (nanos / 1_000_000_000) as i64,
        nsec: (nanos % 1_000_000_000) as u32,
    }
}

fn kind_of(typ: i32) -> FsResult<LockKind> {
    match typ {
        libc::F_RDLCK => Ok(LockKind::Read),
        libc::F_WRLCK => Ok(LockKind::Write),
        libc::F_UNLCK => Ok(LockKind::Unlock),
        _ => Err(FsError::new(libc::EINVAL, format!("lock type {typ}"))),
    }
}

/// A lock as the kernel describes one: asked for by F_GETLK, F_SETLK or
/// flock, or reported by F_GETLK as the one in the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeLock {
    /// First byte of the range.
    pub start: u64,
    /// Last byte of the range (inclusive).
    pub end: u64,
    /// F_RDLCK, F_WRLCK or F_UNLCK.
    pub typ: i32,
    /// The process that holds or asks for it.
    pub pid: u32,
}

impl Filesystem {
    fn lock_request(&self, owner: u64, lock: RangeLock) -> FsResult<FileLock> {
        let RangeLock {
            start,
            end,
            typ,
            pid,
        } = lock;
        if start > end {
            return Err(FsError::new(
                libc::EINVAL,
                "lock range ends before it starts",
            ));
        }
        Ok(FileLock {
            client: self.meta.meta().client_id(),
            owner,
            pid,
            kind: kind_of(typ)?,
            start,
            end,
            expires: after(self.config.lock_lease),
        })
    }

    /// F_GETLK: the lock in the way of the one described, or F_UNLCK.
    pub async fn getlk(&self, ino: Ino, owner: u64, lock: RangeLock) -> FsResult<RangeLock> {
        let request = self.lock_request(owner, lock)?;
        Ok(match self.meta.get_lock(ino, request).await? {
            Some(l) => RangeLock {
                start: l.start,
                end: l.end,
                typ: if l.kind == LockKind::Write {
                    libc::F_WRLCK
                } else {
                    libc::F_RDLCK
                },
                pid: l.pid,
            },
            None => RangeLock {
                typ: libc::F_UNLCK,
                pid: 0,
                ..lock
            },
        })
    }

    /// F_SETLK (`sleep` false: EAGAIN when in the way) and F_SETLKW.
    pub async fn setlk(&self, ino: Ino, owner: u64, lock: RangeLock, sleep: bool) -> FsResult<()> {
        let mut lock = self.lock_request(owner, lock)?;
        if lock.kind != LockKind::Unlock {
            self.locks
                .held
                .lock()
                .unwrap()
                .entry(ino)
                .or_default()
                .insert(owner);
        }
        let generation = self.release_generation(ino, owner);
        let mut pause = Duration::from_millis(5);
        loop {
            match self.meta.set_lock(ino, lock).await {
                Ok(()) => return Ok(()),
                Err(MetaError::WouldBlock) if sleep => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                    if self.release_generation(ino, owner) != generation {
                        return Err(FsError::new(
                            libc::EINTR,
                            "the file was closed while waiting for the lock",
                        ));
                    }
                    lock.expires = after(self.config.lock_lease);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether lock owner `owner` of this client may hold locks on `ino`.
    pub(crate) fn holds_locks(&self, ino: Ino, owner: u64) -> bool {
        self.locks
            .held
            .lock()
            .unwrap()
            .get(&ino)
            .is_some_and(|o| o.contains(&owner))
    }

    fn release_generation(&self, ino: Ino, owner: u64) -> u64 {
        *self
            .locks
            .released
            .lock()
            .unwrap()
            .get(&(ino, owner))
            .unwrap_or(&0)
    }

    /// The kernel's lock owner `owner` let go of `ino` (close, or the last
    /// close of an flock): its locks on it go, and its waits end.
    pub(crate) async fn release_locks(&self, ino: Ino, owner: u64) -> FsResult<()> {
        let holds = {
            let mut held = self.locks.held.lock().unwrap();
            let holds = held.get_mut(&ino).is_some_and(|o| o.remove(&owner));
            if held.get(&ino).is_some_and(|o| o.is_empty()) {
                held.remove(&ino);
            }
            holds
        };
        if !holds {
            return Ok(());
        }
        *self
            .locks
            .released
            .lock()
            .unwrap()
            .entry((ino, owner))
            .or_default() += 1;
        self.meta.release_locks(ino, Some(owner)).await?;
        Ok(())
    }

    /// Renews the leases of the locks this client holds.
    pub(crate) async fn renew_locks(&self) {
        let inos: Vec<Ino> = self.locks.held.lock().unwrap().keys().copied().collect();
        if inos.is_empty() {
            return;
        }
        if let Err(e) = self
            .meta
            .renew_locks(&inos, after(self.config.lock_lease))
            .await
        {
            tracing::warn!(error = %e, "renewing file locks failed; they lapse if this goes on");
        }
    }

    /// Drops every lock this client holds (unmount).
    pub async fn release_all_locks(&self) {
        let inos: Vec<Ino> = self
            .locks
            .held
            .lock()
            .unwrap()
            .drain()
            .map(|(ino, _)| ino)
            .collect();
        for ino in inos {
            if let Err(e) = self.meta.release_locks(ino, None).await {
                tracing::warn!(ino, error = %e, "releasing file locks failed; they lapse by themselves");
            }
        }
    }
}
