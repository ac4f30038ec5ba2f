//! What an S3 server gives a plain client: PUTs, then GETs, of `TOTAL_MIB`
//! in objects of `OBJECT` (MiB, or KiB with a `K` suffix), `CONCURRENCY`
//! requests in flight, through the AWS SDK with its defaults (the HTTP stack
//! Strata uses), and then deletes them. Prints `put MIB/S get MIB/S
//! get_objects OBJECTS/S` on one line. Benchmarks compare a filesystem's
//! sequential write and cold read (`bench/data_bench.sh`) and a warmup of
//! small files (`bench/dataset_epoch.sh`) on the same server with it: the
//! store's own limit, measured.
//!
//! usage: s3_raw ENDPOINT BUCKET ACCESS SECRET TOTAL_MIB OBJECT CONCURRENCY
//!
//! cargo run --release -p strata-cache --example s3_raw -- http://127.0.0.1:PORT strata KEY SECRET 1024 4 20

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use tokio::sync::Semaphore;

const USAGE: &str = "usage: s3_raw ENDPOINT BUCKET ACCESS SECRET TOTAL_MIB OBJECT CONCURRENCY";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, bucket, access, secret, total, object, concurrency] = args.as_slice() else {
        eprintln!("s3_raw: expected 7 arguments\n{USAGE}");
        return ExitCode::FAILURE;
    };
    let number = |what: &str, s: &str| match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "s3_raw: {what} must be a positive number, not {s:?}"
        )),
    };
    // OBJECT in KiB: "4" is 4 MiB, "128K" is 128 KiB.
    let object_kib = match object.strip_suffix(['K', 'k']) {
        Some(kib) => number("OBJECT", kib),
        None => number("OBJECT", object).map(|mib| mib << 10),
    };
    let (total, object_kib, concurrency) = match (
        number("TOTAL_MIB", total),
        object_kib,
        number("CONCURRENCY", concurrency),
    ) {
        (Ok(t), Ok(o), Ok(c)) => (t, o, c),
        (t, o, c) => {
            for e in [t.err(), o.err(), c.err()].into_iter().flatten() {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(access, secret, None, None, "s3_raw"))
        .load()
        .await;
    let conf = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(true)
        .build();
    let client = Client::from_conf(conf);
    let count = (total << 10).div_ceil(object_kib);
    let body = bytes::Bytes::from(
        (0..object_kib << 10)
            .map(|i| (i * 7 + i / 4093) as u8)
            .collect::<Vec<u8>>(),
    );
    let keys: Vec<String> = (0..count).map(|i| format!("s3-raw/{i:06}")).collect();

    let put = run(&client, bucket, &keys, concurrency, |c, b, k| {
        let body = body.clone();
        async move {
            c.put_object()
                .bucket(b)
                .key(k)
                .body(ByteStream::from(body))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let get = run(&client, bucket, &keys, concurrency, |c, b, k| async move {
        let out = c
            .get_object()
            .bucket(b)
            .key(k)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        out.body
            .collect()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    for k in &keys {
        let _ = client.delete_object().bucket(bucket).key(k).send().await;
    }
    match (put, get) {
        (Ok(p), Ok(g)) => {
            let mib = (count * object_kib) as f64 / 1024.0;
            println!(
                "put {:.1} get {:.1} get_objects {:.1}",
                mib / p,
                mib / g,
                count as f64 / g
            );
            ExitCode::SUCCESS
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("s3_raw: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `op` on every key, `concurrency` at a time; seconds taken.
async fn run<F, Fut>(
    client: &Client,
    bucket: &str,
    keys: &[String],
    concurrency: usize,
    op: F,
) -> Result<f64, String>
where
    F: Fn(Client, String, String) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(concurrency));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(keys.len());
    for k in keys {
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let fut = op(client.clone(), bucket.to_string(), k.clone());
        tasks.push(tokio::spawn(async move {
            let r = fut.await;
            drop(permit);
            r
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(start.elapsed().as_secs_f64())
}
