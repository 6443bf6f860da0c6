//! Peer RPCs as bincode frames over TCP.
//!
//! Frame: `u32 BE length` (of what follows) `| u64 BE request id | body`. A request's body is
//! its wire form ([`super::wire`]: a bincode head, then the entries' payloads, written from the
//! entries and read as slices of the frame); a response's body is bincode. A length above
//! `max_frame_bytes` closes the connection (never allocates it).
//!
//! Client ([`TcpTransport`]): one connection per peer, reused and multiplexed by request id;
//! at most `max_inflight_rpcs_per_peer` requests in flight (a semaphore; callers wait within
//! their deadline); reconnect with exponential backoff from `reconnect_backoff_min_ms` to
//! `..._max_ms`, failing requests at once while the peer is down; a connection whose oldest
//! request went unanswered for twice the rpc deadline is considered dead and re-opened.
//!
//! Server ([`serve`]): takes an already bound listener, the local [`PeerService`] and a
//! shutdown future; each connection has a bounded number of requests in progress, and the
//! listener a bounded number of connections.
//!
//! Every connection starts with the [`super::handshake`]: the client proves the cluster
//! secret and names its group and node before its first frame, and the server then refuses
//! every RPC that claims another sender. Until then the server reads only handshake
//! messages (at most 512 bytes each, within `rpc_timeout_ms`).
//!
//! With peer TLS ([`PeerTls`], `tls.peer.mode`) a connection is first a mutual TLS session:
//! each end presents its certificate and verifies the other's, and the handshake above runs
//! inside it. The TLS handshake shares the handshake's deadline and, on the server, runs in
//! the connection's own task, so a peer that goes silent holds one connection slot for at
//! most `rpc_timeout_ms` and never the accept loop. A peer whose certificate does not
//! verify is refused before a byte of the peer protocol is read; in enforcing mode so is
//! plaintext. Plain and TLS connections then share every read and write below.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use remoting::throttle::Throttle;
use remoting::tls::Accepted;
use remoting::tls::PeerTls;
use tokio::io::AsyncRead;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWrite;
use tokio::io::AsyncWriteExt;
use tokio::io::BufReader;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::handshake;
use super::handshake::PeerIdentity;
use super::PeerRequest;
use super::PeerResponse;
use super::PeerService;
use super::PeerTransport;
use super::TransportError;
use crate::types::NodeId;

/// Limits of the TCP transport (taken from [`crate::DLedgerConfig`]).
#[derive(Debug, Clone)]
pub struct TcpLimits {
    /// This node: the sender named in every handshake.
    pub self_id: NodeId,
    /// The cluster, group and secret proven in every handshake.
    pub identity: PeerIdentity,
    /// TLS to every peer, the handshake inside it; `None`: plaintext.
    pub tls: Option<Arc<PeerTls>>,
    pub max_frame_bytes: usize,
    pub max_inflight_rpcs_per_peer: usize,
    pub reconnect_backoff_min_ms: u64,
    pub reconnect_backoff_max_ms: u64,
    pub rpc_timeout_ms: u64,
}

type Reply = oneshot::Sender<Result<PeerResponse, TransportError>>;

/// A peer connection whose handshakes are done: plain TCP, or TLS over it.
enum PeerStream {
    Plain(TcpStream),
    Tls(Box<dyn PeerIo>),
}

/// A TLS stream, client or server side, as the transport uses it.
trait PeerIo: AsyncRead + AsyncWrite + Send + Unpin {}

impl<S: AsyncRead + AsyncWrite + Send + Unpin> PeerIo for S {}

type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

impl PeerStream {
    /// The halves a connection's reader and writer own. TCP splits into halves that share
    /// nothing; a TLS session is one state, which both halves use under a lock held for one
    /// poll at a time.
    fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            PeerStream::Plain(stream) => {
                let (reader, writer) = stream.into_split();
                (Box::new(reader), Box::new(writer))
            }
            PeerStream::Tls(stream) => {
                let (reader, writer) = tokio::io::split(stream);
                (Box::new(reader), Box::new(writer))
            }
        }
    }
}

struct Outgoing {
    /// The frame up to the payloads of an append-entries request (all of any other frame).
    frame: Vec<u8>,
    /// Written after `frame`, from the entries' own bytes.
    payloads: Vec<Bytes>,
    id: u64,
    reply: Reply,
    /// The caller's deadline: the connection is judged dead only when a request goes
    /// unanswered well past its own deadline (a snapshot's last chunk waits minutes for
    /// its install).
    deadline: Duration,
}

struct PeerConnection {
    tx: mpsc::Sender<Outgoing>,
    inflight: Arc<Semaphore>,
}

/// Which connection to a peer a request travels on. Snapshot chunks have one of their own:
/// while a peer installs a snapshot its Raft core answers nothing else, and the other
/// connection, judged dead for that, must not take the last chunk's answer with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Lane {
    Raft,
    Snapshot,
}

/// TCP client side of the peer transport.
pub struct TcpTransport {
    limits: TcpLimits,
    /// By peer, address (a member re-added at a new address gets a new connection) and lane.
    peers: Mutex<HashMap<(NodeId, String, Lane), Arc<PeerConnection>>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl TcpTransport {
    pub fn new(limits: TcpLimits) -> Arc<Self> {
        Arc::new(TcpTransport {
            limits,
            peers: Mutex::new(HashMap::new()),
            next_id: 1.into(),
        })
    }

    fn connection(&self, target: NodeId, addr: &str, lane: Lane) -> Arc<PeerConnection> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let key = (target, addr.to_string(), lane);
        let connection = peers.entry(key).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(self.limits.max_inflight_rpcs_per_peer);
            tokio::spawn(connection_task(
                target,
                addr.to_string(),
                rx,
                self.limits.clone(),
            ));
            Arc::new(PeerConnection {
                tx,
                inflight: Arc::new(Semaphore::new(self.limits.max_inflight_rpcs_per_peer)),
            })
        });
        Arc::clone(connection)
    }
}

/// Encodes a request frame: the frame bytes up to the payloads, and the payloads (see
/// [`super::wire`]).
fn encode_request_frame(
    id: u64,
    request: PeerRequest,
    max_frame_bytes: usize,
) -> Result<(Vec<u8>, Vec<Bytes>), String> {
    let mut frame = vec![0u8; 12];
    let payloads = super::wire::encode_request(request, &mut frame)?;
    let size = frame.len() - 4 + payloads.iter().map(|p| p.len()).sum::<usize>();
    if size > max_frame_bytes {
        return Err(format!(
            "frame of {size} bytes exceeds max_frame_bytes {max_frame_bytes}"
        ));
    }
    frame[..4].copy_from_slice(&(size as u32).to_be_bytes());
    frame[4..12].copy_from_slice(&id.to_be_bytes());
    Ok((frame, payloads))
}

/// Writes `frame` and then `payloads`, with as few `writev`s as the socket allows, and
/// flushes them (a no-op on TCP; TLS may hold the end of a frame until flushed).
async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
    payloads: &[Bytes],
) -> std::io::Result<()> {
    if payloads.is_empty() {
        writer.write_all(frame).await?;
        return writer.flush().await;
    }
    let parts = || std::iter::once(frame).chain(payloads.iter().map(|p| &p[..]));
    let total: usize = parts().map(|p| p.len()).sum();
    let mut slices = Vec::with_capacity(payloads.len() + 1);
    let mut done = 0usize;
    while done < total {
        slices.clear();
        slices.extend(crate::parts::unwritten(parts(), done).map(std::io::IoSlice::new));
        match writer.write_vectored(&slices).await? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => done += n,
        }
    }
    writer.flush().await
}

fn encode_frame<T: serde::Serialize>(
    id: u64,
    body: &T,
    max_frame_bytes: usize,
) -> Result<Vec<u8>, String> {
    let size = bincode::serialized_size(body).map_err(|e| e.to_string())? as usize + 8;
    if size > max_frame_bytes {
        return Err(format!(
            "frame of {size} bytes exceeds max_frame_bytes {max_frame_bytes}"
        ));
    }
    let mut frame = Vec::with_capacity(size + 4);
    frame.extend_from_slice(&(size as u32).to_be_bytes());
    frame.extend_from_slice(&id.to_be_bytes());
    bincode::serialize_into(&mut frame, body).map_err(|e| e.to_string())?;
    Ok(frame)
}

/// The buffer peer frames are read through: a frame's length and id, many small responses, or
/// the first bytes of a large body come in one `recv` (not one each); the rest of a body larger
/// than this is read straight into its own buffer, past this one.
const READ_BUFFER_BYTES: usize = 4096;

/// The most a frame's body reserves before its bytes arrive: an append-entries request is at
/// most `max_append_entries_bytes` (1 MiB by default) plus its head, and is read into one
/// allocation; a larger frame (a snapshot chunk) grows as it arrives.
const FIRST_READ_RESERVE_BYTES: usize = (1 << 20) + 64 * 1024;

/// Reads one frame: (request id, body). `Ok(None)` on a clean end of stream.
async fn read_frame<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    max_frame_bytes: usize,
) -> std::io::Result<Option<(u64, Vec<u8>)>> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let length = u32::from_be_bytes(length) as usize;
    if !(8..=max_frame_bytes).contains(&length) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame length {length} outside [8, {max_frame_bytes}]"),
        ));
    }
    let mut id = [0u8; 8];
    reader.read_exact(&mut id).await?;
    // Read into spare capacity: zeroing a large append-entries body first cost as much as a
    // tenth of reading it. Capacity beyond what has arrived is reserved as it arrives, so a
    // length that claims more than is sent costs what was sent.
    let mut body = Vec::with_capacity((length - 8).min(FIRST_READ_RESERVE_BYTES));
    (&mut *reader)
        .take((length - 8) as u64)
        .read_to_end(&mut body)
        .await?;
    if body.len() != length - 8 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some((u64::from_be_bytes(id), body)))
}

impl PeerTransport for TcpTransport {
    fn call(
        &self,
        target: NodeId,
        target_addr: &str,
        request: PeerRequest,
        deadline: Duration,
    ) -> BoxFuture<'static, Result<PeerResponse, TransportError>> {
        let lane = match &request.0 {
            super::RequestBody::SnapshotChunk(_) => Lane::Snapshot,
            _ => Lane::Raft,
        };
        let connection = self.connection(target, target_addr, lane);
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let frame = encode_request_frame(id, request, self.limits.max_frame_bytes);
        let timeout_ms = deadline.as_millis() as u64;
        Box::pin(async move {
            let (frame, payloads) =
                frame.map_err(|reason| TransportError::Remote { target, reason })?;
            let call = async {
                let _permit = connection.inflight.acquire().await.map_err(|_| {
                    TransportError::Unreachable {
                        target,
                        reason: "transport closed".into(),
                    }
                })?;
                let (reply, rx) = oneshot::channel();
                connection
                    .tx
                    .send(Outgoing {
                        frame,
                        payloads,
                        id,
                        reply,
                        deadline,
                    })
                    .await
                    .map_err(|_| TransportError::Unreachable {
                        target,
                        reason: "connection task ended".into(),
                    })?;
                rx.await.map_err(|_| TransportError::Unreachable {
                    target,
                    reason: "connection dropped".into(),
                })?
            };
            match tokio::time::timeout(deadline, call).await {
                Ok(result) => result,
                Err(_) => Err(TransportError::Timeout { target, timeout_ms }),
            }
        })
    }
}

/// Owns the connection to one peer for as long as the transport lives.
async fn connection_task(
    target: NodeId,
    addr: String,
    mut rx: mpsc::Receiver<Outgoing>,
    limits: TcpLimits,
) {
    let backoff_min = Duration::from_millis(limits.reconnect_backoff_min_ms);
    let backoff_max = Duration::from_millis(limits.reconnect_backoff_max_ms);
    let mut backoff = backoff_min;
    let mut carried: Option<Outgoing> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match rx.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        match connect(target, &addr, &limits).await {
            Ok(stream) => {
                tracing::debug!(target_node = target, addr = %addr, "connected to peer");
                backoff = backoff_min;
                match run_connection(target, stream, first, &mut rx, &limits).await {
                    ConnectionEnd::TransportDropped => return,
                    ConnectionEnd::Broken(reason) => {
                        tracing::debug!(target_node = target, addr = %addr, reason = %reason, "peer connection closed");
                    }
                }
            }
            Err(reason) => {
                let _ = first.reply.send(Err(TransportError::Unreachable {
                    target,
                    reason: reason.clone(),
                }));
                // While backing off, fail new requests at once instead of letting them time out.
                let sleep = tokio::time::sleep(backoff);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        next = rx.recv() => match next {
                            Some(request) => {
                                let _ = request.reply.send(Err(TransportError::Unreachable { target, reason: reason.clone() }));
                            }
                            None => return,
                        },
                    }
                }
                backoff = (backoff * 2).min(backoff_max);
            }
        }
    }
}

/// Refusals of our handshakes, logged at most once a second per process.
static CLIENT_REFUSALS: Throttle = Throttle::new(1_000);

/// Connects to a peer, runs TLS if configured, and proves this node to it; TLS and the
/// handshake within one `rpc_timeout_ms` (a refusal is logged).
async fn connect(target: NodeId, addr: &str, limits: &TcpLimits) -> Result<PeerStream, String> {
    let timeout = Duration::from_millis(limits.rpc_timeout_ms);
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("connect timed out".into()),
    };
    let _ = stream.set_nodelay(true);
    let handshakes = async {
        let Some(tls) = &limits.tls else {
            return prove(stream, target, limits).await.map(PeerStream::Plain);
        };
        let stream = tls
            .connect(addr, stream)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let stream = prove(stream, target, limits).await?;
        Ok(PeerStream::Tls(Box::new(stream)))
    };
    let done = tokio::time::timeout(timeout, handshakes)
        .await
        .unwrap_or_else(|_| Err(format!("no handshake within {timeout:?}")));
    done.map_err(|e| {
        if let Some(left_out) = CLIENT_REFUSALS.admit() {
            tracing::warn!(target_node = target, addr = %addr, error = %e, left_out, "peer handshake failed");
        }
        format!("peer handshake failed: {e}")
    })
}

/// Proves this node to the peer `target` on `stream` (plain or TLS).
async fn prove<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    target: NodeId,
    limits: &TcpLimits,
) -> Result<S, String> {
    let timeout = Duration::from_millis(limits.rpc_timeout_ms);
    handshake::client(
        &mut stream,
        &limits.identity,
        limits.self_id,
        target,
        timeout,
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(stream)
}

enum ConnectionEnd {
    TransportDropped,
    Broken(String),
}

async fn run_connection(
    target: NodeId,
    stream: PeerStream,
    first: Outgoing,
    rx: &mut mpsc::Receiver<Outgoing>,
    limits: &TcpLimits,
) -> ConnectionEnd {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let (response_tx, mut response_rx) =
        mpsc::channel::<std::io::Result<(u64, Vec<u8>)>>(limits.max_inflight_rpcs_per_peer);
    let max_frame_bytes = limits.max_frame_bytes;
    let reader_task = tokio::spawn(async move {
        loop {
            let item = match read_frame(&mut reader, max_frame_bytes).await {
                Ok(Some(frame)) => Ok(frame),
                Ok(None) => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "peer closed",
                )),
                Err(e) => Err(e),
            };
            let stop = item.is_err();
            if response_tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    let rpc_timeout = Duration::from_millis(limits.rpc_timeout_ms);
    // (reply, when sent, unanswered past this: the connection is dead)
    let mut pending: HashMap<u64, (Reply, Instant, Duration)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut next = Some(first);
    let end = loop {
        if let Some(outgoing) = next.take() {
            if let Err(e) = write_frame(&mut writer, &outgoing.frame, &outgoing.payloads).await {
                let _ = outgoing.reply.send(Err(TransportError::Unreachable {
                    target,
                    reason: e.to_string(),
                }));
                break ConnectionEnd::Broken(e.to_string());
            }
            let stale_after = (rpc_timeout * 2).max(outgoing.deadline + rpc_timeout);
            pending.insert(outgoing.id, (outgoing.reply, Instant::now(), stale_after));
        }
        tokio::select! {
            outgoing = rx.recv() => match outgoing {
                Some(outgoing) => next = Some(outgoing),
                None => break ConnectionEnd::TransportDropped,
            },
            response = response_rx.recv() => match response {
                Some(Ok((id, body))) => {
                    if let Some((reply, _, _)) = pending.remove(&id) {
                        let decoded = bincode::deserialize::<PeerResponse>(&body)
                            .map_err(|e| TransportError::Remote { target, reason: format!("undecodable response: {e}") });
                        let _ = reply.send(decoded);
                    }
                }
                Some(Err(e)) => break ConnectionEnd::Broken(e.to_string()),
                None => break ConnectionEnd::Broken("reader ended".into()),
            },
            _ = tick.tick() => {
                if pending.values().any(|(_, sent, stale_after)| sent.elapsed() > *stale_after) {
                    break ConnectionEnd::Broken("a request went unanswered well past its deadline".into());
                }
            }
        }
    };
    reader_task.abort();
    for (_, (reply, _, _)) in pending {
        let _ = reply.send(Err(TransportError::Unreachable {
            target,
            reason: "connection lost".into(),
        }));
    }
    end
}

/// What the peer server admits.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// This node: a handshake must name it as its target.
    pub self_id: NodeId,
    /// The cluster, group and secret a client must prove.
    pub identity: PeerIdentity,
    /// TLS a client must speak (in permissive mode: may), the handshake inside it.
    pub tls: Option<Arc<PeerTls>>,
    pub max_frame_bytes: usize,
    /// Requests of one connection in progress at once.
    pub max_inflight_per_connection: usize,
    /// Connections open at once, authenticated or not; one more is closed at accept.
    pub max_connections: usize,
    /// Deadline of a new connection's handshakes, TLS and ours together.
    pub handshake_timeout: Duration,
}

/// Refused connections and RPCs, logged at most once a second per process.
static SERVER_REFUSALS: Throttle = Throttle::new(1_000);

fn log_refusal(remote: std::net::SocketAddr, reason: &dyn std::fmt::Display) {
    if let Some(left_out) = SERVER_REFUSALS.admit() {
        tracing::warn!(remote = %remote, reason = %reason, left_out, "refused a peer connection");
    }
}

/// Serves peer RPCs on `listener` until `shutdown` completes; then closes every connection.
pub async fn serve(
    listener: TcpListener,
    service: PeerService,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    let limits = Arc::new(limits);
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let Ok(slot) = Arc::clone(&open).try_acquire_owned() else {
                        log_refusal(remote, &format_args!("{} peer connections are open already", limits.max_connections));
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let service = service.clone();
                    let limits = Arc::clone(&limits);
                    connections.spawn(async move {
                        if let Err(e) = serve_connection(stream, remote, service, &limits).await {
                            tracing::debug!(remote = %remote, error = %e, "peer connection ended");
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn serve_connection(
    stream: TcpStream,
    remote: std::net::SocketAddr,
    service: PeerService,
    limits: &ServeLimits,
) -> std::io::Result<()> {
    let admitted = tokio::time::timeout(limits.handshake_timeout, admit(stream, limits))
        .await
        .unwrap_or_else(|_| {
            let timeout = limits.handshake_timeout;
            Err(format!("no handshake within {timeout:?}"))
        });
    let (stream, sender) = match admitted {
        Ok(admitted) => admitted,
        Err(reason) => {
            log_refusal(remote, &reason);
            return Ok(());
        }
    };
    tracing::debug!(remote = %remote, sender, "peer connection authenticated");
    let max_frame_bytes = limits.max_frame_bytes;
    let max_inflight = limits.max_inflight_per_connection;
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(max_inflight);
    let writer_task = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if writer.write_all(&frame).await.is_err() || writer.flush().await.is_err() {
                return;
            }
        }
    });
    let inflight = Arc::new(Semaphore::new(max_inflight));
    let mut handlers = JoinSet::new();
    let result = loop {
        let frame = match read_frame(&mut reader, max_frame_bytes).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        let (id, body) = frame;
        let request = match super::wire::decode_request(Bytes::from(body)) {
            Ok(request) => request,
            Err(e) => {
                break Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad request: {e}"),
                ))
            }
        };
        // Every RPC carries its sender's vote: one that names another node than the one
        // this connection proved is forged (or misrouted), and ends the connection.
        if let Some(claimed) = request.0.sender() {
            if claimed != sender {
                let reason = format!("n{sender} sent an RPC in the name of n{claimed}");
                log_refusal(remote, &reason);
                break Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    reason,
                ));
            }
        }
        let Ok(permit) = Arc::clone(&inflight).acquire_owned().await else {
            break Ok(());
        };
        let service = service.clone();
        let out_tx = out_tx.clone();
        handlers.spawn(async move {
            let response = service.handle(request).await;
            if let Ok(frame) = encode_frame(id, &response, max_frame_bytes) {
                let _ = out_tx.send(frame).await;
            }
            drop(permit);
        });
        while handlers.try_join_next().is_some() {}
    };
    handlers.shutdown().await;
    drop(out_tx);
    writer_task.abort();
    result
}

/// Runs TLS on an accepted connection if configured (in permissive mode a plaintext one
/// stays plain), then the handshake: the connection and the node it proved to be.
async fn admit(stream: TcpStream, limits: &ServeLimits) -> Result<(PeerStream, NodeId), String> {
    let accepted = match &limits.tls {
        None => Accepted::Plain(stream),
        Some(tls) => tls.accept(stream).await.map_err(|e| e.to_string())?,
    };
    match accepted {
        Accepted::Plain(mut stream) => {
            let sender = verify(&mut stream, limits).await?;
            Ok((PeerStream::Plain(stream), sender))
        }
        Accepted::Tls(mut stream) => {
            let sender = verify(&mut stream, limits).await?;
            Ok((PeerStream::Tls(stream), sender))
        }
    }
}

/// Checks the proof of the node on the other end of `stream` (plain or TLS).
async fn verify<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    limits: &ServeLimits,
) -> Result<NodeId, String> {
    handshake::server(
        stream,
        &limits.identity,
        limits.self_id,
        limits.handshake_timeout,
    )
    .await
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves frames round-trip and that an oversize or undersize length is refused before any
    // allocation, as is an encode above the limit.
    #[tokio::test]
    async fn frame_limits() {
        let frame = encode_frame(7, &vec![1u8, 2, 3], 1024).unwrap();
        let mut reader = &frame[..];
        let (id, body) = read_frame(&mut reader, 1024).await.unwrap().unwrap();
        assert_eq!(id, 7);
        assert_eq!(
            bincode::deserialize::<Vec<u8>>(&body).unwrap(),
            vec![1, 2, 3]
        );

        let mut oversize = Vec::new();
        oversize.extend_from_slice(&(u32::MAX).to_be_bytes());
        oversize.extend_from_slice(&[0u8; 16]);
        let mut reader = &oversize[..];
        assert!(read_frame(&mut reader, 1024).await.is_err());

        let mut undersize = Vec::new();
        undersize.extend_from_slice(&3u32.to_be_bytes());
        let mut reader = &undersize[..];
        assert!(read_frame(&mut reader, 1024).await.is_err());

        let mut reader: &[u8] = &[];
        assert!(read_frame(&mut reader, 1024).await.unwrap().is_none());
        assert!(encode_frame(1, &vec![0u8; 2000], 1024).is_err());

        // A body cut short by the end of the stream is an error, not a shorter body.
        let frame = encode_frame(9, &vec![5u8; 300], 1024).unwrap();
        let mut reader = &frame[..frame.len() - 1];
        let cut = read_frame(&mut reader, 1024).await.unwrap_err();
        assert_eq!(cut.kind(), std::io::ErrorKind::UnexpectedEof);

        // A large body arrives whole, in many reads.
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let frame = encode_frame(11, &big, 1 << 20).unwrap();
        let (client, mut server) = tokio::io::duplex(4096);
        let writer = tokio::spawn(async move {
            let mut client = client;
            client.write_all(&frame).await.unwrap();
        });
        let (id, body) = read_frame(&mut server, 1 << 20).await.unwrap().unwrap();
        writer.await.unwrap();
        assert_eq!(id, 11);
        assert_eq!(bincode::deserialize::<Vec<u8>>(&body).unwrap(), big);
    }

    use super::super::handshake::PeerSecret;
    use super::super::RequestBody;
    use crate::config::Peer;
    use crate::node::Role;
    use crate::DLedgerConfig;
    use crate::DLedgerNode;
    use remoting::tls::test_pki::Pki;

    fn test_identity() -> PeerIdentity {
        PeerIdentity {
            cluster: "c".into(),
            group: "g".into(),
            secret: PeerSecret::new(b"a secret of this cluster".to_vec()),
            rules: String::new(),
        }
    }

    /// A three-node group on loopback ports, all proving `identity`, node `i` with peer TLS
    /// `tls(i)`.
    async fn start_group(
        identity: &PeerIdentity,
        tls: impl Fn(u64) -> Option<Arc<PeerTls>>,
    ) -> (tempfile::TempDir, Vec<Peer>, Vec<DLedgerNode>) {
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = Vec::new();
        let mut peers = Vec::new();
        for id in 0..3u64 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            peers.push(Peer {
                id,
                addr: listener.local_addr().unwrap().to_string(),
            });
            listeners.push(listener);
        }
        let mut nodes = Vec::new();
        for (id, listener) in (0u64..).zip(listeners) {
            let mut config =
                DLedgerConfig::new(id, peers.clone(), dir.path().join(format!("n{id}")));
            config.segment_bytes = 1 << 20;
            config.max_entry_bytes = 256 << 10;
            config.max_append_entries_bytes = 256 << 10;
            config.rpc_timeout_ms = 1_000;
            config.identity = identity.clone();
            config.peer_tls = tls(id);
            nodes.push(
                DLedgerNode::start_with_listener(config, crate::state_machine::NoopHook, listener)
                    .await
                    .unwrap(),
            );
        }
        (dir, peers, nodes)
    }

    /// The index of the first of `among` to lead, within 10 s.
    async fn wait_leader(nodes: &[DLedgerNode], among: &[usize]) -> usize {
        let leader = async {
            loop {
                if let Some(&i) = among.iter().find(|&&i| nodes[i].is_leader()) {
                    return i;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), leader)
            .await
            .expect("a leader within 10 s")
    }

    /// One record of `len` bytes (its length first, as the CommitLog's records).
    fn record(len: usize) -> Bytes {
        let mut record = vec![7u8; len];
        record[..4].copy_from_slice(&(len as u32).to_be_bytes());
        Bytes::from(record)
    }

    fn forged_vote(term: u64, from: u64) -> Vec<u8> {
        use openraft::raft::VoteRequest;
        use openraft::Vote;
        let vote = PeerRequest(RequestBody::Vote(VoteRequest {
            vote: Vote::new(term + 1_000, from),
            last_log_id: None,
        }));
        encode_request_frame(1, vote, 1 << 20).unwrap().0
    }

    /// Reads until the server closes; true if it did within 3 s without answering.
    async fn closed_unanswered<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
        let mut buf = [0u8; 1024];
        let mut answered = 0;
        let read = async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => answered += n,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(3), read)
            .await
            .is_ok()
            && answered < 600
    }

    /// Asserts that node `leader` still leads in `term` and that the group commits.
    async fn assert_leads_and_commits(nodes: &[DLedgerNode], leader: usize, term: u64) {
        let state = nodes[leader].role_watch().borrow().clone();
        assert_eq!(
            (state.role, state.term),
            (Role::Leader, term),
            "leader kept its term"
        );
        nodes[leader]
            .append(vec![record(16)])
            .await
            .expect("the group still commits");
    }

    // Proves the peer port of a running group admits no stranger: a well-formed vote with a
    // high term sent without a handshake, a handshake with another secret, a member sending
    // an RPC in another member's name, and 50 connections that claim 64 MiB frames and send
    // 64 bytes are all refused and closed, while the leader keeps its term and commits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forged_frames_are_refused() {
        let identity = test_identity();
        let (_dir, peers, nodes) = start_group(&identity, |_| None).await;
        let leader = wait_leader(&nodes, &[0, 1, 2]).await;
        let term = nodes[leader].role_watch().borrow().term;
        let addr = peers[leader].addr.clone();
        let other = (leader as u64 + 1) % 3;

        // A vote frame straight away: read as a (bad) hello, refused, closed.
        let mut raw = TcpStream::connect(&addr).await.unwrap();
        raw.write_all(&forged_vote(term, other)).await.unwrap();
        assert!(closed_unanswered(&mut raw).await, "no handshake: closed");

        // Another secret.
        let mut wrong = TcpStream::connect(&addr).await.unwrap();
        let mut stranger = identity.clone();
        stranger.secret = PeerSecret::new(b"guessed".to_vec());
        let e = handshake::client(
            &mut wrong,
            &stranger,
            other,
            leader as u64,
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("did not prove"), "{e}");

        // A member (it has the secret) sending a vote in another member's name.
        let third = (leader as u64 + 2) % 3;
        let mut member = TcpStream::connect(&addr).await.unwrap();
        handshake::client(
            &mut member,
            &identity,
            other,
            leader as u64,
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        member.write_all(&forged_vote(term, third)).await.unwrap();
        assert!(
            closed_unanswered(&mut member).await,
            "impersonation: closed"
        );

        // Half-sent frames that claim 64 MiB, before any handshake.
        let mut claims = Vec::new();
        for _ in 0..50 {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            let mut bytes = (64u32 << 20).to_be_bytes().to_vec();
            bytes.extend_from_slice(&[0u8; 64]);
            s.write_all(&bytes).await.unwrap();
            claims.push(s);
        }
        for s in &mut claims {
            assert!(closed_unanswered(s).await, "oversize claim: closed");
        }

        assert_leads_and_commits(&nodes, leader, term).await;
        for node in &nodes {
            node.shutdown().await.unwrap();
        }
    }

    /// Peer TLS in `mode` with the certificate `<name>.pem` of `pki`, trusting `ca`.
    fn peer_tls(pki: &Pki, mode: &str, name: &str, ca: &str) -> Arc<PeerTls> {
        let tls = PeerTls::from_lookup("test", |key| match key {
            "tls.peer.mode" => Some(mode.to_string()),
            "tls.peer.certPath" => Some(pki.path(&format!("{name}.pem"))),
            "tls.peer.keyPath" => Some(pki.path(&format!("{name}.key"))),
            "tls.peer.trustCertPath" => Some(pki.path(ca)),
            _ => None,
        });
        Arc::new(tls.unwrap().expect("TLS is on"))
    }

    /// A trust file holding both test CAs, so a stranger accepts our servers and is
    /// refused only for its own certificate.
    fn trust_both(pki: &Pki) -> &'static str {
        let read = |name: &str| std::fs::read_to_string(pki.path(name)).unwrap();
        pki.write("both-ca.pem", &(read("ca.pem") + &read("other-ca.pem")));
        "both-ca.pem"
    }

    /// Whether a client with `tls` gets through TLS and the handshake (with the right
    /// secret, as node `from`) to node `to` at `addr`. With TLS 1.3 the server judges the
    /// client's certificate after the client's last handshake message: its refusal arrives
    /// as the handshake's first read.
    async fn admitted_over_tls(
        tls: &PeerTls,
        addr: &str,
        identity: &PeerIdentity,
        from: u64,
        to: u64,
    ) -> bool {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let Ok(mut stream) = tls.connect(addr, tcp).await else {
            return false;
        };
        let timeout = Duration::from_secs(2);
        handshake::client(&mut stream, identity, from, to, timeout)
            .await
            .is_ok()
    }

    // Proves a group whose peer ports enforce mutual TLS elects a leader and commits over
    // TLS (records of up to 200 KB, many TLS records each), and that its leader's peer port
    // refuses, before any frame reaches Raft: plaintext (a forged vote, and a handshake with
    // the right secret), TLS with another CA's certificate (and the right secret) and TLS
    // with no certificate. The leader keeps its term and commits afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_peers_commit_and_refuse_plaintext_and_foreign_certificates() {
        let pki = Pki::new();
        let identity = test_identity();
        let tls = peer_tls(&pki, "enforcing", "peer", "ca.pem");
        let (_dir, peers, nodes) = start_group(&identity, |_| Some(Arc::clone(&tls))).await;
        let leader = wait_leader(&nodes, &[0, 1, 2]).await;
        let term = nodes[leader].role_watch().borrow().term;
        let sizes = [16, 4_000, 200_000];
        let appended = nodes[leader]
            .append(sizes.iter().map(|&len| record(len)).collect())
            .await
            .expect("the group commits over TLS");
        let end = appended.records.last().unwrap().position + 200_000;
        let replicated = async {
            while nodes.iter().any(|n| n.written_position() < end) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), replicated)
            .await
            .expect("every node has the records within 5 s");
        let addr = peers[leader].addr.clone();
        let (me, other) = (leader as u64, (leader as u64 + 1) % 3);

        let mut raw = TcpStream::connect(&addr).await.unwrap();
        raw.write_all(&forged_vote(term, other)).await.unwrap();
        assert!(closed_unanswered(&mut raw).await, "plaintext vote: closed");
        let mut plain = TcpStream::connect(&addr).await.unwrap();
        let secs2 = Duration::from_secs(2);
        let refused = handshake::client(&mut plain, &identity, other, me, secs2).await;
        assert!(refused.is_err(), "plaintext with the secret is refused");

        let stranger = peer_tls(&pki, "enforcing", "other-peer", trust_both(&pki));
        assert!(
            !admitted_over_tls(&stranger, &addr, &identity, other, me).await,
            "another CA's certificate is refused"
        );
        let own = peer_tls(&pki, "enforcing", "peer", "ca.pem");
        assert!(
            admitted_over_tls(&own, &addr, &identity, other, me).await,
            "the group's own certificate gets through"
        );

        let anonymous = remoting::tls::ClientTls::from_lookup("test", |key| {
            (key == "tls.enable").then(|| "true".to_string())
        });
        let anonymous = anonymous.unwrap().unwrap();
        let tcp = TcpStream::connect(&addr).await.unwrap();
        if let Ok(mut tls) = anonymous.connect(&addr, tcp).await {
            let refused = handshake::client(&mut tls, &identity, other, me, secs2).await;
            assert!(refused.is_err(), "no certificate is refused");
        }

        assert_leads_and_commits(&nodes, leader, term).await;
        for node in &nodes {
            node.shutdown().await.unwrap();
        }
    }

    // Proves a member whose certificate another CA signed is cut off in both directions: it
    // trusts the group's CA, but the other two refuse its certificate as a client's (its
    // connection to the leader fails) and as a server's (no entry reaches it). They elect a
    // leader and commit without it; for two seconds (several of its election timeouts) the
    // leader keeps its term, and the stranger neither leads nor receives an entry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_with_another_cas_certificate_is_cut_off() {
        let pki = Pki::new();
        let identity = test_identity();
        let good = peer_tls(&pki, "enforcing", "peer", "ca.pem");
        let foreign = peer_tls(&pki, "enforcing", "other-peer", trust_both(&pki));
        let (_dir, peers, nodes) = start_group(&identity, |id| {
            Some(Arc::clone(if id == 2 { &foreign } else { &good }))
        })
        .await;
        let leader = wait_leader(&nodes, &[0, 1]).await;
        let term = nodes[leader].role_watch().borrow().term;
        let addr = &peers[leader].addr;
        assert!(
            !admitted_over_tls(&foreign, addr, &identity, 2, leader as u64).await,
            "the stranger's connections are refused"
        );
        let appended = nodes[leader]
            .append(vec![record(64)])
            .await
            .expect("two members commit");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_leads_and_commits(&nodes, leader, term).await;
        assert!(!nodes[2].is_leader(), "the stranger never leads");
        // At most the membership entry it wrote itself, when it heard from no leader: the
        // group's log holds that entry and a leader's blank entry before the record.
        let (written, record_at) = (nodes[2].written_position(), appended.records[0].position);
        assert!(
            written < record_at,
            "the stranger wrote to {written}, the record is at {record_at}"
        );
        for node in &nodes {
            node.shutdown().await.unwrap();
        }
    }

    // Proves permissive mode: members connect to each other with TLS and commit, and the
    // peer port still admits a plaintext connection that proves the secret (a member not
    // yet switched to TLS during a rolling change), but no plaintext without it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn permissive_peers_use_tls_and_admit_proven_plaintext() {
        let pki = Pki::new();
        let identity = test_identity();
        let tls = peer_tls(&pki, "permissive", "peer", "ca.pem");
        let (_dir, peers, nodes) = start_group(&identity, |_| Some(Arc::clone(&tls))).await;
        let leader = wait_leader(&nodes, &[0, 1, 2]).await;
        let term = nodes[leader].role_watch().borrow().term;
        let addr = peers[leader].addr.clone();
        let (me, other) = (leader as u64, (leader as u64 + 1) % 3);
        let mut plain = TcpStream::connect(&addr).await.unwrap();
        handshake::client(&mut plain, &identity, other, me, Duration::from_secs(2))
            .await
            .expect("plaintext with the secret is admitted");
        let mut raw = TcpStream::connect(&addr).await.unwrap();
        raw.write_all(&forged_vote(term, other)).await.unwrap();
        assert!(closed_unanswered(&mut raw).await, "no handshake: closed");
        assert_leads_and_commits(&nodes, leader, term).await;
        for node in &nodes {
            node.shutdown().await.unwrap();
        }
    }

    // Proves an append-entries request frame, its payloads written after the head in pieces
    // through a 4 KiB pipe, reads back as the same entries; and that a frame over the limit
    // is refused before anything is written.
    #[tokio::test]
    async fn request_frames_with_payloads() {
        use openraft::raft::AppendEntriesRequest;
        use openraft::CommittedLeaderId;
        use openraft::EntryPayload;
        use openraft::LogId;
        use openraft::Vote;

        use crate::types::Payload;

        let entries: Vec<openraft::Entry<crate::types::TypeConfig>> = (1..=5u64)
            .map(|i| {
                let len = 30_000 + i as usize;
                let mut record = vec![i as u8; len];
                record[..4].copy_from_slice(&(len as u32).to_be_bytes());
                openraft::Entry {
                    log_id: LogId::new(CommittedLeaderId::new(1, 0), i),
                    payload: EntryPayload::Normal(Payload::Records(Bytes::from(record))),
                }
            })
            .collect();
        let request = || {
            PeerRequest(RequestBody::AppendEntries(AppendEntriesRequest {
                vote: Vote::new_committed(1, 0),
                prev_log_id: None,
                leader_commit: None,
                entries: entries.clone(),
            }))
        };
        let (frame, payloads) = encode_request_frame(21, request(), 1 << 20).unwrap();
        assert_eq!(payloads.len(), 5);
        let (client, server) = tokio::io::duplex(4096);
        let writer = tokio::spawn(async move {
            let mut client = client;
            write_frame(&mut client, &frame, &payloads).await.unwrap();
        });
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, server);
        let (id, body) = read_frame(&mut reader, 1 << 20).await.unwrap().unwrap();
        writer.await.unwrap();
        assert_eq!(id, 21);
        let PeerRequest(RequestBody::AppendEntries(decoded)) =
            super::super::wire::decode_request(Bytes::from(body)).unwrap()
        else {
            panic!("decoded as another kind");
        };
        assert_eq!(decoded.entries, entries);

        assert!(encode_request_frame(22, request(), 100_000).is_err());
    }
}
