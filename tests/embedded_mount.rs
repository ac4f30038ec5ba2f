//! The embedded default through the kernel's FUSE: real file I/O on a mount,
//! then everything checked again after unmount and remount.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;

fn mount(dir: &Path, data: &Path) -> Mount {
    Mount::new(dir, &["--data-dir", data.to_str().unwrap()], &[])
}

fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    // SAFETY: valid path and two timespecs.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) },
        0
    );
}

#[derive(Debug, PartialEq)]
struct Attrs {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    nlink: u64,
    mtime: (i64, i64),
    atime: (i64, i64),
}

fn attrs(path: &Path) -> Attrs {
    let m = std::fs::symlink_metadata(path).unwrap();
    Attrs {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        size: m.size(),
        nlink: m.nlink(),
        mtime: (m.mtime(), m.mtime_nsec()),
        atime: (m.atime(), m.atime_nsec()),
    }
}

#[test]
fn embedded_mount_keeps_files_across_remount() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mnt = tmp.path().join("mnt");
    let m = mount(&mnt, &data);

    // Random writes over several blocks (4 MiB) and two chunks (64 MiB).
    let model = random_writes(&m.path("random.bin"), 0x5eed, 300, 80 << 20, 1 << 20);
    assert_same_file(&m.path("random.bin"), &model, "before remount");

    // Append, overwrite, truncate down and up, sparse.
    let p = m.path("edit.txt");
    std::fs::write(&p, b"hello world").unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b", appended").unwrap();
    }
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(b"HELLO", 0).unwrap();
        f.set_len(8).unwrap();
        f.set_len(12).unwrap();
    }
    assert_eq!(std::fs::read(&p).unwrap(), b"HELLO wo\0\0\0\0");
    let sparse = m.path("sparse.bin");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&sparse).unwrap();
        f.write_all_at(b"end", (200 << 20) - 3).unwrap();
    }
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&sparse).unwrap();
        let mut buf = vec![1u8; 1 << 20];
        f.read_exact_at(&mut buf, 100 << 20).unwrap();
        assert!(buf.iter().all(|&b| b == 0), "holes read as zeros");
        let mut tail = [0u8; 3];
        f.read_exact_at(&mut tail, (200 << 20) - 3).unwrap();
        assert_eq!(&tail, b"end");
    }

    // Directories, renames (same dir, across dirs, replacing), links.
    std::fs::create_dir_all(m.path("a/b/c")).unwrap();
    std::fs::write(m.path("a/one"), b"1").unwrap();
    std::fs::write(m.path("a/two"), b"2").unwrap();
    std::fs::rename(m.path("a/one"), m.path("a/uno")).unwrap();
    std::fs::rename(m.path("a/uno"), m.path("a/b/c/uno")).unwrap();
    std::fs::rename(m.path("a/two"), m.path("a/b/c/uno")).unwrap();
    assert_eq!(std::fs::read(m.path("a/b/c/uno")).unwrap(), b"2");
    assert!(!m.path("a/two").exists());
    std::fs::rename(m.path("a/b"), m.path("moved-b")).unwrap();
    assert_eq!(
        std::fs::rename(m.path("moved-b"), m.path("moved-b/c/inside"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EINVAL)
    );
    assert_eq!(
        std::fs::remove_dir(m.path("moved-b"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOTEMPTY)
    );
    std::os::unix::fs::symlink("moved-b/c/uno", m.path("link")).unwrap();
    assert_eq!(
        std::fs::read_link(m.path("link")).unwrap().to_str(),
        Some("moved-b/c/uno")
    );
    assert_eq!(std::fs::read(m.path("link")).unwrap(), b"2");
    std::fs::hard_link(m.path("edit.txt"), m.path("hard.txt")).unwrap();
    assert_eq!(std::fs::metadata(m.path("edit.txt")).unwrap().nlink(), 2);
    std::fs::create_dir(m.path("gone")).unwrap();
    std::fs::remove_dir(m.path("gone")).unwrap();
    std::fs::write(m.path("deleted"), b"x").unwrap();
    std::fs::remove_file(m.path("deleted")).unwrap();
    assert!(!m.path("deleted").exists());
    let long = "n".repeat(256);
    assert_eq!(
        std::fs::write(m.path(&long), b"")
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENAMETOOLONG)
    );

    // Modes, owners, times.
    std::fs::set_permissions(m.path("edit.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(m.path("edit.txt"), Some(1234), Some(5678)).unwrap();
    set_times(
        &m.path("edit.txt"),
        (1_000_000_000, 5),
        (1_100_000_000, 123_456_789),
    );

    // A directory of 10 000 entries, listed completely.
    std::fs::create_dir(m.path("many")).unwrap();
    for i in 0..10_000 {
        std::fs::File::create(m.path(&format!("many/f{i:05}"))).unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(m.path("many"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 10_000);
    assert_eq!(names[0], "f00000");
    assert_eq!(names[9_999], "f09999");

    // statfs answers and counts the files.
    let c = CString::new(mnt.to_str().unwrap()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-struct.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    assert!(st.f_files - st.f_ffree >= 10_000, "statfs counts inodes");

    let paths = [
        "edit.txt",
        "hard.txt",
        "random.bin",
        "sparse.bin",
        "moved-b",
        "moved-b/c/uno",
        "link",
        "a",
        "many",
    ];
    let before: BTreeMap<&str, Attrs> = paths.iter().map(|p| (*p, attrs(&m.path(p)))).collect();
    assert_eq!(before["edit.txt"].mode & 0o7777, 0o640);
    assert_eq!(
        (before["edit.txt"].uid, before["edit.txt"].gid),
        (1234, 5678)
    );
    assert_eq!(before["edit.txt"].mtime, (1_100_000_000, 123_456_789));
    m.unmount();

    let m = mount(&mnt, &data);
    let after: BTreeMap<&str, Attrs> = paths.iter().map(|p| (*p, attrs(&m.path(p)))).collect();
    assert_eq!(before, after, "attributes survive remount");
    assert_same_file(&m.path("random.bin"), &model, "after remount");
    assert_eq!(
        std::fs::read(m.path("hard.txt")).unwrap(),
        b"HELLO wo\0\0\0\0"
    );
    assert_eq!(std::fs::read_dir(m.path("many")).unwrap().count(), 10_000);
    let out = run_ok(&["status", "--data-dir", data.to_str().unwrap()]);
    assert!(
        out.contains("default"),
        "status names the filesystem: {out}"
    );
    m.unmount();

    // With nothing mounted, status opens the data dir directly.
    let out = run_ok(&["status", "--data-dir", data.to_str().unwrap()]);
    assert!(out.contains("inodes"), "{out}");
}

#[test]
fn a_file_of_several_gib_round_trips() {
    require_fuse();
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let m = mount(&tmp.path().join("mnt"), &data);
    const GIB: usize = 1 << 30;
    let total = 2 * GIB + 12_345;
    let block = |i: usize| -> Vec<u8> {
        let mut r = Rng(i as u64 + 1);
        let mut b = vec![0u8; 1 << 20];
        r.fill(&mut b);
        b
    };
    {
        let mut f = std::fs::File::create(m.path("big")).unwrap();
        let mut written = 0;
        let mut i = 0;
        while written < total {
            let b = block(i);
            let n = b.len().min(total - written);
            f.write_all(&b[..n]).unwrap();
            written += n;
            i += 1;
        }
        f.sync_all().unwrap();
    }
    assert_eq!(
        std::fs::metadata(m.path("big")).unwrap().len(),
        total as u64
    );
    let mut f = std::fs::File::open(m.path("big")).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0;
    let mut i = 0;
    while read < total {
        let n = buf.len().min(total - read);
        f.read_exact(&mut buf[..n]).unwrap();
        assert!(buf[..n] == block(i)[..n], "MiB {i} differs");
        read += n;
        i += 1;
    }
    drop(f);
    m.unmount();
}

#[test]
fn sigterm_on_a_foreground_mount_flushes_and_unmounts() {
    require_fuse();
    use std::io::{BufRead, BufReader, Write};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mnt = tmp.path().join("mnt");
    let mut child = strata()
        .args([
            "mount",
            "--data-dir",
            data.to_str().unwrap(),
            mnt.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("mounted on"), "{line}");
    // Written but not closed: the data sits in the mount's buffer when SIGTERM arrives.
    let mut open = std::fs::File::create(mnt.join("pending")).unwrap();
    open.write_all(b"buffered at shutdown").unwrap();
    std::fs::write(mnt.join("closed"), b"closed before").unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "mount exited with {status}");
    drop(open);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(mnt.to_str().unwrap()),
        "still mounted after SIGTERM"
    );

    let m = mount(&mnt, &data);
    assert_eq!(std::fs::read(m.path("closed")).unwrap(), b"closed before");
    assert_eq!(
        std::fs::read(m.path("pending")).unwrap(),
        b"buffered at shutdown"
    );
    m.unmount();
}
