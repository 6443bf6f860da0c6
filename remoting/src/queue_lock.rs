//! The bodies of LOCK_BATCH_MQ (41) and UNLOCK_BATCH_MQ (42): RocketMQ's
//! `LockBatchRequestBody`, `LockBatchResponseBody` and `UnlockBatchRequestBody`, with
//! RocketMQ's field names (`lockOKMQSet` as fastjson writes it).

use serde::{Deserialize, Serialize};

use crate::names::{self, BadName};

/// A queue as RocketMQ's `MessageQueue` serialises it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MessageQueueData {
    pub topic: String,
    pub broker_name: String,
    pub queue_id: i32,
}

/// LOCK_BATCH_MQ's request body; UNLOCK_BATCH_MQ's has the same fields.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LockBatchRequestBody {
    pub consumer_group: String,
    pub client_id: String,
    /// RocketMQ 5's: lock only on the broker asked (never forward to its replicas). Every
    /// member of a rocketraft group shares one lock table through Raft, so it changes
    /// nothing here.
    pub only_this_broker: bool,
    pub mq_set: Vec<MessageQueueData>,
}

/// UNLOCK_BATCH_MQ's request body.
pub type UnlockBatchRequestBody = LockBatchRequestBody;

/// LOCK_BATCH_MQ's answer: the queues now held by the asking client.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LockBatchResponseBody {
    #[serde(rename = "lockOKMQSet")]
    pub lock_ok_mq_set: Vec<MessageQueueData>,
}

impl LockBatchRequestBody {
    /// Checks every name by RocketMQ's rules: the group, the client id, each queue's topic
    /// and broker name (a lock's key holds all four).
    pub fn check_names(&self) -> Result<(), BadName> {
        names::check_group(&self.consumer_group)?;
        names::check_client_id(&self.client_id)?;
        for mq in &self.mq_set {
            names::check_topic(&mq.topic)?;
            names::check_broker_name(&mq.broker_name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{from_json, to_json};

    /// The bodies as Java's fastjson writes them decode, and ours carry RocketMQ's names.
    #[test]
    fn rocketmq_lock_bodies_round_trip() {
        let java = br#"{"clientId":"127.0.0.1@1234","consumerGroup":"g","mqSet":[{"brokerName":"broker-a","queueId":1,"topic":"T"}],"onlyThisBroker":false}"#;
        let body: LockBatchRequestBody = from_json("lock", java).unwrap();
        assert_eq!(body.consumer_group, "g");
        assert_eq!(body.mq_set[0].queue_id, 1);
        body.check_names().unwrap();
        let legacy: LockBatchRequestBody = from_json(
            "lock",
            br#"{"clientId":"c","consumerGroup":"g","mqSet":[]}"#,
        )
        .unwrap();
        assert!(!legacy.only_this_broker);
        let answer = LockBatchResponseBody {
            lock_ok_mq_set: body.mq_set.clone(),
        };
        let text = String::from_utf8(to_json(&answer)).unwrap();
        assert!(
            text.contains(
                "\"lockOKMQSet\":[{\"topic\":\"T\",\"brokerName\":\"broker-a\",\"queueId\":1}]"
            ),
            "{text}"
        );
        let bad = LockBatchRequestBody {
            consumer_group: "g\0".into(),
            ..body.clone()
        };
        assert!(bad.check_names().is_err());
        // The broker name goes into the lock key with a u16 length: 70 000 bytes would make
        // the apply of the lock panic on every replica.
        let mut bad = body;
        bad.mq_set[0].broker_name = "b".repeat(70_000);
        assert!(bad.check_names().is_err());
    }
}
