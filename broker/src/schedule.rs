//! Scheduled messages: delay levels (`DELAY`), RocketMQ 5's timer messages
//! (`TIMER_DELIVER_MS`, `TIMER_DELAY_SEC`, `TIMER_DELAY_MS`) and retries, delivered once,
//! not early and not lost, across any number of leader changes.
//!
//! How (docs/DESIGN-NOTES.md, "Scheduled messages"):
//! - A scheduled message is stored as RocketMQ stores it: a delayed one in
//!   `SCHEDULE_TOPIC_XXXX` (queue level - 1), a timer in `rmq_sys_wheel_timer` (queue 0),
//!   with `REAL_TOPIC`, `REAL_QID` and its due time `TIMER_OUT_MS` fixed by the leader at
//!   send. Applying it (on every replica) indexes it in its ConsumeQueue with the due time
//!   in the tag slot, and adds a timer key (due time, position) to RocksDB: pending timers
//!   cost disk, not memory.
//! - The leader's [`run`] task reads due keys in order, rebuilds each message for its real
//!   topic and queue with a `__TIMER_ORIGIN` property naming the key, and appends them.
//! - Applying a delivered message removes its key in the same RocksDB batch as the applied
//!   point; a delivery whose key is already gone (the same timer proposed twice, e.g.
//!   after an append whose outcome was unknown) is stored but queued nowhere. Every
//!   replica decides this alike, so a new leader continues exactly where the old one
//!   stopped: nothing due is lost, nothing is queued twice.
//! - Due times are kept to the millisecond (RocketMQ 5 rounds timers to 1 s).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use remoting::message::{encode_properties, properties_iter, property, MessageRecord};
use remoting::route::{perm, TopicConfig};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::keys;

/// Where delay-level messages wait (RocketMQ's `TopicValidator.RMQ_SYS_SCHEDULE_TOPIC`).
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";
/// Where timer messages wait (RocketMQ 5's `TimerMessageStore.TIMER_TOPIC`).
pub const TIMER_TOPIC: &str = "rmq_sys_wheel_timer";
/// On a delivered message: `<due ms>:<commit log offset>` of the scheduled message it was
/// made from. Reserved: a client's message may not carry it.
pub const TIMER_ORIGIN: &str = "__TIMER_ORIGIN";

/// Properties of the scheduled copy that the delivered message does not keep.
const SCHEDULE_PROPERTIES: [&str; 7] = [
    property::DELAY_TIME_LEVEL,
    property::TIMER_DELIVER_MS,
    property::TIMER_DELAY_SEC,
    property::TIMER_DELAY_MS,
    property::TIMER_OUT_MS,
    property::REAL_TOPIC,
    property::REAL_QUEUE_ID,
];

/// Most scheduled messages delivered in one append.
const DELIVER_BATCH: usize = 512;
/// Delivery appends the leader keeps in flight at once.
const APPENDS_IN_FLIGHT: usize = 8;
/// How often the delivery task scans the whole index rather than from its cursor.
const FULL_SCAN_EVERY: Duration = Duration::from_secs(10);
/// The longest the scheduler sleeps without looking (a wake-up may have been missed).
const MAX_IDLE: Duration = Duration::from_millis(500);

/// Whether a topic holds scheduled messages waiting for delivery.
pub fn is_schedule_topic(topic: &str) -> bool {
    topic == SCHEDULE_TOPIC || topic == TIMER_TOPIC
}

/// What a send asks for, by its properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Store as sent.
    Now,
    /// Store in `topic`/`queue_id` until `due_ms`.
    Later {
        topic: &'static str,
        queue_id: i32,
        due_ms: u64,
    },
}

/// Why a send's schedule cannot be honoured (RocketMQ answers MESSAGE_ILLEGAL).
pub type Illegal = String;

/// The plan of a message with `properties` stored at `now_ms`. A `DELAY` level above 0
/// wins (clamped to the highest level, as RocketMQ clamps); then timers, `TIMER_DELAY_SEC`
/// before `TIMER_DELAY_MS` before `TIMER_DELIVER_MS` (RocketMQ 5's order). A delivery time
/// not in the future is delivered at once; one beyond `max_delay_ms` is refused.
pub fn plan(
    properties: &str,
    now_ms: u64,
    delay_levels_ms: &[u64],
    max_delay_ms: u64,
) -> Result<Plan, Illegal> {
    // One pass over the properties: every send comes through here.
    let [delay_level, delay_sec, delay_ms, deliver_ms] = remoting::message::property_values(
        properties,
        [
            property::DELAY_TIME_LEVEL,
            property::TIMER_DELAY_SEC,
            property::TIMER_DELAY_MS,
            property::TIMER_DELIVER_MS,
        ],
    );
    if let Some(level) = delay_level {
        let level: i64 = level
            .trim()
            .parse()
            .map_err(|_| format!("DELAY `{level}` is not a delay level"))?;
        if level > 0 {
            let level = (level as usize).min(delay_levels_ms.len());
            return Ok(Plan::Later {
                topic: SCHEDULE_TOPIC,
                queue_id: level as i32 - 1,
                due_ms: now_ms + delay_levels_ms[level - 1],
            });
        }
    }
    let number = |name: &str, value: &str| -> Result<i64, Illegal> {
        value
            .trim()
            .parse()
            .map_err(|_| format!("{name} `{value}` is not a number"))
    };
    let due_ms = if let Some(v) = delay_sec {
        now_ms as i64 + number(property::TIMER_DELAY_SEC, v)?.saturating_mul(1000)
    } else if let Some(v) = delay_ms {
        now_ms as i64 + number(property::TIMER_DELAY_MS, v)?
    } else if let Some(v) = deliver_ms {
        number(property::TIMER_DELIVER_MS, v)?
    } else {
        return Ok(Plan::Now);
    };
    if due_ms <= now_ms as i64 {
        return Ok(Plan::Now);
    }
    if due_ms as u64 - now_ms > max_delay_ms {
        return Err(format!(
            "timer message illegal, the delay time should not be bigger than the max delay {max_delay_ms}ms (timerMaxDelaySec)"
        ));
    }
    Ok(Plan::Later {
        topic: TIMER_TOPIC,
        queue_id: 0,
        due_ms: due_ms as u64,
    })
}

/// The properties of the stored, scheduled copy of a message for `real_topic`/`real_queue`.
pub fn scheduled_properties(
    properties: &str,
    real_topic: &str,
    real_queue_id: i32,
    due_ms: u64,
) -> String {
    let (queue, due) = (real_queue_id.to_string(), due_ms.to_string());
    let kept = properties_iter(properties).filter(|(k, _)| {
        !matches!(
            *k,
            property::REAL_TOPIC | property::REAL_QUEUE_ID | property::TIMER_OUT_MS
        )
    });
    encode_properties(kept.chain([
        (property::REAL_TOPIC, real_topic),
        (property::REAL_QUEUE_ID, queue.as_str()),
        (property::TIMER_OUT_MS, due.as_str()),
    ]))
}

/// The due time of a stored scheduled message.
pub fn due_ms(record: &MessageRecord<'_>) -> Option<u64> {
    record.property(property::TIMER_OUT_MS)?.parse().ok()
}

/// The timer key a delivered message names in [`TIMER_ORIGIN`].
pub fn origin_key(record: &MessageRecord<'_>) -> Option<Result<[u8; 17], ()>> {
    record.property(TIMER_ORIGIN).map(parse_origin)
}

/// The timer key a [`TIMER_ORIGIN`] value names; `Err(())` if it does not parse.
pub(crate) fn parse_origin(origin: &str) -> Result<[u8; 17], ()> {
    let parsed = origin
        .split_once(':')
        .and_then(|(due, offset)| Some(keys::timer_key(due.parse().ok()?, offset.parse().ok()?)));
    parsed.ok_or(())
}

/// The message to store in the real topic for the scheduled `record` (stored at
/// `commit_log_offset`, due at `due_ms`), stored now.
fn delivered(
    record: &MessageRecord<'_>,
    commit_log_offset: u64,
    due_ms: u64,
    broker: &Broker,
    store_timestamp: i64,
) -> Result<Bytes, String> {
    let real_topic = record
        .property(property::REAL_TOPIC)
        .ok_or("no REAL_TOPIC")?;
    let real_queue_id: i32 = record
        .property(property::REAL_QUEUE_ID)
        .and_then(|q| q.parse().ok())
        .ok_or("no REAL_QID")?;
    let origin = format!("{due_ms}:{commit_log_offset}");
    let kept = properties_iter(record.properties)
        .filter(|(k, _)| !SCHEDULE_PROPERTIES.contains(k) && *k != property::WAIT_STORE_MSG_OK);
    let properties = encode_properties(kept.chain([
        (property::WAIT_STORE_MSG_OK, "false"),
        (TIMER_ORIGIN, origin.as_str()),
    ]));
    crate::copy::stored_copy(
        record,
        real_topic,
        real_queue_id,
        &properties,
        store_timestamp,
        broker.store_host(),
        |_| {},
    )
}

/// The topic configs scheduled messages wait in: RocketMQ's queue counts.
pub fn schedule_topic_config(topic: &str, levels: usize) -> TopicConfig {
    let queues = if topic == SCHEDULE_TOPIC {
        levels as i32
    } else {
        1
    };
    TopicConfig {
        topic_name: topic.to_string(),
        read_queue_nums: queues,
        write_queue_nums: queues,
        perm: perm::READ_WRITE,
        ..TopicConfig::default()
    }
}

/// The leader's delivery task: once this node leads and has applied everything it held
/// when it became leader (so the index shows every delivery an earlier leader made),
/// deliver what is due, in order of due time, with up to [`APPENDS_IN_FLIGHT`] appends
/// at once, and sleep until the next due time or until a new timer is applied.
pub async fn run(broker: Arc<Broker>) {
    let mut in_flight: HashSet<[u8; 17]> = HashSet::new();
    let mut appends: JoinSet<Vec<[u8; 17]>> = JoinSet::new();
    // (term, position to apply before delivering in it).
    let mut gate: Option<(u64, u64)> = None;
    // Where the next scan starts: delivered keys leave tombstones at the front of the
    // index, and scanning from the start each time walked all of them.
    let mut cursor = keys::timer_key(0, 0);
    let mut full_scan_at = tokio::time::Instant::now();
    loop {
        while let Some(done) = appends.try_join_next() {
            for key in done.unwrap_or_default() {
                in_flight.remove(&key);
            }
        }
        let woken = broker.timer_added();
        let role = broker.role();
        if role.role != dledger::Role::Leader {
            gate = None;
            cursor = keys::timer_key(0, 0);
            let _ = tokio::time::timeout(Duration::from_millis(50), woken).await;
            continue;
        }
        let (applied, written) = broker.log_positions();
        let &mut (_, ready_at) = match &mut gate {
            Some(g) if g.0 == role.term => g,
            _ => gate.insert((role.term, written)),
        };
        if applied < ready_at {
            let _ = tokio::time::timeout(Duration::from_millis(10), woken).await;
            continue;
        }
        if appends.len() >= APPENDS_IN_FLIGHT {
            if let Some(Ok(done)) = appends.join_next().await {
                for key in done {
                    in_flight.remove(&key);
                }
            }
            continue;
        }
        let now = crate::processor::send::now_ms() as u64;
        if full_scan_at.elapsed() >= FULL_SCAN_EVERY {
            full_scan_at = tokio::time::Instant::now();
            cursor = keys::timer_key(0, 0);
        }
        let (due, next_due) = match due_timers(&broker, now, &in_flight, &mut cursor) {
            Ok(found) => found,
            Err(e) => {
                warn!(error = %e, "reading due timers failed");
                tokio::time::sleep(MAX_IDLE).await;
                continue;
            }
        };
        if due.is_empty() {
            let idle = next_due
                .map(|t| Duration::from_millis(t.saturating_sub(now)))
                .unwrap_or(MAX_IDLE)
                .min(MAX_IDLE);
            tokio::select! {
                _ = tokio::time::sleep(idle) => {}
                _ = woken => {}
                Some(Ok(done)) = appends.join_next(), if !appends.is_empty() => {
                    for key in done {
                        in_flight.remove(&key);
                    }
                }
            }
            continue;
        }
        let (records, keys) = delivered_batch(&broker, due, &mut in_flight);
        if records.is_empty() {
            continue;
        }
        in_flight.extend(keys.iter().copied());
        let broker = broker.clone();
        appends.spawn(async move {
            let n = records.len();
            match broker.append(records).await {
                Ok(_) => debug!(delivered = n, "scheduled messages delivered"),
                Err(e) => {
                    info!(error = %e, messages = n, "delivering scheduled messages failed; will retry")
                }
            }
            // Applied (their keys are gone from the index) or not appended (still there, and
            // proposed again; a repeat whose first append did land is queued nowhere).
            keys
        });
    }
}

type DueTimer = ([u8; 17], u64, u64, u32);

/// Up to [`DELIVER_BATCH`] timers due at `now` that are not in flight: (key, due,
/// position, size); and the due time of the first one not yet due. Scans from `cursor`,
/// and moves it to the first pending key found, or to a second before `now` if that is
/// earlier: a key below that can only come from another leader's clock, and the full scan
/// every [`FULL_SCAN_EVERY`] finds it.
fn due_timers(
    broker: &Broker,
    now: u64,
    in_flight: &HashSet<[u8; 17]>,
    cursor: &mut [u8; 17],
) -> Result<(Vec<DueTimer>, Option<u64>), String> {
    let until = keys::timer_key(u64::MAX, u64::MAX);
    let limit = DELIVER_BATCH + in_flight.len() + 1;
    let found = broker
        .hook_store()
        .scan(cursor.as_slice(), &until, limit)
        .map_err(|e| e.to_string())?;
    let floor = keys::timer_key(now.saturating_sub(1_000), 0);
    *cursor = found
        .first()
        .and_then(|(k, _)| <[u8; 17]>::try_from(k.as_slice()).ok())
        .map_or(floor, |first| first.min(floor));
    let mut due = Vec::new();
    let mut next_due = None;
    for (key, value) in found {
        let Some((due_ms, position)) = keys::parse_timer_key(&key) else {
            continue;
        };
        if due_ms > now {
            next_due = Some(due_ms);
            break;
        }
        let Ok(key) = <[u8; 17]>::try_from(key.as_slice()) else {
            continue;
        };
        if in_flight.contains(&key) || due.len() == DELIVER_BATCH {
            continue;
        }
        let size = value
            .as_slice()
            .try_into()
            .map(u32::from_be_bytes)
            .unwrap_or(0);
        due.push((key, due_ms, position, size));
    }
    Ok((due, next_due))
}

/// The messages to store for `due`, and their keys. A scheduled message that cannot be
/// rebuilt is reported and kept in flight (never delivered as garbage; an operator can
/// see it in its schedule queue).
fn delivered_batch(
    broker: &Broker,
    due: Vec<DueTimer>,
    in_flight: &mut HashSet<[u8; 17]>,
) -> (Vec<Bytes>, Vec<[u8; 17]>) {
    let store_timestamp = crate::processor::send::now_ms();
    let mut records = Vec::with_capacity(due.len());
    let mut keys = Vec::with_capacity(due.len());
    for (key, due_ms, position, size) in due {
        let rebuilt = broker
            .read_commit_log(position, size as usize)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                let (record, _) = MessageRecord::decode(&bytes).map_err(|e| e.to_string())?;
                delivered(&record, position, due_ms, broker, store_timestamp)
            });
        match rebuilt {
            Ok(record) => {
                records.push(record);
                keys.push(key);
            }
            Err(e) => {
                warn!(position, due_ms, error = %e, "a scheduled message cannot be delivered");
                in_flight.insert(key);
            }
        }
    }
    (records, keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> String {
        encode_properties(pairs.iter().copied())
    }

    #[test]
    fn delay_levels_go_to_their_queue_and_clamp() {
        let levels =
            crate::config::parse_delay_levels(crate::config::DEFAULT_DELAY_LEVELS).unwrap();
        let plan_of = |p: &str| plan(p, 1_000, &levels, 3_000);
        assert_eq!(
            plan_of(&props(&[("DELAY", "2")])),
            Ok(Plan::Later {
                topic: SCHEDULE_TOPIC,
                queue_id: 1,
                due_ms: 6_000
            })
        );
        assert_eq!(
            plan_of(&props(&[("DELAY", "99")])),
            Ok(Plan::Later {
                topic: SCHEDULE_TOPIC,
                queue_id: 17,
                due_ms: 1_000 + 7_200_000
            })
        );
        assert_eq!(plan_of(&props(&[("DELAY", "0")])), Ok(Plan::Now));
        assert_eq!(plan_of(&props(&[("DELAY", "-3")])), Ok(Plan::Now));
        assert!(plan_of(&props(&[("DELAY", "x")])).is_err());
        assert_eq!(plan_of(&props(&[("KEYS", "k")])), Ok(Plan::Now));
    }

    #[test]
    fn timers_to_the_millisecond_in_rocketmq_5s_order() {
        let plan_of = |p: &str| plan(p, 10_000, &[1_000], 60_000);
        let later = |due_ms| {
            Ok(Plan::Later {
                topic: TIMER_TOPIC,
                queue_id: 0,
                due_ms,
            })
        };
        assert_eq!(
            plan_of(&props(&[("TIMER_DELIVER_MS", "10007")])),
            later(10_007)
        );
        assert_eq!(plan_of(&props(&[("TIMER_DELAY_MS", "3")])), later(10_003));
        assert_eq!(
            plan_of(&props(&[("TIMER_DELAY_MS", "3"), ("TIMER_DELAY_SEC", "2")])),
            later(12_000)
        );
        // Past or now: at once. Beyond the max: refused.
        assert_eq!(
            plan_of(&props(&[("TIMER_DELIVER_MS", "9000")])),
            Ok(Plan::Now)
        );
        let err = plan_of(&props(&[("TIMER_DELAY_SEC", "61")])).unwrap_err();
        assert!(err.contains("max delay"), "{err}");
        assert!(plan_of(&props(&[("TIMER_DELAY_MS", "soon")])).is_err());
        // A delay level wins over a timer.
        assert_eq!(
            plan(
                &props(&[("DELAY", "1"), ("TIMER_DELAY_MS", "3")]),
                0,
                &[1_000],
                9_000
            ),
            Ok(Plan::Later {
                topic: SCHEDULE_TOPIC,
                queue_id: 0,
                due_ms: 1_000
            })
        );
    }

    #[test]
    fn the_scheduled_copy_names_its_real_queue_and_due_time() {
        let p = scheduled_properties(&props(&[("KEYS", "k"), ("DELAY", "3")]), "T", 2, 77);
        let get = |n| remoting::message::property_value(&p, n).map(str::to_string);
        assert_eq!(get("REAL_TOPIC").as_deref(), Some("T"));
        assert_eq!(get("REAL_QID").as_deref(), Some("2"));
        assert_eq!(get("TIMER_OUT_MS").as_deref(), Some("77"));
        assert_eq!(get("KEYS").as_deref(), Some("k"));
    }
}
