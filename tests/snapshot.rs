//! Snapshots through real mounts and a real S3 server: one taken while
//! writers run is one cut of the filesystem; a snapshot mount refuses
//! changes; blocks a snapshot shares survive compaction, deletion and gc,
//! and deleting the snapshot frees them.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::*;

/// One step of a writer: when it started and when its fsync returned, on
/// one counter shared by all writers and the snapshot.
#[derive(Clone, Copy)]
struct Step {
    started: u64,
    acked: u64,
}

fn content(writer: usize, step: usize) -> Vec<u8> {
    format!("writer {writer} step {step}\n")
        .repeat(1 + step % 7)
        .into_bytes()
}

#[test]
fn a_snapshot_taken_while_writers_run_is_one_cut_and_read_only() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(&tmp.path().join("s3"));
    // Three nodes with three partition groups: the snapshot's cut spans groups.
    let (_nodes, addrs) = start_cluster(&tmp.path().join("meta"));
    let meta = addrs.join(",");
    format_data(&meta, &s3, &[]);
    // Every directory goes to the least-loaded group, so the writers'
    // directories (and the chain's) are spread over the three groups.
    let m = Mount::new(
        &tmp.path().join("m"),
        &["--meta", &meta, "--dir-spread-slack", "0", "data"],
        &s3.env(),
    );
    for d in ["w0", "w1", "w2", "c0", "c1", "c2"] {
        std::fs::create_dir(m.path(d)).unwrap();
    }
    let clock = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    // Writers 0..3 each create files in their own directory and rewrite a
    // `last` file after each one; writer 3 is a chain whose step k goes to
    // directory c{k % 3}, so consecutive steps land in different groups.
    let logs: Vec<Arc<Mutex<Vec<Step>>>> = (0..4).map(|_| Arc::default()).collect();
    let threads: Vec<_> = (0..4)
        .map(|w| {
            let (clock, stop, log) = (clock.clone(), stop.clone(), logs[w].clone());
            let root = m.dir.clone();
            std::thread::spawn(move || {
                let mut k = 0;
                while !stop.load(Ordering::SeqCst) {
                    let started = clock.fetch_add(1, Ordering::SeqCst);
                    if w < 3 {
                        write_synced(&root.join(format!("w{w}/f{k}")), content(w, k));
                        write_synced(&root.join(format!("w{w}/last")), k.to_string().as_bytes());
                    } else {
                        write_synced(&root.join(format!("c{}/s{k}", k % 3)), content(w, k));
                    }
                    let acked = clock.fetch_add(1, Ordering::SeqCst);
                    log.lock().unwrap().push(Step { started, acked });
                    k += 1;
                }
            })
        })
        .collect();
    let steps_done = |n: usize| logs.iter().all(|l| l.lock().unwrap().len() >= n);
    until(120, "writers to get going", || steps_done(15));
    let snap_start = clock.fetch_add(1, Ordering::SeqCst);
    // The groups are copied half a second apart: writers wait meanwhile,
    // and a snapshot that let them go on would hold steps of the chain in
    // one group without the steps before them in another.
    let mut env = s3.env();
    env.push(("STRATA_TEST_SNAPSHOT_PAUSE_MS", "500"));
    let out = run_env_ok(&["snapshot", "create", "--meta", &meta, "data", "s1"], &env);
    let snap_end = clock.fetch_add(1, Ordering::SeqCst);
    assert!(out.contains("snapshot data@s1 taken"), "{out}");
    // The live filesystem keeps changing after the snapshot.
    let after: Vec<usize> = logs.iter().map(|l| l.lock().unwrap().len()).collect();
    until(120, "writers to go on after the snapshot", || {
        logs.iter()
            .zip(&after)
            .all(|(l, n)| l.lock().unwrap().len() >= n + 10)
    });
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    std::fs::write(m.path("w0/f0"), b"changed after the snapshot").unwrap();
    std::fs::remove_file(m.path("w1/f0")).unwrap();

    let list = run_env_ok(&["snapshot", "list", "--meta", &meta, "data"], &s3.env());
    assert!(
        list.contains("s1") && list.contains("1 snapshots of data"),
        "{list}"
    );
    let snap = Mount::new(
        &tmp.path().join("snap"),
        &["--meta", &meta, "--snapshot", "s1", "data"],
        &s3.env(),
    );
    for (w, log) in logs.iter().enumerate() {
        let log = log.lock().unwrap();
        let path_of = |k: usize| {
            if w < 3 {
                snap.path(&format!("w{w}/f{k}"))
            } else {
                snap.path(&format!("c{}/s{k}", k % 3))
            }
        };
        // What the snapshot holds of this writer is a prefix of its steps:
        // a later step is never there without an earlier one.
        let present: Vec<bool> = (0..log.len()).map(|k| path_of(k).exists()).collect();
        let held = present.iter().take_while(|p| **p).count();
        assert!(
            present[held..].iter().all(|p| !p),
            "writer {w}: the snapshot holds steps after a missing one: {present:?}"
        );
        for (k, step) in log.iter().enumerate() {
            if step.acked < snap_start {
                assert!(
                    k < held,
                    "writer {w} step {k} was fsynced before the snapshot began but is missing"
                );
            }
            if step.started > snap_end {
                assert!(
                    k >= held,
                    "writer {w} step {k} began after the snapshot ended but is in it"
                );
            }
            // A step's file exists from its create on and has its content
            // from its fsync on: the last step held may be cut in between
            // (empty); every earlier one was acknowledged before the next began.
            if k < held {
                let got = std::fs::read(path_of(k)).unwrap();
                let whole = got == content(w, k);
                assert!(
                    whole || (k + 1 == held && got.is_empty()),
                    "writer {w} step {k}: {:?}",
                    String::from_utf8_lossy(&got)
                );
            }
        }
        if w < 3 && held > 0 {
            // Rewritten (truncated, then written and fsynced) after each file.
            let last = std::fs::read_to_string(snap.path(&format!("w{w}/last"))).unwrap();
            let ok = last.is_empty() && held > 1
                || last == (held - 1).to_string()
                || held >= 2 && last == (held - 2).to_string();
            assert!(ok, "writer {w}: last {last:?} with {held} files");
        }
    }
    // A snapshot does not change.
    let erofs = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
    };
    erofs(std::fs::write(snap.path("new"), b"x"), "create");
    erofs(std::fs::write(snap.path("w0/f0"), b"x"), "overwrite");
    erofs(std::fs::create_dir(snap.path("d")), "mkdir");
    erofs(std::fs::remove_file(snap.path("w0/f1")), "unlink");
    erofs(
        std::fs::rename(snap.path("w0/f1"), snap.path("w0/g")),
        "rename",
    );
    assert_eq!(std::fs::read(snap.path("w0/f0")).unwrap(), content(0, 0));
    assert!(snap.path("w1/f0").exists());
    // Taking it again under the same name is refused; a bad name changes nothing.
    let mut again = strata();
    again.args(["snapshot", "create", "--meta", &meta, "data", "s1"]);
    for (k, v) in s3.env() {
        again.env(k, v);
    }
    let out = again.output().unwrap();
    assert!(!out.status.success());
    let mut bad = strata();
    bad.args(["snapshot", "create", "--meta", &meta, "data", "no/slash"]);
    let out = bad.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("snapshot name"));
    snap.unmount();

    // A snapshot of one tree: its top directory becomes the root; a file
    // also linked from outside the tree counts only its links inside.
    make_tree(&m.path("proj"));
    std::fs::hard_link(m.path("w0/f1"), m.path("proj/a/outside-link")).unwrap();
    let proj = tree(&m.path("proj"));
    run_env_ok(
        &[
            "snapshot", "create", "--meta", &meta, "data", "sub", "--path", "/proj/",
        ],
        &s3.env(),
    );
    std::fs::write(m.path("proj/a/b/c/deep.txt"), b"changed").unwrap();
    std::fs::remove_dir_all(m.path("proj/many")).unwrap();
    let sub = Mount::new(
        &tmp.path().join("sub"),
        &["--meta", &meta, "--snapshot", "sub", "data"],
        &s3.env(),
    );
    assert_same_tree(&sub.dir, &proj);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(sub.path("a/outside-link"))
            .unwrap()
            .nlink(),
        1
    );
    assert_eq!(std::fs::metadata(sub.path("a/hard")).unwrap().nlink(), 2);
    let list = run_env_ok(&["snapshot", "list", "--meta", &meta, "data"], &s3.env());
    assert!(list.contains("of /proj/"), "{list}");
    sub.unmount();
    m.unmount();
    // fsck of the live filesystem and of the snapshots.
    for fs in ["data", "data@s1", "data@sub"] {
        let out = run_env_ok(&["fsck", "--meta", &meta, fs], &s3.env());
        assert!(out.contains("clean"), "{fs}: {out}");
    }
}

/// The objects under the test bucket's prefix, by key. The live mount's
/// background worker may delete objects while this walks the tree, so an
/// entry that vanishes between the listing and its stat is skipped: it is
/// gone, which is what a later listing would say.
fn objects(s3: &S3) -> BTreeMap<String, u64> {
    let root = s3.root.join("bucket").join("strata");
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = match e {
                Ok(e) => e,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => panic!("listing {}: {err}", d.display()),
            };
            let meta = match std::fs::symlink_metadata(e.path()) {
                Ok(m) => m,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => panic!("stat {}: {err}", e.path().display()),
            };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                let key = e.path().strip_prefix(&root).unwrap().display().to_string();
                out.insert(key, meta.len());
            }
        }
    }
    out
}

#[test]
fn blocks_a_snapshot_shares_outlive_compaction_and_deletion_until_it_goes() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(&tmp.path().join("s3"));
    let (_server, meta) = one_node_with_data(tmp.path(), &s3, &["--trash-days", "0"]);
    let live_args = [
        "--meta",
        &meta,
        "--gc-interval",
        "0.2",
        "--deletion-delay",
        "0",
        "data",
    ];
    let m = Mount::new(&tmp.path().join("m"), &live_args, &s3.env());
    let a = random_writes(&m.path("a"), 21, 30, 2 << 20, 300_000);
    let b = random_writes(&m.path("b"), 22, 10, 1 << 20, 300_000);
    run_env_ok(
        &["snapshot", "create", "--meta", &meta, "data", "s1"],
        &s3.env(),
    );
    let before = objects(&s3);
    // Rewrite `a` (its old slices are replaced and compacted away) and
    // delete `b`: every object of theirs stays while the snapshot holds it.
    let a2 = random_writes(&m.path("a"), 23, 40, 2 << 20, 300_000);
    std::fs::remove_file(m.path("b")).unwrap();
    let with_snapshot = gc_settles(60, &meta, &s3);
    let now = objects(&s3);
    for k in before.keys() {
        assert!(
            now.contains_key(k),
            "object {k} the snapshot holds was deleted"
        );
    }
    // Read the snapshot from S3, not from any cache.
    let snap = Mount::new(
        &tmp.path().join("snap"),
        &[
            "--meta",
            &meta,
            "--snapshot",
            "s1",
            "--cache-mem-size",
            "0",
            "data",
        ],
        &s3.env(),
    );
    assert_same_file(&snap.path("a"), &a, "a in the snapshot");
    assert_same_file(&snap.path("b"), &b, "b in the snapshot");
    snap.unmount();
    run_env_ok(
        &["snapshot", "delete", "--meta", &meta, "data", "s1"],
        &s3.env(),
    );
    let list = run_env_ok(&["snapshot", "list", "--meta", &meta, "data"], &s3.env());
    assert!(list.contains("0 snapshots of data"), "{list}");
    // The live mount's background worker now deletes what only the
    // snapshot held; gc then finds exactly the live objects.
    until(60, "the snapshot's objects to be deleted", || {
        let now = objects(&s3);
        before.keys().filter(|k| !now.contains_key(*k)).count() > 0
    });
    // Settled: nothing queued, nothing leaked, and every object left is
    // one the live filesystem references. One gc pass can list an object
    // the worker deletes and acknowledges before gc reads the queue, so a
    // pass may count it as neither referenced nor queued; wait for a pass
    // that sees the worker done.
    let mut last = String::new();
    let mut gone = BTreeMap::new();
    until(60, "the deletion queue to empty", || {
        last = gc_settles(60, &meta, &s3);
        gone = objects(&s3);
        last.contains(" 0 queued for deletion")
            && last.contains(&format!(
                "{} objects, {} referenced",
                gone.len(),
                gone.len()
            ))
    });
    assert!(
        gone.len() < now.len(),
        "nothing was freed: {with_snapshot} / {last}"
    );
    assert_same_file(&m.path("a"), &a2, "live a");
    m.unmount();
}
