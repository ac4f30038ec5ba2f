//! `strata token create|list|revoke`: access tokens for clients without a
//! certificate of their own. A token grants one filesystem (or one subtree
//! of it), read-write or read-only; group 0 keeps only the SHA-256 of its secret, so the token is
//! shown once, when it is made. A revoked or expired token stops working on
//! every node within seconds.

use clap::{Args, Subcommand};
use strata_meta::{Grant, Timestamp, Token};

use super::{CliError, CliResult};

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token for one filesystem and print it (once).
    Create(CreateArgs),
    /// List the tokens: id, what each grants, when it expires.
    List(ListArgs),
    /// Revoke a token by its id (the part after `strata_` up to `_`).
    Revoke(RevokeArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Metaserver addresses, comma separated (default: the embedded
    /// default's running mount).
    #[arg(long)]
    pub meta: Option<String>,
    /// The filesystem the token grants.
    pub fs: String,
    /// The holder may only read it: every change fails with EROFS.
    #[arg(long)]
    pub read_only: bool,
    /// The holder sees only the tree below PATH (absolute within the
    /// filesystem, such as /projects/a), as its root, and cannot reach
    /// anything outside it.
    #[arg(long, value_name = "PATH", value_parser = super::cert::parse_subdir)]
    pub subdir: Option<String>,
    /// Days until the token expires (default: never; revoke it instead).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub days: Option<u32>,
}

#[derive(Args)]
pub struct ListArgs {
    /// Metaserver addresses, comma separated.
    #[arg(long)]
    pub meta: Option<String>,
}

#[derive(Args)]
pub struct RevokeArgs {
    /// Metaserver addresses, comma separated.
    #[arg(long)]
    pub meta: Option<String>,
    /// The token's id (`strata token list` shows them).
    pub id: String,
}

pub async fn run(c: TokenCommand) -> CliResult {
    match c {
        TokenCommand::Create(a) => create(a).await,
        TokenCommand::List(a) => list(a).await,
        TokenCommand::Revoke(a) => revoke(a).await,
    }
}

async fn create(a: CreateArgs) -> CliResult {
    let client = super::connect(a.meta.as_deref()).await?;
    // The filesystem must exist: a token for a typo would grant nothing.
    client.open_loading_fs(&a.fs).await?;
    let now = Timestamp::now();
    let expires = a
        .days
        .map(|d| now.plus(std::time::Duration::from_secs(u64::from(d) * 86_400)));
    let subdir = a.subdir.filter(|d| d != "/");
    if let Some(dir) = &subdir {
        // The directory must exist: a token for a typo would grant nothing.
        client
            .open_fs(&a.fs)
            .await?
            .resolve_path(dir)
            .await
            .map_err(|e| CliError(format!("--subdir {dir}: {e}")))?;
    }
    let grant = Grant::Fs {
        fs: a.fs.clone(),
        read_only: a.read_only,
        subdir: subdir.clone(),
    };
    let (token, text) = Token::generate(grant, now, expires);
    let id = token.id.clone();
    client.put_token(token).await?;
    println!("{text}");
    eprintln!(
        "token {id} for filesystem {}{} ({}), {}; this is the only time it is shown",
        a.fs,
        subdir
            .map(|d| format!(", only below {d}"))
            .unwrap_or_default(),
        if a.read_only {
            "read-only"
        } else {
            "read-write"
        },
        match a.days {
            Some(d) => format!("expires in {d} days"),
            None => "until revoked".into(),
        }
    );
    Ok(())
}

async fn list(a: ListArgs) -> CliResult {
    let client = super::connect(a.meta.as_deref()).await?;
    let tokens = client.list_tokens().await?;
    for t in &tokens {
        let expires = match t.expires {
            Some(e) if t.expired(Timestamp::now()) => {
                format!("expired {}s ago", Timestamp::now().sec - e.sec)
            }
            Some(e) => format!("expires in {}h", (e.sec - Timestamp::now().sec) / 3600),
            None => "until revoked".into(),
        };
        println!("{:<14} {:<32} {expires}", t.id, t.grant.to_string());
    }
    println!("{} tokens", tokens.len());
    Ok(())
}

async fn revoke(a: RevokeArgs) -> CliResult {
    let client = super::connect(a.meta.as_deref()).await?;
    client.revoke_token(&a.id).await.map_err(|e| match e {
        strata_meta::MetaError::NotFound => CliError(format!("no token {}", a.id)),
        other => other.into(),
    })?;
    println!(
        "token {} revoked; connections using it lose their rights within seconds",
        a.id
    );
    Ok(())
}
