//! `strata mount` and `strata umount`: the embedded default or a filesystem
//! of a cluster, in the foreground or in the background.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use std::time::Duration;

use clap::Args;
use strata_fuse::{Filesystem, FsConfig};
use strata_meta::server::{MetaNode, NodeConfig, addr_file};

use super::{CliError, CliResult, default_data_dir, meta_addrs};

/// The filesystem the embedded default creates and mounts.
pub const EMBEDDED_FS: &str = "default";
const READY_FD_ENV: &str = "STRATA_READY_FD";

#[derive(Args, Clone)]
pub struct MountArgs {
    /// `DIR` for the embedded default, or `NAME DIR` with --meta.
    #[arg(required = true, num_args = 1..=2, value_name = "[NAME] DIR")]
    pub args: Vec<String>,
    /// Metaserver addresses (comma separated). Without it, a one-node metaserver
    /// runs inside this process on --data-dir.
    #[arg(long)]
    pub meta: Option<String>,
    /// State of the embedded default: metadata and blocks [default: ~/.local/share/strata].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Return once the mount is ready and keep serving it in the background.
    #[arg(short = 'd', long)]
    pub background: bool,
    /// Keep a disk cache of blocks in this directory (created if missing):
    /// whole blocks, checksummed, least recently used evicted, kept across restarts.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Most bytes the disk cache may hold.
    #[arg(long, default_value = "10G", value_parser = super::parse_size)]
    pub cache_size: u64,
    /// Share of the cache disk's space the disk cache always leaves free
    /// (evicting blocks to keep it so), between 0 and 0.9.
    #[arg(long, default_value_t = 0.1)]
    pub cache_free_ratio: f64,
    /// Most bytes of blocks the memory cache holds (0: none).
    #[arg(long, default_value = "256M", value_parser = super::parse_size)]
    pub cache_mem_size: u64,
    /// Seconds this client's file locks (fcntl, flock) outlive it if it
    /// dies; while it runs it renews them every third of that.
    #[arg(long, default_value_t = 30.0)]
    pub lock_lease: f64,
    /// Keep full blocks of large writes in the disk cache too (the
    /// default); `--cache-large-writes=false` keeps only partial blocks,
    /// as of small files and tails, there.
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub cache_large_writes: bool,
    /// Send a new regular file's create with its first commit (close,
    /// flush or fsync) instead of at open(2): one metaserver log write for
    /// a small file's create, write and close, but other clients see the
    /// file only from then on, and a name another client created meanwhile
    /// fails the close with EEXIST (decision 71). For one writer creating
    /// its own files (datasets, checkpoints, build outputs).
    #[arg(long)]
    pub defer_creates: bool,
    /// Most bytes of written blocks on their way to the store at once;
    /// writers wait beyond it.
    #[arg(long, default_value = "300M", value_parser = super::parse_size)]
    pub buffer_size: u64,
    /// Block uploads running at once.
    #[arg(long, default_value_t = 20)]
    pub max_uploads: usize,
    /// Most blocks fetched ahead of a sequential reader (0: no prefetch).
    #[arg(long, default_value_t = 16)]
    pub prefetch_blocks: u32,
    /// Stage written blocks in --cache-dir and upload them in the background:
    /// close and fsync return once the data is on local disk; other clients
    /// see it once uploaded. A restarted client uploads what a crash left.
    #[arg(long)]
    pub writeback: bool,
    /// Seconds between runs of the background worker that purges the trash,
    /// deletes unreferenced objects and compacts fragmented chunks.
    #[arg(long, default_value_t = 10.0)]
    pub gc_interval: f64,
    /// Seconds an object that no chunk map references any more is kept
    /// before deletion (reads that began before it was dropped still find it).
    #[arg(long, default_value_t = 60.0)]
    pub deletion_delay: f64,
    /// S3 endpoint URL, overriding the one recorded at format time and AWS_ENDPOINT_URL.
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// A new directory goes to the least-loaded metadata group once its
    /// parent's group holds more than this many inodes beyond that one;
    /// 0 spreads every new directory.
    #[arg(long, default_value_t = strata_meta::client::DEFAULT_DIR_SPREAD_SLACK)]
    pub dir_spread_slack: u64,
    /// Seconds the kernel may cache file attributes.
    #[arg(long, default_value_t = 1.0)]
    pub attr_cache: f64,
    /// Seconds the kernel may cache name lookups.
    #[arg(long, default_value_t = 1.0)]
    pub entry_cache: f64,
    /// Mount read-only: every change fails with EROFS.
    #[arg(long)]
    pub read_only: bool,
    /// Mount this snapshot of the filesystem (read-only; see `strata snapshot`).
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Log file of a background mount [default: DATA_DIR/mount.log, or /tmp/strata-NAME.log with --meta].
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9567):
    /// FUSE operations, object store and metadata requests, and the embedded
    /// metaserver's groups. Off unless given.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

struct Target {
    name: String,
    dir: PathBuf,
}

impl MountArgs {
    /// Whether this mount only reads: asked for, a snapshot, or a client
    /// certificate that grants reading alone (the metaserver would refuse
    /// every change anyway; the kernel then says EROFS at once).
    fn read_only(&self) -> bool {
        let granted_read_only = matches!(
            super::tls().as_ref().and_then(|t| t.grant()),
            Some(strata_meta::Grant::Fs {
                read_only: true,
                ..
            })
        );
        self.read_only || self.snapshot.is_some() || granted_read_only
    }

    fn target(&self) -> Result<Target, CliError> {
        let mut t = self.fs_target()?;
        if let Some(snap) = &self.snapshot {
            t.name = strata_meta::snapshot_fs_name(&t.name, snap);
        }
        Ok(t)
    }

    fn fs_target(&self) -> Result<Target, CliError> {
        match (&self.meta, self.args.as_slice()) {
            (None, [dir]) => Ok(Target {
                name: EMBEDDED_FS.into(),
                dir: dir.into(),
            }),
            (None, [_, _]) => Err(CliError(
                "`strata mount NAME DIR` needs --meta ADDRS; for the embedded default run `strata mount DIR`".into(),
            )),
            (Some(_), [name, dir]) => Ok(Target {
                name: name.clone(),
                dir: dir.into(),
            }),
            (Some(_), _) => Err(CliError("with --meta, give the filesystem name and the mount point: `strata mount --meta ADDRS NAME DIR`".into())),
            _ => Err(CliError("give a mount point".into())),
        }
    }

    /// Refuses flag values that make no sense, before anything is mounted.
    fn check_flags(&self) -> CliResult {
        let secs = |v: f64| (0.0..1e6).contains(&v);
        if !(secs(self.attr_cache) && secs(self.entry_cache)) {
            return Err(CliError(
                "--attr-cache and --entry-cache take seconds between 0 and 1000000".into(),
            ));
        }
        if !(secs(self.deletion_delay) && self.gc_interval > 0.0 && secs(self.gc_interval)) {
            return Err(CliError(
                "--gc-interval takes seconds above 0 and --deletion-delay seconds from 0, both below 1000000".into(),
            ));
        }
        if !(0.0..=0.9).contains(&self.cache_free_ratio) {
            return Err(CliError(
                "--cache-free-ratio is a share of the disk between 0 and 0.9".into(),
            ));
        }
        if !(self.lock_lease >= 1.0 && self.lock_lease < 1e6) {
            return Err(CliError(
                "--lock-lease takes seconds from 1 to 1000000".into(),
            ));
        }
        if self.buffer_size < 1 << 20 {
            return Err(CliError("--buffer-size must be at least 1M".into()));
        }
        if self.max_uploads == 0 || self.max_uploads > 1000 {
            return Err(CliError("--max-uploads must be between 1 and 1000".into()));
        }
        if self.prefetch_blocks > 1024 {
            return Err(CliError("--prefetch-blocks must be at most 1024".into()));
        }
        if self.writeback && self.cache_dir.is_none() {
            return Err(CliError(
                "--writeback stages blocks on local disk: give --cache-dir too".into(),
            ));
        }
        if self.writeback && self.read_only() {
            return Err(CliError(
                "--writeback and --read-only exclude each other".into(),
            ));
        }
        Ok(())
    }

    fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }

    fn log_file(&self) -> PathBuf {
        if let Some(l) = &self.log {
            return l.clone();
        }
        match (&self.meta, self.target()) {
            (Some(_), Ok(t)) => std::env::temp_dir().join(format!("strata-{}.log", t.name)),
            _ => self.data_dir().join("mount.log"),
        }
    }
}

/// The mount point must be a directory; a missing one is created.
fn check_mountpoint(dir: &Path) -> CliResult {
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError(format!("creating mount point {}: {e}", dir.display())))?;
    }
    let md = std::fs::metadata(dir).map_err(|e| {
        CliError(format!(
            "mount point {}: {e} (create it with `mkdir -p {}`)",
            dir.display(),
            dir.display()
        ))
    })?;
    if !md.is_dir() {
        return Err(CliError(format!(
            "mount point {} is not a directory",
            dir.display()
        )));
    }
    if which("fusermount3").is_none() && unsafe { libc::geteuid() } != 0 {
        return Err(CliError(
            "fusermount3 not found: install FUSE 3 (Debian: `apt-get install fuse3`)".into(),
        ));
    }
    Ok(())
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|f| f.is_file())
    })
}

/// A name for the mount on `dir`, the same for every path to it.
fn mount_key(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    canon.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Where a mount records its pid so `strata umount` can wait for it to finish.
fn pid_file(dir: &Path) -> PathBuf {
    std::env::temp_dir().join(format!("strata-mount-{}.pid", mount_key(dir)))
}

/// This user's directory for mounts' control sockets:
/// `$XDG_RUNTIME_DIR/strata`, or `/tmp/strata-UID`; mode 0700.
fn runtime_dir() -> PathBuf {
    let uid = unsafe { libc::geteuid() };
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("strata"),
        _ => std::env::temp_dir().join(format!("strata-{uid}")),
    }
}

/// The control socket of the mount on `dir` (`strata stats` reads it).
pub fn control_socket(dir: &Path) -> PathBuf {
    runtime_dir().join(format!("mount-{}.sock", mount_key(dir)))
}

/// Makes the runtime directory if missing; refuses one that another user
/// owns or that others may enter, where they could read or replace sockets.
fn private_runtime_dir() -> Result<PathBuf, CliError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let dir = runtime_dir();
    let _ = std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&dir);
    let m =
        std::fs::symlink_metadata(&dir).map_err(|e| CliError(format!("{}: {e}", dir.display())))?;
    let uid = unsafe { libc::geteuid() };
    if !m.is_dir() || m.uid() != uid || m.mode() & 0o077 != 0 {
        return Err(CliError(format!(
            "{} must be a directory of uid {uid} with mode 0700",
            dir.display()
        )));
    }
    Ok(dir)
}

/// Serves the process's metrics on the mount's control socket.
fn open_control_socket(dir: &Path) -> Result<strata_metrics::ControlSocket, CliError> {
    private_runtime_dir()?;
    let path = control_socket(dir);
    let listener = strata_meta::transport::bind_private_socket(&path)
        .map_err(|e| CliError(format!("control socket {}: {e}", path.display())))?;
    Ok(strata_metrics::serve_control(listener, &path))
}

pub async fn run(a: MountArgs) -> CliResult {
    let result = mount_and_serve(&a).await;
    if let Err(e) = &result {
        notify_ready(Err(&e.0));
    }
    result
}

async fn mount_and_serve(a: &MountArgs) -> CliResult {
    let mut shutdown = super::meta::Shutdown::install()?;
    let target = a.target()?;
    check_mountpoint(&target.dir)?;
    a.check_flags()?;
    super::serve_metrics(a.metrics.as_deref(), super::MetricsOf::Mount).await?;
    // The embedded default runs its own one-node metaserver.
    let mut node = None;
    // A snapshot of the embedded default is served by the mount already
    // running on its data dir, if there is one.
    let running = (a.meta.is_none() && a.snapshot.is_some())
        .then(|| std::fs::read_to_string(addr_file(&a.data_dir())).ok())
        .flatten();
    let addrs = match (&a.meta, running) {
        (Some(m), _) => meta_addrs(m),
        (None, Some(addr)) => vec![addr.trim().to_string()],
        (None, None) => {
            let dd = a.data_dir();
            // A Unix socket, owner-only: nothing of the embedded default
            // listens on TCP, and no other local user reaches its metadata.
            let n = MetaNode::start(NodeConfig {
                id: 1,
                listen: strata_meta::transport::socket_address(&dd.join("meta")),
                data_dir: dd.join("meta"),
                snapshot_logs: strata_meta::server::DEFAULT_SNAPSHOT_LOGS,
                tls: None,
                prewarm: false,
            })
            .await
            .map_err(|e| {
                CliError(format!(
                    "starting the embedded metaserver in {}: {e}",
                    dd.display()
                ))
            })?;
            std::fs::write(addr_file(&dd), &n.addr)?;
            let addrs = vec![n.addr.clone()];
            node = Some(n);
            addrs
        }
    };
    let client = super::meta_client(&addrs).await?;
    if a.meta.is_none()
        && !client
            .list_fs()
            .await?
            .iter()
            .any(|f| f.name == EMBEDDED_FS && f.ready)
    {
        let blocks = a.data_dir().join("blocks");
        std::fs::create_dir_all(&blocks)?;
        let blocks = std::fs::canonicalize(&blocks)?;
        let uid = unsafe { libc::geteuid() };
        let gid = unsafe { libc::getegid() };
        let storage = format!("file://{}", blocks.display());
        let spec = strata_meta::FsSpec::new(EMBEDDED_FS, &storage);
        client.format(&spec, (uid, gid)).await?;
        tracing::info!(data_dir = %a.data_dir().display(), "created the embedded filesystem");
    }
    let fs_client = client.open_fs(&target.name).await?;
    fs_client.set_dir_spread_slack(a.dir_spread_slack);
    // A token that grants only reading says so once the nodes are asked.
    let read_only = a.read_only() || fs_client.granted_read_only();
    let store = super::open::block_store(&fs_client.info, a.s3_endpoint.clone()).await?;
    // Caches and staged blocks of different filesystems must not mix.
    let cache_dir = a.cache_dir.as_ref().map(|d| d.join(&fs_client.info.uuid));
    let cache = strata_cache::BlockCache::new(
        store,
        strata_cache::BlockCacheConfig {
            mem_bytes: a.cache_mem_size,
            disk: cache_dir.as_ref().map(|dir| strata_cache::DiskCacheConfig {
                dir: dir.clone(),
                capacity: a.cache_size,
                free_ratio: a.cache_free_ratio,
            }),
        },
    )
    .map_err(|e| CliError(format!("cache dir: {e}")))?;
    let staging =
        match (&cache_dir, a.writeback) {
            (Some(dir), true) => {
                let dir = dir.join("staging");
                Some(strata_cache::Staging::open(&dir).map_err(|e| {
                    CliError(format!("write-back staging dir {}: {e}", dir.display()))
                })?)
            }
            _ => None,
        };
    let fs = Filesystem::new(
        fs_client,
        cache,
        FsConfig {
            attr_ttl: Duration::from_secs_f64(a.attr_cache),
            entry_ttl: Duration::from_secs_f64(a.entry_cache),
            read_only,
            buffer_size: a.buffer_size as usize,
            max_uploads: a.max_uploads,
            // Cut to what the caches can hold (see `prefetch_window`).
            max_prefetch_blocks: a.prefetch_blocks,
            gc_interval: Duration::from_secs_f64(a.gc_interval),
            deletion_delay: Duration::from_secs_f64(a.deletion_delay),
            cache_large_writes: a.cache_large_writes,
            defer_creates: a.defer_creates,
            lock_lease: Duration::from_secs_f64(a.lock_lease),
            ..Default::default()
        },
        staging,
    )
    .map_err(|e| CliError(format!("starting the filesystem: {e}")))?;
    if !read_only {
        fs.start_background();
    }
    let mut mount = strata_fuse::mount::mount(
        fs.clone(),
        tokio::runtime::Handle::current(),
        &target.dir,
        &target.name,
        read_only,
    )
    .map_err(|e| CliError(format!("mounting on {}: {e}", target.dir.display())))?;
    let pidf = pid_file(&target.dir);
    let _ = std::fs::write(&pidf, std::process::id().to_string());
    // Without it the mount works; only `strata stats` cannot see it.
    let _control = open_control_socket(&target.dir)
        .inspect_err(|e| tracing::warn!(error = %e.0, "no control socket for strata stats"))
        .ok();
    tracing::info!(dir = %target.dir.display(), fs = %target.name, "mounted");
    println!(
        "strata: {} mounted on {}",
        target.name,
        target.dir.display()
    );
    notify_ready(Ok(()));

    let unmounted_by_signal = tokio::select! {
        _ = shutdown.recv() => true,
        _ = mount.wait() => false,
    };
    if unmounted_by_signal {
        tracing::info!("signal received: committing buffered writes and unmounting");
    }
    // Buffered data is committed before the mount goes away.
    let flushed = fs.flush_all().await;
    tracing::debug!(ok = flushed.is_ok(), "buffers committed");
    if unmounted_by_signal {
        match mount.unmount().await {
            Ok(how) => tracing::debug!(?how, "unmounted"),
            Err(e) => tracing::error!(error = %e, "unmount failed"),
        }
    }
    let _ = std::fs::remove_file(&pidf);
    if let Some(n) = node {
        n.shutdown().await;
        let _ = std::fs::remove_file(addr_file(&a.data_dir()));
    }
    tracing::info!(dir = %target.dir.display(), "unmounted");
    flushed.map_err(|e| CliError(format!("flushing at unmount: {e}")))
}

/// Tells a waiting `strata mount -d` parent how the start went.
fn notify_ready(result: Result<(), &str>) {
    let Some(fd) = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    // SAFETY: the parent handed this descriptor to us for exactly this message;
    // it is used once and closed.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let msg = match result {
        Ok(()) => "ok\n".to_string(),
        Err(e) => format!("{e}\n"),
    };
    let _ = f.write_all(msg.as_bytes());
    // SAFETY: only the first notification may use the descriptor.
    unsafe { std::env::remove_var(READY_FD_ENV) };
}

/// `strata mount -d`: starts this same command in a new session without -d and
/// returns once it reports the mount ready (or prints why it failed).
pub fn run_in_background(a: &MountArgs) -> std::process::ExitCode {
    match spawn_background(a) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn spawn_background(a: &MountArgs) -> CliResult {
    use std::os::unix::process::CommandExt;
    let target = a.target()?;
    check_mountpoint(&target.dir)?;
    let log_path = a.log_file();
    if let Some(parent) = log_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| CliError(format!("log file {}: {e}", log_path.display())))?;
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for the two descriptors pipe() writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(CliError(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    let (rd, wr) = (fds[0], fds[1]);
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|x| x != "-d" && x != "--background")
        .collect();
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&args)
        .env(READY_FD_ENV, wr.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid and close are async-signal-safe; the child detaches from
    // our terminal and drops the read end it does not need.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            libc::close(rd);
            Ok(())
        });
    }
    let child = cmd.spawn();
    // SAFETY: our copy of the write end must close so EOF arrives if the child dies.
    unsafe { libc::close(wr) };
    let mut child = child?;
    // SAFETY: rd is the pipe's read end, owned here from now on.
    let mut reader = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(rd) };
    let mut msg = String::new();
    let _ = reader.read_to_string(&mut msg);
    let msg = msg.trim();
    if msg == "ok" {
        println!(
            "strata: {} mounted on {} (pid {}, log {})",
            target.name,
            target.dir.display(),
            child.id(),
            log_path.display()
        );
        return Ok(());
    }
    let _ = child.wait();
    Err(CliError(if msg.is_empty() {
        format!(
            "the mount process exited before the mount was ready; see {}",
            log_path.display()
        )
    } else {
        format!("{msg} (log: {})", log_path.display())
    }))
}

#[derive(Args)]
pub struct UmountArgs {
    /// The mount point.
    pub dir: PathBuf,
}

pub async fn umount(a: UmountArgs) -> CliResult {
    let pidf = pid_file(&a.dir);
    let pid: Option<i32> = std::fs::read_to_string(&pidf)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let status = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(&a.dir)
        .status();
    let ok = match status {
        Ok(s) => s.success(),
        Err(_) => {
            // No fusermount3: as root the plain syscall works.
            let c = std::ffi::CString::new(a.dir.as_os_str().as_encoded_bytes())
                .map_err(|_| CliError("mount point contains NUL".into()))?;
            // SAFETY: c is a valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), 0) == 0 }
        }
    };
    if !ok {
        return Err(CliError(format!(
            "could not unmount {} (is it a Strata mount, and are files still open there?)",
            a.dir.display()
        )));
    }
    // The mount process finishes its flush and exits; wait so the data dir is free.
    if let Some(pid) = pid {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        // SAFETY: signal 0 only checks that the process exists.
        while unsafe { libc::kill(pid, 0) } == 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    println!("strata: unmounted {}", a.dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        mount: MountArgs,
    }

    fn parse(args: &[&str]) -> Result<MountArgs, clap::Error> {
        Cli::try_parse_from(["strata"].iter().chain(args)).map(|c| c.mount)
    }

    #[test]
    fn large_writes_are_cached_unless_turned_off() {
        let on = |args: &[&str]| parse(args).unwrap().cache_large_writes;
        assert!(on(&["/mnt"]));
        assert!(on(&["--cache-large-writes", "/mnt"]));
        assert!(on(&["--cache-large-writes=true", "/mnt"]));
        assert!(!on(&["--cache-large-writes=false", "/mnt"]));
        // The value needs `=`, so a following argument stays an argument.
        assert_eq!(
            parse(&["--cache-large-writes", "/mnt"]).unwrap().args,
            ["/mnt"]
        );
        assert!(parse(&["--cache-large-writes=maybe", "/mnt"]).is_err());
    }
}
