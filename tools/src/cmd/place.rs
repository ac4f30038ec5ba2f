//! Where `export` writes and `import` reads: a prefix of an S3 bucket
//! (any endpoint, through the standard AWS configuration) or a local
//! directory, with the same relative paths in both.
//!
//! What an exported object came from is kept with it (S3 user metadata, or
//! the `user.strata.export` extended attribute of a local file), so an
//! interrupted export can tell which objects are already complete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use strata_cache::{ObjectStore, S3Store, StoreOptions};

use super::CliError;

/// The extended attribute holding an exported local file's metadata.
const LOCAL_META_XATTR: &str = "user.strata.export";

pub enum Place {
    S3(S3Store),
    Dir(PathBuf),
}

/// Size and metadata of something already at a place.
pub struct Existing {
    pub size: u64,
    pub meta: HashMap<String, String>,
}

/// A large object being written in parts (numbered from 1, any order).
pub enum Upload {
    S3 {
        key: String,
        id: String,
    },
    Dir {
        tmp: PathBuf,
        dest: PathBuf,
        file: std::fs::File,
    },
}

fn err(what: String) -> impl FnOnce(std::io::Error) -> CliError {
    move |e| CliError(format!("{what}: {e}"))
}

/// Relative paths must stay inside the place: no empty, `.` or `..` parts.
fn check_rel(rel: &str) -> Result<(), CliError> {
    if rel.is_empty()
        || rel.starts_with('/')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(CliError(format!(
            "{rel:?} is not a relative path inside the place"
        )));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CliError> + Send + 'static,
) -> Result<T, CliError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CliError(format!("worker thread: {e}")))?
}

impl Place {
    /// Opens `s3://bucket[/prefix]` or `file:///abs/dir`.
    pub async fn open(url: &str) -> Result<Place, CliError> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(CliError(format!(
                    "{url}: a file URL needs an absolute path, like file:///data/export"
                )));
            }
            return Ok(Place::Dir(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(CliError(format!(
                    "{url}: name a bucket, like s3://bucket/prefix"
                )));
            }
            let store = S3Store::new(bucket, prefix.trim_matches('/'), &StoreOptions::default())
                .await
                .map_err(|e| CliError(format!("{url}: {e}")))?;
            return Ok(Place::S3(store));
        }
        Err(CliError(format!(
            "{url}: use s3://bucket/prefix or file:///dir"
        )))
    }

    pub fn describe(&self) -> String {
        match self {
            Place::S3(s) => s.describe(),
            Place::Dir(d) => format!("file://{}", d.display()),
        }
    }

    /// What is at `rel` already, if anything.
    pub async fn existing(&self, rel: &str) -> Result<Option<Existing>, CliError> {
        check_rel(rel)?;
        match self {
            Place::S3(s) => Ok(s
                .head(rel)
                .await
                .map_err(|e| CliError(format!("{rel}: {e}")))?
                .map(|h| Existing {
                    size: h.size,
                    meta: h.meta,
                })),
            Place::Dir(d) => {
                let path = d.join(rel);
                blocking(move || {
                    let Ok(md) = std::fs::symlink_metadata(&path) else {
                        return Ok(None);
                    };
                    if !md.is_file() {
                        return Ok(None);
                    }
                    let meta = read_xattr(&path, LOCAL_META_XATTR)
                        .and_then(|v| serde_json::from_slice(&v).ok())
                        .unwrap_or_default();
                    Ok(Some(Existing {
                        size: md.len(),
                        meta,
                    }))
                })
                .await
            }
        }
    }

    /// Writes `data` whole at `rel` with `meta`.
    pub async fn put(
        &self,
        rel: &str,
        data: Bytes,
        meta: &HashMap<String, String>,
    ) -> Result<(), CliError> {
        check_rel(rel)?;
        match self {
            Place::S3(s) => s
                .put_with_meta(rel, data, meta)
                .await
                .map_err(|e| CliError(format!("{rel}: {e}"))),
            Place::Dir(_) => {
                let up = self.begin(rel, meta).await?;
                self.put_part(&up, 1, 0, data).await?;
                self.finish(up, vec![(1, String::new())], meta).await
            }
        }
    }

    /// Writes `data` at `rel`: in one request, or in parts of `part_size`
    /// when it is larger.
    pub async fn put_in_parts(
        &self,
        rel: &str,
        data: Bytes,
        part_size: u64,
        meta: &HashMap<String, String>,
    ) -> Result<(), CliError> {
        if data.len() as u64 <= part_size {
            return self.put(rel, data, meta).await;
        }
        let up = self.begin(rel, meta).await?;
        let mut parts = Vec::new();
        for (n, piece) in data.chunks(part_size as usize).enumerate() {
            let offset = n as u64 * part_size;
            match self
                .put_part(&up, n as i32 + 1, offset, data.slice_ref(piece))
                .await
            {
                Ok(p) => parts.push(p),
                Err(e) => {
                    self.abort(up).await;
                    return Err(e);
                }
            }
        }
        self.finish(up, parts, meta).await
    }

    /// Starts writing a large object at `rel`: it appears at `finish`.
    pub async fn begin(
        &self,
        rel: &str,
        meta: &HashMap<String, String>,
    ) -> Result<Upload, CliError> {
        check_rel(rel)?;
        match self {
            Place::S3(s) => Ok(Upload::S3 {
                key: rel.to_string(),
                id: s
                    .begin_multipart(rel, meta)
                    .await
                    .map_err(|e| CliError(format!("{rel}: {e}")))?,
            }),
            Place::Dir(d) => {
                let dest = d.join(rel);
                blocking(move || {
                    let dir = dest.parent().expect("relative paths have a parent");
                    std::fs::create_dir_all(dir)
                        .map_err(err(format!("creating {}", dir.display())))?;
                    let name = dest.file_name().expect("checked").to_string_lossy();
                    let tmp = dir.join(format!(".{name}.strata-partial"));
                    let file = std::fs::File::create(&tmp)
                        .map_err(err(format!("creating {}", tmp.display())))?;
                    Ok(Upload::Dir { tmp, dest, file })
                })
                .await
            }
        }
    }

    /// Writes part `number` (from 1), which starts at byte `offset`; returns
    /// what `finish` needs of it.
    pub async fn put_part(
        &self,
        up: &Upload,
        number: i32,
        offset: u64,
        data: Bytes,
    ) -> Result<(i32, String), CliError> {
        match (self, up) {
            (Place::S3(s), Upload::S3 { key, id }) => {
                let etag = s
                    .put_part(key, id, number, data)
                    .await
                    .map_err(|e| CliError(format!("{key}: {e}")))?;
                Ok((number, etag))
            }
            (Place::Dir(_), Upload::Dir { tmp, file, .. }) => {
                use std::os::unix::fs::FileExt;
                let file = file.try_clone().map_err(err(tmp.display().to_string()))?;
                let tmp = tmp.clone();
                blocking(move || {
                    file.write_all_at(&data, offset)
                        .map_err(err(format!("writing {}", tmp.display())))?;
                    Ok((number, String::new()))
                })
                .await
            }
            _ => unreachable!("an upload belongs to the place that began it"),
        }
    }

    /// Makes the object visible at its path.
    pub async fn finish(
        &self,
        up: Upload,
        mut parts: Vec<(i32, String)>,
        meta: &HashMap<String, String>,
    ) -> Result<(), CliError> {
        parts.sort();
        match (self, up) {
            (Place::S3(s), Upload::S3 { key, id }) => {
                if let Err(e) = s.finish_multipart(&key, &id, parts).await {
                    s.abort_multipart(&key, &id).await;
                    return Err(CliError(format!("{key}: {e}")));
                }
                Ok(())
            }
            (Place::Dir(_), Upload::Dir { tmp, dest, file }) => {
                let meta = serde_json::to_vec(meta).expect("a map of strings encodes");
                blocking(move || {
                    drop(file);
                    // The metadata goes on before the rename, so a file at
                    // its final name always says what it holds.
                    write_xattr(&tmp, LOCAL_META_XATTR, &meta);
                    std::fs::rename(&tmp, &dest)
                        .map_err(err(format!("renaming to {}", dest.display())))
                })
                .await
            }
            _ => unreachable!("an upload belongs to the place that began it"),
        }
    }

    /// Abandons an upload.
    pub async fn abort(&self, up: Upload) {
        match (self, up) {
            (Place::S3(s), Upload::S3 { key, id }) => s.abort_multipart(&key, &id).await,
            (Place::Dir(_), Upload::Dir { tmp, .. }) => {
                let _ = std::fs::remove_file(tmp);
            }
            _ => {}
        }
    }

    /// Every object (file) under the place with its size, by relative path.
    pub async fn list(&self) -> Result<Vec<(String, u64)>, CliError> {
        match self {
            Place::S3(s) => s
                .list("")
                .await
                .map_err(|e| CliError(format!("listing {}: {e}", s.describe()))),
            Place::Dir(d) => {
                let root = d.clone();
                blocking(move || {
                    let mut out = Vec::new();
                    if !root.exists() {
                        return Ok(out);
                    }
                    walk_dir(&root, &root, &mut out)?;
                    out.sort();
                    Ok(out)
                })
                .await
            }
        }
    }

    /// `len` bytes of `rel` from `offset`.
    pub async fn read(&self, rel: &str, offset: u64, len: u64) -> Result<Bytes, CliError> {
        check_rel(rel)?;
        match self {
            Place::S3(s) => s
                .get_range(rel, offset, len)
                .await
                .map_err(|e| CliError(format!("{rel}: {e}"))),
            Place::Dir(d) => {
                let path = d.join(rel);
                blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let f = std::fs::File::open(&path).map_err(err(path.display().to_string()))?;
                    let mut buf = vec![0; len as usize];
                    f.read_exact_at(&mut buf, offset)
                        .map_err(err(format!("reading {}", path.display())))?;
                    Ok(Bytes::from(buf))
                })
                .await
            }
        }
    }

    /// The whole of `rel`, or None if it is not there.
    pub async fn read_all(&self, rel: &str) -> Result<Option<Bytes>, CliError> {
        match self.existing(rel).await? {
            None => Ok(None),
            Some(e) => Ok(Some(self.read(rel, 0, e.size).await?)),
        }
    }
}

/// A progress bar over `total` bytes for export and import (hidden with `quiet`).
pub fn progress_bar(total: u64, quiet: bool) -> indicatif::ProgressBar {
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {msg} ({elapsed})",
        )
        .expect("a valid template"),
    );
    bar
}

fn walk_dir(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> Result<(), CliError> {
    for e in std::fs::read_dir(dir).map_err(err(format!("listing {}", dir.display())))? {
        let e = e.map_err(err(format!("listing {}", dir.display())))?;
        let ft = e.file_type().map_err(err(e.path().display().to_string()))?;
        if ft.is_dir() {
            walk_dir(root, &e.path(), out)?;
        } else if ft.is_file() {
            let path = e.path();
            let rel = path.strip_prefix(root).expect("under the root");
            let Some(rel) = rel.to_str() else { continue };
            if rel.ends_with(".strata-partial") {
                continue;
            }
            let len = e.metadata().map_err(err(path.display().to_string()))?.len();
            out.push((rel.to_string(), len));
        }
    }
    Ok(())
}

fn read_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and a buffer of the length given.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return None;
    }
    buf.truncate(len as usize);
    Some(buf)
}

/// Best effort: a directory on a filesystem without user xattrs still gets
/// the files, only a resumed export writes them again.
fn write_xattr(path: &Path, name: &str, value: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(p), Ok(n)) = (
        std::ffi::CString::new(path.as_os_str().as_bytes()),
        std::ffi::CString::new(name),
    ) else {
        return;
    };
    // SAFETY: valid C strings and a buffer of the length given.
    unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
}
