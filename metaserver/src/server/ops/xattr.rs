//! Extended attributes: rows `(group, XATTR, fs, ino, name) -> value` in the
//! inode's group, so setting one is one log entry and listing them one range
//! scan. Which namespaces a caller may touch (user., trusted., security.) is
//! checked by the kernel before the request arrives; the limits here are
//! Linux's (names up to 255 bytes, values up to 64 KiB) plus a cap on all of
//! one inode's attributes together, so one inode cannot grow without bound.

use crate::MetaError;
use crate::request::{MetaResponse, MetaResult, XattrMode};
use crate::server::ops::{Ctx, tri};
use crate::server::store::{DbError, Rows, RowsMut, decode, key};
use crate::types::*;

/// Longest attribute name (Linux XATTR_NAME_MAX).
pub const MAX_XATTR_NAME: usize = 255;
/// Largest value (Linux XATTR_SIZE_MAX).
pub const MAX_XATTR_VALUE: usize = 64 << 10;
/// Names and values of one inode together.
pub const MAX_XATTRS_PER_INODE: usize = 1 << 20;

fn check_name(name: &[u8]) -> Result<(), MetaError> {
    if name.is_empty() || name.len() > MAX_XATTR_NAME || name.contains(&0) {
        return Err(MetaError::Invalid(format!(
            "extended attribute names are 1 to {MAX_XATTR_NAME} bytes without NUL"
        )));
    }
    Ok(())
}

fn exists<T: Rows>(t: &T, g: GroupId, fs: FsId, ino: Ino) -> Result<bool, DbError> {
    Ok(t.load_raw(&key::inode(g, fs, ino))?.is_some())
}

/// Answers `GetXattr`.
pub(crate) fn get<T: Rows>(
    t: &T,
    g: GroupId,
    fs: FsId,
    ino: Ino,
    name: &[u8],
) -> Result<MetaResult, DbError> {
    if !exists(t, g, fs, ino)? {
        return Ok(Err(MetaError::NotFound));
    }
    Ok(match t.load::<Vec<u8>>(&key::xattr(g, fs, ino, name))? {
        Some(v) => Ok(MetaResponse::Xattr(v)),
        None => Err(MetaError::NoXattr),
    })
}

/// Answers `ListXattrs`.
pub(crate) fn list<T: Rows>(t: &T, g: GroupId, fs: FsId, ino: Ino) -> Result<MetaResult, DbError> {
    if !exists(t, g, fs, ino)? {
        return Ok(Err(MetaError::NotFound));
    }
    let prefix = key::xattr_prefix(g, fs, ino);
    let names = t
        .scan(&prefix, None, usize::MAX)?
        .into_iter()
        .map(|(k, _)| k[prefix.len()..].to_vec())
        .collect();
    Ok(Ok(MetaResponse::XattrNames(names)))
}

impl<T: RowsMut> Ctx<'_, T> {
    /// Bytes of names and values `ino` holds now.
    fn xattr_bytes(&self, fs: FsId, ino: Ino) -> Result<usize, DbError> {
        let prefix = key::xattr_prefix(self.g, fs, ino);
        let mut total = 0;
        for (k, v) in self.t.scan(&prefix, None, usize::MAX)? {
            total += k.len() - prefix.len() + decode::<Vec<u8>>(&v)?.len();
        }
        Ok(total)
    }

    pub(crate) fn set_xattr(
        &mut self,
        fs: FsId,
        ino: Ino,
        name: &[u8],
        value: Vec<u8>,
        mode: XattrMode,
        now: Timestamp,
    ) -> Result<MetaResult, DbError> {
        tri!(check_name(name));
        if value.len() > MAX_XATTR_VALUE {
            return Ok(Err(MetaError::TooBig(format!(
                "a value of {} bytes (at most {MAX_XATTR_VALUE})",
                value.len()
            ))));
        }
        let mut inode = tri!(self.inode(fs, ino)?);
        tri!(self.check_unlocked(fs, &[ino], &[])?);
        let k = key::xattr(self.g, fs, ino, name);
        let old = self.t.load::<Vec<u8>>(&k)?;
        match (mode, &old) {
            (XattrMode::Create, Some(_)) => return Ok(Err(MetaError::Exists)),
            (XattrMode::Replace, None) => return Ok(Err(MetaError::NoXattr)),
            _ => {}
        }
        let was = old.as_ref().map_or(0, |v| name.len() + v.len());
        let total = self.xattr_bytes(fs, ino)? - was + name.len() + value.len();
        if total > MAX_XATTRS_PER_INODE {
            return Ok(Err(MetaError::TooBig(format!(
                "the inode's extended attributes would take {total} bytes (at most {MAX_XATTRS_PER_INODE})"
            ))));
        }
        self.t.put(&k, &value)?;
        inode.ctime = now;
        self.save(fs, &inode)?;
        Ok(Ok(MetaResponse::Inode(inode)))
    }

    pub(crate) fn remove_xattr(
        &mut self,
        fs: FsId,
        ino: Ino,
        name: &[u8],
        now: Timestamp,
    ) -> Result<MetaResult, DbError> {
        tri!(check_name(name));
        let mut inode = tri!(self.inode(fs, ino)?);
        tri!(self.check_unlocked(fs, &[ino], &[])?);
        let k = key::xattr(self.g, fs, ino, name);
        if self.t.load_raw(&k)?.is_none() {
            return Ok(Err(MetaError::NoXattr));
        }
        self.t.del(&k)?;
        inode.ctime = now;
        self.save(fs, &inode)?;
        Ok(Ok(MetaResponse::Inode(inode)))
    }

    /// Drops every extended attribute of an inode that is going away.
    pub(crate) fn drop_xattrs(&mut self, fs: FsId, ino: Ino) -> Result<(), DbError> {
        for (k, _) in self
            .t
            .scan(&key::xattr_prefix(self.g, fs, ino), None, usize::MAX)?
        {
            self.t.del(&k)?;
        }
        Ok(())
    }
}
