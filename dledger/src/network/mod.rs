//! Peer transport: openraft's vote and append-entries RPCs, snapshot streams, and our own
//! TimeoutNow (leadership transfer, [`crate::transfer`]), between the members of a group.
//!
//! Owns: the wire messages ([`PeerRequest`], [`PeerResponse`]), the [`PeerTransport`] trait
//! that carries them, [`PeerService`] (the receiving side, which hands requests to the local
//! Raft), and the adapter from a transport to openraft's `RaftNetworkFactory`.
//! Implementations: [`tcp`] (bincode frames over TCP, production) and [`memory`] (an in-process
//! router that can drop, delay and partition, for tests).
//!
//! Promises: every RPC has a deadline (the smaller of openraft's TTL and `rpc_timeout_ms`); a
//! timeout is reported as "outcome unknown" (openraft retries), never as a definite failure.
//!
//! Snapshots (see [`crate::snapshot`]) travel as a stream of [`SnapshotChunk`] RPCs, one at a
//! time and in order, each with its own deadline ([`SNAPSHOT_CHUNK_TIMEOUT`]); the receiver
//! appends them to a file under `<store>/snapshot/` and, with the last one, hands the whole
//! snapshot to openraft, which installs it before that RPC is answered
//! ([`SNAPSHOT_INSTALL_TIMEOUT`]). A snapshot can be as large as the CommitLog kept, so it
//! never passes through memory whole and never under the heartbeat-sized RPC deadline.

pub mod forge;
pub mod handshake;
pub mod memory;
pub mod tcp;
mod wire;

pub use wire::check_decode as fuzz_peer_request;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use openraft::error::Fatal;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::RaftError;
use openraft::error::ReplicationClosed;
use openraft::error::StreamingError;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::network::RaftNetwork;
use openraft::network::RaftNetworkFactory;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::BasicNode;
use openraft::OptionalSend;
use openraft::Raft;
use openraft::Snapshot;
use openraft::SnapshotMeta;
use openraft::Vote;
use serde::Deserialize;
use serde::Serialize;

use crate::log_store::commit_log::CommitLog;
use crate::snapshot::SnapshotData;
use crate::types::NodeId;
use crate::types::TypeConfig;

/// How far into openraft's append-entries bound (one heartbeat) a follower answers with
/// what it has stored so far, in percent (see [`PeerService::append_entries`]).
const EARLY_ANSWER_PERCENT: u64 = 60;

/// Bytes of a snapshot stream per [`SnapshotChunk`].
pub(crate) const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Deadline of one chunk of a snapshot stream.
pub(crate) const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(10);

/// Deadline of the last chunk, which is answered once the snapshot is installed.
pub(crate) const SNAPSHOT_INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// One piece of a snapshot stream, at `offset`; the last one (`done`) carries the
/// snapshot's metadata.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotChunk {
    pub(crate) vote: Vote<NodeId>,
    pub(crate) snapshot_id: String,
    pub(crate) offset: u64,
    pub(crate) data: Bytes,
    pub(crate) done: Option<SnapshotMeta<NodeId, BasicNode>>,
}

/// A request from one peer to another. Opaque outside `dledger`.
#[derive(Debug)]
pub struct PeerRequest(pub(crate) RequestBody);

#[derive(Debug)]
pub(crate) enum RequestBody {
    Vote(VoteRequest<NodeId>),
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    SnapshotChunk(SnapshotChunk),
    TimeoutNow(TimeoutNowRequest),
    Removed(RemovedRequest),
}

impl RequestBody {
    /// The node the request says it comes from: the leader or candidate whose vote it
    /// carries (every kind carries one).
    pub(crate) fn sender(&self) -> Option<NodeId> {
        let vote = match self {
            RequestBody::Vote(rpc) => &rpc.vote,
            RequestBody::AppendEntries(rpc) => &rpc.vote,
            RequestBody::SnapshotChunk(chunk) => &chunk.vote,
            RequestBody::TimeoutNow(rpc) => &rpc.vote,
            RequestBody::Removed(rpc) => &rpc.vote,
        };
        vote.leader_id().voted_for()
    }
}

/// The leader tells a node it has removed from the group that it is out (not an openraft
/// RPC: openraft stops replicating to a removed node before it could learn the new
/// configuration). See [`crate::membership`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RemovedRequest {
    /// The sender's vote: acted on only when it is at least as new as the target's own.
    pub(crate) vote: Vote<NodeId>,
    /// The log index of the committed configuration without the target.
    pub(crate) membership_log_index: u64,
}

/// The leader asks a follower to campaign at once (Raft's TimeoutNow, DLedger's leadership
/// transfer). Not an openraft RPC: see [`crate::transfer`] for the protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TimeoutNowRequest {
    /// The sender's vote: the target acts only while it follows this very leader and term.
    pub(crate) vote: Vote<NodeId>,
    /// The sender's last log index: the target campaigns only if its log reaches it (the
    /// vote request then proves it holds the same entries).
    pub(crate) last_log_index: Option<u64>,
    /// Only check and answer (is the target alive, following this leader, how far is its
    /// log); do not campaign.
    pub(crate) probe: bool,
}

/// The target's answer to a [`TimeoutNowRequest`] it accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TimeoutNowResponse {
    /// The target's last log index.
    pub(crate) last_log_index: Option<u64>,
    /// Whether the target has started its campaign.
    pub(crate) campaigning: bool,
}

/// The answer to a [`PeerRequest`]. Opaque outside `dledger`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PeerResponse(pub(crate) ResponseBody);

/// Remote errors travel as text: the caller only needs "it failed, retry later".
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ResponseBody {
    Vote(Result<VoteResponse<NodeId>, String>),
    AppendEntries(Result<AppendEntriesResponse<NodeId>, String>),
    SnapshotChunk(Result<SnapshotResponse<NodeId>, String>),
    TimeoutNow(Result<TimeoutNowResponse, String>),
    Removed(Result<(), String>),
}

/// Why an RPC produced no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// Not delivered (connect failed, peer unknown or partitioned away).
    #[error("peer n{target} unreachable: {reason}")]
    Unreachable { target: NodeId, reason: String },
    /// No answer within the deadline: the request may or may not have been processed.
    #[error("rpc to peer n{target} timed out after {timeout_ms} ms: outcome unknown")]
    Timeout { target: NodeId, timeout_ms: u64 },
    /// The peer answered with an error.
    #[error("peer n{target} failed the rpc: {reason}")]
    Remote { target: NodeId, reason: String },
}

/// Carries one request to a peer and brings back its response.
///
/// ### Contract
/// - The returned future resolves within `deadline` (plus scheduling slack).
/// - At most a bounded number of requests per peer are in flight; beyond that, callers wait
///   (within their deadline).
pub trait PeerTransport: Send + Sync + 'static {
    fn call(
        &self,
        target: NodeId,
        target_addr: &str,
        request: PeerRequest,
        deadline: Duration,
    ) -> BoxFuture<'static, Result<PeerResponse, TransportError>>;
}

/// The receiving side: hands a peer's request to the local Raft.
#[derive(Clone)]
pub struct PeerService {
    raft: Raft<TypeConfig>,
    /// The node's store directory.
    store_path: PathBuf,
    /// How long after a snapshot install elections stay held (one election timeout).
    election_grace: std::time::Duration,
    /// Where received snapshot streams are kept (`<store>/snapshot`).
    snapshot_dir: PathBuf,
    receiving: Arc<tokio::sync::Mutex<Option<Receiving>>>,
    /// This node's CommitLog, for [`PeerService::append_entries`]'s early answer.
    log: Arc<CommitLog>,
    /// SYNC_FLUSH: an entry counts as stored once msynced (else once written).
    sync_flush: bool,
    /// When an append-entries request still unanswered gets an answer with what is stored
    /// so far (see [`PeerService::append_entries`]).
    answer_within: Duration,
    appends: Arc<AppendTurns>,
}

/// Append-entries requests take turns into the Raft core (see
/// [`PeerService::append_entries`]).
#[derive(Default)]
struct AppendTurns {
    /// Held while a request is in the core.
    in_core: tokio::sync::Mutex<()>,
    /// Ticket of the newest request received; a waiting request with an older one gives
    /// up its turn.
    newest: AtomicU64,
}

/// A snapshot stream being received.
struct Receiving {
    snapshot_id: String,
    path: PathBuf,
    file: tokio::fs::File,
    next: u64,
}

impl PeerService {
    pub(crate) fn new(
        raft: Raft<TypeConfig>,
        log: Arc<CommitLog>,
        config: &crate::config::DLedgerConfig,
    ) -> Self {
        PeerService {
            raft,
            election_grace: Duration::from_millis(config.election_timeout_max_ms),
            store_path: config.store_path.clone(),
            snapshot_dir: config.store_path.join(crate::snapshot::SNAPSHOT_DIR),
            receiving: Arc::default(),
            log,
            sync_flush: config.flush_mode == crate::config::FlushMode::Sync,
            answer_within: Duration::from_millis(
                config.heartbeat_interval_ms * EARLY_ANSWER_PERCENT / 100,
            ),
            appends: Arc::default(),
        }
    }

    pub async fn handle(&self, request: PeerRequest) -> PeerResponse {
        let body = match request.0 {
            RequestBody::Vote(rpc) => {
                ResponseBody::Vote(self.raft.vote(rpc).await.map_err(|e| e.to_string()))
            }
            RequestBody::AppendEntries(rpc) => {
                ResponseBody::AppendEntries(self.append_entries(rpc).await)
            }
            RequestBody::SnapshotChunk(chunk) => {
                ResponseBody::SnapshotChunk(self.snapshot_chunk(chunk).await)
            }
            RequestBody::TimeoutNow(rpc) => {
                ResponseBody::TimeoutNow(crate::transfer::on_timeout_now(&self.raft, rpc).await)
            }
            RequestBody::Removed(rpc) => ResponseBody::Removed(
                crate::membership::on_removed(&self.raft, &self.store_path, rpc).await,
            ),
        };
        PeerResponse(body)
    }

    /// Hands an append-entries request to the local Raft, one at a time, and answers early
    /// when that takes long.
    ///
    /// openraft 0.9 gives an append-entries RPC one heartbeat and discards a later answer;
    /// its follower answers only once the entries are stored (msynced under SYNC_FLUSH),
    /// and its core waits for each msync before taking the next request. On a disk whose
    /// msync outlasts a heartbeat, every answer came too late and the leader sent again,
    /// each new try with the newest entries: the tries queued in the core, each costing
    /// an msync of its own, and replication fell further behind with every round.
    ///
    /// So, for requests that carry entries:
    /// - **One in the core.** A request waits here while an earlier one is in the Raft
    ///   core, and a newer request replaces a waiting one (which its leader has already
    ///   given up on: openraft has one request per follower in flight), so one msync
    ///   stores everything the leader had sent by then.
    /// - **Early answer.** Once `answer_within` has passed (and again whenever more is
    ///   flushed), the request is answered `PartialSuccess` with the newest of its entries
    ///   this node has stored, if that is past the request's `prev_log_id`; the request
    ///   goes on (to the core, or replaced), and the leader sends the rest again.
    ///
    /// Why the early answer is true: the entry named is one of the request's (same index
    /// and term) and is stored here, so by Raft's log matching everything before it
    /// matches the leader's log too; it is only given while this node's vote is the
    /// request's.
    async fn append_entries(
        &self,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<NodeId>, String> {
        if rpc.entries.is_empty() {
            return self
                .raft
                .append_entries(rpc)
                .await
                .map_err(|e| e.to_string());
        }
        let vote = rpc.vote;
        let prev_index = rpc.prev_log_id.map(|p| p.index);
        let sent: Vec<openraft::LogId<NodeId>> = rpc.entries.iter().map(|e| e.log_id).collect();
        let ticket = self.appends.newest.fetch_add(1, Ordering::AcqRel) + 1;
        let appends = Arc::clone(&self.appends);
        let raft = self.raft.clone();
        let mut answer = tokio::spawn(async move {
            let _in_core = appends.in_core.lock().await;
            if appends.newest.load(Ordering::Acquire) != ticket {
                return Err("replaced by a newer append-entries request".to_string());
            }
            raft.append_entries(rpc).await.map_err(|e| e.to_string())
        });
        let joined = |r: Result<_, tokio::task::JoinError>| r.map_err(|e| e.to_string())?;
        if let Ok(r) = tokio::time::timeout(self.answer_within, &mut answer).await {
            return joined(r);
        }
        let mut flushed = self.log.subscribe_flushed();
        loop {
            if let Some(stored) = self.stored_match(&vote, prev_index, &sent) {
                tracing::debug!(matching = %stored, last = %sent[sent.len() - 1], "append-entries answered with the entries stored so far");
                return Ok(AppendEntriesResponse::PartialSuccess(Some(stored)));
            }
            tokio::select! {
                r = &mut answer => return joined(r),
                changed = flushed.changed() => {
                    if changed.is_err() {
                        return joined(answer.await);
                    }
                }
            }
        }
    }

    /// The newest of `sent` (a request's entries, after `prev_index`) this node has stored,
    /// if it is past `prev_index` and this node's vote is `vote`.
    fn stored_match(
        &self,
        vote: &Vote<NodeId>,
        prev_index: Option<u64>,
        sent: &[openraft::LogId<NodeId>],
    ) -> Option<openraft::LogId<NodeId>> {
        if self.raft.metrics().borrow().vote != *vote {
            return None;
        }
        let stored = if self.sync_flush {
            self.log.flushed_last_index()?
        } else {
            self.log.last_index()?
        };
        let first = sent.first()?.index;
        if stored < first || prev_index.is_some_and(|p| stored <= p) {
            return None;
        }
        let candidate = sent[((stored - first) as usize).min(sent.len() - 1)];
        // The entry stored at that index must be the one sent (not one a truncation and
        // another leader's entries have replaced since).
        match self.log.location(&candidate) {
            Ok(Some(_)) => Some(candidate),
            _ => None,
        }
    }

    /// Appends one chunk to the stream being received; with the last one, installs it.
    async fn snapshot_chunk(
        &self,
        chunk: SnapshotChunk,
    ) -> Result<SnapshotResponse<NodeId>, String> {
        use tokio::io::AsyncWriteExt;
        let my_vote = self.raft.metrics().borrow().vote;
        if chunk.vote < my_vote {
            // A deposed leader: it learns of the newer vote from the answer.
            return Ok(SnapshotResponse::new(my_vote));
        }
        let mut receiving = self.receiving.lock().await;
        if chunk.offset == 0 {
            if let Some(old) = receiving.take() {
                let _ = tokio::fs::remove_file(&old.path).await;
            }
            tokio::fs::create_dir_all(&self.snapshot_dir)
                .await
                .map_err(|e| format!("{}: {e}", self.snapshot_dir.display()))?;
            let name: String = chunk
                .snapshot_id
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .take(64)
                .collect();
            // A name of its own for every stream: a stream whose install failed is kept
            // for the next start to finish, and a new one must not overwrite it.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            let path = self.snapshot_dir.join(format!("in-{name}-{nanos}.snap"));
            let file = tokio::fs::File::create(&path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            *receiving = Some(Receiving {
                snapshot_id: chunk.snapshot_id.clone(),
                path,
                file,
                next: 0,
            });
        }
        let Some(current) = receiving.as_mut() else {
            return Err(format!(
                "snapshot chunk at {} of a stream that was not started",
                chunk.offset
            ));
        };
        if current.snapshot_id != chunk.snapshot_id || current.next != chunk.offset {
            return Err(format!(
                "snapshot chunk {}@{} where {}@{} was expected",
                chunk.snapshot_id, chunk.offset, current.snapshot_id, current.next
            ));
        }
        current
            .file
            .write_all(&chunk.data)
            .await
            .map_err(|e| format!("{}: {e}", current.path.display()))?;
        current.next += chunk.data.len() as u64;
        let Some(meta) = chunk.done else {
            return Ok(SnapshotResponse::new(my_vote));
        };
        let done = receiving.take().expect("checked above");
        let file = done.file;
        file.sync_all()
            .await
            .map_err(|e| format!("{}: {e}", done.path.display()))?;
        drop(file);
        tracing::info!(snapshot = %meta, bytes = done.next, "snapshot received; installing");
        let snapshot = Snapshot {
            meta,
            snapshot: Box::new(SnapshotData::incoming(done.path.clone())),
        };
        // No election while installing: the leader's heartbeats wait behind the install,
        // and a node that campaigned right after it would cost the group a leader change.
        self.raft.runtime_config().elect(false);
        let result = self
            .raft
            .install_full_snapshot(chunk.vote, snapshot)
            .await
            .map_err(|e| e.to_string());
        let raft = self.raft.clone();
        let grace = self.election_grace;
        tokio::spawn(async move {
            // The heartbeats held meanwhile arrive first; then elections may run again.
            tokio::time::sleep(grace).await;
            raft.runtime_config().elect(true);
        });
        if result.is_ok() {
            // Installed (the install removed it) or not needed (openraft skips a snapshot
            // no newer than what this node has committed). A failed install keeps it, for
            // the next start to finish.
            let _ = tokio::fs::remove_file(&done.path).await;
        }
        result
    }
}

/// openraft's network factory over a [`PeerTransport`].
#[derive(Clone)]
pub(crate) struct NetworkFactory {
    pub(crate) transport: Arc<dyn PeerTransport>,
    pub(crate) rpc_timeout: Duration,
    /// How long replication to an unreachable peer first waits before it tries again.
    pub(crate) unreachable_backoff: Duration,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerClient {
            target,
            addr: node.addr.clone(),
            transport: Arc::clone(&self.transport),
            rpc_timeout: self.rpc_timeout,
            unreachable_backoff: self.unreachable_backoff,
        }
    }
}

/// openraft's client to one peer.
pub(crate) struct PeerClient {
    target: NodeId,
    addr: String,
    transport: Arc<dyn PeerTransport>,
    rpc_timeout: Duration,
    unreachable_backoff: Duration,
}

fn to_rpc_error<E: std::error::Error>(e: TransportError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        TransportError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

impl PeerClient {
    async fn send(
        &self,
        body: RequestBody,
        option: &RPCOption,
    ) -> Result<ResponseBody, TransportError> {
        let deadline = option.hard_ttl().min(self.rpc_timeout);
        let response = self
            .transport
            .call(self.target, &self.addr, PeerRequest(body), deadline)
            .await?;
        Ok(response.0)
    }

    fn unexpected(&self) -> TransportError {
        TransportError::Remote {
            target: self.target,
            reason: "response of the wrong kind".into(),
        }
    }

    fn remote(&self, reason: String) -> TransportError {
        TransportError::Remote {
            target: self.target,
            reason,
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    /// Tries an unreachable peer again quickly at first (failover timing depends on it),
    /// then every 500 ms (openraft's default): each try logs a few lines. A member that
    /// restarts holds its elections longer than that (see `DLedgerNode::start`), so the
    /// leader reaches it before it campaigns.
    fn backoff(&self) -> openraft::network::Backoff {
        let first = self.unreachable_backoff.as_millis() as u64;
        openraft::network::Backoff::new(
            (0..).map(move |i: u32| Duration::from_millis((first << i.min(4)).min(500))),
        )
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .send(RequestBody::AppendEntries(rpc), &option)
            .await
            .map_err(to_rpc_error)?
        {
            ResponseBody::AppendEntries(Ok(r)) => Ok(r),
            ResponseBody::AppendEntries(Err(e)) => Err(to_rpc_error(self.remote(e))),
            _ => Err(to_rpc_error(self.unexpected())),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let Some(outgoing) = snapshot.snapshot.outgoing().cloned() else {
            return Err(StreamingError::StorageError(
                openraft::StorageIOError::read_snapshot(
                    Some(snapshot.meta.signature()),
                    openraft::AnyError::error("a snapshot without data cannot be sent"),
                )
                .into(),
            ));
        };
        tokio::pin!(cancel);
        let total = outgoing.len();
        let started = std::time::Instant::now();
        let mut offset = 0u64;
        loop {
            let n = (total - offset).min(SNAPSHOT_CHUNK_BYTES as u64) as usize;
            let source = Arc::clone(&outgoing);
            let data = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; n];
                let mut filled = 0;
                while filled < n {
                    let read = source.read_at(offset + filled as u64, &mut buf[filled..])?;
                    if read == 0 {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "snapshot stream shorter than its length",
                        ));
                    }
                    filled += read;
                }
                Ok(Bytes::from(buf))
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|e| {
                StreamingError::StorageError(
                    openraft::StorageIOError::read_snapshot(
                        Some(snapshot.meta.signature()),
                        openraft::AnyError::error(e.to_string()),
                    )
                    .into(),
                )
            })?;
            let done = offset + n as u64 == total;
            let chunk = SnapshotChunk {
                vote,
                snapshot_id: snapshot.meta.snapshot_id.clone(),
                offset,
                data,
                done: done.then(|| snapshot.meta.clone()),
            };
            let deadline = if done {
                SNAPSHOT_INSTALL_TIMEOUT
            } else {
                SNAPSHOT_CHUNK_TIMEOUT
            };
            let call = self.transport.call(
                self.target,
                &self.addr,
                PeerRequest(RequestBody::SnapshotChunk(chunk)),
                deadline,
            );
            let response = tokio::select! {
                r = call => r,
                closed = &mut cancel => return Err(StreamingError::Closed(closed)),
            };
            let response = match response.map_err(to_rpc_error::<Fatal<NodeId>>) {
                Ok(PeerResponse(ResponseBody::SnapshotChunk(Ok(r)))) => r,
                Ok(PeerResponse(ResponseBody::SnapshotChunk(Err(e)))) => {
                    return Err(StreamingError::Network(NetworkError::new(&self.remote(e))))
                }
                Ok(_) => {
                    return Err(StreamingError::Network(NetworkError::new(
                        &self.unexpected(),
                    )))
                }
                Err(RPCError::Unreachable(e)) => return Err(StreamingError::Unreachable(e)),
                Err(e) => {
                    return Err(StreamingError::Network(NetworkError::new(&e)));
                }
            };
            if done || response.vote > vote {
                if done {
                    tracing::info!(
                        target_node = self.target,
                        snapshot = %snapshot.meta,
                        bytes = total,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "snapshot sent and installed"
                    );
                }
                return Ok(response);
            }
            offset += n as u64;
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .send(RequestBody::Vote(rpc), &option)
            .await
            .map_err(to_rpc_error)?
        {
            ResponseBody::Vote(Ok(r)) => Ok(r),
            ResponseBody::Vote(Err(e)) => Err(to_rpc_error(self.remote(e))),
            _ => Err(to_rpc_error(self.unexpected())),
        }
    }
}
