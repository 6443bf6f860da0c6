//! TLS for remoting connections, configured with RocketMQ's `tls.*` keys: one port
//! serving TLS and plaintext as `tls.server.mode` says, and the client side (`tls.enable`).
//!
//! A server in `permissive` or `enforcing` mode waits, up to a handshake timeout, for the
//! first byte of each accepted connection: `0x16` (a TLS handshake record) starts a TLS
//! handshake; anything else is plaintext, served in permissive mode and closed in
//! enforcing mode. A connection that sends nothing before the timeout is closed.
//!
//! A `disabled` server does not wait for that byte: a plaintext frame starts with its
//! length, big-endian, and a first byte of `0x16` announces a frame of at least 352 MiB,
//! which the frame codec refuses by closing the connection, as RocketMQ closes a TLS
//! handshake in this mode. So the plain path costs nothing more than before. Only a frame
//! limit of 352 MiB or more makes a disabled server peek too ([`ServerTls::must_peek`]).
//!
//! Certificates are PEM chains; keys are unencrypted PEM (PKCS#8, PKCS#1 RSA or SEC1 EC).
//! `tls.server.authClient` and `tls.client.authServer` false accept any certificate whose
//! key the peer proves it holds (RocketMQ's insecure trust manager); true verifies the
//! chain against `trustCertPath`. No system trust store is used.
//!
//! Between the members of a Raft group ([`PeerTls`], `tls.peer.mode`), TLS is mutual: each
//! node presents one certificate as server and as client, and verifies the other's chain
//! against the peer trust file; see [`PeerTls`] for what is verified and what is not.

use std::collections::HashMap;
use std::fmt::Display;
use std::io;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use tokio_rustls::rustls::crypto::{self, CryptoProvider, WebPkiSupportedAlgorithms};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};
use tracing::warn;

use crate::config_file::{ConfigError, Properties};

/// How long an accepted connection may take to send its first byte and, for TLS, to
/// finish its handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// The first byte of a TLS connection: the record type of a handshake.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The smallest frame length whose first byte is [`TLS_HANDSHAKE_RECORD`].
const TLS_RECORD_AS_FRAME_BYTES: usize = (TLS_HANDSHAKE_RECORD as usize) << 24;

const SERVER_MODE: &str = "tls.server.mode";
const SERVER_CERT_PATH: &str = "tls.server.certPath";
const SERVER_KEY_PATH: &str = "tls.server.keyPath";
const SERVER_KEY_PASSWORD: &str = "tls.server.keyPassword";
const SERVER_NEED_CLIENT_AUTH: &str = "tls.server.need.client.auth";
const SERVER_AUTH_CLIENT: &str = "tls.server.authClient";
const SERVER_TRUST_CERT_PATH: &str = "tls.server.trustCertPath";
const SERVER_KEYS: [&str; 7] = [
    SERVER_MODE,
    SERVER_CERT_PATH,
    SERVER_KEY_PATH,
    SERVER_KEY_PASSWORD,
    SERVER_NEED_CLIENT_AUTH,
    SERVER_AUTH_CLIENT,
    SERVER_TRUST_CERT_PATH,
];

const CLIENT_ENABLE: &str = "tls.enable";
const CLIENT_CERT_PATH: &str = "tls.client.certPath";
const CLIENT_KEY_PATH: &str = "tls.client.keyPath";
const CLIENT_KEY_PASSWORD: &str = "tls.client.keyPassword";
const CLIENT_AUTH_SERVER: &str = "tls.client.authServer";
const CLIENT_TRUST_CERT_PATH: &str = "tls.client.trustCertPath";
const CLIENT_KEYS: [&str; 6] = [
    CLIENT_ENABLE,
    CLIENT_CERT_PATH,
    CLIENT_KEY_PATH,
    CLIENT_KEY_PASSWORD,
    CLIENT_AUTH_SERVER,
    CLIENT_TRUST_CERT_PATH,
];

const PEER_MODE: &str = "tls.peer.mode";
const PEER_CERT_PATH: &str = "tls.peer.certPath";
const PEER_KEY_PATH: &str = "tls.peer.keyPath";
const PEER_KEY_PASSWORD: &str = "tls.peer.keyPassword";
const PEER_TRUST_CERT_PATH: &str = "tls.peer.trustCertPath";
const PEER_SERVER_NAME: &str = "tls.peer.serverName";
const PEER_KEYS: [&str; 6] = [
    PEER_MODE,
    PEER_CERT_PATH,
    PEER_KEY_PATH,
    PEER_KEY_PASSWORD,
    PEER_TRUST_CERT_PATH,
    PEER_SERVER_NAME,
];
/// Keys of the client port that peer TLS falls back to: read, never taken.
const PEER_FALLBACK_KEYS: [&str; 5] = [
    SERVER_CERT_PATH,
    SERVER_KEY_PATH,
    SERVER_KEY_PASSWORD,
    SERVER_TRUST_CERT_PATH,
    CLIENT_TRUST_CERT_PATH,
];

/// `tls.server.mode` (and `tls.peer.mode`): what a server does with TLS and plaintext
/// connections on its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Plaintext only; a TLS handshake is closed. The default here (RocketMQ's is
    /// permissive with a self-signed test certificate, which rocketraft does not have).
    #[default]
    Disabled,
    /// TLS and plaintext both.
    Permissive,
    /// TLS only; plaintext is closed.
    Enforcing,
}

impl FromStr for TlsMode {
    type Err = String;

    /// Parses `disabled`, `permissive` or `enforcing`, ignoring case. RocketMQ reads any
    /// other value as permissive; here it is an error.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "disabled" => Ok(TlsMode::Disabled),
            "permissive" => Ok(TlsMode::Permissive),
            "enforcing" => Ok(TlsMode::Enforcing),
            _ => Err("unknown TLS mode: expected disabled, permissive or enforcing".into()),
        }
    }
}

impl Display for TlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsMode::Disabled => "disabled",
            TlsMode::Permissive => "permissive",
            TlsMode::Enforcing => "enforcing",
        })
    }
}

/// `tls.server.need.client.auth`: whether a TLS server asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    None,
    Optional,
    Require,
}

impl FromStr for ClientAuth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(ClientAuth::None),
            "optional" => Ok(ClientAuth::Optional),
            "require" => Ok(ClientAuth::Require),
            _ => Err("expected none, optional or require".into()),
        }
    }
}

/// A connection accepted by [`ServerTls::accept`].
pub enum Accepted {
    Plain(TcpStream),
    Tls(Box<server::TlsStream<TcpStream>>),
}

/// The server side: the mode, and the certificate and client verification it serves TLS
/// with. Build it once at start-up and share it (`Arc`) with the accept loop.
pub struct ServerTls {
    mode: TlsMode,
    /// Present unless the mode is disabled.
    acceptor: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    /// The key that set `mode`, named in refusals.
    mode_key: &'static str,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mode", &self.mode)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for ServerTls {
    /// Disabled.
    fn default() -> Self {
        ServerTls {
            mode: TlsMode::Disabled,
            acceptor: None,
            handshake_timeout: Duration::from_millis(DEFAULT_HANDSHAKE_TIMEOUT_MS),
            mode_key: SERVER_MODE,
        }
    }
}

impl ServerTls {
    /// Reads the `tls.server.*` keys with `get`; `origin` names where they come from (a
    /// file) in errors. Certificates and keys are read now: a missing or unreadable file,
    /// an encrypted key or a key that does not match its certificate is an error naming
    /// the key and the file. In disabled mode only `tls.server.mode` is read.
    pub fn from_lookup(
        origin: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<ServerTls, ConfigError> {
        let keys = Keys { origin, get: &get };
        let mode = keys.parse(SERVER_MODE)?.unwrap_or_default();
        let mut tls = ServerTls {
            mode,
            ..ServerTls::default()
        };
        if mode != TlsMode::Disabled {
            let config = server_config(&keys, mode)?;
            tls.acceptor = Some(TlsAcceptor::from(Arc::new(config)));
        }
        Ok(tls)
    }

    /// [`ServerTls::from_lookup`] over a properties file, taking the `tls.server.*` keys
    /// out of it (so they are not reported as unknown).
    pub fn from_properties(props: &mut Properties) -> Result<ServerTls, ConfigError> {
        let values = take_keys(props, &SERVER_KEYS);
        ServerTls::from_lookup(&props.origin, |key| values.get(key).cloned())
    }

    /// Sets how long an accepted connection may take to send its first byte and finish
    /// its TLS handshake (default [`DEFAULT_HANDSHAKE_TIMEOUT_MS`]).
    pub fn with_handshake_timeout_ms(mut self, handshake_timeout_ms: u64) -> ServerTls {
        self.handshake_timeout = Duration::from_millis(handshake_timeout_ms);
        self
    }

    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    /// Whether [`ServerTls::accept`] must see each connection's first byte before it is
    /// served. A disabled server needs it only when frames of 352 MiB are allowed: below
    /// that, the frame codec closes a connection whose first byte is `0x16` by itself.
    pub fn must_peek(&self, max_frame_bytes: usize) -> bool {
        self.mode != TlsMode::Disabled || max_frame_bytes >= TLS_RECORD_AS_FRAME_BYTES
    }

    /// Waits for the first byte of an accepted connection and, if it starts a TLS
    /// handshake, completes that handshake; all within the handshake timeout. An error is
    /// a refused connection: dropping the stream closes it.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<Accepted> {
        let deadline = tokio::time::Instant::now() + self.handshake_timeout;
        let first = tokio::time::timeout_at(deadline, first_byte(&stream))
            .await
            .map_err(|_| timed_out("no byte arrived", self.handshake_timeout))??;
        match (&self.acceptor, first == TLS_HANDSHAKE_RECORD) {
            (None, true) => Err(refused(&format!(
                "a TLS handshake, and {} is disabled",
                self.mode_key
            ))),
            (Some(acceptor), true) => {
                let stream = tokio::time::timeout_at(deadline, acceptor.accept(stream))
                    .await
                    .map_err(|_| {
                        timed_out("the TLS handshake did not finish", self.handshake_timeout)
                    })?
                    .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
                Ok(Accepted::Tls(Box::new(stream)))
            }
            (_, false) if self.mode == TlsMode::Enforcing => Err(refused(&format!(
                "plaintext, and {} is enforcing",
                self.mode_key
            ))),
            (_, false) => Ok(Accepted::Plain(stream)),
        }
    }
}

/// Looks at the first byte without taking it from the socket.
async fn first_byte(stream: &TcpStream) -> io::Result<u8> {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte).await? {
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before sending anything",
        )),
        _ => Ok(byte[0]),
    }
}

fn refused(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, reason)
}

fn timed_out(what: &str, timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what} within the handshake timeout of {timeout:?}"),
    )
}

fn server_config(keys: &Keys<'_>, mode: TlsMode) -> Result<ServerConfig, ConfigError> {
    let needed = format!("needed by {SERVER_MODE}={mode}");
    let certs = keys.certs(SERVER_CERT_PATH, &needed)?;
    let key = keys.private_key(SERVER_KEY_PATH, SERVER_KEY_PASSWORD, &needed)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3");
    let builder = match client_verifier(keys)? {
        None => builder.with_no_client_auth(),
        Some(verifier) => builder.with_client_cert_verifier(verifier),
    };
    builder.with_single_cert(certs, key).map_err(|e| {
        keys.bad(
            SERVER_KEY_PATH,
            format!("does not go with {SERVER_CERT_PATH}: {e}"),
        )
    })
}

/// The client verification `tls.server.need.client.auth` and `tls.server.authClient`
/// ask for; `None` when clients are not asked for a certificate.
fn client_verifier(keys: &Keys<'_>) -> Result<Option<Arc<dyn ClientCertVerifier>>, ConfigError> {
    let need = keys
        .parse(SERVER_NEED_CLIENT_AUTH)?
        .unwrap_or(ClientAuth::None);
    let auth_client = keys.flag(SERVER_AUTH_CLIENT)?;
    if need == ClientAuth::None {
        // RocketMQ never asks for a certificate then, so it verifies none: refuse a
        // setting that promises verification and would silently not happen.
        if auth_client {
            return Err(keys.bad(
                SERVER_AUTH_CLIENT,
                format!(
                    "verifies client certificates only when {SERVER_NEED_CLIENT_AUTH} \
                     is optional or require"
                ),
            ));
        }
        return Ok(None);
    }
    let mandatory = need == ClientAuth::Require;
    if !auth_client {
        warn_unused_trust(keys, SERVER_TRUST_CERT_PATH, SERVER_AUTH_CLIENT);
        return Ok(Some(Arc::new(AnyCertificate::new(mandatory))));
    }
    let roots = keys.roots(
        SERVER_TRUST_CERT_PATH,
        &format!("needed by {SERVER_AUTH_CLIENT}=true"),
    )?;
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = if mandatory {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder
        .build()
        .map(Some)
        .map_err(|e| keys.bad(SERVER_TRUST_CERT_PATH, e.to_string()))
}

/// RocketMQ's own TLS guide sets a trust file with `authClient=false`, where it is not
/// used: say so once at start-up rather than refuse such a configuration.
fn warn_unused_trust(keys: &Keys<'_>, trust_key: &str, auth_key: &str) {
    if let Some(path) = keys.text(trust_key) {
        warn!(
            origin = keys.origin,
            "{trust_key}={path} is not used: {auth_key}=false accepts any peer certificate"
        );
    }
}

/// The client side: TLS for connections this process opens (`tls.enable`).
pub struct ClientTls {
    connector: TlsConnector,
    auth_server: bool,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("auth_server", &self.auth_server)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads the `tls.enable` and `tls.client.*` keys with `get`: `None` unless
    /// `tls.enable` is true. Files are read now; errors name the key and the file.
    pub fn from_lookup(
        origin: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<ClientTls>, ConfigError> {
        let keys = Keys { origin, get: &get };
        if !keys.flag(CLIENT_ENABLE)? {
            return Ok(None);
        }
        let auth_server = keys.flag(CLIENT_AUTH_SERVER)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3");
        let builder = if auth_server {
            let needed = format!("needed by {CLIENT_AUTH_SERVER}=true");
            builder.with_root_certificates(keys.roots(CLIENT_TRUST_CERT_PATH, &needed)?)
        } else {
            warn_unused_trust(&keys, CLIENT_TRUST_CERT_PATH, CLIENT_AUTH_SERVER);
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate::new(true)))
        };
        let config = match (keys.text(CLIENT_CERT_PATH), keys.text(CLIENT_KEY_PATH)) {
            (None, None) => builder.with_no_client_auth(),
            _ => {
                let certs =
                    keys.certs(CLIENT_CERT_PATH, &format!("needed with {CLIENT_KEY_PATH}"))?;
                let needed = format!("needed with {CLIENT_CERT_PATH}");
                let key = keys.private_key(CLIENT_KEY_PATH, CLIENT_KEY_PASSWORD, &needed)?;
                builder.with_client_auth_cert(certs, key).map_err(|e| {
                    keys.bad(
                        CLIENT_KEY_PATH,
                        format!("does not go with {CLIENT_CERT_PATH}: {e}"),
                    )
                })?
            }
        };
        Ok(Some(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            auth_server,
        }))
    }

    /// [`ClientTls::from_lookup`] over a properties file, taking the `tls.enable` and
    /// `tls.client.*` keys out of it.
    pub fn from_properties(props: &mut Properties) -> Result<Option<ClientTls>, ConfigError> {
        let values = take_keys(props, &CLIENT_KEYS);
        ClientTls::from_lookup(&props.origin, |key| values.get(key).cloned())
    }

    /// Runs the TLS handshake on a connected stream. The server name (SNI, and the name
    /// the certificate must carry when `authServer` is true) is the host part of `addr`
    /// (`host:port`), a DNS name or an IP address.
    pub async fn connect(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> io::Result<client::TlsStream<TcpStream>> {
        self.connector.connect(server_name(addr)?, stream).await
    }
}

/// TLS between the members of a Raft group, `tls.peer.mode`: `disabled` (the default; no
/// `PeerTls` at all), `permissive` (the peer port serves TLS and plaintext, told apart by
/// the first byte, while this node connects to its peers with TLS: the middle step of a
/// rolling change from disabled to enforcing) or `enforcing` (TLS only).
///
/// Mutual: a node presents one certificate, `tls.peer.certPath` and `tls.peer.keyPath`
/// (default: the client port's `tls.server.certPath` and `tls.server.keyPath`), both when it
/// serves and when it connects, and the other end must present one too. Each end verifies
/// the other's against `tls.peer.trustCertPath` (default: `tls.server.trustCertPath`, else
/// `tls.client.trustCertPath`): the chain up to a CA there, the validity period, and the
/// extended key usage (a peer certificate must allow server and client authentication, or
/// name no extended key usage). A peer whose certificate does not verify is refused in the
/// TLS handshake, before a byte of the peer protocol is read.
///
/// Names: peers reach each other at the addresses of `dLegerPeers`, often IP addresses a
/// certificate does not carry, so by default no name is checked: any certificate the peer
/// CA signed is a peer's, and that CA should sign peers only. Which cluster, group and node
/// a peer is, the peer handshake proves inside TLS (the cluster secret). With
/// `tls.peer.serverName` set, a connecting node sends that name and refuses a server whose
/// certificate is not valid for it (a DNS name or an IP address); a client certificate is
/// checked for its chain only, as TLS does.
///
/// At start-up the node checks its own certificate as its peers will, as a server's and as
/// a client's: a certificate they would refuse stops it at once, with the reason.
pub struct PeerTls {
    /// The accepting side, with `tls.peer.mode`.
    server: ServerTls,
    connector: TlsConnector,
    /// `tls.peer.serverName`.
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("mode", &self.server.mode)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Reads `tls.peer.*` and the client port's keys it falls back to with `get`: `None`
    /// when `tls.peer.mode` is absent or disabled. Files are read and the certificate is
    /// checked now; errors name the key and the file.
    pub fn from_lookup(
        origin: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<PeerTls>, ConfigError> {
        let keys = Keys { origin, get: &get };
        let mode = keys.parse(PEER_MODE)?.unwrap_or_default();
        if mode == TlsMode::Disabled {
            return Ok(None);
        }
        let needed = format!("needed by {PEER_MODE}={mode}");
        let own = [PEER_CERT_PATH, PEER_KEY_PATH]
            .iter()
            .any(|k| keys.text(k).is_some());
        let (cert_key, key_key, password_key) = if own {
            (PEER_CERT_PATH, PEER_KEY_PATH, PEER_KEY_PASSWORD)
        } else {
            (SERVER_CERT_PATH, SERVER_KEY_PATH, SERVER_KEY_PASSWORD)
        };
        let certs = keys.certs(cert_key, &needed)?;
        let key = keys.private_key(key_key, password_key, &needed)?;
        let trust_key = keys.first_set(&[
            PEER_TRUST_CERT_PATH,
            SERVER_TRUST_CERT_PATH,
            CLIENT_TRUST_CERT_PATH,
        ]);
        let roots = Arc::new(keys.roots(trust_key, &needed)?);
        let server_name = match keys.text(PEER_SERVER_NAME) {
            None => None,
            Some(name) => Some(ServerName::try_from(name).map_err(|e| {
                keys.bad(
                    PEER_SERVER_NAME,
                    format!("not a DNS name or IP address: {e}"),
                )
            })?),
        };
        let servers = Arc::new(PeerServerVerifier {
            roots: Arc::clone(&roots),
            name: server_name.clone(),
            algorithms: provider().signature_verification_algorithms,
        });
        let clients = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| keys.bad(trust_key, e.to_string()))?;
        let mismatch =
            |e: rustls::Error| keys.bad(key_key, format!("does not go with {cert_key}: {e}"));
        let server_config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .with_client_cert_verifier(Arc::clone(&clients))
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(mismatch)?;
        check_own_certificate(&certs, &servers, clients.as_ref()).map_err(|e| {
            keys.bad(
                cert_key,
                format!(
                    "peers trusting {trust_key} would refuse it ({e}): it must chain to a CA \
                     there, be valid now and allow server and client authentication"
                ),
            )
        })?;
        let client_config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(servers)
            .with_client_auth_cert(certs, key)
            .map_err(mismatch)?;
        let server = ServerTls {
            mode,
            acceptor: Some(TlsAcceptor::from(Arc::new(server_config))),
            mode_key: PEER_MODE,
            ..ServerTls::default()
        };
        Ok(Some(PeerTls {
            server,
            connector: TlsConnector::from(Arc::new(client_config)),
            server_name,
        }))
    }

    /// [`PeerTls::from_lookup`] over a properties file, taking the `tls.peer.*` keys out of
    /// it. It reads the client port's keys it falls back to without taking them: call it
    /// before [`ServerTls::from_properties`] and [`ClientTls::from_properties`], which do.
    pub fn from_properties(props: &mut Properties) -> Result<Option<PeerTls>, ConfigError> {
        let mut values = take_keys(props, &PEER_KEYS);
        for key in PEER_FALLBACK_KEYS {
            if let Some((value, _line)) = props.entries.get(key) {
                values.insert(key.to_string(), value.clone());
            }
        }
        PeerTls::from_lookup(&props.origin, |key| values.get(key).cloned())
    }

    /// Permissive or enforcing (a disabled mode has no `PeerTls`).
    pub fn mode(&self) -> TlsMode {
        self.server.mode
    }

    /// Takes an accepted peer connection: waits for its first byte, then runs a TLS
    /// handshake that verifies the peer's certificate or, in permissive mode only, leaves
    /// a plaintext connection as it is. An error is a refused connection. The caller bounds
    /// it with its own deadline (the handshake timeout of [`ServerTls`] applies too).
    pub async fn accept(&self, stream: TcpStream) -> io::Result<Accepted> {
        self.server.accept(stream).await
    }

    /// Runs the TLS handshake on a connection to the peer at `addr` (`host:port`),
    /// presenting this node's certificate and verifying the peer's. A node connects with TLS
    /// in either mode.
    pub async fn connect(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> io::Result<client::TlsStream<TcpStream>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => server_name(addr)?,
        };
        self.connector.connect(name, stream).await
    }
}

/// The handshake-signature methods shared by every verifier here (server and client
/// side alike): signatures checked with the verifier's `algorithms`.
macro_rules! handshake_signatures_checked_with_own_algorithms {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    };
}

/// Verifies this node's certificate chain as its peers will: as a server's and a client's.
fn check_own_certificate(
    certs: &[CertificateDer<'static>],
    servers: &PeerServerVerifier,
    clients: &dyn ClientCertVerifier,
) -> Result<(), rustls::Error> {
    let (end_entity, intermediates) = certs
        .split_first()
        .expect("Keys::certs refuses a file without a certificate");
    let now = UnixTime::now();
    servers.verify(end_entity, intermediates, now)?;
    clients.verify_client_cert(end_entity, intermediates, now)?;
    Ok(())
}

/// How a node checks the certificate of the peer it connects to: the chain up to the peer
/// trust file (signatures, validity, server authentication), and a name only when
/// `tls.peer.serverName` sets one.
#[derive(Debug)]
struct PeerServerVerifier {
    roots: Arc<RootCertStore>,
    name: Option<ServerName<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerServerVerifier {
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        match &self.name {
            Some(name) => verify_server_name(&cert, name),
            None => Ok(()),
        }
    }
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)?;
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures_checked_with_own_algorithms!();
}

fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _port)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{host}` (from `{addr}`) is not a TLS server name: {e}"),
        )
    })
}

/// One process-wide choice of cryptography, named instead of taken from rustls's
/// process default, which another crate could set differently.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

/// Accepts any certificate, checking only that the peer signs the handshake with its
/// key: RocketMQ's insecure trust manager, used when `authServer`/`authClient` is false.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
    /// As a client verifier: whether a client without a certificate is refused.
    mandatory: bool,
}

impl AnyCertificate {
    fn new(mandatory: bool) -> AnyCertificate {
        AnyCertificate {
            algorithms: provider().signature_verification_algorithms,
            mandatory,
        }
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures_checked_with_own_algorithms!();
}

impl ClientCertVerifier for AnyCertificate {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures_checked_with_own_algorithms!();
}

/// Takes `names` out of a properties file, keeping their values.
fn take_keys(props: &mut Properties, names: &[&str]) -> HashMap<String, String> {
    names
        .iter()
        .filter_map(|name| {
            let (value, _line) = props.entries.remove(*name)?;
            Some((name.to_string(), value))
        })
        .collect()
}

/// Reads keys through a lookup and turns what is wrong into errors naming the key.
struct Keys<'a> {
    origin: &'a str,
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl Keys<'_> {
    /// The value of `key`; empty counts as absent, as in RocketMQ.
    fn text(&self, key: &str) -> Option<String> {
        (self.get)(key)
            .map(|value| value.trim().to_string())
            .filter(|value| !value.is_empty())
    }

    fn parse<T: FromStr>(&self, key: &str) -> Result<Option<T>, ConfigError>
    where
        T::Err: Display,
    {
        let Some(value) = self.text(key) else {
            return Ok(None);
        };
        value
            .parse()
            .map(Some)
            .map_err(|e: T::Err| self.bad(key, e.to_string()))
    }

    /// A boolean, `true` or `false` in any case; absent is false.
    fn flag(&self, key: &str) -> Result<bool, ConfigError> {
        let Some(value) = self.text(key) else {
            return Ok(false);
        };
        value
            .to_ascii_lowercase()
            .parse()
            .map_err(|_| self.bad(key, "expected true or false"))
    }

    /// The first of `keys` that is set; the first of them if none is.
    fn first_set<'k>(&self, keys: &[&'k str]) -> &'k str {
        keys.iter()
            .copied()
            .find(|key| self.text(key).is_some())
            .unwrap_or(keys[0])
    }

    /// What is wrong with the value of `key` (absent: empty).
    fn bad(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::BadValue {
            origin: self.origin.to_string(),
            key: key.to_string(),
            value: self.text(key).unwrap_or_default(),
            reason: reason.into(),
        }
    }

    /// The bytes of the file `key` names; `needed` says why an absent key is an error.
    fn read(&self, key: &str, needed: &str) -> Result<Vec<u8>, ConfigError> {
        let Some(path) = self.text(key) else {
            return Err(self.bad(key, format!("missing: {needed}")));
        };
        std::fs::read(Path::new(&path))
            .map_err(|e| self.bad(key, format!("cannot read the file: {e}")))
    }

    /// The PEM certificate chain in the file `key` names.
    fn certs(&self, key: &str, needed: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        let pem = self.read(key, needed)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, pem::Error>>()
            .map_err(|e| self.bad(key, format!("not a PEM file: {e}")))?;
        if certs.is_empty() {
            return Err(self.bad(key, "no CERTIFICATE in the file"));
        }
        Ok(certs)
    }

    /// The PEM private key in the file `key` names. rustls reads no encrypted key, so a
    /// password (`password_key`) is an error rather than ignored.
    fn private_key(
        &self,
        key: &str,
        password_key: &str,
        needed: &str,
    ) -> Result<PrivateKeyDer<'static>, ConfigError> {
        if self.text(password_key).is_some() {
            return Err(self.bad(
                password_key,
                format!(
                    "encrypted keys are not supported: decrypt {key} \
                     (`openssl pkcs8 -topk8 -nocrypt`) and remove {password_key}"
                ),
            ));
        }
        let pem = self.read(key, needed)?;
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
            pem::Error::NoItemsFound if pem.windows(9).any(|w| w == b"ENCRYPTED") => self.bad(
                key,
                "the key is encrypted: decrypt it (`openssl pkcs8 -topk8 -nocrypt`)",
            ),
            pem::Error::NoItemsFound => self.bad(
                key,
                "no private key in the file (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC)",
            ),
            e => self.bad(key, format!("not a PEM file: {e}")),
        })
    }

    /// The trusted certificates (CAs) in the file `key` names.
    fn roots(&self, key: &str, needed: &str) -> Result<RootCertStore, ConfigError> {
        let mut roots = RootCertStore::empty();
        for cert in self.certs(key, needed)? {
            roots
                .add(cert)
                .map_err(|e| self.bad(key, format!("not a usable CA certificate: {e}")))?;
        }
        Ok(roots)
    }
}

/// Test certificates, for this crate's tests and, with the `test-support` feature, for other
/// crates' (the peer TLS tests of dledger).
#[cfg(any(test, feature = "test-support"))]
pub mod test_pki {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};

    use rcgen::{
        BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };

    /// PEM files in a directory removed on drop: a CA (`ca.pem`) with a server (`server`), a
    /// client (`client`) and a peer (`peer`, for server and client authentication)
    /// certificate, and another CA (`other-ca.pem`) with a client (`other-client`) and a
    /// peer (`other-peer`) certificate of its own; each as `<name>.pem` and `<name>.key`.
    /// Server and peer certificates are valid for `localhost` and `127.0.0.1`.
    pub struct Pki {
        dir: PathBuf,
    }

    impl Default for Pki {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Pki {
        pub fn new() -> Pki {
            use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "rocketraft-tls-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let pki = Pki { dir };
            let hosts = ["localhost", "127.0.0.1"];
            let ca = new_ca("rocketraft test CA");
            pki.write("ca.pem", &ca.0.pem());
            pki.issue("server", &ca, &hosts, &[ServerAuth]);
            pki.issue("client", &ca, &[], &[ClientAuth]);
            pki.issue("peer", &ca, &hosts, &[ServerAuth, ClientAuth]);
            let other = new_ca("another CA");
            pki.write("other-ca.pem", &other.0.pem());
            pki.issue("other-client", &other, &[], &[ClientAuth]);
            pki.issue("other-peer", &other, &hosts, &[ServerAuth, ClientAuth]);
            pki
        }

        /// Writes `<name>.pem` and `<name>.key`: a certificate `ca` signs for `alt_names`
        /// and `purposes`.
        pub fn issue(
            &self,
            name: &str,
            ca: &(Certificate, KeyPair),
            alt_names: &[&str],
            purposes: &[ExtendedKeyUsagePurpose],
        ) {
            let key = KeyPair::generate().unwrap();
            let alt_names: Vec<String> = alt_names.iter().map(|n| n.to_string()).collect();
            let mut params = CertificateParams::new(alt_names).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = purposes.to_vec();
            let cert = params.signed_by(&key, &ca.0, &ca.1).unwrap();
            self.write(&format!("{name}.pem"), &cert.pem());
            self.write(&format!("{name}.key"), &key.serialize_pem());
        }

        pub fn write(&self, name: &str, text: &str) {
            std::fs::write(self.dir.join(name), text).unwrap();
        }

        /// The path of the file `name` in the directory.
        pub fn path(&self, name: &str) -> String {
            self.dir.join(name).display().to_string()
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A self-signed CA certificate and its key.
    pub fn new_ca(name: &str) -> (Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        (params.self_signed(&key).unwrap(), key)
    }
}

#[cfg(test)]
mod tests {
    use super::test_pki::Pki;
    use super::*;
    use crate::connection::{serve, Connection, ConnectionConfig, NoRequests};
    use crate::{Error, RemotingCommand};
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn lookup(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |key| map.get(key).cloned()
    }

    /// The server keys for `mode` with the test server certificate, plus `extra`.
    fn server_tls(pki: &Pki, mode: &str, extra: &[(&str, String)]) -> ServerTls {
        let mut pairs = vec![
            (SERVER_MODE, mode.to_string()),
            (SERVER_CERT_PATH, pki.path("server.pem")),
            (SERVER_KEY_PATH, pki.path("server.key")),
        ];
        pairs.extend_from_slice(extra);
        ServerTls::from_lookup("test", lookup(&pairs)).unwrap()
    }

    /// `tls.enable=true` plus `extra`.
    fn client_tls(extra: &[(&str, String)]) -> Option<Arc<ClientTls>> {
        let mut pairs = vec![(CLIENT_ENABLE, "true".to_string())];
        pairs.extend_from_slice(extra);
        let tls = ClientTls::from_lookup("test", lookup(&pairs)).unwrap();
        Some(Arc::new(tls.expect("tls.enable=true gives a client")))
    }

    fn client_cert(pki: &Pki, name: &str) -> Vec<(&'static str, String)> {
        vec![
            (CLIENT_CERT_PATH, pki.path(&format!("{name}.pem"))),
            (CLIENT_KEY_PATH, pki.path(&format!("{name}.key"))),
        ]
    }

    /// Serves NoRequests (every request gets an answer) until the sender is dropped.
    async fn start_server(
        tls: Option<ServerTls>,
        max_frame_bytes: usize,
    ) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = ConnectionConfig {
            max_frame_bytes,
            server_tls: tls.map(Arc::new),
            ..ConnectionConfig::default()
        };
        tokio::spawn(serve(listener, config, Arc::new(NoRequests), async move {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    async fn server(tls: Option<ServerTls>) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        start_server(tls, crate::DEFAULT_MAX_FRAME_BYTES).await
    }

    /// Connects to `addr` and gets an answer to one request; any failure is an error.
    async fn round_trip(addr: &str, tls: Option<Arc<ClientTls>>) -> crate::Result<()> {
        let config = ConnectionConfig {
            tls,
            ..ConnectionConfig::default()
        };
        let run = async {
            let conn = Connection::connect(addr, &config, Arc::new(NoRequests)).await?;
            conn.request(RemotingCommand::bare_request(1), Duration::from_secs(3))
                .await?;
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("a refused connection ends well before 5 s")
    }

    /// Asserts that a client `who` gets through (`works`) or is refused.
    async fn expect(addr: SocketAddr, tls: Option<Arc<ClientTls>>, works: bool, who: &str) {
        let result = round_trip(&addr.to_string(), tls).await;
        match (works, result) {
            (true, Err(e)) => panic!("{who} should get an answer: {e}"),
            (false, Ok(())) => panic!("{who} should be refused"),
            (true, Ok(())) => {}
            (false, Err(e)) => assert!(!matches!(e, Error::Timeout(_)), "{who}: {e}"),
        }
    }

    // Each mode test proves one row of RocketMQ's table (HandshakeHandler): a plaintext
    // client and a TLS client each send a request, and get an answer or are closed.

    #[tokio::test]
    async fn disabled_serves_plaintext_and_refuses_tls() {
        let pki = Pki::new();
        let (addr, _stop) = server(Some(server_tls(&pki, "disabled", &[]))).await;
        expect(addr, None, true, "plaintext").await;
        expect(addr, client_tls(&[]), false, "TLS").await;
        // No server TLS at all is the same as disabled.
        let (addr, _stop) = server(None).await;
        expect(addr, None, true, "plaintext, no TLS config").await;
        expect(addr, client_tls(&[]), false, "TLS, no TLS config").await;
    }

    /// With frames of 352 MiB allowed the codec would wait for a "frame" starting 0x16,
    /// so a disabled server peeks instead; plaintext still works.
    #[tokio::test]
    async fn disabled_with_huge_frames_peeks_to_refuse_tls() {
        let pki = Pki::new();
        assert!(ServerTls::default().must_peek(TLS_RECORD_AS_FRAME_BYTES));
        assert!(!ServerTls::default().must_peek(TLS_RECORD_AS_FRAME_BYTES - 1));
        let (addr, _stop) = start_server(None, TLS_RECORD_AS_FRAME_BYTES).await;
        expect(addr, None, true, "plaintext").await;
        expect(addr, client_tls(&[]), false, "TLS").await;
        drop(pki);
    }

    #[tokio::test]
    async fn permissive_serves_plaintext_and_tls() {
        let pki = Pki::new();
        let (addr, _stop) = server(Some(server_tls(&pki, "Permissive", &[]))).await;
        expect(addr, None, true, "plaintext").await;
        expect(addr, client_tls(&[]), true, "TLS").await;
    }

    #[tokio::test]
    async fn enforcing_serves_tls_and_refuses_plaintext() {
        let pki = Pki::new();
        let (addr, _stop) = server(Some(server_tls(&pki, "ENFORCING", &[]))).await;
        expect(addr, None, false, "plaintext").await;
        expect(addr, client_tls(&[]), true, "TLS").await;
    }

    /// Requests far larger than a socket buffer and a TLS record cross TLS whole, and
    /// `peer()` is the socket's remote address.
    #[tokio::test]
    async fn a_large_request_crosses_tls_whole() {
        let pki = Pki::new();
        let (addr, _stop) = server(Some(server_tls(&pki, "enforcing", &[]))).await;
        let config = ConnectionConfig {
            tls: client_tls(&[]),
            ..ConnectionConfig::default()
        };
        let conn = Connection::connect(&addr.to_string(), &config, Arc::new(NoRequests))
            .await
            .unwrap();
        assert_eq!(conn.peer(), addr);
        for _ in 0..3 {
            let request = RemotingCommand::bare_request(1).with_body(vec![7u8; 8 << 20]);
            conn.request(request, Duration::from_secs(5)).await.unwrap();
        }
    }

    /// A client with authServer=true checks the server's chain and name: it connects with
    /// the right CA (by IP and by DNS name) and refuses a server its CA did not sign.
    #[tokio::test]
    async fn a_client_verifying_the_server_refuses_another_ca() {
        let pki = Pki::new();
        let (addr, _stop) = server(Some(server_tls(&pki, "enforcing", &[]))).await;
        let trusting = |ca: &str| {
            client_tls(&[
                (CLIENT_AUTH_SERVER, "true".into()),
                (CLIENT_TRUST_CERT_PATH, pki.path(ca)),
            ])
        };
        expect(addr, trusting("ca.pem"), true, "right CA, by IP").await;
        round_trip(&format!("localhost:{}", addr.port()), trusting("ca.pem"))
            .await
            .expect("right CA, by DNS name");
        let err = round_trip(&addr.to_string(), trusting("other-ca.pem"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
    }

    /// need.client.auth=require with authClient=true: a client without a certificate or
    /// with one from another CA is refused; one signed by the trusted CA gets through.
    #[tokio::test]
    async fn required_client_auth_refuses_a_missing_or_foreign_certificate() {
        let pki = Pki::new();
        let tls = server_tls(
            &pki,
            "enforcing",
            &[
                (SERVER_NEED_CLIENT_AUTH, "require".into()),
                (SERVER_AUTH_CLIENT, "true".into()),
                (SERVER_TRUST_CERT_PATH, pki.path("ca.pem")),
            ],
        );
        let (addr, _stop) = server(Some(tls)).await;
        expect(addr, client_tls(&[]), false, "no certificate").await;
        let foreign = client_tls(&client_cert(&pki, "other-client"));
        expect(addr, foreign, false, "another CA's certificate").await;
        expect(
            addr,
            client_tls(&client_cert(&pki, "client")),
            true,
            "right certificate",
        )
        .await;
    }

    /// need.client.auth=optional with authClient=true: no certificate is fine, a foreign
    /// one is not.
    #[tokio::test]
    async fn optional_client_auth_refuses_only_a_foreign_certificate() {
        let pki = Pki::new();
        let tls = server_tls(
            &pki,
            "enforcing",
            &[
                (SERVER_NEED_CLIENT_AUTH, "optional".into()),
                (SERVER_AUTH_CLIENT, "true".into()),
                (SERVER_TRUST_CERT_PATH, pki.path("ca.pem")),
            ],
        );
        let (addr, _stop) = server(Some(tls)).await;
        expect(addr, client_tls(&[]), true, "no certificate").await;
        let foreign = client_tls(&client_cert(&pki, "other-client"));
        expect(addr, foreign, false, "another CA's certificate").await;
        expect(
            addr,
            client_tls(&client_cert(&pki, "client")),
            true,
            "right certificate",
        )
        .await;
    }

    /// RocketMQ's meaning of authClient=false with require: a certificate must be sent,
    /// but any will do (the trust file is not used).
    #[tokio::test]
    async fn unverified_client_auth_requires_a_certificate_but_any() {
        let pki = Pki::new();
        let tls = server_tls(
            &pki,
            "enforcing",
            &[
                (SERVER_NEED_CLIENT_AUTH, "require".into()),
                (SERVER_TRUST_CERT_PATH, pki.path("ca.pem")),
            ],
        );
        let (addr, _stop) = server(Some(tls)).await;
        expect(addr, client_tls(&[]), false, "no certificate").await;
        let foreign = client_tls(&client_cert(&pki, "other-client"));
        expect(addr, foreign, true, "another CA's certificate").await;
    }

    /// A connection that sends nothing, or only the first byte of a handshake, is closed
    /// once the handshake timeout has passed, and not before; others are served meanwhile.
    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
        let pki = Pki::new();
        let tls = server_tls(&pki, "permissive", &[]).with_handshake_timeout_ms(300);
        let (addr, _stop) = server(Some(tls)).await;
        for first_bytes in [&[][..], &[TLS_HANDSHAKE_RECORD][..]] {
            let started = tokio::time::Instant::now();
            let mut silent = TcpStream::connect(addr).await.unwrap();
            silent.write_all(first_bytes).await.unwrap();
            expect(addr, client_tls(&[]), true, "TLS while one is silent").await;
            let mut sink = [0u8; 16];
            let n = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut sink))
                .await
                .expect("the server closes a silent connection")
                .unwrap_or(0);
            assert_eq!(n, 0);
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_millis(300),
                "closed after {waited:?}"
            );
        }
    }

    #[test]
    fn mode_parses_in_any_case_and_refuses_unknown_values() {
        assert_eq!("Disabled".parse(), Ok(TlsMode::Disabled));
        assert_eq!("permissive".parse(), Ok(TlsMode::Permissive));
        assert_eq!("ENFORCING".parse(), Ok(TlsMode::Enforcing));
        assert!("strict".parse::<TlsMode>().is_err());
        let tls = ServerTls::from_lookup("test", lookup(&[])).unwrap();
        assert_eq!(tls.mode(), TlsMode::Disabled);
        let err = ServerTls::from_lookup("b.conf", lookup(&[(SERVER_MODE, "strict".into())]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("b.conf") && err.contains("tls.server.mode=strict"),
            "{err}"
        );
    }

    fn server_error(pairs: &[(&str, String)]) -> String {
        ServerTls::from_lookup("b.conf", lookup(pairs))
            .unwrap_err()
            .to_string()
    }

    /// Each bad setting is refused at start-up with the key, the file and what is wrong.
    #[test]
    fn bad_server_settings_name_the_key_and_file() {
        let pki = Pki::new();
        let mode = (SERVER_MODE, "enforcing".to_string());
        let cert = (SERVER_CERT_PATH, pki.path("server.pem"));
        let key = (SERVER_KEY_PATH, pki.path("server.key"));

        let err = server_error(&[mode.clone(), key.clone()]);
        assert!(
            err.contains("tls.server.certPath") && err.contains("missing"),
            "{err}"
        );
        let missing = pki.path("nope.key");
        let err = server_error(&[
            mode.clone(),
            cert.clone(),
            (SERVER_KEY_PATH, missing.clone()),
        ]);
        assert!(
            err.contains(&missing) && err.contains("cannot read"),
            "{err}"
        );
        let err = server_error(&[
            mode.clone(),
            cert.clone(),
            (SERVER_KEY_PATH, pki.path("ca.pem")),
        ]);
        assert!(err.contains("no private key"), "{err}");
        pki.write(
            "encrypted.key",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let err = server_error(&[
            mode.clone(),
            cert.clone(),
            (SERVER_KEY_PATH, pki.path("encrypted.key")),
        ]);
        assert!(err.contains("encrypted"), "{err}");
        let password = (SERVER_KEY_PASSWORD, "123456".to_string());
        let err = server_error(&[mode.clone(), cert.clone(), key.clone(), password]);
        assert!(
            err.contains("tls.server.keyPassword") && err.contains("not supported"),
            "{err}"
        );
        let err = server_error(&[
            mode.clone(),
            cert.clone(),
            (SERVER_KEY_PATH, pki.path("client.key")),
        ]);
        assert!(err.contains("does not go with"), "{err}");
        let err = server_error(&[
            mode.clone(),
            cert.clone(),
            key.clone(),
            (SERVER_NEED_CLIENT_AUTH, "always".into()),
        ]);
        assert!(err.contains("tls.server.need.client.auth=always"), "{err}");
        let verify = (SERVER_AUTH_CLIENT, "true".to_string());
        let err = server_error(&[mode.clone(), cert.clone(), key.clone(), verify.clone()]);
        assert!(err.contains("only when"), "{err}");
        let require = (SERVER_NEED_CLIENT_AUTH, "require".to_string());
        let err = server_error(&[mode, cert, key, verify, require]);
        assert!(
            err.contains("tls.server.trustCertPath") && err.contains("missing"),
            "{err}"
        );
    }

    #[test]
    fn bad_client_settings_name_the_key_and_file() {
        let pki = Pki::new();
        let client_error = |pairs: &[(&str, String)]| {
            let mut all = vec![(CLIENT_ENABLE, "true".to_string())];
            all.extend_from_slice(pairs);
            ClientTls::from_lookup("c.conf", lookup(&all))
                .unwrap_err()
                .to_string()
        };
        let err = client_error(&[(CLIENT_AUTH_SERVER, "true".into())]);
        assert!(
            err.contains("c.conf") && err.contains("tls.client.trustCertPath"),
            "{err}"
        );
        let err = client_error(&[(CLIENT_AUTH_SERVER, "yes".into())]);
        assert!(err.contains("tls.client.authServer=yes"), "{err}");
        let err = client_error(&[(CLIENT_CERT_PATH, pki.path("client.pem"))]);
        assert!(
            err.contains("tls.client.keyPath") && err.contains("missing"),
            "{err}"
        );
        let disabled =
            ClientTls::from_lookup("c.conf", lookup(&[(CLIENT_AUTH_SERVER, "true".into())]));
        assert!(
            disabled.unwrap().is_none(),
            "tls.enable absent: no TLS, nothing read"
        );
    }

    /// Read from a properties file, each side takes its own keys and leaves the rest.
    #[test]
    fn from_properties_takes_the_tls_keys() {
        let pki = Pki::new();
        let text = format!(
            "listenPort=9876\ntls.server.mode=permissive\ntls.enable=true\n\
             tls.server.certPath={}\ntls.server.keyPath={}\n",
            pki.path("server.pem"),
            pki.path("server.key")
        );
        let mut props = Properties::parse("broker.conf", &text).unwrap();
        let server = ServerTls::from_properties(&mut props).unwrap();
        assert_eq!(server.mode(), TlsMode::Permissive);
        assert!(ClientTls::from_properties(&mut props).unwrap().is_some());
        assert_eq!(
            props.unknown_keys(),
            vec!["broker.conf:1: listenPort".to_string()]
        );
    }

    #[test]
    fn the_server_name_is_the_host_of_the_address() {
        assert_eq!(
            server_name("127.0.0.1:9876").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        assert_eq!(
            server_name("[::1]:9876").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        assert_eq!(
            server_name("broker-a.example:10911").unwrap(),
            ServerName::try_from("broker-a.example").unwrap()
        );
        assert!(server_name("bad host:1").is_err());
    }

    fn peer_tls(pairs: &[(&str, String)]) -> Result<Option<PeerTls>, ConfigError> {
        PeerTls::from_lookup("b.conf", lookup(pairs))
    }

    /// `tls.peer.mode=<mode>` with the certificate `<name>.pem` and the trust file `ca`.
    fn peer(pki: &Pki, mode: &str, name: &str, ca: &str) -> PeerTls {
        let pairs = [
            (PEER_MODE, mode.to_string()),
            (PEER_CERT_PATH, pki.path(&format!("{name}.pem"))),
            (PEER_KEY_PATH, pki.path(&format!("{name}.key"))),
            (PEER_TRUST_CERT_PATH, pki.path(ca)),
        ];
        peer_tls(&pairs)
            .unwrap()
            .expect("a mode other than disabled")
    }

    /// Peer TLS takes the client port's certificate and trust file unless it has its own,
    /// and refuses at start-up a certificate its peers would refuse.
    #[test]
    fn peer_settings_fall_back_and_check_the_own_certificate() {
        let pki = Pki::new();
        assert!(peer_tls(&[]).unwrap().is_none());
        assert!(peer_tls(&[(PEER_MODE, "Disabled".into())])
            .unwrap()
            .is_none());
        let mode = (PEER_MODE, "enforcing".to_string());
        let cert = (SERVER_CERT_PATH, pki.path("peer.pem"));
        let key = (SERVER_KEY_PATH, pki.path("peer.key"));
        let tls = peer_tls(&[
            mode.clone(),
            cert.clone(),
            key.clone(),
            (CLIENT_TRUST_CERT_PATH, pki.path("ca.pem")),
        ]);
        assert_eq!(tls.unwrap().unwrap().mode(), TlsMode::Enforcing);
        let err = peer_tls(&[mode.clone(), cert.clone(), key.clone()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tls.peer.trustCertPath") && err.contains("missing"),
            "{err}"
        );
        // Server authentication only: peers would refuse it as a client's certificate.
        let trust = (SERVER_TRUST_CERT_PATH, pki.path("ca.pem"));
        let err = peer_tls(&[
            mode.clone(),
            (SERVER_CERT_PATH, pki.path("server.pem")),
            (SERVER_KEY_PATH, pki.path("server.key")),
            trust.clone(),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("tls.server.certPath") && err.contains("would refuse"),
            "{err}"
        );
        // Its own keys win over the client port's; another CA's certificate is refused.
        let err = peer_tls(&[
            mode.clone(),
            cert.clone(),
            key.clone(),
            trust.clone(),
            (PEER_CERT_PATH, pki.path("other-peer.pem")),
            (PEER_KEY_PATH, pki.path("other-peer.key")),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("tls.peer.certPath") && err.contains("would refuse"),
            "{err}"
        );
        let named = |name: &str| {
            let server_name = (PEER_SERVER_NAME, name.to_string());
            peer_tls(&[
                mode.clone(),
                cert.clone(),
                key.clone(),
                trust.clone(),
                server_name,
            ])
        };
        assert!(named("localhost").unwrap().is_some());
        let err = named("broker-b.example").unwrap_err().to_string();
        assert!(err.contains("would refuse"), "{err}");
        let err = named("not a name").unwrap_err().to_string();
        assert!(err.contains("tls.peer.serverName=not a name"), "{err}");
        let err = peer_tls(&[(PEER_MODE, "strict".into())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls.peer.mode=strict"), "{err}");
    }

    /// Read from a properties file before the client port's TLS, peer TLS takes its own
    /// keys and only reads the client port's.
    #[test]
    fn peer_from_properties_reads_the_client_port_keys_without_taking_them() {
        let pki = Pki::new();
        let text = format!(
            "tls.peer.mode=permissive\ntls.server.mode=enforcing\n\
             tls.server.certPath={}\ntls.server.keyPath={}\ntls.server.trustCertPath={}\n",
            pki.path("peer.pem"),
            pki.path("peer.key"),
            pki.path("ca.pem"),
        );
        let mut props = Properties::parse("broker.conf", &text).unwrap();
        let peer = PeerTls::from_properties(&mut props).unwrap().unwrap();
        assert_eq!(peer.mode(), TlsMode::Permissive);
        let server = ServerTls::from_properties(&mut props).unwrap();
        assert_eq!(server.mode(), TlsMode::Enforcing);
        assert!(
            props.unknown_keys().is_empty(),
            "{:?}",
            props.unknown_keys()
        );
    }

    /// One TLS connection from `client` to `server` and a message each way: the outcome on
    /// each side.
    async fn peer_exchange(server: &PeerTls, client: &PeerTls) -> (io::Result<()>, io::Result<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let serve = async {
            let (stream, _) = listener.accept().await?;
            let Accepted::Tls(mut stream) = server.accept(stream).await? else {
                return Err(io::Error::other("served as plaintext"));
            };
            let mut ping = [0u8; 4];
            stream.read_exact(&mut ping).await?;
            stream.write_all(b"pong").await?;
            stream.flush().await
        };
        let call = async {
            let stream = TcpStream::connect(&addr).await?;
            let mut stream = client.connect(&addr, stream).await?;
            stream.write_all(b"ping").await?;
            stream.flush().await?;
            let mut pong = [0u8; 4];
            stream.read_exact(&mut pong).await?;
            Ok(())
        };
        let both = async { tokio::join!(serve, call) };
        tokio::time::timeout(Duration::from_secs(5), both)
            .await
            .expect("a refusal ends well before 5 s")
    }

    /// Peers of one CA verify each other; a peer with another CA's certificate is refused
    /// as a client and as a server; plaintext is served only in permissive mode.
    #[tokio::test]
    async fn peers_verify_each_other_and_refuse_another_ca() {
        let pki = Pki::new();
        let good = peer(&pki, "enforcing", "peer", "ca.pem");
        let foreign = peer(&pki, "enforcing", "other-peer", "other-ca.pem");
        let (served, called) = peer_exchange(&good, &good).await;
        served.expect("the server admits a peer of its CA");
        called.expect("the client admits a peer of its CA");
        let (served, called) = peer_exchange(&good, &foreign).await;
        let err = served.unwrap_err().to_string();
        assert!(err.contains("TLS handshake"), "{err}");
        assert!(called.is_err(), "the foreign client gets no answer");
        let (served, called) = peer_exchange(&foreign, &good).await;
        let err = called.unwrap_err().to_string();
        assert!(err.contains("certificate"), "{err}");
        assert!(served.is_err());

        for (mode, admitted) in [("enforcing", false), ("permissive", true)] {
            let tls = peer(&pki, mode, "peer", "ca.pem");
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut plain = TcpStream::connect(addr).await.unwrap();
            plain.write_all(b"\0\x10hello").await.unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            match tls.accept(stream).await {
                Ok(Accepted::Plain(_)) => assert!(admitted, "{mode}: plaintext served"),
                Ok(Accepted::Tls(_)) => panic!("{mode}: plaintext taken for TLS"),
                Err(e) => {
                    assert!(!admitted, "{mode}: {e}");
                    assert!(e.to_string().contains("tls.peer.mode is enforcing"), "{e}");
                }
            }
        }
    }
}
