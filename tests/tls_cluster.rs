//! A three-node cluster whose every connection is TLS with mutual
//! authentication, set up with `strata cert` alone: clients without a
//! certificate, with one of another CA, or with an expired one are refused
//! and told why; a client certificate cannot take part in Raft; a good
//! client formats, mounts and writes; and Raft fails over with TLS.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use strata_meta::tls::{Tls, TlsFiles};

/// The files of certificate `name` (`node-1`, `client-ok`) in `pki`.
fn files(pki: &Path, name: &str) -> TlsFiles {
    TlsFiles {
        cert: pki.join(format!("{name}.pem")),
        key: pki.join(format!("{name}.key")),
        ca: pki.join("ca.pem"),
    }
}

fn flags(f: &TlsFiles) -> Vec<String> {
    vec![
        "--tls-ca".into(),
        f.ca.display().to_string(),
        "--tls-cert".into(),
        f.cert.display().to_string(),
        "--tls-key".into(),
        f.key.display().to_string(),
    ]
}

/// The environment that gives a `strata` command this client identity.
fn env_of(f: &TlsFiles) -> Vec<(&'static str, String)> {
    vec![
        ("STRATA_TLS_CA", f.ca.display().to_string()),
        ("STRATA_TLS_CERT", f.cert.display().to_string()),
        ("STRATA_TLS_KEY", f.key.display().to_string()),
    ]
}

fn as_env<'a>(e: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    e.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn start_node(tmp: &Path, pki: &Path, id: u64, listen: &str) -> MetaServer {
    let f = flags(&files(pki, &format!("node-{id}")));
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    MetaServer::start_node_with(id, &tmp.join(format!("n{id}")), listen, &f)
}

/// `strata ARGS` that must fail; returns what it printed on stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = strata_with(args, env).output().expect("strata runs");
    assert!(!out.status.success(), "strata {args:?} was let in");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The node leading `group`, by `meta status`.
fn leader_of(all: &str, group: u32, env: &[(&str, &str)]) -> usize {
    let status = run_env_ok(&["meta", "status", "--meta", all], env);
    let line = status
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("group {group} ")))
        .unwrap_or_else(|| panic!("no group {group} in {status}"));
    line.split("leader ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no leader in {line:?}"))
}

#[test]
fn a_tls_cluster_admits_only_certified_clients_and_fails_over() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let pki: PathBuf = tmp.path().join("pki");
    let other: PathBuf = tmp.path().join("other-pki");
    let dir = |p: &Path| p.display().to_string();
    run_ok(&["cert", "init", "--dir", &dir(&pki)]);
    for id in ["1", "2", "3"] {
        run_ok(&["cert", "issue", "--dir", &dir(&pki), "--node", id]);
    }
    let issue = |d: &Path, extra: &[&str]| {
        let d = dir(d);
        let mut args = vec!["cert", "issue", "--dir", &d];
        args.extend_from_slice(extra);
        run_ok(&args);
    };
    issue(&pki, &["--client", "ok", "--admin"]);
    issue(&pki, &["--client", "old", "--admin", "--valid-days", "0"]);
    issue(&pki, &["--client", "reader", "--fs", "c", "--read-only"]);
    issue(&pki, &["--client", "writer", "--fs", "c"]);
    issue(&pki, &["--client", "elsewhere", "--fs", "d"]);
    run_ok(&["cert", "init", "--dir", &dir(&other)]);
    issue(&other, &["--client", "stranger", "--admin"]);

    let mut nodes: Vec<MetaServer> = (1..=3)
        .map(|id| start_node(tmp.path(), &pki, id, "127.0.0.1:0"))
        .collect();
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let all = addrs.join(",");
    let ok_env = env_of(&files(&pki, "client-ok"));
    let ok = as_env(&ok_env);
    let peers: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect();
    let out = run_env_ok(
        &[
            "meta",
            "init",
            "--meta",
            &addrs[0],
            "--peers",
            &peers.join(","),
        ],
        &ok,
    );
    assert!(out.contains("cluster formed"), "{out}");
    let blocks = format!("file://{}", tmp.path().join("blocks").display());
    run_env_ok(&["format", "--meta", &all, "c", "--storage", &blocks], &ok);

    // Refused, each with the check that failed.
    let plain = refused(&["status", "--meta", &all], &[]);
    assert!(plain.contains("takes only TLS"), "{plain}");
    let mut stranger_env = env_of(&files(&other, "client-stranger"));
    stranger_env[0].1 = pki.join("ca.pem").display().to_string();
    let stranger = refused(&["status", "--meta", &all], &as_env(&stranger_env));
    assert!(stranger.contains("UnknownCA"), "{stranger}");
    let old = refused(
        &["status", "--meta", &all],
        &as_env(&env_of(&files(&pki, "client-old"))),
    );
    assert!(old.contains("CertificateExpired"), "{old}");
    // A client that does not trust the cluster's CA refuses the nodes.
    let distrust = refused(
        &["status", "--meta", &all],
        &as_env(&env_of(&files(&other, "client-stranger"))),
    );
    assert!(distrust.contains("UnknownIssuer"), "{distrust}");

    // A valid client certificate cannot speak for a node.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tls = Tls::load(&files(&pki, "client-ok")).unwrap();
    let conn = rt
        .block_on(strata_meta::rpc::Connection::connect_with(
            &addrs[0],
            Some(&tls),
        ))
        .unwrap();
    let join = rt.block_on(conn.call(
        strata_meta::wire::Request::Join { groups: vec![77] },
        std::time::Duration::from_secs(10),
    ));
    match join {
        Err(strata_meta::rpc::RpcError::Denied { reason, .. }) => {
            assert!(reason.contains("only node certificates"), "{reason}")
        }
        other => panic!("a client joined groups as a node: {other:?}"),
    }

    // The good client mounts and writes.
    let m = Mount::new(&tmp.path().join("mnt"), &["--meta", &all, "c"], &ok);
    for i in 0..20 {
        write_synced(&m.path(&format!("a{i}")), format!("first {i}"));
    }

    // Clients of one filesystem: the grant in their certificate is all
    // they get, whatever they ask.
    let writer_env = env_of(&files(&pki, "client-writer"));
    let writer = as_env(&writer_env);
    let admin_only = refused(&["status", "--meta", &all], &writer);
    assert!(
        admin_only.contains("not the cluster's administration"),
        "{admin_only}"
    );
    let elsewhere_env = env_of(&files(&pki, "client-elsewhere"));
    let mnt_e = dir(&tmp.path().join("mnt-e"));
    std::fs::create_dir_all(&mnt_e).unwrap();
    let wrong_fs = refused(
        &["mount", "-d", "--meta", &all, "c", &mnt_e],
        &as_env(&elsewhere_env),
    );
    assert!(wrong_fs.contains("filesystem \"d\" only"), "{wrong_fs}");
    let w = Mount::new(&tmp.path().join("mnt-w"), &["--meta", &all, "c"], &writer);
    write_synced(&w.path("by-writer"), "w");
    w.unmount();
    let reader_env = env_of(&files(&pki, "client-reader"));
    let r = Mount::new(
        &tmp.path().join("mnt-r"),
        &["--meta", &all, "c"],
        &as_env(&reader_env),
    );
    assert_eq!(std::fs::read_to_string(r.path("a1")).unwrap(), "first 1");
    assert_eq!(std::fs::read_to_string(r.path("by-writer")).unwrap(), "w");
    let write = std::fs::write(r.path("new"), b"x").unwrap_err();
    assert_eq!(write.raw_os_error(), Some(libc::EROFS), "{write}");
    let remove = std::fs::remove_file(r.path("a1")).unwrap_err();
    assert_eq!(remove.raw_os_error(), Some(libc::EROFS), "{remove}");
    r.unmount();
    // The metaserver refuses the reader's changes itself: its client
    // library sends them, and they fail.
    let reader_tls = Tls::load(&files(&pki, "client-reader")).unwrap();
    let reader_client = rt
        .block_on(strata_meta::MetaClient::connect_with(
            std::slice::from_ref(&addrs[0]),
            strata_meta::rpc::Credentials::tls(Some(reader_tls)),
        ))
        .unwrap();
    let fs = rt.block_on(reader_client.open_fs("c")).unwrap();
    let unlink = rt.block_on(fs.unlink(1, b"a2"));
    assert!(
        matches!(unlink, Err(strata_meta::MetaError::ReadOnly(_))),
        "{unlink:?}"
    );

    // The leader of every group goes (the partition groups' leader too, if
    // another node leads them): writes go on once new leaders are elected
    // over TLS.
    let first = leader_of(&all, 0, &ok);
    nodes[first - 1].kill9();
    for i in 0..20 {
        write_synced(&m.path(&format!("b{i}")), format!("second {i}"));
    }
    nodes[first - 1] = start_node(tmp.path(), &pki, first as u64, &addrs[first - 1]);
    let second = leader_of(&all, 1, &ok);
    nodes[second - 1].kill9();
    for i in 0..20 {
        write_synced(&m.path(&format!("c{i}")), format!("third {i}"));
    }
    nodes[second - 1] = start_node(tmp.path(), &pki, second as u64, &addrs[second - 1]);

    for i in 0..20 {
        for (prefix, word) in [("a", "first"), ("b", "second"), ("c", "third")] {
            assert_eq!(
                std::fs::read_to_string(m.path(&format!("{prefix}{i}"))).unwrap(),
                format!("{word} {i}")
            );
        }
    }
    m.unmount();
    let status = run_env_ok(&["meta", "status", "--meta", &all], &ok);
    assert_eq!(status.matches(" up").count(), 3, "{status}");
}
