//! Retries for object-store requests. S3 throttles (503 SlowDown), drops
//! connections and has bad seconds; a filesystem that turned each of those
//! into EIO would be unusable. `RetryingStore` repeats a request that failed
//! transiently (see `StoreError::is_transient`), pausing longer each time
//! with random jitter so that many clients throttled together do not come
//! back together; permanent failures (a missing object, refused
//! credentials) are returned at once. Retrying is safe because objects are
//! immutable: a PUT repeated writes the same bytes, a GET repeated reads them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;

use crate::StoreError;
use crate::object_store::{ObjectInfo, ObjectStore};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (at least 1).
    pub attempts: u32,
    /// The pause before the first retry; it doubles with each retry.
    pub first_delay: Duration,
    /// The longest pause.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 10 attempts, pauses from 50 ms doubling up to 5 s: about 17 s of
    /// pauses in all, enough to ride out a throttling burst or a restarting
    /// server, short enough that a dead store is reported within a minute.
    fn default() -> Self {
        RetryPolicy {
            attempts: 10,
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry `retry` (1 for the first): `first_delay`
    /// doubled `retry - 1` times, capped at `max_delay`, then a random point
    /// in the upper half of that ("equal jitter": spread out, but never
    /// hammering the store with no pause).
    pub fn delay(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        let nominal = self
            .first_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay);
        let half = nominal / 2;
        let jitter = rand::rng().random_range(0..=(nominal - half).as_nanos() as u64);
        half + Duration::from_nanos(jitter)
    }
}

/// An object store that retries the transient failures of another.
pub struct RetryingStore {
    inner: Arc<dyn ObjectStore>,
    policy: RetryPolicy,
}

impl RetryingStore {
    pub fn new(inner: Arc<dyn ObjectStore>, policy: RetryPolicy) -> RetryingStore {
        RetryingStore { inner, policy }
    }

    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Runs `attempt` until it succeeds, fails permanently, or the policy's
    /// attempts are spent (then the last error is returned).
    async fn run<T, F, Fut>(
        &self,
        op: &'static str,
        key: &str,
        mut attempt: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let attempts = self.policy.attempts.max(1);
        let mut tried = 0;
        loop {
            tried += 1;
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) if !e.is_transient() || tried >= attempts => return Err(e),
                Err(e) => {
                    crate::metrics::metrics().retried(op);
                    let delay = self.policy.delay(tried);
                    tracing::warn!(
                        op,
                        key,
                        attempt = tried,
                        attempts,
                        delay_ms = delay.as_millis() as u64,
                        error = %e,
                        "object store request failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for RetryingStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.run("PUT", key, || self.inner.put(key, data.clone()))
            .await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        self.run("GET", key, || async {
            let body = self.inner.get_range(key, offset, len).await?;
            // A body cut short is a connection that dropped, whatever the
            // store below made of it.
            if body.len() as u64 != len {
                return Err(StoreError::ShortRead {
                    key: key.to_string(),
                    offset,
                    asked: len,
                    got: body.len() as u64,
                });
            }
            Ok(body)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.run("GET", key, || self.inner.get(key)).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.run("DELETE", key, || self.inner.delete(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.run("LIST", prefix, || self.inner.list(prefix)).await
    }

    async fn list_detailed(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.run("LIST", prefix, || self.inner.list_detailed(prefix))
            .await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// An in-memory store whose next `fail` calls fail with `error()`, and
    /// whose next `short` ranged reads return half the bytes asked for.
    struct Flaky {
        objects: Mutex<HashMap<String, Bytes>>,
        fail: AtomicU32,
        short: AtomicU32,
        calls: AtomicU32,
        error: fn() -> StoreError,
    }

    fn slow_down() -> StoreError {
        StoreError::S3Transient {
            op: "GET",
            key: "k".into(),
            message: "HTTP 503 SlowDown".into(),
        }
    }

    fn forbidden() -> StoreError {
        StoreError::S3 {
            op: "GET",
            key: "k".into(),
            message: "HTTP 403 AccessDenied".into(),
        }
    }

    impl Flaky {
        fn new(fail: u32, error: fn() -> StoreError) -> Arc<Flaky> {
            Arc::new(Flaky {
                objects: Mutex::new(HashMap::from([(
                    "k".to_string(),
                    Bytes::from_static(b"0123456789"),
                )])),
                fail: AtomicU32::new(fail),
                short: AtomicU32::new(0),
                calls: AtomicU32::new(0),
                error,
            })
        }

        fn calls(&self) -> u32 {
            self.calls.load(Ordering::SeqCst)
        }

        fn enter(&self) -> Result<(), StoreError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let failing = self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing { Err((self.error)()) } else { Ok(()) }
        }

        fn object(&self, key: &str) -> Result<Bytes, StoreError> {
            self.objects
                .lock()
                .unwrap()
                .get(key)
                .cloned()
                .ok_or_else(|| StoreError::NotFound {
                    key: key.to_string(),
                })
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Flaky {
        async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
            self.enter()?;
            self.objects.lock().unwrap().insert(key.to_string(), data);
            Ok(())
        }

        async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
            self.enter()?;
            let obj = self.object(key)?;
            let end = (offset + len) as usize;
            let cut = self
                .short
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            let end = if cut {
                offset as usize + len as usize / 2
            } else {
                end
            };
            Ok(obj.slice(offset as usize..end))
        }

        async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
            self.enter()?;
            self.object(key)
        }

        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.enter()?;
            self.objects.lock().unwrap().remove(key);
            Ok(())
        }

        async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
            self.enter()?;
            let mut out: Vec<_> = self
                .objects
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.len() as u64))
                .collect();
            out.sort();
            Ok(out)
        }

        fn describe(&self) -> String {
            "flaky".into()
        }
    }

    fn quick(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_success() {
        let flaky = Flaky::new(3, slow_down);
        let s = RetryingStore::new(flaky.clone(), quick(10));
        assert_eq!(s.get("k").await.unwrap(), Bytes::from_static(b"0123456789"));
        assert_eq!(flaky.calls(), 4);

        flaky.fail.store(2, Ordering::SeqCst);
        s.put("p", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(flaky.calls(), 7);
        flaky.fail.store(1, Ordering::SeqCst);
        assert_eq!(s.list("").await.unwrap().len(), 2);
        flaky.fail.store(1, Ordering::SeqCst);
        s.delete("p").await.unwrap();
        assert_eq!(flaky.calls(), 11);
        assert!(flaky.object("p").unwrap_err().is_not_found());
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_returned_at_once() {
        let flaky = Flaky::new(5, forbidden);
        let s = RetryingStore::new(flaky.clone(), quick(10));
        let e = s.get("k").await.unwrap_err();
        assert!(!e.is_transient());
        assert!(e.to_string().contains("403"), "{e}");
        assert_eq!(flaky.calls(), 1);

        let flaky = Flaky::new(0, slow_down);
        let s = RetryingStore::new(flaky.clone(), quick(10));
        assert!(s.get("missing").await.unwrap_err().is_not_found());
        assert_eq!(flaky.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_policys_attempts() {
        let flaky = Flaky::new(u32::MAX, slow_down);
        let s = RetryingStore::new(flaky.clone(), quick(4));
        let e = s.get_range("k", 0, 3).await.unwrap_err();
        assert!(e.is_transient());
        assert_eq!(e.to_string(), slow_down().to_string());
        assert_eq!(flaky.calls(), 4);

        // Zero attempts still means one try.
        let flaky = Flaky::new(u32::MAX, slow_down);
        let s = RetryingStore::new(flaky.clone(), quick(0));
        assert!(s.get("k").await.is_err());
        assert_eq!(flaky.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn short_bodies_are_retried() {
        let flaky = Flaky::new(0, slow_down);
        flaky.short.store(2, Ordering::SeqCst);
        let s = RetryingStore::new(flaky.clone(), quick(10));
        assert_eq!(
            s.get_range("k", 2, 6).await.unwrap(),
            Bytes::from_static(b"234567")
        );
        assert_eq!(flaky.calls(), 3);

        flaky.short.store(u32::MAX, Ordering::SeqCst);
        let e = s.get_range("k", 2, 6).await.unwrap_err();
        assert_eq!(e.to_string(), "reading k: asked for 6 bytes at 2, got 3");
        assert_eq!(flaky.calls(), 13);
    }

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_in_the_upper_half() {
        let p = RetryPolicy {
            attempts: 10,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
        };
        for _ in 0..200 {
            for (retry, nominal) in [(1, 100), (2, 200), (3, 400), (4, 400), (40, 400)] {
                let d = p.delay(retry);
                let nominal = Duration::from_millis(nominal);
                assert!(d >= nominal / 2 && d <= nominal, "retry {retry}: {d:?}");
            }
        }
        assert_eq!(
            RetryPolicy::default(),
            RetryPolicy {
                attempts: 10,
                first_delay: Duration::from_millis(50),
                max_delay: Duration::from_secs(5),
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_pause_between_attempts() {
        let flaky = Flaky::new(u32::MAX, slow_down);
        let p = RetryPolicy {
            attempts: 6,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
        };
        let s = RetryingStore::new(flaky.clone(), p);
        // Virtual time: it advances exactly by the pauses taken.
        let start = tokio::time::Instant::now();
        assert!(s.get("k").await.is_err());
        let paused = start.elapsed();
        // Pauses of 100, 200, 400, 400, 400 ms, each jittered into its upper half.
        assert!(
            paused >= Duration::from_millis(750) && paused <= Duration::from_millis(1500),
            "{paused:?}"
        );
        assert_eq!(flaky.calls(), 6);
    }
}
