//! The metaserver is killed with SIGKILL after fsync and restarted: data and
//! metadata are intact, and the mount carries on.

mod common;

use std::io::Write;

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
