//! Who may send what: every request is checked against what its
//! connection's peer may do before it reaches a group. The client's word is
//! never taken: a peer's rights come from how it connected (the node's own
//! user on its Unix socket, plain TCP on a node that allows it) or from the
//! certificate the cluster's CA signed for it.
//!
//! Rights, widest first: a node (Raft, membership, everything below); an
//! administrator (format, nodes, snapshots, every filesystem); a client of
//! one filesystem, read-write or read-only, whole or one subtree of it
//! (`subtree`).

use crate::MetaError;
use crate::request::{BudgetOp, MetaRequest, ReadRequest, WriteRequest};
use crate::transport::Peer;
use crate::types::*;
use crate::wire::{Identity, Request};

use super::subtree::Subtree;
use super::{MetaNode, state_machine};

/// How often a connection's token is looked up again: a revoked or expired
/// token stops working within this long.
const TOKEN_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// What a peer without a certificate is told until it presents a token.
const NO_CREDENTIALS: &str = "no client certificate and no token: give --tls-cert and \
    --tls-key, or --token (from `strata token create`)";

/// What one connection may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Rights {
    /// Nothing yet: a TLS peer without a certificate, until it presents a
    /// token.
    Nothing,
    Node,
    Admin,
    /// One filesystem's tree, or the `subtree` of it; `id` once its name
    /// was looked up; `token` if a token gave it.
    Fs {
        name: String,
        id: Option<FsId>,
        read_only: bool,
        subtree: Option<Subtree>,
        token: Option<TokenUse>,
    },
}

/// The token a connection's rights came from, and when it was last found
/// valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TokenUse {
    id: String,
    checked: tokio::time::Instant,
}

impl Rights {
    /// The id of the token these rights came from, for logs (never its
    /// secret).
    pub(super) fn token_id(&self) -> Option<&str> {
        match self {
            Rights::Fs { token: Some(t), .. } => Some(&t.id),
            _ => None,
        }
    }

    /// The rights of a peer: on the Unix socket (this node's user) and on
    /// plain TCP (a node allows that only on loopback or with --insecure)
    /// everything, as before there were rights; over TLS a node certificate
    /// everything, a client certificate its grant.
    pub(super) fn of(who: &Peer) -> Rights {
        match who {
            Peer::Owner | Peer::Anyone => Rights::Node,
            Peer::Unauthenticated => Rights::Nothing,
            Peer::Certified { name, .. } if is_node_identity(name) => Rights::Node,
            Peer::Certified { grant, .. } => match grant {
                Grant::Admin => Rights::Admin,
                Grant::Fs {
                    fs,
                    read_only,
                    subdir,
                } => Rights::Fs {
                    name: fs.clone(),
                    id: None,
                    read_only: *read_only,
                    subtree: subdir.clone().map(Subtree::new),
                    token: None,
                },
            },
        }
    }
}

/// Whether a certificate's common name is a node's (`node-ID`).
pub(super) fn is_node_identity(name: &str) -> bool {
    name.strip_prefix("node-")
        .is_some_and(|id| id.parse::<NodeId>().is_ok())
}

/// What a request needs.
#[derive(Debug, PartialEq, Eq)]
enum Need<'a> {
    /// Raft and membership between nodes.
    Node,
    /// The cluster's administration.
    Admin,
    /// Any peer that got in (the cluster map, a node's status).
    Anyone,
    /// Filesystem `fs`'s tree; `write` if it changes it.
    Fs { fs: FsId, write: bool },
    /// Filesystem `name` (looked up by name), to read.
    FsNamed(&'a str),
    /// A cross-group transaction by its id alone (resolve, forget): any
    /// peer that may change some filesystem.
    Writer,
}

fn need(req: &Request) -> Need<'_> {
    match req {
        Request::Meta { req, .. } => match req {
            MetaRequest::Read(r) => read_need(r),
            MetaRequest::Write(w) => write_need(w),
        },
        Request::Append { .. }
        | Request::Vote { .. }
        | Request::Snapshot { .. }
        | Request::TransferLeader { .. }
        | Request::Join { .. }
        | Request::Members { .. } => Need::Node,
        Request::InitCluster { .. }
        | Request::AddNode { .. }
        | Request::RemoveNode { .. }
        | Request::Digest { .. } => Need::Admin,
        Request::Status | Request::Authenticate { .. } | Request::Identity => Need::Anyone,
    }
}

fn read_need(r: &ReadRequest) -> Need<'_> {
    use ReadRequest as R;
    let fs = |fs: &FsId| Need::Fs {
        fs: *fs,
        write: false,
    };
    match r {
        R::GetClusterMap => Need::Anyone,
        R::GetFs { name } => Need::FsNamed(name),
        R::ListSnapshots { source } => Need::FsNamed(source),
        R::ListFs | R::ListIntents | R::ListTokens => Need::Admin,
        // Tokens are checked by the nodes themselves.
        R::GetToken { .. } => Need::Node,
        R::ListPartitions { fs: f }
        | R::Lookup { fs: f, .. }
        | R::GetAttr { fs: f, .. }
        | R::ReadDir { fs: f, .. }
        | R::ReadChunk { fs: f, .. }
        | R::GetAttrAndChunk { fs: f, .. }
        | R::Usage { fs: f }
        | R::LiveUsage { fs: f }
        | R::ListInodes { fs: f, .. }
        | R::GarbageWork { fs: f, .. }
        | R::ListTrash { fs: f, .. }
        | R::ListChunks { fs: f, .. }
        | R::GetXattr { fs: f, .. }
        | R::ListXattrs { fs: f, .. }
        | R::GetLock { fs: f, .. }
        | R::DumpRows { fs: f, .. }
        | R::ListQuotas { fs: f, .. }
        | R::QuotaBook { fs: f }
        | R::CountOwned { fs: f, .. }
        | R::GetTrashDays { fs: f } => fs(f),
    }
}

fn write_need(w: &WriteRequest) -> Need<'_> {
    use WriteRequest as W;
    let change = |fs: &FsId| Need::Fs {
        fs: *fs,
        write: true,
    };
    // Locks and holds keep a reader's open files working; they change no
    // file, so a read-only client may take them.
    let keep = |fs: &FsId| Need::Fs {
        fs: *fs,
        write: false,
    };
    match w {
        W::RegisterNode { .. }
        | W::UnregisterNode { .. }
        | W::CreateFs { .. }
        | W::CreateFsSized { .. }
        | W::MarkFsReady { .. }
        | W::SetBorrowed { .. }
        | W::RaiseSliceFloor { .. }
        | W::InitRoot { .. }
        | W::SetTrashDays { .. }
        | W::CreateSnapshot { .. }
        | W::SnapshotReady { .. }
        | W::DeleteSnapshot { .. }
        | W::SetFreeze { .. }
        | W::CopyFs { .. }
        | W::CopyInodes { .. }
        | W::DropFs { .. }
        | W::LoadRows { .. }
        | W::SealSnapshot { .. }
        | W::PutToken { .. }
        | W::RevokeToken { .. }
        | W::SetQuota { .. }
        | W::DeleteQuota { .. }
        | W::SetQuotaUsage { .. }
        | W::SetOwnerQuota { .. }
        | W::DeleteOwnerQuota { .. } => Need::Admin,
        // Setting a share or the home's counts is part of setting a quota
        // or repairing one; lending and giving back is part of any write
        // (decision 60).
        W::QuotaBudget { fs, op, .. } => match op {
            BudgetOp::SetShare { .. } | BudgetOp::SetHome { .. } => Need::Admin,
            BudgetOp::Lend { .. }
            | BudgetOp::Add { .. }
            | BudgetOp::Return
            | BudgetOp::Unlend { .. }
            | BudgetOp::DropShare => change(fs),
        },
        W::InitPartition { part, .. } => change(&part.fs),
        W::AddPartition { fs, .. }
        | W::AllocSliceIds { fs, .. }
        | W::SetAttr { fs, .. }
        | W::Create { fs, .. }
        | W::ReserveInos { fs, .. }
        | W::CreateFile { fs, .. }
        | W::Link { fs, .. }
        | W::Unlink { fs, .. }
        | W::Rmdir { fs, .. }
        | W::Rename { fs, .. }
        | W::RenameWith { fs, .. }
        | W::WriteSlices { fs, .. }
        | W::PunchHole { fs, .. }
        | W::ReserveAppend { fs, .. }
        | W::TxBegin { fs, .. }
        | W::TxPrepare { fs, .. }
        | W::TxCommit { fs, .. }
        | W::TxFinish { fs, .. }
        | W::PurgeTrash { fs, .. }
        | W::AckDeletions { fs, .. }
        | W::CompactChunk { fs, .. }
        | W::RestoreTrash { fs, .. }
        | W::SetXattr { fs, .. }
        | W::RemoveXattr { fs, .. } => change(fs),
        W::HoldInodes { fs, .. }
        | W::SetLock { fs, .. }
        | W::ReleaseLocks { fs, .. }
        | W::RenewLocks { fs, .. } => keep(fs),
        W::TxResolve { .. } | W::TxForget { .. } => Need::Writer,
    }
}

impl MetaNode {
    /// Whether a connection with `rights` may send `req`; the refusal to
    /// answer with if not: `ReadOnly` (EROFS) for a change by a read-only
    /// client, `Denied` (EACCES) for anything else out of reach. A client
    /// of one filesystem has its name looked up once.
    pub(super) async fn check(&self, rights: &mut Rights, req: &Request) -> Result<(), MetaError> {
        let need = need(req);
        if let Rights::Fs {
            token: Some(used), ..
        } = rights
            && used.checked.elapsed() >= TOKEN_RECHECK
        {
            match self.find_token(&used.id).await {
                Ok(Some(t)) if !t.expired(Timestamp::now()) => {
                    used.checked = tokio::time::Instant::now()
                }
                _ => {
                    *rights = Rights::Nothing;
                    return Err(MetaError::Denied(
                        "this connection's token was revoked or expired".into(),
                    ));
                }
            }
        }
        let (name, id, read_only, subtree) = match rights {
            Rights::Nothing => return Err(MetaError::Denied(NO_CREDENTIALS.into())),
            Rights::Node => return Ok(()),
            Rights::Admin if need == Need::Node => {
                return Err(MetaError::Denied(
                    "only node certificates take part in Raft and membership".into(),
                ));
            }
            Rights::Admin => return Ok(()),
            Rights::Fs {
                name,
                id,
                read_only,
                subtree,
                ..
            } => (name, id, *read_only, subtree),
        };
        let denied = |what: &str| {
            Err(MetaError::Denied(format!(
                "this client may use filesystem {name:?} only, not {what}"
            )))
        };
        match need {
            Need::Anyone => Ok(()),
            Need::Node | Need::Admin => denied("the cluster's administration"),
            Need::FsNamed(n) if n == name.as_str() => Ok(()),
            Need::FsNamed(n) => denied(&format!("filesystem {n:?}")),
            Need::Writer if read_only => Err(read_only_refusal(name)),
            Need::Writer => Ok(()),
            Need::Fs { fs, write } => {
                let mine = self.fs_id_once(name, id).await?;
                if fs != mine {
                    denied(&format!("filesystem number {fs}"))
                } else if write && read_only {
                    Err(read_only_refusal(name))
                } else if let Some(sub) = subtree {
                    self.check_subtree(mine, sub, req).await
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The rights token `text` gives, and its grant; refused with why.
    pub(super) async fn authenticate(&self, text: &str) -> Result<(Rights, Grant), MetaError> {
        let (id, secret) = Token::split(text).map_err(MetaError::Denied)?;
        let token = self
            .find_token(id)
            .await?
            .filter(|t| t.matches(secret))
            .ok_or_else(|| MetaError::Denied("unknown or revoked token".into()))?;
        if token.expired(Timestamp::now()) {
            return Err(MetaError::Denied(format!("token {id} has expired")));
        }
        let Grant::Fs {
            fs,
            read_only,
            subdir,
        } = token.grant.clone()
        else {
            return Err(MetaError::Denied("a token grants one filesystem".into()));
        };
        let rights = Rights::Fs {
            name: fs,
            id: None,
            read_only,
            subtree: subdir.map(Subtree::new),
            token: Some(TokenUse {
                id: token.id.clone(),
                checked: tokio::time::Instant::now(),
            }),
        };
        Ok((rights, token.grant))
    }

    /// What a connection with `rights` may do, for `Request::Identity`:
    /// its grant (None for a node or the node's own user) and the inode
    /// its tree starts at (a subtree's root, looked up now if need be).
    pub(super) async fn identity(&self, rights: &mut Rights) -> Result<Identity, MetaError> {
        match rights {
            Rights::Nothing => Err(MetaError::Denied(NO_CREDENTIALS.into())),
            Rights::Node => Ok(Identity {
                grant: None,
                root: ROOT_INO,
            }),
            Rights::Admin => Ok(Identity {
                grant: Some(Grant::Admin),
                root: ROOT_INO,
            }),
            Rights::Fs {
                name,
                id,
                read_only,
                subtree,
                ..
            } => {
                let grant = Grant::Fs {
                    fs: name.clone(),
                    read_only: *read_only,
                    subdir: subtree.as_ref().map(|s| s.path.clone()),
                };
                let root = match subtree {
                    Some(sub) => {
                        let fs = self.fs_id_once(name, id).await?;
                        self.subtree_root(fs, sub).await?
                    }
                    None => ROOT_INO,
                };
                Ok(Identity {
                    grant: Some(grant),
                    root,
                })
            }
        }
    }

    /// The number of filesystem `name`, kept in `id` once looked up.
    async fn fs_id_once(&self, name: &str, id: &mut Option<FsId>) -> Result<FsId, MetaError> {
        if let Some(i) = id {
            return Ok(*i);
        }
        let i = self.fs_id(name).await?;
        *id = Some(i);
        Ok(i)
    }

    /// Token `id` as group 0 holds it: from this node's copy, else (not
    /// found there: not hosted here, or made a moment ago) from group 0's
    /// leader.
    async fn find_token(&self, id: &str) -> Result<Option<Token>, MetaError> {
        let get = ReadRequest::GetToken { id: id.into() };
        if self.raft(CLUSTER_GROUP).is_some()
            && let Ok(Ok(crate::MetaResponse::Tokens(mut found))) =
                state_machine::read(&self.db, CLUSTER_GROUP, get.clone())
            && let Some(t) = found.pop()
        {
            return Ok(Some(t));
        }
        match self.on_leader_meta(CLUSTER_GROUP, get).await? {
            crate::MetaResponse::Tokens(mut found) => Ok(found.pop()),
            other => Err(MetaError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// The number of filesystem `name`: from this node's copy of group 0
    /// (numbers never change), else from group 0's leader.
    async fn fs_id(&self, name: &str) -> Result<FsId, MetaError> {
        if let Some(id) = self.fs_ids.lock().unwrap().get(name) {
            return Ok(*id);
        }
        let get = ReadRequest::GetFs { name: name.into() };
        let local = state_machine::read(&self.db, CLUSTER_GROUP, get.clone());
        let info = match local {
            Ok(Ok(crate::MetaResponse::Fs(info))) => info,
            _ => match self.on_leader_meta(CLUSTER_GROUP, get).await? {
                crate::MetaResponse::Fs(info) => info,
                other => {
                    return Err(MetaError::Protocol(format!("unexpected answer {other:?}")));
                }
            },
        };
        self.fs_ids
            .lock()
            .unwrap()
            .insert(name.to_string(), info.id);
        Ok(info.id)
    }
}

fn read_only_refusal(fs: &str) -> MetaError {
    MetaError::ReadOnly(format!("this client may only read filesystem {fs:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_request_has_a_need() {
        let create = Request::Meta {
            group: 1,
            req: WriteRequest::Unlink {
                fs: 3,
                parent: 1,
                name: b"a".to_vec(),
                now: Timestamp::default(),
            }
            .into(),
            origin: None,
        };
        assert_eq!(need(&create), Need::Fs { fs: 3, write: true });
        let lock = Request::Meta {
            group: 1,
            req: WriteRequest::ReleaseLocks {
                fs: 3,
                ino: 5,
                client: 1,
                owner: None,
            }
            .into(),
            origin: None,
        };
        assert_eq!(
            need(&lock),
            Need::Fs {
                fs: 3,
                write: false
            }
        );
        let map = Request::Meta {
            group: 0,
            req: ReadRequest::GetClusterMap.into(),
            origin: None,
        };
        assert_eq!(need(&map), Need::Anyone);
        assert_eq!(need(&Request::Join { groups: vec![1] }), Need::Node);
        assert_eq!(need(&Request::RemoveNode { id: 2 }), Need::Admin);
    }

    #[test]
    fn rights_follow_the_peer() {
        let client = |grant| Peer::Certified {
            name: "client-a".into(),
            grant,
        };
        assert_eq!(Rights::of(&Peer::Owner), Rights::Node);
        assert_eq!(Rights::of(&Peer::Anyone), Rights::Node);
        assert_eq!(
            Rights::of(&Peer::Certified {
                name: "node-2".into(),
                grant: Grant::Admin
            }),
            Rights::Node
        );
        assert_eq!(Rights::of(&client(Grant::Admin)), Rights::Admin);
        assert_eq!(
            Rights::of(&client(Grant::Fs {
                fs: "d".into(),
                read_only: true,
                subdir: Some("/a".into()),
            })),
            Rights::Fs {
                name: "d".into(),
                id: None,
                read_only: true,
                subtree: Some(Subtree::new("/a".into())),
                token: None,
            }
        );
        assert!(!is_node_identity("node-x"));
        assert!(!is_node_identity("client-node-1"));
    }
}
