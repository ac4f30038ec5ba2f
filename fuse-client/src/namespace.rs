//! Names and attributes: lookups, attribute changes, and making, linking,
//! renaming and removing names.

use std::time::Duration;

use strata_meta::NewInode;
use strata_meta::request::RenameMode;
use strata_meta::{FileType, Ino, Inode, SetAttr};

use crate::error::{FsError, FsResult};
use crate::fs::{Filesystem, Owner};

const SYMLINK_MAX: usize = strata_meta::MAX_SYMLINK_LEN;

impl Filesystem {
    pub async fn lookup(&self, parent: Ino, name: &[u8]) -> FsResult<Inode> {
        // A subtree's root is its own parent, as `/` is.
        if name == b".." && parent == self.meta.root() {
            return self.getattr(parent).await;
        }
        let inode = self.meta.lookup(parent, name).await?;
        Ok(self.overlay(inode).await)
    }

    pub async fn getattr(&self, ino: Ino) -> FsResult<Inode> {
        // A file created here whose create has not gone yet (decision 71):
        // nobody else changed it, so its attributes are this client's.
        if self.meta.is_deferred(ino)
            && let Some(of) = self.handles.file(ino)
        {
            let d = of.data.lock().await;
            let mut inode = d.attr.clone();
            d.overlay_attr(&mut inode);
            return Ok(inode);
        }
        let inode = self.meta.getattr(ino).await?;
        Ok(self.overlay(inode).await)
    }

    pub async fn setattr(&self, ino: Ino, set: SetAttr) -> FsResult<Inode> {
        self.check_writable()?;
        if let Some(of) = self.handles.file(ino) {
            // Buffered writes land first so a truncate cuts them too.
            let mut d = of.data.lock().await;
            self.commit(ino, &mut d).await?;
            self.wait_written_back(ino).await?;
            let inode = self.meta.setattr(ino, set).await?;
            d.invalidate(&inode);
            return Ok(inode);
        }
        self.wait_written_back(ino).await?;
        Ok(self.meta.setattr(ino, set).await?)
    }

    pub async fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>> {
        let inode = self.meta.getattr(ino).await?;
        inode
            .symlink
            .ok_or_else(|| FsError::new(libc::EINVAL, "not a symlink"))
    }

    /// Makes a file, fifo, socket or device file (`rdev` its device number)
    /// with permission bits `mode`.
    pub async fn mknod(
        &self,
        parent: Ino,
        name: &[u8],
        kind: FileType,
        mode: u32,
        rdev: u32,
        owner: Owner,
    ) -> FsResult<Inode> {
        self.check_writable()?;
        let Owner { uid, gid } = owner;
        if kind == FileType::Dir || kind == FileType::Symlink {
            return Err(FsError::new(
                libc::EINVAL,
                "mknod cannot make directories or symlinks",
            ));
        }
        Ok(self
            .meta
            .create(
                parent,
                name,
                NewInode {
                    kind,
                    mode,
                    uid,
                    gid,
                    rdev,
                    symlink: None,
                },
            )
            .await?)
    }

    pub async fn mkdir(
        &self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        owner: Owner,
    ) -> FsResult<Inode> {
        self.check_writable()?;
        let Owner { uid, gid } = owner;
        Ok(self
            .meta
            .create(parent, name, NewInode::plain(FileType::Dir, mode, uid, gid))
            .await?)
    }

    pub async fn symlink(
        &self,
        parent: Ino,
        name: &[u8],
        target: &[u8],
        owner: Owner,
    ) -> FsResult<Inode> {
        self.check_writable()?;
        let Owner { uid, gid } = owner;
        if target.len() > SYMLINK_MAX {
            return Err(FsError::new(libc::ENAMETOOLONG, "symlink target too long"));
        }
        Ok(self
            .meta
            .create(
                parent,
                name,
                NewInode {
                    kind: FileType::Symlink,
                    mode: 0o777,
                    uid,
                    gid,
                    rdev: 0,
                    symlink: Some(target.to_vec()),
                },
            )
            .await?)
    }

    pub async fn unlink(&self, parent: Ino, name: &[u8]) -> FsResult<()> {
        self.check_writable()?;
        let held = self.hold_if_open(parent, name).await;
        let gone = self.meta.unlink(parent, name).await;
        self.unlinked(held, gone.as_ref().ok().copied().flatten())
            .await;
        gone?;
        Ok(())
    }

    pub async fn rmdir(&self, parent: Ino, name: &[u8]) -> FsResult<()> {
        self.check_writable()?;
        Ok(self.meta.rmdir(parent, name).await?)
    }

    pub async fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        new_parent: Ino,
        new_name: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        self.check_writable()?;
        const NOREPLACE: u32 = libc::RENAME_NOREPLACE;
        const EXCHANGE: u32 = libc::RENAME_EXCHANGE;
        let mode = match flags {
            0 => RenameMode::Replace,
            NOREPLACE => RenameMode::NoReplace,
            EXCHANGE => RenameMode::Exchange,
            _ => {
                return Err(FsError::new(
                    libc::EINVAL,
                    "rename flags: RENAME_NOREPLACE or RENAME_EXCHANGE (whiteouts are not supported)",
                ));
            }
        };
        let held = match mode {
            RenameMode::Replace => self.hold_if_open(new_parent, new_name).await,
            _ => None,
        };
        let replaced = self
            .meta
            .rename(parent, name, new_parent, new_name, mode)
            .await;
        let gone = replaced
            .as_ref()
            .ok()
            .and_then(|r| r.as_ref())
            .filter(|r| r.nlink == 0 && r.kind != FileType::Dir)
            .map(|r| r.ino);
        self.unlinked(held, gone).await;
        replaced?;
        Ok(())
    }

    pub async fn link(&self, ino: Ino, new_parent: Ino, new_name: &[u8]) -> FsResult<Inode> {
        self.check_writable()?;
        let inode = self.meta.link(ino, new_parent, new_name).await?;
        Ok(self.overlay(inode).await)
    }

    /// Attributes of an inode this client changed less than the attribute
    /// TTL ago, with what is left of the TTL: as fresh as what the kernel
    /// would have cached had it kept them, and no round trip. None while
    /// this client has writes of it not committed yet (its size is theirs).
    pub fn recent_attr(&self, ino: Ino) -> Option<(Inode, Duration)> {
        if !self.nothing_to_flush(ino)
            || self
                .writeback
                .as_ref()
                .is_some_and(|w| w.pending(ino).is_some())
        {
            return None;
        }
        self.meta.recent_attr(ino, self.config.attr_ttl)
    }

    /// What a lookup of `parent/name` would answer, from this client's
    /// memory of a lookup less than the entry TTL ago and of the inode's
    /// attributes less than the attribute TTL ago, with what is left of the
    /// shorter: the kernel would still hold both had it kept them.
    pub fn recent_lookup(&self, parent: Ino, name: &[u8]) -> Option<(Inode, Duration)> {
        let (ino, entry_left) = self
            .meta
            .recent_entry(parent, name, self.config.entry_ttl)?;
        let (inode, attr_left) = self.recent_attr(ino)?;
        Some((inode, entry_left.min(attr_left)))
    }
}
