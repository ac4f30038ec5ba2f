//! Client side of extended attributes (see `server::ops::xattr`).

use super::FsClient;
use super::unexpected;
use crate::MetaError;
use crate::request::{MetaResponse, ReadRequest, WriteRequest, XattrMode};
use crate::types::*;

impl FsClient {
    pub async fn get_xattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>, MetaError> {
        let req = ReadRequest::GetXattr {
            fs: self.info.id,
            ino,
            name: name.to_vec(),
        };
        match self.call_group(self.group_of(ino).await?, req).await? {
            MetaResponse::Xattr(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    pub async fn list_xattrs(&self, ino: Ino) -> Result<Vec<Vec<u8>>, MetaError> {
        let req = ReadRequest::ListXattrs {
            fs: self.info.id,
            ino,
        };
        match self.call_group(self.group_of(ino).await?, req).await? {
            MetaResponse::XattrNames(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// Sets an extended attribute; returns the inode (its ctime changed).
    pub async fn set_xattr(
        &self,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        mode: XattrMode,
    ) -> Result<Inode, MetaError> {
        let req = WriteRequest::SetXattr {
            fs: self.info.id,
            ino,
            name: name.to_vec(),
            value: value.to_vec(),
            mode,
            now: Timestamp::now(),
        };
        self.changed_inode(self.call_group(self.group_of(ino).await?, req).await?)
    }

    /// Removes an extended attribute; returns the inode (its ctime changed).
    pub async fn remove_xattr(&self, ino: Ino, name: &[u8]) -> Result<Inode, MetaError> {
        let req = WriteRequest::RemoveXattr {
            fs: self.info.id,
            ino,
            name: name.to_vec(),
            now: Timestamp::now(),
        };
        self.changed_inode(self.call_group(self.group_of(ino).await?, req).await?)
    }

    fn changed_inode(&self, r: MetaResponse) -> Result<Inode, MetaError> {
        match r {
            MetaResponse::Inode(i) => {
                self.note_recent(&i);
                Ok(i)
            }
            other => Err(unexpected(other)),
        }
    }
}
