//! `strata format`: creates a filesystem in the cluster map.

use clap::Args;
use strata_meta::FsSpec;

use super::{CliError, CliResult, meta_addrs, parse_size};

#[derive(Args)]
pub struct FormatArgs {
    /// Metaserver addresses, comma separated.
    #[arg(long)]
    pub meta: String,
    /// Name of the new filesystem (letters, digits, '-' and '_').
    pub name: String,
    /// Where blocks go: s3://bucket/prefix or file:///dir.
    #[arg(long)]
    pub storage: String,
    /// S3 endpoint URL recorded with the filesystem (default: AWS_ENDPOINT_URL or AWS).
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// Block size: the unit of upload and of object keys (power of two, >= 64K).
    #[arg(long, default_value = "4M", value_parser = parse_size)]
    pub block_size: u64,
    /// Chunk size: files are cut into chunks of this size (a multiple of the block size).
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Inode partitions to create, spread over the partition groups. More are
    /// added on their own when a group's partitions run out of inode numbers.
    #[arg(long, default_value_t = strata_meta::DEFAULT_PARTITIONS)]
    pub partitions: u32,
    /// Inode numbers each partition owns (16 to 2^40).
    #[arg(long, default_value_t = strata_meta::DEFAULT_PARTITION_SIZE)]
    pub inodes_per_partition: u64,
    /// Days a file whose last link went stays in the trash, where
    /// `strata trash` can restore it, before its blocks are deleted (0: at
    /// once, or when the last client that has it open closes it).
    #[arg(long, default_value_t = strata_meta::DEFAULT_TRASH_DAYS)]
    pub trash_days: u32,
    /// Most bytes (the sum of file sizes) the filesystem may hold: a quota
    /// on its root (`df` shows it; change it with `strata quota set FS /`).
    #[arg(long, value_parser = parse_size)]
    pub capacity: Option<u64>,
    /// Most inodes the filesystem may hold: a quota on its root, as
    /// --capacity.
    #[arg(long)]
    pub inodes: Option<u64>,
}

pub async fn run(a: FormatArgs) -> CliResult {
    check_storage_url(&a.storage)?;
    let block_size =
        u32::try_from(a.block_size).map_err(|_| CliError("--block-size is too large".into()))?;
    let chunk_size = u32::try_from(a.chunk_size)
        .map_err(|_| CliError("--chunk-size must be below 4G".into()))?;
    if a.partitions == 0 || a.partitions > 1024 {
        return Err(CliError("--partitions must be between 1 and 1024".into()));
    }
    if a.trash_days > 36_500 {
        return Err(CliError("--trash-days must be at most 36500".into()));
    }
    if a.capacity == Some(0) || a.inodes == Some(0) {
        return Err(CliError(
            "--capacity and --inodes must be above 0 (leave them out for no limit)".into(),
        ));
    }
    let client = super::meta_client(&meta_addrs(&a.meta)).await?;
    let spec = FsSpec {
        s3_endpoint: a.s3_endpoint.clone(),
        block_size,
        chunk_size,
        partitions: a.partitions,
        partition_size: a.inodes_per_partition,
        ..FsSpec::new(&a.name, &a.storage)
    };
    let info = client.format(&spec, (0, 0)).await?;
    let fs = client.open_fs(&a.name).await?;
    fs.set_trash_days(a.trash_days).await?;
    if a.capacity.is_some() || a.inodes.is_some() {
        fs.set_quota(fs.root(), a.capacity, a.inodes).await?;
    }
    println!(
        "formatted {} (id {}, uuid {}): storage {}, block {} B, chunk {} B, trash {} days",
        info.name, info.id, info.uuid, info.storage, info.block_size, info.chunk_size, a.trash_days
    );
    Ok(())
}

/// Refuses storage URLs the store layer cannot open, before anything is written.
pub fn check_storage_url(url: &str) -> CliResult {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(CliError(format!(
                "storage {url:?}: a file URL needs an absolute path, like file:///var/lib/strata/blocks"
            )));
        }
        return Ok(());
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        if rest.is_empty() || rest.starts_with('/') {
            return Err(CliError(format!(
                "storage {url:?}: name a bucket, like s3://bucket/prefix"
            )));
        }
        return Ok(());
    }
    Err(CliError(format!(
        "storage {url:?}: use s3://bucket/prefix or file:///dir"
    )))
}
