//! Quotas seen from the writer's side. The metaserver checks every commit
//! against the quotas above the file (decision 58), but a commit comes at
//! fsync or close, long after write(2) said yes. So a write that grows a
//! file is first checked here against what this client last heard of
//! those quotas (at most `FRESH` old): a writer that runs into a quota gets
//! EDQUOT from write(2), as on a local disk, and only a write racing other
//! clients (or this client's other growing files) within that window
//! learns it at fsync or close.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_meta::{GroupId, Ino, Quota};
use tokio::time::Instant;

use crate::error::{FsError, FsResult};
use crate::file::FileData;
use crate::fs::Filesystem;

/// How long the quotas above a directory are taken as they were read.
const FRESH: Duration = Duration::from_secs(1);
/// Directories whose quotas are remembered; beyond it the memory starts over.
const MAX_DIRS: usize = 4096;

/// The quotas at and above one directory, nearest first.
type Above = Arc<Vec<(Ino, Quota)>>;

/// The quotas above directories this client writes in, as last read.
#[derive(Default)]
pub(crate) struct QuotaView {
    dirs: Mutex<HashMap<Ino, (Instant, Above)>>,
    /// Whether each group holds any quota of the filesystem: most hold
    /// none, and then no directory there needs its own read.
    groups: Mutex<HashMap<GroupId, (Instant, bool)>>,
    /// Whether no quota of any kind counts creates in each group (then a
    /// create may wait for its file's first commit: decision 71).
    uncounted: Mutex<HashMap<GroupId, (Instant, bool)>>,
}

impl QuotaView {
    fn group_known(&self, g: GroupId) -> Option<bool> {
        let groups = self.groups.lock().unwrap();
        groups
            .get(&g)
            .filter(|(at, _)| at.elapsed() < FRESH)
            .map(|(_, any)| *any)
    }

    fn fresh(&self, dir: Ino) -> Option<Above> {
        let dirs = self.dirs.lock().unwrap();
        dirs.get(&dir)
            .filter(|(at, _)| at.elapsed() < FRESH)
            .map(|(_, q)| q.clone())
    }

    fn remember(&self, dir: Ino, quotas: Above) {
        let mut dirs = self.dirs.lock().unwrap();
        if dirs.len() >= MAX_DIRS {
            dirs.clear();
        }
        dirs.insert(dir, (Instant::now(), quotas));
    }

    /// Forgets what was read about `dir` (after a commit it refused).
    pub(crate) fn forget(&self, dir: Ino) {
        self.dirs.lock().unwrap().remove(&dir);
        self.groups.lock().unwrap().clear();
        self.uncounted.lock().unwrap().clear();
    }
}

impl Filesystem {
    /// Whether no quota counts what is created in group `g`, as read less
    /// than `FRESH` ago. A client confined to a subtree may not read the
    /// groups' quotas: for it, some may.
    pub(crate) async fn creates_uncounted(&self, g: GroupId) -> FsResult<bool> {
        if self.meta.confined() {
            return Ok(false);
        }
        let known = {
            let seen = self.quotas.uncounted.lock().unwrap();
            seen.get(&g)
                .filter(|(at, _)| at.elapsed() < FRESH)
                .map(|(_, free)| *free)
        };
        if let Some(free) = known {
            return Ok(free);
        }
        let free = self.meta.counts_no_quota(g).await?;
        self.quotas
            .uncounted
            .lock()
            .unwrap()
            .insert(g, (Instant::now(), free));
        Ok(free)
    }

    /// Refuses with EDQUOT a write that would make `d`'s file end at `end`
    /// if its growth not committed yet would take a byte quota above it
    /// over its limit. A refusal is decided on a fresh read: what was
    /// remembered may predate deletes that made room.
    pub(crate) async fn check_quota_room(&self, d: &FileData, end: u64) -> FsResult<()> {
        let committed = d.attr.size;
        if end <= committed || end <= d.pending_end {
            return Ok(());
        }
        let growth = end - committed;
        let dir = d.attr.parent;
        let g = self.meta.group_of(dir).await?;
        let any = match self.quotas.group_known(g) {
            Some(any) => any,
            // A client confined to a subtree may not list a group's
            // quotas (they name directories outside it): it asks per
            // directory.
            None if self.meta.confined() => true,
            None => {
                let any = !self.meta.group_quotas(g).await?.is_empty();
                self.quotas
                    .groups
                    .lock()
                    .unwrap()
                    .insert(g, (Instant::now(), any));
                any
            }
        };
        if !any {
            return Ok(());
        }
        if let Some(known) = self.quotas.fresh(dir)
            && room_for(&known, growth).is_ok()
        {
            return Ok(());
        }
        let now = Arc::new(self.meta.quotas_above(dir).await?);
        self.quotas.remember(dir, now.clone());
        room_for(&now, growth)
    }
}

/// Whether every byte quota in `quotas` has room for `growth` more bytes.
fn room_for(quotas: &[(Ino, Quota)], growth: u64) -> FsResult<()> {
    for (dir, q) in quotas {
        if let Some(max) = q.max_bytes
            && q.used.bytes.saturating_add(growth) > max
        {
            return Err(FsError::new(
                libc::EDQUOT,
                format!(
                    "directory {dir} holds {} of its {max} bytes; writing {growth} more",
                    q.used.bytes
                ),
            ));
        }
    }
    Ok(())
}
