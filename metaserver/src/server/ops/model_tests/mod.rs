//! The state machine alone against the reference model of a POSIX
//! namespace (`strata-posix-model`): proptest-generated sequences of
//! creates (files, directories, symlinks; half the files as a client that
//! deferred its create makes them, with a reserved inode number and a first
//! slice in one `CreateFile`), links, unlinks, rmdirs, renames
//! with each flag, truncates, writes of slices, extended attributes,
//! setattrs of mode and owner, snapshots (each read back at the end as the
//! tree was when taken, read-only, with the same invariants), and
//! mkdirs and rmdirs by cross-group transactions cut short after each
//! phase and then recovered, applied by `ops::apply` to rows in memory (no
//! Raft, redb or network) in two partition groups and to the model. Each
//! answer must match the model's (as an errno), the rows must keep their
//! invariants after every step (no entry without its inode, link counts
//! equal the entries, every live inode reachable from the root, each
//! group's usage row equal to its inodes and their sizes, nothing readable
//! past a file's end, no transaction rows left), and the tree read back
//! through `read_rows` must equal the model's. A failing sequence shrinks
//! to a minimal one.
//!
//! `MODEL_CASES=N` runs N sequences (default 512, of 1 to 119 steps: about
//! 30 000 steps); `bench/model_ops.sh` runs a million steps. A failure
//! prints the shrunk sequence; `PROPTEST_RNG_SEED=S` runs the generator
//! from seed S (to explore others, or to reproduce).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use crate::MetaError;
use crate::client::FsSpec;
use crate::request::{
    MetaResponse, ReadRequest, RenameMode, TxId, TxStep, WriteRequest, XattrMode,
};
use crate::server::ops::namespace::MAX_RESERVED_INOS;
use crate::server::ops::{apply, read_rows};
use crate::server::store::{MemRows, Rows, decode, key};
use crate::types::*;
use strata_posix_model::{Kind, MAX_WRITE, Model, Op, RenameHow, XattrHow, name, op, xattr_name};

mod checks;
mod machine;
mod reserved;

use checks::*;
use machine::*;

fn errno(r: &Result<MetaResponse, MetaError>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.errno(),
    }
}

/// Applies `set` to `ino`, which the model says must succeed.
fn set_attr(m: &mut Machine, op: &Op, ino: Ino, set: SetAttr) {
    let req = WriteRequest::SetAttr {
        fs: m.fs,
        ino,
        set,
        now: now(),
    };
    let r = m.apply(ino, req);
    assert_eq!(errno(&r), 0, "{op:?}: {r:?}");
}

/// A regular file `dir/n` made with a reserved inode number and its
/// first slice in one `CreateFile`; `sel` picks the slice's length.
fn create_file(m: &mut Machine, model: &mut Model, op: &Op, dir: Ino, n: Vec<u8>, sel: u8) {
    let fs = m.fs;
    let g = m.group_of(dir);
    let ino = reserve(m, g, 1).0;
    m.next_slice += 1;
    let len = 1 + (sel as u32 * 977) % CHUNK;
    let slice = Slice {
        id: m.next_slice,
        pos: 0,
        len,
    };
    let r = m.apply_in(
        g,
        WriteRequest::CreateFile {
            fs,
            parent: dir,
            name: n.clone(),
            ino,
            new: NewInode::plain(FileType::File, 0o644, 0, 0),
            slices: vec![(0, slice)],
            end: len as u64,
            now: now(),
            written: now(),
        },
    );
    assert_eq!(errno(&r), model.create_errno(dir, &n), "{op:?}: {r:?}");
    match r.map(created_file) {
        Ok(Some((created, Ok((inode, _))))) => {
            assert_eq!((created.ino, created.size), (ino, 0), "{op:?}");
            assert_eq!((inode.ino, inode.size), (ino, len as u64), "{op:?}");
            model.created(dir, n, ino, 0);
            model.wrote(ino, len as u64);
        }
        Ok(other) => panic!("{op:?}: answered {other:?}"),
        Err(_) => {}
    }
}

/// `CreateFile`'s answer, if that is what `r` is.
type Written = Result<(Inode, Vec<u32>), MetaError>;
fn created_file(r: MetaResponse) -> Option<(Inode, Written)> {
    match r {
        MetaResponse::FileCreated(f) => Some((f.created, f.written)),
        _ => None,
    }
}

/// Reserves `count` inode numbers in group `g`.
fn reserve(m: &mut Machine, g: GroupId, count: u32) -> (Ino, u32) {
    let fs = m.fs;
    match m.apply_in(g, WriteRequest::ReserveInos { fs, count }) {
        Ok(MetaResponse::Inos { start, count }) => (start, count),
        other => panic!("ReserveInos answered {other:?}"),
    }
}

/// Runs `op` on both; panics (failing the case) where they differ.
fn step(m: &mut Machine, model: &mut Model, op: &Op) {
    let fs = m.fs;
    match *op {
        // Half the regular files are made as a client that deferred its
        // create makes them (decision 71).
        Op::Create { dir, name: n, kind } if kind == 0 && n % 2 == 1 => {
            create_file(m, model, op, model.dir(dir), name(n), n);
        }
        Op::Create { dir, name: n, kind } => {
            let (dir, n) = (model.dir(dir), name(n));
            let (file_type, symlink) = match kind {
                0 => (FileType::File, None),
                1 => (FileType::Dir, None),
                _ => (FileType::Symlink, Some(b"target".to_vec())),
            };
            let new = NewInode {
                symlink,
                ..NewInode::plain(file_type, 0o644, 0, 0)
            };
            let r = m.apply(
                dir,
                WriteRequest::Create {
                    fs,
                    parent: dir,
                    name: n.clone(),
                    new,
                    now: now(),
                },
            );
            assert_eq!(errno(&r), model.create_errno(dir, &n), "{op:?}: {r:?}");
            if let Ok(MetaResponse::Inode(inode)) = r {
                model.created(dir, n, inode.ino, kind);
            }
        }
        Op::Link { file, dir, name: n } => {
            let Some(ino) = model.linkable(file) else {
                return;
            };
            let (dir, n) = (model.dir(dir), name(n));
            // A link across groups is a transaction the client builds.
            if m.group_of(ino) != m.group_of(dir) {
                return;
            }
            let r = m.apply(
                dir,
                WriteRequest::Link {
                    fs,
                    ino,
                    parent: dir,
                    name: n.clone(),
                    now: now(),
                },
            );
            assert_eq!(errno(&r), model.link(ino, dir, &n), "{op:?}: {r:?}");
        }
        Op::Unlink { dir, name: n } => {
            let (dir, n) = (model.dir(dir), name(n));
            let r = m.apply(
                dir,
                WriteRequest::Unlink {
                    fs,
                    parent: dir,
                    name: n.clone(),
                    now: now(),
                },
            );
            assert_eq!(errno(&r), model.unlink(dir, &n), "{op:?}: {r:?}");
        }
        Op::Rmdir { dir, name: n } => {
            let (dir, n) = (model.dir(dir), name(n));
            // A directory in another group than its entry: `RmdirTx`.
            if let Some(&i) = model.entries(dir).get(&n)
                && m.group_of(i) != m.group_of(dir)
            {
                return;
            }
            let r = m.apply(
                dir,
                WriteRequest::Rmdir {
                    fs,
                    parent: dir,
                    name: n.clone(),
                    now: now(),
                },
            );
            assert_eq!(errno(&r), model.rmdir(dir, &n), "{op:?}: {r:?}");
        }
        Op::Rename {
            dir,
            name: n,
            to,
            to_name,
            mode,
        } => {
            let (dir, n, to, to_name) = (model.dir(dir), name(n), model.dir(to), name(to_name));
            // Renames across groups are transactions the client builds;
            // this test drives mkdir and rmdir ones.
            let involved = [model.entries(dir).get(&n), model.entries(to).get(&to_name)];
            let g = m.group_of(dir);
            if m.group_of(to) != g || involved.iter().flatten().any(|&&i| m.group_of(i) != g) {
                return;
            }
            // Moving a directory walks up from where it goes, checking for
            // a loop: a walk through another group is the client's too.
            let ancestors_here = |mut d: Ino| loop {
                if m.group_of(d) != g {
                    return false;
                }
                if d == ROOT_INO {
                    return true;
                }
                d = model.nodes[&d].parent;
            };
            if involved.iter().flatten().any(|&&i| model.is_dir(i))
                && !(ancestors_here(to) && ancestors_here(dir))
            {
                return;
            }
            let how = RenameHow::of(mode);
            let r = m.apply(
                dir,
                WriteRequest::RenameWith {
                    fs,
                    parent: dir,
                    name: n.clone(),
                    new_parent: to,
                    new_name: to_name.clone(),
                    mode: match how {
                        RenameHow::Replace => RenameMode::Replace,
                        RenameHow::NoReplace => RenameMode::NoReplace,
                        RenameHow::Exchange => RenameMode::Exchange,
                    },
                    now: now(),
                },
            );
            let want = model.rename((dir, &n), (to, &to_name), how);
            assert_eq!(errno(&r), want, "{op:?}: {r:?}");
        }
        Op::Truncate { file, size } => {
            let Some(ino) = model.file(file) else {
                return;
            };
            let set = SetAttr {
                size: Some(size as u64),
                ..Default::default()
            };
            set_attr(m, op, ino, set);
            model.truncate(ino, size as u64);
        }
        Op::Write { file, len } => {
            let Some(ino) = model.file(file) else {
                return;
            };
            m.next_slice += 1;
            let slice = Slice {
                id: m.next_slice,
                pos: 0,
                len,
            };
            let r = m.apply(
                ino,
                WriteRequest::WriteSlices {
                    fs,
                    ino,
                    slices: vec![(0, slice)],
                    end: len as u64,
                    now: now(),
                },
            );
            assert_eq!(errno(&r), 0, "{op:?}: {r:?}");
            model.wrote(ino, len as u64);
        }
        Op::SetXattr {
            node,
            name: n,
            value,
            mode,
        } => {
            let (ino, n, how) = (model.any(node), xattr_name(n), XattrHow::of(mode));
            let r = m.apply(
                ino,
                WriteRequest::SetXattr {
                    fs,
                    ino,
                    name: n.clone(),
                    value: vec![value],
                    mode: match how {
                        XattrHow::Any => XattrMode::Any,
                        XattrHow::Create => XattrMode::Create,
                        XattrHow::Replace => XattrMode::Replace,
                    },
                    now: now(),
                },
            );
            let want = model.setxattr(ino, &n, &[value], how);
            assert_eq!(errno(&r), want, "{op:?}: {r:?}");
        }
        Op::RemoveXattr { node, name: n } => {
            let (ino, n) = (model.any(node), xattr_name(n));
            let r = m.apply(
                ino,
                WriteRequest::RemoveXattr {
                    fs,
                    ino,
                    name: n.clone(),
                    now: now(),
                },
            );
            assert_eq!(errno(&r), model.removexattr(ino, &n), "{op:?}: {r:?}");
        }
        Op::Snapshot => {
            // As `MetaClient::create_snapshot` takes one (the freeze aside:
            // nothing runs meanwhile here).
            let name = format!("s{}", m.snapshots.len());
            let create = WriteRequest::CreateSnapshot {
                source: "m".into(),
                name: name.clone(),
                now: now(),
                loading: false,
                path: None,
            };
            let Ok(MetaResponse::Snapshot(snap)) = m.apply_in(CLUSTER_GROUP, create) else {
                panic!("snapshot {name} refused");
            };
            for g in GROUPS {
                let copy = WriteRequest::CopyFs {
                    from: fs,
                    to: snap.id,
                };
                m.apply_in(g, copy).expect("copied");
            }
            let ready = WriteRequest::SnapshotReady {
                source: "m".into(),
                name,
            };
            m.apply_in(CLUSTER_GROUP, ready).expect("ready");
            let new = NewInode::plain(FileType::File, 0o644, 0, 0);
            let r = m.apply(
                ROOT_INO,
                WriteRequest::Create {
                    fs: snap.id,
                    parent: ROOT_INO,
                    name: b"into-a-snapshot".to_vec(),
                    new,
                    now: now(),
                },
            );
            assert!(
                matches!(r, Err(MetaError::ReadOnly(_))),
                "a snapshot takes no change: {r:?}"
            );
            m.snapshots.push((snap.id, model.clone()));
        }
        Op::SetAttr { node, mode, owner } => {
            let ino = model.not_symlink(node);
            let (mode, uid, gid) = model.setattr(ino, mode, owner);
            let set = SetAttr {
                mode: Some(mode),
                uid: Some(uid),
                gid: Some(gid),
                ..Default::default()
            };
            set_attr(m, op, ino, set);
        }
        Op::MkdirAway {
            dir,
            name: n,
            crash,
        } => {
            let (dir, n) = (model.dir(dir), name(n));
            let pg = m.group_of(dir);
            let away = *GROUPS.iter().find(|g| **g != pg).unwrap();
            let create = TxStep::CreateInode {
                new: NewInode::plain(FileType::Dir, 0o755, 0, 0),
                parent: dir,
            };
            let entry = n.clone();
            let end = m.transact(
                vec![(away, vec![create])],
                pg,
                |created| {
                    let ino = created.first().map_or(0, |i| i.ino);
                    vec![
                        TxStep::PutDentry {
                            parent: dir,
                            name: entry,
                            ino,
                            kind: FileType::Dir,
                            replace: None,
                        },
                        TxStep::TouchDir { ino: dir, nlink: 1 },
                    ]
                },
                crash,
            );
            let want = model.create_errno(dir, &n);
            let made = match end {
                TxEnd::Answered(r) => {
                    let got = r.as_ref().map_or_else(|e| e.errno(), |_| 0);
                    assert_eq!(got, want, "{op:?}: {r:?}");
                    r.ok()
                }
                TxEnd::Cut { committed, created } => {
                    assert!(!committed || want == 0, "{op:?} committed over an entry");
                    committed.then_some(created)
                }
            };
            if let Some(created) = made {
                let ino = created.first().expect("the new directory").ino;
                assert_eq!(
                    m.group_of(ino),
                    away,
                    "{op:?}: made in group {}",
                    m.group_of(ino)
                );
                model.created(dir, n, ino, 1);
            }
        }
        Op::RmdirTx {
            dir,
            name: n,
            crash,
        } => {
            let (dir, n) = (model.dir(dir), name(n));
            let Some(&ino) = model.entries(dir).get(&n) else {
                return;
            };
            let (pg, ig) = (m.group_of(dir), m.group_of(ino));
            if !model.is_dir(ino) || pg == ig {
                return;
            }
            let coord_steps = vec![
                TxStep::DelDentry {
                    parent: dir,
                    name: n.clone(),
                    ino,
                },
                TxStep::TouchDir {
                    ino: dir,
                    nlink: -1,
                },
            ];
            let drop = TxStep::DropLink { ino, dir: true };
            let end = m.transact(vec![(ig, vec![drop])], pg, |_| coord_steps, crash);
            let want = model.rmdir_errno(dir, &n);
            let removed = match end {
                TxEnd::Answered(r) => {
                    let got = r.as_ref().map_or_else(|e| e.errno(), |_| 0);
                    assert_eq!(got, want, "{op:?}: {r:?}");
                    r.is_ok()
                }
                TxEnd::Cut { committed, .. } => {
                    assert!(
                        !committed || want == 0,
                        "{op:?} committed a non-empty rmdir"
                    );
                    committed
                }
            };
            if removed {
                model.rmdir(dir, &n);
            }
        }
    }
}

fn cases() -> u32 {
    std::env::var("MODEL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(512)
}

#[test]
fn state_machine_matches_a_posix_model() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let steps = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&prop::collection::vec(op(), 1..120), |ops| {
        let mut m = Machine::new();
        let mut model = Model::new();
        for op in &ops {
            step(&mut m, &mut model, op);
            check_rows(&m);
        }
        check_tree(&m, &model);
        // Each snapshot holds the tree as it was when taken, with the
        // same invariants, however the filesystem changed after.
        let (source, snapshots) = (m.fs, std::mem::take(&mut m.snapshots));
        for (snap, then) in &snapshots {
            m.fs = *snap;
            check_rows(&m);
            check_tree(&m, then);
        }
        m.fs = source;
        steps.fetch_add(ops.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Shown with --nocapture: the figure the README reports.
    eprintln!(
        "state machine model: {} generated steps in {} sequences",
        steps.into_inner(),
        cases()
    );
}
