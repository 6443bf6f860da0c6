//! Progress figures: GET_TOPIC_STATS_INFO (202, `mqadmin topicStatus`), GET_CONSUME_STATS
//! (208, `mqadmin consumerProgress`) and QUERY_TOPIC_CONSUME_BY_WHO (300).
//!
//! Any member answers from what it has applied (the leader also counts offset commits it
//! has not yet put in the log), as RocketMQ's slaves answer from theirs; the admin tools ask
//! the leader (brokerId 0). Queue bounds and offsets are RocketMQ's: `maxOffset` is one past
//! the last message, a group without an offset in a queue shows 0.

use std::collections::BTreeSet;

use remoting::admin_body::{ConsumeStats, GroupList, OffsetWrapper, TopicOffset, TopicStatsTable};
use remoting::header::{GetConsumeStatsRequestHeader, TopicRequestHeader};
use remoting::queue_lock::MessageQueueData;
use remoting::route::to_json;
use remoting::{Connection, RemotingCommand, ResponseCode};

use super::{fail, ProcessResult};
use crate::broker::Broker;

fn queue(broker: &Broker, topic: &str, queue_id: i32) -> MessageQueueData {
    MessageQueueData {
        topic: topic.to_string(),
        broker_name: broker.config().broker_name.clone(),
        queue_id,
    }
}

/// GET_TOPIC_STATS_INFO (202): each write queue's bounds and its last store time.
pub fn topic_stats(
    broker: &Broker,
    _conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let h: TopicRequestHeader = request.header()?;
    let Some(config) = broker.topic(&h.topic) else {
        return Err(fail(
            ResponseCode::TOPIC_NOT_EXIST,
            format!("topic[{}] not exist", h.topic),
        ));
    };
    let mut table = TopicStatsTable::default();
    for queue_id in 0..config.write_queue_nums {
        let (min, max) = broker.queue_bounds(&h.topic, queue_id);
        let last = match max {
            0 => 0,
            max => broker
                .store_timestamp(&h.topic, queue_id, max - 1)
                .unwrap_or(0),
        };
        table.offset_table.0.insert(
            queue(broker, &h.topic, queue_id),
            TopicOffset {
                min_offset: min as i64,
                max_offset: max as i64,
                last_update_timestamp: last,
            },
        );
    }
    Ok(RemotingCommand::success().with_body(table.encode()))
}

/// GET_CONSUME_STATS (208): the group's offset against each read queue's end, in the
/// topic asked or in every topic the group has offsets in. As in RocketMQ, a topic the
/// group's live members do not subscribe to is left out when they subscribe to others.
/// `consumeTps` is the group's get rate over the last minute in those topics, as RocketMQ
/// takes it (the `GROUP_GET_NUMS` stats item, [`crate::stats_items`]).
pub fn consume_stats(
    broker: &Broker,
    _conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let h: GetConsumeStatsRequestHeader = request.header()?;
    let group = h.consumer_group;
    let offsets = broker.offsets_of_group(&group);
    let topics: BTreeSet<String> = match h.topic.filter(|t| !t.trim().is_empty()) {
        Some(topic) => [topic].into(),
        None => offsets.keys().map(|(topic, _)| topic.clone()).collect(),
    };
    let subscribed = broker.clients().has_subscriptions(&group);
    let mut stats = ConsumeStats::default();
    for topic in topics {
        let Some(config) = broker.topic(&topic) else {
            continue;
        };
        if subscribed && broker.clients().subscription(&group, &topic).is_none() {
            continue;
        }
        for queue_id in 0..config.read_queue_nums {
            let (_, max) = broker.queue_bounds(&topic, queue_id);
            let consumer_offset = offsets
                .get(&(topic.clone(), queue_id))
                .copied()
                .unwrap_or(0)
                .max(0);
            let last_timestamp = match consumer_offset {
                0 => 0,
                o => broker
                    .store_timestamp(&topic, queue_id, o as u64 - 1)
                    .unwrap_or(0),
            };
            stats.offset_table.0.insert(
                queue(broker, &topic, queue_id),
                OffsetWrapper {
                    broker_offset: max as i64,
                    consumer_offset,
                    last_timestamp,
                },
            );
        }
        let key = format!("{topic}@{group}");
        let rate = broker
            .stats_items()
            .view(crate::stats_items::GROUP_GET_NUMS, &key, "")
            .map_or(0.0, |d| d.stats_minute.tps);
        stats.consume_tps += rate;
    }
    Ok(RemotingCommand::success().with_body(stats.encode()))
}

/// QUERY_TOPIC_CONSUME_BY_WHO (300): the groups with a live member subscribed to the topic
/// or with an offset in it.
pub fn consumed_by(
    broker: &Broker,
    _conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let h: TopicRequestHeader = request.header()?;
    let mut groups = broker.clients().groups_subscribing(&h.topic);
    groups.extend(broker.groups_with_offsets_in(&h.topic));
    Ok(RemotingCommand::success().with_body(to_json(&GroupList { group_list: groups })))
}
