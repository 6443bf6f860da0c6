//! Who is on the other end of a peer connection: a challenge-response handshake that every
//! TCP peer connection runs before its first RPC.
//!
//! Both ends hold the cluster secret; neither sends it. The client names its cluster, group,
//! its own node id and the node it means to reach, with a fresh nonce; the server checks the
//! names against its own, answers with a nonce of its own and its proof; the client checks
//! that proof and answers with its own. A proof is an HMAC-SHA256, keyed by the secret, over a
//! role label and the whole transcript (both nonces and every name), so neither proof can be
//! replayed on another connection, for another node, or passed off as the other role's.
//!
//! After the handshake the server knows the sender's node id, and refuses any RPC that claims
//! another sender (every RPC carries the vote of the node that sent it). A member can still
//! misbehave; a stranger cannot say anything at all.
//!
//! Every message of the handshake is a `u16 BE length | body` of at most
//! [`MAX_MESSAGE_BYTES`], read within the handshake's deadline: a connection that claims a
//! large frame or sends half of one before proving itself costs a few hundred bytes, not the
//! peer frame limit.
//!
//! Why not "is the sender a member of our configuration": a node added by a newer leader
//! must be able to reach a follower whose log does not hold that configuration yet, and
//! openraft itself ignores RPCs from a stale term. The secret proves the cluster; the names
//! prove the group and node; openraft's votes order the members.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use ring::hmac;
use ring::rand::SecureRandom;
use ring::rand::SystemRandom;
use tokio::io::AsyncRead;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWrite;
use tokio::io::AsyncWriteExt;

use crate::types::NodeId;

/// First bytes of a client's hello: names the protocol and its version.
const MAGIC: &[u8; 8] = b"RRPEER01";

/// Largest handshake message.
pub const MAX_MESSAGE_BYTES: usize = 512;

/// Longest cluster or group name a hello carries (RocketMQ's names are at most 127).
const MAX_NAME_BYTES: usize = 255;

const NONCE_BYTES: usize = 32;
const PROOF_BYTES: usize = 32;

const STATUS_OK: u8 = 0;
const STATUS_REFUSED: u8 = 1;

/// The cluster secret. Its `Debug` never shows it.
#[derive(Clone, Default)]
pub struct PeerSecret(Arc<[u8]>);

impl PeerSecret {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        PeerSecret(Arc::from(secret.into()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }
}

impl fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerSecret({} bytes)", self.0.len())
    }
}

/// What a node proves and checks on its peer connections.
#[derive(Debug, Clone, Default)]
pub struct PeerIdentity {
    /// `brokerClusterName`: a peer of another cluster is refused.
    pub cluster: String,
    /// The Raft group (`dLegerGroup`): a peer of another group is refused.
    pub group: String,
    /// The cluster secret. Empty: the handshake still checks names, but proves nothing.
    pub secret: PeerSecret,
    /// A digest of rules every member must enforce alike (the broker's ACL fingerprint;
    /// empty when it has none): a peer whose digest differs is refused, so a request is
    /// judged the same whichever member leads.
    pub rules: String,
}

/// Why a handshake failed. `Refused` came from the other end; the rest are ours.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("refused by the peer: {0}")]
    Refused(String),
    #[error("{0}")]
    Rejected(String),
    #[error("handshake timed out after {0:?}")]
    Timeout(Duration),
    #[error("handshake I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The fields both proofs cover.
struct Transcript {
    client_nonce: [u8; NONCE_BYTES],
    server_nonce: [u8; NONCE_BYTES],
    from: NodeId,
    to: NodeId,
    cluster: String,
    group: String,
    rules: String,
}

impl Transcript {
    fn proof(&self, secret: &PeerSecret, role: &[u8]) -> hmac::Tag {
        hmac::sign(&secret.key(), &self.bytes(role))
    }

    /// ring compares in constant time.
    fn verify(&self, secret: &PeerSecret, role: &[u8], proof: &[u8]) -> bool {
        hmac::verify(&secret.key(), &self.bytes(role), proof).is_ok()
    }

    fn bytes(&self, role: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_MESSAGE_BYTES);
        out.extend_from_slice(role);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.client_nonce);
        out.extend_from_slice(&self.server_nonce);
        out.extend_from_slice(&self.from.to_be_bytes());
        out.extend_from_slice(&self.to.to_be_bytes());
        for name in [&self.cluster, &self.group, &self.rules] {
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
        }
        out
    }
}

const CLIENT_ROLE: &[u8] = b"rocketraft peer client\0";
const SERVER_ROLE: &[u8] = b"rocketraft peer server\0";

fn nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0u8; NONCE_BYTES];
    // SystemRandom fails only where the OS has no randomness at all; fall back to the clock
    // and a counter, which still makes transcripts unique (never silently all zeros).
    if SystemRandom::new().fill(&mut nonce).is_err() {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        nonce[..8].copy_from_slice(&now.to_be_bytes());
        nonce[8..16].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    }
    nonce
}

async fn write_message<S: AsyncWrite + Unpin>(stream: &mut S, body: &[u8]) -> std::io::Result<()> {
    debug_assert!(body.len() <= MAX_MESSAGE_BYTES);
    let mut frame = Vec::with_capacity(2 + body.len());
    frame.extend_from_slice(&(body.len() as u16).to_be_bytes());
    frame.extend_from_slice(body);
    stream.write_all(&frame).await?;
    stream.flush().await
}

async fn read_message<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, HandshakeError> {
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).await?;
    let length = u16::from_be_bytes(length) as usize;
    if length > MAX_MESSAGE_BYTES {
        return Err(HandshakeError::Rejected(format!(
            "handshake message of {length} bytes (at most {MAX_MESSAGE_BYTES}): not a rocketraft peer"
        )));
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// Reads fields off a handshake message; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HandshakeError> {
        if self.0.len() < n {
            return Err(HandshakeError::Rejected(
                "truncated handshake message".into(),
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], HandshakeError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }

    fn u64(&mut self) -> Result<u64, HandshakeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn name(&mut self) -> Result<String, HandshakeError> {
        let len = self.take(1)?[0] as usize;
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| HandshakeError::Rejected("a name in the handshake is not UTF-8".into()))
    }

    fn rest(&self) -> &'a [u8] {
        self.0
    }
}

fn check_name_length(what: &str, name: &str) -> Result<(), HandshakeError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(HandshakeError::Rejected(format!(
            "{what} name of {} bytes is longer than {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    Ok(())
}

async fn within<T>(
    timeout: Duration,
    work: impl std::future::Future<Output = Result<T, HandshakeError>>,
) -> Result<T, HandshakeError> {
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))?
}

/// Proves this node (`from`) to the server of node `to`, and checks the server's proof.
pub async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    identity: &PeerIdentity,
    from: NodeId,
    to: NodeId,
    timeout: Duration,
) -> Result<(), HandshakeError> {
    check_name_length("cluster", &identity.cluster)?;
    check_name_length("group", &identity.group)?;
    check_name_length("rules digest", &identity.rules)?;
    within(timeout, async {
        let client_nonce = nonce();
        let mut hello = Vec::with_capacity(MAX_MESSAGE_BYTES);
        hello.extend_from_slice(MAGIC);
        hello.extend_from_slice(&client_nonce);
        hello.extend_from_slice(&from.to_be_bytes());
        hello.extend_from_slice(&to.to_be_bytes());
        for name in [&identity.cluster, &identity.group, &identity.rules] {
            hello.push(name.len() as u8);
            hello.extend_from_slice(name.as_bytes());
        }
        write_message(stream, &hello).await?;

        let answer = read_message(stream).await?;
        let mut answer = Reader(&answer);
        if answer.take(1)?[0] != STATUS_OK {
            return Err(HandshakeError::Refused(
                String::from_utf8_lossy(answer.rest()).into_owned(),
            ));
        }
        let transcript = Transcript {
            client_nonce,
            server_nonce: answer.array()?,
            from,
            to,
            cluster: identity.cluster.clone(),
            group: identity.group.clone(),
            rules: identity.rules.clone(),
        };
        if !transcript.verify(&identity.secret, SERVER_ROLE, answer.take(PROOF_BYTES)?) {
            return Err(HandshakeError::Rejected(format!(
                "n{to} did not prove the cluster secret (a different secret, or not our peer)"
            )));
        }
        let proof = transcript.proof(&identity.secret, CLIENT_ROLE);
        write_message(stream, proof.as_ref()).await?;

        let verdict = read_message(stream).await?;
        let mut verdict = Reader(&verdict);
        if verdict.take(1)?[0] != STATUS_OK {
            return Err(HandshakeError::Refused(
                String::from_utf8_lossy(verdict.rest()).into_owned(),
            ));
        }
        Ok(())
    })
    .await
}

/// Serves the handshake as node `me`; returns the proven id of the node on the other end.
/// A refusal is sent to the client (with its reason) before the error is returned.
pub async fn server<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    identity: &PeerIdentity,
    me: NodeId,
    timeout: Duration,
) -> Result<NodeId, HandshakeError> {
    within(timeout, async {
        let hello = read_message(stream).await?;
        let mut hello = Reader(&hello);
        if hello.take(MAGIC.len())? != MAGIC {
            return Err(HandshakeError::Rejected(
                "no rocketraft peer hello (wrong port, or an older version)".into(),
            ));
        }
        let client_nonce = hello.array()?;
        let from = hello.u64()?;
        let to = hello.u64()?;
        let cluster = hello.name()?;
        let group = hello.name()?;
        let rules = hello.name()?;
        let refusal = if cluster != identity.cluster {
            Some(format!(
                "n{from} of cluster `{cluster}` reached a node of cluster `{}`",
                identity.cluster
            ))
        } else if group != identity.group {
            Some(format!(
                "n{from} of group `{group}` reached a node of group `{}`",
                identity.group
            ))
        } else if rules != identity.rules {
            Some(format!(
                "n{from} enforces other rules (ACL fingerprint `{}`) than this node (`{}`): \
                 give every member of the group the same ACL files",
                short(&rules),
                short(&identity.rules)
            ))
        } else if to != me {
            Some(format!("n{from} meant to reach n{to}, but this is n{me}"))
        } else if from == me {
            Some(format!("a peer claims to be this node (n{me})"))
        } else {
            None
        };
        if let Some(reason) = refusal {
            refuse(stream, &reason).await;
            return Err(HandshakeError::Rejected(reason));
        }
        let transcript = Transcript {
            client_nonce,
            server_nonce: nonce(),
            from,
            to,
            cluster,
            group,
            rules,
        };
        let mut challenge = vec![STATUS_OK];
        challenge.extend_from_slice(&transcript.server_nonce);
        challenge.extend_from_slice(transcript.proof(&identity.secret, SERVER_ROLE).as_ref());
        write_message(stream, &challenge).await?;

        let proof = read_message(stream).await?;
        if !transcript.verify(&identity.secret, CLIENT_ROLE, &proof) {
            let reason = format!("n{from} did not prove the cluster secret");
            refuse(stream, &reason).await;
            return Err(HandshakeError::Rejected(reason));
        }
        write_message(stream, &[STATUS_OK]).await?;
        Ok(from)
    })
    .await
}

/// The first 12 characters of a digest, enough to tell two apart in a log line.
fn short(digest: &str) -> &str {
    match digest {
        "" => "none",
        d => &d[..d.len().min(12)],
    }
}

async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, reason: &str) {
    let mut message = vec![STATUS_REFUSED];
    let reason = reason.as_bytes();
    message.extend_from_slice(&reason[..reason.len().min(MAX_MESSAGE_BYTES - 1)]);
    let _ = write_message(stream, &message).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(secret: &str) -> PeerIdentity {
        PeerIdentity {
            cluster: "DefaultCluster".into(),
            group: "broker-a".into(),
            secret: PeerSecret::new(secret.as_bytes().to_vec()),
            rules: String::new(),
        }
    }

    async fn run(
        client_id: PeerIdentity,
        from: NodeId,
        to: NodeId,
        server_id: PeerIdentity,
        me: NodeId,
    ) -> (Result<(), HandshakeError>, Result<NodeId, HandshakeError>) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let t = Duration::from_secs(2);
        tokio::join!(
            client(&mut a, &client_id, from, to, t),
            server(&mut b, &server_id, me, t)
        )
    }

    // Proves the handshake admits a peer with the same cluster, group and secret, names the
    // sender, and refuses each mismatch on both ends with a reason that says which.
    #[tokio::test]
    async fn admits_members_and_refuses_strangers() {
        let s = identity("the secret of this cluster");
        let (c, v) = run(s.clone(), 1, 2, s.clone(), 2).await;
        c.unwrap();
        assert_eq!(v.unwrap(), 1);

        // A wrong secret: the client finds out first (the server's proof fails).
        let (c, v) = run(identity("another secret"), 1, 2, s.clone(), 2).await;
        assert!(
            c.unwrap_err().to_string().contains("did not prove"),
            "client"
        );
        assert!(v.is_err());

        let mut other_group = s.clone();
        other_group.group = "broker-b".into();
        let (c, v) = run(other_group, 1, 2, s.clone(), 2).await;
        assert!(c.unwrap_err().to_string().contains("group `broker-b`"));
        assert!(v.unwrap_err().to_string().contains("group"));

        let mut other_cluster = s.clone();
        other_cluster.cluster = "Other".into();
        let (c, _) = run(other_cluster, 1, 2, s.clone(), 2).await;
        assert!(c.unwrap_err().to_string().contains("cluster `Other`"));

        let mut other_rules = s.clone();
        other_rules.rules = "0123456789abcdef".into();
        let (c, _) = run(other_rules, 1, 2, s.clone(), 2).await;
        assert!(c.unwrap_err().to_string().contains("other rules"));

        let (c, _) = run(s.clone(), 1, 3, s.clone(), 2).await;
        assert!(c.unwrap_err().to_string().contains("meant to reach n3"));
        let (c, _) = run(s.clone(), 2, 2, s.clone(), 2).await;
        assert!(c
            .unwrap_err()
            .to_string()
            .contains("claims to be this node"));
    }

    // Proves a client that knows no secret, answering with the server's own proof (a
    // reflection), is refused: the two roles' proofs differ.
    #[tokio::test]
    async fn a_reflected_proof_is_refused() {
        let s = identity("the secret of this cluster");
        let (mut a, mut b) = tokio::io::duplex(4096);
        let server_side =
            tokio::spawn(async move { server(&mut b, &s, 2, Duration::from_secs(2)).await });
        let mut hello = Vec::new();
        hello.extend_from_slice(MAGIC);
        hello.extend_from_slice(&[7u8; NONCE_BYTES]);
        hello.extend_from_slice(&1u64.to_be_bytes());
        hello.extend_from_slice(&2u64.to_be_bytes());
        for name in ["DefaultCluster", "broker-a", ""] {
            hello.push(name.len() as u8);
            hello.extend_from_slice(name.as_bytes());
        }
        write_message(&mut a, &hello).await.unwrap();
        let challenge = read_message(&mut a).await.unwrap();
        let server_proof = &challenge[1 + NONCE_BYTES..];
        write_message(&mut a, server_proof).await.unwrap();
        let verdict = read_message(&mut a).await.unwrap();
        assert_eq!(verdict[0], STATUS_REFUSED);
        assert!(server_side.await.unwrap().is_err());
    }

    // Proves a stranger's oversize length or silence costs a bounded read and a bounded wait.
    #[tokio::test]
    async fn oversize_and_silent_clients_are_cut_off() {
        let s = identity("x");
        let (mut a, mut b) = tokio::io::duplex(4096);
        a.write_all(&[0xff, 0xff, 1, 2, 3]).await.unwrap();
        let err = server(&mut b, &s, 2, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a rocketraft peer"), "{err}");

        let (_a, mut b) = tokio::io::duplex(4096);
        let err = server(&mut b, &s, 2, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, HandshakeError::Timeout(_)), "{err}");
    }

    #[test]
    fn secret_is_not_printed() {
        let s = PeerSecret::new(b"hunter2hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "PeerSecret(14 bytes)");
    }
}
