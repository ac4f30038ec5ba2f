//! What the client counts of its object store: requests by kind (count,
//! latency, bytes, errors, retries), counted per attempt by
//! `MeteredStore` at the bottom of the stack and per retry by
//! `RetryingStore` above it; blocks the caches evicted, and prefetched
//! blocks read later or not. (Hits, misses and sizes are
//! `BlockCache::stats`, which the mount reports.)

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use crate::StoreError;
use crate::object_store::{ObjectInfo, ObjectStore};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabel {
    tier: &'static str,
}

pub(crate) struct StoreMetrics {
    requests: Family<KindLabel, Counter>,
    durations: Family<KindLabel, Histogram, fn() -> Histogram>,
    bytes: Family<KindLabel, Counter>,
    errors: Family<KindLabel, Counter>,
    retries: Family<KindLabel, Counter>,
    evictions: Family<TierLabel, Counter>,
    prefetch_used: Counter,
    prefetch_wasted: Counter,
}

static METRICS: LazyLock<StoreMetrics> = LazyLock::new(|| {
    let m = StoreMetrics {
        requests: Family::default(),
        durations: Family::new_with_constructor(strata_metrics::latency_histogram),
        bytes: Family::default(),
        errors: Family::default(),
        retries: Family::default(),
        evictions: Family::default(),
        prefetch_used: Counter::default(),
        prefetch_wasted: Counter::default(),
    };
    strata_metrics::register(
        "object_requests",
        "Object store requests made (each attempt), by kind",
        m.requests.clone(),
    );
    strata_metrics::register(
        "object_request_duration_seconds",
        "Time an object store request took, by kind",
        m.durations.clone(),
    );
    strata_metrics::register(
        "object_bytes",
        "Bytes sent (PUT) and received (GET) in object bodies",
        m.bytes.clone(),
    );
    strata_metrics::register(
        "object_errors",
        "Object store requests that failed, by kind",
        m.errors.clone(),
    );
    strata_metrics::register(
        "object_retries",
        "Object store requests repeated after a transient failure, by kind",
        m.retries.clone(),
    );
    strata_metrics::register(
        "cache_evictions",
        "Blocks the memory or the disk cache let go of to make room",
        m.evictions.clone(),
    );
    strata_metrics::register(
        "prefetch_used",
        "Prefetched blocks a read then asked for",
        m.prefetch_used.clone(),
    );
    strata_metrics::register(
        "prefetch_wasted",
        "Prefetched blocks no read asked for before 4096 later prefetches",
        m.prefetch_wasted.clone(),
    );
    // Every kind and tier shown from the start, at zero.
    for kind in ["PUT", "GET", "DELETE", "LIST"] {
        let label = KindLabel { kind };
        let _ = m.requests.get_or_create(&label);
        let _ = m.errors.get_or_create(&label);
        let _ = m.retries.get_or_create(&label);
    }
    for tier in ["memory", "disk"] {
        let _ = m.evictions.get_or_create(&TierLabel { tier });
    }
    m
});

pub(crate) fn metrics() -> &'static StoreMetrics {
    &METRICS
}

/// Registers the object store's metrics so that a scrape shows them
/// (at zero) before the first request.
pub fn register() {
    LazyLock::force(&METRICS);
}

impl StoreMetrics {
    pub(crate) fn prefetch_used(&self) {
        self.prefetch_used.inc();
    }

    pub(crate) fn prefetch_wasted(&self) {
        self.prefetch_wasted.inc();
    }

    #[cfg(test)]
    pub(crate) fn prefetch_counts(&self) -> (u64, u64) {
        (self.prefetch_used.get(), self.prefetch_wasted.get())
    }

    pub(crate) fn evicted(&self, tier: &'static str, blocks: u64) {
        if blocks > 0 {
            self.evictions
                .get_or_create(&TierLabel { tier })
                .inc_by(blocks);
        }
    }

    pub(crate) fn retried(&self, kind: &'static str) {
        self.retries.get_or_create(&KindLabel { kind }).inc();
    }

    fn done<T>(&self, kind: &'static str, start: Instant, r: &Result<T, StoreError>, bytes: u64) {
        let label = KindLabel { kind };
        self.requests.get_or_create(&label).inc();
        self.durations
            .get_or_create(&label)
            .observe(strata_metrics::seconds_since(start));
        match r {
            Ok(_) => {
                if bytes > 0 {
                    self.bytes.get_or_create(&label).inc_by(bytes);
                }
            }
            Err(_) => {
                self.errors.get_or_create(&label).inc();
            }
        }
    }
}

/// An object store whose every request is counted.
pub struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> MeteredStore {
        MeteredStore { inner }
    }
}

fn len_of(r: &Result<Bytes, StoreError>) -> u64 {
    r.as_ref().map_or(0, |b| b.len() as u64)
}

#[async_trait::async_trait]
impl ObjectStore for MeteredStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let start = Instant::now();
        let len = data.len() as u64;
        let r = self.inner.put(key, data).await;
        metrics().done("PUT", start, &r, len);
        r
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        let start = Instant::now();
        let r = self.inner.get_range(key, offset, len).await;
        metrics().done("GET", start, &r, len_of(&r));
        r
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let start = Instant::now();
        let r = self.inner.get(key).await;
        metrics().done("GET", start, &r, len_of(&r));
        r
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let start = Instant::now();
        let r = self.inner.delete(key).await;
        metrics().done("DELETE", start, &r, 0);
        r
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let start = Instant::now();
        let r = self.inner.list(prefix).await;
        metrics().done("LIST", start, &r, 0);
        r
    }

    async fn list_detailed(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let start = Instant::now();
        let r = self.inner.list_detailed(prefix).await;
        metrics().done("LIST", start, &r, 0);
        r
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalStore;

    fn count(f: &Family<KindLabel, Counter>, kind: &'static str) -> u64 {
        f.get_or_create(&KindLabel { kind }).get()
    }

    #[tokio::test]
    async fn each_request_is_counted_with_its_bytes_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let store = MeteredStore::new(Arc::new(LocalStore::new(dir.path()).unwrap()));
        let m = metrics();
        let (puts, put_bytes) = (count(&m.requests, "PUT"), count(&m.bytes, "PUT"));
        let (gets, get_errors) = (count(&m.requests, "GET"), count(&m.errors, "GET"));
        store.put("a", Bytes::from_static(b"12345")).await.unwrap();
        store.get("missing").await.unwrap_err();
        // Other tests in this process count too: at least what this one did.
        assert!(count(&m.requests, "PUT") > puts);
        assert!(count(&m.bytes, "PUT") >= put_bytes + 5);
        assert!(count(&m.requests, "GET") > gets);
        assert!(count(&m.errors, "GET") > get_errors);
    }
}
