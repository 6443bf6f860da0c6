//! Message counts for GET_BROKER_RUNTIME_INFO (RocketMQ's `BrokerStats` and
//! `StoreStatsService`): messages and bytes stored (counted at apply, so every replica
//! counts the same records), sends' latencies (from request to answer on the leader, which
//! covers the quorum commit), pulls that found or missed messages, messages handed to
//! consumers, and the longest read of a pull (the hold of a long poll left out).
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

/// RocketMQ's send-latency buckets (`PUT_MESSAGE_ENTIRE_TIME_MAX_DESC`) and their upper
/// bounds (ms, inclusive); the last is open.
pub const PUT_LATENCY_BUCKETS: [(&str, u64); 13] = [
    ("[<=0ms]", 0),
    ("[0~10ms]", 10),
    ("[10~50ms]", 50),
    ("[50~100ms]", 100),
    ("[100~200ms]", 200),
    ("[200~500ms]", 500),
    ("[500ms~1s]", 1_000),
    ("[1~2s]", 2_000),
    ("[2~3s]", 3_000),
    ("[3~4s]", 4_000),
    ("[4~5s]", 5_000),
    ("[5~10s]", 10_000),
    ("[10s~]", u64::MAX),
];

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    at_ms: i64,
    put: u64,
    get: u64,
    found: u64,
    miss: u64,
}

#[derive(Default)]
struct Sampled {
    samples: VecDeque<Sample>,
    /// The local day (days since the epoch in local time) of the last sample.
    day: Option<i64>,
    /// Totals at the start of today and of yesterday (put, get).
    today_morning: (u64, u64),
    yesterday_morning: (u64, u64),
    /// The minute (since the epoch) of the last sample, and the send latencies of the last
    /// whole minute (RocketMQ shows the last interval's).
    minute: Option<i64>,
    last_minute_latencies: [u64; 13],
}

/// This node's message counts.
#[derive(Default)]
pub struct BrokerStats {
    put_total: AtomicU64,
    put_bytes: AtomicU64,
    get_total: AtomicU64,
    /// Pulls that found messages, and pulls that did not.
    get_found: AtomicU64,
    get_miss: AtomicU64,
    /// Longest send (request to answer) and longest pull read, in ms.
    put_time_max_ms: AtomicU64,
    get_time_max_ms: AtomicU64,
    /// Sends of this minute by latency bucket.
    latencies: [AtomicU64; 13],
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
    pub put_bytes: u64,
    pub put_time_max_ms: u64,
    pub get_time_max_ms: u64,
    /// Sends of the last whole minute by [`PUT_LATENCY_BUCKETS`].
    pub put_latencies: [u64; 13],
    /// Rates over the last 10 s, 1 min and 10 min (`None` until that much was sampled):
    /// messages stored, messages handed out, pulls that found, missed, in all.
    pub put_tps: [Option<f64>; 3],
    pub get_tps: [Option<f64>; 3],
    pub found_tps: [Option<f64>; 3],
    pub miss_tps: [Option<f64>; 3],
    pub pull_tps: [Option<f64>; 3],
}

impl BrokerStats {
    /// `n` messages of `bytes` bytes were stored (applied) on this node.
    pub fn add_put(&self, n: u64, bytes: u64) {
        self.put_total.fetch_add(n, Ordering::Relaxed);
        self.put_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A send was answered SUCCESS `took` after it arrived.
    pub fn add_put_latency(&self, took: Duration) {
        let ms = took.as_millis() as u64;
        self.put_time_max_ms.fetch_max(ms, Ordering::Relaxed);
        let bucket = PUT_LATENCY_BUCKETS
            .iter()
            .position(|(_, upper)| ms <= *upper)
            .unwrap_or(12);
        self.latencies[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// A pull handed `n` messages (0: it found none) to a consumer; its read took `took`.
    pub fn add_get(&self, n: u64, took: Duration) {
        self.get_total.fetch_add(n, Ordering::Relaxed);
        let pulls = if n > 0 {
            &self.get_found
        } else {
            &self.get_miss
        };
        pulls.fetch_add(1, Ordering::Relaxed);
        self.get_time_max_ms
            .fetch_max(took.as_millis() as u64, Ordering::Relaxed);
    }

    /// Takes one sample at wall-clock `at_ms` in local day `day`.
    pub fn sample(&self, at_ms: i64, day: i64) {
        let now = Sample {
            at_ms,
            put: self.put_total.load(Ordering::Relaxed),
            get: self.get_total.load(Ordering::Relaxed),
            found: self.get_found.load(Ordering::Relaxed),
            miss: self.get_miss.load(Ordering::Relaxed),
        };
        let mut s = self.sampled.lock().unwrap();
        let minute = at_ms.div_euclid(60_000);
        if s.minute.is_some_and(|m| m != minute) {
            s.last_minute_latencies = self
                .latencies
                .each_ref()
                .map(|bucket| bucket.swap(0, Ordering::Relaxed));
        }
        s.minute = Some(minute);
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
            put_bytes: self.put_bytes.load(Ordering::Relaxed),
            put_time_max_ms: self.put_time_max_ms.load(Ordering::Relaxed),
            get_time_max_ms: self.get_time_max_ms.load(Ordering::Relaxed),
            put_latencies: s.last_minute_latencies,
            put_tps: windows(|x| x.put),
            get_tps: windows(|x| x.get),
            found_tps: windows(|x| x.found),
            miss_tps: windows(|x| x.miss),
            pull_tps: windows(|x| x.found + x.miss),
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

/// RocketMQ's `putMessageDistributeTime`: `[<=0ms]:N [0~10ms]:N ... ` (a space after each).
pub fn latencies_text(latencies: &[u64; 13]) -> String {
    PUT_LATENCY_BUCKETS
        .iter()
        .zip(latencies)
        .map(|((name, _), n)| format!("{name}:{n} "))
        .collect()
}

/// Samples the counts and the stats items (`crate::stats_items`) once a second, for as
/// long as the broker runs.
pub async fn run(broker: std::sync::Arc<crate::Broker>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = crate::processor::send::now_ms();
        broker
            .stats()
            .sample(now, crate::retention::local_day(now / 1000));
        broker.stats_items().sample(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_the_windows_and_mornings_follow_the_day() {
        let stats = BrokerStats::default();
        for second in 0..=600 {
            stats.add_put(10, 100);
            stats.add_get(if second % 2 == 0 { 2 } else { 0 }, Duration::ZERO);
            stats.sample(second * 1000, 7);
        }
        let s = stats.snapshot();
        assert_eq!(s.put_total, 6010);
        assert_eq!(s.put_tps, [Some(10.0), Some(10.0), Some(10.0)]);
        assert_eq!(s.get_tps[1], Some(1.0));
        assert_eq!((s.put_today_morning, s.put_yesterday_morning), (0, 0));
        assert_eq!(tps_text(&s.put_tps), "10.00 10.00 10.00");
        assert_eq!(s.found_tps[1], Some(0.5));
        assert_eq!(s.pull_tps[1], Some(1.0));
        assert_eq!(s.put_bytes, 60_100);

        stats.add_put(5, 0);
        stats.sample(601_000, 8);
        stats.add_put(5, 0);
        stats.sample(602_000, 9);
        let s = stats.snapshot();
        assert_eq!(s.put_yesterday_morning, 6015);
        assert_eq!(s.put_today_morning, 6020);
    }

    #[test]
    fn a_window_not_yet_sampled_is_empty() {
        let stats = BrokerStats::default();
        stats.sample(0, 1);
        stats.add_put(3, 0);
        stats.sample(1000, 1);
        let s = stats.snapshot();
        assert_eq!(s.put_tps, [None, None, None]);
        assert_eq!(tps_text(&s.put_tps), "  ");
    }

    /// Sends land in RocketMQ's buckets, shown for the last whole minute.
    #[test]
    fn send_latencies_fill_the_last_minutes_buckets() {
        let stats = BrokerStats::default();
        stats.sample(0, 1);
        for ms in [0, 7, 10, 11, 450, 20_000] {
            stats.add_put_latency(Duration::from_millis(ms));
        }
        assert_eq!(
            stats.snapshot().put_latencies,
            [0; 13],
            "this minute is not over"
        );
        stats.sample(60_000, 1);
        let s = stats.snapshot();
        assert_eq!(s.put_latencies, [1, 2, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(s.put_time_max_ms, 20_000);
        assert!(latencies_text(&s.put_latencies).starts_with("[<=0ms]:1 [0~10ms]:2 [10~50ms]:1 "));
    }
}
