//! strata-meta: the metadata model, wire protocol, client and metaserver.
//!
//! Layers, lowest first; a module uses only its own layer and those below:
//! - shared: `types` (the data model), `error`, `request` (what a client
//!   asks a group), `wire` (frames), `rpc` (connections), `transport` (TCP
//!   and Unix sockets under them), `tls`, `raft_types`;
//! - `client`: MetaClient and FsClient, the typed calls tools and the
//!   filesystem core make;
//! - `server`: the metaserver node (Raft groups, state machines, listener);
//!   it uses the client to reach other nodes' groups.

pub mod client;
mod error;
pub mod metrics;
pub mod raft_types;
pub mod request;
pub mod rpc;
pub mod server;
pub mod tls;
pub mod transport;
pub mod types;
pub mod wire;

pub use client::{FsClient, FsSpec, MetaClient};
pub use error::MetaError;
pub use request::{MetaRequest, MetaResponse, MetaResult, ReadRequest, WriteRequest, XattrMode};
pub use types::*;
