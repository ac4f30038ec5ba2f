//! Access tokens on a TLS metaserver, for clients without a certificate:
//! an administrator makes them with `strata token create`; a read-write
//! token mounts and writes, a read-only one gets EROFS on every change, a
//! token for another filesystem is refused, a made-up one too, a client
//! with neither certificate nor token can do nothing, and a revoked token
//! stops working on a live mount. A token (or certificate) for a subtree
//! mounts that directory as its root and reaches nothing outside it.

mod common;

use std::os::unix::fs::MetadataExt;
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

/// A one-node TLS metaserver set up with `strata cert`, with an
/// administrator's client certificate `root`.
struct TlsNode {
    node: MetaServer,
    pki: std::path::PathBuf,
    ca: String,
}

impl TlsNode {
    fn start(tmp: &Path) -> TlsNode {
        let pki = tmp.join("pki");
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
        let node = MetaServer::start_node_with(1, &tmp.join("n1"), "127.0.0.1:0", &node_flags);
        TlsNode { node, pki, ca }
    }

    /// The environment of a client with certificate `client-NAME`.
    fn cert_env(&self, name: &str) -> Vec<(&'static str, String)> {
        vec![
            ("STRATA_TLS_CA", self.ca.clone()),
            (
                "STRATA_TLS_CERT",
                path(&self.pki.join(format!("client-{name}.pem"))),
            ),
            (
                "STRATA_TLS_KEY",
                path(&self.pki.join(format!("client-{name}.key"))),
            ),
        ]
    }
}

#[test]
fn tokens_grant_one_filesystem_until_revoked() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let tls = TlsNode::start(tmp.path());
    let (pki, ca) = (&tls.pki, &tls.ca);
    let addr = tls.node.addr.clone();
    let admin_env = tls.cert_env("root");
    let admin = refs(&admin_env);
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

    let rw_env = token_env(ca, &rw);
    let rw_ref = refs(&rw_env);

    // A read-write token: mount, write, read back.
    let m = Mount::new(&tmp.path().join("mnt"), &["--meta", &addr, "c"], &rw_ref);
    write_synced(&m.path("f"), "by token");
    assert_eq!(std::fs::read_to_string(m.path("f")).unwrap(), "by token");

    // A read-only token reads and cannot change anything.
    let ro_env = token_env(ca, &ro);
    let ro_ref = refs(&ro_env);
    let r = Mount::new(&tmp.path().join("mnt-r"), &["--meta", &addr, "c"], &ro_ref);
    assert_eq!(std::fs::read_to_string(r.path("f")).unwrap(), "by token");
    let write = std::fs::write(r.path("g"), b"x").unwrap_err();
    assert_eq!(write.raw_os_error(), Some(libc::EROFS), "{write}");
    let remove = std::fs::remove_file(r.path("f")).unwrap_err();
    assert_eq!(remove.raw_os_error(), Some(libc::EROFS), "{remove}");
    r.unmount();

    // A token of another filesystem, or the administration.
    let other_env = token_env(ca, &other);
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
    let forged_env = token_env(ca, &forged);
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

/// The metadata client of filesystem `fs` with `creds`, and a runtime to
/// drive it.
fn fs_client(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    fs: &str,
    creds: Credentials,
) -> strata_meta::FsClient {
    rt.block_on(async {
        let meta = strata_meta::MetaClient::connect_with(&[addr.to_string()], creds)
            .await
            .unwrap();
        meta.open_fs(fs).await.unwrap()
    })
}

/// A refusal for being out of the grant's reach (EACCES), else panics.
fn out_of_reach<T: std::fmt::Debug>(what: &str, r: Result<T, strata_meta::MetaError>) {
    match r {
        Err(strata_meta::MetaError::Denied(why)) => {
            assert!(why.contains("/team/a only"), "{what}: {why}")
        }
        other => panic!("{what} was let through: {other:?}"),
    }
}

#[test]
fn subtree_grants_see_one_directory_as_their_root() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let tls = TlsNode::start(tmp.path());
    let (pki, ca) = (&tls.pki, &tls.ca);
    let d = path(pki);
    #[rustfmt::skip]
    run_ok(&["cert", "issue", "--dir", &d, "--client", "b", "--fs", "c", "--subdir", "/team/b/"]);
    let addr = tls.node.addr.clone();
    let admin_env = tls.cert_env("root");
    let admin = refs(&admin_env);
    let blocks = format!("file://{}", tmp.path().join("blocks").display());
    run_env_ok(
        &["format", "--meta", &addr, "c", "--storage", &blocks],
        &admin,
    );

    // The administrator's tree: the granted directory and things beside it.
    let full = Mount::new(&tmp.path().join("mnt"), &["--meta", &addr, "c"], &admin);
    for dir in ["team/a/sub", "team/b", "secret"] {
        std::fs::create_dir_all(full.path(dir)).unwrap();
    }
    write_synced(&full.path("team/a/inside"), "in");
    write_synced(&full.path("team/a/leaves"), "moved out later");
    write_synced(&full.path("team/b/other"), "b's");
    write_synced(&full.path("secret/s"), "secret");
    let ino = |p: &str| std::fs::metadata(full.path(p)).unwrap().ino();
    let (team, granted, sub, leaves) = (
        ino("team"),
        ino("team/a"),
        ino("team/a/sub"),
        ino("team/a/leaves"),
    );
    let (secret_dir, secret) = (ino("secret"), ino("secret/s"));

    let create = |args: &[&str]| {
        let mut all = vec!["token", "create", "--meta", &addr];
        all.extend_from_slice(args);
        strata_with(&all, &admin).output().expect("strata runs")
    };
    let made = create(&["c", "--subdir", "/team/a"]);
    assert!(made.status.success(), "{made:?}");
    let tok = String::from_utf8(made.stdout).unwrap().trim().to_string();
    for (bad, why) in [
        ("/team/nope", "no such file"),
        ("/team/a/inside", "not a directory"),
        ("team/a", "absolute"),
        ("/team/../secret", ". or .."),
    ] {
        let out = create(&["c", "--subdir", bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(why),
            "--subdir {bad}: {err}"
        );
    }
    let listed = run_env_ok(&["token", "list", "--meta", &addr], &admin);
    assert!(listed.contains("strata:fs=c:dir=/team/a"), "{listed}");

    // A quota on the granted directory is what `df` shows in its mount.
    let set = ["quota", "set", "--meta", &addr, "c", "/team/a"];
    run_env_ok(
        &[&set[..], &["--bytes", "10M", "--inodes", "100"]].concat(),
        &admin,
    );

    // Mounted, the directory is the root: its files, nothing else, and
    // changes within it land where the administrator sees them.
    let env = token_env(ca, &tok);
    let env = refs(&env);
    let m = Mount::new(&tmp.path().join("mnt-a"), &["--meta", &addr, "c"], &env);
    assert_eq!(std::fs::metadata(m.path("")).unwrap().ino(), 1);
    let df = statvfs(&m.path(""));
    assert_eq!(
        df.f_blocks * df.f_frsize,
        10 << 20,
        "df shows the quota's size"
    );
    assert_eq!(
        (df.f_files, df.f_files - df.f_ffree),
        (100, 3),
        "its inodes too: sub, inside, leaves"
    );
    // A subtree client may not change its own quota.
    let raise = strata_with(&[&set[..], &["--bytes", "1G"]].concat(), &env)
        .output()
        .unwrap();
    assert!(!raise.status.success(), "{raise:?}");
    // Gone again: the administrator moves things out of the tree below,
    // which a quota on it would refuse for a directory (EXDEV).
    let delete = ["quota", "delete", "--meta", &addr, "c", "/team/a"];
    run_env_ok(&delete, &admin);
    let mut names: Vec<String> = std::fs::read_dir(m.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["inside", "leaves", "sub"]);
    assert_eq!(std::fs::read_to_string(m.path("inside")).unwrap(), "in");
    write_synced(&m.path("sub/new"), "made in the subtree");
    std::fs::rename(m.path("sub/new"), m.path("renamed")).unwrap();
    std::fs::hard_link(m.path("renamed"), m.path("sub/link")).unwrap();
    assert_eq!(
        std::fs::read_to_string(full.path("team/a/sub/link")).unwrap(),
        "made in the subtree"
    );
    assert!(
        m.path("").join("..").join("..").exists(),
        "the kernel resolves .. above the mount"
    );
    assert!(!m.path("secret").exists() && !m.path("team").exists());

    // Below the mount: every way out is refused by the metaserver.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let creds = Credentials {
        tls: Some(Tls::load_ca_only(&pki.join("ca.pem")).unwrap()),
        token: Some(tok.clone()),
    };
    let c = fs_client(&rt, &addr, "c", creds);
    assert_eq!(c.root(), granted);
    rt.block_on(async {
        assert_eq!(
            c.lookup(granted, b"inside").await.unwrap().ino,
            ino("team/a/inside")
        );
        out_of_reach("lookup of .. at the root", c.lookup(granted, b"..").await);
        out_of_reach("getattr of an outside inode", c.getattr(secret).await);
        out_of_reach("reading an outside file", c.read_chunk(secret, 0).await);
        out_of_reach(
            "listing an outside directory",
            c.readdir(secret_dir, None, 10).await,
        );
        out_of_reach(
            "the filesystem's root",
            c.getattr(strata_meta::ROOT_INO).await,
        );
        out_of_reach(
            "rename out",
            c.rename(
                granted,
                b"inside",
                team,
                b"out",
                strata_meta::request::RenameMode::Replace,
            )
            .await,
        );
        out_of_reach(
            "hard link out",
            c.link(ino("team/a/inside"), secret_dir, b"l").await,
        );
        out_of_reach("hard link in", c.link(secret, granted, b"l").await);
        out_of_reach(
            "create outside",
            c.create(
                secret_dir,
                b"x",
                strata_meta::NewInode::plain(strata_meta::FileType::File, 0o644, 0, 0),
            )
            .await,
        );
        out_of_reach("unlink outside", c.unlink(secret_dir, b"s").await);
        out_of_reach(
            "the whole filesystem's inodes",
            c.list_inodes(c.groups()[0], 0).await,
        );
    });
    assert!(full.path("secret/s").exists() && !full.path("team/out").exists());

    // What the administrator moves out is out of reach soon after (the
    // nodes take a parent they found as true for a few seconds).
    std::fs::rename(full.path("team/a/sub"), full.path("secret/sub")).unwrap();
    std::fs::rename(full.path("team/a/leaves"), full.path("secret/leaves")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for moved in [sub, leaves] {
        while rt.block_on(c.getattr(moved)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "inode {moved} moved out is still reachable"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        out_of_reach("an inode moved out", rt.block_on(c.getattr(moved)));
    }
    m.unmount();

    // A certificate's subtree, read-only token's subtree: the same view.
    let b_env = tls.cert_env("b");
    let b = Mount::new(
        &tmp.path().join("mnt-b"),
        &["--meta", &addr, "c"],
        &refs(&b_env),
    );
    assert_eq!(std::fs::read_to_string(b.path("other")).unwrap(), "b's");
    assert_eq!(std::fs::read_dir(b.path("")).unwrap().count(), 1);
    b.unmount();
    let ro = create(&["c", "--read-only", "--subdir", "/team/b"]);
    assert!(ro.status.success(), "{ro:?}");
    let ro = String::from_utf8(ro.stdout).unwrap().trim().to_string();
    let ro_env = token_env(ca, &ro);
    let r = Mount::new(
        &tmp.path().join("mnt-r"),
        &["--meta", &addr, "c"],
        &refs(&ro_env),
    );
    assert_eq!(std::fs::read_to_string(r.path("other")).unwrap(), "b's");
    let write = std::fs::write(r.path("other"), b"x").unwrap_err();
    assert_eq!(write.raw_os_error(), Some(libc::EROFS), "{write}");
}
