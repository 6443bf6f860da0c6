//! Send-side fault avoidance (RocketMQ's `MQFaultStrategy` and
//! `LatencyFaultToleranceImpl`) and the queue choice that uses it.
//!
//! After each send the producer records the group's latency. A latency at or above
//! `latency_max_ms[i]` makes the group unavailable for `not_available_duration_ms[i]`;
//! a failed send counts as the isolation latency. Queue choice is round-robin over
//! the topic's writable queues, skipping queues of unavailable groups and, on a retry,
//! the group that just failed; when every group is unavailable it still picks one (the
//! least-recently-failed), because a send to a maybe-recovered group beats no send.
//!
//! Only whole-group failures are recorded: a follower's "not the leader" answer is
//! followed within the group and is not a fault of the group.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::message::MessageQueue;

/// How latency maps to time out of rotation.
#[derive(Debug, Clone)]
pub struct FaultConfig {
    /// RocketMQ's `sendLatencyFaultEnable`; on by default here (off in RocketMQ).
    pub send_latency_fault_enable: bool,
    /// Latency thresholds, ascending (RocketMQ's `latencyMax`).
    pub latency_max_ms: Vec<u64>,
    /// Time out of rotation for each threshold (RocketMQ's `notAvailableDuration`).
    pub not_available_duration_ms: Vec<u64>,
    /// The latency a failed send counts as. RocketMQ uses 30 s, which puts a group
    /// out for ten minutes; a Raft group elects a new leader within seconds, so the
    /// default here is 1 s: out for 60 s, long enough to stop hammering a group that
    /// lost its quorum, short enough that a recovered group is soon back.
    pub isolation_latency_ms: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            send_latency_fault_enable: true,
            latency_max_ms: vec![50, 100, 550, 1000, 2000, 3000, 15000],
            not_available_duration_ms: vec![0, 0, 30_000, 60_000, 120_000, 180_000, 600_000],
            isolation_latency_ms: 1000,
        }
    }
}

impl FaultConfig {
    /// RocketMQ's `computeNotAvailableDuration`.
    pub fn not_available_duration(&self, latency_ms: u64) -> Duration {
        for (max, duration) in self
            .latency_max_ms
            .iter()
            .zip(&self.not_available_duration_ms)
            .rev()
        {
            if latency_ms >= *max {
                return Duration::from_millis(*duration);
            }
        }
        Duration::ZERO
    }
}

#[derive(Debug, Clone, Copy)]
struct FaultItem {
    latency_ms: u64,
    available_at: Instant,
}

/// Which broker groups are out of rotation, and until when.
#[derive(Debug, Default)]
pub struct LatencyFaultTolerance {
    config: FaultConfig,
    items: Mutex<HashMap<String, FaultItem>>,
}

impl LatencyFaultTolerance {
    pub fn new(config: FaultConfig) -> Self {
        LatencyFaultTolerance {
            config,
            items: Mutex::new(HashMap::new()),
        }
    }

    /// Records one send's outcome at `now`: its latency, or a failure.
    pub fn update(&self, broker_name: &str, latency_ms: u64, failed: bool, now: Instant) {
        if !self.config.send_latency_fault_enable {
            return;
        }
        let counted = if failed {
            self.config.isolation_latency_ms.max(latency_ms)
        } else {
            latency_ms
        };
        let item = FaultItem {
            latency_ms: counted,
            available_at: now + self.config.not_available_duration(counted),
        };
        // Every send lands here: a group seen before is updated in place, without
        // allocating its name again.
        let mut items = self.items.lock().unwrap();
        match items.get_mut(broker_name) {
            Some(slot) => *slot = item,
            None => {
                items.insert(broker_name.to_string(), item);
            }
        }
    }

    pub fn is_available(&self, broker_name: &str, now: Instant) -> bool {
        match self.items.lock().unwrap().get(broker_name) {
            Some(item) => now >= item.available_at,
            None => true,
        }
    }

    /// Chooses a queue: round-robin from `counter`, skipping unavailable groups and
    /// `last_failed`. Returns `None` only when `queues` is empty.
    pub fn select<'a>(
        &self,
        queues: &'a [MessageQueue],
        counter: usize,
        last_failed: Option<&str>,
        now: Instant,
    ) -> Option<&'a MessageQueue> {
        if queues.is_empty() {
            return None;
        }
        let n = queues.len();
        let rotation = (0..n).map(|i| &queues[(counter + i) % n]);
        if !self.config.send_latency_fault_enable {
            return rotation
                .clone()
                .find(|q| Some(q.broker_name.as_str()) != last_failed)
                .or(Some(&queues[counter % n]));
        }
        if let Some(q) = rotation.clone().find(|q| {
            Some(q.broker_name.as_str()) != last_failed && self.is_available(&q.broker_name, now)
        }) {
            return Some(q);
        }
        // Everything is out of rotation (or is the group that just failed): take the
        // group that comes back soonest, preferring one other than `last_failed`.
        let items = self.items.lock().unwrap();
        let rank = |q: &MessageQueue| {
            let item = items.get(&q.broker_name);
            (
                Some(q.broker_name.as_str()) == last_failed,
                item.map(|i| i.available_at),
                item.map(|i| i.latency_ms),
            )
        };
        let best = rotation.clone().map(rank).min()?;
        rotation.clone().find(|q| rank(q) == best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues() -> Vec<MessageQueue> {
        let mut out = Vec::new();
        for b in ["broker-a", "broker-b"] {
            for i in 0..2 {
                out.push(MessageQueue::new("T", b, i));
            }
        }
        out
    }

    /// Proves RocketMQ's latency table: below 550 ms a group stays in rotation, at
    /// 550 ms it is out for 30 s, at 15 s and above for 10 minutes.
    #[test]
    fn latency_maps_to_rocketmq_durations() {
        let c = FaultConfig::default();
        assert_eq!(c.not_available_duration(0), Duration::ZERO);
        assert_eq!(c.not_available_duration(549), Duration::ZERO);
        assert_eq!(c.not_available_duration(550), Duration::from_secs(30));
        assert_eq!(c.not_available_duration(2500), Duration::from_secs(120));
        assert_eq!(c.not_available_duration(30_000), Duration::from_secs(600));
        assert_eq!(
            c.not_available_duration(c.isolation_latency_ms),
            Duration::from_secs(60)
        );
    }

    /// Proves the round-robin walks every queue of every group in order while all are
    /// healthy.
    #[test]
    fn round_robin_over_all_writable_queues() {
        let f = LatencyFaultTolerance::new(FaultConfig::default());
        let qs = queues();
        let now = Instant::now();
        let picked: Vec<_> = (0..8)
            .map(|c| f.select(&qs, c, None, now).unwrap().clone())
            .collect();
        assert_eq!(&picked[..4], &qs[..]);
        assert_eq!(&picked[4..], &qs[..]);
        assert!(f.select(&[], 0, None, now).is_none());
    }

    /// Proves a failed group is skipped until its duration passes, and then used again;
    /// a slow-but-ok send (100 ms) keeps the group in rotation.
    #[test]
    fn failed_group_is_avoided_for_a_while() {
        let f = LatencyFaultTolerance::new(FaultConfig::default());
        let qs = queues();
        let t0 = Instant::now();
        f.update("broker-a", 100, false, t0);
        assert!(f.is_available("broker-a", t0));
        f.update("broker-a", 20, true, t0);
        for c in 0..8 {
            assert_eq!(f.select(&qs, c, None, t0).unwrap().broker_name, "broker-b");
        }
        let later = t0 + Duration::from_secs(61);
        assert!(f.is_available("broker-a", later));
        assert_eq!(
            f.select(&qs, 0, None, later).unwrap().broker_name,
            "broker-a"
        );
        // A success later puts it straight back.
        f.update("broker-a", 10, true, t0);
        f.update("broker-a", 10, false, t0);
        assert_eq!(f.select(&qs, 0, None, t0).unwrap().broker_name, "broker-a");
    }

    /// Proves a retry avoids the group that just failed even when fault avoidance has
    /// not marked it, and that with every group out the soonest-back one is chosen.
    #[test]
    fn retry_skips_last_failed_and_all_down_still_picks_one() {
        let f = LatencyFaultTolerance::new(FaultConfig::default());
        let qs = queues();
        let t0 = Instant::now();
        assert_eq!(
            f.select(&qs, 0, Some("broker-a"), t0).unwrap().broker_name,
            "broker-b"
        );
        f.update("broker-a", 20_000, false, t0); // out 10 min
        f.update("broker-b", 600, false, t0); // out 30 s
        assert_eq!(f.select(&qs, 0, None, t0).unwrap().broker_name, "broker-b");
        // broker-b just failed: broker-a is chosen although it is out longer.
        assert_eq!(
            f.select(&qs, 0, Some("broker-b"), t0).unwrap().broker_name,
            "broker-a"
        );
        // Disabled: plain round-robin, still skipping the last failed group.
        let off = LatencyFaultTolerance::new(FaultConfig {
            send_latency_fault_enable: false,
            ..Default::default()
        });
        off.update("broker-a", 20_000, true, t0);
        assert_eq!(
            off.select(&qs, 0, None, t0).unwrap().broker_name,
            "broker-a"
        );
        assert_eq!(
            off.select(&qs, 0, Some("broker-a"), t0)
                .unwrap()
                .broker_name,
            "broker-b"
        );
    }
}
