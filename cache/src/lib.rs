//! strata-cache: where file blocks live (S3 or a local directory) and, later,
//! the memory and disk caches in front of them.

pub mod disk;
mod error;
pub mod layout;
pub mod object_store;
#[cfg(feature = "test-s3-server")]
pub mod test_s3;

pub use disk::{CachedStore, DiskCache};
pub use error::StoreError;
pub use layout::{block_key, parse_block_key};
pub use object_store::{LocalStore, ObjectStore, S3Store, StoreOptions, open_store};
