//! TLS between metaservers, and between them and their clients: rustls with
//! mutual authentication against one cluster CA.
//!
//! Every party (node or client) has a certificate signed by the cluster CA
//! (`strata cert`), presents it, and accepts only peers whose certificate
//! that CA signed. A client checks every metaserver against the one name
//! node certificates carry, `strata-node`: nodes move between addresses, the
//! CA is the cluster's own, and a node's identity is its certificate, not
//! where it listens. Who a peer is (`node-3`, `client-alice`) is its
//! certificate's common name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The name every node certificate carries and every client checks.
pub const NODE_NAME: &str = "strata-node";

/// Where one party's TLS material lives: PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This party's certificate (and any intermediates after it).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The cluster CA's certificate: peers must be signed by it.
    pub ca: PathBuf,
}

/// One party's TLS setup, for both ends of its connections.
#[derive(Clone)]
pub struct Tls {
    client: Arc<ClientConfig>,
    /// None for a client without a certificate (it presents a token).
    server: Option<Arc<ServerConfig>>,
    /// The common name of this party's own certificate, if it has one.
    identity: Option<String>,
    /// What its certificate lets it do (see `grant_of`), if it has one.
    grant: Option<crate::types::Grant>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("identity", &self.identity)
            .finish()
    }
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

impl Tls {
    /// Loads `files` and builds both configurations; every error names the
    /// file and what is wrong with it.
    pub fn load(files: &TlsFiles) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(Self::roots(&files.ca)?);
        let certs = read_certs(&files.cert, "--tls-cert")?;
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .map_err(|e| format!("--tls-key {}: {e}", files.key.display()))?;
        let identity = common_name(&certs[0]).ok_or_else(|| {
            format!(
                "--tls-cert {}: the certificate has no common name (make one with `strata cert issue`)",
                files.cert.display()
            )
        })?;
        let grant =
            grant_of(&certs[0]).map_err(|e| format!("--tls-cert {}: {e}", files.cert.display()))?;
        let mismatch = |e: rustls::Error| {
            format!(
                "--tls-cert {} and --tls-key {}: {e}",
                files.cert.display(),
                files.key.display()
            )
        };
        // A client without a certificate may still connect: it has no
        // rights until it presents a token (`server::access`).
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("--tls-ca {}: {e}", files.ca.display()))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(mismatch)?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(mismatch)?;
        Ok(Tls {
            client: Arc::new(client),
            server: Some(Arc::new(server)),
            identity: Some(identity),
            grant: Some(grant),
        })
    }

    /// A client that checks the nodes against the cluster CA `ca` but has
    /// no certificate of its own: it presents a token instead.
    pub fn load_ca_only(ca: &Path) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(Self::roots(ca)?)
            .with_no_client_auth();
        Ok(Tls {
            client: Arc::new(client),
            server: None,
            identity: None,
            grant: None,
        })
    }

    fn roots(ca: &Path) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        for c in read_certs(ca, "--tls-ca")? {
            roots
                .add(c)
                .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        }
        Ok(roots)
    }

    /// The common name of this party's certificate (`node-1`, `client-x`).
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// What this party's certificate lets it do, if it has one.
    pub fn grant(&self) -> Option<&crate::types::Grant> {
        self.grant.as_ref()
    }

    /// Whether this party can serve TLS (it has a certificate).
    pub fn can_serve(&self) -> bool {
        self.server.is_some()
    }

    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client.clone())
    }

    /// The server side; only a party with a certificate has one.
    pub(crate) fn acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.server.clone().map(tokio_rustls::TlsAcceptor::from)
    }
}

/// The name clients check every metaserver's certificate against.
pub(crate) fn server_name() -> ServerName<'static> {
    ServerName::try_from(NODE_NAME).expect("a valid DNS name")
}

/// OID 2.5.4.3 (commonName), DER-encoded with its tag and length.
const CN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
/// OID 2.5.4.10 (organizationName): where a client certificate carries its
/// grant, as Kubernetes carries a user's groups.
const O_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x0a];

/// The common name in a certificate's subject, if it has one.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    subject_attribute(cert, &CN_OID)
}

/// What a client certificate lets its holder do: the grant in its
/// subject's organization (`strata:admin`, `strata:fs=NAME[:ro]`, made by
/// `strata cert issue`). A certificate without one, signed by the
/// cluster's CA some other way, is an administrator's.
pub fn grant_of(cert: &CertificateDer<'_>) -> Result<crate::types::Grant, String> {
    match subject_attribute(cert, &O_OID) {
        None => Ok(crate::types::Grant::Admin),
        Some(o) => crate::types::Grant::parse(&o),
    }
}

/// The first string after attribute type `oid` in a certificate's subject.
fn subject_attribute(cert: &CertificateDer<'_>, oid: &[u8; 5]) -> Option<String> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    let subject = parsed.subject();
    let at = subject.windows(oid.len()).position(|w| w == oid)? + oid.len();
    // A string (UTF8String 0x0c, PrintableString 0x13, IA5String 0x16) of
    // short-form length: common names are at most 64 characters.
    let (&tag, rest) = subject.get(at..)?.split_first()?;
    let (&len, rest) = rest.split_first()?;
    if !matches!(tag, 0x0c | 0x13 | 0x16) || len >= 0x80 {
        return None;
    }
    let value = rest.get(..len as usize)?;
    String::from_utf8(value.to_vec()).ok()
}

/// Whether a TLS failure was the other side's verdict (or ours) on a
/// certificate, which no retry changes, rather than a broken connection.
pub(crate) fn is_refusal(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| {
            matches!(
                r,
                rustls::Error::AlertReceived(_)
                    | rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::PeerIncompatible(_)
            )
        })
}
