//! Rename within one group: plain (replacing the target), RENAME_NOREPLACE
//! and RENAME_EXCHANGE, all in one log entry. Everything is checked before
//! the first write. Renames whose entries or inodes live in other groups
//! answer CrossGroup and the client runs them as a transaction.

use crate::MetaError;
use crate::request::{MetaResponse, MetaResult, RenameMode};
use crate::server::ops::{Ctx, OpResult, get_dir, tri};
use crate::server::store::{DbError, RowsMut, key};
use crate::types::*;

impl<T: RowsMut> Ctx<'_, T> {
    /// Whether `dir` is `ancestor` or lies below it.
    fn within(&self, fs: FsId, ancestor: Ino, dir: Ino) -> OpResult<bool> {
        let mut cur = dir;
        loop {
            if cur == ancestor {
                return Ok(Ok(true));
            }
            if cur == ROOT_INO {
                return Ok(Ok(false));
            }
            cur = tri!(self.inode(fs, cur)?).parent;
        }
    }

    pub(crate) fn rename(
        &mut self,
        fs: FsId,
        (parent, name): (Ino, &[u8]),
        (new_parent, new_name): (Ino, &[u8]),
        mode: RenameMode,
        now: Timestamp,
    ) -> Result<MetaResult, DbError> {
        tri!(validate_name(name));
        tri!(validate_name(new_name));
        tri!(get_dir(&*self.t, self.g, fs, parent)?);
        let new_dir = tri!(get_dir(&*self.t, self.g, fs, new_parent)?);
        if new_dir.nlink == 0 {
            return Ok(Err(MetaError::NotFound));
        }
        let src_key = key::dentry(self.g, fs, parent, name);
        let Some(src) = self.t.load::<Dentry>(&src_key)? else {
            return Ok(Err(MetaError::NotFound));
        };
        let dst_key = key::dentry(self.g, fs, new_parent, new_name);
        let dst = self.t.load::<Dentry>(&dst_key)?;
        match (mode, dst) {
            (RenameMode::NoReplace, Some(_)) => return Ok(Err(MetaError::Exists)),
            (RenameMode::Exchange, None) => return Ok(Err(MetaError::NotFound)),
            (RenameMode::Exchange, Some(d)) => {
                return self.exchange(fs, (parent, name, src), (new_parent, new_name, d), now);
            }
            _ => {}
        }
        if let Some(d) = dst
            && d.ino == src.ino
        {
            // POSIX: renaming onto another link of the same file does nothing.
            return Ok(Ok(MetaResponse::Renamed { replaced: None }));
        }
        if src.kind == FileType::Dir
            && parent != new_parent
            && tri!(self.within(fs, src.ino, new_parent)?)
        {
            return Ok(Err(MetaError::Invalid(
                "cannot move a directory into itself".into(),
            )));
        }
        if let Some(d) = dst {
            match (src.kind == FileType::Dir, d.kind == FileType::Dir) {
                (true, false) => return Ok(Err(MetaError::NotDir)),
                (false, true) => return Ok(Err(MetaError::IsDir)),
                _ => {}
            }
        }
        let mut moved = tri!(self.inode(fs, src.ino)?);
        let victim = match dst {
            Some(d) => {
                let v = tri!(self.inode(fs, d.ino)?);
                if v.kind == FileType::Dir && !tri!(self.empty_dir(fs, d.ino)?) {
                    return Ok(Err(MetaError::NotEmpty));
                }
                Some(v)
            }
            None => None,
        };
        let mut locked = vec![src.ino, new_parent];
        locked.extend(dst.map(|d| d.ino));
        tri!(self.check_unlocked(fs, &locked, &[(parent, name), (new_parent, new_name)])?);
        let charges = tri!(self.move_charges(fs, &moved, parent, new_parent)?);
        tri!(self.charge(fs, &charges)?);
        // Checked; from here on every step succeeds.
        let replaced = match victim {
            Some(v) => Some(self.drop_link(fs, v, Some((new_parent, new_name)), now)?.0),
            None => None,
        };
        self.t.del(&src_key)?;
        self.t.put(&dst_key, &src)?;
        moved.ctime = now;
        // A file's parent too: a subtree grant reaches a file through it.
        moved.parent = new_parent;
        self.save(fs, &moved)?;
        let replaced_dir = replaced.as_ref().is_some_and(|r| r.kind == FileType::Dir);
        let src_dir = src.kind == FileType::Dir && parent != new_parent;
        // Subdirectory counts: the old parent loses a moved directory, the
        // new one gains it and loses a replaced one.
        let mut changed = self.touch_parents(
            fs,
            (parent, -i32::from(src_dir)),
            (new_parent, i32::from(src_dir) - i32::from(replaced_dir)),
            now,
        )?;
        changed.push(moved);
        Ok(Ok(MetaResponse::in_dirs(
            MetaResponse::Renamed { replaced },
            changed,
        )))
    }

    /// RENAME_EXCHANGE: the two entries swap inodes.
    fn exchange(
        &mut self,
        fs: FsId,
        (parent, name, src): (Ino, &[u8], Dentry),
        (new_parent, new_name, dst): (Ino, &[u8], Dentry),
        now: Timestamp,
    ) -> Result<MetaResult, DbError> {
        if src.ino == dst.ino {
            return Ok(Ok(MetaResponse::Renamed { replaced: None }));
        }
        let moves = parent != new_parent;
        // Neither directory may end up below itself.
        if moves && src.kind == FileType::Dir && tri!(self.within(fs, src.ino, new_parent)?) {
            return Ok(Err(MetaError::Invalid(
                "cannot move a directory into itself".into(),
            )));
        }
        if moves && dst.kind == FileType::Dir && tri!(self.within(fs, dst.ino, parent)?) {
            return Ok(Err(MetaError::Invalid(
                "cannot move a directory into itself".into(),
            )));
        }
        let mut a = tri!(self.inode(fs, src.ino)?);
        let mut b = tri!(self.inode(fs, dst.ino)?);
        tri!(self.check_unlocked(
            fs,
            &[src.ino, dst.ino, parent, new_parent],
            &[(parent, name), (new_parent, new_name)]
        )?);
        if moves {
            let mut charges = tri!(self.move_charges(fs, &a, parent, new_parent)?);
            charges.extend(tri!(self.move_charges(fs, &b, new_parent, parent)?));
            tri!(self.charge(fs, &charges)?);
        }
        self.t.put(&key::dentry(self.g, fs, parent, name), &dst)?;
        self.t
            .put(&key::dentry(self.g, fs, new_parent, new_name), &src)?;
        a.ctime = now;
        b.ctime = now;
        a.parent = new_parent;
        b.parent = parent;
        self.save(fs, &a)?;
        self.save(fs, &b)?;
        let (a_dir, b_dir) = (
            i32::from(moves && a.kind == FileType::Dir),
            i32::from(moves && b.kind == FileType::Dir),
        );
        let mut changed = self.touch_parents(
            fs,
            (parent, b_dir - a_dir),
            (new_parent, a_dir - b_dir),
            now,
        )?;
        changed.push(a);
        changed.push(b);
        Ok(Ok(MetaResponse::in_dirs(
            MetaResponse::Renamed { replaced: None },
            changed,
        )))
    }

    /// Updates the times of a rename's parents (once if they are the same)
    /// and their link counts by the subdirectories they gained or lost.
    fn touch_parents(
        &mut self,
        fs: FsId,
        (old, old_delta): (Ino, i32),
        (new, new_delta): (Ino, i32),
        now: Timestamp,
    ) -> Result<Vec<Inode>, DbError> {
        let parents = if old == new {
            vec![(old, old_delta + new_delta)]
        } else {
            vec![(old, old_delta), (new, new_delta)]
        };
        let mut out = Vec::new();
        for (ino, delta) in parents {
            // Read again: dropping a replaced directory may have changed it.
            let Ok(mut dir) = self.inode(fs, ino)? else {
                continue;
            };
            dir.nlink = dir.nlink.saturating_add_signed(delta);
            dir.mtime = now;
            dir.ctime = now;
            self.save(fs, &dir)?;
            out.push(dir);
        }
        Ok(out)
    }
}
