//! Rename: one request when both names live in one group, a transaction
//! across groups otherwise (RENAME_NOREPLACE and RENAME_EXCHANGE included).

use super::txn::split_steps;
use super::{FsClient, expect_answer};
use crate::MetaError;
use crate::request::{MetaResponse, RenameMode, TxStep, WriteRequest};
use crate::types::*;

impl FsClient {
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
                RenameMode::Replace => WriteRequest::Rename {
                    fs,
                    parent,
                    name: name_v,
                    new_parent,
                    new_name: new_name_v,
                    now,
                },
                mode => WriteRequest::RenameWith {
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
                    return expect_answer!(self.note_changed(r), MetaResponse::Renamed { replaced } => replaced);
                }
                Err(MetaError::CrossGroup(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.retrying(|| self.rename_across(parent, name, new_parent, new_name, mode))
            .await
    }

    /// A rename whose entries or inodes live in more than one group.
    pub(super) async fn rename_across(
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
        if src_dir && parent != new_parent {
            // A directory may not move below itself. Checked by walking up
            // from the target; a concurrent rename elsewhere in the tree by
            // another client is not excluded (see docs/decisions.md).
            let mut cur = new_parent;
            while cur != self.root {
                if cur == src.ino {
                    return Err(MetaError::Invalid(
                        "cannot move a directory into itself".into(),
                    ));
                }
                cur = self.getattr(cur).await?.parent;
            }
        }
        // Kinds after loops, in Linux's order (as the one-group rename).
        if let Some(d) = dst {
            match (src_dir, d.kind == FileType::Dir) {
                (true, false) => return Err(MetaError::NotDir),
                (false, true) => return Err(MetaError::IsDir),
                _ => {}
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
    pub(super) async fn within(&self, ancestor: Ino, dir: Ino) -> Result<bool, MetaError> {
        let mut cur = dir;
        while cur != self.root {
            if cur == ancestor {
                return Ok(true);
            }
            cur = self.getattr(cur).await?.parent;
        }
        Ok(ancestor == self.root)
    }

    /// RENAME_EXCHANGE across groups: each name takes the other's inode.
    pub(super) async fn exchange_across(
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
}
