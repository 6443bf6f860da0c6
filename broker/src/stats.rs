//! Message counts for GET_BROKER_RUNTIME_INFO (RocketMQ's `BrokerStats` and the TPS part
//! of `StoreStatsService`): messages stored (counted at apply, so every replica counts
//! the same records) and messages handed to consumers (counted by the pull handler).
//!
//! A sampler ([`run`]) takes both totals once a second and keeps the last
//! [`SAMPLES`] of them, for the 10 s, 1 min and 10 min rates (`putTps`,
//! `getTransferedTps`), and the totals at this node's last two local midnights
//! (`msgPutTotalTodayMorning`, `...YesterdayMorning`; 0 before the node saw one, as
//! RocketMQ starts from 0 at boot). All of it is this node's, in memory, and starts over
//! when the node restarts, as in RocketMQ.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Samples kept: one a second for the longest window (600 s), plus one.
pub const SAMPLES: usize = 601;

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    at_ms: i64,
    put: u64,
    get: u64,
}

#[derive(Default)]
struct Sampled {
    samples: VecDeque<Sample>,
    /// The local day (days since the epoch in local time) of the last sample.
    day: Option<i64>,
    /// Totals at the start of today and of yesterday (put, get).
    today_morning: (u64, u64),
    yesterday_morning: (u64, u64),
}

/// This node's message counts.
#[derive(Default)]
pub struct BrokerStats {
    put_total: AtomicU64,
    get_total: AtomicU64,
    sampled: Mutex<Sampled>,
}

/// What GET_BROKER_RUNTIME_INFO shows of the counts.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsSnapshot {
    pub put_total: u64,
    pub get_total: u64,
    pub put_today_morning: u64,
    pub put_yesterday_morning: u64,
    pub get_today_morning: u64,
    pub get_yesterday_morning: u64,
    /// Rates over the last 10 s, 1 min and 10 min (`None` until that much was sampled).
    pub put_tps: [Option<f64>; 3],
    pub get_tps: [Option<f64>; 3],
}

impl BrokerStats {
    /// `n` messages were stored (applied) on this node.
    pub fn add_put(&self, n: u64) {
        self.put_total.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` messages were handed to a consumer by this node.
    pub fn add_get(&self, n: u64) {
        self.get_total.fetch_add(n, Ordering::Relaxed);
    }

    /// Takes one sample at wall-clock `at_ms` in local day `day`.
    pub fn sample(&self, at_ms: i64, day: i64) {
        let now = Sample {
            at_ms,
            put: self.put_total.load(Ordering::Relaxed),
            get: self.get_total.load(Ordering::Relaxed),
        };
        let mut s = self.sampled.lock().unwrap();
        if s.day.is_some_and(|d| d != day) {
            s.yesterday_morning = s.today_morning;
            s.today_morning = (now.put, now.get);
        }
        s.day = Some(day);
        if s.samples.len() == SAMPLES {
            s.samples.pop_front();
        }
        s.samples.push_back(now);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let s = self.sampled.lock().unwrap();
        let rate = |window: usize, pick: fn(&Sample) -> u64| -> Option<f64> {
            let last = s.samples.back()?;
            let first = s.samples.get(s.samples.len().checked_sub(window + 1)?)?;
            let ms = (last.at_ms - first.at_ms).max(1) as f64;
            Some(pick(last).saturating_sub(pick(first)) as f64 * 1000.0 / ms)
        };
        let windows = |pick: fn(&Sample) -> u64| [10, 60, 600].map(|w| rate(w, pick));
        StatsSnapshot {
            put_total: self.put_total.load(Ordering::Relaxed),
            get_total: self.get_total.load(Ordering::Relaxed),
            put_today_morning: s.today_morning.0,
            put_yesterday_morning: s.yesterday_morning.0,
            get_today_morning: s.today_morning.1,
            get_yesterday_morning: s.yesterday_morning.1,
            put_tps: windows(|x| x.put),
            get_tps: windows(|x| x.get),
        }
    }
}

/// RocketMQ's form of the three rates: each with two decimals, space-separated; a window
/// not yet sampled is left empty, as RocketMQ leaves it.
pub fn tps_text(tps: &[Option<f64>; 3]) -> String {
    tps.iter()
        .map(|t| t.map(|v| format!("{v:.2}")).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Samples `stats` once a second, for as long as the broker runs.
pub async fn run(broker: std::sync::Arc<crate::Broker>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = crate::processor::send::now_ms();
        broker
            .stats()
            .sample(now, crate::retention::local_day(now / 1000));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_the_windows_and_mornings_follow_the_day() {
        let stats = BrokerStats::default();
        for second in 0..=600 {
            stats.add_put(10);
            stats.add_get(if second % 2 == 0 { 2 } else { 0 });
            stats.sample(second * 1000, 7);
        }
        let s = stats.snapshot();
        assert_eq!(s.put_total, 6010);
        assert_eq!(s.put_tps, [Some(10.0), Some(10.0), Some(10.0)]);
        assert_eq!(s.get_tps[1], Some(1.0));
        assert_eq!((s.put_today_morning, s.put_yesterday_morning), (0, 0));
        assert_eq!(tps_text(&s.put_tps), "10.00 10.00 10.00");

        stats.add_put(5);
        stats.sample(601_000, 8);
        stats.add_put(5);
        stats.sample(602_000, 9);
        let s = stats.snapshot();
        assert_eq!(s.put_yesterday_morning, 6015);
        assert_eq!(s.put_today_morning, 6020);
    }

    #[test]
    fn a_window_not_yet_sampled_is_empty() {
        let stats = BrokerStats::default();
        stats.sample(0, 1);
        stats.add_put(3);
        stats.sample(1000, 1);
        let s = stats.snapshot();
        assert_eq!(s.put_tps, [None, None, None]);
        assert_eq!(tps_text(&s.put_tps), "  ");
    }
}
