//! Garbage of a partition group: the trash, the deletion queue and chunk
//! compaction.
//!
//! A file whose last link goes is not deleted at once: its inode and chunk
//! maps move to the trash (nlink 0), where an open handle keeps working and
//! `strata trash restore` can bring it back. A purge, asked for by clients'
//! background workers, deletes trash entries older than the filesystem's
//! trash days that no client holds open (a client that has a file open holds
//! it before it unlinks it, and renews the hold while the file stays open). Deleting an inode, truncating whole
//! chunks away and compacting a chunk put the slices that left every chunk
//! map into the deletion queue; clients delete their objects and acknowledge.
//! Objects are immutable and a slice lives in one chunk map, so a queued
//! slice is referenced by nothing.

use crate::MetaError;
use crate::request::{MetaResponse, MetaResult};
use crate::server::ops::{Ctx, OpResult, tri};
use crate::server::store::{DbError, Pages, Rows, RowsMut, decode, key};
use crate::types::*;

/// A chunk with this many slices is worth compacting.
pub const COMPACT_AT: usize = 20;

/// What the trash keeps of a removed inode besides the inode row itself.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
struct TrashRow {
    deleted: Timestamp,
    parent: Ino,
    name: Vec<u8>,
}

pub(crate) fn trash_days<T: Rows>(t: &T, g: GroupId, fs: FsId) -> Result<u32, DbError> {
    Ok(
        t.load::<u32>(&key::counter(g, &format!("trash_days:{fs}")))?
            .unwrap_or(DEFAULT_TRASH_DAYS),
    )
}

/// Trash entries deleted in this second or before are due at `now`.
fn due_until<T: Rows>(t: &T, g: GroupId, fs: FsId, now: Timestamp) -> Result<i64, DbError> {
    let keep = trash_days(t, g, fs)? as i64 * 86_400;
    Ok(now.sec.saturating_sub(keep))
}

fn held_until<T: Rows>(
    t: &T,
    g: GroupId,
    fs: FsId,
    ino: Ino,
) -> Result<Option<Timestamp>, DbError> {
    t.load(&key::hold(g, fs, ino))
}

/// Trash rows due at `now`, oldest first, at most `limit`.
fn due_rows<T: Rows>(
    t: &T,
    g: GroupId,
    fs: FsId,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<(Vec<u8>, TrashRow)>, DbError> {
    let until = due_until(t, g, fs, now)?;
    let mut out = Vec::new();
    let mut pages = Pages::new(key::trash_prefix(g, fs), 256);
    'pages: while let Some(page) = pages.next(t)? {
        for (k, v) in page {
            if key::trash_sec(&k) as i64 > until {
                break 'pages;
            }
            let row: TrashRow = decode(&v)?;
            let held = held_until(t, g, fs, key::trash_ino(&k))?.is_some_and(|u| u > now);
            if !held {
                out.push((k, row));
                if out.len() >= limit {
                    break 'pages;
                }
            }
        }
    }
    Ok(out)
}

/// Answers `GarbageWork`.
pub(crate) fn garbage_work<T: Rows>(
    t: &T,
    g: GroupId,
    fs: FsId,
    now: Timestamp,
    after: SliceId,
    limit: u32,
) -> Result<MetaResult, DbError> {
    let limit = limit.clamp(1, 4096) as usize;
    let trash_due = due_rows(t, g, fs, now, limit)?.len() as u64;
    let prefix = key::deletion_prefix(g, fs);
    let mut cursor = key::deletion(g, fs, after);
    let mut deletions = Vec::new();
    // Slices a snapshot still reads are skipped (they wait until the last
    // one goes); keep scanning so a page of them does not end the walk.
    'scan: loop {
        let rows = t.scan(&prefix, Some(&cursor), limit)?;
        let Some((last, _)) = rows.last() else { break };
        cursor = last.clone();
        for (k, v) in rows {
            let (len, queued): (u32, Timestamp) = decode(&v)?;
            let slice = key::deletion_slice(&k);
            if crate::server::ops::snapshot::slice_refs(t, g, fs, slice)? > 0 {
                continue;
            }
            deletions.push(Deletion { slice, len, queued });
            if deletions.len() >= limit {
                break 'scan;
            }
        }
    }
    Ok(Ok(MetaResponse::GarbageWork {
        trash_due,
        deletions,
    }))
}

/// Answers `ListTrash`.
pub(crate) fn list_trash<T: Rows>(
    t: &T,
    g: GroupId,
    fs: FsId,
    after: Ino,
    limit: u32,
) -> Result<MetaResult, DbError> {
    let prefix = key::trash_index(g, fs, 0);
    let prefix = &prefix[..prefix.len() - 8];
    let rows = t.scan(
        prefix,
        Some(&key::trash_index(g, fs, after)),
        limit.clamp(1, 4096) as usize,
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        let ino = key::trash_ino(&k);
        let sec: u64 = decode(&v)?;
        let Some(row) = t.load::<TrashRow>(&key::trash(g, fs, sec, ino))? else {
            return Err(DbError::Corrupt(format!(
                "trash index of {ino} without a row"
            )));
        };
        let Some(inode) = t.load::<Inode>(&key::inode(g, fs, ino))? else {
            return Err(DbError::Corrupt(format!("trashed inode {ino} is missing")));
        };
        out.push(TrashEntry {
            inode,
            deleted: row.deleted,
            parent: row.parent,
            name: row.name,
            held_until: held_until(t, g, fs, ino)?,
        });
    }
    Ok(Ok(MetaResponse::Trash(out)))
}

/// Answers `ListChunks`.
pub(crate) fn list_chunks<T: Rows>(
    t: &T,
    g: GroupId,
    fs: FsId,
    after: Option<(Ino, u32)>,
    limit: u32,
) -> Result<MetaResult, DbError> {
    let prefix = key::chunk_prefix(g, fs, 0);
    let prefix = &prefix[..prefix.len() - 8];
    let start = after.map(|(ino, idx)| key::chunk(g, fs, ino, idx));
    let rows = t.scan(prefix, start.as_deref(), limit.clamp(1, 4096) as usize)?;
    let mut out = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        let n = k.len();
        let ino = u64::from_be_bytes(k[n - 12..n - 4].try_into().expect("8 bytes"));
        let idx = u32::from_be_bytes(k[n - 4..].try_into().expect("4 bytes"));
        out.push((ino, idx, decode(&v)?));
    }
    Ok(Ok(MetaResponse::Chunks(out)))
}

impl<T: RowsMut> Ctx<'_, T> {
    pub(crate) fn set_trash_days(&mut self, fs: FsId, days: u32) -> Result<MetaResult, DbError> {
        if days > 36_500 {
            return Ok(Err(MetaError::Invalid(format!(
                "{days} trash days is more than a century"
            ))));
        }
        self.t
            .put(&key::counter(self.g, &format!("trash_days:{fs}")), &days)?;
        Ok(Ok(MetaResponse::Ok))
    }

    /// Queues the objects of `slices` (holes have none) for deletion.
    pub(crate) fn queue_slices(
        &mut self,
        fs: FsId,
        slices: impl IntoIterator<Item = Slice>,
        now: Timestamp,
    ) -> Result<(), DbError> {
        for s in slices.into_iter().filter(|s| s.id != 0) {
            self.t
                .put(&key::deletion(self.g, fs, s.id), &(s.len, now))?;
        }
        Ok(())
    }

    /// Deletes an inode's row and chunk maps for good; their slices go to the
    /// deletion queue.
    pub(crate) fn delete_inode(
        &mut self,
        fs: FsId,
        inode: &Inode,
        now: Timestamp,
    ) -> Result<(), DbError> {
        self.t.del(&key::inode(self.g, fs, inode.ino))?;
        self.drop_xattrs(fs, inode.ino)?;
        self.t.del(&key::locks(self.g, fs, inode.ino))?;
        let chunks = self
            .t
            .scan(&key::chunk_prefix(self.g, fs, inode.ino), None, usize::MAX)?;
        for (k, v) in chunks {
            let slices: Vec<Slice> = decode(&v)?;
            self.queue_slices(fs, slices, now)?;
            self.t.del(&k)?;
        }
        self.add_usage(fs, -1, -(inode.size as i64))
    }

    fn add_trash_usage(&mut self, fs: FsId, inodes: i64, bytes: i64) -> Result<(), DbError> {
        let k = key::trash_usage(self.g, fs);
        let mut u: Usage = self.t.load(&k)?.unwrap_or_default();
        u.inodes = u.inodes.saturating_add_signed(inodes);
        u.bytes = u.bytes.saturating_add_signed(bytes);
        self.t.put(&k, &u)
    }

    /// The last link of `inode` (not a directory, nlink already 0 and saved)
    /// went from `parent/name`: it moves to the trash.
    pub(crate) fn trash(
        &mut self,
        fs: FsId,
        inode: &Inode,
        from: Option<(Ino, &[u8])>,
        now: Timestamp,
    ) -> Result<(), DbError> {
        let (parent, name) = from.map_or((inode.parent, Vec::new()), |(p, n)| (p, n.to_vec()));
        let sec = now.sec.max(0) as u64;
        let row = TrashRow {
            deleted: now,
            parent,
            name,
        };
        self.t.put(&key::trash(self.g, fs, sec, inode.ino), &row)?;
        self.t.put(&key::trash_index(self.g, fs, inode.ino), &sec)?;
        self.add_trash_usage(fs, 1, inode.size as i64)
    }

    /// The trash row of `ino`, with its key, if it is in the trash.
    fn trash_row(&self, fs: FsId, ino: Ino) -> Result<Option<(Vec<u8>, TrashRow)>, DbError> {
        let Some(sec) = self.t.load::<u64>(&key::trash_index(self.g, fs, ino))? else {
            return Ok(None);
        };
        let k = key::trash(self.g, fs, sec, ino);
        Ok(self.t.load::<TrashRow>(&k)?.map(|row| (k, row)))
    }

    fn untrash(&mut self, fs: FsId, k: &[u8], inode: &Inode) -> Result<(), DbError> {
        self.t.del(k)?;
        self.t.del(&key::trash_index(self.g, fs, inode.ino))?;
        self.add_trash_usage(fs, -1, -(inode.size as i64))
    }

    /// A trashed file's size changed (an open handle wrote or truncated it).
    pub(crate) fn trash_resized(
        &mut self,
        fs: FsId,
        inode: &Inode,
        old_size: u64,
    ) -> Result<(), DbError> {
        if inode.nlink == 0 && self.trash_row(fs, inode.ino)?.is_some() {
            self.add_trash_usage(fs, 0, inode.size as i64 - old_size as i64)?;
        }
        Ok(())
    }

    /// Holds `inos` until `until`; an `until` in the past lets them go. A
    /// hold may come before the unlink it guards (the client holds what it
    /// is about to unlink), so inodes not in the trash are held too.
    pub(crate) fn hold(
        &mut self,
        fs: FsId,
        inos: &[Ino],
        until: Timestamp,
        now: Timestamp,
    ) -> Result<MetaResult, DbError> {
        for &ino in inos {
            let k = key::hold(self.g, fs, ino);
            if until > now && self.t.load_raw(&key::inode(self.g, fs, ino))?.is_some() {
                self.t.put(&k, &until)?;
            } else {
                self.t.del(&k)?;
            }
        }
        Ok(Ok(MetaResponse::Ok))
    }

    pub(crate) fn purge_trash(
        &mut self,
        fs: FsId,
        now: Timestamp,
        limit: u32,
    ) -> Result<MetaResult, DbError> {
        let due = due_rows(&*self.t, self.g, fs, now, limit.clamp(1, 4096) as usize)?;
        let mut purged = 0;
        for (k, _) in due {
            let ino = key::trash_ino(&k);
            match self.t.load::<Inode>(&key::inode(self.g, fs, ino))? {
                Some(inode) => {
                    self.untrash(fs, &k, &inode)?;
                    self.t.del(&key::hold(self.g, fs, ino))?;
                    self.delete_inode(fs, &inode, now)?;
                }
                None => {
                    self.t.del(&k)?;
                    self.t.del(&key::trash_index(self.g, fs, ino))?;
                }
            }
            purged += 1;
        }
        Ok(Ok(MetaResponse::Purged(purged)))
    }

    pub(crate) fn ack_deletions(
        &mut self,
        fs: FsId,
        slices: &[SliceId],
    ) -> Result<MetaResult, DbError> {
        for &s in slices {
            self.t.del(&key::deletion(self.g, fs, s))?;
        }
        Ok(Ok(MetaResponse::Ok))
    }

    pub(crate) fn restore_trash(
        &mut self,
        fs: FsId,
        ino: Ino,
        now: Timestamp,
    ) -> OpResult<(Inode, Inode)> {
        let Some((k, row)) = self.trash_row(fs, ino)? else {
            return Ok(Err(MetaError::Invalid(format!(
                "inode {ino} is not in the trash"
            ))));
        };
        let mut inode = tri!(self.inode(fs, ino)?);
        let mut dir = match self.inode(fs, row.parent)? {
            Ok(d) if d.kind == FileType::Dir && d.nlink > 0 => d,
            _ => {
                return Ok(Err(MetaError::NotFound));
            }
        };
        let base = if row.name.is_empty() {
            format!("restored-{ino}").into_bytes()
        } else {
            row.name.clone()
        };
        let mut name = base.clone();
        if self
            .t
            .load_raw(&key::dentry(self.g, fs, dir.ino, &name))?
            .is_some()
        {
            name = [&base[..], format!(".restored-{ino}").as_bytes()].concat();
        }
        tri!(validate_name(&name));
        let dkey = key::dentry(self.g, fs, dir.ino, &name);
        if self.t.load_raw(&dkey)?.is_some() {
            return Ok(Err(MetaError::Exists));
        }
        tri!(self.check_unlocked(fs, &[dir.ino, ino], &[(dir.ino, &name)])?);
        let back = super::quota::uncharge(&inode).undone().below(dir.ino);
        tri!(self.charge(fs, &[back])?);
        self.untrash(fs, &k, &inode)?;
        self.t.put(
            &dkey,
            &Dentry {
                ino,
                kind: inode.kind,
            },
        )?;
        inode.nlink = 1;
        inode.ctime = now;
        inode.parent = dir.ino;
        self.save(fs, &inode)?;
        dir.mtime = now;
        dir.ctime = now;
        self.save(fs, &dir)?;
        Ok(Ok((inode, dir)))
    }

    pub(crate) fn compact_chunk(
        &mut self,
        fs: FsId,
        ino: Ino,
        index: u32,
        old: &[Slice],
        new: Slice,
        now: Timestamp,
    ) -> Result<MetaResult, DbError> {
        let chunk_size = self.chunk_size(fs)?;
        if new.id == 0 || new.len == 0 || new.pos as u64 + new.len as u64 > chunk_size {
            return Ok(Err(MetaError::Invalid(format!(
                "slice {new:?} does not fit a chunk"
            ))));
        }
        let k = key::chunk(self.g, fs, ino, index);
        let list: Vec<Slice> = self.t.load(&k)?.unwrap_or_default();
        let unchanged = self.t.load_raw(&key::inode(self.g, fs, ino))?.is_some()
            && !old.is_empty()
            && list.len() >= old.len()
            && list[..old.len()] == *old;
        if !unchanged {
            // Written meanwhile, truncated or deleted: the new slice is garbage.
            self.queue_slices(fs, [new], now)?;
            return Ok(Ok(MetaResponse::Compacted(false)));
        }
        let mut compacted = Vec::with_capacity(1 + list.len() - old.len());
        compacted.push(new);
        compacted.extend_from_slice(&list[old.len()..]);
        self.t.put(&k, &compacted)?;
        self.queue_slices(fs, old.iter().copied(), now)?;
        Ok(Ok(MetaResponse::Compacted(true)))
    }
}
