//! One module per subcommand, and what they share: argument parsing,
//! the CLI error type, and finding the embedded default's metaserver.

pub mod bench;
pub mod cert;
pub mod dump;
pub mod export;
pub mod format;
pub mod fsck;
pub mod gc;
pub mod import;
pub mod manifest;
pub mod meta;
pub mod mount;
pub mod open;
pub mod place;
pub mod profile;
pub mod quota;
pub mod snapshot;
pub mod stats;
pub mod status;
pub mod token;
pub mod trash;
pub mod warmup;

use std::path::PathBuf;

/// The error a command reports to the user: one line saying what went wrong
/// and what to do.
#[derive(Debug)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

pub type CliResult = Result<(), CliError>;

/// TLS flags every command takes: a client's certificate for metaservers
/// that take only TLS (`strata meta serve --tls-*`), and a node's own for
/// `meta serve`. All three or none.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// The cluster CA's certificate (PEM): metaservers (and, for a node,
    /// its peers and clients) must present a certificate it signed.
    #[arg(long, global = true, env = "STRATA_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// This client's (or node's) certificate (PEM), signed by the CA; make
    /// one with `strata cert issue`.
    #[arg(long, global = true, env = "STRATA_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, global = true, env = "STRATA_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// An access token (from `strata token create`): this client may do
    /// what it grants. With TLS it needs only --tls-ca, no certificate.
    #[arg(
        long,
        global = true,
        env = "STRATA_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// How this process connects to metaservers, from `TlsArgs` at start.
static CREDENTIALS: std::sync::OnceLock<strata_meta::rpc::Credentials> = std::sync::OnceLock::new();

/// Loads the TLS flags (the CA alone, or with a certificate and its key)
/// and the token, for every connection this process makes.
pub fn init_tls(a: &TlsArgs) -> CliResult {
    let tls = match (&a.tls_ca, &a.tls_cert, &a.tls_key) {
        (None, None, None) => None,
        (Some(ca), Some(cert), Some(key)) => Some(
            strata_meta::tls::Tls::load(&strata_meta::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })
            .map_err(CliError)?,
        ),
        (Some(ca), None, None) if a.token.is_some() => {
            Some(strata_meta::tls::Tls::load_ca_only(ca).map_err(CliError)?)
        }
        _ => {
            return Err(CliError(
                "give --tls-ca, --tls-cert and --tls-key together (or --tls-ca with --token, \
                 or none of them)"
                    .into(),
            ));
        }
    };
    if let Some(t) = &a.token {
        strata_meta::Token::split(t).map_err(|e| CliError(format!("--token: {e}")))?;
    }
    let _ = CREDENTIALS.set(strata_meta::rpc::Credentials {
        tls,
        token: a.token.clone(),
    });
    Ok(())
}

/// This process's TLS, if it was given.
pub fn tls() -> Option<strata_meta::tls::Tls> {
    credentials().tls
}

/// How this process connects to metaservers (TLS, token).
pub fn credentials() -> strata_meta::rpc::Credentials {
    CREDENTIALS.get().cloned().unwrap_or_default()
}

/// A metadata client of the metaservers at `addrs`, with this process's
/// credentials.
pub async fn meta_client(
    addrs: &[String],
) -> Result<std::sync::Arc<strata_meta::MetaClient>, CliError> {
    Ok(strata_meta::MetaClient::connect_with(addrs, credentials()).await?)
}

/// `~/.local/share/strata`, where the embedded default keeps its state.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("strata"),
        _ => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".local/share/strata")
        }
    }
}

/// The metaservers at `meta` (`--meta ADDRS`), or without it the one inside
/// the embedded default's running mount.
pub async fn connect(
    meta: Option<&str>,
) -> Result<std::sync::Arc<strata_meta::MetaClient>, CliError> {
    let addrs = match meta {
        Some(m) => meta_addrs(m),
        None => {
            let dd = default_data_dir();
            let addr = std::fs::read_to_string(strata_meta::server::addr_file(&dd)).map_err(|_| {
                CliError(format!(
                    "no --meta given and no embedded mount running on {} (start one with `strata mount DIR`, or pass --meta ADDRS)",
                    dd.display()
                ))
            })?;
            vec![addr.trim().to_string()]
        }
    };
    meta_client(&addrs).await
}

/// What a process's metrics endpoint shows.
pub enum MetricsOf {
    /// A mount: FUSE operations, object store and metadata requests (and,
    /// for the embedded default, its node's too).
    Mount,
    /// A metaserver node.
    Node,
}

/// Registers every family of the process's metrics, so a scrape (or
/// `strata stats`) shows them from the start, and serves them on `addr`
/// when given (`--metrics`).
pub async fn serve_metrics(addr: Option<&str>, of: MetricsOf) -> CliResult {
    match of {
        MetricsOf::Mount => {
            strata_fuse::metrics::metrics();
            strata_cache::metrics::register();
            strata_meta::metrics::client();
        }
        MetricsOf::Node => {
            strata_meta::metrics::node();
        }
    }
    let Some(addr) = addr else {
        return Ok(());
    };
    let bound = strata_metrics::serve(addr)
        .await
        .map_err(|e| CliError(format!("--metrics: {e}")))?;
    tracing::info!(%bound, "metrics at http://{bound}/metrics");
    Ok(())
}

/// Splits `a,b,c` into addresses.
pub fn meta_addrs(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect()
}

/// Parses sizes like `4M`, `64MiB`, `65536`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 4M, 64MiB, 65536)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "{s:?}: unknown size unit {unit:?} (use K, M, G or T)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("4X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999999999T").is_err());
    }

    #[test]
    fn addresses_split() {
        assert_eq!(meta_addrs("a:1, b:2,,"), vec!["a:1", "b:2"]);
    }
}
