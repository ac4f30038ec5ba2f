//! Write-back (`--writeback`): blocks are staged on local disk instead of
//! uploaded while the writer waits, and a commit (close, flush, fsync) only
//! records the slices in a local journal, durably, before it answers. One
//! background task then uploads each journal record's blocks and commits its
//! slices to the metaserver, in journal order, and forgets the record. A
//! client that crashed finds its journal at the next start and finishes it.
//!
//! What this trades: other clients see the data once the background commit
//! lands, not at close; this client's reads and size changes of the file wait
//! for it. Nothing fsynced is lost as long as the local disk survives.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use strata_cache::{BlockCache, Keep, Staging};
use strata_meta::{FsClient, Ino, Inode, MetaError, Slice, Timestamp};
use tokio::sync::{mpsc, watch};

use crate::error::{FsError, FsResult};
use crate::garbage::Compactor;

/// One commit waiting in the journal.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
struct Record {
    ino: Ino,
    /// (chunk index, slice) pairs, as `FsClient::write_slices` takes them.
    slices: Vec<(u32, SliceRecord)>,
    end: u64,
    /// When the last of the writes happened (records written before this
    /// field existed have none: the commit time is used).
    #[serde(default)]
    written: Option<Timestamp>,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
struct SliceRecord {
    id: u64,
    pos: u32,
    len: u32,
}

impl From<Slice> for SliceRecord {
    fn from(s: Slice) -> Self {
        SliceRecord {
            id: s.id,
            pos: s.pos,
            len: s.len,
        }
    }
}

impl From<SliceRecord> for Slice {
    fn from(s: SliceRecord) -> Self {
        Slice {
            id: s.id,
            pos: s.pos,
            len: s.len,
        }
    }
}

/// Records not committed yet, per inode: how many, the highest end, and
/// the last write.
#[derive(Default)]
struct InFlight {
    count: usize,
    end: u64,
    written: Timestamp,
}

pub(crate) struct Writeback {
    staging: Arc<Staging>,
    next_seq: AtomicU64,
    jobs: mpsc::UnboundedSender<(u64, Record)>,
    receiver: std::sync::Mutex<Option<mpsc::UnboundedReceiver<(u64, Record)>>>,
    in_flight: std::sync::Mutex<HashMap<Ino, InFlight>>,
    /// Bumped after every finished record, so waiters look again.
    progress: watch::Sender<u64>,
}

fn io_err(context: &str, e: impl std::error::Error + Send + Sync + 'static) -> FsError {
    FsError::new(libc::EIO, context).with_source(e)
}

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> FsResult<R> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io_err("write-back task", e))
}

impl Writeback {
    /// Opens the staging area and queues what a previous run left in its
    /// journal; staged blocks no record names (a crash before the commit
    /// that would have named them) are dropped.
    pub fn open(staging: Staging) -> FsResult<Writeback> {
        let staging = Arc::new(staging);
        let records = staging
            .records()
            .map_err(|e| io_err("reading the write-back journal", e))?;
        let (jobs, receiver) = mpsc::unbounded_channel();
        let wb = Writeback {
            staging: staging.clone(),
            next_seq: AtomicU64::new(records.last().map_or(1, |(seq, _)| seq + 1)),
            jobs,
            receiver: std::sync::Mutex::new(Some(receiver)),
            in_flight: Default::default(),
            progress: watch::channel(0).0,
        };
        let mut named = HashSet::new();
        for (seq, bytes) in records {
            // Intact but not a record this version can read: as damaged,
            // never skipped (its writes were acknowledged).
            let record: Record = serde_json::from_slice(&bytes).map_err(|e| {
                let path = staging.record_path(seq);
                let e = std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("write-back record {} cannot be read: {e}", path.display()),
                );
                io_err(
                    "reading the write-back journal",
                    strata_cache::damaged_record(e),
                )
            })?;
            named.extend(record.slices.iter().map(|(_, s)| s.id));
            wb.enqueue(seq, record);
        }
        if !named.is_empty() {
            tracing::info!(
                records = wb.next_seq.load(Ordering::Relaxed) - 1,
                "uploading what the last run left staged"
            );
        }
        for key in staging
            .staged_block_keys()
            .map_err(|e| io_err("listing staged blocks", e))?
        {
            let named_here = strata_cache::parse_block_key(&key)
                .is_some_and(|(_, id, _, _)| named.contains(&id));
            if !named_here {
                let _ = staging.remove_block(&key);
            }
        }
        Ok(wb)
    }

    pub fn staging(&self) -> Arc<Staging> {
        self.staging.clone()
    }

    fn enqueue(&self, seq: u64, record: Record) {
        {
            let mut in_flight = self.in_flight.lock().unwrap();
            let f = in_flight.entry(record.ino).or_default();
            f.count += 1;
            f.end = f.end.max(record.end);
            f.written = f.written.max(record.written.unwrap_or_default());
        }
        let _ = self.jobs.send((seq, record));
    }

    /// Journals a commit durably and leaves it to the background task;
    /// returns the attributes the file has once it lands.
    pub async fn commit(
        &self,
        ino: Ino,
        slices: Vec<(u32, Slice)>,
        end: u64,
        written: Timestamp,
        attr: &Inode,
    ) -> FsResult<Inode> {
        let record = Record {
            ino,
            slices: slices.into_iter().map(|(c, s)| (c, s.into())).collect(),
            end,
            written: Some(written),
        };
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let bytes = serde_json::to_vec(&record).map_err(|e| io_err("encoding a record", e))?;
        let staging = self.staging.clone();
        blocking(move || staging.put_record(seq, &bytes))
            .await?
            .map_err(|e| {
                // A full disk stays ENOSPC: the caller commits directly.
                let errno = match e.raw_os_error() {
                    Some(libc::ENOSPC) | Some(libc::EDQUOT) => libc::ENOSPC,
                    _ => libc::EIO,
                };
                FsError::new(errno, "writing the write-back journal").with_source(e)
            })?;
        self.enqueue(seq, record);
        let mut attr = attr.clone();
        attr.size = attr.size.max(end);
        attr.mtime = attr.mtime.max(written);
        attr.ctime = attr.ctime.max(written);
        Ok(attr)
    }

    /// Commits journaled and not yet recorded by the metaserver.
    pub fn queued(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap()
            .values()
            .map(|f| f.count)
            .sum()
    }

    /// The highest end and the last write of `ino`'s records not
    /// committed yet.
    pub fn pending(&self, ino: Ino) -> Option<(u64, Timestamp)> {
        self.in_flight
            .lock()
            .unwrap()
            .get(&ino)
            .map(|f| (f.end, f.written))
    }

    /// Waits until every journaled commit of `ino` has reached the
    /// metaserver; returns whether there was any to wait for.
    pub async fn wait_inode(&self, ino: Ino) -> FsResult<bool> {
        let mut progress = self.progress.subscribe();
        let mut waited = false;
        loop {
            if !self.in_flight.lock().unwrap().contains_key(&ino) {
                return Ok(waited);
            }
            waited = true;
            progress
                .changed()
                .await
                .map_err(|_| FsError::new(libc::EIO, "the write-back task stopped"))?;
        }
    }

    /// Waits until the whole journal has reached the metaserver.
    pub async fn wait_all(&self) -> FsResult<()> {
        let mut progress = self.progress.subscribe();
        loop {
            if self.in_flight.lock().unwrap().is_empty() {
                return Ok(());
            }
            progress
                .changed()
                .await
                .map_err(|_| FsError::new(libc::EIO, "the write-back task stopped"))?;
        }
    }

    /// Starts the task that uploads and commits the journal, in order;
    /// chunks the commits crowd go to `compactor`.
    pub fn start(
        self: &Arc<Self>,
        meta: Arc<FsClient>,
        cache: Arc<BlockCache>,
        compactor: Arc<Compactor>,
    ) {
        let Some(mut rx) = self.receiver.lock().unwrap().take() else {
            return;
        };
        let wb = self.clone();
        tokio::spawn(async move {
            while let Some((seq, record)) = rx.recv().await {
                wb.finish(seq, &record, &meta, &cache, &compactor).await;
                {
                    let mut in_flight = wb.in_flight.lock().unwrap();
                    if let Some(f) = in_flight.get_mut(&record.ino) {
                        f.count -= 1;
                        if f.count == 0 {
                            in_flight.remove(&record.ino);
                        }
                    }
                }
                wb.progress.send_modify(|p| *p += 1);
            }
        });
    }

    /// Uploads a record's blocks and commits its slices, retrying until it
    /// works (the data was acknowledged) unless the file is gone.
    async fn finish(
        &self,
        seq: u64,
        record: &Record,
        meta: &FsClient,
        cache: &BlockCache,
        compactor: &Compactor,
    ) {
        let bs = meta.info.block_size;
        let mut keys = Vec::new();
        for (_, s) in &record.slices {
            for i in 0..s.len.div_ceil(bs) {
                keys.push(strata_cache::block_key(
                    &meta.info.uuid,
                    s.id,
                    i,
                    (s.len - i * bs).min(bs),
                ));
            }
        }
        let mut delay = Duration::from_millis(100);
        loop {
            match self.upload(&keys, cache, bs).await {
                Ok(()) => break,
                Err(Upload::Lost(e)) => {
                    // A staged block is missing or damaged: that data is
                    // gone, and waiting cannot bring it back.
                    tracing::error!(seq, ino = record.ino, error = %e, "write-back record dropped");
                    self.forget(seq, keys).await;
                    return;
                }
                Err(Upload::Failed(e)) => {
                    tracing::warn!(seq, error = %e, "write-back upload failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
        let slices: Vec<(u32, Slice)> = record
            .slices
            .iter()
            .map(|(c, s)| (*c, Slice::from(*s)))
            .collect();
        loop {
            match meta
                .write_slices(
                    record.ino,
                    slices.clone(),
                    record.end,
                    record.written.unwrap_or_else(Timestamp::now),
                )
                .await
            {
                Ok(written) => {
                    compactor.committed(record.ino, &slices, &written.crowded);
                    break;
                }
                Err(e @ (MetaError::NotFound | MetaError::Invalid(_))) => {
                    // The file is gone (or is no file any more): its data has
                    // nowhere to go; the objects are left to `strata gc`.
                    tracing::warn!(seq, ino = record.ino, error = %e, "write-back commit dropped");
                    break;
                }
                Err(e @ MetaError::QuotaExceeded(_)) => {
                    // Acknowledged already (it is on the local disk): kept
                    // and tried again until the quota has room.
                    tracing::error!(seq, ino = record.ino, error = %e,
                        "write-back commit waits for quota room; free space or raise the quota");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    tracing::warn!(seq, error = %e, "write-back commit failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
        self.forget(seq, keys).await;
    }

    /// Removes a finished record and its staged blocks.
    async fn forget(&self, seq: u64, keys: Vec<String>) {
        let staging = self.staging.clone();
        let _ = blocking(move || {
            // The record goes first: a crash in between leaves staged blocks
            // no record names, which the next start drops.
            if let Err(e) = staging.remove_record(seq) {
                tracing::warn!(seq, error = %e, "removing a write-back record failed");
            }
            for key in keys {
                let _ = staging.remove_block(&key);
            }
        })
        .await;
    }

    /// Uploads the staged blocks among `keys` now and drops their staged
    /// copies (a commit that could not be journaled goes to the
    /// metaserver directly, and its blocks must be in the store first).
    pub async fn upload_now(&self, keys: &[String], cache: &BlockCache, bs: u32) -> FsResult<()> {
        match self.upload(keys, cache, bs).await {
            Ok(()) => {}
            Err(Upload::Failed(e) | Upload::Lost(e)) => return Err(e),
        }
        for key in keys {
            let (staging, k) = (self.staging.clone(), key.clone());
            let _ = blocking(move || staging.remove_block(&k)).await;
        }
        Ok(())
    }

    async fn upload(&self, keys: &[String], cache: &BlockCache, bs: u32) -> Result<(), Upload> {
        let uploads = keys.iter().map(|key| async move {
            let staging = self.staging.clone();
            let k = key.clone();
            let block = match blocking(move || staging.get_block(&k))
                .await
                .map_err(Upload::Failed)?
            {
                Ok(block) => block,
                // Not staged: uploaded when written, as the disk was full
                // (`Filesystem::spawn_store`); the object store has it.
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && cache.store().get_range(key, 0, 1).await.is_ok() =>
                {
                    return Ok(());
                }
                Err(e) => {
                    return Err(Upload::Lost(io_err(
                        &format!("reading staged block {key}"),
                        e,
                    )));
                }
            };
            let keep = if block.len() < bs as usize {
                Keep::MemoryAndDisk
            } else {
                Keep::Memory
            };
            cache
                .put_block(key, block, keep)
                .await
                .map_err(|e| Upload::Failed(io_err(&format!("uploading {key}"), e)))
        });
        for r in futures::future::join_all(uploads).await {
            r?;
        }
        Ok(())
    }
}

/// Why a record's upload did not complete.
enum Upload {
    /// Try again later.
    Failed(FsError),
    /// A staged block cannot be read: the record cannot complete.
    Lost(FsError),
}
