//! `strata snapshot create|list|delete`: read-only, point-in-time copies of a
//! filesystem's metadata that share its blocks (see
//! `strata_meta::server::ops::snapshot`). Mount one with `strata mount
//! --snapshot NAME`.

use std::time::Duration;

use clap::{Args, Subcommand};
use strata_meta::Timestamp;

use super::CliResult;

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot of a filesystem while clients keep using it: every
    /// change acknowledged before it starts is in it, nothing begun after
    /// it ends is.
    Create(SnapshotCreateArgs),
    /// List a filesystem's snapshots.
    List(SnapshotListArgs),
    /// Delete a snapshot; blocks only it held are then deleted by the
    /// mounts' background workers.
    Delete(SnapshotArgs),
}

#[derive(Args)]
pub struct SnapshotArgs {
    /// Metaserver addresses, comma separated [default: the embedded
    /// default's running mount].
    #[arg(long)]
    pub meta: Option<String>,
    /// The filesystem.
    pub fs: String,
    /// The snapshot's name (letters, digits, '-' and '_').
    pub name: String,
}

#[derive(Args)]
pub struct SnapshotCreateArgs {
    #[command(flatten)]
    pub snap: SnapshotArgs,
    /// Longest time changes to the filesystem may wait while the snapshot's
    /// metadata is copied; a snapshot that needs longer fails (take it
    /// again with more) and changes resume at that time in any case.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=86400))]
    pub max_freeze: u64,
    /// Snapshot only the tree under this directory (`/a/b`); it becomes the
    /// snapshot's root.
    #[arg(long)]
    pub path: Option<String>,
}

#[derive(Args)]
pub struct SnapshotListArgs {
    /// Metaserver addresses, comma separated [default: the embedded
    /// default's running mount].
    #[arg(long)]
    pub meta: Option<String>,
    /// The filesystem.
    pub fs: String,
}

pub async fn run(c: SnapshotCommand) -> CliResult {
    match c {
        SnapshotCommand::Create(c) => {
            let a = c.snap;
            let client = super::connect(a.meta.as_deref()).await?;
            let started = std::time::Instant::now();
            let snap = client
                .create_snapshot(
                    &a.fs,
                    &a.name,
                    c.path.as_deref(),
                    Duration::from_secs(c.max_freeze),
                )
                .await?;
            println!(
                "snapshot {}@{} taken in {:.1}s (mount it with `strata mount{} --snapshot {} {}DIR`)",
                a.fs,
                snap.name,
                started.elapsed().as_secs_f64(),
                a.meta
                    .as_ref()
                    .map(|m| format!(" --meta {m}"))
                    .unwrap_or_default(),
                snap.name,
                if a.meta.is_some() {
                    format!("{} ", a.fs)
                } else {
                    String::new()
                },
            );
            Ok(())
        }
        SnapshotCommand::List(a) => {
            let client = super::connect(a.meta.as_deref()).await?;
            let snaps = client.list_snapshots(&a.fs).await?;
            for s in &snaps {
                let age = Timestamp::now().sec - s.created.sec;
                println!(
                    "{:<24} taken {}s ago, of {}{}",
                    s.name,
                    age.max(0),
                    s.path.as_deref().unwrap_or("the whole filesystem"),
                    if s.ready {
                        ""
                    } else {
                        "  (incomplete: delete it)"
                    }
                );
            }
            println!("{} snapshots of {}", snaps.len(), a.fs);
            Ok(())
        }
        SnapshotCommand::Delete(a) => {
            let client = super::connect(a.meta.as_deref()).await?;
            client.delete_snapshot(&a.fs, &a.name).await?;
            println!("deleted snapshot {}@{}", a.fs, a.name);
            Ok(())
        }
    }
}
