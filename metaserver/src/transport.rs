//! The byte streams under the wire protocol: TCP between machines, a Unix
//! socket on one machine.
//!
//! An address is `host:port` (TCP) or `unix:/absolute/path` (a Unix socket).
//! The embedded default's metaserver listens only on a Unix socket in its
//! data dir, created owner-only (mode 0600 inside a directory nobody else
//! can enter while it is made) and checked again per connection by the
//! peer's uid, so a local user who cannot touch the mount's files cannot
//! reach its metadata either.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::tls::{self, Tls};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// The prefix of a Unix socket address.
pub const UNIX_PREFIX: &str = "unix:";

/// Longest path a Unix socket address may have (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Where a metaserver listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(String),
    Unix(PathBuf),
}

impl Endpoint {
    pub fn parse(addr: &str) -> Result<Endpoint, String> {
        match addr.strip_prefix(UNIX_PREFIX) {
            Some(path) => {
                let path = Path::new(path);
                if !path.is_absolute() {
                    return Err(format!(
                        "{addr}: a Unix socket address needs an absolute path"
                    ));
                }
                if path.as_os_str().len() > MAX_SOCKET_PATH {
                    return Err(format!(
                        "{addr}: a Unix socket path may have at most {MAX_SOCKET_PATH} bytes \
                         (use a shorter data dir)"
                    ));
                }
                Ok(Endpoint::Unix(path.to_path_buf()))
            }
            None if addr.is_empty() => Err("an empty metaserver address".into()),
            None => Ok(Endpoint::Tcp(addr.to_string())),
        }
    }
}

/// The address of the Unix socket in `data_dir`.
pub fn socket_address(data_dir: &Path) -> String {
    format!("{UNIX_PREFIX}{}", data_dir.join("meta.sock").display())
}

/// Why a connection could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// Not now (nothing listens, a timeout): another node or a retry may do.
    Failed(String),
    /// This client may not connect at all (the socket's owner, a
    /// certificate refused): retrying changes nothing.
    Denied(String),
}

/// Connects to `addr` and splits the stream; a TCP connection is TLS when
/// `tls` is given (a Unix socket never is: the kernel says who the peer is).
pub async fn connect(addr: &str, tls: Option<&Tls>) -> Result<(ReadHalf, WriteHalf), ConnectError> {
    let routed = routes::through(addr);
    let endpoint =
        Endpoint::parse(routed.as_deref().unwrap_or(addr)).map_err(ConnectError::Failed)?;
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
        match endpoint {
            Endpoint::Tcp(a) => {
                let s = TcpStream::connect(&a).await?;
                s.set_nodelay(true)?;
                match tls {
                    None => {
                        let (r, w) = s.into_split();
                        let halves: (ReadHalf, WriteHalf) = (Box::new(r), Box::new(w));
                        Ok::<_, std::io::Error>(halves)
                    }
                    Some(tls) => {
                        let stream = tls.connector().connect(tls::server_name(), s).await?;
                        let (r, w) = tokio::io::split(stream);
                        let halves: (ReadHalf, WriteHalf) = (Box::new(r), Box::new(w));
                        Ok(halves)
                    }
                }
            }
            Endpoint::Unix(p) => {
                let (r, w) = UnixStream::connect(&p).await?.into_split();
                let halves: (ReadHalf, WriteHalf) = (Box::new(r), Box::new(w));
                Ok(halves)
            }
        }
    })
    .await;
    match connected {
        Err(_) => Err(ConnectError::Failed("timed out".into())),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(ConnectError::Denied(format!(
                "{e}: the socket is owner-only; run this as the user who runs the mount"
            )))
        }
        Ok(Err(e)) if tls::is_refusal(&e) => Err(ConnectError::Denied(format!("TLS: {e}"))),
        Ok(Err(e)) if tls.is_some() && e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(ConnectError::Failed(format!(
                "TLS handshake cut off ({e}); is the metaserver started with TLS (--tls-cert)?"
            )))
        }
        Ok(Err(e)) => Err(ConnectError::Failed(e.to_string())),
        Ok(Ok(halves)) => Ok(halves),
    }
}

/// Who is on the other end of an accepted connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// This node's own user (or root) on its Unix socket.
    Owner,
    /// The peer presented a certificate the cluster CA signed: its common
    /// name (`node-3`, `client-alice`) and the grant it carries.
    Certified {
        name: String,
        grant: crate::types::Grant,
    },
    /// Plain TCP, which a node serves only on loopback or with --insecure:
    /// anyone who can reach the port.
    Anyone,
    /// TLS without a client certificate: nothing until it presents a token.
    Unauthenticated,
}

/// A listening socket of either kind.
pub enum Listener {
    Tcp {
        listener: TcpListener,
        /// Set: every connection must be TLS with a CA-signed certificate.
        tls: Option<Tls>,
    },
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
}

/// A connection just accepted, before its TLS handshake: the accept loop
/// hands it to its own task, so one slow or silent peer holds up no other.
pub struct Incoming {
    stream: IncomingStream,
    /// The peer's address (TCP) or uid (Unix socket), for logs.
    pub peer: String,
}

enum IncomingStream {
    Tcp(TcpStream, Option<Tls>),
    /// `refused`: why this peer may not make requests.
    Unix(UnixStream, Option<String>),
}

/// An established connection: its halves and who is on the other end.
pub struct Accepted {
    pub read: ReadHalf,
    pub write: WriteHalf,
    /// The peer's address (TCP) or uid (Unix socket), for logs.
    pub peer: String,
    pub who: Peer,
    /// Why this peer may not make requests, if it may not: the node tells
    /// it so in answer to its first request, then closes the connection.
    pub refused: Option<String>,
}

/// How long a peer has to start and finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of a TLS record carrying a handshake (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

impl Listener {
    /// Listens on `addr` (with TLS when `tls` is given; a Unix socket takes
    /// none). A Unix socket is made owner-only before anyone can reach it,
    /// replacing a stale one a dead process left.
    pub async fn bind(addr: &str, tls: Option<&Tls>) -> Result<Listener, String> {
        match Endpoint::parse(addr)? {
            Endpoint::Tcp(a) => TcpListener::bind(&a)
                .await
                .map(|listener| Listener::Tcp {
                    listener,
                    tls: tls.cloned(),
                })
                .map_err(|e| e.to_string()),
            Endpoint::Unix(path) => match bind_private_socket(&path) {
                Ok(listener) => Ok(Listener::Unix { listener, path }),
                Err(e) => Err(format!("{}: {e}", path.display())),
            },
        }
    }

    /// The address clients reach this listener at.
    pub fn address(&self) -> Result<String, String> {
        match self {
            Listener::Tcp { listener, .. } => listener
                .local_addr()
                .map(|a| a.to_string())
                .map_err(|e| e.to_string()),
            Listener::Unix { path, .. } => Ok(format!("{UNIX_PREFIX}{}", path.display())),
        }
    }

    /// The next connection, not yet established (see `Incoming::establish`).
    /// On a Unix socket, a peer running as another user (and not root) is
    /// refused: the socket's mode already keeps them out, unless someone
    /// loosened it.
    pub async fn accept(&self) -> std::io::Result<Incoming> {
        match self {
            Listener::Tcp { listener, tls } => {
                let (s, peer) = listener.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(Incoming {
                    stream: IncomingStream::Tcp(s, tls.clone()),
                    peer: peer.to_string(),
                })
            }
            Listener::Unix { listener, .. } => {
                let (s, _) = listener.accept().await?;
                let uid = s.peer_cred()?.uid();
                // SAFETY: geteuid has no preconditions and cannot fail.
                let me = unsafe { libc::geteuid() };
                let refused = (uid != me && uid != 0)
                    .then(|| format!("uid {uid} may not use the owner-only socket of uid {me}"));
                Ok(Incoming {
                    stream: IncomingStream::Unix(s, refused),
                    peer: format!("uid {uid}"),
                })
            }
        }
    }
}

impl Incoming {
    /// Runs the TLS handshake, if the listener takes TLS. A peer that speaks
    /// plain frames to a TLS listener gets its first request answered with
    /// why it is refused; one whose handshake fails (no certificate, one of
    /// another CA, an expired one) is told by TLS itself, and the error
    /// returned here says what the node saw.
    pub async fn establish(self) -> Result<Accepted, String> {
        let peer = self.peer;
        match self.stream {
            IncomingStream::Unix(s, refused) => {
                let (r, w) = s.into_split();
                Ok(Accepted {
                    read: Box::new(r),
                    write: Box::new(w),
                    peer,
                    who: Peer::Owner,
                    refused,
                })
            }
            IncomingStream::Tcp(s, None) => {
                let (r, w) = s.into_split();
                Ok(Accepted {
                    read: Box::new(r),
                    write: Box::new(w),
                    peer,
                    who: Peer::Anyone,
                    refused: None,
                })
            }
            IncomingStream::Tcp(s, Some(tls)) => {
                let late = || "no TLS handshake within 10 s".to_string();
                let mut first = [0u8; 1];
                let n = tokio::time::timeout(HANDSHAKE_TIMEOUT, s.peek(&mut first))
                    .await
                    .map_err(|_| late())?
                    .map_err(|e| e.to_string())?;
                if n == 1 && first[0] != TLS_HANDSHAKE_RECORD {
                    // Plain frames: answered (once) in kind, with why not.
                    let (r, w) = s.into_split();
                    return Ok(Accepted {
                        read: Box::new(r),
                        write: Box::new(w),
                        peer,
                        who: Peer::Anyone,
                        refused: Some(PLAIN_ON_TLS.to_string()),
                    });
                }
                let acceptor = tls
                    .acceptor()
                    .ok_or("this node has no certificate to serve TLS with")?;
                let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(s))
                    .await
                    .map_err(|_| late())?
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                let who = match stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                {
                    // It may yet present a token.
                    None => Peer::Unauthenticated,
                    Some(cert) => {
                        let name = tls::common_name(cert)
                            .ok_or("the peer's certificate has no common name")?;
                        let grant = tls::grant_of(cert).map_err(|e| {
                            format!("the certificate of {name} carries a bad grant: {e}")
                        })?;
                        Peer::Certified { name, grant }
                    }
                };
                let (r, w) = tokio::io::split(stream);
                Ok(Accepted {
                    read: Box::new(r),
                    write: Box::new(w),
                    peer,
                    who,
                    refused: None,
                })
            }
        }
    }
}

/// What a plain-TCP client of a TLS node is told.
pub const PLAIN_ON_TLS: &str = "this metaserver takes only TLS connections: give the client \
    --tls-ca, --tls-cert and --tls-key (made with `strata cert`)";

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds a Unix socket at `path` that only this user can connect to. The
/// socket is made in a fresh directory of mode 0700, set to 0600 and only
/// then moved to `path`, so at no moment can another user reach it.
pub fn bind_private_socket(path: &Path) -> std::io::Result<UnixListener> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("a socket path needs a directory"))?;
    let name = path
        .file_name()
        .map_or("sock".into(), |n| n.to_string_lossy());
    let private = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&private)?;
    let made = private.join("s");
    let bound = (|| {
        let listener = std::os::unix::net::UnixListener::bind(&made)?;
        std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o600))?;
        // Replaces a socket left by a process that died; the data dir's
        // database lock (taken before) says no live node uses it.
        std::fs::rename(&made, path)?;
        listener.set_nonblocking(true)?;
        UnixListener::from_std(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    bound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_tcp_or_absolute_unix_paths() {
        assert_eq!(
            Endpoint::parse("127.0.0.1:7700"),
            Ok(Endpoint::Tcp("127.0.0.1:7700".into()))
        );
        assert_eq!(
            Endpoint::parse("unix:/run/strata/meta.sock"),
            Ok(Endpoint::Unix("/run/strata/meta.sock".into()))
        );
        assert!(Endpoint::parse("unix:relative/meta.sock").is_err());
        assert!(Endpoint::parse("").is_err());
        let long = format!("unix:/{}", "x".repeat(200));
        assert!(Endpoint::parse(&long).unwrap_err().contains("at most"));
    }

    #[tokio::test]
    async fn a_unix_socket_is_owner_only_and_carries_frames() {
        let dir = tempfile::tempdir().unwrap();
        let addr = socket_address(dir.path());
        let listener = Listener::bind(&addr, None).await.unwrap();
        assert_eq!(listener.address().unwrap(), addr);
        let path = dir.path().join("meta.sock");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("meta.sock")]);
        let (server, client) = tokio::join!(
            async { listener.accept().await.unwrap().establish().await },
            connect(&addr, None)
        );
        let mut server = server.unwrap();
        assert_eq!(server.refused, None, "the owner is let in");
        let (_, mut w) = client.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        w.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        server.read.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        // A new listener replaces the socket a dead one left behind.
        std::mem::forget(listener);
        let again = Listener::bind(&addr, None).await.unwrap();
        drop(again);
        assert!(!path.exists(), "the socket goes with its listener");
    }
}

/// Detours for fault-injection tests: connections to an address go to
/// another one instead, a proxy the test controls, so that it can cut,
/// hold or slow the links between nodes and from clients one by one. Set
/// for a process by `STRATA_TEST_ROUTES` (`ADDR=PROXY,...`), or in a test's
/// own process by `set`. Nothing is detoured otherwise.
pub mod routes {
    use std::collections::HashMap;
    use std::sync::{OnceLock, RwLock};

    /// The environment variable a node or client process reads its detours from.
    pub const ENV: &str = "STRATA_TEST_ROUTES";

    fn table() -> &'static RwLock<HashMap<String, String>> {
        static TABLE: OnceLock<RwLock<HashMap<String, String>>> = OnceLock::new();
        TABLE.get_or_init(|| {
            let spec = std::env::var(ENV).unwrap_or_default();
            RwLock::new(parse(&spec))
        })
    }

    /// `ADDR=PROXY` pairs, comma-separated; malformed ones are skipped.
    fn parse(spec: &str) -> HashMap<String, String> {
        spec.split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(from, to)| (from.trim().to_string(), to.trim().to_string()))
            .filter(|(from, to)| !from.is_empty() && !to.is_empty())
            .collect()
    }

    /// Sends this process's connections to each key of `detours` to its value.
    pub fn set(detours: HashMap<String, String>) {
        *table().write().unwrap() = detours;
    }

    /// Where a connection to `addr` goes instead, if anywhere.
    pub fn through(addr: &str) -> Option<String> {
        let t = table().read().unwrap();
        if t.is_empty() {
            return None;
        }
        t.get(addr).cloned()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn detours_are_read_as_pairs_and_malformed_ones_skipped() {
            let t = crate::transport::routes::parse("a:1=p:9, b:2 = q:8,junk,=x,y=");
            assert_eq!(t.len(), 2);
            assert_eq!(t["a:1"], "p:9");
            assert_eq!(t["b:2"], "q:8");
        }
    }
}
