//! The state machine under test: rows in memory with one filesystem
//! formatted over two partition groups, and how the model test drives it.

use super::*;

/// The partition groups: the root's, and another one that directories
/// made by cross-group transactions go to.
pub(super) const GROUPS: [GroupId; 2] = [1, 2];
pub(super) const CHUNK: u32 = MAX_WRITE;

/// The state machine's rows, with one filesystem formatted over `GROUPS`.
pub(super) struct Machine {
    pub(super) t: MemRows,
    pub(super) fs: FsId,
    pub(super) parts: Vec<Partition>,
    pub(super) next_slice: SliceId,
    pub(super) next_tx: TxId,
    /// The snapshots taken, each with the model as it was then.
    pub(super) snapshots: Vec<(FsId, Model)>,
}

pub(super) fn now() -> Timestamp {
    Timestamp { sec: 1, nsec: 0 }
}

/// How a cross-group transaction ended.
#[derive(Debug)]
pub(super) enum TxEnd {
    /// The client heard an answer.
    Answered(Result<Vec<Inode>, MetaError>),
    /// The client stopped; recovery then committed it or not (`created`:
    /// what the participants had made by then).
    Cut {
        committed: bool,
        created: Vec<Inode>,
    },
}

impl Machine {
    pub(super) fn new() -> Machine {
        let mut t = MemRows::default();
        let run = |t: &mut MemRows, g, req| apply(t, g, req).unwrap().unwrap();
        let register = WriteRequest::RegisterNode {
            id: 1,
            addr: "model".into(),
            groups: [&[CLUSTER_GROUP], &GROUPS[..]].concat(),
        };
        run(&mut t, CLUSTER_GROUP, register);
        let spec = FsSpec::new("m", "file:///unused");
        let create = WriteRequest::CreateFsSized {
            name: spec.name.clone(),
            uuid: spec.uuid.clone(),
            storage: spec.storage.clone(),
            s3_endpoint: None,
            block_size: 1 << 16,
            chunk_size: CHUNK,
            partitions: 2,
            partition_size: spec.partition_size,
            borrowed: Vec::new(),
            now: now(),
        };
        let MetaResponse::Fs(info) = run(&mut t, CLUSTER_GROUP, create) else {
            panic!("CreateFsSized answered no filesystem");
        };
        let list = ReadRequest::ListPartitions { fs: info.id };
        let Ok(MetaResponse::Partitions(parts)) = read_rows(&t, CLUSTER_GROUP, list).unwrap()
        else {
            panic!("no partitions");
        };
        let groups: BTreeSet<GroupId> = parts.iter().map(|p| p.group).collect();
        assert_eq!(groups, BTreeSet::from(GROUPS), "a partition in each group");
        for part in &parts {
            let init = WriteRequest::InitPartition {
                part: *part,
                chunk_size: CHUNK,
            };
            run(&mut t, part.group, init);
        }
        let root = WriteRequest::InitRoot {
            fs: info.id,
            mode: 0o755,
            uid: 0,
            gid: 0,
            now: now(),
        };
        let root_group = partition_of(&parts, ROOT_INO).unwrap().group;
        run(&mut t, root_group, root);
        run(
            &mut t,
            CLUSTER_GROUP,
            WriteRequest::MarkFsReady { name: "m".into() },
        );
        Machine {
            t,
            fs: info.id,
            parts,
            next_slice: 1,
            next_tx: 1,
            snapshots: Vec::new(),
        }
    }

    pub(super) fn group_of(&self, ino: Ino) -> GroupId {
        partition_of(&self.parts, ino)
            .expect("a partition holds it")
            .group
    }

    pub(super) fn apply_in(
        &mut self,
        g: GroupId,
        req: WriteRequest,
    ) -> Result<MetaResponse, MetaError> {
        apply(&mut self.t, g, req)
            .expect("the store never fails in memory")
            .map(|r| r.split_changed().0)
    }

    /// Applies `req` in the group of `at`.
    pub(super) fn apply(&mut self, at: Ino, req: WriteRequest) -> Result<MetaResponse, MetaError> {
        self.apply_in(self.group_of(at), req)
    }

    pub(super) fn read(&self, at: Ino, req: ReadRequest) -> Result<MetaResponse, MetaError> {
        read_rows(&self.t, self.group_of(at), req).expect("the store never fails in memory")
    }

    /// A cross-group transaction as `FsClient::transact` runs it, cut
    /// short after phase `crash` (see `Op::MkdirAway`) and then recovered
    /// as `MetaClient::resolve_transaction` does.
    pub(super) fn transact(
        &mut self,
        parts: Vec<(GroupId, Vec<TxStep>)>,
        coord: GroupId,
        coord_steps: impl FnOnce(&[Inode]) -> Vec<TxStep>,
        crash: u8,
    ) -> TxEnd {
        let (fs, tx) = (self.fs, self.next_tx);
        self.next_tx += 1;
        let participants: Vec<GroupId> = parts.iter().map(|(g, _)| *g).collect();
        let begin = WriteRequest::TxBegin {
            fs,
            tx,
            participants: participants.clone(),
            now: now(),
        };
        if let Err(e) = self.apply_in(coord, begin) {
            return TxEnd::Answered(Err(e));
        }
        if crash == 1 {
            return self.recover(tx, coord, &participants, Vec::new());
        }
        let mut created = Vec::new();
        let mut prepared = Vec::new();
        for (g, steps) in parts {
            let prepare = WriteRequest::TxPrepare {
                fs,
                tx,
                coord,
                participants: participants.clone(),
                steps,
                now: now(),
            };
            match self.apply_in(g, prepare) {
                Ok(MetaResponse::TxApplied(c)) => {
                    prepared.push(g);
                    created.extend(c.into_iter().map(|(i, _)| i));
                }
                Ok(other) => panic!("TxPrepare answered {other:?}"),
                Err(e) => {
                    self.recover(tx, coord, &prepared, Vec::new());
                    return TxEnd::Answered(Err(e));
                }
            }
        }
        if crash == 2 {
            return self.recover(tx, coord, &participants, created);
        }
        let commit = WriteRequest::TxCommit {
            fs,
            tx,
            steps: coord_steps(&created),
            now: now(),
        };
        if let Err(e) = self.apply_in(coord, commit) {
            let TxEnd::Cut {
                committed: false, ..
            } = self.recover(tx, coord, &participants, Vec::new())
            else {
                panic!("a refused commit was decided as committed");
            };
            return TxEnd::Answered(Err(e));
        }
        if crash == 3 {
            return self.recover(tx, coord, &participants, created);
        }
        for &g in &participants {
            let finish = WriteRequest::TxFinish {
                fs,
                tx,
                commit: true,
                now: now(),
            };
            self.apply_in(g, finish).unwrap();
        }
        if crash == 4 {
            return self.recover(tx, coord, &participants, created);
        }
        self.apply_in(coord, WriteRequest::TxForget { tx }).unwrap();
        TxEnd::Answered(Ok(created))
    }

    /// What a node's recovery does with a transaction a client left: asks
    /// the coordinator for the decision (which aborts an undecided one),
    /// carries it out in every participant and forgets it.
    pub(super) fn recover(
        &mut self,
        tx: TxId,
        coord: GroupId,
        participants: &[GroupId],
        created: Vec<Inode>,
    ) -> TxEnd {
        let Ok(MetaResponse::Decision(committed)) =
            self.apply_in(coord, WriteRequest::TxResolve { tx })
        else {
            panic!("TxResolve answered no decision");
        };
        for &g in participants {
            let finish = WriteRequest::TxFinish {
                fs: self.fs,
                tx,
                commit: committed,
                now: now(),
            };
            self.apply_in(g, finish).unwrap();
        }
        self.apply_in(coord, WriteRequest::TxForget { tx }).unwrap();
        TxEnd::Cut { committed, created }
    }

    pub(super) fn inodes(&self) -> BTreeMap<Ino, Inode> {
        let mut out = BTreeMap::new();
        for g in GROUPS {
            let rows = self
                .t
                .scan(&key::rows_of(g, key::INODE, self.fs), None, usize::MAX);
            for (_, v) in rows.unwrap() {
                let i: Inode = decode(&v).unwrap();
                assert_eq!(self.group_of(i.ino), g, "inode {} in group {g}", i.ino);
                out.insert(i.ino, i);
            }
        }
        out
    }

    /// Every entry: (directory, name) -> entry.
    pub(super) fn dentries(&self) -> BTreeMap<(Ino, Vec<u8>), Dentry> {
        let mut out = BTreeMap::new();
        for g in GROUPS {
            let prefix = key::rows_of(g, key::DENTRY, self.fs);
            for (k, v) in self.t.scan(&prefix, None, usize::MAX).unwrap() {
                let rest = &k[prefix.len()..];
                let dir = Ino::from_be_bytes(rest[..8].try_into().unwrap());
                assert_eq!(self.group_of(dir), g, "an entry of {dir} in group {g}");
                out.insert((dir, rest[8..].to_vec()), decode(&v).unwrap());
            }
        }
        out
    }
}
