//! `strata profile MOUNTPOINT`: the mount's access log, read from its
//! control socket: every operation with its arguments, result and
//! duration (`--raw`), or a summary by operation and by file.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use super::{CliError, CliResult};

#[derive(Args)]
pub struct ProfileArgs {
    /// The mountpoint of a running Strata mount (of this user).
    pub mountpoint: PathBuf,
    /// Print every operation as it happens instead of a summary.
    #[arg(long)]
    pub raw: bool,
    /// Stop after this many seconds and print the summary once (for
    /// scripts); without it the summary is redrawn every 2 s until Ctrl-C.
    #[arg(long, value_parser = positive_seconds)]
    pub duration: Option<f64>,
    /// Files shown in the summary, busiest first.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("{s}: give seconds between 0 and 86400, like 10")),
    }
}

/// One line of the access log, as the mount writes it:
/// `2026-12-06 20:41:07.123456 [uid:0,gid:0,pid:42] write (17,0,4096,3): OK <0.000120>`.
#[derive(Debug, PartialEq)]
struct Entry<'a> {
    op: &'a str,
    /// The first argument: the inode (or parent directory) asked about.
    ino: Option<u64>,
    ok: bool,
    secs: f64,
}

fn parse(line: &str) -> Option<Entry<'_>> {
    let (_, rest) = line.split_once("] ")?;
    let (op, rest) = rest.split_once(" (")?;
    let (args, rest) = rest.rsplit_once("): ")?;
    let (result, took) = rest.rsplit_once(" <")?;
    Some(Entry {
        op,
        ino: args.split(',').next().and_then(|a| a.parse().ok()),
        ok: result == "OK",
        secs: took.strip_suffix('>')?.parse().ok()?,
    })
}

#[derive(Default)]
struct Tally {
    count: u64,
    errors: u64,
    secs: f64,
}

impl Tally {
    fn add(&mut self, e: &Entry) {
        self.count += 1;
        self.errors += u64::from(!e.ok);
        self.secs += e.secs;
    }
}

#[derive(Default)]
struct Summary {
    by_op: HashMap<String, Tally>,
    by_file: HashMap<u64, (Tally, HashMap<String, u64>)>,
}

impl Summary {
    fn add(&mut self, e: &Entry) {
        self.by_op.entry(e.op.to_string()).or_default().add(e);
        if let Some(ino) = e.ino {
            let (t, ops) = self.by_file.entry(ino).or_default();
            t.add(e);
            *ops.entry(e.op.to_string()).or_default() += 1;
        }
    }

    fn render(&self, secs: f64, top: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "strata profile: {secs:.1} s\n");
        let _ = writeln!(
            out,
            "{:<16}{:>10}{:>9}{:>12}{:>12}",
            "operation", "count", "errors", "total s", "mean ms"
        );
        let mut ops: Vec<_> = self.by_op.iter().collect();
        ops.sort_by(|a, b| b.1.secs.total_cmp(&a.1.secs));
        for (op, t) in ops {
            let _ = writeln!(
                out,
                "{op:<16}{:>10}{:>9}{:>12.3}{:>12.3}",
                t.count,
                t.errors,
                t.secs,
                1e3 * t.secs / t.count as f64
            );
        }
        let _ = writeln!(
            out,
            "\n{:<16}{:>10}{:>12}  operations",
            "inode", "count", "total s"
        );
        let mut files: Vec<_> = self.by_file.iter().collect();
        files.sort_by(|a, b| b.1.0.secs.total_cmp(&a.1.0.secs));
        for (ino, (t, ops)) in files.into_iter().take(top) {
            let mut ops: Vec<_> = ops.iter().collect();
            ops.sort_by(|a, b| b.1.cmp(a.1));
            let ops: Vec<String> = ops.iter().map(|(op, n)| format!("{op} {n}")).collect();
            let _ = writeln!(
                out,
                "{ino:<16}{:>10}{:>12.3}  {}",
                t.count,
                t.secs,
                ops.join(", ")
            );
        }
        out
    }
}

pub async fn run(a: ProfileArgs) -> CliResult {
    let socket = super::mount::control_socket(&a.mountpoint);
    let mut lines = strata_metrics::stream_unix(&socket, "/accesslog")
        .await
        .map_err(|e| {
            CliError(format!(
                "no running Strata mount of this user on {} ({e})",
                a.mountpoint.display()
            ))
        })?;
    let started = Instant::now();
    let end = a
        .duration
        .map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d));
    let mut summary = Summary::default();
    let mut redraw = tokio::time::interval(Duration::from_secs(2));
    redraw.tick().await;
    let mut shutdown = super::meta::Shutdown::install()?;
    let live = !a.raw && end.is_none();
    loop {
        let ended = async {
            match end {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line.map_err(|e| CliError(format!("reading the access log: {e}")))? else {
                    break; // the mount went away
                };
                if a.raw {
                    println!("{line}");
                } else if let Some(e) = parse(&line) {
                    summary.add(&e);
                }
            }
            _ = redraw.tick(), if live => {
                print!("\x1b[2J\x1b[H{}", summary.render(started.elapsed().as_secs_f64(), a.top));
            }
            _ = ended => break,
            _ = shutdown.recv() => break,
        }
    }
    if !a.raw {
        print!("{}", summary.render(started.elapsed().as_secs_f64(), a.top));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_back_as_the_mount_writes_them() {
        let line =
            "2026-12-06 20:41:07.123456 [uid:0,gid:0,pid:42] write (17,0,4096,3): OK <0.000120>";
        assert_eq!(
            parse(line),
            Some(Entry {
                op: "write",
                ino: Some(17),
                ok: true,
                secs: 0.000120
            })
        );
        // A name with a parenthesis and "): " in it does not confuse it.
        let line = "2026-12-06 20:41:07.1 [uid:1,gid:1,pid:2] lookup (1,\"a): b(\"): ENOENT <0.5>";
        let e = parse(line).unwrap();
        assert_eq!((e.op, e.ino, e.ok, e.secs), ("lookup", Some(1), false, 0.5));
        assert_eq!(parse("# 3 lines lost: reading too slowly"), None);
    }

    #[test]
    fn the_summary_sums_by_operation_and_by_file() {
        let mut s = Summary::default();
        for line in [
            "t [u] write (5,0,10,1): OK <0.002>",
            "t [u] write (5,10,10,1): OK <0.002>",
            "t [u] lookup (1,\"x\"): ENOENT <0.001>",
        ] {
            s.add(&parse(line).unwrap());
        }
        let view = s.render(1.0, 10);
        assert!(
            view.contains("write                    2        0       0.004       2.000"),
            "{view}"
        );
        assert!(
            view.contains("lookup                   1        1"),
            "{view}"
        );
        assert!(
            view.contains("5                        2       0.004  write 2"),
            "{view}"
        );
    }
}
