//! The access log: one line per operation a mount answered, streamed to
//! whoever reads `GET /accesslog` on the mount's control socket (`strata
//! profile`). Nothing is formatted or kept while nobody reads: a line is
//! made only when `active()` says someone listens, and a reader too slow
//! to keep up loses lines (it is told how many) rather than holding the
//! mount back.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::broadcast;

/// Lines waiting for a slow reader before it starts losing them.
const BACKLOG: usize = 16 * 1024;

static LOG: LazyLock<broadcast::Sender<Bytes>> = LazyLock::new(|| broadcast::channel(BACKLOG).0);

/// Readers now: checked twice per operation, so an atomic rather than the
/// channel's own count (which takes a lock).
static READERS: AtomicUsize = AtomicUsize::new(0);

/// Whether anyone reads the log now.
pub fn active() -> bool {
    READERS.load(Ordering::Relaxed) > 0
}

/// Sends one line (without its newline) to every reader.
pub fn publish(line: String) {
    let mut line = line.into_bytes();
    line.push(b'\n');
    let _ = LOG.send(Bytes::from(line));
}

/// A reader of the log, counted while it lives.
pub(crate) struct Reader {
    pub(crate) rx: broadcast::Receiver<Bytes>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        READERS.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) fn subscribe() -> Reader {
    let rx = LOG.subscribe();
    READERS.fetch_add(1, Ordering::Relaxed);
    Reader { rx }
}

/// `at` as `2026-12-06 20:41:07.123456` (UTC), the log's time stamps.
pub fn timestamp(at: std::time::SystemTime) -> String {
    let nanos = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_stamps_are_utc_to_the_microsecond() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_765_053_667_123_456);
        assert_eq!(timestamp(at), "2025-12-06 20:41:07.123456");
    }

    #[tokio::test]
    async fn lines_reach_readers_only_while_there_are_some() {
        assert!(!active());
        publish("nobody hears this".into());
        let mut r = subscribe();
        assert!(active());
        publish("op (1): OK".into());
        assert_eq!(
            r.rx.recv().await.unwrap(),
            Bytes::from_static(b"op (1): OK\n")
        );
        drop(r);
        assert!(!active());
    }
}
