//! Which messages a pull may return: the subscription a PULL_MESSAGE names, and the
//! broker's half of SQL92 filtering.
//!
//! As RocketMQ's `PullMessageProcessor`: a pull with the subscription flag brings its
//! expression and type in the header (a SQL92 one that does not compile is answered
//! SUBSCRIPTION_PARSE_FAILED); without it the group's subscription from heartbeats is
//! used (a SQL92 one that does not compile is answered FILTER_DATA_NOT_EXIST). A SQL92
//! subscription on a broker with `enablePropertyFilter=false` gets SYSTEM_ERROR "The
//! broker does not support consumer to filter message by SQL92".
//!
//! A SQL92 expression is compiled once per pull (not per message) and evaluated on each
//! candidate record's properties, read from the CommitLog; like RocketMQ's
//! `ExpressionMessageFilter`, only TRUE matches. Records that do not match are passed
//! over: the answer's next offset is past every entry examined, so a consumer never pulls
//! the same non-matching messages twice (PULL_RETRY_IMMEDIATELY when none matched).
//! The TAG path does not come here per message: it keeps its hash filter in `pull.rs`.

use bytes::BytesMut;
use remoting::filter::{TagFilter, EXPRESSION_TYPE_TAG};
use remoting::header::PullMessageRequestHeader;
use remoting::message::{patch_offsets, MessageRecord, MAGIC_V1, MAGIC_V2};
use remoting::sql92::{PropertiesString, Sql92Filter, EXPRESSION_TYPE_SQL92};
use remoting::ResponseCode;

use super::pull::{corrupt, Outcome, FLAG_SUBSCRIPTION};
use super::{fail, ProcessError};
use crate::broker::Broker;
use crate::consume_queue::ConsumeQueue;

/// Most ConsumeQueue entries one SQL92 pull examines (RocketMQ's `getMessage` looks at
/// up to 16,000 bytes of ConsumeQueue, 800 entries).
pub const SQL92_SCAN_ENTRIES: usize = 800;
/// Most CommitLog bytes one SQL92 pull reads to evaluate, past the first record.
pub const SQL92_SCAN_BYTES: usize = 16 << 20;

/// A pull's subscription.
pub enum Subscription {
    Tag(TagFilter),
    Sql92(Sql92Filter),
}

/// RocketMQ's `ExpressionType.isTagType`: no type, empty, or `TAG`.
pub fn is_tag_type(expression_type: Option<&str>) -> bool {
    matches!(expression_type, None | Some("") | Some(EXPRESSION_TYPE_TAG))
}

/// Compiles a non-TAG subscription: SQL92 is the one type RocketMQ 4.9.8 registers.
pub fn compile(expression_type: &str, expression: &str) -> Result<Sql92Filter, String> {
    if expression_type != EXPRESSION_TYPE_SQL92 {
        return Err(format!("unknown expression type `{expression_type}`"));
    }
    if expression.is_empty() {
        return Err(format!("Expression can't be null! {expression_type}"));
    }
    Sql92Filter::parse(expression).map_err(|e| e.to_string())
}

/// The subscription of this pull, as RocketMQ's `PullMessageProcessor` finds it.
pub fn resolve(
    broker: &Broker,
    header: &PullMessageRequestHeader,
) -> Result<Subscription, ProcessError> {
    let from_header = header.sys_flag & FLAG_SUBSCRIPTION != 0;
    let (expression, expression_type) = match (&header.subscription, from_header) {
        (Some(expression), true) => (expression.clone(), header.expression_type.clone()),
        _ => match broker
            .clients()
            .subscription(&header.consumer_group, &header.topic)
        {
            Some(s) => (s.sub_string, Some(s.expression_type)),
            None => return Ok(Subscription::Tag(TagFilter::parse("*"))),
        },
    };
    if is_tag_type(expression_type.as_deref()) {
        return Ok(Subscription::Tag(TagFilter::parse(&expression)));
    }
    let expression_type = expression_type.unwrap_or_default();
    let filter = compile(&expression_type, &expression).map_err(|why| {
        if from_header {
            fail(
                ResponseCode::SUBSCRIPTION_PARSE_FAILED,
                format!("parse the consumer's subscription failed: {why}"),
            )
        } else {
            fail(
                ResponseCode::FILTER_DATA_NOT_EXIST,
                format!("The broker's consumer filter data is not exist!Your expression may be wrong! {why}"),
            )
        }
    })?;
    if !broker.config().enable_property_filter {
        return Err(fail(
            ResponseCode::SYSTEM_ERROR,
            format!("The broker does not support consumer to filter message by {expression_type}"),
        ));
    }
    Ok(Subscription::Sql92(filter))
}

/// Reads up to `max_nums` records from `offset` on whose properties `filter` is TRUE.
/// The caller has checked that `offset` lies within the queue.
pub(super) fn scan_sql92(
    broker: &Broker,
    queue: &ConsumeQueue,
    offset: u64,
    max_nums: usize,
    max_bytes: usize,
    filter: &Sql92Filter,
) -> Result<Outcome, ProcessError> {
    let entries = queue
        .read(offset, SQL92_SCAN_ENTRIES)
        .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))?;
    let mut body = BytesMut::new();
    let (mut taken, mut scanned, mut next) = (0usize, 0usize, offset);
    let mut pulled_end = 0;
    for (i, entry) in entries.iter().enumerate() {
        let size = entry.size as usize;
        if taken == max_nums
            || (taken > 0 && body.len() + size > max_bytes)
            || (i > 0 && scanned + size > SQL92_SCAN_BYTES)
        {
            break;
        }
        next = offset + i as u64 + 1;
        scanned += size;
        let record = broker
            .read_commit_log(entry.commit_log_offset as u64, size)
            .map_err(|e| {
                fail(
                    ResponseCode::SYSTEM_ERROR,
                    format!("reading the CommitLog: {e}"),
                )
            })?;
        if record.len() != size || record.len() < 8 {
            return Err(corrupt(entry, "short read"));
        }
        let stored_size = i32::from_be_bytes(record[0..4].try_into().unwrap());
        let magic = u32::from_be_bytes(record[4..8].try_into().unwrap());
        if stored_size != entry.size || (magic != MAGIC_V1 && magic != MAGIC_V2) {
            return Err(corrupt(
                entry,
                "record does not match its ConsumeQueue entry",
            ));
        }
        let (decoded, _) =
            MessageRecord::decode(&record).map_err(|_| corrupt(entry, "record does not decode"))?;
        if !filter.matches(&PropertiesString(decoded.properties)) {
            continue;
        }
        let start = body.len();
        body.extend_from_slice(&record);
        patch_offsets(
            &mut body[start..],
            offset as i64 + i as i64,
            entry.commit_log_offset,
        );
        taken += 1;
        pulled_end = entry.commit_log_offset as u64 + size as u64;
    }
    Ok(if taken > 0 {
        Outcome::Found {
            pulled_end,
            body,
            next,
            count: taken as u64,
        }
    } else {
        Outcome::NoMatch { next }
    })
}
