//! Blocks as files under a directory: the embedded default and `file://` storage.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{ObjectInfo, ObjectStore};
use crate::StoreError;

pub struct LocalStore {
    root: PathBuf,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Result<LocalStore, StoreError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io(format!("creating {}", root.display())))?;
        Ok(LocalStore { root })
    }

    /// Keys are relative paths; anything that could escape the root is refused.
    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let bad = key.is_empty()
            || key.starts_with('/')
            || key
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            || key.contains('\0');
        if bad {
            return Err(StoreError::InvalidUrl {
                url: key.to_string(),
                reason: "object keys must be relative paths without empty, '.' or '..' parts"
                    .into(),
            });
        }
        Ok(self.root.join(key))
    }
}

fn not_found(key: &str) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            StoreError::NotFound {
                key: key.to_string(),
            }
        } else {
            StoreError::Io {
                context: format!("reading {key}"),
                source: e,
            }
        }
    }
}

fn put_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("object paths have a parent");
    std::fs::create_dir_all(dir)?;
    // Written under a temporary name and renamed, so readers never see half an object.
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn read_range(path: &Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<ObjectInfo>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        let ty = e.file_type()?;
        if ty.is_dir() {
            walk(root, &e.path(), out)?;
        } else if !e.file_name().to_string_lossy().starts_with(".tmp-") {
            let rel = e
                .path()
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let md = e.metadata()?;
            out.push(ObjectInfo {
                key: rel,
                size: md.len(),
                modified: md.modified().ok(),
            });
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let path = self.path(key)?;
        tokio::task::spawn_blocking(move || put_file(&path, &data))
            .await
            .map_err(|e| StoreError::Io {
                context: format!("writing {key}"),
                source: std::io::Error::other(e),
            })?
            .map_err(io(format!("writing {key}")))
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        let res = tokio::task::spawn_blocking(move || read_range(&path, offset, len))
            .await
            .map_err(|e| StoreError::Io {
                context: format!("reading {key}"),
                source: std::io::Error::other(e),
            })?;
        match res {
            Ok(b) => Ok(Bytes::from(b)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(StoreError::Io {
                context: format!("reading {len} bytes at {offset} of {key}: the object is shorter"),
                source: e,
            }),
            Err(e) => Err(not_found(key)(e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        tokio::fs::read(&path)
            .await
            .map(Bytes::from)
            .map_err(not_found(key))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(format!("deleting {key}"))(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self
            .list_detailed(prefix)
            .await?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect())
    }

    async fn list_detailed(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let mut all = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, &mut out).map(|_| out)
        })
        .await
        .map_err(|e| StoreError::Io {
            context: "listing".into(),
            source: std::io::Error::other(e),
        })?
        .map_err(io("listing objects"))?;
        all.retain(|o| o.key.starts_with(&prefix));
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_range_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path()).unwrap();
        s.put("a/b/1", Bytes::from_static(b"hello world"))
            .await
            .unwrap();
        s.put("a/c", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(
            s.get("a/b/1").await.unwrap(),
            Bytes::from_static(b"hello world")
        );
        assert_eq!(
            s.get_range("a/b/1", 6, 5).await.unwrap(),
            Bytes::from_static(b"world")
        );
        assert!(
            s.get_range("a/b/1", 6, 50).await.is_err(),
            "short object is an error"
        );
        assert!(s.get("nope").await.unwrap_err().is_not_found());
        assert_eq!(
            s.list("a/").await.unwrap(),
            vec![("a/b/1".to_string(), 11), ("a/c".to_string(), 1)]
        );
        s.delete("a/c").await.unwrap();
        s.delete("a/c").await.unwrap();
        assert_eq!(s.list("").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn keys_that_escape_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path()).unwrap();
        for k in ["", "/abs", "a/../b", "a//b", "./a"] {
            assert!(s.put(k, Bytes::new()).await.is_err(), "{k}");
        }
    }
}
