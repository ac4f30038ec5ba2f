//! A three-node cluster (separate processes) whose every link, node to
//! node and client to node, runs through a proxy the test controls, under
//! a seeded schedule of faults: a leader partitioned away, one cut from
//! the other nodes but not from clients, a leader that can send but not
//! receive and one that can receive but not send, every
//! link slowed, a leader paused (SIGSTOP) and one killed (SIGKILL) and
//! restarted. Meanwhile writers and readers use one register per key (an
//! extended attribute of a file, one writer per key) and record when each
//! operation began and ended and what it returned.
//!
//! While a fault lasts, the group whose leader it struck must take writes
//! again (but under slow links, which take no leader away). After the
//! faults heal, the history must be linearizable per key, every
//! acknowledged write must be there for a fresh client, fsck must be
//! clean, and the three replicas of every group must hold the same state.
//! `NETWORK_FAULT_ROUNDS=N` runs more faults, `NETWORK_FAULT_SEED=S` others,
//! `NETWORK_FAULTS=deafen,mute` only those.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::proxy::{Dir, Proxy};
use common::*;
use strata_meta::request::XattrMode;
use strata_meta::{FileType, FsClient, Ino, MetaError, NewInode};

const NODES: usize = 3;
const KEYS_PER_WRITER: usize = 2;
const WRITERS: usize = 3;
const READERS: usize = 3;
/// How long each fault lasts: several election timeouts and read leases,
/// and longer than a client's attempt at one node (5 s), so clients move
/// to the new leader while it lasts.
const FAULT: Duration = Duration::from_secs(6);
const XATTR: &[u8] = b"user.register";

/// The proxies of every link: `links[i][j]` carries node i's connections
/// to node j, `clients[j]` the test's connections to node j.
struct Net {
    links: Vec<Vec<Option<Proxy>>>,
    clients: Vec<Proxy>,
}

impl Net {
    /// Every link into and out of node `x` holds both ways.
    fn isolate(&self, x: usize) {
        self.isolate_from_peers(x);
        self.clients[x].cut();
    }

    /// Node `x` is cut from the other nodes but not from clients: as
    /// leader it can no longer commit, nor confirm it still leads, and
    /// must stop answering reads once its lease is over.
    fn isolate_from_peers(&self, x: usize) {
        for (i, row) in self.links.iter().enumerate() {
            for (j, p) in row.iter().enumerate() {
                if let Some(p) = p
                    && (i == x || j == x)
                {
                    p.cut();
                }
            }
        }
    }

    /// Nothing node `x` sends arrives; what it is sent does.
    fn mute(&self, x: usize) {
        self.hold_from(x, true);
    }

    /// Nothing sent to node `x` arrives; what it sends does.
    fn deafen(&self, x: usize) {
        self.hold_from(x, false);
    }

    /// Holds the bytes that node `x` sends (`out`) or receives.
    fn hold_from(&self, x: usize, out: bool) {
        let (own, others) = if out {
            (Dir::Forward, Dir::Back)
        } else {
            (Dir::Back, Dir::Forward)
        };
        for (j, p) in self.links[x].iter().enumerate() {
            if j != x {
                p.as_ref().unwrap().hold(own);
            }
        }
        for (i, row) in self.links.iter().enumerate() {
            if i != x {
                row[x].as_ref().unwrap().hold(others);
            }
        }
        self.clients[x].hold(others);
    }

    fn slow(&self, d: Duration) {
        self.all().for_each(|p| p.delay(d));
    }

    fn heal(&self) {
        self.all().for_each(Proxy::heal);
    }

    fn all(&self) -> impl Iterator<Item = &Proxy> {
        self.links
            .iter()
            .flatten()
            .flatten()
            .chain(self.clients.iter())
    }
}

/// What one operation did, as its caller saw it.
#[derive(Clone, Debug)]
enum Outcome {
    /// A write acknowledged.
    Wrote,
    /// A write that failed or timed out: it may or may not have been applied.
    InDoubt,
    /// A read and what it returned (None: no value written yet).
    Read(Option<u64>),
    /// A read that failed: nothing learnt.
    Failed,
}

#[derive(Clone, Debug)]
struct Op {
    key: usize,
    /// For a write: the value written (the writer's count on that key).
    value: u64,
    began: Instant,
    ended: Instant,
    outcome: Outcome,
}

#[derive(Default)]
struct History(Mutex<Vec<Op>>);

impl History {
    fn push(&self, op: Op) {
        self.0.lock().unwrap().push(op);
    }

    fn ops(&self) -> Vec<Op> {
        self.0.lock().unwrap().clone()
    }

    fn acknowledged(&self) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Wrote | Outcome::Read(_)))
            .count()
    }
}

/// Checks the history of each key against a register's linearizability.
/// With one writer per key, writes are ordered as issued (values 1, 2, …),
/// and a history is linearizable iff every read returns a value whose
/// write began before the read ended, not superseded by a write that ended
/// before the read began, and no read returns an older value than a read
/// that ended before it began. A write in doubt may or may not have taken
/// effect; it is the last write of its key (its writer then stops).
fn check_linearizable(ops: &[Op]) -> usize {
    let mut checked = 0;
    let mut by_key: HashMap<usize, Vec<&Op>> = HashMap::new();
    for o in ops {
        by_key.entry(o.key).or_default().push(o);
    }
    for (key, ops) in by_key {
        let writes: HashMap<u64, &Op> = ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Wrote | Outcome::InDoubt))
            .map(|o| (o.value, *o))
            .collect();
        let reads: Vec<(&Op, u64)> = ops
            .iter()
            .filter_map(|o| match o.outcome {
                Outcome::Read(v) => Some((*o, v.unwrap_or(0))),
                _ => None,
            })
            .collect();
        for (r, v) in &reads {
            if *v > 0 {
                let w = writes
                    .get(v)
                    .unwrap_or_else(|| panic!("key {key}: read {v}, never written: {r:?}"));
                assert!(
                    w.began < r.ended,
                    "key {key}: read {v} ended before its write began: {r:?} {w:?}"
                );
            }
            // The next write after v, if acknowledged before the read began,
            // made v stale.
            if let Some(next) = writes.get(&(v + 1))
                && matches!(next.outcome, Outcome::Wrote)
            {
                assert!(
                    next.ended >= r.began,
                    "key {key}: stale read of {v}, {} was acknowledged before the read began: {r:?} {next:?}",
                    v + 1
                );
            }
            checked += 1;
        }
        for (a, va) in &reads {
            for (b, vb) in &reads {
                assert!(
                    !(a.ended < b.began && vb < va),
                    "key {key}: read {vb} after a read of {va} had ended: {a:?} {b:?}"
                );
            }
        }
    }
    checked
}

/// Writes values 1, 2, … to its keys in turn until `stop`; a write in
/// doubt retires its key.
async fn writer(
    fs: Arc<FsClient>,
    keys: Vec<(usize, Ino)>,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
) {
    let mut next: Vec<u64> = vec![1; keys.len()];
    let mut live: Vec<bool> = vec![true; keys.len()];
    while !stop.load(Ordering::SeqCst) && live.iter().any(|l| *l) {
        for (i, (key, ino)) in keys.iter().enumerate() {
            if !live[i] {
                continue;
            }
            let value = next[i];
            let began = Instant::now();
            let r = fs
                .set_xattr(*ino, XATTR, value.to_string().as_bytes(), XattrMode::Any)
                .await;
            let outcome = match r {
                Ok(_) => Outcome::Wrote,
                Err(_) => {
                    live[i] = false;
                    Outcome::InDoubt
                }
            };
            history.push(Op {
                key: *key,
                value,
                began,
                ended: Instant::now(),
                outcome,
            });
            next[i] += 1;
        }
    }
}

/// Reads the keys in a seeded order until `stop`.
async fn reader(
    fs: Arc<FsClient>,
    keys: Vec<(usize, Ino)>,
    seed: u64,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng(seed);
    while !stop.load(Ordering::SeqCst) {
        let (key, ino) = keys[rng.below(keys.len() as u64) as usize];
        let began = Instant::now();
        let outcome = match fs.get_xattr(ino, XATTR).await {
            Ok(v) => Outcome::Read(Some(String::from_utf8(v).unwrap().parse().unwrap())),
            Err(MetaError::NoXattr) => Outcome::Read(None),
            Err(_) => Outcome::Failed,
        };
        history.push(Op {
            key,
            value: 0,
            began,
            ended: Instant::now(),
            outcome,
        });
    }
}

/// The node (0-based) leading group `g`, as `meta status` reports it.
fn leader_of(all: &str, g: u32) -> Option<usize> {
    let status = run_ok(&["meta", "status", "--meta", all]);
    let line = status
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("group {g} ")))?;
    let leader = line.split("leader ").nth(1)?.split_whitespace().next()?;
    leader.parse::<usize>().ok().map(|id| id - 1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Fault {
    Partition,
    FromPeers,
    Mute,
    Deafen,
    Slow,
    Pause,
    Kill,
}

const FAULTS: [Fault; 7] = [
    Fault::Partition,
    Fault::FromPeers,
    Fault::Mute,
    Fault::Deafen,
    Fault::Slow,
    Fault::Pause,
    Fault::Kill,
];

#[test]
fn network_faults_lose_no_acknowledged_write_and_reads_stay_linearizable() {
    let seed: u64 = env_number("NETWORK_FAULT_SEED", 26);
    let rounds: usize = env_number("NETWORK_FAULT_ROUNDS", FAULTS.len());
    println!("NETWORK_FAULT_SEED={seed} NETWORK_FAULT_ROUNDS={rounds}");
    let tmp = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = (0..NODES)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let net = Net {
        links: (0..NODES)
            .map(|i| {
                (0..NODES)
                    .map(|j| (i != j).then(|| Proxy::start(&addrs[j])))
                    .collect()
            })
            .collect(),
        clients: addrs.iter().map(|a| Proxy::start(a)).collect(),
    };
    let routes: Vec<String> = (0..NODES)
        .map(|i| {
            (0..NODES)
                .filter(|j| *j != i)
                .map(|j| format!("{}={}", addrs[j], net.links[i][j].as_ref().unwrap().addr))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    let start = |i: usize| {
        MetaServer::start_node_env(
            i as u64 + 1,
            &tmp.path().join(format!("n{}", i + 1)),
            &addrs[i],
            &[],
            &[("STRATA_TEST_ROUTES", &routes[i])],
        )
    };
    let mut nodes: Vec<MetaServer> = (0..NODES).map(start).collect();
    let all = addrs.join(",");
    form_cluster(&addrs);
    format_metadata_only(&all, 6);

    // The test's own clients reach each node through its client proxy.
    strata_meta::transport::routes::set(
        (0..NODES)
            .map(|j| (addrs[j].clone(), net.clients[j].addr.clone()))
            .collect(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fs = Arc::new(open_t(&rt, &addrs));
    // A directory per writer, each in the least-loaded group, so that
    // the keys (files in them) live in every group.
    fs.set_dir_spread_slack(0);
    let dirs: Vec<Ino> = (0..WRITERS)
        .map(|w| {
            let new = NewInode::plain(FileType::Dir, 0o755, 0, 0);
            let name = format!("writer-{w}");
            rt.block_on(fs.create(1, name.as_bytes(), new)).unwrap().ino
        })
        .collect();
    let keys: Vec<(usize, Ino)> = (0..WRITERS * KEYS_PER_WRITER)
        .map(|k| {
            let name = format!("register-{k}");
            let new = NewInode::plain(FileType::File, 0o644, 0, 0);
            let dir = dirs[k % WRITERS];
            let inode = rt.block_on(fs.create(dir, name.as_bytes(), new)).unwrap();
            (k, inode.ino)
        })
        .collect();
    let mut groups_used: Vec<u32> = keys
        .iter()
        .map(|(_, i)| rt.block_on(fs.group_of(*i)).unwrap())
        .collect();
    groups_used.sort();
    groups_used.dedup();
    assert!(groups_used.len() > 1, "keys in one group only");
    let history = Arc::new(History::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mine = keys
            .iter()
            .filter(|(k, _)| k % WRITERS == w)
            .copied()
            .collect();
        tasks.push(rt.spawn(writer(fs.clone(), mine, history.clone(), stop.clone())));
    }
    for r in 0..READERS {
        // Each reader a client of its own, with its own idea of the
        // leaders: one may keep asking a deposed leader while the writers
        // have moved on.
        let own = Arc::new(open_t(&rt, &addrs));
        tasks.push(rt.spawn(reader(
            own,
            keys.clone(),
            seed * 31 + r as u64,
            history.clone(),
            stop.clone(),
        )));
    }
    until(30, "the workload to start", || history.acknowledged() > 20);

    // The faults, in a seeded order, each against the leader of the group
    // holding a seeded key (or, for delays, every link).
    let mut rng = Rng(seed);
    let mut faults: Vec<Fault> = FAULTS.to_vec();
    for i in (1..faults.len()).rev() {
        faults.swap(i, rng.below(i as u64 + 1) as usize);
    }
    // NETWORK_FAULTS=deafen,mute,… runs only those, in that order.
    if let Ok(only) = std::env::var("NETWORK_FAULTS") {
        faults = only
            .split(',')
            .map(|name| {
                *FAULTS
                    .iter()
                    .find(|f| format!("{f:?}").eq_ignore_ascii_case(name.trim()))
                    .unwrap_or_else(|| panic!("no fault {name:?}; faults: {FAULTS:?}"))
            })
            .collect();
    }
    let mut longest: HashMap<Fault, Duration> = HashMap::new();
    for round in 0..rounds {
        let fault = faults[round % faults.len()];
        let (_, ino) = keys[rng.below(keys.len() as u64) as usize];
        let g = rt.block_on(fs.group_of(ino)).unwrap();
        let x = leader_of(&all, g).unwrap_or(0);
        let began = Instant::now();
        match fault {
            Fault::Partition => net.isolate(x),
            Fault::FromPeers => net.isolate_from_peers(x),
            Fault::Mute => net.mute(x),
            Fault::Deafen => net.deafen(x),
            Fault::Slow => net.slow(Duration::from_millis(100)),
            Fault::Pause => {
                // SAFETY: kill(2) on our own child.
                unsafe { libc::kill(nodes[x].child.id() as i32, libc::SIGSTOP) };
            }
            Fault::Kill => nodes[x].kill9(),
        }
        println!("round {round}: {fault:?} on node {} (group {g})", x + 1);
        let in_group: Vec<usize> = keys
            .iter()
            .filter(|(_, i)| rt.block_on(fs.group_of(*i)).unwrap() == g)
            .map(|(k, _)| *k)
            .collect();
        // Every fault but slow links takes the group's leader away (it
        // cannot commit, or hears from no one): the others must elect
        // another and take the group's writes before the fault heals. A
        // write acknowledged that began after the fault did proves it,
        // as node x cannot have committed it.
        if fault != Fault::Slow {
            until(
                60,
                &format!("group {g} to take writes while {fault:?} lasts"),
                || {
                    history.ops().iter().any(|o| {
                        in_group.contains(&o.key)
                            && matches!(o.outcome, Outcome::Wrote)
                            && o.began > began
                    })
                },
            );
        }
        // The fault lasts at least its time: this sleep is the fault, not
        // a wait for something to happen.
        std::thread::sleep(FAULT.saturating_sub(began.elapsed()));
        match fault {
            Fault::Pause => {
                // SAFETY: as above.
                unsafe { libc::kill(nodes[x].child.id() as i32, libc::SIGCONT) };
            }
            Fault::Kill => nodes[x] = start(x),
            _ => net.heal(),
        }
        // Over once every key still written has had a write acknowledged
        // that began after the heal.
        let healed = Instant::now();
        until(
            90,
            "every group to take writes again after the fault",
            || {
                let ops = history.ops();
                keys.iter().all(|(k, _)| {
                    let mine = || ops.iter().filter(|o| o.key == *k);
                    mine().any(|o| matches!(o.outcome, Outcome::InDoubt))
                        || mine().any(|o| matches!(o.outcome, Outcome::Wrote) && o.began > healed)
                })
            },
        );
        let gap = longest_gap(&history.ops(), &in_group, began, Instant::now());
        let e = longest.entry(fault).or_default();
        *e = (*e).max(gap);
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        rt.block_on(t).unwrap();
    }

    let ops = history.ops();
    let reads = check_linearizable(&ops);
    let writes: Vec<&Op> = ops
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Wrote))
        .collect();
    let in_doubt = ops
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::InDoubt))
        .count();

    // Every acknowledged write is there for a fresh client: each key holds
    // its last acknowledged value, or the one in doubt after it.
    let fresh = open_t(&rt, &addrs);
    for (key, ino) in &keys {
        let last = writes
            .iter()
            .filter(|o| o.key == *key)
            .map(|o| o.value)
            .max()
            .unwrap_or(0);
        let doubt = ops
            .iter()
            .find(|o| o.key == *key && matches!(o.outcome, Outcome::InDoubt))
            .map(|o| o.value);
        let now: u64 = match rt.block_on(fresh.get_xattr(*ino, XATTR)) {
            Ok(v) => String::from_utf8(v).unwrap().parse().unwrap(),
            Err(MetaError::NoXattr) => 0,
            Err(e) => panic!("key {key}: {e}"),
        };
        assert!(
            now == last || Some(now) == doubt,
            "key {key}: holds {now}, its last acknowledged write was {last} (in doubt: {doubt:?})"
        );
    }
    let report = rt
        .block_on(strata_meta::client::fsck::check(&fresh))
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_replicas_agree(&rt, &fresh, &addrs);
    println!(
        "{rounds} faults; {} writes and {reads} reads acknowledged and checked, {in_doubt} in doubt, 0 lost",
        writes.len()
    );
    let mut by_fault: Vec<_> = longest.into_iter().collect();
    by_fault.sort_by_key(|(f, _)| format!("{f:?}"));
    for (f, gap) in by_fault {
        println!(
            "longest unavailability under {f:?}: {:.1} s",
            gap.as_secs_f64()
        );
    }
}

/// The longest stretch within [from, to] in which no operation on `keys`
/// was acknowledged.
fn longest_gap(ops: &[Op], keys: &[usize], from: Instant, to: Instant) -> Duration {
    let mut ends: Vec<Instant> = ops
        .iter()
        .filter(|o| keys.contains(&o.key))
        .filter(|o| matches!(o.outcome, Outcome::Wrote | Outcome::Read(_)))
        .map(|o| o.ended)
        .filter(|t| *t >= from && *t <= to)
        .collect();
    ends.sort();
    let mut last = from;
    let mut longest = Duration::ZERO;
    for t in ends {
        longest = longest.max(t - last);
        last = t;
    }
    longest.max(to - last)
}

/// The checker finds what it is for, on histories made up by hand.
mod checker {
    use super::*;

    fn op(key: usize, value: u64, began: u64, ended: u64, outcome: Outcome) -> Op {
        let t0 = Instant::now();
        Op {
            key,
            value,
            began: t0 + Duration::from_millis(began),
            ended: t0 + Duration::from_millis(ended),
            outcome,
        }
    }

    #[test]
    fn a_linearizable_history_passes() {
        let h = [
            op(0, 1, 0, 10, Outcome::Wrote),
            op(0, 0, 5, 8, Outcome::Read(None)),
            op(0, 0, 5, 12, Outcome::Read(Some(1))),
            op(0, 2, 20, 30, Outcome::InDoubt),
            op(0, 0, 40, 45, Outcome::Read(Some(1))),
            op(0, 0, 50, 55, Outcome::Read(Some(2))),
        ];
        // The read of 1 at 40 and of 2 at 50: the write in doubt took
        // effect between them.
        assert_eq!(check_linearizable(&h), 4);
    }

    #[test]
    #[should_panic(expected = "stale read")]
    fn a_stale_read_is_caught() {
        check_linearizable(&[
            op(0, 1, 0, 10, Outcome::Wrote),
            op(0, 2, 20, 30, Outcome::Wrote),
            op(0, 0, 40, 45, Outcome::Read(Some(1))),
        ]);
    }

    #[test]
    #[should_panic(expected = "after a read of")]
    fn an_older_value_after_a_newer_one_is_caught() {
        check_linearizable(&[
            op(0, 1, 0, 10, Outcome::Wrote),
            op(0, 2, 20, 60, Outcome::Wrote),
            op(0, 0, 25, 30, Outcome::Read(Some(2))),
            op(0, 0, 35, 40, Outcome::Read(Some(1))),
        ]);
    }

    #[test]
    #[should_panic(expected = "ended before its write began")]
    fn a_value_from_the_future_is_caught() {
        check_linearizable(&[
            op(0, 0, 0, 5, Outcome::Read(Some(1))),
            op(0, 1, 10, 20, Outcome::Wrote),
        ]);
    }
}
