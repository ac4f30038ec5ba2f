//! What a Strata process counts, and the HTTP endpoint that shows it.
//!
//! One registry per process (a mount, a metaserver node, a tool): each
//! layer keeps its own metrics in a static that registers them here the
//! first time it is used, and `serve` answers `GET /metrics` with the
//! registry in the Prometheus text format (`prometheus-client` writes it).
//! Labels are small closed sets (operation, kind, result, errno, group,
//! node), never inode numbers or paths, so a scrape stays the same size
//! however many files there are.

use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

static REGISTRY: LazyLock<Mutex<Registry>> =
    LazyLock::new(|| Mutex::new(Registry::with_prefix("strata")));

/// Adds `metric` to the process's registry as `strata_<name>`.
pub fn register(name: &str, help: &str, metric: impl Metric) {
    REGISTRY.lock().unwrap().register(name, help, metric);
}

/// Adds a collector: metrics read from their source at each scrape.
pub fn register_collector(collector: impl Collector) {
    REGISTRY
        .lock()
        .unwrap()
        .register_collector(Box::new(collector));
}

/// The registry in the Prometheus text format.
pub fn render() -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &REGISTRY.lock().unwrap())
        .expect("writing to a String does not fail");
    out
}

/// A histogram of durations in seconds: 50 µs doubling to about 26 s,
/// which spans a cached getattr and a retried S3 GET alike.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// A histogram of sizes in bytes: 512 B quadrupling to 128 MiB.
pub fn size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(512.0, 4.0, 10))
}

/// Seconds since `start`, for a latency histogram.
pub fn seconds_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// Serves `GET /metrics` on `addr` until the runtime ends. Returns the
/// address bound (port 0 picks one), or why it could not listen.
pub async fn serve(addr: &str) -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("metrics endpoint {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("metrics endpoint {addr}: {e}"))?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: pass, try again.
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req| async move { answer(&req) });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "metrics endpoint: connection ended");
                }
            });
        }
    });
    Ok(bound)
}

fn answer<B>(req: &Request<B>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let response = if req.uri().path() == "/metrics" {
        Response::builder()
            .header(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(render())))
    } else {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"metrics are at /metrics\n")))
    };
    Ok(response.expect("a response built from constants"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_the_registry_at_metrics_and_nothing_elsewhere() {
        let c = Counter::<u64>::default();
        register("test_things", "Things a test counted", c.clone());
        c.inc_by(7);
        let addr = serve("127.0.0.1:0").await.unwrap();
        let page = get(addr, "/metrics").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("strata_test_things_total 7"), "{page}");
        let other = get(addr, "/").await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    }

    #[tokio::test]
    async fn an_address_in_use_is_a_clear_error() {
        let addr = serve("127.0.0.1:0").await.unwrap();
        let err = serve(&addr.to_string()).await.unwrap_err();
        assert!(
            err.contains("metrics endpoint") && err.contains("in use"),
            "{err}"
        );
    }
}
