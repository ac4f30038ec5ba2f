//! What the mount counts: the kernel's requests by type (count, latency,
//! errors by errno), the bytes read and written through them, prefetches
//! and waits for write buffer; and, read from the mount at each scrape,
//! its caches, write buffer and write-back queue.

use std::sync::{LazyLock, Mutex, Weak};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

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
    buffer_waits: Histogram,
    prefetches: Counter,
    prefetch_failures: Counter,
}

static METRICS: LazyLock<FuseMetrics> = LazyLock::new(|| {
    let m = FuseMetrics {
        ops: Family::default(),
        durations: Family::new_with_constructor(strata_metrics::latency_histogram),
        errors: Family::default(),
        read_bytes: Counter::default(),
        written_bytes: Counter::default(),
        buffer_waits: strata_metrics::latency_histogram(),
        prefetches: Counter::default(),
        prefetch_failures: Counter::default(),
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
    strata_metrics::register(
        "write_buffer_wait_seconds",
        "Writes that waited for room in the write buffer, and how long",
        m.buffer_waits.clone(),
    );
    strata_metrics::register(
        "prefetches",
        "Blocks fetched ahead of sequential readers",
        m.prefetches.clone(),
    );
    strata_metrics::register(
        "prefetch_failures",
        "Prefetches that failed (the reader fetches the block itself)",
        m.prefetch_failures.clone(),
    );
    strata_metrics::register_collector(MountCollector);
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

    pub(crate) fn buffer_waited(&self, start: Instant) {
        self.buffer_waits
            .observe(strata_metrics::seconds_since(start));
    }

    pub(crate) fn prefetch_issued(&self) {
        self.prefetches.inc();
    }

    pub(crate) fn prefetch_failed(&self) {
        self.prefetch_failures.inc();
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

/// The mounts this process serves (tests run several; `strata mount` one).
static MOUNTS: Mutex<Vec<Weak<crate::Filesystem>>> = Mutex::new(Vec::new());

/// Reports `fs`'s caches and queues in the metrics for as long as it lives.
pub(crate) fn watch_mount(fs: Weak<crate::Filesystem>) {
    LazyLock::force(&METRICS);
    let mut mounts = MOUNTS.lock().unwrap();
    mounts.retain(|m| m.strong_count() > 0);
    mounts.push(fs);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabel {
    tier: &'static str,
}

/// Sums over the live mounts, read at each scrape.
#[derive(Debug)]
struct MountCollector;

impl Collector for MountCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mounts: Vec<_> = MOUNTS
            .lock()
            .unwrap()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let mut cache = strata_cache::CacheStats::default();
        let (mut buffered, mut buffer_limit, mut queued) = (0u64, 0u64, 0u64);
        for fs in &mounts {
            let s = fs.cache().stats();
            cache.mem_bytes += s.mem_bytes;
            cache.disk_bytes += s.disk_bytes;
            cache.mem_hits += s.mem_hits;
            cache.disk_hits += s.disk_hits;
            cache.store_fetches += s.store_fetches;
            cache.store_range_fetches += s.store_range_fetches;
            cache.shared_fetches += s.shared_fetches;
            let (used, limit) = fs.write_buffer();
            buffered += used;
            buffer_limit += limit;
            queued += fs.writeback_queued() as u64;
        }
        let tiers = |mem: u64, disk: u64| {
            [
                (TierLabel { tier: "memory" }, mem),
                (TierLabel { tier: "disk" }, disk),
            ]
        };
        let mut by_tier =
            |name: &str, help: &str, kind: MetricType, values: [(TierLabel, u64); 2]| {
                let mut family = encoder.encode_descriptor(name, help, None, kind)?;
                for (label, v) in &values {
                    let mut m = family.encode_family(label)?;
                    match kind {
                        MetricType::Counter => m.encode_counter::<NoLabelSet, _, u64>(v, None)?,
                        _ => m.encode_gauge(v)?,
                    }
                }
                Ok::<(), std::fmt::Error>(())
            };
        by_tier(
            "cache_hits",
            "Block reads served from the memory or the disk cache",
            MetricType::Counter,
            tiers(cache.mem_hits, cache.disk_hits),
        )?;
        by_tier(
            "cache_used_bytes",
            "Bytes of blocks held by the memory and the disk cache",
            MetricType::Gauge,
            tiers(cache.mem_bytes, cache.disk_bytes),
        )?;
        let singles: [(&str, &str, MetricType, u64); 5] = [
            (
                "cache_misses",
                "Block reads that went to the object store (whole blocks and ranges)",
                MetricType::Counter,
                cache.store_fetches + cache.store_range_fetches,
            ),
            (
                "cache_shared_fetches",
                "Block reads that waited on a fetch another read had started",
                MetricType::Counter,
                cache.shared_fetches,
            ),
            (
                "write_buffer_used_bytes",
                "Written bytes held in memory until stored",
                MetricType::Gauge,
                buffered,
            ),
            (
                "write_buffer_limit_bytes",
                "The most written bytes memory may hold (--buffer-size)",
                MetricType::Gauge,
                buffer_limit,
            ),
            (
                "writeback_queued_commits",
                "Commits in the write-back journal not yet recorded by the metaserver",
                MetricType::Gauge,
                queued,
            ),
        ];
        for (name, help, kind, v) in singles {
            let mut m = encoder.encode_descriptor(name, help, None, kind)?;
            match kind {
                MetricType::Counter => m.encode_counter::<NoLabelSet, _, u64>(&v, None)?,
                _ => m.encode_gauge(&v)?,
            }
        }
        Ok(())
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
