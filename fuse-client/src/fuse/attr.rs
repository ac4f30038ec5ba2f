//! Conversions between the core's types and fuser's: attributes, times and
//! file types.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, INodeNo, TimeOrNow};
use strata_meta::{FileType, Inode, Timestamp};

fn to_system_time(t: Timestamp) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        // Before 1970: step back whole seconds, then forward the nanoseconds.
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + Duration::from_nanos(t.nsec as u64)
    }
}

pub(super) fn from_system_time(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            let mut sec = -(d.as_secs() as i64);
            let mut nsec = d.subsec_nanos();
            if nsec > 0 {
                sec -= 1;
                nsec = 1_000_000_000 - nsec;
            }
            Timestamp { sec, nsec }
        }
    }
}

pub(super) fn kind(k: FileType) -> fuser::FileType {
    match k {
        FileType::File => fuser::FileType::RegularFile,
        FileType::Dir => fuser::FileType::Directory,
        FileType::Symlink => fuser::FileType::Symlink,
        FileType::Fifo => fuser::FileType::NamedPipe,
        FileType::Socket => fuser::FileType::Socket,
        FileType::CharDev => fuser::FileType::CharDevice,
        FileType::BlockDev => fuser::FileType::BlockDevice,
    }
}

/// The file type encoded in mknod's mode.
pub fn kind_from_mode(mode: u32) -> Option<FileType> {
    match mode & libc::S_IFMT {
        libc::S_IFREG | 0 => Some(FileType::File),
        libc::S_IFIFO => Some(FileType::Fifo),
        libc::S_IFSOCK => Some(FileType::Socket),
        libc::S_IFCHR => Some(FileType::CharDev),
        libc::S_IFBLK => Some(FileType::BlockDev),
        _ => None,
    }
}

/// The kernel's attributes of `i`, numbered as the kernel sees the mount
/// rooted at `root` (see `swap_root`).
pub fn to_file_attr(i: &Inode, root: strata_meta::Ino) -> FileAttr {
    FileAttr {
        ino: INodeNo(super::swap_root(root, i.ino)),
        size: i.size,
        blocks: i.size.div_ceil(512),
        atime: to_system_time(i.atime),
        mtime: to_system_time(i.mtime),
        ctime: to_system_time(i.ctime),
        crtime: to_system_time(i.ctime),
        kind: kind(i.kind),
        perm: (i.mode & 0o7777) as u16,
        nlink: i.nlink,
        uid: i.uid,
        gid: i.gid,
        rdev: i.rdev,
        blksize: 4096,
        flags: 0,
    }
}

pub(super) fn time_or_now(t: Option<TimeOrNow>) -> Option<Timestamp> {
    t.map(|t| match t {
        TimeOrNow::Now => Timestamp::now(),
        TimeOrNow::SpecificTime(s) => from_system_time(s),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_1970_round_trip() {
        for t in [
            Timestamp { sec: 0, nsec: 0 },
            Timestamp {
                sec: 1_700_000_000,
                nsec: 999_999_999,
            },
            Timestamp { sec: -1, nsec: 500 },
            Timestamp {
                sec: -86_400,
                nsec: 0,
            },
        ] {
            assert_eq!(from_system_time(to_system_time(t)), t);
        }
    }

    #[test]
    fn mknod_modes_decode() {
        assert_eq!(kind_from_mode(libc::S_IFIFO | 0o644), Some(FileType::Fifo));
        assert_eq!(kind_from_mode(libc::S_IFREG | 0o644), Some(FileType::File));
        assert_eq!(kind_from_mode(0o644), Some(FileType::File));
        assert_eq!(kind_from_mode(libc::S_IFCHR), Some(FileType::CharDev));
        assert_eq!(kind_from_mode(libc::S_IFDIR), None);
    }
}
