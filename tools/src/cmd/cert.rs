//! `strata cert`: the certificates a TLS cluster needs, made without
//! openssl. `init` makes the cluster CA; `issue` signs a metaserver node's
//! or a client's certificate with it. Every metaserver presents a
//! certificate for the DNS name `strata-node` whatever its address, and
//! every client checks that name: the CA, not the address, says who is a
//! node.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use strata_meta::Grant;
use time::{Duration, OffsetDateTime};

use super::{CliError, CliResult};

/// The DNS name in every node certificate; clients verify each metaserver
/// against it.
pub const NODE_NAME: &str = strata_meta::tls::NODE_NAME;

/// The CA's common name, followed by a random id: two clusters' CAs then
/// have different subjects, so a certificate of another cluster is refused
/// as coming from an unknown issuer, not with a puzzling bad signature.
const CA_CN: &str = "Strata cluster CA";
const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";
const CERT_MODE: u32 = 0o644;
const KEY_MODE: u32 = 0o600;
/// Far enough for any CA; the limit keeps the date arithmetic in range.
const MAX_VALID_DAYS: u32 = 36500;

#[derive(Subcommand)]
pub enum CertCommand {
    /// Make the cluster CA: DIR/ca.pem (certificate) and DIR/ca.key
    /// (private key).
    Init(InitArgs),
    /// Sign a certificate for a metaserver node (--node ID) or a client
    /// (--client NAME) with the CA in DIR.
    Issue(IssueArgs),
}

#[derive(Args)]
pub struct InitArgs {
    /// Directory for the CA's files; created with mode 0700 if missing.
    #[arg(long)]
    pub dir: PathBuf,
    /// Days the CA is valid. 0 makes a CA that has already expired, for
    /// testing that an expired certificate is refused.
    #[arg(long, value_name = "N", default_value_t = 3650, value_parser = parse_valid_days)]
    pub valid_days: u32,
    /// Replace an existing ca.pem and ca.key. Certificates the old CA signed
    /// are then refused by everyone given the new ca.pem.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
#[command(group(ArgGroup::new("subject").required(true).args(["node", "client"])))]
pub struct IssueArgs {
    /// Directory holding ca.pem and ca.key (from `strata cert init`); the
    /// new files go there too.
    #[arg(long)]
    pub dir: PathBuf,
    /// A metaserver node's id (its `meta serve --id`): writes node-ID.pem
    /// and node-ID.key, valid as server and client for the name
    /// `strata-node` and each --host.
    #[arg(long, value_name = "ID", value_parser = parse_node_id)]
    pub node: Option<u64>,
    /// A client's name (1 to 64 of A-Z a-z 0-9 . _ -): writes
    /// client-NAME.pem and client-NAME.key, valid as client only.
    #[arg(long, value_name = "NAME", value_parser = parse_client_name)]
    pub client: Option<String>,
    /// With --client: the holder administers the cluster (format, nodes,
    /// snapshots, gc, every filesystem).
    #[arg(long, requires = "client", conflicts_with = "fs")]
    pub admin: bool,
    /// With --client: the holder may use filesystem FS only (its tree, not
    /// the cluster's administration).
    #[arg(long, value_name = "FS", requires = "client")]
    pub fs: Option<String>,
    /// With --fs: the holder may only read it; every change fails with EROFS.
    #[arg(long, requires = "fs")]
    pub read_only: bool,
    /// With --fs: the holder sees only the tree below PATH (absolute within
    /// the filesystem), as its root, and cannot reach anything outside it.
    #[arg(long, value_name = "PATH", requires = "fs", value_parser = parse_subdir)]
    pub subdir: Option<String>,
    /// A further name of the node, as an IP address or DNS name (repeat the
    /// flag for several); `strata-node` is always in the certificate.
    #[arg(long = "host", value_name = "H", conflicts_with = "client", value_parser = parse_host)]
    pub hosts: Vec<SanType>,
    /// Days the certificate is valid. 0 makes a certificate that has already
    /// expired, for testing that an expired certificate is refused.
    #[arg(long, value_name = "N", default_value_t = 365, value_parser = parse_valid_days)]
    pub valid_days: u32,
    /// Replace the certificate and key if they exist.
    #[arg(long)]
    pub force: bool,
}

pub async fn run(c: CertCommand) -> CliResult {
    let written = match c {
        CertCommand::Init(a) => init(&a.dir, a.valid_days, a.force, now())?,
        CertCommand::Issue(a) => {
            let subject = match (a.node, a.client) {
                (Some(id), None) => Subject::Node { id, hosts: a.hosts },
                (None, Some(name)) => {
                    let grant = match (a.admin, a.fs) {
                        (true, None) => Grant::Admin,
                        (false, Some(fs)) => Grant::Fs {
                            fs,
                            read_only: a.read_only,
                            subdir: a.subdir.filter(|d| d != "/"),
                        },
                        _ => {
                            return Err(CliError(
                                "say what the client may do: --admin, or --fs FS [--read-only] [--subdir PATH]"
                                    .into(),
                            ));
                        }
                    };
                    Subject::Client { name, grant }
                }
                // clap's ArgGroup already refuses these.
                _ => {
                    return Err(CliError(
                        "give exactly one of --node ID or --client NAME".into(),
                    ));
                }
            };
            issue(&a.dir, &subject, a.valid_days, a.force, now())?
        }
    };
    for f in written {
        println!(
            "wrote {} ({}, mode {:04o})",
            f.path.display(),
            f.what,
            f.mode
        );
    }
    Ok(())
}

/// Whom `issue` signs a certificate for.
#[derive(Debug)]
pub enum Subject {
    Node {
        id: u64,
        hosts: Vec<SanType>,
    },
    /// A client and what it may do, carried in the subject's organization.
    Client {
        name: String,
        grant: Grant,
    },
}

impl Subject {
    /// The common name, which is also the file names' stem.
    fn common_name(&self) -> String {
        match self {
            Subject::Node { id, .. } => format!("node-{id}"),
            Subject::Client { name, .. } => format!("client-{name}"),
        }
    }
}

/// A file a command wrote.
#[derive(Debug)]
pub struct Written {
    pub path: PathBuf,
    pub what: &'static str,
    pub mode: u32,
}

/// A file a command is about to write.
struct Output {
    path: PathBuf,
    what: &'static str,
    mode: u32,
    contents: String,
}

/// Makes the cluster CA in `dir`: a self-signed certificate that may sign
/// end-entity certificates only (path length 0), and its key.
pub fn init(
    dir: &Path,
    valid_days: u32,
    force: bool,
    now: OffsetDateTime,
) -> Result<Vec<Written>, CliError> {
    let paths = [dir.join(CA_KEY_FILE), dir.join(CA_CERT_FILE)];
    refuse_existing(&paths, force)?;

    let key = KeyPair::generate().map_err(|e| CliError(format!("generating the CA key: {e}")))?;
    let mut params = CertificateParams::default();
    let cluster_id = uuid::Uuid::new_v4().simple().to_string();
    params.distinguished_name = common_name(&format!("{CA_CN} {}", &cluster_id[..8]));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params.not_before, params.not_after) = validity(now, valid_days);
    let cert = params
        .self_signed(&key)
        .map_err(|e| CliError(format!("making the CA certificate: {e}")))?;

    let [key_path, cert_path] = paths;
    write_outputs(
        dir,
        vec![
            Output {
                path: key_path,
                what: "CA private key",
                mode: KEY_MODE,
                contents: key.serialize_pem(),
            },
            Output {
                path: cert_path,
                what: "CA certificate",
                mode: CERT_MODE,
                contents: cert.pem(),
            },
        ],
    )
}

/// Signs a certificate for `subject` with the CA in `dir` and writes it and
/// its new key there.
pub fn issue(
    dir: &Path,
    subject: &Subject,
    valid_days: u32,
    force: bool,
    now: OffsetDateTime,
) -> Result<Vec<Written>, CliError> {
    let stem = subject.common_name();
    let paths = [
        dir.join(format!("{stem}.key")),
        dir.join(format!("{stem}.pem")),
    ];
    refuse_existing(&paths, force)?;
    let ca = load_ca(dir, now)?;

    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(&stem);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    (params.not_before, params.not_after) = validity(now, valid_days);
    match subject {
        Subject::Node { hosts, .. } => {
            let node_name = SanType::DnsName(NODE_NAME.try_into().expect("strata-node is ASCII"));
            params.subject_alt_names = vec![node_name];
            for h in hosts {
                if !params.subject_alt_names.contains(h) {
                    params.subject_alt_names.push(h.clone());
                }
            }
            // Nodes also connect to each other, as clients.
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
        }
        Subject::Client { grant, .. } => {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params
                .distinguished_name
                .push(DnType::OrganizationName, grant.to_string());
        }
    }
    let key = KeyPair::generate().map_err(|e| CliError(format!("generating a key: {e}")))?;
    let cert = params
        .signed_by(&key, &ca)
        .map_err(|e| CliError(format!("signing the certificate for {stem}: {e}")))?;

    let [key_path, cert_path] = paths;
    write_outputs(
        dir,
        vec![
            Output {
                path: key_path,
                what: "private key",
                mode: KEY_MODE,
                contents: key.serialize_pem(),
            },
            Output {
                path: cert_path,
                what: "certificate",
                mode: CERT_MODE,
                contents: cert.pem(),
            },
        ],
    )
}

/// Reads the CA in `dir` and checks that its key and certificate belong
/// together: a mismatched pair would sign certificates nobody accepts.
fn load_ca(dir: &Path, now: OffsetDateTime) -> Result<Issuer<'static, KeyPair>, CliError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    let read = |path: &Path| {
        fs::read(path).map_err(|e| {
            CliError(if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "{} not found: make the CA first with `strata cert init --dir {}`",
                    path.display(),
                    dir.display()
                )
            } else {
                format!("reading {}: {e}", path.display())
            })
        })
    };
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;

    let not_ca = |why: String| {
        CliError(format!(
            "{}: {why}; it must be the certificate `strata cert init` wrote",
            cert_path.display()
        ))
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(&cert_pem)
        .map_err(|e| not_ca(format!("not a PEM certificate ({e})")))?;
    let ca_cert = pem
        .parse_x509()
        .map_err(|e| not_ca(format!("not an X.509 certificate ({e})")))?;
    if !ca_cert.is_ca() {
        return Err(not_ca("not a CA certificate".into()));
    }

    let key_text = std::str::from_utf8(&key_pem)
        .map_err(|_| CliError(format!("{}: not a PEM file", key_path.display())))?;
    let key = KeyPair::from_pem(key_text).map_err(|e| {
        CliError(format!(
            "{}: not a private key this tool can read ({e})",
            key_path.display()
        ))
    })?;
    if ca_cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(CliError(format!(
            "{} is not the key of {}: restore the pair `strata cert init` wrote, or make a new CA with --force (and issue every certificate again)",
            key_path.display(),
            cert_path.display()
        )));
    }
    // Signing goes ahead (a test may want exactly this), but the user should
    // know why every peer will refuse the result.
    if ca_cert.validity().not_after.timestamp() < now.unix_timestamp() {
        eprintln!(
            "warning: {} has expired: certificates it signs are refused until a new CA is made (`strata cert init --force`) and they are issued again",
            cert_path.display()
        );
    }

    Issuer::from_ca_cert_der(&pem.contents.into(), key)
        .map_err(|e| not_ca(format!("cannot sign with it ({e})")))
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// `not_before` is a day back so a peer whose clock is behind accepts a
/// fresh certificate; `valid_days` 0 ends the validity an hour ago.
fn validity(now: OffsetDateTime, valid_days: u32) -> (OffsetDateTime, OffsetDateTime) {
    let not_before = now - Duration::days(1);
    let not_after = match valid_days {
        0 => now - Duration::hours(1),
        d => now + Duration::days(d.into()),
    };
    (not_before, not_after)
}

fn now() -> OffsetDateTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    OffsetDateTime::from_unix_timestamp(secs as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Checked before a key is generated so that a refusal changes nothing.
fn refuse_existing(paths: &[PathBuf], force: bool) -> CliResult {
    if force {
        return Ok(());
    }
    for p in paths {
        if fs::symlink_metadata(p).is_ok() {
            return Err(CliError(format!(
                "{} already exists; pass --force to replace it",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Writes each file through a temporary file renamed into place, so a
/// reader never sees half a key and a replaced key never keeps the old
/// file's mode.
fn write_outputs(dir: &Path, outputs: Vec<Output>) -> Result<Vec<Written>, CliError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CliError(format!("creating {}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for o in outputs {
        write_file(&o.path, o.contents.as_bytes(), o.mode)
            .map_err(|e| CliError(format!("writing {}: {e}", o.path.display())))?;
        written.push(Written {
            path: o.path,
            what: o.what,
            mode: o.mode,
        });
    }
    Ok(written)
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        // Created 0600 so a key is never readable by others, even briefly;
        // then set exactly, as the umask does not apply to fchmod.
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(KEY_MODE)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn parse_valid_days(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(d) if d <= MAX_VALID_DAYS => Ok(d),
        _ => Err(format!(
            "expected a number of days from 0 to {MAX_VALID_DAYS} (0 makes an already expired certificate)"
        )),
    }
}

fn parse_node_id(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err("a node id is a whole number from 1 up, the node's `meta serve --id`".into()),
    }
}

/// A grant's subdirectory, in its one spelling (`/` for the whole
/// filesystem).
pub(super) fn parse_subdir(s: &str) -> Result<String, String> {
    Ok(strata_meta::normalize_subdir(s)?.unwrap_or_else(|| "/".into()))
}

fn parse_client_name(s: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if (1..=64).contains(&s.len()) && s.chars().all(allowed) {
        Ok(s.to_string())
    } else {
        Err("a client name is 1 to 64 characters, each a letter, digit, '.', '_' or '-'".into())
    }
}

/// An IP address becomes an IP SAN, anything else must be a DNS name a TLS
/// client can ask for (checked as rustls checks it).
fn parse_host(s: &str) -> Result<SanType, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let bad = || {
        format!(
            "{s:?} is neither an IP address nor a DNS name (give the host alone: no port, no scheme, no trailing dot, no wildcard)"
        )
    };
    if s.ends_with('.') || rustls_pki_types::DnsName::try_from(s).is_err() {
        return Err(bad());
    }
    Ok(SanType::DnsName(s.try_into().map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, RootCertStore};
    use std::sync::Arc;
    use x509_parser::certificate::X509Certificate;
    use x509_parser::extensions::GeneralName;

    #[derive(Parser)]
    struct TestCli {
        #[command(subcommand)]
        command: CertCommand,
    }

    fn parse(args: &[&str]) -> Result<CertCommand, String> {
        TestCli::try_parse_from(std::iter::once("cert").chain(args.iter().copied()))
            .map(|c| c.command)
            .map_err(|e| e.to_string())
    }

    fn node(id: u64, hosts: &[&str]) -> Subject {
        Subject::Node {
            id,
            hosts: hosts.iter().map(|h| parse_host(h).unwrap()).collect(),
        }
    }

    fn client(name: &str) -> Subject {
        Subject::Client {
            name: name.into(),
            grant: Grant::Admin,
        }
    }

    fn der(path: &Path) -> CertificateDer<'static> {
        let bytes = fs::read(path).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).unwrap();
        assert_eq!(pem.label, "CERTIFICATE");
        CertificateDer::from(pem.contents)
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn cn(cert: &X509Certificate<'_>) -> String {
        let mut cns = cert.subject().iter_common_name();
        let cn = cns.next().unwrap().as_str().unwrap().to_string();
        assert!(cns.next().is_none());
        cn
    }

    fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
        let Some(ext) = cert.subject_alternative_name().unwrap() else {
            return Vec::new();
        };
        ext.value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => format!("dns:{d}"),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => format!("ip:{}", IpAddr::from(<[u8; 4]>::try_from(*b).unwrap())),
                    _ => format!("ip:{}", IpAddr::from(<[u8; 16]>::try_from(*b).unwrap())),
                },
                other => panic!("unexpected SAN {other:?}"),
            })
            .collect()
    }

    /// (serverAuth, clientAuth), and that no other purpose is there.
    fn ekus(cert: &X509Certificate<'_>) -> (bool, bool) {
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(!eku.any && !eku.code_signing && !eku.email_protection);
        assert!(!eku.time_stamping && !eku.ocsp_signing && eku.other.is_empty());
        (eku.server_auth, eku.client_auth)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(ca_pem: &Path) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(der(ca_pem)).unwrap();
        Arc::new(roots)
    }

    /// What a client given `ca_pem` says of `cert` presented by a server it
    /// reached as `name`.
    fn verify_server(ca_pem: &Path, cert: &Path, name: &str) -> Result<(), rustls::Error> {
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca_pem), provider())
                .build()
                .unwrap();
        let name = ServerName::try_from(name.to_string()).unwrap();
        verifier
            .verify_server_cert(&der(cert), &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    /// What a metaserver given `ca_pem` says of `cert` presented by a client.
    fn verify_client(ca_pem: &Path, cert: &Path) -> Result<(), rustls::Error> {
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca_pem), provider())
                .build()
                .unwrap();
        verifier
            .verify_client_cert(&der(cert), &[], UnixTime::now())
            .map(|_| ())
    }

    fn is_cert_error(r: Result<(), rustls::Error>, want: fn(&CertificateError) -> bool) -> bool {
        matches!(r, Err(rustls::Error::InvalidCertificate(ref e)) if want(e))
    }

    /// Signed by a different CA: each CA's subject has its own random id,
    /// so the verifier finds no issuer for it.
    fn other_ca(e: &CertificateError) -> bool {
        matches!(e, CertificateError::UnknownIssuer)
    }

    #[test]
    fn init_makes_a_ca_with_an_owner_only_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let now = now();
        let written = init(&dir, 3650, false, now).unwrap();
        let paths: Vec<_> = written.iter().map(|w| w.path.clone()).collect();
        assert_eq!(paths, vec![dir.join("ca.key"), dir.join("ca.pem")]);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("ca.key")), 0o600);
        assert_eq!(mode(&dir.join("ca.pem")), 0o644);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);

        let ca_der = der(&dir.join("ca.pem"));
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let name = cn(&ca);
        let id = name
            .strip_prefix("Strata cluster CA ")
            .expect("the CA's name");
        assert!(
            id.len() == 8 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "{name}"
        );
        assert_eq!(ca.subject(), ca.issuer());
        let bc = ca.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let ku = ca.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
        assert!(ca.subject_alternative_name().unwrap().is_none());
        let t = now.unix_timestamp();
        assert_eq!(ca.validity().not_before.timestamp(), t - 86400);
        assert_eq!(ca.validity().not_after.timestamp(), t + 3650 * 86400);
        // The key on disk is the certificate's.
        let key = KeyPair::from_pem(&fs::read_to_string(dir.join("ca.key")).unwrap()).unwrap();
        assert_eq!(
            ca.public_key().raw,
            key.subject_public_key_info().as_slice()
        );
        assert!(key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256));
    }

    #[test]
    fn node_certificate_profile() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let now = now();
        init(dir, 3650, false, now).unwrap();
        let written = issue(
            dir,
            &node(7, &["10.0.0.7", "meta7.example", "fd00::7", "strata-node"]),
            365,
            false,
            now,
        )
        .unwrap();
        let paths: Vec<_> = written.iter().map(|w| w.path.clone()).collect();
        assert_eq!(paths, vec![dir.join("node-7.key"), dir.join("node-7.pem")]);
        assert_eq!(mode(&dir.join("node-7.key")), 0o600);
        assert_eq!(mode(&dir.join("node-7.pem")), 0o644);

        let ca_der = der(&dir.join("ca.pem"));
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let node_der = der(&dir.join("node-7.pem"));
        let (_, cert) = x509_parser::parse_x509_certificate(&node_der).unwrap();
        assert_eq!(cn(&cert), "node-7");
        assert_eq!(cert.issuer(), ca.subject());
        assert_eq!(
            sans(&cert),
            [
                "dns:strata-node",
                "ip:10.0.0.7",
                "dns:meta7.example",
                "ip:fd00::7"
            ]
        );
        assert_eq!(ekus(&cert), (true, true));
        assert!(!cert.is_ca());
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign());
        assert!(cert.verify_signature(Some(ca.public_key())).is_ok());
        let t = now.unix_timestamp();
        assert_eq!(cert.validity().not_before.timestamp(), t - 86400);
        assert_eq!(cert.validity().not_after.timestamp(), t + 365 * 86400);
        let key = KeyPair::from_pem(&fs::read_to_string(dir.join("node-7.key")).unwrap()).unwrap();
        assert_eq!(
            cert.public_key().raw,
            key.subject_public_key_info().as_slice()
        );
    }

    #[test]
    fn client_certificate_profile() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        init(dir, 3650, false, now()).unwrap();
        issue(dir, &client("backup.job-1"), 365, false, now()).unwrap();
        assert_eq!(mode(&dir.join("client-backup.job-1.key")), 0o600);
        assert_eq!(mode(&dir.join("client-backup.job-1.pem")), 0o644);
        let cert_der = der(&dir.join("client-backup.job-1.pem"));
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
        assert_eq!(cn(&cert), "client-backup.job-1");
        assert_eq!(sans(&cert), Vec::<String>::new());
        assert_eq!(ekus(&cert), (false, true));
        assert!(!cert.is_ca());
    }

    /// The grant a client certificate carries is what the metaserver reads
    /// back from it.
    #[test]
    fn client_certificates_carry_their_grant() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        init(dir, 3650, false, now()).unwrap();
        let grants = [
            ("a", Grant::Admin),
            (
                "w",
                Grant::Fs {
                    fs: "data".into(),
                    read_only: false,
                    subdir: None,
                },
            ),
            (
                "r",
                Grant::Fs {
                    fs: "data".into(),
                    read_only: true,
                    subdir: None,
                },
            ),
            (
                "s",
                Grant::Fs {
                    fs: "data".into(),
                    read_only: false,
                    subdir: Some("/team/a b:c".into()),
                },
            ),
        ];
        for (name, grant) in grants {
            let subject = Subject::Client {
                name: name.into(),
                grant: grant.clone(),
            };
            issue(dir, &subject, 365, false, now()).unwrap();
            let cert = der(&dir.join(format!("client-{name}.pem")));
            assert_eq!(strata_meta::tls::grant_of(&cert), Ok(grant));
            assert_eq!(
                strata_meta::tls::common_name(&cert).as_deref(),
                Some(format!("client-{name}").as_str())
            );
        }
    }

    #[test]
    fn issued_certificates_verify_against_ca_pem() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        init(dir, 3650, false, now()).unwrap();
        issue(
            dir,
            &node(1, &["10.1.2.3", "meta1.example"]),
            365,
            false,
            now(),
        )
        .unwrap();
        issue(dir, &client("alice"), 365, false, now()).unwrap();
        let ca = dir.join("ca.pem");
        let node = dir.join("node-1.pem");
        let alice = dir.join("client-alice.pem");

        // A client reaching a metaserver checks the name strata-node.
        verify_server(&ca, &node, NODE_NAME).unwrap();
        verify_server(&ca, &node, "10.1.2.3").unwrap();
        verify_server(&ca, &node, "meta1.example").unwrap();
        assert!(is_cert_error(
            verify_server(&ca, &node, "other.example"),
            |e| matches!(
                e,
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ));
        // Nodes are clients of each other; clients are clients only.
        verify_client(&ca, &node).unwrap();
        verify_client(&ca, &alice).unwrap();
        assert!(is_cert_error(verify_server(&ca, &alice, NODE_NAME), |e| {
            matches!(
                e,
                CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. }
            )
        }));
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let ours = tmp.path().join("ours");
        let theirs = tmp.path().join("theirs");
        init(&ours, 3650, false, now()).unwrap();
        init(&theirs, 3650, false, now()).unwrap();
        issue(&theirs, &node(1, &[]), 365, false, now()).unwrap();
        issue(&theirs, &client("mallory"), 365, false, now()).unwrap();
        let ca = ours.join("ca.pem");
        assert!(is_cert_error(
            verify_server(&ca, &theirs.join("node-1.pem"), NODE_NAME),
            other_ca
        ));
        assert!(is_cert_error(
            verify_client(&ca, &theirs.join("client-mallory.pem")),
            other_ca
        ));
    }

    #[test]
    fn valid_days_zero_makes_an_expired_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let now = now();
        init(dir, 3650, false, now).unwrap();
        issue(dir, &node(2, &[]), 0, false, now).unwrap();
        let cert_der = der(&dir.join("node-2.pem"));
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
        let t = now.unix_timestamp();
        assert_eq!(cert.validity().not_after.timestamp(), t - 3600);
        assert_eq!(cert.validity().not_before.timestamp(), t - 86400);
        let expired = |e: &CertificateError| {
            matches!(
                e,
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        };
        assert!(is_cert_error(
            verify_server(&dir.join("ca.pem"), &dir.join("node-2.pem"), NODE_NAME),
            expired
        ));
    }

    #[test]
    fn existing_files_are_kept_without_force() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        init(dir, 3650, false, now()).unwrap();
        let ca_before = fs::read(dir.join("ca.pem")).unwrap();
        let e = init(dir, 3650, false, now()).unwrap_err().0;
        assert!(
            e.contains("ca.key already exists") && e.contains("--force"),
            "{e}"
        );
        assert_eq!(fs::read(dir.join("ca.pem")).unwrap(), ca_before);

        issue(dir, &client("bob"), 365, false, now()).unwrap();
        let bob_before = fs::read(dir.join("client-bob.pem")).unwrap();
        let e = issue(dir, &client("bob"), 365, false, now()).unwrap_err().0;
        assert!(e.contains("client-bob.key already exists"), "{e}");
        assert_eq!(fs::read(dir.join("client-bob.pem")).unwrap(), bob_before);
        // Either file alone blocks too (a half-finished earlier run).
        fs::remove_file(dir.join("client-bob.key")).unwrap();
        let e = issue(dir, &client("bob"), 365, false, now()).unwrap_err().0;
        assert!(e.contains("client-bob.pem already exists"), "{e}");

        // --force replaces, and a replaced key gets 0600 whatever it had.
        fs::write(dir.join("client-bob.key"), "old").unwrap();
        fs::set_permissions(
            dir.join("client-bob.key"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        issue(dir, &client("bob"), 365, true, now()).unwrap();
        assert_ne!(fs::read(dir.join("client-bob.pem")).unwrap(), bob_before);
        assert_eq!(mode(&dir.join("client-bob.key")), 0o600);
        init(dir, 3650, true, now()).unwrap();
        assert_ne!(fs::read(dir.join("ca.pem")).unwrap(), ca_before);
        // bob's certificate is from the replaced CA now.
        assert!(is_cert_error(
            verify_client(&dir.join("ca.pem"), &dir.join("client-bob.pem")),
            other_ca
        ));
    }

    #[test]
    fn issue_needs_the_ca_and_its_own_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let e = issue(dir, &node(1, &[]), 365, false, now()).unwrap_err().0;
        assert!(
            e.contains("ca.pem not found") && e.contains("strata cert init --dir"),
            "{e}"
        );

        let other = tmp.path().join("other");
        init(dir, 3650, false, now()).unwrap();
        init(&other, 3650, false, now()).unwrap();
        fs::copy(other.join("ca.key"), dir.join("ca.key")).unwrap();
        let e = issue(dir, &node(1, &[]), 365, false, now()).unwrap_err().0;
        assert!(e.contains("ca.key is not the key of"), "{e}");

        // A node certificate is not a CA.
        issue(&other, &node(1, &[]), 365, false, now()).unwrap();
        fs::copy(other.join("node-1.pem"), dir.join("ca.pem")).unwrap();
        let e = issue(dir, &node(2, &[]), 365, false, now()).unwrap_err().0;
        assert!(e.contains("not a CA certificate"), "{e}");
        assert!(!dir.join("node-2.key").exists());
    }

    #[test]
    fn arguments_are_checked() {
        let Ok(CertCommand::Issue(a)) = parse(&[
            "issue", "--dir", "d", "--node", "3", "--host", "10.0.0.3", "--host", "m3",
        ]) else {
            panic!("a node with hosts parses")
        };
        assert_eq!((a.node, a.hosts.len(), a.valid_days), (Some(3), 2, 365));
        let Ok(CertCommand::Init(a)) = parse(&["init", "--dir", "d"]) else {
            panic!("init parses")
        };
        assert_eq!((a.valid_days, a.force), (3650, false));
        assert!(parse(&["issue", "--dir", "d", "--client", "x", "--valid-days", "0"]).is_ok());

        let long_name = "a".repeat(65);
        let refused = [
            (
                &["issue", "--dir", "d", "--node", "0"][..],
                "node id is a whole number from 1",
            ),
            (
                &["issue", "--dir", "d", "--node=-1"],
                "node id is a whole number from 1",
            ),
            (
                &["issue", "--dir", "d", "--node", "x"],
                "node id is a whole number from 1",
            ),
            (
                &["issue", "--dir", "d", "--client", ""],
                "1 to 64 characters",
            ),
            (
                &["issue", "--dir", "d", "--client", "a/b"],
                "1 to 64 characters",
            ),
            (
                &["issue", "--dir", "d", "--client", &long_name],
                "1 to 64 characters",
            ),
            (&["issue", "--dir", "d"], "--node <ID>|--client <NAME>"),
            (
                &["issue", "--dir", "d", "--node", "1", "--client", "c"],
                "cannot be used with",
            ),
            (
                &["issue", "--dir", "d", "--client", "c", "--host", "h"],
                "cannot be used with",
            ),
            (
                &[
                    "issue",
                    "--dir",
                    "d",
                    "--node",
                    "1",
                    "--host",
                    "10.0.0.1:7000",
                ],
                "neither an IP",
            ),
            (
                &["issue", "--dir", "d", "--node", "1", "--host", "*.example"],
                "neither an IP",
            ),
            (
                &["issue", "--dir", "d", "--node", "1", "--host", "a.example."],
                "neither an IP",
            ),
            (
                &["init", "--dir", "d", "--valid-days", "36501"],
                "from 0 to 36500",
            ),
            (
                &["issue", "--dir", "d", "--node", "1", "--valid-days=-1"],
                "from 0 to 36500",
            ),
        ];
        for (args, want) in refused {
            let e = parse(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} parsed"));
            assert!(e.contains(want), "{args:?}: {e}");
        }
        assert!(parse_client_name(&"a".repeat(64)).is_ok());
    }
}
