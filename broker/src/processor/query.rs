//! QUERY_MESSAGE (12) and VIEW_MESSAGE_BY_ID (33): finding stored messages by key, by
//! unique key and by CommitLog offset (the offset message id).
//!
//! Both read only what this node has applied, so any member of the group answers, leader
//! or follower: every replica holds the same bytes at the same offsets and builds the
//! same index ([`crate::index`]). The index becomes readable with the batch that carries
//! the applied point (within 20 ms of the apply), as RocketMQ's index is built behind its
//! CommitLog. Every candidate the index gives is checked against the message itself
//! (topic, key, store time, and that its ConsumeQueue indexes it), so a hash collision or
//! an offset purged by retention is skipped, never answered. Messages are answered as a
//! pull answers them: QUEUEOFFSET and PHYSICALOFFSET filled in from the ConsumeQueue entry.

use remoting::header::{
    QueryMessageRequestHeader, QueryMessageResponseHeader, ViewMessageRequestHeader,
    UNIQUE_MSG_QUERY_FLAG,
};
use remoting::message::{patch_offsets, MessageRecord, MAGIC_V1, MAGIC_V2};
use remoting::{Connection, RemotingCommand, ResponseCode};
use tracing::debug;

use super::{fail, ProcessResult};
use crate::broker::Broker;
use crate::index;

/// RocketMQ's `maxMsgsNumBatch`: at most this many messages per key query.
pub const MAX_MSGS_NUM_BATCH: i32 = 64;
/// RocketMQ's `defaultQueryMaxNum`: what a unique-key query asks for, whatever it sends.
pub const DEFAULT_QUERY_MAX_NUM: i32 = 32;
/// Index entries read per RocksDB scan.
const CANDIDATE_PAGE: usize = 256;
/// At most this many index entries are checked per query: a bound on the work one query
/// can cause when most candidates fail their check (collisions, purged offsets).
const MAX_CANDIDATES: usize = 16 * 1024;

pub fn query(broker: &Broker, _conn: &Connection, request: &RemotingCommand) -> ProcessResult {
    let h: QueryMessageRequestHeader = request.header()?;
    if !broker.config().message_index_enable {
        return Err(fail(
            ResponseCode::SYSTEM_ERROR,
            "this broker keeps no message index (messageIndexEnable=false): query by key is off",
        ));
    }
    let unique = request
        .ext(UNIQUE_MSG_QUERY_FLAG)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let max_num = if unique {
        DEFAULT_QUERY_MAX_NUM
    } else {
        h.max_num.min(MAX_MSGS_NUM_BATCH)
    };
    if max_num < 1 {
        return Err(fail(
            ResponseCode::SYSTEM_ERROR,
            format!("maxNum must be at least 1, not {}", h.max_num),
        ));
    }
    let found = find(broker, &h, unique, max_num as usize)?;
    let store = broker.hook_store();
    let (last_time, last_offset) = index::last_indexed(&store).map_err(store_error)?;
    let header = QueryMessageResponseHeader {
        index_last_update_timestamp: last_time,
        index_last_update_phyoffset: last_offset as i64,
    };
    if found.is_empty() {
        return Ok(RemotingCommand::response(
            ResponseCode::QUERY_NOT_FOUND,
            Some("can not find message, maybe time range not correct".into()),
        )
        .with_header(&header));
    }
    let mut body = Vec::with_capacity(found.iter().map(|(_, b)| b.len()).sum());
    for (_, bytes) in found {
        body.extend_from_slice(&bytes);
    }
    Ok(RemotingCommand::response(ResponseCode::SUCCESS, None)
        .with_header(&header)
        .with_body(body))
}

/// Up to `max_num` messages matching the query, newest first as the index gives them,
/// then sorted by CommitLog offset (as RocketMQ answers).
fn find(
    broker: &Broker,
    h: &QueryMessageRequestHeader,
    unique: bool,
    max_num: usize,
) -> Result<Vec<(u64, Vec<u8>)>, super::ProcessError> {
    let store = broker.hook_store();
    let mut found: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    let mut checked = 0usize;
    while found.len() < max_num && checked < MAX_CANDIDATES {
        let index::Page { candidates, next } = index::candidates(
            &store,
            &h.topic,
            &h.key,
            h.begin_timestamp,
            h.end_timestamp,
            after.as_deref(),
            CANDIDATE_PAGE,
        )
        .map_err(store_error)?;
        checked += candidates.len();
        for (_, offset) in candidates {
            match read_queued(broker, offset) {
                Ok(bytes) if matches(&bytes, h, unique) => found.push((offset, bytes)),
                Ok(_) => {
                    debug!(offset, key = %h.key, "index candidate is another key's (hash collision)")
                }
                Err(why) => debug!(offset, key = %h.key, %why, "index candidate skipped"),
            }
            if found.len() == max_num {
                break;
            }
        }
        match next {
            Some(key) => after = Some(key),
            None => break,
        }
    }
    found.sort_by_key(|(offset, _)| *offset);
    Ok(found)
}

/// Whether a stored message is what the query asks for.
fn matches(bytes: &[u8], h: &QueryMessageRequestHeader, unique: bool) -> bool {
    let Ok((msg, _)) = MessageRecord::decode(bytes) else {
        return false;
    };
    msg.topic == h.topic
        && (h.begin_timestamp..=h.end_timestamp).contains(&msg.store_timestamp)
        && index::has_key(&msg, &h.key, unique)
}

pub fn view_by_id(broker: &Broker, _conn: &Connection, request: &RemotingCommand) -> ProcessResult {
    let h: ViewMessageRequestHeader = request.header()?;
    let offset = u64::try_from(h.offset).map_err(|_| not_found(h.offset, "negative offset"))?;
    let bytes = read_queued(broker, offset).map_err(|why| not_found(h.offset, why))?;
    Ok(RemotingCommand::response(ResponseCode::SUCCESS, None).with_body(bytes))
}

fn not_found(offset: i64, why: impl std::fmt::Display) -> super::ProcessError {
    fail(
        ResponseCode::SYSTEM_ERROR,
        format!("can not find message by the offset, {offset}: {why}"),
    )
}

fn store_error(e: dledger::DLedgerError) -> super::ProcessError {
    fail(
        ResponseCode::SYSTEM_ERROR,
        format!("reading the message index: {e}"),
    )
}

/// The message stored at `offset`, as a pull would answer it (offsets filled in), if a
/// message this node has applied and queued starts there. Anything else (an offset inside
/// a message, past what is applied here, below the CommitLog's first position, a record
/// that no ConsumeQueue indexes) is refused with the reason.
pub(crate) fn read_queued(broker: &Broker, offset: u64) -> Result<Vec<u8>, String> {
    let node = broker.node();
    // Below the retention point counts as purged even before this node's purge ran.
    let start = node.start_position().max(broker.retention_point());
    if offset < start {
        return Err(format!(
            "below the CommitLog's first position {start} (purged)"
        ));
    }
    let applied = node.applied_position();
    if offset >= applied {
        return Err(format!(
            "not applied on this node (applied up to {applied})"
        ));
    }
    let head = broker
        .read_commit_log(offset, 8)
        .map_err(|e| e.to_string())?;
    if head.len() < 8 {
        return Err("past the end of the CommitLog".into());
    }
    let size = u32::from_be_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
    let magic = u32::from_be_bytes(head[4..8].try_into().expect("4 bytes"));
    let max = broker.config().max_message_bytes + 64 * 1024;
    if (magic != MAGIC_V1 && magic != MAGIC_V2) || size > max {
        return Err("no message starts there".into());
    }
    let mut bytes = broker
        .read_commit_log(offset, size)
        .map_err(|e| e.to_string())?;
    let (topic, queue_id) = {
        let (msg, _) = MessageRecord::decode(&bytes).map_err(|e| e.to_string())?;
        (msg.topic.to_string(), msg.queue_id)
    };
    let queue = broker
        .consume_queue(&topic, queue_id)
        .ok_or("no ConsumeQueue indexes it")?;
    let found = queue.find(offset as i64).map_err(|e| e.to_string())?;
    match found {
        Some((queue_offset, entry)) if entry.size as usize == size => {
            patch_offsets(&mut bytes, queue_offset as i64, offset as i64);
            Ok(bytes)
        }
        _ => Err("no queued message starts there".into()),
    }
}
