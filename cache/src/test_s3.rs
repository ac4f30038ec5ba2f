//! A real S3 server for tests: s3s-fs over HTTP on a loopback port.

use std::path::Path;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// Serves `root` as an S3 endpoint with one bucket (a directory under root).
/// Returns the endpoint URL and the server task.
pub async fn start_s3_server(
    root: &Path,
    bucket: &str,
    access: &str,
    secret: &str,
) -> std::io::Result<(String, tokio::task::JoinHandle<()>)> {
    std::fs::create_dir_all(root.join(bucket))?;
    let fs = s3s_fs::FileSystem::new(root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let mut b = S3ServiceBuilder::new(fs);
    b.set_auth(SimpleAuth::from_single(access, secret));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        while let Ok((socket, _)) = listener.accept().await {
            let conn = http.serve_connection(TokioIo::new(socket), service.clone());
            let conn = conn.into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    Ok((format!("http://{addr}"), task))
}
