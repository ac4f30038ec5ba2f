//! The filesystem core (`strata_fuse::Filesystem`, without FUSE) against
//! the reference model of a POSIX namespace (`strata-posix-model`): the
//! generated sequences the state machine's model test runs, here through
//! the core over a real metaserver node with three metadata groups and
//! every new directory spread to the least-loaded one, so that mkdir,
//! rmdir, rename and link cross groups as often as not. Every answer must
//! match the model's errno; at the end, a fresh client (empty caches) must
//! read back the model's tree and `fsck` must find nothing wrong. A
//! failure shrinks to a minimal sequence.
//!
//! `CORE_MODEL_CASES=N` runs N sequences (default 48); `PROPTEST_RNG_SEED`
//! picks the seed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::test_runner::{Config, TestCaseError, TestRunner};
use strata_cache::{BlockCache, BlockCacheConfig, LocalStore};
use strata_fuse::{Filesystem, FsConfig, FsError, Owner};
use strata_meta::server::MetaNode;
use strata_meta::{FsClient, MetaClient, SetAttr};
use strata_posix_model::{Kind, Model, Op, RenameHow, XattrHow, name, op, xattr_name};

const ROOT: Owner = Owner::ROOT;
/// Writes are cut to this (a model write of up to 1 MiB would make the
/// run slow without testing more of the namespace).
const WRITE_CAP: u32 = 64 << 10;

fn errno<T>(r: &Result<T, FsError>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.errno,
    }
}

/// Runs `op` on the core and the model; fails the case where they differ.
async fn step(fs: &Filesystem, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    let check = |got: i32, want: i32, what: &dyn std::fmt::Debug| {
        if got == want {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!(
                "{op:?}: errno {got}, the model says {want} ({what:?})"
            )))
        }
    };
    match *op {
        Op::Create { dir, name: n, kind } => {
            let (dir, n) = (model.dir(dir), name(n));
            let made = match kind {
                0 => match fs.create(dir, &n, 0o644, libc::O_RDWR, ROOT).await {
                    Ok((inode, fh)) => {
                        fs.release(inode.ino, fh, None).await.unwrap();
                        Ok(inode)
                    }
                    Err(e) => Err(e),
                },
                1 => fs.mkdir(dir, &n, 0o755, ROOT).await,
                _ => fs.symlink(dir, &n, b"target", ROOT).await,
            };
            check(errno(&made), model.create_errno(dir, &n), &made)?;
            if let Ok(inode) = made {
                model.created(dir, n, inode.ino, kind.min(2));
            }
        }
        Op::MkdirAway { dir, name: n, .. } => {
            let (dir, n) = (model.dir(dir), name(n));
            let made = fs.mkdir(dir, &n, 0o755, ROOT).await;
            check(errno(&made), model.create_errno(dir, &n), &made)?;
            if let Ok(inode) = made {
                model.created(dir, n, inode.ino, 1);
            }
        }
        Op::Link { file, dir, name: n } => {
            let Some(ino) = model.linkable(file) else {
                return Ok(());
            };
            let (dir, n) = (model.dir(dir), name(n));
            let r = fs.link(ino, dir, &n).await;
            check(errno(&r), model.link(ino, dir, &n), &r)?;
        }
        Op::Unlink { dir, name: n } => {
            let (dir, n) = (model.dir(dir), name(n));
            let r = fs.unlink(dir, &n).await;
            check(errno(&r), model.unlink(dir, &n), &r)?;
        }
        Op::Rmdir { dir, name: n } | Op::RmdirTx { dir, name: n, .. } => {
            let (dir, n) = (model.dir(dir), name(n));
            let r = fs.rmdir(dir, &n).await;
            check(errno(&r), model.rmdir(dir, &n), &r)?;
        }
        Op::Rename {
            dir,
            name: n,
            to,
            to_name,
            mode,
        } => {
            let (dir, n, to, to_name) = (model.dir(dir), name(n), model.dir(to), name(to_name));
            let how = RenameHow::of(mode);
            let flags = match how {
                RenameHow::Replace => 0,
                RenameHow::NoReplace => libc::RENAME_NOREPLACE,
                RenameHow::Exchange => libc::RENAME_EXCHANGE,
            };
            let r = fs.rename(dir, &n, to, &to_name, flags).await;
            check(errno(&r), model.rename((dir, &n), (to, &to_name), how), &r)?;
        }
        Op::Truncate { file, size } => {
            let Some(ino) = model.file(file) else {
                return Ok(());
            };
            let set = SetAttr {
                size: Some(size as u64),
                ..Default::default()
            };
            let r = fs.setattr(ino, set).await;
            check(errno(&r), 0, &r)?;
            model.truncate(ino, size as u64);
        }
        Op::Write { file, len } => {
            let Some(ino) = model.file(file) else {
                return Ok(());
            };
            let len = len % WRITE_CAP + 1;
            let fh = fs.open(ino, libc::O_RDWR).await.unwrap();
            let r = fs.write(ino, fh, 0, &vec![7u8; len as usize]).await;
            check(errno(&r), 0, &r)?;
            fs.flush(ino, fh, None).await.unwrap();
            fs.release(ino, fh, None).await.unwrap();
            model.wrote(ino, len as u64);
        }
        // Snapshots are the cluster's (`strata snapshot`), not the core's:
        // the state machine's model test takes them.
        Op::Snapshot => {}
        Op::SetAttr { node, mode, owner } => {
            let ino = model.not_symlink(node);
            let (mode, uid, gid) = model.setattr(ino, mode, owner);
            let set = SetAttr {
                mode: Some(mode),
                uid: Some(uid),
                gid: Some(gid),
                ..Default::default()
            };
            let r = fs.setattr(ino, set).await;
            check(errno(&r), 0, &r)?;
        }
        Op::SetXattr {
            node,
            name: n,
            value,
            mode,
        } => {
            let (ino, n, how) = (model.any(node), xattr_name(n), XattrHow::of(mode));
            let flags = match how {
                XattrHow::Any => 0,
                XattrHow::Create => libc::XATTR_CREATE,
                XattrHow::Replace => libc::XATTR_REPLACE,
            };
            let r = fs.setxattr(ino, &n, &[value], flags).await;
            check(errno(&r), model.setxattr(ino, &n, &[value], how), &r)?;
        }
        Op::RemoveXattr { node, name: n } => {
            let (ino, n) = (model.any(node), xattr_name(n));
            let r = fs.removexattr(ino, &n).await;
            check(errno(&r), model.removexattr(ino, &n), &r)?;
        }
    }
    Ok(())
}

/// The tree as a client that has seen none of it reads it, against the
/// model; and fsck. Returns how many entries name an inode in another
/// group than their directory's.
async fn check_fresh(
    client: &Arc<MetaClient>,
    fs_name: &str,
    model: &Model,
) -> Result<u64, String> {
    let fs: FsClient = client.open_fs(fs_name).await.map_err(|e| e.to_string())?;
    let mut seen = BTreeSet::from([strata_posix_model::ROOT]);
    let mut dirs = vec![strata_posix_model::ROOT];
    let mut across = 0;
    while let Some(dir) = dirs.pop() {
        let mut listed = BTreeMap::new();
        let mut after = None;
        loop {
            let page = fs
                .readdir(dir, after.clone(), 1000)
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            for e in page.iter().filter(|e| e.name != b"." && e.name != b"..") {
                listed.insert(e.name.clone(), e.dentry.ino);
            }
        }
        if &listed != model.entries(dir) {
            return Err(format!(
                "entries of {dir}: {listed:?}, the model has {:?}",
                model.entries(dir)
            ));
        }
        for &ino in listed.values() {
            if seen.insert(ino) && model.is_dir(ino) {
                dirs.push(ino);
            }
            if fs.group_of(ino).await.map_err(|e| e.to_string())?
                != fs.group_of(dir).await.map_err(|e| e.to_string())?
            {
                across += 1;
            }
        }
    }
    let live: BTreeSet<u64> = model.nodes.keys().copied().collect();
    if seen != live {
        return Err(format!("reached {seen:?}, the model has {live:?}"));
    }
    for (&ino, node) in &model.nodes {
        let inode = fs.getattr(ino).await.map_err(|e| e.to_string())?;
        if inode.nlink != node.nlink {
            return Err(format!(
                "nlink of {ino}: {}, the model has {}",
                inode.nlink, node.nlink
            ));
        }
        let attrs = (inode.mode & 0o7777, inode.uid, inode.gid);
        if node.attrs.is_some_and(|a| a != attrs) {
            return Err(format!(
                "mode, uid and gid of {ino}: {attrs:?}, the model has {:?}",
                node.attrs
            ));
        }
        if let Kind::File { size } = node.kind
            && inode.size != size
        {
            return Err(format!(
                "size of {ino}: {}, the model has {size}",
                inode.size
            ));
        }
        let names: BTreeSet<Vec<u8>> = fs
            .list_xattrs(ino)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .collect();
        let want: BTreeSet<Vec<u8>> = node.xattrs.keys().cloned().collect();
        if names != want {
            return Err(format!(
                "xattrs of {ino}: {names:?}, the model has {want:?}"
            ));
        }
    }
    let report = strata_meta::client::fsck::check(&fs)
        .await
        .map_err(|e| e.to_string())?;
    if !report.is_clean() {
        return Err(format!("fsck: {report:?}"));
    }
    Ok(across)
}

struct Node {
    _dir: tempfile::TempDir,
    node: Arc<MetaNode>,
    client: Arc<MetaClient>,
}

/// One node with three partition groups.
async fn start() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let node = strata_testkit::start_node(&dir.path().join("meta")).await;
    let client = strata_testkit::connect(&node).await;
    // Group 1 answers a read once its leader committed its first entry;
    // only then may its membership change.
    let read = strata_meta::ReadRequest::LiveUsage { fs: 0 };
    client.call(1, read).await.unwrap();
    node.init_cluster(Default::default(), 3).await.unwrap();
    Node {
        _dir: dir,
        node,
        client,
    }
}

#[test]
fn the_core_matches_a_posix_model_across_metadata_groups() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let n = rt.block_on(start());
    let cases = std::env::var("CORE_MODEL_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(48);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicU32::new(0);
    let crossing = std::sync::atomic::AtomicU64::new(0);
    let steps = std::sync::atomic::AtomicU64::new(0);
    let strategy = proptest::collection::vec(op(), 1..60);
    let result = runner.run(&strategy, |ops| {
        rt.block_on(async {
            // A filesystem of its own per case, on the same node.
            let fs_name = format!(
                "c{}",
                case.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let mut spec = strata_testkit::test_fs(&fs_name, 64 << 10, 256 << 10);
            spec.partitions = 3;
            strata_testkit::format_fs(&n.client, &spec).await;
            let meta = n.client.open_fs(&fs_name).await.unwrap();
            meta.set_dir_spread_slack(0);
            let blocks = n._dir.path().join(&fs_name);
            let store = Arc::new(LocalStore::new(blocks).unwrap());
            let cache = BlockCache::new(store, BlockCacheConfig::default()).unwrap();
            let fs = Filesystem::new(meta, cache, FsConfig::default(), None).unwrap();
            let mut model = Model::new();
            for op in &ops {
                step(&fs, &mut model, op).await?;
            }
            steps.fetch_add(ops.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let fresh = strata_testkit::connect(&n.node).await;
            let across = check_fresh(&fresh, &fs_name, &model)
                .await
                .map_err(TestCaseError::fail)?;
            crossing.fetch_add(across, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The run did what it is for: entries across groups at the end of
    // some sequences (and so mkdirs, renames and links that crossed).
    let crossing = crossing.into_inner();
    assert!(crossing > 0, "no entry crossed groups");
    eprintln!(
        "core model: {} generated steps in {cases} sequences, {crossing} entries across groups at their ends",
        steps.into_inner()
    );
}
