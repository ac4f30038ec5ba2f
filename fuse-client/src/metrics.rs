//! What the mount counts of the kernel's requests: operations by type
//! (count, latency, errors by errno) and the bytes read and written
//! through them.

use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    op: &'static str,
    errno: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct FuseMetrics {
    ops: Family<OpLabel, Counter>,
    durations: HistogramFamily<OpLabel>,
    errors: Family<ErrorLabels, Counter>,
    read_bytes: Counter,
    written_bytes: Counter,
}

static METRICS: LazyLock<FuseMetrics> = LazyLock::new(|| {
    let m = FuseMetrics {
        ops: Family::default(),
        durations: Family::new_with_constructor(strata_metrics::latency_histogram),
        errors: Family::default(),
        read_bytes: Counter::default(),
        written_bytes: Counter::default(),
    };
    strata_metrics::register(
        "fuse_ops",
        "Requests from the kernel answered, by operation",
        m.ops.clone(),
    );
    strata_metrics::register(
        "fuse_op_duration_seconds",
        "Time from a kernel request to its answer, by operation",
        m.durations.clone(),
    );
    strata_metrics::register(
        "fuse_errors",
        "Requests from the kernel answered with an error, by operation and errno",
        m.errors.clone(),
    );
    strata_metrics::register(
        "fuse_read_bytes",
        "Bytes returned to read requests",
        m.read_bytes.clone(),
    );
    strata_metrics::register(
        "fuse_written_bytes",
        "Bytes taken by write requests",
        m.written_bytes.clone(),
    );
    m
});

/// The mount's FUSE metrics (registered on first use).
pub fn metrics() -> &'static FuseMetrics {
    &METRICS
}

impl FuseMetrics {
    pub fn read(&self, bytes: usize) {
        self.read_bytes.inc_by(bytes as u64);
    }

    pub fn written(&self, bytes: usize) {
        self.written_bytes.inc_by(bytes as u64);
    }

    pub fn error(&self, op: &'static str, errno: i32) {
        self.errors
            .get_or_create(&ErrorLabels {
                op,
                errno: errno_name(errno),
            })
            .inc();
    }
}

/// One kernel request being answered: counted, with its duration, when
/// it is dropped (after the reply, wherever that happens).
pub struct OpTimer {
    op: &'static str,
    start: Instant,
}

impl OpTimer {
    pub fn start(op: &'static str) -> OpTimer {
        OpTimer {
            op,
            start: Instant::now(),
        }
    }
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        let m = metrics();
        let label = OpLabel { op: self.op };
        m.ops.get_or_create(&label).inc();
        m.durations
            .get_or_create(&label)
            .observe(strata_metrics::seconds_since(self.start));
    }
}

/// An errno's symbolic name: a label from a closed set (numbers the
/// filesystem never returns fall into "other").
fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::EDEADLK => "EDEADLK",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EDQUOT => "EDQUOT",
        libc::E2BIG => "E2BIG",
        libc::EINTR => "EINTR",
        libc::ESTALE => "ESTALE",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ENOTTY => "ENOTTY",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_are_a_closed_set() {
        assert_eq!(errno_name(libc::ENOENT), "ENOENT");
        assert_eq!(errno_name(4242), "other");
    }

    #[test]
    fn an_op_is_counted_once_with_its_duration_when_dropped() {
        let label = OpLabel { op: "test_op" };
        let before = metrics().ops.get_or_create(&label).get();
        drop(OpTimer::start("test_op"));
        assert_eq!(metrics().ops.get_or_create(&label).get(), before + 1);
        let page = strata_metrics::render();
        assert!(
            page.contains("strata_fuse_op_duration_seconds_count{op=\"test_op\"}"),
            "{page}"
        );
    }
}
