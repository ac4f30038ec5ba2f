//! `strata fsck`: checks a filesystem's metadata across every group.

use clap::Args;

use super::{CliError, CliResult, meta_addrs};

#[derive(Args)]
pub struct FsckArgs {
    /// Metaserver addresses, comma separated.
    #[arg(long)]
    pub meta: String,
    /// The filesystem to check.
    pub name: String,
}

/// Checks a filesystem's metadata; exits non-zero if anything is wrong.
pub async fn run(a: FsckArgs) -> CliResult {
    let client = super::meta_client(&meta_addrs(&a.meta)).await?;
    let fs = client.open_fs(&a.name).await?;
    let r = strata_meta::client::fsck::check(&fs).await?;
    println!(
        "{}: {} directories, {} files",
        a.name, r.directories, r.files
    );
    for (parent, name, ino) in &r.dangling {
        println!(
            "dangling entry: directory {parent} name {:?} -> missing inode {ino}",
            String::from_utf8_lossy(name)
        );
    }
    for (ino, nlink, expected) in &r.bad_nlink {
        println!("inode {ino}: nlink {nlink}, entries say {expected}");
    }
    for ino in &r.unreachable {
        println!("inode {ino}: no entry reaches it");
    }
    for ino in &r.multiply_linked_dirs {
        println!("directory {ino}: reached through more than one entry");
    }
    for (g, tx) in &r.pending_transactions {
        println!(
            "group {g}: transaction {tx:016x} still pending (its leader finishes it within seconds)"
        );
    }
    if r.is_clean() {
        println!("clean");
        Ok(())
    } else {
        Err(CliError(format!(
            "{}: metadata has problems (listed above)",
            a.name
        )))
    }
}
