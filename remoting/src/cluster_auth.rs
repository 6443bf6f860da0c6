//! The cluster secret: what proves a broker to its Raft peers and to the name servers.
//!
//! Every broker and name server of a cluster reads the same secret from the file named by
//! `clusterSecretFile` (a path relative to the config file's directory, or absolute). The
//! secret never travels: peers prove it with a challenge-response handshake (dledger's
//! `network::handshake`), and a broker signs what it tells a name server with it
//! ([`sign_broker_request`]).
//!
//! A signed request carries two ext fields: `rrAuthTime` (milliseconds since the epoch) and
//! `rrAuthSignature`, the Base64 of an HMAC-SHA256 keyed by the secret over the request code,
//! every other ext field (sorted by key, each as `key \0 value \0`) and the body. The name
//! server refuses a request whose signature does not match or whose time is more than
//! [`MAX_CLOCK_SKEW_MS`] from its own clock, so a recorded registration is only good for
//! that long (and only says again what its broker said).

use std::path::{Path, PathBuf};

use base64::Engine;
use ring::hmac;

use crate::command::RemotingCommand;
use crate::config_file::{ConfigError, Properties};

/// The ext field holding the signing time.
pub const TIME_FIELD: &str = "rrAuthTime";
/// The ext field holding the signature.
pub const SIGNATURE_FIELD: &str = "rrAuthSignature";

/// A signed request older or newer than this (by the receiver's clock) is refused.
pub const MAX_CLOCK_SKEW_MS: i64 = 60_000;

/// The shortest secret accepted: 16 bytes (128 bits) once surrounding whitespace is trimmed.
pub const MIN_SECRET_BYTES: usize = 16;

/// The cluster secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterSecret({} bytes)", self.0.len())
    }
}

impl ClusterSecret {
    /// A secret from its bytes; refused if shorter than [`MIN_SECRET_BYTES`].
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, String> {
        let bytes = bytes.into();
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "a cluster secret must be at least {MIN_SECRET_BYTES} bytes, this one has {}",
                bytes.len()
            ));
        }
        Ok(ClusterSecret(bytes))
    }

    /// Reads the secret from `path` (surrounding whitespace trimmed). An unreadable, short or
    /// missing file is an error that says how to make one.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read(path).map_err(|e| {
            format!(
                "cannot read the cluster secret file {}: {e}; create one with \
                 `head -c 32 /dev/urandom | base64 > {}` and give every broker and name \
                 server of the cluster the same file",
                path.display(),
                path.display()
            )
        })?;
        let trimmed = text.trim_ascii();
        ClusterSecret::new(trimmed.to_vec()).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }
}

/// A new random secret as text (32 bytes from the OS, Base64), for a new cluster's
/// `clusterSecretFile`.
pub fn generate_secret() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the OS has no randomness to make a cluster secret with");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Writes a new secret to `path` (readable by its owner only) unless the file exists.
pub fn ensure_secret_file(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => writeln!(file, "{}", generate_secret()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Resolves a config key naming a file (`clusterSecretFile`, `aclFile`): relative to
/// the directory of the config file (`origin`) it was given in.
pub fn resolve_config_path(origin: &str, value: &str) -> PathBuf {
    let path = Path::new(value);
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match Path::new(origin).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// How a broker or name server proves itself (`clusterAuthEnable`, `clusterSecretFile`).
#[derive(Debug, Clone)]
pub struct ClusterAuth {
    /// `clusterAuthEnable` (default true): false runs with unauthenticated peers and
    /// registrations, for a network nobody else reaches.
    pub enabled: bool,
    /// `clusterSecretFile`, resolved against the config file's directory.
    pub secret_file: Option<PathBuf>,
    /// Read from `secret_file` by [`ClusterAuth::load`] when the process starts.
    pub secret: Option<ClusterSecret>,
}

impl Default for ClusterAuth {
    fn default() -> Self {
        ClusterAuth {
            enabled: true,
            secret_file: None,
            secret: None,
        }
    }
}

impl ClusterAuth {
    /// Takes `clusterAuthEnable` and `clusterSecretFile` from a config file (a path relative
    /// to the config file's directory). The file is read by [`ClusterAuth::load`].
    pub fn from_properties(p: &mut Properties) -> Result<Self, ConfigError> {
        let mut auth = ClusterAuth::default();
        if let Some(enabled) = p.take("clusterAuthEnable")? {
            auth.enabled = enabled;
        }
        if let Some(file) = p.take::<String>("clusterSecretFile")? {
            auth.secret_file = Some(resolve_config_path(&p.origin, file.trim()));
        }
        Ok(auth)
    }

    /// Reads the secret file, if one is named and authentication is on.
    pub fn load(&mut self) -> Result<(), String> {
        if let (true, Some(path)) = (self.enabled, &self.secret_file) {
            self.secret = Some(ClusterSecret::load(path)?);
        }
        Ok(())
    }

    /// The secret to prove and check, `None` when authentication is off; an error when it
    /// is on and no secret was loaded.
    pub fn secret(&self) -> Result<Option<&ClusterSecret>, String> {
        match (&self.secret, self.enabled) {
            (_, false) => Ok(None),
            (Some(secret), true) => Ok(Some(secret)),
            (None, true) => Err(
                "no cluster secret: set `clusterSecretFile` to a file holding \
                 the secret every broker and name server of the cluster shares (make one with \
                 `head -c 32 /dev/urandom | base64 > cluster.secret`), or set \
                 `clusterAuthEnable=false` on a network nobody else reaches"
                    .into(),
            ),
        }
    }
}

fn signed_content(request: &RemotingCommand) -> Vec<u8> {
    let mut fields: Vec<(&str, &str)> = request
        .ext_fields
        .iter()
        .filter(|(k, _)| *k != SIGNATURE_FIELD)
        .collect();
    fields.sort_unstable();
    let mut out = Vec::with_capacity(64 + request.body.len());
    out.extend_from_slice(b"rocketraft broker request\0");
    out.extend_from_slice(&request.code.to_be_bytes());
    for (k, v) in fields {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out.extend_from_slice(&request.body);
    out
}

/// Signs a broker's request to a name server, at `now_ms`.
pub fn sign_broker_request(request: &mut RemotingCommand, secret: &ClusterSecret, now_ms: i64) {
    request.ext_fields.insert(TIME_FIELD, &now_ms.to_string());
    let tag = hmac::sign(&secret.key(), &signed_content(request));
    let signature = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    request.ext_fields.insert(SIGNATURE_FIELD, &signature);
}

/// Checks a broker request's signature and time against `now_ms`; the error says which failed.
pub fn verify_broker_request(
    request: &RemotingCommand,
    secret: &ClusterSecret,
    now_ms: i64,
) -> Result<(), String> {
    let Some(signature) = request.ext(SIGNATURE_FIELD) else {
        return Err(format!(
            "unsigned broker request (no {SIGNATURE_FIELD}): the broker has no clusterSecretFile, \
             or is not ours"
        ));
    };
    let time: i64 = request
        .ext(TIME_FIELD)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("signed broker request without a valid {TIME_FIELD}"))?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature)
        .map_err(|_| "broker request signature is not Base64".to_string())?;
    hmac::verify(&secret.key(), &signed_content(request), &signature).map_err(|_| {
        "broker request signature does not match (another cluster secret?)".to_string()
    })?;
    let skew = now_ms - time;
    if skew.abs() > MAX_CLOCK_SKEW_MS {
        return Err(format!(
            "broker request signed {skew} ms from this name server's clock (at most \
             {MAX_CLOCK_SKEW_MS} ms): a replay, or clocks apart"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> ClusterSecret {
        ClusterSecret::new(b"0123456789abcdef-cluster".to_vec()).unwrap()
    }

    fn request() -> RemotingCommand {
        RemotingCommand::bare_request(103)
            .with_ext("brokerName", "broker-a")
            .with_ext("brokerId", "0")
            .with_body(&b"{\"topics\":1}"[..])
    }

    // Proves a signed request verifies, and that changing any signed part (a field, the
    // body, the code), signing with another secret, leaving it unsigned or presenting it
    // outside the clock window each fail with a reason.
    #[test]
    fn signed_requests_verify_and_tampering_fails() {
        let now = 1_700_000_000_000;
        let mut r = request();
        sign_broker_request(&mut r, &secret(), now);
        verify_broker_request(&r, &secret(), now + 1_000).unwrap();

        let mut field = r.clone();
        field.ext_fields.insert("brokerId", "1");
        assert!(verify_broker_request(&field, &secret(), now)
            .unwrap_err()
            .contains("does not match"));
        let mut body = r.clone();
        body.body = bytes::Bytes::from_static(b"{\"topics\":2}");
        assert!(verify_broker_request(&body, &secret(), now).is_err());
        let mut code = r.clone();
        code.code = 104;
        assert!(verify_broker_request(&code, &secret(), now).is_err());

        let other = ClusterSecret::new(b"another secret, 16+ bytes".to_vec()).unwrap();
        assert!(verify_broker_request(&r, &other, now).is_err());
        assert!(verify_broker_request(&request(), &secret(), now)
            .unwrap_err()
            .contains("unsigned"));
        assert!(
            verify_broker_request(&r, &secret(), now + MAX_CLOCK_SKEW_MS + 1)
                .unwrap_err()
                .contains("replay")
        );
    }

    #[test]
    fn secrets_are_long_enough_and_never_printed() {
        assert!(ClusterSecret::new(b"short".to_vec()).is_err());
        assert_eq!(format!("{:?}", secret()), "ClusterSecret(24 bytes)");
        let dir = std::env::temp_dir().join(format!("rr-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cluster.secret");
        std::fs::write(&file, "  0123456789abcdef-cluster\n").unwrap();
        assert_eq!(
            ClusterSecret::load(&file).unwrap().bytes(),
            secret().bytes()
        );
        let missing = ClusterSecret::load(&dir.join("none")).unwrap_err();
        assert!(missing.contains("head -c 32 /dev/urandom"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            resolve_config_path("conf/broker-n0.conf", "cluster.secret"),
            PathBuf::from("conf/cluster.secret")
        );
        assert_eq!(
            resolve_config_path("b.conf", "cluster.secret"),
            PathBuf::from("cluster.secret")
        );
        assert_eq!(
            resolve_config_path("conf/b.conf", "/etc/rr.secret"),
            PathBuf::from("/etc/rr.secret")
        );
    }
}
