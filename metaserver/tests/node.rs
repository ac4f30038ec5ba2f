//! A real one-node metaserver over TCP: metadata operations, their errors, and
//! persistence across a restart.

use strata_meta::request::RenameMode;
use strata_meta::server::MetaNode;
use strata_meta::{FileType, FsSpec, MetaClient, MetaError, NewInode, SetAttr, Slice};
use strata_testkit::{connect, format_fs, restart_node, start_node, test_fs};

/// Formats filesystem `t` on `node` with `partitions` partitions of `size`
/// inode numbers, and opens it.
async fn format(
    node: &MetaNode,
    partitions: u32,
    size: u64,
) -> (std::sync::Arc<MetaClient>, strata_meta::FsClient) {
    let client = connect(node).await;
    let spec = FsSpec {
        partitions,
        partition_size: size,
        ..test_fs("t", 1 << 20, 8 << 20)
    };
    format_fs(&client, &spec).await;
    let fs = client.open_fs("t").await.unwrap();
    (client, fs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_survives_restart_and_errors_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let (client, fs) = format(&node, 2, strata_meta::DEFAULT_PARTITION_SIZE).await;
    let d = fs
        .create(1, b"d", NewInode::plain(FileType::Dir, 0o755, 1, 2))
        .await
        .unwrap();
    let f = fs
        .create(d.ino, b"f", NewInode::plain(FileType::File, 0o644, 1, 2))
        .await
        .unwrap();
    assert_eq!(
        fs.create(d.ino, b"f", NewInode::plain(FileType::File, 0o644, 1, 2))
            .await,
        Err(MetaError::Exists)
    );
    assert_eq!(fs.rmdir(1, b"d").await, Err(MetaError::NotEmpty));
    assert_eq!(
        fs.lookup(1, &[b'x'; 256]).await,
        Err(MetaError::NameTooLong)
    );
    let created = f.clone();
    let written = fs
        .write_slices(
            f.ino,
            vec![(
                0,
                Slice {
                    id: 7,
                    pos: 0,
                    len: 100,
                },
            )],
            100,
            strata_meta::Timestamp::now(),
        )
        .await
        .unwrap();
    // The commit says what the inode was just before it: as created.
    assert_eq!(written.before, Some(created.stamp()));
    let f = written.inode;
    assert_eq!(f.size, 100);
    assert_ne!(f.stamp(), created.stamp());
    fs.link(f.ino, 1, b"hard").await.unwrap();
    assert_eq!(fs.getattr(f.ino).await.unwrap().nlink, 2);
    fs.rename(d.ino, b"f", 1, b"moved", RenameMode::Replace)
        .await
        .unwrap();
    assert_eq!(fs.lookup(d.ino, b"f").await, Err(MetaError::NotFound));
    assert_eq!(fs.getattr(1).await.unwrap().nlink, 3);
    let truncated = fs
        .setattr(
            f.ino,
            SetAttr {
                size: Some(10),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(truncated.size, 10);
    let usage = fs.usage().await.unwrap();
    assert_eq!((usage.inodes, usage.bytes), (3, 10));
    node.shutdown().await;
    let db = node.database_weak();
    drop(client);
    drop(node);
    let mut spins = 0;
    while db.upgrade().is_some() {
        spins += 1;
        assert!(
            spins < 100_000,
            "the database is still in use after shutdown"
        );
        tokio::task::yield_now().await;
    }
    // The last handle may still be closing on another thread (its drop
    // writes and unlocks the file): the restart may have to try again.
    let node = restart_node(dir.path()).await;
    let client = connect(&node).await;
    let fs = client.open_fs("t").await.unwrap();
    let moved = fs.lookup(1, b"moved").await.unwrap();
    assert_eq!((moved.ino, moved.size, moved.nlink), (f.ino, 10, 2));
    let slices = fs.read_chunk(f.ino, 0).await.unwrap();
    assert_eq!(
        slices[0],
        Slice {
            id: 7,
            pos: 0,
            len: 100
        }
    );
    assert_eq!(slices.last().unwrap().id, 0, "truncate left a hole slice");
    // One read for both, as an open asks: the same as the two alone.
    let (attr, first) = fs.getattr_and_chunk(f.ino, 0).await.unwrap();
    assert_eq!((attr, first), (fs.getattr(f.ino).await.unwrap(), slices));
    let (_, beyond) = fs.getattr_and_chunk(f.ino, 1).await.unwrap();
    assert!(beyond.is_empty(), "a chunk never written has no slices");
    assert_eq!(
        fs.getattr_and_chunk(f.ino + 1000, 0).await,
        Err(MetaError::NotFound)
    );
    let names: Vec<Vec<u8>> = fs
        .readdir(1, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        names,
        vec![b"d".to_vec(), b"hard".to_vec(), b"moved".to_vec()]
    );
    assert_eq!(fs.unlink(1, b"hard").await.unwrap(), None, "a link is left");
    assert_eq!(
        fs.unlink(1, b"moved").await.unwrap(),
        Some(moved.ino),
        "last link gone"
    );
    fs.rmdir(1, b"d").await.unwrap();
    // The file waits in the trash (a day by default) and still counts.
    assert_eq!(fs.usage().await.unwrap().inodes, 2);
    let g = fs.group_of(moved.ino).await.unwrap();
    assert_eq!(fs.purge_trash(g, 10).await.unwrap(), 0, "not due yet");
    fs.set_trash_days(0).await.unwrap();
    assert_eq!(fs.purge_trash(g, 10).await.unwrap(), 1);
    assert_eq!(fs.usage().await.unwrap().inodes, 1);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frame_closes_only_that_connection() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let mut raw = tokio::net::TcpStream::connect(&node.addr).await.unwrap();
    raw.write_all(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    use tokio::io::AsyncReadExt;
    // The server hangs up on the garbage frame...
    assert_eq!(raw.read(&mut buf).await.unwrap(), 0);
    // ...and keeps serving everyone else.
    let client = connect(&node).await;
    assert!(client.list_fs().await.unwrap().is_empty());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_applies_once() {
    use strata_meta::request::{MetaResponse, Origin, WriteRequest};
    use strata_meta::rpc::Connection;
    use strata_meta::wire::{Request, Response};
    use strata_meta::{Timestamp, types::CLUSTER_GROUP};
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let (client, fs) = format(&node, 1, strata_meta::DEFAULT_PARTITION_SIZE).await;
    let group = client.partitions(fs.info.id).await.unwrap()[0].group;
    assert_ne!(group, CLUSTER_GROUP);
    let conn = Connection::connect(&node.addr).await.unwrap();
    let create = |seq: u64, done_below: u64| Request::Meta {
        group,
        req: WriteRequest::Create {
            fs: fs.info.id,
            parent: 1,
            name: b"once".to_vec(),
            new: NewInode::plain(FileType::File, 0o644, 0, 0),
            now: Timestamp::now(),
        }
        .into(),
        origin: Some(Origin {
            client: 99,
            seq,
            done_below,
        }),
    };
    let timeout = std::time::Duration::from_secs(10);
    let first = conn.call(create(1, 1), timeout).await.unwrap();
    let made = match first {
        Response::Meta(Ok(r)) => match r.split_changed() {
            (MetaResponse::Inode(i), dirs) => {
                assert_eq!(dirs.len(), 1, "the parent as the create left it");
                assert_eq!(dirs[0].ino, 1);
                i
            }
            other => panic!("create answered {other:?}"),
        },
        other => panic!("create failed: {other:?}"),
    };
    // The same write again (an answer lost on the way) gets the same answer...
    let again = conn.call(create(1, 1), timeout).await.unwrap();
    assert!(
        matches!(again, Response::Meta(Ok(ref r)) if matches!(r.clone().split_changed().0, MetaResponse::Inode(ref i) if i.ino == made.ino))
    );
    assert_eq!(fs.usage().await.unwrap().inodes, 2, "applied once");
    // ...while a new write with the same contents is a new operation.
    let new = conn.call(create(2, 2), timeout).await.unwrap();
    assert!(
        matches!(new, Response::Meta(Err(MetaError::Exists))),
        "{new:?}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_partition_gets_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let (client, fs) = format(&node, 1, 16).await;
    // 16 inode numbers per partition: 60 entries need four partitions.
    for i in 0..60 {
        fs.create(
            1,
            format!("f{i}").as_bytes(),
            NewInode::plain(FileType::File, 0o644, 0, 0),
        )
        .await
        .unwrap_or_else(|e| panic!("create f{i}: {e}"));
    }
    let parts = client.partitions(fs.info.id).await.unwrap();
    assert!(parts.len() >= 4, "partitions were added: {parts:?}");
    for w in parts.windows(2) {
        assert_eq!(w[0].end, w[1].start, "partitions are contiguous");
    }
    let report = strata_meta::client::fsck::check(&fs).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.files, 60);
    // Another client sees every entry, whichever partition holds its inode.
    let late = client.open_fs("t").await.unwrap();
    assert_eq!(late.readdir(1, None, 100).await.unwrap().len(), 60);
    node.shutdown().await;
}

/// Sizes are bounded by `MAX_FILE_SIZE` (EFBIG beyond), and shrinking or
/// punching a hole in a huge sparse file touches only the chunks that
/// exist: a group's apply must not walk every chunk index of the old size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sizes_are_bounded_and_huge_sparse_files_shrink_by_their_chunks() {
    use strata_meta::MAX_FILE_SIZE;
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let (_client, fs) = format(&node, 1, strata_meta::DEFAULT_PARTITION_SIZE).await;
    let f = fs
        .create(1, b"big", NewInode::plain(FileType::File, 0o644, 0, 0))
        .await
        .unwrap();
    let size = |s: u64| SetAttr {
        size: Some(s),
        ..Default::default()
    };
    fn too_big<T>(r: Result<T, MetaError>) -> bool {
        matches!(r, Err(MetaError::FileTooBig(_)))
    }
    assert!(too_big(fs.setattr(f.ino, size(MAX_FILE_SIZE + 1)).await));
    assert!(too_big(
        fs.reserve_append(f.ino, MAX_FILE_SIZE - 10, 11)
            .await
            .map(|_| ())
    ));
    let slice = |id| Slice {
        id,
        pos: 0,
        len: 100,
    };
    let now = strata_meta::Timestamp::now();
    assert!(too_big(
        fs.write_slices(f.ino, vec![(0, slice(1))], MAX_FILE_SIZE + 1, now)
            .await
            .map(|_| ())
    ));
    let chunk = 8u64 << 20;
    let last_chunk = (MAX_FILE_SIZE / chunk - 1) as u32;
    // Data at the start and in the very last chunk of the largest file.
    fs.write_slices(
        f.ino,
        vec![(0, slice(1)), (last_chunk, slice(2))],
        MAX_FILE_SIZE,
        now,
    )
    .await
    .unwrap();
    assert_eq!(fs.getattr(f.ino).await.unwrap().size, MAX_FILE_SIZE);
    // A hole over everything but the first 10 bytes, then a cut to 50.
    fs.punch_hole(f.ino, 10, MAX_FILE_SIZE).await.unwrap();
    assert_eq!(
        fs.read_chunk(f.ino, last_chunk).await.unwrap(),
        vec![
            slice(2),
            Slice {
                id: 0,
                pos: 0,
                len: chunk as u32
            }
        ]
    );
    fs.setattr(f.ino, size(50)).await.unwrap();
    assert_eq!(fs.getattr(f.ino).await.unwrap().size, 50);
    assert!(fs.read_chunk(f.ino, last_chunk).await.unwrap().is_empty());
    assert_eq!(
        fs.read_chunk(f.ino, 0).await.unwrap(),
        vec![
            slice(1),
            Slice {
                id: 0,
                pos: 10,
                len: (chunk - 10) as u32
            },
            Slice {
                id: 0,
                pos: 50,
                len: (chunk - 50) as u32
            },
        ]
    );
}

/// A prepared transaction whose coordinator group does not exist (only a
/// client that made it up can name one) is aborted by recovery, and the
/// name it locked is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_aborts_a_transaction_of_a_group_that_does_not_exist() {
    use strata_meta::request::{TxStep, WriteRequest};
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let (client, fs) = format(&node, 1, strata_meta::DEFAULT_PARTITION_SIZE).await;
    let group = client.partitions(fs.info.id).await.unwrap()[0].group;
    let prepare = WriteRequest::TxPrepare {
        fs: fs.info.id,
        tx: 4242,
        coord: 999,
        participants: vec![group, 998],
        steps: vec![TxStep::PutDentry {
            parent: 1,
            name: b"locked".to_vec(),
            ino: 77,
            kind: FileType::File,
            replace: None,
        }],
        now: strata_meta::Timestamp::now(),
    };
    client.call(group, prepare).await.unwrap();
    assert_eq!(fs.intents(group).await.unwrap().len(), 1);
    // The name is locked by the intent until recovery aborts it (its
    // leader looks every second at intents older than five).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !fs.intents(group).await.unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the intent of a made-up coordinator was never aborted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    fs.create(1, b"locked", NewInode::plain(FileType::File, 0o644, 0, 0))
        .await
        .expect("the name is free once the intent is gone");
}
