//! Extended attributes, with a short-lived cache of each inode's attribute
//! names. The kernel asks for `security.capability` before every write to a
//! file (to clear it); without the cache that is one metaserver round trip
//! per write. Names are kept for the attribute TTL, like other attributes,
//! and dropped when this client changes them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use strata_meta::{Ino, MetaError, XattrMode};
use tokio::time::Instant;

use crate::error::{FsError, FsResult};
use crate::fs::Filesystem;

/// Inodes whose names are kept before the oldest are dropped.
const CACHED_INODES: usize = 4096;

/// The attribute names of one inode, and when they were read.
type Names = (Instant, HashSet<Vec<u8>>);

#[derive(Default)]
pub(crate) struct XattrNames {
    map: std::sync::Mutex<HashMap<Ino, Names>>,
}

impl XattrNames {
    fn get(&self, ino: Ino, ttl: Duration) -> Option<HashSet<Vec<u8>>> {
        let map = self.map.lock().unwrap();
        let (at, names) = map.get(&ino)?;
        (at.elapsed() < ttl).then(|| names.clone())
    }

    pub(crate) fn put(&self, ino: Ino, names: HashSet<Vec<u8>>) {
        let mut map = self.map.lock().unwrap();
        if map.len() >= CACHED_INODES {
            map.clear();
        }
        map.insert(ino, (Instant::now(), names));
    }

    fn forget(&self, ino: Ino) {
        self.map.lock().unwrap().remove(&ino);
    }
}

/// `flags` of setxattr(2).
const XATTR_CREATE: i32 = 1;
const XATTR_REPLACE: i32 = 2;

impl Filesystem {
    /// The names of `ino`'s attributes, from the cache when fresh.
    async fn xattr_names(&self, ino: Ino) -> FsResult<HashSet<Vec<u8>>> {
        if let Some(names) = self.xattr_names.get(ino, self.config.attr_ttl) {
            return Ok(names);
        }
        let names: HashSet<Vec<u8>> = self.meta.list_xattrs(ino).await?.into_iter().collect();
        self.xattr_names.put(ino, names.clone());
        Ok(names)
    }

    pub async fn getxattr(&self, ino: Ino, name: &[u8]) -> FsResult<Vec<u8>> {
        if !self.xattr_names(ino).await?.contains(name) {
            return Err(MetaError::NoXattr.into());
        }
        match self.meta.get_xattr(ino, name).await {
            Err(MetaError::NoXattr) => {
                // Removed by another client since the names were read.
                self.xattr_names.forget(ino);
                Err(MetaError::NoXattr.into())
            }
            other => Ok(other?),
        }
    }

    pub async fn listxattr(&self, ino: Ino) -> FsResult<Vec<Vec<u8>>> {
        let mut names: Vec<Vec<u8>> = self.xattr_names(ino).await?.into_iter().collect();
        names.sort();
        Ok(names)
    }

    pub async fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        if self.config.read_only {
            return Err(FsError::new(libc::EROFS, "mounted read-only"));
        }
        let mode = match flags & (XATTR_CREATE | XATTR_REPLACE) {
            0 => XattrMode::Any,
            XATTR_CREATE => XattrMode::Create,
            XATTR_REPLACE => XattrMode::Replace,
            _ => {
                return Err(FsError::new(
                    libc::EINVAL,
                    "XATTR_CREATE and XATTR_REPLACE exclude each other",
                ));
            }
        };
        self.xattr_names.forget(ino);
        self.meta.set_xattr(ino, name, value, mode).await?;
        Ok(())
    }

    pub async fn removexattr(&self, ino: Ino, name: &[u8]) -> FsResult<()> {
        if self.config.read_only {
            return Err(FsError::new(libc::EROFS, "mounted read-only"));
        }
        self.xattr_names.forget(ino);
        self.meta.remove_xattr(ino, name).await?;
        Ok(())
    }
}
