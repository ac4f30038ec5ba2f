//! Helpers shared by the integration tests of the `strata` binary: the
//! binary itself, mounts that clean up after themselves, metaserver
//! processes and the test S3 server. Helpers that need no binary (`Rng`)
//! come from `strata-testkit`, shared with the other crates' tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::SystemTime;

pub mod proxy;

use strata_cache::test_s3::{Faults, start_faulty_s3_server};
pub use strata_testkit::Rng;

pub fn strata() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
    c.env("RUST_LOG", "warn");
    c
}

/// Runs `strata ARGS` to completion and returns stdout; panics with stderr on failure.
pub fn run_ok(args: &[&str]) -> String {
    run_env_ok(args, &[])
}

/// `strata ARGS` with the environment variables `env` set.
pub fn strata_with(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = strata();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

pub fn run_env_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = strata_with(args, env).output().expect("strata runs");
    assert!(
        out.status.success(),
        "strata {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The process id a `strata mount -d` printed in its output `out`.
pub fn mount_pid(out: &str) -> i32 {
    out.split("pid ")
        .nth(1)
        .and_then(|s| s.split([',', ')']).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {out:?}"))
}

/// FUSE must be usable; the test script installs fuse3 before running tests.
pub fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: these tests need FUSE (run scripts/test.sh, which installs fuse3)"
    );
    assert!(
        Command::new("fusermount3").arg("-V").output().is_ok(),
        "fusermount3 is missing: install fuse3 (scripts/test.sh does)"
    );
}

/// A mount made with `strata mount -d`; unmounted on drop if the test did not.
pub struct Mount {
    pub dir: PathBuf,
    mounted: bool,
}

impl Mount {
    /// `extra` goes before the positional arguments (e.g. --data-dir D, or --meta A NAME).
    pub fn new(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let mut all: Vec<&str> = vec!["mount", "-d"];
        all.extend_from_slice(args);
        all.push(dir.to_str().unwrap());
        run_env_ok(&all, env);
        Mount {
            dir: dir.to_path_buf(),
            mounted: true,
        }
    }

    /// A mount made some other way (say, to read its pid from the output),
    /// unmounted on drop like the others.
    pub fn adopt(dir: &Path) -> Mount {
        Mount {
            dir: dir.to_path_buf(),
            mounted: true,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// `strata umount`, which returns after the mount process has flushed and exited.
    pub fn unmount(mut self) {
        run_ok(&["umount", self.dir.to_str().unwrap()]);
        self.mounted = false;
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.dir)
                .status();
        }
    }
}

/// A `strata meta serve` process; killed on drop.
pub struct MetaServer {
    pub child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
}

impl MetaServer {
    /// Starts a node and returns once it prints its listening address.
    pub fn start(data_dir: &Path, listen: &str) -> MetaServer {
        Self::start_node(1, data_dir, listen)
    }

    pub fn start_node(id: u64, data_dir: &Path, listen: &str) -> MetaServer {
        Self::start_node_with(id, data_dir, listen, &[])
    }

    /// `extra` are more `meta serve` flags.
    pub fn start_node_with(id: u64, data_dir: &Path, listen: &str, extra: &[&str]) -> MetaServer {
        Self::start_node_env(id, data_dir, listen, extra, &[])
    }

    /// `start_node_with` with environment variables `env` set for the node.
    pub fn start_node_env(
        id: u64,
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> MetaServer {
        let id = id.to_string();
        let mut child = strata()
            .envs(env.iter().copied())
            .args([
                "meta",
                "serve",
                "--id",
                &id,
                "--listen",
                listen,
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("meta serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|a| a.contains(':'))
            .unwrap_or_else(|| panic!("meta serve did not report its address: {line:?}"))
            .to_string();
        MetaServer {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn kill9(&mut self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        self.child.wait().unwrap();
    }
}

impl Drop for MetaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three `meta serve` processes under `dir`, formed into one cluster.
pub fn start_cluster(dir: &Path) -> (Vec<MetaServer>, Vec<String>) {
    start_cluster_with(dir, &[])
}

/// Like `start_cluster`, with more `meta serve` flags for every node.
pub fn start_cluster_with(dir: &Path, extra: &[&str]) -> (Vec<MetaServer>, Vec<String>) {
    start_cluster_each(dir, |_| extra.iter().map(|f| f.to_string()).collect())
}

/// Like `start_cluster`, with `meta serve` flags of each node's own
/// (`extra(id)`, ids 1 to 3).
pub fn start_cluster_each(
    dir: &Path,
    extra: impl Fn(u64) -> Vec<String>,
) -> (Vec<MetaServer>, Vec<String>) {
    let nodes: Vec<MetaServer> = (1..=3)
        .map(|id| {
            let flags = extra(id);
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            MetaServer::start_node_with(id, &dir.join(format!("n{id}")), "127.0.0.1:0", &flags)
        })
        .collect();
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    form_cluster(&addrs);
    (nodes, addrs)
}

/// Forms the nodes at `addrs` (node ids 1, 2, … in that order) into one
/// cluster with `meta init`; node 1 then leads every group.
pub fn form_cluster(addrs: &[String]) {
    let peers = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let out = run_ok(&["meta", "init", "--meta", &addrs[0], "--peers", &peers]);
    assert!(out.contains("cluster formed"), "{out}");
}

/// Formats filesystem `t` on the metaservers at `meta` for tests of
/// metadata only (its blocks would go nowhere), in `partitions` partitions.
pub fn format_metadata_only(meta: &str, partitions: u32) {
    run_ok(&[
        "format",
        "--meta",
        meta,
        "t",
        "--storage",
        "file:///unused",
        "--partitions",
        &partitions.to_string(),
    ]);
}

/// A client of filesystem `t` on the metaservers at `addrs`.
pub fn open_t(rt: &tokio::runtime::Runtime, addrs: &[String]) -> strata_meta::FsClient {
    rt.block_on(async {
        let client = strata_meta::MetaClient::connect(addrs).await.unwrap();
        client.open_fs("t").await.unwrap()
    })
}

/// Waits until the replicas at `addrs` of every group of `fs` (and the
/// cluster group) have applied the same log, then asserts that their
/// state digests are equal.
pub fn assert_replicas_agree(
    rt: &tokio::runtime::Runtime,
    fs: &strata_meta::FsClient,
    addrs: &[String],
) {
    let meta = fs.meta().clone();
    let mut groups = fs.groups();
    groups.push(0);
    for g in groups {
        let mut digests = Vec::new();
        until(90, &format!("replicas of group {g} to converge"), || {
            digests = addrs
                .iter()
                .map(|a| rt.block_on(meta.replica_digest(a, g)).unwrap())
                .collect();
            digests.iter().all(|d| d.0 == digests[0].0)
        });
        assert!(
            digests.iter().all(|d| d.1 == digests[0].1),
            "group {g}: replicas differ at the same applied index: {digests:?}"
        );
    }
}

/// Every file in `names` is in the root of `fs` (a fresh client's view),
/// and fsck finds the filesystem clean.
pub fn assert_created_and_clean<'a>(
    rt: &tokio::runtime::Runtime,
    fs: &strata_meta::FsClient,
    names: impl IntoIterator<Item = &'a String>,
) {
    let names: Vec<&String> = names.into_iter().collect();
    let missing: Vec<&&String> = names
        .iter()
        .filter(|name| rt.block_on(fs.lookup(1, name.as_bytes())).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged creates lost: {missing:?}",
        missing.len(),
        names.len()
    );
    let report = rt.block_on(strata_meta::client::fsck::check(fs)).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

/// The number in environment variable `var`, or `default`.
pub fn env_number<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Random writes at random offsets and sizes through the mount, mirrored in memory;
/// returns the model of the file's final contents.
pub fn random_writes(path: &Path, seed: u64, ops: usize, max_size: u64, max_write: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut rng = Rng(seed);
    let mut model: Vec<u8> = Vec::new();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    for i in 0..ops {
        let off = rng.below(max_size);
        let len = 1 + rng.below(max_write);
        let mut data = vec![0u8; len as usize];
        rng.fill(&mut data);
        f.write_all_at(&data, off).unwrap();
        let end = (off + len) as usize;
        if model.len() < end {
            model.resize(end, 0);
        }
        model[off as usize..end].copy_from_slice(&data);
        if i % 7 == 3 {
            // Read back a random range mid-way: own writes must be visible.
            let a = rng.below(model.len() as u64) as usize;
            let b = (a + 1 + rng.below(300_000) as usize).min(model.len());
            let mut got = vec![0u8; b - a];
            f.read_exact_at(&mut got, a as u64).unwrap();
            assert!(
                got == model[a..b],
                "seed {seed}: read-back of [{a},{b}) after op {i} differs"
            );
        }
    }
    f.sync_all().unwrap();
    model
}

pub fn assert_same_file(path: &Path, model: &[u8], what: &str) {
    let got = std::fs::read(path).unwrap();
    assert_eq!(got.len(), model.len(), "{what}: size of {}", path.display());
    if let Some(i) = got.iter().zip(model).position(|(a, b)| a != b) {
        panic!(
            "{what}: {} differs from the model at byte {i}",
            path.display()
        );
    }
}

pub const ACCESS: &str = "strata-test-access";
pub const SECRET: &str = "strata-test-secret-key";

/// The environment a `strata` process needs to reach a test S3 server
/// (credentials `ACCESS` and `SECRET`) at `endpoint`.
pub fn s3_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET.to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
    ]
}

/// A fault-injecting S3 server (s3s) over HTTP on loopback, with the
/// environment a `strata` process needs to reach it.
pub struct S3 {
    pub _rt: tokio::runtime::Runtime,
    pub faults: Arc<Faults>,
    pub env: Vec<(&'static str, String)>,
    /// The server's directory: bucket `bucket` is `root/bucket`.
    pub root: PathBuf,
}

impl S3 {
    pub fn start(root: &Path) -> S3 {
        std::fs::create_dir_all(root).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let faults = Arc::new(Faults::new(7));
        let (endpoint, _task) = rt
            .block_on(start_faulty_s3_server(
                root,
                "bucket",
                ACCESS,
                SECRET,
                faults.clone(),
            ))
            .unwrap();
        S3 {
            _rt: rt,
            faults,
            root: root.to_path_buf(),
            env: s3_env(&endpoint),
        }
    }

    pub fn env(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

/// Formats filesystem `data` on the metaservers at `meta`, over bucket
/// `bucket` of `s3`, with small blocks so tests make many of them.
pub fn format_data(meta: &str, s3: &S3, extra: &[&str]) {
    let mut args = vec![
        "format",
        "--meta",
        meta,
        "data",
        "--storage",
        "s3://bucket/strata",
        "--block-size",
        "256K",
        "--chunk-size",
        "1M",
    ];
    args.extend_from_slice(extra);
    run_env_ok(&args, &s3.env());
}

/// Runs `strata gc` on filesystem `data` until it finds no leak, for up to
/// `secs` seconds: background compactions and deletions may have blocks in
/// flight for a moment, but a referenced block is never missing. Returns
/// the last report.
pub fn gc_settles(secs: u64, meta: &str, s3: &S3) -> String {
    let mut last = String::new();
    until(secs, "gc to find no leaks", || {
        last = run_env_ok(&["gc", "--meta", meta, "data"], &s3.env());
        assert!(last.contains(" 0 missing"), "{last}");
        last.contains(" 0 leaked")
    });
    last
}

/// Writes `data` to a new file at `path` and fsyncs it.
pub fn write_synced(path: &Path, data: impl AsRef<[u8]>) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(data.as_ref()).unwrap();
    f.sync_all().unwrap();
}

/// What a tree holds at each relative path: kind, permission bits, size,
/// mtime (seconds), and contents or link target.
pub type Tree = BTreeMap<String, (String, u32, u64, i64, Vec<u8>)>;

/// Asserts that the tree at `root` holds exactly `want` (paths, kinds,
/// modes, sizes, mtimes, contents).
pub fn assert_same_tree(root: &Path, want: &Tree) {
    let got = tree(root);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{}",
        root.display()
    );
    for (path, w) in want {
        assert_eq!(&got[path], w, "{}/{path}", root.display());
    }
}

pub fn tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let md = std::fs::symlink_metadata(&path).unwrap();
            let ft = md.file_type();
            let (kind, body) = if ft.is_dir() {
                stack.push(path.clone());
                ("dir", Vec::new())
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&path).unwrap();
                ("symlink", t.display().to_string().into_bytes())
            } else if ft.is_file() {
                ("file", std::fs::read(&path).unwrap())
            } else {
                ("other", Vec::new())
            };
            let size = if kind == "file" { md.len() } else { 0 };
            let mtime = if kind == "symlink" { 0 } else { md.mtime() };
            out.insert(rel, (kind.into(), md.mode() & 0o7777, size, mtime, body));
        }
    }
    out
}

/// A tree with nested and empty directories, small, empty and multipart
/// files, a symlink, a hard link and a fifo, with modes and times set.
pub fn make_tree(root: &Path) {
    let mut rng = Rng(77);
    for d in ["a", "a/b", "a/b/c", "empty", "many"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let mut bytes = vec![0u8; 12 << 20];
    rng.fill(&mut bytes);
    std::fs::write(root.join("a/big.bin"), &bytes).unwrap();
    std::fs::write(root.join("a/b/c/deep.txt"), b"deep\n").unwrap();
    std::fs::write(root.join("zero"), b"").unwrap();
    for i in 0..40 {
        let mut b = vec![0u8; rng.below(70_000) as usize];
        rng.fill(&mut b);
        std::fs::write(root.join(format!("many/f{i:02} with space")), &b).unwrap();
    }
    std::os::unix::fs::symlink("a/b/c/deep.txt", root.join("link")).unwrap();
    std::fs::hard_link(root.join("a/b/c/deep.txt"), root.join("a/hard")).unwrap();
    let fifo = std::ffi::CString::new(root.join("pipe").display().to_string()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    std::fs::set_permissions(root.join("zero"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(root.join("a/b"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    std::fs::File::options()
        .write(true)
        .open(root.join("a/big.bin"))
        .unwrap()
        .set_modified(old)
        .unwrap();
}

/// Polls `cond` until it holds, failing after `secs` (waiting on an
/// outcome, never on time alone).
pub fn until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A one-node metaserver under `tmp/meta` with filesystem `data` on `s3`.
pub fn one_node_with_data(tmp: &Path, s3: &S3, extra: &[&str]) -> (MetaServer, String) {
    let server = MetaServer::start(&tmp.join("meta"), "127.0.0.1:0");
    let addr = server.addr.clone();
    format_data(&addr, s3, extra);
    (server, addr)
}

/// statvfs(2) of `path`, as `df` reads it.
pub fn statvfs(path: &Path) -> libc::statvfs {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a zeroed statvfs is a valid out-parameter, and `c` outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::statvfs(c.as_ptr(), &mut st) },
        0,
        "statvfs {path:?}"
    );
    st
}

/// A port nobody listens on now (the OS picks it; it is let go at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The body of `GET http://addr/path` (HTTP/1.0: the server closes).
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.lines().next()?;
    (status.split(' ').nth(1) == Some("200")).then(|| body.to_string())
}

/// A small tmpfs, unmounted when dropped.
pub struct Tmpfs(pub std::path::PathBuf);

impl Tmpfs {
    pub fn new(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "mounting a tmpfs on {} (the tests run as root)",
            dir.display()
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
