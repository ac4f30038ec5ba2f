//! The invariants checked after every step: the rows' own, and the tree
//! against the model's.

use super::*;

/// The rows' own invariants, whatever the model says.
pub(super) fn check_rows(m: &Machine) {
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
pub(super) fn check_chunks(m: &Machine, file: &Inode) {
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
pub(super) fn check_tree(m: &Machine, model: &Model) {
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
