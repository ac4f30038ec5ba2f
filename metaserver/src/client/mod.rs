//! The client side of the metadata: `MetaClient` routes requests to the
//! leader of the right group, following NotLeader hints and retrying
//! through outages; `FsClient` makes typed calls for one filesystem, routed
//! ino -> partition -> group. Tools and the filesystem core use only this
//! (and the shared types), never the server.
//!
//! One file per concern: `routing` (MetaClient: leaders, retries, write
//! numbering), `admin` (filesystems in the cluster map), `fs_client`
//! (FsClient and its routing), `recent` (what this client's own changes
//! left, for the kernel's caches), `placement` (where new inodes go),
//! `txn` (cross-group transactions), `namespace`, `rename`, `chunks`,
//! `xattr`, `locks`, `garbage`, `snapshot`, `dump`, `quota` (typed calls by family),
//! `budget` (moving global quotas' budget between groups), `deferred`
//! (creates sent with their file's first commit)
//! and `fsck` (a consistency check over all of them).

mod admin;
mod budget;
mod chunks;
mod deferred;
pub mod dump;
mod fs_client;
pub mod fsck;
mod garbage;
mod locks;
mod namespace;
mod placement;
mod quota;
mod recent;
mod rename;
mod routing;
pub mod snapshot;
mod txn;
mod xattr;

pub use admin::{FsSpec, new_uuid};
pub use chunks::Written;
pub use fs_client::FsClient;
pub use placement::DEFAULT_DIR_SPREAD_SLACK;
pub use quota::QuotaDrift;
pub use routing::MetaClient;

use crate::MetaError;
use crate::request::MetaResponse;

/// The error for an answer of the wrong kind (a protocol mismatch).
pub(crate) fn unexpected(r: MetaResponse) -> MetaError {
    MetaError::Protocol(format!("unexpected answer {r:?}"))
}

/// The answer of the variant `$pat`, as `$val`; any other is a protocol error.
macro_rules! expect_answer {
    ($resp:expr, $pat:pat => $val:expr) => {
        match $resp {
            $pat => Ok($val),
            other => Err($crate::client::unexpected(other)),
        }
    };
}
pub(crate) use expect_answer;
