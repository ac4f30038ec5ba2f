//! The data path through real mounts: an S3 server over HTTP on loopback
//! that fails, delays, cuts off and damages requests, and makes changes
//! whose answers it then loses; a write-back client whose disk is full; a write-back client killed
//! after fsync; the trash and `strata gc` from the command line.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use strata_cache::ObjectStore;

#[test]
fn a_faulty_store_slows_the_workload_but_the_data_is_right() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(&tmp.path().join("s3"));
    let (meta, _) = one_node_with_data(tmp.path(), &s3, &[]);
    s3.faults.set_errors(0.2);
    s3.faults.set_delays(0.1, Duration::from_millis(30));
    s3.faults.set_cut_bodies(0.1);
    // Uploads made but answered 500: the client retries a PUT whose
    // outcome it cannot know.
    s3.faults.set_lost_answers(0.1);
    // Bodies that arrive whole with a byte changed: the blocks' checksums
    // catch them, and the read is made again.
    s3.faults.set_flipped_bodies(0.1);
    let cache = tmp.path().join("cache");
    let cache = cache.to_str().unwrap();
    // One client with a small memory cache and a disk cache (blocks are
    // evicted all the time), one with no cache at all.
    let a = Mount::new(
        &tmp.path().join("a"),
        &[
            "--meta",
            &meta.addr,
            "--cache-dir",
            cache,
            "--cache-mem-size",
            "512K",
            "--cache-size",
            "2M",
            "data",
        ],
        &s3.env(),
    );
    let b = Mount::new(
        &tmp.path().join("b"),
        &["--meta", &meta.addr, "--cache-mem-size", "0", "data"],
        &s3.env(),
    );
    let mut models = Vec::new();
    for seed in 1..=3u64 {
        let name = format!("f{seed}");
        models.push((
            name.clone(),
            random_writes(&a.path(&name), seed, 60, 3 << 20, 400_000),
        ));
    }
    for (name, model) in &models {
        assert_same_file(&a.path(name), model, "writer");
        assert_same_file(&b.path(name), model, "other client");
    }
    assert!(s3.faults.errors_injected() > 0, "no error was injected");
    assert!(s3.faults.cuts_injected() + s3.faults.delays_injected() > 0);
    assert!(s3.faults.answers_lost() > 0, "no answer was lost");
    assert!(s3.faults.flips_injected() > 0, "no body was damaged");
    a.unmount();
    b.unmount();
    // A fresh client (its disk cache kept from before) reads the same bytes.
    let a = Mount::new(
        &tmp.path().join("a"),
        &["--meta", &meta.addr, "--cache-dir", cache, "data"],
        &s3.env(),
    );
    for (name, model) in &models {
        assert_same_file(&a.path(name), model, "remounted");
    }
    a.unmount();
}

/// The journal records staged under `cache`, counted by name only: a
/// running client adds and removes them meanwhile (each appears by rename
/// and goes by removal), and opening its staging area here would clean up
/// the temporary files of its writes under way.
fn staged_records(cache: &Path) -> usize {
    let mut n = 0;
    for fs_dir in std::fs::read_dir(cache).unwrap().flatten() {
        let Ok(records) = std::fs::read_dir(fs_dir.path().join("staging/records")) else {
            continue;
        };
        n += records
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit())
            })
            .count();
    }
    n
}

/// `strata mount -d` arguments of a `--writeback` client of `data` at
/// `meta`, staging in `cache`, on `mnt`.
fn writeback_mount_args(meta: &str, cache: &Path, mnt: &Path) -> Vec<String> {
    [
        "mount",
        "-d",
        "--meta",
        meta,
        "--writeback",
        "--cache-dir",
        cache.to_str().unwrap(),
        "data",
        mnt.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

/// SIGKILLs the mount process `pid` and waits for it to be gone.
fn kill_mount(pid: i32) {
    // SAFETY: kill(2) on the mount process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    until(10, "the killed mount to exit", || {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid, 0) != 0 }
    });
}

/// Detaches what a killed mount left at `mnt`.
fn detach(mnt: &Path) {
    let _ = std::process::Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(mnt)
        .status();
}

/// A write-back client of a fresh one-node filesystem under `tmp`: its
/// store, node, cache dir and mountpoint, and the arguments that start it.
struct WritebackClient {
    s3: S3,
    meta: MetaServer,
    cache: std::path::PathBuf,
    mnt: std::path::PathBuf,
    args: Vec<String>,
}

impl WritebackClient {
    /// Set up, not started.
    fn new(tmp: &Path) -> WritebackClient {
        let s3 = S3::start(&tmp.join("s3"));
        let (meta, _) = one_node_with_data(tmp, &s3, &[]);
        let cache = tmp.join("cache");
        let mnt = tmp.join("w");
        std::fs::create_dir_all(&mnt).unwrap();
        let args = writeback_mount_args(&meta.addr, &cache, &mnt);
        WritebackClient {
            s3,
            meta,
            cache,
            mnt,
            args,
        }
    }

    /// SIGKILLed after writing `data` to `kept` and fsyncing it while the
    /// store refused every upload (the refusals end after the kill): its
    /// journal holds the file.
    fn killed_with(tmp: &Path, data: &[u8]) -> WritebackClient {
        use std::io::Write;
        let client = WritebackClient::new(tmp);
        let pid = client.start(&[]);
        // The store refuses everything: nothing written can be uploaded.
        client.s3.faults.set_errors(1.0);
        {
            let mut f = std::fs::File::create(client.mnt.join("kept")).unwrap();
            f.write_all(data).unwrap();
            f.sync_all().unwrap();
        }
        // One record, or more: another process's fork and exec may flush
        // the file (closing its inherited descriptor) between two writes.
        assert!(
            staged_records(&client.cache) >= 1,
            "fsync left no journal record"
        );
        kill_mount(pid);
        detach(&client.mnt);
        client.s3.faults.clear();
        client
    }

    /// Starts the client, with the environment variables `env` as well as
    /// the store's; returns its pid.
    fn start(&self, env: &[(&str, &str)]) -> i32 {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut all = self.s3.env();
        all.extend_from_slice(env);
        mount_pid(&run_env_ok(&args, &all))
    }
}

#[test]
fn a_writeback_client_killed_after_fsync_uploads_on_restart() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(42);
    let mut data = vec![0u8; 1_500_000];
    rng.fill(&mut data);
    let killed = WritebackClient::killed_with(tmp.path(), &data);
    let (s3, cache) = (&killed.s3, &killed.cache);
    // Another client sees the file, but none of its data: it was never committed.
    let other = Mount::new(
        &tmp.path().join("o"),
        &["--meta", &killed.meta.addr, "--attr-cache", "0", "data"],
        &s3.env(),
    );
    assert_eq!(std::fs::metadata(other.path("kept")).unwrap().len(), 0);
    // The restarted write-back client finishes what the journal holds.
    killed.start(&[]);
    until(60, "the journal to be uploaded and committed", || {
        std::fs::metadata(other.path("kept")).unwrap().len() == data.len() as u64
    });
    assert_same_file(&other.path("kept"), &data, "after the restart");
    until(10, "the journal to empty", || staged_records(cache) == 0);
    run_ok(&["umount", killed.mnt.to_str().unwrap()]);
    other.unmount();
}

/// A journal record that fails its checksum held acknowledged writes: the
/// restarted write-back client refuses to start, names the record and
/// says what to do, and changes nothing; moved aside, the client starts.
#[test]
fn a_damaged_writeback_record_stops_the_restart_and_says_what_is_lost() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let killed = WritebackClient::killed_with(tmp.path(), &[5u8; 300_000]);
    let (s3, cache, mnt) = (&killed.s3, &killed.cache, &killed.mnt);
    let wb_args: Vec<&str> = killed.args.iter().map(String::as_str).collect();
    let records: Vec<std::path::PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .flatten()
        .flat_map(|fs| std::fs::read_dir(fs.path().join("staging/records")).unwrap())
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(!records.is_empty());
    // Every record of the file damaged.
    let damaged: Vec<Vec<u8>> = records
        .iter()
        .map(|r| {
            let mut raw = std::fs::read(r).unwrap();
            raw[1] ^= 0x40;
            std::fs::write(r, &raw).unwrap();
            raw
        })
        .collect();

    let out = strata_with(&wb_args, &s3.env()).output().unwrap();
    assert!(!out.status.success(), "started over a damaged record");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        records
            .iter()
            .any(|r| said.contains(&*r.file_name().unwrap().to_string_lossy())),
        "{said}"
    );
    assert!(said.contains("failed its checksum"), "{said}");
    assert!(
        said.contains("move it out of the records directory"),
        "{said}"
    );
    for (r, raw) in records.iter().zip(&damaged) {
        assert_eq!(&std::fs::read(r).unwrap(), raw, "the record is kept");
    }
    detach(mnt);

    for (i, r) in records.iter().enumerate() {
        std::fs::rename(r, tmp.path().join(format!("aside-{i}"))).unwrap();
    }
    killed.start(&[]);
    assert_eq!(std::fs::metadata(mnt.join("kept")).unwrap().len(), 0);
    run_ok(&["umount", mnt.to_str().unwrap()]);
}

#[test]
fn a_writeback_client_killed_halfway_through_its_journal_finishes_it_on_restart() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let client = WritebackClient::new(tmp.path());
    let (s3, meta, cache, mnt) = (&client.s3, &client.meta, &client.cache, &client.mnt);
    let pid = client.start(&[]);
    // Every request to the store takes a while: the journal drains slowly.
    s3.faults.set_delays(1.0, Duration::from_millis(300));
    let mut rng = Rng(11);
    let files: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| {
            let mut data = vec![0u8; 300_000 + i * 10_000];
            rng.fill(&mut data);
            (format!("f{i}"), data)
        })
        .collect();
    for (name, data) in &files {
        write_synced(&mnt.join(name), data);
    }
    let journaled = staged_records(cache);
    assert!(journaled > 1, "{journaled} journal records");
    // Killed once part of the journal is uploaded and committed, and not
    // all of it.
    until(60, "part of the journal to land", || {
        (1..journaled).contains(&staged_records(cache))
    });
    kill_mount(pid);
    assert!(
        staged_records(cache) > 0,
        "the journal finished before the kill"
    );
    detach(mnt);
    s3.faults.clear();
    client.start(&[]);
    until(60, "the journal to empty", || staged_records(cache) == 0);
    // Read back by a client with no cache of its own.
    let other = Mount::new(
        &tmp.path().join("o"),
        &["--meta", &meta.addr, "--cache-mem-size", "0", "data"],
        &s3.env(),
    );
    for (name, data) in &files {
        assert_same_file(&other.path(name), data, "after the restart");
    }
    run_ok(&["umount", mnt.to_str().unwrap()]);
    other.unmount();
}

/// Removes from the staging areas under `cache` every file the durable log
/// `log` does not list: what a power loss takes (files written but not yet
/// fsynced and renamed into place, with their directory fsynced).
fn power_off_staging(cache: &Path, log: &Path) -> usize {
    let durable: std::collections::HashSet<String> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    fn walk(dir: &Path, durable: &std::collections::HashSet<String>, dropped: &mut usize) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, durable, dropped);
            } else if !durable.contains(&path.display().to_string()) {
                std::fs::remove_file(&path).unwrap();
                *dropped += 1;
            }
        }
    }
    let mut dropped = 0;
    for fs_dir in std::fs::read_dir(cache).unwrap().flatten() {
        walk(&fs_dir.path().join("staging"), &durable, &mut dropped);
    }
    dropped
}

/// A write-back client that loses power while four writers fsync files
/// into it (the store refusing every upload, so everything stays staged):
/// what was not durable is gone, and the restarted client still uploads
/// and commits every file whose fsync returned.
#[test]
fn a_writeback_client_losing_power_keeps_every_fsynced_file() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let client = WritebackClient::new(tmp.path());
    let (s3, meta, cache, mnt) = (&client.s3, &client.meta, &client.cache, &client.mnt);
    let log = tmp.path().join("durable.log");
    let pid = client.start(&[("STRATA_TEST_DURABLE_LOG", log.to_str().unwrap())]);
    s3.faults.set_errors(1.0);
    let content = |name: &str| -> Vec<u8> {
        let mut rng = Rng(name.bytes().map(u64::from).sum::<u64>() * 7919 + name.len() as u64);
        let mut data = vec![0u8; 50_000 + rng.below(150_000) as usize];
        rng.fill(&mut data);
        data
    };
    let synced = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (mnt, synced) = (mnt.clone(), synced.clone());
            std::thread::spawn(move || {
                use std::io::Write;
                // Until the mount is gone.
                for n in 0.. {
                    let name = format!("w{w}-{n}");
                    let data = content(&name);
                    let ok = std::fs::File::create(mnt.join(&name))
                        .and_then(|mut f| f.write_all(&data).and_then(|()| f.sync_all()));
                    if ok.is_err() {
                        return;
                    }
                    synced.lock().unwrap().push(name);
                }
            })
        })
        .collect();
    until(60, "files to be fsynced", || {
        synced.lock().unwrap().len() >= 30
    });
    kill_mount(pid);
    for w in writers {
        w.join().unwrap();
    }
    detach(mnt);
    let dropped = power_off_staging(cache, &log);
    s3.faults.clear();
    client.start(&[]);
    until(60, "the journal to empty", || staged_records(cache) == 0);
    let other = Mount::new(
        &tmp.path().join("o"),
        &["--meta", &meta.addr, "--cache-mem-size", "0", "data"],
        &s3.env(),
    );
    let synced = synced.lock().unwrap().clone();
    for name in &synced {
        assert_same_file(&other.path(name), &content(name), "after the power loss");
    }
    println!(
        "{} fsynced files kept; {dropped} files that were not durable dropped",
        synced.len()
    );
    run_ok(&["umount", mnt.to_str().unwrap()]);
    other.unmount();
}

#[test]
fn a_full_writeback_disk_writes_through_and_loses_nothing() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(&tmp.path().join("s3"));
    let (meta, _) = one_node_with_data(tmp.path(), &s3, &[]);
    // Room for less than one 4 MiB block and a few journal records.
    let cache = Tmpfs::new(&tmp.path().join("cache"), "3M");
    let w = Mount::new(
        &tmp.path().join("w"),
        &[
            "--meta",
            &meta.addr,
            "--writeback",
            "--cache-dir",
            cache.0.to_str().unwrap(),
            "data",
        ],
        &s3.env(),
    );
    // Without a fallback the blocks could not be staged and fsync would
    // fail; they go to the store instead, and so do commits whose journal
    // record finds no room.
    let mut rng = Rng(5);
    let mut files = Vec::new();
    for (i, len) in [20 << 20, 100_000, 3 << 20, 1].into_iter().enumerate() {
        let mut data = vec![0u8; len];
        rng.fill(&mut data);
        let name = format!("f{i}");
        write_synced(&w.path(&name), &data);
        files.push((name, data));
    }
    // Read back by a client with no cache of its own once the writer
    // unmounted (it finishes its journal first). Not before: a commit whose
    // journal record found room is made in the background, and other
    // clients see it only then (the flag's documented semantics; a read
    // before the unmount failed under load, seeing f0 still empty).
    w.unmount();
    let r = Mount::new(
        &tmp.path().join("r"),
        &["--meta", &meta.addr, "--cache-mem-size", "0", "data"],
        &s3.env(),
    );
    for (name, data) in &files {
        assert_same_file(&r.path(name), data, "after the writer unmounted");
    }
    r.unmount();
}

#[test]
fn deleted_files_wait_in_the_trash_and_gc_finds_no_leaks() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(&tmp.path().join("s3"));
    let (meta, _) = one_node_with_data(tmp.path(), &s3, &[]);
    let m = Mount::new(
        &tmp.path().join("m"),
        &[
            "--meta",
            &meta.addr,
            "--gc-interval",
            "0.2",
            "--deletion-delay",
            "0",
            "data",
        ],
        &s3.env(),
    );
    let model = random_writes(&m.path("doomed"), 9, 20, 2 << 20, 300_000);
    let keep = random_writes(&m.path("kept"), 10, 20, 1 << 20, 200_000);
    std::fs::remove_file(m.path("doomed")).unwrap();
    let list = run_env_ok(&["trash", "list", "--meta", &meta.addr, "data"], &s3.env());
    assert!(
        list.contains("\"doomed\"") && list.contains("1 files"),
        "{list}"
    );
    let ino = list
        .lines()
        .find(|l| l.contains("\"doomed\""))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    gc_settles(30, &meta.addr, &s3);
    run_env_ok(
        &["trash", "restore", "--meta", &meta.addr, "data", &ino],
        &s3.env(),
    );
    assert_same_file(&m.path("doomed"), &model, "restored");
    assert_same_file(&m.path("kept"), &keep, "untouched");
    // An overwrite leaves the old slices behind; compaction and the
    // background worker clean them up. While they work, gc may see their
    // blocks in flight, but never a referenced block missing; once they are
    // done it sees no leak either.
    random_writes(&m.path("kept"), 11, 30, 1 << 20, 100_000);
    gc_settles(30, &meta.addr, &s3);
    // A leak (an object no slice references) is found and, with --delete, removed.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt
        .block_on(strata_cache::S3Store::new(
            "bucket",
            "strata",
            &strata_cache::StoreOptions {
                s3_endpoint: Some(s3.env[3].1.clone()),
                access_key: Some(ACCESS.into()),
                secret_key: Some(SECRET.into()),
                ..Default::default()
            },
        ))
        .unwrap();
    let objects = rt.block_on(store.list("")).unwrap();
    let uuid = objects[0].0.split('/').next().unwrap().to_string();
    let leak = strata_cache::block_key(&uuid, 999_999_999, 0, 3);
    rt.block_on(store.put(&leak, bytes::Bytes::from_static(b"abc")))
        .unwrap();
    let gc = run_env_ok(
        &[
            "gc",
            "--meta",
            &meta.addr,
            "data",
            "--delete",
            "--min-age",
            "0",
        ],
        &s3.env(),
    );
    assert!(
        gc.contains(" 1 leaked") && gc.contains("deleted 1 leaked"),
        "{gc}"
    );
    assert!(rt.block_on(store.get(&leak)).unwrap_err().is_not_found());
    m.unmount();
}
