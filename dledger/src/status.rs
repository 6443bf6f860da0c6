//! [`RaftStatus`]: one node's Raft figures for operators (the broker's metrics endpoint),
//! read from openraft's metrics watch and the CommitLog's counters when asked, never on
//! the write path.

use openraft::RaftMetrics;
use openraft::ServerState;

use crate::log_store::CommitLog;
use crate::node::Role;
use crate::types::NodeId;

pub use remoting::histogram::HistogramSnapshot;

/// Another member's replication progress, as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerProgress {
    pub node_id: NodeId,
    /// The last index the leader knows the member holds; `None` before it matched any.
    pub matched_index: Option<u64>,
    /// Entries the member lacks of the leader's log (`last_log_index - matched_index`).
    pub lag_entries: u64,
}

/// One node's Raft figures at one instant.
#[derive(Debug, Clone)]
pub struct RaftStatus {
    pub node_id: NodeId,
    pub role: Role,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    /// Terms begun since this node started: each is one election, won or not, held by this
    /// node or another (openraft 0.9 has no pre-vote, so every candidacy starts a term).
    pub elections: u64,
    pub last_log_index: u64,
    /// The last entry wholly below the committed CommitLog position.
    pub commit_index: u64,
    pub applied_index: u64,
    /// CommitLog positions (bytes): written (committed or not), committed, applied.
    pub written_position: u64,
    pub committed_position: u64,
    pub applied_position: u64,
    /// On the leader, every other member of the membership; empty elsewhere.
    pub followers: Vec<FollowerProgress>,
    /// Each CommitLog flush's msync time, in µs.
    pub flush_latency_us: HistogramSnapshot,
}

pub(crate) fn read(
    metrics: &RaftMetrics<NodeId, openraft::BasicNode>,
    log: &CommitLog,
    term_at_start: u64,
    flush_latency_us: HistogramSnapshot,
) -> RaftStatus {
    let role = match metrics.state {
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Candidate => Role::Candidate,
        ServerState::Learner => Role::Learner,
        ServerState::Shutdown => Role::Shutdown,
    };
    let last_log_index = metrics.last_log_index.unwrap_or(0);
    let committed_position = log.committed_end();
    let followers = metrics
        .replication
        .iter()
        .flatten()
        .filter(|(id, _)| **id != metrics.id)
        .map(|(id, matched)| {
            let matched_index = matched.as_ref().map(|m| m.index);
            FollowerProgress {
                node_id: *id,
                matched_index,
                lag_entries: match matched_index {
                    Some(m) => last_log_index.saturating_sub(m),
                    None => last_log_index,
                },
            }
        })
        .collect();
    RaftStatus {
        node_id: metrics.id,
        role,
        term: metrics.current_term,
        leader_id: metrics.current_leader,
        elections: metrics.current_term.saturating_sub(term_at_start),
        last_log_index,
        commit_index: log.last_index_below(committed_position).unwrap_or(0),
        applied_index: metrics.last_applied.as_ref().map(|l| l.index).unwrap_or(0),
        written_position: log.written_position(),
        committed_position,
        applied_position: log.applied_end(),
        followers,
        flush_latency_us,
    }
}
