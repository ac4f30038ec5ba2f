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

/// The partition groups: the root's, and another one that directories
/// made by cross-group transactions go to.
const GROUPS: [GroupId; 2] = [1, 2];
const CHUNK: u32 = MAX_WRITE;

/// The state machine's rows, with one filesystem formatted over `GROUPS`.
struct Machine {
    t: MemRows,
    fs: FsId,
    parts: Vec<Partition>,
    next_slice: SliceId,
    next_tx: TxId,
    /// The snapshots taken, each with the model as it was then.
    snapshots: Vec<(FsId, Model)>,
}

fn now() -> Timestamp {
    Timestamp { sec: 1, nsec: 0 }
}

/// How a cross-group transaction ended.
#[derive(Debug)]
enum TxEnd {
    /// The client heard an answer.
    Answered(Result<Vec<Inode>, MetaError>),
    /// The client stopped; recovery then committed it or not (`created`:
    /// what the participants had made by then).
    Cut {
        committed: bool,
        created: Vec<Inode>,
    },
}

impl Machine {
    fn new() -> Machine {
        let mut t = MemRows::default();
        let run = |t: &mut MemRows, g, req| apply(t, g, req).unwrap().unwrap();
        let register = WriteRequest::RegisterNode {
            id: 1,
            addr: "model".into(),
            groups: [&[CLUSTER_GROUP], &GROUPS[..]].concat(),
        };
        run(&mut t, CLUSTER_GROUP, register);
        let spec = FsSpec::new("m", "file:///unused");
        let create = WriteRequest::CreateFsSized {
            name: spec.name.clone(),
            uuid: spec.uuid.clone(),
            storage: spec.storage.clone(),
            s3_endpoint: None,
            block_size: 1 << 16,
            chunk_size: CHUNK,
            partitions: 2,
            partition_size: spec.partition_size,
            borrowed: Vec::new(),
            now: now(),
        };
        let MetaResponse::Fs(info) = run(&mut t, CLUSTER_GROUP, create) else {
            panic!("CreateFsSized answered no filesystem");
        };
        let list = ReadRequest::ListPartitions { fs: info.id };
        let Ok(MetaResponse::Partitions(parts)) = read_rows(&t, CLUSTER_GROUP, list).unwrap()
        else {
            panic!("no partitions");
        };
        let groups: BTreeSet<GroupId> = parts.iter().map(|p| p.group).collect();
        assert_eq!(groups, BTreeSet::from(GROUPS), "a partition in each group");
        for part in &parts {
            let init = WriteRequest::InitPartition {
                part: *part,
                chunk_size: CHUNK,
            };
            run(&mut t, part.group, init);
        }
        let root = WriteRequest::InitRoot {
            fs: info.id,
            mode: 0o755,
            uid: 0,
            gid: 0,
            now: now(),
        };
        let root_group = partition_of(&parts, ROOT_INO).unwrap().group;
        run(&mut t, root_group, root);
        run(
            &mut t,
            CLUSTER_GROUP,
            WriteRequest::MarkFsReady { name: "m".into() },
        );
        Machine {
            t,
            fs: info.id,
            parts,
            next_slice: 1,
            next_tx: 1,
            snapshots: Vec::new(),
        }
    }

    fn group_of(&self, ino: Ino) -> GroupId {
        partition_of(&self.parts, ino)
            .expect("a partition holds it")
            .group
    }

    fn apply_in(&mut self, g: GroupId, req: WriteRequest) -> Result<MetaResponse, MetaError> {
        apply(&mut self.t, g, req)
            .expect("the store never fails in memory")
            .map(|r| r.split_changed().0)
    }

    /// Applies `req` in the group of `at`.
    fn apply(&mut self, at: Ino, req: WriteRequest) -> Result<MetaResponse, MetaError> {
        self.apply_in(self.group_of(at), req)
    }

    fn read(&self, at: Ino, req: ReadRequest) -> Result<MetaResponse, MetaError> {
        read_rows(&self.t, self.group_of(at), req).expect("the store never fails in memory")
    }

    /// A cross-group transaction as `FsClient::transact` runs it, cut
    /// short after phase `crash` (see `Op::MkdirAway`) and then recovered
    /// as `MetaClient::resolve_transaction` does.
    fn transact(
        &mut self,
        parts: Vec<(GroupId, Vec<TxStep>)>,
        coord: GroupId,
        coord_steps: impl FnOnce(&[Inode]) -> Vec<TxStep>,
        crash: u8,
    ) -> TxEnd {
        let (fs, tx) = (self.fs, self.next_tx);
        self.next_tx += 1;
        let participants: Vec<GroupId> = parts.iter().map(|(g, _)| *g).collect();
        let begin = WriteRequest::TxBegin {
            fs,
            tx,
            participants: participants.clone(),
            now: now(),
        };
        if let Err(e) = self.apply_in(coord, begin) {
            return TxEnd::Answered(Err(e));
        }
        if crash == 1 {
            return self.recover(tx, coord, &participants, Vec::new());
        }
        let mut created = Vec::new();
        let mut prepared = Vec::new();
        for (g, steps) in parts {
            let prepare = WriteRequest::TxPrepare {
                fs,
                tx,
                coord,
                participants: participants.clone(),
                steps,
                now: now(),
            };
            match self.apply_in(g, prepare) {
                Ok(MetaResponse::TxApplied(c)) => {
                    prepared.push(g);
                    created.extend(c.into_iter().map(|(i, _)| i));
                }
                Ok(other) => panic!("TxPrepare answered {other:?}"),
                Err(e) => {
                    self.recover(tx, coord, &prepared, Vec::new());
                    return TxEnd::Answered(Err(e));
                }
            }
        }
        if crash == 2 {
            return self.recover(tx, coord, &participants, created);
        }
        let commit = WriteRequest::TxCommit {
            fs,
            tx,
            steps: coord_steps(&created),
            now: now(),
        };
        if let Err(e) = self.apply_in(coord, commit) {
            let TxEnd::Cut {
                committed: false, ..
            } = self.recover(tx, coord, &participants, Vec::new())
            else {
                panic!("a refused commit was decided as committed");
            };
            return TxEnd::Answered(Err(e));
        }
        if crash == 3 {
            return self.recover(tx, coord, &participants, created);
        }
        for &g in &participants {
            let finish = WriteRequest::TxFinish {
                fs,
                tx,
                commit: true,
                now: now(),
            };
            self.apply_in(g, finish).unwrap();
        }
        if crash == 4 {
            return self.recover(tx, coord, &participants, created);
        }
        self.apply_in(coord, WriteRequest::TxForget { tx }).unwrap();
        TxEnd::Answered(Ok(created))
    }

    /// What a node's recovery does with a transaction a client left: asks
    /// the coordinator for the decision (which aborts an undecided one),
    /// carries it out in every participant and forgets it.
    fn recover(
        &mut self,
        tx: TxId,
        coord: GroupId,
        participants: &[GroupId],
        created: Vec<Inode>,
    ) -> TxEnd {
        let Ok(MetaResponse::Decision(committed)) =
            self.apply_in(coord, WriteRequest::TxResolve { tx })
        else {
            panic!("TxResolve answered no decision");
        };
        for &g in participants {
            let finish = WriteRequest::TxFinish {
                fs: self.fs,
                tx,
                commit: committed,
                now: now(),
            };
            self.apply_in(g, finish).unwrap();
        }
        self.apply_in(coord, WriteRequest::TxForget { tx }).unwrap();
        TxEnd::Cut { committed, created }
    }

    fn inodes(&self) -> BTreeMap<Ino, Inode> {
        let mut out = BTreeMap::new();
        for g in GROUPS {
            let rows = self
                .t
                .scan(&key::rows_of(g, key::INODE, self.fs), None, usize::MAX);
            for (_, v) in rows.unwrap() {
                let i: Inode = decode(&v).unwrap();
                assert_eq!(self.group_of(i.ino), g, "inode {} in group {g}", i.ino);
                out.insert(i.ino, i);
            }
        }
        out
    }

    /// Every entry: (directory, name) -> entry.
    fn dentries(&self) -> BTreeMap<(Ino, Vec<u8>), Dentry> {
        let mut out = BTreeMap::new();
        for g in GROUPS {
            let prefix = key::rows_of(g, key::DENTRY, self.fs);
            for (k, v) in self.t.scan(&prefix, None, usize::MAX).unwrap() {
                let rest = &k[prefix.len()..];
                let dir = Ino::from_be_bytes(rest[..8].try_into().unwrap());
                assert_eq!(self.group_of(dir), g, "an entry of {dir} in group {g}");
                out.insert((dir, rest[8..].to_vec()), decode(&v).unwrap());
            }
        }
        out
    }
}

fn errno(r: &Result<MetaResponse, MetaError>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.errno(),
    }
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
            let r = m.apply(
                ino,
                WriteRequest::SetAttr {
                    fs,
                    ino,
                    set,
                    now: now(),
                },
            );
            assert_eq!(errno(&r), 0, "{op:?}: {r:?}");
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
            let r = m.apply(
                ino,
                WriteRequest::SetAttr {
                    fs,
                    ino,
                    set,
                    now: now(),
                },
            );
            assert_eq!(errno(&r), 0, "{op:?}: {r:?}");
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

/// The rows' own invariants, whatever the model says.
fn check_rows(m: &Machine) {
    let inodes = m.inodes();
    let dentries = m.dentries();
    let mut links: BTreeMap<Ino, u32> = BTreeMap::new();
    let mut subdirs: BTreeMap<Ino, u32> = BTreeMap::new();
    for ((dir, name), d) in &dentries {
        let Some(inode) = inodes.get(&d.ino) else {
            panic!(
                "entry {name:?} in {dir} names inode {}, which does not exist",
                d.ino
            );
        };
        assert_eq!(inode.kind, d.kind, "entry {name:?} in {dir}: kind");
        assert!(
            inode.nlink > 0,
            "entry {name:?} in {dir} names a removed inode"
        );
        *links.entry(d.ino).or_default() += 1;
        if d.kind == FileType::Dir {
            *subdirs.entry(*dir).or_default() += 1;
            assert_eq!(inode.parent, *dir, "directory {}'s parent", d.ino);
        }
    }
    let mut used: BTreeMap<GroupId, Usage> = BTreeMap::new();
    for (ino, i) in &inodes {
        // Every inode, in the trash too, with its size (a symlink's is its
        // target's length), in its own group's row.
        let u = used.entry(m.group_of(*ino)).or_default();
        u.inodes += 1;
        u.bytes += i.size;
        if i.nlink == 0 {
            continue;
        }
        let named = links.get(ino).copied().unwrap_or(0);
        match i.kind {
            FileType::Dir => {
                assert_eq!(
                    named,
                    u32::from(*ino != ROOT_INO),
                    "directory {ino}'s entries"
                );
                let want = 2 + subdirs.get(ino).copied().unwrap_or(0);
                assert_eq!(i.nlink, want, "directory {ino}'s nlink");
            }
            _ => assert_eq!(i.nlink, named, "inode {ino}'s nlink"),
        }
        // Reachable: the parent chain of a directory (or of one entry's
        // directory) ends at the root.
        let mut at = if i.kind == FileType::Dir {
            *ino
        } else {
            let (dir, _) = dentries.iter().find(|(_, d)| d.ino == *ino).unwrap().0;
            *dir
        };
        for _ in 0..=inodes.len() {
            if at == ROOT_INO {
                break;
            }
            at = inodes[&at].parent;
        }
        assert_eq!(at, ROOT_INO, "inode {ino} is not reachable from the root");
        if i.kind == FileType::File {
            check_chunks(m, i);
        }
    }
    for g in GROUPS {
        let row: Usage = m.t.load(&key::usage(g, m.fs)).unwrap().unwrap_or_default();
        let counted = used.get(&g).copied().unwrap_or_default();
        assert_eq!(row, counted, "group {g}'s usage row against its inodes");
        // Every transaction finished: no intent, lock or decision is left.
        for prefix in [
            key::intent_prefix(g),
            key::lock_prefix(g),
            key::begun_prefix(g),
            key::decision_prefix(g),
        ] {
            let left = m.t.scan(&prefix, None, 1).unwrap();
            assert!(left.is_empty(), "group {g} keeps transaction rows {left:?}");
        }
    }
}

/// Nothing past `file`'s end can be read: no chunk lies wholly past it,
/// and in the chunk it ends in, every byte of data past it is covered by
/// a later zero slice (what a truncate leaves).
fn check_chunks(m: &Machine, file: &Inode) {
    let prefix = key::chunk_prefix(m.group_of(file.ino), m.fs, file.ino);
    let chunk = CHUNK as u64;
    for (k, v) in m.t.scan(&prefix, None, usize::MAX).unwrap() {
        let index = u32::from_be_bytes(k[prefix.len()..].try_into().unwrap()) as u64;
        assert!(
            index < file.size.div_ceil(chunk),
            "inode {} of {} bytes has chunk {index}",
            file.ino,
            file.size
        );
        if index != file.size / chunk {
            continue;
        }
        let end = (file.size % chunk) as u32;
        let slices: Vec<Slice> = decode(&v).unwrap();
        for (i, s) in slices.iter().enumerate().filter(|(_, s)| s.id != 0) {
            let (from, to) = (s.pos.max(end), s.pos + s.len);
            let hidden = slices[i + 1..]
                .iter()
                .any(|z| z.id == 0 && z.pos <= from && z.pos + z.len >= to);
            assert!(
                from >= to || hidden,
                "inode {} of {} bytes: slice {} shows bytes {from}..{to} of chunk {index}",
                file.ino,
                file.size,
                s.id
            );
        }
    }
}

/// The tree read back through the read path equals the model's.
fn check_tree(m: &Machine, model: &Model) {
    let fs = m.fs;
    let mut seen = BTreeSet::new();
    let mut dirs = vec![ROOT_INO];
    while let Some(dir) = dirs.pop() {
        let read = ReadRequest::ReadDir {
            fs,
            ino: dir,
            after: None,
            limit: 1000,
        };
        let Ok(MetaResponse::Entries(entries)) = m.read(dir, read) else {
            panic!("readdir of {dir}");
        };
        let listed: BTreeMap<Vec<u8>, Ino> = entries
            .iter()
            .filter(|e| e.name != b"." && e.name != b"..")
            .map(|e| (e.name.clone(), e.dentry.ino))
            .collect();
        assert_eq!(&listed, model.entries(dir), "entries of {dir}");
        for &ino in listed.values() {
            if seen.insert(ino) && model.is_dir(ino) {
                dirs.push(ino);
            }
        }
    }
    seen.insert(ROOT_INO);
    let live: BTreeSet<Ino> = model.nodes.keys().copied().collect();
    assert_eq!(seen, live, "inodes reached from the root");
    for (&ino, node) in &model.nodes {
        let Ok(MetaResponse::Inode(inode)) = m.read(ino, ReadRequest::GetAttr { fs, ino }) else {
            panic!("getattr of {ino}");
        };
        assert_eq!(inode.nlink, node.nlink, "nlink of {ino}");
        if let Some(attrs) = node.attrs {
            let got = (inode.mode & 0o7777, inode.uid, inode.gid);
            assert_eq!(got, attrs, "mode, uid and gid of {ino}");
        }
        if let Kind::File { size } = node.kind {
            assert_eq!(inode.size, size, "size of {ino}");
        }
        let Ok(MetaResponse::XattrNames(names)) = m.read(ino, ReadRequest::ListXattrs { fs, ino })
        else {
            panic!("listxattr of {ino}");
        };
        let names: BTreeSet<Vec<u8>> = names.into_iter().collect();
        let want: BTreeSet<Vec<u8>> = node.xattrs.keys().cloned().collect();
        assert_eq!(names, want, "xattr names of {ino}");
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

/// `CreateFile` as a wrong or hostile client could send it: each
/// refusal changes nothing, and only numbers reserved in the group and
/// never used are taken.
#[test]
fn create_file_takes_only_reserved_numbers_never_used() {
    let mut m = Machine::new();
    let fs = m.fs;
    let root_group = m.group_of(ROOT_INO);
    let other_group = GROUPS.into_iter().find(|g| *g != root_group).unwrap();
    let create = |name: &str, ino: Ino, kind: FileType| WriteRequest::CreateFile {
        fs,
        parent: ROOT_INO,
        name: name.into(),
        ino,
        new: NewInode::plain(kind, 0o644, 0, 0),
        slices: Vec::new(),
        end: 0,
        now: now(),
        written: now(),
    };
    let invalid = |r: Result<MetaResponse, MetaError>| matches!(r, Err(MetaError::Invalid(_)));
    let (start, count) = reserve(&mut m, root_group, 2);
    assert_eq!(count, 2);
    assert!(
        invalid(m.apply_in(root_group, create("a", start + 2, FileType::File))),
        "not reserved"
    );
    let (elsewhere, _) = reserve(&mut m, other_group, 1);
    assert!(
        invalid(m.apply_in(root_group, create("a", elsewhere, FileType::File))),
        "another group's"
    );
    assert!(
        invalid(m.apply_in(root_group, create("a", start, FileType::Dir))),
        "not a file"
    );
    for bad in [0, MAX_RESERVED_INOS + 1] {
        let r = m.apply_in(root_group, WriteRequest::ReserveInos { fs, count: bad });
        assert!(invalid(r), "{bad} numbers");
    }
    let lookup = |m: &Machine, name: &str| {
        m.read(
            ROOT_INO,
            ReadRequest::Lookup {
                fs,
                parent: ROOT_INO,
                name: name.into(),
            },
        )
    };
    assert_eq!(
        lookup(&m, "a"),
        Err(MetaError::NotFound),
        "every refusal changed nothing"
    );
    check_rows(&m);

    let Ok(Some((created, Ok((inode, _))))) = m
        .apply_in(root_group, create("a", start, FileType::File))
        .map(created_file)
    else {
        panic!("a reserved number is taken");
    };
    assert_eq!((created.ino, inode.ino), (start, start));
    assert_eq!(lookup(&m, "a"), Ok(MetaResponse::Inode(created)));
    assert!(
        invalid(m.apply_in(root_group, create("b", start, FileType::File))),
        "in use"
    );
    // A name that exists refuses, and leaves the number for another create.
    assert_eq!(
        m.apply_in(root_group, create("a", start + 1, FileType::File)),
        Err(MetaError::Exists)
    );
    assert!(matches!(
        m.apply_in(root_group, create("b", start + 1, FileType::File)),
        Ok(MetaResponse::FileCreated(_))
    ));
    check_rows(&m);
}
