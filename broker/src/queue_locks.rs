//! Queue locks for ordered consumption (LOCK_BATCH_MQ, UNLOCK_BATCH_MQ), kept through Raft.
//!
//! An orderly consumer of a clustering group consumes a queue only while it holds the
//! queue's lock on the queue's broker group. RocketMQ keeps the lock table in the
//! master's memory; here it is derived from the log like everything else a replica knows
//! (docs/DESIGN-NOTES.md, "Queue locks"):
//!
//! - A lock or unlock request becomes a [`crate::command::BrokerCommand`] carrying the
//!   leader's clock reading and the lock lifetime (`rebalanceLockMaxLiveTime`), and is
//!   decided when it is applied. Every replica applies the same commands to the same
//!   table, so every replica holds the same table, and the leader answers with what the
//!   apply decided. A lock is granted only once that decision is committed: a deposed
//!   leader cannot grant one.
//! - A new leader therefore knows every lock the old one granted, and serves locks at once
//!   after a failover instead of refusing them for a whole lock lifetime.
//! - Entries live in RocksDB with the applied point, so they survive restarts too.
//! - The one assumption is about clocks: a lock granted at the old leader's time `t`
//!   expires at `t + lifetime` read on the next leader's clock. The holder stops
//!   consuming 30 s after it asked (RocketMQ's client-side lock lifetime), the broker lets
//!   another client take the queue 60 s after the last renewal, so leaders' clocks may
//!   disagree by up to 30 s before two clients could hold one queue.

use std::collections::HashMap;

use dledger::{HookError, HookStore, HookWrites};
use remoting::queue_lock::MessageQueueData;
use tracing::{debug, info};

use crate::keys;

/// The queues a lock request was granted, as the apply hook hands them back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted(pub Vec<MessageQueueData>);

/// One queue's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lock {
    client_id: String,
    /// Leader clock (ms) after which another client may take the queue.
    expires_at_ms: u64,
}

/// Every group's queue locks.
#[derive(Debug, Default)]
pub struct QueueLocks {
    table: HashMap<(String, MessageQueueData), Lock>,
}

impl QueueLocks {
    /// The locks stored at the applied point; a record that does not read is reported and
    /// left out (the queue is then unlocked, which a live holder's next renewal restores).
    pub fn load(store: &HookStore) -> Result<Self, HookError> {
        let mut table = HashMap::new();
        for (key, value) in store.scan_prefix(keys::LOCK_PREFIX)? {
            let parsed = keys::parse_lock_key(&key).zip(read_value(&value));
            match parsed {
                Some(((group, topic, broker_name, queue_id), lock)) => {
                    let mq = MessageQueueData {
                        topic,
                        broker_name,
                        queue_id,
                    };
                    table.insert((group, mq), lock);
                }
                None => crate::store::skipped(&key, "queue lock"),
            }
        }
        Ok(QueueLocks { table })
    }

    /// Applies a lock request made at `now_ms` (the leader's clock): each queue that is
    /// free, expired, or already `client_id`'s is (re)locked for `lifetime_ms`. Returns the
    /// queues `client_id` holds now, in the order asked.
    pub fn lock(
        &mut self,
        group: &str,
        client_id: &str,
        queues: &[MessageQueueData],
        now_ms: u64,
        lifetime_ms: u64,
        writes: &mut HookWrites<'_>,
    ) -> Vec<MessageQueueData> {
        let mut granted = Vec::with_capacity(queues.len());
        for mq in queues {
            let key = (group.to_string(), mq.clone());
            let free = match self.table.get(&key) {
                None => true,
                Some(lock) if lock.client_id == client_id => true,
                Some(lock) if now_ms > lock.expires_at_ms => {
                    info!(consumer_group = group, queue = ?mq, old = %lock.client_id, new = client_id,
                        "queue lock expired; given to another client");
                    true
                }
                Some(lock) => {
                    debug!(consumer_group = group, queue = ?mq, holder = %lock.client_id, asking = client_id,
                        "queue locked by another client");
                    false
                }
            };
            if !free {
                continue;
            }
            let lock = Lock {
                client_id: client_id.to_string(),
                expires_at_ms: now_ms.saturating_add(lifetime_ms),
            };
            writes.put(&store_key(group, mq), &write_value(&lock));
            self.table.insert(key, lock);
            granted.push(mq.clone());
        }
        granted
    }

    /// Applies an unlock request: each queue `client_id` holds is freed.
    pub fn unlock(
        &mut self,
        group: &str,
        client_id: &str,
        queues: &[MessageQueueData],
        writes: &mut HookWrites<'_>,
    ) {
        for mq in queues {
            let key = (group.to_string(), mq.clone());
            if self
                .table
                .get(&key)
                .is_some_and(|l| l.client_id == client_id)
            {
                self.table.remove(&key);
                writes.delete(&store_key(group, mq));
            }
        }
    }

    /// Drops every lock of a group (its subscription group was deleted).
    pub fn remove_group(&mut self, group: &str, writes: &mut HookWrites<'_>) {
        self.table.retain(|(g, mq), _| {
            let keep = g != group;
            if !keep {
                writes.delete(&store_key(g, mq));
            }
            keep
        });
    }

    /// Who holds `mq` for `group` at `now_ms`, if anyone.
    pub fn holder(&self, group: &str, mq: &MessageQueueData, now_ms: u64) -> Option<&str> {
        self.table
            .get(&(group.to_string(), mq.clone()))
            .filter(|l| now_ms <= l.expires_at_ms)
            .map(|l| l.client_id.as_str())
    }
}

fn store_key(group: &str, mq: &MessageQueueData) -> Vec<u8> {
    keys::lock_key(group, &mq.topic, &mq.broker_name, mq.queue_id)
}

fn write_value(lock: &Lock) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + lock.client_id.len());
    value.extend_from_slice(&lock.expires_at_ms.to_be_bytes());
    value.extend_from_slice(lock.client_id.as_bytes());
    value
}

fn read_value(value: &[u8]) -> Option<Lock> {
    let expires_at_ms = keys::be_u64(value.get(..8)?)?;
    let client_id = String::from_utf8(value[8..].to_vec()).ok()?;
    Some(Lock {
        client_id,
        expires_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_values_round_trip_and_short_ones_are_refused() {
        let lock = Lock {
            client_id: "127.0.0.1@1".into(),
            expires_at_ms: 42,
        };
        assert_eq!(read_value(&write_value(&lock)), Some(lock));
        assert_eq!(read_value(&[0; 7]), None);
    }
}
