//! Cross-group transactions from the client's side (see
//! `server::ops::txn`): begin at the coordinator, prepare in each
//! participant, commit at the coordinator, finish everywhere; and the
//! recovery of one a client left half done.

use super::{FsClient, MetaClient, unexpected};
use crate::MetaError;
use crate::request::{IntentInfo, MetaResponse, TxId, TxStep, WriteRequest};
use crate::types::*;

impl MetaClient {
    /// Finishes a transaction found prepared in some group: asks its
    /// coordinator for the decision (aborting it if none was made) and carries
    /// it out everywhere. Returns the decision.
    /// A coordinator group that does not exist decided nothing, so the
    /// transaction is aborted, and participants that do not exist are
    /// skipped: only a client that made them up can have named them, and
    /// its intents must not hold their locks for ever.
    pub async fn resolve_transaction(&self, t: &IntentInfo) -> Result<bool, MetaError> {
        let map = self.refresh_map().await?;
        let exists = |g: &GroupId| map.groups.contains_key(g);
        let participants: Vec<GroupId> = t.participants.iter().copied().filter(exists).collect();
        if !exists(&t.coord) {
            self.finish_participants(t.fs, t.tx, &participants, false)
                .await?;
            return Ok(false);
        }
        let commit = match self
            .call(t.coord, WriteRequest::TxResolve { tx: t.tx })
            .await?
        {
            MetaResponse::Decision(d) => d,
            other => return Err(unexpected(other)),
        };
        self.finish_transaction(t.fs, t.tx, t.coord, &participants, commit)
            .await?;
        Ok(commit)
    }

    /// Carries out a decided transaction in `participants`, then drops the
    /// coordinator's record of it. Returns the inodes the steps changed.
    pub(super) async fn finish_transaction(
        &self,
        fs: FsId,
        tx: TxId,
        coord: GroupId,
        participants: &[GroupId],
        commit: bool,
    ) -> Result<Vec<(Inode, bool)>, MetaError> {
        let changed = self
            .finish_participants(fs, tx, participants, commit)
            .await?;
        self.call(coord, WriteRequest::TxForget { tx }).await?;
        Ok(changed)
    }

    /// Each participant applies (or drops) its prepared steps and unlocks.
    async fn finish_participants(
        &self,
        fs: FsId,
        tx: TxId,
        participants: &[GroupId],
        commit: bool,
    ) -> Result<Vec<(Inode, bool)>, MetaError> {
        let mut changed = Vec::new();
        for &g in participants {
            let req = WriteRequest::TxFinish {
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
        Ok(changed)
    }
}

/// Steps of a transaction grouped by group: the coordinator's own, and each
/// participant's, in the order they came.
type Parts = Vec<(GroupId, Vec<TxStep>)>;

pub(super) fn split_steps(steps: Vec<(GroupId, TxStep)>, coord: GroupId) -> (Parts, Vec<TxStep>) {
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

impl FsClient {
    /// Runs a cross-group transaction (see `server::ops::txn`): `parts` are
    /// prepared in order, then the coordinator applies the steps `coord_steps`
    /// builds from the inodes the parts created, then the parts finish.
    /// Returns every inode a step changed, with whether it is gone.
    pub(super) async fn transact(
        &self,
        parts: Vec<(GroupId, Vec<TxStep>)>,
        coord: GroupId,
        coord_steps: impl FnOnce(&[Inode]) -> Vec<TxStep>,
    ) -> Result<Vec<(Inode, bool)>, MetaError> {
        self.settle_for_transaction().await?;
        let fs = self.info.id;
        let tx: TxId = uuid::Uuid::new_v4().as_u64_pair().0;
        let participants: Vec<GroupId> = parts.iter().map(|(g, _)| *g).collect();
        let begin = WriteRequest::TxBegin {
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
            let req = WriteRequest::TxPrepare {
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
            let req = WriteRequest::TxCommit {
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
            match self.meta.call(coord, WriteRequest::TxResolve { tx }).await {
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
}
