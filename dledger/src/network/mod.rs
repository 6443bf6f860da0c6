//! Peer transport: openraft's vote, append-entries and install-snapshot RPCs between the
//! members of a group, and our own TimeoutNow (leadership transfer, [`crate::transfer`]).
//!
//! Owns: the wire messages ([`PeerRequest`], [`PeerResponse`]), the [`PeerTransport`] trait
//! that carries them, [`PeerService`] (the receiving side, which hands requests to the local
//! Raft), and the adapter from a transport to openraft's `RaftNetworkFactory`.
//! Implementations: [`tcp`] (bincode frames over TCP, production) and [`memory`] (an in-process
//! router that can drop, delay and partition, for tests).
//!
//! Promises: every RPC has a deadline (the smaller of openraft's TTL and `rpc_timeout_ms`); a
//! timeout is reported as "outcome unknown" (openraft retries), never as a definite failure.

pub mod memory;
pub mod tcp;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::error::InstallSnapshotError;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::RaftError;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::network::RaftNetwork;
use openraft::network::RaftNetworkFactory;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::InstallSnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::BasicNode;
use openraft::Raft;
use openraft::Vote;
use serde::Deserialize;
use serde::Serialize;

use crate::types::NodeId;
use crate::types::TypeConfig;

/// A request from one peer to another. Opaque outside `dledger`.
#[derive(Debug)]
pub struct PeerRequest(pub(crate) RequestBody);

#[derive(Debug)]
pub(crate) enum RequestBody {
    Vote(VoteRequest<NodeId>),
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    TimeoutNow(TimeoutNowRequest),
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
    InstallSnapshot(Result<InstallSnapshotResponse<NodeId>, String>),
    TimeoutNow(Result<TimeoutNowResponse, String>),
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
}

impl PeerService {
    pub(crate) fn new(raft: Raft<TypeConfig>) -> Self {
        PeerService { raft }
    }

    pub async fn handle(&self, request: PeerRequest) -> PeerResponse {
        let body = match request.0 {
            RequestBody::Vote(rpc) => {
                ResponseBody::Vote(self.raft.vote(rpc).await.map_err(|e| e.to_string()))
            }
            RequestBody::AppendEntries(rpc) => ResponseBody::AppendEntries(
                self.raft
                    .append_entries(rpc)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            RequestBody::InstallSnapshot(rpc) => ResponseBody::InstallSnapshot(
                self.raft
                    .install_snapshot(rpc)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            RequestBody::TimeoutNow(rpc) => {
                ResponseBody::TimeoutNow(crate::transfer::on_timeout_now(&self.raft, rpc).await)
            }
        };
        PeerResponse(body)
    }
}

/// openraft's network factory over a [`PeerTransport`].
#[derive(Clone)]
pub(crate) struct NetworkFactory {
    pub(crate) transport: Arc<dyn PeerTransport>,
    pub(crate) rpc_timeout: Duration,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerClient {
            target,
            addr: node.addr.clone(),
            transport: Arc::clone(&self.transport),
            rpc_timeout: self.rpc_timeout,
        }
    }
}

/// openraft's client to one peer.
pub(crate) struct PeerClient {
    target: NodeId,
    addr: String,
    transport: Arc<dyn PeerTransport>,
    rpc_timeout: Duration,
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

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .send(RequestBody::InstallSnapshot(rpc), &option)
            .await
            .map_err(to_rpc_error)?
        {
            ResponseBody::InstallSnapshot(Ok(r)) => Ok(r),
            ResponseBody::InstallSnapshot(Err(e)) => Err(to_rpc_error(self.remote(e))),
            _ => Err(to_rpc_error(self.unexpected())),
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

    fn backoff(&self) -> openraft::network::Backoff {
        // Retry an unreachable peer quickly at first: failover timing depends on it.
        openraft::network::Backoff::new(
            (0..).map(|i: u32| Duration::from_millis((50u64 << i.min(4)).min(500))),
        )
    }
}
