//! Random and mutated frames sent to a `strata meta serve` process over raw
//! TCP connections: the node never panics, its memory and descriptors stay
//! bounded, it closes exactly the connections whose frames it cannot read
//! (after answering every request it took on them), and a well-behaved
//! client keeps working throughout.
//!
//! `STRATA_FUZZ_FRAMES` (default 100 000) frames are sent, from a seed taken
//! from `STRATA_FUZZ_SEED` (printed; random if unset). `bench/fuzz_frames.sh`
//! runs a million in release mode. A second test does the same over TLS
//! (`STRATA_FUZZ_TLS_FRAMES`, default 20 000), after peers that never
//! authenticate had their go (see `unauthenticated`), from a client whose
//! certificate grants one filesystem, with nothing filtered out.
//!
//! Every byte chunk is generated and checked locally before it is sent: the
//! test parses it exactly as the node does (4-byte big-endian length,
//! `MAX_FRAME`, `wire::decode::<Request>`), so it knows which requests the
//! node will take, whether it will close the connection, and why.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use strata_meta::request::{MetaRequest, Origin, ReadRequest, RenameMode, TxStep, WriteRequest};
use strata_meta::rpc::Credentials;
use strata_meta::tls::{Tls, TlsFiles};
use strata_meta::wire::{self, Frame, MAX_FRAME, Request, Response};
use strata_meta::{
    CLUSTER_GROUP, FileLock, FileType, FsClient, GroupId, Ino, LockKind, MetaClient, NewInode,
    SetAttr, Slice, Timestamp, TreeRowKind, XattrMode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Raw connections sending fuzz frames at once.
const CONNECTIONS: usize = 8;
/// A well-behaved round every this many fuzz frames...
const ROUND_EVERY: u64 = 1_000;
/// ... or this long after the last one, whichever comes first (so a node
/// that stops reading fuzz frames is still asked).
const ROUND_PAUSE: Duration = Duration::from_secs(1);
/// Longest a well-behaved round may take (MetaClient retries inside it).
const ROUND_DEADLINE: Duration = Duration::from_secs(30);
/// Longest the node may take to close a connection it must close.
const CLOSE_DEADLINE: Duration = Duration::from_secs(30);
/// Allowed growth of the node's resident memory from the warm-up to the end.
const MAX_RSS_GROWTH_KIB: u64 = 64 << 10;
/// Descriptors the node may hold at the end beyond what it held at the
/// warm-up (which counted up to `CONNECTIONS` fuzz connections).
const FD_SLACK: usize = 8;

#[test]
fn random_and_mutated_frames_never_hurt_the_metaserver() {
    let frames = frames_from_env("STRATA_FUZZ_FRAMES", 100_000);
    run(Setup::Plain, frames);
}

/// The same over TLS, from a client whose certificate grants filesystem
/// `fz` alone: every frame is sent, administration and Raft ones too, and
/// the node must refuse those (answering them) and take the rest. Before
/// that, peers without TLS or with garbage for a handshake send frames to
/// the TLS port: the node must change nothing for them.
#[test]
fn frames_before_and_after_authentication_over_tls() {
    let frames = frames_from_env("STRATA_FUZZ_TLS_FRAMES", 20_000);
    run(Setup::Tls, frames);
}

/// How the node is reached.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    /// Plain TCP on loopback: every peer may do everything, so frames that
    /// would administer the cluster or speak Raft are not sent (`forbidden`).
    Plain,
    /// TLS; the fuzzing client has a certificate for filesystem `fz` only.
    Tls,
}

fn frames_from_env(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .map(|v| v.parse().expect("a frame count"))
        .unwrap_or(default)
}

fn run(setup: Setup, frames: u64) {
    let seed: u64 = std::env::var("STRATA_FUZZ_SEED")
        .map(|v| v.parse().expect("STRATA_FUZZ_SEED is a number"))
        .unwrap_or_else(|_| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            t.as_nanos() as u64 ^ (std::process::id() as u64) << 32
        });
    println!("frame_fuzz: seed {seed} (repeat with STRATA_FUZZ_SEED={seed}), {frames} frames");

    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("meta.log");
    let pki = tmp.path().join("pki");
    let tls = (setup == Setup::Tls).then(|| make_pki(&pki));
    let node_flags = tls
        .as_ref()
        .map(|t| t.node_flags.clone())
        .unwrap_or_default();
    let mut server = start_logged_server(&tmp.path().join("meta"), &log, &node_flags);
    let _report = FailureReport {
        seed,
        log: log.clone(),
    };
    let blocks = format!("file://{}", tmp.path().join("blocks").display());
    // Small partitions: inode numbers stay small and close together, so
    // mutated numbers often name real inodes.
    let admin_env = tls.as_ref().map(|t| t.admin_env()).unwrap_or_default();
    let admin_env: Vec<(&str, &str)> = admin_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_env_ok(
        &[
            "format",
            "--meta",
            &server.addr,
            "fz",
            "--storage",
            &blocks,
            "--partitions",
            "4",
            "--inodes-per-partition",
            "1024",
        ],
        &admin_env,
    );
    let pid = server.child.id();
    let addr = server.addr.clone();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let outcome = rt.block_on(fuzz(&addr, pid, seed, frames, tls.as_ref()));
    let secs = started.elapsed().as_secs_f64();

    let stats = &outcome.stats;
    println!(
        "frame_fuzz: {} frames sent in {secs:.1} s ({:.0}/s) over {} connections, \
         {} well-behaved rounds (slowest {:.0} ms)",
        stats.sent(),
        stats.sent() as f64 / secs,
        stats.connections,
        outcome.rounds,
        outcome.slowest_round.as_secs_f64() * 1e3
    );
    for (kind, n) in &stats.by_kind {
        println!("  sent   {kind:<34} {n:>9}");
    }
    for (what, n) in &stats.outcomes {
        println!("  node   {what:<34} {n:>9}");
    }
    let skipped: u64 = stats.skipped.values().sum();
    println!("  skipped (admin or non-Meta requests until authorization): {skipped}");
    for (what, n) in &stats.skipped {
        println!("    {what:<38} {n:>9}");
    }
    println!(
        "  requests taken {} and answered {}",
        stats.requests_taken, stats.answers
    );

    assert!(
        server.child.try_wait().unwrap().is_none(),
        "seed {seed}: the metaserver exited"
    );
    // The node's log: no panic anywhere (a panicking task would not end the
    // process, so its absence is checked here).
    let text = std::fs::read_to_string(&log).unwrap();
    let closing = text
        .lines()
        .filter(|l| l.contains("closing connection: "))
        .count();
    let other: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("closing connection: "))
        .collect();
    println!(
        "  node log: {closing} closed-connection warnings, {} other lines{}",
        other.len(),
        if other.is_empty() { "" } else { ", the first:" }
    );
    for l in other.iter().take(10) {
        println!("    {l}");
    }
    let panics: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("panicked"))
        .take(20)
        .collect();
    assert!(
        panics.is_empty(),
        "seed {seed}: the metaserver panicked:\n{}",
        panics.join("\n")
    );
    let failures = std::mem::take(&mut *outcome.failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "seed {seed}: {} failure(s):\n{}",
        failures.len(),
        failures.join("\n\n")
    );

    let (warm_rss, warm_fds) = outcome.warm.expect("a warm-up sample");
    let end_rss = rss_kib(pid);
    println!(
        "  node VmRSS after warm-up {warm_rss} KiB, at the end {end_rss} KiB (growth {} KiB), \
         peak {} KiB",
        end_rss as i64 - warm_rss as i64,
        status_kib(pid, "VmHWM")
    );
    assert!(
        end_rss <= warm_rss + MAX_RSS_GROWTH_KIB,
        "seed {seed}: the metaserver's memory grew from {warm_rss} KiB to {end_rss} KiB"
    );
    // Every fuzz connection is closed: the node's descriptors come back.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut fds = fd_count(pid);
    while fds > warm_fds + FD_SLACK {
        assert!(
            Instant::now() < deadline,
            "seed {seed}: the metaserver holds {fds} descriptors 30 s after the fuzz \
             connections closed ({warm_fds} after the warm-up)"
        );
        std::thread::sleep(Duration::from_millis(50));
        fds = fd_count(pid);
    }
    println!("  node descriptors after warm-up {warm_fds}, at the end {fds}");
    assert!(server.child.try_wait().unwrap().is_none());
}

/// The TLS side of `Setup::Tls`: a CA, the node's certificate, an
/// administrator's (the well-behaved client, format) and the fuzzer's,
/// which grants filesystem `fz` alone.
struct Pki {
    node_flags: Vec<String>,
    ca: std::path::PathBuf,
    dir: std::path::PathBuf,
    admin: Tls,
    fuzzer: Tls,
}

fn make_pki(dir: &Path) -> Pki {
    let d = dir.display().to_string();
    run_ok(&["cert", "init", "--dir", &d]);
    run_ok(&["cert", "issue", "--dir", &d, "--node", "1"]);
    run_ok(&["cert", "issue", "--dir", &d, "--client", "admin", "--admin"]);
    run_ok(&[
        "cert", "issue", "--dir", &d, "--client", "fuzzer", "--fs", "fz",
    ]);
    let files = |name: &str| TlsFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        ca: dir.join("ca.pem"),
    };
    let node = files("node-1");
    Pki {
        node_flags: vec![
            "--tls-ca".into(),
            node.ca.display().to_string(),
            "--tls-cert".into(),
            node.cert.display().to_string(),
            "--tls-key".into(),
            node.key.display().to_string(),
        ],
        ca: dir.join("ca.pem"),
        dir: dir.to_path_buf(),
        admin: Tls::load(&files("client-admin")).unwrap(),
        fuzzer: Tls::load(&files("client-fuzzer")).unwrap(),
    }
}

impl Pki {
    fn admin_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("STRATA_TLS_CA", self.ca.display().to_string()),
            (
                "STRATA_TLS_CERT",
                self.dir.join("client-admin.pem").display().to_string(),
            ),
            (
                "STRATA_TLS_KEY",
                self.dir.join("client-admin.key").display().to_string(),
            ),
        ]
    }
}

/// `strata meta serve` as `MetaServer::start` runs it, with its log (a
/// warning per closed connection: tens of thousands of lines) in `log`,
/// and `extra` flags.
fn start_logged_server(data_dir: &Path, log: &Path, extra: &[String]) -> MetaServer {
    let mut child = strata()
        .args([
            "meta",
            "serve",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
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

/// On a failing assertion: the seed again, and what the node logged.
struct FailureReport {
    seed: u64,
    log: std::path::PathBuf,
}

impl Drop for FailureReport {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let notable: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| !l.contains("closing connection: "))
            .take(40)
            .collect();
        eprintln!(
            "frame_fuzz failed with seed {} (STRATA_FUZZ_SEED={0}); metaserver log: {} lines, \
             lines other than closed connections:\n{}\nlast lines:\n{}",
            self.seed,
            lines.len(),
            notable.join("\n"),
            lines[lines.len().saturating_sub(30)..].join("\n")
        );
    }
}

/// A size (KiB) from /proc/PID/status: `VmRSS`, `VmHWM`.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// What the whole run found.
struct Outcome {
    failures: Arc<Mutex<Vec<String>>>,
    stats: Stats,
    rounds: u64,
    slowest_round: Duration,
    /// VmRSS (KiB) and open descriptors of the node after the warm-up.
    warm: Option<(u64, usize)>,
}

#[derive(Default)]
struct Stats {
    /// Chunks sent, by how they were made.
    by_kind: BTreeMap<&'static str, u64>,
    /// What the node was expected to do with them.
    outcomes: BTreeMap<&'static str, u64>,
    /// Chunks not sent, by the request that kept them back.
    skipped: BTreeMap<&'static str, u64>,
    connections: u64,
    requests_taken: u64,
    answers: u64,
}

impl Stats {
    fn sent(&self) -> u64 {
        self.by_kind.values().sum()
    }

    fn add(&mut self, o: Stats) {
        for (k, v) in o.by_kind {
            *self.by_kind.entry(k).or_default() += v;
        }
        for (k, v) in o.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
        for (k, v) in o.skipped {
            *self.skipped.entry(k).or_default() += v;
        }
        self.connections += o.connections;
        self.requests_taken += o.requests_taken;
        self.answers += o.answers;
    }
}

/// Shared by the fuzzing connections and the well-behaved client.
struct Shared {
    addr: String,
    /// TLS of the fuzzing connections (`Setup::Tls`).
    tls: Option<Tls>,
    /// Whether frames the node would obey from anyone are left out
    /// (`Setup::Plain`; see `forbidden`).
    filtered: bool,
    seed: u64,
    corpus: Vec<Entry>,
    /// Fuzz frames sent so far, all connections together.
    sent: AtomicU64,
    progress: tokio::sync::watch::Sender<u64>,
    failed: AtomicBool,
    failures: Arc<Mutex<Vec<String>>>,
}

impl Shared {
    fn fail(&self, what: String) {
        self.failed.store(true, Ordering::SeqCst);
        self.failures.lock().unwrap().push(what);
    }

    fn count_sent(&self) {
        let n = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(ROUND_EVERY / 10) {
            self.progress.send_replace(n);
        }
    }
}

async fn fuzz(addr: &str, pid: u32, seed: u64, frames: u64, pki: Option<&Pki>) -> Outcome {
    let creds = Credentials::tls(pki.map(|p| p.admin.clone()));
    let client = MetaClient::connect_with(&[addr.to_string()], creds)
        .await
        .unwrap();
    let fs = client.open_fs("fz").await.unwrap();
    let wb = WellBehaved::make(&fs).await;
    let corpus = build_corpus(&fs).await;
    println!(
        "frame_fuzz: corpus of {} requests on fs {} (groups {:?})",
        corpus.len(),
        fs.info.id,
        fs.groups()
    );
    // A first round before any fuzz frame: the client works at all.
    wb.round(&fs, 0).await.expect("a well-behaved round");

    let failures = Arc::new(Mutex::new(Vec::new()));
    if pki.is_some()
        && let Err(e) = unauthenticated(addr, seed, &client, &fs, &corpus).await
    {
        failures.lock().unwrap().push(format!("seed {seed}: {e}"));
    }
    let (progress, mut watch) = tokio::sync::watch::channel(0u64);
    let shared = Arc::new(Shared {
        addr: addr.to_string(),
        tls: pki.map(|p| p.fuzzer.clone()),
        filtered: pki.is_none(),
        seed,
        corpus,
        sent: AtomicU64::new(0),
        progress,
        failed: AtomicBool::new(false),
        failures: failures.clone(),
    });
    let mut workers = Vec::new();
    for w in 0..CONNECTIONS {
        let quota =
            frames / CONNECTIONS as u64 + u64::from((w as u64) < frames % CONNECTIONS as u64);
        // Streams of different seeds and connections do not overlap.
        let rng = Rng(splitmix(splitmix(seed).wrapping_add(w as u64)));
        workers.push(tokio::spawn(fuzz_connection(shared.clone(), w, rng, quota)));
    }

    // The well-behaved client, a round every ROUND_EVERY fuzz frames or
    // ROUND_PAUSE.
    let mut rounds = 1;
    let mut slowest = Duration::ZERO;
    let mut warm = None;
    let mut next_round = ROUND_EVERY;
    let mut last_round = Instant::now();
    let warm_at = (frames / 10).max(1);
    loop {
        let done = workers.iter().all(|w| w.is_finished());
        let sent = *watch.borrow_and_update();
        if warm.is_none() && sent >= warm_at {
            warm = Some((rss_kib(pid), fd_count(pid)));
        }
        if done || shared.failed.load(Ordering::SeqCst) {
            break;
        }
        if sent >= next_round || last_round.elapsed() >= ROUND_PAUSE {
            next_round = (sent / ROUND_EVERY + 1) * ROUND_EVERY;
            let t = Instant::now();
            match tokio::time::timeout(ROUND_DEADLINE, wb.round(&fs, rounds)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => shared.fail(format!(
                    "seed {seed}: a well-behaved round after {sent} fuzz frames failed: {e}"
                )),
                Err(_) => shared.fail(format!(
                    "seed {seed}: a well-behaved round after {sent} fuzz frames took over {ROUND_DEADLINE:?}"
                )),
            }
            slowest = slowest.max(t.elapsed());
            rounds += 1;
            last_round = Instant::now();
            continue;
        }
        // Woken by progress, or when the next round is due by time.
        let _ = tokio::time::timeout(ROUND_PAUSE, watch.changed()).await;
    }
    let mut stats = Stats::default();
    for w in workers {
        stats.add(w.await.expect("a fuzzing connection's task"));
    }
    if warm.is_none() {
        // Fewer frames than a warm-up's worth of progress reports.
        warm = Some((rss_kib(pid), fd_count(pid)));
    }
    if !shared.failed.load(Ordering::SeqCst) {
        // The final round, after every fuzz connection is closed.
        let t = Instant::now();
        match tokio::time::timeout(ROUND_DEADLINE, wb.round(&fs, rounds)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => shared.fail(format!("seed {seed}: the final round failed: {e}")),
            Err(_) => shared.fail(format!("seed {seed}: the final round took too long")),
        }
        slowest = slowest.max(t.elapsed());
        rounds += 1;
    }
    report_intents(&fs).await;
    Outcome {
        failures,
        stats,
        rounds,
        slowest_round: slowest,
        warm,
    }
}

/// The first byte of a TLS alert record.
const TLS_ALERT_RECORD: u8 = 0x15;

/// Fresh TCP connections that never authenticate, to a TLS node.
const UNAUTHENTICATED_CONNECTIONS: u64 = 300;

/// Peers that never authenticate on a TLS node: plain frames (the corpus,
/// mutated or not, as the fuzzer makes them), random bytes, and garbage
/// posing as a TLS handshake, each on a fresh TCP connection. The node may
/// answer nothing but a refusal, must close every one of them, and must
/// change nothing: every group's replica digest is the same after.
async fn unauthenticated(
    addr: &str,
    seed: u64,
    client: &MetaClient,
    fs: &FsClient,
    corpus: &[Entry],
) -> Result<(), String> {
    let mut groups = vec![CLUSTER_GROUP];
    groups.extend(fs.groups());
    let mut before = Vec::new();
    for &g in &groups {
        before.push(
            client
                .replica_digest(addr, g)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let mut rng = Rng(splitmix(seed ^ 0x5eed_5eed));
    let mut framer = Framer {
        client: rng.next(),
        seq: 0,
    };
    let (mut refusals, mut alerts, mut silent) = (0u64, 0u64, 0u64);
    for i in 0..UNAUTHENTICATED_CONNECTIONS {
        let bytes = match i % 3 {
            0 => next_chunk(&mut rng, corpus, &mut framer).bytes,
            1 => {
                let mut b = vec![0u8; 1 + rng.below(2_000) as usize];
                rng.fill(&mut b);
                b
            }
            _ => {
                // A TLS record header of a handshake, then noise.
                let mut b = vec![0x16, 0x03, 0x01, 0x01, 0x00];
                let mut noise = vec![0u8; rng.below(400) as usize];
                rng.fill(&mut noise);
                b.extend(noise);
                b
            }
        };
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        // The node may close before reading it all: that is its right.
        let _ = s.write_all(&bytes).await;
        let _ = s.shutdown().await;
        let mut back = Vec::new();
        match tokio::time::timeout(CLOSE_DEADLINE, s.read_to_end(&mut back)).await {
            Err(_) => {
                return Err(format!(
                    "an unauthenticated connection (chunk {}) stayed open",
                    hex(&bytes)
                ));
            }
            Ok(_) if back.is_empty() => silent += 1,
            // A TLS alert record: the handshake's own refusal.
            Ok(_) if back[0] == TLS_ALERT_RECORD => alerts += 1,
            Ok(_) => {
                let mut at = 0;
                while back.len() - at >= 4 {
                    let len = u32::from_be_bytes(back[at..at + 4].try_into().unwrap()) as usize;
                    let frame = back
                        .get(at + 4..at + 4 + len)
                        .and_then(|b| wire::decode::<Response>(b).ok());
                    match frame {
                        Some(Frame {
                            body: Response::Denied(_),
                            ..
                        }) => refusals += 1,
                        other => {
                            return Err(format!(
                                "an unauthenticated peer got {other:?} for {}",
                                hex(&bytes)
                            ));
                        }
                    }
                    at += 4 + len;
                }
            }
        }
    }
    for (g, want) in groups.iter().zip(&before) {
        let now = client
            .replica_digest(addr, *g)
            .await
            .map_err(|e| e.to_string())?;
        if now != *want {
            return Err(format!(
                "group {g} changed while only unauthenticated peers spoke: {want:?} -> {now:?}"
            ));
        }
    }
    println!(
        "frame_fuzz: {UNAUTHENTICATED_CONNECTIONS} unauthenticated connections: {refusals} \
         refused with why, {alerts} with a TLS alert, {silent} closed without a word; no \
         group changed"
    );
    Ok(())
}

/// Prints the cross-group transactions left pending in each group (fuzz
/// frames prepare some; recovery finishes those it can).
async fn report_intents(fs: &FsClient) {
    for g in fs.groups() {
        if let Ok(intents) = fs.intents(g).await {
            println!(
                "  group {g}: {} pending transaction(s) at the end",
                intents.len()
            );
            for i in intents.iter().take(5) {
                println!("    {i:?}");
            }
        }
    }
}

/// Files the well-behaved client checks, out of the corpus's way.
struct WellBehaved {
    dir: Ino,
    known: Ino,
}

impl WellBehaved {
    async fn make(fs: &FsClient) -> WellBehaved {
        let dir = fs
            .create(
                1,
                b"well-behaved-client-dir",
                NewInode::plain(FileType::Dir, 0o755, 0, 0),
            )
            .await
            .unwrap()
            .ino;
        let known = fs
            .create(
                dir,
                b"well-behaved-known-file",
                NewInode::plain(FileType::File, 0o644, 0, 0),
            )
            .await
            .unwrap()
            .ino;
        WellBehaved { dir, known }
    }

    /// A getattr of the known file, and a create and unlink of a fresh name.
    async fn round(&self, fs: &FsClient, round: u64) -> Result<(), String> {
        let a = fs
            .getattr(self.known)
            .await
            .map_err(|e| format!("getattr: {e}"))?;
        if a.ino != self.known || a.kind != FileType::File {
            return Err(format!("getattr of {} answered {a:?}", self.known));
        }
        let name = format!("round-{round}");
        let made = fs
            .create(
                self.dir,
                name.as_bytes(),
                NewInode::plain(FileType::File, 0o600, 0, 0),
            )
            .await
            .map_err(|e| format!("create {name}: {e}"))?;
        let gone = fs
            .unlink(self.dir, name.as_bytes())
            .await
            .map_err(|e| format!("unlink {name}: {e}"))?;
        if gone != Some(made.ino) {
            return Err(format!(
                "unlink {name} (inode {}) answered {gone:?}",
                made.ino
            ));
        }
        Ok(())
    }
}

/// One valid request of the corpus.
struct Entry {
    name: &'static str,
    group: GroupId,
    req: MetaRequest,
}

/// Real files for the corpus to name, and a spread of client requests on
/// them (and on the cluster group), each sent to the group that holds it.
async fn build_corpus(fs: &FsClient) -> Vec<Entry> {
    let id = fs.info.id;
    let now = Timestamp::now();
    let file = |mode| NewInode::plain(FileType::File, mode, 0, 0);
    let dir = fs
        .create(1, b"fuzz", NewInode::plain(FileType::Dir, 0o755, 0, 0))
        .await
        .unwrap()
        .ino;
    let mut files = Vec::new();
    for i in 0..8 {
        let name = format!("f{i}");
        files.push(
            fs.create(dir, name.as_bytes(), file(0o644))
                .await
                .unwrap()
                .ino,
        );
    }
    let sub = fs
        .create(dir, b"sub", NewInode::plain(FileType::Dir, 0o700, 0, 0))
        .await
        .unwrap()
        .ino;
    fs.create(sub, b"inner", file(0o600)).await.unwrap();
    fs.create(dir, b"empty", NewInode::plain(FileType::Dir, 0o755, 0, 0))
        .await
        .unwrap();
    let link = fs
        .create(
            dir,
            b"link",
            NewInode {
                symlink: Some(b"f0".to_vec()),
                ..NewInode::plain(FileType::Symlink, 0o777, 0, 0)
            },
        )
        .await
        .unwrap()
        .ino;
    let first = fs.alloc_slice_ids(4).await.unwrap();
    let chunk = fs.info.chunk_size;
    let slice = |n: u64, len| Slice {
        id: first + n,
        pos: 0,
        len,
    };
    fs.write_slices(
        files[0],
        vec![(0, slice(0, 4096)), (1, slice(1, 100))],
        chunk as u64 + 100,
        now,
    )
    .await
    .unwrap();
    fs.set_xattr(files[1], b"user.fuzz", b"value", XattrMode::Any)
        .await
        .unwrap();
    let lock = FileLock {
        client: fs.meta().client_id(),
        owner: 1,
        pid: 42,
        kind: LockKind::Write,
        start: 0,
        end: 99,
        expires: now.plus(Duration::from_secs(3600)),
    };
    fs.set_lock(files[2], lock).await.unwrap();

    let g = |ino: Ino| fs.group_of(ino);
    let (gd, gs) = (g(dir).await.unwrap(), g(sub).await.unwrap());
    let gf: Vec<GroupId> = {
        let mut v = Vec::new();
        for &f in &files {
            v.push(g(f).await.unwrap());
        }
        v
    };
    let groups = fs.groups();
    let other = *groups.iter().find(|&&x| x != gd).unwrap_or(&gd);
    let name = |s: &str| s.as_bytes().to_vec();
    let r = |name, group, req: ReadRequest| Entry {
        name,
        group,
        req: req.into(),
    };
    let w = |name, group, req: WriteRequest| Entry {
        name,
        group,
        req: req.into(),
    };
    let new_file = file(0o640);
    vec![
        r("GetClusterMap", CLUSTER_GROUP, ReadRequest::GetClusterMap),
        r("ListFs", CLUSTER_GROUP, ReadRequest::ListFs),
        r(
            "GetFs",
            CLUSTER_GROUP,
            ReadRequest::GetFs { name: "fz".into() },
        ),
        r(
            "ListPartitions",
            CLUSTER_GROUP,
            ReadRequest::ListPartitions { fs: id },
        ),
        r(
            "ListSnapshots",
            CLUSTER_GROUP,
            ReadRequest::ListSnapshots {
                source: "fz".into(),
            },
        ),
        r(
            "Lookup",
            gd,
            ReadRequest::Lookup {
                fs: id,
                parent: dir,
                name: name("f3"),
            },
        ),
        r(
            "Lookup root",
            g(1).await.unwrap(),
            ReadRequest::Lookup {
                fs: id,
                parent: 1,
                name: name("fuzz"),
            },
        ),
        r(
            "GetAttr",
            gf[4],
            ReadRequest::GetAttr {
                fs: id,
                ino: files[4],
            },
        ),
        r(
            "GetAttrAndChunk",
            gf[0],
            ReadRequest::GetAttrAndChunk {
                fs: id,
                ino: files[0],
                index: 1,
            },
        ),
        r(
            "ReadDir",
            gd,
            ReadRequest::ReadDir {
                fs: id,
                ino: dir,
                after: None,
                limit: 100,
            },
        ),
        r(
            "ReadDir after",
            gd,
            ReadRequest::ReadDir {
                fs: id,
                ino: dir,
                after: Some(name("f3")),
                limit: 2,
            },
        ),
        r(
            "ReadChunk",
            gf[0],
            ReadRequest::ReadChunk {
                fs: id,
                ino: files[0],
                index: 0,
            },
        ),
        r("Usage", gd, ReadRequest::Usage { fs: id }),
        r("LiveUsage", other, ReadRequest::LiveUsage { fs: id }),
        r(
            "ListInodes",
            gd,
            ReadRequest::ListInodes {
                fs: id,
                after: 0,
                limit: 50,
            },
        ),
        r("ListIntents", gd, ReadRequest::ListIntents),
        r("GetTrashDays", gd, ReadRequest::GetTrashDays { fs: id }),
        r(
            "GarbageWork",
            gd,
            ReadRequest::GarbageWork {
                fs: id,
                now,
                after: 0,
                limit: 10,
            },
        ),
        r(
            "ListTrash",
            gd,
            ReadRequest::ListTrash {
                fs: id,
                after: 0,
                limit: 10,
            },
        ),
        r(
            "ListChunks",
            gf[0],
            ReadRequest::ListChunks {
                fs: id,
                after: Some((files[0], 0)),
                limit: 10,
            },
        ),
        r(
            "GetXattr",
            gf[1],
            ReadRequest::GetXattr {
                fs: id,
                ino: files[1],
                name: name("user.fuzz"),
            },
        ),
        r(
            "ListXattrs",
            gf[1],
            ReadRequest::ListXattrs {
                fs: id,
                ino: files[1],
            },
        ),
        r(
            "GetLock",
            gf[2],
            ReadRequest::GetLock {
                fs: id,
                ino: files[2],
                lock: FileLock {
                    client: 7,
                    kind: LockKind::Read,
                    ..lock
                },
                now,
            },
        ),
        r(
            "DumpRows",
            gd,
            ReadRequest::DumpRows {
                fs: id,
                kind: TreeRowKind::Entries,
                after: None,
                limit: 20,
            },
        ),
        w(
            "AllocSliceIds",
            CLUSTER_GROUP,
            WriteRequest::AllocSliceIds { fs: id, count: 3 },
        ),
        w(
            "SetAttr",
            gf[3],
            WriteRequest::SetAttr {
                fs: id,
                ino: files[3],
                set: SetAttr {
                    mode: Some(0o600),
                    uid: Some(1000),
                    gid: None,
                    size: Some(12345),
                    atime: Some(now),
                    mtime: Some(now),
                    ctime: None,
                },
                now,
            },
        ),
        w(
            "Create",
            gd,
            WriteRequest::Create {
                fs: id,
                parent: dir,
                name: name("new"),
                new: new_file.clone(),
                now,
            },
        ),
        w(
            "Create dir",
            gd,
            WriteRequest::Create {
                fs: id,
                parent: dir,
                name: name("newdir"),
                new: NewInode::plain(FileType::Dir, 0o755, 0, 0),
                now,
            },
        ),
        w(
            "Create symlink",
            gd,
            WriteRequest::Create {
                fs: id,
                parent: dir,
                name: name("newlink"),
                new: NewInode {
                    symlink: Some(name("../fuzz/f1")),
                    ..NewInode::plain(FileType::Symlink, 0o777, 0, 0)
                },
                now,
            },
        ),
        w(
            "Create device",
            gd,
            WriteRequest::Create {
                fs: id,
                parent: dir,
                name: name("dev"),
                new: NewInode {
                    rdev: 0x0103,
                    ..NewInode::plain(FileType::CharDev, 0o600, 0, 0)
                },
                now,
            },
        ),
        w(
            "Link",
            gd,
            WriteRequest::Link {
                fs: id,
                ino: files[5],
                parent: dir,
                name: name("hard"),
                now,
            },
        ),
        w(
            "Unlink",
            gd,
            WriteRequest::Unlink {
                fs: id,
                parent: dir,
                name: name("f6"),
                now,
            },
        ),
        w(
            "Rmdir",
            gd,
            WriteRequest::Rmdir {
                fs: id,
                parent: dir,
                name: name("empty"),
                now,
            },
        ),
        w(
            "Rename",
            gd,
            WriteRequest::Rename {
                fs: id,
                parent: dir,
                name: name("f7"),
                new_parent: dir,
                new_name: name("f7-renamed"),
                now,
            },
        ),
        w(
            "RenameWith exchange",
            gd,
            WriteRequest::RenameWith {
                fs: id,
                parent: dir,
                name: name("f4"),
                new_parent: dir,
                new_name: name("f5"),
                mode: RenameMode::Exchange,
                now,
            },
        ),
        w(
            "WriteSlices",
            gf[0],
            WriteRequest::WriteSlices {
                fs: id,
                ino: files[0],
                slices: vec![(0, slice(2, 512)), (2, slice(3, 10))],
                end: 2 * chunk as u64 + 10,
                now,
            },
        ),
        w(
            "PunchHole",
            gf[0],
            WriteRequest::PunchHole {
                fs: id,
                ino: files[0],
                offset: 100,
                len: 200,
                now,
            },
        ),
        w(
            "ReserveAppend",
            gf[3],
            WriteRequest::ReserveAppend {
                fs: id,
                ino: files[3],
                at_least: 0,
                len: 4096,
                now,
            },
        ),
        w(
            "TxBegin",
            gd,
            WriteRequest::TxBegin {
                fs: id,
                tx: 77,
                participants: vec![gd, other],
                now,
            },
        ),
        w(
            "TxPrepare",
            other,
            WriteRequest::TxPrepare {
                fs: id,
                tx: 78,
                coord: gd,
                participants: vec![gd, other],
                steps: vec![TxStep::CreateInode {
                    new: NewInode::plain(FileType::Dir, 0o755, 0, 0),
                    parent: dir,
                }],
                now,
            },
        ),
        w(
            "TxCommit",
            gd,
            WriteRequest::TxCommit {
                fs: id,
                tx: 77,
                steps: vec![
                    TxStep::PutDentry {
                        parent: dir,
                        name: name("txname"),
                        ino: files[3],
                        kind: FileType::File,
                        replace: None,
                    },
                    TxStep::AddLink { ino: files[3] },
                    TxStep::TouchDir { ino: dir, nlink: 0 },
                ],
                now,
            },
        ),
        w(
            "TxFinish",
            other,
            WriteRequest::TxFinish {
                fs: id,
                tx: 78,
                commit: false,
                now,
            },
        ),
        w("TxResolve", gd, WriteRequest::TxResolve { tx: 77 }),
        w("TxForget", gd, WriteRequest::TxForget { tx: 77 }),
        w(
            "HoldInodes",
            gf[1],
            WriteRequest::HoldInodes {
                fs: id,
                inos: vec![files[1], files[5]],
                until: now.plus(Duration::from_secs(60)),
                now,
            },
        ),
        w(
            "PurgeTrash",
            gd,
            WriteRequest::PurgeTrash {
                fs: id,
                now,
                limit: 10,
            },
        ),
        w(
            "AckDeletions",
            gd,
            WriteRequest::AckDeletions {
                fs: id,
                slices: vec![first + 3],
            },
        ),
        w(
            "CompactChunk",
            gf[0],
            WriteRequest::CompactChunk {
                fs: id,
                ino: files[0],
                index: 0,
                old: vec![slice(0, 4096)],
                new: slice(3, 4096),
                now,
            },
        ),
        w(
            "RestoreTrash",
            gf[6],
            WriteRequest::RestoreTrash {
                fs: id,
                ino: files[6],
                now,
            },
        ),
        w(
            "SetXattr",
            gf[1],
            WriteRequest::SetXattr {
                fs: id,
                ino: files[1],
                name: name("user.other"),
                value: vec![7; 40],
                mode: XattrMode::Create,
                now,
            },
        ),
        w(
            "RemoveXattr",
            gf[1],
            WriteRequest::RemoveXattr {
                fs: id,
                ino: files[1],
                name: name("user.fuzz"),
                now,
            },
        ),
        w(
            "SetLock",
            gf[2],
            WriteRequest::SetLock {
                fs: id,
                ino: files[2],
                lock: FileLock {
                    client: 9,
                    start: 50,
                    end: u64::MAX,
                    ..lock
                },
                now,
            },
        ),
        w(
            "ReleaseLocks",
            gf[2],
            WriteRequest::ReleaseLocks {
                fs: id,
                ino: files[2],
                client: 9,
                owner: None,
            },
        ),
        w(
            "RenewLocks",
            gf[2],
            WriteRequest::RenewLocks {
                fs: id,
                client: lock.client,
                inos: vec![files[2], link],
                until: now.plus(Duration::from_secs(7200)),
            },
        ),
        r("GetAttr sub", gs, ReadRequest::GetAttr { fs: id, ino: sub }),
    ]
}

/// Why the plain run must not send this request, or None for a client
/// request it may send.
///
/// A plain-TCP peer of a node without TLS is trusted as the node's own
/// (decision 53), so it may legitimately register bogus nodes, form a
/// cluster, create or seal filesystems, freeze one, change trash days, or
/// send Raft traffic. Mutated frames that decode to such requests are not
/// sent (and counted as skipped): the fuzzer would otherwise break the
/// cluster on purpose rather than find a bug. The TLS run sends them
/// unfiltered and asserts their refusal. The matches list every variant,
/// so a new request must be classified here.
fn forbidden(body: &Request) -> Option<&'static str> {
    match body {
        Request::Meta {
            req: MetaRequest::Read(_),
            ..
        } => None,
        Request::Meta {
            req: MetaRequest::Write(w),
            ..
        } => admin_write(w),
        Request::Append { .. } => Some("Append"),
        Request::Vote { .. } => Some("Vote"),
        Request::Snapshot { .. } => Some("Snapshot"),
        Request::TransferLeader { .. } => Some("TransferLeader"),
        Request::Join { .. } => Some("Join"),
        Request::InitCluster { .. } => Some("InitCluster"),
        Request::Status => Some("Status"),
        Request::Members { .. } => Some("Members"),
        Request::AddNode { .. } => Some("AddNode"),
        Request::RemoveNode { .. } => Some("RemoveNode"),
        Request::Digest { .. } => Some("Digest"),
        // A made-up token is refused, and changes nothing.
        Request::Authenticate { .. } => None,
        // Answers what the connection may do, and changes nothing.
        Request::Identity => None,
    }
}

/// Cluster-administration writes (see `forbidden`).
fn admin_write(w: &WriteRequest) -> Option<&'static str> {
    use WriteRequest as W;
    match w {
        W::RegisterNode { .. } => Some("Write RegisterNode"),
        W::UnregisterNode { .. } => Some("Write UnregisterNode"),
        W::CreateFs { .. } => Some("Write CreateFs"),
        W::CreateFsSized { .. } => Some("Write CreateFsSized"),
        W::MarkFsReady { .. } => Some("Write MarkFsReady"),
        W::AddPartition { .. } => Some("Write AddPartition"),
        W::SetBorrowed { .. } => Some("Write SetBorrowed"),
        W::RaiseSliceFloor { .. } => Some("Write RaiseSliceFloor"),
        // Format steps: they (re)initialize a partition or the root.
        W::InitPartition { .. } => Some("Write InitPartition"),
        W::InitRoot { .. } => Some("Write InitRoot"),
        W::SetTrashDays { .. } => Some("Write SetTrashDays"),
        W::CreateSnapshot { .. } => Some("Write CreateSnapshot"),
        W::SnapshotReady { .. } => Some("Write SnapshotReady"),
        W::DeleteSnapshot { .. } => Some("Write DeleteSnapshot"),
        W::SetFreeze { .. } => Some("Write SetFreeze"),
        W::CopyFs { .. } => Some("Write CopyFs"),
        W::CopyInodes { .. } => Some("Write CopyInodes"),
        W::DropFs { .. } => Some("Write DropFs"),
        W::LoadRows { .. } => Some("Write LoadRows"),
        W::SealSnapshot { .. } => Some("Write SealSnapshot"),
        W::PutToken { .. } => Some("Write PutToken"),
        W::RevokeToken { .. } => Some("Write RevokeToken"),
        // A made-up quota could refuse the well-behaved client's writes.
        W::SetQuota { .. } => Some("Write SetQuota"),
        W::DeleteQuota { .. } => Some("Write DeleteQuota"),
        W::SetQuotaUsage { .. } => Some("Write SetQuotaUsage"),
        W::SetOwnerQuota { .. } => Some("Write SetOwnerQuota"),
        W::DeleteOwnerQuota { .. } => Some("Write DeleteOwnerQuota"),
        // A made-up share (of a home that does not exist, say) could too.
        W::QuotaBudget { .. } => Some("Write QuotaBudget"),
        W::AllocSliceIds { .. }
        | W::ReserveInos { .. }
        | W::SetAttr { .. }
        | W::Create { .. }
        | W::CreateFile { .. }
        | W::Link { .. }
        | W::Unlink { .. }
        | W::Rmdir { .. }
        | W::Rename { .. }
        | W::RenameWith { .. }
        | W::WriteSlices { .. }
        | W::PunchHole { .. }
        | W::ReserveAppend { .. }
        | W::TxBegin { .. }
        | W::TxPrepare { .. }
        | W::TxCommit { .. }
        | W::TxResolve { .. }
        | W::TxFinish { .. }
        | W::TxForget { .. }
        | W::HoldInodes { .. }
        | W::PurgeTrash { .. }
        | W::AckDeletions { .. }
        | W::CompactChunk { .. }
        | W::RestoreTrash { .. }
        | W::SetXattr { .. }
        | W::RemoveXattr { .. }
        | W::SetLock { .. }
        | W::ReleaseLocks { .. }
        | W::RenewLocks { .. } => None,
    }
}

/// What the node will do with a chunk of bytes sent at a frame boundary,
/// found by reading it as the node does.
struct Sim {
    /// Ids of the requests it will take (and must answer).
    taken: Vec<u64>,
    /// A request it would take that the fuzzer must not send (see `forbidden`).
    forbidden: Option<&'static str>,
    end: End,
}

enum End {
    /// The chunk ends at a frame boundary: the connection goes on.
    Clean,
    /// The node closes the connection, for this reason.
    Closes(String),
    /// The chunk ends inside a frame (the length prefix promises more): the
    /// node closes the connection when the sender ends it there.
    Partial,
}

fn simulate(bytes: &[u8], filtered: bool) -> Sim {
    let mut taken = Vec::new();
    let mut at = 0;
    let end = loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            break End::Clean;
        }
        if rest.len() < 4 {
            break End::Partial;
        }
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        if len > MAX_FRAME {
            break End::Closes(format!("length prefix {len} over MAX_FRAME"));
        }
        if rest.len() - 4 < len {
            break End::Partial;
        }
        match wire::decode::<Request>(&rest[4..4 + len]) {
            Err(e) => break End::Closes(format!("malformed frame: {e}")),
            Ok(frame) => {
                if let Some(why) = forbidden(&frame.body).filter(|_| filtered) {
                    return Sim {
                        taken,
                        forbidden: Some(why),
                        end: End::Clean,
                    };
                }
                taken.push(frame.id);
            }
        }
        at += 4 + len;
    };
    Sim {
        taken,
        forbidden: None,
        end,
    }
}

/// A chunk of bytes to send, and how it was made.
struct Chunk {
    kind: &'static str,
    /// The corpus request it was made from.
    source: &'static str,
    bytes: Vec<u8>,
}

/// Makes fresh frames of corpus requests for one connection: random frame
/// ids, and origins of this connection's own client id with rising
/// sequence numbers (so a write is not answered from the node's memory of
/// an earlier one).
struct Framer {
    client: u64,
    seq: u64,
}

impl Framer {
    fn frame(&mut self, rng: &mut Rng, e: &Entry) -> Vec<u8> {
        let origin = match &e.req {
            MetaRequest::Write(_) if rng.below(8) != 0 => {
                self.seq += 1;
                Some(Origin {
                    client: self.client,
                    seq: self.seq,
                    done_below: self.seq.saturating_sub(rng.below(64)),
                })
            }
            _ => None,
        };
        wire::encode(&Frame {
            id: rng.next() >> rng.below(64),
            body: Request::Meta {
                group: e.group,
                req: e.req.clone(),
                origin,
            },
        })
        .unwrap()
        .to_vec()
    }
}

fn prefixed(len: usize, body: &[u8]) -> Vec<u8> {
    let mut out = (len as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// Varint encodings (bincode's) of numbers at the edges of their types.
const BIG_VARINTS: &[&[u8]] = &[
    &[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // u64::MAX, i64::MIN zigzagged
    &[0xfd, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // i64::MAX zigzagged
    &[0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80], // 2^63
    &[0xfc, 0xff, 0xff, 0xff, 0xff],                         // u32::MAX
    &[0xfc, 0x00, 0x00, 0x00, 0x80],                         // 2^31
    &[0xfb, 0xff, 0xff],                                     // u16::MAX
    &[
        0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0,
    ], // 2^64-1 as u128
];

/// A few random edits of `body`.
fn mutate(rng: &mut Rng, body: &mut Vec<u8>, corpus: &[Entry], framer: &mut Framer) {
    // One edit half the time, two a quarter, ... at most four.
    for _ in 0..1 + rng.next().trailing_zeros().min(3) {
        let at = rng.below(body.len() as u64 + 1) as usize;
        match rng.below(10) {
            0 | 1 if !body.is_empty() => {
                let i = at.min(body.len() - 1);
                body[i] ^= 1 << rng.below(8);
            }
            2 if !body.is_empty() => {
                let i = at.min(body.len() - 1);
                body[i] = rng.next() as u8;
            }
            3 if !body.is_empty() => {
                let i = at.min(body.len() - 1);
                const EDGES: [u8; 10] = [0, 1, 2, 0x7f, 0x80, 0xfa, 0xfb, 0xfc, 0xfd, 0xff];
                body[i] = EDGES[rng.below(EDGES.len() as u64) as usize];
            }
            4 if !body.is_empty() => {
                // A one-byte number becomes a big one.
                let i = at.min(body.len() - 1);
                let v = BIG_VARINTS[rng.below(BIG_VARINTS.len() as u64) as usize];
                body.splice(i..i + 1, v.iter().copied());
            }
            5 => {
                let mut extra = vec![0u8; 1 + rng.below(8) as usize];
                rng.fill(&mut extra);
                body.splice(at..at, extra);
            }
            6 if at < body.len() => {
                let n = (1 + rng.below(8) as usize).min(body.len() - at);
                body.drain(at..at + n);
            }
            7 => body.truncate(at),
            8 if at < body.len() => {
                // A run of the frame repeated (a longer list, a longer name).
                let n = (1 + rng.below(16) as usize).min(body.len() - at);
                let run: Vec<u8> = body[at..at + n].to_vec();
                let to = rng.below(body.len() as u64 + 1) as usize;
                body.splice(to..to, run);
            }
            _ => {
                // The tail of another request's frame from here on.
                let other = &corpus[rng.below(corpus.len() as u64) as usize];
                let donor = framer.frame(rng, other);
                if at < donor.len() {
                    body.truncate(at);
                    body.extend_from_slice(&donor[at..]);
                }
            }
        }
    }
}

/// The next chunk of one connection: a mutated corpus frame, random bytes,
/// a length prefix promising more than follows, or a corpus frame intact.
fn next_chunk(rng: &mut Rng, corpus: &[Entry], framer: &mut Framer) -> Chunk {
    let entry = &corpus[rng.below(corpus.len() as u64) as usize];
    match rng.below(100) {
        0..55 => {
            let mut body = framer.frame(rng, entry);
            mutate(rng, &mut body, corpus, framer);
            // Mostly the length matches; sometimes it does not.
            let (kind, len) = match rng.below(10) {
                0 => (
                    "mutated, wrong length prefix",
                    match rng.below(4) {
                        0 => body.len() + 1 + rng.below(16) as usize,
                        1 => body.len().saturating_sub(1 + rng.below(16) as usize),
                        2 => rng.next() as u32 as usize,
                        _ => rng.below(MAX_FRAME as u64 + 1) as usize,
                    },
                ),
                _ => ("mutated", body.len()),
            };
            Chunk {
                kind,
                source: entry.name,
                bytes: prefixed(len, &body),
            }
        }
        55..70 => {
            let len = match rng.below(10) {
                0 => rng.below(4096),
                1 => 0,
                _ => 1 + rng.below(64),
            } as usize;
            let mut body = vec![0u8; len];
            rng.fill(&mut body);
            if len > 1 && rng.below(2) == 0 {
                // Reach past the first tags: a one-byte id, Request::Meta.
                body[0] = rng.below(251) as u8;
                body[1] = 0;
            }
            Chunk {
                kind: "random bytes",
                source: "none",
                bytes: prefixed(len, &body),
            }
        }
        70..75 => {
            let body = framer.frame(rng, entry);
            if rng.below(2) == 0 {
                let len =
                    MAX_FRAME + 1 + rng.below((u32::MAX as usize - MAX_FRAME) as u64) as usize;
                let keep = rng.below(body.len() as u64 + 1) as usize;
                Chunk {
                    kind: "length prefix over MAX_FRAME",
                    source: entry.name,
                    bytes: prefixed(len, &body[..keep]),
                }
            } else {
                let keep = rng.below(body.len() as u64) as usize;
                let len = match rng.below(4) {
                    0 => keep + 1 + rng.below((MAX_FRAME - keep) as u64) as usize,
                    _ => body.len() + rng.below(64) as usize,
                };
                Chunk {
                    kind: "length prefix past the body",
                    source: entry.name,
                    bytes: prefixed(len, &body[..keep]),
                }
            }
        }
        _ => {
            let body = framer.frame(rng, entry);
            Chunk {
                kind: "valid, intact",
                source: entry.name,
                bytes: prefixed(body.len(), &body),
            }
        }
    }
}

/// One raw connection to the node: its write half, the task reading (and
/// decoding) every answer, and what was sent on it.
struct Conn {
    write: strata_meta::transport::WriteHalf,
    reader: tokio::task::JoinHandle<Answers>,
    taken: Vec<u64>,
    /// The last chunks sent, for a failure's report.
    recent: VecDeque<(u64, String, Vec<u8>)>,
}

/// What the node sent back on one connection until it closed.
#[derive(Default)]
struct Answers {
    ids: Vec<u64>,
    undecodable: Vec<String>,
    /// How the stream ended: end of file, or the read's error.
    end: String,
}

async fn read_answers(mut rd: strata_meta::transport::ReadHalf) -> Answers {
    let mut out = Answers::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut tmp = vec![0u8; 64 << 10];
    loop {
        match rd.read(&mut tmp).await {
            Ok(0) => {
                out.end = "end of file".into();
                return out;
            }
            Err(e) => {
                out.end = e.to_string();
                return out;
            }
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
        let mut at = 0;
        while buf.len() - at >= 4 {
            let len = u32::from_be_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            if buf.len() - at - 4 < len {
                break;
            }
            match wire::decode::<Response>(&buf[at + 4..at + 4 + len]) {
                Ok(f) => out.ids.push(f.id),
                Err(e) => out.undecodable.push(e.to_string()),
            }
            at += 4 + len;
        }
        buf.drain(..at);
    }
}

fn hex(bytes: &[u8]) -> String {
    let shown: String = bytes.iter().take(256).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > 256 {
        format!("{shown}... ({} bytes)", bytes.len())
    } else {
        shown
    }
}

/// A chunk as a failure report shows it: its bytes and every frame in it.
fn describe(i: u64, how: &str, bytes: &[u8]) -> String {
    let mut out = format!("  chunk {i} ({how}): {}\n", hex(bytes));
    let mut at = 0;
    while bytes.len() - at >= 4 {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len > MAX_FRAME || bytes.len() - at - 4 < len {
            out += &format!(
                "    length prefix {len}, {} bytes follow\n",
                bytes.len() - at - 4
            );
            break;
        }
        match wire::decode::<Request>(&bytes[at + 4..at + 4 + len]) {
            Ok(f) => out += &format!("    frame {}: {:?}\n", f.id, f.body),
            Err(e) => out += &format!("    {len} bytes that do not decode: {e}\n"),
        }
        at += 4 + len;
    }
    out
}

impl Conn {
    async fn open(addr: &str, tls: Option<&Tls>) -> std::io::Result<Conn> {
        let (rd, write) = strata_meta::transport::connect(addr, tls)
            .await
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        Ok(Conn {
            write,
            reader: tokio::spawn(read_answers(rd)),
            taken: Vec::new(),
            recent: VecDeque::new(),
        })
    }

    fn history(&self) -> String {
        self.recent
            .iter()
            .map(|(i, how, b)| describe(*i, how, b))
            .collect::<Vec<_>>()
            .join("")
    }

    /// Waits for the node to close the connection (having ended our side
    /// first if `end_ours`); checks that it answered exactly the requests
    /// it took. Returns the answers counted, or what went wrong.
    async fn closes(mut self, end_ours: bool, why: &str) -> Result<u64, String> {
        if end_ours {
            let _ = self.write.shutdown().await;
        }
        let answers = match tokio::time::timeout(CLOSE_DEADLINE, &mut self.reader).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return Err(format!("the reading task failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "the node kept the connection open {CLOSE_DEADLINE:?} after {why}; \
                     last chunks sent:\n{}",
                    self.history()
                ));
            }
        };
        if !answers.undecodable.is_empty() {
            return Err(format!(
                "{} answers do not decode: {:?}",
                answers.undecodable.len(),
                &answers.undecodable[..answers.undecodable.len().min(5)]
            ));
        }
        let (mut want, mut got) = (std::mem::take(&mut self.taken), answers.ids);
        want.sort_unstable();
        got.sort_unstable();
        if want != got {
            let missing: Vec<_> = want.iter().filter(|i| !got.contains(i)).take(10).collect();
            let extra: Vec<_> = got.iter().filter(|i| !want.contains(i)).take(10).collect();
            return Err(format!(
                "closed ({why}) after answering {} of the {} requests it took \
                 (missing {missing:?}, unasked {extra:?}); last chunks sent:\n{}",
                got.len(),
                want.len(),
                self.history()
            ));
        }
        Ok(got.len() as u64)
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

/// Sends `quota` chunks on raw connections, one connection at a time: a new
/// one whenever the node closes the last (as it must after a frame it
/// cannot read) or, now and then, after ending it cleanly.
async fn fuzz_connection(shared: Arc<Shared>, w: usize, mut rng: Rng, quota: u64) -> Stats {
    let mut stats = Stats::default();
    let mut framer = Framer {
        client: rng.next(),
        seq: 0,
    };
    let mut conn: Option<Conn> = None;
    let mut sent = 0;
    let mut chunk_no = 0u64;
    let seed = shared.seed;
    while sent < quota && !shared.failed.load(Ordering::Relaxed) {
        let chunk = next_chunk(&mut rng, &shared.corpus, &mut framer);
        chunk_no += 1;
        let sim = simulate(&chunk.bytes, shared.filtered);
        if let Some(why) = sim.forbidden {
            *stats.skipped.entry(why).or_default() += 1;
            continue;
        }
        let mut c = match conn.take() {
            Some(c) => c,
            None => match Conn::open(&shared.addr, shared.tls.as_ref()).await {
                Ok(c) => {
                    stats.connections += 1;
                    c
                }
                Err(e) => {
                    shared.fail(format!("seed {seed}: connection {w} cannot connect: {e}"));
                    break;
                }
            },
        };
        // Every frame before this one was readable: the node keeps the
        // connection open (and reads this chunk whole, unless this chunk
        // itself makes it close).
        let closed_before = c.reader.is_finished();
        let written = if closed_before {
            Ok(())
        } else {
            c.write.write_all(&chunk.bytes).await
        };
        c.recent.push_back((
            chunk_no,
            format!("{}, from {}", chunk.kind, chunk.source),
            chunk.bytes,
        ));
        if c.recent.len() > 6 {
            c.recent.pop_front();
        }
        if closed_before || (written.is_err() && matches!(sim.end, End::Clean)) {
            let history = c.history();
            let ended = match tokio::time::timeout(Duration::from_secs(5), &mut c.reader).await {
                Ok(Ok(a)) => format!("{} after {} answers", a.end, a.ids.len()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "still open".into(),
            };
            shared.fail(format!(
                "seed {seed}: connection {w}, chunk {chunk_no}: the node closed the connection \
                 after readable frames only (before this chunk: {closed_before}, write: \
                 {written:?}, read: {ended}); last chunks:\n{history}"
            ));
            break;
        }
        sent += 1;
        shared.count_sent();
        *stats.by_kind.entry(chunk.kind).or_default() += 1;
        stats.requests_taken += sim.taken.len() as u64;
        c.taken.extend(sim.taken);
        let closing = match sim.end {
            End::Clean if rng.below(200) == 0 => Some((true, "our end of it".to_string())),
            End::Clean => None,
            End::Closes(why) => Some((false, why)),
            End::Partial => Some((true, "a frame cut short by our end".to_string())),
        };
        let outcome = match &closing {
            None => "took every frame, connection kept",
            Some((true, why)) if why.starts_with("our") => "took every frame, we ended it",
            Some((true, _)) => "closed: frame cut short",
            Some((false, why)) if why.starts_with("length") => "closed: prefix over MAX_FRAME",
            Some((false, _)) => "closed: malformed frame",
        };
        *stats.outcomes.entry(outcome).or_default() += 1;
        match closing {
            None => conn = Some(c),
            Some((end_ours, why)) => match c.closes(end_ours, &why).await {
                Ok(n) => stats.answers += n,
                Err(e) => {
                    shared.fail(format!(
                        "seed {seed}: connection {w}, chunk {chunk_no}: {e}"
                    ));
                    break;
                }
            },
        }
    }
    if let Some(c) = conn {
        match c.closes(true, "our end of it").await {
            Ok(n) => stats.answers += n,
            Err(e) => shared.fail(format!("seed {seed}: connection {w} at the end: {e}")),
        }
    }
    stats
}
