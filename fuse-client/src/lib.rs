//! strata-fuse: the filesystem core (async, testable without FUSE) and a thin
//! fuser adapter.

mod alloc;
mod dir;
pub mod error;
mod file;
pub mod fs;
pub mod fuse;
pub mod garbage;
mod handles;
pub mod locks;
pub mod metrics;
pub mod mount;
mod namespace;
mod open;
mod quota;
mod read;
pub mod slices;
mod write;
mod writeback;
mod xattr;

pub use alloc::FilePos;
pub use error::{FsError, FsResult};
pub use fs::{Filesystem, FsConfig, Owner, StatFs};
pub use garbage::GarbagePass;
