//! The fuser adapter: decodes each kernel request, runs the async core on
//! it, and answers the reply. The core starts on the FUSE thread and moves
//! to the tokio runtime at its first wait (see `FuseAdapter::answer`): the
//! FUSE thread never waits on the network, and on disk only for a block of
//! the disk cache.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno, FileHandle, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};
use strata_meta::{Ino, Inode, ROOT_INO, SetAttr};

use crate::alloc::FilePos;
use crate::error::FsError;
use crate::fs::{Filesystem, Owner};
use crate::locks::RangeLock;
use crate::metrics::{OpTimer, metrics};

mod attr;
mod reply;

use attr::{from_system_time, kind, time_or_now};
pub use attr::{kind_from_mode, to_file_attr};
use reply::{empty, fail, sized};

pub struct FuseAdapter {
    fs: Arc<Filesystem>,
    rt: tokio::runtime::Handle,
}

impl FuseAdapter {
    pub fn new(fs: Arc<Filesystem>, rt: tokio::runtime::Handle) -> Self {
        FuseAdapter { fs, rt }
    }

    /// The core's inode for the kernel's number `ino`, kept as the kernel's
    /// type (see `swap_root`).
    fn core_ino(&self, ino: INodeNo) -> INodeNo {
        INodeNo(swap_root(self.fs.root(), ino.0))
    }

    /// Answers with `f`, given a clone of the core; `op` is counted when
    /// `f` has answered. `f` runs here, on the FUSE thread, until it first
    /// has to wait for the network or another task; then the runtime takes
    /// it over. So an answer the client has at hand (attributes, a block in
    /// memory or in the disk cache) goes back from this thread, without the
    /// handoffs to a runtime worker and back that cost more than the answer
    /// itself on a small machine (decision 72). The one wait allowed here is
    /// the local disk cache's read of a block (`disk_reads_here`); the
    /// network never is.
    fn answer<F, Fut>(&self, op: OpTimer, f: F)
    where
        F: FnOnce(Arc<Filesystem>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        use std::future::Future;
        use std::task::{Context, Waker};
        let fs = self.fs.clone();
        // Boxed so that the task moves a pointer: the answering futures are
        // kilobytes, and each layer around them (the timer's errno scope,
        // the span, tokio's task cell) would otherwise copy them whole;
        // unboxed, these copies took a third of the mount's instructions.
        let mut answer = Box::pin(op.around(Box::pin(f(fs))));
        let _runtime = self.rt.enter();
        // A future that is pending has registered the waker of this poll;
        // the runtime polls it again at once with its own, so nothing it
        // waits for is missed by this waker doing nothing.
        let first = strata_cache::disk_reads_here(|| {
            answer
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
        });
        if first.is_pending() {
            self.rt.spawn(answer);
        }
    }

    fn entry(op: &'static str, fs: &Filesystem, reply: ReplyEntry, r: Result<Inode, FsError>) {
        match r {
            Ok(i) => reply.entry(
                &fs.config().entry_ttl,
                &to_file_attr(&i, fs.root()),
                Generation(i.generation),
            ),
            Err(e) => fail(op, reply, e),
        }
    }
}

/// The kernel calls a mount's root inode 1, as the filesystem does its
/// own; a client confined to a subtree has its root at `root`. The two
/// numbers trade places between the kernel and the core (the fs root is
/// out of such a client's reach), so each inode has one number either side.
pub(crate) fn swap_root(root: Ino, ino: u64) -> u64 {
    if ino == ROOT_INO {
        root
    } else if ino == root {
        ROOT_INO
    } else {
        ino
    }
}

/// Who the inode a request makes belongs to: its caller.
fn owner(req: &Request) -> Owner {
    Owner {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn bytes(s: &OsStr) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Background requests (readahead, async direct IO) the kernel may have
/// under way at once; see `init`.
const MAX_BACKGROUND: u16 = 256;

/// How the kernel should treat an open file (see `bypasses_page_cache`).
fn open_flags(flags: i32) -> FopenFlags {
    if crate::fs::bypasses_page_cache(flags) {
        FopenFlags::FOPEN_DIRECT_IO
    } else {
        FopenFlags::empty()
    }
}

impl fuser::Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        // Readahead goes to us as background requests, and the kernel skips
        // readahead while more than 3/4 of `max_background` are under way.
        // At fuser's default (16), 64 parallel readers of 128 KiB files got
        // each file in four 32 KiB reads, and a first read of a quarter
        // block is a ranged GET the whole-block fetch after it repeats:
        // 1.8 GETs per file. Requests waiting here cost us nothing.
        let _ = config.set_max_background(MAX_BACKGROUND);
        // Listings return attributes too (one round trip for `ls -l`), and
        // lookups in one directory may run in parallel. Kernels without them
        // just do not get them.
        // File locks (fcntl and flock) go to the metaserver, so they hold
        // across clients.
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_POSIX_LOCKS,
            InitFlags::FUSE_FLOCK_LOCKS,
        ] {
            let _ = config.add_capabilities(cap);
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let op =
            OpTimer::start("lookup", req, parent.0).args(|| format!("{},{:?}", parent.0, name));
        let parent = self.core_ino(parent);
        // A name looked up lately that the kernel let go of (memory
        // pressure, drop_caches): answered here, without a task.
        if let Some((i, ttl)) = self.fs.recent_lookup(parent.0, name.as_bytes()) {
            reply.entry(
                &ttl,
                &to_file_attr(&i, self.fs.root()),
                Generation(i.generation),
            );
            return;
        }
        let name = bytes(name);
        self.answer(op, move |fs| async move {
            let r = fs.lookup(parent.0, &name).await;
            Self::entry("lookup", &fs, reply, r);
        });
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let op = OpTimer::start("getattr", req, ino.0).args(|| format!("{}", ino.0));
        let ino = self.core_ino(ino);
        // The common case after a create, unlink or close: the kernel
        // re-reads what it just changed. Answered here, without a task.
        if let Some((i, ttl)) = self.fs.recent_attr(ino.0) {
            reply.attr(&ttl, &to_file_attr(&i, self.fs.root()));
            return;
        }
        self.answer(op, move |fs| async move {
            match fs.getattr(ino.0).await {
                Ok(i) => reply.attr(&fs.config().attr_ttl, &to_file_attr(&i, fs.root())),
                Err(e) => fail("getattr", reply, e),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let op = OpTimer::start("setattr", req, ino.0).args(|| {
            format!(
                "{},mode={:?},uid={:?},gid={:?},size={:?}",
                ino.0, mode, uid, gid, size
            )
        });
        let ino = self.core_ino(ino);
        let set = SetAttr {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime: time_or_now(atime),
            mtime: time_or_now(mtime),
            ctime: ctime.map(from_system_time),
        };
        self.answer(op, move |fs| async move {
            match fs.setattr(ino.0, set).await {
                Ok(i) => reply.attr(&fs.config().attr_ttl, &to_file_attr(&i, fs.root())),
                Err(e) => fail("setattr", reply, e),
            }
        });
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let op = OpTimer::start("readlink", req, ino.0).args(|| format!("{}", ino.0));
        let ino = self.core_ino(ino);
        self.answer(op, move |fs| async move {
            match fs.readlink(ino.0).await {
                Ok(t) => reply.data(&t),
                Err(e) => fail("readlink", reply, e),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let mut op = OpTimer::start("mknod", req, parent.0)
            .args(|| format!("{},{:?},{:o},{}", parent.0, name, mode, rdev));
        let parent = self.core_ino(parent);
        let Some(k) = kind_from_mode(mode) else {
            op.failed(libc::EINVAL);
            reply.error(Errno::EINVAL);
            return;
        };
        let (name, owner) = (bytes(name), owner(req));
        self.answer(op, move |fs| async move {
            let r = fs
                .mknod(parent.0, &name, k, mode & 0o7777, rdev, owner)
                .await;
            Self::entry("mknod", &fs, reply, r);
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let op = OpTimer::start("mkdir", req, parent.0)
            .args(|| format!("{},{:?},{:o}", parent.0, name, mode));
        let parent = self.core_ino(parent);
        let (name, owner) = (bytes(name), owner(req));
        self.answer(op, move |fs| async move {
            let r = fs.mkdir(parent.0, &name, mode & 0o7777, owner).await;
            Self::entry("mkdir", &fs, reply, r);
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let op =
            OpTimer::start("unlink", req, parent.0).args(|| format!("{},{:?}", parent.0, name));
        let parent = self.core_ino(parent);
        let name = bytes(name);
        self.answer(op, move |fs| async move {
            empty("unlink", reply, fs.unlink(parent.0, &name).await)
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let op = OpTimer::start("rmdir", req, parent.0).args(|| format!("{},{:?}", parent.0, name));
        let parent = self.core_ino(parent);
        let name = bytes(name);
        self.answer(op, move |fs| async move {
            empty("rmdir", reply, fs.rmdir(parent.0, &name).await)
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let op = OpTimer::start("symlink", req, parent.0)
            .args(|| format!("{},{:?},{:?}", parent.0, link_name, target));
        let parent = self.core_ino(parent);
        let (name, target) = (bytes(link_name), target.as_os_str().as_bytes().to_vec());
        let owner = owner(req);
        self.answer(op, move |fs| async move {
            let r = fs.symlink(parent.0, &name, &target, owner).await;
            Self::entry("symlink", &fs, reply, r);
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let op = OpTimer::start("rename", req, parent.0).args(|| {
            format!(
                "{},{:?},{},{:?},{:?}",
                parent.0, name, newparent.0, newname, flags
            )
        });
        let parent = self.core_ino(parent);
        let newparent = self.core_ino(newparent);
        let (name, newname) = (bytes(name), bytes(newname));
        self.answer(op, move |fs| async move {
            empty(
                "rename",
                reply,
                fs.rename(parent.0, &name, newparent.0, &newname, flags.bits())
                    .await,
            )
        });
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let op = OpTimer::start("link", req, ino.0)
            .args(|| format!("{},{},{:?}", ino.0, newparent.0, newname));
        let ino = self.core_ino(ino);
        let newparent = self.core_ino(newparent);
        let newname = bytes(newname);
        self.answer(op, move |fs| async move {
            let r = fs.link(ino.0, newparent.0, &newname).await;
            Self::entry("link", &fs, reply, r);
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let op = OpTimer::start("open", req, ino.0).args(|| format!("{},{:?}", ino.0, flags));
        let ino = self.core_ino(ino);
        self.answer(op, move |fs| async move {
            match fs.open_cached(ino.0, flags.0).await {
                Ok((fh, keep)) => {
                    let mut f = open_flags(flags.0);
                    if keep {
                        f |= FopenFlags::FOPEN_KEEP_CACHE;
                    }
                    reply.opened(FileHandle(fh), f)
                }
                Err(e) => fail("open", reply, e),
            }
        });
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let op = OpTimer::start("read", req, ino.0)
            .args(|| format!("{},{},{},{}", ino.0, offset, size, fh.0));
        let ino = self.core_ino(ino);
        self.answer(op, move |fs| async move {
            match fs.read(ino.0, fh.0, offset, size).await {
                Ok(b) => {
                    metrics().read(b.len());
                    reply.data(&b)
                }
                Err(e) => fail("read", reply, e),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let op = OpTimer::start("write", req, ino.0)
            .args(|| format!("{},{},{},{}", ino.0, offset, data.len(), fh.0));
        let ino = self.core_ino(ino);
        let data = data.to_vec();
        self.answer(op, move |fs| async move {
            match fs.write(ino.0, fh.0, offset, &data).await {
                Ok(n) => {
                    metrics().written(n as usize);
                    reply.written(n)
                }
                Err(e) => fail("write", reply, e),
            }
        });
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let op = OpTimer::start("flush", req, ino.0).args(|| format!("{},{}", ino.0, fh.0));
        let ino = self.core_ino(ino);
        // Nothing buffered (a file opened only to read, or already
        // committed) and no locks to drop: answered here, without a task.
        if self.fs.flush_is_noop(ino.0, fh.0, Some(lock_owner.0)) {
            reply.ok();
            return;
        }
        self.answer(op, move |fs| async move {
            let r = fs.flush(ino.0, fh.0, Some(lock_owner.0)).await;
            empty("flush", reply, r)
        });
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let op = OpTimer::start("release", req, ino.0).args(|| format!("{},{}", ino.0, fh.0));
        let ino = self.core_ino(ino);
        // With an owner, the last close of an flock'ed file: the lock goes.
        let lock_owner = lock_owner.map(|o| o.0);
        if self.fs.try_release_now(ino.0, fh.0, lock_owner) {
            reply.ok();
            return;
        }
        self.answer(op, move |fs| async move {
            empty("release", reply, fs.release(ino.0, fh.0, lock_owner).await)
        });
    }

    fn getlk(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: fuser::ReplyLock,
    ) {
        let op = OpTimer::start("getlk", req, ino.0)
            .args(|| format!("{},{},{},{},{}", ino.0, start, end, typ, pid));
        let ino = self.core_ino(ino);
        let lock = RangeLock {
            start,
            end,
            typ,
            pid,
        };
        self.answer(op, move |fs| async move {
            match fs.getlk(ino.0, lock_owner.0, lock).await {
                Ok(l) => reply.locked(l.start, l.end, l.typ, l.pid),
                Err(e) => fail("getlk", reply, e),
            }
        });
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let op = OpTimer::start("setlk", req, ino.0)
            .args(|| format!("{},{},{},{},{},{}", ino.0, start, end, typ, pid, sleep));
        let ino = self.core_ino(ino);
        let lock = RangeLock {
            start,
            end,
            typ,
            pid,
        };
        self.answer(op, move |fs| async move {
            let r = fs.setlk(ino.0, lock_owner.0, lock, sleep).await;
            empty("setlk", reply, r)
        });
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let op = OpTimer::start("fsync", req, ino.0).args(|| format!("{},{}", ino.0, fh.0));
        let ino = self.core_ino(ino);
        self.answer(op, move |fs| async move {
            empty("fsync", reply, fs.fsync(ino.0, fh.0).await)
        });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let op = OpTimer::start("opendir", req, ino.0).args(|| format!("{}", ino.0));
        let ino = self.core_ino(ino);
        self.answer(op, move |fs| async move {
            match fs.opendir(ino.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => fail("opendir", reply, e),
            }
        });
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let op =
            OpTimer::start("readdir", req, ino.0).args(|| format!("{},{},{}", ino.0, offset, fh.0));
        let ino = self.core_ino(ino);
        self.answer(op, move |fs| async move {
            match fs.readdir(ino.0, fh.0, offset, 512).await {
                Ok(entries) => {
                    for (next, e) in entries {
                        let name = OsStr::from_bytes(&e.name);
                        if reply.add(
                            INodeNo(swap_root(fs.root(), e.dentry.ino)),
                            next,
                            kind(e.dentry.kind),
                            name,
                        ) {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(e) => fail("readdir", reply, e),
            }
        });
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let op = OpTimer::start("readdirplus", req, ino.0)
            .args(|| format!("{},{},{}", ino.0, offset, fh.0));
        let ino = self.core_ino(ino);
        self.answer(op, move |fs| async move {
            match fs.readdir(ino.0, fh.0, offset, 256).await {
                Ok(entries) => {
                    let ttl = fs.config().entry_ttl;
                    for (next, e) in entries {
                        // An entry whose inode vanished meanwhile is skipped.
                        let Some(attr) = &e.attr else { continue };
                        let name = OsStr::from_bytes(&e.name);
                        if reply.add(
                            INodeNo(swap_root(fs.root(), e.dentry.ino)),
                            next,
                            name,
                            &ttl,
                            &to_file_attr(attr, fs.root()),
                            Generation(attr.generation),
                        ) {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(e) => fail("readdirplus", reply, e),
            }
        });
    }

    fn releasedir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let op = OpTimer::start("releasedir", req, ino.0).args(|| format!("{},{}", ino.0, fh.0));
        let ino = self.core_ino(ino);
        self.answer(op, move |fs| async move {
            empty("releasedir", reply, fs.releasedir(ino.0, fh.0).await)
        });
    }

    fn fsyncdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _op = OpTimer::start("fsyncdir", req, _ino.0).args(|| format!("{}", _ino.0));
        // Directory changes are committed by Raft before they are acknowledged.
        reply.ok();
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let op = OpTimer::start("statfs", req, ino.0).args(|| format!("{}", ino.0));
        let ino = self.core_ino(ino);
        self.answer(op, move |fs| async move {
            match fs.statfs(ino.0).await {
                Ok(s) => reply.statfs(
                    s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
                ),
                Err(e) => fail("statfs", reply, e),
            }
        });
    }

    fn getxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        size: u32,
        reply: fuser::ReplyXattr,
    ) {
        let op = OpTimer::start("getxattr", req, ino.0)
            .args(|| format!("{},{:?},{}", ino.0, name, size));
        let ino = self.core_ino(ino);
        let name = bytes(name);
        self.answer(op, move |fs| async move {
            match fs.getxattr(ino.0, &name).await {
                Ok(v) => sized(reply, &v, size),
                Err(e) => fail("getxattr", reply, e),
            }
        });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        let op = OpTimer::start("listxattr", req, ino.0).args(|| format!("{},{}", ino.0, size));
        let ino = self.core_ino(ino);
        self.answer(op, move |fs| async move {
            match fs.listxattr(ino.0).await {
                Ok(names) => {
                    let mut list = Vec::new();
                    for n in names {
                        list.extend_from_slice(&n);
                        list.push(0);
                    }
                    sized(reply, &list, size)
                }
                Err(e) => fail("listxattr", reply, e),
            }
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let op = OpTimer::start("setxattr", req, ino.0)
            .args(|| format!("{},{:?},{},{}", ino.0, name, value.len(), flags));
        let ino = self.core_ino(ino);
        let (name, value) = (bytes(name), value.to_vec());
        self.answer(op, move |fs| async move {
            empty(
                "setxattr",
                reply,
                fs.setxattr(ino.0, &name, &value, flags).await,
            )
        });
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let op = OpTimer::start("removexattr", req, ino.0).args(|| format!("{},{:?}", ino.0, name));
        let ino = self.core_ino(ino);
        let name = bytes(name);
        self.answer(op, move |fs| async move {
            empty("removexattr", reply, fs.removexattr(ino.0, &name).await)
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        let mut op = OpTimer::start("ioctl", req, _ino.0).args(|| format!("{},{}", _ino.0, _cmd));
        // No ioctls: "not a terminal" is what shells probing files expect.
        op.failed(libc::ENOTTY);
        reply.error(Errno::ENOTTY);
    }

    fn access(&self, req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        let _op = OpTimer::start("access", req, _ino.0).args(|| format!("{},{:?}", _ino.0, _mask));
        // default_permissions: the kernel checks permissions itself.
        reply.ok();
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let op = OpTimer::start("fallocate", req, ino.0)
            .args(|| format!("{},{},{},{}", ino.0, offset, length, mode));
        let ino = self.core_ino(ino);
        self.answer(op, move |fs| async move {
            empty(
                "fallocate",
                reply,
                fs.fallocate(ino.0, fh.0, offset, length, mode).await,
            )
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let op = OpTimer::start("copy_file_range", req, ino_in.0).args(|| {
            format!(
                "{},{},{},{},{}",
                ino_in.0, offset_in, ino_out.0, offset_out, len
            )
        });
        let ino_in = self.core_ino(ino_in);
        let ino_out = self.core_ino(ino_out);
        self.answer(op, move |fs| async move {
            let from = FilePos {
                ino: ino_in.0,
                fh: fh_in.0,
                offset: offset_in,
            };
            let to = FilePos {
                ino: ino_out.0,
                fh: fh_out.0,
                offset: offset_out,
            };
            let r = fs.copy_file_range(from, to, len).await;
            match r {
                Ok(n) => reply.written(n),
                Err(e) => fail("copy_file_range", reply, e),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let op = OpTimer::start("create", req, parent.0)
            .args(|| format!("{},{:?},{:o},{:#x}", parent.0, name, mode, flags));
        let parent = self.core_ino(parent);
        let (name, owner) = (bytes(name), owner(req));
        self.answer(op, move |fs| async move {
            match fs
                .create(parent.0, &name, mode & 0o7777, flags, owner)
                .await
            {
                Ok((i, fh)) => reply.created(
                    &fs.config().entry_ttl,
                    &to_file_attr(&i, fs.root()),
                    Generation(i.generation),
                    FileHandle(fh),
                    open_flags(flags),
                ),
                Err(e) => fail("create", reply, e),
            }
        });
    }
}
