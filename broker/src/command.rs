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
    /// Creates or replaces many topics at once (UPDATE_AND_CREATE_TOPIC_LIST): one entry
    /// for a whole request, unless [`put_topics_commands`] had to split it.
    PutTopics {
        configs: Vec<TopicConfig>,
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

/// `configs`, in order, as PutTopics commands of at most `max_bytes` encoded bytes each (a
/// Raft entry's limit): one command when they fit, the fewest greedy runs when they do not.
/// A single config longer than `max_bytes` still gets a command of its own, which the log
/// then refuses; topic names are at most 127 characters, so it does not happen in practice.
pub fn put_topics_commands(configs: Vec<TopicConfig>, max_bytes: usize) -> Vec<BrokerCommand> {
    let empty = BrokerCommand::PutTopics {
        configs: Vec::new(),
    };
    let base_bytes = empty.encode().len();
    let mut commands = Vec::new();
    let (mut run, mut run_bytes) = (Vec::new(), base_bytes);
    for config in configs {
        let bytes = serde_json::to_vec(&config).map_or(0, |v| v.len());
        // After the first, each config comes with a comma.
        if !run.is_empty() && run_bytes + 1 + bytes > max_bytes {
            commands.push(BrokerCommand::PutTopics {
                configs: std::mem::take(&mut run),
            });
            run_bytes = base_bytes;
        }
        run_bytes += usize::from(!run.is_empty()) + bytes;
        run.push(config);
    }
    if !run.is_empty() {
        commands.push(BrokerCommand::PutTopics { configs: run });
    }
    commands
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
            BrokerCommand::PutTopics {
                configs: vec![TopicConfig::default(), TopicConfig::default()],
            },
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

    fn topics(n: usize) -> Vec<TopicConfig> {
        (0..n)
            .map(|i| TopicConfig {
                topic_name: format!("Topic-{i}"),
                ..TopicConfig::default()
            })
            .collect()
    }

    /// A list that fits is one command; one that does not is split into commands that each
    /// fit, that together hold every topic once, in order, and that are as few as greedy
    /// filling makes them (each but the last would overflow with the next topic).
    #[test]
    fn put_topics_commands_fit_the_entry_limit() {
        let all = topics(1000);
        let one = put_topics_commands(all.clone(), 4 << 20);
        assert_eq!(
            one,
            vec![BrokerCommand::PutTopics {
                configs: all.clone()
            }]
        );
        for max_bytes in [4096, 10_000, 65_536] {
            let commands = put_topics_commands(all.clone(), max_bytes);
            assert!(commands.len() > 1, "{max_bytes}");
            let mut back = Vec::new();
            for (i, command) in commands.iter().enumerate() {
                let encoded = command.encode();
                assert!(encoded.len() <= max_bytes, "{max_bytes}: {}", encoded.len());
                let BrokerCommand::PutTopics { configs } = command else {
                    panic!("{command:?}");
                };
                if let Some(next) = commands.get(i + 1) {
                    let BrokerCommand::PutTopics { configs: after } = next else {
                        panic!("{next:?}");
                    };
                    let mut grown = configs.clone();
                    grown.push(after[0].clone());
                    let grown = BrokerCommand::PutTopics { configs: grown }.encode();
                    assert!(grown.len() > max_bytes, "{max_bytes}: run {i} not full");
                }
                back.extend(configs.iter().cloned());
            }
            assert_eq!(back, all);
        }
        assert!(put_topics_commands(Vec::new(), 4096).is_empty());
    }
}
