//! strata-meta: the metadata model, wire protocol, client and metaserver.

pub mod client;
pub mod dump_client;
mod error;
pub mod fsck;
pub mod garbage_client;
pub mod locks_client;
pub mod raft_types;
pub mod request;
pub mod rpc;
pub mod server;
pub mod snapshot_client;
pub mod types;
pub mod wire;
pub mod xattr_client;

pub use client::{FsClient, FsSpec, MetaClient};
pub use error::MetaError;
pub use request::{MetaRequest, MetaResponse, MetaResult, XattrMode};
pub use types::*;
