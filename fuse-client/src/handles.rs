//! The handles this client gave out: for each file handle, the inode and how
//! it was opened; for each directory handle, where its listing stands; for
//! each inode with a file handle open, its `OpenFile` (shared by its
//! handles) and whether this client holds it out of the trash purge.
//! Opening or closing a handle is one insert or remove under one lock, so
//! an inode's state goes with its last handle.
//!
//! Locks are not here: the kernel's lock owners are processes (POSIX locks)
//! or open file descriptions (flock), not handles, and a close drops an
//! owner's locks on the inode whichever handle took them (`locks.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use strata_meta::{Ino, Inode};

use crate::file::OpenFile;

/// How a file handle was opened, as far as its reads and writes care.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HandleFlags {
    /// Opened with O_APPEND: its writes go where the metaserver says the
    /// file ends, whatever offset the kernel computed.
    pub append: bool,
    /// Its reads and writes bypass the kernel's page cache
    /// (`bypasses_page_cache`): what it writes is not in its cached pages.
    pub direct: bool,
    /// Opened for writing (its close reports dropped writes).
    pub writes: bool,
}

impl HandleFlags {
    /// The flags of a handle opened with open(2) `flags`.
    pub fn from_open(flags: i32) -> HandleFlags {
        HandleFlags {
            append: flags & libc::O_APPEND != 0,
            direct: crate::fs::bypasses_page_cache(flags),
            writes: flags & libc::O_ACCMODE != libc::O_RDONLY,
        }
    }
}

/// One file handle.
struct FileHandle {
    ino: Ino,
    flags: HandleFlags,
    /// Its file's count of dropped writes when it was opened
    /// (`DroppedWrites`): drops after that are this handle's to report.
    opened: u64,
    /// The count its last fsync reported up to.
    synced: u64,
}

/// An inode with at least one file handle open here.
struct OpenInode {
    file: Arc<OpenFile>,
    handles: usize,
    /// Its last link went while it was open here: this client holds it out
    /// of the trash purge until its last handle closes.
    held: bool,
}

/// One directory handle.
pub(crate) struct DirHandle {
    pub ino: Ino,
    /// Cookies handed out in the last page, so a continuation resumes at the right name.
    pub last_page: Vec<(u64, Vec<u8>)>,
}

/// The last handle of an inode closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LastClose {
    pub ino: Ino,
    /// The inode was held (see `OpenInode::held`): the hold can go now.
    pub held: bool,
}

#[derive(Default)]
struct Tables {
    files: HashMap<u64, FileHandle>,
    inodes: HashMap<Ino, OpenInode>,
    dirs: HashMap<u64, DirHandle>,
}

/// Every handle this client has open (see the module comment).
pub(crate) struct HandleTable {
    tables: std::sync::Mutex<Tables>,
    /// File and directory handles share one numbering.
    next_fh: AtomicU64,
}

impl Default for HandleTable {
    fn default() -> Self {
        HandleTable {
            tables: Default::default(),
            next_fh: AtomicU64::new(1),
        }
    }
}

impl HandleTable {
    fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// Opens a file handle on `inode` with open(2) `flags`. The first handle
    /// of an inode starts its `OpenFile` from the attributes just read,
    /// which is what gives close-to-open consistency.
    pub fn open_file(&self, inode: Inode, flags: i32) -> u64 {
        let fh = self.new_fh();
        let ino = inode.ino;
        let mut t = self.tables.lock().unwrap();
        let open = t.inodes.entry(ino).or_insert_with(|| OpenInode {
            file: Arc::new(OpenFile::new(inode)),
            handles: 0,
            held: false,
        });
        open.handles += 1;
        let dropped = open.file.dropped.count();
        let flags = HandleFlags::from_open(flags);
        t.files.insert(
            fh,
            FileHandle {
                ino,
                flags,
                opened: dropped,
                synced: dropped,
            },
        );
        fh
    }

    /// The refusal of writes to its file dropped since handle `fh` was
    /// opened, if it writes: what its close must report, every time (a
    /// forked child's close of the same descriptor may come first).
    pub fn dropped_since_open(&self, fh: u64) -> Option<crate::error::FsError> {
        let t = self.tables.lock().unwrap();
        let h = t.files.get(&fh).filter(|h| h.flags.writes)?;
        t.inodes.get(&h.ino)?.file.dropped.since(h.opened)
    }

    /// The refusal of writes to its file dropped since handle `fh`'s last
    /// fsync (or its open); each drop is reported to one fsync per handle.
    pub fn dropped_since_fsync(&self, fh: u64) -> Option<crate::error::FsError> {
        let mut t = self.tables.lock().unwrap();
        let t = &mut *t;
        let h = t.files.get_mut(&fh)?;
        let dropped = &t.inodes.get(&h.ino)?.file.dropped;
        let e = dropped.since(h.synced);
        h.synced = dropped.count();
        e
    }

    /// Closes file handle `fh`; says so when it was its inode's last one,
    /// whose `OpenFile` goes with it. An unknown handle closes nothing.
    pub fn close_file(&self, fh: u64) -> Option<LastClose> {
        let mut t = self.tables.lock().unwrap();
        let ino = t.files.remove(&fh)?.ino;
        let open = t.inodes.get_mut(&ino)?;
        open.handles -= 1;
        if open.handles > 0 {
            return None;
        }
        let held = t.inodes.remove(&ino).is_some_and(|o| o.held);
        Some(LastClose { ino, held })
    }

    /// Closes file handle `fh` unless its inode is held (then closing it
    /// may take a round trip to let the hold go); returns whether it closed.
    pub fn close_file_unless_held(&self, fh: u64) -> bool {
        let held = {
            let t = self.tables.lock().unwrap();
            t.files
                .get(&fh)
                .and_then(|h| t.inodes.get(&h.ino))
                .is_some_and(|o| o.held)
        };
        if held {
            return false;
        }
        self.close_file(fh);
        true
    }

    /// How handle `fh` was opened (an unknown handle: plainly).
    pub fn flags(&self, fh: u64) -> HandleFlags {
        let t = self.tables.lock().unwrap();
        t.files.get(&fh).map(|h| h.flags).unwrap_or_default()
    }

    /// The state of `ino` shared by its open handles, if it has any.
    pub fn file(&self, ino: Ino) -> Option<Arc<OpenFile>> {
        let t = self.tables.lock().unwrap();
        t.inodes.get(&ino).map(|o| o.file.clone())
    }

    /// Whether `ino` has a file handle open.
    pub fn is_open(&self, ino: Ino) -> bool {
        self.tables.lock().unwrap().inodes.contains_key(&ino)
    }

    /// Whether no file handle is open at all.
    pub fn no_open_files(&self) -> bool {
        self.tables.lock().unwrap().inodes.is_empty()
    }

    /// Every inode with a file handle open, with its state.
    pub fn open_files(&self) -> Vec<(Ino, Arc<OpenFile>)> {
        let t = self.tables.lock().unwrap();
        t.inodes.iter().map(|(k, o)| (*k, o.file.clone())).collect()
    }

    /// Marks `ino` held until its last handle closes; false (and nothing
    /// marked) if it has no handle open any more.
    pub fn hold(&self, ino: Ino) -> bool {
        let mut t = self.tables.lock().unwrap();
        t.inodes.get_mut(&ino).map(|o| o.held = true).is_some()
    }

    /// The inodes held (see `hold`).
    pub fn held(&self) -> Vec<Ino> {
        let t = self.tables.lock().unwrap();
        t.inodes
            .iter()
            .filter(|(_, o)| o.held)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Opens a directory handle on `ino`.
    pub fn open_dir(&self, ino: Ino) -> u64 {
        let fh = self.new_fh();
        let dir = DirHandle {
            ino,
            last_page: Vec::new(),
        };
        self.tables.lock().unwrap().dirs.insert(fh, dir);
        fh
    }

    /// Runs `f` on directory handle `fh`, if it is open.
    pub fn with_dir<R>(&self, fh: u64, f: impl FnOnce(&mut DirHandle) -> R) -> Option<R> {
        self.tables.lock().unwrap().dirs.get_mut(&fh).map(f)
    }

    pub fn close_dir(&self, fh: u64) {
        self.tables.lock().unwrap().dirs.remove(&fh);
    }
}

#[cfg(test)]
mod tests {
    use strata_meta::FileType;

    use super::*;

    fn inode(ino: Ino) -> Inode {
        Inode {
            ino,
            kind: FileType::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            nlink: 1,
            size: 0,
            atime: Default::default(),
            mtime: Default::default(),
            ctime: Default::default(),
            rdev: 0,
            symlink: None,
            generation: 0,
            flags: 0,
            parent: 0,
        }
    }

    #[test]
    fn an_inode_is_open_while_any_handle_is() {
        let t = HandleTable::default();
        let a = t.open_file(inode(7), libc::O_RDONLY);
        let b = t.open_file(inode(7), libc::O_RDWR);
        assert_ne!(a, b);
        assert!(Arc::ptr_eq(&t.file(7).unwrap(), &t.file(7).unwrap()));
        assert_eq!(t.open_files().len(), 1);
        assert_eq!(t.close_file(a), None);
        assert!(t.is_open(7));
        assert_eq!(
            t.close_file(b),
            Some(LastClose {
                ino: 7,
                held: false
            })
        );
        assert!(!t.is_open(7) && t.file(7).is_none() && t.no_open_files());
        // Closed twice (or never opened): nothing happens.
        assert_eq!(t.close_file(b), None);
        assert_eq!(t.close_file(12345), None);
    }

    #[test]
    fn handles_keep_their_open_flags() {
        let t = HandleTable::default();
        let plain = t.open_file(inode(1), libc::O_RDWR);
        let append = t.open_file(inode(1), libc::O_WRONLY | libc::O_APPEND);
        let direct = t.open_file(inode(2), libc::O_RDONLY | libc::O_DIRECT);
        let writes = HandleFlags {
            writes: true,
            ..HandleFlags::default()
        };
        assert_eq!(t.flags(plain), writes);
        // O_APPEND also bypasses the page cache (see `bypasses_page_cache`).
        let both = HandleFlags {
            append: true,
            direct: true,
            writes: true,
        };
        assert_eq!(t.flags(append), both);
        let direct_only = HandleFlags {
            append: false,
            direct: true,
            writes: false,
        };
        assert_eq!(t.flags(direct), direct_only);
        t.close_file(append);
        assert_eq!(t.flags(append), HandleFlags::default());
        assert_eq!(t.flags(plain), writes);
    }

    /// A drop is reported to one fsync per handle open when it happened,
    /// to every close of those of them that write, and to no handle
    /// opened after it (decision 63).
    #[test]
    fn dropped_writes_reach_every_handle_open_when_they_were_dropped() {
        let t = HandleTable::default();
        let writer = t.open_file(inode(5), libc::O_WRONLY);
        let reader = t.open_file(inode(5), libc::O_RDONLY);
        assert!(t.dropped_since_fsync(writer).is_none());
        assert!(t.dropped_since_open(writer).is_none());
        let refused = crate::error::FsError::new(libc::EDQUOT, "full");
        t.file(5).unwrap().dropped.record(&refused);
        let later = t.open_file(inode(5), libc::O_RDWR);

        assert_eq!(t.dropped_since_fsync(writer).unwrap().errno, libc::EDQUOT);
        assert!(t.dropped_since_fsync(writer).is_none(), "once per fsync");
        for _ in 0..2 {
            let e = t.dropped_since_open(writer).expect("every close");
            assert_eq!(e.errno, libc::EDQUOT);
        }
        assert!(t.dropped_since_fsync(reader).is_some());
        assert!(t.dropped_since_open(reader).is_none(), "a reader's close");
        assert!(t.dropped_since_fsync(later).is_none());
        assert!(t.dropped_since_open(later).is_none());
    }

    #[test]
    fn a_hold_lasts_until_the_last_close() {
        let t = HandleTable::default();
        assert!(!t.hold(3), "nothing to hold while not open");
        let a = t.open_file(inode(3), libc::O_RDONLY);
        let b = t.open_file(inode(3), libc::O_RDONLY);
        assert!(t.hold(3));
        assert_eq!(t.held(), vec![3]);
        assert!(!t.close_file_unless_held(a), "held: the slow close");
        assert_eq!(t.close_file(a), None);
        assert_eq!(t.close_file(b), Some(LastClose { ino: 3, held: true }));
        assert!(t.held().is_empty());
        let c = t.open_file(inode(3), libc::O_RDONLY);
        assert!(t.held().is_empty(), "a new open starts unheld");
        assert!(t.close_file_unless_held(c));
        assert!(t.no_open_files());
    }

    #[test]
    fn directory_handles_remember_their_last_page() {
        let t = HandleTable::default();
        let d = t.open_dir(9);
        let f = t.open_file(inode(9), libc::O_RDONLY);
        assert_ne!(d, f);
        t.with_dir(d, |h| h.last_page = vec![(3, b"a".to_vec())]);
        let ino_and_page = t.with_dir(d, |h| (h.ino, h.last_page.clone()));
        assert_eq!(ino_and_page, Some((9, vec![(3, b"a".to_vec())])));
        assert_eq!(t.with_dir(f, |_| ()), None, "a file handle is no directory");
        t.close_dir(d);
        assert_eq!(t.with_dir(d, |_| ()), None);
        assert!(t.is_open(9));
    }
}
