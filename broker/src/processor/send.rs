//! SEND_MESSAGE (10), SEND_MESSAGE_V2 (310), SEND_BATCH_MESSAGE (320).
//!
//! The leader encodes each message as a CommitLog record and appends it through
//! dledger, whose batcher puts concurrent sends into one Raft entry (group commit). The
//! answer is SEND_OK only once that entry is committed and applied, so it carries the
//! queue offset. A follower answers at once with the leader's address. When the append's
//! outcome is unknown (it timed out after entering the log) the answer is
//! FLUSH_SLAVE_TIMEOUT: "may be stored", which clients must treat as unknown, never as
//! failed.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use dledger::DLedgerError;
use remoting::header::{
    SendMessageRequestHeader, SendMessageRequestHeaderV2, SendMessageResponseHeader,
};
use remoting::message::{
    decode_batch, encode_properties, message_id, properties_iter, property, property_value,
    property_values, MessageRecord,
};
use remoting::route::perm;
use remoting::{Connection, RemotingCommand, RequestCode, ResponseCode};
use tracing::warn;

use super::{fail, ProcessError, ProcessResult};
use crate::broker::{Broker, DEFAULT_TOPIC};
use crate::metrics::MessageType;
use crate::schedule;
use crate::store::Applied;
use crate::transaction;

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub async fn handle(
    broker: &Broker,
    conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let code = RequestCode::from_i32(request.code).unwrap_or(RequestCode::SEND_MESSAGE);
    // RocketMQ's broker reads SEND_BATCH_MESSAGE headers as V2; accept V1 names too.
    let header: SendMessageRequestHeader = match code {
        RequestCode::SEND_MESSAGE_V2 => request.header::<SendMessageRequestHeaderV2>()?.into(),
        RequestCode::SEND_BATCH_MESSAGE => match request.header::<SendMessageRequestHeaderV2>() {
            Ok(v2) => v2.into(),
            // With V2 names present, their error (a bad topic) is the one to tell.
            Err(e) if request.ext("b").is_some() => return Err(e.into()),
            Err(_) => request.header()?,
        },
        _ => request.header()?,
    };
    // `brokerPermission` without write (UPDATE_BROKER_CONFIG): RocketMQ's refusal.
    if broker.broker_permission() & perm::WRITE == 0 {
        return Err(fail(
            ResponseCode::NO_PERMISSION,
            format!(
                "the broker[{}] sending message is forbidden",
                broker.config().broker_name
            ),
        ));
    }
    // The header's names were checked as it was read (`remoting::names`).
    if remoting::names::NOT_ALLOWED_SEND_TOPICS.contains(&header.topic.as_str())
        || schedule::is_schedule_topic(&header.topic)
    {
        return Err(fail(
            ResponseCode::NO_PERMISSION,
            format!("Sending message to topic[{}] is forbidden.", header.topic),
        ));
    }
    if header.topic == DEFAULT_TOPIC {
        return Err(fail(
            ResponseCode::NO_PERMISSION,
            format!("{DEFAULT_TOPIC} is the default topic and cannot be sent to"),
        ));
    }
    let prepared =
        transaction::is_prepared(header.sys_flag, header.properties.as_deref().unwrap_or(""));
    if prepared {
        check_half_group(header.properties.as_deref().unwrap_or(""))?;
    }
    refuse_if_disk_full(broker)?;
    let topic = match broker
        .topic_or_create(&header.topic, header.default_topic_queue_nums)
        .await
    {
        Ok(Ok(t)) => t,
        Ok(Err(why)) => return Err(fail(ResponseCode::TOPIC_NOT_EXIST, why)),
        Err(e) => return Err(append_error(broker, e)),
    };
    if topic.perm & perm::WRITE == 0 {
        return Err(fail(
            ResponseCode::NO_PERMISSION,
            format!("topic[{}] is not writable", header.topic),
        ));
    }
    let queue_id = if header.queue_id < 0 {
        broker.next_queue_id(topic.write_queue_nums)
    } else {
        header.queue_id
    };
    if queue_id >= topic.write_queue_nums {
        return Err(fail(
            ResponseCode::SYSTEM_ERROR,
            format!(
                "request queueId[{queue_id}] is illegal, topic {} has {} write queues",
                header.topic, topic.write_queue_nums
            ),
        ));
    }

    let store_timestamp = now_ms();
    let born_host = conn.peer();
    let batch = code == RequestCode::SEND_BATCH_MESSAGE || header.batch == Some(true);
    // A half is stored with its transaction type cleared, as RocketMQ stores it.
    let sys_flag = match prepared {
        true => transaction::reset_transaction_type(header.sys_flag, 0),
        false => header.sys_flag,
    };
    let dest = match prepared {
        true => half_destination(broker, &header, queue_id, store_timestamp, batch).await?,
        false => destination(broker, &header, queue_id, store_timestamp, batch).await?,
    };
    let mut records: Vec<Bytes> = Vec::new();
    let mut encode = |body: &[u8], properties: &str, flag: i32| -> Result<(), ProcessError> {
        let max_message_bytes = broker.config().max_message_bytes;
        if body.len() > max_message_bytes {
            return Err(fail(
                ResponseCode::MESSAGE_ILLEGAL,
                format!(
                    "message body of {} bytes exceeds maxMessageSize {max_message_bytes}",
                    body.len(),
                ),
            ));
        }
        let record = MessageRecord {
            topic: &dest.topic,
            queue_id: dest.queue_id,
            flag,
            queue_offset: 0,
            commit_log_offset: 0,
            sys_flag,
            born_timestamp: header.born_timestamp,
            born_host,
            store_timestamp,
            store_host: broker.store_host(),
            reconsume_times: header.reconsume_times.unwrap_or(0),
            prepared_transaction_offset: 0,
            body,
            properties,
            body_crc: 0,
        };
        let mut buf = BytesMut::with_capacity(record.encoded_len().map_err(bad_record)?);
        record.encode(&mut buf).map_err(bad_record)?;
        records.push(buf.freeze());
        Ok(())
    };
    // The Java broker takes a batch by the header's flag, not the code: Apache's C++
    // client sends its batches as SEND_MESSAGE_V2 with `m` (batch) true.
    if batch {
        let batch = decode_batch(&request.body).map_err(|e| {
            fail(
                ResponseCode::MESSAGE_ILLEGAL,
                format!("bad batch body: {e}"),
            )
        })?;
        if batch.is_empty() {
            return Err(fail(ResponseCode::MESSAGE_ILLEGAL, "empty batch"));
        }
        for m in &batch {
            check_batched(m.properties)?;
            encode(m.body, m.properties, m.flag)?;
        }
    } else {
        encode(&request.body, &dest.properties, header.flag)?;
    }

    let (count, bytes) = (records.len(), records.iter().map(Bytes::len).sum::<usize>());
    let appended = broker
        .append(records)
        .await
        .map_err(|e| append_error(broker, e))?;
    let kind = MessageType::of_send(prepared, header.properties.as_deref().unwrap_or(""));
    (broker.metrics().traffic).record_in(&header.topic, kind, count, bytes);
    if let Some(group) = header.topic.strip_prefix(RETRY_PREFIX) {
        if dest.topic.starts_with(DLQ_PREFIX) {
            broker.metrics().events.dead_letter(group, &header.topic);
        }
    }
    let mut msg_ids = Vec::with_capacity(appended.len());
    let mut first_queue_offset = None;
    for record in &appended {
        msg_ids.push(message_id(
            broker.store_host(),
            record.commit_log_offset as i64,
        ));
        let Applied::Queued { queue_offset } = record.applied else {
            return Err(fail(
                ResponseCode::SYSTEM_ERROR,
                "the stored message was not queued",
            ));
        };
        first_queue_offset.get_or_insert(queue_offset as i64);
    }
    Ok(
        RemotingCommand::success().with_header(&SendMessageResponseHeader {
            msg_id: msg_ids.join(","),
            queue_id,
            queue_offset: first_queue_offset.unwrap_or(0),
            transaction_id: None,
        }),
    )
}

/// Where a send is stored: its topic and queue; a retry past its limit in the group's
/// DLQ; a delayed or timer message in its schedule queue until due.
struct Destination<'a> {
    topic: Cow<'a, str>,
    queue_id: i32,
    properties: Cow<'a, str>,
}

async fn destination<'a>(
    broker: &Broker,
    header: &'a SendMessageRequestHeader,
    queue_id: i32,
    store_timestamp: i64,
    batch: bool,
) -> Result<Destination<'a>, ProcessError> {
    let properties = header.properties.as_deref().unwrap_or("");
    check_reserved(properties)?;
    // A client's own re-send of a failed message (the fallback when CONSUMER_SEND_MSG_BACK
    // fails) past its limit goes to the DLQ, as the Java broker sends it.
    if let Some(group) = header.topic.strip_prefix(RETRY_PREFIX) {
        let max = header
            .max_reconsume_times
            .unwrap_or_else(|| super::send_back::retry_max_times(broker, group));
        if header.reconsume_times.unwrap_or(0) >= max {
            let dlq = super::send_back::dead_letter_topic(broker, group).await?;
            let kept =
                properties_iter(properties).filter(|(k, _)| *k != property::DELAY_TIME_LEVEL);
            return Ok(Destination {
                topic: dlq.topic_name.into(),
                queue_id: 0,
                properties: encode_properties(kept).into(),
            });
        }
    }
    let config = broker.config();
    let plan = schedule::plan(
        properties,
        store_timestamp as u64,
        broker.delay_levels_ms(),
        config.timer_max_delay_sec.saturating_mul(1000),
    )
    .map_err(|e| fail(ResponseCode::MESSAGE_ILLEGAL, e))?;
    match plan {
        schedule::Plan::Now => Ok(Destination {
            topic: header.topic.as_str().into(),
            queue_id,
            properties: properties.into(),
        }),
        schedule::Plan::Later { .. } if batch => Err(fail(
            ResponseCode::MESSAGE_ILLEGAL,
            "a batch cannot be delayed; send delayed and timer messages one by one",
        )),
        schedule::Plan::Later {
            topic,
            queue_id: schedule_queue,
            due_ms,
        } => {
            let levels = broker.delay_levels_ms().len();
            broker
                .create_topic(schedule::schedule_topic_config(topic, levels))
                .await
                .map_err(|e| append_error(broker, e))?;
            Ok(Destination {
                topic: topic.into(),
                queue_id: schedule_queue,
                properties: schedule::scheduled_properties(
                    properties,
                    &header.topic,
                    queue_id,
                    due_ms,
                )
                .into(),
            })
        }
    }
}

/// A property only the broker writes.
fn check_reserved(properties: &str) -> Result<(), ProcessError> {
    let reserved = [schedule::TIMER_ORIGIN, transaction::TRANSACTION_ORIGIN];
    let found = property_values(properties, reserved);
    for (reserved, found) in reserved.into_iter().zip(found) {
        if found.is_some() {
            return Err(fail(
                ResponseCode::MESSAGE_ILLEGAL,
                format!("the property {reserved} is reserved for the broker"),
            ));
        }
    }
    Ok(())
}

/// A message in a batch may not ask for a schedule (RocketMQ refuses delayed batches).
fn check_batched(properties: &str) -> Result<(), ProcessError> {
    check_reserved(properties)?;
    if transaction::is_prepared(0, properties) {
        return Err(fail(
            ResponseCode::MESSAGE_ILLEGAL,
            "a batch cannot hold transactional (prepared) messages; the batch was not stored",
        ));
    }
    match schedule::plan(properties, 0, &[0], u64::MAX) {
        Ok(schedule::Plan::Now) => Ok(()),
        _ => Err(fail(
            ResponseCode::MESSAGE_ILLEGAL,
            "a batch cannot hold delayed or timer messages; send them one by one",
        )),
    }
}

/// A prepared send's own `PGROUP` property names the group its half is kept for (through
/// the log into the half index, `transaction::half_state`), so it follows the group rule as
/// the header's group does.
fn check_half_group(properties: &str) -> Result<(), ProcessError> {
    match property_value(properties, property::PRODUCER_GROUP) {
        Some(group) => remoting::names::check_group(group).map_err(|e| {
            fail(
                ResponseCode::SYSTEM_ERROR,
                format!("property {}: {e}", property::PRODUCER_GROUP),
            )
        }),
        None => Ok(()),
    }
}

/// Where a prepared (transactional) send is stored: as a half message in
/// `RMQ_SYS_TRANS_HALF_TOPIC`, naming its real topic and queue ([`transaction`]). A batch
/// or a delayed message cannot be prepared.
async fn half_destination<'a>(
    broker: &Broker,
    header: &'a SendMessageRequestHeader,
    queue_id: i32,
    store_timestamp: i64,
    batch: bool,
) -> Result<Destination<'a>, ProcessError> {
    let properties = header.properties.as_deref().unwrap_or("");
    check_reserved(properties)?;
    if batch {
        return Err(fail(
            ResponseCode::MESSAGE_ILLEGAL,
            "a batch cannot be a transactional (prepared) message; the batch was not stored",
        ));
    }
    let plan = schedule::plan(properties, store_timestamp as u64, &[0], u64::MAX);
    if !matches!(plan, Ok(schedule::Plan::Now)) {
        return Err(fail(
            ResponseCode::MESSAGE_ILLEGAL,
            "a transactional (prepared) message cannot be delayed; the message was not stored",
        ));
    }
    broker
        .create_topic(transaction::system_topic_config(transaction::HALF_TOPIC))
        .await
        .map_err(|e| append_error(broker, e))?;
    Ok(Destination {
        topic: transaction::HALF_TOPIC.into(),
        queue_id: 0,
        properties: transaction::half_properties(
            properties,
            &header.topic,
            queue_id,
            &header.producer_group,
        )
        .into(),
    })
}

/// `%RETRY%<group>`: where a group's failed messages wait for their next try.
pub(crate) const RETRY_PREFIX: &str = "%RETRY%";
/// `%DLQ%<group>`: where a group's messages go after their last try.
pub(crate) const DLQ_PREFIX: &str = "%DLQ%";

fn bad_record(e: remoting::Error) -> ProcessError {
    fail(ResponseCode::MESSAGE_ILLEGAL, e.to_string())
}

pub(crate) fn append_error(broker: &Broker, e: DLedgerError) -> ProcessError {
    match e {
        DLedgerError::NotLeader { .. } => {
            ProcessError::Response(Box::new(broker.not_leader_response()))
        }
        DLedgerError::TooLarge { .. } | DLedgerError::InvalidRecord { .. } => {
            fail(ResponseCode::MESSAGE_ILLEGAL, e.to_string())
        }
        // Handed to Raft, then no answer: the deadline passed, or the core stopped (a full
        // disk, an I/O error) after proposing; the entry may still be committed by the
        // others. Never answered as a plain failure, which a producer would retry.
        DLedgerError::Timeout { .. }
        | DLedgerError::Raft { .. }
        | DLedgerError::Shutdown { .. } => fail(
            ResponseCode::FLUSH_SLAVE_TIMEOUT,
            format!("{e}: the message may or may not be stored"),
        ),
        other => {
            warn!(error = %other, "append failed");
            fail(ResponseCode::SERVICE_NOT_AVAILABLE, other.to_string())
        }
    }
}

/// Refuses a client write that appends data while the store's disk is above
/// `diskSpaceWarningLevelRatio` (RocketMQ's SERVICE_NOT_AVAILABLE "the broker's disk is
/// full"); accepted again once the usage falls below it (`crate::disk`).
pub(crate) fn refuse_if_disk_full(broker: &Broker) -> Result<(), super::ProcessError> {
    if broker.disk().is_full() {
        return Err(fail(
            ResponseCode::SERVICE_NOT_AVAILABLE,
            broker.disk().full_remark(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prepared_sends_own_producer_group_follows_the_group_rule() {
        assert!(check_half_group("").is_ok());
        assert!(check_half_group(&encode_properties([(property::PRODUCER_GROUP, "pg")])).is_ok());
        let bad = encode_properties([(property::PRODUCER_GROUP, "p\0g")]);
        match check_half_group(&bad) {
            Err(ProcessError::Response(r)) => {
                let remark = r.remark.unwrap_or_default();
                assert!(
                    remark.contains("PGROUP") && remark.contains("p\\0g"),
                    "{remark}"
                );
            }
            _ => panic!("PGROUP p\\0g was accepted"),
        }
    }
}
