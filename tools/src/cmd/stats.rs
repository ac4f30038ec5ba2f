//! `strata stats MOUNTPOINT`: a live view of a running mount, read from its
//! control socket (the same metrics `--metrics` serves): operations per
//! second and their latency, throughput, cache hit ratio, object store
//! requests and metadata RPCs over the last interval.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use super::{CliError, CliResult};

#[derive(Args)]
pub struct StatsArgs {
    /// The mountpoint of a running Strata mount (of this user).
    pub mountpoint: PathBuf,
    /// Print one sample (over one interval) and exit, for scripts.
    #[arg(long)]
    pub once: bool,
    /// Seconds between samples.
    #[arg(long, default_value_t = 1.0, value_parser = positive_seconds)]
    pub interval: f64,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 3600.0 => Ok(v),
        _ => Err(format!(
            "{s}: give seconds between 0 and 3600, like 1 or 0.5"
        )),
    }
}

/// Every series of a scrape by its name and labels, as the text format
/// writes them (`strata_fuse_ops_total{op="create"}`).
type Sample = BTreeMap<String, f64>;

fn parse(page: &str) -> Sample {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The metric name of a series and the value of its label `label`.
fn name_and_label<'a>(series: &'a str, label: &str) -> (&'a str, Option<&'a str>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series, None);
    };
    let value = rest.trim_end_matches('}').split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == label).then(|| v.trim_matches('"'))
    });
    (name, value)
}

/// Sums of metric `name` by label `label` (one entry, "", without it).
fn by_label(s: &Sample, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (series, v) in s {
        let (n, l) = name_and_label(series, label);
        if n == name {
            *out.entry(l.unwrap_or_default().to_string()).or_insert(0.0) += v;
        }
    }
    out
}

/// The sum of `values`, 0 (not -0, which `Iterator::sum` gives for none).
fn add<'a>(values: impl IntoIterator<Item = &'a f64>) -> f64 {
    values.into_iter().fold(0.0, |a, b| a + b)
}

fn total(s: &Sample, name: &str) -> f64 {
    add(by_label(s, name, "").values())
}

async fn scrape(
    socket: &std::path::Path,
    mountpoint: &std::path::Path,
) -> Result<Sample, CliError> {
    strata_metrics::get_unix(socket, "/metrics")
        .await
        .map(|page| parse(&page))
        .map_err(|e| {
            CliError(format!(
                "no running Strata mount of this user on {} ({e})",
                mountpoint.display()
            ))
        })
}

pub async fn run(a: StatsArgs) -> CliResult {
    let socket = super::mount::control_socket(&a.mountpoint);
    let interval = Duration::from_secs_f64(a.interval);
    let mut before = scrape(&socket, &a.mountpoint).await?;
    let mut at = Instant::now();
    loop {
        tokio::time::sleep(interval).await;
        let now = scrape(&socket, &a.mountpoint).await?;
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        let view = render(&before, &now, secs);
        if a.once {
            print!("{view}");
            return Ok(());
        }
        // Clear the terminal and draw from its top, like top(1).
        print!("\x1b[2J\x1b[H{view}");
        before = now;
    }
}

/// What changed between two samples `secs` apart, as a table.
fn render(before: &Sample, now: &Sample, secs: f64) -> String {
    let delta = |name: &str, label: &str| -> BTreeMap<String, f64> {
        let old = by_label(before, name, label);
        by_label(now, name, label)
            .into_iter()
            .map(|(k, v)| {
                let d = v - old.get(&k).copied().unwrap_or(0.0);
                (k, d.max(0.0))
            })
            .collect()
    };
    let sum = |m: &BTreeMap<String, f64>| add(m.values());
    let mut out = String::new();
    let _ = writeln!(out, "strata stats: last {secs:.1} s\n");

    // Operations by type, busiest first, with their mean latency.
    let ops = delta("strata_fuse_ops_total", "op");
    let op_secs = delta("strata_fuse_op_duration_seconds_sum", "op");
    let errors = delta("strata_fuse_errors_total", "op");
    let _ = writeln!(
        out,
        "FUSE      {:>10.0} ops/s   read {}/s   written {}/s",
        sum(&ops) / secs,
        bytes(sum(&delta("strata_fuse_read_bytes_total", "")) / secs),
        bytes(sum(&delta("strata_fuse_written_bytes_total", "")) / secs),
    );
    let mut busiest: Vec<_> = ops.iter().filter(|(_, n)| **n > 0.0).collect();
    busiest.sort_by(|a, b| b.1.total_cmp(a.1));
    for (op, n) in busiest.iter().take(8) {
        let mean = op_secs.get(*op).copied().unwrap_or(0.0) / **n;
        let _ = writeln!(
            out,
            "  {op:<14}{:>10.0} /s   {:>9}   errors {:.0}",
            **n / secs,
            latency(mean),
            errors.get(*op).copied().unwrap_or(0.0),
        );
    }

    let hits = delta("strata_cache_hits_total", "tier");
    let misses = sum(&delta("strata_cache_misses_total", ""));
    let all_reads = sum(&hits) + misses;
    let ratio = if all_reads > 0.0 {
        format!("{:.1} %", 100.0 * sum(&hits) / all_reads)
    } else {
        "-".to_string()
    };
    let used = by_label(now, "strata_cache_used_bytes", "tier");
    let _ = writeln!(
        out,
        "\nCache     hit ratio {ratio}   memory {}   disk {}   misses {:.0}/s",
        bytes(used.get("memory").copied().unwrap_or(0.0)),
        bytes(used.get("disk").copied().unwrap_or(0.0)),
        misses / secs,
    );
    let _ = writeln!(
        out,
        "Buffer    {} of {}   write-back queue {:.0}",
        bytes(total(now, "strata_write_buffer_used_bytes")),
        bytes(total(now, "strata_write_buffer_limit_bytes")),
        total(now, "strata_writeback_queued_commits"),
    );

    let requests = delta("strata_object_requests_total", "kind");
    let req_secs = delta("strata_object_request_duration_seconds_sum", "kind");
    let moved = delta("strata_object_bytes_total", "kind");
    let _ = writeln!(
        out,
        "\nObjects   {:>10.0} req/s   errors {:.0}   retries {:.0}",
        sum(&requests) / secs,
        sum(&delta("strata_object_errors_total", "kind")),
        sum(&delta("strata_object_retries_total", "kind")),
    );
    for (kind, n) in requests.iter().filter(|(_, n)| **n > 0.0) {
        let _ = writeln!(
            out,
            "  {kind:<14}{:>10.0} /s   {:>9}   {}/s",
            n / secs,
            latency(req_secs.get(kind).copied().unwrap_or(0.0) / n),
            bytes(moved.get(kind).copied().unwrap_or(0.0) / secs),
        );
    }

    let rpcs = delta("strata_meta_rpcs_total", "kind");
    let rpc_secs = delta("strata_meta_rpc_duration_seconds_sum", "kind");
    let _ = writeln!(
        out,
        "\nMetadata  {:>10.0} rpc/s   {:>9}   retries {:.0}   not leader {:.0}",
        sum(&rpcs) / secs,
        latency(if sum(&rpcs) > 0.0 {
            sum(&rpc_secs) / sum(&rpcs)
        } else {
            0.0
        }),
        sum(&delta("strata_meta_rpc_retries_total", "kind")),
        sum(&delta("strata_meta_rpc_not_leader_total", "kind")),
    );
    let mut busiest: Vec<_> = rpcs.iter().filter(|(_, n)| **n > 0.0).collect();
    busiest.sort_by(|a, b| b.1.total_cmp(a.1));
    for (kind, n) in busiest.iter().take(6) {
        let _ = writeln!(
            out,
            "  {kind:<14}{:>10.0} /s   {:>9}",
            **n / secs,
            latency(rpc_secs.get(*kind).copied().unwrap_or(0.0) / **n),
        );
    }
    out
}

fn bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn latency(secs: f64) -> String {
    let micros = (secs * 1e6).round();
    if micros >= 1e6 {
        format!("{secs:.2} s")
    } else if micros >= 1e3 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{micros:.0} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
# TYPE strata_fuse_ops counter
strata_fuse_ops_total{op=\"create\"} 10
strata_fuse_op_duration_seconds_sum{op=\"create\"} 0.01
strata_cache_hits_total{tier=\"memory\"} 5
strata_cache_misses_total 5
";
    const NOW: &str = "\
strata_fuse_ops_total{op=\"create\"} 30
strata_fuse_ops_total{op=\"lookup\"} 4
strata_fuse_op_duration_seconds_sum{op=\"create\"} 0.03
strata_fuse_op_duration_seconds_sum{op=\"lookup\"} 0.0004
strata_cache_hits_total{tier=\"memory\"} 20
strata_cache_hits_total{tier=\"disk\"} 0
strata_cache_misses_total 10
";

    #[test]
    fn rates_latencies_and_hit_ratio_come_from_the_difference() {
        let view = render(&parse(BEFORE), &parse(NOW), 2.0);
        assert!(view.contains("FUSE              12 ops/s"), "{view}");
        // 20 creates in 2 s taking 0.02 s in all: 1 ms each.
        assert!(
            view.contains("create                10 /s     1.00 ms"),
            "{view}"
        );
        assert!(
            view.contains("lookup                 2 /s      100 µs"),
            "{view}"
        );
        // 15 hits and 5 misses.
        assert!(view.contains("hit ratio 75.0 %"), "{view}");
    }

    #[test]
    fn labels_are_read_from_series_names() {
        assert_eq!(
            name_and_label("strata_x_total{op=\"read\",errno=\"EIO\"}", "errno"),
            ("strata_x_total", Some("EIO"))
        );
        assert_eq!(name_and_label("strata_y 3", "op"), ("strata_y 3", None));
    }

    #[test]
    fn intervals_must_be_positive_seconds() {
        assert!(positive_seconds("0.5").is_ok());
        for bad in ["0", "-1", "nan", "inf", "soon"] {
            assert!(positive_seconds(bad).is_err(), "{bad}");
        }
    }
}
