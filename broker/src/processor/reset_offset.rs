//! INVOKE_BROKER_TO_RESET_OFFSET (222, `mqadmin resetOffsetByTime`): moves a consumer
//! group's offsets in a topic to the first message stored at or after a time (`-1`: the
//! end of each queue).
//!
//! Offsets are facts a new leader must know, so the reset goes through the group's Raft log
//! like every offset commit: only the leader takes it, and it answers once the new offsets
//! are committed (`Broker::reset_offsets`). Then, as RocketMQ does, each live client of the
//! group is told with RESET_CONSUMER_CLIENT_OFFSET (220, oneway, RocketMQ's
//! `ResetOffsetBody`), so it drops what it holds and does not commit its old position over
//! the reset. Unlike RocketMQ, a group with no live client is reset too (RocketMQ answers
//! CONSUMER_NOT_ONLINE and leaves the offsets; `mqadmin` then falls back to
//! UPDATE_CONSUMER_OFFSET per queue, which lands in the same place).
//!
//! Without `isForce`, a queue's offset only moves back (RocketMQ's rule): a time past the
//! group's position leaves it where it is.

use remoting::admin_body::ResetOffsetBody;
use remoting::header::{ResetOffsetRequestHeader, SearchOffsetRequestHeader};
use remoting::queue_lock::MessageQueueData;
use remoting::{Connection, RemotingCommand, RequestCode, ResponseCode};
use tracing::{debug, info};

use super::{fail, ProcessResult};
use crate::broker::Broker;

/// INVOKE_BROKER_TO_RESET_OFFSET (222), leader only.
pub async fn handle(
    broker: &Broker,
    conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let h: ResetOffsetRequestHeader = request.header()?;
    let Some(config) = broker.topic(&h.topic) else {
        return Err(fail(
            ResponseCode::SYSTEM_ERROR,
            format!(
                "[reset-offset] reset offset failed, no topic in this broker. topic={}",
                h.topic
            ),
        ));
    };
    let known = broker.offsets_of_group(&h.group);
    if !known.keys().any(|(topic, _)| *topic == h.topic) {
        return Err(fail(
            ResponseCode::SYSTEM_ERROR,
            format!(
                "THe consumer group <{}> not exist (no offset in topic {})",
                h.group, h.topic
            ),
        ));
    }
    let mut body = ResetOffsetBody::default();
    let mut offsets = Vec::new();
    for queue_id in 0..config.write_queue_nums {
        let target = target_offset(broker, &h, queue_id)?;
        let offset = match known.get(&(h.topic.clone(), queue_id)) {
            Some(&current) if !h.is_force && target >= current => current,
            _ => target,
        };
        offsets.push((queue_id, offset));
        body.offset_table.0.insert(
            MessageQueueData {
                topic: h.topic.clone(),
                broker_name: broker.config().broker_name.clone(),
                queue_id,
            },
            offset,
        );
    }
    broker
        .reset_offsets(&h.group, &h.topic, &offsets)
        .await
        .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))?;
    info!(consumer_group = %h.group, topic = %h.topic, timestamp = h.timestamp, force = h.is_force, by = %conn.peer(), "consumer offsets reset through the log");
    let encoded = body.encode();
    tell_clients(broker, &h, &encoded).await;
    Ok(RemotingCommand::success().with_body(encoded))
}

/// The queue offset the time asks for: the end for -1, else the first message stored at or
/// after it.
fn target_offset(
    broker: &Broker,
    h: &ResetOffsetRequestHeader,
    queue_id: i32,
) -> Result<i64, super::ProcessError> {
    if h.timestamp == -1 {
        return Ok(broker.queue_bounds(&h.topic, queue_id).1 as i64);
    }
    super::offset::first_at_or_after(
        broker,
        &SearchOffsetRequestHeader {
            topic: h.topic.clone(),
            queue_id,
            timestamp: h.timestamp,
        },
    )
}

/// RESET_CONSUMER_CLIENT_OFFSET (220, oneway) to each live client of the group.
async fn tell_clients(broker: &Broker, h: &ResetOffsetRequestHeader, body: &[u8]) {
    let header = ResetOffsetRequestHeader {
        topic: h.topic.clone(),
        group: h.group.clone(),
        timestamp: h.timestamp,
        is_force: false,
    };
    for (client_id, client) in broker.clients().consumers(&h.group) {
        let request = RemotingCommand::request(RequestCode::RESET_CONSUMER_CLIENT_OFFSET, &header)
            .with_body(body.to_vec());
        match client.oneway(request).await {
            Ok(()) => info!(consumer_group = %h.group, %client_id, "told a client of the reset"),
            Err(e) => {
                debug!(consumer_group = %h.group, %client_id, error = %e, "could not tell a client of the reset")
            }
        }
    }
}
