//! Quotas through the kernel's FUSE: two mounts writing into one quota
//! directory stop exactly at its limit with EDQUOT and write again after
//! deletes; nested quotas (the tighter wins); renames and links between
//! quota trees move usage or are refused; `df` at a quota directory shows
//! the quota; usage survives a restart of every node and a leader's
//! failover; `quota check` finds no drift and repairs some; the
//! filesystem's, a user's and a group's quota hold exactly on a cluster
//! whose directories are spread over metadata groups, and a directory
//! quota's tree stays in one group.

mod common;

use std::io::Write;
use std::path::Path;

use common::*;

const BLOCK: usize = 256 << 10;

/// Creates `path` with `data` and fsyncs it: the commit, which a quota can
/// refuse, happens by the time this returns.
fn try_write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// A one-node metaserver with filesystem `data` (formatted with more
/// flags `format`) on an S3 server, under `tmp`.
fn one_node(tmp: &Path, format: &[&str]) -> (S3, MetaServer, String) {
    let s3 = S3::start(&tmp.join("s3"));
    let (server, addr) = one_node_with_data(tmp, &s3, format);
    (s3, server, addr)
}

/// Filesystem `data` of the metaservers at `meta`, mounted on `tmp/name`.
fn mount(tmp: &Path, name: &str, meta: &str, s3: &S3) -> Mount {
    Mount::new(&tmp.join(name), &["--meta", meta, "data"], &s3.env())
}

fn is_edquot(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EDQUOT)
}

fn quota(addr: &str, args: &[&str]) -> String {
    let mut all = vec!["quota", args[0], "--meta", addr, "data"];
    all.extend_from_slice(&args[1..]);
    run_ok(&all)
}

/// The used bytes and inodes `strata quota get` shows for `dir`.
fn usage(addr: &str, dir: &str) -> (u64, u64) {
    let out = quota(addr, &["get", dir]);
    let row = out
        .lines()
        .find(|l| l.starts_with(dir))
        .unwrap_or_else(|| panic!("no row for {dir}: {out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    (cols[1].parse().unwrap(), cols[3].parse().unwrap())
}

/// The sizes of the files in `dir`, summed.
fn listed(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// Writes one-block files named `prefix-N` until the quota refuses one;
/// returns how many were committed.
fn fill(dir: &Path, prefix: &str) -> usize {
    let data = vec![7u8; BLOCK];
    for n in 0.. {
        match try_write(&dir.join(format!("{prefix}-{n}")), &data) {
            Ok(()) => {}
            Err(e) if is_edquot(&e) => return n,
            Err(e) => panic!("{prefix}-{n}: {e}"),
        }
    }
    unreachable!()
}

#[test]
fn two_mounts_stop_at_a_directory_quota_and_write_again_after_deletes() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(&tmp.path().join("s3"));
    let node_metrics = format!("127.0.0.1:{}", free_port());
    let meta = tmp.path().join("meta");
    let _server =
        MetaServer::start_node_with(1, &meta, "127.0.0.1:0", &["--metrics", &node_metrics]);
    let addr = _server.addr.clone();
    format_data(&addr, &s3, &[]);
    let m1 = Mount::new(
        &tmp.path().join("m1"),
        &["--meta", &addr, "data"],
        &s3.env(),
    );
    let m2 = Mount::new(
        &tmp.path().join("m2"),
        &["--meta", &addr, "data"],
        &s3.env(),
    );
    std::fs::create_dir(m1.path("q")).unwrap();
    write_synced(&m1.path("q/before"), vec![1u8; BLOCK]);
    write_synced(&m1.path("outside"), vec![1u8; 4 * BLOCK]);

    // Bad input changes nothing.
    let missing = strata()
        .args([
            "quota", "set", "--meta", &addr, "data", "/nope", "--bytes", "1M",
        ])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let none = strata()
        .args(["quota", "set", "--meta", &addr, "data", "/q"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("--bytes"),
        "{none:?}"
    );
    let bad_size = strata()
        .args([
            "quota", "set", "--meta", &addr, "data", "/q", "--bytes", "4X",
        ])
        .output()
        .unwrap();
    assert!(!bad_size.status.success());
    assert!(quota(&addr, &["list"]).lines().count() == 1, "no quota yet");

    // 16 blocks: the one already there is counted from the start.
    quota(&addr, &["set", "/q", "--bytes", "4M", "--inodes", "1000"]);
    assert_eq!(usage(&addr, "/q"), (BLOCK as u64, 1));

    let (q1, q2) = (m1.path("q"), m2.path("q"));
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| fill(&q1, "one"));
        let b = s.spawn(|| fill(&q2, "two"));
        (a.join().unwrap(), b.join().unwrap())
    });
    // Every commit is checked against the quota where it is applied: the
    // mounts together fit exactly the 15 blocks left, no more.
    assert_eq!(a + b, 15, "committed by the two mounts: {a} + {b}");
    let (bytes, inodes) = usage(&addr, "/q");
    assert_eq!(bytes, 4 << 20);
    // Refused files stay, empty: each mount's last try made one.
    assert_eq!(inodes, 1 + 15 + 2);
    assert_eq!(
        listed(&m2.path("q")),
        4 << 20,
        "what the quota counts is what is there"
    );
    // A writer running into the quota hears it from write(2) itself, not
    // only at fsync or close.
    let mut late = std::fs::File::create(m1.path("q/late")).unwrap();
    let e = late.write_all(&[1u8; 10]).unwrap_err();
    assert!(is_edquot(&e), "{e}");
    drop(late);
    // Status and the node's metrics show the quota against its limits.
    let status = run_ok(&["status", "--meta", &addr]);
    assert!(
        status.contains("bytes 4194304 of 4194304 (100%)  inodes 19 of 1000 (2%)"),
        "{status}"
    );
    let scraped = http_get(&node_metrics, "/metrics").expect("the node serves metrics");
    for series in ["strata_quotas{", "strata_quotas_near_limit{"] {
        let line = scraped
            .lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("no {series} in {scraped}"));
        assert!(line.ends_with(" 1"), "{line}");
    }

    // Outside the quota nothing is limited.
    write_synced(&m1.path("free"), vec![1u8; 8 * BLOCK]);

    // df at the quota's directory shows the quota.
    let st = statvfs(&m1.path("q"));
    assert_eq!(st.f_blocks * st.f_frsize, 4 << 20);
    assert_eq!(st.f_bfree, 0);
    assert_eq!(st.f_files, 1000);
    let whole = statvfs(&m1.path(""));
    assert!(
        whole.f_blocks * whole.f_frsize > 1 << 40,
        "the root is not limited"
    );

    // Deleting makes room, on either mount.
    for n in 0..2 {
        for (m, p) in [(&m1, "one"), (&m2, "two")] {
            let f = m.path(&format!("q/{p}-{n}"));
            if f.exists() {
                std::fs::remove_file(f).unwrap();
            }
        }
    }
    let freed = (4 << 20) - usage(&addr, "/q").0;
    assert!(freed >= 2 * BLOCK as u64, "freed {freed}");
    assert_eq!(listed(&m2.path("q")), 4 * (1 << 20) - freed);
    let again = fill(&m2.path("q"), "again");
    assert!(again >= 2, "wrote {again} blocks into {freed} bytes freed");
    assert_eq!(usage(&addr, "/q").0, 4 << 20);
    assert_eq!(
        listed(&m1.path("q")),
        4 << 20,
        "the quota counts what is there"
    );

    // Raising the limit lets the writers go on; the usage is kept.
    quota(&addr, &["set", "/q", "--bytes", "5M"]);
    assert_eq!(usage(&addr, "/q").0, 4 << 20);
    write_synced(&m1.path("q/after-raise"), vec![1u8; BLOCK]);
    assert!(quota(&addr, &["check"]).contains("quotas match what they cover"));

    // Truncating frees bytes, and growing past the limit is refused.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m1.path("q/after-raise"))
        .unwrap();
    f.set_len(0).unwrap();
    assert_eq!(usage(&addr, "/q").0, 4 << 20);
    assert!(is_edquot(&f.set_len(2 << 20).unwrap_err()));
    drop(f);

    quota(&addr, &["delete", "/q"]);
    assert!(quota(&addr, &["list"]).lines().count() == 1);
    write_synced(&m1.path("q/unlimited"), vec![1u8; 8 * BLOCK]);
    m1.unmount();
    m2.unmount();
}

/// A commit refused at another descriptor's close still fails the
/// writer's fsync and close. A process that forks and execs (a shell, a
/// test harness) closes its inherited copies of open descriptors as it
/// execs; the kernel flushes the file then, and that flush's commit is
/// the one the quota refuses. Its error goes to the exec; the writer,
/// whose data was dropped, must hear of it from its own fsync and close.
#[test]
fn a_write_refused_at_a_forked_childs_close_fails_the_writers_fsync_and_close() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let (s3, _server, addr) = one_node(tmp.path(), &[]);
    let m = mount(tmp.path(), "m", &addr, &s3);
    std::fs::create_dir(m.path("q")).unwrap();
    quota(&addr, &["set", "/q", "--bytes", "1M"]);
    // Three blocks fit when written...
    let mut f = std::fs::File::create(m.path("q/big")).unwrap();
    f.write_all(&vec![1u8; 3 * BLOCK]).unwrap();
    // ...but another file takes two of the four before they are committed.
    try_write(&m.path("q/small"), &vec![2u8; 2 * BLOCK]).unwrap();
    let child = std::process::Command::new("true").status().unwrap();
    assert!(child.success());
    let e = f.sync_all().unwrap_err();
    assert!(is_edquot(&e), "{e}");
    let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
    // SAFETY: `fd` was just taken from the file, which no longer owns it.
    assert_eq!(unsafe { libc::close(fd) }, -1, "the close reports it too");
    let e = std::io::Error::last_os_error();
    assert!(is_edquot(&e), "{e}");
    assert_eq!(usage(&addr, "/q").0, 2 * BLOCK as u64);
    assert_eq!(std::fs::metadata(m.path("q/big")).unwrap().len(), 0);
    m.unmount();
}

#[test]
fn nested_quotas_and_moves_between_quota_trees() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    // A whole-filesystem limit is the root's quota, set at format time.
    let (s3, _server, addr) = one_node(tmp.path(), &["--capacity", "64M", "--inodes", "40"]);
    let m = mount(tmp.path(), "m", &addr, &s3);
    for d in ["a/inner", "a/plain", "b"] {
        std::fs::create_dir_all(m.path(d)).unwrap();
    }
    let root = statvfs(&m.path(""));
    assert_eq!(root.f_blocks * root.f_frsize, 64 << 20);
    assert_eq!((root.f_files, root.f_files - root.f_ffree), (40, 4));
    quota(&addr, &["set", "/a", "--inodes", "10"]);
    quota(&addr, &["set", "/a/inner", "--inodes", "3"]);
    quota(&addr, &["set", "/b", "--inodes", "5", "--bytes", "1M"]);
    assert_eq!(usage(&addr, "/a"), (0, 2));

    // The tighter quota wins: inner takes 3, then refuses.
    for i in 0..3 {
        std::fs::write(m.path(&format!("a/inner/f{i}")), b"x").unwrap();
    }
    let e = std::fs::write(m.path("a/inner/f3"), b"x").unwrap_err();
    assert!(is_edquot(&e), "{e}");
    // The outer one counts them too: 2 + 3 of 10, so 5 more fit in /a.
    assert_eq!(usage(&addr, "/a"), (3, 5));
    for i in 0..5 {
        std::fs::create_dir(m.path(&format!("a/plain/d{i}"))).unwrap();
    }
    let e = std::fs::create_dir(m.path("a/plain/d5")).unwrap_err();
    assert!(is_edquot(&e), "{e}");
    let e = std::os::unix::fs::symlink("t", m.path("a/s")).unwrap_err();
    assert!(is_edquot(&e), "{e}");

    // A file moves its usage with it.
    std::fs::rename(m.path("a/inner/f0"), m.path("b/f0")).unwrap();
    assert_eq!(usage(&addr, "/a/inner"), (2, 2));
    assert_eq!(usage(&addr, "/a"), (2, 9));
    assert_eq!(usage(&addr, "/b"), (1, 1));
    // A hard link into another quota tree would be uncounted there.
    let e = std::fs::hard_link(m.path("b/f0"), m.path("a/link")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EXDEV), "{e}");
    // A directory without a quota of its own cannot be renamed across
    // (nothing holds its subtree's usage); `mv` copies it instead, and the
    // copy is counted and checked.
    let e = std::fs::rename(m.path("a/plain"), m.path("b/plain")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EXDEV), "{e}");
    let mv = std::process::Command::new("mv")
        .arg(m.path("a/plain"))
        .arg(m.path("b/plain"))
        .output()
        .unwrap();
    assert!(!mv.status.success(), "6 inodes do not fit in b's 5 - 1");
    assert!(
        String::from_utf8_lossy(&mv.stderr).contains("quota"),
        "{mv:?}"
    );
    std::fs::remove_dir_all(m.path("b/plain")).ok();
    std::fs::remove_dir(m.path("a/plain/d4")).unwrap();
    std::fs::remove_dir(m.path("a/plain/d3")).unwrap();
    let mv = std::process::Command::new("mv")
        .arg(m.path("a/plain"))
        .arg(m.path("b/plain"))
        .status()
        .unwrap();
    assert!(mv.success());
    assert_eq!(usage(&addr, "/b"), (1, 5));
    assert_eq!(usage(&addr, "/a"), (2, 3));

    // A directory with its own quota moves with its usage, if it fits.
    let e = std::fs::rename(m.path("a/inner"), m.path("b/inner")).unwrap_err();
    assert!(is_edquot(&e), "3 inodes into b's 5 - 5: {e}");
    quota(&addr, &["set", "/b", "--inodes", "8"]);
    std::fs::rename(m.path("a/inner"), m.path("b/inner")).unwrap();
    assert_eq!(usage(&addr, "/a"), (0, 0));
    assert_eq!(usage(&addr, "/b"), (3, 8));
    assert_eq!(usage(&addr, "/b/inner"), (2, 2));

    // Unlinked files leave the quota (the trash is not counted); a
    // restored one comes back into it.
    let f1 = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(m.path("b/inner/f1")).unwrap());
    std::fs::remove_file(m.path("b/inner/f1")).unwrap();
    assert_eq!(usage(&addr, "/b/inner"), (1, 1));
    run_ok(&["trash", "restore", "--meta", &addr, "data", &f1.to_string()]);
    assert_eq!(usage(&addr, "/b/inner"), (2, 2));
    assert_eq!(std::fs::read(m.path("b/inner/f1")).unwrap(), b"x");
    assert!(quota(&addr, &["check"]).contains("quotas match what they cover"));
    // The root's quota counts everything, and is changed like any other.
    assert_eq!(usage(&addr, "/").1, 10);
    quota(&addr, &["set", "/", "--inodes", "10"]);
    let e = std::fs::create_dir(m.path("one-more")).unwrap_err();
    assert!(is_edquot(&e), "{e}");
    m.unmount();
}

#[test]
fn quota_check_finds_drift_and_repairs_it() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let (s3, _server, addr) = one_node(tmp.path(), &[]);
    let m = mount(tmp.path(), "m", &addr, &s3);
    std::fs::create_dir(m.path("q")).unwrap();
    // A file is counted where it was made, once: a hard link into /q of
    // a file made outside adds nothing below /q, for the count at `set`
    // and for `check` alike.
    write_synced(&m.path("made-outside"), "x");
    std::fs::hard_link(m.path("made-outside"), m.path("q/link")).unwrap();
    std::fs::write(m.path("q/mine"), b"12345").unwrap();
    quota(&addr, &["set", "/q", "--inodes", "100"]);
    assert_eq!(usage(&addr, "/q"), (5, 1));
    assert!(quota(&addr, &["check", "/q"]).contains("quotas match what they cover"));

    // Drift, as a lost update would leave it: the recorded usage is wrong.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let meta = strata_meta::MetaClient::connect(std::slice::from_ref(&addr))
            .await
            .unwrap();
        let fs = meta.open_fs("data").await.unwrap();
        let q = fs.resolve_path("/q").await.unwrap();
        let req = strata_meta::WriteRequest::SetQuotaUsage {
            fs: fs.info.id,
            dir: q,
            used: strata_meta::Usage {
                inodes: 7,
                bytes: 1,
            },
        };
        meta.call(fs.group_of(q).await.unwrap(), req).await.unwrap();
    });
    let out = strata()
        .args(["quota", "check", "--meta", &addr, "data"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "drift is an error: {shown}");
    assert!(
        shown.contains("/q: recorded 7 inodes, 1 bytes; counted 1 inodes, 5 bytes"),
        "{shown}"
    );
    let repaired = quota(&addr, &["check", "--repair"]);
    assert!(repaired.contains("(repaired)"), "{repaired}");
    assert_eq!(usage(&addr, "/q"), (5, 1));
    assert!(quota(&addr, &["check"]).contains("quotas match what they cover"));
    m.unmount();
}

#[test]
fn quota_usage_survives_failover_and_a_restart_of_every_node() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(&tmp.path().join("s3"));
    let (mut nodes, addrs) = start_cluster(tmp.path());
    let all = addrs.join(",");
    format_data(&all, &s3, &[]);
    let m = mount(tmp.path(), "m", &all, &s3);
    std::fs::create_dir(m.path("q")).unwrap();
    quota(&all, &["set", "/q", "--bytes", "2M", "--inodes", "100"]);
    let data = vec![3u8; BLOCK];
    for i in 0..4 {
        try_write(&m.path(&format!("q/a{i}")), &data).unwrap();
    }
    assert_eq!(usage(&all, "/q"), (4 * BLOCK as u64, 4));

    // Node 1 formed the cluster and leads every group: its loss moves
    // every leadership, and the new leaders hold the same usage.
    nodes[0].kill9();
    assert_eq!(usage(&all, "/q"), (4 * BLOCK as u64, 4));
    assert_eq!(
        fill(&m.path("q"), "b"),
        4,
        "the rest of the 2M fits, no more"
    );
    assert_eq!(usage(&all, "/q"), (2 << 20, 9));
    nodes[0] = MetaServer::start_node(1, &tmp.path().join("n1"), &addrs[0]);

    // Every node stops and starts again from its data dir.
    for n in &mut nodes {
        n.kill9();
    }
    for (i, n) in nodes.iter_mut().enumerate() {
        *n = MetaServer::start_node(
            i as u64 + 1,
            &tmp.path().join(format!("n{}", i + 1)),
            &addrs[i],
        );
    }
    assert_eq!(usage(&all, "/q"), (2 << 20, 9));
    assert!(is_edquot(
        &try_write(&m.path("q/after-restart"), &data).unwrap_err()
    ));
    assert!(quota(&all, &["check"]).contains("quotas match what they cover"));
    m.unmount();
}

/// The metadata group of each of `paths` in filesystem `data`.
fn groups_of(meta: &str, paths: &[&str]) -> Vec<u32> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let addrs: Vec<String> = meta.split(',').map(String::from).collect();
        let client = strata_meta::MetaClient::connect(&addrs).await.unwrap();
        let fs = client.open_fs("data").await.unwrap();
        let mut out = Vec::new();
        for p in paths {
            let ino = fs.resolve_path(p).await.unwrap();
            out.push(fs.group_of(ino).await.unwrap());
        }
        out
    })
}

/// The used bytes and inodes `strata quota get ARGS` shows in its row
/// starting with `row`.
fn usage_of(addr: &str, args: &[&str], row: &str) -> (u64, u64) {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    let out = quota(addr, &all);
    let line = out
        .lines()
        .find(|l| l.starts_with(row))
        .unwrap_or_else(|| panic!("no row for {row}: {out}"));
    let cols: Vec<&str> = line[row.len()..].split_whitespace().collect();
    (cols[0].parse().unwrap(), cols[2].parse().unwrap())
}

#[test]
fn filesystem_user_and_group_quotas_hold_across_metadata_groups() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(&tmp.path().join("s3"));
    let (mut nodes, addrs) = start_cluster(tmp.path());
    let all = addrs.join(",");
    format_data(&all, &s3, &["--capacity", "4M"]);
    // Every new directory goes to the least-loaded group.
    let m = Mount::new(
        &tmp.path().join("m"),
        &["--meta", &all, "--dir-spread-slack", "0", "data"],
        &s3.env(),
    );
    let dirs = ["d0", "d1", "d2", "d3"];
    for d in dirs {
        std::fs::create_dir(m.path(d)).unwrap();
    }
    let groups = groups_of(&all, &["/", "/d0", "/d1", "/d2", "/d3"]);
    let home = groups[0];
    let away = 1 + groups[1..]
        .iter()
        .position(|g| *g != home)
        .unwrap_or_else(|| panic!("directories were spread over groups: {groups:?}"));
    let away = dirs[away - 1];

    // The filesystem's limit holds exactly with files in every group:
    // each group borrows budget from the root's group as it needs it.
    let data = vec![1u8; BLOCK];
    let mut written = 0;
    'fill: for n in 0.. {
        for d in dirs {
            match try_write(&m.path(&format!("{d}/f{n}")), &data) {
                Ok(()) => written += 1,
                Err(e) if is_edquot(&e) => break 'fill,
                Err(e) => panic!("{d}/f{n}: {e}"),
            }
        }
    }
    assert_eq!(written, 16, "4M of one-block files, no more");
    let (bytes, _) = usage(&all, "/");
    assert_eq!(bytes, 4 << 20);
    for d in dirs {
        let e = try_write(&m.path(&format!("{d}/over")), &data).unwrap_err();
        assert!(is_edquot(&e), "{d}: {e}");
    }
    assert_eq!(usage(&all, "/").0, 4 << 20);
    // Node 1 formed the cluster and leads every group: after its loss the
    // new leaders hold the same shares and budgets.
    nodes[0].kill9();
    assert_eq!(usage(&all, "/").0, 4 << 20);
    for d in dirs {
        let e = try_write(&m.path(&format!("{d}/after-failover")), &data).unwrap_err();
        assert!(is_edquot(&e), "{d}: {e}");
    }
    nodes[0] = MetaServer::start_node(1, &tmp.path().join("n1"), &addrs[0]);

    // What files in the root's group free can be written in another
    // group: that group's share is refused until the root's group gives
    // back budget, which it asks for.
    let home_dir = dirs[groups[1..].iter().position(|g| *g == home).unwrap_or(0)];
    let mut freed = 0;
    for e in std::fs::read_dir(m.path(home_dir)).unwrap() {
        let e = e.unwrap();
        freed += e.metadata().unwrap().len();
        std::fs::remove_file(e.path()).unwrap();
    }
    assert!(freed > 0);
    assert_eq!(fill(&m.path(away), "again") as u64, freed / BLOCK as u64);
    assert_eq!(usage(&all, "/").0, 4 << 20);
    assert!(quota(&all, &["check"]).contains("quotas match what they cover"));
    quota(&all, &["set", "/", "--bytes", "0"]);

    // A user's quota counts their inodes in every group; chown moves them.
    quota(&all, &["set", "--uid", "4242", "--inodes", "3"]);
    assert_eq!(usage_of(&all, &["--uid", "4242"], "uid 4242"), (0, 0));
    let owned: Vec<_> = dirs.iter().map(|d| m.path(&format!("{d}/u"))).collect();
    for f in &owned {
        try_write(f, &data).unwrap();
    }
    for f in &owned[..3] {
        std::os::unix::fs::chown(f, Some(4242), None).unwrap();
    }
    let e = std::os::unix::fs::chown(&owned[3], Some(4242), None).unwrap_err();
    assert!(is_edquot(&e), "{e}");
    assert_eq!(
        usage_of(&all, &["--uid", "4242"], "uid 4242"),
        (3 * BLOCK as u64, 3)
    );
    std::os::unix::fs::chown(&owned[0], Some(0), None).unwrap();
    std::os::unix::fs::chown(&owned[3], Some(4242), None).unwrap();

    // A group's byte quota stops a file growing, whichever group holds it.
    quota(&all, &["set", "--gid", "777", "--bytes", "512K"]);
    let grown: Vec<_> = dirs.iter().map(|d| m.path(&format!("{d}/g"))).collect();
    for f in &grown {
        std::fs::write(f, b"").unwrap();
        std::os::unix::fs::chown(f, None, Some(777)).unwrap();
    }
    try_write(&grown[0], &data).unwrap();
    try_write(&grown[1], &data).unwrap();
    let e = try_write(&grown[2], b"x").unwrap_err();
    assert!(is_edquot(&e), "{e}");
    assert_eq!(
        usage_of(&all, &["--gid", "777"], "gid 777"),
        (2 * BLOCK as u64, 4)
    );
    // A snapshot copies the filesystem's rows, quotas' too, and changes
    // no usage of the filesystem it was taken of.
    run_ok(&["snapshot", "create", "--meta", &all, "data", "s1"]);
    assert_eq!(
        usage_of(&all, &["--gid", "777"], "gid 777"),
        (2 * BLOCK as u64, 4)
    );
    let listed = quota(&all, &["list"]);
    assert!(
        listed.contains("uid 4242") && listed.contains("gid 777"),
        "{listed}"
    );
    assert!(quota(&all, &["check"]).contains("quotas match what they cover"));
    quota(&all, &["delete", "--gid", "777"]);
    try_write(&grown[2], b"x").unwrap();

    // A directory quota's tree stays in one group: new directories below
    // it stay there, a tree spanning groups cannot take one, and a rename
    // into it from another group is EXDEV (mv copies, and is charged).
    std::fs::create_dir(m.path("q")).unwrap();
    quota(&all, &["set", "/q", "--inodes", "100"]);
    for d in ["q/a", "q/b", "q/a/c"] {
        std::fs::create_dir(m.path(d)).unwrap();
    }
    let qg = groups_of(&all, &["/q", "/q/a", "/q/b", "/q/a/c"]);
    assert!(qg.iter().all(|g| *g == qg[0]), "{qg:?}");
    let other = dirs[groups[1..].iter().position(|g| *g != qg[0]).unwrap()];
    let e = std::fs::rename(m.path(&format!("{other}/u")), m.path("q/moved")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EXDEV), "{e}");
    let mv = std::process::Command::new("mv")
        .arg(m.path(&format!("{other}/u")))
        .arg(m.path("q/moved"))
        .status()
        .unwrap();
    assert!(mv.success());
    assert_eq!(usage(&all, "/q"), (BLOCK as u64, 4));
    std::fs::create_dir(m.path("span")).unwrap();
    let sg = groups_of(&all, &["/span"])[0];
    let elsewhere = dirs[groups[1..].iter().position(|g| *g != sg).unwrap()];
    std::fs::rename(m.path(elsewhere), m.path("span/moved")).unwrap();
    let out = strata()
        .args([
            "quota", "set", "--meta", &all, "data", "/span", "--inodes", "99",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a tree spanning groups takes no quota"
    );
    assert!(said.contains("needs its tree in one group"), "{said}");
    assert!(!quota(&all, &["list"]).contains("/span"));
    assert!(quota(&all, &["check"]).contains("quotas match what they cover"));
    m.unmount();
}
