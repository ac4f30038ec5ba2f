//! Dependency arrows point down: no module uses a module of a layer above
//! its own. Cargo already keeps the crates in order (tools -> fuse-client ->
//! {metaserver, cache}); this checks the layers inside them by reading every
//! source file's paths (`crate::x`, `super::x`, `strata_meta::x`), comments
//! left out:
//! - strata-meta: shared modules (`types`, `error`, `request`, `wire`, `transport`,
//!   `rpc`, `tls`, `raft_types`, `metrics`) use neither `client` nor `server`; `client` does
//!   not use `server` (the server may use the client to reach other nodes);
//! - strata-fuse: the filesystem core does not use the fuser adapter
//!   (`fuse`, `mount`), and nothing in strata-fuse reaches into the
//!   metaserver's server side;
//! - strata-cache knows nothing of metadata or FUSE.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir`, with its path relative to `dir`.
fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    assert!(!out.is_empty(), "no sources under {}", dir.display());
    out
}

/// The file's code lines (comments dropped) that mention `needle`.
fn mentions(text: &str, needle: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .filter(|l| l.contains(needle))
        .map(|l| l.trim().to_string())
        .collect()
}

/// The top-level module of strata-meta a file belongs to.
fn meta_module(rel: &str) -> &str {
    rel.split(['/', '.']).next().unwrap()
}

fn meta_layer(module: &str) -> u8 {
    match module {
        "types" | "error" | "request" | "wire" | "rpc" | "transport" | "tls" | "raft_types"
        | "metrics" => 0,
        "client" => 1,
        "server" => 2,
        "lib" => 3,
        other => panic!("strata-meta module {other} has no layer: add it to meta_layer"),
    }
}

/// Paths by which a strata-meta file reaches a module of each layer. The
/// crate root re-exports the clients, so `crate::MetaClient` counts as the
/// client layer.
const META_PATHS: &[(&str, u8)] = &[
    ("crate::client", 1),
    ("crate::MetaClient", 1),
    ("crate::FsClient", 1),
    ("crate::FsSpec", 1),
    ("crate::server", 2),
];

#[test]
fn strata_meta_modules_use_only_their_layer_and_those_below() {
    let mut wrong = Vec::new();
    for (rel, text) in sources(&root().join("metaserver/src")) {
        let module = meta_module(&rel);
        let layer = meta_layer(module);
        for (path, above) in META_PATHS {
            if *above > layer {
                for line in mentions(&text, path) {
                    wrong.push(format!("{rel} (layer {layer}) uses {path}: {line}"));
                }
            }
        }
        // `super::` from a file of a shared module stays in that module,
        // except from a top-level file, where it means the crate root.
        if layer == 0 && !rel.contains('/') {
            for line in mentions(&text, "super::") {
                if !line.starts_with("use super::*") {
                    wrong.push(format!("{rel} reaches the crate root by super: {line}"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_filesystem_core_does_not_use_the_fuse_adapter_or_the_metaserver() {
    let adapter = ["fuse.rs", "mount.rs", "lib.rs"];
    let mut wrong = Vec::new();
    for (rel, text) in sources(&root().join("fuse-client/src")) {
        for line in mentions(&text, "strata_meta::server") {
            wrong.push(format!("{rel} uses the metaserver's server side: {line}"));
        }
        if !adapter.contains(&rel.as_str()) {
            for path in ["crate::fuse", "crate::mount", "super::fuse", "super::mount"] {
                for line in mentions(&text, path) {
                    wrong.push(format!("{rel} (core) uses the adapter: {line}"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_cache_knows_nothing_of_metadata_or_fuse() {
    let mut wrong = Vec::new();
    for (rel, text) in sources(&root().join("cache/src")) {
        for path in ["strata_meta", "strata_fuse", "fuser"] {
            for line in mentions(&text, path) {
                wrong.push(format!("{rel} uses {path}: {line}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checks_see_an_upward_import() {
    // The checks above must be able to fail: a shared module naming the
    // server, and a core file naming the adapter, are found.
    assert_eq!(
        mentions(
            "use crate::server::ops;\n// crate::server in a comment",
            "crate::server"
        ),
        vec!["use crate::server::ops;"]
    );
    assert_eq!(meta_layer(meta_module("request/write.rs")), 0);
    assert_eq!(meta_layer(meta_module("client/txn.rs")), 1);
    assert_eq!(meta_layer(meta_module("server/ops/txn.rs")), 2);
}
