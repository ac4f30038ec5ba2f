//! Cross-group operations on a three-node cluster (separate processes) while
//! leaders and nodes are SIGKILLed: every acknowledged operation is there,
//! the tree is consistent (fsck), and the replicas of each group agree; a
//! paused leader does not hold clients up; a client killed in the middle
//! of cross-group operations leaves nothing half done.

mod common;

use strata_meta::NewInode;
use strata_meta::request::RenameMode;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use strata_meta::{FileType, FsClient, Ino, MetaError};

fn open(rt: &tokio::runtime::Runtime, addrs: &[String]) -> FsClient {
    let fs = open_t(rt, addrs);
    // Every new directory goes to the least-loaded group: most directory
    // operations below cross groups.
    fs.set_dir_spread_slack(0);
    fs
}

/// Three node processes with filesystem `t` formed on them: the temp dir
/// holding them, the nodes, their addresses, the addresses joined as `--meta`
/// takes them, and a runtime for the client.
fn start_with_fs() -> (
    tempfile::TempDir,
    Vec<MetaServer>,
    Vec<String>,
    String,
    tokio::runtime::Runtime,
) {
    let tmp = tempfile::tempdir().unwrap();
    let (nodes, addrs) = start_cluster(tmp.path());
    let all = addrs.join(",");
    format(&all);
    (
        tmp,
        nodes,
        addrs,
        all,
        tokio::runtime::Runtime::new().unwrap(),
    )
}

fn leader_of(all: &str, group: u32) -> Option<usize> {
    let status = run_ok(&["meta", "status", "--meta", all]);
    let line = status
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("group {group} ")))?;
    let leader = line.split("leader ").nth(1)?.split_whitespace().next()?;
    leader.parse::<usize>().ok()
}

/// fsck until clean; transactions a killed client or leader left are
/// finished by recovery within seconds, so only those may take a while.
/// While one is pending, what it changes halfway (an entry added in one
/// group and not yet removed in the other) may show; once none is, the
/// tree must be clean.
fn assert_consistent(
    rt: &tokio::runtime::Runtime,
    fs: &FsClient,
) -> strata_meta::client::fsck::Report {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = rt.block_on(strata_meta::client::fsck::check(fs)).unwrap();
        if r.is_clean() {
            return r;
        }
        assert!(
            !r.pending_transactions.is_empty() && Instant::now() < deadline,
            "metadata inconsistent: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn format(all: &str) {
    format_metadata_only(all, 6);
}

/// What one worker believes its subtree holds: entries per directory.
#[derive(Default)]
struct Model {
    dirs: Vec<Ino>,
    entries: BTreeMap<(usize, String), (Ino, FileType)>,
}

/// Random creates, renames across directories, links, unlinks, mkdirs and
/// rmdirs under `/w{id}`; every call must succeed (a node down is no excuse).
fn worker(fs: Arc<FsClient>, id: u64, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) -> Model {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rng = Rng(0x5eed + id);
    let mut m = Model::default();
    let top = rt
        .block_on(fs.create(
            1,
            format!("w{id}").as_bytes(),
            NewInode::plain(FileType::Dir, 0o755, 0, 0),
        ))
        .unwrap();
    m.dirs.push(top.ino);
    for d in 0..3 {
        let sub = rt
            .block_on(fs.create(
                top.ino,
                format!("d{d}").as_bytes(),
                NewInode::plain(FileType::Dir, 0o755, 0, 0),
            ))
            .unwrap();
        m.dirs.push(sub.ino);
        m.entries
            .insert((0, format!("d{d}")), (sub.ino, FileType::Dir));
    }
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let dir = 1 + rng.below(3) as usize;
        let files: Vec<(usize, String)> = m
            .entries
            .iter()
            .filter(|(_, (_, k))| *k == FileType::File)
            .map(|(k, _)| k.clone())
            .collect();
        let pick = |rng: &mut Rng| files[rng.below(files.len() as u64) as usize].clone();
        let op = rng.below(11);
        match op {
            0..=2 => {
                let name = format!("f{n}");
                let i = rt
                    .block_on(fs.create(
                        m.dirs[dir],
                        name.as_bytes(),
                        NewInode::plain(FileType::File, 0o644, 0, 0),
                    ))
                    .unwrap();
                m.entries.insert((dir, name), (i.ino, FileType::File));
            }
            3..=4 if !files.is_empty() => {
                let (from, name) = pick(&mut rng);
                let new_name = format!("r{n}");
                rt.block_on(fs.rename(
                    m.dirs[from],
                    name.as_bytes(),
                    m.dirs[dir],
                    new_name.as_bytes(),
                    RenameMode::Replace,
                ))
                .unwrap_or_else(|e| panic!("rename {from}/{name} -> {dir}/{new_name}: {e}"));
                let v = m.entries.remove(&(from, name)).unwrap();
                m.entries.insert((dir, new_name), v);
            }
            5 if !files.is_empty() => {
                let (from, name) = pick(&mut rng);
                let (ino, _) = m.entries[&(from, name)];
                let new_name = format!("l{n}");
                rt.block_on(fs.link(ino, m.dirs[dir], new_name.as_bytes()))
                    .unwrap_or_else(|e| panic!("link {ino} -> {dir}/{new_name}: {e}"));
                m.entries.insert((dir, new_name), (ino, FileType::File));
            }
            6 if files.len() > 1 => {
                // Rename onto an existing file, replacing it.
                let (from, name) = pick(&mut rng);
                let (to, victim) = pick(&mut rng);
                // Onto another link of the same file POSIX does nothing; skip it.
                if m.entries[&(from, name.clone())].0 != m.entries[&(to, victim.clone())].0 {
                    rt.block_on(fs.rename(
                        m.dirs[from],
                        name.as_bytes(),
                        m.dirs[to],
                        victim.as_bytes(),
                        RenameMode::Replace,
                    ))
                    .unwrap_or_else(|e| panic!("rename {from}/{name} onto {to}/{victim}: {e}"));
                    let v = m.entries.remove(&(from, name)).unwrap();
                    m.entries.insert((to, victim), v);
                }
            }
            7 if !files.is_empty() => {
                let (from, name) = pick(&mut rng);
                rt.block_on(fs.unlink(m.dirs[from], name.as_bytes()))
                    .unwrap_or_else(|e| panic!("unlink {from}/{name}: {e}"));
                m.entries.remove(&(from, name));
            }
            10 if files.len() > 1 => {
                // Two names swap their files (RENAME_EXCHANGE), often across groups.
                let (a, an) = pick(&mut rng);
                let (b, bn) = pick(&mut rng);
                if (a, &an) != (b, &bn) {
                    rt.block_on(fs.rename(
                        m.dirs[a],
                        an.as_bytes(),
                        m.dirs[b],
                        bn.as_bytes(),
                        RenameMode::Exchange,
                    ))
                    .unwrap_or_else(|e| panic!("exchange {a}/{an} with {b}/{bn}: {e}"));
                    let va = m.entries[&(a, an.clone())];
                    let vb = m.entries[&(b, bn.clone())];
                    m.entries.insert((a, an), vb);
                    m.entries.insert((b, bn), va);
                }
            }
            8 => {
                let name = format!("e{n}");
                let i = rt
                    .block_on(fs.create(
                        m.dirs[dir],
                        name.as_bytes(),
                        NewInode::plain(FileType::Dir, 0o755, 0, 0),
                    ))
                    .unwrap();
                m.entries.insert((dir, name), (i.ino, FileType::Dir));
            }
            _ => {
                let empty: Vec<(usize, String)> = m
                    .entries
                    .keys()
                    .filter(|(d, name)| *d != 0 && name.starts_with('e'))
                    .cloned()
                    .collect();
                if let Some((d, name)) = empty.first().cloned() {
                    rt.block_on(fs.rmdir(m.dirs[d], name.as_bytes()))
                        .unwrap_or_else(|e| panic!("rmdir {d}/{name}: {e}"));
                    m.entries.remove(&(d, name));
                }
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    m
}

fn listing(rt: &tokio::runtime::Runtime, fs: &FsClient, dir: Ino) -> BTreeMap<String, Ino> {
    let mut out = BTreeMap::new();
    let mut after = None;
    loop {
        let page = rt.block_on(fs.readdir(dir, after.clone(), 4096)).unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.name.clone());
        for e in page {
            out.insert(String::from_utf8(e.name).unwrap(), e.dentry.ino);
        }
    }
    out
}

#[test]
fn mixed_workload_survives_killing_every_groups_leader() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    let (tmp, mut nodes, addrs, all, rt) = start_with_fs();
    let fs = Arc::new(open(&rt, &addrs));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2)
        .map(|id| {
            let (fs, stop, done) = (fs.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || worker(fs, id, stop, done))
        })
        .collect();
    let progressed = |by: u64| {
        let target = done.load(Ordering::Relaxed) + by;
        until(90, "the workload to make progress", || {
            done.load(Ordering::Relaxed) >= target
        });
    };
    // Each partition group's leader in turn, then group 0's.
    for group in [1, 2, 3, 0] {
        progressed(60);
        let Some(leader) = leader_of(&all, group) else {
            panic!("group {group} has no leader")
        };
        let victim = leader - 1;
        nodes[victim].kill9();
        progressed(60);
        let dir = tmp.path().join(format!("n{leader}"));
        nodes[victim] = MetaServer::start_node(leader as u64, &dir, &addrs[victim]);
    }
    progressed(60);
    stop.store(true, Ordering::Relaxed);
    let models: Vec<Model> = workers.into_iter().map(|w| w.join().unwrap()).collect();

    for m in &models {
        for (d, &dir) in m.dirs.iter().enumerate() {
            let want: BTreeMap<String, Ino> = m
                .entries
                .iter()
                .filter(|((di, _), _)| *di == d)
                .map(|((_, name), (ino, _))| (name.clone(), *ino))
                .collect();
            assert_eq!(listing(&rt, &fs, dir), want, "directory {d} of a worker");
        }
    }
    let report = assert_consistent(&rt, &fs);
    assert!(report.files > 0 && report.directories > 8, "{report:?}");
    let spread: BTreeSet<u32> = models
        .iter()
        .flat_map(|m| m.dirs.iter())
        .map(|&d| rt.block_on(fs.group_of(d)).unwrap())
        .collect();
    assert!(
        spread.len() > 1,
        "directories were spread over groups: {spread:?}"
    );
    assert_replicas_agree(&rt, &fs, &addrs);
}

#[test]
fn concurrent_cross_group_renames_while_a_node_dies() {
    let (tmp, mut nodes, addrs, _all, rt) = start_with_fs();
    let fs = open(&rt, &addrs);
    let mk = |name: &str| {
        rt.block_on(fs.create(
            1,
            name.as_bytes(),
            NewInode::plain(FileType::Dir, 0o755, 0, 0),
        ))
        .unwrap()
        .ino
    };
    let (a, b, c) = (mk("a"), mk("b"), mk("c"));
    let groups: BTreeSet<u32> = [a, b, c]
        .iter()
        .map(|&d| rt.block_on(fs.group_of(d)).unwrap())
        .collect();
    assert_eq!(groups.len(), 3, "a, b and c live in three groups");
    const FILES: usize = 150;
    for i in 0..FILES {
        rt.block_on(fs.create(
            a,
            format!("f{i}").as_bytes(),
            NewInode::plain(FileType::File, 0o644, 0, 0),
        ))
        .unwrap();
    }
    let done = Arc::new(AtomicU64::new(0));
    // Two clients race to move every file out of a, one to b and one to c.
    let movers: Vec<_> = [b, c]
        .into_iter()
        .map(|to| {
            let (addrs, done) = (addrs.clone(), done.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Runtime::new().unwrap();
                let fs = open(&rt, &addrs);
                let mut won = BTreeSet::new();
                for i in 0..FILES {
                    let name = format!("f{i}");
                    match rt.block_on(fs.rename(
                        a,
                        name.as_bytes(),
                        to,
                        name.as_bytes(),
                        RenameMode::Replace,
                    )) {
                        Ok(_) => {
                            won.insert(name);
                        }
                        Err(MetaError::NotFound) => {}
                        Err(e) => panic!("rename {name}: {e}"),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                won
            })
        })
        .collect();
    until(90, "renames to start", || {
        done.load(Ordering::Relaxed) >= 40
    });
    nodes[1].kill9();
    until(90, "renames to go on with a node down", || {
        done.load(Ordering::Relaxed) >= 120
    });
    nodes[1] = MetaServer::start_node(2, &tmp.path().join("n2"), &addrs[1]);
    let won: Vec<BTreeSet<String>> = movers.into_iter().map(|m| m.join().unwrap()).collect();

    assert!(listing(&rt, &fs, a).is_empty(), "every file left a");
    let in_b: BTreeSet<String> = listing(&rt, &fs, b).into_keys().collect();
    let in_c: BTreeSet<String> = listing(&rt, &fs, c).into_keys().collect();
    assert_eq!(in_b, won[0], "b holds exactly the files its mover won");
    assert_eq!(in_c, won[1], "c holds exactly the files its mover won");
    assert!(in_b.is_disjoint(&in_c), "no file in both");
    assert_eq!(in_b.len() + in_c.len(), FILES, "no file lost");
    assert_consistent(&rt, &fs);
    assert_replicas_agree(&rt, &fs, &addrs);
}

/// A leader frozen (SIGSTOP), as a stuck disk or a paused VM leaves it, must
/// not hold clients up for long: a client that only knows the other nodes is
/// sent to the frozen leader by their hints until they elect a new one, gives
/// up on it after one attempt's timeout and writes through the new leader.
/// Once the old leader runs again, a read through it sees that write.
#[test]
fn clients_get_past_a_paused_leader() {
    let (_tmp, mut nodes, addrs, all, rt) = start_with_fs();
    let fs = open(&rt, &addrs);
    let file = |fs: &FsClient, name: &[u8]| {
        rt.block_on(fs.create(1, name, NewInode::plain(FileType::File, 0o644, 0, 0)))
            .unwrap()
    };
    file(&fs, b"before");
    let g = rt.block_on(fs.group_of(1)).unwrap();
    let leader = leader_of(&all, g).expect("the root's group has a leader") - 1;
    let through_leader = open(&rt, &addrs[leader..=leader]);
    rt.block_on(through_leader.lookup(1, b"before")).unwrap();

    let pid = nodes[leader].child.id() as i32;
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let others: Vec<String> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| addrs[i].clone())
        .collect();
    // Acknowledged only once the other two have elected a leader.
    file(&open(&rt, &others), b"after");
    unsafe { libc::kill(pid, libc::SIGCONT) };

    let seen = rt.block_on(through_leader.lookup(1, b"after"));
    assert!(
        seen.is_ok(),
        "a read through the old leader missed an acknowledged create: {seen:?}"
    );
    nodes[leader].kill9();
}

/// A client process (a mount) SIGKILLed while it moves files and
/// directories between directories of different groups: the cross-group
/// transactions it left half done are finished by the nodes' recovery,
/// fsck is clean, the replicas agree, and another client carries on in the
/// same directories.
#[test]
fn a_client_killed_mid_operation_leaves_nothing_half_done() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let (_nodes, addrs) = start_cluster(tmp.path());
    let all = addrs.join(",");
    let blocks = format!("file://{}", tmp.path().join("blocks").display());
    run_ok(&[
        "format",
        "--meta",
        &all,
        "t",
        "--storage",
        &blocks,
        "--partitions",
        "6",
    ]);
    let mnt = tmp.path().join("m");
    std::fs::create_dir_all(&mnt).unwrap();
    let mnt_arg = mnt.to_str().unwrap();
    let out = run_ok(&[
        "mount",
        "-d",
        "--meta",
        &all,
        "--dir-spread-slack",
        "0",
        "t",
        mnt_arg,
    ]);
    let pid = mount_pid(&out);
    let dirs: Vec<std::path::PathBuf> = (0..6).map(|i| mnt.join(format!("d{i}"))).collect();
    for d in &dirs {
        std::fs::create_dir(d).unwrap();
    }
    let done = Arc::new(AtomicU64::new(0));
    let workload = {
        let (dirs, done) = (dirs.clone(), done.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(3);
            // Until the mount is gone: every call fails then.
            for n in 0u64.. {
                let (a, b) = (rng.below(6) as usize, rng.below(6) as usize);
                let step = || -> std::io::Result<()> {
                    let f = dirs[a].join(format!("f{n}"));
                    std::fs::write(&f, b"x")?;
                    std::fs::rename(&f, dirs[b].join(format!("f{n}")))?;
                    let sub = dirs[a].join(format!("s{n}"));
                    std::fs::create_dir(&sub)?;
                    std::fs::rename(&sub, dirs[b].join(format!("s{n}")))?;
                    if n % 3 == 0 {
                        std::fs::remove_dir(dirs[b].join(format!("s{n}")))?;
                    }
                    Ok(())
                };
                if step().is_err() {
                    return;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    until(90, "the workload to get going", || {
        done.load(Ordering::Relaxed) >= 40
    });
    // SAFETY: kill(2) on the mount process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    workload.join().unwrap();
    let _ = std::process::Command::new("fusermount3")
        .args(["-u", "-z", mnt_arg])
        .status();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let fs = open(&rt, &addrs);
    let report = assert_consistent(&rt, &fs);
    assert!(report.directories > 6, "{report:?}");
    let spread: BTreeSet<u32> = (0..6)
        .map(|i| {
            let d = rt
                .block_on(fs.lookup(1, format!("d{i}").as_bytes()))
                .unwrap();
            rt.block_on(fs.group_of(d.ino)).unwrap()
        })
        .collect();
    assert!(spread.len() > 1, "directories in one group: {spread:?}");
    assert_replicas_agree(&rt, &fs, &addrs);
    // Another client moves things across the same directories.
    let d0 = rt.block_on(fs.lookup(1, b"d0")).unwrap().ino;
    let d1 = rt.block_on(fs.lookup(1, b"d1")).unwrap().ino;
    let new = NewInode::plain(FileType::Dir, 0o755, 0, 0);
    rt.block_on(fs.create(d0, b"after", new)).unwrap();
    rt.block_on(fs.rename(d0, b"after", d1, b"after", RenameMode::Replace))
        .unwrap();
    assert!(assert_consistent(&rt, &fs).is_clean());
}
