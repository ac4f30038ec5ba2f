//! Where blocks live: an S3 bucket or a local directory, behind one trait.

pub mod checksum;
mod local;
mod s3;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use local::LocalStore;
pub use s3::{ObjectHead, S3Store};

use crate::StoreError;

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub modified: Option<std::time::SystemTime>,
}

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
    /// `list` with modification times where the store keeps them (`strata
    /// gc` deletes only leaks old enough not to belong to a write that is
    /// about to commit).
    async fn list_detailed(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        Ok(self
            .list(prefix)
            .await?
            .into_iter()
            .map(|(key, size)| ObjectInfo {
                key,
                size,
                modified: None,
            })
            .collect())
    }
    fn describe(&self) -> String;
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// S3 endpoint; without it aws-config's chain (AWS_ENDPOINT_URL, profiles) decides.
    pub s3_endpoint: Option<String>,
    /// Path-style addressing (`host/bucket/key`); always used with a custom endpoint.
    pub path_style: bool,
    pub region: Option<String>,
    /// Static credentials instead of the AWS chain.
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// How long opening a connection to S3 may take (default 5 s).
    pub connect_timeout: Duration,
    /// How long one attempt of one request may take, and separately how long
    /// a GET's body may take to arrive (default 60 s: a 4 MiB block at
    /// 70 KB/s). A server that hangs costs this much, then the attempt fails
    /// as transient.
    pub attempt_timeout: Duration,
    /// Attempts the AWS SDK makes itself per request (its standard retry
    /// mode, default 3). 1 leaves all retrying to a `RetryingStore` above,
    /// which logs each retry.
    pub s3_attempts: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            s3_endpoint: None,
            path_style: false,
            region: None,
            access_key: None,
            secret_key: None,
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(60),
            s3_attempts: 3,
        }
    }
}

fn metered(store: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
    Arc::new(crate::metrics::MeteredStore::new(store))
}

/// Opens `file:///abs/dir` or `s3://bucket[/prefix]`; every request it
/// makes is counted in the process's metrics.
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
        return Ok(metered(Arc::new(LocalStore::new(path)?)));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("name a bucket, like s3://bucket/prefix"));
        }
        return Ok(metered(Arc::new(
            S3Store::new(bucket, prefix.trim_matches('/'), opts).await?,
        )));
    }
    Err(invalid("use s3://bucket/prefix or file:///dir"))
}
