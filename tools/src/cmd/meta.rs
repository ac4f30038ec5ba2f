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
    let mut shutdown = Shutdown::install()?;
    let node = MetaNode::start(NodeConfig {
        id: a.id,
        listen: a.listen,
        data_dir: a.data_dir.clone(),
    })
    .await?;
    std::fs::write(addr_file(&a.data_dir), &node.addr)?;
    println!("metaserver {} listening on {}", node.id, node.addr);
    shutdown.recv().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    let _ = std::fs::remove_file(addr_file(&a.data_dir));
    Ok(())
}

/// SIGINT and SIGTERM handlers, installed before there is anything to lose so
/// an early signal is not the default (instant) death.
pub struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    pub fn install() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Shutdown {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
