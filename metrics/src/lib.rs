//! What a Strata process counts, and the HTTP endpoint that shows it.
//!
//! One registry per process (a mount, a metaserver node, a tool): each
//! layer keeps its own metrics in a static that registers them here the
//! first time it is used, and `serve` answers `GET /metrics` with the
//! registry in the Prometheus text format (`prometheus-client` writes it).
//! Labels are small closed sets (operation, kind, result, errno, group,
//! node), never inode numbers or paths, so a scrape stays the same size
//! however many files there are.

pub mod access_log;
mod labeled;

pub use labeled::Labeled;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
            match listener.accept().await {
                Ok((stream, _)) => serve_connection(stream, false),
                Err(e) => accept_failed(e).await,
            }
        }
    });
    Ok(bound)
}

/// A mount's control socket: the same `GET /metrics`, on an owner-only
/// Unix socket that `strata stats` finds by the mountpoint. The file goes
/// away when this is dropped.
pub struct ControlSocket {
    path: PathBuf,
}

impl ControlSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves the registry on `listener`, a Unix socket at `path` that the
/// caller bound owner-only (`strata_meta::transport::bind_private_socket`).
pub fn serve_control(listener: tokio::net::UnixListener, path: &Path) -> ControlSocket {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => serve_connection(stream, true),
                Err(e) => accept_failed(e).await,
            }
        }
    });
    ControlSocket {
        path: path.to_path_buf(),
    }
}

/// Out of descriptors and the like: let it pass, then accept again.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!(error = %e, "metrics endpoint: accept failed");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

fn serve_connection<S>(stream: S, log: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |req| async move { answer(&req, log) });
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "metrics endpoint: connection ended");
        }
    });
}

/// `GET path` on the Unix socket at `socket`, for a body that does not
/// end (`/accesslog`): its lines as they come.
pub async fn stream_unix(
    socket: &Path,
    path: &str,
) -> Result<tokio::io::Lines<tokio::io::BufReader<tokio::net::UnixStream>>, String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let err = |e: std::io::Error| format!("{}: {e}", socket.display());
    let mut s = tokio::net::UnixStream::connect(socket).await.map_err(err)?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: strata\r\n\r\n").as_bytes())
        .await
        .map_err(err)?;
    let mut lines = tokio::io::BufReader::new(s).lines();
    let status = lines.next_line().await.map_err(err)?.unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        return Err(format!("{}: {status}", socket.display()));
    }
    // The headers, up to the empty line before the body.
    while let Some(line) = lines.next_line().await.map_err(err)? {
        if line.is_empty() {
            break;
        }
    }
    Ok(lines)
}

/// `GET path` on the Unix socket at `socket`: the body of a 200 answer.
pub async fn get_unix(socket: &Path, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let err = |e: std::io::Error| format!("{}: {e}", socket.display());
    let mut s = tokio::net::UnixStream::connect(socket).await.map_err(err)?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: strata\r\n\r\n").as_bytes())
        .await
        .map_err(err)?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.map_err(err)?;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{}: not an HTTP answer", socket.display()))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        return Err(format!("{}: {status}", socket.display()));
    }
    Ok(body.to_string())
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn full(b: Bytes) -> Body {
    use http_body_util::BodyExt;
    Full::new(b).boxed()
}

/// `/metrics` anywhere; `/accesslog` only on a control socket (`log`):
/// who may read the metrics endpoint need not see file activity.
fn answer<B>(req: &Request<B>, log: bool) -> Result<Response<Body>, std::convert::Infallible> {
    let response = match req.uri().path() {
        "/metrics" => Response::builder()
            .header(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(full(Bytes::from(render()))),
        "/accesslog" if log => Response::builder()
            .header("content-type", "text/plain; charset=utf-8")
            .body(access_log_body()),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(full(Bytes::from_static(b"metrics are at /metrics\n"))),
    };
    Ok(response.expect("a response built from constants"))
}

/// The access log from now on, for as long as the reader stays; a reader
/// that fell behind is told how many lines it lost.
fn access_log_body() -> Body {
    use http_body_util::BodyExt;
    use tokio::sync::broadcast::error::RecvError;
    let lines = futures::stream::unfold(access_log::subscribe(), |mut reader| async move {
        let line = match reader.rx.recv().await {
            Ok(line) => line,
            Err(RecvError::Lagged(n)) => {
                Bytes::from(format!("# {n} lines lost: reading too slowly\n"))
            }
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(hyper::body::Frame::data(line)), reader))
    });
    http_body_util::StreamBody::new(lines).boxed()
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
    async fn the_control_socket_serves_the_registry_and_goes_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let sock = serve_control(tokio::net::UnixListener::bind(&path).unwrap(), &path);
        let c = Counter::<u64>::default();
        register(
            "test_control",
            "Counted for the control socket test",
            c.clone(),
        );
        c.inc();
        let page = get_unix(&path, "/metrics").await.unwrap();
        assert!(page.contains("strata_test_control_total 1"), "{page}");
        assert!(
            get_unix(&path, "/nothing")
                .await
                .unwrap_err()
                .contains("404")
        );
        drop(sock);
        assert!(!path.exists(), "the socket file goes with its server");
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
