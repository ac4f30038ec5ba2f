//! Creates per second through the metadata client alone (no FUSE), to see how
//! much of a mount's create latency the metaserver accounts for; then
//! lookups of missing names, the other half of a create through FUSE.
//!
//! usage: cargo run --release -p strata-meta --example create_rate -- ADDRS [FILES] [TASKS]

use std::time::Instant;

use strata_meta::FsSpec;
use strata_meta::NewInode;
use strata_meta::{FileType, MetaClient};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addrs: Vec<String> = args[1].split(',').map(String::from).collect();
    let files: usize = args.get(2).map_or(2000, |a| a.parse().unwrap());
    let tasks: usize = args.get(3).map_or(1, |a| a.parse().unwrap());
    let client = MetaClient::connect(&addrs).await.unwrap();
    let name = format!("rate{}", std::process::id());
    client
        .format(
            &FsSpec {
                ..FsSpec::new(&name, "file:///unused")
            },
            (0, 0),
        )
        .await
        .unwrap();
    let fs = std::sync::Arc::new(client.open_fs(&name).await.unwrap());
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let fs = fs.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..files / tasks {
                fs.create(
                    1,
                    format!("t{t}f{i}").as_bytes(),
                    NewInode::plain(FileType::File, 0o644, 0, 0),
                )
                .await
                .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{tasks} tasks: {:.0} creates/s ({:.3} ms each per task)",
        files as f64 / secs,
        secs * 1000.0 / (files / tasks) as f64
    );
    // A create through FUSE is first a lookup of a name that is not there.
    let start = Instant::now();
    for i in 0..files {
        let missing = fs.lookup(1, format!("missing{i}").as_bytes()).await;
        assert!(missing.is_err());
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "1 task: {:.0} lookups of missing names/s ({:.3} ms each)",
        files as f64 / secs,
        secs * 1000.0 / files as f64
    );
}
