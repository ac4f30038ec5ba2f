//! S3Store against a faulty S3 server (s3s-fs on loopback answering with
//! 503/500, delaying, and cutting GET bodies short): failures are classified
//! right, and wrapped in RetryingStore every byte still comes back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use strata_cache::test_s3::{Faults, start_faulty_s3_server};
use strata_cache::{ObjectStore, RetryPolicy, RetryingStore, StoreOptions, open_store};

const ACCESS: &str = "ak";
const SECRET: &str = "secret-key-1";

/// An S3Store on a faulty server. The SDK's own retries are off, so every
/// fault reaches the store (and `RetryingStore` above it, where used).
async fn faulty_store(
    root: &std::path::Path,
    faults: Arc<Faults>,
    attempt_timeout: Duration,
) -> Arc<dyn ObjectStore> {
    let (endpoint, _server) = start_faulty_s3_server(root, "bkt", ACCESS, SECRET, faults)
        .await
        .unwrap();
    let opts = StoreOptions {
        s3_endpoint: Some(endpoint),
        access_key: Some(ACCESS.into()),
        secret_key: Some(SECRET.into()),
        s3_attempts: 1,
        attempt_timeout,
        ..Default::default()
    };
    open_store("s3://bkt/pre", &opts).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_store_rides_out_a_faulty_server() {
    let root = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::new(42));
    faults.set_errors(0.3);
    faults.set_delays(0.1, Duration::from_millis(20));
    faults.set_cut_bodies(0.15);
    let s3 = faulty_store(root.path(), faults.clone(), Duration::from_secs(30)).await;
    let store = Arc::new(RetryingStore::new(
        s3,
        RetryPolicy {
            attempts: 30,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(20),
        },
    ));

    let mut rng = StdRng::seed_from_u64(7);
    let blocks: Vec<(String, Bytes)> = (0..200)
        .map(|i| {
            let len = rng.random_range(1..=128 * 1024);
            let mut data = vec![0u8; len];
            rng.fill_bytes(&mut data);
            (format!("fs/chunks/0/0/{i}_0_{len}"), Bytes::from(data))
        })
        .collect();

    futures::stream::iter(blocks.iter().cloned())
        .map(|(key, data)| {
            let store = store.clone();
            async move { store.put(&key, data).await }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();

    // Two random ranges and the whole of each block.
    let mut reads = Vec::new();
    for (i, (_, data)) in blocks.iter().enumerate() {
        for _ in 0..2 {
            let offset = rng.random_range(0..data.len() as u64);
            let len = rng.random_range(1..=data.len() as u64 - offset);
            reads.push((i, offset, len));
        }
        reads.push((i, 0, u64::MAX));
    }
    let got: Vec<(usize, u64, u64, Bytes)> = futures::stream::iter(reads)
        .map(|(i, offset, len)| {
            let store = store.clone();
            let key = blocks[i].0.clone();
            async move {
                let body = if len == u64::MAX {
                    store.get(&key).await?
                } else {
                    store.get_range(&key, offset, len).await?
                };
                Ok::<_, strata_cache::StoreError>((i, offset, len, body))
            }
        })
        .buffer_unordered(8)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(got.len(), 600);
    for (i, offset, len, body) in got {
        let data = &blocks[i].1;
        let want = if len == u64::MAX {
            &data[..]
        } else {
            &data[offset as usize..(offset + len) as usize]
        };
        assert!(body == want, "block {i} at {offset}+{len} differs");
    }

    let listed = store.list("fs/").await.unwrap();
    let mut want: Vec<(String, u64)> = blocks
        .iter()
        .map(|(k, d)| (k.clone(), d.len() as u64))
        .collect();
    want.sort();
    assert_eq!(listed, want);

    assert!(faults.errors_injected() > 0);
    assert!(faults.delays_injected() > 0);
    assert!(faults.cuts_injected() > 0);
    // 801 operations (200 puts, 600 reads, one list page) succeeded once
    // each, and every error or cut body cost one more request.
    assert!(
        faults.requests() >= 801 + faults.errors_injected() + faults.cuts_injected(),
        "{} requests",
        faults.requests()
    );
}

/// Changes the server made but answered with 500 (the answer lost on the
/// way back, so the outcome is in doubt for the client): sent again, they
/// end as if answered the first time. Blocks are immutable, so a PUT made
/// twice stores the same bytes; a DELETE of what is already gone succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_whose_answers_were_lost_end_as_if_answered() {
    let root = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::new(9));
    faults.set_lost_answers(0.4);
    let s3 = faulty_store(root.path(), faults.clone(), Duration::from_secs(30)).await;
    let store = RetryingStore::new(
        s3,
        RetryPolicy {
            attempts: 30,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        },
    );
    let mut rng = StdRng::seed_from_u64(3);
    let mut blocks = Vec::new();
    for i in 0..60 {
        let len = rng.random_range(1..=64 * 1024);
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        let key = format!("fs/chunks/0/0/{i}_0_{len}");
        store.put(&key, Bytes::from(data.clone())).await.unwrap();
        blocks.push((key, data));
    }
    let lost_puts = faults.answers_lost();
    assert!(lost_puts > 0, "no answer was lost");
    for (key, data) in &blocks {
        assert!(store.get(key).await.unwrap() == data[..], "{key} differs");
    }
    // Every other block deleted, each DELETE in doubt as often.
    for (key, _) in blocks.iter().step_by(2) {
        store.delete(key).await.unwrap();
    }
    assert!(
        faults.answers_lost() > lost_puts,
        "no DELETE answer was lost"
    );
    let listed = store.list("fs/").await.unwrap();
    let mut want: Vec<(String, u64)> = blocks
        .iter()
        .skip(1)
        .step_by(2)
        .map(|(k, d)| (k.clone(), d.len() as u64))
        .collect();
    want.sort();
    assert_eq!(listed, want);
}

/// A body that arrives whole but with a byte changed fails its block's
/// checksums, recorded when the block was written: the read is refused (a
/// transient error, tried again), never handed on; tried again, every
/// block and every part of one comes back intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_bodies_fail_their_checksum_and_are_read_again() {
    let root = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::new(5));
    let s3 = faulty_store(root.path(), faults.clone(), Duration::from_secs(30)).await;
    let mut rng = StdRng::seed_from_u64(11);
    let mut blocks = Vec::new();
    for i in 0..40 {
        // Up to four pages, so that parts start and end inside pages.
        let len = rng.random_range(1..=200 * 1024);
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        let key = format!("fs/chunks/0/0/{i}_0_{len}");
        s3.put(&key, Bytes::from(data.clone())).await.unwrap();
        blocks.push((key, data));
    }
    faults.set_flipped_bodies(1.0);
    let (key, _) = &blocks[0];
    let e = s3.get(key).await.unwrap_err();
    assert!(matches!(e, strata_cache::StoreError::Corrupt { .. }), "{e}");
    assert!(e.is_transient(), "{e}");

    faults.set_flipped_bodies(0.4);
    let store = RetryingStore::new(
        s3,
        RetryPolicy {
            attempts: 30,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        },
    );
    let before = faults.flips_injected();
    for (key, data) in &blocks {
        assert!(store.get(key).await.unwrap() == data[..], "{key} differs");
        // A part of a block (a random read of a block not cached) is
        // checked too: the read takes whole pages of the block.
        let offset = rng.random_range(0..data.len());
        let len = rng.random_range(1..=data.len() - offset);
        let part = store
            .get_range(key, offset as u64, len as u64)
            .await
            .unwrap();
        assert!(part == data[offset..offset + len], "{key} {offset}+{len}");
    }
    assert!(
        faults.flips_injected() > before + 10,
        "too few bodies damaged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_classified_transient_or_permanent() {
    let root = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::new(1));
    let s3 = faulty_store(root.path(), faults.clone(), Duration::from_secs(30)).await;
    let data = Bytes::from_static(b"0123456789");

    faults.set_errors(1.0);
    let e = s3.put("k", data.clone()).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("HTTP 503 SlowDown") || msg.contains("HTTP 500 InternalError"),
        "{msg}"
    );
    faults.clear();

    s3.put("k", data.clone()).await.unwrap();
    let e = s3.get("missing").await.unwrap_err();
    assert!(e.is_not_found() && !e.is_transient(), "{e}");
    // A range past the end of the object: the object will not grow.
    let e = s3.get_range("k", 5, 10).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    let e = s3.get_range("k", 10, 1).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");

    // A body cut short is transient, whole or ranged.
    faults.set_cut_bodies(1.0);
    let e = s3.get("k").await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    let e = s3.get_range("k", 2, 6).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(faults.cuts_injected(), 2);
    faults.clear();
    assert_eq!(s3.get_range("k", 2, 6).await.unwrap(), &b"234567"[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_permanent() {
    let root = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::new(1));
    let (endpoint, _server) = start_faulty_s3_server(root.path(), "bkt", ACCESS, SECRET, faults)
        .await
        .unwrap();
    let opts = StoreOptions {
        s3_endpoint: Some(endpoint),
        access_key: Some(ACCESS.into()),
        secret_key: Some("wrong".into()),
        ..Default::default()
    };
    let s3 = open_store("s3://bkt", &opts).await.unwrap();
    let e = s3.put("k", Bytes::from_static(b"1")).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("credentials"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_that_hangs_fails_as_transient_after_its_timeout() {
    let root = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::new(1));
    let s3 = faulty_store(root.path(), faults.clone(), Duration::from_millis(300)).await;
    s3.put("k", Bytes::from_static(b"abc")).await.unwrap();
    // Far longer than the attempt timeout, so the timeout decides.
    faults.set_delays(1.0, Duration::from_secs(30));
    let e = s3.get("k").await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(faults.delays_injected(), 1);
}
