//! The state machine alone against a reference model of a POSIX namespace:
//! proptest-generated sequences of creates (files, directories, symlinks),
//! links, unlinks, rmdirs, renames with each flag, truncates, writes of
//! slices and extended attributes are applied by `ops::apply` to rows in
//! memory (no Raft, redb or network) and to the model. Each answer must
//! match the model's (as an errno), the rows must keep their invariants
//! after every step (no entry without its inode, link counts equal the
//! entries, every live inode reachable from the root, the usage row equal
//! to the inodes and their sizes, no slice past its file's end), and the
//! tree read back through `read_rows` must equal the model's. A failing
//! sequence shrinks to a minimal one.
//!
//! `MODEL_CASES=N` runs N sequences (default 512, of 1 to 119 steps: about
//! 30 000 steps); `bench/model_ops.sh` runs a million steps.
//! A failure prints the shrunk sequence of steps; `PROPTEST_RNG_SEED=S`
//! runs the generator from seed S (to explore others, or to reproduce).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use crate::MetaError;
use crate::client::FsSpec;
use crate::request::{
    MetaResponse, ReadRequest, RenameMode, TxId, TxStep, WriteRequest, XattrMode,
};
use crate::server::ops::{apply, read_rows};
use crate::server::store::{MemRows, Rows, decode, key};
use crate::types::*;

/// The partition groups: the root's, and another one that directories
/// made by cross-group transactions go to.
const GROUPS: [GroupId; 2] = [1, 2];
/// A few names, so that operations meet existing entries often.
const NAMES: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];
const CHUNK: u32 = 1 << 20;

#[derive(Clone, Debug)]
enum Op {
    /// kind: 0 file, 1 directory, 2 symlink.
    Create {
        dir: u8,
        name: u8,
        kind: u8,
    },
    Link {
        file: u8,
        dir: u8,
        name: u8,
    },
    Unlink {
        dir: u8,
        name: u8,
    },
    Rmdir {
        dir: u8,
        name: u8,
    },
    /// mode: 0 replace, 1 no-replace, 2 exchange.
    Rename {
        dir: u8,
        name: u8,
        to: u8,
        to_name: u8,
        mode: u8,
    },
    Truncate {
        file: u8,
        size: u32,
    },
    Write {
        file: u8,
        len: u32,
    },
    /// mode: 0 any, 1 create, 2 replace.
    SetXattr {
        node: u8,
        name: u8,
        value: u8,
        mode: u8,
    },
    RemoveXattr {
        node: u8,
        name: u8,
    },
    /// mkdir with the new directory in the other group: a cross-group
    /// transaction, cut short at `crash` (0: not; 1: after begin; 2: after
    /// prepare; 3: after commit; 4: after the participants finished) and
    /// then recovered as a node's recovery would.
    MkdirAway {
        dir: u8,
        name: u8,
        crash: u8,
    },
    /// rmdir by a cross-group transaction, of a directory in another group
    /// than its entry (cut short as `MkdirAway`).
    RmdirTx {
        dir: u8,
        name: u8,
        crash: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let sel = any::<u8>;
    let name = || 0u8..NAMES.len() as u8;
    prop_oneof![
        4 => (sel(), name(), 0u8..3).prop_map(|(dir, name, kind)| Op::Create { dir, name, kind }),
        1 => (sel(), sel(), name()).prop_map(|(file, dir, name)| Op::Link { file, dir, name }),
        2 => (sel(), name()).prop_map(|(dir, name)| Op::Unlink { dir, name }),
        1 => (sel(), name()).prop_map(|(dir, name)| Op::Rmdir { dir, name }),
        3 => (sel(), name(), sel(), name(), 0u8..3)
            .prop_map(|(dir, name, to, to_name, mode)| Op::Rename { dir, name, to, to_name, mode }),
        1 => (sel(), 0u32..3 * CHUNK).prop_map(|(file, size)| Op::Truncate { file, size }),
        2 => (sel(), 1u32..=CHUNK).prop_map(|(file, len)| Op::Write { file, len }),
        1 => (sel(), 0u8..3, any::<u8>(), 0u8..3)
            .prop_map(|(node, name, value, mode)| Op::SetXattr { node, name, value, mode }),
        1 => (sel(), 0u8..3).prop_map(|(node, name)| Op::RemoveXattr { node, name }),
        2 => (sel(), name(), 0u8..5).prop_map(|(dir, name, crash)| Op::MkdirAway { dir, name, crash }),
        1 => (sel(), name(), 0u8..5).prop_map(|(dir, name, crash)| Op::RmdirTx { dir, name, crash }),
    ]
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    File { size: u64 },
    Dir { entries: BTreeMap<Vec<u8>, Ino> },
    Symlink,
}

#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    nlink: u32,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// A directory's parent (a directory has one entry).
    parent: Ino,
}

/// What the namespace should be: live inodes by number.
struct Model {
    nodes: BTreeMap<Ino, Node>,
}

impl Model {
    fn new() -> Model {
        let root = Node {
            kind: Kind::Dir {
                entries: BTreeMap::new(),
            },
            nlink: 2,
            xattrs: BTreeMap::new(),
            parent: ROOT_INO,
        };
        Model {
            nodes: BTreeMap::from([(ROOT_INO, root)]),
        }
    }

    fn pick(&self, sel: u8, f: impl Fn(&Node) -> bool) -> Option<Ino> {
        let all: Vec<Ino> = self
            .nodes
            .iter()
            .filter(|(_, n)| f(n))
            .map(|(i, _)| *i)
            .collect();
        (!all.is_empty()).then(|| all[sel as usize % all.len()])
    }

    fn dir(&self, sel: u8) -> Ino {
        self.pick(sel, |n| matches!(n.kind, Kind::Dir { .. }))
            .expect("the root is a directory")
    }

    fn entries(&self, dir: Ino) -> &BTreeMap<Vec<u8>, Ino> {
        match &self.nodes[&dir].kind {
            Kind::Dir { entries } => entries,
            _ => unreachable!("not a directory"),
        }
    }

    fn entries_mut(&mut self, dir: Ino) -> &mut BTreeMap<Vec<u8>, Ino> {
        match &mut self.nodes.get_mut(&dir).unwrap().kind {
            Kind::Dir { entries } => entries,
            _ => unreachable!("not a directory"),
        }
    }

    fn is_dir(&self, ino: Ino) -> bool {
        matches!(self.nodes[&ino].kind, Kind::Dir { .. })
    }

    /// Whether directory `d` is `anc` or below it.
    fn below(&self, mut d: Ino, anc: Ino) -> bool {
        loop {
            if d == anc {
                return true;
            }
            if d == ROOT_INO {
                return false;
            }
            d = self.nodes[&d].parent;
        }
    }

    /// Takes away one link of `ino`, named in `dir`.
    fn drop_link(&mut self, dir: Ino, ino: Ino) {
        if self.is_dir(ino) {
            self.nodes.remove(&ino);
            self.nodes.get_mut(&dir).unwrap().nlink -= 1;
            return;
        }
        let n = self.nodes.get_mut(&ino).unwrap();
        n.nlink -= 1;
        if n.nlink == 0 {
            self.nodes.remove(&ino);
        }
    }

    /// `ino`'s entry now in `to` instead of `from`: a directory's parent
    /// and the two parents' link counts follow.
    fn moved(&mut self, ino: Ino, from: Ino, to: Ino) {
        if self.is_dir(ino) && from != to {
            self.nodes.get_mut(&ino).unwrap().parent = to;
            self.nodes.get_mut(&from).unwrap().nlink -= 1;
            self.nodes.get_mut(&to).unwrap().nlink += 1;
        }
    }
}

/// The state machine's rows, with one filesystem formatted over `GROUPS`.
struct Machine {
    t: MemRows,
    fs: FsId,
    parts: Vec<Partition>,
    next_slice: SliceId,
    next_tx: TxId,
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

use libc_errno::*;
/// The errnos the model answers with.
mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const EEXIST: i32 = 17;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const ENOTEMPTY: i32 = 39;
    pub const ENODATA: i32 = 61;
}

/// Runs `op` on both; panics (failing the case) where they differ.
fn step(m: &mut Machine, model: &mut Model, op: &Op) {
    let fs = m.fs;
    let name = |i: u8| NAMES[i as usize % NAMES.len()].to_vec();
    match *op {
        Op::Create { dir, name: n, kind } => {
            let (dir, n) = (model.dir(dir), name(n));
            let (kind, symlink) = match kind {
                0 => (FileType::File, None),
                1 => (FileType::Dir, None),
                _ => (FileType::Symlink, Some(b"target".to_vec())),
            };
            let new = NewInode {
                symlink,
                ..NewInode::plain(kind, 0o644, 0, 0)
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
            let want = if model.entries(dir).contains_key(&n) {
                EEXIST
            } else {
                0
            };
            assert_eq!(errno(&r), want, "{op:?}: {r:?}");
            let Ok(MetaResponse::Inode(inode)) = r else {
                return;
            };
            let node = Node {
                kind: match kind {
                    FileType::File => Kind::File { size: 0 },
                    FileType::Dir => Kind::Dir {
                        entries: BTreeMap::new(),
                    },
                    _ => Kind::Symlink,
                },
                nlink: if kind == FileType::Dir { 2 } else { 1 },
                xattrs: BTreeMap::new(),
                parent: dir,
            };
            assert!(
                model.nodes.insert(inode.ino, node).is_none(),
                "inode {} given twice",
                inode.ino
            );
            model.entries_mut(dir).insert(n, inode.ino);
            if kind == FileType::Dir {
                model.nodes.get_mut(&dir).unwrap().nlink += 1;
            }
        }
        Op::Link { file, dir, name: n } => {
            let Some(ino) = model.pick(file, |x| !matches!(x.kind, Kind::Dir { .. })) else {
                return;
            };
            let (dir, n) = (model.dir(dir), name(n));
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
            let exists = model.entries(dir).contains_key(&n);
            assert_eq!(errno(&r), if exists { EEXIST } else { 0 }, "{op:?}: {r:?}");
            if !exists {
                model.entries_mut(dir).insert(n, ino);
                model.nodes.get_mut(&ino).unwrap().nlink += 1;
            }
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
            let want = match model.entries(dir).get(&n) {
                None => ENOENT,
                Some(&i) if model.is_dir(i) => EISDIR,
                Some(_) => 0,
            };
            assert_eq!(errno(&r), want, "{op:?}: {r:?}");
            if want == 0 {
                let ino = model.entries_mut(dir).remove(&n).unwrap();
                model.drop_link(dir, ino);
            }
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
            let want = match model.entries(dir).get(&n) {
                None => ENOENT,
                Some(&i) if !model.is_dir(i) => ENOTDIR,
                Some(&i) if !model.entries(i).is_empty() => ENOTEMPTY,
                Some(_) => 0,
            };
            assert_eq!(errno(&r), want, "{op:?}: {r:?}");
            if want == 0 {
                let ino = model.entries_mut(dir).remove(&n).unwrap();
                model.drop_link(dir, ino);
            }
        }
        Op::Rename {
            dir,
            name: n,
            to,
            to_name,
            mode,
        } => {
            let (dir, n, to, to_name) = (model.dir(dir), name(n), model.dir(to), name(to_name));
            let mode = match mode {
                0 => RenameMode::Replace,
                1 => RenameMode::NoReplace,
                _ => RenameMode::Exchange,
            };
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
            let r = m.apply(
                dir,
                WriteRequest::RenameWith {
                    fs,
                    parent: dir,
                    name: n.clone(),
                    new_parent: to,
                    new_name: to_name.clone(),
                    mode,
                    now: now(),
                },
            );
            let want = rename_in_model(model, (dir, &n), (to, &to_name), mode);
            assert_eq!(errno(&r), want, "{op:?}: {r:?}");
        }
        Op::Truncate { file, size } => {
            let Some(ino) = model.pick(file, |x| matches!(x.kind, Kind::File { .. })) else {
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
            model.nodes.get_mut(&ino).unwrap().kind = Kind::File { size: size as u64 };
        }
        Op::Write { file, len } => {
            let Some(ino) = model.pick(file, |x| matches!(x.kind, Kind::File { .. })) else {
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
            let node = model.nodes.get_mut(&ino).unwrap();
            if let Kind::File { size } = &mut node.kind {
                *size = (*size).max(len as u64);
            }
        }
        Op::SetXattr {
            node,
            name: n,
            value,
            mode,
        } => {
            let ino = model.pick(node, |_| true).expect("the root");
            let n = [b"user.".as_slice(), &name(n)].concat();
            let mode = match mode {
                0 => XattrMode::Any,
                1 => XattrMode::Create,
                _ => XattrMode::Replace,
            };
            let r = m.apply(
                ino,
                WriteRequest::SetXattr {
                    fs,
                    ino,
                    name: n.clone(),
                    value: vec![value],
                    mode,
                    now: now(),
                },
            );
            let xattrs = &mut model.nodes.get_mut(&ino).unwrap().xattrs;
            let want = match (mode, xattrs.contains_key(&n)) {
                (XattrMode::Create, true) => EEXIST,
                (XattrMode::Replace, false) => ENODATA,
                _ => 0,
            };
            assert_eq!(errno(&r), want, "{op:?}: {r:?}");
            if want == 0 {
                xattrs.insert(n, vec![value]);
            }
        }
        Op::RemoveXattr { node, name: n } => {
            let ino = model.pick(node, |_| true).expect("the root");
            let n = [b"user.".as_slice(), &name(n)].concat();
            let r = m.apply(
                ino,
                WriteRequest::RemoveXattr {
                    fs,
                    ino,
                    name: n.clone(),
                    now: now(),
                },
            );
            let xattrs = &mut model.nodes.get_mut(&ino).unwrap().xattrs;
            let want = if xattrs.remove(&n).is_some() {
                0
            } else {
                ENODATA
            };
            assert_eq!(errno(&r), want, "{op:?}: {r:?}");
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
            let want = if model.entries(dir).contains_key(&n) {
                EEXIST
            } else {
                0
            };
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
                let node = Node {
                    kind: Kind::Dir {
                        entries: BTreeMap::new(),
                    },
                    nlink: 2,
                    xattrs: BTreeMap::new(),
                    parent: dir,
                };
                model.nodes.insert(ino, node);
                model.entries_mut(dir).insert(n, ino);
                model.nodes.get_mut(&dir).unwrap().nlink += 1;
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
            let want = if model.entries(ino).is_empty() {
                0
            } else {
                ENOTEMPTY
            };
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
                model.entries_mut(dir).remove(&n);
                model.drop_link(dir, ino);
            }
        }
    }
}

/// rename(2) with `mode` in the model; returns the errno it should give.
fn rename_in_model(
    model: &mut Model,
    (dir, n): (Ino, &[u8]),
    (to, to_name): (Ino, &[u8]),
    mode: RenameMode,
) -> i32 {
    let Some(&src) = model.entries(dir).get(n) else {
        return ENOENT;
    };
    let target = model.entries(to).get(to_name).copied();
    // Linux's order: what the lookups find, then loops, then kinds.
    match (&mode, target) {
        (RenameMode::Exchange, None) => return ENOENT,
        (RenameMode::NoReplace, Some(_)) => return EEXIST,
        _ => {}
    }
    if model.is_dir(src) && model.below(to, src) {
        return EINVAL;
    }
    match (mode, target) {
        (RenameMode::Exchange, None) => ENOENT,
        (RenameMode::Exchange, Some(tgt)) => {
            if model.is_dir(tgt) && model.below(dir, tgt) {
                return EINVAL;
            }
            if (dir, n) == (to, to_name) {
                return 0;
            }
            model.entries_mut(dir).insert(n.to_vec(), tgt);
            model.entries_mut(to).insert(to_name.to_vec(), src);
            model.moved(src, dir, to);
            model.moved(tgt, to, dir);
            0
        }
        (RenameMode::NoReplace, Some(_)) => EEXIST,
        (RenameMode::Replace, Some(tgt)) if tgt == src => 0,
        (RenameMode::Replace, Some(tgt)) => {
            match (model.is_dir(src), model.is_dir(tgt)) {
                (true, false) => return ENOTDIR,
                (false, true) => return EISDIR,
                (true, true) if !model.entries(tgt).is_empty() => return ENOTEMPTY,
                _ => {}
            }
            model.entries_mut(to).remove(to_name);
            model.drop_link(to, tgt);
            model.entries_mut(dir).remove(n);
            model.entries_mut(to).insert(to_name.to_vec(), src);
            model.moved(src, dir, to);
            0
        }
        (_, None) => {
            model.entries_mut(dir).remove(n);
            model.entries_mut(to).insert(to_name.to_vec(), src);
            model.moved(src, dir, to);
            0
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

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn state_machine_matches_a_posix_model(ops in prop::collection::vec(op(), 1..120)) {
        let mut m = Machine::new();
        let mut model = Model::new();
        for op in &ops {
            step(&mut m, &mut model, op);
            check_rows(&m);
        }
        check_tree(&m, &model);
    }
}
