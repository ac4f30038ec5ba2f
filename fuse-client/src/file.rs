//! What one client holds for an open inode: attributes as of open or the
//! last commit, written bytes not committed yet, cached chunk maps, and how
//! the inode is being read (for prefetch).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use strata_cache::StoreError;
use strata_meta::{Inode, Slice, SliceId, Timestamp};
use tokio::task::JoinHandle;

use crate::error::FsError;

/// Where a block of a pending slice is: on its way to the store, stored, or
/// failed (its bytes kept to try again at the next commit).
pub(crate) enum BlockState {
    Storing(JoinHandle<Result<(), (StoreError, Bytes)>>),
    Stored,
    Failed(Bytes),
}

/// Bytes written into one chunk at consecutive offsets, not committed yet.
pub(crate) struct PendingSlice {
    pub chunk: u32,
    pub pos: u32,
    pub id: SliceId,
    /// Bytes written into the slice so far.
    pub len: u32,
    /// The bytes after the last full block.
    pub tail: BytesMut,
    /// One per full block, in order; the tail becomes the last one at commit.
    pub blocks: Vec<BlockState>,
    /// A commit was attempted: later writes start a new slice, so a block
    /// already stored under its final length never changes.
    pub sealed: bool,
}

impl PendingSlice {
    pub fn slice(&self) -> Slice {
        Slice {
            id: self.id,
            pos: self.pos,
            len: self.len,
        }
    }
}

/// How an inode is being read: where the last read ended and how far ahead
/// prefetching goes while reads keep following each other.
#[derive(Default)]
pub(crate) struct ReadState {
    pub next: u64,
    /// Blocks to keep fetched ahead of the reader; 0 while reads look random.
    pub window: u32,
    /// Prefetch was started up to this file offset.
    pub prefetched_to: u64,
    pub started: PrefetchedKeys,
}

/// The blocks prefetch was last started for, so consecutive reads that end
/// in one block do not start it again.
#[derive(Default)]
pub(crate) struct PrefetchedKeys {
    recent: std::collections::VecDeque<String>,
}

impl PrefetchedKeys {
    const KEEP: usize = 256;

    /// Records `key`; false if it was recorded already.
    pub fn insert(&mut self, key: &str) -> bool {
        if self.recent.iter().any(|k| k == key) {
            return false;
        }
        if self.recent.len() == Self::KEEP {
            self.recent.pop_front();
        }
        self.recent.push_back(key.to_string());
        true
    }
}

/// Writes of an open file that a commit dropped because the metaserver
/// refused them for good (a full quota), counted, with the last refusal.
///
/// The commit that meets the refusal may not be the writer's own: any
/// close of a descriptor of the file flushes it, and a process that forks
/// and execs (a shell, a test harness) closes inherited descriptors as it
/// execs. That flush's error goes to the closing process; the writer must
/// still hear of it. So, as Linux reports writeback errors (errseq), each
/// handle compares this count with the one it saw when opened: its fsync
/// reports a drop once, and every close of a handle that writes reports it.
#[derive(Default)]
pub(crate) struct DroppedWrites {
    count: AtomicU64,
    last: std::sync::Mutex<Option<FsError>>,
}

impl DroppedWrites {
    /// Records that pending writes were dropped, refused with `e`.
    pub fn record(&self, e: &FsError) {
        *self.last.lock().unwrap() = Some(e.clone());
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    /// How many drops were recorded so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// The last refusal, if a drop was recorded after the `seen`th.
    pub fn since(&self, seen: u64) -> Option<FsError> {
        if self.count() > seen {
            self.last.lock().unwrap().clone()
        } else {
            None
        }
    }
}

/// State of one inode while at least one handle has it open here (see
/// `HandleTable`).
pub(crate) struct OpenFile {
    pub data: tokio::sync::Mutex<FileData>,
    /// When the last write arrived (the compactor waits for a pause).
    pub last_write: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Shared with `data`, readable without waiting for its lock.
    pub dropped: Arc<DroppedWrites>,
}

impl OpenFile {
    /// Starts from the attributes `attr` just read.
    pub fn new(attr: Inode) -> Self {
        let data = FileData::new(attr);
        OpenFile {
            dropped: data.dropped.clone(),
            data: tokio::sync::Mutex::new(data),
            last_write: std::sync::Mutex::new(None),
        }
    }
}

/// Per-inode state shared by the open handles of one client.
pub(crate) struct FileData {
    /// Attributes as of open or the last commit.
    pub attr: Inode,
    pub pending: Vec<PendingSlice>,
    /// Bytes written since the last commit (all pending slices).
    pub pending_len: u64,
    /// Highest byte offset written and not yet committed.
    pub pending_end: u64,
    /// When the last write not yet committed happened: the file's mtime
    /// and ctime as this client shows it, and as the commit records it.
    pub pending_mtime: Timestamp,
    /// Whether a write not yet committed bypassed the kernel's page cache
    /// (came through a direct-io handle), so its cached pages miss it.
    pub pending_bypassed: bool,
    pub chunks: HashMap<u32, Arc<Vec<Slice>>>,
    pub read: ReadState,
    /// Writes dropped after a refusal, for every handle to report.
    pub dropped: Arc<DroppedWrites>,
}

impl FileData {
    pub fn new(attr: Inode) -> Self {
        FileData {
            attr,
            pending: Vec::new(),
            pending_len: 0,
            pending_end: 0,
            pending_mtime: Timestamp::default(),
            pending_bypassed: false,
            chunks: HashMap::new(),
            read: ReadState::default(),
            dropped: Arc::default(),
        }
    }

    /// Shows buffered writes in `inode`: the size covers them, and the
    /// times are those of the last one.
    pub fn overlay_attr(&self, inode: &mut Inode) {
        if self.pending.is_empty() {
            return;
        }
        inode.size = inode.size.max(self.pending_end);
        inode.mtime = inode.mtime.max(self.pending_mtime);
        inode.ctime = inode.ctime.max(self.pending_mtime);
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Forgets cached chunk maps after the file changed under them.
    pub fn invalidate(&mut self, attr: &Inode) {
        self.attr = attr.clone();
        self.chunks.clear();
    }
}
