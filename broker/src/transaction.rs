//! Transactional messages: half messages, END_TRANSACTION and check-backs, decided once
//! across any number of leader changes.
//!
//! How (docs/DESIGN-NOTES.md, "Transactional messages"):
//! - A prepared send (`TRAN_MSG=true`, or the prepared system flag) is stored as RocketMQ
//!   stores a half: in [`HALF_TOPIC`] queue 0 with `REAL_TOPIC`/`REAL_QID`, its system
//!   flag's transaction type cleared. Applying it (on every replica) adds a half key
//!   (`X` + its CommitLog offset, [`crate::keys::half_key`]) holding [`HalfState`].
//! - A commit appends the message rebuilt for its real topic and queue (as RocketMQ's
//!   `EndTransactionProcessor.endMessageTransaction`) with [`TRANSACTION_ORIGIN`] naming
//!   the half. Applying it queues it only if the half's key is still there, and deletes
//!   the key in the same batch; otherwise it is stored but queued nowhere. A rollback is a
//!   [`BrokerCommand::RollbackHalf`] that deletes the key. Whichever applies first wins,
//!   identically on every replica: a commit repeated, retried across a failover or
//!   racing a rollback is delivered at most once, and a committed one exactly once.
//! - The leader's [`run`] task, gated per term like `schedule::run`, looks every
//!   `transactionCheckInterval` for halves older than their immunity (`transactionTimeOut`
//!   or `CHECK_IMMUNITY_TIME_IN_SECONDS`). Each gets its check count raised through Raft
//!   ([`BrokerCommand::CheckHalves`]) and then a CHECK_TRANSACTION_STATE on the connection
//!   of a live producer of its group. A half checked `transactionCheckMax` times is
//!   discarded: appended to [`CHECK_MAX_TIME_TOPIC`] with the origin property, so it too
//!   is queued exactly once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use remoting::header::CheckTransactionStateRequestHeader;
use remoting::message::{
    encode_properties, message_id, properties_iter, property, property_value, sys_flag,
    MessageRecord,
};
use remoting::route::{perm, TopicConfig};
use remoting::{RemotingCommand, RequestCode};
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};

use crate::broker::Broker;
use crate::command::BrokerCommand;
use crate::keys;

/// Where half messages wait (RocketMQ's `TopicValidator.RMQ_SYS_TRANS_HALF_TOPIC`).
pub const HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
/// Where a half checked too often is discarded (`RMQ_SYS_TRANS_CHECK_MAX_TIME_TOPIC`).
pub const CHECK_MAX_TIME_TOPIC: &str = "TRANS_CHECK_MAX_TIME_TOPIC";
/// On a committed or discarded transaction: the CommitLog offset of its half. Reserved: a
/// client's message may not carry it.
pub const TRANSACTION_ORIGIN: &str = "__TRANSACTION_ORIGIN";

/// Halves read per scan of the index.
const SCAN_PAGE: usize = 1024;
/// Most halves checked or discarded in one Raft entry.
const BATCH: usize = 256;

/// What the index keeps of a pending half message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HalfState {
    /// Its producer group (`PGROUP`).
    pub producer_group: String,
    /// Its record size in the CommitLog.
    pub size: u32,
    /// Its offset in the half queue (`tranStateTableOffset`).
    pub queue_offset: u64,
    pub born_timestamp: i64,
    /// Its `CHECK_IMMUNITY_TIME_IN_SECONDS`, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immunity: Option<String>,
    /// Check-backs sent so far.
    pub check_times: u32,
}

impl HalfState {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("half states encode")
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// RocketMQ's check immunity: `CHECK_IMMUNITY_TIME_IN_SECONDS` seconds (-1 or not a
    /// number: `transactionTimeOut`), else `transactionTimeOut`.
    fn immunity_ms(&self, timeout_ms: u64) -> i64 {
        match self.immunity.as_deref().map(|s| s.trim().parse::<i64>()) {
            Some(Ok(secs)) if secs != -1 => secs.saturating_mul(1000),
            _ => timeout_ms as i64,
        }
    }

    /// Whether the half is due for a check-back at `now_ms`: older (by its born time)
    /// than its immunity, or born "in the future" (a producer's clock ahead of ours,
    /// which RocketMQ checks at once too).
    pub fn due(&self, now_ms: i64, timeout_ms: u64) -> bool {
        let age = now_ms - self.born_timestamp;
        age < 0 || age >= self.immunity_ms(timeout_ms)
    }
}

/// Whether a send is a prepared (half) message: `TRAN_MSG=true` as RocketMQ's broker
/// reads it, or the prepared transaction type in its system flag.
pub fn is_prepared(sys_flag_value: i32, properties: &str) -> bool {
    sys_flag_value & sys_flag::TRANSACTION_ROLLBACK == sys_flag::TRANSACTION_PREPARED
        || property_value(properties, property::TRANSACTION_PREPARED)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// RocketMQ's `MessageSysFlag.resetTransactionValue`.
pub fn reset_transaction_type(flag: i32, kind: i32) -> i32 {
    (flag & !sys_flag::TRANSACTION_ROLLBACK) | kind
}

/// The properties of the half stored for a prepared send to `real_topic`/`real_queue_id`
/// (RocketMQ's `parseHalfMessageInner`), with `PGROUP` from the send header when the
/// message does not name its group.
pub fn half_properties(
    properties: &str,
    real_topic: &str,
    real_queue_id: i32,
    producer_group: &str,
) -> String {
    let queue = real_queue_id.to_string();
    let group = property_value(properties, property::PRODUCER_GROUP)
        .is_none()
        .then_some((property::PRODUCER_GROUP, producer_group));
    let kept = properties_iter(properties)
        .filter(|(k, _)| !matches!(*k, property::REAL_TOPIC | property::REAL_QUEUE_ID));
    encode_properties(kept.chain(group).chain([
        (property::REAL_TOPIC, real_topic),
        (property::REAL_QUEUE_ID, queue.as_str()),
    ]))
}

/// The topic config of [`HALF_TOPIC`] or [`CHECK_MAX_TIME_TOPIC`]: one queue, as RocketMQ
/// creates them.
pub fn system_topic_config(topic: &str) -> TopicConfig {
    TopicConfig {
        topic_name: topic.to_string(),
        read_queue_nums: 1,
        write_queue_nums: 1,
        perm: perm::READ_WRITE,
        ..TopicConfig::default()
    }
}

/// The half a committed or discarded message names in [`TRANSACTION_ORIGIN`]:
/// `Some(Err(()))` for a value that does not parse (such a message is queued nowhere).
pub fn origin(record: &MessageRecord<'_>) -> Option<Result<u64, ()>> {
    record.property(TRANSACTION_ORIGIN).map(parse_origin)
}

/// The half a [`TRANSACTION_ORIGIN`] value names; `Err(())` if it does not parse.
pub(crate) fn parse_origin(value: &str) -> Result<u64, ()> {
    value.parse().map_err(|_| ())
}

/// The index entry of an applied half message stored at `position`.
pub fn half_state(record: &MessageRecord<'_>, size: usize, queue_offset: u64) -> HalfState {
    HalfState {
        producer_group: record
            .property(property::PRODUCER_GROUP)
            .unwrap_or_default()
            .to_string(),
        size: size as u32,
        queue_offset,
        born_timestamp: record.born_timestamp,
        immunity: record
            .property(property::CHECK_IMMUNITY_TIME_IN_SECONDS)
            .map(str::to_string),
        check_times: 0,
    }
}

/// The pending half at `commit_log_offset`, as this node has applied it.
pub fn pending_half(broker: &Broker, commit_log_offset: u64) -> Result<Option<HalfState>, String> {
    let value = broker
        .hook_store()
        .get(&keys::half_key(commit_log_offset))
        .map_err(|e| e.to_string())?;
    match value {
        None => Ok(None),
        Some(v) => HalfState::decode(&v)
            .map(Some)
            .ok_or_else(|| format!("the half index entry at {commit_log_offset} is unreadable")),
    }
}

/// The stored half message at `commit_log_offset`.
pub fn read_half(
    broker: &Broker,
    commit_log_offset: u64,
    state: &HalfState,
) -> Result<Vec<u8>, String> {
    let bytes = broker
        .read_commit_log(commit_log_offset, state.size as usize)
        .map_err(|e| e.to_string())?;
    let (record, _) = MessageRecord::decode(&bytes).map_err(|e| e.to_string())?;
    if record.topic != HALF_TOPIC {
        return Err(format!(
            "the record at {commit_log_offset} is in {}, not a half message",
            record.topic
        ));
    }
    Ok(bytes)
}

fn real_queue<'a>(half: &MessageRecord<'a>) -> Result<(&'a str, i32), String> {
    let topic = half
        .property(property::REAL_TOPIC)
        .ok_or("the half message has no REAL_TOPIC")?;
    let queue_id = half
        .property(property::REAL_QUEUE_ID)
        .and_then(|q| q.parse().ok())
        .ok_or("the half message has no REAL_QID")?;
    Ok((topic, queue_id))
}

/// The committed message for the half stored at `commit_log_offset`, as RocketMQ's
/// `endMessageTransaction` rebuilds it: its real topic and queue, the commit type in its
/// system flag, the half's offset as prepared transaction offset, `REAL_TOPIC`,
/// `REAL_QID` and `TRAN_MSG` cleared, WAIT false; plus [`TRANSACTION_ORIGIN`].
pub fn committed(
    half: &MessageRecord<'_>,
    commit_log_offset: u64,
    broker: &Broker,
    store_timestamp: i64,
) -> Result<Bytes, String> {
    let (topic, queue_id) = real_queue(half)?;
    let origin = commit_log_offset.to_string();
    let dropped = [
        property::REAL_TOPIC,
        property::REAL_QUEUE_ID,
        property::TRANSACTION_PREPARED,
        property::WAIT_STORE_MSG_OK,
        TRANSACTION_ORIGIN,
    ];
    let properties = encode_properties(
        properties_iter(half.properties)
            .filter(|(k, _)| !dropped.contains(k))
            .chain([
                (property::WAIT_STORE_MSG_OK, "false"),
                (TRANSACTION_ORIGIN, origin.as_str()),
            ]),
    );
    crate::copy::stored_copy(
        half,
        topic,
        queue_id,
        &properties,
        store_timestamp,
        broker.store_host(),
        |copy| {
            copy.sys_flag = reset_transaction_type(copy.sys_flag, sys_flag::TRANSACTION_COMMIT);
            copy.prepared_transaction_offset = commit_log_offset as i64;
        },
    )
}

/// The discarded copy of a half checked too often, as RocketMQ's
/// `DefaultTransactionalMessageCheckListener.toMessageExtBrokerInner` writes it: queue 0 of
/// [`CHECK_MAX_TIME_TOPIC`], the half's properties and system flag, WAIT false; plus
/// [`TRANSACTION_ORIGIN`].
fn discarded(
    half: &MessageRecord<'_>,
    commit_log_offset: u64,
    check_times: u32,
    broker: &Broker,
) -> Result<Bytes, String> {
    let origin = commit_log_offset.to_string();
    let times = check_times.to_string();
    let dropped = [
        property::WAIT_STORE_MSG_OK,
        property::TRANSACTION_CHECK_TIMES,
        TRANSACTION_ORIGIN,
    ];
    let properties = encode_properties(
        properties_iter(half.properties)
            .filter(|(k, _)| !dropped.contains(k))
            .chain([
                (property::TRANSACTION_CHECK_TIMES, times.as_str()),
                (property::WAIT_STORE_MSG_OK, "false"),
                (TRANSACTION_ORIGIN, origin.as_str()),
            ]),
    );
    crate::copy::stored_copy(
        half,
        CHECK_MAX_TIME_TOPIC,
        0,
        &properties,
        crate::processor::send::now_ms(),
        broker.store_host(),
        |_| {},
    )
}

/// CHECK_TRANSACTION_STATE for the half at `commit_log_offset`, on its `check_times`-th
/// check: the header of `AbstractTransactionalMessageCheckListener.sendCheckMessage`, and
/// the half as `MessageDecoder.encode` writes it for the check (its real topic and queue,
/// its half-queue and CommitLog offsets, `TRANSACTION_CHECK_TIMES`).
pub fn check_request(
    half: &MessageRecord<'_>,
    commit_log_offset: u64,
    state: &HalfState,
    check_times: u32,
) -> Result<RemotingCommand, String> {
    let (topic, queue_id) = real_queue(half)?;
    let uniq = half.property(property::UNIQ_KEY).map(str::to_string);
    let times = check_times.to_string();
    let properties = encode_properties(
        properties_iter(half.properties)
            .filter(|(k, _)| *k != property::TRANSACTION_CHECK_TIMES)
            .chain([(property::TRANSACTION_CHECK_TIMES, times.as_str())]),
    );
    let record = MessageRecord {
        topic,
        queue_id,
        queue_offset: state.queue_offset as i64,
        commit_log_offset: commit_log_offset as i64,
        properties: &properties,
        ..half.clone()
    };
    let mut body = bytes::BytesMut::with_capacity(record.encoded_len().map_err(|e| e.to_string())?);
    record.encode(&mut body).map_err(|e| e.to_string())?;
    let header = CheckTransactionStateRequestHeader {
        tran_state_table_offset: state.queue_offset as i64,
        commit_log_offset: commit_log_offset as i64,
        msg_id: uniq.clone(),
        transaction_id: uniq,
        offset_msg_id: Some(message_id(half.store_host, commit_log_offset as i64)),
    };
    Ok(
        RemotingCommand::request(RequestCode::CHECK_TRANSACTION_STATE, &header)
            .with_body(body.freeze()),
    )
}

/// The leader's check-back task: once this node leads and has applied everything it held
/// when it became leader (so the index shows every decision an earlier leader made),
/// check unresolved halves every `transactionCheckInterval`.
pub async fn run(broker: Arc<Broker>) {
    let interval = Duration::from_millis(broker.config().transaction_check_interval_ms.max(10));
    let poll = Duration::from_millis(50).min(interval);
    // (term, position to apply before checking in it).
    let mut gate: Option<(u64, u64)> = None;
    let mut next_check = tokio::time::Instant::now() + interval;
    loop {
        tokio::time::sleep(poll).await;
        let role = broker.role();
        if role.role != dledger::Role::Leader {
            gate = None;
            continue;
        }
        let (applied, written) = broker.log_positions();
        let ready_at = match gate {
            Some((term, ready_at)) if term == role.term => ready_at,
            _ => {
                gate = Some((role.term, written));
                next_check = tokio::time::Instant::now() + interval;
                written
            }
        };
        if applied < ready_at || tokio::time::Instant::now() < next_check {
            continue;
        }
        if let Err(e) = check_once(&broker).await {
            info!(error = %e, "transaction check-back round failed; will retry");
        }
        next_check = tokio::time::Instant::now() + interval;
    }
}

/// Every pending half: (CommitLog offset, state).
fn pending_halves(broker: &Broker) -> Result<Vec<(u64, HalfState)>, String> {
    let store = broker.hook_store();
    let until = [keys::HALF_PREFIX[0] + 1];
    let mut from = keys::half_key(0).to_vec();
    let mut out = Vec::new();
    loop {
        let page = store
            .scan(&from, &until, SCAN_PAGE)
            .map_err(|e| e.to_string())?;
        let full = page.len() == SCAN_PAGE;
        for (key, value) in &page {
            match (keys::parse_half_key(key), HalfState::decode(value)) {
                (Some(offset), Some(state)) => out.push((offset, state)),
                _ => error!(key = ?key, "unreadable half message index entry left alone"),
            }
        }
        match page.last() {
            Some((last, _)) if full => {
                from = last.clone();
                from.push(0);
            }
            _ => return Ok(out),
        }
    }
}

/// One check-back round.
async fn check_once(broker: &Broker) -> Result<(), String> {
    let config = broker.config();
    let now = crate::processor::send::now_ms();
    let mut to_check = Vec::new();
    let mut to_discard = Vec::new();
    for (offset, state) in pending_halves(broker)? {
        if !state.due(now, config.transaction_timeout_ms) {
            continue;
        }
        if state.check_times >= config.transaction_check_max {
            to_discard.push((offset, state));
        } else {
            to_check.push((offset, state));
        }
    }
    if !to_discard.is_empty() {
        discard(broker, &to_discard).await?;
    }
    for chunk in to_check.chunks(BATCH) {
        let offsets = chunk.iter().map(|(o, _)| *o).collect();
        broker
            .propose(&BrokerCommand::CheckHalves {
                commit_log_offsets: offsets,
            })
            .await
            .map_err(|e| e.to_string())?;
        for (offset, state) in chunk {
            send_check(broker, *offset, state, state.check_times + 1).await;
        }
    }
    Ok(())
}

/// Sends the check-back of one half to a live producer of its group.
async fn send_check(broker: &Broker, offset: u64, state: &HalfState, check_times: u32) {
    let request = read_half(broker, offset, state).and_then(|bytes| {
        let (half, _) = MessageRecord::decode(&bytes).map_err(|e| e.to_string())?;
        check_request(&half, offset, state, check_times)
    });
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            warn!(offset, error = %e, "a half message cannot be checked back");
            return;
        }
    };
    let producers = &broker.clients().producers;
    let Some(conn) = producers.connection(&state.producer_group, check_times as usize) else {
        warn!(producer_group = %state.producer_group, offset, "Check transaction failed, no live producer of the group");
        return;
    };
    debug!(producer_group = %state.producer_group, offset, check_times, peer = %conn.peer(), "checking a transaction back");
    if let Err(e) = conn.oneway(request).await {
        warn!(producer_group = %state.producer_group, offset, error = %e, "Check transaction failed: sending to the producer failed");
    }
}

/// Moves halves checked `transactionCheckMax` times to [`CHECK_MAX_TIME_TOPIC`].
async fn discard(broker: &Broker, halves: &[(u64, HalfState)]) -> Result<(), String> {
    broker
        .create_topic(system_topic_config(CHECK_MAX_TIME_TOPIC))
        .await
        .map_err(|e| e.to_string())?;
    for chunk in halves.chunks(BATCH) {
        let mut records = Vec::with_capacity(chunk.len());
        for (offset, state) in chunk {
            let copy = read_half(broker, *offset, state).and_then(|bytes| {
                let (half, _) = MessageRecord::decode(&bytes).map_err(|e| e.to_string())?;
                discarded(&half, *offset, state.check_times, broker)
            });
            match copy {
                Ok(r) => {
                    error!(offset, producer_group = %state.producer_group, check_times = state.check_times,
                        "a half message has been checked too many times, so it is discarded to {CHECK_MAX_TIME_TOPIC}");
                    records.push(r);
                }
                Err(e) => warn!(offset, error = %e, "a half message cannot be discarded"),
            }
        }
        if !records.is_empty() {
            broker.append(records).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(born: i64, immunity: Option<&str>) -> HalfState {
        HalfState {
            producer_group: "g".into(),
            size: 1,
            queue_offset: 0,
            born_timestamp: born,
            immunity: immunity.map(str::to_string),
            check_times: 0,
        }
    }

    #[test]
    fn halves_are_due_after_their_immunity() {
        assert!(!state(10_000, None).due(15_999, 6_000));
        assert!(state(10_000, None).due(16_000, 6_000));
        // Born in the future (a producer's clock ahead): checked at once, as RocketMQ.
        assert!(state(20_000, None).due(16_000, 6_000));
        assert!(!state(10_000, Some("60")).due(69_999, 6_000));
        assert!(state(10_000, Some("60")).due(70_000, 6_000));
        assert!(state(10_000, Some("-1")).due(16_000, 6_000));
        assert!(state(10_000, Some("x")).due(16_000, 6_000));
    }

    #[test]
    fn prepared_by_property_or_flag() {
        let p = encode_properties([(property::TRANSACTION_PREPARED, "true")]);
        assert!(is_prepared(0, &p));
        assert!(is_prepared(sys_flag::TRANSACTION_PREPARED, ""));
        assert!(!is_prepared(sys_flag::TRANSACTION_COMMIT, ""));
        assert!(!is_prepared(sys_flag::TRANSACTION_ROLLBACK, ""));
        assert!(!is_prepared(
            0,
            &encode_properties([(property::TRANSACTION_PREPARED, "false")])
        ));
        assert_eq!(
            reset_transaction_type(
                sys_flag::TRANSACTION_PREPARED | 1,
                sys_flag::TRANSACTION_COMMIT
            ),
            sys_flag::TRANSACTION_COMMIT | 1
        );
        assert_eq!(reset_transaction_type(sys_flag::TRANSACTION_PREPARED, 0), 0);
    }

    #[test]
    fn the_half_names_its_real_queue_and_group() {
        let p = half_properties(
            &encode_properties([("KEYS", "k"), (property::REAL_TOPIC, "forged")]),
            "T",
            3,
            "pg",
        );
        let get = |n| property_value(&p, n).map(str::to_string);
        assert_eq!(get(property::REAL_TOPIC).as_deref(), Some("T"));
        assert_eq!(get(property::REAL_QUEUE_ID).as_deref(), Some("3"));
        assert_eq!(get(property::PRODUCER_GROUP).as_deref(), Some("pg"));
        assert_eq!(get("KEYS").as_deref(), Some("k"));
        let p = half_properties(
            &encode_properties([(property::PRODUCER_GROUP, "own")]),
            "T",
            0,
            "pg",
        );
        assert_eq!(property_value(&p, property::PRODUCER_GROUP), Some("own"));
    }

    #[test]
    fn half_states_round_trip() {
        let s = state(5, Some("30"));
        assert_eq!(HalfState::decode(&s.encode()), Some(s));
        assert_eq!(HalfState::decode(b"nonsense"), None);
    }
}
