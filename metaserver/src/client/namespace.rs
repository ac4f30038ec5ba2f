//! Names and attributes: lookup, getattr, setattr, readdir, create, mkdir
//! in another group, link, unlink and rmdir (in one group a single request,
//! across groups a transaction).

use super::{FsClient, expect_answer, unexpected};
use crate::MetaError;
use crate::request::{MetaResponse, ReadRequest, TxStep, WriteRequest};
use crate::types::*;

impl FsClient {
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
    pub(super) async fn lookup_entry(
        &self,
        parent: Ino,
        name: &[u8],
    ) -> Result<MetaResponse, MetaError> {
        self.call(
            parent,
            ReadRequest::Lookup {
                fs: self.info.id,
                parent,
                name: name.to_vec(),
            },
        )
        .await
    }

    pub(super) async fn dentry(
        &self,
        parent: Ino,
        name: &[u8],
    ) -> Result<Option<Dentry>, MetaError> {
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
                ReadRequest::GetAttr {
                    fs: self.info.id,
                    ino,
                },
            )
            .await?;
        let inode = expect_answer!(r, MetaResponse::Inode(i) => i)?;
        self.recent.note([inode.clone()]);
        Ok(inode)
    }

    pub async fn setattr(&self, ino: Ino, set: SetAttr) -> Result<Inode, MetaError> {
        let r = self
            .call(
                ino,
                WriteRequest::SetAttr {
                    fs: self.info.id,
                    ino,
                    set,
                    now: Timestamp::now(),
                },
            )
            .await?;
        let inode = expect_answer!(r, MetaResponse::Inode(i) => i)?;
        self.recent.note([inode.clone()]);
        Ok(inode)
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
                ReadRequest::ReadDir {
                    fs: self.info.id,
                    ino,
                    after,
                    limit,
                },
            )
            .await?;
        let mut entries: Vec<DirEntry> = expect_answer!(r, MetaResponse::Entries(e) => e)?;
        for e in entries.iter_mut().filter(|e| e.attr.is_none()) {
            e.attr = self.getattr(e.dentry.ino).await.ok();
        }
        Ok(entries)
    }

    /// Creates `parent/name` as `new` says (a file, directory, symlink or
    /// special file); a directory may be placed in another group.
    pub async fn create(
        &self,
        parent: Ino,
        name: &[u8],
        new: NewInode,
    ) -> Result<Inode, MetaError> {
        let _changing = self.entries.changing(&[(parent, name)]);
        let pg = self.group_of(parent).await?;
        if new.kind == FileType::Dir {
            let target = self.place_dir(pg).await;
            // A directory quota's tree stays in its group (decision 60).
            if target != pg && !self.in_quota_tree(parent).await? {
                let mkdir = || self.mkdir_elsewhere(target, pg, (parent, name), new.clone());
                match self.growing(target, || self.retrying(mkdir)).await {
                    // A quota set on the way since it looked.
                    Err(MetaError::QuotaBoundary(_)) => {}
                    done => return done,
                }
            }
        }
        let req = WriteRequest::Create {
            fs: self.info.id,
            parent,
            name: name.to_vec(),
            new,
            now: Timestamp::now(),
        };
        let r = self
            .growing(pg, || self.call_group(pg, req.clone()))
            .await?;
        self.count_create(pg).await;
        expect_answer!(self.note_changed(r), MetaResponse::Inode(i) => i)
    }

    /// mkdir of `parent/name` (`new`, a directory) with the new inode in
    /// group `target` and its entry in `pg`.
    pub(super) async fn mkdir_elsewhere(
        &self,
        target: GroupId,
        pg: GroupId,
        (parent, name): (Ino, &[u8]),
        new: NewInode,
    ) -> Result<Inode, MetaError> {
        validate_name(name)?;
        let dir = self.getattr(parent).await?;
        if dir.kind != FileType::Dir {
            return Err(MetaError::NotDir);
        }
        // BSD group semantics under a setgid directory, as a local mkdir has.
        let new = if dir.mode & 0o2000 != 0 {
            NewInode {
                gid: dir.gid,
                mode: new.mode | 0o2000,
                ..new
            }
        } else {
            new
        };
        let create = TxStep::CreateInode { new, parent };
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
            let req = WriteRequest::Link {
                fs: self.info.id,
                ino,
                parent,
                name: name.to_vec(),
                now: Timestamp::now(),
            };
            let r = self.call_group(pg, req).await?;
            return expect_answer!(self.note_changed(r), MetaResponse::Inode(i) => i);
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

    pub(super) async fn remove(
        &self,
        parent: Ino,
        name: &[u8],
        dir: bool,
    ) -> Result<Option<Ino>, MetaError> {
        let _changing = self.entries.changing(&[(parent, name)]);
        let fs = self.info.id;
        let now = Timestamp::now();
        let name_v = name.to_vec();
        let req = if dir {
            WriteRequest::Rmdir {
                fs,
                parent,
                name: name_v,
                now,
            }
        } else {
            WriteRequest::Unlink {
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
}
