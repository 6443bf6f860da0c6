//! RocketMQ's stats items for VIEW_BROKER_STATS_DATA (`mqadmin statsAll`, the dashboard,
//! the exporter): per topic (`TOPIC_PUT_NUMS`, `TOPIC_PUT_SIZE`, key the topic), per
//! consumer group and topic (`GROUP_GET_NUMS`, `GROUP_GET_SIZE`, key `topic@group`) and for
//! the whole node (`BROKER_PUT_NUMS`, `BROKER_GET_NUMS`, key the cluster name).
//!
//! Each item keeps a running value and call count, sampled as RocketMQ's `StatsItem` samples
//! them: every 10 s (the last 7 samples make the minute), every 10 min (7 make the hour),
//! every hour (25 make the day). A window's figures are the difference between its first
//! and last sample: `sum`, `tps` (sum per second) and `avgpt` (sum per call). Puts are
//! counted at apply (one call per queue per Raft entry), so every replica counts the same;
//! gets by the pull handler (one call per pull that found messages). This node's, in memory, from its start, as in RocketMQ. At
//! most [`MAX_ITEMS`] items are kept; later keys are not counted.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use remoting::admin_body::{BrokerStatsData, BrokerStatsItem};

pub const TOPIC_PUT_NUMS: &str = "TOPIC_PUT_NUMS";
pub const TOPIC_PUT_SIZE: &str = "TOPIC_PUT_SIZE";
pub const GROUP_GET_NUMS: &str = "GROUP_GET_NUMS";
pub const GROUP_GET_SIZE: &str = "GROUP_GET_SIZE";
pub const BROKER_PUT_NUMS: &str = "BROKER_PUT_NUMS";
pub const BROKER_GET_NUMS: &str = "BROKER_GET_NUMS";

/// The most items kept (each holds at most 39 samples).
pub const MAX_ITEMS: usize = 100_000;

/// The key of the node's own items (`BROKER_*`), asked for by the cluster's name.
const NODE: &str = "";

/// (window, sampling period ms, samples kept) as RocketMQ samples.
const WINDOWS: [(usize, i64, usize); 3] = [(0, 10_000, 7), (1, 600_000, 7), (2, 3_600_000, 25)];

#[derive(Debug, Clone, Copy)]
struct CallSnapshot {
    at_ms: i64,
    value: u64,
    times: u64,
}

#[derive(Default)]
struct Item {
    value: u64,
    times: u64,
    /// Minute, hour and day samples.
    samples: [VecDeque<CallSnapshot>; 3],
}

impl Item {
    fn window(&self, w: usize) -> BrokerStatsItem {
        let list = &self.samples[w];
        let (Some(first), Some(last)) = (list.front(), list.back()) else {
            return BrokerStatsItem::default();
        };
        let sum = last.value - first.value;
        let ms = (last.at_ms - first.at_ms).max(1) as f64;
        let times = last.times - first.times;
        BrokerStatsItem {
            sum: sum as i64,
            tps: sum as f64 * 1000.0 / ms,
            avgpt: if times > 0 {
                sum as f64 / times as f64
            } else {
                0.0
            },
        }
    }
}

#[derive(Default)]
struct Items {
    /// By item name, then key (looked up by `&str`: no allocation on the apply path).
    items: HashMap<&'static str, HashMap<String, Item>>,
    /// Items held, against [`MAX_ITEMS`].
    count: usize,
    /// When each window was last sampled.
    sampled_at: [Option<i64>; 3],
}

/// The stats items of one node.
#[derive(Default)]
pub struct StatsItems(Mutex<Items>);

impl StatsItems {
    fn add(items: &mut Items, name: &'static str, key: &str, value: u64) {
        let full = items.count >= MAX_ITEMS;
        let keys = items.items.entry(name).or_default();
        let item = match keys.get_mut(key) {
            Some(item) => item,
            None if full => return,
            None => {
                items.count += 1;
                keys.entry(key.to_string()).or_default()
            }
        };
        item.value += value;
        item.times += 1;
    }

    /// Puts applied in one Raft entry: messages and bytes per topic.
    pub fn add_puts<'a>(&self, per_topic: impl IntoIterator<Item = (&'a str, u64, u64)>) {
        let mut items = self.0.lock().unwrap();
        let (mut all, mut any) = (0, false);
        for (topic, nums, bytes) in per_topic {
            Self::add(&mut items, TOPIC_PUT_NUMS, topic, nums);
            Self::add(&mut items, TOPIC_PUT_SIZE, topic, bytes);
            all += nums;
            any = true;
        }
        if any {
            Self::add(&mut items, BROKER_PUT_NUMS, NODE, all);
        }
    }

    /// A pull handed `nums` messages of `bytes` bytes of `topic` to `group`.
    pub fn add_get(&self, topic: &str, group: &str, nums: u64, bytes: u64) {
        let key = format!("{topic}@{group}");
        let mut items = self.0.lock().unwrap();
        Self::add(&mut items, GROUP_GET_NUMS, &key, nums);
        Self::add(&mut items, GROUP_GET_SIZE, &key, bytes);
        Self::add(&mut items, BROKER_GET_NUMS, NODE, nums);
    }

    /// Samples the windows whose period has passed (called every second).
    pub fn sample(&self, now_ms: i64) {
        let mut guard = self.0.lock().unwrap();
        let items = &mut *guard;
        for (w, period, kept) in WINDOWS {
            if items.sampled_at[w].is_some_and(|at| now_ms - at < period) {
                continue;
            }
            items.sampled_at[w] = Some(now_ms);
            for item in items.items.values_mut().flat_map(HashMap::values_mut) {
                let list = &mut item.samples[w];
                list.push_back(CallSnapshot {
                    at_ms: now_ms,
                    value: item.value,
                    times: item.times,
                });
                if list.len() > kept {
                    list.pop_front();
                }
            }
        }
    }

    /// VIEW_BROKER_STATS_DATA's answer for item `name` of `key` (`cluster` names the node's
    /// own items); `None` for an item not kept.
    pub fn view(&self, name: &str, key: &str, cluster: &str) -> Option<BrokerStatsData> {
        let name = [
            TOPIC_PUT_NUMS,
            TOPIC_PUT_SIZE,
            GROUP_GET_NUMS,
            GROUP_GET_SIZE,
            BROKER_PUT_NUMS,
            BROKER_GET_NUMS,
        ]
        .into_iter()
        .find(|n| *n == name)?;
        let key = match name {
            BROKER_PUT_NUMS | BROKER_GET_NUMS if key == cluster => NODE,
            BROKER_PUT_NUMS | BROKER_GET_NUMS => return None,
            _ => key,
        };
        let items = self.0.lock().unwrap();
        let item = items.items.get(name)?.get(key)?;
        Some(BrokerStatsData {
            stats_minute: item.window(0),
            stats_hour: item.window(1),
            stats_day: item.window(2),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_rocketmq_sampling() {
        let s = StatsItems::default();
        s.add_puts([("T", 3, 300)]);
        s.sample(0);
        for i in 1..=6 {
            s.add_puts([("T", 10, 1000), ("U", 1, 1)]);
            s.sample(i * 10_000);
        }
        let t = s.view(TOPIC_PUT_NUMS, "T", "c").unwrap();
        assert_eq!(t.stats_minute.sum, 60);
        assert_eq!(t.stats_minute.tps, 1.0);
        assert_eq!(t.stats_minute.avgpt, 10.0);
        // The hour window has one sample (at 0): nothing yet.
        assert_eq!(t.stats_hour.sum, 0);
        assert_eq!(
            s.view(TOPIC_PUT_SIZE, "T", "c").unwrap().stats_minute.sum,
            6000
        );
        // U was first seen after the first sample: its minute starts at its own first one.
        assert_eq!(
            s.view(TOPIC_PUT_NUMS, "U", "c").unwrap().stats_minute.sum,
            5
        );
        let node = s.view(BROKER_PUT_NUMS, "c", "c").unwrap();
        assert_eq!(node.stats_minute.sum, 66);
        assert!(s.view(BROKER_PUT_NUMS, "other", "c").is_none());
        assert!(s.view("NO_SUCH_ITEM", "T", "c").is_none());

        s.add_get("T", "g", 4, 40);
        s.sample(70_000);
        let g = s.view(GROUP_GET_NUMS, "T@g", "c").unwrap();
        assert_eq!(
            (g.stats_minute.sum, g.stats_minute.avgpt),
            (0, 0.0),
            "one sample only"
        );
        s.add_get("T", "g", 2, 20);
        s.sample(80_000);
        assert_eq!(
            s.view(GROUP_GET_NUMS, "T@g", "c").unwrap().stats_minute.sum,
            2
        );
    }
}
