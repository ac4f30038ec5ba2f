//! A standalone S3 server for benchmarks: the same s3s-fs server the tests
//! start (`strata_cache::test_s3`), in its own process, so Strata and other
//! filesystems (JuiceFS in `bench/data_bench.sh`) can be measured against the
//! same object store on loopback.
//!
//! usage: s3_server DIR BUCKET ACCESS SECRET [ENDPOINT_FILE]
//!
//! Serves the directories under `DIR` as buckets (`BUCKET` is created; make
//! more with `mkdir DIR/NAME`). The server picks a free loopback port; the
//! endpoint URL is printed and, with `ENDPOINT_FILE`, written there once the
//! server accepts connections (written whole, so a script may poll for it).
//! Serves until killed or interrupted. With `S3_GET_LATENCY_MS=N` in the
//! environment every GET waits N ms before it is served, as from a store
//! across a network (`bench/dataset_epoch.sh`).
//!
//! cargo run --release -p strata-cache --features test-s3-server --example s3_server -- DIR BUCKET ACCESS SECRET

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str = "usage: s3_server DIR BUCKET ACCESS SECRET [ENDPOINT_FILE]";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (root, bucket, access, secret, endpoint_file) = match args.as_slice() {
        [r, b, a, s] => (r, b, a, s, None),
        [r, b, a, s, f] => (r, b, a, s, Some(PathBuf::from(f))),
        _ => {
            eprintln!("s3_server: expected 4 or 5 arguments\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let root = PathBuf::from(root);
    if let Err(e) = std::fs::create_dir_all(&root) {
        eprintln!("s3_server: cannot create {}: {e}", root.display());
        return ExitCode::FAILURE;
    }
    let latency_ms = match std::env::var("S3_GET_LATENCY_MS") {
        Ok(v) => match v.parse::<u64>() {
            Ok(ms) => ms,
            Err(_) => {
                eprintln!(
                    "s3_server: S3_GET_LATENCY_MS must be a number of milliseconds, not {v:?}"
                );
                return ExitCode::FAILURE;
            }
        },
        Err(_) => 0,
    };
    let started = if latency_ms > 0 {
        let faults = Arc::new(strata_cache::test_s3::Faults::new(0));
        faults.set_get_latency(std::time::Duration::from_millis(latency_ms));
        strata_cache::test_s3::start_faulty_s3_server(&root, bucket, access, secret, faults).await
    } else {
        strata_cache::test_s3::start_s3_server(&root, bucket, access, secret).await
    };
    let (endpoint, server) = match started {
        Ok(s) => s,
        Err(e) => {
            eprintln!("s3_server: cannot start on {}: {e}", root.display());
            return ExitCode::FAILURE;
        }
    };
    println!("{endpoint}");
    if let Some(f) = &endpoint_file
        && let Err(e) = write_whole(f, &endpoint)
    {
        eprintln!("s3_server: cannot write {}: {e}", f.display());
        return ExitCode::FAILURE;
    }
    tokio::select! {
        _ = server => {
            eprintln!("s3_server: the listener stopped");
            ExitCode::FAILURE
        }
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
    }
}

/// Writes through a temporary name and renames, so a reader never sees half.
fn write_whole(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{text}\n"))?;
    std::fs::rename(&tmp, path)
}
