use std::path::PathBuf;

use clap::{Args, Subcommand};
use strata_meta::server::{MetaNode, NodeConfig, addr_file};

use super::CliResult;

#[derive(Subcommand)]
pub enum MetaCommand {
    /// Run a metaserver node in the foreground until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// Node id, unique in the cluster (a fresh data dir becomes a one-node cluster).
    #[arg(long)]
    pub id: u64,
    /// Address to listen on for clients and peers, e.g. 127.0.0.1:7700.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: String,
    /// Where the node keeps its Raft logs, state and snapshots.
    #[arg(long)]
    pub data_dir: PathBuf,
}

pub async fn run(cmd: MetaCommand) -> CliResult {
    match cmd {
        MetaCommand::Serve(a) => serve(a).await,
    }
}

async fn serve(a: ServeArgs) -> CliResult {
    let node = MetaNode::start(NodeConfig {
        id: a.id,
        listen: a.listen,
        data_dir: a.data_dir.clone(),
    })
    .await?;
    std::fs::write(addr_file(&a.data_dir), &node.addr)?;
    println!("metaserver {} listening on {}", node.id, node.addr);
    wait_for_signal().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    let _ = std::fs::remove_file(addr_file(&a.data_dir));
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
