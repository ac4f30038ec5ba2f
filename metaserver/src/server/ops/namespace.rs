//! Names and inodes within one group: lookup and readdir, create, link,
//! unlink, rmdir, setattr, and the inode bookkeeping the other operations
//! share (allocation, usage, transaction locks).

use crate::MetaError;
use crate::request::{FileCreated, MetaResponse, MetaResult};
use crate::server::ops::quota::{file_growth, new_inode_charge, owner_change, uncharge};
use crate::server::ops::{Ctx, MAX_LINKS, OpResult, PartState, tri};
use crate::server::store::{DbError, Rows, RowsMut, key};
use crate::types::*;

/// Most inode numbers one `ReserveInos` hands out.
pub(crate) const MAX_RESERVED_INOS: u32 = 4096;

pub(crate) fn lookup<T: Rows>(
    t: &T,
    g: GroupId,
    fs: FsId,
    parent: Ino,
    name: &[u8],
) -> OpResult<MetaResponse> {
    tri!(validate_lookup_name(name));
    let dir = tri!(get_dir(t, g, fs, parent)?);
    if name == b"." {
        return Ok(Ok(MetaResponse::Inode(dir)));
    }
    let d = if name == b".." {
        Dentry {
            ino: dir.parent,
            kind: FileType::Dir,
        }
    } else {
        match t.load::<Dentry>(&key::dentry(g, fs, parent, name))? {
            Some(d) => d,
            None => return Ok(Err(MetaError::NotFound)),
        }
    };
    match t.load::<Inode>(&key::inode(g, fs, d.ino))? {
        Some(i) => Ok(Ok(MetaResponse::Inode(i))),
        // The client asks the inode's own group.
        None => Ok(Ok(MetaResponse::Remote(d))),
    }
}

fn validate_lookup_name(name: &[u8]) -> Result<(), MetaError> {
    if name == b"." || name == b".." {
        return Ok(());
    }
    validate_name(name)
}

pub(crate) fn get_dir<T: Rows>(t: &T, g: GroupId, fs: FsId, ino: Ino) -> OpResult<Inode> {
    match t.load::<Inode>(&key::inode(g, fs, ino))? {
        None => Ok(Err(MetaError::NotFound)),
        Some(i) if i.kind != FileType::Dir => Ok(Err(MetaError::NotDir)),
        Some(i) => Ok(Ok(i)),
    }
}

pub(crate) fn readdir<T: Rows>(
    t: &T,
    g: GroupId,
    fs: FsId,
    ino: Ino,
    after: Option<Vec<u8>>,
    limit: u32,
) -> OpResult<Vec<DirEntry>> {
    tri!(get_dir(t, g, fs, ino)?);
    let prefix = key::dentry_prefix(g, fs, ino);
    let after_key = after.map(|a| key::dentry(g, fs, ino, &a));
    let rows = t.scan(
        &prefix,
        after_key.as_deref(),
        limit.clamp(1, MAX_READDIR) as usize,
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        let dentry: Dentry = crate::server::store::decode(&v)?;
        let attr = t.load::<Inode>(&key::inode(g, fs, dentry.ino))?;
        out.push(DirEntry {
            name: k[prefix.len()..].to_vec(),
            dentry,
            attr,
        });
    }
    Ok(Ok(out))
}

impl<T: RowsMut> Ctx<'_, T> {
    pub(crate) fn init_root(
        &mut self,
        fs: FsId,
        mode: u32,
        uid: u32,
        gid: u32,
        now: Timestamp,
    ) -> Result<MetaResult, DbError> {
        let k = key::inode(self.g, fs, ROOT_INO);
        if let Some(root) = self.t.load::<Inode>(&k)? {
            return Ok(Ok(MetaResponse::Inode(root)));
        }
        let root = Inode::new(
            ROOT_INO,
            NewInode::plain(FileType::Dir, mode, uid, gid),
            ROOT_INO,
            now,
        );
        self.t.put(&k, &root)?;
        self.add_usage(fs, 1, 0)?;
        Ok(Ok(MetaResponse::Inode(root)))
    }

    pub(crate) fn add_usage(&mut self, fs: FsId, inodes: i64, bytes: i64) -> Result<(), DbError> {
        let k = key::usage(self.g, fs);
        let mut u: Usage = self.t.load(&k)?.unwrap_or_default();
        u.inodes = u.inodes.saturating_add_signed(inodes);
        u.bytes = u.bytes.saturating_add_signed(bytes);
        self.t.put(&k, &u)
    }

    pub(crate) fn inode(&self, fs: FsId, ino: Ino) -> OpResult<Inode> {
        if let Some(i) = self.t.load(&key::inode(self.g, fs, ino))? {
            return Ok(Ok(i));
        }
        if self.owns(fs, ino)? {
            Ok(Err(MetaError::NotFound))
        } else {
            Ok(Err(MetaError::CrossGroup(format!(
                "inode {ino} is not in group {}",
                self.g
            ))))
        }
    }

    /// Whether `ino` falls in one of this group's partitions.
    pub(crate) fn owns(&self, fs: FsId, ino: Ino) -> Result<bool, DbError> {
        for (_, v) in self
            .t
            .scan(&key::part_state_prefix(self.g, fs), None, usize::MAX)?
        {
            if crate::server::store::decode::<PartState>(&v)?
                .part
                .contains(ino)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Busy if a prepared transaction holds a lock on one of these inodes or
    /// entries. One seek when no transaction is pending, which is the rule.
    pub(crate) fn check_unlocked(
        &self,
        fs: FsId,
        inodes: &[Ino],
        dentries: &[(Ino, &[u8])],
    ) -> OpResult<()> {
        if self.t.scan(&key::lock_prefix(self.g), None, 1)?.is_empty() {
            return Ok(Ok(()));
        }
        for &ino in inodes {
            if self
                .t
                .load_raw(&key::inode_lock(self.g, fs, ino))?
                .is_some()
            {
                return Ok(Err(MetaError::Busy(format!(
                    "inode {ino} is part of a pending cross-group operation"
                ))));
            }
        }
        for (parent, name) in dentries {
            if self
                .t
                .load_raw(&key::dentry_lock(self.g, fs, *parent, name))?
                .is_some()
            {
                return Ok(Err(MetaError::Busy(format!(
                    "an entry of directory {parent} is part of a pending cross-group operation"
                ))));
            }
        }
        Ok(Ok(()))
    }

    pub(crate) fn save(&mut self, fs: FsId, inode: &Inode) -> Result<(), DbError> {
        self.t.put(&key::inode(self.g, fs, inode.ino), inode)
    }

    /// A new inode number, from the parent's partition when it has room so the
    /// entry and the inode stay together.
    pub(crate) fn alloc_ino(&mut self, fs: FsId, near: Ino) -> OpResult<Ino> {
        let mut parts = self.part_states(fs)?;
        parts.sort_by_key(|p| !p.part.contains(near));
        for mut p in parts {
            if p.next_ino < p.part.end {
                let ino = p.next_ino;
                p.next_ino += 1;
                self.t.put(&key::part_state(self.g, fs, p.part.id), &p)?;
                return Ok(Ok(ino));
            }
        }
        Ok(Err(MetaError::PartitionsFull))
    }

    /// Reserves up to `count` inode numbers of this group for a client's
    /// `CreateFile`s: the next ones of the first partition with room.
    pub(crate) fn reserve_inos(&mut self, fs: FsId, count: u32) -> OpResult<(Ino, u32)> {
        if count == 0 || count > MAX_RESERVED_INOS {
            return Ok(Err(MetaError::Invalid(format!(
                "{count} inode numbers asked for (1 to {MAX_RESERVED_INOS} at once)"
            ))));
        }
        let mut parts = self.part_states(fs)?;
        parts.sort_by_key(|p| p.part.id);
        for mut p in parts {
            if p.next_ino < p.part.end {
                let start = p.next_ino;
                let n = (p.part.end - start).min(count as u64);
                p.next_ino += n;
                self.t.put(&key::part_state(self.g, fs, p.part.id), &p)?;
                return Ok(Ok((start, n as u32)));
            }
        }
        Ok(Err(MetaError::PartitionsFull))
    }

    fn part_states(&self, fs: FsId) -> Result<Vec<PartState>, DbError> {
        let rows = self
            .t
            .scan(&key::part_state_prefix(self.g, fs), None, usize::MAX)?;
        let mut parts = Vec::with_capacity(rows.len());
        for (_, v) in rows {
            parts.push(crate::server::store::decode::<PartState>(&v)?);
        }
        Ok(parts)
    }

    /// Whether inode number `ino` was handed out by a partition of this
    /// group (`reserve_inos`) and never used: no inode, and no chunk rows
    /// left behind by one that was.
    fn check_reserved(&self, fs: FsId, ino: Ino) -> OpResult<()> {
        let parts = self.part_states(fs)?;
        let Some(p) = parts.iter().find(|p| p.part.contains(ino)) else {
            return Ok(Err(MetaError::Invalid(format!(
                "inode number {ino} is not of a partition of group {}",
                self.g
            ))));
        };
        if ino >= p.next_ino {
            return Ok(Err(MetaError::Invalid(format!(
                "inode number {ino} was not reserved"
            ))));
        }
        let used = self.t.load_raw(&key::inode(self.g, fs, ino))?.is_some()
            || !self
                .t
                .scan(&key::chunk_prefix(self.g, fs, ino), None, 1)?
                .is_empty();
        if used {
            return Ok(Err(MetaError::Invalid(format!(
                "inode number {ino} is or was in use"
            ))));
        }
        Ok(Ok(()))
    }

    pub(crate) fn create(
        &mut self,
        fs: FsId,
        at: (Ino, &[u8]),
        new: NewInode,
        now: Timestamp,
    ) -> OpResult<(Inode, Inode)> {
        self.create_as(fs, at, new, now, None)
    }

    /// `CreateFile`: the regular file `parent/name` as inode `ino`, then
    /// its first slices. Refused slices (a quota) leave the file empty, as
    /// a create and a refused commit would.
    pub(crate) fn create_file(
        &mut self,
        fs: FsId,
        (parent, name): (Ino, &[u8]),
        ino: Ino,
        new: NewInode,
        (slices, end): (Vec<(u32, Slice)>, u64),
        (now, written): (Timestamp, Timestamp),
    ) -> OpResult<MetaResponse> {
        if new.kind != FileType::File || new.symlink.is_some() {
            return Ok(Err(MetaError::Invalid(
                "CreateFile makes regular files only".into(),
            )));
        }
        let (created, dir) = tri!(self.create_as(fs, (parent, name), new, now, Some(ino))?);
        let written = if slices.is_empty() && end == 0 {
            Ok((created.clone(), Vec::new()))
        } else {
            self.write_slices(fs, ino, slices, end, written)?
                .map(|(_, inode, crowded)| (inode, crowded))
        };
        let answer = MetaResponse::FileCreated(Box::new(FileCreated { created, written }));
        Ok(Ok(MetaResponse::in_dirs(answer, vec![dir])))
    }

    /// A create, with the inode number `given` (reserved by the client) or
    /// a new one.
    fn create_as(
        &mut self,
        fs: FsId,
        (parent, name): (Ino, &[u8]),
        new: NewInode,
        now: Timestamp,
        given: Option<Ino>,
    ) -> OpResult<(Inode, Inode)> {
        tri!(validate_name(name));
        let kind = new.kind;
        if let Some(target) = &new.symlink
            && (target.is_empty() || target.len() > MAX_SYMLINK_LEN)
        {
            return Ok(Err(MetaError::Invalid(format!(
                "symlink target of {} bytes (1 to {MAX_SYMLINK_LEN} allowed)",
                target.len()
            ))));
        }
        if (kind == FileType::Symlink) != new.symlink.is_some() {
            return Ok(Err(MetaError::Invalid(
                "a symlink needs a target, and only a symlink".into(),
            )));
        }
        let mut dir = tri!(get_dir(&*self.t, self.g, fs, parent)?);
        if dir.nlink == 0 {
            return Ok(Err(MetaError::NotFound));
        }
        let dkey = key::dentry(self.g, fs, parent, name);
        if self.t.load_raw(&dkey)?.is_some() {
            return Ok(Err(MetaError::Exists));
        }
        tri!(self.check_unlocked(fs, &[parent], &[(parent, name)])?);
        if kind == FileType::Dir && dir.nlink >= MAX_LINKS {
            return Ok(Err(MetaError::TooManyLinks));
        }
        // BSD group semantics under a setgid directory: the entry takes the
        // directory's group, and subdirectories inherit the setgid bit.
        let new = if dir.mode & 0o2000 != 0 {
            NewInode {
                gid: dir.gid,
                mode: if kind == FileType::Dir {
                    new.mode | 0o2000
                } else {
                    new.mode
                },
                ..new
            }
        } else {
            new
        };
        if let Some(ino) = given {
            tri!(self.check_reserved(fs, ino)?);
        }
        // The quotas first (the last check), then the inode number.
        let charge = new_inode_charge(parent, &new);
        tri!(self.charge(fs, &[charge])?);
        let allocated = match given {
            Some(ino) => Ok(ino),
            None => self.alloc_ino(fs, parent)?,
        };
        let ino = match allocated {
            Ok(ino) => ino,
            Err(e) => {
                self.release(fs, &[charge.undone()])?;
                return Ok(Err(e));
            }
        };
        let inode = Inode::new(ino, new, parent, now);
        self.t.put(&dkey, &Dentry { ino, kind })?;
        self.save(fs, &inode)?;
        if kind == FileType::Dir {
            dir.nlink += 1;
        }
        dir.mtime = now;
        dir.ctime = now;
        self.save(fs, &dir)?;
        self.add_usage(fs, 1, inode.size as i64)?;
        Ok(Ok((inode, dir)))
    }

    pub(crate) fn link(
        &mut self,
        fs: FsId,
        ino: Ino,
        parent: Ino,
        name: &[u8],
        now: Timestamp,
    ) -> OpResult<(Inode, Inode)> {
        tri!(validate_name(name));
        let mut inode = tri!(self.inode(fs, ino)?);
        if inode.kind == FileType::Dir {
            return Ok(Err(MetaError::NotPermitted(
                "hard links to directories are not allowed".into(),
            )));
        }
        if inode.nlink == 0 {
            // In the trash: only `strata trash restore` brings it back.
            return Ok(Err(MetaError::NotFound));
        }
        if inode.nlink >= MAX_LINKS {
            return Ok(Err(MetaError::TooManyLinks));
        }
        let mut dir = tri!(get_dir(&*self.t, self.g, fs, parent)?);
        if dir.nlink == 0 {
            return Ok(Err(MetaError::NotFound));
        }
        let dkey = key::dentry(self.g, fs, parent, name);
        if self.t.load_raw(&dkey)?.is_some() {
            return Ok(Err(MetaError::Exists));
        }
        tri!(self.check_unlocked(fs, &[parent, ino], &[(parent, name)])?);
        // The file stays charged where it was made; a link from under other
        // quotas would let it grow there uncounted.
        if !self.same_quotas(fs, inode.parent, parent)? {
            return Ok(Err(MetaError::QuotaBoundary(format!(
                "inode {ino} is counted under other quotas than directory {parent}"
            ))));
        }
        self.t.put(
            &dkey,
            &Dentry {
                ino,
                kind: inode.kind,
            },
        )?;
        inode.nlink += 1;
        inode.ctime = now;
        self.save(fs, &inode)?;
        dir.mtime = now;
        dir.ctime = now;
        self.save(fs, &dir)?;
        Ok(Ok((inode, dir)))
    }

    /// Drops one link of `inode`, which `from` (parent, name) named when
    /// known. A directory goes at once; a file whose last link went moves to
    /// the trash (see `garbage`). Returns whether the last link went.
    pub(crate) fn drop_link(
        &mut self,
        fs: FsId,
        mut inode: Inode,
        from: Option<(Ino, &[u8])>,
        now: Timestamp,
    ) -> Result<(Inode, bool), DbError> {
        inode.nlink = inode.nlink.saturating_sub(1);
        inode.ctime = now;
        if inode.nlink == 0 || inode.kind == FileType::Dir {
            // Gone from the tree: the quotas above no longer count it (a
            // file in the trash is not charged).
            self.release(fs, &[uncharge(&inode)])?;
        } else if from.is_some_and(|(dir, _)| dir == inode.parent) {
            // The file leaves the directory it is charged to but keeps
            // other links, all under the same quotas: it is charged to the
            // nearest of those from now on, as the directory it leaves may
            // be removed.
            if let Some(q) = self.nearest_quota(fs, inode.parent)? {
                inode.parent = q;
            }
        }
        if inode.kind == FileType::Dir {
            self.t.del(&key::quota(self.g, fs, inode.ino))?;
            inode.nlink = 0;
            self.delete_inode(fs, &inode, now)?;
            return Ok((inode, true));
        }
        self.save(fs, &inode)?;
        if inode.nlink == 0 {
            self.trash(fs, &inode, from, now)?;
            return Ok((inode, true));
        }
        Ok((inode, false))
    }

    pub(crate) fn unlink(
        &mut self,
        fs: FsId,
        parent: Ino,
        name: &[u8],
        now: Timestamp,
    ) -> Result<MetaResult, DbError> {
        tri!(validate_name(name));
        let mut dir = tri!(get_dir(&*self.t, self.g, fs, parent)?);
        let dkey = key::dentry(self.g, fs, parent, name);
        let Some(d) = self.t.load::<Dentry>(&dkey)? else {
            return Ok(Err(MetaError::NotFound));
        };
        if d.kind == FileType::Dir {
            return Ok(Err(MetaError::IsDir));
        }
        let inode = tri!(self.inode(fs, d.ino)?);
        tri!(self.check_unlocked(fs, &[d.ino], &[(parent, name)])?);
        self.t.del(&dkey)?;
        let (inode, removed) = self.drop_link(fs, inode, Some((parent, name)), now)?;
        dir.mtime = now;
        dir.ctime = now;
        self.save(fs, &dir)?;
        Ok(Ok(MetaResponse::in_dirs(
            MetaResponse::Unlinked { inode, removed },
            vec![dir],
        )))
    }

    /// Empty: no entries, and none about to be added by a prepared
    /// transaction (that answers Busy: it may still abort).
    pub(crate) fn empty_dir(&self, fs: FsId, ino: Ino) -> OpResult<bool> {
        if !self
            .t
            .scan(&key::dentry_prefix(self.g, fs, ino), None, 1)?
            .is_empty()
        {
            return Ok(Ok(false));
        }
        if !self
            .t
            .scan(&key::dentry_lock_prefix(self.g, fs, ino), None, 1)?
            .is_empty()
        {
            return Ok(Err(MetaError::Busy(format!(
                "directory {ino} has a pending cross-group entry"
            ))));
        }
        Ok(Ok(true))
    }

    pub(crate) fn rmdir(
        &mut self,
        fs: FsId,
        parent: Ino,
        name: &[u8],
        now: Timestamp,
    ) -> Result<MetaResult, DbError> {
        if name == b"." {
            return Ok(Err(MetaError::Invalid("cannot remove '.'".into())));
        }
        if name == b".." {
            return Ok(Err(MetaError::NotEmpty));
        }
        tri!(validate_name(name));
        let mut dir = tri!(get_dir(&*self.t, self.g, fs, parent)?);
        let dkey = key::dentry(self.g, fs, parent, name);
        let Some(d) = self.t.load::<Dentry>(&dkey)? else {
            return Ok(Err(MetaError::NotFound));
        };
        if d.kind != FileType::Dir {
            return Ok(Err(MetaError::NotDir));
        }
        let child = tri!(self.inode(fs, d.ino)?);
        if !tri!(self.empty_dir(fs, d.ino)?) {
            return Ok(Err(MetaError::NotEmpty));
        }
        tri!(self.check_unlocked(fs, &[d.ino], &[(parent, name)])?);
        self.t.del(&dkey)?;
        let (inode, removed) = self.drop_link(fs, child, None, now)?;
        dir.nlink = dir.nlink.saturating_sub(1);
        dir.mtime = now;
        dir.ctime = now;
        self.save(fs, &dir)?;
        Ok(Ok(MetaResponse::in_dirs(
            MetaResponse::Unlinked { inode, removed },
            vec![dir],
        )))
    }

    pub(crate) fn setattr(
        &mut self,
        fs: FsId,
        ino: Ino,
        set: SetAttr,
        now: Timestamp,
    ) -> OpResult<Inode> {
        let mut inode = tri!(self.inode(fs, ino)?);
        let owner = (set.uid.unwrap_or(inode.uid), set.gid.unwrap_or(inode.gid));
        if let Some(size) = set.size {
            match inode.kind {
                FileType::File => {}
                FileType::Dir => return Ok(Err(MetaError::IsDir)),
                _ => {
                    return Ok(Err(MetaError::Invalid(
                        "only regular files can be truncated".into(),
                    )));
                }
            }
            if size > MAX_FILE_SIZE {
                return Ok(Err(MetaError::FileTooBig(format!(
                    "size {size} (at most {MAX_FILE_SIZE})"
                ))));
            }
        }
        // Growth is charged to the old owner, then the new owner takes it all.
        let mut charges = set
            .size
            .map(|size| file_growth(&inode, size))
            .unwrap_or_default();
        charges.extend(owner_change(&inode, set.size.unwrap_or(inode.size), owner));
        tri!(self.charge(fs, &charges)?);
        if let Some(size) = set.size {
            let chunk_size = self.chunk_size(fs)?;
            if size < inode.size {
                self.cut_chunks(fs, ino, size, inode.size, chunk_size, now)?;
            }
            self.add_usage(fs, 0, size as i64 - inode.size as i64)?;
            let old_size = inode.size;
            inode.size = size;
            inode.mtime = now;
            self.trash_resized(fs, &inode, old_size)?;
        }
        if let Some(mode) = set.mode {
            inode.mode = mode & 0o7777;
        }
        if let Some(uid) = set.uid {
            inode.uid = uid;
        }
        if let Some(gid) = set.gid {
            inode.gid = gid;
        }
        if let Some(t) = set.atime {
            inode.atime = t;
        }
        if let Some(t) = set.mtime {
            inode.mtime = t;
        }
        inode.ctime = set.ctime.unwrap_or(now);
        self.save(fs, &inode)?;
        Ok(Ok(inode))
    }
}
