//! Keys of the broker's data in dledger's RocksDB column family.
//!
//! A key that holds several names encodes each as a big-endian u16 length and its bytes,
//! so no byte of a name (a NUL, a `/`) can move a field boundary, and decoding any bytes at
//! all gives either the fields back or `None`, never a panic. Names are checked by
//! RocketMQ's rules before they reach the log ([`crate::names`]), so this is the second
//! line: a record written by an older version, or by a bug, is reported and skipped when
//! the store opens; it never stops a node (issue 15: one offset commit whose group held a
//! NUL made every replica refuse to restart).
//!
//! | key | value |
//! | --- | --- |
//! | `Q` + name(topic) + queueId (i32 BE) | entries in that ConsumeQueue as of the last ConsumeQueue sync (u64 BE); the journal (`j`) holds what was applied since. Written by the sync, local to each node ([`crate::consume_queue`]) |
//! | `O` + name(group) + name(topic) + queueId (i32 BE) | committed consumer offset (i64 BE) |
//! | `t/<topic>` | topic config (JSON) |
//! | `v` | topic table data version (JSON) |
//! | `l/<nodeId>` | client address that node served on as leader |
//! | `g/<group>` | subscription group config (JSON) |
//! | `c/<key>` | a broker config key changed at runtime (UPDATE_BROKER_CONFIG): its value (UTF-8, [`crate::runtime_config`]) |
//! | `T` + due (ms, u64 BE) + commitLogOffset (u64 BE) | a scheduled message not yet delivered: its record size (u32 BE) |
//! | `L` + name(group) + name(topic) + name(brokerName) + queueId (i32 BE) | a queue lock: expiry (ms, u64 BE) + holder's client id |
//! | `X` + commitLogOffset (u64 BE) | a half (prepared transactional) message not yet resolved: `transaction::HalfState` (JSON) |
//! | `K` + hash + !storeTimestamp + !commitLogOffset, `k` | the message index ([`crate::index`]) |
//! | `R` | the retention point: CommitLog position below which everything is purged (u64 BE, [`crate::retention`]) |
//! | `j` + commitLogOffset (u64 BE) | ConsumeQueue journal: the entries one Raft entry appended, whose first record is at `commitLogOffset`, to every queue it touched ([`crate::consume_queue::encode_journal`]). Kept until the ConsumeQueue files are fsync'd past it (local to each node; [`crate::consume_queue`]) |
//!
//! Versions before issue 15 wrote `q/<topic>\0<queueId>` and `o/<group>\0<topic>\0<queueId>`;
//! [`legacy_queue_key`] and [`legacy_offset_key`] read them, and the first apply after a
//! start rewrites them in the form above (see `store::BrokerHook`). Versions before issue 21
//! wrote a `Q` count with every apply (read the same way) and kept one journal record per
//! queue and apply, `J` + name(topic) + queueId (i32 BE) + end
//! (u64 BE); [`parse_legacy_journal_key`] reads them at start, and the first ConsumeQueue
//! sync deletes them.

/// Prefix of ConsumeQueue entry counts.
pub const QUEUE_PREFIX: &[u8] = b"Q";
/// Prefix of consumer offsets.
pub const OFFSET_PREFIX: &[u8] = b"O";
/// Prefix of scheduled messages (delay levels, timers, retries) not yet delivered, in
/// order of due time.
pub const TIMER_PREFIX: &[u8] = b"T";
/// Prefix of queue locks (ordered consumption).
pub const LOCK_PREFIX: &[u8] = b"L";
/// Prefix of half messages (transactions) not yet committed, rolled back or discarded.
pub const HALF_PREFIX: &[u8] = b"X";
/// The retention point (purge position), written when a `Retain` command is applied.
pub const RETENTION_KEY: &[u8] = b"R";
/// Prefix of broker config keys changed at runtime.
pub const RUNTIME_CONFIG_PREFIX: &[u8] = b"c/";

/// The key of runtime broker config key `name`.
pub fn runtime_config_key(name: &str) -> Vec<u8> {
    [RUNTIME_CONFIG_PREFIX, name.as_bytes()].concat()
}
/// Prefix of the ConsumeQueue journal (entries appended but maybe not yet fsync'd).
pub const JOURNAL_PREFIX: &[u8] = b"j";
/// Prefix of the per-queue ConsumeQueue journal written by versions before issue 21.
pub const LEGACY_JOURNAL_PREFIX: &[u8] = b"J";
/// Prefixes written by versions before issue 15.
pub const LEGACY_QUEUE_PREFIX: &[u8] = b"q/";
pub const LEGACY_OFFSET_PREFIX: &[u8] = b"o/";

fn put_name(key: &mut Vec<u8>, name: &str) {
    let len = u16::try_from(name.len()).expect("names are checked to be far below 64 KiB");
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(name.as_bytes());
}

/// Reads fields off the front of a key.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn name(&mut self) -> Option<String> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    fn queue_id(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn end(self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

pub fn queue_key(topic: &str, queue_id: i32) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + 2 + topic.len() + 4);
    key.extend_from_slice(QUEUE_PREFIX);
    put_name(&mut key, topic);
    key.extend_from_slice(&queue_id.to_be_bytes());
    key
}

/// The journal key of the Raft entry whose first record is at CommitLog `position`.
pub fn journal_key(position: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[..1].copy_from_slice(JOURNAL_PREFIX);
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

/// The CommitLog position of a journal key.
pub fn parse_journal_key(key: &[u8]) -> Option<u64> {
    be_u64(key.strip_prefix(JOURNAL_PREFIX)?)
}

/// (topic, queue id, end) of a journal key written before issue 21.
pub fn parse_legacy_journal_key(key: &[u8]) -> Option<(String, i32, u64)> {
    let mut r = Reader(key.strip_prefix(LEGACY_JOURNAL_PREFIX)?);
    let topic = r.name()?;
    let queue_id = r.queue_id()?;
    let end = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
    r.end()?;
    Some((topic, queue_id, end))
}

pub fn parse_queue_key(key: &[u8]) -> Option<(String, i32)> {
    let mut r = Reader(key.strip_prefix(QUEUE_PREFIX)?);
    let topic = r.name()?;
    let queue_id = r.queue_id()?;
    r.end()?;
    Some((topic, queue_id))
}

pub fn offset_key(group: &str, topic: &str, queue_id: i32) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + 4 + group.len() + topic.len() + 4);
    key.extend_from_slice(OFFSET_PREFIX);
    put_name(&mut key, group);
    put_name(&mut key, topic);
    key.extend_from_slice(&queue_id.to_be_bytes());
    key
}

pub fn parse_offset_key(key: &[u8]) -> Option<(String, String, i32)> {
    let mut r = Reader(key.strip_prefix(OFFSET_PREFIX)?);
    let group = r.name()?;
    let topic = r.name()?;
    let queue_id = r.queue_id()?;
    r.end()?;
    Some((group, topic, queue_id))
}

/// The NUL-separated fields of a key in the old form, if it has exactly `n`.
fn legacy_fields(key: &[u8], prefix: &[u8], n: usize) -> Option<Vec<String>> {
    let rest = std::str::from_utf8(key.strip_prefix(prefix)?).ok()?;
    let fields: Vec<String> = rest.split('\0').map(str::to_string).collect();
    (fields.len() == n && fields.iter().all(|f| !f.is_empty())).then_some(fields)
}

/// A `q/<topic>\0<queueId>` key of an older version.
pub fn legacy_queue_key(key: &[u8]) -> Option<(String, i32)> {
    let mut f = legacy_fields(key, LEGACY_QUEUE_PREFIX, 2)?.into_iter();
    let topic = f.next()?;
    Some((topic, f.next()?.parse().ok()?))
}

/// An `o/<group>\0<topic>\0<queueId>` key of an older version.
pub fn legacy_offset_key(key: &[u8]) -> Option<(String, String, i32)> {
    let mut f = legacy_fields(key, LEGACY_OFFSET_PREFIX, 3)?.into_iter();
    let (group, topic) = (f.next()?, f.next()?);
    Some((group, topic, f.next()?.parse().ok()?))
}

/// The key of a scheduled message due at `due_ms`, stored at `commit_log_offset`. Keys
/// sort by due time, then by position.
pub fn timer_key(due_ms: u64, commit_log_offset: u64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = TIMER_PREFIX[0];
    key[1..9].copy_from_slice(&due_ms.to_be_bytes());
    key[9..17].copy_from_slice(&commit_log_offset.to_be_bytes());
    key
}

/// `(due_ms, commit_log_offset)` of a timer key.
pub fn parse_timer_key(key: &[u8]) -> Option<(u64, u64)> {
    let rest = key.strip_prefix(TIMER_PREFIX)?;
    if rest.len() != 16 {
        return None;
    }
    Some((be_u64(&rest[..8])?, be_u64(&rest[8..])?))
}

/// The key of the half message stored at `commit_log_offset`. Keys sort by position.
pub fn half_key(commit_log_offset: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = HALF_PREFIX[0];
    key[1..9].copy_from_slice(&commit_log_offset.to_be_bytes());
    key
}

/// The commit log offset of a half key.
pub fn parse_half_key(key: &[u8]) -> Option<u64> {
    be_u64(key.strip_prefix(HALF_PREFIX)?)
}

/// The key of `group`'s lock on a queue.
pub fn lock_key(group: &str, topic: &str, broker_name: &str, queue_id: i32) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + 6 + group.len() + topic.len() + broker_name.len() + 4);
    key.extend_from_slice(LOCK_PREFIX);
    put_name(&mut key, group);
    put_name(&mut key, topic);
    put_name(&mut key, broker_name);
    key.extend_from_slice(&queue_id.to_be_bytes());
    key
}

/// `(group, topic, broker name, queue id)` of a lock key.
pub fn parse_lock_key(key: &[u8]) -> Option<(String, String, String, i32)> {
    let mut r = Reader(key.strip_prefix(LOCK_PREFIX)?);
    let group = r.name()?;
    let topic = r.name()?;
    let broker_name = r.name()?;
    let queue_id = r.queue_id()?;
    r.end()?;
    Some((group, topic, broker_name, queue_id))
}

/// An 8-byte big-endian value.
pub fn be_u64(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn journal_keys_round_trip_and_order_by_position() {
        assert_eq!(parse_journal_key(&journal_key(42)), Some(42));
        assert!(journal_key(255) < journal_key(256));
        assert!(journal_key(u64::MAX) > journal_key(0));
        assert_eq!(parse_journal_key(&journal_key(42)[..8]), None);
        assert_eq!(parse_journal_key(b"j"), None);
        // The legacy form: J + name(topic) + queue id + end.
        let mut legacy = b"J".to_vec();
        put_name(&mut legacy, "T\0/x");
        legacy.extend_from_slice(&3i32.to_be_bytes());
        legacy.extend_from_slice(&42u64.to_be_bytes());
        assert_eq!(
            parse_legacy_journal_key(&legacy),
            Some(("T\0/x".to_string(), 3, 42))
        );
        assert_eq!(parse_legacy_journal_key(&legacy[..legacy.len() - 1]), None);
        assert_eq!(parse_legacy_journal_key(&journal_key(42)), None);
    }

    #[test]
    fn names_with_any_bytes_keep_their_boundaries() {
        for (group, topic) in [("app\0g", "TBW102"), ("", ""), ("a/b", "\0\0"), ("g", "t")] {
            for queue_id in [0, 7, -1, i32::MAX] {
                let key = offset_key(group, topic, queue_id);
                assert_eq!(
                    parse_offset_key(&key),
                    Some((group.into(), topic.into(), queue_id))
                );
                assert_eq!(parse_queue_key(&key), None, "prefixes differ");
                let key = queue_key(topic, queue_id);
                assert_eq!(parse_queue_key(&key), Some((topic.into(), queue_id)));
            }
        }
    }

    #[test]
    fn legacy_keys_read_and_the_issue_15_key_is_refused() {
        assert_eq!(
            legacy_offset_key(b"o/g\0TopicTest\x003"),
            Some(("g".into(), "TopicTest".into(), 3))
        );
        assert_eq!(
            legacy_queue_key(b"q/TopicTest\x0012"),
            Some(("TopicTest".into(), 12))
        );
        // The record that bricked a group: a NUL inside the group name.
        assert_eq!(legacy_offset_key(b"o/app\0g\0TBW102\x000"), None);
        assert_eq!(legacy_offset_key(b"o/g\0T\0x"), None);
        assert_eq!(legacy_queue_key(b"q/T"), None);
    }

    #[test]
    fn timer_keys_sort_by_due_time_then_position() {
        let a = timer_key(1_000, 99);
        let b = timer_key(1_000, 100);
        let c = timer_key(1_001, 0);
        assert!(a < b && b < c);
        assert_eq!(parse_timer_key(&c), Some((1_001, 0)));
        assert_eq!(parse_timer_key(&c[..16]), None);
    }

    #[test]
    fn half_keys_sort_by_position() {
        assert!(half_key(255) < half_key(256));
        assert_eq!(parse_half_key(&half_key(77)), Some(77));
        assert_eq!(parse_half_key(&half_key(77)[..8]), None);
        assert_eq!(parse_half_key(&timer_key(1, 2)), None);
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_are_refused_without_panic(key in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_offset_key(&key);
            let _ = parse_queue_key(&key);
            let _ = legacy_offset_key(&key);
            let _ = legacy_queue_key(&key);
            let _ = parse_lock_key(&key);
        }

        #[test]
        fn lock_keys_round_trip(group in ".{0,20}", topic in ".{0,20}", broker in ".{0,20}", queue_id in any::<i32>()) {
            let key = lock_key(&group, &topic, &broker, queue_id);
            prop_assert_eq!(parse_lock_key(&key), Some((group, topic, broker, queue_id)));
        }

        #[test]
        fn offset_keys_round_trip(group in ".{0,40}", topic in ".{0,40}", queue_id in any::<i32>()) {
            let key = offset_key(&group, &topic, queue_id);
            prop_assert_eq!(parse_offset_key(&key), Some((group, topic, queue_id)));
        }
    }
}
