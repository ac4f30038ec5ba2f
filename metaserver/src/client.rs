//! `MetaClient`: routes requests to the leader of the right group, following
//! NotLeader hints and retrying through outages; `FsClient`: typed calls for
//! one filesystem, routed ino -> partition -> group.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::MetaError;
use crate::request::{IntentInfo, MetaRequest, MetaResponse, Origin, RenameMode, TxId, TxStep};
use crate::rpc::ConnPool;
use crate::types::*;
use crate::wire::{Request, Response};

/// How long a call keeps retrying before it reports the metaserver unavailable.
const CALL_DEADLINE: Duration = Duration::from_secs(60);
/// A first contact fails sooner: a wrong address should not stall a command.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// One attempt at one node. Short, so that a node that hangs (paused, stuck
/// on its disk) costs a few seconds before the next node is tried, not the
/// whole deadline; a retried write is deduplicated, so giving up on a slow
/// attempt is safe.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts of a change refused because a snapshot is being taken.
const FROZEN_RETRY: Duration = Duration::from_millis(20);
/// Longest pause between rounds of attempts. Short: while a group elects a
/// new leader (about a second) every waiting call is stalled, and a round
/// costs each node one small request.
const MAX_BACKOFF: Duration = Duration::from_millis(200);
/// A digest hashes a whole group.
const DIGEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Sequence numbers of this client's writes still waiting for an answer.
#[derive(Default)]
struct Writes {
    next: std::sync::atomic::AtomicU64,
    in_flight: std::sync::Mutex<std::collections::BTreeSet<u64>>,
}

impl Writes {
    fn begin(&self, client: u64) -> Origin {
        let seq = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let mut in_flight = self.in_flight.lock().unwrap();
        in_flight.insert(seq);
        let done_below = *in_flight.first().expect("just inserted");
        Origin {
            client,
            seq,
            done_below,
        }
    }

    fn end(&self, seq: u64) {
        self.in_flight.lock().unwrap().remove(&seq);
    }
}

pub struct MetaClient {
    /// Random per client process: names this client's writes for deduplication.
    client_id: u64,
    writes: Writes,
    seeds: Vec<String>,
    pool: ConnPool,
    map: RwLock<ClusterMap>,
    leaders: RwLock<HashMap<GroupId, String>>,
}

impl MetaClient {
    /// This client process's random id (names its writes and its locks).
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// Connects to any of `addrs` and loads the cluster map.
    pub async fn connect(addrs: &[String]) -> Result<Arc<MetaClient>, MetaError> {
        if addrs.is_empty() {
            return Err(MetaError::Invalid("no metaserver address given".into()));
        }
        let client = Arc::new(MetaClient {
            client_id: uuid::Uuid::new_v4().as_u64_pair().0,
            writes: Writes::default(),
            seeds: addrs.to_vec(),
            pool: ConnPool::default(),
            map: RwLock::new(ClusterMap::default()),
            leaders: RwLock::new(HashMap::new()),
        });
        client
            .load_map(CONNECT_DEADLINE)
            .await
            .map_err(|e| match e {
                MetaError::Unavailable(why) => MetaError::Unavailable(format!(
                    "{why}; is `strata meta serve` running at {}?",
                    addrs.join(",")
                )),
                other => other,
            })?;
        Ok(client)
    }

    pub async fn refresh_map(&self) -> Result<ClusterMap, MetaError> {
        self.load_map(CALL_DEADLINE).await
    }

    async fn load_map(&self, deadline: Duration) -> Result<ClusterMap, MetaError> {
        match self
            .call_until(CLUSTER_GROUP, MetaRequest::GetClusterMap, deadline)
            .await?
        {
            MetaResponse::ClusterMap(m) => {
                *self.map.write().unwrap() = m.clone();
                Ok(m)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Applied index and state hash of group `g` on the node at `addr` (that
    /// replica itself, not the leader).
    pub async fn replica_digest(
        &self,
        addr: &str,
        g: GroupId,
    ) -> Result<(Option<u64>, u64), MetaError> {
        match self
            .pool
            .call(addr, Request::Digest { group: g }, DIGEST_TIMEOUT)
            .await
        {
            Ok(Response::Digest(r)) => r,
            Ok(other) => Err(MetaError::Protocol(format!("unexpected answer {other:?}"))),
            Err(e) => Err(MetaError::Unavailable(e.to_string())),
        }
    }

    pub fn cluster_map(&self) -> ClusterMap {
        self.map.read().unwrap().clone()
    }

    /// Addresses to try for group `g`, the known leader first.
    fn candidates(&self, g: GroupId) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(l) = self.leaders.read().unwrap().get(&g) {
            out.push(l.clone());
        }
        let map = self.map.read().unwrap();
        if let Some(members) = map.groups.get(&g) {
            for id in members {
                if let Some(a) = map.nodes.get(id) {
                    out.push(a.clone());
                }
            }
        }
        out.extend(self.seeds.iter().cloned());
        let mut seen = std::collections::HashSet::new();
        out.retain(|a| seen.insert(a.clone()));
        out
    }

    /// Sends `req` to group `g`, retrying on other nodes until `CALL_DEADLINE`.
    pub async fn call(&self, g: GroupId, req: MetaRequest) -> Result<MetaResponse, MetaError> {
        self.call_until(g, req, CALL_DEADLINE).await
    }

    /// `call` that keeps trying for `patience` (long operations: a
    /// snapshot's copy of a large filesystem).
    pub async fn call_patient(
        &self,
        g: GroupId,
        req: MetaRequest,
        patience: Duration,
    ) -> Result<MetaResponse, MetaError> {
        self.call_until(g, req, patience).await
    }

    async fn call_until(
        &self,
        g: GroupId,
        req: MetaRequest,
        patience: Duration,
    ) -> Result<MetaResponse, MetaError> {
        if req.is_read() {
            return self.send(g, req, None, patience).await;
        }
        // A write keeps its sequence number through every retry, so the group
        // applies it once even when an answer was lost.
        let origin = self.writes.begin(self.client_id);
        let result = self.send(g, req, Some(origin), patience).await;
        self.writes.end(origin.seq);
        result
    }

    async fn send(
        &self,
        g: GroupId,
        req: MetaRequest,
        origin: Option<Origin>,
        patience: Duration,
    ) -> Result<MetaResponse, MetaError> {
        let mut deadline = tokio::time::Instant::now() + patience;
        let mut backoff = Duration::from_millis(20);
        let mut last_err = MetaError::Unavailable("no metaserver reachable".into());
        let mut just_hinted = false;
        'attempts: loop {
            let mut hinted = None;
            for addr in self.candidates(g) {
                let body = Request::Meta {
                    group: g,
                    req: req.clone(),
                    origin,
                };
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let timeout = ATTEMPT_TIMEOUT.min(left.max(Duration::from_millis(200)));
                match self.pool.call(&addr, body, timeout).await {
                    Ok(Response::Meta(Ok(resp))) => {
                        self.leaders.write().unwrap().insert(g, addr);
                        return Ok(resp);
                    }
                    Ok(Response::Meta(Err(MetaError::NotLeader { leader, .. }))) => {
                        tracing::debug!(%addr, group = g, ?leader, "not the leader");
                        self.leaders.write().unwrap().remove(&g);
                        if let Some((_, hint)) = leader
                            && hint != addr
                        {
                            hinted = Some(hint);
                            break;
                        }
                        last_err = MetaError::Unavailable(format!("group {g} has no leader yet"));
                    }
                    Ok(Response::Meta(Err(MetaError::Frozen))) => {
                        // A snapshot is being taken: the leader answered, so
                        // wait a little and ask it again, for as long as the
                        // freeze lasts (it ends by itself at its end time).
                        self.leaders.write().unwrap().insert(g, addr);
                        tokio::time::sleep(FROZEN_RETRY).await;
                        deadline = tokio::time::Instant::now() + patience;
                        continue 'attempts;
                    }
                    Ok(Response::Meta(Err(e))) if e.is_retryable() => {
                        tracing::debug!(%addr, group = g, error = %e, "retrying elsewhere");
                        last_err = e
                    }
                    Ok(Response::Meta(Err(e))) => return Err(e),
                    Ok(other) => {
                        return Err(MetaError::Protocol(format!("unexpected answer {other:?}")));
                    }
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "metaserver call failed");
                        last_err = MetaError::Unavailable(e.to_string());
                    }
                }
            }
            if let Some(h) = hinted {
                self.leaders.write().unwrap().insert(g, h);
                // Follow a hint at once, but only once in a row: two nodes
                // pointing at each other must not make this loop spin.
                if !just_hinted {
                    just_hinted = true;
                    continue;
                }
            }
            just_hinted = false;
            if tokio::time::Instant::now() >= deadline {
                return Err(last_err);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Finishes a transaction found prepared in some group: asks its
    /// coordinator for the decision (aborting it if none was made) and carries
    /// it out everywhere. Returns the decision.
    pub async fn resolve_transaction(&self, t: &IntentInfo) -> Result<bool, MetaError> {
        let commit = match self
            .call(t.coord, MetaRequest::TxResolve { tx: t.tx })
            .await?
        {
            MetaResponse::Decision(d) => d,
            other => return Err(unexpected(other)),
        };
        self.finish_transaction(t.fs, t.tx, t.coord, &t.participants, commit)
            .await?;
        Ok(commit)
    }

    /// Carries out a decided transaction in `participants`, then drops the
    /// coordinator's record of it. Returns the inodes the steps changed.
    async fn finish_transaction(
        &self,
        fs: FsId,
        tx: TxId,
        coord: GroupId,
        participants: &[GroupId],
        commit: bool,
    ) -> Result<Vec<(Inode, bool)>, MetaError> {
        let mut changed = Vec::new();
        for &g in participants {
            let req = MetaRequest::TxFinish {
                fs,
                tx,
                commit,
                now: Timestamp::now(),
            };
            match self.call(g, req).await? {
                MetaResponse::TxApplied(c) => changed.extend(c),
                other => return Err(unexpected(other)),
            }
        }
        self.call(coord, MetaRequest::TxForget { tx }).await?;
        Ok(changed)
    }

    pub async fn list_fs(&self) -> Result<Vec<FsInfo>, MetaError> {
        match self.call(CLUSTER_GROUP, MetaRequest::ListFs).await? {
            MetaResponse::FsList(l) => Ok(l),
            other => Err(unexpected(other)),
        }
    }

    /// Creates a filesystem: its record and partitions in group 0, each
    /// partition in its group, then the root. Each step is idempotent, so a
    /// format that was interrupted can simply run again.
    #[allow(clippy::too_many_arguments)]
    pub async fn format(
        &self,
        name: &str,
        storage: &str,
        s3_endpoint: Option<String>,
        block_size: u32,
        chunk_size: u32,
        partitions: u32,
        partition_size: u64,
        root_owner: (u32, u32),
    ) -> Result<FsInfo, MetaError> {
        let spec = FsSpec {
            name: name.into(),
            uuid: new_uuid(),
            storage: storage.into(),
            s3_endpoint,
            block_size,
            chunk_size,
            partitions,
            partition_size,
            borrowed: Vec::new(),
        };
        self.create_fs(&spec, root_owner).await?;
        self.mark_fs_ready(name).await
    }

    /// The steps of `format` short of marking the filesystem ready: until
    /// then no client opens it (`strata load` fills it in between).
    pub async fn create_fs(
        &self,
        spec: &FsSpec,
        root_owner: (u32, u32),
    ) -> Result<FsInfo, MetaError> {
        let now = Timestamp::now();
        let req = MetaRequest::CreateFsSized {
            name: spec.name.clone(),
            uuid: spec.uuid.clone(),
            storage: spec.storage.clone(),
            s3_endpoint: spec.s3_endpoint.clone(),
            block_size: spec.block_size,
            chunk_size: spec.chunk_size,
            partitions: spec.partitions,
            partition_size: spec.partition_size,
            borrowed: spec.borrowed.clone(),
            now,
        };
        let info = match self.call(CLUSTER_GROUP, req).await? {
            MetaResponse::Fs(f) => f,
            other => return Err(unexpected(other)),
        };
        let parts = self.partitions(info.id).await?;
        for p in &parts {
            self.call(
                p.group,
                MetaRequest::InitPartition {
                    part: *p,
                    chunk_size: info.chunk_size,
                },
            )
            .await?;
        }
        let root_group = parts
            .iter()
            .find(|p| p.contains(ROOT_INO))
            .map(|p| p.group)
            .ok_or_else(|| MetaError::Storage("no partition holds the root inode".into()))?;
        self.call(
            root_group,
            MetaRequest::InitRoot {
                fs: info.id,
                mode: 0o755,
                uid: root_owner.0,
                gid: root_owner.1,
                now,
            },
        )
        .await?;
        Ok(info)
    }

    /// Opens a created filesystem to clients.
    pub async fn mark_fs_ready(&self, name: &str) -> Result<FsInfo, MetaError> {
        match self
            .call(
                CLUSTER_GROUP,
                MetaRequest::MarkFsReady { name: name.into() },
            )
            .await?
        {
            MetaResponse::Fs(f) => Ok(f),
            other => Err(unexpected(other)),
        }
    }

    pub async fn partitions(&self, fs: FsId) -> Result<Vec<Partition>, MetaError> {
        match self
            .call(CLUSTER_GROUP, MetaRequest::ListPartitions { fs })
            .await?
        {
            MetaResponse::Partitions(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// Opens a formatted filesystem by name.
    pub async fn open_fs(self: &Arc<Self>, name: &str) -> Result<FsClient, MetaError> {
        let fs = self.open_loading_fs(name).await?;
        if !fs.info.ready {
            return Err(MetaError::Invalid(format!(
                "filesystem {name:?} was not completely formatted (or loaded); run `strata format` (or `strata load`) for it again"
            )));
        }
        Ok(fs)
    }

    /// Opens a filesystem by name, ready or not (`strata load` fills one in
    /// before it is ready).
    pub async fn open_loading_fs(self: &Arc<Self>, name: &str) -> Result<FsClient, MetaError> {
        let info = match self
            .call(CLUSTER_GROUP, MetaRequest::GetFs { name: name.into() })
            .await?
        {
            MetaResponse::Fs(f) => f,
            other => return Err(unexpected(other)),
        };
        let parts = self.partitions(info.id).await?;
        Ok(FsClient {
            meta: self.clone(),
            info,
            partitions: RwLock::new(parts),
            dir_spread_slack: std::sync::atomic::AtomicU64::new(DEFAULT_DIR_SPREAD_SLACK),
            loads: tokio::sync::Mutex::new(None),
            recent: RecentAttrs::default(),
            entries: RecentEntries::default(),
        })
    }

    /// Inode and byte usage of a filesystem, summed over its groups.
    pub async fn usage(&self, fs: FsId) -> Result<Usage, MetaError> {
        let mut groups: Vec<GroupId> = self.partitions(fs).await?.iter().map(|p| p.group).collect();
        groups.sort();
        groups.dedup();
        let mut total = Usage::default();
        for g in groups {
            match self.call(g, MetaRequest::Usage { fs }).await? {
                MetaResponse::Usage(u) => {
                    total.inodes += u.inodes;
                    total.bytes += u.bytes;
                }
                other => return Err(unexpected(other)),
            }
        }
        Ok(total)
    }
}

/// Steps of a transaction grouped by group: the coordinator's own, and each
/// participant's, in the order they came.
type Parts = Vec<(GroupId, Vec<TxStep>)>;

fn split_steps(steps: Vec<(GroupId, TxStep)>, coord: GroupId) -> (Parts, Vec<TxStep>) {
    let mut parts: Parts = Vec::new();
    let mut coord_steps = Vec::new();
    for (g, step) in steps {
        if g == coord {
            coord_steps.push(step);
        } else if let Some((_, list)) = parts.iter_mut().find(|(pg, _)| *pg == g) {
            list.push(step);
        } else {
            parts.push((g, vec![step]));
        }
    }
    (parts, coord_steps)
}

/// The error for an answer of the wrong kind (a protocol mismatch).
pub(crate) fn unexpected(r: MetaResponse) -> MetaError {
    MetaError::Protocol(format!("unexpected answer {r:?}"))
}

pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Inodes as this client's own changes left them. The kernel drops its
/// cached attributes of a directory after every change in it and asks again
/// before the next one (to check permissions), and of a file after every
/// write, so without these a create costs two round trips instead of one and
/// a stat after a close costs one.
#[derive(Default)]
struct RecentAttrs {
    map: std::sync::Mutex<HashMap<Ino, (Inode, tokio::time::Instant)>>,
}

/// Entries kept before the oldest are dropped.
const RECENT_ATTRS_MAX: usize = 4096;

impl RecentAttrs {
    fn note(&self, inodes: impl IntoIterator<Item = Inode>) {
        let now = tokio::time::Instant::now();
        let mut map = self.map.lock().unwrap();
        for d in inodes {
            if d.nlink == 0 {
                map.remove(&d.ino);
                continue;
            }
            // Answers of concurrent changes may arrive out of order: the
            // later change (by its ctime) wins.
            if map.get(&d.ino).is_some_and(|(old, _)| old.ctime > d.ctime) {
                continue;
            }
            map.insert(d.ino, (d, now));
        }
        if map.len() > RECENT_ATTRS_MAX {
            let mut ages: Vec<tokio::time::Instant> = map.values().map(|(_, at)| *at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            map.retain(|_, (_, at)| *at > cut);
        }
    }

    fn forget(&self, ino: Ino) {
        self.map.lock().unwrap().remove(&ino);
    }

    fn get(&self, ino: Ino, max_age: Duration) -> Option<(Inode, Duration)> {
        let map = self.map.lock().unwrap();
        let (inode, at) = map.get(&ino)?;
        let age = at.elapsed();
        (age < max_age).then(|| (inode.clone(), max_age - age))
    }
}

/// Names this client looked up, with the inode each named and when it was
/// asked: what the kernel's dentry cache would still hold had it kept them
/// (the kernel drops its cache under memory pressure, or when told to, and
/// asks again). A name this client changes is forgotten before and after
/// the change, and a lookup answered across a change of this client's is
/// not kept (`epoch` moved on meanwhile), so this client never sees its
/// own changes undone; changes by other clients show within the entry TTL,
/// as with the kernel's cache.
#[derive(Default)]
struct RecentEntries {
    map: std::sync::Mutex<EntryMap>,
}

#[derive(Default)]
struct EntryMap {
    /// Bumped by every change of a name by this client.
    epoch: u64,
    names: HashMap<(Ino, Vec<u8>), (Ino, tokio::time::Instant)>,
}

/// Names kept before the oldest half is dropped.
const RECENT_ENTRIES_MAX: usize = 16384;

impl RecentEntries {
    fn epoch(&self) -> u64 {
        self.map.lock().unwrap().epoch
    }

    /// Keeps `parent/name -> ino` as asked at `asked`, unless a name
    /// changed here since `epoch` was read.
    fn note(&self, epoch: u64, parent: Ino, name: &[u8], ino: Ino, asked: tokio::time::Instant) {
        let mut map = self.map.lock().unwrap();
        if map.epoch != epoch {
            return;
        }
        map.names.insert((parent, name.to_vec()), (ino, asked));
        if map.names.len() > RECENT_ENTRIES_MAX {
            let mut ages: Vec<tokio::time::Instant> =
                map.names.values().map(|(_, at)| *at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            map.names.retain(|_, (_, at)| *at > cut);
        }
    }

    fn forget(&self, names: &[(Ino, Vec<u8>)]) {
        let mut map = self.map.lock().unwrap();
        map.epoch += 1;
        for key in names {
            map.names.remove(key);
        }
    }

    /// Forgets `names` now and again when the returned guard goes (the
    /// change is over, however it ended).
    fn changing(&self, names: &[(Ino, &[u8])]) -> ForgetOnDrop<'_> {
        let names: Vec<(Ino, Vec<u8>)> = names.iter().map(|(p, n)| (*p, n.to_vec())).collect();
        self.forget(&names);
        ForgetOnDrop {
            entries: self,
            names,
        }
    }

    fn get(&self, parent: Ino, name: &[u8], max_age: Duration) -> Option<(Ino, Duration)> {
        let map = self.map.lock().unwrap();
        let (ino, at) = map.names.get(&(parent, name.to_vec()))?;
        let age = at.elapsed();
        (age < max_age).then(|| (*ino, max_age - age))
    }
}

struct ForgetOnDrop<'a> {
    entries: &'a RecentEntries,
    names: Vec<(Ino, Vec<u8>)>,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.entries.forget(&self.names);
    }
}

/// Default of `FsClient::set_dir_spread_slack`.
pub const DEFAULT_DIR_SPREAD_SLACK: u64 = 1000;
/// How long inode counts per group are trusted when placing a directory.
const LOAD_REFRESH: Duration = Duration::from_secs(2);

/// What a new filesystem is made of (see `MetaClient::create_fs`).
#[derive(Clone, Debug)]
pub struct FsSpec {
    pub name: String,
    pub uuid: String,
    pub storage: String,
    pub s3_endpoint: Option<String>,
    pub block_size: u32,
    pub chunk_size: u32,
    pub partitions: u32,
    pub partition_size: u64,
    pub borrowed: Vec<BorrowedBlocks>,
}

/// Typed metadata calls for one filesystem.
/// A commit of written slices, as `FsClient::write_slices` answers it.
#[derive(Clone, Debug)]
pub struct Written {
    /// The inode's stamp just before the commit (None from a metaserver
    /// that predates it: then nothing can be told from it).
    pub before: Option<ChangeStamp>,
    /// The inode just after.
    pub inode: Inode,
    /// Chunks whose slice lists are long enough to be worth compacting.
    pub crowded: Vec<u32>,
}

pub struct FsClient {
    meta: Arc<MetaClient>,
    pub info: FsInfo,
    partitions: RwLock<Vec<Partition>>,
    dir_spread_slack: std::sync::atomic::AtomicU64,
    /// Inodes per group when last asked, counted up by this client's creates since.
    loads: tokio::sync::Mutex<Option<(tokio::time::Instant, HashMap<GroupId, u64>)>>,
    recent: RecentAttrs,
    entries: RecentEntries,
}

/// Whether an operation's failure means "try the whole operation again".
fn transient(e: &MetaError) -> bool {
    matches!(e, MetaError::Busy(_) | MetaError::TxAborted)
}

/// A short random pause, so two operations that collided do not collide again.
async fn jitter(attempt: u32) {
    let cap = 5u64 << attempt.min(6);
    let ms = 1 + uuid::Uuid::new_v4().as_u64_pair().0 % cap;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

macro_rules! expect {
    ($resp:expr, $pat:pat => $val:expr) => {
        match $resp {
            $pat => Ok($val),
            other => Err(unexpected(other)),
        }
    };
}

impl FsClient {
    pub fn meta(&self) -> &Arc<MetaClient> {
        &self.meta
    }

    /// A new directory goes to the least-loaded group once its parent's group
    /// holds more than `slack` inodes beyond it (0: every directory goes to the
    /// least-loaded group). Small trees stay in one group, where every
    /// operation is one log entry; big ones spread over the cluster.
    pub fn set_dir_spread_slack(&self, slack: u64) {
        self.dir_spread_slack
            .store(slack, std::sync::atomic::Ordering::Relaxed);
    }

    /// Attributes of `ino` as a change by this client left them less than
    /// `max_age` ago, and how much of `max_age` is left. Changes by other
    /// clients since are not in them: use them only where attributes that
    /// old are acceptable (the kernel's attribute cache).
    pub fn recent_attr(&self, ino: Ino, max_age: Duration) -> Option<(Inode, Duration)> {
        self.recent.get(ino, max_age)
    }

    /// The inode `parent/name` named when this client looked it up less than
    /// `max_age` ago, and how much of `max_age` is left; None if this client
    /// changed that name since. Changes by other clients since are not in
    /// it: use it only where an entry that old is acceptable (the kernel's
    /// dentry cache).
    pub fn recent_entry(
        &self,
        parent: Ino,
        name: &[u8],
        max_age: Duration,
    ) -> Option<(Ino, Duration)> {
        self.entries.get(parent, name, max_age)
    }

    /// Remembers `inode` as a change of this client left it.
    pub(crate) fn note_recent(&self, inode: &Inode) {
        self.recent.note([inode.clone()]);
    }

    /// Takes the changed inodes off a namespace change's answer and
    /// remembers them with the inodes the answer itself carries.
    fn note_changed(&self, r: MetaResponse) -> MetaResponse {
        let (answer, changed) = r.split_changed();
        self.recent.note(changed);
        match &answer {
            MetaResponse::Inode(inode)
            | MetaResponse::Unlinked { inode, .. }
            | MetaResponse::Renamed {
                replaced: Some(inode),
            } => self.recent.note([inode.clone()]),
            _ => {}
        }
        answer
    }

    fn known_group(&self, ino: Ino) -> Option<GroupId> {
        partition_of(&self.partitions.read().unwrap(), ino).map(|p| p.group)
    }

    /// The group holding `ino`; reloads the partition list for an inode of a
    /// partition created after this client started.
    /// `inos` sorted by the group that holds each.
    pub async fn by_group(
        &self,
        inos: &[Ino],
    ) -> Result<std::collections::BTreeMap<GroupId, Vec<Ino>>, MetaError> {
        let mut out: std::collections::BTreeMap<GroupId, Vec<Ino>> = Default::default();
        for &ino in inos {
            out.entry(self.group_of(ino).await?).or_default().push(ino);
        }
        Ok(out)
    }

    pub async fn group_of(&self, ino: Ino) -> Result<GroupId, MetaError> {
        if let Some(g) = self.known_group(ino) {
            return Ok(g);
        }
        self.reload_partitions().await?;
        self.known_group(ino)
            .ok_or_else(|| MetaError::Invalid(format!("inode {ino} is in no partition")))
    }

    async fn reload_partitions(&self) -> Result<(), MetaError> {
        let parts = self.meta.partitions(self.info.id).await?;
        *self.partitions.write().unwrap() = parts;
        Ok(())
    }

    /// The groups holding this filesystem's partitions.
    pub fn groups(&self) -> Vec<GroupId> {
        let mut gs: Vec<GroupId> = self
            .partitions
            .read()
            .unwrap()
            .iter()
            .map(|p| p.group)
            .collect();
        gs.sort();
        gs.dedup();
        gs
    }

    /// Sends `req` to group `g`; a request that met a pending transaction's
    /// lock is sent again after a short pause.
    pub(crate) async fn call_group(
        &self,
        g: GroupId,
        req: MetaRequest,
    ) -> Result<MetaResponse, MetaError> {
        self.retrying(|| self.meta.call(g, req.clone())).await
    }

    async fn call(&self, ino: Ino, req: MetaRequest) -> Result<MetaResponse, MetaError> {
        self.call_group(self.group_of(ino).await?, req).await
    }

    /// Runs `op` again while it fails for a transient reason (a lock or an
    /// aborted transaction), until the call deadline.
    async fn retrying<F, Fut, T>(&self, mut op: F) -> Result<T, MetaError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, MetaError>>,
    {
        let deadline = tokio::time::Instant::now() + CALL_DEADLINE;
        let mut attempt = 0;
        loop {
            match op().await {
                Err(e) if transient(&e) && tokio::time::Instant::now() < deadline => {
                    attempt += 1;
                    jitter(attempt).await;
                }
                other => return other,
            }
        }
    }

    /// Runs a cross-group transaction (see `crate::server::txn`): `parts` are
    /// prepared in order, then the coordinator applies the steps `coord_steps`
    /// builds from the inodes the parts created, then the parts finish.
    /// Returns every inode a step changed, with whether it is gone.
    async fn transact(
        &self,
        parts: Vec<(GroupId, Vec<TxStep>)>,
        coord: GroupId,
        coord_steps: impl FnOnce(&[Inode]) -> Vec<TxStep>,
    ) -> Result<Vec<(Inode, bool)>, MetaError> {
        let fs = self.info.id;
        let tx: TxId = uuid::Uuid::new_v4().as_u64_pair().0;
        let participants: Vec<GroupId> = parts.iter().map(|(g, _)| *g).collect();
        let begin = MetaRequest::TxBegin {
            fs,
            tx,
            participants: participants.clone(),
            now: Timestamp::now(),
        };
        match self.meta.call(coord, begin).await {
            Ok(MetaResponse::Ok) => {}
            Ok(other) => return Err(unexpected(other)),
            // Not begun, or begun and left to the coordinator's recovery.
            Err(e) => return Err(e),
        }
        let mut prepared = Vec::new();
        let mut created: Vec<Inode> = Vec::new();
        let mut failure = None;
        for (g, steps) in parts {
            let req = MetaRequest::TxPrepare {
                fs,
                tx,
                coord,
                participants: participants.clone(),
                steps,
                now: Timestamp::now(),
            };
            match self.meta.call(g, req).await {
                Ok(MetaResponse::TxApplied(c)) => {
                    prepared.push(g);
                    created.extend(c.into_iter().map(|(i, _)| i));
                }
                Ok(other) => return Err(unexpected(other)),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let mut changed: Vec<(Inode, bool)> = created.iter().map(|i| (i.clone(), false)).collect();
        if failure.is_none() {
            let req = MetaRequest::TxCommit {
                fs,
                tx,
                steps: coord_steps(&created),
                now: Timestamp::now(),
            };
            match self.meta.call(coord, req).await {
                Ok(MetaResponse::TxApplied(c)) => changed.extend(c),
                Ok(other) => return Err(unexpected(other)),
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            // The commit may have landed even though its answer was lost:
            // only the coordinator's record says.
            match self.meta.call(coord, MetaRequest::TxResolve { tx }).await {
                Ok(MetaResponse::Decision(true)) => {}
                Ok(MetaResponse::Decision(false)) => {
                    let _ = self
                        .meta
                        .finish_transaction(fs, tx, coord, &prepared, false)
                        .await;
                    return Err(e);
                }
                // Unreachable coordinator: recovery finishes the transaction.
                _ => return Err(e),
            }
        }
        // A group that cannot be reached now is left to its leader's recovery.
        match self
            .meta
            .finish_transaction(fs, tx, coord, &prepared, true)
            .await
        {
            Ok(c) => changed.extend(c),
            Err(e) => tracing::warn!(tx, error = %e, "transaction left to recovery"),
        }
        for (inode, removed) in &changed {
            if *removed {
                self.recent.forget(inode.ino);
            } else {
                self.recent.note([inode.clone()]);
            }
        }
        Ok(changed)
    }

    /// The inode `parent/name` names, fresh from the metaserver; both the
    /// name and the attributes are kept for `recent_entry` and `recent_attr`.
    pub async fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Inode, MetaError> {
        let (epoch, asked) = (self.entries.epoch(), tokio::time::Instant::now());
        let inode = match self.lookup_entry(parent, name).await? {
            MetaResponse::Inode(i) => {
                self.recent.note([i.clone()]);
                i
            }
            MetaResponse::Remote(d) => self.getattr(d.ino).await?,
            other => return Err(unexpected(other)),
        };
        self.entries.note(epoch, parent, name, inode.ino, asked);
        Ok(inode)
    }

    /// The entry `parent/name`: its inode when it lives in the parent's group,
    /// else just the dentry.
    async fn lookup_entry(&self, parent: Ino, name: &[u8]) -> Result<MetaResponse, MetaError> {
        self.call(
            parent,
            MetaRequest::Lookup {
                fs: self.info.id,
                parent,
                name: name.to_vec(),
            },
        )
        .await
    }

    async fn dentry(&self, parent: Ino, name: &[u8]) -> Result<Option<Dentry>, MetaError> {
        match self.lookup_entry(parent, name).await {
            Ok(MetaResponse::Inode(i)) => Ok(Some(Dentry {
                ino: i.ino,
                kind: i.kind,
            })),
            Ok(MetaResponse::Remote(d)) => Ok(Some(d)),
            Ok(other) => Err(unexpected(other)),
            Err(MetaError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Fresh attributes from the metaserver (never from `recent_attr`),
    /// which `recent_attr` then holds.
    pub async fn getattr(&self, ino: Ino) -> Result<Inode, MetaError> {
        let r = self
            .call(
                ino,
                MetaRequest::GetAttr {
                    fs: self.info.id,
                    ino,
                },
            )
            .await?;
        let inode = expect!(r, MetaResponse::Inode(i) => i)?;
        self.recent.note([inode.clone()]);
        Ok(inode)
    }

    /// The inode and the slices of its chunk `index`, read together: one
    /// round trip where getattr and read_chunk would take two.
    pub async fn getattr_and_chunk(
        &self,
        ino: Ino,
        index: u32,
    ) -> Result<(Inode, Vec<Slice>), MetaError> {
        let r = self
            .call(
                ino,
                MetaRequest::GetAttrAndChunk {
                    fs: self.info.id,
                    ino,
                    index,
                },
            )
            .await?;
        let (inode, slices) =
            expect!(r, MetaResponse::AttrAndSlices { inode, slices } => (inode, slices))?;
        self.recent.note([inode.clone()]);
        Ok((inode, slices))
    }

    pub async fn setattr(&self, ino: Ino, set: SetAttr) -> Result<Inode, MetaError> {
        let r = self
            .call(
                ino,
                MetaRequest::SetAttr {
                    fs: self.info.id,
                    ino,
                    set,
                    now: Timestamp::now(),
                },
            )
            .await?;
        let inode = expect!(r, MetaResponse::Inode(i) => i)?;
        self.recent.note([inode.clone()]);
        Ok(inode)
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        parent: Ino,
        name: &[u8],
        kind: FileType,
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u32,
        symlink: Option<Vec<u8>>,
    ) -> Result<Inode, MetaError> {
        let _changing = self.entries.changing(&[(parent, name)]);
        let pg = self.group_of(parent).await?;
        if kind == FileType::Dir {
            let target = self.place_dir(pg).await;
            if target != pg {
                let mkdir = || self.mkdir_elsewhere(target, pg, parent, name, mode, uid, gid);
                return self.growing(target, || self.retrying(mkdir)).await;
            }
        }
        let req = MetaRequest::Create {
            fs: self.info.id,
            parent,
            name: name.to_vec(),
            kind,
            mode,
            uid,
            gid,
            rdev,
            symlink,
            now: Timestamp::now(),
        };
        let r = self
            .growing(pg, || self.call_group(pg, req.clone()))
            .await?;
        self.count_create(pg).await;
        expect!(self.note_changed(r), MetaResponse::Inode(i) => i)
    }

    /// Runs `op`, which creates an inode in group `g`, once more after giving
    /// `g` a new partition if its own are full.
    async fn growing<F, Fut, T>(&self, g: GroupId, op: F) -> Result<T, MetaError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, MetaError>>,
    {
        match op().await {
            Err(MetaError::PartitionsFull) => {
                self.grow(g).await?;
                op().await
            }
            other => other,
        }
    }

    /// Gives group `g` a new inode partition (its own are used up).
    async fn grow(&self, g: GroupId) -> Result<(), MetaError> {
        let seen = self
            .partitions
            .read()
            .unwrap()
            .iter()
            .filter(|p| p.group == g)
            .count() as u32;
        let req = MetaRequest::AddPartition {
            fs: self.info.id,
            group: g,
            seen,
        };
        let parts =
            expect!(self.meta.call(CLUSTER_GROUP, req).await?, MetaResponse::Partitions(p) => p)?;
        // Every partition of the group, not only the new one: a client that
        // died after adding one may have left it uninitialized (this is idempotent).
        for p in parts.iter().filter(|p| p.group == g) {
            let req = MetaRequest::InitPartition {
                part: *p,
                chunk_size: self.info.chunk_size,
            };
            self.meta.call(g, req).await?;
        }
        tracing::info!(
            group = g,
            partitions = parts.len(),
            "added an inode partition"
        );
        *self.partitions.write().unwrap() = parts;
        Ok(())
    }

    /// The group a new directory under a directory of group `parent_group` goes to.
    async fn place_dir(&self, parent_group: GroupId) -> GroupId {
        let slack = self
            .dir_spread_slack
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut loads = self.loads.lock().await;
        let stale = loads
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() > LOAD_REFRESH);
        if stale {
            let mut fresh = HashMap::new();
            for g in self.groups() {
                if let Ok(MetaResponse::Usage(u)) = self
                    .meta
                    .call(g, MetaRequest::LiveUsage { fs: self.info.id })
                    .await
                {
                    fresh.insert(g, u.inodes);
                }
            }
            *loads = Some((tokio::time::Instant::now(), fresh));
        }
        let (_, counts) = loads.as_ref().expect("just filled");
        let here = counts.get(&parent_group).copied().unwrap_or(0);
        match counts.iter().min_by_key(|(g, n)| (**n, **g)) {
            Some((&g, &n)) if here > n.saturating_add(slack) || (slack == 0 && here > n) => g,
            _ => parent_group,
        }
    }

    async fn count_create(&self, g: GroupId) {
        if let Some((_, counts)) = self.loads.lock().await.as_mut() {
            *counts.entry(g).or_default() += 1;
        }
    }

    /// mkdir with the new inode in group `target` and its entry in `pg`.
    #[allow(clippy::too_many_arguments)]
    async fn mkdir_elsewhere(
        &self,
        target: GroupId,
        pg: GroupId,
        parent: Ino,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Inode, MetaError> {
        validate_name(name)?;
        let dir = self.getattr(parent).await?;
        if dir.kind != FileType::Dir {
            return Err(MetaError::NotDir);
        }
        // BSD group semantics under a setgid directory, as a local mkdir has.
        let (gid, mode) = if dir.mode & 0o2000 != 0 {
            (dir.gid, mode | 0o2000)
        } else {
            (gid, mode)
        };
        let create = TxStep::CreateInode {
            kind: FileType::Dir,
            mode,
            uid,
            gid,
            rdev: 0,
            symlink: None,
            parent,
        };
        let name = name.to_vec();
        let changed = self
            .transact(vec![(target, vec![create])], pg, |created| {
                let ino = created.first().map_or(0, |i| i.ino);
                vec![
                    TxStep::PutDentry {
                        parent,
                        name,
                        ino,
                        kind: FileType::Dir,
                        replace: None,
                    },
                    TxStep::TouchDir {
                        ino: parent,
                        nlink: 1,
                    },
                ]
            })
            .await?;
        self.count_create(target).await;
        // `transact` lists the inodes the participants created first.
        changed
            .into_iter()
            .next()
            .map(|(i, _)| i)
            .ok_or_else(|| MetaError::Protocol("mkdir answered no inode".into()))
    }

    pub async fn link(&self, ino: Ino, parent: Ino, name: &[u8]) -> Result<Inode, MetaError> {
        let _changing = self.entries.changing(&[(parent, name)]);
        let (pg, ig) = (self.group_of(parent).await?, self.group_of(ino).await?);
        if pg == ig {
            let req = MetaRequest::Link {
                fs: self.info.id,
                ino,
                parent,
                name: name.to_vec(),
                now: Timestamp::now(),
            };
            let r = self.call_group(pg, req).await?;
            return expect!(self.note_changed(r), MetaResponse::Inode(i) => i);
        }
        self.retrying(|| async {
            validate_name(name)?;
            let kind = self.getattr(ino).await?.kind;
            let changed = self
                .transact(vec![(ig, vec![TxStep::AddLink { ino }])], pg, |_| {
                    vec![
                        TxStep::PutDentry {
                            parent,
                            name: name.to_vec(),
                            ino,
                            kind,
                            replace: None,
                        },
                        TxStep::TouchDir {
                            ino: parent,
                            nlink: 0,
                        },
                    ]
                })
                .await?;
            match changed.into_iter().find(|(i, _)| i.ino == ino) {
                Some((i, _)) => Ok(i),
                None => self.getattr(ino).await,
            }
        })
        .await
    }

    /// Returns the inode whose last link went with the name, if it did (it
    /// is in the trash now).
    pub async fn unlink(&self, parent: Ino, name: &[u8]) -> Result<Option<Ino>, MetaError> {
        self.remove(parent, name, false).await
    }

    pub async fn rmdir(&self, parent: Ino, name: &[u8]) -> Result<(), MetaError> {
        self.remove(parent, name, true).await.map(|_| ())
    }

    async fn remove(&self, parent: Ino, name: &[u8], dir: bool) -> Result<Option<Ino>, MetaError> {
        let _changing = self.entries.changing(&[(parent, name)]);
        let fs = self.info.id;
        let now = Timestamp::now();
        let name_v = name.to_vec();
        let req = if dir {
            MetaRequest::Rmdir {
                fs,
                parent,
                name: name_v,
                now,
            }
        } else {
            MetaRequest::Unlink {
                fs,
                parent,
                name: name_v,
                now,
            }
        };
        match self.call(parent, req).await.map(|r| self.note_changed(r)) {
            Ok(MetaResponse::Unlinked { inode, removed }) => {
                return Ok(removed.then_some(inode.ino));
            }
            Ok(other) => return Err(unexpected(other)),
            Err(MetaError::CrossGroup(_)) => {}
            Err(e) => return Err(e),
        }
        // The entry is here and its inode in another group.
        self.retrying(|| async {
            let pg = self.group_of(parent).await?;
            let d = self
                .dentry(parent, name)
                .await?
                .ok_or(MetaError::NotFound)?;
            match (dir, d.kind == FileType::Dir) {
                (true, false) => return Err(MetaError::NotDir),
                (false, true) => return Err(MetaError::IsDir),
                _ => {}
            }
            let ig = self.group_of(d.ino).await?;
            let coord_steps = vec![
                TxStep::DelDentry {
                    parent,
                    name: name.to_vec(),
                    ino: d.ino,
                },
                TxStep::TouchDir {
                    ino: parent,
                    nlink: if dir { -1 } else { 0 },
                },
            ];
            let drop = TxStep::DropLink { ino: d.ino, dir };
            let (parts, coord_steps) = if ig == pg {
                (vec![], [coord_steps, vec![drop]].concat())
            } else {
                (vec![(ig, vec![drop])], coord_steps)
            };
            let changed = self.transact(parts, pg, |_| coord_steps).await?;
            // No answer from the inode's group (recovery finishes it
            // there): whether the last link went is not known here.
            Ok(changed
                .into_iter()
                .find(|(i, removed)| i.ino == d.ino && *removed)
                .map(|(i, _)| i.ino))
        })
        .await
    }

    /// Renames `parent/name` to `new_parent/new_name` as `mode` says;
    /// returns the inode a plain rename replaced, if any.
    pub async fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        new_parent: Ino,
        new_name: &[u8],
        mode: RenameMode,
    ) -> Result<Option<Inode>, MetaError> {
        let _changing = self
            .entries
            .changing(&[(parent, name), (new_parent, new_name)]);
        let (sg, dg) = (
            self.group_of(parent).await?,
            self.group_of(new_parent).await?,
        );
        if sg == dg {
            let (fs, now) = (self.info.id, Timestamp::now());
            let (name_v, new_name_v) = (name.to_vec(), new_name.to_vec());
            let req = match mode {
                RenameMode::Replace => MetaRequest::Rename {
                    fs,
                    parent,
                    name: name_v,
                    new_parent,
                    new_name: new_name_v,
                    now,
                },
                mode => MetaRequest::RenameWith {
                    fs,
                    parent,
                    name: name_v,
                    new_parent,
                    new_name: new_name_v,
                    mode,
                    now,
                },
            };
            match self.call_group(sg, req).await {
                Ok(r) => {
                    return expect!(self.note_changed(r), MetaResponse::Renamed { replaced } => replaced);
                }
                Err(MetaError::CrossGroup(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.retrying(|| self.rename_across(parent, name, new_parent, new_name, mode))
            .await
    }

    /// A rename whose entries or inodes live in more than one group.
    async fn rename_across(
        &self,
        parent: Ino,
        name: &[u8],
        new_parent: Ino,
        new_name: &[u8],
        mode: RenameMode,
    ) -> Result<Option<Inode>, MetaError> {
        validate_name(name)?;
        validate_name(new_name)?;
        let src = self
            .dentry(parent, name)
            .await?
            .ok_or(MetaError::NotFound)?;
        let dst = self.dentry(new_parent, new_name).await?;
        let target_dir = self.getattr(new_parent).await?;
        if target_dir.kind != FileType::Dir {
            return Err(MetaError::NotDir);
        }
        match (mode, dst) {
            (RenameMode::NoReplace, Some(_)) => return Err(MetaError::Exists),
            (RenameMode::Exchange, None) => return Err(MetaError::NotFound),
            (RenameMode::Exchange, Some(d)) => {
                return self
                    .exchange_across((parent, name, src), (new_parent, new_name, d))
                    .await;
            }
            _ => {}
        }
        if dst.is_some_and(|d| d.ino == src.ino) {
            // POSIX: renaming onto another link of the same file does nothing.
            return Ok(None);
        }
        let src_dir = src.kind == FileType::Dir;
        if let Some(d) = dst {
            match (src_dir, d.kind == FileType::Dir) {
                (true, false) => return Err(MetaError::NotDir),
                (false, true) => return Err(MetaError::IsDir),
                _ => {}
            }
        }
        if src_dir && parent != new_parent {
            // A directory may not move below itself. Checked by walking up
            // from the target; a concurrent rename elsewhere in the tree by
            // another client is not excluded (see docs/decisions.md).
            let mut cur = new_parent;
            while cur != ROOT_INO {
                if cur == src.ino {
                    return Err(MetaError::Invalid(
                        "cannot move a directory into itself".into(),
                    ));
                }
                cur = self.getattr(cur).await?.parent;
            }
        }
        let (sg, dg) = (
            self.group_of(parent).await?,
            self.group_of(new_parent).await?,
        );
        let moves_dir = src_dir && parent != new_parent;
        let mut steps: Vec<(GroupId, TxStep)> = vec![
            (
                sg,
                TxStep::DelDentry {
                    parent,
                    name: name.to_vec(),
                    ino: src.ino,
                },
            ),
            (
                sg,
                TxStep::TouchDir {
                    ino: parent,
                    nlink: if moves_dir { -1 } else { 0 },
                },
            ),
            (
                dg,
                TxStep::PutDentry {
                    parent: new_parent,
                    name: new_name.to_vec(),
                    ino: src.ino,
                    kind: src.kind,
                    replace: dst.map(|d| d.ino),
                },
            ),
            (
                dg,
                TxStep::TouchDir {
                    ino: new_parent,
                    nlink: i32::from(moves_dir)
                        - i32::from(dst.is_some_and(|d| d.kind == FileType::Dir)),
                },
            ),
            (
                self.group_of(src.ino).await?,
                TxStep::Moved {
                    ino: src.ino,
                    new_parent,
                },
            ),
        ];
        if let Some(d) = dst {
            steps.push((
                self.group_of(d.ino).await?,
                TxStep::DropLink {
                    ino: d.ino,
                    dir: d.kind == FileType::Dir,
                },
            ));
        }
        let (parts, coord_steps) = split_steps(steps, dg);
        let changed = self.transact(parts, dg, |_| coord_steps).await?;
        Ok(dst.and_then(|d| {
            changed
                .into_iter()
                .rev()
                .find(|(i, _)| i.ino == d.ino)
                .map(|(i, _)| i)
        }))
    }

    /// Whether directory `dir` is `ancestor` or lies below it (walking up
    /// parent pointers; see the cross-group rename decision).
    async fn within(&self, ancestor: Ino, dir: Ino) -> Result<bool, MetaError> {
        let mut cur = dir;
        while cur != ROOT_INO {
            if cur == ancestor {
                return Ok(true);
            }
            cur = self.getattr(cur).await?.parent;
        }
        Ok(ancestor == ROOT_INO)
    }

    /// RENAME_EXCHANGE across groups: each name takes the other's inode.
    async fn exchange_across(
        &self,
        (parent, name, src): (Ino, &[u8], Dentry),
        (new_parent, new_name, dst): (Ino, &[u8], Dentry),
    ) -> Result<Option<Inode>, MetaError> {
        if src.ino == dst.ino {
            return Ok(None);
        }
        let moves = parent != new_parent;
        let (a_dir, b_dir) = (
            moves && src.kind == FileType::Dir,
            moves && dst.kind == FileType::Dir,
        );
        if (a_dir && self.within(src.ino, new_parent).await?)
            || (b_dir && self.within(dst.ino, parent).await?)
        {
            return Err(MetaError::Invalid(
                "cannot move a directory into itself".into(),
            ));
        }
        let (sg, dg) = (
            self.group_of(parent).await?,
            self.group_of(new_parent).await?,
        );
        let delta = i32::from(b_dir) - i32::from(a_dir);
        let steps: Vec<(GroupId, TxStep)> = vec![
            (
                sg,
                TxStep::PutDentry {
                    parent,
                    name: name.to_vec(),
                    ino: dst.ino,
                    kind: dst.kind,
                    replace: Some(src.ino),
                },
            ),
            (
                dg,
                TxStep::PutDentry {
                    parent: new_parent,
                    name: new_name.to_vec(),
                    ino: src.ino,
                    kind: src.kind,
                    replace: Some(dst.ino),
                },
            ),
            (
                sg,
                TxStep::TouchDir {
                    ino: parent,
                    nlink: delta,
                },
            ),
            (
                dg,
                TxStep::TouchDir {
                    ino: new_parent,
                    nlink: -delta,
                },
            ),
            (
                self.group_of(src.ino).await?,
                TxStep::Moved {
                    ino: src.ino,
                    new_parent,
                },
            ),
            (
                self.group_of(dst.ino).await?,
                TxStep::Moved {
                    ino: dst.ino,
                    new_parent: parent,
                },
            ),
        ];
        let (parts, coord_steps) = split_steps(steps, dg);
        self.transact(parts, dg, |_| coord_steps).await?;
        Ok(None)
    }

    /// One page of a directory; entries whose inode lives elsewhere are filled in.
    pub async fn readdir(
        &self,
        ino: Ino,
        after: Option<Vec<u8>>,
        limit: u32,
    ) -> Result<Vec<DirEntry>, MetaError> {
        let r = self
            .call(
                ino,
                MetaRequest::ReadDir {
                    fs: self.info.id,
                    ino,
                    after,
                    limit,
                },
            )
            .await?;
        let mut entries: Vec<DirEntry> = expect!(r, MetaResponse::Entries(e) => e)?;
        for e in entries.iter_mut().filter(|e| e.attr.is_none()) {
            e.attr = self.getattr(e.dentry.ino).await.ok();
        }
        Ok(entries)
    }

    pub async fn read_chunk(&self, ino: Ino, index: u32) -> Result<Vec<Slice>, MetaError> {
        let r = self
            .call(
                ino,
                MetaRequest::ReadChunk {
                    fs: self.info.id,
                    ino,
                    index,
                },
            )
            .await?;
        expect!(r, MetaResponse::Slices(s) => s)
    }

    /// Adds written slices to their chunk maps, setting mtime and ctime to
    /// `written` (when the last of them was written).
    pub async fn write_slices(
        &self,
        ino: Ino,
        slices: Vec<(u32, Slice)>,
        end: u64,
        written: Timestamp,
    ) -> Result<Written, MetaError> {
        let r = self
            .call(
                ino,
                MetaRequest::WriteSlices {
                    fs: self.info.id,
                    ino,
                    slices,
                    end,
                    // The file changed when it was written, not when the
                    // writes were committed.
                    now: written,
                },
            )
            .await?;
        let written = match r {
            MetaResponse::WrittenOver {
                before,
                inode,
                crowded,
            } => Written {
                before: Some(before),
                inode,
                crowded,
            },
            // Remembered from before `WrittenOver` existed.
            MetaResponse::Written { inode, crowded } => Written {
                before: None,
                inode,
                crowded,
            },
            // Remembered from before `Written` existed.
            MetaResponse::Inode(inode) => Written {
                before: None,
                inode,
                crowded: Vec::new(),
            },
            other => return Err(unexpected(other)),
        };
        self.recent.note([written.inode.clone()]);
        Ok(written)
    }

    /// Reserves `len` bytes at the end of file `ino` for an O_APPEND write
    /// (at `at_least` or beyond); returns where they start.
    pub async fn reserve_append(
        &self,
        ino: Ino,
        at_least: u64,
        len: u64,
    ) -> Result<u64, MetaError> {
        let req = MetaRequest::ReserveAppend {
            fs: self.info.id,
            ino,
            at_least,
            len,
            now: Timestamp::now(),
        };
        match self.call(ino, req).await? {
            MetaResponse::Reserved { offset, inode } => {
                self.recent.note([inode]);
                Ok(offset)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Makes `[offset, offset + len)` of file `ino` read as zeros.
    pub async fn punch_hole(&self, ino: Ino, offset: u64, len: u64) -> Result<Inode, MetaError> {
        let req = MetaRequest::PunchHole {
            fs: self.info.id,
            ino,
            offset,
            len,
            now: Timestamp::now(),
        };
        let inode = expect!(self.call(ino, req).await?, MetaResponse::Inode(i) => i)?;
        self.recent.note([inode.clone()]);
        Ok(inode)
    }

    /// Reserves `count` consecutive slice ids and returns the first.
    pub async fn alloc_slice_ids(&self, count: u64) -> Result<SliceId, MetaError> {
        let r = self
            .meta
            .call(
                CLUSTER_GROUP,
                MetaRequest::AllocSliceIds {
                    fs: self.info.id,
                    count,
                },
            )
            .await?;
        expect!(r, MetaResponse::SliceIds { start } => start)
    }

    pub async fn usage(&self) -> Result<Usage, MetaError> {
        self.meta.usage(self.info.id).await
    }

    /// One page of the inodes group `g` holds, numbers above `after`.
    pub async fn list_inodes(&self, g: GroupId, after: Ino) -> Result<Vec<Inode>, MetaError> {
        let req = MetaRequest::ListInodes {
            fs: self.info.id,
            after,
            limit: 4096,
        };
        expect!(self.meta.call(g, req).await?, MetaResponse::Inodes(l) => l)
    }

    /// Transactions prepared in group `g` and not finished yet.
    pub async fn intents(&self, g: GroupId) -> Result<Vec<IntentInfo>, MetaError> {
        expect!(self.meta.call(g, MetaRequest::ListIntents).await?, MetaResponse::Intents(l) => l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(ino: Ino, ctime: i64, nlink: u32) -> Inode {
        let mut d = Inode::new(
            ino,
            NewInode::plain(FileType::Dir, 0o755, 0, 0),
            1,
            Timestamp {
                sec: ctime,
                nsec: 0,
            },
        );
        d.nlink = nlink;
        d
    }

    #[tokio::test(start_paused = true)]
    async fn recent_dirs_keep_the_latest_change_for_a_while() {
        let recent = RecentAttrs::default();
        let ttl = Duration::from_secs(1);
        recent.note([dir(5, 20, 2)]);
        // An older answer arriving late does not replace a newer one.
        recent.note([dir(5, 10, 3)]);
        assert_eq!(recent.get(5, ttl).unwrap().0.nlink, 2);
        recent.note([dir(5, 30, 4)]);
        assert_eq!(recent.get(5, ttl).unwrap().0.nlink, 4);
        tokio::time::advance(Duration::from_millis(600)).await;
        let (_, left) = recent.get(5, ttl).unwrap();
        assert_eq!(left, Duration::from_millis(400), "what is left of the ttl");
        tokio::time::advance(Duration::from_millis(400)).await;
        assert!(recent.get(5, ttl).is_none(), "too old");
        // Removed inodes are dropped.
        recent.note([dir(6, 1, 2)]);
        recent.note([dir(6, 2, 0)]);
        assert!(recent.get(6, ttl).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn recent_dirs_stay_bounded() {
        let recent = RecentAttrs::default();
        for ino in 0..(RECENT_ATTRS_MAX as u64 * 3) {
            recent.note([dir(ino + 2, 1, 2)]);
            tokio::time::advance(Duration::from_micros(1)).await;
        }
        let len = recent.map.lock().unwrap().len();
        assert!(len <= RECENT_ATTRS_MAX, "{len} entries");
        let newest = RECENT_ATTRS_MAX as u64 * 3 + 1;
        assert!(recent.get(newest, Duration::from_secs(1)).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn recent_names_last_a_ttl_and_go_with_this_clients_changes() {
        let entries = RecentEntries::default();
        let ttl = Duration::from_secs(1);
        let asked = tokio::time::Instant::now();
        entries.note(entries.epoch(), 1, b"a", 10, asked);
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(
            entries.get(1, b"a", ttl),
            Some((10, Duration::from_millis(700))),
            "counted from when it was asked"
        );
        assert_eq!(entries.get(2, b"a", ttl), None, "another directory");
        tokio::time::advance(Duration::from_millis(700)).await;
        assert_eq!(entries.get(1, b"a", ttl), None, "too old");

        // A change of the name drops it, and a lookup answered while the
        // change ran (its epoch read before) is not kept.
        entries.note(entries.epoch(), 1, b"b", 11, tokio::time::Instant::now());
        let before = entries.epoch();
        let during;
        {
            let _changing = entries.changing(&[(1, b"b"), (1, b"c")]);
            assert_eq!(entries.get(1, b"b", ttl), None);
            entries.note(before, 1, b"b", 11, tokio::time::Instant::now());
            assert_eq!(entries.get(1, b"b", ttl), None);
            // Nor one asked during the change and answered after it.
            during = entries.epoch();
        }
        entries.note(during, 1, b"c", 12, tokio::time::Instant::now());
        assert_eq!(entries.get(1, b"c", ttl), None);
        // A lookup after the change is kept again.
        entries.note(entries.epoch(), 1, b"c", 13, tokio::time::Instant::now());
        assert_eq!(entries.get(1, b"c", ttl).map(|(i, _)| i), Some(13));
    }

    #[tokio::test(start_paused = true)]
    async fn recent_names_stay_bounded() {
        let entries = RecentEntries::default();
        for i in 0..(RECENT_ENTRIES_MAX as u64 * 3) {
            let name = i.to_string();
            entries.note(
                entries.epoch(),
                1,
                name.as_bytes(),
                i + 2,
                tokio::time::Instant::now(),
            );
            tokio::time::advance(Duration::from_micros(1)).await;
        }
        let len = entries.map.lock().unwrap().names.len();
        assert!(len <= RECENT_ENTRIES_MAX, "{len} names");
        let newest = (RECENT_ENTRIES_MAX as u64 * 3 - 1).to_string();
        assert!(
            entries
                .get(1, newest.as_bytes(), Duration::from_secs(1))
                .is_some()
        );
    }
}
