//! Where new inodes go: a new directory to the least-loaded group once its
//! parent's group is ahead by the spread slack, and a new partition for a
//! group whose own are full.

use std::collections::HashMap;
use std::time::Duration;

use super::{FsClient, expect_answer};
use crate::MetaError;
use crate::request::{MetaResponse, ReadRequest, WriteRequest};
use crate::types::*;

/// Default of `FsClient::set_dir_spread_slack`.
pub const DEFAULT_DIR_SPREAD_SLACK: u64 = 1000;
/// How long inode counts per group are trusted when placing a directory.
const LOAD_REFRESH: Duration = Duration::from_secs(2);

impl FsClient {
    /// Runs `op`, which creates an inode in group `g`, once more after giving
    /// `g` a new partition if its own are full.
    pub(super) async fn growing<F, Fut, T>(&self, g: GroupId, op: F) -> Result<T, MetaError>
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
    pub(super) async fn grow(&self, g: GroupId) -> Result<(), MetaError> {
        let seen = self
            .partitions
            .read()
            .unwrap()
            .iter()
            .filter(|p| p.group == g)
            .count() as u32;
        let req = WriteRequest::AddPartition {
            fs: self.info.id,
            group: g,
            seen,
        };
        let parts = expect_answer!(self.meta.call(CLUSTER_GROUP, req).await?, MetaResponse::Partitions(p) => p)?;
        // Every partition of the group, not only the new one: a client that
        // died after adding one may have left it uninitialized (this is idempotent).
        for p in parts.iter().filter(|p| p.group == g) {
            let req = WriteRequest::InitPartition {
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
    pub(super) async fn place_dir(&self, parent_group: GroupId) -> GroupId {
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
                    .call(g, ReadRequest::LiveUsage { fs: self.info.id })
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

    pub(super) async fn count_create(&self, g: GroupId) {
        if let Some((_, counts)) = self.loads.lock().await.as_mut() {
            *counts.entry(g).or_default() += 1;
        }
    }
}
