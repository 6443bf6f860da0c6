//! Membership change: add a node to a running group, remove one.
//!
//! Both go through openraft's joint consensus (a joint configuration is committed, then the
//! new one), on the leader only. Promises:
//! - A new node joins as a learner, receives the log (or a snapshot, when the leader has
//!   purged what it lacks) and becomes a voter only once it has caught up: a group never
//!   counts an empty node towards its quorum.
//! - A change is refused, with nothing changed, when it could not commit: removing a voter
//!   is refused unless a majority of both the old and the new voter sets answers a probe
//!   now, and adding a node that is already a voter is refused (a node whose disk is gone
//!   must be removed first: re-added under its old vote it could vote twice in one term).
//! - The leader never removes itself: it asks for its leadership to be moved first, so a
//!   planned removal costs a transfer, not a failover.
//! - A node removed while alive is told so by the leader (openraft stops replicating to it
//!   before it could learn the new configuration): it writes `<store>/REMOVED` and stops its
//!   Raft core, and a store holding that file refuses to start. A removed node that was down
//!   never hears it; it must not be started again on its old store.
//! - Every wait is bounded by `membership_timeout_ms`. A learner still catching up then is
//!   reported as such ([`DLedgerError::MembershipIncomplete`] with `catching_up`); asking
//!   again waits on and promotes it.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use openraft::error::ClientWriteError;
use openraft::error::RaftError;
use openraft::BasicNode;
use openraft::ChangeMembers;
use openraft::Raft;
use openraft::RaftMetrics;
use openraft::ServerState;

use crate::error::DLedgerError;
use crate::network::PeerRequest;
use crate::network::RemovedRequest;
use crate::network::RequestBody;
use crate::network::ResponseBody;
use crate::transfer::Transfers;
use crate::types::NodeId;
use crate::types::TypeConfig;

type Metrics = RaftMetrics<NodeId, BasicNode>;

/// A group's membership as its leader (or any member) sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Members {
    /// The node answering.
    pub node_id: NodeId,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    /// Voters and their peer addresses (in a joint configuration: of every set).
    pub voters: BTreeMap<NodeId, String>,
    /// Members that receive the log but do not vote, with their peer addresses.
    pub learners: BTreeMap<NodeId, String>,
    /// A membership change is half done (old and new voter sets both count).
    pub joint: bool,
    /// The answering node's last log index.
    pub last_log_index: Option<u64>,
    /// On the leader: the last log index each other member is known to hold.
    pub matched: BTreeMap<NodeId, Option<u64>>,
}

impl Members {
    pub(crate) fn from_metrics(m: &Metrics) -> Members {
        let membership = m.membership_config.membership();
        let address = |id: &NodeId| {
            membership
                .get_node(id)
                .map(|n| n.addr.clone())
                .unwrap_or_default()
        };
        let voters: BTreeMap<NodeId, String> = membership
            .voter_ids()
            .map(|id| (id, address(&id)))
            .collect();
        let learners = membership
            .learner_ids()
            .map(|id| (id, address(&id)))
            .collect();
        let matched = m
            .replication
            .iter()
            .flatten()
            .map(|(id, log_id)| (*id, log_id.map(|l| l.index)))
            .collect();
        Members {
            node_id: m.id,
            leader_id: m.current_leader,
            term: m.current_term,
            voters,
            learners,
            joint: membership.get_joint_config().len() > 1,
            last_log_index: m.last_log_index,
            matched,
        }
    }
}

/// The leader's side of membership change.
pub(crate) struct Membership<'a> {
    pub(crate) node_id: NodeId,
    pub(crate) raft: &'a Raft<TypeConfig>,
    pub(crate) transfers: &'a Transfers,
    pub(crate) timeout: Duration,
}

impl Membership<'_> {
    fn refused(&self, reason: impl Into<String>) -> DLedgerError {
        DLedgerError::MembershipRefused {
            node_id: self.node_id,
            reason: reason.into(),
        }
    }

    fn leader_metrics(&self) -> Result<Metrics, DLedgerError> {
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Err(DLedgerError::NotLeader {
                node_id: self.node_id,
                leader_id: m.current_leader,
                leader_addr: None,
            });
        }
        Ok(m)
    }

    /// Adds node `id`, listening for peers at `addr`, as a learner; once it has caught up,
    /// makes it a voter.
    pub(crate) async fn add(&self, id: NodeId, addr: &str) -> Result<Members, DLedgerError> {
        let m = self.leader_metrics()?;
        let membership = m.membership_config.membership();
        if membership.voter_ids().any(|v| v == id) {
            return Err(self.refused(format!(
                "n{id} is already a voter; a node whose data is gone must be removed \
                 (remove-node) before it is added again"
            )));
        }
        if let Some((other, _)) = membership
            .nodes()
            .find(|(other, node)| **other != id && node.addr == addr)
        {
            return Err(self.refused(format!("n{other} already listens at {addr}")));
        }
        if let Some(known) = membership.get_node(&id) {
            if known.addr != addr {
                return Err(self.refused(format!(
                    "n{id} is a learner at {}; remove it first to add it at {addr}",
                    known.addr
                )));
            }
        }
        tracing::info!(node_id = self.node_id, new = id, addr, "adding a learner");
        let node = BasicNode {
            addr: addr.to_string(),
        };
        match tokio::time::timeout(self.timeout, self.raft.add_learner(id, node, true)).await {
            Ok(result) => {
                result.map_err(|e| self.write_error(e))?;
            }
            Err(_) => {
                return Err(DLedgerError::MembershipIncomplete {
                    node_id: self.node_id,
                    catching_up: true,
                    reason: format!(
                        "n{id} is a learner and has not caught up within {} ms; it keeps \
                         receiving the log: ask again to wait on and make it a voter",
                        self.timeout.as_millis()
                    ),
                })
            }
        }
        tracing::info!(
            node_id = self.node_id,
            new = id,
            "learner caught up; promoting"
        );
        self.change(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
            .await
    }

    /// Removes node `id` (a voter or a learner) from the group.
    pub(crate) async fn remove(&self, id: NodeId) -> Result<Members, DLedgerError> {
        let m = self.leader_metrics()?;
        if id == self.node_id {
            return Err(self.refused(format!(
                "n{id} leads this group: move its leadership first (transfer-leader), then \
                 remove it"
            )));
        }
        let membership = m.membership_config.membership();
        let Some(addr) = membership.get_node(&id).map(|n| n.addr.clone()) else {
            return Err(self.refused(format!("n{id} is not a member of this group")));
        };
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if !voters.contains(&id) {
            let members = self
                .change(ChangeMembers::RemoveNodes(BTreeSet::from([id])))
                .await?;
            self.tell_removed(id, &addr).await;
            return Ok(members);
        }
        let remaining: BTreeSet<NodeId> = voters.iter().copied().filter(|v| *v != id).collect();
        let alive = self.answering(&m, &voters).await;
        let quorum = |set: &BTreeSet<NodeId>| {
            set.iter().filter(|v| alive.contains(v)).count() * 2 > set.len()
        };
        if !quorum(&voters) || !quorum(&remaining) {
            return Err(self.refused(format!(
                "removing n{id} needs a majority of {} and of {} to answer; only {} answer now",
                names(&voters),
                names(&remaining),
                names(&alive)
            )));
        }
        tracing::info!(node_id = self.node_id, removed = id, "removing a voter");
        let members = self
            .change(ChangeMembers::RemoveVoters(BTreeSet::from([id])))
            .await?;
        self.tell_removed(id, &addr).await;
        Ok(members)
    }

    /// Tells node `id` it is out of the group (once; a node that is down never hears it).
    async fn tell_removed(&self, id: NodeId, addr: &str) {
        let m = self.raft.metrics().borrow().clone();
        let request = RemovedRequest {
            vote: m.vote,
            membership_log_index: m.membership_config.log_id().map_or(0, |l| l.index),
        };
        let answer = self
            .transfers
            .transport
            .call(
                id,
                addr,
                PeerRequest(RequestBody::Removed(request)),
                self.transfers.rpc_timeout,
            )
            .await;
        match answer.map(|r| r.0) {
            Ok(ResponseBody::Removed(Ok(()))) => {
                tracing::info!(
                    node_id = self.node_id,
                    removed = id,
                    "told n{id} it is removed"
                )
            }
            other => tracing::warn!(
                node_id = self.node_id,
                removed = id,
                answer = ?other.map(|_| ()),
                "could not tell n{id} it is removed (down?): it must not be started again on \
                 its old store"
            ),
        }
    }

    /// The voters that answer a probe now (this leader counts itself).
    async fn answering(&self, m: &Metrics, voters: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
        let membership = m.membership_config.membership();
        let probes = voters
            .iter()
            .filter(|v| **v != self.node_id)
            .filter_map(|v| Some((*v, membership.get_node(v)?.addr.clone())))
            .map(|(v, addr)| async move {
                let answer = self
                    .transfers
                    .timeout_now(v, &addr, m, true, self.transfers.rpc_timeout)
                    .await;
                answer.is_ok().then_some(v)
            });
        let mut alive: BTreeSet<NodeId> = futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect();
        alive.insert(self.node_id);
        alive
    }

    /// Commits `changes` (joint configuration, then the new one), bounded by the timeout.
    async fn change(
        &self,
        changes: ChangeMembers<NodeId, BasicNode>,
    ) -> Result<Members, DLedgerError> {
        let written =
            tokio::time::timeout(self.timeout, self.raft.change_membership(changes, false))
                .await
                .map_err(|_| DLedgerError::MembershipIncomplete {
                    node_id: self.node_id,
                    catching_up: false,
                    reason: format!(
                        "the new configuration was not committed within {} ms (a quorum is \
                         missing?); `members` shows where it stands",
                        self.timeout.as_millis()
                    ),
                })?;
        written.map_err(|e| self.write_error(e))?;
        let members = Members::from_metrics(&self.raft.metrics().borrow());
        tracing::info!(
            node_id = self.node_id,
            voters = %names(&members.voters.keys().copied().collect()),
            learners = %names(&members.learners.keys().copied().collect()),
            "membership changed"
        );
        Ok(members)
    }

    fn write_error(
        &self,
        e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
    ) -> DLedgerError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => DLedgerError::NotLeader {
                node_id: self.node_id,
                leader_id: f.leader_id,
                leader_addr: f.leader_node.map(|n| n.addr),
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                self.refused(e.to_string())
            }
            RaftError::Fatal(e) => DLedgerError::Raft {
                node_id: self.node_id,
                reason: format!("raft stopped: {e}"),
            },
        }
    }
}

/// `{n0, n2}`.
fn names(ids: &BTreeSet<NodeId>) -> String {
    let names: Vec<String> = ids.iter().map(|id| format!("n{id}")).collect();
    format!("{{{}}}", names.join(", "))
}

/// The file that marks a removed node's store.
const REMOVED_MARKER: &str = "REMOVED";

/// Refuses to start a store whose node was removed from its group.
pub(crate) fn check_not_removed(store: &Path) -> Result<(), DLedgerError> {
    let path = store.join(REMOVED_MARKER);
    match std::fs::read_to_string(&path) {
        Ok(detail) => Err(DLedgerError::Removed {
            path: store.to_path_buf(),
            detail: detail.trim().to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DLedgerError::io(path, e)),
    }
}

/// What the removal marker of `store` says, if it has one.
pub(crate) fn removed_detail(store: &Path) -> Option<String> {
    std::fs::read_to_string(store.join(REMOVED_MARKER))
        .ok()
        .map(|d| format!("this node was removed from its group ({})", d.trim()))
}

/// A removed node's side of [`RemovedRequest`]: from a leader at least as new as the vote
/// this node holds, it marks its store removed (durably) and stops its Raft core.
pub(crate) async fn on_removed(
    raft: &Raft<TypeConfig>,
    store: &Path,
    request: RemovedRequest,
) -> Result<(), String> {
    let m = raft.metrics().borrow().clone();
    let sender = request.vote.leader_id().voted_for();
    if request.vote < m.vote || !request.vote.is_committed() {
        return Err(format!(
            "n{} holds vote {}, newer than the sender's {}",
            m.id, m.vote, request.vote
        ));
    }
    let detail = format!(
        "removed by leader n{} in term {} at log index {}",
        sender.unwrap_or_default(),
        request.vote.leader_id().get_term(),
        request.membership_log_index
    );
    write_synced(&store.join(REMOVED_MARKER), detail.as_bytes()).map_err(|e| e.to_string())?;
    tracing::warn!(node_id = m.id, "{detail}: stopping this node's Raft core");
    let raft = raft.clone();
    tokio::spawn(async move {
        let _ = raft.shutdown().await;
    });
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}
