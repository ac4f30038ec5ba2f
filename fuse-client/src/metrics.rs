//! What the mount counts: the kernel's requests by type (count, latency,
//! errors by errno), the bytes read and written through them, prefetches,
//! waits for write buffer, garbage purged and deleted, chunks compacted;
//! and, read from the mount at each scrape, its caches, write buffer,
//! write-back queue and chunks waiting for compaction.

use std::cell::Cell;
use std::sync::{LazyLock, Mutex, Weak};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use strata_metrics::Labeled;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    op: &'static str,
    errno: &'static str,
}

pub struct FuseMetrics {
    ops: Labeled<OpLabel, Counter>,
    durations: Labeled<OpLabel, Histogram>,
    errors: Family<ErrorLabels, Counter>,
    read_bytes: Counter,
    written_bytes: Counter,
    buffer_waits: Histogram,
    prefetches: Counter,
    prefetch_failures: Counter,
    purged_inodes: Counter,
    deleted_slices: Counter,
    deleted_objects: Counter,
    compactions: Counter,
}

static METRICS: LazyLock<FuseMetrics> = LazyLock::new(|| {
    let m = FuseMetrics {
        ops: Labeled::default(),
        durations: Labeled::new(Family::new_with_constructor(
            strata_metrics::latency_histogram,
        )),
        errors: Family::default(),
        read_bytes: Counter::default(),
        written_bytes: Counter::default(),
        buffer_waits: strata_metrics::latency_histogram(),
        prefetches: Counter::default(),
        prefetch_failures: Counter::default(),
        purged_inodes: Counter::default(),
        deleted_slices: Counter::default(),
        deleted_objects: Counter::default(),
        compactions: Counter::default(),
    };
    strata_metrics::register(
        "fuse_ops",
        "Requests from the kernel answered, by operation",
        m.ops.family(),
    );
    strata_metrics::register(
        "fuse_op_duration_seconds",
        "Time from a kernel request to its answer, by operation",
        m.durations.family(),
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
    strata_metrics::register(
        "trash_purged_inodes",
        "Inodes purged from the trash by this client's garbage passes",
        m.purged_inodes.clone(),
    );
    strata_metrics::register(
        "deleted_slices",
        "Slices whose objects this client deleted (after the deletion delay)",
        m.deleted_slices.clone(),
    );
    strata_metrics::register(
        "deleted_objects",
        "Objects this client deleted from the store",
        m.deleted_objects.clone(),
    );
    strata_metrics::register(
        "compactions",
        "Chunks this client compacted into one slice",
        m.compactions.clone(),
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

    pub(crate) fn purged(&self, inodes: u64) {
        self.purged_inodes.inc_by(inodes);
    }

    pub(crate) fn deleted(&self, slices: u64, objects: u64) {
        self.deleted_slices.inc_by(slices);
        self.deleted_objects.inc_by(objects);
    }

    pub(crate) fn compacted(&self) {
        self.compactions.inc();
    }
}

/// One kernel request being answered: counted, with its duration and its
/// errno if it failed, and written to the access log if anyone reads it,
/// when it is dropped (after the reply, wherever that happens).
pub struct OpTimer {
    op: &'static str,
    /// The inode asked about (the parent, for operations on a name), as
    /// the kernel numbers it.
    ino: u64,
    start: Instant,
    /// Who asked (uid, gid, pid), for the access log.
    who: (u32, u32, u32),
    /// The request's arguments, made only while the access log is read.
    args: Option<String>,
    errno: Option<i32>,
}

tokio::task_local! {
    /// The errno a spawned request was answered with (set by `failed`).
    static ERRNO: Cell<Option<i32>>;
}

impl OpTimer {
    pub fn start(op: &'static str, req: &fuser::Request, ino: u64) -> OpTimer {
        OpTimer {
            op,
            ino,
            start: Instant::now(),
            who: (req.uid(), req.gid(), req.pid()),
            args: None,
            errno: None,
        }
    }

    /// The arguments the access log shows, made only if someone reads it.
    pub fn args(mut self, make: impl FnOnce() -> String) -> OpTimer {
        if strata_metrics::access_log::active() {
            self.args = Some(make());
        }
        self
    }

    /// This request was answered with `errno` (answered here, not in a task).
    pub fn failed(&mut self, errno: i32) {
        self.errno = Some(errno);
    }

    /// Runs `answer` (which replies to the kernel) and then counts the
    /// request with the errno `answer` gave it (see `failed_in_task`).
    /// Everything logged while answering, down to the metadata RPCs it
    /// makes, carries the operation and the inode (a `fuse` span).
    pub async fn around(mut self, answer: impl std::future::Future<Output = ()>) {
        use tracing::Instrument;
        let span = tracing::debug_span!("fuse", op = self.op, ino = self.ino);
        let errno = ERRNO.scope(Cell::new(None), async {
            answer.await;
            ERRNO.with(Cell::get)
        });
        self.errno = errno.instrument(span).await;
    }
}

/// Notes that the request answered in this task failed with `errno` (its
/// `OpTimer` reads it once the answer is sent).
pub fn failed_in_task(errno: i32) {
    let _ = ERRNO.try_with(|e| e.set(Some(errno)));
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        let m = metrics();
        let label = OpLabel { op: self.op };
        m.ops.with(&label, Counter::inc);
        let took = self.start.elapsed();
        m.durations.with(&label, |h| h.observe(took.as_secs_f64()));
        if let Some(errno) = self.errno {
            m.errors
                .get_or_create(&ErrorLabels {
                    op: self.op,
                    errno: errno_name(errno),
                })
                .inc();
        }
        if strata_metrics::access_log::active() {
            let (uid, gid, pid) = self.who;
            let result = match self.errno {
                None => "OK".to_string(),
                Some(e) => match errno_name(e) {
                    "other" => format!("errno {e}"),
                    name => name.to_string(),
                },
            };
            strata_metrics::access_log::publish(format!(
                "{} [uid:{uid},gid:{gid},pid:{pid}] {} ({}): {result} <{:.6}>",
                strata_metrics::access_log::timestamp(std::time::SystemTime::now() - took),
                self.op,
                self.args.as_deref().unwrap_or(""),
                took.as_secs_f64(),
            ));
        }
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
        let mut to_compact = 0u64;
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
            to_compact += fs.compactor.waiting() as u64;
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
        let singles: [(&str, &str, MetricType, u64); 6] = [
            (
                "compaction_waiting_chunks",
                "Crowded chunks waiting for their compaction",
                MetricType::Gauge,
                to_compact,
            ),
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

    fn timer(op: &'static str) -> OpTimer {
        OpTimer {
            op,
            ino: 1,
            start: Instant::now(),
            who: (0, 0, 0),
            args: None,
            errno: None,
        }
    }

    #[tokio::test]
    async fn an_op_is_counted_once_with_its_duration_and_errno() {
        let label = OpLabel { op: "test_op" };
        let error = ErrorLabels {
            op: "test_op",
            errno: "ENOENT",
        };
        let before = metrics().ops.with(&label, Counter::get);
        timer("test_op").around(async {}).await;
        timer("test_op")
            .around(async { failed_in_task(libc::ENOENT) })
            .await;
        assert_eq!(metrics().ops.with(&label, Counter::get), before + 2);
        assert_eq!(metrics().errors.get_or_create(&error).get(), 1);
        let page = strata_metrics::render();
        assert!(
            page.contains("strata_fuse_op_duration_seconds_count{op=\"test_op\"} 2"),
            "{page}"
        );
    }
}
