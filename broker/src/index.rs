//! The message index: which CommitLog offsets hold a message with a given key in a topic
//! (RocketMQ's IndexFile, for QUERY_MESSAGE).
//!
//! Built when a record is applied, so it is the same on every replica: each queued
//! message's `KEYS` (split by RocketMQ's `KEY_SEPARATOR`, a space) and its `UNIQ_KEY`
//! become keys in the apply hook's index column family (`dledger`'s `app_index`, grouped
//! by a key's first 9 bytes, `K` + hash), written in the same batch as the applied point, so after a crash the index and the applied point agree. A message
//! is indexed under the topic it is queued in, as RocketMQ's dispatcher indexes the
//! record's topic: a delayed message or a retry under `SCHEDULE_TOPIC_XXXX` when stored,
//! and again under its real topic when its delivery is applied (a new record). A record
//! with the rollback transaction type is not indexed (RocketMQ skips it too).
//!
//! | key | value |
//! | --- | --- |
//! | `K` + hash(`topic#key`) (u64 BE) + !storeTimestamp (u64 BE) + !commitLogOffset (u64 BE) | empty |
//! | `k` (in the ordinary family) | the newest indexed message: storeTimestamp (i64 BE) + commitLogOffset (u64 BE) |
//!
//! `!x` is `u64::MAX - x`, so one key's entries sort newest first and a time range is one
//! contiguous range of keys: a query reads exactly the entries of its range, newest first,
//! as RocketMQ walks its index files from the newest. The hash is FNV-1a (64 bits), fixed
//! here so every replica and every version computes the same keys; a collision costs a
//! wasted read, never a wrong answer, because a query checks every candidate message
//! itself (topic, key, store time). Entries below the CommitLog's first position (after
//! retention purges segments) are skipped at read; removing them is retention's job (see
//! DESIGN-NOTES, "The message index").

use dledger::{HookStore, HookWrites};
use remoting::message::{property, sys_flag, MessageRecord};

/// Prefix of index entries.
pub const INDEX_PREFIX: u8 = b'K';
/// The key of the newest indexed message.
pub const LAST_INDEXED_KEY: &[u8] = b"k";
/// RocketMQ's `MessageConst.KEY_SEPARATOR`.
pub const KEY_SEPARATOR: char = ' ';

/// Length of an index entry's key.
pub const ENTRY_KEY_BYTES: usize = 25;

// Every entry of one `topic#key` shares its group in the index family.
const _: () = assert!(dledger::INDEX_GROUP_BYTES == 1 + 8);

/// FNV-1a, 64 bits.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The hash an index entry is filed under: FNV-1a (64 bits) of `topic#key`.
pub fn key_hash(topic: &str, key: &str) -> u64 {
    fnv1a(topic.bytes().chain([b'#']).chain(key.bytes()))
}

fn invert_time(store_timestamp: i64) -> u64 {
    u64::MAX - store_timestamp.max(0) as u64
}

/// The index entry of a message with `key` in `topic`, stored at `commit_log_offset`.
pub fn entry_key(
    topic: &str,
    key: &str,
    store_timestamp: i64,
    commit_log_offset: u64,
) -> [u8; ENTRY_KEY_BYTES] {
    let mut out = [0u8; ENTRY_KEY_BYTES];
    out[0] = INDEX_PREFIX;
    out[1..9].copy_from_slice(&key_hash(topic, key).to_be_bytes());
    out[9..17].copy_from_slice(&invert_time(store_timestamp).to_be_bytes());
    out[17..25].copy_from_slice(&(u64::MAX - commit_log_offset).to_be_bytes());
    out
}

/// `(store_timestamp, commit_log_offset)` of an index entry's key.
pub fn parse_entry_key(key: &[u8]) -> Option<(i64, u64)> {
    if key.len() != ENTRY_KEY_BYTES || key[0] != INDEX_PREFIX {
        return None;
    }
    let time = u64::MAX - u64::from_be_bytes(key[9..17].try_into().ok()?);
    let offset = u64::MAX - u64::from_be_bytes(key[17..25].try_into().ok()?);
    Some((time as i64, offset))
}

/// The keys a message is indexed by: its `UNIQ_KEY`, then each of its `KEYS`.
pub fn message_keys<'a>(msg: &MessageRecord<'a>) -> impl Iterator<Item = &'a str> {
    keys_of(
        msg.property(property::UNIQ_KEY),
        msg.property(property::KEYS),
    )
}

/// The index keys of a message with these `UNIQ_KEY` and `KEYS` values.
fn keys_of<'a>(uniq_key: Option<&'a str>, keys: Option<&'a str>) -> impl Iterator<Item = &'a str> {
    uniq_key
        .into_iter()
        .chain(keys.unwrap_or("").split(KEY_SEPARATOR))
        .filter(|k| !k.is_empty())
}

/// Indexes one applied, queued message stored at `position` (called by the apply hook).
/// The newest-indexed key `k` is written only for the last record of a Raft entry: one
/// write per entry, not per message (it only feeds the response header's "how far the
/// index reaches", so a skipped last record costs nothing but staleness of that figure).
pub fn index_message(
    msg: &MessageRecord<'_>,
    uniq_key: Option<&str>,
    keys: Option<&str>,
    position: u64,
    last_of_entry: bool,
    writes: &mut HookWrites<'_>,
) {
    if msg.sys_flag & sys_flag::TRANSACTION_ROLLBACK == sys_flag::TRANSACTION_ROLLBACK {
        return;
    }
    for key in keys_of(uniq_key, keys) {
        writes.put_index(
            &entry_key(msg.topic, key, msg.store_timestamp, position),
            &[],
        );
    }
    if last_of_entry {
        let mut last = [0u8; 16];
        last[..8].copy_from_slice(&msg.store_timestamp.to_be_bytes());
        last[8..].copy_from_slice(&position.to_be_bytes());
        writes.put(LAST_INDEXED_KEY, &last);
    }
}

/// A page of [`candidates`].
pub struct Page {
    /// `(store_timestamp, commit_log_offset)`, newest first.
    pub candidates: Vec<(i64, u64)>,
    /// The key to continue after, if the page was full.
    pub next: Option<Vec<u8>>,
}

/// One page of candidates for `key` in `topic` stored within `[begin_ms, end_ms]`, newest
/// first: at most `limit` `(store_timestamp, commit_log_offset)` pairs, starting after
/// `after` (the last key of the previous page) when given. Candidates can be collisions:
/// check each message.
pub fn candidates(
    store: &HookStore,
    topic: &str,
    key: &str,
    begin_ms: i64,
    end_ms: i64,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Page, dledger::DLedgerError> {
    let (mut from, until) = range(topic, key, begin_ms, end_ms);
    if let Some(after) = after {
        // Just past `after`: the smallest key greater than it.
        from = after.to_vec();
        from.push(0);
    }
    let page = store.scan_index(&from, &until, limit)?;
    let next = (page.len() == limit).then(|| page.last().map(|(k, _)| k.clone()));
    let found = page
        .iter()
        .filter_map(|(k, _)| parse_entry_key(k))
        .collect();
    Ok(Page {
        candidates: found,
        next: next.flatten(),
    })
}

/// The keys `[from, until)` of the entries for `key` in `topic` stored within
/// `[begin_ms, end_ms]`.
fn range(topic: &str, key: &str, begin_ms: i64, end_ms: i64) -> (Vec<u8>, Vec<u8>) {
    let mut from = vec![INDEX_PREFIX];
    from.extend_from_slice(&key_hash(topic, key).to_be_bytes());
    let mut until = from.clone();
    from.extend_from_slice(&invert_time(end_ms).to_be_bytes());
    // One byte past every 25-byte key of the oldest millisecond: `until` is exclusive.
    until.extend_from_slice(&invert_time(begin_ms).to_be_bytes());
    until.extend_from_slice(&[0xFF; 9]);
    (from, until)
}

/// `(store_timestamp, commit_log_offset)` of the newest message indexed, as of the last
/// batch written; `(0, 0)` before any.
pub fn last_indexed(store: &HookStore) -> Result<(i64, u64), dledger::DLedgerError> {
    Ok(store
        .get(LAST_INDEXED_KEY)?
        .filter(|v| v.len() == 16)
        .map(|v| {
            let time = i64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
            let offset = u64::from_be_bytes(v[8..].try_into().expect("8 bytes"));
            (time, offset)
        })
        .unwrap_or((0, 0)))
}

/// Whether `msg` is indexed by `key`: as a unique key (`UNIQ_KEY`) or as one of its `KEYS`.
pub fn has_key(msg: &MessageRecord<'_>, key: &str, unique: bool) -> bool {
    if unique {
        msg.property(property::UNIQ_KEY) == Some(key)
    } else {
        msg.property(property::KEYS)
            .is_some_and(|keys| keys.split(KEY_SEPARATOR).any(|k| k == key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn fnv1a_matches_the_published_vectors_and_hashes_topic_hash_key() {
        assert_eq!(fnv1a(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(*b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(key_hash("TopicA", "k1"), fnv1a(*b"TopicA#k1"));
        assert_ne!(key_hash("TopicA", "k1"), key_hash("TopicB", "k1"));
        assert_ne!(key_hash("TopicA", "k1"), key_hash("TopicA", "k2"));
    }

    #[test]
    fn entries_sort_newest_first_and_round_trip() {
        let older = entry_key("T", "k", 1_000, 50);
        let newer = entry_key("T", "k", 2_000, 10);
        let same_ms_later = entry_key("T", "k", 2_000, 20);
        assert!(newer > same_ms_later, "same ms: higher offset first");
        assert!(same_ms_later < older && newer < older, "newer ms first");
        assert_eq!(parse_entry_key(&older), Some((1_000, 50)));
        assert_eq!(parse_entry_key(&newer[..24]), None);
        assert_eq!(parse_entry_key(b"Q1234567890123456789012345"), None);
        // A negative store time (a bad clock) is indexed as 0, not wrapped around.
        assert_eq!(parse_entry_key(&entry_key("T", "k", -5, 7)), Some((0, 7)));
    }

    #[test]
    fn a_time_range_is_exactly_the_keys_between_from_and_until() {
        let (from, until) = range("T", "k", 1_000, 2_000);
        let inside = |ts: i64, offset: u64| {
            let key = entry_key("T", "k", ts, offset);
            from.as_slice() <= key.as_slice() && key.as_slice() < until.as_slice()
        };
        for offset in [0, 1, u64::MAX / 2, u64::MAX] {
            assert!(inside(1_000, offset) && inside(1_500, offset) && inside(2_000, offset));
            assert!(!inside(999, offset) && !inside(2_001, offset));
        }
        let other = entry_key("T", "other", 1_500, 0);
        assert!(!(from.as_slice() <= other.as_slice() && other.as_slice() < until.as_slice()));
        // The widest range, as mqadmin asks it: from 0 to Long.MAX_VALUE.
        let (from, until) = range("T", "k", 0, i64::MAX);
        for ts in [0, 1, i64::MAX] {
            let key = entry_key("T", "k", ts, 0);
            assert!(from.as_slice() <= key.as_slice() && key.as_slice() < until.as_slice());
        }
    }

    fn record<'a>(properties: &'a str, sys_flag: i32) -> MessageRecord<'a> {
        let host: SocketAddr = "127.0.0.1:10911".parse().unwrap();
        MessageRecord {
            topic: "TopicA",
            queue_id: 0,
            flag: 0,
            queue_offset: 0,
            commit_log_offset: 0,
            sys_flag,
            born_timestamp: 1,
            born_host: host,
            store_timestamp: 2,
            store_host: host,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: b"x",
            properties,
            body_crc: 0,
        }
    }

    #[test]
    fn keys_are_split_by_spaces_and_the_unique_key_comes_first() {
        let props = remoting::message::encode_properties([
            (property::KEYS, "order-1  order-2 "),
            (property::UNIQ_KEY, "AC11000100002A9F0000000000000001"),
        ]);
        let msg = record(&props, 0);
        let keys: Vec<&str> = message_keys(&msg).collect();
        assert_eq!(
            keys,
            ["AC11000100002A9F0000000000000001", "order-1", "order-2"]
        );
        assert!(has_key(&msg, "order-2", false));
        assert!(!has_key(&msg, "order", false));
        assert!(!has_key(&msg, "order-1", true));
        assert!(has_key(&msg, "AC11000100002A9F0000000000000001", true));
        let none = record("", 0);
        assert_eq!(message_keys(&none).count(), 0);
    }
}
