//! Where blocks live: an S3 bucket or a local directory, behind one trait.

mod local;
mod s3;

use std::sync::Arc;

use bytes::Bytes;

pub use local::LocalStore;
pub use s3::S3Store;

use crate::StoreError;

#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores the object whole; never leaves a partial object visible under `key`.
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError>;
    /// Exactly `len` bytes from `offset` (an error if the object is shorter).
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError>;
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    /// Deleting a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Keys under `prefix` with their sizes, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError>;
    fn describe(&self) -> String;
}

#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// S3 endpoint; without it aws-config's chain (AWS_ENDPOINT_URL, profiles) decides.
    pub s3_endpoint: Option<String>,
    /// Path-style addressing (`host/bucket/key`); always used with a custom endpoint.
    pub path_style: bool,
    pub region: Option<String>,
    /// Static credentials instead of the AWS chain.
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
}

/// Opens `file:///abs/dir` or `s3://bucket[/prefix]`.
pub async fn open_store(
    url: &str,
    opts: &StoreOptions,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let invalid = |reason: &str| StoreError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(invalid(
                "a file URL needs an absolute path, like file:///var/lib/strata",
            ));
        }
        return Ok(Arc::new(LocalStore::new(path)?));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("name a bucket, like s3://bucket/prefix"));
        }
        return Ok(Arc::new(
            S3Store::new(bucket, prefix.trim_matches('/'), opts).await?,
        ));
    }
    Err(invalid("use s3://bucket/prefix or file:///dir"))
}
