//! Separate processes: `strata meta serve`, `strata format` with S3 storage on
//! a real S3 server over HTTP on loopback (s3s-fs), and two client mounts.

mod common;

use common::*;

fn count_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += count_files(&p);
        } else {
            n += 1;
        }
    }
    n
}

#[test]
fn s3_storage_with_a_separate_metaserver_and_two_clients() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let s3_root = tmp.path().join("s3");
    std::fs::create_dir_all(&s3_root).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (endpoint, _server) = rt
        .block_on(strata_cache::test_s3::start_s3_server(
            &s3_root, "bucket", ACCESS, SECRET,
        ))
        .unwrap();
    let env_owned = s3_env(&endpoint);
    let env: Vec<(&str, &str)> = env_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let meta = MetaServer::start(&tmp.path().join("meta"), "127.0.0.1:0");
    let out = run_env_ok(
        &[
            "format",
            "--meta",
            &meta.addr,
            "data",
            "--storage",
            "s3://bucket/strata",
            "--block-size",
            "1M",
        ],
        &env,
    );
    assert!(out.contains("formatted data"), "{out}");
    // Formatting the same name again is refused.
    let again = strata()
        .args([
            "format",
            "--meta",
            &meta.addr,
            "data",
            "--storage",
            "s3://bucket/strata",
        ])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let mnt_a = tmp.path().join("a");
    let mnt_b = tmp.path().join("b");
    let a = Mount::new(&mnt_a, &["--meta", &meta.addr, "data"], &env);
    let cache = tmp.path().join("cache-b");
    let b = Mount::new(
        &mnt_b,
        &[
            "--meta",
            &meta.addr,
            "--cache-dir",
            cache.to_str().unwrap(),
            // Whatever the test machine's disk holds, this cache may fill it.
            "--cache-free-ratio",
            "0",
            "data",
        ],
        &env,
    );

    let model = random_writes(&a.path("file.bin"), 42, 150, 10 << 20, 600 << 10);
    std::fs::create_dir(a.path("dir")).unwrap();
    std::fs::write(a.path("dir/x"), b"from a").unwrap();
    std::fs::rename(a.path("dir/x"), a.path("y")).unwrap();
    // The other client sees what the first one closed.
    assert_same_file(&b.path("file.bin"), &model, "second client");
    assert_eq!(std::fs::read(b.path("y")).unwrap(), b"from a");
    std::fs::write(b.path("from-b"), b"written by b").unwrap();
    assert_eq!(std::fs::read(a.path("from-b")).unwrap(), b"written by b");

    // Blocks read go to the disk cache in the background.
    until(30, "the second client to cache the blocks it read", || {
        count_files(&cache) > 0
    });
    // Blocks are objects in the bucket under the filesystem's prefix.
    assert!(
        count_files(&s3_root.join("bucket/strata")) >= 10,
        "blocks were uploaded to S3"
    );
    a.unmount();
    b.unmount();

    let a = Mount::new(&mnt_a, &["--meta", &meta.addr, "data"], &env);
    assert_same_file(&a.path("file.bin"), &model, "after remount");
    assert_eq!(std::fs::read(a.path("from-b")).unwrap(), b"written by b");
    let status = run_ok(&["status", "--meta", &meta.addr]);
    assert!(
        status.contains("data") && status.contains("s3://bucket/strata"),
        "{status}"
    );
    a.unmount();
}

#[test]
fn bad_arguments_get_clear_errors_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let meta = MetaServer::start(&tmp.path().join("meta"), "127.0.0.1:0");
    for (args, needle) in [
        (
            vec![
                "format",
                "--meta",
                &meta.addr,
                "x",
                "--storage",
                "ftp://nope",
            ],
            "s3://",
        ),
        (
            vec![
                "format",
                "--meta",
                &meta.addr,
                "x",
                "--storage",
                "file:///tmp/x",
                "--block-size",
                "3M",
            ],
            "power of two",
        ),
        (
            vec![
                "format",
                "--meta",
                &meta.addr,
                "bad/name",
                "--storage",
                "file:///tmp/x",
            ],
            "filesystem name",
        ),
        (
            vec!["mount", "--meta", &meta.addr, "missing", "/tmp"],
            "not found",
        ),
    ] {
        let out = strata().args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let status = run_ok(&["status", "--meta", &meta.addr]);
    assert!(status.contains("filesystems: 0"), "{status}");
}

/// S3 credentials are the client's alone: they never reach the logs (at
/// debug level), `status`, `meta status` or a dump.
#[test]
fn s3_credentials_stay_out_of_logs_status_and_dumps() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(&tmp.path().join("s3"));
    let (_meta, addr) = one_node_with_data(tmp.path(), &s3, &[]);
    let mut env = s3.env();
    env.push(("RUST_LOG", "debug"));
    let log = tmp.path().join("mount.log");
    let m = Mount::new(
        &tmp.path().join("mnt"),
        &["--meta", &addr, "--log", log.to_str().unwrap(), "data"],
        &env,
    );
    write_synced(&m.path("f"), vec![7u8; 3 << 20]);
    assert_eq!(std::fs::read(m.path("f")).unwrap().len(), 3 << 20);
    m.unmount();
    let dump = tmp.path().join("data.dump");
    let mut seen = vec![
        std::fs::read_to_string(&log).unwrap(),
        run_env_ok(&["status", "--meta", &addr], &env),
        run_env_ok(&["meta", "status", "--meta", &addr], &env),
        run_env_ok(
            &["dump", "--meta", &addr, "data", dump.to_str().unwrap()],
            &env,
        ),
    ];
    let mut text = String::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(std::fs::File::open(&dump).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    seen.push(text);
    assert!(seen[0].contains("DEBUG"), "the mount logged at debug level");
    for (what, s) in ["mount log", "status", "meta status", "dump output", "dump"]
        .iter()
        .zip(&seen)
    {
        assert!(!s.contains(SECRET), "the S3 secret key is in the {what}");
    }
}
