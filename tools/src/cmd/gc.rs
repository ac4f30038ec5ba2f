//! `strata gc`: compares the objects under a filesystem's prefix with what
//! its chunk maps reference. Objects no slice references and that are not
//! queued for deletion are leaks (a client died between uploading blocks and
//! committing them); referenced objects that are absent are damage. With
//! `--delete`, leaks older than `--min-age` are deleted (younger ones may
//! belong to a write that is about to commit).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use clap::Args;
use strata_cache::{StoreOptions, block_key, open_store};
use strata_meta::{Slice, snapshot_fs_name};

use super::{CliError, CliResult, meta_addrs};

#[derive(Args)]
pub struct GcArgs {
    /// Metaserver addresses, comma separated.
    #[arg(long)]
    pub meta: String,
    /// The filesystem.
    pub name: String,
    /// Delete the leaked objects (only report them without it).
    #[arg(long)]
    pub delete: bool,
    /// Seconds an unreferenced object must have existed before --delete
    /// removes it.
    #[arg(long, default_value_t = 3600)]
    pub min_age: u64,
    /// S3 endpoint URL, overriding the one recorded at format time.
    #[arg(long)]
    pub s3_endpoint: Option<String>,
}

fn keys_of(slices: impl Iterator<Item = Slice>, uuid: &str, bs: u32) -> HashSet<String> {
    let mut out = HashSet::new();
    for s in slices {
        for i in 0..s.len.div_ceil(bs) {
            out.insert(block_key(uuid, s.id, i, (s.len - i * bs).min(bs)));
        }
    }
    out
}

pub async fn run(a: GcArgs) -> CliResult {
    let client = super::meta_client(&meta_addrs(&a.meta)).await?;
    let fs = client.open_fs(&a.name).await?;
    let info = fs.info.clone();
    let store = open_store(
        &info.storage,
        &StoreOptions {
            s3_endpoint: a.s3_endpoint.clone().or(info.s3_endpoint.clone()),
            ..Default::default()
        },
    )
    .await
    .map_err(|e| CliError(format!("opening storage {}: {e}", info.storage)))?;
    // Clients keep writing, compacting and deleting while this runs, so it
    // reads twice, interleaved: objects, maps, objects, maps. An object is
    // missing only if both map reads reference it and the listing between
    // them lacks it (its upload came before the first read's commit, so it
    // cannot be late). It is leaked only if both listings have it and
    // neither map read references or queues it.
    let prefix = format!("{}/chunks/", info.uuid);
    let list = || async {
        store
            .list_detailed(&prefix)
            .await
            .map_err(|e| CliError(format!("listing {}: {e}", info.storage)))
    };
    // Snapshots share the filesystem's blocks: what they reference is in use.
    let mut snapshots = Vec::new();
    for s in client.list_snapshots(&a.name).await? {
        if s.ready {
            snapshots.push(client.open_fs(&snapshot_fs_name(&a.name, &s.name)).await?);
        }
    }
    let slices = || async {
        let (mut live, queued) = fs.all_slices().await?;
        for snap in &snapshots {
            live.extend(snap.all_slices().await?.0);
        }
        // Objects a loaded filesystem borrows live under the dumped one's
        // uuid and are not this filesystem's to check or delete.
        live.retain(|s| info.owns_blocks(s.id));
        Ok::<_, CliError>((live, queued))
    };
    let objects = list().await?;
    let (live1, queued1) = slices().await?;
    let after: HashSet<String> = list().await?.into_iter().map(|o| o.key).collect();
    let (live2, queued2) = slices().await?;
    let (bs, uuid) = (info.block_size, info.uuid.as_str());
    let referenced1 = keys_of(live1.into_iter(), uuid, bs);
    let referenced2 = keys_of(live2.into_iter(), uuid, bs);
    let queued_slices = queued1.iter().chain(&queued2).map(|d| Slice {
        id: d.slice,
        pos: 0,
        len: d.len,
    });
    let pending = keys_of(queued_slices, uuid, bs);
    let mut missing: Vec<&String> = referenced1
        .iter()
        .filter(|k| referenced2.contains(*k) && !after.contains(*k))
        .collect();
    missing.sort();
    let referenced: HashSet<&String> = referenced1.iter().chain(&referenced2).collect();
    let leaked: Vec<_> = objects
        .iter()
        .filter(|o| {
            !referenced.contains(&o.key) && !pending.contains(&o.key) && after.contains(&o.key)
        })
        .collect();
    let in_queue = objects.iter().filter(|o| pending.contains(&o.key)).count();
    let in_use = objects
        .iter()
        .filter(|o| referenced.contains(&o.key))
        .count();
    println!(
        "{}: {} objects, {} referenced, {} queued for deletion, {} leaked ({} bytes), {} missing",
        a.name,
        objects.len(),
        in_use,
        in_queue,
        leaked.len(),
        leaked.iter().map(|o| o.size).sum::<u64>(),
        missing.len()
    );
    for k in &missing {
        println!("missing: {k}");
    }
    for o in &leaked {
        println!("leaked: {} ({} bytes)", o.key, o.size);
    }
    if a.delete {
        let min_age = Duration::from_secs(a.min_age);
        let now = SystemTime::now();
        let old_enough = |m: Option<SystemTime>| match m {
            Some(t) => now.duration_since(t).unwrap_or_default() >= min_age,
            None => a.min_age == 0,
        };
        let mut deleted = 0;
        for o in leaked.iter().filter(|o| old_enough(o.modified)) {
            store
                .delete(&o.key)
                .await
                .map_err(|e| CliError(format!("deleting {}: {e}", o.key)))?;
            deleted += 1;
        }
        println!(
            "deleted {deleted} leaked objects ({} younger than {}s kept)",
            leaked.len() - deleted,
            a.min_age
        );
    }
    if !missing.is_empty() {
        return Err(CliError(format!(
            "{}: {} referenced objects are missing from the store",
            a.name,
            missing.len()
        )));
    }
    Ok(())
}
