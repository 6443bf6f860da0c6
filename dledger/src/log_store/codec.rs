//! On-disk encoding of one Raft entry in the CommitLog.
//!
//! Layout (all integers big-endian, like RocketMQ's records):
//!
//! ```text
//! offset size field
//!      0    4 magic          0xD1ED6E7A (no zero byte, so zero-filled space never matches)
//!      4    4 total_bytes    header + body
//!      8    8 term           LogId.leader_id.term
//!     16    8 leader_node_id LogId.leader_id.node_id
//!     24    8 index          LogId.index
//!     32    1 kind           0 blank, 1 records, 2 command, 3 membership
//!     33    3 reserved       zero
//!     36    4 crc32          over bytes [0, 36) and the body
//!     40    - body           records: the records as given; command: the bytes as given;
//!                            membership: bincode of openraft's Membership; blank: empty
//! ```
//!
//! A padding marker `0xD1EDBA2D, remaining_bytes u32` fills the end of a segment that an entry
//! does not fit (when at least 8 bytes remain). The encoding is a pure function of the LogId and
//! payload, so every replica writes the same bytes for the same entry.

use std::borrow::Cow;

use bytes::Bytes;
use openraft::EntryPayload;
use openraft::LogId;

use crate::types::Payload;
use crate::types::TypeConfig;

pub(crate) type Entry = openraft::Entry<TypeConfig>;

pub(crate) const HEADER_BYTES: usize = 40;
pub(crate) const ENTRY_MAGIC: u32 = 0xD1ED_6E7A;
pub(crate) const PAD_MAGIC: u32 = 0xD1ED_BA2D;
pub(crate) const PAD_BYTES: usize = 8;

const KIND_BLANK: u8 = 0;
const KIND_RECORDS: u8 = 1;
const KIND_COMMAND: u8 = 2;
const KIND_MEMBERSHIP: u8 = 3;

/// A decoded entry header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryHeader {
    pub(crate) total_bytes: u32,
    pub(crate) term: u64,
    pub(crate) leader_node_id: u64,
    pub(crate) index: u64,
    pub(crate) kind: u8,
    pub(crate) crc: u32,
}

impl EntryHeader {
    pub(crate) fn log_id(&self) -> LogId<u64> {
        LogId::new(
            openraft::CommittedLeaderId::new(self.term, self.leader_node_id),
            self.index,
        )
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

pub(crate) fn magic_at(bytes: &[u8]) -> Option<u32> {
    (bytes.len() >= 4).then(|| read_u32(bytes, 0))
}

/// Reads the length of a padding marker at the start of `bytes`.
pub(crate) fn pad_length(bytes: &[u8]) -> Option<u32> {
    (bytes.len() >= PAD_BYTES && read_u32(bytes, 0) == PAD_MAGIC).then(|| read_u32(bytes, 4))
}

pub(crate) fn encode_pad(remaining_bytes: u32) -> [u8; PAD_BYTES] {
    let mut out = [0u8; PAD_BYTES];
    out[..4].copy_from_slice(&PAD_MAGIC.to_be_bytes());
    out[4..].copy_from_slice(&remaining_bytes.to_be_bytes());
    out
}

/// One entry ready to be written: its header, then its body where the entry keeps it (a
/// records or command payload is written from its own bytes, not copied first).
pub(crate) struct EncodedEntry<'a> {
    pub(crate) header: [u8; HEADER_BYTES],
    pub(crate) body: Cow<'a, [u8]>,
}

impl EncodedEntry<'_> {
    /// Header plus body: the bytes the entry takes in the CommitLog.
    pub(crate) fn len(&self) -> usize {
        HEADER_BYTES + self.body.len()
    }
}

/// Encodes `entry`: its header (with the CRC over header and body) and its body.
pub(crate) fn encode(entry: &Entry) -> Result<EncodedEntry<'_>, String> {
    let (kind, body): (u8, Cow<'_, [u8]>) = match &entry.payload {
        EntryPayload::Blank => (KIND_BLANK, Cow::Borrowed(&[])),
        EntryPayload::Normal(Payload::Records(records)) => {
            crate::types::validate_records(records).map_err(|(i, reason)| {
                format!("record #{i} of entry {}: {reason}", entry.log_id)
            })?;
            (KIND_RECORDS, Cow::Borrowed(&records[..]))
        }
        EntryPayload::Normal(Payload::Command(command)) => {
            (KIND_COMMAND, Cow::Borrowed(&command[..]))
        }
        EntryPayload::Membership(membership) => (
            KIND_MEMBERSHIP,
            Cow::Owned(
                bincode::serialize(membership)
                    .map_err(|e| format!("encode membership of entry {}: {e}", entry.log_id))?,
            ),
        ),
    };
    let total = HEADER_BYTES + body.len();
    let total_bytes =
        u32::try_from(total).map_err(|_| format!("entry {} is {total} bytes", entry.log_id))?;
    let mut header = [0u8; HEADER_BYTES];
    header[0..4].copy_from_slice(&ENTRY_MAGIC.to_be_bytes());
    header[4..8].copy_from_slice(&total_bytes.to_be_bytes());
    header[8..16].copy_from_slice(&entry.log_id.leader_id.term.to_be_bytes());
    header[16..24].copy_from_slice(&entry.log_id.leader_id.node_id.to_be_bytes());
    header[24..32].copy_from_slice(&entry.log_id.index.to_be_bytes());
    header[32] = kind;
    let crc = crc_of(&header, &body);
    header[36..40].copy_from_slice(&crc.to_be_bytes());
    Ok(EncodedEntry { header, body })
}

/// Appends the encoding of `entry` to `out` (tests; the CommitLog writes [`encode`]'s parts).
#[cfg(test)]
pub(crate) fn encode_entry(entry: &Entry, out: &mut Vec<u8>) -> Result<(), String> {
    let encoded = encode(entry)?;
    out.extend_from_slice(&encoded.header);
    out.extend_from_slice(&encoded.body);
    Ok(())
}

/// The CRC of an entry: over header bytes `[0, 36)` and the body.
fn crc_of(header: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..36]);
    hasher.update(body);
    hasher.finalize()
}

fn entry_crc(entry_bytes: &[u8]) -> u32 {
    crc_of(&entry_bytes[..HEADER_BYTES], &entry_bytes[HEADER_BYTES..])
}

/// Decodes and sanity-checks a header (not the CRC). `available` bounds `total_bytes`.
pub(crate) fn decode_header(bytes: &[u8], available: usize) -> Result<EntryHeader, String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!(
            "only {} bytes left, a header needs {HEADER_BYTES}",
            bytes.len()
        ));
    }
    let magic = read_u32(bytes, 0);
    if magic != ENTRY_MAGIC {
        return Err(format!("bad magic {magic:#010x}"));
    }
    let header = EntryHeader {
        total_bytes: read_u32(bytes, 4),
        term: read_u64(bytes, 8),
        leader_node_id: read_u64(bytes, 16),
        index: read_u64(bytes, 24),
        kind: bytes[32],
        crc: read_u32(bytes, 36),
    };
    if (header.total_bytes as usize) < HEADER_BYTES || header.total_bytes as usize > available {
        return Err(format!(
            "total_bytes {} outside [{HEADER_BYTES}, {available}]",
            header.total_bytes
        ));
    }
    if header.kind > KIND_MEMBERSHIP || bytes[33..36] != [0, 0, 0] {
        return Err(format!("bad kind {} or reserved bytes", header.kind));
    }
    Ok(header)
}

/// Checks the CRC of a whole entry (`bytes` is exactly header + body).
pub(crate) fn check_crc(header: &EntryHeader, bytes: &[u8]) -> Result<(), String> {
    let actual = entry_crc(bytes);
    if actual != header.crc {
        return Err(format!(
            "crc mismatch for entry index {}: stored {:#010x}, computed {actual:#010x}",
            header.index, header.crc
        ));
    }
    Ok(())
}

/// Decodes a whole, CRC-checked entry.
pub(crate) fn decode_entry(header: &EntryHeader, bytes: &[u8]) -> Result<Entry, String> {
    let body = &bytes[HEADER_BYTES..header.total_bytes as usize];
    let payload = match header.kind {
        KIND_BLANK => EntryPayload::Blank,
        KIND_RECORDS => EntryPayload::Normal(Payload::Records(Bytes::copy_from_slice(body))),
        KIND_COMMAND => EntryPayload::Normal(Payload::Command(Bytes::copy_from_slice(body))),
        KIND_MEMBERSHIP => EntryPayload::Membership(
            bincode::deserialize(body)
                .map_err(|e| format!("membership of entry {}: {e}", header.index))?,
        ),
        other => return Err(format!("unknown kind {other}")),
    };
    Ok(Entry {
        log_id: header.log_id(),
        payload,
    })
}

/// Whether `bytes` starts with a complete entry whose header and CRC are valid.
pub(crate) fn valid_entry_at(bytes: &[u8]) -> Option<EntryHeader> {
    let header = decode_header(bytes, bytes.len()).ok()?;
    check_crc(&header, &bytes[..header.total_bytes as usize]).ok()?;
    Some(header)
}

/// Finds the first offset in `bytes` where a complete valid entry starts.
///
/// Skips 8-byte words that are all zero: the magic has no zero byte, so no entry can start
/// inside such a word. This keeps the scan of a zero-filled segment tail cheap.
pub(crate) fn find_valid_entry(bytes: &[u8]) -> Option<usize> {
    let magic = ENTRY_MAGIC.to_be_bytes();
    let mut i = 0usize;
    while i + HEADER_BYTES <= bytes.len() {
        if i % 8 == 0 && i + 8 <= bytes.len() && bytes[i..i + 8] == [0u8; 8] {
            i += 8;
            continue;
        }
        if bytes[i..i + 4] == magic && valid_entry_at(&bytes[i..]).is_some() {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), index),
            payload,
        }
    }

    // Proves an entry survives encode/decode, and that any flipped byte is caught by the CRC.
    #[test]
    fn round_trip_and_crc_catches_flips() {
        let mut records = Vec::new();
        records.extend_from_slice(&8u32.to_be_bytes());
        records.extend_from_slice(b"abcd");
        let original = entry(7, EntryPayload::Normal(Payload::Records(records.into())));
        let mut bytes = Vec::new();
        encode_entry(&original, &mut bytes).unwrap();
        let header = valid_entry_at(&bytes).unwrap();
        assert_eq!(header.index, 7);
        let decoded = decode_entry(&header, &bytes).unwrap();
        assert_eq!(decoded.log_id, original.log_id);
        assert_eq!(decoded.payload, original.payload);
        for flip in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[flip] ^= 0x40;
            assert!(
                valid_entry_at(&damaged).is_none(),
                "flip at {flip} went unnoticed"
            );
        }
    }

    // Proves the scan for a valid entry finds one after zeroes and garbage, and none in zeroes.
    #[test]
    fn find_valid_entry_skips_zeroes_and_garbage() {
        let mut bytes = vec![0u8; 1000];
        bytes[13] = 0xD1;
        bytes[14] = 0xED;
        assert_eq!(find_valid_entry(&bytes), None);
        let mut encoded = Vec::new();
        encode_entry(&entry(1, EntryPayload::Blank), &mut encoded).unwrap();
        bytes.extend_from_slice(&encoded);
        assert_eq!(find_valid_entry(&bytes), Some(1000));
    }
}
