//! The broker config keys an admin may change while the group runs (UPDATE_BROKER_CONFIG,
//! `mqadmin updateBrokerConfig`), and their applied values.
//!
//! A change goes through the group's Raft log (`BrokerCommand::UpdateBrokerConfig`) and is
//! applied by every replica, stored with the rest of the hook's state (keys `c/<key>`), so
//! the whole group behaves alike, a new leader keeps it, and it outlives restarts: an
//! applied value wins over the node's config file until changed again. Every other key is
//! refused with a reason (read at start-up only, or unknown): never a silent no-op.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU8, Ordering};

use remoting::route::perm;

/// `brokerPermission` (RocketMQ's key): 6 read and write, 4 read only (sends refused), 2
/// write only (pulls refused). A group that may not be written registers its topics
/// without write permission, so producers go elsewhere.
pub const BROKER_PERMISSION: &str = "brokerPermission";
/// `autoCreateTopicEnable`.
pub const AUTO_CREATE_TOPIC: &str = "autoCreateTopicEnable";
/// `autoCreateSubscriptionGroup`.
pub const AUTO_CREATE_SUBSCRIPTION_GROUP: &str = "autoCreateSubscriptionGroup";

/// The keys UPDATE_BROKER_CONFIG changes.
pub const RUNTIME_KEYS: [&str; 3] = [
    BROKER_PERMISSION,
    AUTO_CREATE_TOPIC,
    AUTO_CREATE_SUBSCRIPTION_GROUP,
];

/// Whether `value` is good for runtime key `key`; the reason if not.
pub fn check(key: &str, value: &str) -> Result<(), String> {
    match key {
        BROKER_PERMISSION => match value.trim().parse::<i32>() {
            Ok(p) if [perm::READ, perm::WRITE, perm::READ_WRITE].contains(&p) => Ok(()),
            _ => Err(format!(
                "brokerPermission={value}: must be 6 (read and write), 4 (read only) or 2 (write only)"
            )),
        },
        AUTO_CREATE_TOPIC | AUTO_CREATE_SUBSCRIPTION_GROUP => {
            match value.trim().to_ascii_lowercase().as_str() {
                "true" | "false" => Ok(()),
                _ => Err(format!("{key}={value}: must be true or false")),
            }
        }
        _ => Err(format!("{key} cannot be changed at runtime")),
    }
}

/// An unset value of the atomics below.
const UNSET: u8 = 0;

/// The applied values; unset ones fall back to the config file.
#[derive(Default)]
pub struct RuntimeConfig {
    /// 0: unset.
    broker_permission: AtomicI32,
    auto_create_topic: AtomicU8,
    auto_create_subscription_group: AtomicU8,
    /// How many values were set since the node started, stored ones loaded at start
    /// included (GET_BROKER_CONFIG's `version`).
    changes: AtomicI64,
}

fn flag(value: &str) -> u8 {
    if value.trim().eq_ignore_ascii_case("true") {
        2
    } else {
        1
    }
}

fn flag_or(value: u8, default: bool) -> bool {
    match value {
        UNSET => default,
        v => v == 2,
    }
}

impl RuntimeConfig {
    /// Sets a value [`check`] accepted (at apply, and when the stored values are loaded).
    pub fn set(&self, key: &str, value: &str) {
        match key {
            BROKER_PERMISSION => {
                let p = value.trim().parse().unwrap_or(perm::READ_WRITE);
                self.broker_permission.store(p, Ordering::Release);
            }
            AUTO_CREATE_TOPIC => self.auto_create_topic.store(flag(value), Ordering::Release),
            AUTO_CREATE_SUBSCRIPTION_GROUP => self
                .auto_create_subscription_group
                .store(flag(value), Ordering::Release),
            _ => return,
        }
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    pub fn broker_permission(&self) -> i32 {
        match self.broker_permission.load(Ordering::Acquire) {
            0 => perm::READ_WRITE,
            p => p,
        }
    }

    pub fn auto_create_topic(&self, file: bool) -> bool {
        flag_or(self.auto_create_topic.load(Ordering::Acquire), file)
    }

    pub fn auto_create_subscription_group(&self, file: bool) -> bool {
        flag_or(
            self.auto_create_subscription_group.load(Ordering::Acquire),
            file,
        )
    }

    /// The values applied so far, by key (what a change left; unset keys are absent).
    pub fn applied(&self) -> BTreeMap<&'static str, String> {
        let mut out = BTreeMap::new();
        match self.broker_permission.load(Ordering::Acquire) {
            0 => {}
            p => {
                out.insert(BROKER_PERMISSION, p.to_string());
            }
        }
        for (key, value) in [
            (AUTO_CREATE_TOPIC, &self.auto_create_topic),
            (
                AUTO_CREATE_SUBSCRIPTION_GROUP,
                &self.auto_create_subscription_group,
            ),
        ] {
            match value.load(Ordering::Acquire) {
                UNSET => {}
                v => {
                    out.insert(key, (v == 2).to_string());
                }
            }
        }
        out
    }

    pub fn changes(&self) -> i64 {
        self.changes.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_runtime_keys_with_good_values_are_accepted() {
        assert!(check(BROKER_PERMISSION, "4").is_ok());
        assert!(check(BROKER_PERMISSION, "7").is_err());
        assert!(check(AUTO_CREATE_TOPIC, "FALSE").is_ok());
        assert!(check(AUTO_CREATE_TOPIC, "no").is_err());
        let e = check("flushDiskType", "ASYNC_FLUSH").unwrap_err();
        assert!(e.contains("cannot be changed at runtime"), "{e}");
    }

    #[test]
    fn applied_values_win_over_the_file() {
        let c = RuntimeConfig::default();
        assert_eq!(c.broker_permission(), perm::READ_WRITE);
        assert!(c.auto_create_topic(true));
        assert!(c.applied().is_empty());
        c.set(BROKER_PERMISSION, "4");
        c.set(AUTO_CREATE_TOPIC, "false");
        assert_eq!(c.broker_permission(), perm::READ);
        assert!(!c.auto_create_topic(true));
        assert!(c.auto_create_subscription_group(true));
        assert_eq!(c.changes(), 2);
        assert_eq!(c.applied().get(AUTO_CREATE_TOPIC).unwrap(), "false");
    }
}
