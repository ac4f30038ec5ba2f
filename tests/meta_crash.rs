//! The metaserver is killed with SIGKILL after fsync and restarted: data and
//! metadata are intact, and the mount carries on. Its data disk running
//! short: changes are refused with ENOSPC, removals still go through, and
//! changes are taken again once there is room, with no restart. A
//! follower whose data disk fills: the others go on; restarted with room,
//! it catches up, and nothing acknowledged is lost.

mod common;

use std::io::Write;
use std::path::Path;

use common::*;

#[test]
fn metaserver_sigkill_after_fsync_loses_nothing() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let meta_dir = tmp.path().join("meta");
    let blocks = tmp.path().join("blocks");
    let mut meta = MetaServer::start(&meta_dir, "127.0.0.1:0");
    let addr = meta.addr.clone();
    run_ok(&[
        "format",
        "--meta",
        &addr,
        "crash",
        "--storage",
        &format!("file://{}", blocks.display()),
    ]);
    let mnt = tmp.path().join("mnt");
    let m = Mount::new(&mnt, &["--meta", &addr, "crash"], &[]);

    let model = random_writes(&m.path("data.bin"), 7, 60, 6 << 20, 300 << 10);
    std::fs::create_dir(m.path("d")).unwrap();
    let mut f = std::fs::File::create(m.path("d/synced")).unwrap();
    f.write_all(b"acknowledged").unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::rename(m.path("d/synced"), m.path("renamed")).unwrap();

    meta.kill9();
    let mut meta = MetaServer::start(&meta_dir, &addr);

    // The live mount reconnects on its own.
    assert_same_file(&m.path("data.bin"), &model, "after metaserver restart");
    assert_eq!(std::fs::read(m.path("renamed")).unwrap(), b"acknowledged");
    assert!(m.path("d").is_dir() && !m.path("d/synced").exists());
    std::fs::write(m.path("after"), b"still writable").unwrap();
    m.unmount();

    meta.kill9();
    let meta = MetaServer::start(&meta_dir, &addr);
    let m = Mount::new(&mnt, &["--meta", &meta.addr, "crash"], &[]);
    assert_same_file(&m.path("data.bin"), &model, "after remount");
    assert_eq!(std::fs::read(m.path("after")).unwrap(), b"still writable");
    m.unmount();
}

/// Takes all but `leave` bytes of what is free on the filesystem of `dir`,
/// in a file there.
fn fill(dir: &Path, leave: u64) -> std::path::PathBuf {
    // SAFETY: a zeroed statvfs is a valid value for the call to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: statvfs(3) with a NUL-terminated path and a live struct.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    let filler = dir.join("filler");
    let ok = std::process::Command::new("fallocate")
        .args(["-l", &(free - leave).to_string()])
        .arg(&filler)
        .status()
        .unwrap()
        .success();
    assert!(ok, "fallocate");
    filler
}

#[test]
fn a_full_metadata_disk_refuses_changes_with_enospc_and_recovers() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let disk = Tmpfs::new(&tmp.path().join("disk"), "256M");
    let meta_dir = disk.0.join("meta");
    let blocks = tmp.path().join("blocks");
    let meta = MetaServer::start(&meta_dir, "127.0.0.1:0");
    let addr = meta.addr.clone();
    run_ok(&[
        "format",
        "--meta",
        &addr,
        "full",
        "--storage",
        &format!("file://{}", blocks.display()),
    ]);
    let m = Mount::new(&tmp.path().join("mnt"), &["--meta", &addr, "full"], &[]);
    write_synced(&m.path("before"), "kept");
    write_synced(&m.path("removable"), "x");

    // Less free than a log segment (64 MiB) and the margin: a node that
    // took more changes could fail to write its log and stop.
    let filler = fill(&disk.0, 40 << 20);
    // A new file's create goes at its first fsync or close (decision 71),
    // so that is where the refusal may come.
    let create_synced = |name: &str| std::fs::File::create(m.path(name))?.sync_all();
    until(10, "changes to be refused", || {
        create_synced("refused").is_err()
    });
    let e = std::fs::create_dir(m.path("refused-dir")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    // Removals still go through, and what was there is intact.
    std::fs::remove_file(m.path("removable")).unwrap();
    assert_eq!(std::fs::read_to_string(m.path("before")).unwrap(), "kept");

    // Room again: changes are taken, by the same node process.
    std::fs::remove_file(&filler).unwrap();
    until(10, "changes to be taken again", || {
        create_synced("after").is_ok()
    });
    write_synced(&m.path("after"), "written");
    let names: Vec<String> = std::fs::read_dir(m.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.contains(&"before".into()) && names.contains(&"after".into()));
    assert!(!names.contains(&"removable".into()) && !names.contains(&"refused-dir".into()));
    let fsck = run_ok(&["fsck", "--meta", &addr, "full"]);
    assert!(fsck.contains("clean"), "{fsck}");
    m.unmount();
    drop(meta);
}

/// Creates files `{prefix}{n}` for n in `range` in the root of `fs`; every
/// one must be acknowledged.
fn create_all(
    rt: &tokio::runtime::Runtime,
    fs: &strata_meta::FsClient,
    prefix: &str,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    use strata_meta::{FileType, NewInode};
    range
        .map(|n| {
            let name = format!("{prefix}{n}");
            let new = NewInode::plain(FileType::File, 0o644, 0, 0);
            rt.block_on(fs.create(1, name.as_bytes(), new))
                .unwrap_or_else(|e| panic!("create {name}: {e}"));
            name
        })
        .collect()
}

#[test]
fn a_followers_full_disk_stops_only_that_follower_and_it_catches_up_after() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = Tmpfs::new(&tmp.path().join("disk3"), "256M");
    let dirs = [
        tmp.path().join("n1"),
        tmp.path().join("n2"),
        disk.0.join("n3"),
    ];
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut nodes: Vec<MetaServer> = (0..3)
        .map(|i| MetaServer::start_node(i as u64 + 1, &dirs[i], &addrs[i]))
        .collect();
    // Node 1 forms the cluster and leads every group; node 3 follows.
    form_cluster(&addrs);
    let all = addrs.join(",");
    format_metadata_only(&all, 4);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fs = open_t(&rt, &addrs);
    let mut acked = create_all(&rt, &fs, "before-", 0..50);

    // Node 3's disk fills: its tables cannot grow (its log is preallocated).
    let filler = fill(&disk.0, 0);
    acked.extend(create_all(&rt, &fs, "while-full-", 0..300));
    // The group the files are in went on without node 3, which stopped
    // applying it when its tables could not grow.
    let status = run_ok(&["meta", "status", "--meta", &all]);
    let lag = status
        .lines()
        .filter_map(|l| l.trim().strip_prefix("node 3: applied "))
        .filter_map(|l| l.split("lag ").nth(1)?.trim().parse::<u64>().ok())
        .max();
    assert!(lag.is_some_and(|l| l >= 100), "node 3 kept up: {status}");

    // Room again, and node 3 restarted: it catches up.
    std::fs::remove_file(&filler).unwrap();
    nodes[2].kill9();
    nodes[2] = MetaServer::start_node(3, &dirs[2], &addrs[2]);
    acked.extend(create_all(&rt, &fs, "after-", 0..50));
    assert_replicas_agree(&rt, &fs, &addrs);
    // Nothing acknowledged is lost, for a fresh client.
    assert_created_and_clean(&rt, &open_t(&rt, &addrs), &acked);
    drop(nodes);
}
