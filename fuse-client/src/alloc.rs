//! fallocate and copy_file_range. Blocks are allocated on first write, so
//! fallocate only changes the size or punches holes (hole slices that read
//! as zeros); copy_file_range reads and writes through this client.

use strata_meta::{Ino, SetAttr, Timestamp};

use crate::error::{FsError, FsResult};
use crate::fs::Filesystem;

/// fallocate(2) mode bits Strata understands.
const KEEP_SIZE: i32 = 0x01;
const PUNCH_HOLE: i32 = 0x02;
const ZERO_RANGE: i32 = 0x10;
/// Bytes copied per read and write of copy_file_range.
const COPY_PIECE: u32 = 4 << 20;

/// A place in an open file: one end of a copy_file_range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilePos {
    pub ino: Ino,
    /// The handle it is open with.
    pub fh: u64,
    pub offset: u64,
}

impl Filesystem {
    pub async fn fallocate(
        &self,
        ino: Ino,
        _fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> FsResult<()> {
        if self.config.read_only {
            return Err(FsError::new(libc::EROFS, "mounted read-only"));
        }
        if length == 0 {
            return Err(FsError::new(libc::EINVAL, "fallocate of 0 bytes"));
        }
        if mode & !(KEEP_SIZE | PUNCH_HOLE | ZERO_RANGE) != 0 {
            return Err(FsError::new(
                libc::EOPNOTSUPP,
                "fallocate supports KEEP_SIZE, PUNCH_HOLE and ZERO_RANGE",
            ));
        }
        if mode & PUNCH_HOLE != 0 && (mode & KEEP_SIZE == 0 || mode & ZERO_RANGE != 0) {
            return Err(FsError::new(
                libc::EINVAL,
                "PUNCH_HOLE goes with KEEP_SIZE alone",
            ));
        }
        let end = offset
            .checked_add(length)
            .filter(|&e| e <= strata_meta::MAX_FILE_SIZE)
            .ok_or_else(|| FsError::new(libc::EFBIG, "fallocate beyond the largest file size"))?;
        let of = self.open_file(ino)?;
        let mut d = of.data.lock().await;
        // Buffered writes land first, so the hole covers them too.
        self.commit(ino, &mut d).await?;
        if mode & (PUNCH_HOLE | ZERO_RANGE) != 0 {
            self.meta.punch_hole(ino, offset, length).await?;
        }
        let size = self.meta.getattr(ino).await?.size;
        // Like a write, fallocate changes mtime and ctime, even when it only
        // reserves space.
        let set = SetAttr {
            size: (mode & KEEP_SIZE == 0 && end > size).then_some(end),
            mtime: Some(Timestamp::now()),
            ..Default::default()
        };
        let attr = self.meta.setattr(ino, set).await?;
        d.invalidate(&attr);
        Ok(())
    }

    /// Copies up to `len` bytes; returns how many (fewer at the source's end).
    pub async fn copy_file_range(&self, from: FilePos, to: FilePos, len: u64) -> FsResult<u32> {
        // The answer counts bytes in a u32, as write's does.
        let len = len.min(u32::MAX as u64 & !(COPY_PIECE as u64 - 1));
        let mut done = 0u64;
        while done < len {
            let piece = (len - done).min(COPY_PIECE as u64) as u32;
            let data = self
                .read(from.ino, from.fh, from.offset + done, piece)
                .await?;
            if data.is_empty() {
                break;
            }
            self.write(to.ino, to.fh, to.offset + done, &data).await?;
            done += data.len() as u64;
        }
        Ok(done as u32)
    }
}
