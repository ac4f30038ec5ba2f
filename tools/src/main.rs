//! `strata`: the one binary users run.

mod cmd;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: glibc kept a mount at about 950 MiB
/// resident after a 1 GiB fio run with a 256 MiB memory cache (mimalloc:
/// about 400), and its block buffers came back as fresh pages each time;
/// see docs/decisions.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process. mimalloc asks for
/// them (MADV_HUGEPAGE) on its segments, so where the system setting is
/// `madvise` (Debian's default) every block buffer allocated in memory
/// mimalloc had purged faulted in a whole 2 MiB page and zeroed it: a warm
/// dataset epoch spent 18 % of all CPU in `clear_page_erms` and ran at
/// about half the files/s (decision 68). A failure only costs that speed.
fn no_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes
    // nothing but this process's THP policy.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: a POSIX filesystem on object storage with a Raft metaserver"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    tls: cmd::TlsArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Mount a filesystem. `strata mount DIR` runs everything in this process on
    /// the local data dir; `strata mount --meta ADDRS NAME DIR` mounts a filesystem
    /// served by metaservers.
    Mount(cmd::mount::MountArgs),
    /// Unmount a Strata mount point (the mount process flushes and exits).
    Umount(cmd::mount::UmountArgs),
    /// Metaserver commands.
    #[command(subcommand)]
    Meta(cmd::meta::MetaCommand),
    /// Create a filesystem on a metaserver.
    Format(cmd::format::FormatArgs),
    /// Show metaservers, filesystems and their usage.
    Status(cmd::status::StatusArgs),
    /// A live view of a running mount: operations per second and latency,
    /// throughput, cache hit ratio, object store and metadata requests.
    Stats(cmd::stats::StatsArgs),
    /// A running mount's access log: every operation with its arguments,
    /// result and duration (--raw), or a summary by operation and by file.
    Profile(cmd::profile::ProfileArgs),
    /// Check a filesystem's metadata: entries, link counts, reachability,
    /// unfinished cross-group transactions.
    Fsck(cmd::fsck::FsckArgs),
    /// Read every file under the given paths once through the mount, so their
    /// blocks are in Strata's caches before a job needs them.
    Warmup(cmd::warmup::WarmupArgs),
    /// Run a standard workload (big and small files) in a directory and print
    /// the rates.
    Bench(cmd::bench::BenchArgs),
    /// Files whose last link went: list them, restore them.
    #[command(subcommand)]
    Trash(cmd::trash::TrashCommand),
    /// Snapshots: read-only, point-in-time copies sharing the blocks.
    #[command(subcommand)]
    Snapshot(cmd::snapshot::SnapshotCommand),
    /// Directory quotas: limits on the bytes and inodes below a directory.
    #[command(subcommand)]
    Quota(cmd::quota::QuotaCommand),
    /// Access tokens for clients without a certificate: create, list, revoke.
    #[command(subcommand)]
    Token(cmd::token::TokenCommand),
    /// Copy every file of a snapshot (or filesystem) to ordinary objects
    /// under an S3 prefix or into a local directory, with a manifest.
    Export(cmd::export::ExportArgs),
    /// Copy a tree of objects (an export, or any S3 prefix or local
    /// directory) into a filesystem.
    Import(cmd::import::ImportArgs),
    /// Write a filesystem's metadata (and its snapshots') to one portable,
    /// compressed file.
    Dump(cmd::dump::DumpArgs),
    /// Make a new filesystem from a dump; it reads the same blocks.
    Load(cmd::dump::LoadArgs),
    /// Compare a filesystem's objects with its chunk maps: report objects no
    /// slice references (leaks) and referenced objects that are missing.
    Gc(cmd::gc::GcArgs),
    /// TLS certificates: a cluster CA, and certificates it signs for
    /// metaserver nodes and clients.
    #[command(subcommand)]
    Cert(cmd::cert::CertCommand),
}

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    if let Err(e) = cmd::init_tls(&cli.tls) {
        eprintln!("strata: {e}");
        return std::process::ExitCode::FAILURE;
    }
    if !matches!(
        cli.command,
        Command::Mount(_) | Command::Meta(cmd::meta::MetaCommand::Serve(_))
    ) {
        // Reporting commands end quietly when their reader goes away (`| head`).
        // SAFETY: restoring the default disposition before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // Background mounts fork before any runtime or thread exists.
    if let Command::Mount(args) = &cli.command
        && args.background
    {
        return cmd::mount::run_in_background(args);
    }
    init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Mount(a) => cmd::mount::run(a).await,
            Command::Umount(a) => cmd::mount::umount(a).await,
            Command::Meta(m) => cmd::meta::run(m).await,
            Command::Format(a) => cmd::format::run(a).await,
            Command::Status(a) => cmd::status::run(a).await,
            Command::Stats(a) => cmd::stats::run(a).await,
            Command::Profile(a) => cmd::profile::run(a).await,
            Command::Fsck(a) => cmd::fsck::run(a).await,
            Command::Warmup(a) => cmd::warmup::run(a).await,
            Command::Bench(a) => cmd::bench::run(a).await,
            Command::Trash(c) => cmd::trash::run(c).await,
            Command::Quota(c) => cmd::quota::run(c).await,
            Command::Gc(a) => cmd::gc::run(a).await,
            Command::Export(a) => cmd::export::run(a).await,
            Command::Import(a) => cmd::import::run(a).await,
            Command::Dump(a) => cmd::dump::dump(a).await,
            Command::Load(a) => cmd::dump::load(a).await,
            Command::Snapshot(c) => cmd::snapshot::run(c).await,
            Command::Token(c) => cmd::token::run(c).await,
            Command::Cert(c) => cmd::cert::run(c).await,
        }
    });
    // Do not wait for stray blocking tasks (a stuck S3 request must not hang exit).
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
