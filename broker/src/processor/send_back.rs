//! CONSUMER_SEND_MSG_BACK (36): a consumer gives back a message it failed to consume.
//!
//! The broker reads the original by its CommitLog offset and stores a copy for the group's
//! next try: in `SCHEDULE_TOPIC_XXXX` at delay level `3 + reconsumeTimes` (or the level
//! the client asks for), delivered to `%RETRY%<group>` when due; after
//! `maxReconsumeTimes` tries (the header's, else the subscription group's `retryMaxTimes`,
//! 16) or for a negative level, in `%DLQ%<group>` at once. The copy carries
//! RECONSUMETIMES + 1, `RETRY_TOPIC` (the topic it was first consumed from) and
//! `ORIGIN_MESSAGE_ID`. The move is one append through the Raft log, so a new leader
//! knows it, and the copy's delivery is a scheduled message's (see [`crate::schedule`]).
//! A group whose `%RETRY%<group>` would break the topic rules (a group may have 255
//! characters, a topic 127) is refused before anything goes through the log.

use bytes::Bytes;
use remoting::header::ConsumerSendMsgBackRequestHeader;
use remoting::message::{
    encode_properties, message_id, properties_iter, property, MessageRecord, MAGIC_V1, MAGIC_V2,
};
use remoting::names::{check_group, check_topic};
use remoting::route::{perm, TopicConfig};
use remoting::{Connection, RemotingCommand, ResponseCode};
use tracing::info;

use super::send::{append_error, now_ms, DLQ_PREFIX, RETRY_PREFIX};
use super::{fail, ProcessError, ProcessResult};
use crate::broker::Broker;
use crate::schedule;

/// RocketMQ's `SubscriptionGroupConfig.retryMaxTimes` default.
pub const DEFAULT_RETRY_MAX_TIMES: i32 = 16;

pub async fn handle(
    broker: &Broker,
    _conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let h: ConsumerSendMsgBackRequestHeader = request.header()?;
    derived_topic(RETRY_PREFIX, &h.group)?;
    super::send::refuse_if_disk_full(broker)?;
    known_group(broker, &h.group).await?;
    let bytes = queued_record(broker, h.offset)?;
    let (original, _) = MessageRecord::decode(&bytes).map_err(|e| lookup_failed(h.offset, e))?;
    let max = h
        .max_reconsume_times
        .unwrap_or_else(|| retry_max_times(broker, &h.group));
    let origin_msg_id = h
        .origin_msg_id
        .clone()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| message_id(original.store_host, h.offset));
    let base = retried_properties(&original, &origin_msg_id);
    let now = now_ms();
    let dead_letter = h.delay_level < 0 || original.reconsume_times >= max;
    let (topic, queue_id, properties) = if dead_letter {
        let dlq = dead_letter_topic(broker, &h.group).await?;
        info!(group = %h.group, offset = h.offset, reconsume_times = original.reconsume_times, "message moved to the dead-letter queue");
        (dlq.topic_name, 0, base)
    } else {
        let retry = retry_topic(broker, &h.group).await?;
        let levels = broker.delay_levels_ms();
        let level = match h.delay_level {
            0 => 3 + original.reconsume_times,
            n => n,
        }
        .clamp(1, levels.len() as i32);
        let due = now as u64 + levels[level as usize - 1];
        broker
            .create_topic(schedule::schedule_topic_config(
                schedule::SCHEDULE_TOPIC,
                levels.len(),
            ))
            .await
            .map_err(|e| append_error(broker, e))?;
        let level_text = level.to_string();
        let with_delay = encode_properties(
            properties_iter(&base)
                .filter(|(k, _)| *k != property::DELAY_TIME_LEVEL)
                .chain([(property::DELAY_TIME_LEVEL, level_text.as_str())]),
        );
        // RocketMQ's default retryQueueNums is 1: every retry waits in queue 0.
        let properties = schedule::scheduled_properties(&with_delay, &retry.topic_name, 0, due);
        (schedule::SCHEDULE_TOPIC.to_string(), level - 1, properties)
    };
    let record = crate::copy::stored_copy(
        &original,
        &topic,
        queue_id,
        &properties,
        now,
        broker.store_host(),
        |copy| copy.reconsume_times = original.reconsume_times + 1,
    )
    .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e))?;
    broker
        .append(vec![record])
        .await
        .map_err(|e| append_error(broker, e))?;
    if dead_letter {
        // RocketMQ 5 labels it with the topic the consumer was given the message from.
        let origin = h.origin_topic.as_deref().unwrap_or(original.topic);
        broker.metrics().events.dead_letter(&h.group, origin);
    }
    Ok(RemotingCommand::success())
}

/// The properties of the copy for a retry: the original's, with the topic it was first
/// consumed from, the id it first had, and no delivery marker of an earlier schedule.
fn retried_properties(original: &MessageRecord<'_>, origin_msg_id: &str) -> String {
    let retry_topic = original
        .property(property::RETRY_TOPIC)
        .unwrap_or(original.topic)
        .to_string();
    let origin = original
        .property(property::ORIGIN_MESSAGE_ID)
        .unwrap_or(origin_msg_id)
        .to_string();
    let dropped = [
        property::RETRY_TOPIC,
        property::ORIGIN_MESSAGE_ID,
        property::WAIT_STORE_MSG_OK,
        schedule::TIMER_ORIGIN,
        crate::transaction::TRANSACTION_ORIGIN,
    ];
    encode_properties(
        properties_iter(original.properties)
            .filter(|(k, _)| !dropped.contains(k))
            .chain([
                (property::RETRY_TOPIC, retry_topic.as_str()),
                (property::ORIGIN_MESSAGE_ID, origin.as_str()),
                (property::WAIT_STORE_MSG_OK, "false"),
            ]),
    )
}

/// The record at `offset`, if it is a message a consumer could have received: one that
/// starts there and is indexed in its queue. Any other offset is refused, so a consumer
/// cannot have the broker copy bytes that are not a whole stored message.
fn queued_record(broker: &Broker, offset: i64) -> Result<Bytes, ProcessError> {
    if offset < 0 {
        return Err(lookup_failed(offset, "negative offset"));
    }
    let head = broker
        .read_commit_log(offset as u64, 8)
        .map_err(|e| lookup_failed(offset, e))?;
    if head.len() < 8 {
        return Err(lookup_failed(offset, "past the end of the CommitLog"));
    }
    let size = u32::from_be_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
    let magic = u32::from_be_bytes(head[4..8].try_into().expect("4 bytes"));
    if magic != MAGIC_V1 && magic != MAGIC_V2 {
        return Err(lookup_failed(offset, "no message starts there"));
    }
    let max = broker.config().max_message_bytes + 64 * 1024;
    if size > max {
        return Err(lookup_failed(offset, "no message starts there"));
    }
    let bytes = broker
        .read_commit_log(offset as u64, size)
        .map_err(|e| lookup_failed(offset, e))?;
    let (record, _) = MessageRecord::decode(&bytes).map_err(|e| lookup_failed(offset, e))?;
    let queued = broker
        .consume_queue(record.topic, record.queue_id)
        .map(|q| q.find(offset))
        .transpose()
        .map_err(|e| lookup_failed(offset, e))?
        .flatten()
        .is_some_and(|(_, entry)| entry.size as usize == size);
    if !queued {
        return Err(lookup_failed(offset, "no queued message starts there"));
    }
    Ok(Bytes::from(bytes))
}

fn lookup_failed(offset: i64, why: impl std::fmt::Display) -> ProcessError {
    fail(
        ResponseCode::SYSTEM_ERROR,
        format!("look message by offset failed, {offset}: {why}"),
    )
}

/// Makes sure a clustering consumer group can retry: its subscription group and its
/// `%RETRY%<group>` topic exist (both created through Raft when missing).
pub(crate) async fn prepare_retries(broker: &Broker, group: &str) -> Result<(), ProcessError> {
    if broker.topic(&derived_topic(RETRY_PREFIX, group)?).is_some() {
        return Ok(());
    }
    if broker.subscription_group(group).is_none()
        && !broker.auto_create_subscription_group_enabled()
    {
        return Ok(());
    }
    known_group(broker, group).await?;
    retry_topic(broker, group).await.map(|_| ())
}

/// A group may send back if its subscription group exists, or may be created
/// (`autoCreateSubscriptionGroup`, RocketMQ's default).
async fn known_group(broker: &Broker, group: &str) -> Result<(), ProcessError> {
    if broker.subscription_group(group).is_some() {
        return Ok(());
    }
    if !broker.auto_create_subscription_group_enabled() {
        return Err(fail(
            ResponseCode::SUBSCRIPTION_GROUP_NOT_EXIST,
            format!(
                "subscription group [{group}] does not exist (autoCreateSubscriptionGroup=false)"
            ),
        ));
    }
    let config = serde_json::json!({
        "groupName": group,
        "consumeEnable": true,
        "consumeFromMinEnable": true,
        "consumeBroadcastEnable": true,
        "retryQueueNums": 1,
        "retryMaxTimes": DEFAULT_RETRY_MAX_TIMES,
        "brokerId": 0,
        "whichBrokerWhenConsumeSlowly": 1,
        "notifyConsumerIdsChangedEnable": true,
    });
    broker
        .auto_create_subscription_group(group, config)
        .await
        .map_err(|e| append_error(broker, e))?
        .map_err(|why| fail(ResponseCode::SUBSCRIPTION_GROUP_NOT_EXIST, why))
}

/// The subscription group's `retryMaxTimes`, RocketMQ's 16 when it has none.
pub(crate) fn retry_max_times(broker: &Broker, group: &str) -> i32 {
    broker
        .subscription_group(group)
        .and_then(|g| g.get("retryMaxTimes").and_then(|v| v.as_i64()))
        .map_or(DEFAULT_RETRY_MAX_TIMES, |n| n as i32)
}

/// `%RETRY%<group>`, created (through Raft) with RocketMQ's queue count and permissions.
async fn retry_topic(broker: &Broker, group: &str) -> Result<TopicConfig, ProcessError> {
    let queues = broker
        .subscription_group(group)
        .and_then(|g| g.get("retryQueueNums").and_then(|v| v.as_i64()))
        .unwrap_or(1)
        .clamp(1, 1024) as i32;
    system_topic(broker, derived_topic(RETRY_PREFIX, group)?, queues).await
}

/// `%DLQ%<group>`, created (through Raft) with one queue, readable and writable (as
/// RocketMQ 4.9.2 and later create it, so the DLQ can be read back and re-sent).
pub(crate) async fn dead_letter_topic(
    broker: &Broker,
    group: &str,
) -> Result<TopicConfig, ProcessError> {
    system_topic(broker, derived_topic(DLQ_PREFIX, group)?, 1).await
}

/// `%RETRY%<group>` or `%DLQ%<group>`, if it is a topic by RocketMQ's rules. A group may
/// have 255 characters, a topic only 127: a longer retry topic could not be routed or
/// pulled (its name is refused in those headers), so it is never created. `%RETRY%` is the
/// longer prefix: a group whose retry topic passes has a DLQ that passes too.
fn derived_topic(prefix: &str, group: &str) -> Result<String, ProcessError> {
    let topic = format!("{prefix}{group}");
    check_group(group)
        .and_then(|()| check_topic(&topic))
        .map_err(|e| {
            fail(
                ResponseCode::SYSTEM_ERROR,
                format!("no {prefix}<group> topic for this group: {e}"),
            )
        })?;
    Ok(topic)
}

async fn system_topic(
    broker: &Broker,
    topic: String,
    queues: i32,
) -> Result<TopicConfig, ProcessError> {
    broker
        .auto_create_topic(TopicConfig {
            topic_name: topic,
            read_queue_nums: queues,
            write_queue_nums: queues,
            perm: perm::READ_WRITE,
            ..TopicConfig::default()
        })
        .await
        .map_err(|e| append_error(broker, e))?
        .map_err(|why| fail(ResponseCode::SYSTEM_ERROR, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remark(result: Result<String, ProcessError>) -> String {
        match result {
            Err(ProcessError::Response(r)) => r.remark.unwrap_or_default(),
            Err(ProcessError::Header(e)) => panic!("{e}"),
            Ok(topic) => panic!("{topic} was accepted"),
        }
    }

    #[test]
    fn retry_and_dead_letter_topics_follow_the_topic_rule() {
        let longest = "g".repeat(120);
        assert_eq!(
            derived_topic(RETRY_PREFIX, &longest).ok(),
            Some(format!("%RETRY%{longest}"))
        );
        let too_long = remark(derived_topic(RETRY_PREFIX, &"g".repeat(121)));
        assert!(too_long.contains("longer than 127"), "{too_long}");
        // A client's re-send to `%RETRY%` names no group.
        assert!(remark(derived_topic(DLQ_PREFIX, "")).contains("is empty"));
    }
}
