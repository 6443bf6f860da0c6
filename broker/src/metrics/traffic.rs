//! Message traffic counted on the request path: RocketMQ 5's `rocketmq_messages_in_total`,
//! `rocketmq_throughput_in_total` and `rocketmq_message_size` per topic and message type, and
//! `rocketmq_messages_out_total` / `rocketmq_throughput_out_total` per topic and consumer
//! group.
//!
//! Cost: one read lock and one hash lookup per send or pull request (not per message; a
//! batch is counted once), then relaxed atomic adds. A series is allocated the first time
//! its topic (or topic and group) is seen, under the write lock; at most
//! [`MAX_SERIES`] are kept per kind, and traffic of any further one is counted under the
//! topic [`OVERFLOW_TOPIC`], so the scrape's size stays bounded whatever clients send.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use remoting::histogram::AtomicHistogram;

/// Series kept per kind (topics counted in; topic and group pairs counted out).
pub const MAX_SERIES: usize = 10_000;

/// The topic label that counts traffic of series past [`MAX_SERIES`].
pub const OVERFLOW_TOPIC: &str = "__overflow__";

/// `rocketmq_message_size` buckets (bytes), RocketMQ 5's: 1 KiB, 4 KiB, 512 KiB, 1 MiB,
/// 2 MiB, 4 MiB.
pub const MESSAGE_SIZE_BOUNDS: [u64; 6] = [1 << 10, 4 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20];

/// RocketMQ 5's `TopicMessageType`, as its `message_type` label spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Normal = 0,
    Fifo = 1,
    Delay = 2,
    Transaction = 3,
}

impl MessageType {
    pub const ALL: [MessageType; 4] = [
        MessageType::Normal,
        MessageType::Fifo,
        MessageType::Delay,
        MessageType::Transaction,
    ];

    pub fn label(self) -> &'static str {
        match self {
            MessageType::Normal => "normal",
            MessageType::Fifo => "fifo",
            MessageType::Delay => "delay",
            MessageType::Transaction => "transaction",
        }
    }

    /// The type of a send, decided as RocketMQ 5's `TopicMessageType.parseFromMessageProperty`
    /// does: a prepared (half) message, then a delay level or timer, then a sharding key.
    pub fn of_send(prepared: bool, properties: &str) -> MessageType {
        if prepared {
            return MessageType::Transaction;
        }
        let has = |key: &str| {
            properties
                .split('\u{2}')
                .any(|pair| pair.split_once('\u{1}').is_some_and(|(k, _)| k == key))
        };
        if [
            "DELAY",
            "TIMER_DELIVER_MS",
            "TIMER_DELAY_SEC",
            "TIMER_DELAY_MS",
        ]
        .iter()
        .any(|k| has(k))
        {
            MessageType::Delay
        } else if has("__SHARDINGKEY") {
            MessageType::Fifo
        } else {
            MessageType::Normal
        }
    }
}

/// Counters of one message type of one topic.
#[derive(Debug)]
pub struct InCounters {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    /// One record per request: its bytes over its messages, as RocketMQ 5 records it.
    pub size: AtomicHistogram,
}

impl Default for InCounters {
    fn default() -> Self {
        InCounters {
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            size: AtomicHistogram::new(&MESSAGE_SIZE_BOUNDS),
        }
    }
}

/// Counters of one consumer group's pulls from one topic.
#[derive(Debug, Default)]
pub struct OutCounters {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
}

/// Per-topic and per-(topic, group) counters.
#[derive(Debug, Default)]
pub struct Traffic {
    incoming: RwLock<HashMap<String, Arc<[InCounters; 4]>>>,
    /// Topic, then consumer group.
    outgoing: RwLock<HashMap<String, HashMap<String, Arc<OutCounters>>>>,
    /// Series in `outgoing`.
    out_series: std::sync::atomic::AtomicUsize,
}

/// RocketMQ 5 leaves retry and dead-letter topics out of its in and out counts.
pub fn is_retry_or_dlq(topic: &str) -> bool {
    topic.starts_with("%RETRY%") || topic.starts_with("%DLQ%")
}

impl Traffic {
    /// Counts one stored send request: `messages` records of `bytes` in all.
    pub fn record_in(&self, topic: &str, kind: MessageType, messages: usize, bytes: usize) {
        if messages == 0 || is_retry_or_dlq(topic) {
            return;
        }
        let add = |c: &[InCounters; 4]| {
            let c = &c[kind as usize];
            c.messages.fetch_add(messages as u64, Ordering::Relaxed);
            c.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            c.size.record((bytes / messages) as u64);
        };
        {
            let map = self.incoming.read().unwrap();
            let hit = match map.get(topic) {
                None if map.len() >= MAX_SERIES => map.get(OVERFLOW_TOPIC),
                hit => hit,
            };
            if let Some(c) = hit {
                return add(c);
            }
        }
        let mut map = self.incoming.write().unwrap();
        let key = match map.len() < MAX_SERIES || map.contains_key(topic) {
            true => topic,
            false => OVERFLOW_TOPIC,
        };
        add(map.entry(key.to_string()).or_default());
    }

    /// Counts one pull answered with `messages` records of `bytes` in all.
    pub fn record_out(&self, topic: &str, group: &str, messages: usize, bytes: usize) {
        if messages == 0 || is_retry_or_dlq(topic) {
            return;
        }
        let add = |c: &OutCounters| {
            c.messages.fetch_add(messages as u64, Ordering::Relaxed);
            c.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        };
        let full = || self.out_series.load(Ordering::Relaxed) >= MAX_SERIES;
        {
            let map = self.outgoing.read().unwrap();
            let find = |topic: &str| map.get(topic).and_then(|g| g.get(group));
            let hit = match find(topic) {
                None if full() => find(OVERFLOW_TOPIC),
                hit => hit,
            };
            if let Some(c) = hit {
                return add(c);
            }
        }
        let mut map = self.outgoing.write().unwrap();
        let known = map.get(topic).is_some_and(|g| g.contains_key(group));
        let topic = match known || !full() {
            true => topic,
            false => OVERFLOW_TOPIC,
        };
        let groups = map.entry(topic.to_string()).or_default();
        let counters = groups.entry(group.to_string()).or_insert_with(|| {
            self.out_series.fetch_add(1, Ordering::Relaxed);
            Arc::default()
        });
        add(counters);
    }

    /// A copy of the incoming series, for a scrape.
    pub fn incoming(&self) -> Vec<(String, Arc<[InCounters; 4]>)> {
        let map = self.incoming.read().unwrap();
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// A copy of the outgoing series, for a scrape.
    pub fn outgoing(&self) -> Vec<((String, String), Arc<OutCounters>)> {
        let map = self.outgoing.read().unwrap();
        map.iter()
            .flat_map(|(topic, groups)| {
                groups
                    .iter()
                    .map(|(group, c)| ((topic.clone(), group.clone()), c.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> String {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}\u{1}{v}\u{2}"))
            .collect()
    }

    #[test]
    fn message_type_follows_rocketmq_5s_order() {
        assert_eq!(MessageType::of_send(false, ""), MessageType::Normal);
        assert_eq!(
            MessageType::of_send(true, &props(&[("DELAY", "3")])),
            MessageType::Transaction
        );
        assert_eq!(
            MessageType::of_send(false, &props(&[("KEYS", "k"), ("DELAY", "3")])),
            MessageType::Delay
        );
        assert_eq!(
            MessageType::of_send(false, &props(&[("TIMER_DELAY_MS", "10")])),
            MessageType::Delay
        );
        let fifo = props(&[("__SHARDINGKEY", "a"), ("TAGS", "t")]);
        assert_eq!(MessageType::of_send(false, &fifo), MessageType::Fifo);
        // A value that merely contains a key's name is not that key.
        assert_eq!(
            MessageType::of_send(false, &props(&[("KEYS", "DELAY")])),
            MessageType::Normal
        );
    }

    #[test]
    fn requests_add_up_and_retry_topics_are_left_out() {
        let t = Traffic::default();
        t.record_in("A", MessageType::Normal, 1, 300);
        t.record_in("A", MessageType::Normal, 4, 8000);
        t.record_in("A", MessageType::Fifo, 1, 100);
        t.record_in("%RETRY%g", MessageType::Normal, 1, 100);
        t.record_out("A", "g", 5, 8300);
        t.record_out("A", "g", 0, 0);
        t.record_out("%DLQ%g", "g", 1, 1);
        let incoming = t.incoming();
        assert_eq!(incoming.len(), 1);
        let normal = &incoming[0].1[MessageType::Normal as usize];
        assert_eq!(normal.messages.load(Ordering::Relaxed), 5);
        assert_eq!(normal.bytes.load(Ordering::Relaxed), 8300);
        let size = normal.size.snapshot();
        assert_eq!(size.counts[..2], [1, 1], "300 B, then 2000 B per message");
        let outgoing = t.outgoing();
        assert_eq!(outgoing.len(), 1);
        assert_eq!(outgoing[0].1.messages.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn series_past_the_bound_are_counted_as_overflow() {
        let t = Traffic::default();
        for i in 0..MAX_SERIES + 3 {
            let name = format!("T{i}");
            t.record_in(&name, MessageType::Normal, 1, 10);
            t.record_out(&name, "g", 1, 10);
        }
        t.record_in("T0", MessageType::Normal, 1, 10);
        let incoming = t.incoming();
        assert_eq!(incoming.len(), MAX_SERIES + 1);
        let count = |topic: &str| {
            let (_, c) = incoming.iter().find(|(t, _)| t == topic).unwrap();
            c[0].messages.load(Ordering::Relaxed)
        };
        assert_eq!(count(OVERFLOW_TOPIC), 3);
        assert_eq!(count("T0"), 2, "a known topic keeps its own series");
        let outgoing = t.outgoing();
        assert_eq!(outgoing.len(), MAX_SERIES + 1);
        let (_, overflow) = outgoing
            .iter()
            .find(|((t, _), _)| t == OVERFLOW_TOPIC)
            .unwrap();
        assert_eq!(overflow.messages.load(Ordering::Relaxed), 3);
    }
}
