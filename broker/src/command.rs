//! Commands the broker puts in the Raft log besides messages: consumer offsets, topic
//! config, queue locks, which client address each leader serves on, the retention point,
//! and broker config keys changed at runtime. Every replica applies them
//! in log order (invariant 4), so a new leader knows all of them.

use remoting::queue_lock::MessageQueueData;
use remoting::route::TopicConfig;
use serde::{Deserialize, Serialize};

/// One consumer offset commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffsetUpdate {
    pub consumer_group: String,
    pub topic: String,
    pub queue_id: i32,
    pub offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum BrokerCommand {
    /// Consumer offsets committed since the last batch; the last one per queue wins.
    UpdateOffsets {
        offsets: Vec<OffsetUpdate>,
    },
    /// Creates or replaces a topic.
    PutTopic {
        config: TopicConfig,
    },
    DeleteTopic {
        topic: String,
    },
    /// Creates or replaces a subscription group (RocketMQ's `SubscriptionGroupConfig`,
    /// kept as sent so every field RocketMQ's tools set survives).
    PutSubscriptionGroup {
        config: serde_json::Value,
    },
    DeleteSubscriptionGroup {
        group_name: String,
    },
    /// A client asks for queue locks (LOCK_BATCH_MQ), at the leader's clock `now_ms`, for
    /// `lifetime_ms`; decided at apply (`crate::queue_locks`).
    LockQueues {
        consumer_group: String,
        client_id: String,
        queues: Vec<MessageQueueData>,
        now_ms: u64,
        lifetime_ms: u64,
    },
    /// A client gives queue locks back (UNLOCK_BATCH_MQ).
    UnlockQueues {
        consumer_group: String,
        client_id: String,
        queues: Vec<MessageQueueData>,
    },
    /// A node that became leader announces the address clients reach it at, so
    /// followers can name it in not-leader answers.
    LeaderInfo {
        node_id: u64,
        term: u64,
        broker_addr: String,
    },
    /// Rolls back the half message at this CommitLog offset: its index key goes, so a
    /// later commit of it is queued nowhere (see `crate::transaction`).
    RollbackHalf {
        commit_log_offset: u64,
    },
    /// The leader checks these half messages back: each one still pending counts one
    /// check more.
    CheckHalves {
        commit_log_offsets: Vec<u64>,
    },
    /// Broker config keys changed at runtime (UPDATE_BROKER_CONFIG), checked by the
    /// leader against `crate::runtime_config`; applied by every replica.
    UpdateBrokerConfig {
        properties: std::collections::BTreeMap<String, String>,
    },
    /// Retention (decided by the leader, `crate::retention`): everything below CommitLog
    /// position `below` (a segment start) goes. Applied on every replica: the point is
    /// stored, ConsumeQueue minimums move up to it; each replica then purges its Raft log.
    Retain {
        below: u64,
    },
}

impl BrokerCommand {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("broker commands encode")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        for cmd in [
            BrokerCommand::UpdateOffsets {
                offsets: vec![OffsetUpdate {
                    consumer_group: "g".into(),
                    topic: "T".into(),
                    queue_id: 1,
                    offset: 42,
                }],
            },
            BrokerCommand::PutTopic {
                config: TopicConfig::default(),
            },
            BrokerCommand::DeleteTopic { topic: "T".into() },
            BrokerCommand::PutSubscriptionGroup {
                config: serde_json::json!({"groupName": "g", "retryMaxTimes": 16}),
            },
            BrokerCommand::DeleteSubscriptionGroup {
                group_name: "g".into(),
            },
            BrokerCommand::LockQueues {
                consumer_group: "g".into(),
                client_id: "c".into(),
                queues: vec![MessageQueueData {
                    topic: "T".into(),
                    broker_name: "broker-a".into(),
                    queue_id: 3,
                }],
                now_ms: 7,
                lifetime_ms: 60_000,
            },
            BrokerCommand::UnlockQueues {
                consumer_group: "g".into(),
                client_id: "c".into(),
                queues: Vec::new(),
            },
            BrokerCommand::LeaderInfo {
                node_id: 1,
                term: 3,
                broker_addr: "127.0.0.1:10921".into(),
            },
            BrokerCommand::RollbackHalf {
                commit_log_offset: 7,
            },
            BrokerCommand::CheckHalves {
                commit_log_offsets: vec![1, 2],
            },
            BrokerCommand::Retain { below: 1 << 30 },
            BrokerCommand::UpdateBrokerConfig {
                properties: [("brokerPermission".to_string(), "4".to_string())].into(),
            },
        ] {
            assert_eq!(BrokerCommand::decode(&cmd.encode()).unwrap(), cmd);
        }
        assert!(BrokerCommand::decode(b"{}").is_err());
    }
}
