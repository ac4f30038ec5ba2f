//! Random sequences of file operations applied to a Strata mount and to a
//! local directory side by side: every result (return code or errno,
//! contents, listings, modes, sizes, link counts) must be the same. A
//! failure names the seed and the step, so it can be replayed.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;

/// What one operation returned, comparable across the two trees.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    Errno(i32),
    Bytes(Vec<u8>),
    Names(Vec<String>),
    /// kind, permission bits, size (files and symlinks), link count
    Stat(String, u32, u64, u64),
}

fn errno(e: std::io::Error) -> Outcome {
    Outcome::Errno(e.raw_os_error().unwrap_or(-1))
}

fn done(r: std::io::Result<()>) -> Outcome {
    r.map_or_else(errno, |()| Outcome::Done)
}

const NAMES: &[&str] = &["a", "b", "c", "d", "e"];

/// A path of up to two levels from the small name pool, so operations
/// collide often and errors get compared too.
fn pick(rng: &mut Rng) -> String {
    let first = NAMES[rng.below(NAMES.len() as u64) as usize];
    if rng.below(3) == 0 {
        let second = NAMES[rng.below(NAMES.len() as u64) as usize];
        format!("{first}/{second}")
    } else {
        first.to_string()
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Applies operation `op` (with its arguments drawn from `rng`, which the
/// caller clones so both trees get the same ones) under `root`.
fn apply(root: &Path, op: u64, rng: &mut Rng) -> Outcome {
    let p = |rel: &str| root.join(rel);
    match op {
        0 => {
            let (path, len) = (pick(rng), rng.below(200_000) as usize);
            let mut data = vec![0u8; len];
            rng.fill(&mut data);
            done(std::fs::write(p(&path), &data))
        }
        1 => {
            let (path, off, len) = (pick(rng), rng.below(300_000), rng.below(70_000) as usize);
            let mut data = vec![0u8; len];
            rng.fill(&mut data);
            done(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(p(&path))
                    .and_then(|f| f.write_all_at(&data, off)),
            )
        }
        2 => {
            let (path, size) = (pick(rng), rng.below(250_000));
            done(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(p(&path))
                    .and_then(|f| f.set_len(size)),
            )
        }
        3 => std::fs::read(p(&pick(rng))).map_or_else(errno, Outcome::Bytes),
        4 => done(std::fs::remove_file(p(&pick(rng)))),
        5 => done(std::fs::create_dir(p(&pick(rng)))),
        6 => done(std::fs::remove_dir(p(&pick(rng)))),
        7 => {
            let (from, to) = (pick(rng), pick(rng));
            done(std::fs::rename(p(&from), p(&to)))
        }
        8 => {
            let (from, to) = (pick(rng), pick(rng));
            done(std::fs::hard_link(p(&from), p(&to)))
        }
        9 => {
            let (target, at) = (pick(rng), pick(rng));
            done(std::os::unix::fs::symlink(&target, p(&at)))
        }
        10 => std::fs::read_link(p(&pick(rng)))
            .map_or_else(errno, |t| Outcome::Bytes(t.as_os_str().as_bytes().to_vec())),
        11 => {
            let (path, mode) = (pick(rng), 0o400 + rng.below(0o400) as u32);
            done(std::fs::set_permissions(
                p(&path),
                std::fs::Permissions::from_mode(mode),
            ))
        }
        12 => std::fs::symlink_metadata(p(&pick(rng))).map_or_else(errno, |m| {
            let kind = if m.is_dir() {
                "dir"
            } else if m.file_type().is_symlink() {
                "symlink"
            } else {
                "file"
            };
            // Directory sizes differ between filesystems by design.
            let size = if m.is_dir() { 0 } else { m.len() };
            Outcome::Stat(kind.into(), m.mode() & 0o7777, size, m.nlink())
        }),
        13 => {
            let dir = if rng.below(2) == 0 {
                String::new()
            } else {
                pick(rng)
            };
            std::fs::read_dir(p(&dir)).map_or_else(errno, |entries| {
                let mut names: Vec<String> = entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                Outcome::Names(names)
            })
        }
        14 => {
            // renameat2 with RENAME_NOREPLACE or RENAME_EXCHANGE.
            let (from, to) = (pick(rng), pick(rng));
            let flags = if rng.below(2) == 0 {
                libc::RENAME_NOREPLACE
            } else {
                libc::RENAME_EXCHANGE
            };
            let (a, b) = (cpath(&p(&from)), cpath(&p(&to)));
            // SAFETY: renameat2 on NUL-terminated paths we own.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    libc::AT_FDCWD,
                    a.as_ptr(),
                    libc::AT_FDCWD,
                    b.as_ptr(),
                    flags,
                )
            };
            if r == 0 {
                Outcome::Done
            } else {
                errno(std::io::Error::last_os_error())
            }
        }
        16 => {
            let (path, name, len) = (pick(rng), xattr_name(rng), rng.below(300) as usize);
            let mut value = vec![0u8; len];
            rng.fill(&mut value);
            let (p, n) = (cpath(&p(&path)), CString::new(name).unwrap());
            // SAFETY: lsetxattr with live NUL-terminated strings and a buffer.
            let r = unsafe {
                libc::lsetxattr(
                    p.as_ptr(),
                    n.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            if r == 0 {
                Outcome::Done
            } else {
                errno(std::io::Error::last_os_error())
            }
        }
        17 => {
            let (path, name) = (pick(rng), xattr_name(rng));
            let (p, n) = (cpath(&p(&path)), CString::new(name).unwrap());
            let mut buf = vec![0u8; 1024];
            // SAFETY: lgetxattr into a buffer of the length given.
            let r = unsafe {
                libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            };
            if r >= 0 {
                buf.truncate(r as usize);
                Outcome::Bytes(buf)
            } else {
                errno(std::io::Error::last_os_error())
            }
        }
        18 => {
            let p = cpath(&p(&pick(rng)));
            let mut buf = vec![0u8; 4096];
            // SAFETY: llistxattr into a buffer of the length given.
            let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            if r >= 0 {
                let mut names: Vec<String> = buf[..r as usize]
                    .split(|&b| b == 0)
                    .filter(|n| !n.is_empty())
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    // Local filesystems may carry security labels of their own.
                    .filter(|n| n.starts_with("user."))
                    .collect();
                names.sort();
                Outcome::Names(names)
            } else {
                errno(std::io::Error::last_os_error())
            }
        }
        19 => {
            let (path, name) = (pick(rng), xattr_name(rng));
            let (p, n) = (cpath(&p(&path)), CString::new(name).unwrap());
            // SAFETY: lremovexattr with live NUL-terminated strings.
            if unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) } == 0 {
                Outcome::Done
            } else {
                errno(std::io::Error::last_os_error())
            }
        }
        20 => {
            // fallocate: punch a hole, zero a range, or grow.
            let (path, off, len) = (
                pick(rng),
                rng.below(250_000) as i64,
                1 + rng.below(100_000) as i64,
            );
            let mode = [
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                libc::FALLOC_FL_ZERO_RANGE,
                0,
            ][rng.below(3) as usize];
            done(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(p(&path))
                    .and_then(|f| {
                        use std::os::fd::AsRawFd;
                        // SAFETY: fallocate on a descriptor we hold open.
                        match unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) } {
                            0 => Ok(()),
                            _ => Err(std::io::Error::last_os_error()),
                        }
                    }),
            )
        }
        21 => {
            // copy_file_range between two files (or within one).
            let (from, to) = (pick(rng), pick(rng));
            let (off_in, off_out, len) = (
                rng.below(200_000) as i64,
                rng.below(200_000) as i64,
                rng.below(150_000) as usize,
            );
            let copy = || -> std::io::Result<i64> {
                use std::os::fd::AsRawFd;
                let src = std::fs::File::open(p(&from))?;
                let dst = std::fs::OpenOptions::new().write(true).open(p(&to))?;
                let (mut a, mut b) = (off_in, off_out);
                // SAFETY: copy_file_range between descriptors we hold open.
                let n = unsafe {
                    libc::copy_file_range(src.as_raw_fd(), &mut a, dst.as_raw_fd(), &mut b, len, 0)
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as i64)
                }
            };
            copy().map_or_else(errno, |n| Outcome::Bytes(n.to_le_bytes().to_vec()))
        }
        _ => {
            // Append through O_APPEND.
            let (path, len) = (pick(rng), rng.below(50_000) as usize);
            let mut data = vec![0u8; len];
            rng.fill(&mut data);
            done(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(p(&path))
                    .and_then(|mut f| std::io::Write::write_all(&mut f, &data)),
            )
        }
    }
}

const OPS: u64 = 23;

fn xattr_name(rng: &mut Rng) -> String {
    format!("user.k{}", rng.below(3))
}

#[test]
fn random_operations_match_a_local_directory() {
    random_operations_on(&[]);
}

/// With creates sent at each file's first commit (decision 71).
#[test]
fn random_operations_match_a_local_directory_with_deferred_creates() {
    random_operations_on(&["--defer-creates"]);
}

fn random_operations_on(flags: &[&str]) {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let m = Mount::new(
        &tmp.path().join("mnt"),
        &[&["--data-dir", data.to_str().unwrap()], flags].concat(),
        &[],
    );
    for seed in [11u64, 12, 13] {
        let strata: PathBuf = m.path(&format!("s{seed}"));
        let local: PathBuf = tmp.path().join(format!("local{seed}"));
        std::fs::create_dir(&strata).unwrap();
        std::fs::create_dir(&local).unwrap();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        for step in 0..400 {
            let op = rng.below(OPS);
            let mut args = Rng(rng.next());
            let mut same_args = Rng(args.0);
            let got = apply(&strata, op, &mut args);
            let want = apply(&local, op, &mut same_args);
            assert!(
                got == want,
                "seed {seed} step {step} (operation {op}): Strata gave {got:?}, a local directory {want:?}"
            );
        }
    }
    m.unmount();
}

#[test]
fn o_direct_reads_and_writes_round_trip() {
    use std::os::unix::fs::OpenOptionsExt;
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let m = Mount::new(
        &tmp.path().join("mnt"),
        &["--data-dir", tmp.path().join("data").to_str().unwrap()],
        &[],
    );
    /// A 4 KiB-aligned buffer, as O_DIRECT wants.
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    let mut pages: Vec<Page> = (0..8).map(|i| Page([i as u8 + 1; 4096])).collect();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(m.path("direct"))
        .unwrap();
    for (i, p) in pages.iter().enumerate() {
        f.write_all_at(&p.0, i as u64 * 4096).unwrap();
    }
    for p in pages.iter_mut() {
        p.0.fill(0);
    }
    for (i, p) in pages.iter_mut().enumerate() {
        f.read_exact_at(&mut p.0, i as u64 * 4096).unwrap();
        assert!(p.0.iter().all(|&b| b == i as u8 + 1), "page {i}");
    }
    drop(f);
    let all = std::fs::read(m.path("direct")).unwrap();
    assert_eq!(all.len(), 8 * 4096);
    assert!(
        all.chunks(4096)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&b| b == i as u8 + 1))
    );
    m.unmount();
}
