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
use strata_meta::{FileType, FsClient, MetaError, NewInode};

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

/// Runs `nodes` nodes (formed into a cluster if more than one) with four
/// writers creating files, and `cycles` times kills every node once more
/// creates were acknowledged, powers off each data dir and restarts them;
/// then a fresh client must find every acknowledged create, fsck clean.
/// Returns the creates checked and the torn bytes written.
fn power_cycles(nodes: usize, seed: u64, cycles: usize) -> (usize, u64) {
    println!("POWER_LOSS_SEED={seed} POWER_LOSS_CYCLES={cycles}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = (1..=nodes)
        .map(|i| tmp.path().join(format!("n{i}")))
        .collect();
    let addrs: Vec<String> = (0..nodes)
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
    let mut running: Vec<MetaServer> = (0..nodes).map(start).collect();
    if nodes > 1 {
        form_cluster(&addrs);
    }
    format_metadata_only(&addrs.join(","), 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fs = Arc::new(open_t(&rt, &addrs));
    let acked: Arc<Mutex<BTreeSet<String>>> = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| rt.spawn(writer(fs.clone(), w, acked.clone(), stop.clone())))
        .collect();
    let count = || acked.lock().unwrap().len();
    let mut torn_total = 0;
    for cycle in 0..cycles {
        // Killed once some more creates were acknowledged, with others in
        // flight (the writers never pause).
        let before = count();
        let more = 20 + rng.below(200) as usize;
        until(60, "creates to be acknowledged", || {
            count() >= before + more
        });
        let mut segments = 0;
        for (n, d) in running.iter_mut().zip(&dirs) {
            n.kill9();
            let (s, torn) = power_off(d, &mut rng);
            segments += s;
            torn_total += torn;
        }
        println!(
            "cycle {cycle}: {nodes} node(s) killed after {} acknowledged creates; {segments} log segments cut at their last fsync",
            count()
        );
        running = (0..nodes).map(start).collect();
    }
    let before = count();
    until(60, "creates after the last restart", || {
        count() > before + 20
    });
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_created_and_clean(&rt, &open_t(&rt, &addrs), &acked);
    drop(running);
    (acked.len(), torn_total)
}

#[test]
fn acknowledged_creates_survive_power_loss_with_torn_log_tails() {
    let cycles = env_number("POWER_LOSS_CYCLES", 5);
    let (checked, torn) = power_cycles(1, env_number("POWER_LOSS_SEED", 5), cycles);
    println!(
        "{cycles} power losses; {checked} acknowledged creates checked, 0 lost; {torn} torn bytes in all"
    );
}

/// Every node of a three-node cluster loses power at once (a rack's
/// power): each comes back as its own last fsyncs left it, and every
/// create acknowledged (made durable on a quorum first) is there.
#[test]
fn acknowledged_creates_survive_a_whole_cluster_losing_power() {
    let cycles = env_number("POWER_LOSS_CYCLES", 3);
    let (checked, _) = power_cycles(3, env_number("POWER_LOSS_SEED", 6), cycles);
    println!(
        "{cycles} power losses of the whole cluster; {checked} acknowledged creates checked, 0 lost"
    );
}
