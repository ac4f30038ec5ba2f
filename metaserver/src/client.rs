//! `MetaClient`: routes requests to the leader of the right group, following
//! NotLeader hints and retrying through outages; `FsClient`: typed calls for
//! one filesystem, routed ino -> partition -> group.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::MetaError;
use crate::request::{MetaRequest, MetaResponse, Origin};
use crate::rpc::ConnPool;
use crate::types::*;
use crate::wire::{Request, Response};

/// How long a call keeps retrying before it reports the metaserver unavailable.
const CALL_DEADLINE: Duration = Duration::from_secs(60);
/// A first contact fails sooner: a wrong address should not stall a command.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

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
        let deadline = tokio::time::Instant::now() + patience;
        let mut backoff = Duration::from_millis(20);
        let mut last_err = MetaError::Unavailable("no metaserver reachable".into());
        loop {
            let mut hinted = None;
            for addr in self.candidates(g) {
                let body = Request::Meta {
                    group: g,
                    req: req.clone(),
                    origin,
                };
                match self.pool.call(&addr, body, RPC_TIMEOUT).await {
                    Ok(Response::Meta(Ok(resp))) => {
                        self.leaders.write().unwrap().insert(g, addr);
                        return Ok(resp);
                    }
                    Ok(Response::Meta(Err(MetaError::NotLeader { leader, .. }))) => {
                        self.leaders.write().unwrap().remove(&g);
                        if let Some((_, hint)) = leader
                            && hint != addr
                        {
                            hinted = Some(hint);
                            break;
                        }
                        last_err = MetaError::Unavailable(format!("group {g} has no leader yet"));
                    }
                    Ok(Response::Meta(Err(e))) if e.is_retryable() => last_err = e,
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
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(last_err);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
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
        root_owner: (u32, u32),
    ) -> Result<FsInfo, MetaError> {
        let now = Timestamp::now();
        let info = match self
            .call(
                CLUSTER_GROUP,
                MetaRequest::CreateFs {
                    name: name.into(),
                    uuid: new_uuid(),
                    storage: storage.into(),
                    s3_endpoint,
                    block_size,
                    chunk_size,
                    partitions,
                    now,
                },
            )
            .await?
        {
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
        let info = match self
            .call(CLUSTER_GROUP, MetaRequest::GetFs { name: name.into() })
            .await?
        {
            MetaResponse::Fs(f) => f,
            other => return Err(unexpected(other)),
        };
        if !info.ready {
            return Err(MetaError::Invalid(format!(
                "filesystem {name:?} was not completely formatted; run `strata format` for it again"
            )));
        }
        let parts = self.partitions(info.id).await?;
        Ok(FsClient {
            meta: self.clone(),
            info,
            partitions: parts,
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

fn unexpected(r: MetaResponse) -> MetaError {
    MetaError::Protocol(format!("unexpected answer {r:?}"))
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Typed metadata calls for one filesystem.
pub struct FsClient {
    meta: Arc<MetaClient>,
    pub info: FsInfo,
    partitions: Vec<Partition>,
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

    fn group_of(&self, ino: Ino) -> Result<GroupId, MetaError> {
        partition_of(&self.partitions, ino)
            .map(|p| p.group)
            .ok_or_else(|| MetaError::Invalid(format!("inode {ino} is in no partition")))
    }

    async fn call(&self, ino: Ino, req: MetaRequest) -> Result<MetaResponse, MetaError> {
        self.meta.call(self.group_of(ino)?, req).await
    }

    pub async fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Inode, MetaError> {
        let r = self
            .call(
                parent,
                MetaRequest::Lookup {
                    fs: self.info.id,
                    parent,
                    name: name.to_vec(),
                },
            )
            .await?;
        expect!(r, MetaResponse::Inode(i) => i)
    }

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
        expect!(r, MetaResponse::Inode(i) => i)
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
        expect!(r, MetaResponse::Inode(i) => i)
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
        let r = self
            .call(
                parent,
                MetaRequest::Create {
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
                },
            )
            .await?;
        expect!(r, MetaResponse::Inode(i) => i)
    }

    pub async fn link(&self, ino: Ino, parent: Ino, name: &[u8]) -> Result<Inode, MetaError> {
        if self.group_of(ino)? != self.group_of(parent)? {
            return Err(MetaError::CrossGroup("link across groups".into()));
        }
        let r = self
            .call(
                parent,
                MetaRequest::Link {
                    fs: self.info.id,
                    ino,
                    parent,
                    name: name.to_vec(),
                    now: Timestamp::now(),
                },
            )
            .await?;
        expect!(r, MetaResponse::Inode(i) => i)
    }

    /// Returns the inode that lost a link and whether it is gone.
    pub async fn unlink(&self, parent: Ino, name: &[u8]) -> Result<(Inode, bool), MetaError> {
        let r = self
            .call(
                parent,
                MetaRequest::Unlink {
                    fs: self.info.id,
                    parent,
                    name: name.to_vec(),
                    now: Timestamp::now(),
                },
            )
            .await?;
        expect!(r, MetaResponse::Unlinked { inode, removed } => (inode, removed))
    }

    pub async fn rmdir(&self, parent: Ino, name: &[u8]) -> Result<(), MetaError> {
        let r = self
            .call(
                parent,
                MetaRequest::Rmdir {
                    fs: self.info.id,
                    parent,
                    name: name.to_vec(),
                    now: Timestamp::now(),
                },
            )
            .await?;
        expect!(r, MetaResponse::Unlinked { .. } => ())
    }

    pub async fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        new_parent: Ino,
        new_name: &[u8],
    ) -> Result<Option<Inode>, MetaError> {
        if self.group_of(parent)? != self.group_of(new_parent)? {
            return Err(MetaError::CrossGroup("rename across groups".into()));
        }
        let r = self
            .call(
                parent,
                MetaRequest::Rename {
                    fs: self.info.id,
                    parent,
                    name: name.to_vec(),
                    new_parent,
                    new_name: new_name.to_vec(),
                    now: Timestamp::now(),
                },
            )
            .await?;
        expect!(r, MetaResponse::Renamed { replaced } => replaced)
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

    pub async fn write_slices(
        &self,
        ino: Ino,
        slices: Vec<(u32, Slice)>,
        end: u64,
    ) -> Result<Inode, MetaError> {
        let r = self
            .call(
                ino,
                MetaRequest::WriteSlices {
                    fs: self.info.id,
                    ino,
                    slices,
                    end,
                    now: Timestamp::now(),
                },
            )
            .await?;
        expect!(r, MetaResponse::Inode(i) => i)
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
}
