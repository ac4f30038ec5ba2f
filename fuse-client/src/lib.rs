//! strata-fuse: the filesystem core (async, testable without FUSE) and a thin
//! fuser adapter.

mod data;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod slices;

pub use error::{FsError, FsResult};
pub use fs::{Filesystem, FsConfig, StatFs};
