//! strata-cache: where file blocks live (S3 or a local directory), the
//! retries that make a flaky store usable, the memory and disk caches in
//! front of it (`BlockCache`), and the write-back staging area on local disk.

pub mod block_cache;
mod direct_io;
pub mod disk;
mod error;
pub mod layout;
pub mod mem;
pub mod metrics;
pub mod object_store;
pub mod retry;
pub mod staging;
#[cfg(feature = "test-s3-server")]
pub mod test_s3;

pub use block_cache::{
    BlockCache, BlockCacheConfig, CacheStats, DiskCacheConfig, Keep, disk_reads_here,
};
pub use direct_io::aligned_buffer;
pub use disk::{DiskCache, FsSpace, fs_space};
pub use error::StoreError;
pub use layout::{block_key, parse_block_key};
pub use mem::MemCache;
pub use metrics::MeteredStore;
pub use object_store::{
    LocalStore, ObjectHead, ObjectInfo, ObjectStore, S3Store, StoreOptions, open_store,
};
pub use retry::{RetryPolicy, RetryingStore};
pub use staging::{Staging, damaged_record};
