//! A push consumer's rates by topic, as RocketMQ's client reports them in its running
//! info (GET_CONSUMER_RUNNING_INFO, `mqadmin consumerStatus`): messages pulled and pull
//! time, listener calls and their time, messages consumed and failed. Rates are over the
//! last whole minute (over the time since the first count until a minute has passed);
//! failures are also summed over the last hour.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use remoting::admin_body::ConsumeStatus;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;

/// What one topic counted in one minute.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    /// Pulls that found messages, the messages they brought and their time (ms).
    pulls: u64,
    pulled: u64,
    pull_ms: u64,
    /// Listener calls and their time (ms).
    calls: u64,
    call_ms: u64,
    ok: u64,
    failed: u64,
}

#[derive(Debug)]
struct TopicStats {
    minute_start: i64,
    current: Counts,
    /// The last whole minute; none before a minute has passed.
    previous: Option<Counts>,
    /// Failures of each whole minute within the last hour, with the minute's start.
    failed_minutes: VecDeque<(i64, u64)>,
}

impl TopicStats {
    fn new(now: i64) -> Self {
        TopicStats {
            minute_start: now,
            current: Counts::default(),
            previous: None,
            failed_minutes: VecDeque::new(),
        }
    }

    /// Closes the current minute once it is over (a minute with nothing counted in
    /// between reads as idle).
    fn roll(&mut self, now: i64) {
        let elapsed = now - self.minute_start;
        if elapsed >= MINUTE_MS {
            let closed = self.current;
            self.previous = Some(if elapsed >= 2 * MINUTE_MS {
                Counts::default()
            } else {
                closed
            });
            self.failed_minutes
                .push_back((self.minute_start, closed.failed));
            self.current = Counts::default();
            self.minute_start = now - elapsed % MINUTE_MS;
        }
        while self
            .failed_minutes
            .front()
            .is_some_and(|(start, _)| *start <= now - HOUR_MS)
        {
            self.failed_minutes.pop_front();
        }
    }

    fn status(&mut self, now: i64) -> ConsumeStatus {
        self.roll(now);
        let (c, seconds) = match self.previous {
            Some(previous) => (previous, 60.0),
            None => (
                self.current,
                ((now - self.minute_start) as f64 / 1000.0).max(1.0),
            ),
        };
        let average = |total: u64, n: u64| if n == 0 { 0.0 } else { total as f64 / n as f64 };
        ConsumeStatus {
            pull_rt: average(c.pull_ms, c.pulls),
            pull_tps: c.pulled as f64 / seconds,
            consume_rt: average(c.call_ms, c.calls),
            consume_ok_tps: c.ok as f64 / seconds,
            consume_failed_tps: c.failed as f64 / seconds,
            consume_failed_msgs: (self.current.failed
                + self.failed_minutes.iter().map(|(_, f)| f).sum::<u64>())
                as i64,
        }
    }
}

/// Every topic's counts; one short lock per pull and per listener call.
#[derive(Debug, Default)]
pub(crate) struct ConsumeStatsTable {
    topics: Mutex<HashMap<String, TopicStats>>,
}

impl ConsumeStatsTable {
    fn count(&self, topic: &str, now: i64, add: impl FnOnce(&mut Counts)) {
        let mut topics = self.topics.lock().unwrap();
        let stats = match topics.get_mut(topic) {
            Some(stats) => stats,
            None => topics
                .entry(topic.to_string())
                .or_insert_with(|| TopicStats::new(now)),
        };
        stats.roll(now);
        add(&mut stats.current);
    }

    /// A pull of `topic` that brought `messages` in `ms`.
    pub fn pulled(&self, topic: &str, messages: usize, ms: u64, now: i64) {
        self.count(topic, now, |c| {
            c.pulls += 1;
            c.pulled += messages as u64;
            c.pull_ms += ms;
        });
    }

    /// A listener call on `messages` of `topic` that took `ms` and succeeded or not.
    pub fn consumed(&self, topic: &str, messages: usize, ok: bool, ms: u64, now: i64) {
        self.count(topic, now, |c| {
            c.calls += 1;
            c.call_ms += ms;
            if ok {
                c.ok += messages as u64;
            } else {
                c.failed += messages as u64;
            }
        });
    }

    /// Each topic's rates now.
    pub fn status_table(&self, now: i64) -> std::collections::BTreeMap<String, ConsumeStatus> {
        self.topics
            .lock()
            .unwrap()
            .iter_mut()
            .map(|(topic, stats)| (topic.clone(), stats.status(now)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_cover_the_last_whole_minute_and_failures_the_last_hour() {
        let t = ConsumeStatsTable::default();
        let start = 1_000_000;
        // First 10 s: 100 messages pulled in 4 pulls of 5 ms, 90 consumed, 10 failed.
        for _ in 0..4 {
            t.pulled("T", 25, 5, start);
        }
        t.consumed("T", 90, true, 30, start + 1_000);
        t.consumed("T", 10, false, 10, start + 2_000);
        let s = t.status_table(start + 10_000)["T"];
        assert_eq!(s.pull_rt, 5.0);
        assert_eq!(s.pull_tps, 10.0);
        assert_eq!(s.consume_rt, 20.0);
        assert_eq!((s.consume_ok_tps, s.consume_failed_tps), (9.0, 1.0));
        assert_eq!(s.consume_failed_msgs, 10);

        // In the next minute, the first one is the rate; its failures still count.
        t.consumed("T", 600, true, 60, start + 70_000);
        let s = t.status_table(start + 80_000)["T"];
        assert_eq!(s.consume_ok_tps, 90.0 / 60.0);
        assert_eq!(s.consume_failed_msgs, 10);

        // Two idle minutes: the last whole minute was empty.
        let s = t.status_table(start + 200_000)["T"];
        assert_eq!(
            (s.consume_ok_tps, s.pull_tps, s.consume_rt),
            (0.0, 0.0, 0.0)
        );

        // An hour on, the old failures are gone.
        let s = t.status_table(start + HOUR_MS + 130_000)["T"];
        assert_eq!(s.consume_failed_msgs, 0);
    }
}
