//! One TCP connection, used by every server and client.
//!
//! Either side may send requests; responses are matched to requests by `opaque`.
//! Everything is bounded: the write queue, the requests awaiting a response (the
//! in-flight window), and the incoming requests handled at once (reading stops while
//! that many are being handled, so a flood slows its sender instead of growing memory).
//! A frame that does not decode closes this connection, and only this one, with the
//! reason logged.
//!
//! Outcomes: a response is the outcome. A timeout or a closed connection after the
//! request was queued is *unknown* ([`Error::is_outcome_unknown`]), never "failed".
//!
//! TLS ([`crate::tls`]) is optional on both sides: [`ConnectionConfig::tls`] for
//! connections this side opens, [`ConnectionConfig::server_tls`] for those [`serve`]
//! accepts. A plain connection runs over `TcpStream::into_split` halves, as without TLS;
//! only a TLS stream is split with `tokio::io::split`, whose halves share a lock.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_util::codec::{Encoder, FramedRead};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::codec::{FrameCodec, DEFAULT_MAX_FRAME_BYTES};
use crate::command::{RemotingCommand, FLAG_ONEWAY};
use crate::error::{Error, Result};
use crate::tls::{Accepted, ClientTls, ServerTls};

/// Limits of one connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    pub max_frame_bytes: usize,
    /// The largest frame header accepted (JSON or ROCKETMQ); a longer one closes the
    /// connection as soon as its length is read.
    pub max_header_bytes: usize,
    /// Requests we sent that await a response.
    pub max_in_flight: usize,
    /// Requests from the peer handled at once.
    pub max_concurrent_requests: usize,
    /// Frames queued for the socket.
    pub write_queue_frames: usize,
    /// Covers the TCP connect and, with [`ConnectionConfig::tls`], the TLS handshake.
    pub connect_timeout_ms: u64,
    /// Client side (`tls.enable`): [`Connection::connect`] runs TLS over the connections
    /// it opens. `None`: plain TCP.
    pub tls: Option<Arc<ClientTls>>,
    /// Server side (`tls.server.mode`): what [`serve`] does with TLS. `None`: disabled.
    pub server_tls: Option<Arc<ServerTls>>,
    /// Server side: connections one listener holds at once; one more is closed at accept.
    pub max_connections: usize,
    /// Server side (RocketMQ's `serverChannelMaxIdleTimeSeconds`, in ms here): a
    /// connection that sent nothing for this long is closed. 0: never. Clients send a
    /// heartbeat every 30 s.
    pub idle_timeout_ms: u64,
    /// Run on every request this side sends, just before it is queued (RocketMQ's client
    /// RPC hook): the ACL signature ([`crate::acl::sign`]). Not on responses.
    pub request_hook: Option<RequestHook>,
    /// Server side: when set, [`serve`] keeps here the number of connections it holds
    /// (for the metrics endpoint).
    pub open_connections: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

/// Connections one listener holds at once by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// RocketMQ's `serverChannelMaxIdleTimeSeconds` default, 120 s.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 120_000;

/// Milliseconds since this process first asked: a cheap, monotonic "when" for idleness.
fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// A function applied to every outgoing request of a connection.
#[derive(Clone)]
pub struct RequestHook(pub Arc<dyn Fn(&mut RemotingCommand) + Send + Sync>);

impl std::fmt::Debug for RequestHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestHook")
    }
}

impl RequestHook {
    /// Signs every request with RocketMQ's ACL signature for `credentials`.
    pub fn acl(credentials: crate::acl::AclCredentials) -> Self {
        RequestHook(Arc::new(move |request| {
            crate::acl::sign(request, &credentials)
        }))
    }
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_header_bytes: crate::codec::DEFAULT_MAX_HEADER_BYTES,
            max_in_flight: 1024,
            max_concurrent_requests: 256,
            write_queue_frames: 1024,
            connect_timeout_ms: 3000,
            tls: None,
            server_tls: None,
            request_hook: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            open_connections: None,
        }
    }
}

/// Serves the requests a peer sends on a connection.
pub trait RequestHandler: Send + Sync + 'static {
    /// Handles one request. The answer (if any, and unless the request was oneway) is
    /// sent back with the request's opaque and header encoding.
    fn handle(
        &self,
        conn: Connection,
        request: RemotingCommand,
    ) -> BoxFuture<'static, Option<RemotingCommand>>;

    /// Called once when the connection has closed.
    fn on_close(&self, _conn: &Connection) {}
}

/// Answers every request with REQUEST_CODE_NOT_SUPPORTED; for clients that serve nothing.
pub struct NoRequests;

impl RequestHandler for NoRequests {
    fn handle(
        &self,
        _conn: Connection,
        request: RemotingCommand,
    ) -> BoxFuture<'static, Option<RemotingCommand>> {
        let code = request.code;
        Box::pin(async move {
            Some(RemotingCommand::error(
                crate::ResponseCode::REQUEST_CODE_NOT_SUPPORTED,
                format!("request code {code} is not supported here"),
            ))
        })
    }
}

/// Hashes an opaque (a counter) with one multiply: SipHash's protection against chosen
/// keys buys nothing for numbers this side picks, and it was a visible part of each request.
#[derive(Default)]
struct OpaqueHasher(u64);

impl std::hash::Hasher for OpaqueHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_i32(&mut self, n: i32) {
        // Fibonacci hashing: the table indexes by the low bits, which stay distinct for
        // consecutive opaques, and tags by the top ones, which the multiply spreads.
        self.0 = u64::from(n as u32).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type OpaqueHash = std::hash::BuildHasherDefault<OpaqueHasher>;

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

struct Inner {
    id: u64,
    peer: SocketAddr,
    writer: mpsc::Sender<RemotingCommand>,
    pending: Mutex<HashMap<i32, oneshot::Sender<RemotingCommand>, OpaqueHash>>,
    next_opaque: AtomicI32,
    in_flight: Semaphore,
    closed: CancellationToken,
    request_hook: Option<RequestHook>,
    /// When the last frame arrived ([`now_ms`]).
    last_read_ms: AtomicU64,
    /// Asks both loops to give back their buffers (see [`LEAN_AFTER_MS`]).
    lean: tokio::sync::Notify,
    /// The `last_read_ms` the connection was last made lean after (the sweep's own).
    leaned_at_ms: AtomicU64,
}

/// A handle to one connection; cheap to clone.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.inner.id)
            .field("peer", &self.inner.peer)
            .finish()
    }
}

impl Connection {
    /// Connects to `addr`; requests the peer sends are served by `handler`.
    pub async fn connect(
        addr: &str,
        config: &ConnectionConfig,
        handler: Arc<dyn RequestHandler>,
    ) -> Result<Connection> {
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout(timeout))??;
        let Some(tls) = &config.tls else {
            return Connection::start(stream, config, handler, CancellationToken::new());
        };
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        let stream = tokio::time::timeout_at(deadline, tls.connect(addr, stream))
            .await
            .map_err(|_| Error::Timeout(timeout))??;
        Ok(Connection::start_tls(
            stream,
            peer,
            config,
            handler,
            CancellationToken::new(),
        ))
    }

    /// Runs a connection over an accepted or connected stream. It closes when the peer
    /// closes, on a bad frame, on [`Connection::close`], or when `parent` is cancelled.
    pub fn start(
        stream: TcpStream,
        config: &ConnectionConfig,
        handler: Arc<dyn RequestHandler>,
        parent: CancellationToken,
    ) -> Result<Connection> {
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        let (read_half, write_half) = stream.into_split();
        Ok(Connection::run(
            read_half, write_half, peer, config, handler, parent,
        ))
    }

    /// Runs a connection over a TLS stream whose socket's remote address is `peer`.
    fn start_tls<S>(
        stream: S,
        peer: SocketAddr,
        config: &ConnectionConfig,
        handler: Arc<dyn RequestHandler>,
        parent: CancellationToken,
    ) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read_half, write_half) = tokio::io::split(stream);
        Connection::run(read_half, write_half, peer, config, handler, parent)
    }

    /// Starts the write and read loops of a connection over its two halves.
    fn run<R, W>(
        read_half: R,
        write_half: W,
        peer: SocketAddr,
        config: &ConnectionConfig,
        handler: Arc<dyn RequestHandler>,
        parent: CancellationToken,
    ) -> Connection
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(config.write_queue_frames.max(1));
        let conn = Connection {
            inner: Arc::new(Inner {
                id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
                peer,
                writer: tx,
                pending: Mutex::new(HashMap::default()),
                next_opaque: AtomicI32::new(1),
                in_flight: Semaphore::new(config.max_in_flight.max(1)),
                closed: parent.child_token(),
                request_hook: config.request_hook.clone(),
                last_read_ms: AtomicU64::new(now_ms()),
                lean: tokio::sync::Notify::new(),
                leaned_at_ms: AtomicU64::new(u64::MAX),
            }),
        };
        let codec =
            FrameCodec::new(config.max_frame_bytes).with_max_header_bytes(config.max_header_bytes);
        tokio::spawn(write_loop(conn.clone(), write_half, rx, codec));
        tokio::spawn(read_loop(
            conn.clone(),
            // No buffer until bytes arrive: the codec then keeps room for large reads
            // (peers coalesce their frames into large writes, see `write_loop`).
            FramedRead::with_capacity(read_half, codec, 0),
            handler,
            config.max_concurrent_requests.max(1),
        ));
        conn
    }

    pub fn id(&self) -> u64 {
        self.inner.id
    }

    pub fn peer(&self) -> SocketAddr {
        self.inner.peer
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }

    /// Closes the connection; requests in flight end with an unknown outcome.
    pub fn close(&self) {
        self.inner.closed.cancel();
    }

    /// Resolves when the connection has closed.
    pub async fn closed(&self) {
        self.inner.closed.cancelled().await
    }

    fn closed_error(&self) -> Error {
        Error::ConnectionClosed {
            peer: self.inner.peer.to_string(),
        }
    }

    /// Sends a request and waits up to `timeout` for its response.
    pub async fn request(
        &self,
        mut request: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand> {
        let deadline = tokio::time::Instant::now() + timeout;
        // A free slot and room in the write queue are the common case: take them without
        // a timer, and wait under one only when the window or the queue is full.
        let _permit = match self.inner.in_flight.try_acquire() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return Err(self.not_sent()),
            Err(TryAcquireError::NoPermits) => {
                match tokio::time::timeout_at(deadline, self.inner.in_flight.acquire()).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_)) => return Err(self.not_sent()),
                    Err(_) => {
                        return Err(Error::Busy {
                            peer: self.inner.peer.to_string(),
                        })
                    }
                }
            }
        };
        let opaque = self.inner.next_opaque.fetch_add(1, Ordering::Relaxed);
        request.opaque = opaque;
        request.flag &= !FLAG_ONEWAY;
        if let Some(hook) = &self.inner.request_hook {
            (hook.0)(&mut request);
        }
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().unwrap().insert(opaque, tx);
        let guard = PendingGuard { conn: self, opaque };
        // The read loop marks the connection closed and then empties `pending`: a request
        // entered after that sees the mark here, one entered before has its sender dropped,
        // which ends the wait below. So the wait needs no watch on the close of its own.
        if self.is_closed() {
            return Err(self.not_sent());
        }
        match self.inner.writer.try_send(request) {
            Ok(()) => {}
            Err(TrySendError::Closed(_)) => return Err(self.not_sent()),
            Err(TrySendError::Full(request)) => {
                match tokio::time::timeout_at(deadline, self.inner.writer.send(request)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(self.not_sent()),
                    // Still queued behind a full write queue: it may yet be written.
                    Err(_) => return Err(Error::Timeout(timeout)),
                }
            }
        }
        let result = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(self.closed_error()),
            Err(_) => Err(Error::Timeout(timeout)),
        };
        drop(guard);
        result
    }

    fn not_sent(&self) -> Error {
        Error::NotSent {
            peer: self.inner.peer.to_string(),
        }
    }

    /// Sends a request that wants no response.
    pub async fn oneway(&self, request: RemotingCommand) -> Result<()> {
        let mut request = request.oneway();
        if let Some(hook) = &self.inner.request_hook {
            (hook.0)(&mut request);
        }
        self.inner
            .writer
            .send(request)
            .await
            .map_err(|_| self.not_sent())
    }

    async fn send_response(&self, response: RemotingCommand) {
        // A closed connection has no one to answer.
        let _ = self.inner.writer.send(response).await;
    }

    fn complete(&self, response: RemotingCommand) {
        let waiter = self.inner.pending.lock().unwrap().remove(&response.opaque);
        match waiter {
            Some(tx) => {
                let _ = tx.send(response);
            }
            None => debug!(
                peer = %self.inner.peer,
                opaque = response.opaque,
                "response for no pending request (timed out?)"
            ),
        }
    }
}

/// Removes a pending request however `request` ends.
struct PendingGuard<'a> {
    conn: &'a Connection,
    opaque: i32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.conn.inner.pending.lock().unwrap().remove(&self.opaque);
    }
}

/// Initial capacity of a connection's read buffer.
/// A served connection quiet this long gives back its read and write buffers (tens of
/// KiB), so that thousands of quiet clients cost little; the next frame allocates again.
const LEAN_AFTER_MS: u64 = 5_000;

/// The write loop yields for more frames only while its write is smaller than this.
const YIELD_BELOW_BYTES: usize = 64 * 1024;

/// Frames are coalesced into one write until it holds this many bytes.
const WRITE_BATCH_BYTES: usize = 1024 * 1024;

/// Encodes `first` and whatever else is queued into `buf`, up to [`WRITE_BATCH_BYTES`].
fn encode_queued(
    conn: &Connection,
    codec: &mut FrameCodec,
    buf: &mut BytesMut,
    rx: &mut mpsc::Receiver<RemotingCommand>,
    first: RemotingCommand,
) {
    let mut next = Some(first);
    while let Some(cmd) = next.take() {
        if let Err(e) = codec.encode(cmd, buf) {
            warn!(peer = %conn.peer(), error = %e, "dropping a frame that cannot be encoded");
        }
        if buf.len() < WRITE_BATCH_BYTES {
            next = rx.try_recv().ok();
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    conn: Connection,
    mut socket: W,
    mut rx: mpsc::Receiver<RemotingCommand>,
    mut codec: FrameCodec,
) {
    // Grows to what the connection writes at once; none for one that writes nothing.
    let mut buf = BytesMut::new();
    loop {
        let first = tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(cmd) => cmd,
                None => break,
            },
            _ = conn.inner.lean.notified() => {
                buf = BytesMut::new();
                continue;
            }
            _ = conn.closed() => break,
        };
        // Coalesce whatever else is queued into one write. Tasks woken together (say, by
        // one read that completed many requests) queue their frames one after another, but
        // Tokio polls the task they wake (this one) next, from its LIFO slot: without
        // yielding once, each frame would go out in a syscall of its own. A write that is
        // already large gains nothing from waiting, and a lone large response (a pull) would
        // only be delayed: catch-up reads measured 30% slower when those yielded too.
        encode_queued(&conn, &mut codec, &mut buf, &mut rx, first);
        if buf.len() < YIELD_BELOW_BYTES {
            tokio::task::yield_now().await;
            if let Ok(next) = rx.try_recv() {
                encode_queued(&conn, &mut codec, &mut buf, &mut rx, next);
            }
        }
        // TLS may keep the last records of a write when the socket is full, until a flush
        // pushes them out; a plain socket's flush does nothing.
        if let Err(e) = write_and_flush(&mut socket, &buf).await {
            debug!(peer = %conn.peer(), error = %e, "write failed; closing");
            break;
        }
        buf.clear();
        if buf.capacity() > 4 * 1024 * 1024 {
            buf = BytesMut::new();
        }
    }
    conn.close();
    let _ = socket.shutdown().await;
}

async fn write_and_flush<W: AsyncWrite + Unpin>(socket: &mut W, buf: &[u8]) -> std::io::Result<()> {
    socket.write_all(buf).await?;
    socket.flush().await
}

async fn read_loop<R: AsyncRead + Unpin>(
    conn: Connection,
    mut frames: FramedRead<R, FrameCodec>,
    handler: Arc<dyn RequestHandler>,
    max_concurrent_requests: usize,
) {
    let handling = Arc::new(Semaphore::new(max_concurrent_requests));
    loop {
        let frame = tokio::select! {
            frame = frames.next() => frame,
            _ = conn.inner.lean.notified() => {
                // Only between frames: a partial frame keeps its bytes (bounded by the codec).
                if frames.read_buffer().is_empty() {
                    *frames.read_buffer_mut() = BytesMut::new();
                }
                continue;
            }
            _ = conn.closed() => break,
        };
        if frame.is_some() {
            conn.inner.last_read_ms.store(now_ms(), Ordering::Relaxed);
        }
        match frame {
            None => break,
            Some(Err(e)) => {
                match &e {
                    Error::Io(_) => debug!(peer = %conn.peer(), error = %e, "read failed; closing"),
                    // See `tls`: how a server with TLS disabled refuses a TLS handshake.
                    Error::FrameTooLarge { frame_bytes, .. } if frame_bytes >> 24 == 0x16 => warn!(
                        peer = %conn.peer(),
                        "closing connection: a TLS handshake (0x16), and TLS is disabled here"
                    ),
                    _ => warn!(peer = %conn.peer(), error = %e, "closing connection: bad frame"),
                }
                break;
            }
            Some(Ok(cmd)) if cmd.is_response() => conn.complete(cmd),
            Some(Ok(request)) => {
                let permit = tokio::select! {
                    permit = handling.clone().acquire_owned() => match permit {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = conn.closed() => break,
                };
                let conn = conn.clone();
                let handler = handler.clone();
                let handle = async move {
                    let oneway = request.is_oneway();
                    let opaque = request.opaque;
                    let serialize_type = request.serialize_type;
                    let response = handler.handle(conn.clone(), request).await;
                    if let (Some(mut response), false) = (response, oneway) {
                        response.opaque = opaque;
                        response.serialize_type = serialize_type;
                        response.flag |= crate::command::FLAG_RESPONSE;
                        conn.send_response(response).await;
                    }
                };
                // The slot is given back when the request is answered, or earlier by
                // `release_request_slot`.
                tokio::spawn(REQUEST_SLOT.scope(Cell::new(Some(permit)), handle));
            }
        }
    }
    conn.close();
    // Wake every waiter: their outcome is unknown.
    conn.inner.pending.lock().unwrap().clear();
    handler.on_close(&conn);
}

tokio::task_local! {
    /// The place among its connection's `max_concurrent_requests` of the request being
    /// handled by this task.
    static REQUEST_SLOT: Cell<Option<OwnedSemaphorePermit>>;
}

/// Gives back the calling request's place among its connection's
/// `max_concurrent_requests`, for a request that will now wait long without working (a
/// held pull): other requests on the connection need not queue behind it. The handler
/// then bounds such requests itself. Outside a request handler this does nothing.
pub fn release_request_slot() {
    let _ = REQUEST_SLOT.try_with(|slot| drop(slot.take()));
}

/// Whether the calling request gave back its place ([`release_request_slot`]): it waited
/// (a held pull). False outside a request handler.
pub fn request_slot_released() -> bool {
    REQUEST_SLOT
        .try_with(|slot| {
            let permit = slot.take();
            let released = permit.is_none();
            slot.set(permit);
            released
        })
        .unwrap_or(false)
}

/// Accepts connections until `shutdown` resolves, serving each with `handler`. On
/// shutdown every connection it accepted is closed.
///
/// With [`ConnectionConfig::server_tls`] in permissive or enforcing mode, each accepted
/// connection waits for its first byte and TLS handshake in a task of its own, so a slow
/// or silent peer never holds up the accept loop; other connections start at once.
pub async fn serve(
    listener: TcpListener,
    config: ConnectionConfig,
    handler: Arc<dyn RequestHandler>,
    shutdown: impl Future<Output = ()>,
) {
    let all = CancellationToken::new();
    let local = listener.local_addr().ok();
    let tls = config.server_tls.clone().unwrap_or_default();
    let peek = tls.must_peek(config.max_frame_bytes);
    let config = Arc::new(config);
    let open = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let live: Live = Arc::default();
    let idle = Duration::from_millis(config.idle_timeout_ms);
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = open.clone().try_acquire_owned() else {
                        if let Some(left_out) = REFUSED_CONNECTIONS.admit() {
                            warn!(%peer, max_connections = config.max_connections, left_out, "connection refused: the listener holds max_connections already");
                        }
                        drop(stream);
                        continue;
                    };
                    let admission = Admission {
                        slot,
                        live: live.clone(),
                        count: config.open_connections.clone(),
                    };
                    if peek {
                        tokio::spawn(start_accepted(
                            stream,
                            peer,
                            tls.clone(),
                            config.clone(),
                            handler.clone(),
                            all.clone(),
                            admission,
                        ));
                    } else {
                        match Connection::start(stream, &config, handler.clone(), all.clone()) {
                            Ok(conn) => admission.admit(conn),
                            Err(e) => warn!(%peer, error = %e, "could not start connection"),
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = sweep.tick() => close_idle(&live, idle),
            _ = &mut shutdown => break,
        }
    }
    info!(?local, "server stopped accepting; closing connections");
    all.cancel();
}

/// Connections refused at accept, logged at most once every 10 s.
static REFUSED_CONNECTIONS: crate::throttle::Throttle = crate::throttle::Throttle::new(10_000);

/// The connections a listener holds, for the idle sweep.
type Live = Arc<Mutex<Vec<Connection>>>;

/// A connection's place in its listener: the slot it holds until it closes, and the list
/// the idle sweep walks.
struct Admission {
    slot: tokio::sync::OwnedSemaphorePermit,
    live: Live,
    count: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

impl Admission {
    fn admit(self, conn: Connection) {
        use std::sync::atomic::Ordering;
        self.live.lock().unwrap().push(conn.clone());
        let slot = self.slot;
        let count = self.count;
        if let Some(count) = &count {
            count.fetch_add(1, Ordering::Relaxed);
        }
        tokio::spawn(async move {
            conn.closed().await;
            if let Some(count) = &count {
                count.fetch_sub(1, Ordering::Relaxed);
            }
            drop(slot);
        });
    }
}

/// Forgets closed connections, closes those that sent nothing for `idle`, and makes those
/// quiet for [`LEAN_AFTER_MS`] give back their buffers (once per quiet spell).
fn close_idle(live: &Live, idle: Duration) {
    let now = now_ms();
    let idle_ms = idle.as_millis() as u64;
    live.lock().unwrap().retain(|conn| {
        if conn.is_closed() {
            return false;
        }
        let inner = &conn.inner;
        let last = inner.last_read_ms.load(Ordering::Relaxed);
        let quiet = now.saturating_sub(last);
        if idle_ms > 0 && quiet > idle_ms {
            debug!(peer = %conn.peer(), idle_ms = quiet, "closing an idle connection");
            conn.close();
            return false;
        }
        if quiet > LEAN_AFTER_MS && inner.leaned_at_ms.swap(last, Ordering::Relaxed) != last {
            // Both loops are waiting, so both see it (a `Notified` is registered from
            // its creation); one that is busy just stays as it is.
            inner.lean.notify_waiters();
        }
        true
    });
}

/// Lets `tls` decide what an accepted connection is (plaintext, TLS, or refused) and runs
/// it. A refused connection is dropped, which closes it.
async fn start_accepted(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Arc<ServerTls>,
    config: Arc<ConnectionConfig>,
    handler: Arc<dyn RequestHandler>,
    all: CancellationToken,
    admission: Admission,
) {
    // Before the handshake, whose round trips it speeds up too.
    if let Err(e) = stream.set_nodelay(true) {
        warn!(%peer, error = %e, "could not start connection");
        return;
    }
    let accepted = tokio::select! {
        accepted = tls.accept(stream) => accepted,
        _ = all.cancelled() => return,
    };
    let started = match accepted {
        Ok(Accepted::Plain(stream)) => Connection::start(stream, &config, handler, all),
        Ok(Accepted::Tls(stream)) => {
            Ok(Connection::start_tls(*stream, peer, &config, handler, all))
        }
        Err(e) => {
            match e.kind() {
                // Port probes and health checks connect and leave without a word.
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::TimedOut => {
                    debug!(%peer, error = %e, "connection closed before it started")
                }
                _ => warn!(%peer, error = %e, "connection refused"),
            }
            return;
        }
    };
    match started {
        Ok(conn) => admission.admit(conn),
        Err(e) => warn!(%peer, error = %e, "could not start connection"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::ResponseCode;
    use tokio::io::AsyncReadExt;

    struct Echo;

    impl RequestHandler for Echo {
        fn handle(
            &self,
            _conn: Connection,
            request: RemotingCommand,
        ) -> BoxFuture<'static, Option<RemotingCommand>> {
            Box::pin(async move {
                if request.code == 999 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                if request.code == 998 {
                    // A held request: waits long, without holding a slot.
                    release_request_slot();
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                Some(RemotingCommand::success().with_body(request.body.clone()))
            })
        }
    }

    /// A client connection to `addr` that serves no requests.
    async fn connect_to(addr: SocketAddr) -> Connection {
        Connection::connect(
            &addr.to_string(),
            &ConnectionConfig::default(),
            Arc::new(NoRequests),
        )
        .await
        .unwrap()
    }

    async fn echo_server() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        echo_server_with(ConnectionConfig::default()).await
    }

    async fn echo_server_with(
        config: ConnectionConfig,
    ) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, config, Arc::new(Echo), async move {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    /// With one request handled at a time, a second waits for the first; unless the first
    /// gave its slot back to wait (a held pull), in which case many may wait at once.
    #[tokio::test]
    async fn a_request_that_gives_back_its_slot_does_not_hold_up_others() {
        let (addr, _stop) = echo_server_with(ConnectionConfig {
            max_concurrent_requests: 1,
            ..ConnectionConfig::default()
        })
        .await;
        let conn = connect_to(addr).await;
        let mut held = Vec::new();
        for _ in 0..20 {
            let conn = conn.clone();
            held.push(tokio::spawn(async move {
                let request = RemotingCommand::bare_request(998);
                conn.request(request, Duration::from_secs(60)).await
            }));
        }
        let started = std::time::Instant::now();
        let answered = conn
            .request(RemotingCommand::bare_request(1), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(answered.response_code(), Some(ResponseCode::SUCCESS));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "answered after {:?}",
            started.elapsed()
        );
        // The control: a request that keeps its slot (999 sleeps 500 ms) holds up the next.
        let slow = {
            let conn = conn.clone();
            tokio::spawn(async move {
                conn.request(RemotingCommand::bare_request(999), Duration::from_secs(5))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        conn.request(RemotingCommand::bare_request(1), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "answered after {:?} while the slot was taken",
            started.elapsed()
        );
        slow.await.unwrap().unwrap();
        for h in held {
            h.abort();
        }
    }

    #[tokio::test]
    async fn concurrent_requests_are_matched_by_opaque() {
        let (addr, _stop) = echo_server().await;
        let conn = connect_to(addr).await;
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let conn = conn.clone();
            tasks.push(tokio::spawn(async move {
                let req = RemotingCommand::bare_request(1).with_body(i.to_be_bytes().to_vec());
                let resp = conn.request(req, Duration::from_secs(5)).await.unwrap();
                assert_eq!(resp.response_code(), Some(ResponseCode::SUCCESS));
                assert_eq!(&resp.body[..], &i.to_be_bytes());
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_slow_answer_is_a_timeout_with_unknown_outcome() {
        let (addr, _stop) = echo_server().await;
        let conn = connect_to(addr).await;
        let err = conn
            .request(
                RemotingCommand::bare_request(999),
                Duration::from_millis(50),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err}");
        assert!(err.is_outcome_unknown());
        // The connection still works afterwards.
        conn.request(RemotingCommand::bare_request(1), Duration::from_secs(2))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn garbage_closes_only_that_connection() {
        let (addr, _stop) = echo_server().await;
        let good = connect_to(addr).await;
        let mut bad = TcpStream::connect(addr).await.unwrap();
        bad.write_all(&[0x7F, 0xFF, 0xFF, 0xFF, 1, 2, 3])
            .await
            .unwrap();
        let mut sink = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(2), bad.read(&mut sink))
            .await
            .expect("server closes a connection that sent garbage")
            .unwrap_or(0);
        assert_eq!(n, 0);
        good.request(RemotingCommand::bare_request(1), Duration::from_secs(2))
            .await
            .unwrap();
    }

    /// TLS may keep the end of a write until it is flushed (when the socket was full);
    /// a `BufWriter` keeps every small write so. Over such a writer a request must still
    /// reach the peer and be answered: the write loop flushes after each write.
    #[tokio::test]
    async fn a_writer_that_holds_bytes_until_flushed_still_delivers() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let config = ConnectionConfig::default();
        let (near, far) = tokio::io::duplex(64 * 1024);
        let (far_read, far_write) = tokio::io::split(far);
        let token = CancellationToken::new();
        Connection::run(
            far_read,
            far_write,
            peer,
            &config,
            Arc::new(Echo),
            token.clone(),
        );
        let (near_read, near_write) = tokio::io::split(near);
        let conn = Connection::run(
            near_read,
            tokio::io::BufWriter::new(near_write),
            peer,
            &config,
            Arc::new(NoRequests),
            token,
        );
        let request = RemotingCommand::bare_request(1).with_body(b"small".to_vec());
        let response = conn.request(request, Duration::from_secs(2)).await.unwrap();
        assert_eq!(&response.body[..], b"small");
    }

    /// Connects to an echo server and starts a request it answers only after 500 ms
    /// (code 999), with a 5 s timeout; returns the connection, the waiting request and the
    /// server's stop.
    async fn waiting_request() -> (
        Connection,
        tokio::task::JoinHandle<Result<RemotingCommand>>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (addr, stop) = echo_server().await;
        let conn = connect_to(addr).await;
        let waiter = {
            let conn = conn.clone();
            tokio::spawn(async move {
                conn.request(RemotingCommand::bare_request(999), Duration::from_secs(5))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        (conn, waiter, stop)
    }

    /// The request's error, which must come well before its 5 s timeout: the read loop
    /// empties the waiters when the connection closes (a request has no close watch).
    async fn ended_by_the_close(waiter: tokio::task::JoinHandle<Result<RemotingCommand>>) -> Error {
        let err = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("the waiter outlived its connection")
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, Error::ConnectionClosed { .. }), "{err}");
        assert!(err.is_outcome_unknown(), "{err}");
        err
    }

    #[tokio::test]
    async fn closing_the_server_fails_waiters_as_unknown() {
        let (conn, waiter, stop) = waiting_request().await;
        stop.send(()).unwrap();
        ended_by_the_close(waiter).await;
        tokio::time::timeout(Duration::from_secs(2), conn.closed())
            .await
            .unwrap();
    }

    /// The same when this side closes the connection while a request waits, and a request
    /// made after the close is refused as not sent.
    #[tokio::test]
    async fn closing_here_fails_waiters_as_unknown() {
        let (conn, waiter, _stop) = waiting_request().await;
        conn.close();
        ended_by_the_close(waiter).await;
        let err = conn
            .request(RemotingCommand::bare_request(1), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotSent { .. }), "{err}");
        assert!(!err.is_outcome_unknown(), "{err}");
    }
}
