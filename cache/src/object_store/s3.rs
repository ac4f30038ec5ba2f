//! Blocks as objects in an S3 bucket (aws-sdk-s3).

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::{ObjectStore, StoreOptions};
use crate::StoreError;

pub struct S3Store {
    client: Client,
    bucket: String,
    /// Without leading or trailing '/'; may be empty.
    prefix: String,
    endpoint: Option<String>,
}

fn s3_err<E: std::fmt::Debug + std::fmt::Display>(op: &'static str, key: &str, e: E) -> StoreError {
    StoreError::S3 {
        op,
        key: key.to_string(),
        message: format!("{e}: {e:?}").chars().take(600).collect(),
    }
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
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
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
        Ok(S3Store {
            client: Client::from_conf(conf.build()),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint,
        })
    }

    /// GetObject, whole or a `bytes=a-b` range.
    async fn fetch(&self, key: &str, range: Option<String>) -> Result<Bytes, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .set_range(range)
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    StoreError::NotFound {
                        key: key.to_string(),
                    }
                } else {
                    s3_err("GET", key, aws_sdk_s3::error::DisplayErrorContext(e))
                }
            })?;
        Ok(out
            .body
            .collect()
            .await
            .map_err(|e| s3_err("GET", key, e))?
            .into_bytes())
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
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| s3_err("PUT", key, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let range = format!("bytes={}-{}", offset, offset + len - 1);
        let body = self.fetch(key, Some(range)).await?;
        if body.len() as u64 != len {
            return Err(StoreError::S3 {
                op: "GET",
                key: key.to_string(),
                message: format!("asked for {len} bytes at {offset}, got {}", body.len()),
            });
        }
        Ok(body)
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
            .map_err(|e| s3_err("DELETE", key, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
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
            let page = page
                .map_err(|e| s3_err("LIST", prefix, aws_sdk_s3::error::DisplayErrorContext(e)))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push((
                        k[strip.min(k.len())..].to_string(),
                        o.size().unwrap_or(0) as u64,
                    ));
                }
            }
        }
        out.sort();
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
