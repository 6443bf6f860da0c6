//! Consumer offsets and queue bounds: QUERY_CONSUMER_OFFSET (14), UPDATE_CONSUMER_OFFSET
//! (15, oneway), GET_MAX_OFFSET (30), GET_MIN_OFFSET (31), SEARCH_OFFSET_BY_TIMESTAMP (29).
//!
//! Offsets a consumer commits to the leader are gathered and put in the Raft log every
//! `consumerOffsetCommitIntervalMs` (see `server::commit_offsets`), so every replica
//! holds them and a new leader answers queries with what was committed before it.

use remoting::header::{
    OffsetResponseHeader, QueryConsumerOffsetRequestHeader, QueueOffsetRequestHeader,
    SearchOffsetRequestHeader, UpdateConsumerOffsetRequestHeader,
};
use remoting::message::MessageRecord;
use remoting::{Connection, RemotingCommand, ResponseCode};
use tracing::debug;

use super::{fail, ProcessResult};
use crate::broker::Broker;

fn offset(offset: i64) -> RemotingCommand {
    RemotingCommand::success().with_header(&OffsetResponseHeader { offset })
}

/// QUERY_CONSUMER_OFFSET (14).
pub fn query(broker: &Broker, _conn: &Connection, request: &RemotingCommand) -> ProcessResult {
    let h: QueryConsumerOffsetRequestHeader = request.header()?;
    match broker.consumer_offset(&h.consumer_group, &h.topic, h.queue_id) {
        Some(o) => Ok(offset(o)),
        None => {
            // A new group on a queue that still holds its first message starts at 0, as
            // the Java broker answers; otherwise the client decides.
            let (min, _) = broker.queue_bounds(&h.topic, h.queue_id);
            if min == 0 || h.set_zero_if_not_found == Some(true) {
                Ok(offset(0))
            } else {
                Err(fail(
                    ResponseCode::QUERY_NOT_FOUND,
                    format!(
                        "no offset of group {} for {}:{}",
                        h.consumer_group, h.topic, h.queue_id
                    ),
                ))
            }
        }
    }
}

/// UPDATE_CONSUMER_OFFSET (15, oneway).
pub fn update(broker: &Broker, _conn: &Connection, request: &RemotingCommand) -> ProcessResult {
    let h: UpdateConsumerOffsetRequestHeader = request.header()?;
    if !broker.is_leader() {
        debug!(consumer_group = %h.consumer_group, "offset commit sent to a follower");
        return Ok(broker.not_leader_response());
    }
    broker.commit_offset(&h.consumer_group, &h.topic, h.queue_id, h.commit_offset);
    Ok(RemotingCommand::success())
}

/// GET_MAX_OFFSET (30).
pub fn max(broker: &Broker, _conn: &Connection, request: &RemotingCommand) -> ProcessResult {
    let h: QueueOffsetRequestHeader = request.header()?;
    Ok(offset(broker.queue_bounds(&h.topic, h.queue_id).1 as i64))
}

/// GET_MIN_OFFSET (31).
pub fn min(broker: &Broker, _conn: &Connection, request: &RemotingCommand) -> ProcessResult {
    let h: QueueOffsetRequestHeader = request.header()?;
    Ok(offset(broker.queue_bounds(&h.topic, h.queue_id).0 as i64))
}

/// SEARCH_OFFSET_BY_TIMESTAMP (29).
pub fn search_by_time(
    broker: &Broker,
    _conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let h: SearchOffsetRequestHeader = request.header()?;
    first_at_or_after(broker, &h).map(offset)
}

/// The first queue offset whose store time is at or after `timestamp` (the max offset
/// when none is), by binary search over the ConsumeQueue.
pub(super) fn first_at_or_after(
    broker: &Broker,
    h: &SearchOffsetRequestHeader,
) -> Result<i64, super::ProcessError> {
    let Some(queue) = broker.consume_queue(&h.topic, h.queue_id) else {
        return Ok(0);
    };
    let store_time = |queue_offset: u64| -> Result<i64, super::ProcessError> {
        let entry = queue
            .read(queue_offset, 1)
            .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))?;
        let entry = entry
            .first()
            .ok_or_else(|| fail(ResponseCode::SYSTEM_ERROR, "queue shrank during search"))?;
        let bytes = broker
            .read_commit_log(entry.commit_log_offset as u64, entry.size as usize)
            .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))?;
        let (record, _) = MessageRecord::decode(&bytes)
            .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))?;
        Ok(record.store_timestamp)
    };
    let (mut lo, mut hi) = (queue.min_offset(), queue.max_offset());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if store_time(mid)? < h.timestamp {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo as i64)
}
