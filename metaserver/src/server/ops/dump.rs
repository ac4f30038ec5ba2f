//! Metadata dump and load (`strata dump`, `strata load`): a filesystem's
//! rows read page by page in each group, and written into a new
//! filesystem, which keeps the inode numbers and chunk maps so it reads the
//! same blocks.

use crate::MetaError;
use crate::request::{MetaResponse, MetaResult};
use crate::server::ops::{Ctx, PartState, tri};
use crate::server::store::{DbError, Rows, RowsMut, decode, key};
use crate::types::*;

/// Answers `DumpRows`.
pub(crate) fn dump_rows<T: Rows>(
    t: &T,
    g: GroupId,
    fs: FsId,
    kind: TreeRowKind,
    after: Option<Vec<u8>>,
    limit: u32,
) -> Result<MetaResult, DbError> {
    let limit = limit.clamp(1, 4096) as usize;
    let tag = match kind {
        TreeRowKind::Inodes => key::INODE,
        TreeRowKind::Entries => key::DENTRY,
        TreeRowKind::Chunks => key::CHUNK,
        TreeRowKind::Xattrs => key::XATTR,
    };
    let prefix = &key::rows_of(g, tag, fs);
    if after.as_ref().is_some_and(|a| !a.starts_with(prefix)) {
        return Ok(Err(MetaError::Invalid(
            "a dump cursor of another kind".into(),
        )));
    }
    let page = t.scan(prefix, after.as_deref(), limit)?;
    let next = (page.len() == limit).then(|| page.last().expect("full").0.clone());
    let ino_at =
        |k: &[u8], at: usize| u64::from_be_bytes(k[at..at + 8].try_into().expect("8 bytes"));
    // Inode numbers follow the group, tag and filesystem id.
    let base = prefix.len();
    let live = |ino: Ino| -> Result<bool, DbError> {
        Ok(t.load::<Inode>(&key::inode(g, fs, ino))?
            .is_some_and(|i| i.nlink > 0))
    };
    let mut rows = Vec::with_capacity(page.len());
    for (k, v) in page {
        let row = match kind {
            TreeRowKind::Inodes => {
                let inode: Inode = decode(&v)?;
                if inode.nlink == 0 {
                    continue;
                }
                TreeRow::Inode(inode)
            }
            TreeRowKind::Entries => TreeRow::Entry {
                parent: ino_at(&k, base),
                name: k[base + 8..].to_vec(),
                entry: decode(&v)?,
            },
            TreeRowKind::Chunks => {
                let ino = ino_at(&k, base);
                if !live(ino)? {
                    continue;
                }
                TreeRow::Chunk {
                    ino,
                    index: u32::from_be_bytes(k[base + 8..base + 12].try_into().expect("4 bytes")),
                    slices: decode(&v)?,
                }
            }
            TreeRowKind::Xattrs => {
                let ino = ino_at(&k, base);
                if !live(ino)? {
                    continue;
                }
                TreeRow::Xattr {
                    ino,
                    name: k[base + 8..].to_vec(),
                    value: decode(&v)?,
                }
            }
        };
        rows.push(row);
    }
    Ok(Ok(MetaResponse::Rows { rows, next }))
}

impl<T: RowsMut> Ctx<'_, T> {
    /// Writes rows of filesystem `fs` (one `strata load` is making). Every
    /// row is checked before any is written: a damaged dump changes nothing.
    pub(crate) fn load_rows(
        &mut self,
        fs: FsId,
        layout: FsId,
        rows: Vec<TreeRow>,
    ) -> Result<MetaResult, DbError> {
        if crate::server::ops::snapshot::read_only(&*self.t, self.g, fs)? {
            return Ok(Err(MetaError::ReadOnly(format!(
                "filesystem {fs} is a snapshot"
            ))));
        }
        let mut parts: Vec<(Vec<u8>, PartState)> = Vec::new();
        for (k, v) in self
            .t
            .scan(&key::part_state_prefix(self.g, layout), None, usize::MAX)?
        {
            parts.push((k, decode(&v)?));
        }
        if parts.is_empty() {
            return Ok(Err(MetaError::Invalid(format!(
                "filesystem {fs} has no partition in group {}",
                self.g
            ))));
        }
        for row in &rows {
            if let TreeRow::Entry { name, .. } = row {
                tri!(validate_name(name));
            }
            if !parts.iter().any(|(_, p)| p.part.contains(row.home())) {
                return Ok(Err(MetaError::CrossGroup(format!(
                    "inode {} is not in group {}",
                    row.home(),
                    self.g
                ))));
            }
        }
        let mut moved = false;
        for row in rows {
            match row {
                TreeRow::Inode(inode) => {
                    let k = key::inode(self.g, fs, inode.ino);
                    // The root exists from the start; a reload overwrites.
                    if let Some(old) = self.t.load::<Inode>(&k)? {
                        self.add_usage(fs, -1, -(old.size as i64))?;
                    }
                    self.add_usage(fs, 1, inode.size as i64)?;
                    for (_, p) in parts.iter_mut().filter(|_| layout == fs) {
                        if p.part.contains(inode.ino) && p.next_ino <= inode.ino {
                            p.next_ino = inode.ino + 1;
                            moved = true;
                        }
                    }
                    self.t.put(&k, &inode)?;
                }
                TreeRow::Entry {
                    parent,
                    name,
                    entry,
                } => self
                    .t
                    .put(&key::dentry(self.g, fs, parent, &name), &entry)?,
                TreeRow::Chunk { ino, index, slices } => {
                    self.t.put(&key::chunk(self.g, fs, ino, index), &slices)?
                }
                TreeRow::Xattr { ino, name, value } => {
                    self.t.put(&key::xattr(self.g, fs, ino, &name), &value)?
                }
            }
        }
        if moved {
            for (k, p) in &parts {
                self.t.put(k, p)?;
            }
        }
        Ok(Ok(MetaResponse::Ok))
    }

    /// Group 0: slice ids of `fs` continue from `at_least` or later.
    pub(crate) fn raise_slice_floor(
        &mut self,
        fs: FsId,
        at_least: SliceId,
    ) -> Result<MetaResult, DbError> {
        let k = key::counter(self.g, &format!("slice:{fs}"));
        let cur: u64 = self.t.load(&k)?.unwrap_or(1);
        self.t.put(&k, &cur.max(at_least))?;
        Ok(Ok(MetaResponse::Ok))
    }
}
