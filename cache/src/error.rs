/// Errors of the object-store layer.
#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    #[error("object {key} not found")]
    NotFound { key: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "S3 {op} of {key} failed: {message} (check the endpoint, bucket, credentials and region)"
    )]
    S3 {
        op: &'static str,
        key: String,
        message: String,
    },
    #[error("storage URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}
