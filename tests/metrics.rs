//! Metrics as an operator sees them: a real Prometheus server (Debian's
//! `prometheus`, which scripts/test.sh installs) scrapes a mount and the
//! three nodes of a cluster while a workload runs, and the test asks its
//! HTTP API whether the counters moved by what the workload did.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;

/// `q` with everything but letters and digits percent-encoded.
fn url_encode(q: &str) -> String {
    q.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

struct Prometheus {
    child: Child,
    addr: String,
}

impl Prometheus {
    /// Scrapes each job's targets every second.
    fn start(dir: &Path, jobs: &[(&str, Vec<String>)]) -> Prometheus {
        std::fs::create_dir_all(dir).unwrap();
        let mut config = String::from("global:\n  scrape_interval: 1s\nscrape_configs:\n");
        for (job, targets) in jobs {
            let list = targets
                .iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(", ");
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [{list}]\n"
            ));
        }
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus runs (scripts/test.sh installs Debian's prometheus)");
        let p = Prometheus { child, addr };
        until(60, "prometheus to answer", || {
            http_get(&p.addr, "/-/ready").is_some()
        });
        p
    }

    /// An instant query's samples: each one's labels and value.
    fn query(&self, q: &str) -> Vec<(serde_json::Value, f64)> {
        let path = format!("/api/v1/query?query={}", url_encode(q));
        let Some(body) = http_get(&self.addr, &path) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{q}: {body}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let value = s["value"][1].as_str().unwrap().parse().unwrap();
                (s["metric"].clone(), value)
            })
            .collect()
    }

    /// The one value of `q`, once there is one.
    fn value(&self, q: &str) -> Option<f64> {
        match self.query(q).as_slice() {
            [(_, v)] => Some(*v),
            [] => None,
            many => panic!("{q}: expected one sample, got {many:?}"),
        }
    }

    /// Waits until `q` is at least `want` (a counter on its way up) and
    /// returns what it then is.
    fn reaches(&self, q: &str, want: f64) -> f64 {
        let mut last = None;
        until(60, &format!("{q} to reach {want}"), || {
            last = self.value(q);
            last.is_some_and(|v| v >= want)
        });
        last.unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const FILES: usize = 120;
const FILE_BYTES: usize = 40 << 10;

#[test]
fn prometheus_sees_what_a_workload_did_on_a_mount_and_a_cluster() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let node_metrics: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let (nodes, addrs) = start_cluster_each(tmp.path(), |id| {
        vec![
            "--metrics".to_string(),
            node_metrics[id as usize - 1].clone(),
        ]
    });
    let meta = addrs.join(",");
    let s3 = S3::start(&tmp.path().join("s3"));
    format_data(&meta, &s3, &[]);

    let mount_metrics = format!("127.0.0.1:{}", free_port());
    let mut env = s3.env();
    env.push(("RUST_LOG", "warn"));
    let mnt = Mount::new(
        &tmp.path().join("mnt"),
        &["--meta", &meta, "data", "--metrics", &mount_metrics],
        &env,
    );
    let prom = Prometheus::start(
        &tmp.path().join("prom"),
        &[
            ("mount", vec![mount_metrics.clone()]),
            ("cluster", node_metrics.clone()),
        ],
    );

    // The workload: files created and synced (each one's blocks uploaded).
    let mut rng = Rng(11);
    for i in 0..FILES {
        let mut data = vec![0u8; FILE_BYTES];
        rng.fill(&mut data);
        write_synced(&mnt.path(&format!("f{i}")), &data);
    }
    let written = (FILES * FILE_BYTES) as f64;

    // Files created: exactly the creates the kernel sent, each timed.
    let creates = prom.reaches(r#"strata_fuse_ops_total{op="create"}"#, FILES as f64);
    assert_eq!(creates, FILES as f64);
    let timed = prom.value(r#"strata_fuse_op_duration_seconds_count{op="create"}"#);
    assert_eq!(timed, Some(FILES as f64));
    let slowest_bucket =
        prom.value(r#"strata_fuse_op_duration_seconds_bucket{op="create",le="+Inf"}"#);
    assert_eq!(slowest_bucket, Some(FILES as f64));
    // Bytes: what the writes took, all of it sent to the store.
    let took = prom.reaches("strata_fuse_written_bytes_total", written);
    assert_eq!(took, written);
    let put = prom.reaches(r#"strata_object_bytes_total{kind="PUT"}"#, written);
    assert!(put >= written, "{put} bytes PUT for {written} written");
    prom.reaches(r#"strata_object_requests_total{kind="PUT"}"#, FILES as f64);
    // Metadata: at least one create request per file (a Create at open, or
    // a CreateFile with the file's first commit: decision 71), answered by
    // the cluster's nodes and made by the mount.
    prom.reaches(
        r#"sum(strata_meta_rpcs_total{kind=~"Create|CreateFile"})"#,
        FILES as f64,
    );
    prom.reaches(
        r#"sum(strata_node_requests_total{job="cluster",kind=~"Create|CreateFile",result="ok"})"#,
        FILES as f64,
    );
    let latencies = prom.reaches(
        r#"sum(strata_node_request_duration_seconds_count{job="cluster",kind=~"Create|CreateFile"})"#,
        FILES as f64,
    );
    assert!(latencies >= FILES as f64);
    prom.reaches(
        r#"sum(strata_node_log_fsync_duration_seconds_count{job="cluster"})"#,
        FILES as f64,
    );
    prom.reaches(
        r#"sum(strata_node_proposal_duration_seconds_count{job="cluster",result="ok"})"#,
        FILES as f64,
    );
    // Usage, from each group's leader: the files and their bytes (and the
    // root directory) of the one filesystem.
    let inodes = prom.reaches(
        r#"sum(strata_fs_inodes{job="cluster"})"#,
        FILES as f64 + 1.0,
    );
    assert_eq!(inodes, FILES as f64 + 1.0);
    let bytes = prom.reaches(r#"sum(strata_fs_bytes{job="cluster"})"#, written);
    assert_eq!(bytes, written);
    let dbs = prom.reaches(r#"count(strata_node_db_bytes{job="cluster"} > 0)"#, 3.0);
    assert_eq!(dbs, 3.0, "every node's database");

    // Every group has exactly one leader among the three nodes, and each
    // node reports every group.
    // (Each node is scraped on its own schedule: wait for all three.)
    let mut groups = Vec::new();
    until(60, "every node to report every group", || {
        groups = prom.query(r#"count by (group) (strata_raft_term{job="cluster"})"#);
        groups.len() >= 2 && groups.iter().all(|(_, nodes)| *nodes == 3.0)
    });
    let leaders = prom.query(r#"sum by (group) (strata_raft_is_leader{job="cluster"})"#);
    assert_eq!(leaders.len(), groups.len(), "{leaders:?}");
    for (labels, n) in &leaders {
        assert_eq!(*n, 1.0, "group {labels} has one leader");
    }
    // The dashboard asks only for metrics the mount and the nodes register
    // (a family with no series yet, say no errors so far, is not in a
    // scrape, so the registrations in the sources are the reference).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let registered: String = [
        "fuse-client/src/metrics.rs",
        "cache/src/metrics.rs",
        "metaserver/src/metrics.rs",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(root.join(f)).unwrap())
    .collect();
    let exported: String = std::iter::once(&mount_metrics)
        .chain(&node_metrics)
        .map(|a| http_get(a, "/metrics").expect("a scrape"))
        .collect();
    let dashboard = std::fs::read_to_string(root.join("docs/grafana-dashboard.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut asked = 0;
    for panel in json["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("strata_"))
            {
                asked += 1;
                let family = ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                let short = family.trim_start_matches("strata_");
                assert!(
                    exported.lines().any(|l| l.starts_with(name))
                        || registered.contains(&format!("\"{short}\"")),
                    "the dashboard's {name} is neither exported nor registered"
                );
            }
        }
    }
    assert!(asked > 30, "{asked} series asked for");
    mnt.unmount();
    drop(nodes);
}

#[test]
fn metrics_flag_with_a_bad_address_is_refused_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = strata()
        .args(["meta", "serve", "--id", "1", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(tmp.path().join("n1"))
        .args(["--metrics", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--metrics") && err.contains(&addr), "{err}");
    assert!(
        !tmp.path().join("n1").exists(),
        "nothing made in the data dir"
    );
}

/// The embedded default mounted on `tmp/mnt` with its data under
/// `tmp/data`, and `extra` flags.
fn embedded_mount(tmp: &Path, extra: &[&str]) -> Mount {
    let data = tmp.join("data");
    let mut args = vec!["--data-dir", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    Mount::new(&tmp.join("mnt"), &args, &[])
}

/// The series a metrics endpoint shows (its lines other than comments).
fn series(addr: &str) -> Vec<String> {
    let page = http_get(addr, "/metrics").expect("the mount serves /metrics");
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name).to_string())
        .collect()
}

/// Creates files `from..to` spread over 16 directories, 16 at a time.
fn create_files(root: &Path, from: usize, to: usize) {
    std::thread::scope(|s| {
        for t in 0..16 {
            s.spawn(move || {
                let dir = root.join(format!("d{t}"));
                let _ = std::fs::create_dir(&dir);
                for i in (from..to).filter(|i| i % 16 == t) {
                    std::fs::File::create(dir.join(format!("f{i}"))).unwrap();
                }
            });
        }
    });
}

#[test]
fn labels_stay_bounded_after_100_000_distinct_files() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let mnt = embedded_mount(tmp.path(), &["--metrics", &metrics]);
    create_files(&mnt.dir, 0, 1_000);
    let before = series(&metrics);
    create_files(&mnt.dir, 1_000, 100_000);
    let after = series(&metrics);
    // Per-file labels would add a series per file; operations, kinds,
    // errnos and groups are closed sets (background work may add a kind).
    let new: Vec<_> = after.iter().filter(|s| !before.contains(s)).collect();
    assert!(
        new.len() < 100,
        "{} series before, {} after; new: {new:?}",
        before.len(),
        after.len()
    );
    let creates = after
        .iter()
        .filter(|s| s.starts_with("strata_fuse_ops_total{op=\"create\"}"))
        .count();
    assert_eq!(creates, 1, "one series counts every create");
    mnt.unmount();
}

#[test]
fn stats_once_shows_what_the_mount_did_during_its_interval() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let mnt = embedded_mount(tmp.path(), &[]);
    let mut stats = strata()
        .args(["stats", "--once", "--interval", "1"])
        .arg(&mnt.dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Files are created for as long as the sample lasts.
    let mut made = 0;
    while stats.try_wait().unwrap().is_none() {
        write_synced(&mnt.path(&format!("f{made}")), b"data");
        made += 1;
    }
    let out = stats.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rate = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l[prefix.len()..].split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{text}"))
    };
    assert!(rate("  create ") > 0.0, "{made} files made:\n{text}");
    assert!(rate("  fsync ") > 0.0, "{text}");
    assert!(rate("  PUT ") > 0.0, "{text}");
    // A Create at open or a CreateFile at the fsync (decision 71).
    let listed = |prefix: &str| text.lines().any(|l| l.starts_with(prefix));
    let creates = ["  Create ", "  CreateFile "]
        .into_iter()
        .filter(|p| listed(p))
        .map(rate)
        .sum::<f64>();
    assert!(creates > 0.0, "{text}");
    let dir = mnt.dir.clone();
    mnt.unmount();
    let after = strata()
        .args(["stats", "--once"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!after.status.success());
    assert!(
        String::from_utf8_lossy(&after.stderr).contains("no running Strata mount"),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
}

#[test]
fn the_access_log_shows_each_operation_with_its_result() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let mnt = embedded_mount(tmp.path(), &[]);
    let mut profile = strata()
        .args(["profile", "--raw"])
        .arg(&mnt.dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = profile.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // Looked up until the log shows a lookup: from then on it hears all.
    let mut probe = 0;
    let missing = 'listening: loop {
        assert!(std::fs::metadata(mnt.path(&format!("probe{probe}"))).is_err());
        probe += 1;
        while let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(100)) {
            if line.contains("lookup (1,\"probe") {
                break 'listening line;
            }
        }
        assert!(probe < 600, "the access log never showed a lookup");
    };
    assert!(missing.contains("): ENOENT <"), "{missing}");
    write_synced(&mnt.path("marked"), b"twelve bytes");
    std::fs::remove_file(mnt.path("marked")).unwrap();
    let mut seen = Vec::new();
    until(60, "the unlink in the access log", || {
        while let Ok(line) = rx.try_recv() {
            seen.push(line);
        }
        seen.iter().any(|l| l.contains("unlink (1,\"marked\")"))
    });
    let find = |what: &str| {
        seen.iter()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} in:\n{}", seen.join("\n")))
            .clone()
    };
    assert!(find("create (1,\"marked\"").contains("): OK <"));
    // write (ino,offset,size,fh): twelve bytes at 0.
    let write = find("] write (");
    assert!(
        write.contains(",0,12,") && write.contains("): OK <"),
        "{write}"
    );
    assert!(find("] fsync (").contains("): OK <"));
    assert!(find("unlink (1,\"marked\")").contains("): OK <"));
    let _ = profile.kill();
    let _ = profile.wait();
    mnt.unmount();
}
