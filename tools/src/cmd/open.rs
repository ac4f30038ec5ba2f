//! Opening a filesystem's block store and core outside a mount, for the
//! commands that read or write a tree directly (`export`, `import`).

use std::sync::Arc;
use std::time::Duration;

use strata_cache::{ObjectStore, StoreOptions, open_store};
use strata_fuse::{Filesystem, FsConfig};
use strata_meta::{FsClient, FsInfo};

use super::CliError;

/// The store holding `info`'s blocks, retrying transient errors with backoff.
/// `endpoint` overrides the S3 endpoint recorded at format time.
pub async fn block_store(
    info: &FsInfo,
    endpoint: Option<String>,
) -> Result<Arc<dyn ObjectStore>, CliError> {
    let store = open_store(
        &info.storage,
        &StoreOptions {
            s3_endpoint: endpoint.or_else(|| info.s3_endpoint.clone()),
            // `RetryingStore` below does the retrying (and logs each retry).
            s3_attempts: 1,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| CliError(format!("opening storage {}: {e}", info.storage)))?;
    Ok(Arc::new(strata_cache::RetryingStore::new(
        store,
        strata_cache::RetryPolicy::default(),
    )))
}

/// A filesystem core with a memory-only block cache of `cache_bytes`, no
/// kernel in front and no background workers: the mount's read and write
/// paths, called directly.
pub async fn filesystem(
    fs: FsClient,
    read_only: bool,
    cache_bytes: u64,
) -> Result<Arc<Filesystem>, CliError> {
    let store = block_store(&fs.info, None).await?;
    let cache = strata_cache::BlockCache::new(
        store,
        strata_cache::BlockCacheConfig {
            mem_bytes: cache_bytes,
            disk: None,
        },
    )
    .map_err(|e| CliError(format!("cache: {e}")))?;
    Filesystem::new(
        fs,
        cache,
        FsConfig {
            read_only,
            attr_ttl: Duration::ZERO,
            entry_ttl: Duration::ZERO,
            ..Default::default()
        },
        None,
    )
    .map_err(|e| CliError(format!("opening the filesystem: {e}")))
}
