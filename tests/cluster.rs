//! Three metaserver processes form a cluster; a mount keeps working while
//! nodes are SIGKILLed and restarted, and nothing acknowledged is lost.

mod common;

use common::*;
use strata_meta::NewInode;

/// Formats filesystem `c` with its blocks under `dir/blocks`.
fn format_c(dir: &std::path::Path, all: &str) {
    let blocks = dir.join("blocks");
    run_ok(&[
        "format",
        "--meta",
        all,
        "c",
        "--storage",
        &format!("file://{}", blocks.display()),
    ]);
}

#[test]
fn three_node_cluster_survives_losing_any_one_node() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let (mut nodes, addrs) = start_cluster(tmp.path());
    let all = addrs.join(",");
    format_c(tmp.path(), &all);
    let status = run_ok(&["meta", "status", "--meta", &all]);
    assert_eq!(status.matches(" up").count(), 3, "{status}");
    assert!(
        status.contains("group 3"),
        "three partition groups: {status}"
    );

    let m = Mount::new(&tmp.path().join("mnt"), &["--meta", &all, "c"], &[]);
    for i in 0..30 {
        write_synced(&m.path(&format!("a{i}")), format!("first {i}"));
    }

    // Node 1 formed the cluster and leads every group: losing it forces elections.
    nodes[0].kill9();
    for i in 0..30 {
        write_synced(&m.path(&format!("b{i}")), format!("second {i}"));
    }
    std::fs::rename(m.path("a0"), m.path("renamed")).unwrap();
    let status = run_ok(&["meta", "status", "--meta", &all]);
    assert!(status.contains("DOWN"), "{status}");

    // Node 1 comes back and catches up; then node 2 goes. Writes can only
    // succeed now if node 1 rejoined the quorum.
    nodes[0] = MetaServer::start_node(1, &tmp.path().join("n1"), &addrs[0]);
    nodes[1].kill9();
    for i in 0..10 {
        write_synced(&m.path(&format!("c{i}")), format!("third {i}"));
    }
    nodes[1] = MetaServer::start_node(2, &tmp.path().join("n2"), &addrs[1]);

    for i in 1..30 {
        assert_eq!(
            std::fs::read_to_string(m.path(&format!("a{i}"))).unwrap(),
            format!("first {i}")
        );
        assert_eq!(
            std::fs::read_to_string(m.path(&format!("b{i}"))).unwrap(),
            format!("second {i}")
        );
    }
    assert_eq!(
        std::fs::read_to_string(m.path("renamed")).unwrap(),
        "first 0"
    );
    for i in 0..10 {
        assert_eq!(
            std::fs::read_to_string(m.path(&format!("c{i}"))).unwrap(),
            format!("third {i}")
        );
    }
    assert_eq!(std::fs::read_dir(&m.dir).unwrap().count(), 70);
    m.unmount();
}

#[test]
fn nodes_are_added_and_removed_while_the_cluster_serves() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let (mut nodes, addrs) = start_cluster(tmp.path());
    let all = addrs.join(",");
    format_c(tmp.path(), &all);
    let m = Mount::new(&tmp.path().join("mnt"), &["--meta", &all, "c"], &[]);
    for i in 0..20 {
        write_synced(&m.path(&format!("a{i}")), format!("before {i}"));
    }

    let n4 = MetaServer::start_node(4, &tmp.path().join("n4"), "127.0.0.1:0");
    let out = run_ok(&[
        "meta", "add-node", "--meta", &all, "--id", "4", "--addr", &n4.addr,
    ]);
    assert!(out.contains("added"), "{out}");
    let out = run_ok(&["meta", "remove-node", "--meta", &all, "--id", "1"]);
    assert!(out.contains("removed"), "{out}");
    nodes[0].kill9();
    // With node 1 gone, a quorum of {2, 3, 4} needs node 4: writes prove it joined.
    nodes[1].kill9();
    for i in 0..20 {
        write_synced(&m.path(&format!("b{i}")), format!("after {i}"));
    }
    nodes[1] = MetaServer::start_node(2, &tmp.path().join("n2"), &addrs[1]);
    let status = run_ok(&[
        "meta",
        "status",
        "--meta",
        &format!("{},{}", addrs[1], n4.addr),
    ]);
    assert!(!status.contains("node 1 "), "node 1 left the map: {status}");
    assert!(status.contains("members [2, 3, 4]"), "{status}");
    for i in 0..20 {
        assert_eq!(
            std::fs::read_to_string(m.path(&format!("a{i}"))).unwrap(),
            format!("before {i}")
        );
        assert_eq!(
            std::fs::read_to_string(m.path(&format!("b{i}"))).unwrap(),
            format!("after {i}")
        );
    }
    m.unmount();
}

#[test]
fn a_follower_down_for_10000_operations_catches_up_from_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut nodes, addrs) = start_cluster_with(tmp.path(), &["--snapshot-logs", "2000"]);
    let all = addrs.join(",");
    run_ok(&["format", "--meta", &all, "s", "--storage", "file:///unused"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(strata_meta::MetaClient::connect(&addrs))
        .unwrap();
    let fs = rt.block_on(client.open_fs("s")).unwrap();
    let create = |name: String| {
        rt.block_on(fs.create(
            1,
            name.as_bytes(),
            NewInode::plain(strata_meta::FileType::File, 0o644, 0, 0),
        ))
        .unwrap()
    };

    nodes[2].kill9();
    for i in 0..10_000 {
        create(format!("f{i}"));
    }
    // Node 3 returns and node 2 goes: the next write needs node 3 in the
    // quorum, and the log it missed was purged after snapshots.
    let n3 = tmp.path().join("n3");
    nodes[2] = MetaServer::start_node_with(3, &n3, &addrs[2], &["--snapshot-logs", "2000"]);
    nodes[1].kill9();
    create("after".into());
    let snapshots: Vec<String> = std::fs::read_dir(n3.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        snapshots.iter().any(|n| n.starts_with("group-1-")),
        "node 3 installed a snapshot of the partition group: {snapshots:?}"
    );
    let mut names = 0;
    let mut after = None;
    loop {
        let page = rt.block_on(fs.readdir(1, after.clone(), 4096)).unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.name.clone());
        names += page.len();
    }
    assert_eq!(names, 10_001);
}
