//! Power loss, not only SIGKILL: after a kill the kernel still holds every
//! write, so a log that never fsynced would pass a kill test. A node run
//! with `STRATA_TEST_POWER_LOSS` keeps images of its files as of their last
//! fsync; after each SIGKILL (landing while clients' creates are in flight)
//! the test "powers off" its data dir: the tables go back to their last
//! fsync, each log segment loses what followed its last fsync and gets a
//! torn tail of random bytes instead. The restarted node must still hold
//! every create it acknowledged, and fsck must be clean. So must a
//! three-node cluster whose nodes all lose power at once.
//! `POWER_LOSS_CYCLES=N` runs more cycles, `POWER_LOSS_SEED=S` others.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use strata_meta::{FileType, FsClient, MetaClient, MetaError, NewInode};

const WRITERS: usize = 4;

/// What a power loss leaves of the data dir `dir` of a killed node: each
/// file as of its last fsync, and a torn tail on each log segment.
fn power_off(dir: &Path, rng: &mut Rng) -> (usize, u64) {
    let db = dir.join("meta.redb");
    let image = dir.join("meta.redb.synced");
    assert!(image.exists(), "the node kept no image of its tables");
    std::fs::copy(&image, &db).unwrap();
    let mut torn = 0;
    let mut segments = 0;
    for e in std::fs::read_dir(dir.join("wal")).unwrap().flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "wal") {
            continue;
        }
        let marker = dir.join("wal").join(format!(
            "{}.synced",
            path.file_name().unwrap().to_string_lossy()
        ));
        let Ok(synced) = std::fs::read_to_string(&marker) else {
            // Created, never made durable: a power loss takes it away.
            std::fs::remove_file(&path).unwrap();
            continue;
        };
        let synced: u64 = synced.trim().parse().unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let len = f.metadata().unwrap().len();
        // Everything after the last fsync is gone: zeros, as if never
        // written...
        f.set_len(synced).unwrap();
        f.set_len(len.max(synced)).unwrap();
        // ...but for a torn write: some random bytes of it reached the disk.
        let mut garbage = vec![0u8; 1 + rng.below(4096) as usize];
        rng.fill(&mut garbage);
        f.write_all_at(&garbage, synced).unwrap();
        torn += garbage.len() as u64;
        segments += 1;
    }
    (segments, torn)
}

/// Creates files `w{writer}-{n}` one after another until `stop`; records
/// each name whose create was acknowledged.
async fn writer(
    fs: Arc<FsClient>,
    w: usize,
    acked: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let name = format!("w{w}-{n}");
        let new = NewInode::plain(FileType::File, 0o644, 0, 0);
        match fs.create(1, name.as_bytes(), new).await {
            Ok(_) => {
                acked.lock().unwrap().insert(name);
            }
            // A create retried after the node came back may find it made.
            Err(MetaError::Exists) => {
                acked.lock().unwrap().insert(name);
            }
            Err(_) => {}
        }
        n += 1;
    }
}

#[test]
fn acknowledged_creates_survive_power_loss_with_torn_log_tails() {
    let seed: u64 = std::env::var("POWER_LOSS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let cycles: usize = std::env::var("POWER_LOSS_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    println!("POWER_LOSS_SEED={seed} POWER_LOSS_CYCLES={cycles}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n1");
    let addr = format!("127.0.0.1:{}", free_port());
    let start =
        || MetaServer::start_node_env(1, &dir, &addr, &[], &[("STRATA_TEST_POWER_LOSS", "1")]);
    let mut node = start();
    run_ok(&[
        "format",
        "--meta",
        &addr,
        "t",
        "--storage",
        "file:///unused",
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fs = Arc::new(rt.block_on(async {
        let client = MetaClient::connect(std::slice::from_ref(&addr))
            .await
            .unwrap();
        client.open_fs("t").await.unwrap()
    }));
    let acked: Arc<Mutex<BTreeSet<String>>> = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| rt.spawn(writer(fs.clone(), w, acked.clone(), stop.clone())))
        .collect();
    let count = || acked.lock().unwrap().len();
    let mut torn_total = 0;
    for cycle in 0..cycles {
        // Kill once some more creates were acknowledged, with others in
        // flight (the writers never pause).
        let before = count();
        let more = 20 + rng.below(200) as usize;
        until(60, "creates to be acknowledged", || {
            count() >= before + more
        });
        node.kill9();
        let (segments, torn) = power_off(&dir, &mut rng);
        torn_total += torn;
        println!(
            "cycle {cycle}: killed after {} acknowledged creates; {segments} log segments cut at their last fsync, {torn} torn bytes",
            count()
        );
        node = start();
    }
    let before = count();
    until(60, "creates after the last restart", || {
        count() > before + 20
    });
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        rt.block_on(t).unwrap();
    }

    // A fresh client finds every acknowledged create.
    let fresh = rt.block_on(async {
        let client = MetaClient::connect(std::slice::from_ref(&addr))
            .await
            .unwrap();
        client.open_fs("t").await.unwrap()
    });
    let acked = acked.lock().unwrap().clone();
    let mut missing = Vec::new();
    for name in &acked {
        if let Err(e) = rt.block_on(fresh.lookup(1, name.as_bytes())) {
            missing.push(format!("{name}: {e}"));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged creates lost: {missing:?}",
        missing.len(),
        acked.len()
    );
    let report = rt
        .block_on(strata_meta::client::fsck::check(&fresh))
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    println!(
        "{cycles} power losses; {} acknowledged creates checked, 0 lost; {torn_total} torn bytes in all",
        acked.len()
    );
    drop(node);
}

/// Every node of a three-node cluster loses power at once (a rack's
/// power): each comes back as its own last fsyncs left it, and every
/// create acknowledged (made durable on a quorum first) is there.
#[test]
fn acknowledged_creates_survive_a_whole_cluster_losing_power() {
    let seed: u64 = std::env::var("POWER_LOSS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let cycles: usize = std::env::var("POWER_LOSS_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    println!("POWER_LOSS_SEED={seed} POWER_LOSS_CYCLES={cycles}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = (1..=3).map(|i| tmp.path().join(format!("n{i}"))).collect();
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let start = |i: usize| {
        MetaServer::start_node_env(
            i as u64 + 1,
            &dirs[i],
            &addrs[i],
            &[],
            &[("STRATA_TEST_POWER_LOSS", "1")],
        )
    };
    let mut nodes: Vec<MetaServer> = (0..3).map(start).collect();
    let peers = (0..3)
        .map(|i| format!("{}={}", i + 1, addrs[i]))
        .collect::<Vec<_>>()
        .join(",");
    let out = run_ok(&["meta", "init", "--meta", &addrs[0], "--peers", &peers]);
    assert!(out.contains("cluster formed"), "{out}");
    let all = addrs.join(",");
    run_ok(&["format", "--meta", &all, "t", "--storage", "file:///unused"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fs = Arc::new(rt.block_on(async {
        let client = MetaClient::connect(&addrs).await.unwrap();
        client.open_fs("t").await.unwrap()
    }));
    let acked: Arc<Mutex<BTreeSet<String>>> = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| rt.spawn(writer(fs.clone(), w, acked.clone(), stop.clone())))
        .collect();
    let count = || acked.lock().unwrap().len();
    for cycle in 0..cycles {
        let before = count();
        let more = 20 + rng.below(200) as usize;
        until(60, "creates to be acknowledged", || {
            count() >= before + more
        });
        for n in nodes.iter_mut() {
            n.kill9();
        }
        let mut torn = 0;
        for d in &dirs {
            torn += power_off(d, &mut rng).1;
        }
        println!(
            "cycle {cycle}: every node killed after {} acknowledged creates; {torn} torn bytes",
            count()
        );
        nodes = (0..3).map(start).collect();
    }
    let before = count();
    until(60, "creates after the last restart", || {
        count() > before + 20
    });
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    let fresh = rt.block_on(async {
        let client = MetaClient::connect(&addrs).await.unwrap();
        client.open_fs("t").await.unwrap()
    });
    let acked = acked.lock().unwrap().clone();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|name| rt.block_on(fresh.lookup(1, name.as_bytes())).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged creates lost: {missing:?}",
        missing.len(),
        acked.len()
    );
    let report = rt
        .block_on(strata_meta::client::fsck::check(&fresh))
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    println!(
        "{cycles} power losses of the whole cluster; {} acknowledged creates checked, 0 lost",
        acked.len()
    );
    drop(nodes);
}
