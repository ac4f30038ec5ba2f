//! The filesystem core without FUSE, over a real one-node metaserver and a
//! local-directory object store, checked against an in-memory model.

use std::sync::Arc;

use strata_cache::{BlockCache, BlockCacheConfig, LocalStore};
use strata_fuse::{FilePos, Filesystem, FsConfig, Owner};
use strata_meta::SetAttr;
use strata_meta::server::MetaNode;
use strata_testkit::{Rng, connect, node_with_fs};

const ROOT: Owner = Owner::ROOT;

struct Env {
    _dir: tempfile::TempDir,
    node: Arc<MetaNode>,
    fs: Arc<Filesystem>,
}

/// Small blocks and chunks so a few KiB already span several of each.
async fn setup(block: u32, chunk: u32) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = node_with_fs(&dir.path().join("meta"), "t", block, chunk).await;
    let meta = client.open_fs("t").await.unwrap();
    let store = Arc::new(LocalStore::new(dir.path().join("blocks")).unwrap());
    let cache = BlockCache::new(store, BlockCacheConfig::default()).unwrap();
    let fs = Filesystem::new(
        meta,
        cache,
        FsConfig {
            file_buffer: 300 << 10,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    Env {
        _dir: dir,
        node,
        fs,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_writes_truncates_and_reads_match_a_model() {
    let env = setup(64 << 10, 256 << 10).await;
    let fs = &env.fs;
    let (file, fh) = fs.create(1, b"f", 0o644, libc::O_RDWR, ROOT).await.unwrap();
    let mut model: Vec<u8> = Vec::new();
    for seed in [1u64, 2, 3] {
        let mut rng = Rng(seed * 0x9e37_79b9);
        for step in 0..200 {
            match rng.below(10) {
                0 => {
                    let size = rng.below(1 << 20);
                    fs.setattr(
                        file.ino,
                        SetAttr {
                            size: Some(size),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                    model.resize(size as usize, 0);
                }
                1 | 2 => {
                    let off = rng.below(model.len() as u64 + 1);
                    let len = rng.below(200_000) as u32;
                    let got = fs.read(file.ino, fh, off, len).await.unwrap();
                    let end = (off as usize + len as usize).min(model.len());
                    let want = if off as usize >= model.len() {
                        &[][..]
                    } else {
                        &model[off as usize..end]
                    };
                    assert!(
                        got == want,
                        "seed {seed} step {step}: read [{off}, +{len}) differs"
                    );
                }
                _ => {
                    let off = rng.below(1 << 20);
                    let len = 1 + rng.below(150_000) as usize;
                    let data: Vec<u8> = (0..len)
                        .map(|i| (i as u64 * 31 + step + seed) as u8)
                        .collect();
                    assert_eq!(
                        fs.write(file.ino, fh, off, &data).await.unwrap(),
                        len as u32
                    );
                    let end = off as usize + len;
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[off as usize..end].copy_from_slice(&data);
                    assert_eq!(fs.getattr(file.ino).await.unwrap().size, model.len() as u64);
                }
            }
        }
    }
    fs.release(file.ino, fh, None).await.unwrap();
    // A fresh handle sees exactly the model.
    let fh = fs.open(file.ino, libc::O_RDONLY).await.unwrap();
    let all = fs
        .read(file.ino, fh, 0, model.len() as u32 + 10)
        .await
        .unwrap();
    assert!(all == model[..], "final contents differ");
    fs.release(file.ino, fh, None).await.unwrap();
    env.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readdir_pages_through_a_large_directory() {
    let env = setup(64 << 10, 256 << 10).await;
    let fs = &env.fs;
    let dir = fs.mkdir(1, b"d", 0o755, ROOT).await.unwrap();
    for i in 0..1500 {
        fs.mknod(
            dir.ino,
            format!("e{i:04}").as_bytes(),
            strata_meta::FileType::File,
            0o644,
            0,
            ROOT,
        )
        .await
        .unwrap();
    }
    let fh = fs.opendir(dir.ino).await.unwrap();
    let mut names = Vec::new();
    let mut cookie = 0;
    loop {
        let page = fs.readdir(dir.ino, fh, cookie, 100).await.unwrap();
        if page.is_empty() {
            break;
        }
        for (next, e) in page {
            names.push(String::from_utf8(e.name).unwrap());
            cookie = next;
        }
    }
    assert_eq!(names.len(), 1502);
    assert_eq!(&names[..3], &[".", "..", "e0000"]);
    assert_eq!(names.last().unwrap(), "e1499");
    fs.releasedir(dir.ino, fh).await.unwrap();
    env.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_errnos() {
    let env = setup(64 << 10, 256 << 10).await;
    let fs = &env.fs;
    fs.mkdir(1, b"d", 0o755, ROOT).await.unwrap();
    assert_eq!(
        fs.mkdir(1, b"d", 0o755, ROOT).await.unwrap_err().errno,
        libc::EEXIST
    );
    assert_eq!(fs.lookup(1, b"nope").await.unwrap_err().errno, libc::ENOENT);
    assert_eq!(fs.unlink(1, b"d").await.unwrap_err().errno, libc::EISDIR);
    assert_eq!(
        fs.rmdir(1, &[b'a'; 300]).await.unwrap_err().errno,
        libc::ENAMETOOLONG
    );
    let f = fs
        .mknod(1, b"f", strata_meta::FileType::File, 0o644, 0, ROOT)
        .await
        .unwrap();
    assert_eq!(
        fs.mkdir(f.ino, b"x", 0o755, ROOT).await.unwrap_err().errno,
        libc::ENOTDIR
    );
    assert_eq!(
        fs.rename(1, b"d", 1, b"f", 0).await.unwrap_err().errno,
        libc::ENOTDIR
    );
    env.node.shutdown().await;
}

/// After each change, the attributes this client keeps for the kernel's
/// next GETATTR equal what the metaserver holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_a_change_left_behind_match_the_metaserver() {
    let env = setup(64 << 10, 256 << 10).await;
    let fs = &env.fs;
    let same = |ino| async move {
        let (kept, ttl) = fs.recent_attr(ino).expect("kept after a change");
        assert!(ttl <= fs.config().attr_ttl);
        assert_eq!(kept, fs.getattr(ino).await.unwrap());
    };
    let a = fs.mkdir(1, b"a", 0o755, ROOT).await.unwrap();
    same(1).await;
    let b = fs.mkdir(1, b"b", 0o755, ROOT).await.unwrap();
    assert_eq!(fs.recent_attr(1).unwrap().0.nlink, 4, "two subdirectories");
    let (f, fh) = fs
        .create(a.ino, b"f", 0o644, libc::O_RDWR, ROOT)
        .await
        .unwrap();
    same(f.ino).await;
    fs.write(f.ino, fh, 0, b"hello").await.unwrap();
    assert!(
        fs.recent_attr(f.ino).is_none(),
        "not while writes are buffered"
    );
    fs.release(f.ino, fh, None).await.unwrap();
    same(f.ino).await;
    assert_eq!(fs.recent_attr(f.ino).unwrap().0.size, 5);
    same(a.ino).await;
    fs.link(f.ino, b.ino, b"g").await.unwrap();
    same(b.ino).await;
    same(f.ino).await;
    fs.rename(a.ino, b"f", b.ino, b"h", 0).await.unwrap();
    same(a.ino).await;
    same(b.ino).await;
    same(f.ino).await;
    fs.rename(1, b"a", b.ino, b"a2", 0).await.unwrap();
    same(1).await;
    same(b.ino).await;
    same(a.ino).await;
    fs.unlink(b.ino, b"g").await.unwrap();
    same(b.ino).await;
    same(f.ino).await;
    fs.setattr(
        b.ino,
        SetAttr {
            mode: Some(0o700),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    same(b.ino).await;
    fs.rmdir(b.ino, b"a2").await.unwrap();
    same(b.ino).await;
    assert!(
        fs.recent_attr(a.ino).is_none(),
        "a removed directory is dropped"
    );
    fs.unlink(b.ino, b"h").await.unwrap();
    assert!(fs.recent_attr(f.ino).is_none(), "no links left");
    env.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_attributes_follow_linux_rules() {
    let env = setup(64 << 10, 256 << 10).await;
    let fs = &env.fs;
    let f = fs
        .mknod(1, b"f", strata_meta::FileType::File, 0o644, 0, ROOT)
        .await
        .unwrap();
    assert_eq!(
        fs.getxattr(f.ino, b"user.a").await.unwrap_err().errno,
        libc::ENODATA
    );
    assert!(fs.listxattr(f.ino).await.unwrap().is_empty());
    fs.setxattr(f.ino, b"user.a", b"one", 0).await.unwrap();
    let ctime = fs.getattr(f.ino).await.unwrap().ctime;
    assert!(ctime >= f.ctime, "setxattr changes ctime");
    assert_eq!(fs.getxattr(f.ino, b"user.a").await.unwrap(), b"one");
    // XATTR_CREATE on an existing name, XATTR_REPLACE on a missing one.
    assert_eq!(
        fs.setxattr(f.ino, b"user.a", b"x", 1)
            .await
            .unwrap_err()
            .errno,
        libc::EEXIST
    );
    assert_eq!(
        fs.setxattr(f.ino, b"user.b", b"x", 2)
            .await
            .unwrap_err()
            .errno,
        libc::ENODATA
    );
    assert_eq!(
        fs.setxattr(f.ino, b"user.b", b"x", 3)
            .await
            .unwrap_err()
            .errno,
        libc::EINVAL
    );
    fs.setxattr(f.ino, b"user.a", b"two", 2).await.unwrap();
    fs.setxattr(f.ino, b"trusted.t", b"", 0).await.unwrap();
    fs.setxattr(f.ino, b"security.s", &[7u8; 65536], 0)
        .await
        .unwrap();
    assert_eq!(
        fs.setxattr(f.ino, b"user.big", &[7u8; 65537], 0)
            .await
            .unwrap_err()
            .errno,
        libc::E2BIG
    );
    assert_eq!(
        fs.listxattr(f.ino).await.unwrap(),
        vec![
            b"security.s".to_vec(),
            b"trusted.t".to_vec(),
            b"user.a".to_vec()
        ]
    );
    assert_eq!(fs.getxattr(f.ino, b"user.a").await.unwrap(), b"two");
    assert_eq!(fs.getxattr(f.ino, b"trusted.t").await.unwrap(), b"");
    fs.removexattr(f.ino, b"user.a").await.unwrap();
    assert_eq!(
        fs.removexattr(f.ino, b"user.a").await.unwrap_err().errno,
        libc::ENODATA
    );
    assert_eq!(
        fs.getxattr(f.ino, b"user.a").await.unwrap_err().errno,
        libc::ENODATA
    );
    // Directories carry them too, and a removed inode takes its own along.
    let d = fs.mkdir(1, b"d", 0o755, ROOT).await.unwrap();
    fs.setxattr(d.ino, b"user.d", b"dir", 0).await.unwrap();
    assert_eq!(fs.getxattr(d.ino, b"user.d").await.unwrap(), b"dir");
    fs.rmdir(1, b"d").await.unwrap();
    let meta = connect(&env.node).await.open_fs("t").await.unwrap();
    assert_eq!(
        meta.list_xattrs(d.ino).await.unwrap_err(),
        strata_meta::MetaError::NotFound
    );
    env.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_noreplace_and_exchange() {
    let env = setup(64 << 10, 256 << 10).await;
    let fs = &env.fs;
    let (noreplace, exchange) = (libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE);
    let file = |name: &'static [u8]| async move {
        fs.mknod(1, name, strata_meta::FileType::File, 0o644, 0, ROOT)
            .await
            .unwrap()
    };
    let a = file(b"a").await;
    let b = file(b"b").await;
    assert_eq!(
        fs.rename(1, b"a", 1, b"b", noreplace)
            .await
            .unwrap_err()
            .errno,
        libc::EEXIST
    );
    fs.rename(1, b"a", 1, b"c", noreplace).await.unwrap();
    assert_eq!(fs.lookup(1, b"c").await.unwrap().ino, a.ino);
    // Exchange two files: each name now shows the other's inode.
    fs.rename(1, b"c", 1, b"b", exchange).await.unwrap();
    assert_eq!(fs.lookup(1, b"c").await.unwrap().ino, b.ino);
    assert_eq!(fs.lookup(1, b"b").await.unwrap().ino, a.ino);
    assert_eq!(
        fs.rename(1, b"c", 1, b"missing", exchange)
            .await
            .unwrap_err()
            .errno,
        libc::ENOENT
    );
    // A directory and a file in different directories: link counts follow.
    let d1 = fs.mkdir(1, b"d1", 0o755, ROOT).await.unwrap();
    let sub = fs.mkdir(d1.ino, b"sub", 0o755, ROOT).await.unwrap();
    let d2 = fs.mkdir(1, b"d2", 0o755, ROOT).await.unwrap();
    let f = fs
        .mknod(d2.ino, b"f", strata_meta::FileType::File, 0o644, 0, ROOT)
        .await
        .unwrap();
    fs.rename(d1.ino, b"sub", d2.ino, b"f", exchange)
        .await
        .unwrap();
    assert_eq!(fs.lookup(d1.ino, b"sub").await.unwrap().ino, f.ino);
    assert_eq!(fs.lookup(d2.ino, b"f").await.unwrap().ino, sub.ino);
    assert_eq!(fs.getattr(d1.ino).await.unwrap().nlink, 2);
    assert_eq!(fs.getattr(d2.ino).await.unwrap().nlink, 3);
    assert_eq!(fs.getattr(sub.ino).await.unwrap().parent, d2.ino);
    // Never a directory into its own subtree.
    let inner = fs.mkdir(sub.ino, b"inner", 0o755, ROOT).await.unwrap();
    let x = fs
        .mknod(inner.ino, b"x", strata_meta::FileType::File, 0o644, 0, ROOT)
        .await
        .unwrap();
    assert_eq!(
        fs.rename(d2.ino, b"f", inner.ino, b"x", exchange)
            .await
            .unwrap_err()
            .errno,
        libc::EINVAL
    );
    assert_eq!(fs.lookup(inner.ino, b"x").await.unwrap().ino, x.ino);
    assert_eq!(
        fs.rename(1, b"b", 1, b"c", 4).await.unwrap_err().errno,
        libc::EINVAL,
        "whiteouts are refused"
    );
    env.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallocate_punches_holes_and_copy_file_range_copies() {
    let env = setup(64 << 10, 256 << 10).await;
    let fs = &env.fs;
    let (f, fh) = fs.create(1, b"f", 0o644, libc::O_RDWR, ROOT).await.unwrap();
    let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8 + 1).collect();
    fs.write(f.ino, fh, 0, &data).await.unwrap();
    // Punch a hole across a chunk boundary: zeros there, the size unchanged.
    fs.fallocate(f.ino, fh, 200_000, 100_000, 0x01 | 0x02)
        .await
        .unwrap();
    let mut want = data.clone();
    want[200_000..300_000].fill(0);
    assert_eq!(fs.getattr(f.ino).await.unwrap().size, 600_000);
    assert!(fs.read(f.ino, fh, 0, 600_000).await.unwrap()[..] == want[..]);
    // Allocating past the end grows the file (zeros); with KEEP_SIZE it does not.
    fs.fallocate(f.ino, fh, 590_000, 20_000, 0x01)
        .await
        .unwrap();
    assert_eq!(fs.getattr(f.ino).await.unwrap().size, 600_000);
    fs.fallocate(f.ino, fh, 590_000, 20_000, 0).await.unwrap();
    assert_eq!(fs.getattr(f.ino).await.unwrap().size, 610_000);
    want.resize(610_000, 0);
    // ZERO_RANGE zeroes without KEEP_SIZE too.
    fs.fallocate(f.ino, fh, 10, 20, 0x10).await.unwrap();
    want[10..30].fill(0);
    assert!(fs.read(f.ino, fh, 0, 700_000).await.unwrap()[..] == want[..]);
    for (mode, errno) in [
        (0x02, libc::EINVAL),
        (0x08, libc::EOPNOTSUPP),
        (0x01 | 0x02 | 0x10, libc::EINVAL),
    ] {
        assert_eq!(
            fs.fallocate(f.ino, fh, 0, 10, mode)
                .await
                .unwrap_err()
                .errno,
            errno,
            "mode {mode:#x}"
        );
    }
    let (g, gh) = fs.create(1, b"g", 0o644, libc::O_RDWR, ROOT).await.unwrap();
    let from = FilePos {
        ino: f.ino,
        fh,
        offset: 100,
    };
    let to = FilePos {
        ino: g.ino,
        fh: gh,
        offset: 7,
    };
    let n = fs.copy_file_range(from, to, 10 << 20).await.unwrap();
    assert_eq!(n as usize, want.len() - 100, "stops at the source's end");
    let copied = fs.read(g.ino, gh, 0, 1 << 20).await.unwrap();
    assert!(copied[..7] == [0; 7] && copied[7..] == want[100..]);
    fs.release(f.ino, fh, None).await.unwrap();
    fs.release(g.ino, gh, None).await.unwrap();
    env.node.shutdown().await;
}
