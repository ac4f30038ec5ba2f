use std::sync::Arc;

use strata_meta::MetaError;

/// An error of the filesystem core: the errno the caller gets, what failed,
/// the error underneath (a metaserver or object-store error) when there is
/// one, and how loudly the adapter logs it.
#[derive(Debug, Clone)]
pub struct FsError {
    pub errno: i32,
    /// What failed; empty when the source says it all.
    pub message: String,
    pub level: Level,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

pub type FsResult<T> = Result<T, FsError>;

/// How much an error says about the health of the mount, hence the level
/// it is logged at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// An answer the caller expects to get now and then: no such name, the
    /// name exists, the directory is not empty, the lock is taken, the
    /// mount is read-only, no such extended attribute.
    Debug,
    /// Out of space, or the kernel named a handle this client does not
    /// know: worth a look, the mount goes on.
    Warn,
    /// The metaserver or the object store failed: data may not have
    /// reached where the caller believes it is.
    Error,
}

impl Level {
    /// The level an error with `errno` gets unless its maker says otherwise.
    pub fn for_errno(errno: i32) -> Level {
        match errno {
            libc::EIO => Level::Error,
            libc::ENOSPC | libc::EBADF | libc::ESTALE => Level::Warn,
            _ => Level::Debug,
        }
    }
}

impl FsError {
    /// An error at the level its errno implies (`Level::for_errno`).
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        FsError {
            errno,
            message: message.into(),
            level: Level::for_errno(errno),
            source: None,
        }
    }

    /// The same error, caused by `source` (shown after the message).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The same error under another errno, at that errno's level.
    pub fn with_errno(mut self, errno: i32) -> Self {
        self.errno = errno;
        self.level = Level::for_errno(errno);
        self
    }
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.source, self.message.is_empty()) {
            (Some(source), true) => write!(f, "{source}")?,
            (Some(source), false) => write!(f, "{}: {source}", self.message)?,
            (None, _) => write!(f, "{}", self.message)?,
        }
        write!(f, " (errno {})", self.errno)
    }
}

impl std::error::Error for FsError {
    /// The error underneath, also part of `Display` (callers of this crate
    /// print the error alone).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<MetaError> for FsError {
    fn from(e: MetaError) -> Self {
        FsError::new(e.errno(), String::new()).with_source(e)
    }
}

impl From<strata_cache::StoreError> for FsError {
    fn from(e: strata_cache::StoreError) -> Self {
        FsError::new(libc::EIO, "object store").with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn metaserver_errors_keep_their_source_and_text() {
        let e = FsError::from(MetaError::NotFound);
        assert_eq!(e.errno, libc::ENOENT);
        assert_eq!(e.level, Level::Debug);
        assert_eq!(e.to_string(), "no such file or directory (errno 2)");
        let source = e.source().and_then(|s| s.downcast_ref::<MetaError>());
        assert_eq!(source, Some(&MetaError::NotFound));

        let e = FsError::from(MetaError::Unavailable("no leader".into()));
        assert_eq!((e.errno, e.level), (libc::EIO, Level::Error));
    }

    #[test]
    fn levels_follow_the_errno() {
        assert_eq!(FsError::new(libc::EEXIST, "x").level, Level::Debug);
        assert_eq!(FsError::new(libc::EAGAIN, "x").level, Level::Debug);
        assert_eq!(FsError::new(libc::EROFS, "x").level, Level::Debug);
        assert_eq!(FsError::new(libc::ENODATA, "x").level, Level::Debug);
        assert_eq!(FsError::new(libc::EBADF, "x").level, Level::Warn);
        assert_eq!(FsError::new(libc::EIO, "x").level, Level::Error);
        let stale = FsError::new(libc::ESTALE, "reading block k").with_source(MetaError::NotFound);
        let e = stale.with_errno(libc::EIO);
        assert_eq!((e.errno, e.level), (libc::EIO, Level::Error));
        assert_eq!(
            e.to_string(),
            "reading block k: no such file or directory (errno 5)"
        );
    }
}
