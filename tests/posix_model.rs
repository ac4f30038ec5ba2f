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

const OPS: u64 = 16;

#[test]
fn random_operations_match_a_local_directory() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let m = Mount::new(
        &tmp.path().join("mnt"),
        &["--data-dir", tmp.path().join("data").to_str().unwrap()],
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
