//! The embedded default on a machine shared with other users: its metaserver
//! listens only on an owner-only Unix socket in the data dir, nothing of it
//! listens on TCP, another local user is kept out (by the socket's mode,
//! and by the node's check of the peer's uid should the mode be loosened),
//! and the owner's tools still work.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// uid and gid of `nobody`, the other user of these tests.
const NOBODY: u32 = 65534;

/// The socket inodes process `pid` holds open.
fn sockets_of(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .map(String::from)
        })
        .collect()
}

/// Inodes of the TCP sockets listening on this machine (state 0A).
fn tcp_listeners() -> Vec<String> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" {
                out.push(f[9].to_string());
            }
        }
    }
    out
}

/// `strata ARGS` run as `nobody`, from a copy of the binary it can execute.
fn as_nobody(bin: &Path, args: &[&str], xdg: &Path) -> std::process::Output {
    Command::new(bin)
        .args(args)
        .env("XDG_DATA_HOME", xdg)
        .env("RUST_LOG", "warn")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("the copied strata runs")
}

/// Lets everyone through `dir` and its parents up to `/tmp`, as a shared
/// data dir would be: only the socket's own mode keeps others out.
fn open_path(mut dir: &Path) {
    while dir != Path::new("/tmp") && dir != Path::new("/") {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir = dir.parent().unwrap();
    }
}

#[test]
fn another_local_user_cannot_reach_the_embedded_metaserver() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let xdg = tmp.path().join("xdg");
    let data: PathBuf = xdg.join("strata");
    let mnt = tmp.path().join("mnt");
    let env = [("XDG_DATA_HOME", xdg.to_str().unwrap())];
    std::fs::create_dir_all(&mnt).unwrap();
    let out = run_env_ok(&["mount", "-d", mnt.to_str().unwrap()], &env);
    let mount = Mount::adopt(&mnt);
    let pid = mount_pid(&out);
    std::fs::write(mnt.join("f"), b"mine").unwrap();

    // Where it listens: a Unix socket in the data dir, owner-only.
    let addr = std::fs::read_to_string(data.join("meta.addr")).unwrap();
    let socket = data.join("meta").join("meta.sock");
    assert_eq!(addr.trim(), format!("unix:{}", socket.display()));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let listening: Vec<String> = sockets_of(pid)
        .into_iter()
        .filter(|s| tcp_listeners().contains(s))
        .collect();
    assert!(
        listening.is_empty(),
        "the mount listens on TCP: {listening:?}"
    );

    // The owner's tools reach it.
    run_env_ok(&["snapshot", "create", "default", "s1"], &env);
    assert!(run_env_ok(&["snapshot", "list", "default"], &env).contains("s1"));

    // Another user is kept out by the socket's mode.
    let bin_dir = tmp.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let bin = bin_dir.join("strata");
    std::fs::copy(env!("CARGO_BIN_EXE_strata"), &bin).unwrap();
    open_path(&data.join("meta"));
    open_path(&bin_dir);
    std::fs::set_permissions(
        data.join("meta.addr"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let refused = as_nobody(&bin, &["snapshot", "list", "default"], &xdg);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "nobody listed the snapshots");
    assert!(
        stderr.contains("owner-only"),
        "the error says why: {stderr}"
    );

    // And by the node's own check of the peer, should the mode be loosened.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let refused = as_nobody(&bin, &["snapshot", "delete", "default", "s1"], &xdg);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "nobody deleted a snapshot");
    assert!(
        stderr.contains("refused this client") && stderr.contains("uid 65534"),
        "the error says which check failed: {stderr}"
    );
    assert!(
        run_env_ok(&["snapshot", "list", "default"], &env).contains("s1"),
        "nothing was deleted, and the owner still gets in"
    );
    assert_eq!(std::fs::read(mnt.join("f")).unwrap(), b"mine");
    mount.unmount();
    assert!(!socket.exists(), "the socket goes with the mount");
}
