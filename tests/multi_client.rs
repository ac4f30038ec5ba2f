//! Two client processes mounting one filesystem of one metaserver process:
//! close-to-open consistency, file locks (flock and fcntl byte ranges) that
//! hold across clients and go when their process or their client dies, and
//! concurrent renames into one directory.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use common::*;

/// A mount of filesystem `data`; returns it with its process id.
fn mount(meta: &str, dir: &Path, extra: &[&str]) -> (Mount, i32) {
    std::fs::create_dir_all(dir).unwrap();
    let mut args = vec!["mount", "-d", "--meta", meta];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["data", dir.to_str().unwrap()]);
    let pid = mount_pid(&run_ok(&args));
    (Mount::adopt(dir), pid)
}

fn setup(tmp: &Path) -> MetaServer {
    setup_with(tmp, &[])
}

/// `setup` with more `meta serve` flags.
fn setup_with(tmp: &Path, meta_flags: &[&str]) -> MetaServer {
    let meta = MetaServer::start_node_with(1, &tmp.join("meta"), "127.0.0.1:0", meta_flags);
    let blocks = tmp.join("blocks");
    std::fs::create_dir_all(&blocks).unwrap();
    run_ok(&[
        "format",
        "--meta",
        &meta.addr,
        "data",
        "--storage",
        &format!("file://{}", blocks.display()),
    ]);
    meta
}

fn open_rw(p: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(p)
        .unwrap()
}

fn flock(f: &std::fs::File, op: i32) -> std::io::Result<()> {
    // SAFETY: flock(2) on a descriptor we own.
    match unsafe { libc::flock(f.as_raw_fd(), op) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// fcntl F_SETLK / F_SETLKW / F_GETLK on `[start, start + len)`; returns
/// the lock F_GETLK reports (type, pid).
fn fcntl_lock(
    f: &std::fs::File,
    cmd: i32,
    typ: i32,
    start: i64,
    len: i64,
) -> std::io::Result<(i32, i32)> {
    // SAFETY: a zeroed flock is a valid value; every field used is set.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start;
    fl.l_len = len;
    // SAFETY: fcntl with a pointer to a live flock struct.
    match unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut fl) } {
        0 => Ok((fl.l_type as i32, fl.l_pid)),
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn would_block(r: std::io::Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(e) if e.raw_os_error() == Some(libc::EAGAIN) || e.raw_os_error() == Some(libc::EACCES))
}

#[test]
fn two_clients_share_files_and_locks() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let meta = setup(tmp.path());
    let (a, _) = mount(&meta.addr, &tmp.path().join("a"), &[]);
    let (b, _) = mount(&meta.addr, &tmp.path().join("b"), &[]);

    // Close-to-open: what A closed, B's next open sees, size and bytes.
    std::fs::write(a.path("shared"), b"first version").unwrap();
    assert_eq!(std::fs::read(b.path("shared")).unwrap(), b"first version");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(a.path("shared"))
            .unwrap();
        f.write_all(b", then more").unwrap();
    }
    assert_eq!(
        std::fs::read(b.path("shared")).unwrap(),
        b"first version, then more"
    );

    // flock: exclusive on A keeps B out until A lets go.
    let fa = open_rw(&a.path("locked"));
    let fb = open_rw(&b.path("locked"));
    flock(&fa, libc::LOCK_EX).unwrap();
    assert!(would_block(flock(&fb, libc::LOCK_EX | libc::LOCK_NB)));
    assert!(would_block(flock(&fb, libc::LOCK_SH | libc::LOCK_NB)));
    flock(&fa, libc::LOCK_UN).unwrap();
    flock(&fb, libc::LOCK_SH | libc::LOCK_NB).unwrap();
    flock(&fa, libc::LOCK_SH | libc::LOCK_NB).unwrap();
    flock(&fa, libc::LOCK_UN).unwrap();
    flock(&fb, libc::LOCK_UN).unwrap();
    drop((fa, fb));

    // fcntl byte ranges.
    let ra = open_rw(&a.path("ranges"));
    let rb = open_rw(&b.path("ranges"));
    fcntl_lock(&ra, libc::F_SETLK, libc::F_WRLCK, 0, 10).unwrap();
    let (typ, pid) = fcntl_lock(&rb, libc::F_GETLK, libc::F_RDLCK, 5, 1).unwrap();
    assert_eq!(typ, libc::F_WRLCK);
    assert_eq!(pid, std::process::id() as i32);
    assert!(would_block(fcntl_lock(
        &rb,
        libc::F_SETLK,
        libc::F_RDLCK,
        9,
        1
    )));
    fcntl_lock(&rb, libc::F_SETLK, libc::F_WRLCK, 10, 10).unwrap();
    let (typ, _) = fcntl_lock(&rb, libc::F_GETLK, libc::F_WRLCK, 20, 5).unwrap();
    assert_eq!(typ, libc::F_UNLCK, "nothing in the way");
    // F_SETLKW on B is granted once A unlocks (that it waits until then,
    // seen at the node, is checked by
    // `a_live_clients_lock_outlives_its_lease_and_a_leader_change`).
    let waiter = std::thread::spawn(move || {
        fcntl_lock(&rb, libc::F_SETLKW, libc::F_WRLCK, 0, 10).map(|_| rb)
    });
    fcntl_lock(&ra, libc::F_SETLK, libc::F_UNLCK, 0, 10).unwrap();
    let rb = waiter.join().unwrap().expect("granted once A unlocked");
    // Closing B's descriptor drops B's locks: A gets the range.
    drop(rb);
    fcntl_lock(&ra, libc::F_SETLK, libc::F_WRLCK, 0, 20).unwrap();
    drop(ra);

    // A process holding an flock on A exits: B gets the lock.
    // (`-o`: only the flock process itself holds the locked descriptor.)
    let mut holder = std::process::Command::new("flock")
        .args(["-x", "-o"])
        .arg(a.path("proc"))
        .args(["-c", "echo locked; exec sleep 600"])
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
    }
    let fb = open_rw(&b.path("proc"));
    assert!(would_block(flock(&fb, libc::LOCK_EX | libc::LOCK_NB)));
    // SAFETY: kill(2) on the process group this test started.
    unsafe { libc::kill(-(holder.id() as i32), libc::SIGKILL) };
    holder.wait().unwrap();
    until(10, "the lock of a dead process to go", || {
        flock(&fb, libc::LOCK_EX | libc::LOCK_NB).is_ok()
    });
    drop(fb);
    a.unmount();
    b.unmount();
}

#[test]
fn locks_of_a_dead_client_lapse() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let meta = setup(tmp.path());
    let (a, a_pid) = mount(&meta.addr, &tmp.path().join("a"), &["--lock-lease", "2"]);
    let (b, _) = mount(&meta.addr, &tmp.path().join("b"), &[]);
    let fa = open_rw(&a.path("f"));
    fcntl_lock(&fa, libc::F_SETLK, libc::F_WRLCK, 0, 0).unwrap();
    let fb = open_rw(&b.path("f"));
    assert!(would_block(fcntl_lock(
        &fb,
        libc::F_SETLK,
        libc::F_WRLCK,
        0,
        0
    )));
    // Client A dies with the lock held: within its lease the lock lapses.
    // SAFETY: kill(2) on the mount process this test started.
    assert_eq!(unsafe { libc::kill(a_pid, libc::SIGKILL) }, 0);
    until(30, "the dead client's lock to lapse", || {
        fcntl_lock(&fb, libc::F_SETLK, libc::F_WRLCK, 0, 0).is_ok()
    });
    drop(fa);
    drop(fb);
    drop(a);
    b.unmount();
}

#[test]
fn concurrent_renames_into_one_directory_lose_nothing() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let meta = setup(tmp.path());
    let (a, _) = mount(&meta.addr, &tmp.path().join("a"), &[]);
    let (b, _) = mount(&meta.addr, &tmp.path().join("b"), &[]);
    std::fs::create_dir(a.path("into")).unwrap();
    const N: usize = 150;
    for side in ["a", "b"] {
        std::fs::create_dir(a.path(side)).unwrap();
        for i in 0..N {
            std::fs::write(a.path(&format!("{side}/f{i}")), format!("{side}{i}")).unwrap();
        }
    }
    let movers: Vec<_> = [("a", a.dir.clone()), ("b", b.dir.clone())]
        .into_iter()
        .map(|(side, root)| {
            std::thread::spawn(move || {
                for i in 0..N {
                    // Both sides also fight over shared names: one wins each.
                    let target = if i % 3 == 0 {
                        format!("into/shared{i}")
                    } else {
                        format!("into/{side}{i}")
                    };
                    std::fs::rename(root.join(format!("{side}/f{i}")), root.join(target)).unwrap();
                }
            })
        })
        .collect();
    for m in movers {
        m.join().unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(b.path("into"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let shared = (0..N).filter(|i| i % 3 == 0).count();
    assert_eq!(names.len(), 2 * N - shared, "every name once");
    for i in (0..N).filter(|i| i % 3 != 0) {
        for side in ["a", "b"] {
            let got = std::fs::read_to_string(a.path(&format!("into/{side}{i}"))).unwrap();
            assert_eq!(got, format!("{side}{i}"));
        }
    }
    for i in (0..N).filter(|i| i % 3 == 0) {
        let got = std::fs::read_to_string(a.path(&format!("into/shared{i}"))).unwrap();
        assert!(got == format!("a{i}") || got == format!("b{i}"), "{got}");
    }
    assert_eq!(std::fs::read_dir(a.path("a")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(a.path("b")).unwrap().count(), 0);
    let fsck = run_ok(&["fsck", "--meta", &meta.addr, "data"]);
    assert!(fsck.contains("clean"), "{fsck}");
    a.unmount();
    b.unmount();
}

#[test]
fn appends_from_two_clients_interleave_without_loss() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let meta = setup(tmp.path());
    let (a, _) = mount(&meta.addr, &tmp.path().join("a"), &[]);
    let (b, _) = mount(&meta.addr, &tmp.path().join("b"), &[]);
    std::fs::write(a.path("log"), b"").unwrap();
    const LINES: usize = 150;
    let writers: Vec<_> = [("A", a.path("log")), ("B", b.path("log"))]
        .into_iter()
        .map(|(who, path)| {
            std::thread::spawn(move || {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
                for i in 0..LINES {
                    // One write per line: each must land whole, after the others.
                    f.write_all(format!("{who}-{i:04}-{}\n", "x".repeat(i % 40)).as_bytes())
                        .unwrap();
                    if i % 10 == 0 {
                        f.sync_all().unwrap();
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let text = std::fs::read_to_string(b.path("log")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 * LINES, "every line, once: {text:?}");
    for who in ["A", "B"] {
        let mine: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with(who))
            .collect();
        let want: Vec<String> = (0..LINES)
            .map(|i| format!("{who}-{i:04}-{}", "x".repeat(i % 40)))
            .collect();
        assert_eq!(mine, want, "{who}'s lines, whole and in order");
    }
    a.unmount();
    b.unmount();
}

#[test]
fn shared_mmap_writes_reach_another_client() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let meta = setup(tmp.path());
    let (a, _) = mount(&meta.addr, &tmp.path().join("a"), &[]);
    let (b, _) = mount(&meta.addr, &tmp.path().join("b"), &[]);
    const LEN: usize = 3 << 20;
    let f = open_rw(&a.path("mapped"));
    f.set_len(LEN as u64).unwrap();
    // SAFETY: a shared mapping of a file we hold open, LEN bytes long;
    // unmapped below before the descriptor closes.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    // SAFETY: the mapping is LEN bytes, writable, and only used here.
    let bytes = unsafe { std::slice::from_raw_parts_mut(map as *mut u8, LEN) };
    for (i, b) in bytes.iter_mut().enumerate().step_by(4093) {
        *b = (i % 251) as u8 + 1;
    }
    let want = bytes.to_vec();
    // SAFETY: the live mapping from above.
    assert_eq!(unsafe { libc::msync(map, LEN, libc::MS_SYNC) }, 0);
    // SAFETY: the live mapping from above, not used after.
    assert_eq!(unsafe { libc::munmap(map, LEN) }, 0);
    drop(f);
    assert!(
        std::fs::read(b.path("mapped")).unwrap() == want,
        "B sees the mapped writes"
    );
    a.unmount();
    b.unmount();
}

/// How many of the first `len` bytes of open file `f` the kernel holds in
/// its page cache (mincore on a mapping, which reads nothing itself).
fn resident_pages(f: &std::fs::File, len: usize) -> usize {
    // SAFETY: a read-only shared mapping of a file we hold open, unmapped
    // below; mincore writes one byte per page into `vec`, sized for them.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(map, libc::MAP_FAILED);
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let mut vec = vec![0u8; len.div_ceil(page)];
        assert_eq!(libc::mincore(map, len, vec.as_mut_ptr()), 0);
        assert_eq!(libc::munmap(map, len), 0);
        vec.iter().filter(|v| **v & 1 == 1).count()
    }
}

#[test]
fn a_client_keeps_pages_of_its_own_writes_until_another_client_writes() {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::FileExt;
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let meta = setup(tmp.path());
    let (a, _) = mount(&meta.addr, &tmp.path().join("a"), &[]);
    let (b, _) = mount(&meta.addr, &tmp.path().join("b"), &[]);
    const PAGE: usize = 4096;

    // What A wrote and closed is still in its page cache at its next open:
    // nothing but A changed the file in between.
    std::fs::write(a.path("f"), [b'a'; 2 * PAGE]).unwrap();
    let mut f = open_rw(&a.path("f"));
    assert_eq!(
        resident_pages(&f, 2 * PAGE),
        2,
        "A's own writes stay cached"
    );
    let mut first = vec![0u8; PAGE];
    f.read_exact(&mut first).unwrap();
    assert!(first == [b'a'; PAGE], "A reads what it wrote");

    // B rewrites page 0 while A holds the file open, then A writes page 1
    // and closes: A's commit lands on B's change, so A's cached page 0
    // (still "a") must not survive A's next open.
    std::fs::OpenOptions::new()
        .write(true)
        .open(b.path("f"))
        .unwrap()
        .write_all_at(&[b'b'; PAGE], 0)
        .unwrap();
    f.seek(SeekFrom::Start(PAGE as u64)).unwrap();
    f.write_all(&[b'c'; PAGE]).unwrap();
    drop(f);
    let mut want = vec![b'b'; PAGE];
    want.extend_from_slice(&[b'c'; PAGE]);
    assert!(
        std::fs::read(a.path("f")).unwrap() == want,
        "A sees B's page 0 next to its own page 1"
    );
    assert!(std::fs::read(b.path("f")).unwrap() == want, "so does B");

    // Once B's change is read, A's own writes are cached again.
    std::fs::OpenOptions::new()
        .write(true)
        .open(a.path("f"))
        .unwrap()
        .write_all_at(&[b'd'; PAGE], 0)
        .unwrap();
    let f = std::fs::File::open(a.path("f")).unwrap();
    assert_eq!(resident_pages(&f, 2 * PAGE), 2);
    drop(f);
    want[..PAGE].fill(b'd');
    assert!(
        std::fs::read(b.path("f")).unwrap() == want,
        "B sees A's rewrite"
    );
    a.unmount();
    b.unmount();
}

/// Makes the kernel let go of the names and inodes it caches (as memory
/// pressure would), so the next lookups come to the clients again.
fn drop_kernel_dentries() {
    std::fs::write("/proc/sys/vm/drop_caches", b"2").unwrap();
}

#[test]
fn names_a_client_remembers_follow_its_own_changes() {
    use std::os::unix::fs::MetadataExt;
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let meta = setup(tmp.path());
    // Long TTLs: what a client remembers of a name cannot simply age out
    // while the test runs, so only forgetting it on a change can pass.
    let ttl = ["--entry-cache", "600", "--attr-cache", "600"];
    let (a, _) = mount(&meta.addr, &tmp.path().join("a"), &ttl);
    let (b, _) = mount(&meta.addr, &tmp.path().join("b"), &[]);
    std::fs::write(a.path("f"), b"x").unwrap();
    std::fs::create_dir(a.path("d")).unwrap();
    let looked_up = |names: &[&str]| {
        drop_kernel_dentries();
        for n in names {
            std::fs::metadata(a.path(n)).unwrap();
        }
        drop_kernel_dentries();
    };
    let gone = |n: &str| {
        std::fs::metadata(a.path(n)).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
    };

    looked_up(&["f", "d"]);
    std::fs::rename(a.path("f"), a.path("g")).unwrap();
    drop_kernel_dentries();
    assert!(gone("f"), "a renamed name is gone");
    assert_eq!(std::fs::read(a.path("g")).unwrap(), b"x");

    looked_up(&["g"]);
    std::fs::hard_link(a.path("g"), a.path("h")).unwrap();
    std::fs::remove_file(a.path("g")).unwrap();
    drop_kernel_dentries();
    assert!(gone("g"), "an unlinked name is gone");
    assert_eq!(std::fs::metadata(a.path("h")).unwrap().nlink(), 1);

    looked_up(&["d", "h"]);
    std::fs::remove_dir(a.path("d")).unwrap();
    std::fs::write(a.path("d"), b"now a file").unwrap();
    drop_kernel_dentries();
    assert!(
        std::fs::metadata(a.path("d")).unwrap().is_file(),
        "d was made again"
    );

    // Another client's new name shows at once: no name is remembered as
    // missing.
    drop_kernel_dentries();
    assert!(gone("new"));
    std::fs::write(b.path("new"), b"from b").unwrap();
    assert_eq!(std::fs::read(a.path("new")).unwrap(), b"from b");
    a.unmount();
    b.unmount();
}

/// The sum over `nodes`' metrics of `strata_node_requests_total` for
/// requests of `kind` answered with `result`.
fn node_requests(nodes: &[String], kind: &str, result: &str) -> u64 {
    let (kind, result) = (format!("kind=\"{kind}\""), format!("result=\"{result}\""));
    nodes
        .iter()
        .filter_map(|addr| http_get(addr, "/metrics"))
        .flat_map(|page| {
            page.lines()
                .filter(|l| l.starts_with("strata_node_requests_total{"))
                .filter(|l| l.contains(&kind) && l.contains(&result))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .map(|v| v as u64)
                .collect::<Vec<_>>()
        })
        .sum()
}

#[test]
fn a_live_clients_lock_outlives_its_lease_and_a_leader_change() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let metrics: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let (mut nodes, addrs) = start_cluster_each(tmp.path(), |id| {
        vec!["--metrics".to_string(), metrics[id as usize - 1].clone()]
    });
    let meta = addrs.join(",");
    let s3 = S3::start(&tmp.path().join("s3"));
    format_data(&meta, &s3, &[]);
    let a = Mount::new(
        &tmp.path().join("a"),
        &["--meta", &meta, "--lock-lease", "2", "data"],
        &s3.env(),
    );
    let b = Mount::new(&tmp.path().join("b"), &["--meta", &meta, "data"], &s3.env());
    let fa = open_rw(&a.path("f"));
    fcntl_lock(&fa, libc::F_SETLK, libc::F_WRLCK, 0, 100).unwrap();
    let fb = open_rw(&b.path("f"));
    let blocked = || would_block(fcntl_lock(&fb, libc::F_SETLK, libc::F_WRLCK, 0, 100));
    assert!(blocked());

    // A lease is 2 s and renewed every third of it: ten renewals answered
    // are more than three lease periods, and the lock is still A's.
    let renewed = node_requests(&metrics, "RenewLocks", "ok");
    until(60, "ten renewals of A's locks", || {
        node_requests(&metrics, "RenewLocks", "ok") >= renewed + 10
    });
    assert!(blocked(), "a live client's lock lapsed");

    // Node 1 formed the cluster and leads every group: its loss moves
    // every leadership. The lock stays, and A keeps renewing it.
    nodes[0].kill9();
    let survivors = &metrics[1..];
    let renewed = node_requests(survivors, "RenewLocks", "ok");
    until(60, "ten renewals at the new leaders", || {
        node_requests(survivors, "RenewLocks", "ok") >= renewed + 10
    });
    assert!(blocked(), "the lock was lost with the leader");

    // F_SETLKW waits: the node refuses B's lock while A holds it (seen in
    // the node's count of WouldBlock answers), and grants it once A
    // unlocks.
    let refused = node_requests(survivors, "SetLock", "WouldBlock");
    let waiter = std::thread::spawn(move || {
        fcntl_lock(&fb, libc::F_SETLKW, libc::F_WRLCK, 0, 100).map(|_| fb)
    });
    until(60, "the node to refuse B's waiting lock", || {
        node_requests(survivors, "SetLock", "WouldBlock") > refused
    });
    assert!(
        !waiter.is_finished(),
        "F_SETLKW gave up while A held the lock"
    );
    fcntl_lock(&fa, libc::F_SETLK, libc::F_UNLCK, 0, 100).unwrap();
    let fb = waiter.join().unwrap().expect("granted once A unlocked");
    drop(fb);
    drop(fa);
    nodes[0] = MetaServer::start_node(1, &tmp.path().join("n1"), &addrs[0]);
    a.unmount();
    b.unmount();
}

/// The metaserver's count of `kind` requests answered `ok`.
fn writes_of(metrics: &str, kind: &str) -> u64 {
    node_requests(&[metrics.to_string()], kind, "ok")
}

#[test]
fn a_small_file_is_created_written_and_closed_in_one_log_write() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let meta = setup_with(tmp.path(), &["--metrics", &metrics]);
    // A create waits for the file's first commit only with the
    // directory's attributes at hand: long TTLs keep them while the test
    // runs, however slowly.
    let ttl = ["--attr-cache", "600", "--entry-cache", "600"];
    let deferring = [&ttl[..], &["--defer-creates"]].concat();
    let (a, _) = mount(&meta.addr, &tmp.path().join("a"), &deferring);
    let (b, _) = mount(&meta.addr, &tmp.path().join("b"), &[]);
    std::fs::create_dir(a.path("d")).unwrap();
    // The first create also reads the quotas and reserves inode numbers.
    std::fs::write(a.path("d/first"), b"1").unwrap();

    let counts = || ["CreateFile", "Create", "WriteSlices"].map(|kind| writes_of(&metrics, kind));
    let before = counts();
    for i in 0..10 {
        std::fs::write(a.path(&format!("d/f{i}")), vec![i as u8; 10_000]).unwrap();
    }
    let [create_file, create, write_slices] = counts();
    assert_eq!(
        [create_file, create, write_slices],
        [before[0] + 10, before[1], before[2]],
        "one CreateFile per file: no Create, no WriteSlices"
    );
    for i in 0..10 {
        let got = std::fs::read(b.path(&format!("d/f{i}"))).unwrap();
        assert_eq!(got, vec![i as u8; 10_000], "B reads f{i}");
    }

    // By default the create goes at open(2): two writes a file.
    let (c, _) = mount(&meta.addr, &tmp.path().join("c"), &ttl);
    std::fs::metadata(c.path("d")).unwrap();
    let before = counts();
    std::fs::write(c.path("d/g"), b"g").unwrap();
    assert_eq!(counts(), [before[0], before[1] + 1, before[2] + 1]);
    a.unmount();
    b.unmount();
    c.unmount();
}

#[test]
fn a_file_created_here_is_everywhere_once_closed_synced_or_used() {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let meta = setup(tmp.path());
    let deferring = [
        "--attr-cache",
        "600",
        "--entry-cache",
        "600",
        "--defer-creates",
    ];
    let (a, _) = mount(&meta.addr, &tmp.path().join("a"), &deferring);
    let (b, _) = mount(&meta.addr, &tmp.path().join("b"), &[]);
    std::fs::metadata(a.path("")).unwrap();
    let create = |name: &str| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(a.path(name))
            .unwrap()
    };

    // fsync: there for B while A still has it open.
    let mut f = create("synced");
    f.write_all(b"synced").unwrap();
    assert_eq!(f.metadata().unwrap().len(), 6, "A's stat shows its writes");
    f.sync_all().unwrap();
    assert_eq!(std::fs::read(b.path("synced")).unwrap(), b"synced");
    drop(f);

    // A file closed without a write.
    drop(create("empty"));
    assert_eq!(std::fs::metadata(b.path("empty")).unwrap().len(), 0);

    // Renamed, and unlinked, while open: the create goes first.
    let mut f = create("before");
    f.write_all(b"one ").unwrap();
    std::fs::rename(a.path("before"), a.path("after")).unwrap();
    f.write_all(b"two").unwrap();
    drop(f);
    assert_eq!(std::fs::read(b.path("after")).unwrap(), b"one two");
    assert!(!b.path("before").exists());
    let mut f = create("gone");
    std::fs::remove_file(a.path("gone")).unwrap();
    f.write_all(b"still readable").unwrap();
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    drop(f);
    assert!(!b.path("gone").exists() && !a.path("gone").exists());

    // A listing, a mkdir of the same name, rmdir of its directory, a
    // hard link: each sees the file.
    std::fs::create_dir(a.path("sub")).unwrap();
    let f = create("sub/open");
    let names: Vec<_> = std::fs::read_dir(a.path("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["open"]);
    let e = std::fs::create_dir(a.path("sub/open")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    let e = std::fs::remove_dir(a.path("sub")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    drop(f);
    let f = create("linked");
    std::fs::hard_link(a.path("linked"), a.path("link2")).unwrap();
    assert_eq!(std::fs::metadata(b.path("link2")).unwrap().nlink(), 2);
    drop(f);

    // O_EXCL (a lock file) is made at open: B sees it before A closes.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(a.path("lock"))
        .unwrap();
    assert!(b.path("lock").exists(), "an O_EXCL create went at open");
    drop(f);

    // Another client made the name first: A's close says so, and B's
    // file stays as B wrote it.
    let mut f = create("raced");
    std::fs::write(b.path("raced"), b"from b").unwrap();
    f.write_all(b"from a").unwrap();
    // SAFETY: closing a descriptor we own, once (into_raw_fd gives it up).
    let closed = unsafe { libc::close(std::os::fd::IntoRawFd::into_raw_fd(f)) };
    assert_eq!(closed, -1, "A's close reports the lost create");
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EEXIST)
    );
    assert_eq!(std::fs::read(b.path("raced")).unwrap(), b"from b");
    // A's kernel still holds the name for the file that never was (the
    // entry TTL is long): told it is stale, it looks the name up again.
    assert_eq!(std::fs::read(a.path("raced")).unwrap(), b"from b");
    a.unmount();
    b.unmount();
}
