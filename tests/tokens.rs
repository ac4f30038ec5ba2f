//! Access tokens on a TLS metaserver, for clients without a certificate:
//! an administrator makes them with `strata token create`; a read-write
//! token mounts and writes, a read-only one gets EROFS on every change, a
//! token for another filesystem is refused, a made-up one too, a client
//! with neither certificate nor token can do nothing, and a revoked token
//! stops working on a live mount.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use strata_meta::rpc::{Connection, Credentials, RpcError};
use strata_meta::tls::Tls;

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The environment of a client with the cluster's CA and token `token`.
fn token_env(ca: &str, token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("STRATA_TLS_CA", ca.to_string()),
        ("STRATA_TOKEN", token.to_string()),
    ]
}

fn refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, val)| (*k, val.as_str())).collect()
}

/// `strata ARGS` that must fail; returns its stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = strata_with(args, env).output().expect("strata runs");
    assert!(!out.status.success(), "strata {args:?} was let in");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn tokens_grant_one_filesystem_until_revoked() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let d = path(&pki);
    run_ok(&["cert", "init", "--dir", &d]);
    run_ok(&["cert", "issue", "--dir", &d, "--node", "1"]);
    run_ok(&["cert", "issue", "--dir", &d, "--client", "root", "--admin"]);
    let ca = path(&pki.join("ca.pem"));
    let node_flags = [
        "--tls-ca".to_string(),
        ca.clone(),
        "--tls-cert".into(),
        path(&pki.join("node-1.pem")),
        "--tls-key".into(),
        path(&pki.join("node-1.key")),
    ];
    let node_flags: Vec<&str> = node_flags.iter().map(String::as_str).collect();
    let node = MetaServer::start_node_with(1, &tmp.path().join("n1"), "127.0.0.1:0", &node_flags);
    let addr = node.addr.clone();
    let (cert, key) = (
        path(&pki.join("client-root.pem")),
        path(&pki.join("client-root.key")),
    );
    let admin = [
        ("STRATA_TLS_CA", ca.as_str()),
        ("STRATA_TLS_CERT", cert.as_str()),
        ("STRATA_TLS_KEY", key.as_str()),
    ];
    for fs in ["c", "d"] {
        let blocks = format!(
            "file://{}",
            tmp.path().join(format!("blocks-{fs}")).display()
        );
        run_env_ok(
            &["format", "--meta", &addr, fs, "--storage", &blocks],
            &admin,
        );
    }
    let create = |args: &[&str]| {
        let mut all = vec!["token", "create", "--meta", &addr];
        all.extend_from_slice(args);
        run_env_ok(&all, &admin).trim().to_string()
    };
    let rw = create(&["c"]);
    let ro = create(&["c", "--read-only"]);
    let other = create(&["d"]);
    assert!(rw.starts_with("strata_"), "{rw}");
    let missing = refused(&["token", "create", "--meta", &addr, "nope"], &admin);
    assert!(missing.contains("not found"), "{missing}");
    let listed = run_env_ok(&["token", "list", "--meta", &addr], &admin);
    assert!(
        listed.contains("strata:fs=c:ro") && listed.contains("3 tokens"),
        "{listed}"
    );
    assert!(
        !listed.contains(&rw),
        "a token's secret is never shown again"
    );

    let rw_env = token_env(&ca, &rw);
    let rw_ref = refs(&rw_env);

    // A read-write token: mount, write, read back.
    let m = Mount::new(&tmp.path().join("mnt"), &["--meta", &addr, "c"], &rw_ref);
    write_synced(&m.path("f"), "by token");
    assert_eq!(std::fs::read_to_string(m.path("f")).unwrap(), "by token");

    // A read-only token reads and cannot change anything.
    let ro_env = token_env(&ca, &ro);
    let ro_ref = refs(&ro_env);
    let r = Mount::new(&tmp.path().join("mnt-r"), &["--meta", &addr, "c"], &ro_ref);
    assert_eq!(std::fs::read_to_string(r.path("f")).unwrap(), "by token");
    let write = std::fs::write(r.path("g"), b"x").unwrap_err();
    assert_eq!(write.raw_os_error(), Some(libc::EROFS), "{write}");
    let remove = std::fs::remove_file(r.path("f")).unwrap_err();
    assert_eq!(remove.raw_os_error(), Some(libc::EROFS), "{remove}");
    r.unmount();

    // A token of another filesystem, or the administration.
    let other_env = token_env(&ca, &other);
    let other_ref = refs(&other_env);
    let mnt_o = tmp.path().join("mnt-o");
    std::fs::create_dir_all(&mnt_o).unwrap();
    let wrong = refused(
        &["mount", "-d", "--meta", &addr, "c", &path(&mnt_o)],
        &other_ref,
    );
    assert!(wrong.contains("filesystem \"d\" only"), "{wrong}");
    let status = refused(&["status", "--meta", &addr], &rw_ref);
    assert!(status.contains("administration"), "{status}");

    // Made up, or none at all.
    let (id, _) = strata_meta::Token::split(&rw).unwrap();
    let forged = format!("strata_{id}_{}", "0".repeat(64));
    let forged_env = token_env(&ca, &forged);
    let forged_ref = refs(&forged_env);
    let bad = refused(&["status", "--meta", &addr], &forged_ref);
    assert!(bad.contains("unknown or revoked token"), "{bad}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bare = Credentials {
        tls: Some(Tls::load_ca_only(&pki.join("ca.pem")).unwrap()),
        token: None,
    };
    let conn = rt.block_on(Connection::connect_as(&addr, &bare)).unwrap();
    let status =
        rt.block_on(conn.call(strata_meta::wire::Request::Status, Duration::from_secs(10)));
    match status {
        Err(RpcError::Denied { reason, .. }) => {
            assert!(
                reason.contains("no client certificate and no token"),
                "{reason}"
            )
        }
        other => panic!("a client without credentials got in: {other:?}"),
    }

    // Revoked: the live mount loses its rights within seconds.
    let (rw_id, _) = strata_meta::Token::split(&rw).unwrap();
    run_env_ok(&["token", "revoke", "--meta", &addr, rw_id], &admin);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    loop {
        i += 1;
        match std::fs::write(m.path(&format!("after-{i}")), b"x") {
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => break,
            Err(e) => panic!("a write failed otherwise than refused: {e}"),
            Ok(()) => {
                assert!(Instant::now() < deadline, "a revoked token still works");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let gone = refused(&["status", "--meta", &addr], &rw_ref);
    assert!(gone.contains("unknown or revoked token"), "{gone}");
    drop(m);
    let listed = run_env_ok(&["token", "list", "--meta", &addr], &admin);
    assert!(
        listed.contains("2 tokens") && !listed.contains(rw_id),
        "{listed}"
    );
}
