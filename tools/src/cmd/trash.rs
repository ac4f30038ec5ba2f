//! `strata trash list|restore`: files whose last link went stay in their
//! group's trash for the filesystem's trash days (`strata format
//! --trash-days`); these commands show them and bring them back.

use clap::{Args, Subcommand};
use strata_meta::{Timestamp, TrashEntry};

use super::{CliError, CliResult, meta_addrs};

#[derive(Subcommand)]
pub enum TrashCommand {
    /// List the files in the trash: inode, size, when deleted, where from.
    List(TrashListArgs),
    /// Link trashed files back under the name they were removed from (with
    /// `.restored-INO` appended if that name is taken now).
    Restore(TrashRestoreArgs),
}

#[derive(Args)]
pub struct TrashListArgs {
    /// Metaserver addresses, comma separated.
    #[arg(long)]
    pub meta: String,
    /// The filesystem.
    pub name: String,
}

#[derive(Args)]
pub struct TrashRestoreArgs {
    /// Metaserver addresses, comma separated.
    #[arg(long)]
    pub meta: String,
    /// The filesystem.
    pub name: String,
    /// Inode numbers to restore (see `strata trash list`).
    #[arg(required = true)]
    pub inodes: Vec<u64>,
}

pub async fn run(c: TrashCommand) -> CliResult {
    match c {
        TrashCommand::List(a) => list(a).await,
        TrashCommand::Restore(a) => restore(a).await,
    }
}

fn ago(t: Timestamp) -> String {
    let secs = (Timestamp::now().sec - t.sec).max(0);
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

async fn list(a: TrashListArgs) -> CliResult {
    let client = super::meta_client(&meta_addrs(&a.meta)).await?;
    let fs = client.open_fs(&a.name).await?;
    let mut all: Vec<TrashEntry> = Vec::new();
    for g in fs.groups() {
        let mut after = 0;
        loop {
            let page = fs.list_trash(g, after).await?;
            let Some(last) = page.last() else { break };
            after = last.inode.ino;
            all.extend(page);
        }
    }
    all.sort_by_key(|e| (e.deleted, e.inode.ino));
    println!("{:>12}  {:>14}  {:>10}  from", "inode", "bytes", "deleted");
    let now = Timestamp::now();
    for e in &all {
        let held = if e.held_until.is_some_and(|u| u > now) {
            "  (open on a client)"
        } else {
            ""
        };
        println!(
            "{:>12}  {:>14}  {:>10}  directory {} name {:?}{held}",
            e.inode.ino,
            e.inode.size,
            ago(e.deleted),
            e.parent,
            String::from_utf8_lossy(&e.name)
        );
    }
    println!(
        "{} files, {} bytes in the trash",
        all.len(),
        all.iter().map(|e| e.inode.size).sum::<u64>()
    );
    Ok(())
}

async fn restore(a: TrashRestoreArgs) -> CliResult {
    let client = super::meta_client(&meta_addrs(&a.meta)).await?;
    let fs = client.open_fs(&a.name).await?;
    let mut failed = 0;
    for ino in a.inodes {
        match fs.restore_trash(ino).await {
            Ok(_) => println!("restored inode {ino}"),
            Err(strata_meta::MetaError::NotFound) => {
                failed += 1;
                eprintln!(
                    "inode {ino}: the directory it was removed from is gone; restore that first"
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("inode {ino}: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(CliError(format!("{failed} inodes could not be restored")));
    }
    Ok(())
}
