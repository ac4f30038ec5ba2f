use strata_meta::MetaError;

/// An error of the filesystem core: the errno the caller gets and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsError {
    pub errno: i32,
    pub message: String,
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        FsError {
            errno,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (errno {})", self.message, self.errno)
    }
}

impl std::error::Error for FsError {}

impl From<MetaError> for FsError {
    fn from(e: MetaError) -> Self {
        FsError::new(e.errno(), e.to_string())
    }
}

impl From<strata_cache::StoreError> for FsError {
    fn from(e: strata_cache::StoreError) -> Self {
        FsError::new(libc::EIO, format!("object store: {e}"))
    }
}
