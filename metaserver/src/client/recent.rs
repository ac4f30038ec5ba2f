//! What this client's own changes and lookups left behind: recent
//! attributes and names, kept for the kernel's caches' time to live.

use std::collections::HashMap;
use std::time::Duration;

use crate::types::*;

/// Inodes as this client's own changes left them. The kernel drops its
/// cached attributes of a directory after every change in it and asks again
/// before the next one (to check permissions), and of a file after every
/// write, so without these a create costs two round trips instead of one and
/// a stat after a close costs one.
#[derive(Default)]
pub(super) struct RecentAttrs {
    map: std::sync::Mutex<HashMap<Ino, (Inode, tokio::time::Instant)>>,
}

/// Entries kept before the oldest are dropped.
const RECENT_ATTRS_MAX: usize = 4096;

impl RecentAttrs {
    pub(super) fn note(&self, inodes: impl IntoIterator<Item = Inode>) {
        let now = tokio::time::Instant::now();
        let mut map = self.map.lock().unwrap();
        for d in inodes {
            if d.nlink == 0 {
                map.remove(&d.ino);
                continue;
            }
            // Answers of concurrent changes may arrive out of order: the
            // later change (by its ctime) wins.
            if map.get(&d.ino).is_some_and(|(old, _)| old.ctime > d.ctime) {
                continue;
            }
            map.insert(d.ino, (d, now));
        }
        if map.len() > RECENT_ATTRS_MAX {
            let mut ages: Vec<tokio::time::Instant> = map.values().map(|(_, at)| *at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            map.retain(|_, (_, at)| *at > cut);
        }
    }

    pub(super) fn forget(&self, ino: Ino) {
        self.map.lock().unwrap().remove(&ino);
    }

    pub(super) fn get(&self, ino: Ino, max_age: Duration) -> Option<(Inode, Duration)> {
        let map = self.map.lock().unwrap();
        let (inode, at) = map.get(&ino)?;
        let age = at.elapsed();
        (age < max_age).then(|| (inode.clone(), max_age - age))
    }
}

/// Names this client looked up, with the inode each named and when it was
/// asked: what the kernel's dentry cache would still hold had it kept them
/// (the kernel drops its cache under memory pressure, or when told to, and
/// asks again). A name this client changes is forgotten before and after
/// the change, and a lookup answered across a change of this client's is
/// not kept (`epoch` moved on meanwhile), so this client never sees its
/// own changes undone; changes by other clients show within the entry TTL,
/// as with the kernel's cache.
#[derive(Default)]
pub(super) struct RecentEntries {
    map: std::sync::Mutex<EntryMap>,
}

#[derive(Default)]
struct EntryMap {
    /// Bumped by every change of a name by this client.
    epoch: u64,
    names: HashMap<(Ino, Vec<u8>), (Ino, tokio::time::Instant)>,
}

/// Names kept before the oldest half is dropped.
const RECENT_ENTRIES_MAX: usize = 16384;

impl RecentEntries {
    pub(super) fn epoch(&self) -> u64 {
        self.map.lock().unwrap().epoch
    }

    /// Keeps `parent/name -> ino` as asked at `asked`, unless a name
    /// changed here since `epoch` was read.
    pub(super) fn note(
        &self,
        epoch: u64,
        parent: Ino,
        name: &[u8],
        ino: Ino,
        asked: tokio::time::Instant,
    ) {
        let mut map = self.map.lock().unwrap();
        if map.epoch != epoch {
            return;
        }
        map.names.insert((parent, name.to_vec()), (ino, asked));
        if map.names.len() > RECENT_ENTRIES_MAX {
            let mut ages: Vec<tokio::time::Instant> =
                map.names.values().map(|(_, at)| *at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            map.names.retain(|_, (_, at)| *at > cut);
        }
    }

    pub(super) fn forget(&self, names: &[(Ino, Vec<u8>)]) {
        let mut map = self.map.lock().unwrap();
        map.epoch += 1;
        for key in names {
            map.names.remove(key);
        }
    }

    /// Forgets `names` now and again when the returned guard goes (the
    /// change is over, however it ended).
    pub(super) fn changing(&self, names: &[(Ino, &[u8])]) -> ForgetOnDrop<'_> {
        let names: Vec<(Ino, Vec<u8>)> = names.iter().map(|(p, n)| (*p, n.to_vec())).collect();
        self.forget(&names);
        ForgetOnDrop {
            entries: self,
            names,
        }
    }

    pub(super) fn get(
        &self,
        parent: Ino,
        name: &[u8],
        max_age: Duration,
    ) -> Option<(Ino, Duration)> {
        let map = self.map.lock().unwrap();
        let (ino, at) = map.names.get(&(parent, name.to_vec()))?;
        let age = at.elapsed();
        (age < max_age).then(|| (*ino, max_age - age))
    }
}

pub(super) struct ForgetOnDrop<'a> {
    entries: &'a RecentEntries,
    names: Vec<(Ino, Vec<u8>)>,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.entries.forget(&self.names);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(ino: Ino, ctime: i64, nlink: u32) -> Inode {
        let mut d = Inode::new(
            ino,
            NewInode::plain(FileType::Dir, 0o755, 0, 0),
            1,
            Timestamp {
                sec: ctime,
                nsec: 0,
            },
        );
        d.nlink = nlink;
        d
    }

    #[tokio::test(start_paused = true)]
    async fn recent_dirs_keep_the_latest_change_for_a_while() {
        let recent = RecentAttrs::default();
        let ttl = Duration::from_secs(1);
        recent.note([dir(5, 20, 2)]);
        // An older answer arriving late does not replace a newer one.
        recent.note([dir(5, 10, 3)]);
        assert_eq!(recent.get(5, ttl).unwrap().0.nlink, 2);
        recent.note([dir(5, 30, 4)]);
        assert_eq!(recent.get(5, ttl).unwrap().0.nlink, 4);
        tokio::time::advance(Duration::from_millis(600)).await;
        let (_, left) = recent.get(5, ttl).unwrap();
        assert_eq!(left, Duration::from_millis(400), "what is left of the ttl");
        tokio::time::advance(Duration::from_millis(400)).await;
        assert!(recent.get(5, ttl).is_none(), "too old");
        // Removed inodes are dropped.
        recent.note([dir(6, 1, 2)]);
        recent.note([dir(6, 2, 0)]);
        assert!(recent.get(6, ttl).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn recent_dirs_stay_bounded() {
        let recent = RecentAttrs::default();
        for ino in 0..(RECENT_ATTRS_MAX as u64 * 3) {
            recent.note([dir(ino + 2, 1, 2)]);
            tokio::time::advance(Duration::from_micros(1)).await;
        }
        let len = recent.map.lock().unwrap().len();
        assert!(len <= RECENT_ATTRS_MAX, "{len} entries");
        let newest = RECENT_ATTRS_MAX as u64 * 3 + 1;
        assert!(recent.get(newest, Duration::from_secs(1)).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn recent_names_last_a_ttl_and_go_with_this_clients_changes() {
        let entries = RecentEntries::default();
        let ttl = Duration::from_secs(1);
        let asked = tokio::time::Instant::now();
        entries.note(entries.epoch(), 1, b"a", 10, asked);
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(
            entries.get(1, b"a", ttl),
            Some((10, Duration::from_millis(700))),
            "counted from when it was asked"
        );
        assert_eq!(entries.get(2, b"a", ttl), None, "another directory");
        tokio::time::advance(Duration::from_millis(700)).await;
        assert_eq!(entries.get(1, b"a", ttl), None, "too old");

        // A change of the name drops it, and a lookup answered while the
        // change ran (its epoch read before) is not kept.
        entries.note(entries.epoch(), 1, b"b", 11, tokio::time::Instant::now());
        let before = entries.epoch();
        let during;
        {
            let _changing = entries.changing(&[(1, b"b"), (1, b"c")]);
            assert_eq!(entries.get(1, b"b", ttl), None);
            entries.note(before, 1, b"b", 11, tokio::time::Instant::now());
            assert_eq!(entries.get(1, b"b", ttl), None);
            // Nor one asked during the change and answered after it.
            during = entries.epoch();
        }
        entries.note(during, 1, b"c", 12, tokio::time::Instant::now());
        assert_eq!(entries.get(1, b"c", ttl), None);
        // A lookup after the change is kept again.
        entries.note(entries.epoch(), 1, b"c", 13, tokio::time::Instant::now());
        assert_eq!(entries.get(1, b"c", ttl).map(|(i, _)| i), Some(13));
    }

    #[tokio::test(start_paused = true)]
    async fn recent_names_stay_bounded() {
        let entries = RecentEntries::default();
        for i in 0..(RECENT_ENTRIES_MAX as u64 * 3) {
            let name = i.to_string();
            entries.note(
                entries.epoch(),
                1,
                name.as_bytes(),
                i + 2,
                tokio::time::Instant::now(),
            );
            tokio::time::advance(Duration::from_micros(1)).await;
        }
        let len = entries.map.lock().unwrap().names.len();
        assert!(len <= RECENT_ENTRIES_MAX, "{len} names");
        let newest = (RECENT_ENTRIES_MAX as u64 * 3 - 1).to_string();
        assert!(
            entries
                .get(1, newest.as_bytes(), Duration::from_secs(1))
                .is_some()
        );
    }
}
