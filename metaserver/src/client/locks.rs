//! Client side of file locks (see `server::ops::locks`).

use super::FsClient;
use super::unexpected;
use crate::MetaError;
use crate::request::{MetaResponse, ReadRequest, WriteRequest};
use crate::types::*;

impl FsClient {
    /// Takes or drops `lock` on `ino`; WouldBlock if another owner holds a
    /// conflicting one.
    pub async fn set_lock(&self, ino: Ino, lock: FileLock) -> Result<(), MetaError> {
        let req = WriteRequest::SetLock {
            fs: self.info.id,
            ino,
            lock,
            now: Timestamp::now(),
        };
        self.call_group(self.group_of(ino).await?, req).await?;
        Ok(())
    }

    /// The lock of another owner that `lock` would conflict with, if any.
    pub async fn get_lock(&self, ino: Ino, lock: FileLock) -> Result<Option<FileLock>, MetaError> {
        let req = ReadRequest::GetLock {
            fs: self.info.id,
            ino,
            lock,
            now: Timestamp::now(),
        };
        match self.call_group(self.group_of(ino).await?, req).await? {
            MetaResponse::Lock(l) => Ok(l),
            other => Err(unexpected(other)),
        }
    }

    /// Drops this client's locks on `ino` (those of `owner` only, if given).
    pub async fn release_locks(&self, ino: Ino, owner: Option<u64>) -> Result<(), MetaError> {
        let req = WriteRequest::ReleaseLocks {
            fs: self.info.id,
            ino,
            client: self.meta().client_id(),
            owner,
        };
        self.call_group(self.group_of(ino).await?, req).await?;
        Ok(())
    }

    /// Extends the leases of this client's locks on `inos` to `until`.
    pub async fn renew_locks(&self, inos: &[Ino], until: Timestamp) -> Result<(), MetaError> {
        for (g, inos) in self.by_group(inos).await? {
            let req = WriteRequest::RenewLocks {
                fs: self.info.id,
                client: self.meta().client_id(),
                inos,
                until,
            };
            self.call_group(g, req).await?;
        }
        Ok(())
    }
}
