//! The bytes of a peer request on the wire: a bincode head, then the payloads of the entries
//! of an append-entries request, raw and in entry order.
//!
//! ```text
//! u32 BE head_len | head (bincode of the request, each payload replaced by its length) | payloads
//! ```
//!
//! The payloads stay out of the bincode head so that neither side copies them: the sender
//! writes each one from the entry it holds (the CommitLog's in-memory copy), and the receiver
//! takes each one as a slice of the frame it read, which then is the entry's payload all the
//! way into its CommitLog.

use bytes::Bytes;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::VoteRequest;
use openraft::BasicNode;
use openraft::EntryPayload;
use openraft::LogId;
use openraft::Membership;
use openraft::SnapshotMeta;
use openraft::Vote;
use serde::Deserialize;
use serde::Serialize;

use super::PeerRequest;
use super::RequestBody;
use crate::types::NodeId;
use crate::types::Payload;

#[derive(Serialize, Deserialize)]
enum Head {
    Vote(VoteRequest<NodeId>),
    AppendEntries {
        vote: Vote<NodeId>,
        prev_log_id: Option<LogId<NodeId>>,
        leader_commit: Option<LogId<NodeId>>,
        entries: Vec<EntryHead>,
    },
    SnapshotChunk {
        vote: Vote<NodeId>,
        snapshot_id: String,
        offset: u64,
        data_len: u32,
        done: Option<SnapshotMeta<NodeId, BasicNode>>,
    },
    TimeoutNow(super::TimeoutNowRequest),
    Removed(super::RemovedRequest),
}

#[derive(Serialize, Deserialize)]
struct EntryHead {
    log_id: LogId<NodeId>,
    payload: PayloadHead,
}

/// An entry's payload, with the bytes of records and commands replaced by their length.
#[derive(Serialize, Deserialize)]
enum PayloadHead {
    Blank,
    Records(u32),
    Command(u32),
    Membership(Membership<NodeId, BasicNode>),
}

/// Appends the head of `request` (its length, then the head) to `out`; returns the payloads
/// that follow it on the wire, shared with the request's entries.
pub(crate) fn encode_request(
    request: PeerRequest,
    out: &mut Vec<u8>,
) -> Result<Vec<Bytes>, String> {
    let mut payloads = Vec::new();
    let head = match request.0 {
        RequestBody::Vote(rpc) => Head::Vote(rpc),
        RequestBody::SnapshotChunk(chunk) => {
            let data_len = u32::try_from(chunk.data.len())
                .map_err(|_| format!("snapshot chunk of {} bytes", chunk.data.len()))?;
            payloads.push(chunk.data);
            Head::SnapshotChunk {
                vote: chunk.vote,
                snapshot_id: chunk.snapshot_id,
                offset: chunk.offset,
                data_len,
                done: chunk.done,
            }
        }
        RequestBody::TimeoutNow(rpc) => Head::TimeoutNow(rpc),
        RequestBody::Removed(rpc) => Head::Removed(rpc),
        RequestBody::AppendEntries(rpc) => {
            payloads.reserve(rpc.entries.len());
            let mut entries = Vec::with_capacity(rpc.entries.len());
            for entry in rpc.entries {
                let mut out_of_line = |bytes: Bytes| {
                    let len = u32::try_from(bytes.len())
                        .map_err(|_| format!("entry {} is {} bytes", entry.log_id, bytes.len()))?;
                    payloads.push(bytes);
                    Ok::<u32, String>(len)
                };
                let payload = match entry.payload {
                    EntryPayload::Blank => PayloadHead::Blank,
                    EntryPayload::Normal(Payload::Records(b)) => {
                        PayloadHead::Records(out_of_line(b)?)
                    }
                    EntryPayload::Normal(Payload::Command(b)) => {
                        PayloadHead::Command(out_of_line(b)?)
                    }
                    EntryPayload::Membership(m) => PayloadHead::Membership(m),
                };
                entries.push(EntryHead {
                    log_id: entry.log_id,
                    payload,
                });
            }
            Head::AppendEntries {
                vote: rpc.vote,
                prev_log_id: rpc.prev_log_id,
                leader_commit: rpc.leader_commit,
                entries,
            }
        }
    };
    let head_len = bincode::serialized_size(&head).map_err(|e| e.to_string())?;
    let head_len =
        u32::try_from(head_len).map_err(|_| format!("request head of {head_len} bytes"))?;
    out.reserve(4 + head_len as usize);
    out.extend_from_slice(&head_len.to_be_bytes());
    bincode::serialize_into(&mut *out, &head).map_err(|e| e.to_string())?;
    Ok(payloads)
}

/// The whole wire form of `request` in one buffer (the in-memory transport and tests; TCP
/// writes the payloads from where they are).
pub(crate) fn encode_request_to_vec(request: PeerRequest) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for payload in encode_request(request, &mut out)? {
        out.extend_from_slice(&payload);
    }
    Ok(out)
}

/// Decodes a request written by [`encode_request`] (head length, head, payloads): each
/// payload is a slice of `body`, not a copy. Refuses a body whose payloads do not end exactly
/// at its end.
pub(crate) fn decode_request(body: Bytes) -> Result<PeerRequest, String> {
    let head_len = body
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or("request shorter than its head length")?;
    let head_end = 4usize
        .checked_add(head_len)
        .filter(|end| *end <= body.len())
        .ok_or_else(|| format!("head of {head_len} bytes in a request of {}", body.len()))?;
    let head: Head = bincode::deserialize(&body[4..head_end]).map_err(|e| e.to_string())?;
    let mut at = head_end;
    let mut take = |len: u32| {
        let end = at
            .checked_add(len as usize)
            .filter(|end| *end <= body.len())
            .ok_or_else(|| {
                format!(
                    "payload of {len} bytes at {at} past the request's {}",
                    body.len()
                )
            })?;
        let payload = body.slice(at..end);
        at = end;
        Ok::<Bytes, String>(payload)
    };
    let request = match head {
        Head::Vote(rpc) => RequestBody::Vote(rpc),
        Head::SnapshotChunk {
            vote,
            snapshot_id,
            offset,
            data_len,
            done,
        } => RequestBody::SnapshotChunk(super::SnapshotChunk {
            vote,
            snapshot_id,
            offset,
            data: take(data_len)?,
            done,
        }),
        Head::TimeoutNow(rpc) => RequestBody::TimeoutNow(rpc),
        Head::Removed(rpc) => RequestBody::Removed(rpc),
        Head::AppendEntries {
            vote,
            prev_log_id,
            leader_commit,
            entries,
        } => {
            let mut decoded = Vec::with_capacity(entries.len());
            for entry in entries {
                let payload = match entry.payload {
                    PayloadHead::Blank => EntryPayload::Blank,
                    PayloadHead::Records(len) => EntryPayload::Normal(Payload::Records(take(len)?)),
                    PayloadHead::Command(len) => EntryPayload::Normal(Payload::Command(take(len)?)),
                    PayloadHead::Membership(m) => EntryPayload::Membership(m),
                };
                decoded.push(openraft::Entry {
                    log_id: entry.log_id,
                    payload,
                });
            }
            RequestBody::AppendEntries(AppendEntriesRequest {
                vote,
                prev_log_id,
                leader_commit,
                entries: decoded,
            })
        }
    };
    if at != body.len() {
        return Err(format!(
            "{} bytes after the last payload of the request",
            body.len() - at
        ));
    }
    Ok(PeerRequest(request))
}

/// For the fuzz target (`fuzz/fuzz_targets/peer_request.rs`) and the property test below:
/// decodes `data` as a peer request body; what decodes must encode and decode to the same
/// request. Panics only if that fails, never on bad input.
pub fn check_decode(data: &[u8]) {
    let Ok(request) = decode_request(Bytes::copy_from_slice(data)) else {
        return;
    };
    let text = format!("{request:?}");
    let again = encode_request_to_vec(request).expect("a decoded request encodes");
    let decoded = decode_request(Bytes::from(again)).expect("a re-encoded request decodes");
    assert_eq!(format!("{decoded:?}"), text);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::collections::BTreeSet;

    use openraft::CommittedLeaderId;

    use super::*;
    use crate::types::TypeConfig;

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(2, 1), index)
    }

    fn append_request() -> AppendEntriesRequest<TypeConfig> {
        let nodes: BTreeMap<NodeId, BasicNode> = (1..=3)
            .map(|id| {
                (
                    id,
                    BasicNode {
                        addr: format!("127.0.0.1:4091{id}"),
                    },
                )
            })
            .collect();
        let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes);
        let payloads = [
            EntryPayload::Normal(Payload::Records(Bytes::from_static(&[0, 0, 0, 6, 7, 8]))),
            EntryPayload::Blank,
            EntryPayload::Membership(membership),
            EntryPayload::Normal(Payload::Command(Bytes::from_static(b"offsets"))),
            EntryPayload::Normal(Payload::Records(Bytes::new())),
        ];
        AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(9)),
            leader_commit: Some(log_id(8)),
            entries: payloads
                .into_iter()
                .enumerate()
                .map(|(i, payload)| openraft::Entry {
                    log_id: log_id(10 + i as u64),
                    payload,
                })
                .collect(),
        }
    }

    // Proves an append-entries request of every payload kind survives the wire form, with
    // each payload a slice of the received bytes, and that a cut or overlong body is refused.
    #[test]
    fn append_entries_round_trip_and_limits() {
        let original = append_request();
        let body = Bytes::from(
            encode_request_to_vec(PeerRequest(RequestBody::AppendEntries(original.clone())))
                .unwrap(),
        );
        let PeerRequest(RequestBody::AppendEntries(decoded)) =
            decode_request(body.clone()).unwrap()
        else {
            panic!("decoded as another kind");
        };
        assert_eq!(decoded.vote, original.vote);
        assert_eq!(decoded.prev_log_id, original.prev_log_id);
        assert_eq!(decoded.leader_commit, original.leader_commit);
        assert_eq!(decoded.entries, original.entries);
        let EntryPayload::Normal(Payload::Records(records)) = &decoded.entries[0].payload else {
            panic!("first entry is records");
        };
        let within = body.as_ptr_range();
        assert!(within.contains(&records.as_ptr()), "payload was copied");

        assert!(decode_request(body.slice(..body.len() - 1)).is_err());
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(decode_request(Bytes::from(longer)).is_err());
        assert!(decode_request(Bytes::from_static(&[0, 0, 0])).is_err());
        assert!(decode_request(Bytes::from_static(&[0xff, 0, 0, 0, 1])).is_err());
    }

    proptest::proptest! {
        // Proves no byte string panics the decoder, and a valid request with any one byte
        // changed either is refused or round-trips.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            check_decode(&data);
        }

        #[test]
        fn mutated_requests_never_panic(at in 0usize..4096, byte in proptest::prelude::any::<u8>()) {
            let mut body = encode_request_to_vec(PeerRequest(RequestBody::AppendEntries(append_request()))).unwrap();
            let at = at % body.len();
            body[at] = byte;
            check_decode(&body);
        }
    }

    // Proves votes (no payloads) round-trip too.
    #[test]
    fn vote_round_trip() {
        let vote = VoteRequest::new(Vote::new(3, 2), Some(log_id(4)));
        let body = encode_request_to_vec(PeerRequest(RequestBody::Vote(vote.clone()))).unwrap();
        let PeerRequest(RequestBody::Vote(decoded)) = decode_request(Bytes::from(body)).unwrap()
        else {
            panic!("decoded as another kind");
        };
        assert_eq!(decoded, vote);
    }

    // Proves a TimeoutNow request (leadership transfer) round-trips.
    #[test]
    fn timeout_now_round_trip() {
        let request = super::super::TimeoutNowRequest {
            vote: Vote::new_committed(3, 2),
            last_log_index: Some(7),
            probe: true,
        };
        let body =
            encode_request_to_vec(PeerRequest(RequestBody::TimeoutNow(request.clone()))).unwrap();
        let PeerRequest(RequestBody::TimeoutNow(decoded)) =
            decode_request(Bytes::from(body)).unwrap()
        else {
            panic!("decoded as another kind");
        };
        assert_eq!(decoded, request);
    }

    // Proves a Removed notice (membership change) round-trips.
    #[test]
    fn removed_round_trip() {
        let request = super::super::RemovedRequest {
            vote: Vote::new_committed(4, 1),
            membership_log_index: 42,
        };
        let body =
            encode_request_to_vec(PeerRequest(RequestBody::Removed(request.clone()))).unwrap();
        let PeerRequest(RequestBody::Removed(decoded)) = decode_request(Bytes::from(body)).unwrap()
        else {
            panic!("decoded as another kind");
        };
        assert_eq!(decoded, request);
    }
}
