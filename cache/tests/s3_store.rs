//! S3Store against a real S3 server (s3s-fs) over HTTP on loopback.

use bytes::Bytes;
use strata_cache::{StoreOptions, open_store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_round_trips_objects() {
    let root = tempfile::tempdir().unwrap();
    let (endpoint, _server) =
        strata_cache::test_s3::start_s3_server(root.path(), "bkt", "ak", "secret-key-1")
            .await
            .unwrap();
    let opts = StoreOptions {
        s3_endpoint: Some(endpoint),
        access_key: Some("ak".into()),
        secret_key: Some("secret-key-1".into()),
        ..Default::default()
    };
    let s = open_store("s3://bkt/some/prefix", &opts).await.unwrap();
    s.put("u/chunks/0/0/1_0_5", Bytes::from_static(b"abcde"))
        .await
        .unwrap();
    s.put("u/chunks/0/0/2_0_3", Bytes::from_static(b"xyz"))
        .await
        .unwrap();
    assert_eq!(
        s.get_range("u/chunks/0/0/1_0_5", 1, 3).await.unwrap(),
        Bytes::from_static(b"bcd")
    );
    assert_eq!(
        s.get("u/chunks/0/0/2_0_3").await.unwrap(),
        Bytes::from_static(b"xyz")
    );
    assert!(s.get("u/missing").await.unwrap_err().is_not_found());
    // A body that arrives in many pieces (5 MiB over HTTP) comes back whole
    // and in order, and a range of it too.
    let big: Vec<u8> = (0..5u32 << 20).map(|i| (i % 251) as u8).collect();
    s.put("v/big", Bytes::from(big.clone())).await.unwrap();
    assert!(s.get("v/big").await.unwrap()[..] == big[..]);
    let mid = s.get_range("v/big", 3 << 20, 1 << 20).await.unwrap();
    assert!(mid[..] == big[3 << 20..4 << 20]);
    assert_eq!(
        s.list("u/").await.unwrap(),
        vec![
            ("u/chunks/0/0/1_0_5".to_string(), 5),
            ("u/chunks/0/0/2_0_3".to_string(), 3)
        ]
    );
    // The objects sit under the prefix in the bucket.
    assert!(
        root.path()
            .join("bkt/some/prefix/u/chunks/0/0/1_0_5")
            .exists()
    );
    s.delete("u/chunks/0/0/1_0_5").await.unwrap();
    assert_eq!(s.list("u/").await.unwrap().len(), 1);

    let wrong = open_store(
        "s3://bkt/p",
        &StoreOptions {
            secret_key: Some("wrong".into()),
            ..opts.clone()
        },
    )
    .await
    .unwrap();
    let err = wrong.put("k", Bytes::from_static(b"1")).await.unwrap_err();
    assert!(err.to_string().contains("credentials"), "{err}");
}
