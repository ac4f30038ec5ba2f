//! Mounting: puts the fuser adapter over a filesystem core on a directory,
//! serves it from background threads, and unmounts it.

use std::path::Path;
use std::sync::Arc;

use fuser::MountOption;

use crate::fs::Filesystem;
use crate::fuse::FuseAdapter;

/// A live mount: wait for it to end, or unmount it.
pub struct MountHandle {
    mountpoint: std::path::PathBuf,
    ended: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// How an unmount went.
#[derive(Debug, PartialEq, Eq)]
pub enum Unmounted {
    /// The kernel session is over.
    Clean,
    /// Files were still open: the mount was detached from the tree and the
    /// kernel ends it when they close.
    Detached,
}

impl MountHandle {
    /// Resolves when the kernel session ends (unmounted from here or outside).
    pub async fn wait(&mut self) {
        if let Some(rx) = self.ended.as_mut() {
            let _ = rx.await;
            self.ended = None;
        }
    }

    /// Unmounts through fusermount3 (root or not), detaching lazily when busy.
    pub async fn unmount(&mut self) -> std::io::Result<Unmounted> {
        let run = |lazy: bool| {
            let mut c = std::process::Command::new("fusermount3");
            c.arg("-u");
            if lazy {
                c.arg("-z");
            }
            c.arg(&self.mountpoint)
                .stderr(std::process::Stdio::null())
                .status()
        };
        if run(false)?.success() {
            self.wait().await;
            return Ok(Unmounted::Clean);
        }
        if run(true)?.success() {
            return Ok(Unmounted::Detached);
        }
        Err(std::io::Error::other(format!(
            "fusermount3 could not unmount {}",
            self.mountpoint.display()
        )))
    }
}

fn mount_config(fs_name: &str, read_only: bool) -> fuser::Config {
    let mut options = vec![
        MountOption::FSName(format!("strata:{fs_name}")),
        MountOption::Subtype("strata".into()),
        // fuser's own mount (as root) drops `Subtype`; passed to the kernel
        // directly it makes the type `fuse.strata`, so `mount -o remount`
        // works without a mount.fuse helper trying to run the source.
        MountOption::CUSTOM("subtype=strata".into()),
        MountOption::DefaultPermissions,
    ];
    if read_only {
        options.push(MountOption::RO);
    }
    let mut cfg = fuser::Config::default();
    cfg.mount_options = options;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // As root, let every user reach the mount; permissions still apply.
        cfg.acl = fuser::SessionACL::All;
    }
    // A FUSE thread reads disk-cache blocks itself (decision 72), so the
    // threads bound how many such reads are under way: enough for the
    // readers a training job runs. An idle one costs a blocked read(2).
    cfg.n_threads = Some(16);
    cfg
}

/// Mounts `fs` on `mountpoint` (needs fusermount3, or root) and serves it
/// from background threads.
pub fn mount(
    fs: Arc<Filesystem>,
    rt: tokio::runtime::Handle,
    mountpoint: &Path,
    fs_name: &str,
    read_only: bool,
) -> std::io::Result<MountHandle> {
    let cfg = mount_config(fs_name, read_only);
    let session = fuser::Session::new(FuseAdapter::new(fs, rt), mountpoint, &cfg)?;
    let bg = session.spawn()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("strata-fuse-join".into())
        .spawn(move || {
            if let Err(e) = bg.join() {
                tracing::warn!(error = %e, "FUSE session ended with an error");
            }
            let _ = tx.send(());
        })?;
    Ok(MountHandle {
        mountpoint: mountpoint.to_path_buf(),
        ended: Some(rx),
    })
}
