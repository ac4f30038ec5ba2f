//! A reference model of a POSIX namespace (directories, files, symlinks,
//! hard links, sizes, extended attributes) and proptest strategies for
//! sequences of operations on it. The metaserver's state machine test
//! (`metaserver/src/server/ops/model_tests/`) and the filesystem core's
//! (`fuse-client/tests/core_model.rs`) run the same generated sequences
//! against the model and compare every answer and the final tree.
//!
//! It knows nothing of Strata's types (inode numbers are `u64`s), so the
//! metaserver's own unit tests can use it.

use std::collections::BTreeMap;

use proptest::prelude::*;

pub type Ino = u64;
/// The root directory's inode number.
pub const ROOT: Ino = 1;
/// A few names, so that operations meet existing entries often.
pub const NAMES: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];
/// Most bytes one `Op::Write` writes, and a truncate's sizes reach three times that.
pub const MAX_WRITE: u32 = 1 << 20;

/// The errnos the model answers with (Linux's numbers).
pub mod errno {
    pub const ENOENT: i32 = 2;
    pub const EEXIST: i32 = 17;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const ENOTEMPTY: i32 = 39;
    pub const ENODATA: i32 = 61;
}
use errno::*;

/// One generated operation. Selectors (`dir`, `file`, `node`) pick among
/// what exists when the operation runs (modulo their number), so that a
/// shrunk sequence still makes sense.
#[derive(Clone, Debug)]
pub enum Op {
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
    /// chmod and chown at once (a setattr of mode, uid and gid) of
    /// anything but a symlink: `mode` modulo 0o7777, `owner` one of `OWNERS`.
    SetAttr {
        node: u8,
        mode: u16,
        owner: u8,
    },
    /// A snapshot of the whole filesystem (where the test can take one):
    /// read-only, and as the tree was when taken, whatever happens after.
    Snapshot,
    /// mkdir with the new directory in another metadata group: a
    /// cross-group transaction, which a test of the state machine cuts
    /// short after phase `crash` (0: not; 1: after begin; 2: after prepare;
    /// 3: after commit; 4: after the participants finished) and recovers.
    MkdirAway {
        dir: u8,
        name: u8,
        crash: u8,
    },
    /// rmdir of a directory in another group than its entry, by a
    /// transaction cut short as `MkdirAway`'s.
    RmdirTx {
        dir: u8,
        name: u8,
        crash: u8,
    },
}

/// Operations in proportions that keep a tree of a few dozen entries busy.
pub fn op() -> impl Strategy<Value = Op> {
    let sel = any::<u8>;
    let name = || 0u8..NAMES.len() as u8;
    prop_oneof![
        4 => (sel(), name(), 0u8..3).prop_map(|(dir, name, kind)| Op::Create { dir, name, kind }),
        1 => (sel(), sel(), name()).prop_map(|(file, dir, name)| Op::Link { file, dir, name }),
        2 => (sel(), name()).prop_map(|(dir, name)| Op::Unlink { dir, name }),
        1 => (sel(), name()).prop_map(|(dir, name)| Op::Rmdir { dir, name }),
        3 => (sel(), name(), sel(), name(), 0u8..3)
            .prop_map(|(dir, name, to, to_name, mode)| Op::Rename { dir, name, to, to_name, mode }),
        1 => (sel(), 0u32..3 * MAX_WRITE).prop_map(|(file, size)| Op::Truncate { file, size }),
        2 => (sel(), 1u32..=MAX_WRITE).prop_map(|(file, len)| Op::Write { file, len }),
        1 => (sel(), 0u8..3, any::<u8>(), 0u8..3)
            .prop_map(|(node, name, value, mode)| Op::SetXattr { node, name, value, mode }),
        1 => (sel(), 0u8..3).prop_map(|(node, name)| Op::RemoveXattr { node, name }),
        1 => (sel(), any::<u16>(), any::<u8>())
            .prop_map(|(node, mode, owner)| Op::SetAttr { node, mode, owner }),
        1 => Just(Op::Snapshot),
        2 => (sel(), name(), 0u8..5).prop_map(|(dir, name, crash)| Op::MkdirAway { dir, name, crash }),
        1 => (sel(), name(), 0u8..5).prop_map(|(dir, name, crash)| Op::RmdirTx { dir, name, crash }),
    ]
}

/// The owners (uid, gid) `Op::SetAttr`'s owner selector picks among.
pub const OWNERS: [(u32, u32); 3] = [(0, 0), (1000, 1000), (1000, 0)];

/// The name `Op`'s name selector `i` stands for.
pub fn name(i: u8) -> Vec<u8> {
    NAMES[i as usize % NAMES.len()].to_vec()
}

/// An extended attribute's name for selector `i`.
pub fn xattr_name(i: u8) -> Vec<u8> {
    [b"user.".as_slice(), &name(i)].concat()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameHow {
    Replace,
    NoReplace,
    Exchange,
}

impl RenameHow {
    pub fn of(mode: u8) -> RenameHow {
        match mode {
            0 => RenameHow::Replace,
            1 => RenameHow::NoReplace,
            _ => RenameHow::Exchange,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrHow {
    Any,
    Create,
    Replace,
}

impl XattrHow {
    pub fn of(mode: u8) -> XattrHow {
        match mode {
            0 => XattrHow::Any,
            1 => XattrHow::Create,
            _ => XattrHow::Replace,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File { size: u64 },
    Dir { entries: BTreeMap<Vec<u8>, Ino> },
    Symlink,
}

impl Kind {
    /// `Op::Create`'s kind selector.
    pub fn new(kind: u8) -> Kind {
        match kind {
            0 => Kind::File { size: 0 },
            1 => Kind::Dir {
                entries: BTreeMap::new(),
            },
            _ => Kind::Symlink,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    pub nlink: u32,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// A directory's parent (a directory has one entry).
    pub parent: Ino,
    /// Permission bits, uid and gid as the last `Op::SetAttr` left them
    /// (None before one: how it was made is up to the caller).
    pub attrs: Option<(u32, u32, u32)>,
}

/// What the namespace should be: live inodes by number.
#[derive(Clone)]
pub struct Model {
    pub nodes: BTreeMap<Ino, Node>,
}

impl Default for Model {
    fn default() -> Model {
        Model::new()
    }
}

impl Model {
    pub fn new() -> Model {
        let root = Node {
            kind: Kind::new(1),
            nlink: 2,
            xattrs: BTreeMap::new(),
            parent: ROOT,
            attrs: None,
        };
        Model {
            nodes: BTreeMap::from([(ROOT, root)]),
        }
    }

    /// The `sel`-th (modulo their number) live inode for which `f` holds.
    pub fn pick(&self, sel: u8, f: impl Fn(&Node) -> bool) -> Option<Ino> {
        let all: Vec<Ino> = self
            .nodes
            .iter()
            .filter(|(_, n)| f(n))
            .map(|(i, _)| *i)
            .collect();
        (!all.is_empty()).then(|| all[sel as usize % all.len()])
    }

    pub fn dir(&self, sel: u8) -> Ino {
        self.pick(sel, |n| matches!(n.kind, Kind::Dir { .. }))
            .expect("the root is a directory")
    }

    /// A regular file.
    pub fn file(&self, sel: u8) -> Option<Ino> {
        self.pick(sel, |n| matches!(n.kind, Kind::File { .. }))
    }

    /// Anything but a directory (what a hard link may name).
    pub fn linkable(&self, sel: u8) -> Option<Ino> {
        self.pick(sel, |n| !matches!(n.kind, Kind::Dir { .. }))
    }

    /// Anything but a symlink (what `Op::SetAttr` changes).
    pub fn not_symlink(&self, sel: u8) -> Ino {
        self.pick(sel, |n| !matches!(n.kind, Kind::Symlink))
            .expect("the root")
    }

    /// setattr(2) of mode and owner: `(mode, uid, gid)` as they are now.
    pub fn setattr(&mut self, ino: Ino, mode: u16, owner: u8) -> (u32, u32, u32) {
        let (uid, gid) = OWNERS[owner as usize % OWNERS.len()];
        let attrs = (u32::from(mode) & 0o7777, uid, gid);
        self.nodes.get_mut(&ino).unwrap().attrs = Some(attrs);
        attrs
    }

    pub fn any(&self, sel: u8) -> Ino {
        self.pick(sel, |_| true).expect("the root")
    }

    pub fn entries(&self, dir: Ino) -> &BTreeMap<Vec<u8>, Ino> {
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

    pub fn is_dir(&self, ino: Ino) -> bool {
        matches!(self.nodes[&ino].kind, Kind::Dir { .. })
    }

    /// Whether directory `d` is `anc` or below it.
    pub fn below(&self, mut d: Ino, anc: Ino) -> bool {
        loop {
            if d == anc {
                return true;
            }
            if d == ROOT {
                return false;
            }
            d = self.nodes[&d].parent;
        }
    }

    /// The answer to creating `name` in `dir`.
    pub fn create_errno(&self, dir: Ino, name: &[u8]) -> i32 {
        if self.entries(dir).contains_key(name) {
            EEXIST
        } else {
            0
        }
    }

    /// `ino` (of `Op::Create`'s `kind`) made as `dir/name`.
    pub fn created(&mut self, dir: Ino, name: Vec<u8>, ino: Ino, kind: u8) {
        let kind = Kind::new(kind);
        let is_dir = matches!(kind, Kind::Dir { .. });
        let node = Node {
            kind,
            nlink: if is_dir { 2 } else { 1 },
            xattrs: BTreeMap::new(),
            parent: dir,
            attrs: None,
        };
        assert!(
            self.nodes.insert(ino, node).is_none(),
            "inode {ino} given twice"
        );
        self.entries_mut(dir).insert(name, ino);
        if is_dir {
            self.nodes.get_mut(&dir).unwrap().nlink += 1;
        }
    }

    /// link(2); returns its errno and, if 0, makes the link.
    pub fn link(&mut self, ino: Ino, dir: Ino, name: &[u8]) -> i32 {
        if self.entries(dir).contains_key(name) {
            return EEXIST;
        }
        self.entries_mut(dir).insert(name.to_vec(), ino);
        self.nodes.get_mut(&ino).unwrap().nlink += 1;
        0
    }

    /// unlink(2).
    pub fn unlink(&mut self, dir: Ino, name: &[u8]) -> i32 {
        match self.entries(dir).get(name) {
            None => ENOENT,
            Some(&i) if self.is_dir(i) => EISDIR,
            Some(&i) => {
                self.entries_mut(dir).remove(name);
                self.drop_link(dir, i);
                0
            }
        }
    }

    /// The answer to rmdir(2) of `dir/name`.
    pub fn rmdir_errno(&self, dir: Ino, name: &[u8]) -> i32 {
        match self.entries(dir).get(name) {
            None => ENOENT,
            Some(&i) if !self.is_dir(i) => ENOTDIR,
            Some(&i) if !self.entries(i).is_empty() => ENOTEMPTY,
            Some(_) => 0,
        }
    }

    /// rmdir(2).
    pub fn rmdir(&mut self, dir: Ino, name: &[u8]) -> i32 {
        let e = self.rmdir_errno(dir, name);
        if e == 0 {
            let ino = self.entries_mut(dir).remove(name).unwrap();
            self.drop_link(dir, ino);
        }
        e
    }

    /// rename(2) with `how`; returns its errno and, if 0, renames. Errors
    /// in Linux's order: what the lookups find, then loops, then kinds.
    pub fn rename(
        &mut self,
        (dir, n): (Ino, &[u8]),
        (to, to_name): (Ino, &[u8]),
        how: RenameHow,
    ) -> i32 {
        let Some(&src) = self.entries(dir).get(n) else {
            return ENOENT;
        };
        let target = self.entries(to).get(to_name).copied();
        match (how, target) {
            (RenameHow::Exchange, None) => return ENOENT,
            (RenameHow::NoReplace, Some(_)) => return EEXIST,
            _ => {}
        }
        if self.is_dir(src) && self.below(to, src) {
            return EINVAL;
        }
        match (how, target) {
            (RenameHow::Exchange, Some(tgt)) => {
                if self.is_dir(tgt) && self.below(dir, tgt) {
                    return EINVAL;
                }
                if (dir, n) == (to, to_name) {
                    return 0;
                }
                self.entries_mut(dir).insert(n.to_vec(), tgt);
                self.entries_mut(to).insert(to_name.to_vec(), src);
                self.moved(src, dir, to);
                self.moved(tgt, to, dir);
                0
            }
            (RenameHow::Replace, Some(tgt)) if tgt == src => 0,
            (RenameHow::Replace, Some(tgt)) => {
                match (self.is_dir(src), self.is_dir(tgt)) {
                    (true, false) => return ENOTDIR,
                    (false, true) => return EISDIR,
                    (true, true) if !self.entries(tgt).is_empty() => return ENOTEMPTY,
                    _ => {}
                }
                self.entries_mut(to).remove(to_name);
                self.drop_link(to, tgt);
                self.entries_mut(dir).remove(n);
                self.entries_mut(to).insert(to_name.to_vec(), src);
                self.moved(src, dir, to);
                0
            }
            _ => {
                self.entries_mut(dir).remove(n);
                self.entries_mut(to).insert(to_name.to_vec(), src);
                self.moved(src, dir, to);
                0
            }
        }
    }

    pub fn truncate(&mut self, ino: Ino, size: u64) {
        self.nodes.get_mut(&ino).unwrap().kind = Kind::File { size };
    }

    /// `len` bytes written at offset 0.
    pub fn wrote(&mut self, ino: Ino, len: u64) {
        if let Kind::File { size } = &mut self.nodes.get_mut(&ino).unwrap().kind {
            *size = (*size).max(len);
        }
    }

    /// setxattr(2).
    pub fn setxattr(&mut self, ino: Ino, name: &[u8], value: &[u8], how: XattrHow) -> i32 {
        let xattrs = &mut self.nodes.get_mut(&ino).unwrap().xattrs;
        match (how, xattrs.contains_key(name)) {
            (XattrHow::Create, true) => EEXIST,
            (XattrHow::Replace, false) => ENODATA,
            _ => {
                xattrs.insert(name.to_vec(), value.to_vec());
                0
            }
        }
    }

    /// removexattr(2).
    pub fn removexattr(&mut self, ino: Ino, name: &[u8]) -> i32 {
        let xattrs = &mut self.nodes.get_mut(&ino).unwrap().xattrs;
        if xattrs.remove(name).is_some() {
            0
        } else {
            ENODATA
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
