//! Budgets of global quotas (the filesystem's, users' and groups'), from
//! the client's side: a group whose share of a quota is used up refuses a
//! change with `QuotaBudget`; the client borrows more from the quota's
//! home group, hands it to the group and sends the change again. A home
//! that is full only counting what it lent answers `QuotaLent`; the client
//! then asks every group to give back what it does not use (decision 60).

use crate::MetaError;
use crate::client::{MetaClient, expect_answer};
use crate::request::{BudgetOp, MetaResponse, WriteRequest};
use crate::types::*;

/// Lent beyond what a change needs, so the next changes in that group need
/// no round trip to the home.
const SPARE_INODES: u64 = 64;
const SPARE_BYTES: u64 = 8 << 20;

impl MetaClient {
    /// Moves at least `need` of `subject`'s quota from its home to group
    /// `to`. Fails with the home's refusal (QuotaExceeded) when the limit
    /// leaves no room even after the other groups gave back their spare.
    pub(super) async fn lend_budget(
        &self,
        fs: FsId,
        subject: QuotaSubject,
        (home, to): (GroupId, GroupId),
        need: Usage,
    ) -> Result<(), MetaError> {
        let want = Usage {
            inodes: need.inodes.saturating_add(SPARE_INODES),
            bytes: need.bytes.saturating_add(SPARE_BYTES),
        };
        let lend = WriteRequest::QuotaBudget {
            fs,
            subject,
            op: BudgetOp::Lend { to, need, want },
        };
        // A refusal for what was lent elsewhere makes this call reclaim
        // budget and ask again.
        let lent = match self.call(home, lend).await {
            Ok(r) => expect_answer!(r, MetaResponse::Budget(u) => u)?,
            // The quota is gone; so is any reason for the share.
            Err(MetaError::NotFound) => {
                let drop = WriteRequest::QuotaBudget {
                    fs,
                    subject,
                    op: BudgetOp::DropShare,
                };
                self.call(to, drop).await?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let add = WriteRequest::QuotaBudget {
            fs,
            subject,
            op: BudgetOp::Add { amount: lent },
        };
        match self.call(to, add).await {
            Ok(_) => Ok(()),
            // The share went (the quota was deleted): give it back.
            Err(MetaError::NotFound) => self.unlend(fs, subject, home, lent).await,
            Err(e) => Err(e),
        }
    }

    /// Asks every group but `home` to give back the budget of `subject`
    /// it does not use, and returns it to the home.
    pub(super) async fn reclaim_budget(
        &self,
        fs: FsId,
        subject: QuotaSubject,
        home: GroupId,
    ) -> Result<(), MetaError> {
        let groups: Vec<GroupId> = self.cluster_map().groups.into_keys().collect();
        for g in groups
            .into_iter()
            .filter(|g| *g != home && *g != CLUSTER_GROUP)
        {
            let give = WriteRequest::QuotaBudget {
                fs,
                subject,
                op: BudgetOp::Return,
            };
            let spare = expect_answer!(self.call(g, give).await?, MetaResponse::Budget(u) => u)?;
            if spare != Usage::default() {
                self.unlend(fs, subject, home, spare).await?;
            }
        }
        Ok(())
    }

    async fn unlend(
        &self,
        fs: FsId,
        subject: QuotaSubject,
        home: GroupId,
        amount: Usage,
    ) -> Result<(), MetaError> {
        let req = WriteRequest::QuotaBudget {
            fs,
            subject,
            op: BudgetOp::Unlend { amount },
        };
        self.call(home, req).await.map(|_| ())
    }
}
