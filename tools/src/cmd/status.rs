//! `strata status`: a filesystem's usage and its cluster's health.

use std::path::PathBuf;

use clap::Args;
use strata_meta::server::{MetaNode, NodeConfig, addr_file};

use super::{CliError, CliResult, default_data_dir, meta_addrs};

#[derive(Args)]
pub struct StatusArgs {
    /// Metaserver addresses, comma separated.
    #[arg(long, conflicts_with = "data_dir")]
    pub meta: Option<String>,
    /// A data dir of the embedded default or of `strata meta serve`
    /// [default: ~/.local/share/strata]. A running process on it is asked over
    /// the network; otherwise the state is opened directly.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

pub async fn run(a: StatusArgs) -> CliResult {
    let mut local_node = None;
    let client = match &a.meta {
        Some(m) => super::meta_client(&meta_addrs(m)).await?,
        None => {
            let dd = a.data_dir.clone().unwrap_or_else(default_data_dir);
            // An embedded mount keeps its metaserver under DATA_DIR/meta.
            let meta_dir = if dd.join("meta").join("meta.redb").exists() {
                dd.join("meta")
            } else {
                dd.clone()
            };
            let running = [addr_file(&dd), addr_file(&meta_dir)]
                .iter()
                .find_map(|f| std::fs::read_to_string(f).ok());
            let connected = match running {
                Some(addr) => super::meta_client(&[addr.trim().to_string()]).await.ok(),
                None => None,
            };
            match connected {
                Some(c) => c,
                None => {
                    if !meta_dir.join("meta.redb").exists() {
                        return Err(CliError(format!(
                            "no Strata state in {}; mount it with `strata mount DIR` or pass --meta ADDRS",
                            dd.display()
                        )));
                    }
                    let node = MetaNode::start(NodeConfig {
                        id: 1,
                        listen: strata_meta::transport::socket_address(&meta_dir),
                        data_dir: meta_dir,
                        snapshot_logs: strata_meta::server::DEFAULT_SNAPSHOT_LOGS,
                        tls: None,
                        prewarm: false,
                    })
                    .await?;
                    let c = super::meta_client(std::slice::from_ref(&node.addr)).await?;
                    local_node = Some(node);
                    c
                }
            }
        }
    };
    let map = client.refresh_map().await?;
    println!("metaserver nodes:");
    for (id, addr) in &map.nodes {
        let groups: Vec<String> = map
            .groups
            .iter()
            .filter(|(_, m)| m.contains(id))
            .map(|(g, _)| g.to_string())
            .collect();
        println!("  node {id}  {addr}  groups {}", groups.join(","));
    }
    println!("raft groups:");
    for (g, members) in &map.groups {
        let kind = if *g == 0 { "cluster" } else { "partitions" };
        println!("  group {g} ({kind})  members {members:?}");
    }
    let list = client.list_fs().await?;
    println!("filesystems: {}", list.len());
    for f in list {
        let usage = client.usage(f.id).await?;
        let parts = client.partitions(f.id).await?;
        println!(
            "  {}  id {}  uuid {}  storage {}  block {}  chunk {}  partitions {}  inodes {}  bytes {}{}",
            f.name,
            f.id,
            f.uuid,
            f.storage,
            f.block_size,
            f.chunk_size,
            parts.len(),
            usage.inodes,
            usage.bytes,
            if f.ready { "" } else { "  (format incomplete)" }
        );
        if !f.ready {
            continue;
        }
        // Quotas against their limits (inodes' numbers: `strata quota
        // list` shows their paths).
        let fs = client.open_fs(&f.name).await?;
        let dirs = fs.quotas().await?.into_iter();
        let dirs = dirs.map(|(dir, q)| (strata_meta::QuotaSubject::Dir(dir), q));
        for (subject, q) in dirs.chain(fs.owner_quotas().await?) {
            let of = |used: u64, max: Option<u64>| match max {
                Some(m) => format!(
                    "{used} of {m} ({:.0}%)",
                    used as f64 * 100.0 / m.max(1) as f64
                ),
                None => format!("{used} (no limit)"),
            };
            let whose = match subject {
                strata_meta::QuotaSubject::Dir(dir) => format!("inode {dir}"),
                other => other.to_string(),
            };
            println!(
                "    quota on {whose}: bytes {}  inodes {}",
                of(q.used.bytes, q.max_bytes),
                of(q.used.inodes, q.max_inodes)
            );
        }
    }
    if let Some(n) = local_node {
        n.shutdown().await;
    }
    Ok(())
}
