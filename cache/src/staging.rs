//! Write-back staging on local disk. With `--writeback` a written block is
//! made durable here first and uploaded in the background, and the commit
//! that will reference it waits here as a small record until its blocks are
//! uploaded. After a crash the client finds both at start and finishes the
//! job, so nothing fsync acknowledged is lost.
//!
//! Layout under the staging dir: `blocks/<key>` (keys contain '/', so
//! blocks sit in subdirectories as in the disk cache) and
//! `records/<seq, 20 digits>`. Every file ends in a CRC32 of its bytes and is
//! written as a temporary file, fsynced, renamed into place, and its
//! directory fsynced: a file under its final name is whole. Temporary files
//! left by a crash are removed at open.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

const TRAILER: usize = 4;
const TMP_PREFIX: &str = ".tmp-";

pub struct Staging {
    blocks: PathBuf,
    records: PathBuf,
    /// Data bytes of each staged block, for `staged_bytes`.
    sizes: Mutex<HashMap<String, u64>>,
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// For power-loss tests: the file `STRATA_TEST_DURABLE_LOG` names, if set,
/// to which every file made durable here is appended (after its fsync, its
/// rename and its directory's fsync), so that a test can drop what was not
/// after a SIGKILL, as a power loss would. Nothing is written otherwise.
pub const DURABLE_LOG_ENV: &str = "STRATA_TEST_DURABLE_LOG";

fn note_durable(path: &Path) {
    static LOG: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    if let Some(log) = LOG.get_or_init(|| std::env::var_os(DURABLE_LOG_ENV).map(PathBuf::from)) {
        let line = format!("{}\n", path.display());
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
}

/// Writes `data` and its checksum to `dir/name` durably: the file appears
/// whole under its name or not at all, and stays after a crash.
fn write_durable(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
    let write = || -> io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.write_all(&crc32fast::hash(data).to_le_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        fsync_dir(dir)?;
        note_durable(&dir.join(name));
        Ok(())
    };
    let res = write();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// The data of a checksummed file, or InvalidData if it is damaged.
fn read_checked(path: &Path, what: &dyn std::fmt::Display) -> io::Result<Vec<u8>> {
    let mut raw =
        std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))?;
    if raw.len() < TRAILER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} is truncated ({} bytes)", raw.len()),
        ));
    }
    let (data, sum) = raw.split_at(raw.len() - TRAILER);
    if crc32fast::hash(data).to_le_bytes() != sum {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} failed its checksum"),
        ));
    }
    raw.truncate(raw.len() - TRAILER);
    Ok(raw)
}

/// The error for an acknowledged write-back record that cannot be read:
/// what it is, what is lost, and what to do.
pub fn damaged_record(err: io::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{err}. It holds a commit acknowledged to a writer (fsync or close) and not yet \
             uploaded; replaying the journal without it would lose those writes silently. \
             Restore the file from a backup, or move it out of the records directory to \
             start without it (the writes it holds are lost)"
        ),
    )
}

fn is_tmp(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with(TMP_PREFIX)
}

fn record_name(seq: u64) -> String {
    format!("{seq:020}")
}

/// Collects staged blocks (key, data bytes) under `dir`, removing temporary
/// files a crash left behind.
fn scan_blocks(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        if e.file_type()?.is_dir() {
            scan_blocks(root, &path, out)?;
        } else if is_tmp(&e.file_name()) {
            tracing::warn!(file = %path.display(), "removing a half-written staged block");
            std::fs::remove_file(&path)?;
        } else {
            let key = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let len = e.metadata()?.len();
            out.push((key, len.saturating_sub(TRAILER as u64)));
        }
    }
    Ok(())
}

impl Staging {
    /// Opens (creating) the staging area in `dir`.
    pub fn open(dir: &Path) -> io::Result<Staging> {
        let blocks = dir.join("blocks");
        let records = dir.join("records");
        for d in [&blocks, &records] {
            if !d.exists() {
                std::fs::create_dir_all(d)?;
                fsync_dir(d.parent().expect("has a parent"))?;
            }
        }
        let mut found = Vec::new();
        scan_blocks(&blocks, &blocks, &mut found)?;
        for e in std::fs::read_dir(&records)? {
            let e = e?;
            if is_tmp(&e.file_name()) {
                tracing::warn!(file = %e.path().display(), "removing a half-written staged record");
                std::fs::remove_file(e.path())?;
            }
        }
        Ok(Staging {
            blocks,
            records,
            sizes: Mutex::new(found.into_iter().collect()),
        })
    }

    /// The path of a block, refusing keys that would leave the staging
    /// area or pass for a temporary file.
    fn block_path(&self, key: &str) -> io::Result<PathBuf> {
        let path = Path::new(key);
        let bad = key.is_empty()
            || key.contains('\0')
            || key
                .split('/')
                .any(|c| c.is_empty() || c.starts_with(TMP_PREFIX))
            || !path.components().all(|c| matches!(c, Component::Normal(_)));
        if bad {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{key:?} is not a block key"),
            ));
        }
        Ok(self.blocks.join(key))
    }

    /// Creates the directories between the blocks dir and `dir`, each made
    /// durable in its parent.
    fn make_dirs(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        let parent = dir.parent().expect("below the blocks dir");
        self.make_dirs(parent)?;
        match std::fs::create_dir(dir) {
            Ok(()) => fsync_dir(parent),
            // Another writer made it (and fsyncs its parent).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Stores a block durably; when this returns it survives a crash.
    pub fn put_block(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let path = self.block_path(key)?;
        let dir = path.parent().expect("block paths have a parent");
        let name = path.file_name().expect("block paths have a name");
        self.make_dirs(dir)?;
        write_durable(dir, &name.to_string_lossy(), data)?;
        self.sizes
            .lock()
            .unwrap()
            .insert(key.to_string(), data.len() as u64);
        Ok(())
    }

    /// A staged block; NotFound if there is none, InvalidData if it is damaged.
    pub fn get_block(&self, key: &str) -> io::Result<Bytes> {
        let path = self.block_path(key)?;
        read_checked(&path, &format_args!("staged block {key}")).map(Bytes::from)
    }

    /// Drops a staged block (once uploaded); a missing one is fine. The
    /// directory is not fsynced: a block that comes back after a crash is
    /// only uploaded again.
    pub fn remove_block(&self, key: &str) -> io::Result<()> {
        let path = self.block_path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.sizes.lock().unwrap().remove(key);
        Ok(())
    }

    /// Where record `seq` is kept.
    pub fn record_path(&self, seq: u64) -> PathBuf {
        self.records.join(record_name(seq))
    }

    /// Stores a small record (a pending commit) durably under `seq`.
    pub fn put_record(&self, seq: u64, bytes: &[u8]) -> io::Result<()> {
        write_durable(&self.records, &record_name(seq), bytes)
    }

    /// Every record, by sequence number. A temporary file (a write cut
    /// short, never acknowledged) or a file not named as a record is
    /// skipped with a warning. A record that fails its checksum was
    /// acknowledged (it is renamed into place only once durable), so its
    /// commit would be lost: that is an error naming it, never a skip.
    pub fn records(&self) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.records)? {
            let e = e?;
            let name = e.file_name();
            let seq = name
                .to_str()
                .filter(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u64>().ok());
            let Some(seq) = seq else {
                tracing::warn!(file = %e.path().display(),
                    "skipping a file that is not a whole staged record");
                continue;
            };
            let path = e.path();
            let data = read_checked(&path, &format_args!("write-back record {}", path.display()))
                .map_err(damaged_record)?;
            out.push((seq, data));
        }
        out.sort_by_key(|(seq, _)| *seq);
        Ok(out)
    }

    /// Drops a record (its commit is done); a missing one is fine. Durable,
    /// so a finished commit is not replayed after a crash.
    pub fn remove_record(&self, seq: u64) -> io::Result<()> {
        match std::fs::remove_file(self.records.join(record_name(seq))) {
            Ok(()) => fsync_dir(&self.records),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Data bytes of the staged blocks (records not included).
    pub fn staged_bytes(&self) -> u64 {
        self.sizes.lock().unwrap().values().sum()
    }

    /// Keys of the staged blocks, sorted, as the directory has them.
    pub fn staged_block_keys(&self) -> io::Result<Vec<String>> {
        let mut found = Vec::new();
        list_blocks(&self.blocks, &self.blocks, &mut found)?;
        found.sort();
        Ok(found)
    }
}

/// Like `scan_blocks`, without touching anything: a temporary file here
/// may be a write under way.
fn list_blocks(root: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        if e.file_type()?.is_dir() {
            list_blocks(root, &path, out)?;
        } else if !is_tmp(&e.file_name()) {
            let key = path.strip_prefix(root).expect("under root");
            out.push(key.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "fs/chunks/0/1/1234_0_5";
    const K2: &str = "fs/chunks/0/0/7_1_3";

    #[test]
    fn blocks_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = Staging::open(dir.path()).unwrap();
        s.put_block(K1, b"hello").unwrap();
        s.put_block(K2, b"abc").unwrap();
        s.put_block("empty", b"").unwrap();
        assert_eq!(s.get_block(K1).unwrap(), &b"hello"[..]);
        assert_eq!(s.get_block("empty").unwrap(), &b""[..]);
        assert_eq!(s.staged_bytes(), 8);
        drop(s);

        let s = Staging::open(dir.path()).unwrap();
        assert_eq!(s.staged_bytes(), 8);
        assert_eq!(s.staged_block_keys().unwrap(), vec!["empty", K2, K1]);
        assert_eq!(s.get_block(K2).unwrap(), &b"abc"[..]);
        s.remove_block(K1).unwrap();
        s.remove_block(K1).unwrap();
        assert_eq!(s.get_block(K1).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(s.staged_bytes(), 3);
        assert_eq!(s.staged_block_keys().unwrap(), vec!["empty", K2]);
    }

    #[test]
    fn putting_a_block_again_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = Staging::open(dir.path()).unwrap();
        s.put_block(K1, b"hello").unwrap();
        s.put_block(K1, b"hi").unwrap();
        assert_eq!(s.get_block(K1).unwrap(), &b"hi"[..]);
        assert_eq!(s.staged_bytes(), 2);
        assert_eq!(s.staged_block_keys().unwrap(), vec![K1]);
    }

    #[test]
    fn damaged_blocks_are_errors_never_data() {
        let dir = tempfile::tempdir().unwrap();
        let s = Staging::open(dir.path()).unwrap();
        s.put_block(K1, b"hello").unwrap();
        s.put_block(K2, b"abc").unwrap();
        let p1 = dir.path().join("blocks").join(K1);
        let mut raw = std::fs::read(&p1).unwrap();
        raw[1] ^= 0x20;
        std::fs::write(&p1, raw).unwrap();
        let e = s.get_block(K1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            e.to_string(),
            format!("staged block {K1} failed its checksum")
        );
        std::fs::write(dir.path().join("blocks").join(K2), b"ab").unwrap();
        let e = s.get_block(K2).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            e.to_string(),
            format!("staged block {K2} is truncated (2 bytes)")
        );
    }

    #[test]
    fn records_come_back_in_order_and_a_damaged_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = Staging::open(dir.path()).unwrap();
        s.put_record(10, b"ten").unwrap();
        s.put_record(2, b"two").unwrap();
        s.put_record(3, b"three").unwrap();
        s.put_record(u64::MAX, b"").unwrap();
        assert_eq!(
            s.records().unwrap(),
            vec![
                (2, b"two".to_vec()),
                (3, b"three".to_vec()),
                (10, b"ten".to_vec()),
                (u64::MAX, vec![]),
            ]
        );
        // Damage record 2, and leave what a crash mid-write leaves.
        let recs = dir.path().join("records");
        let p2 = recs.join(record_name(2));
        let mut raw = std::fs::read(&p2).unwrap();
        raw[0] ^= 1;
        std::fs::write(&p2, raw).unwrap();
        std::fs::write(recs.join(".tmp-cut-short"), b"half a rec").unwrap();
        std::fs::write(recs.join("not-a-record"), b"x").unwrap();
        let e = s.records().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let shown = e.to_string();
        assert!(shown.contains(&record_name(2)), "{shown}");
        assert!(shown.contains("failed its checksum"), "{shown}");
        assert!(shown.contains("out of the records directory"), "{shown}");
        // Moved aside, as the error says: what a crash mid-write leaves
        // and other files are skipped.
        std::fs::rename(&p2, dir.path().join("aside")).unwrap();
        let seqs: Vec<u64> = s.records().unwrap().into_iter().map(|r| r.0).collect();
        assert_eq!(seqs, vec![3, 10, u64::MAX]);

        s.remove_record(3).unwrap();
        s.remove_record(3).unwrap();
        drop(s);
        let s = Staging::open(dir.path()).unwrap();
        assert!(!recs.join(".tmp-cut-short").exists(), "removed at open");
        assert_eq!(
            s.records().unwrap(),
            vec![(10, b"ten".to_vec()), (u64::MAX, vec![])]
        );
    }

    #[test]
    fn temporary_files_left_by_a_crash_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = Staging::open(dir.path()).unwrap();
        s.put_block(K1, b"hello").unwrap();
        drop(s);
        let tmp = dir.path().join("blocks/fs/chunks/0/1/.tmp-0123");
        std::fs::write(&tmp, b"half a block").unwrap();
        let s = Staging::open(dir.path()).unwrap();
        assert!(!tmp.exists());
        assert_eq!(s.staged_block_keys().unwrap(), vec![K1]);
        assert_eq!(s.staged_bytes(), 5);
    }

    #[test]
    fn keys_that_leave_the_staging_area_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Staging::open(dir.path()).unwrap();
        for k in [
            "", "/abs", "a/../b", "..", "a//b", "./a", "a/", "a/.tmp-x", "a\0b",
        ] {
            let e = s.put_block(k, b"x").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{k:?}");
            assert_eq!(
                s.get_block(k).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
        assert_eq!(s.staged_block_keys().unwrap(), Vec::<String>::new());
    }
}
