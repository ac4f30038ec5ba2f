//! A real S3 server for tests: s3s-fs over HTTP on a loopback port, and a
//! faulty variant that answers a share of requests with 503 SlowDown or 500
//! InternalError, delays a share, cuts a share of GET bodies short (the
//! connection drops mid-body), damages a share of GET bodies (one byte
//! flipped, the length kept) and loses a share of answers to changes it
//! made, so retry, timeout and checksum code is tested against the failures
//! S3 and the networks to it really have.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

/// Serves `root` as an S3 endpoint with one bucket (a directory under root).
/// Returns the endpoint URL and the server task.
pub async fn start_s3_server(
    root: &Path,
    bucket: &str,
    access: &str,
    secret: &str,
) -> io::Result<(String, tokio::task::JoinHandle<()>)> {
    let fs = file_system(root, bucket)?;
    serve(fs, access, secret).await
}

/// Like `start_s3_server`, injecting the faults `faults` asks for (which
/// may change while the server runs).
pub async fn start_faulty_s3_server(
    root: &Path,
    bucket: &str,
    access: &str,
    secret: &str,
    faults: Arc<Faults>,
) -> io::Result<(String, tokio::task::JoinHandle<()>)> {
    let fs = file_system(root, bucket)?;
    serve(FaultyS3 { fs, faults }, access, secret).await
}

fn file_system(root: &Path, bucket: &str) -> io::Result<s3s_fs::FileSystem> {
    std::fs::create_dir_all(root.join(bucket))?;
    s3s_fs::FileSystem::new(root).map_err(|e| io::Error::other(format!("{e:?}")))
}

async fn serve(
    s3: impl S3,
    access: &str,
    secret: &str,
) -> io::Result<(String, tokio::task::JoinHandle<()>)> {
    let mut b = S3ServiceBuilder::new(s3);
    b.set_auth(SimpleAuth::from_single(access, secret));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        while let Ok((socket, _)) = listener.accept().await {
            // Without it a response written in two pieces (headers, then
            // body) waits for the client's delayed ACK: 40 ms per request.
            let _ = socket.set_nodelay(true);
            let conn = http.serve_connection(TokioIo::new(socket), service.clone());
            let conn = conn.into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    Ok((format!("http://{addr}"), task))
}

/// Which faults to inject, changeable while the server runs, and how many
/// were. Shares are in millionths. Each request draws its faults from a
/// seeded generator indexed by the request's number, so a run with requests
/// in the same order injects the same faults.
pub struct Faults {
    seed: u64,
    next: AtomicU64,
    error_ppm: AtomicU32,
    delay_ppm: AtomicU32,
    delay_us: AtomicU64,
    cut_ppm: AtomicU32,
    lost_ppm: AtomicU32,
    flip_ppm: AtomicU32,
    get_latency_us: AtomicU64,
    errors: AtomicU64,
    delays: AtomicU64,
    cuts: AtomicU64,
    lost: AtomicU64,
    flips: AtomicU64,
}

fn ppm(share: f64) -> u32 {
    (share.clamp(0.0, 1.0) * 1_000_000.0).round() as u32
}

/// A well-mixed 64-bit value of `x` (SplitMix64's finalizer).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What happens to one request.
struct Plan {
    delay: Option<Duration>,
    error: Option<S3ErrorCode>,
    cut: bool,
    /// Do the change, then answer 500 as if it failed.
    lose_answer: bool,
    /// Send the whole body with one byte changed.
    flip: bool,
}

impl Faults {
    /// No faults until set.
    pub fn new(seed: u64) -> Faults {
        Faults {
            seed,
            next: AtomicU64::new(0),
            error_ppm: AtomicU32::new(0),
            delay_ppm: AtomicU32::new(0),
            delay_us: AtomicU64::new(0),
            cut_ppm: AtomicU32::new(0),
            lost_ppm: AtomicU32::new(0),
            flip_ppm: AtomicU32::new(0),
            get_latency_us: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            delays: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            flips: AtomicU64::new(0),
        }
    }

    /// Answers `share` (0.0 to 1.0) of requests with 503 SlowDown or 500
    /// InternalError (half each), without doing them.
    pub fn set_errors(&self, share: f64) {
        self.error_ppm.store(ppm(share), Ordering::SeqCst);
    }

    /// Holds `share` of requests for `delay` before answering them.
    pub fn set_delays(&self, share: f64, delay: Duration) {
        self.delay_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
        self.delay_ppm.store(ppm(share), Ordering::SeqCst);
    }

    /// Sends only the first half of the body of `share` of GET responses
    /// (that are not empty), then drops the connection.
    pub fn set_cut_bodies(&self, share: f64) {
        self.cut_ppm.store(ppm(share), Ordering::SeqCst);
    }

    /// Applies `share` of PUTs, DELETEs and multipart completions, then
    /// answers them 500 InternalError: the client cannot tell that the
    /// change was made (an answer lost on the way back).
    pub fn set_lost_answers(&self, share: f64) {
        self.lost_ppm.store(ppm(share), Ordering::SeqCst);
    }

    /// Makes every GET wait `latency` before it is served, as a store
    /// across a network would (benchmarks of cold reads; zero: none).
    pub fn set_get_latency(&self, latency: Duration) {
        self.get_latency_us
            .store(latency.as_micros() as u64, Ordering::SeqCst);
    }

    /// Sends the whole body of `share` of GET responses (that are not
    /// empty) with its first byte changed, as a faulty NIC or proxy would:
    /// the length and headers are right, the bytes are not.
    pub fn set_flipped_bodies(&self, share: f64) {
        self.flip_ppm.store(ppm(share), Ordering::SeqCst);
    }

    /// Stops injecting faults (the counters stay).
    pub fn clear(&self) {
        self.set_errors(0.0);
        self.set_delays(0.0, Duration::ZERO);
        self.set_cut_bodies(0.0);
        self.set_lost_answers(0.0);
        self.set_flipped_bodies(0.0);
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    pub fn errors_injected(&self) -> u64 {
        self.errors.load(Ordering::SeqCst)
    }

    pub fn delays_injected(&self) -> u64 {
        self.delays.load(Ordering::SeqCst)
    }

    pub fn cuts_injected(&self) -> u64 {
        self.cuts.load(Ordering::SeqCst)
    }

    /// Changes made whose answer was replaced by an error.
    pub fn answers_lost(&self) -> u64 {
        self.lost.load(Ordering::SeqCst)
    }

    /// GET bodies sent with a byte changed.
    pub fn flips_injected(&self) -> u64 {
        self.flips.load(Ordering::SeqCst)
    }

    fn plan(&self) -> Plan {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let draw = |k: u64| mix(self.seed ^ mix(n.wrapping_mul(8).wrapping_add(k)));
        let hit =
            |k: u64, ppm: &AtomicU32| draw(k) % 1_000_000 < u64::from(ppm.load(Ordering::SeqCst));
        let delay = hit(0, &self.delay_ppm).then(|| {
            self.delays.fetch_add(1, Ordering::SeqCst);
            Duration::from_micros(self.delay_us.load(Ordering::SeqCst))
        });
        let error = hit(1, &self.error_ppm).then(|| {
            self.errors.fetch_add(1, Ordering::SeqCst);
            if draw(3) % 2 == 0 {
                S3ErrorCode::SlowDown
            } else {
                S3ErrorCode::InternalError
            }
        });
        Plan {
            delay,
            error,
            cut: hit(2, &self.cut_ppm),
            lose_answer: hit(4, &self.lost_ppm),
            flip: hit(5, &self.flip_ppm),
        }
    }
}

/// An s3s-fs server with faults, for the operations `S3Store` uses (the
/// others answer NotImplemented).
struct FaultyS3 {
    fs: s3s_fs::FileSystem,
    faults: Arc<Faults>,
}

impl FaultyS3 {
    /// Delays and fails the request as planned; what is left of the plan
    /// (cutting the body) is the caller's.
    async fn enter(&self) -> S3Result<Plan> {
        let mut plan = self.faults.plan();
        if let Some(d) = plan.delay {
            tokio::time::sleep(d).await;
        }
        if let Some(code) = plan.error.take() {
            return Err(S3Error::with_message(code, "injected fault"));
        }
        Ok(plan)
    }

    /// The answer to a change already made: lost, as planned, or `done`.
    fn answer<T>(&self, plan: &Plan, done: S3Result<T>) -> S3Result<T> {
        if plan.lose_answer && done.is_ok() {
            self.faults.lost.fetch_add(1, Ordering::SeqCst);
            return Err(S3Error::with_message(
                S3ErrorCode::InternalError,
                "injected fault after the change was made",
            ));
        }
        done
    }
}

#[async_trait::async_trait]
impl S3 for FaultyS3 {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.enter().await?;
        self.fs.create_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.enter().await?;
        self.fs.head_bucket(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.enter().await?;
        self.fs.head_object(req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let plan = self.enter().await?;
        let done = self.fs.put_object(req).await;
        self.answer(&plan, done)
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let plan = self.enter().await?;
        let done = self.fs.delete_object(req).await;
        self.answer(&plan, done)
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.enter().await?;
        self.fs.list_objects_v2(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.enter().await?;
        self.fs.create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.enter().await?;
        self.fs.upload_part(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let plan = self.enter().await?;
        let done = self.fs.complete_multipart_upload(req).await;
        self.answer(&plan, done)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.enter().await?;
        self.fs.abort_multipart_upload(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let plan = self.enter().await?;
        let latency = self.faults.get_latency_us.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        let mut resp = self.fs.get_object(req).await?;
        let len = resp
            .output
            .content_length
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(0);
        if plan.cut
            && len > 0
            && let Some(body) = resp.output.body.take()
        {
            self.faults.cuts.fetch_add(1, Ordering::SeqCst);
            // Content-Length still promises `len` bytes: the client sees
            // the connection end early, as when a network path breaks.
            resp.output.body = Some(StreamingBlob::wrap(CutShort {
                inner: body,
                left: len / 2,
                done: false,
            }));
        } else if plan.flip
            && len > 0
            && let Some(body) = resp.output.body.take()
        {
            self.faults.flips.fetch_add(1, Ordering::SeqCst);
            resp.output.body = Some(StreamingBlob::wrap(Flipped {
                inner: body,
                flipped: false,
            }));
        }
        Ok(resp)
    }
}

/// A body passed on whole, but for its first byte, inverted.
struct Flipped {
    inner: StreamingBlob,
    flipped: bool,
}

impl Stream for Flipped {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) if !this.flipped && !chunk.is_empty() => {
                this.flipped = true;
                let mut changed = chunk.to_vec();
                changed[0] = !changed[0];
                Poll::Ready(Some(Ok(Bytes::from(changed))))
            }
            Poll::Ready(Some(Ok(chunk))) => Poll::Ready(Some(Ok(chunk))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(io::Error::other(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A body that passes on its first `left` bytes, then fails, which makes
/// hyper drop the connection mid-response.
struct CutShort {
    inner: StreamingBlob,
    left: usize,
    done: bool,
}

impl Stream for CutShort {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.left == 0 {
            this.done = true;
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "injected fault: connection cut mid-body",
            ))));
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(mut chunk))) => {
                chunk.truncate(this.left);
                this.left -= chunk.len();
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(io::Error::other(e))))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_drawn_in_the_shares_asked_for_and_repeat_with_the_seed() {
        let run = |seed| {
            let f = Faults::new(seed);
            f.set_errors(0.3);
            f.set_delays(0.1, Duration::from_millis(1));
            f.set_cut_bodies(0.5);
            let cuts = (0..10_000).filter(|_| f.plan().cut).count();
            (f.errors_injected(), f.delays_injected(), cuts)
        };
        let (errors, delays, cuts) = run(7);
        assert!((2_700..3_300).contains(&errors), "{errors}");
        assert!((800..1_200).contains(&delays), "{delays}");
        assert!((4_500..5_500).contains(&cuts), "{cuts}");
        assert_eq!(run(7), (errors, delays, cuts));
        assert_ne!(run(8), (errors, delays, cuts));

        let f = Faults::new(1);
        f.set_errors(1.0);
        assert!((0..100).all(|_| f.plan().error.is_some()));
        f.clear();
        assert!((0..100).all(|_| {
            let p = f.plan();
            p.error.is_none() && p.delay.is_none() && !p.cut
        }));
        assert_eq!((f.requests(), f.errors_injected()), (200, 100));
    }
}
