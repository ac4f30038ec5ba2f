//! Requests a client sends to one Raft group, and their answers.
//!
//! A request is a `ReadRequest` or a `WriteRequest`, told apart by type:
//! writes go through the group's Raft log and are applied by the state
//! machine; reads are served from the state machine after a
//! linearizability check. The log's payload type, `LogRequest`, holds only
//! a `WriteRequest`, so a read cannot be proposed to the log by mistake,
//! and the server's `read_rows` and `apply` match each kind exhaustively.

mod log_tags;
mod read;
mod response;
mod write;

use serde::{Deserialize, Serialize};

pub use read::ReadRequest;
pub use response::{FileCreated, MetaResponse, QuotaBook};
pub use write::{BudgetOp, IntentInfo, RenameMode, TxId, TxStep, WriteRequest, XattrMode};

/// What a client asks of a group: a read or a write.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum MetaRequest {
    Read(ReadRequest),
    Write(WriteRequest),
}

impl MetaRequest {
    /// The request's name (`Lookup`, `Create`, ...): a metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            MetaRequest::Read(r) => r.into(),
            MetaRequest::Write(w) => w.into(),
        }
    }
}

impl From<ReadRequest> for MetaRequest {
    fn from(r: ReadRequest) -> Self {
        MetaRequest::Read(r)
    }
}

impl From<WriteRequest> for MetaRequest {
    fn from(w: WriteRequest) -> Self {
        MetaRequest::Write(w)
    }
}

pub type MetaResult<T = MetaResponse> = Result<T, crate::MetaError>;

/// Who sent a write, so a retried write is answered from the first attempt's
/// result instead of being applied twice.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub client: u64,
    pub seq: u64,
    /// Every write of this client below this sequence number has been answered
    /// and will not be retried, so its remembered result can be dropped.
    pub done_below: u64,
}

/// A log entry's payload: the request and, for client writes, its origin.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LogRequest {
    #[serde(with = "log_tags")]
    pub req: WriteRequest,
    pub origin: Option<Origin>,
    /// The leader's clock when it proposed the entry: decisions that depend
    /// on time (a snapshot's freeze running out) read it from here, so
    /// every replica decides the same.
    pub at: crate::types::Timestamp,
}

/// openraft logs entries with their payload's Display: the request's debug
/// form is what an operator reading those logs needs.
impl std::fmt::Display for LogRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.req)
    }
}
