//! `strata quota set|get|list|delete|check`: limits on the bytes and inodes
//! below a directory, or of a user's or group's files (`--uid`, `--gid`).
//! Changes that would go over fail with EDQUOT; `df` at or below a
//! directory shows its quota (see `strata_meta::server::ops::quota` and
//! decisions 58 and 60).

use clap::{Args, Subcommand};
use strata_meta::{FsClient, MetaError, Quota, QuotaSubject};

use super::{CliError, CliResult};

#[derive(Subcommand)]
pub enum QuotaCommand {
    /// Limit the bytes (sum of file sizes) and/or inodes below a directory,
    /// or of a user's or group's files, or change the limits of a quota. A
    /// new quota starts from a count of what it covers now.
    Set(QuotaSetArgs),
    /// Show one quota: limits and usage.
    Get(QuotaPathArgs),
    /// Show every quota of a filesystem.
    List(QuotaFsArgs),
    /// Remove a quota.
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
    /// The directory, from the filesystem's root (`/team/a`; `/`: the
    /// whole filesystem). Not with --uid or --gid.
    #[arg(required_unless_present_any = ["uid", "gid"], conflicts_with_all = ["uid", "gid"])]
    pub path: Option<String>,
    /// The quota of the files and directories this user owns, wherever
    /// they are.
    #[arg(long, conflicts_with = "gid")]
    pub uid: Option<u32>,
    /// The quota of the files and directories this group owns.
    #[arg(long)]
    pub gid: Option<u32>,
}

#[derive(Args)]
pub struct QuotaSetArgs {
    #[command(flatten)]
    pub at: QuotaPathArgs,
    /// Most bytes (`10G`, `512M`; `0` removes the limit).
    #[arg(long, value_parser = super::parse_size)]
    pub bytes: Option<u64>,
    /// Most inodes: files, directories, symlinks (`0` removes the limit).
    #[arg(long)]
    pub inodes: Option<u64>,
}

#[derive(Args)]
pub struct QuotaCheckArgs {
    #[command(flatten)]
    pub fs: QuotaFsArgs,
    /// Check only this directory's quota.
    #[arg(conflicts_with_all = ["uid", "gid"])]
    pub path: Option<String>,
    /// Check only this user's quota.
    #[arg(long, conflicts_with = "gid")]
    pub uid: Option<u32>,
    /// Check only this group's quota.
    #[arg(long)]
    pub gid: Option<u32>,
    /// Record the counts as the quotas' usage.
    #[arg(long)]
    pub repair: bool,
}

pub async fn run(c: QuotaCommand) -> CliResult {
    match c {
        QuotaCommand::Set(a) => set(a).await,
        QuotaCommand::Get(a) => {
            let (fs, subject) = open_subject(&a).await?;
            match quota_of(&fs, subject).await? {
                Some(q) => {
                    print_header();
                    print_quota(&name_of(&fs, subject).await, &q);
                    Ok(())
                }
                None => Err(CliError(format!("{} has no quota", a.label()))),
            }
        }
        QuotaCommand::List(a) => {
            let fs = open_fs(&a).await?;
            print_header();
            for (dir, q) in fs.quotas().await? {
                print_quota(&path_of(&fs, dir).await, &q);
            }
            for (s, q) in fs.owner_quotas().await? {
                print_quota(&name_of(&fs, s).await, &q);
            }
            Ok(())
        }
        QuotaCommand::Delete(a) => {
            let (fs, subject) = open_subject(&a).await?;
            let done = match subject {
                QuotaSubject::Dir(dir) => fs.delete_quota(dir).await,
                owner => fs.delete_owner_quota(owner).await,
            };
            done.map_err(|e| match e {
                MetaError::NotFound => CliError(format!("{} has no quota", a.label())),
                e => e.into(),
            })?;
            println!("removed the quota of {}", a.label());
            Ok(())
        }
        QuotaCommand::Check(a) => check(a).await,
    }
}

impl QuotaPathArgs {
    /// What the quota is of, as the user named it.
    fn label(&self) -> String {
        match (&self.path, self.uid, self.gid) {
            (Some(p), ..) => p.clone(),
            (None, Some(u), _) => format!("uid {u}"),
            (None, None, Some(g)) => format!("gid {g}"),
            (None, None, None) => "nothing".into(),
        }
    }
}

async fn quota_of(fs: &FsClient, s: QuotaSubject) -> Result<Option<Quota>, CliError> {
    Ok(match s {
        QuotaSubject::Dir(dir) => fs.quota(dir).await?,
        owner => fs.owner_quota(owner).await?,
    })
}

async fn set(a: QuotaSetArgs) -> CliResult {
    if a.bytes.is_none() && a.inodes.is_none() {
        return Err(CliError(
            "give --bytes SIZE, --inodes N or both (0 removes a limit)".into(),
        ));
    }
    let (fs, subject) = open_subject(&a.at).await?;
    // Limits not given stay as they are; 0 removes one.
    let old = quota_of(&fs, subject).await?.unwrap_or_default();
    let pick = |given: Option<u64>, old: Option<u64>| match given {
        Some(0) => None,
        Some(n) => Some(n),
        None => old,
    };
    let limits = (pick(a.bytes, old.max_bytes), pick(a.inodes, old.max_inodes));
    let q = match subject {
        QuotaSubject::Dir(dir) => fs.set_quota(dir, limits.0, limits.1).await?,
        owner => fs.set_owner_quota(owner, limits.0, limits.1).await?,
    };
    print_header();
    print_quota(&name_of(&fs, subject).await, &q);
    Ok(())
}

async fn check(a: QuotaCheckArgs) -> CliResult {
    let fs = open_fs(&a.fs).await?;
    let only = match (&a.path, a.uid, a.gid) {
        (Some(p), ..) => vec![QuotaSubject::Dir(resolve(&fs, p).await?)],
        (None, Some(u), _) => vec![QuotaSubject::User(u)],
        (None, None, Some(g)) => vec![QuotaSubject::Group(g)],
        (None, None, None) => Vec::new(),
    };
    let drift = fs.check_quotas(&only, a.repair).await?;
    if drift.is_empty() {
        println!("quotas match what they cover");
        return Ok(());
    }
    for d in &drift {
        println!(
            "{}: recorded {} inodes, {} bytes; counted {} inodes, {} bytes{}",
            name_of(&fs, d.subject).await,
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
            "{} quota(s) differ from what they cover; run again with --repair to record the counts",
            drift.len()
        )))
    }
}

async fn open_fs(a: &QuotaFsArgs) -> Result<FsClient, CliError> {
    let client = super::connect(a.meta.as_deref()).await?;
    Ok(client.open_fs(&a.fs).await?)
}

async fn open_subject(a: &QuotaPathArgs) -> Result<(FsClient, QuotaSubject), CliError> {
    let fs = open_fs(&a.fs).await?;
    let subject = match (&a.path, a.uid, a.gid) {
        (Some(p), ..) => QuotaSubject::Dir(resolve(&fs, p).await?),
        (None, Some(u), _) => QuotaSubject::User(u),
        (None, None, Some(g)) => QuotaSubject::Group(g),
        (None, None, None) => return Err(CliError("give a directory, --uid or --gid".into())),
    };
    Ok((fs, subject))
}

/// How a quota's subject is shown: a directory's path, `uid N`, `gid N`.
async fn name_of(fs: &FsClient, s: QuotaSubject) -> String {
    match s {
        QuotaSubject::Dir(dir) => path_of(fs, dir).await,
        QuotaSubject::User(u) => format!("uid {u}"),
        QuotaSubject::Group(g) => format!("gid {g}"),
    }
}

async fn resolve(fs: &FsClient, path: &str) -> Result<strata_meta::Ino, CliError> {
    fs.resolve_path(path)
        .await
        .map_err(|e| CliError(format!("{path}: {e}")))
}

/// A directory's path from the root, found by its parent pointers (its
/// inode number if a step cannot be read).
async fn path_of(fs: &FsClient, dir: strata_meta::Ino) -> String {
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

async fn find_name(
    fs: &FsClient,
    parent: strata_meta::Ino,
    child: strata_meta::Ino,
) -> Result<String, CliError> {
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
        "quota of", "bytes used", "bytes limit", "inodes used", "inodes limit"
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
