//! Blocks as objects in an S3 bucket (aws-sdk-s3). Every failure is
//! classified as transient (timeouts, dropped connections, throttling, 5xx:
//! worth retrying, see `RetryingStore`) or permanent (missing objects,
//! refused credentials, other 4xx), and every attempt is bounded in time so
//! a server that hangs cannot hang the filesystem.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::checksum::{self, CHECKSUM_META, PageChecksums};

use super::{ObjectInfo, ObjectStore, StoreOptions};
use crate::StoreError;

/// What HeadObject tells of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    /// User metadata (`x-amz-meta-NAME`), by NAME.
    pub meta: HashMap<String, String>,
}

/// One GetObject's answer: the body, the object's whole size when the
/// server said (a ranged answer does), and the page checksums its writer
/// recorded, if any.
struct Fetched {
    body: Bytes,
    total: Option<u64>,
    checksums: Option<PageChecksums>,
}

pub struct S3Store {
    client: Client,
    bucket: String,
    /// Without leading or trailing '/'; may be empty.
    prefix: String,
    endpoint: Option<String>,
    /// Bounds the arrival of a GET body, which the SDK's attempt timeout
    /// (it ends when the response headers arrive) does not cover.
    body_timeout: Duration,
}

/// Keeps messages readable in logs: one line, a few hundred characters.
fn shorten(s: String) -> String {
    s.replace('\n', " ").chars().take(600).collect()
}

/// An error and its sources, one line: "dispatch failure: io error:
/// connection refused" (the SDK's own Display says only the first part).
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// Error codes S3 and compatible servers use for "try again later",
/// whatever HTTP status they come with.
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "TooManyRequests",
];

/// Whether an HTTP status means the request may succeed later: server
/// errors, throttling (429) and request timeouts (408).
fn transient_status(status: u16) -> bool {
    status >= 500 || status == 429 || status == 408
}

/// Turns an SDK failure into a `StoreError`, deciding whether it is transient.
fn sdk_err<E>(op: &'static str, key: &str, e: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (transient, message) = match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("");
            let transient = transient_status(status) || TRANSIENT_CODES.contains(&code);
            let text = se.err().message().unwrap_or("");
            let message = match (code, text) {
                ("", "") => format!("HTTP {status}"),
                (code, "") => format!("HTTP {status} {code}"),
                (code, text) => format!("HTTP {status} {code}: {text}"),
            };
            (transient, message)
        }
        SdkError::TimeoutError(_) => (true, causes(&e)),
        // A connection refused, reset or closed early may work next time; a
        // user error (a malformed endpoint URL) or credentials that cannot
        // be found fail the same way every time.
        SdkError::DispatchFailure(d) => {
            let message = causes(&e);
            let no_credentials = message.contains("credentials");
            (!d.is_user() && !no_credentials, message)
        }
        // A response that could not be read whole: usually a connection that
        // dropped mid-response.
        SdkError::ResponseError(_) => (true, causes(&e)),
        // The request could not even be built: trying again builds it again.
        _ => (false, causes(&e)),
    };
    let (key, message) = (key.to_string(), shorten(message));
    if transient {
        StoreError::S3Transient { op, key, message }
    } else {
        StoreError::S3 { op, key, message }
    }
}

/// The object's total size from a `Content-Range: bytes a-b/total` header.
fn range_total(content_range: Option<&str>) -> Option<u64> {
    content_range?.rsplit_once('/')?.1.trim().parse().ok()
}

impl S3Store {
    pub async fn new(
        bucket: &str,
        prefix: &str,
        opts: &StoreOptions,
    ) -> Result<S3Store, StoreError> {
        use aws_smithy_http_client::{Builder, tls};
        let http = Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(opts.connect_timeout)
            .operation_attempt_timeout(opts.attempt_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(opts.s3_attempts.max(1)));
        if let Some(ep) = &opts.s3_endpoint {
            loader = loader.endpoint_url(ep);
        }
        if let Some(r) = &opts.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let (Some(a), Some(s)) = (&opts.access_key, &opts.secret_key) {
            loader = loader.credentials_provider(Credentials::new(a, s, None, None, "strata"));
        }
        let sdk = loader.load().await;
        let endpoint = opts
            .s3_endpoint
            .clone()
            .or_else(|| sdk.endpoint_url().map(String::from));
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk);
        if sdk.region().is_none() {
            // Most S3-compatible servers ignore the region, but signing needs one.
            conf = conf.region(Region::new("us-east-1"));
        }
        // A custom endpoint almost always means a server that wants path-style URLs.
        conf = conf.force_path_style(opts.path_style || endpoint.is_some());
        // Whole-object reads are checked against the checksum each block
        // records in its metadata (`CHECKSUM_META`), with any store that
        // keeps user metadata; the SDK's own check (of checksum headers,
        // which not every store sends) would hash every body a second time.
        conf = conf.response_checksum_validation(
            aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
        );
        Ok(S3Store {
            client: Client::from_conf(conf.build()),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint,
            body_timeout: opts.attempt_timeout,
        })
    }

    /// GetObject, whole or `len` bytes from `offset`, checked against the
    /// page checksums the object recorded when written (objects written
    /// before checksums were, or by other tools, have none). A ranged read
    /// is widened to whole pages to be checked, then cut to what was asked.
    async fn fetch(&self, key: &str, range: Option<(u64, u64)>) -> Result<Bytes, StoreError> {
        let Some((offset, len)) = range else {
            let got = self.get_object(key, None).await?;
            if let Some(c) = &got.checksums {
                let total = got.body.len() as u64;
                c.check(&got.body, 0, total)
                    .map_err(|why| corrupt(key, why))?;
            }
            return Ok(got.body);
        };
        let mut page = checksum::MIN_PAGE;
        loop {
            let start = offset / page * page;
            let end = (offset + len).div_ceil(page) * page;
            let got = self.get_object(key, Some((start, end - start))).await?;
            let total = got.total.unwrap_or(start + got.body.len() as u64);
            if offset + len > total {
                // Asking again will not make the object longer.
                return Err(StoreError::Io {
                    context: format!(
                        "reading {len} bytes at {offset} of {key}: the object is shorter ({total} bytes)"
                    ),
                    source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                });
            }
            match &got.checksums {
                // Pages larger than the smallest (objects over 8 MiB): the
                // read is widened to them and made again.
                Some(c) if c.page > page => {
                    page = c.page;
                    continue;
                }
                Some(c) => c
                    .check(&got.body, start, total)
                    .map_err(|why| corrupt(key, why))?,
                None => {}
            }
            let at = (offset - start) as usize;
            return Ok(got.body.slice(at..at + len as usize));
        }
    }

    /// One GetObject, whole or `len` bytes from `offset` (the server stops
    /// at the object's end). A body that ends before the length the server
    /// announced is a `ShortRead` (transient).
    async fn get_object(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Fetched, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .set_range(range.map(|(offset, len)| format!("bytes={}-{}", offset, offset + len - 1)))
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    StoreError::NotFound {
                        key: key.to_string(),
                    }
                } else {
                    sdk_err("GET", key, e)
                }
            })?;
        let announced = out.content_length().and_then(|l| u64::try_from(l).ok());
        let total = range_total(out.content_range());
        let checksums = out
            .metadata()
            .and_then(|m| m.get(CHECKSUM_META))
            .and_then(|v| PageChecksums::parse(v));
        let body = match tokio::time::timeout(self.body_timeout, read_body(out.body, announced))
            .await
        {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                return Err(StoreError::S3Transient {
                    op: "GET",
                    key: key.to_string(),
                    message: shorten(format!("reading the body: {}", causes(&e))),
                });
            }
            Err(_) => {
                return Err(StoreError::S3Transient {
                    op: "GET",
                    key: key.to_string(),
                    message: format!("the body took more than {:?} to arrive", self.body_timeout),
                });
            }
        };
        let got = body.len() as u64;
        let (offset, asked) = match (range, total) {
            (Some((offset, len)), Some(total)) => (offset, len.min(total.saturating_sub(offset))),
            (Some((offset, len)), None) => (offset, len),
            (None, _) => (0, announced.unwrap_or(got)),
        };
        if got != asked || announced.is_some_and(|a| a != got) {
            return Err(StoreError::ShortRead {
                key: key.to_string(),
                offset,
                asked,
                got,
            });
        }
        Ok(Fetched {
            body,
            total,
            checksums,
        })
    }

    /// HeadObject: the object's size and user metadata, or None if missing.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectHead>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectHead {
                size: out.content_length().unwrap_or(0).max(0) as u64,
                meta: out.metadata().cloned().unwrap_or_default(),
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(sdk_err("HEAD", key, e)),
        }
    }

    /// PutObject with user metadata (`x-amz-meta-*`). The body is not
    /// hashed into the signature (SHA-256 of every block cost a tenth of a
    /// writing client's CPU); its CRC32 checksum, which the server
    /// verifies, still guards it.
    pub async fn put_with_meta(
        &self,
        key: &str,
        data: Bytes,
        meta: &HashMap<String, String>,
    ) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .set_metadata(Some(meta.clone()))
            .body(ByteStream::from(data))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| sdk_err("PUT", key, e))?;
        Ok(())
    }

    /// Starts a multipart upload; the object appears only at `finish_multipart`.
    pub async fn begin_multipart(
        &self,
        key: &str,
        meta: &HashMap<String, String>,
    ) -> Result<String, StoreError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full(key))
            .set_metadata(Some(meta.clone()))
            .send()
            .await
            .map_err(|e| sdk_err("CREATE MULTIPART", key, e))?;
        out.upload_id().map(String::from).ok_or(StoreError::S3 {
            op: "CREATE MULTIPART",
            key: key.to_string(),
            message: "the server gave no upload id".into(),
        })
    }

    /// Uploads part `number` (from 1) and returns its ETag.
    pub async fn put_part(
        &self,
        key: &str,
        upload: &str,
        number: i32,
        data: Bytes,
    ) -> Result<String, StoreError> {
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(self.full(key))
            .upload_id(upload)
            .part_number(number)
            .body(ByteStream::from(data))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| sdk_err("UPLOAD PART", key, e))?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    /// Completes a multipart upload from its parts' numbers and ETags, in order.
    pub async fn finish_multipart(
        &self,
        key: &str,
        upload: &str,
        parts: Vec<(i32, String)>,
    ) -> Result<(), StoreError> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let parts = parts
            .into_iter()
            .map(|(n, etag)| CompletedPart::builder().part_number(n).e_tag(etag).build())
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full(key))
            .upload_id(upload)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_err("COMPLETE MULTIPART", key, e))?;
        Ok(())
    }

    /// Abandons a multipart upload (best effort: the server also expires them).
    pub async fn abort_multipart(&self, key: &str, upload: &str) {
        let _ = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full(key))
            .upload_id(upload)
            .send()
            .await;
    }

    fn full(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        // A single PutObject is atomic: the object appears whole or not at all.
        let meta = HashMap::from([(CHECKSUM_META.to_string(), checksum::record(&data))]);
        self.put_with_meta(key, data, &meta).await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        self.fetch(key, Some((offset, len))).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.fetch(key, None).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(|e| sdk_err("DELETE", key, e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self
            .list_detailed(prefix)
            .await?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect())
    }

    async fn list_detailed(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full(prefix))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_err("LIST", prefix, e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push(ObjectInfo {
                        key: k[strip.min(k.len())..].to_string(),
                        size: o.size().unwrap_or(0) as u64,
                        modified: o
                            .last_modified()
                            .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn describe(&self) -> String {
        let mut s = format!("s3://{}/{}", self.bucket, self.prefix);
        if let Some(e) = &self.endpoint {
            s.push_str(&format!(" (endpoint {e})"));
        }
        s
    }
}

/// Most bytes set aside for a body before it arrives, whatever length the
/// server announces (a block is far smaller).
const MAX_BODY_PRESIZE: u64 = 64 << 20;

/// A GET's body as one buffer. A body that comes in one piece is that piece
/// (no copy). A longer one is copied piece by piece as it arrives into a
/// buffer sized for the announced length, not gathered and copied whole at
/// the end: each piece is copied while the CPU's cache still holds it, and
/// the HTTP client gets its read buffer back at once instead of taking
/// fresh memory for the next piece (a cold 1 GiB read through a mount took
/// about 120 000 page faults instead of 147 000). The buffer is aligned so
/// the disk cache writes the block direct, without a bounce copy.
async fn read_body(
    mut body: ByteStream,
    announced: Option<u64>,
) -> Result<Bytes, aws_sdk_s3::primitives::ByteStreamError> {
    let Some(first) = body.next().await.transpose()? else {
        return Ok(Bytes::new());
    };
    let Some(second) = body.next().await.transpose()? else {
        return Ok(first);
    };
    let presize = announced.unwrap_or(0).min(MAX_BODY_PRESIZE) as usize;
    let mut buf = crate::direct_io::aligned_buffer(presize);
    buf.extend_from_slice(&first);
    drop(first);
    buf.extend_from_slice(&second);
    drop(second);
    while let Some(piece) = body.next().await.transpose()? {
        buf.extend_from_slice(&piece);
    }
    Ok(buf.freeze())
}

/// A body that fails its checksums: transient, as a second read may come
/// whole.
fn corrupt(key: &str, why: String) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_worth_retrying() {
        for s in [500, 502, 503, 504, 429, 408] {
            assert!(transient_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 412, 416] {
            assert!(!transient_status(s), "{s}");
        }
    }

    #[test]
    fn content_range_gives_the_object_size() {
        assert_eq!(range_total(Some("bytes 0-9/100")), Some(100));
        assert_eq!(range_total(Some("bytes 0-9/*")), None);
        assert_eq!(range_total(None), None);
    }
}
