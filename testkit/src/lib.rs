//! Helpers shared by the integration tests of every crate: deterministic
//! random numbers, and a real one-node metaserver in this process with a
//! filesystem formatted on it.
//!
//! Only integration tests (`*/tests/*.rs`) use this crate; unit tests inside
//! `metaserver/src` must not, as it depends on `strata-meta` itself.

use std::path::Path;
use std::sync::Arc;

use strata_meta::server::{DEFAULT_SNAPSHOT_LOGS, MetaNode, NodeConfig};
use strata_meta::{FsInfo, FsSpec, MetaClient};

/// Deterministic pseudo-random numbers (xorshift), so failures reproduce from the seed.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next number. Not `Iterator::next`: the stream never ends, and
    /// callers want a plain `u64`.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

fn node_config(data_dir: &Path) -> NodeConfig {
    NodeConfig {
        id: 1,
        listen: "127.0.0.1:0".into(),
        data_dir: data_dir.to_path_buf(),
        snapshot_logs: DEFAULT_SNAPSHOT_LOGS,
        tls: None,
        prewarm: false,
    }
}

/// Starts a one-node metaserver (node 1) on `data_dir`, listening on a free
/// loopback port (`node.addr`).
pub async fn start_node(data_dir: &Path) -> Arc<MetaNode> {
    MetaNode::start(node_config(data_dir))
        .await
        .expect("node starts")
}

/// Starts a node on a data dir whose previous node just shut down. The last
/// handle of the old node may still be closing on another thread (its drop
/// writes and unlocks the database file), so a start that finds the file
/// still locked is tried again.
pub async fn restart_node(data_dir: &Path) -> Arc<MetaNode> {
    for _ in 0..1_000 {
        match MetaNode::start(node_config(data_dir)).await {
            Ok(node) => return node,
            Err(e) if e.to_string().contains("already open") => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await
            }
            Err(e) => panic!("node restarts: {e}"),
        }
    }
    panic!("the data dir stayed locked after shutdown");
}

/// A client of `node`.
pub async fn connect(node: &MetaNode) -> Arc<MetaClient> {
    MetaClient::connect(std::slice::from_ref(&node.addr))
        .await
        .unwrap()
}

/// A test filesystem `name` of blocks and chunks of these sizes, in two
/// partitions of the default size, with a storage URL nothing reads (tests
/// give their clients an object store of their own).
pub fn test_fs(name: &str, block_size: u32, chunk_size: u32) -> FsSpec {
    FsSpec {
        block_size,
        chunk_size,
        partitions: 2,
        ..FsSpec::new(name, "file:///unused")
    }
}

/// Formats `spec` with a root owned by uid and gid 0. Every test formats
/// through here.
pub async fn format_fs(client: &MetaClient, spec: &FsSpec) -> FsInfo {
    client.format(spec, (0, 0)).await.unwrap()
}

/// A one-node metaserver on `data_dir` with filesystem `name` formatted on
/// it in two partitions of the default size; returns the node and a client.
pub async fn node_with_fs(
    data_dir: &Path,
    name: &str,
    block_size: u32,
    chunk_size: u32,
) -> (Arc<MetaNode>, Arc<MetaClient>) {
    let node = start_node(data_dir).await;
    let client = connect(&node).await;
    format_fs(&client, &test_fs(name, block_size, chunk_size)).await;
    (node, client)
}
