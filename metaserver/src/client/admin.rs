//! Filesystems in the cluster map: format, create and open one, list them,
//! their partitions and usage.

use std::sync::{Arc, RwLock};

use super::placement::DEFAULT_DIR_SPREAD_SLACK;
use super::recent::{RecentAttrs, RecentEntries};
use super::{FsClient, MetaClient, unexpected};
use crate::MetaError;
use crate::request::{MetaResponse, ReadRequest, WriteRequest};
use crate::types::*;

/// What a new filesystem is made of (see `MetaClient::format` and
/// `create_fs`). `FsSpec::new` gives the defaults of `strata format`.
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

impl FsSpec {
    /// Filesystem `name` storing blocks at `storage`, with a fresh uuid and
    /// the default block, chunk and partition sizes.
    pub fn new(name: &str, storage: &str) -> FsSpec {
        FsSpec {
            name: name.into(),
            uuid: new_uuid(),
            storage: storage.into(),
            s3_endpoint: None,
            block_size: DEFAULT_BLOCK_SIZE,
            chunk_size: DEFAULT_CHUNK_SIZE,
            partitions: DEFAULT_PARTITIONS,
            partition_size: DEFAULT_PARTITION_SIZE,
            borrowed: Vec::new(),
        }
    }
}

impl MetaClient {
    pub async fn list_fs(&self) -> Result<Vec<FsInfo>, MetaError> {
        match self.call(CLUSTER_GROUP, ReadRequest::ListFs).await? {
            MetaResponse::FsList(l) => Ok(l),
            other => Err(unexpected(other)),
        }
    }

    /// Creates a filesystem: its record and partitions in group 0, each
    /// partition in its group, then the root (owned by `root_owner`, uid
    /// and gid). Each step is idempotent, so a format that was interrupted
    /// can simply run again.
    pub async fn format(&self, spec: &FsSpec, root_owner: (u32, u32)) -> Result<FsInfo, MetaError> {
        self.create_fs(spec, root_owner).await?;
        self.mark_fs_ready(&spec.name).await
    }

    /// The steps of `format` short of marking the filesystem ready: until
    /// then no client opens it (`strata load` fills it in between).
    pub async fn create_fs(
        &self,
        spec: &FsSpec,
        root_owner: (u32, u32),
    ) -> Result<FsInfo, MetaError> {
        let now = Timestamp::now();
        let req = WriteRequest::CreateFsSized {
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
                WriteRequest::InitPartition {
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
            WriteRequest::InitRoot {
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
                WriteRequest::MarkFsReady { name: name.into() },
            )
            .await?
        {
            MetaResponse::Fs(f) => Ok(f),
            other => Err(unexpected(other)),
        }
    }

    pub async fn partitions(&self, fs: FsId) -> Result<Vec<Partition>, MetaError> {
        match self
            .call(CLUSTER_GROUP, ReadRequest::ListPartitions { fs })
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
            .call(CLUSTER_GROUP, ReadRequest::GetFs { name: name.into() })
            .await?
        {
            MetaResponse::Fs(f) => f,
            other => return Err(unexpected(other)),
        };
        let parts = self.partitions(info.id).await?;
        let (root, granted_read_only) = self.view_of(name).await?;
        Ok(FsClient {
            meta: self.clone(),
            info,
            root,
            granted_read_only,
            partitions: RwLock::new(parts),
            dir_spread_slack: std::sync::atomic::AtomicU64::new(DEFAULT_DIR_SPREAD_SLACK),
            loads: tokio::sync::Mutex::new(None),
            recent: RecentAttrs::default(),
            entries: RecentEntries::default(),
            deferred: Default::default(),
        })
    }

    /// Records a new access token in group 0.
    pub async fn put_token(&self, token: Token) -> Result<(), MetaError> {
        self.call(CLUSTER_GROUP, WriteRequest::PutToken { token })
            .await?;
        Ok(())
    }

    /// Every access token (their hashes, not their secrets).
    pub async fn list_tokens(&self) -> Result<Vec<Token>, MetaError> {
        match self.call(CLUSTER_GROUP, ReadRequest::ListTokens).await? {
            MetaResponse::Tokens(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    /// Forgets an access token; connections using it lose their rights.
    pub async fn revoke_token(&self, id: &str) -> Result<(), MetaError> {
        self.call(CLUSTER_GROUP, WriteRequest::RevokeToken { id: id.into() })
            .await?;
        Ok(())
    }

    /// Inode and byte usage of a filesystem, summed over its groups.
    pub async fn usage(&self, fs: FsId) -> Result<Usage, MetaError> {
        let mut groups: Vec<GroupId> = self.partitions(fs).await?.iter().map(|p| p.group).collect();
        groups.sort();
        groups.dedup();
        let mut total = Usage::default();
        for g in groups {
            match self.call(g, ReadRequest::Usage { fs }).await? {
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

pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}
