//! Answering the kernel: errors (logged once, at their level) and the
//! replies several requests share.

use fuser::{
    Errno, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
};

use crate::error::{FsError, Level};

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno)
}

/// A reply that can carry an errno. fuser's replies share no trait for
/// it; this one lets `fail` answer any of them.
pub(super) trait ErrorReply {
    fn error(self, errno: Errno);
}

macro_rules! error_replies {
    ($($reply:ty),* $(,)?) => {
        $(impl ErrorReply for $reply {
            fn error(self, errno: Errno) {
                <$reply>::error(self, errno)
            }
        })*
    };
}

error_replies!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyEmpty,
    ReplyEntry,
    ReplyOpen,
    ReplyStatfs,
    ReplyWrite,
    fuser::ReplyLock,
    fuser::ReplyXattr,
);

/// Logs `op`'s error once, at the level the core gave it, and answers its
/// errno.
pub(super) fn fail(op: &'static str, reply: impl ErrorReply, e: FsError) {
    match e.level {
        Level::Debug => tracing::debug!(op, errno = e.errno, error = %e, "request failed"),
        Level::Warn => tracing::warn!(op, errno = e.errno, error = %e, "request failed"),
        Level::Error => tracing::error!(op, errno = e.errno, error = %e, "request failed"),
    }
    crate::metrics::failed_in_task(e.errno);
    reply.error(errno(&e));
}

/// Answers an xattr read: its size when asked with 0, ERANGE when the
/// caller's buffer is too small, else the bytes.
pub(super) fn sized(reply: fuser::ReplyXattr, bytes: &[u8], size: u32) {
    if size == 0 {
        reply.size(bytes.len() as u32);
    } else if bytes.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(bytes);
    }
}

pub(super) fn empty(op: &'static str, reply: ReplyEmpty, r: Result<(), FsError>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => fail(op, reply, e),
    }
}
