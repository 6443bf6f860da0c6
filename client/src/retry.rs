//! RocketMQ 4.x consumer retries: what a clustering push consumer does with a message
//! its listener failed, and how it sees a message that comes back.
//!
//! # Giving a message back
//!
//! `SendBack::give_back` tries, in order (RocketMQ's
//! `DefaultMQPushConsumerImpl.sendMessageBack`):
//!
//! 1. CONSUMER_SEND_MSG_BACK to the leader of the broker group the message was pulled
//!    from, naming it by its commit-log offset. The broker stores a copy in
//!    `%RETRY%<group>`, delayed by `delay_level_when_next_consume` (0: the broker picks
//!    level 3 + the times it was reconsumed), or in `%DLQ%<group>` once it has been
//!    reconsumed `max_reconsume_times` times (or the level is below 0). Only SUCCESS
//!    counts; any other answer, or none, goes on to step 2.
//! 2. A plain send of the message itself to `%RETRY%<group>` through an internal
//!    producer (group [`CLIENT_INNER_PRODUCER_GROUP`], sharing the consumer's
//!    connections and routes), built by `retry_message`: every original property,
//!    RETRY_TOPIC and ORIGIN_MESSAGE_ID (kept if already set), DELAY = 3 + reconsume
//!    times, and reconsume times + 1 and the maximum in the send header (where the
//!    broker makes the same dead-letter decision).
//!
//! `true` means the broker has the message (a SEND_OK, or SUCCESS); only then may the
//! consumer's offset pass it. `false` leaves it to the caller, which keeps it and
//! consumes it again later.
//!
//! # Coming back
//!
//! A retried message is pulled from `%RETRY%<group>` (the consumer subscribes to it with
//! `*`); `restore_topics` gives it back the topic it was first consumed from (its
//! RETRY_TOPIC property) before the listener sees it (RocketMQ's
//! `resetRetryAndNamespace`). Its queue and offset stay those of the retry topic.

use std::sync::Arc;

use remoting::header::ConsumerSendMsgBackRequestHeader;
use remoting::message::property;
use tracing::{debug, info, warn};

use crate::api;
use crate::instance::ClientInstance;
use crate::message::{Message, MessageExt, SCHEDULE_PROPERTIES};
use crate::producer::Producer;

/// Prefix of a consumer group's retry topic, `%RETRY%<group>`.
pub const RETRY_TOPIC_PREFIX: &str = "%RETRY%";
/// Prefix of a consumer group's dead-letter topic, `%DLQ%<group>`: where the broker puts
/// a message reconsumed `max_reconsume_times` times.
pub const DLQ_TOPIC_PREFIX: &str = "%DLQ%";
/// The producer group of the internal producer that re-sends failed messages when the
/// broker refuses CONSUMER_SEND_MSG_BACK (RocketMQ's `MixAll.CLIENT_INNER_PRODUCER_GROUP`).
pub const CLIENT_INNER_PRODUCER_GROUP: &str = "CLIENT_INNER_PRODUCER";
/// What a `max_reconsume_times` of -1 stands for (RocketMQ's default in concurrent mode).
pub const DEFAULT_MAX_RECONSUME_TIMES: i32 = 16;
/// The delay level of a re-sent message is this plus its reconsume times (RocketMQ: the
/// first retry waits level 3, 10 s).
pub const RETRY_DELAY_LEVEL_BASE: i32 = 3;

/// `%RETRY%<consumer_group>`.
pub fn retry_topic(consumer_group: &str) -> String {
    format!("{RETRY_TOPIC_PREFIX}{consumer_group}")
}

/// `%DLQ%<consumer_group>`.
pub fn dlq_topic(consumer_group: &str) -> String {
    format!("{DLQ_TOPIC_PREFIX}{consumer_group}")
}

/// The maximum sent to the broker: -1 means [`DEFAULT_MAX_RECONSUME_TIMES`].
pub(crate) fn effective_max_reconsume_times(configured: i32) -> i32 {
    if configured == -1 {
        DEFAULT_MAX_RECONSUME_TIMES
    } else {
        configured
    }
}

/// Messages pulled from `group_retry_topic` that carry RETRY_TOPIC get that topic back.
pub(crate) fn restore_topics(messages: &mut [MessageExt], group_retry_topic: &str) {
    for m in messages.iter_mut().filter(|m| m.topic == group_retry_topic) {
        if let Some(original) = m.properties.get(property::RETRY_TOPIC) {
            m.topic = original.clone();
        }
    }
}

/// The CONSUMER_SEND_MSG_BACK header for `msg` (RocketMQ's
/// `MQClientAPIImpl.consumerSendMessageBack`).
pub(crate) fn send_back_header(
    msg: &MessageExt,
    consumer_group: &str,
    delay_level: i32,
    max_reconsume_times: i32,
) -> ConsumerSendMsgBackRequestHeader {
    ConsumerSendMsgBackRequestHeader {
        offset: msg.commit_log_offset,
        group: consumer_group.to_string(),
        delay_level,
        origin_msg_id: Some(msg.msg_id().to_string()),
        origin_topic: Some(msg.topic.clone()),
        unit_mode: Some(false),
        max_reconsume_times: Some(max_reconsume_times),
    }
}

/// The message re-sent to `%RETRY%<group>` when CONSUMER_SEND_MSG_BACK fails. RETRY_TOPIC
/// is set only when missing, as the broker's send-back does (RocketMQ's Java client
/// overwrites it; `msg.topic` is already the restored RETRY_TOPIC for a message that came
/// from the retry topic, so the two differ only for a message re-sent by hand to another
/// topic). RECONSUME_TIME and MAX_RECONSUME_TIMES travel in the send header (the producer
/// moves them there for retry topics). Timer properties are removed: the delay level
/// wins over them at the broker anyway. The body is sent as received: a body a Java
/// producer compressed (sys flag 1) would arrive uncompressed-flagged.
pub(crate) fn retry_message(
    msg: &MessageExt,
    consumer_group: &str,
    max_reconsume_times: i32,
) -> Message {
    let mut out = Message::new(retry_topic(consumer_group), msg.body.clone());
    out.flag = msg.flag;
    out.properties = msg.properties.clone();
    let props = &mut out.properties;
    props
        .entry(property::ORIGIN_MESSAGE_ID.to_string())
        .or_insert_with(|| msg.msg_id().to_string());
    props
        .entry(property::RETRY_TOPIC.to_string())
        .or_insert_with(|| msg.topic.clone());
    props.remove(property::TRANSACTION_PREPARED);
    for p in SCHEDULE_PROPERTIES {
        props.remove(p);
    }
    props.insert(
        property::RECONSUME_TIME.to_string(),
        (msg.reconsume_times + 1).to_string(),
    );
    props.insert(
        property::MAX_RECONSUME_TIMES.to_string(),
        max_reconsume_times.to_string(),
    );
    out.with_delay_time_level(RETRY_DELAY_LEVEL_BASE + msg.reconsume_times)
}

/// A clustering consumer's way of giving failed messages back to the broker.
pub(crate) struct SendBack {
    pub instance: Arc<ClientInstance>,
    /// The internal producer ([`CLIENT_INNER_PRODUCER_GROUP`]) on the consumer's instance.
    pub producer: Producer,
    pub consumer_group: String,
    pub delay_level: i32,
    /// Already resolved (-1 replaced).
    pub max_reconsume_times: i32,
}

impl SendBack {
    /// Gives `msg` back (see the module doc); `true` when the broker has it.
    pub async fn give_back(&self, msg: &MessageExt) -> bool {
        self.send_back(msg, self.delay_level).await
    }

    /// Sends a message an orderly listener kept suspending past `max_reconsume_times`
    /// straight to the group's dead-letter topic (delay level -1). False if the broker
    /// did not take it: the orderly consumer then suspends it again, as RocketMQ does.
    pub async fn dead_letter(&self, msg: &MessageExt) -> bool {
        let header = send_back_header(msg, &self.consumer_group, -1, self.max_reconsume_times);
        match api::consumer_send_msg_back(&self.instance, &msg.broker_name, &header).await {
            Ok(()) => {
                info!(topic = %msg.topic, msg_id = %msg.msg_id(), reconsume_times = msg.reconsume_times,
                    "orderly: message moved to the dead-letter topic");
                true
            }
            Err(e) => {
                warn!(topic = %msg.topic, msg_id = %msg.msg_id(), error = %e,
                    "orderly: could not move the message to the dead-letter topic; suspending it again");
                false
            }
        }
    }

    async fn send_back(&self, msg: &MessageExt, delay_level: i32) -> bool {
        let header = send_back_header(
            msg,
            &self.consumer_group,
            delay_level,
            self.max_reconsume_times,
        );
        let msg_id = msg.msg_id();
        match api::consumer_send_msg_back(&self.instance, &msg.broker_name, &header).await {
            Ok(()) => {
                debug!(topic = %msg.topic, %msg_id, broker_name = %msg.broker_name, "message sent back");
                return true;
            }
            Err(e) => {
                warn!(topic = %msg.topic, %msg_id, broker_name = %msg.broker_name, error = %e,
                    "CONSUMER_SEND_MSG_BACK failed; re-sending to the retry topic");
            }
        }
        let retry = retry_message(msg, &self.consumer_group, self.max_reconsume_times);
        match self.producer.send(retry).await {
            Ok(sent) => {
                debug!(topic = %msg.topic, %msg_id, queue = %sent.queue, "message re-sent to the retry topic");
                true
            }
            Err(e) => {
                warn!(topic = %msg.topic, %msg_id, error = %e,
                    "could not re-send to the retry topic either; it will be consumed again here");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn received(topic: &str, props: &[(&str, &str)], reconsume_times: i32) -> MessageExt {
        MessageExt {
            topic: topic.into(),
            queue_id: 0,
            queue_offset: 4,
            commit_log_offset: 4321,
            flag: 7,
            sys_flag: 0,
            body: "b".into(),
            body_crc: 0,
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            born_timestamp: 0,
            born_host: "127.0.0.1:1".parse().unwrap(),
            store_timestamp: 0,
            store_host: "127.0.0.1:10911".parse().unwrap(),
            reconsume_times,
            prepared_transaction_offset: 0,
            offset_msg_id: "OFFSETID".into(),
            broker_name: "broker-a".into(),
        }
    }

    /// Proves the re-sent message keeps every property, adds RETRY_TOPIC and
    /// ORIGIN_MESSAGE_ID only when missing, asks for level 3 + n with n + 1 and the
    /// maximum for the send header, and drops TRAN_MSG and timer properties.
    #[test]
    fn retry_message_carries_what_the_broker_needs() {
        let first = received(
            "T",
            &[
                ("UNIQ_KEY", "U1"),
                ("TAGS", "a"),
                ("TRAN_MSG", "true"),
                ("TIMER_DELIVER_MS", "5"),
            ],
            2,
        );
        let m = retry_message(&first, "cg", 16);
        assert_eq!(m.topic, "%RETRY%cg");
        assert_eq!(m.flag, 7);
        assert_eq!(&m.body[..], b"b");
        assert_eq!(m.property("UNIQ_KEY"), Some("U1"));
        assert_eq!(m.property("TAGS"), Some("a"));
        assert_eq!(m.property("RETRY_TOPIC"), Some("T"));
        assert_eq!(m.property("ORIGIN_MESSAGE_ID"), Some("U1"));
        assert_eq!(m.property("DELAY"), Some("5"));
        assert_eq!(m.property("RECONSUME_TIME"), Some("3"));
        assert_eq!(m.property("MAX_RECONSUME_TIMES"), Some("16"));
        assert_eq!(m.property("TRAN_MSG"), None);
        assert_eq!(m.property("TIMER_DELIVER_MS"), None);
        m.validate(1024).unwrap();

        // A message that was retried before keeps its first topic and id.
        let again = received(
            "T",
            &[("RETRY_TOPIC", "Orig"), ("ORIGIN_MESSAGE_ID", "FIRST")],
            0,
        );
        let m = retry_message(&again, "cg", 2);
        assert_eq!(m.property("RETRY_TOPIC"), Some("Orig"));
        assert_eq!(m.property("ORIGIN_MESSAGE_ID"), Some("FIRST"));
        assert_eq!(m.property("DELAY"), Some("3"));
        // Without UNIQ_KEY the id is the broker's offset id.
        let m = retry_message(&received("T", &[], 0), "cg", 2);
        assert_eq!(m.property("ORIGIN_MESSAGE_ID"), Some("OFFSETID"));
    }

    /// Proves only messages of the group's retry topic that carry RETRY_TOPIC get it
    /// back, and that -1 means 16 reconsumes.
    #[test]
    fn topics_are_restored_only_from_the_retry_topic() {
        let mut msgs = vec![
            received("%RETRY%cg", &[("RETRY_TOPIC", "T")], 1),
            received("%RETRY%cg", &[], 1),
            received("Other", &[("RETRY_TOPIC", "T")], 1),
            received("%RETRY%other", &[("RETRY_TOPIC", "T")], 1),
        ];
        restore_topics(&mut msgs, &retry_topic("cg"));
        let topics: Vec<&str> = msgs.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(topics, ["T", "%RETRY%cg", "Other", "%RETRY%other"]);
        assert_eq!(effective_max_reconsume_times(-1), 16);
        assert_eq!(effective_max_reconsume_times(3), 3);
        assert_eq!(dlq_topic("cg"), "%DLQ%cg");
    }
}
