//! The metaserver is killed with SIGKILL after fsync and restarted: data and
//! metadata are intact, and the mount carries on. Its data disk running
//! short: changes are refused with ENOSPC, removals still go through, and
//! changes are taken again once there is room, with no restart.

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
    until(10, "changes to be refused", || {
        std::fs::File::create(m.path("refused")).is_err()
    });
    let e = std::fs::create_dir(m.path("refused-dir")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    // Removals still go through, and what was there is intact.
    std::fs::remove_file(m.path("removable")).unwrap();
    assert_eq!(std::fs::read_to_string(m.path("before")).unwrap(), "kept");

    // Room again: changes are taken, by the same node process.
    std::fs::remove_file(&filler).unwrap();
    until(10, "changes to be taken again", || {
        std::fs::File::create(m.path("after")).is_ok()
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
