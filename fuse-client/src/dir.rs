//! Directory handles and listings.

use strata_meta::{Dentry, DirEntry, FileType, Ino, Inode};

use crate::error::{FsError, FsResult};
use crate::fs::Filesystem;

impl Filesystem {
    pub async fn opendir(&self, ino: Ino) -> FsResult<u64> {
        let inode = self.meta.getattr(ino).await?;
        if inode.kind != FileType::Dir {
            return Err(FsError::new(libc::ENOTDIR, "not a directory"));
        }
        Ok(self.handles.open_dir(ino))
    }

    /// Entries after cookie `offset`, each with the cookie of the next entry.
    /// Cookies 1 and 2 are "." and ".."; later cookies count entries.
    pub async fn readdir(
        &self,
        ino: Ino,
        fh: u64,
        offset: u64,
        max: usize,
    ) -> FsResult<Vec<(u64, DirEntry)>> {
        let mut out = Vec::new();
        let max = max.max(1);
        let mut cookie = offset;
        if cookie < 2 {
            let me = self.meta.getattr(ino).await?;
            if cookie == 0 {
                out.push((1, dot(b".", &me)));
                cookie = 1;
            }
            if out.len() < max {
                let parent = if me.parent == ino || ino == self.meta.root() {
                    me.clone()
                } else {
                    self.meta.getattr(me.parent).await?
                };
                out.push((2, dot(b"..", &parent)));
                cookie = 2;
            }
        }
        if out.len() >= max {
            return Ok(out);
        }
        // Resume after the name the cookie stands for.
        let after = if cookie <= 2 {
            None
        } else {
            let name = self.handles.with_dir(fh, |h| {
                let name = h.last_page.iter().find(|(c, _)| *c == cookie);
                (h.ino == ino).then(|| name.map(|(_, n)| n.clone()))
            });
            match name.flatten() {
                None => return Err(FsError::new(libc::EBADF, "directory handle is not open")),
                Some(None) => return Err(FsError::new(libc::EINVAL, "stale directory offset")),
                Some(Some(name)) => Some(name),
            }
        };
        let want = (max - out.len()).min(strata_meta::MAX_READDIR as usize) as u32;
        let entries = self.meta.readdir(ino, after, want).await?;
        let mut page = Vec::with_capacity(entries.len());
        for e in entries {
            cookie += 1;
            page.push((cookie, e.name.clone()));
            let attr = match e.attr {
                Some(a) => Some(self.overlay(a).await),
                None => None,
            };
            let e = DirEntry { attr, ..e };
            out.push((cookie, e));
        }
        if !page.is_empty() {
            self.handles.with_dir(fh, |h| h.last_page = page);
        }
        Ok(out)
    }

    pub async fn releasedir(&self, _ino: Ino, fh: u64) -> FsResult<()> {
        self.handles.close_dir(fh);
        Ok(())
    }
}

fn dot(name: &[u8], inode: &Inode) -> DirEntry {
    DirEntry {
        name: name.to_vec(),
        dentry: Dentry {
            ino: inode.ino,
            kind: FileType::Dir,
        },
        attr: Some(inode.clone()),
    }
}
