//! `strata meta serve|init|status|add-node|remove-node`: running and
//! shaping a metaserver cluster.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use strata_meta::server::{MetaNode, NodeConfig, addr_file};

use super::{CliError, CliResult, meta_addrs};
use strata_meta::rpc::Connection;
use strata_meta::wire::{Request, Response};

#[derive(Subcommand)]
pub enum MetaCommand {
    /// Run a metaserver node in the foreground until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Form a cluster: the node at --meta (fresh, or a one-node cluster) takes
    /// the fresh nodes in --peers into every group as voters.
    Init(InitArgs),
    /// Show every node (up/down) and every Raft group with its leader,
    /// members, applied index and lag.
    Status(StatusArgs),
    /// Add a fresh node (started with `meta serve`) to every group as a voter.
    AddNode(AddNodeArgs),
    /// Take a node out of every group and the cluster map.
    RemoveNode(RemoveNodeArgs),
}

#[derive(Args)]
pub struct AddNodeArgs {
    /// Any members of the cluster, comma separated.
    #[arg(long)]
    pub meta: String,
    /// Id of the new node.
    #[arg(long)]
    pub id: u64,
    /// Address of the new node.
    #[arg(long)]
    pub addr: String,
}

#[derive(Args)]
pub struct RemoveNodeArgs {
    /// Any members of the cluster, comma separated.
    #[arg(long)]
    pub meta: String,
    /// Id of the node to remove.
    #[arg(long)]
    pub id: u64,
}

#[derive(Args)]
pub struct InitArgs {
    /// The node that forms the cluster.
    #[arg(long)]
    pub meta: String,
    /// All members, this node included: ID=ADDR,ID=ADDR,...
    #[arg(long)]
    pub peers: String,
    /// Partition groups to create (each replicated on every member).
    #[arg(long, default_value_t = 3)]
    pub partition_groups: u32,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Metaserver addresses, comma separated.
    #[arg(long)]
    pub meta: String,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Node id, unique in the cluster (a fresh data dir becomes a one-node cluster).
    #[arg(long)]
    pub id: u64,
    /// Address to listen on for clients and peers, e.g. 127.0.0.1:7700, or
    /// unix:/absolute/path for a one-node metaserver reached only from this
    /// machine by this user (the socket is created with mode 0600).
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: String,
    /// Where the node keeps its Raft logs, state and snapshots.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Take a snapshot of a group after this many new log entries (older
    /// entries are then purged; lagging followers catch up from the snapshot).
    #[arg(long, default_value_t = strata_meta::server::DEFAULT_SNAPSHOT_LOGS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_logs: u64,
    /// Once serving, read the state database (DATA_DIR/meta.redb) through
    /// once in the background, if it is at most half the memory available,
    /// so that its pages are in the kernel's cache: after a restart, a big
    /// filesystem's lookups come from memory instead of random disk reads.
    /// Writes are slower while it reads (about 15 s for 7 GB here).
    #[arg(long)]
    pub prewarm: bool,
    /// Serve plain TCP on an address other machines can reach. Without it a
    /// node listening beyond loopback needs --tls-ca, --tls-cert and
    /// --tls-key: anyone who reaches a plain port can read and change every
    /// file's metadata.
    #[arg(long)]
    pub insecure: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9568):
    /// requests by kind and result, each group's leader, term and indexes,
    /// log fsync latency. Off unless given.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

/// Whether only this machine can reach `listen`: a Unix socket, or a TCP
/// address whose every resolution is a loopback address.
fn reached_only_from_here(listen: &str) -> Result<bool, CliError> {
    if listen.starts_with(strata_meta::transport::UNIX_PREFIX) {
        return Ok(true);
    }
    use std::net::ToSocketAddrs;
    let addrs: Vec<std::net::SocketAddr> = listen
        .to_socket_addrs()
        .map_err(|e| CliError(format!("--listen {listen}: {e}")))?
        .collect();
    Ok(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()))
}

pub async fn run(cmd: MetaCommand) -> CliResult {
    match cmd {
        MetaCommand::Serve(a) => serve(a).await,
        MetaCommand::Init(a) => init(a).await,
        MetaCommand::Status(a) => status(a).await,
        MetaCommand::AddNode(a) => {
            admin(
                &a.meta,
                Request::AddNode {
                    id: a.id,
                    addr: a.addr.clone(),
                },
            )
            .await?;
            println!("node {} ({}) added to every group", a.id, a.addr);
            Ok(())
        }
        MetaCommand::RemoveNode(a) => {
            admin(&a.meta, Request::RemoveNode { id: a.id }).await?;
            println!("node {} removed; it can be stopped now", a.id);
            Ok(())
        }
    }
}

async fn serve(a: ServeArgs) -> CliResult {
    let tls = super::tls();
    if tls.is_none() && !a.insecure && !reached_only_from_here(&a.listen)? {
        return Err(CliError(format!(
            "refusing to serve {} without TLS: anyone who can reach it could read and \
             change every file's metadata. Give --tls-ca, --tls-cert and --tls-key \
             (make them with `strata cert`), or --insecure on a network you trust",
            a.listen
        )));
    }
    if tls.as_ref().is_some_and(|t| !t.can_serve()) {
        return Err(CliError(
            "a node serves TLS with a certificate of its own: give --tls-cert and --tls-key \
             (`strata cert issue --node ID`)"
                .into(),
        ));
    }
    if let Some(t) = &tls {
        tracing::info!(identity = t.identity(), "TLS with client certificates");
    }
    let mut shutdown = Shutdown::install()?;
    super::serve_metrics(a.metrics.as_deref(), super::MetricsOf::Node).await?;
    let node = MetaNode::start(NodeConfig {
        id: a.id,
        listen: a.listen,
        data_dir: a.data_dir.clone(),
        snapshot_logs: a.snapshot_logs,
        tls,
        prewarm: a.prewarm,
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

fn parse_peers(s: &str) -> Result<std::collections::BTreeMap<u64, String>, CliError> {
    let mut peers = std::collections::BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| {
            CliError(format!(
                "peer {part:?}: write ID=ADDR, like 2=10.0.0.2:7700"
            ))
        })?;
        let id: u64 = id
            .parse()
            .map_err(|_| CliError(format!("peer {part:?}: the id must be a number")))?;
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(CliError(format!("node id {id} appears twice in --peers")));
        }
    }
    if peers.len() < 2 {
        return Err(CliError("--peers needs at least two nodes".into()));
    }
    Ok(peers)
}

const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

async fn init(a: InitArgs) -> CliResult {
    let peers = parse_peers(&a.peers)?;
    if a.partition_groups == 0 || a.partition_groups > 64 {
        return Err(CliError(
            "--partition-groups must be between 1 and 64".into(),
        ));
    }
    let conn = Connection::connect_as(&a.meta, &super::credentials()).await?;
    let resp = conn
        .call(
            Request::InitCluster {
                peers: peers.clone(),
                partition_groups: a.partition_groups,
            },
            ADMIN_TIMEOUT,
        )
        .await?;
    match resp {
        Response::Join(Ok(())) => {
            println!(
                "cluster formed: nodes {:?}, groups 0..={}",
                peers.keys().collect::<Vec<_>>(),
                a.partition_groups
            );
            Ok(())
        }
        Response::Join(Err(e)) => Err(CliError(format!("forming the cluster failed: {e}"))),
        other => Err(CliError(format!("unexpected answer {other:?}"))),
    }
}

/// Sends a membership request to the first reachable node of `meta`.
async fn admin(meta: &str, req: Request) -> CliResult {
    let mut last = CliError("no metaserver address given".into());
    for addr in meta_addrs(meta) {
        let conn = match Connection::connect_as(&addr, &super::credentials()).await {
            Ok(c) => c,
            Err(e) => {
                last = e.into();
                continue;
            }
        };
        return match conn.call(req, ADMIN_TIMEOUT).await? {
            Response::Join(Ok(())) => Ok(()),
            Response::Join(Err(e)) => Err(CliError(format!("membership change failed: {e}"))),
            other => Err(CliError(format!("unexpected answer {other:?}"))),
        };
    }
    Err(last)
}

async fn status(a: StatusArgs) -> CliResult {
    let client = super::meta_client(&meta_addrs(&a.meta)).await?;
    let map = client.refresh_map().await?;
    let mut views = Vec::new();
    println!("nodes:");
    for (id, addr) in &map.nodes {
        let view = match Connection::connect_as(addr, &super::credentials()).await {
            Ok(c) => match c
                .call(Request::Status, std::time::Duration::from_secs(5))
                .await
            {
                Ok(Response::Status { groups, .. }) => Some(groups),
                _ => None,
            },
            Err(_) => None,
        };
        println!(
            "  node {id}  {addr}  {}",
            if view.is_some() { "up" } else { "DOWN" }
        );
        if let Some(v) = view {
            views.push((*id, v));
        }
    }
    println!("groups:");
    for (g, members) in &map.groups {
        let reports: Vec<_> = views
            .iter()
            .filter_map(|(id, v)| v.iter().find(|s| s.group == *g).map(|s| (*id, s.clone())))
            .collect();
        let leader = reports.iter().filter_map(|(_, s)| s.leader).max();
        let leader_applied = reports
            .iter()
            .find(|(id, _)| Some(*id) == leader)
            .and_then(|(_, s)| s.applied)
            .unwrap_or(0);
        let term = reports.iter().map(|(_, s)| s.term).max().unwrap_or(0);
        println!(
            "  group {g}  leader {}  term {term}  members {members:?}",
            leader.map_or("none".to_string(), |l| l.to_string())
        );
        for (id, s) in &reports {
            let applied = s.applied.unwrap_or(0);
            println!(
                "    node {id}: applied {applied}  lag {}",
                leader_applied.saturating_sub(applied)
            );
        }
    }
    println!("partitions:");
    for f in client.list_fs().await? {
        for p in client.partitions(f.id).await? {
            println!(
                "  fs {}  partition {}  inodes {}..{}  group {}",
                f.name, p.id, p.start, p.end, p.group
            );
        }
        let u = client.usage(f.id).await?;
        println!(
            "  fs {}  usage: {} inodes, {} bytes",
            f.name, u.inodes, u.bytes
        );
    }
    Ok(())
}
