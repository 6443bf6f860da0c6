//! Counted where they happen, on the node that decides them (the leader): RocketMQ 5's
//! `rocketmq_send_to_dlq_messages_total` (a consumer's give-back, or a client's own re-send,
//! that went to the dead-letter topic), `rocketmq_commit_messages_total` and
//! `rocketmq_rollback_messages_total` (END_TRANSACTION), `rocketmq_finish_message_latency`
//! (a committed half's age, in seconds) and `rocketmq_rpc_latency` (every request answered,
//! from its arrival to its answer, in milliseconds).
//!
//! Each family keeps at most [`MAX_SERIES`] label sets; events of any further one are
//! counted under [`OVERFLOW_TOPIC`] (or, for requests, the code `overflow`), so what
//! clients send cannot grow a scrape without bound. An RPC costs one read-locked lookup
//! of three small integers and a histogram record; the rest are rare.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use remoting::histogram::AtomicHistogram;

use super::traffic::{MAX_SERIES, OVERFLOW_TOPIC};

/// `rocketmq_rpc_latency` buckets (ms), RocketMQ 5's: 1, 3, 5, 7, 10, 100 ms, 1, 2, 3 s.
pub const RPC_LATENCY_BOUNDS_MS: [u64; 9] = [1, 3, 5, 7, 10, 100, 1_000, 2_000, 3_000];

/// `rocketmq_finish_message_latency` buckets (s), RocketMQ 5's: 5 s, 1 min, 10 min, 1 h,
/// 12 h, 24 h.
pub const FINISH_LATENCY_BOUNDS_S: [u64; 6] = [5, 60, 600, 3_600, 43_200, 86_400];

/// The request code that counts requests past [`MAX_SERIES`] label sets.
pub const OVERFLOW_CODE: i32 = i32::MIN;

/// What an RPC's series is told apart by: RocketMQ 5's `request_code`, `response_code`,
/// `is_long_polling` and `result` (`oneway` or `success`: an answer handed to the
/// connection; a write that fails later closes the connection, and is not counted apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rpc {
    pub request_code: i32,
    pub response_code: i32,
    pub long_polling: bool,
    pub oneway: bool,
}

/// A bounded map of label sets to shared values.
#[derive(Debug)]
pub struct Series<K, V> {
    map: RwLock<HashMap<K, Arc<V>>>,
    make: fn() -> V,
}

impl<K: Hash + Eq + Clone, V> Series<K, V> {
    fn new(make: fn() -> V) -> Self {
        Series {
            map: RwLock::new(HashMap::new()),
            make,
        }
    }

    /// Runs `f` on `key`'s value, made the first time; past [`MAX_SERIES`] keys, on
    /// `overflow`'s.
    pub fn with(&self, key: K, overflow: impl FnOnce() -> K, f: impl FnOnce(&V)) {
        {
            let map = self.map.read().unwrap();
            if let Some(v) = map.get(&key) {
                return f(v);
            }
        }
        let mut map = self.map.write().unwrap();
        let key = if map.len() < MAX_SERIES || map.contains_key(&key) {
            key
        } else {
            overflow()
        };
        f(map.entry(key).or_insert_with(|| Arc::new((self.make)())));
    }

    /// A copy of every series, for a scrape.
    pub fn snapshot(&self) -> Vec<(K, Arc<V>)> {
        let map = self.map.read().unwrap();
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

fn counter() -> AtomicU64 {
    AtomicU64::new(0)
}

fn rpc_histogram() -> AtomicHistogram {
    AtomicHistogram::new(&RPC_LATENCY_BOUNDS_MS)
}

fn finish_histogram() -> AtomicHistogram {
    AtomicHistogram::new(&FINISH_LATENCY_BOUNDS_S)
}

/// The event families.
#[derive(Debug)]
pub struct Events {
    /// By (consumer group, original topic).
    pub dead_letters: Series<(String, String), AtomicU64>,
    /// By real topic.
    pub commits: Series<String, AtomicU64>,
    pub rollbacks: Series<String, AtomicU64>,
    pub finish_latency: Series<String, AtomicHistogram>,
    pub rpc: Series<Rpc, AtomicHistogram>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            dead_letters: Series::new(counter),
            commits: Series::new(counter),
            rollbacks: Series::new(counter),
            finish_latency: Series::new(finish_histogram),
            rpc: Series::new(rpc_histogram),
        }
    }
}

fn add_one(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Events {
    /// A message of `topic` that `group` could not consume went to `%DLQ%<group>`.
    pub fn dead_letter(&self, group: &str, topic: &str) {
        let overflow = || (OVERFLOW_TOPIC.to_string(), OVERFLOW_TOPIC.to_string());
        self.dead_letters
            .with((group.to_string(), topic.to_string()), overflow, add_one);
    }

    /// A half message of `topic`, born at `born_ms`, was committed at `now_ms`.
    pub fn committed(&self, topic: &str, born_ms: i64, now_ms: i64) {
        let overflow = || OVERFLOW_TOPIC.to_string();
        self.commits.with(topic.to_string(), overflow, add_one);
        let age_s = (now_ms - born_ms).max(0) as u64 / 1000;
        self.finish_latency
            .with(topic.to_string(), overflow, |h| h.record(age_s));
    }

    /// A half message of `topic` was rolled back.
    pub fn rolled_back(&self, topic: &str) {
        let overflow = || OVERFLOW_TOPIC.to_string();
        self.rollbacks.with(topic.to_string(), overflow, add_one);
    }

    /// A request answered `ms` after it arrived.
    pub fn rpc(&self, rpc: Rpc, ms: u64) {
        let overflow = || Rpc {
            request_code: OVERFLOW_CODE,
            response_code: OVERFLOW_CODE,
            long_polling: false,
            oneway: false,
        };
        self.rpc.with(rpc, overflow, |h| h.record(ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_add_up_and_series_are_bounded() {
        let e = Events::default();
        e.dead_letter("g", "T");
        e.dead_letter("g", "T");
        e.committed("T", 1_000, 8_000);
        e.rolled_back("T");
        let dlq = e.dead_letters.snapshot();
        assert_eq!(dlq.len(), 1);
        assert_eq!(dlq[0].1.load(Ordering::Relaxed), 2);
        let latency = e.finish_latency.snapshot();
        let snapshot = latency[0].1.snapshot();
        assert_eq!((snapshot.count(), snapshot.sum), (1, 7));
        for code in 0..(MAX_SERIES as i32 + 5) {
            let rpc = Rpc {
                request_code: code,
                response_code: 0,
                long_polling: false,
                oneway: false,
            };
            e.rpc(rpc, 2);
        }
        let rpcs = e.rpc.snapshot();
        assert_eq!(rpcs.len(), MAX_SERIES + 1);
        let overflow = rpcs
            .iter()
            .find(|(k, _)| k.request_code == OVERFLOW_CODE)
            .unwrap();
        assert_eq!(overflow.1.snapshot().count(), 5);
    }
}
