//! Export and import through a real S3 server over HTTP (and a local
//! directory): every object equals its file, the manifest lists the whole
//! tree, an interrupted export resumes without writing finished objects
//! again, and importing the export gives back the same tree.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::time::SystemTime;

use common::*;

fn manifest_of(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn strata_fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = strata_with(args, env).output().unwrap();
    assert!(!out.status.success(), "strata {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn export_to_s3_and_a_directory_resumes_and_imports_back() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(&tmp.path().join("s3"));
    let (_server, meta) = one_node_with_data(tmp.path(), &s3, &[]);
    let m = Mount::new(&tmp.path().join("m"), &["--meta", &meta, "data"], &s3.env());
    std::fs::create_dir(m.path("src")).unwrap();
    make_tree(&m.path("src"));
    let original = tree(&m.path("src"));
    run_env_ok(
        &["snapshot", "create", "--meta", &meta, "data", "s1"],
        &s3.env(),
    );
    // Changed after the snapshot: the export shows the snapshot's state.
    std::fs::write(m.path("src/zero"), b"later").unwrap();

    // An object in the way of every file under `many/` (s3s-fs keeps objects
    // as files, so `export/src/many` as an object blocks `export/src/many/*`):
    // the first export fails for those and writes no manifest.
    let objects = s3.root.join("bucket/export/src");
    std::fs::create_dir_all(&objects).unwrap();
    std::fs::write(objects.join("many"), b"obstacle").unwrap();
    let export = [
        "export",
        "--meta",
        &meta,
        "data@s1",
        "s3://bucket/export",
        "--part-size",
        "5M",
        "--jobs",
        "4",
    ];
    let err = strata_fails(&export, &s3.env());
    assert!(err.contains("40 of 44 files failed"), "{err}");
    assert!(
        !s3.root
            .join("bucket/export/.strata-manifest.jsonl")
            .exists()
    );
    let first_run: BTreeMap<String, SystemTime> =
        ["src/a/big.bin", "src/a/b/c/deep.txt", "src/zero"]
            .iter()
            .map(|p| {
                let md = std::fs::metadata(s3.root.join("bucket/export").join(p)).unwrap();
                (p.to_string(), md.modified().unwrap())
            })
            .collect();
    std::fs::remove_file(objects.join("many")).unwrap();
    let out = run_env_ok(&export, &s3.env());
    assert!(
        out.contains("44 files") && out.contains("4 already there"),
        "{out}"
    );
    for (p, when) in &first_run {
        let md = std::fs::metadata(s3.root.join("bucket/export").join(p)).unwrap();
        assert_eq!(md.modified().unwrap(), *when, "{p} was written again");
    }
    // Every object equals its file in the snapshot.
    for (path, (kind, _, _, _, body)) in &original {
        let obj = s3.root.join("bucket/export/src").join(path);
        if kind == "file" {
            assert_eq!(&std::fs::read(&obj).unwrap(), body, "{path}");
        } else {
            assert!(!obj.is_file(), "{path} ({kind}) should have no object");
        }
    }
    // The manifest lists everything, with attributes.
    let text =
        std::fs::read_to_string(s3.root.join("bucket/export/.strata-manifest.jsonl")).unwrap();
    let lines = manifest_of(&text);
    assert_eq!(lines[0]["format"], "strata-export");
    assert_eq!(lines[0]["files"], 44);
    let listed: BTreeMap<String, &serde_json::Value> = lines[1..]
        .iter()
        .map(|v| (v["path"].as_str().unwrap().to_string(), v))
        .collect();
    let under_src: Vec<&String> = listed.keys().filter(|p| p.starts_with("src/")).collect();
    assert_eq!(under_src.len(), original.len(), "{text}");
    for (path, (kind, mode, size, mtime, body)) in &original {
        let v = listed[&format!("src/{path}")];
        let want = if kind == "other" {
            "fifo"
        } else {
            kind.as_str()
        };
        assert_eq!(v["type"], want, "{path}");
        assert_eq!(v["mode"].as_u64().unwrap() as u32, *mode, "{path}");
        if kind == "file" {
            assert_eq!(v["size"].as_u64().unwrap(), *size, "{path}");
            assert_eq!(v["mtime"].as_i64().unwrap(), *mtime, "{path}");
            let crc = format!("crc32:{:08x}", crc32fast::hash(body));
            assert_eq!(v["checksum"], crc.as_str(), "{path}");
        }
        if kind == "symlink" {
            assert_eq!(v["target"].as_str().unwrap().as_bytes(), body.as_slice());
        }
    }
    assert_eq!(listed["src/empty"]["empty"], true);
    assert_eq!(
        listed["src/a/hard"]["link"],
        listed["src/a/b/c/deep.txt"]["link"]
    );
    // A second run finds everything there.
    let again = run_env_ok(&export, &s3.env());
    assert!(again.contains("44 already there"), "{again}");

    // The same to a local directory.
    let dir = tmp.path().join("local-export");
    let url = format!("file://{}", dir.display());
    run_env_ok(
        &[
            "export",
            "--meta",
            &meta,
            "data@s1",
            "--to",
            &url,
            "--part-size",
            "5M",
        ],
        &s3.env(),
    );
    for (path, (kind, _, _, _, body)) in &original {
        if kind == "file" {
            assert_eq!(
                &std::fs::read(dir.join("src").join(path)).unwrap(),
                body,
                "{path}"
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(dir.join(".strata-manifest.jsonl"))
            .unwrap()
            .lines()
            .count(),
        text.lines().count()
    );

    // Import both back: the same tree, bytes and attributes.
    let import_s3 = [
        "import",
        "--meta",
        &meta,
        "s3://bucket/export",
        "data:/from-s3",
    ];
    run_env_ok(&import_s3, &s3.env());
    run_env_ok(
        &["import", "--meta", &meta, &url, "data:/from-dir"],
        &s3.env(),
    );
    for back in ["from-s3/src", "from-dir/src"] {
        assert_same_tree(&m.path(back), &original);
        let a = std::fs::metadata(m.path(&format!("{back}/a/hard"))).unwrap();
        let b = std::fs::metadata(m.path(&format!("{back}/a/b/c/deep.txt"))).unwrap();
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "{back}: hard link");
    }
    // Importing again skips what is there.
    let again = run_env_ok(&import_s3, &s3.env());
    assert!(again.contains("already there"), "{again}");

    // A prefix of plain objects (no manifest) becomes a tree of files.
    let plain = s3.root.join("bucket/plain");
    std::fs::create_dir_all(plain.join("x/y")).unwrap();
    std::fs::write(plain.join("x/y/one"), b"1").unwrap();
    std::fs::write(plain.join("two"), b"22").unwrap();
    run_env_ok(
        &[
            "import",
            "--meta",
            &meta,
            "s3://bucket/plain",
            "data:/plain",
        ],
        &s3.env(),
    );
    assert_eq!(std::fs::read(m.path("plain/x/y/one")).unwrap(), b"1");
    assert_eq!(std::fs::read(m.path("plain/two")).unwrap(), b"22");
    // Bad input changes nothing.
    let err = strata_fails(
        &["export", "--meta", &meta, "data@s1", "ftp://x"],
        &s3.env(),
    );
    assert!(err.contains("s3://bucket/prefix or file:///dir"), "{err}");
    let err = strata_fails(&["import", "--meta", &meta, &url, "data@s1"], &s3.env());
    assert!(err.contains("read-only"), "{err}");
    m.unmount();
}
