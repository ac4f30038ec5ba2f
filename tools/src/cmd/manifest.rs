//! The manifest `strata export` writes next to the objects
//! (`PREFIX/.strata-manifest.jsonl`) and `strata import` reads: one JSON
//! object per line, a header first, then one entry per file, directory,
//! symbolic link or special file, sorted by path. Tools that know nothing of
//! Strata can read it with any JSON-lines reader.

use serde::{Deserialize, Serialize};

/// The manifest's name under the export prefix.
pub const MANIFEST: &str = ".strata-manifest.jsonl";
pub const FORMAT: &str = "strata-export";
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Always `strata-export`.
    pub format: String,
    pub version: u32,
    /// The filesystem (or `FS@SNAPSHOT`) exported.
    pub source: String,
    /// When the export finished, seconds since the epoch.
    pub exported: i64,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the export's root, `/`-separated, never empty.
    pub path: String,
    /// `file`, `dir`, `symlink`, `fifo`, `socket`, `char` or `block`.
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    /// Permission bits (0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time: seconds since the epoch, and nanoseconds.
    pub mtime: i64,
    #[serde(default)]
    pub mtime_nsec: u32,
    /// Files: `crc32:` and the CRC-32 (IEEE) of the contents, 8 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Files: where in Strata the contents came from (filesystem, inode,
    /// mtime, size), so a later export to the same place can trust the
    /// checksum of an object it finds there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Symbolic links: the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Files with more than one link: the same number on each of their
    /// paths (import links them again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<u64>,
    /// Directories with no entries.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty: bool,
    /// Device files: the device number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u32>,
}

/// `crc32:xxxxxxxx`.
pub fn checksum_text(crc: u32) -> String {
    format!("crc32:{crc:08x}")
}

/// Parses a manifest; the header must say it is one this version reads.
pub fn parse(text: &[u8]) -> Result<(Header, Vec<Entry>), String> {
    let text = std::str::from_utf8(text).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().ok_or("empty")?;
    let header: Header = serde_json::from_str(first).map_err(|e| format!("header: {e}"))?;
    if header.format != FORMAT || header.version > VERSION {
        return Err(format!(
            "format {} version {} (this strata reads {FORMAT} up to version {VERSION})",
            header.format, header.version
        ));
    }
    let mut entries = Vec::new();
    for (n, line) in lines.enumerate() {
        entries.push(serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 2))?);
    }
    Ok((header, entries))
}

/// The manifest's text.
pub fn render(header: &Header, entries: &[Entry]) -> String {
    let mut out = serde_json::to_string(header).expect("encodes");
    out.push('\n');
    for e in entries {
        out.push_str(&serde_json::to_string(e).expect("encodes"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_reads_back_and_refuses_other_formats() {
        let h = Header {
            format: FORMAT.into(),
            version: VERSION,
            source: "data@s1".into(),
            exported: 5,
            files: 1,
            bytes: 3,
        };
        let e = Entry {
            path: "a/b c".into(),
            kind: "file".into(),
            size: 3,
            mode: 0o644,
            uid: 1,
            gid: 2,
            mtime: 7,
            mtime_nsec: 9,
            checksum: Some(checksum_text(0xabc)),
            origin: None,
            target: None,
            link: None,
            empty: false,
            rdev: None,
        };
        let text = render(&h, std::slice::from_ref(&e));
        assert!(text.contains("\"checksum\":\"crc32:00000abc\""), "{text}");
        assert_eq!(parse(text.as_bytes()), Ok((h, vec![e])));
        assert!(parse(b"{\"format\":\"other\",\"version\":1,\"source\":\"\",\"exported\":0,\"files\":0,\"bytes\":0}").is_err());
        assert!(parse(b"").is_err());
    }
}
