//! The Raft type configuration and the payload carried by each Raft entry.
//!
//! Owns: [`TypeConfig`] (openraft's type parameters), [`Payload`] (what the broker puts in an
//! entry: opaque records or one opaque command), [`AppliedEntry`] (what applying an entry
//! returns to the proposer) and the record framing rule. Promises: a `Payload::Records` that
//! passed [`validate_records`] is a concatenation of self-delimiting records, each starting
//! with its own big-endian u32 total length (RocketMQ's TOTALSIZE), so a reader positioned at
//! a record can read exactly that record.

use bytes::Bytes;
use openraft::BasicNode;
use serde::Deserialize;
use serde::Serialize;

/// A node id: the number in the DLedger name `n<id>`.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft's type parameters for a dledger group. Public only for conformance tests
    /// and tools (see [`crate::storage`]); the broker never names it.
    pub TypeConfig:
        D = Payload,
        R = AppliedEntry,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = crate::snapshot::SnapshotData,
        AsyncRuntime = openraft::TokioRuntime,
);

/// What one normal Raft entry carries. The bytes are shared, not copied, when an entry is
/// cloned (the CommitLog keeps its newest entries in memory for replication and apply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// One or more records, concatenated; each begins with its own big-endian u32 length.
    Records(#[serde(with = "byte_buf")] Bytes),
    /// One opaque application command (offsets, config), handed to the apply hook as is.
    Command(#[serde(with = "byte_buf")] Bytes),
}

/// Serializes bytes as one byte string (a length and a copy) instead of a sequence of
/// single bytes. openraft requires payloads to be serde; the peer transport does not use it
/// for them (append-entries payloads travel beside the bincode head, see `network::wire`).
mod byte_buf {
    use bytes::Bytes;
    use serde::de::Visitor;
    use serde::Deserializer;
    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(
        bytes: &Bytes,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Bytes, D::Error> {
        struct ByteBuf;
        impl<'de> Visitor<'de> for ByteBuf {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes::copy_from_slice(v))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes::from(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Bytes, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(Bytes::from(out))
            }
        }
        deserializer.deserialize_byte_buf(ByteBuf)
    }
}

/// What applying one entry returned, handed back to the proposer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppliedEntry {
    /// CommitLog position of the entry's first payload byte (its first record, or its command).
    pub body_position: u64,
    /// The apply hook's responses: one per record for a records entry, at most one for a
    /// command, none for blank and membership entries. They go from the state machine to
    /// the proposer in this process and are never serialized (openraft asks its response
    /// type to be serde; nothing sends it anywhere).
    #[serde(skip)]
    pub responses: Vec<HookResponse>,
}

/// What the apply hook made of one record or command (a queue offset, a delivered timer,
/// ...), handed to whoever appended it as the hook's own type: dledger carries it without
/// knowing what it is, and the proposer takes it back with [`HookResponse::get`], so
/// nothing is encoded to bytes and decoded again.
#[derive(Clone)]
pub struct HookResponse(std::sync::Arc<dyn std::any::Any + Send + Sync>);

impl HookResponse {
    pub fn new<T: std::any::Any + Send + Sync>(value: T) -> Self {
        HookResponse(std::sync::Arc::new(value))
    }

    /// The value, if it is a `T`.
    pub fn get<T: std::any::Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for HookResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookResponse(..)")
    }
}

/// Smallest record: the 4-byte length itself.
pub const MIN_RECORD_BYTES: usize = 4;

/// Checks that `bytes` is a concatenation of well-framed records; returns their lengths.
pub fn validate_records(bytes: &[u8]) -> Result<Vec<u32>, (usize, String)> {
    let mut lengths = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let index = lengths.len();
        if bytes.len() - offset < MIN_RECORD_BYTES {
            return Err((
                index,
                format!(
                    "{} trailing bytes are too few for a length",
                    bytes.len() - offset
                ),
            ));
        }
        let length = u32::from_be_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"));
        if (length as usize) < MIN_RECORD_BYTES || length as usize > bytes.len() - offset {
            return Err((
                index,
                format!(
                    "TOTALSIZE {length} at byte {offset} does not fit the {} remaining bytes",
                    bytes.len() - offset
                ),
            ));
        }
        lengths.push(length);
        offset += length as usize;
    }
    Ok(lengths)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves record framing is checked: exact lengths pass, short or overlong lengths fail.
    #[test]
    fn record_framing() {
        let mut two = Vec::new();
        two.extend_from_slice(&6u32.to_be_bytes());
        two.extend_from_slice(b"ab");
        two.extend_from_slice(&4u32.to_be_bytes());
        assert_eq!(validate_records(&two).unwrap(), vec![6, 4]);
        assert!(validate_records(&[0, 0, 0, 3]).is_err());
        assert!(validate_records(&[0, 0, 0, 9, 1]).is_err());
        assert!(validate_records(&[0, 0]).is_err());
        assert_eq!(validate_records(&[]).unwrap(), Vec::<u32>::new());
    }

    // Proves payloads survive the bincode round trip used on the wire.
    #[test]
    fn payload_bincode_round_trip() {
        for payload in [
            Payload::Records(Bytes::from_static(&[0, 0, 0, 5, 9])),
            Payload::Command(Bytes::from_static(&[1, 2, 3])),
        ] {
            let bytes = bincode::serialize(&payload).unwrap();
            assert_eq!(bincode::deserialize::<Payload>(&bytes).unwrap(), payload);
        }
    }
}
