//! `ReserveInos` and `CreateFile` as a wrong or hostile client could send them.

use super::*;

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
