//! Leadership transfer: the leader hands leadership to a caught-up follower on request
//! ([`crate::DLedgerNode::transfer_leadership`]) or because `preferred_leader_id` names it.
//!
//! Owns: the write gate that holds appends during a transfer, the leader side of the
//! protocol, the follower's answer to TimeoutNow, and the preferred-leader check.
//!
//! openraft 0.9.25 has no transfer API. What it does have, and what this relies on (read in
//! its source, `Engine::handle_vote_req`, `VoteHandler::update_vote`, `ExternalCommand::Elect`):
//! - `trigger().elect()` makes a follower campaign at once in term T+1, whatever its timers.
//! - A node rejects a vote request while its committed vote was *modified or touched* less
//!   than the leader lease (openraft's `election_timeout_max`) ago. A follower's vote is
//!   touched by every append-entries, so the third node rejects the candidate. The leader's own
//!   vote is touched only when it is established: past one lease after its election, the
//!   leader grants a vote of a higher term to a candidate whose log is at least as long as
//!   its own, and steps down by that same grant. In a group of three, the candidate and the
//!   old leader are a quorum; the third node learns the new leader from its first
//!   append-entries, which `update_vote` accepts whatever the lease.
//!
//! The protocol, on the leader:
//! 1. Refuse unless this node leads, the target is another voter, alive and following this
//!    leader (a TimeoutNow `probe`), and at most `max_transfer_lag_entries` behind.
//! 2. Wait until this node has led for one lease plus a margin (else it would reject the vote).
//! 3. Hold appends: take the write gate; appends and commands in flight finish first.
//! 4. Wait until the target's matched log id is the leader's last log id.
//! 5. Send TimeoutNow; the target checks that it still follows this leader in this term and
//!    holds that log index, then campaigns.
//! 6. Wait until this node follows the target; then release the gate (held appends answer
//!    NotLeader with the new leader, and their callers retry there). Until the transfer's
//!    deadline this node does not campaign: in a group of five the target also needs a third
//!    vote, from a follower whose lease has run out, and the old leader would otherwise win
//!    the race for it (seen in CI: three transfers in a row went back to the old leader).
//!
//! Promises: one leader per term (Raft's vote, unchanged; TimeoutNow only starts an election);
//! nothing acknowledged is lost (the candidate wins only with the old leader's whole log);
//! appends are held at most `transfer_timeout_ms`, after which the gate is released, the old
//! leader resumes if it still leads, and the caller gets [`DLedgerError::TransferFailed`]
//! (an election the target started may still depose it: Raft's usual election then decides).

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use openraft::Raft;
use openraft::RaftMetrics;
use openraft::ServerState;
use tokio::sync::watch;
use tokio::sync::RwLock;

use crate::error::DLedgerError;
use crate::network::PeerRequest;
use crate::network::PeerTransport;
use crate::network::RequestBody;
use crate::network::ResponseBody;
use crate::network::TimeoutNowRequest;
use crate::network::TimeoutNowResponse;
use crate::node::Role;
use crate::node::RoleState;
use crate::types::NodeId;
use crate::types::TypeConfig;

type Metrics = RaftMetrics<NodeId, openraft::BasicNode>;

/// Appends and commands hold it shared while they are proposed and until they are applied;
/// a transfer holds it exclusively, so that the leader's log stops growing.
pub(crate) type WriteGate = Arc<RwLock<()>>;

/// A completed leadership transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferResult {
    pub from: NodeId,
    pub to: NodeId,
    /// The new leader's term.
    pub term: u64,
    /// How long appends were held on the old leader.
    pub held_ms: u64,
    /// From the call to the old leader following the new one.
    pub elapsed_ms: u64,
}

/// Everything the leader side needs; cheap to clone.
#[derive(Clone)]
pub(crate) struct Transfers {
    pub(crate) node_id: NodeId,
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) transport: Arc<dyn PeerTransport>,
    pub(crate) gate: WriteGate,
    /// When this node last became leader (set by [`track_leader_since`]).
    pub(crate) leader_since: Arc<Mutex<Option<(u64, Instant)>>>,
    /// openraft's leader lease (its `election_timeout_max`).
    pub(crate) lease: Duration,
    pub(crate) rpc_timeout: Duration,
    pub(crate) timeout: Duration,
    pub(crate) max_lag_entries: u64,
    /// One transfer at a time.
    pub(crate) running: Arc<tokio::sync::Mutex<()>>,
}

impl Transfers {
    fn refused(&self, target: NodeId, reason: impl Into<String>) -> DLedgerError {
        DLedgerError::TransferRefused {
            node_id: self.node_id,
            target,
            reason: reason.into(),
        }
    }

    fn failed(&self, target: NodeId, reason: impl Into<String>) -> DLedgerError {
        DLedgerError::TransferFailed {
            node_id: self.node_id,
            target,
            reason: reason.into(),
        }
    }

    /// Runs the protocol of the module doc, moving leadership to `target`.
    pub(crate) async fn transfer(&self, target: NodeId) -> Result<TransferResult, DLedgerError> {
        let started = Instant::now();
        let _one = self
            .running
            .try_lock()
            .map_err(|_| self.refused(target, "another leadership transfer is in progress"))?;
        let (metrics, addr) = self.check_target(target)?;
        let probe = self
            .timeout_now(target, &addr, &metrics, true, self.rpc_timeout)
            .await
            .map_err(|e| self.refused(target, e))?;
        let lag = lag_entries(&metrics, target);
        if lag > self.max_lag_entries {
            return Err(self.refused(
                target,
                format!(
                    "n{target} is {lag} entries behind (its last log index {:?}); more than max_transfer_lag_entries {}",
                    probe.last_log_index, self.max_lag_entries
                ),
            ));
        }
        self.wait_out_own_lease().await;
        // The bound starts when appends are held: that is what callers wait on.
        let held = Instant::now();
        let deadline = held + self.timeout;
        let guard = tokio::time::timeout_at(deadline.into(), Arc::clone(&self.gate).write_owned())
            .await
            .map_err(|_| self.failed(target, "appends in flight did not finish in time"))?;
        let outcome = self.hand_over(target, &addr, deadline).await;
        let held_ms = held.elapsed().as_millis() as u64;
        drop(guard);
        let term = outcome?;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            node_id = self.node_id,
            target,
            term,
            held_ms,
            elapsed_ms,
            "leadership transferred"
        );
        Ok(TransferResult {
            from: self.node_id,
            to: target,
            term,
            held_ms,
            elapsed_ms,
        })
    }

    /// Steps 4-6, with appends held: returns the new leader's term.
    async fn hand_over(
        &self,
        target: NodeId,
        addr: &str,
        deadline: Instant,
    ) -> Result<u64, DLedgerError> {
        let caught_up = wait_metrics(&self.raft, deadline, |m| {
            m.state != ServerState::Leader || lag_entries(m, target) == 0
        })
        .await
        .map_err(|m| {
            self.failed(
                target,
                format!(
                    "n{target} did not catch up in time ({} entries behind)",
                    lag_entries(&m, target)
                ),
            )
        })?;
        if caught_up.state != ServerState::Leader {
            return Err(self.failed(target, "this node stopped leading before the hand-over"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        self.timeout_now(target, addr, &caught_up, false, self.rpc_timeout.min(left))
            .await
            .map_err(|e| self.failed(target, e))?;
        // In a group of more than three the target also needs a follower's vote, which only
        // comes once that follower's lease has run out (this node's heartbeats stop when it
        // grants); meanwhile this node must not win the election back by campaigning first.
        self.raft.runtime_config().elect(false);
        let raft = self.raft.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            raft.runtime_config().elect(true);
        });
        let followed = wait_metrics(&self.raft, deadline, |m| {
            m.state != ServerState::Leader && m.current_leader.is_some()
        })
        .await
        .map_err(|m| {
            self.failed(
                target,
                format!(
                    "no new leader within the transfer timeout (state {:?}, term {}); {}",
                    m.state,
                    m.current_term,
                    if m.state == ServerState::Leader {
                        "this node resumes leading"
                    } else {
                        "an election decides the leader"
                    }
                ),
            )
        })?;
        match followed.current_leader {
            Some(leader) if leader == target => Ok(followed.current_term),
            other => Err(self.failed(
                target,
                format!(
                    "leadership went to {other:?} in term {}",
                    followed.current_term
                ),
            )),
        }
    }

    /// This node leads, and `target` is another voter of the group: the current metrics and
    /// the target's address.
    fn check_target(&self, target: NodeId) -> Result<(Metrics, String), DLedgerError> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader {
            return Err(DLedgerError::NotLeader {
                node_id: self.node_id,
                leader_id: metrics.current_leader,
                leader_addr: None,
            });
        }
        if target == self.node_id {
            return Err(self.refused(target, format!("n{target} already leads")));
        }
        let membership = metrics.membership_config.membership();
        if !membership.voter_ids().any(|id| id == target) {
            return Err(self.refused(target, format!("n{target} is not a voter of this group")));
        }
        let addr = membership
            .get_node(&target)
            .map(|n| n.addr.clone())
            .ok_or_else(|| self.refused(target, format!("no address for n{target}")))?;
        Ok((metrics, addr))
    }

    /// A new leader's vote is fresh for one lease: it would reject the target's vote request.
    /// Waited out before appends are held (at most one lease, right after an election).
    async fn wait_out_own_lease(&self) {
        let since = self
            .leader_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|(_, at)| at)
            .unwrap_or_else(Instant::now);
        tokio::time::sleep_until((since + self.lease + LEASE_MARGIN).into()).await;
    }

    pub(crate) async fn timeout_now(
        &self,
        target: NodeId,
        addr: &str,
        metrics: &Metrics,
        probe: bool,
        rpc_timeout: Duration,
    ) -> Result<TimeoutNowResponse, String> {
        let request = TimeoutNowRequest {
            vote: metrics.vote,
            last_log_index: metrics.last_log_index,
            probe,
        };
        let response = self
            .transport
            .call(
                target,
                addr,
                PeerRequest(RequestBody::TimeoutNow(request)),
                rpc_timeout,
            )
            .await
            .map_err(|e| e.to_string())?;
        match response.0 {
            ResponseBody::TimeoutNow(result) => result,
            _ => Err("answer of the wrong kind".into()),
        }
    }
}

/// Slack past the lease before asking the target to campaign: our record of "became leader"
/// lags openraft's, never leads it, but clocks are read in different tasks.
const LEASE_MARGIN: Duration = Duration::from_millis(20);

/// How many entries `target` lacks of the leader's log (`u64::MAX` when unknown).
fn lag_entries(m: &Metrics, target: NodeId) -> u64 {
    let last = m.last_log_index.unwrap_or(0);
    let matched = m
        .replication
        .as_ref()
        .and_then(|r| r.get(&target))
        .map(|l| l.map(|l| l.index).unwrap_or(0));
    match matched {
        Some(matched) => last.saturating_sub(matched),
        None => u64::MAX,
    }
}

/// Waits until `pred` holds for Raft's metrics or `deadline` passes (then gives the last
/// metrics seen as the error).
async fn wait_metrics(
    raft: &Raft<TypeConfig>,
    deadline: Instant,
    pred: impl Fn(&Metrics) -> bool,
) -> Result<Metrics, Metrics> {
    let mut rx = raft.metrics();
    loop {
        let now = rx.borrow_and_update().clone();
        if pred(&now) {
            return Ok(now);
        }
        match tokio::time::timeout_at(deadline.into(), rx.changed()).await {
            Ok(Ok(())) => {}
            _ => return Err(rx.borrow().clone()),
        }
    }
}

/// How long a TimeoutNow target waits for its metrics to show the leader's last entry.
const TIMEOUT_NOW_LOG_WAIT: Duration = Duration::from_millis(200);

/// The follower's side of TimeoutNow: campaign (or, for a probe, only answer) if this node
/// follows the sender in the sender's term and holds the sender's last log index.
pub(crate) async fn on_timeout_now(
    raft: &Raft<TypeConfig>,
    request: TimeoutNowRequest,
) -> Result<TimeoutNowResponse, String> {
    let m = raft.metrics().borrow().clone();
    let sender = request.vote.leader_id().voted_for();
    if m.vote != request.vote || m.state != ServerState::Follower {
        return Err(format!(
            "n{} does not follow n{} in term {} (its vote {}, state {:?})",
            m.id,
            sender.map_or_else(|| "?".to_string(), |s| s.to_string()),
            request.vote.leader_id().get_term(),
            m.vote,
            m.state
        ));
    }
    let answer = |campaigning| TimeoutNowResponse {
        last_log_index: m.last_log_index,
        campaigning,
    };
    if request.probe {
        return Ok(answer(false));
    }
    // The leader saw this node match its last entry; this node's metrics may report that
    // entry a moment later than the answer that told the leader (CI saw 2663 against 2664).
    let wanted = request.last_log_index;
    let mut metrics = raft.metrics();
    let held = tokio::time::timeout(
        TIMEOUT_NOW_LOG_WAIT,
        metrics.wait_for(|m| m.last_log_index >= wanted),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .map(|m| m.clone());
    let Some(now) = held.filter(|n| n.vote == request.vote && n.state == ServerState::Follower)
    else {
        let m = raft.metrics().borrow().clone();
        return Err(format!(
            "n{} holds log index {:?}, the leader {wanted:?} (its vote {}, state {:?})",
            m.id, m.last_log_index, m.vote, m.state
        ));
    };
    let m = now;
    tracing::info!(
        node_id = m.id,
        term = m.current_term,
        "campaigning at the leader's request"
    );
    raft.trigger().elect().await.map_err(|e| e.to_string())?;
    Ok(TimeoutNowResponse {
        last_log_index: m.last_log_index,
        campaigning: true,
    })
}

/// Records when this node last became leader (the leader side waits out its own lease).
pub(crate) async fn track_leader_since(
    mut role: watch::Receiver<RoleState>,
    since: Arc<Mutex<Option<(u64, Instant)>>>,
) {
    loop {
        let state = role.borrow_and_update().clone();
        {
            let mut since = since.lock().unwrap_or_else(|e| e.into_inner());
            match (state.role, *since) {
                (Role::Leader, Some((term, _))) if term == state.term => {}
                (Role::Leader, _) => *since = Some((state.term, Instant::now())),
                _ => *since = None,
            }
        }
        if role.changed().await.is_err() {
            return;
        }
    }
}

/// DLedger's preferred-leader check: while this node leads and `preferred` is another voter
/// that is alive and within `max_lag_entries`, hand leadership to it. A refused transfer (the
/// preferred node down, lagging or not following; nothing was held) is retried at the next
/// check; a failed one (appends were held and it did not complete) backs off, doubling up to a
/// minute, so that a preferred node that cannot win does not hold appends again and again.
pub(crate) async fn keep_preferred_leader(
    transfers: Transfers,
    preferred: NodeId,
    interval: Duration,
) {
    let mut backoff = interval;
    loop {
        tokio::time::sleep(backoff).await;
        let leads = transfers.raft.metrics().borrow().state == ServerState::Leader;
        if !leads || preferred == transfers.node_id {
            backoff = interval;
            continue;
        }
        match transfers.transfer(preferred).await {
            Ok(_) => backoff = interval,
            Err(e @ DLedgerError::TransferRefused { .. }) => {
                // Nothing was held: the preferred node is down, lagging or not following.
                backoff = interval;
                tracing::debug!(node_id = transfers.node_id, preferred, error = %e, "preferred leader not ready");
            }
            Err(e) => {
                backoff = (backoff * 2).min(Duration::from_secs(60));
                tracing::info!(
                    node_id = transfers.node_id,
                    preferred,
                    error = %e,
                    retry_ms = backoff.as_millis() as u64,
                    "preferred leader not taking over yet"
                );
            }
        }
    }
}
