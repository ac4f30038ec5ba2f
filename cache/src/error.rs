//! Errors of the object-store and cache layer, with the one question callers
//! must answer about each: is it worth trying again (`is_transient`)?

/// Errors of the object-store layer.
#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    #[error("object {key} not found")]
    NotFound { key: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// An S3 request the server refused or could not take (403, 400, ...):
    /// the same request will fail the same way.
    #[error(
        "S3 {op} of {key} failed: {message} (check the endpoint, bucket, credentials and region)"
    )]
    S3 {
        op: &'static str,
        key: String,
        message: String,
    },
    /// An S3 request that may succeed if tried again: a timeout, a lost
    /// connection, throttling (429, 503 SlowDown), a server error (5xx, 408).
    #[error("S3 {op} of {key} failed: {message} (a transient failure; the request can be retried)")]
    S3Transient {
        op: &'static str,
        key: String,
        message: String,
    },
    #[error("storage URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// A GET whose body ended before the bytes it promised: a connection
    /// dropped mid-body, not an object that is shorter.
    #[error("reading {key}: asked for {asked} bytes at {offset}, got {got}")]
    ShortRead {
        key: String,
        offset: u64,
        asked: u64,
        got: u64,
    },
    /// A whole object whose bytes do not match the checksum recorded when
    /// it was written: damaged on the way (a bad NIC, a proxy) or at rest.
    /// Tried again, as a second read may come whole.
    #[error("object {key} came back damaged: {why}")]
    Corrupt { key: String, why: String },
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// Whether the same request may succeed if tried again: timeouts,
    /// connection and body-read failures, throttling and server errors.
    /// Missing objects, refused requests, bad URLs and local IO errors (other
    /// than interrupted or timed-out calls) are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::NotFound { .. } | StoreError::InvalidUrl { .. } | StoreError::S3 { .. } => {
                false
            }
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut
            ),
            StoreError::S3Transient { .. }
            | StoreError::ShortRead { .. }
            | StoreError::Corrupt { .. } => true,
        }
    }
}

/// A shared fetch hands its outcome to every caller waiting on it, so errors
/// must be copied. `io::Error` is not `Clone`: the copy keeps its kind (which
/// `is_transient` reads) and its message, and loses only the source chain.
impl Clone for StoreError {
    fn clone(&self) -> Self {
        match self {
            StoreError::NotFound { key } => StoreError::NotFound { key: key.clone() },
            StoreError::Io { context, source } => StoreError::Io {
                context: context.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            StoreError::S3 { op, key, message } => StoreError::S3 {
                op,
                key: key.clone(),
                message: message.clone(),
            },
            StoreError::S3Transient { op, key, message } => StoreError::S3Transient {
                op,
                key: key.clone(),
                message: message.clone(),
            },
            StoreError::InvalidUrl { url, reason } => StoreError::InvalidUrl {
                url: url.clone(),
                reason: reason.clone(),
            },
            StoreError::ShortRead {
                key,
                offset,
                asked,
                got,
            } => StoreError::ShortRead {
                key: key.clone(),
                offset: *offset,
                asked: *asked,
                got: *got,
            },
            StoreError::Corrupt { key, why } => StoreError::Corrupt {
                key: key.clone(),
                why: why.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    fn io(kind: ErrorKind) -> StoreError {
        StoreError::Io {
            context: "reading x".into(),
            source: std::io::Error::new(kind, "boom"),
        }
    }

    fn s3(transient: bool) -> StoreError {
        let (op, key) = ("GET", "k".to_string());
        if transient {
            StoreError::S3Transient {
                op,
                key,
                message: "HTTP 503 SlowDown".into(),
            }
        } else {
            StoreError::S3 {
                op,
                key,
                message: "HTTP 403 AccessDenied".into(),
            }
        }
    }

    #[test]
    fn transient_and_permanent_errors_are_told_apart() {
        assert!(!StoreError::NotFound { key: "k".into() }.is_transient());
        assert!(
            !StoreError::InvalidUrl {
                url: "x".into(),
                reason: "y".into()
            }
            .is_transient()
        );
        assert!(io(ErrorKind::TimedOut).is_transient());
        assert!(io(ErrorKind::Interrupted).is_transient());
        assert!(!io(ErrorKind::PermissionDenied).is_transient());
        assert!(!io(ErrorKind::UnexpectedEof).is_transient());
        assert!(s3(true).is_transient());
        assert!(!s3(false).is_transient());
        let short = StoreError::ShortRead {
            key: "k".into(),
            offset: 0,
            asked: 10,
            got: 3,
        };
        assert!(short.is_transient());
        assert_eq!(
            short.to_string(),
            "reading k: asked for 10 bytes at 0, got 3"
        );
    }

    #[test]
    fn messages_hint_at_what_to_do() {
        assert_eq!(
            s3(true).to_string(),
            "S3 GET of k failed: HTTP 503 SlowDown (a transient failure; the request can be retried)"
        );
        assert_eq!(
            s3(false).to_string(),
            "S3 GET of k failed: HTTP 403 AccessDenied (check the endpoint, bucket, credentials and region)"
        );
    }

    #[test]
    fn clones_keep_kind_and_message() {
        let e = io(ErrorKind::TimedOut).clone();
        assert!(e.is_transient());
        assert_eq!(e.to_string(), "reading x: boom");
        assert!(
            StoreError::NotFound { key: "k".into() }
                .clone()
                .is_not_found()
        );
        assert_eq!(s3(true).clone().to_string(), s3(true).to_string());
    }
}
