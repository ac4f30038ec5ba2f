//! `strata dump` and `strata load` through real mounts and a real S3
//! server: the loaded filesystem has the same tree, bytes, attributes and
//! extended attributes, its snapshots come back, it never deletes the
//! objects it borrows, and a damaged dump loads nothing.

mod common;

use std::path::Path;

use common::*;

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.display().to_string()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the length given.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = std::ffi::CString::new(path.display().to_string()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings and a buffer of the length given.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {}", path.display());
}

#[test]
fn dump_and_load_give_the_same_tree_and_snapshots_and_borrowed_blocks_stay() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(&tmp.path().join("s3"));
    let (_server, meta) = one_node_with_data(tmp.path(), &s3, &["--trash-days", "0"]);
    let m = Mount::new(&tmp.path().join("m"), &["--meta", &meta, "data"], &s3.env());
    make_tree(&m.dir);
    set_xattr(&m.path("a/b/c/deep.txt"), "user.color", b"blue");
    run_env_ok(
        &["snapshot", "create", "--meta", &meta, "data", "s1"],
        &s3.env(),
    );
    let at_snapshot = tree(&m.dir);
    // Only in the live tree (a snapshot would keep its blocks anyway).
    let overwritten = random_writes(&m.path("rewritten"), 5, 10, 1 << 20, 200_000);
    // Changed after the snapshot: the dump holds both states.
    std::fs::remove_file(m.path("many/f00 with space")).unwrap();
    std::fs::write(m.path("after"), b"written after the snapshot").unwrap();
    let live = tree(&m.dir);
    m.unmount();

    let local = tmp.path().join("data.dump");
    let out = run_env_ok(
        &[
            "dump",
            "--meta",
            &meta,
            "data",
            local.to_str().unwrap(),
            "--include-snapshots",
        ],
        &s3.env(),
    );
    assert!(out.contains("1 snapshots"), "{out}");
    run_env_ok(
        &[
            "dump",
            "--meta",
            &meta,
            "data",
            "s3://bucket/dumps/data.dump",
            "--include-snapshots",
        ],
        &s3.env(),
    );

    // A damaged dump loads nothing; the same name then loads whole.
    let bytes = std::fs::read(&local).unwrap();
    let cut = tmp.path().join("cut.dump");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let mut c = strata();
    c.args(["load", "--meta", &meta, cut.to_str().unwrap(), "copy"]);
    for (k, v) in s3.env() {
        c.env(k, v);
    }
    let failed = c.output().unwrap();
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("dump"), "{err}");
    let mut mount_cut = strata();
    mount_cut
        .args(["mount", "-d", "--meta", &meta, "copy"])
        .arg(tmp.path().join("nope"));
    std::fs::create_dir_all(tmp.path().join("nope")).unwrap();
    assert!(
        !mount_cut.output().unwrap().status.success(),
        "a half-loaded filesystem mounted"
    );

    let out = run_env_ok(
        &[
            "load",
            "--meta",
            &meta,
            "s3://bucket/dumps/data.dump",
            "copy",
        ],
        &s3.env(),
    );
    assert!(out.contains("1 snapshots"), "{out}");
    let fsck = run_env_ok(&["fsck", "--meta", &meta, "copy"], &s3.env());
    assert!(fsck.contains("clean"), "{fsck}");

    // Read everything from S3, not from a cache: the same tree and bytes.
    let copy = Mount::new(
        &tmp.path().join("copy"),
        &[
            "--meta",
            &meta,
            "--cache-mem-size",
            "0",
            "--gc-interval",
            "0.2",
            "--deletion-delay",
            "0",
            "copy",
        ],
        &s3.env(),
    );
    assert_same_tree(&copy.dir, &live);
    assert_eq!(
        xattr(&copy.path("a/b/c/deep.txt"), "user.color").as_deref(),
        Some(&b"blue"[..])
    );
    let snap = Mount::new(
        &tmp.path().join("copy-s1"),
        &[
            "--meta",
            &meta,
            "--snapshot",
            "s1",
            "--cache-mem-size",
            "0",
            "copy",
        ],
        &s3.env(),
    );
    assert_same_tree(&snap.dir, &at_snapshot);
    snap.unmount();

    // The copy writes its own blocks; rewriting a borrowed file compacts
    // away the borrowed slices, and the copy's worker must not delete them.
    let new = random_writes(&copy.path("rewritten"), 6, 30, 1 << 20, 100_000);
    std::fs::write(copy.path("own"), b"the copy's own data").unwrap();
    until(60, "the copy's deletion queue to empty", || {
        let gc = run_env_ok(&["gc", "--meta", &meta, "copy"], &s3.env());
        assert!(gc.contains(" 0 missing"), "{gc}");
        gc.contains(" 0 queued for deletion") && gc.contains(" 0 leaked")
    });
    assert_same_file(&copy.path("rewritten"), &new, "the copy's rewrite");
    // The trash days came along (0: the worker purges a deleted file at
    // once; with the default of 1 it would wait a day).
    std::fs::remove_file(copy.path("own")).unwrap();
    until(60, "the copy's trash to empty", || {
        let trash = run_env_ok(&["trash", "list", "--meta", &meta, "copy"], &s3.env());
        trash.contains("0 files")
    });
    copy.unmount();
    let original = Mount::new(
        &tmp.path().join("m2"),
        &["--meta", &meta, "--cache-mem-size", "0", "data"],
        &s3.env(),
    );
    assert_same_file(
        &original.path("rewritten"),
        &overwritten,
        "the original after the copy's rewrite",
    );
    let gc = run_env_ok(&["gc", "--meta", &meta, "data"], &s3.env());
    assert!(gc.contains(" 0 missing"), "{gc}");
    original.unmount();
}
