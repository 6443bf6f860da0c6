//! Well-formed peer frames as a stranger would forge them, for hostile-input tests against
//! running nodes (`tests/t46_hostile_suite.rs`): a vote, an append-entries request and the
//! last chunk of a snapshot stream, each encoded exactly as [`super::tcp`] puts a member's
//! RPC on the wire (`u32 BE length | u64 BE request id | body`, the body in [`super::wire`]'s
//! form).
//!
//! Owns nothing a node uses: only the encoding, so that a test can show such a frame is
//! refused before it reaches openraft (every connection must first pass the
//! [`super::handshake`]). What each frame would do if it were accepted is the point: the vote
//! deposes the leader, the append replaces the membership, the snapshot purges the log.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use bytes::Bytes;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::VoteRequest;
use openraft::BasicNode;
use openraft::CommittedLeaderId;
use openraft::EntryPayload;
use openraft::LogId;
use openraft::Membership;
use openraft::SnapshotMeta;
use openraft::StoredMembership;
use openraft::Vote;

use super::wire;
use super::PeerRequest;
use super::RequestBody;
use super::SnapshotChunk;
use crate::types::NodeId;

/// A request frame: the length of what follows, the request id, the wire form of `request`.
fn frame(request_id: u64, request: PeerRequest) -> Vec<u8> {
    let body = wire::encode_request_to_vec(request).expect("a forged request encodes");
    let mut out = Vec::with_capacity(12 + body.len());
    out.extend_from_slice(&((8 + body.len()) as u32).to_be_bytes());
    out.extend_from_slice(&request_id.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A membership of exactly `members` (id, peer address), all voters.
fn membership(members: &[(NodeId, String)]) -> Membership<NodeId, BasicNode> {
    let voters: BTreeSet<NodeId> = members.iter().map(|(id, _)| *id).collect();
    let nodes: BTreeMap<NodeId, BasicNode> = members
        .iter()
        .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
        .collect();
    Membership::new(vec![voters], nodes)
}

fn log_id(term: u64, leader: NodeId, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, leader), index)
}

/// `candidate` asks for a vote in `term`, claiming a log that ends at `last_log_index`
/// (written in `term - 1`): granted, it would depose a leader of any lower term.
pub fn vote_frame(request_id: u64, candidate: NodeId, term: u64, last_log_index: u64) -> Vec<u8> {
    let request = VoteRequest {
        vote: Vote::new(term, candidate),
        last_log_id: Some(log_id(term.saturating_sub(1), candidate, last_log_index)),
    };
    frame(request_id, PeerRequest(RequestBody::Vote(request)))
}

/// `leader` of `term` appends, after `prev_log_index`, a blank entry and a membership of
/// exactly `members`, and says both are committed: accepted, the receiver would follow the
/// forger and take its members for the group's.
pub fn append_entries_frame(
    request_id: u64,
    leader: NodeId,
    term: u64,
    prev_log_index: u64,
    members: &[(NodeId, String)],
) -> Vec<u8> {
    let first = prev_log_index + 1;
    let entries = vec![
        openraft::Entry {
            log_id: log_id(term, leader, first),
            payload: EntryPayload::Blank,
        },
        openraft::Entry {
            log_id: log_id(term, leader, first + 1),
            payload: EntryPayload::Membership(membership(members)),
        },
    ];
    let request = AppendEntriesRequest {
        vote: Vote::new_committed(term, leader),
        prev_log_id: Some(log_id(term.saturating_sub(1), leader, prev_log_index)),
        leader_commit: Some(log_id(term, leader, first + 1)),
        entries,
    };
    frame(request_id, PeerRequest(RequestBody::AppendEntries(request)))
}

/// `leader` of `term` sends a whole snapshot in one chunk (`data`, the last chunk, so the
/// receiver installs it): a snapshot up to `last_log_index` whose membership is exactly
/// `members`. Accepted, it would purge the receiver's CommitLog up to that index and
/// replace its membership.
pub fn install_snapshot_frame(
    request_id: u64,
    leader: NodeId,
    term: u64,
    last_log_index: u64,
    members: &[(NodeId, String)],
    data: &[u8],
) -> Vec<u8> {
    let last = log_id(term, leader, last_log_index);
    let chunk = SnapshotChunk {
        vote: Vote::new_committed(term, leader),
        snapshot_id: format!("forged-{term}-{last_log_index}"),
        offset: 0,
        data: Bytes::copy_from_slice(data),
        done: Some(SnapshotMeta {
            last_log_id: Some(last),
            last_membership: StoredMembership::new(Some(last), membership(members)),
            snapshot_id: format!("forged-{term}-{last_log_index}"),
        }),
    };
    frame(request_id, PeerRequest(RequestBody::SnapshotChunk(chunk)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body of a frame, checked against its length prefix and request id.
    fn body(frame: &[u8], id: u64) -> Bytes {
        let length = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(length, frame.len() - 4);
        assert_eq!(u64::from_be_bytes(frame[4..12].try_into().unwrap()), id);
        Bytes::copy_from_slice(&frame[12..])
    }

    // Proves each forged frame is what a member's transport would send: it decodes as the
    // request kind it claims to be, with the claimed sender.
    #[test]
    fn forged_frames_decode_as_their_kind() {
        let members = [(7, "127.0.0.1:1".to_string())];
        let vote = wire::decode_request(body(&vote_frame(1, 7, 99, 5), 1)).unwrap();
        assert!(matches!(vote.0, RequestBody::Vote(_)));
        assert_eq!(vote.0.sender(), Some(7));
        let append =
            wire::decode_request(body(&append_entries_frame(2, 7, 99, 5, &members), 2)).unwrap();
        let RequestBody::AppendEntries(rpc) = &append.0 else {
            panic!("not an append");
        };
        assert_eq!(rpc.entries.len(), 2);
        assert_eq!(append.0.sender(), Some(7));
        let snapshot = wire::decode_request(body(
            &install_snapshot_frame(3, 7, 99, 5, &members, b"data"),
            3,
        ))
        .unwrap();
        let RequestBody::SnapshotChunk(chunk) = &snapshot.0 else {
            panic!("not a snapshot chunk");
        };
        assert!(chunk.done.is_some());
        assert_eq!(&chunk.data[..], b"data");
    }
}
