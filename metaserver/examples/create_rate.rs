//! Creates per second through the metadata client alone (no FUSE), to see how
//! much of a mount's create latency the metaserver accounts for; then
//! lookups of missing names, the other half of a create through FUSE, and
//! getattrs (stats) of the files made.
//!
//! usage: cargo run --release -p strata-meta --example create_rate -- ADDRS [FILES] [TASKS]
//! With STRATA_TLS_CA, STRATA_TLS_CERT and STRATA_TLS_KEY set (an
//! administrator's certificate), it talks TLS.

use std::time::Instant;

use strata_meta::rpc::Credentials;
use strata_meta::tls::{Tls, TlsFiles};
use strata_meta::{FileType, FsSpec, MetaClient, NewInode};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addrs: Vec<String> = args[1].split(',').map(String::from).collect();
    let files: usize = args.get(2).map_or(2000, |a| a.parse().unwrap());
    let tasks: usize = args.get(3).map_or(1, |a| a.parse().unwrap());
    let tls = match (
        std::env::var_os("STRATA_TLS_CA"),
        std::env::var_os("STRATA_TLS_CERT"),
        std::env::var_os("STRATA_TLS_KEY"),
    ) {
        (Some(ca), Some(cert), Some(key)) => Some(
            Tls::load(&TlsFiles {
                ca: ca.into(),
                cert: cert.into(),
                key: key.into(),
            })
            .unwrap(),
        ),
        _ => None,
    };
    let client = MetaClient::connect_with(&addrs, Credentials::tls(tls))
        .await
        .unwrap();
    let name = format!("rate{}", std::process::id());
    client
        .format(&FsSpec::new(&name, "file:///unused"), (0, 0))
        .await
        .unwrap();
    let fs = std::sync::Arc::new(client.open_fs(&name).await.unwrap());
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let fs = fs.clone();
        handles.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for i in 0..files / tasks {
                let f = fs
                    .create(
                        1,
                        format!("t{t}f{i}").as_bytes(),
                        NewInode::plain(FileType::File, 0o644, 0, 0),
                    )
                    .await
                    .unwrap();
                made.push(f.ino);
            }
            made
        }));
    }
    let mut inos = Vec::new();
    for h in handles {
        inos.extend(h.await.unwrap());
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
    let start = Instant::now();
    for ino in &inos {
        fs.getattr(*ino).await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "1 task: {:.0} getattrs/s ({:.3} ms each)",
        inos.len() as f64 / secs,
        secs * 1000.0 / inos.len() as f64
    );
}
