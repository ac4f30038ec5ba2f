//! `strata quota set|get|list|delete|check`: limits on the bytes and inodes
//! below a directory. Changes that would go over fail with EDQUOT; `df` at
//! or below the directory shows the quota (see
//! `strata_meta::server::ops::quota` and decision 58).

use clap::{Args, Subcommand};
use strata_meta::{FsClient, Ino, Quota};

use super::{CliError, CliResult};

#[derive(Subcommand)]
pub enum QuotaCommand {
    /// Limit the bytes (sum of file sizes) and/or inodes below a directory,
    /// or change the limits of its quota. A new quota starts from a count
    /// of what is below the directory now.
    Set(QuotaSetArgs),
    /// Show a directory's quota: limits and usage.
    Get(QuotaPathArgs),
    /// Show every quota of a filesystem.
    List(QuotaFsArgs),
    /// Remove a directory's quota.
    Delete(QuotaPathArgs),
    /// Count what is below each quota (or one) again and compare it with
    /// the recorded usage; with --repair, record the counts. Run it on a
    /// quiet tree: a change made while counting shows as drift.
    Check(QuotaCheckArgs),
}

#[derive(Args)]
pub struct QuotaFsArgs {
    /// Metaserver addresses, comma separated [default: the embedded
    /// default's running mount].
    #[arg(long)]
    pub meta: Option<String>,
    /// The filesystem.
    pub fs: String,
}

#[derive(Args)]
pub struct QuotaPathArgs {
    #[command(flatten)]
    pub fs: QuotaFsArgs,
    /// The directory, from the filesystem's root (`/team/a`).
    pub path: String,
}

#[derive(Args)]
pub struct QuotaSetArgs {
    #[command(flatten)]
    pub at: QuotaPathArgs,
    /// Most bytes below the directory (`10G`, `512M`; `0` removes the
    /// limit).
    #[arg(long, value_parser = super::parse_size)]
    pub bytes: Option<u64>,
    /// Most inodes (files, directories, links) below the directory (`0`
    /// removes the limit).
    #[arg(long)]
    pub inodes: Option<u64>,
}

#[derive(Args)]
pub struct QuotaCheckArgs {
    #[command(flatten)]
    pub fs: QuotaFsArgs,
    /// Check only this directory's quota.
    pub path: Option<String>,
    /// Record the counts as the quotas' usage.
    #[arg(long)]
    pub repair: bool,
}

pub async fn run(c: QuotaCommand) -> CliResult {
    match c {
        QuotaCommand::Set(a) => set(a).await,
        QuotaCommand::Get(a) => {
            let (fs, dir) = open_dir(&a).await?;
            match fs.quota(dir).await? {
                Some(q) => {
                    print_header();
                    print_quota(&a.path, &q);
                    Ok(())
                }
                None => Err(CliError(format!("{} has no quota", a.path))),
            }
        }
        QuotaCommand::List(a) => {
            let fs = open_fs(&a).await?;
            print_header();
            for (dir, q) in fs.quotas().await? {
                print_quota(&path_of(&fs, dir).await, &q);
            }
            Ok(())
        }
        QuotaCommand::Delete(a) => {
            let (fs, dir) = open_dir(&a).await?;
            fs.delete_quota(dir).await.map_err(|e| match e {
                strata_meta::MetaError::NotFound => CliError(format!("{} has no quota", a.path)),
                e => e.into(),
            })?;
            println!("removed the quota of {}", a.path);
            Ok(())
        }
        QuotaCommand::Check(a) => check(a).await,
    }
}

async fn set(a: QuotaSetArgs) -> CliResult {
    if a.bytes.is_none() && a.inodes.is_none() {
        return Err(CliError(
            "give --bytes SIZE, --inodes N or both (0 removes a limit)".into(),
        ));
    }
    let (fs, dir) = open_dir(&a.at).await?;
    // Limits not given stay as they are; 0 removes one.
    let old = fs.quota(dir).await?.unwrap_or_default();
    let pick = |given: Option<u64>, old: Option<u64>| match given {
        Some(0) => None,
        Some(n) => Some(n),
        None => old,
    };
    let q = fs
        .set_quota(
            dir,
            pick(a.bytes, old.max_bytes),
            pick(a.inodes, old.max_inodes),
        )
        .await?;
    print_header();
    print_quota(&a.at.path, &q);
    Ok(())
}

async fn check(a: QuotaCheckArgs) -> CliResult {
    let fs = open_fs(&a.fs).await?;
    let dirs = match &a.path {
        Some(p) => vec![resolve(&fs, p).await?],
        None => Vec::new(),
    };
    let drift = fs.check_quotas(&dirs, a.repair).await?;
    if drift.is_empty() {
        println!("quotas match their trees");
        return Ok(());
    }
    for d in &drift {
        println!(
            "{}: recorded {} inodes, {} bytes; counted {} inodes, {} bytes{}",
            path_of(&fs, d.dir).await,
            d.recorded.inodes,
            d.recorded.bytes,
            d.counted.inodes,
            d.counted.bytes,
            if a.repair { " (repaired)" } else { "" }
        );
    }
    if a.repair {
        Ok(())
    } else {
        Err(CliError(format!(
            "{} quota(s) differ from their trees; run again with --repair to record the counts",
            drift.len()
        )))
    }
}

async fn open_fs(a: &QuotaFsArgs) -> Result<FsClient, CliError> {
    let client = super::connect(a.meta.as_deref()).await?;
    Ok(client.open_fs(&a.fs).await?)
}

async fn open_dir(a: &QuotaPathArgs) -> Result<(FsClient, Ino), CliError> {
    let fs = open_fs(&a.fs).await?;
    let dir = resolve(&fs, &a.path).await?;
    Ok((fs, dir))
}

async fn resolve(fs: &FsClient, path: &str) -> Result<Ino, CliError> {
    fs.resolve_path(path)
        .await
        .map_err(|e| CliError(format!("{path}: {e}")))
}

/// A directory's path from the root, found by its parent pointers (its
/// inode number if a step cannot be read).
async fn path_of(fs: &FsClient, dir: Ino) -> String {
    let mut names = Vec::new();
    let mut at = dir;
    while at != fs.root() {
        let Ok(inode) = fs.getattr(at).await else {
            return format!("inode {dir}");
        };
        let Ok(entries) = find_name(fs, inode.parent, at).await else {
            return format!("inode {dir}");
        };
        names.push(entries);
        at = inode.parent;
    }
    names.reverse();
    format!("/{}", names.join("/"))
}

async fn find_name(fs: &FsClient, parent: Ino, child: Ino) -> Result<String, CliError> {
    let mut after = None;
    loop {
        let page = fs.readdir(parent, after, strata_meta::MAX_READDIR).await?;
        let Some(last) = page.last() else {
            return Err(CliError(format!("inode {child} not found in {parent}")));
        };
        if let Some(e) = page.iter().find(|e| e.dentry.ino == child) {
            return Ok(String::from_utf8_lossy(&e.name).into_owned());
        }
        after = Some(last.name.clone());
    }
}

fn print_header() {
    println!(
        "{:<30} {:>14} {:>14} {:>12} {:>12}",
        "directory", "bytes used", "bytes limit", "inodes used", "inodes limit"
    );
}

fn print_quota(path: &str, q: &Quota) {
    let limit = |m: Option<u64>| m.map_or("-".to_string(), |v| v.to_string());
    println!(
        "{:<30} {:>14} {:>14} {:>12} {:>12}",
        path,
        q.used.bytes,
        limit(q.max_bytes),
        q.used.inodes,
        limit(q.max_inodes)
    );
}
