//! SEND_MESSAGE (10), SEND_MESSAGE_V2 (310), SEND_BATCH_MESSAGE (320).
//!
//! The leader encodes each message as a CommitLog record and appends it through
//! dledger, whose batcher puts concurrent sends into one Raft entry (group commit). The
//! answer is SEND_OK only once that entry is committed and applied, so it carries the
//! queue offset. A follower answers at once with the leader's address. When the append's
//! outcome is unknown (it timed out after entering the log) the answer is
//! FLUSH_SLAVE_TIMEOUT: "may be stored", which clients must treat as unknown, never as
//! failed.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use dledger::DLedgerError;
use remoting::header::{
    SendMessageRequestHeader, SendMessageRequestHeaderV2, SendMessageResponseHeader,
};
use remoting::message::{decode_batch, message_id, MessageRecord};
use remoting::route::perm;
use remoting::{Connection, RemotingCommand, RequestCode, ResponseCode};
use tracing::warn;

use super::{fail, ProcessError, ProcessResult};
use crate::server::{Broker, DEFAULT_TOPIC};

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub async fn process(
    broker: &Broker,
    conn: &Connection,
    code: RequestCode,
    request: &RemotingCommand,
) -> ProcessResult {
    if !broker.is_leader() {
        return Ok(broker.not_leader_response());
    }
    // RocketMQ's broker reads SEND_BATCH_MESSAGE headers as V2; accept V1 names too.
    let header: SendMessageRequestHeader = match code {
        RequestCode::SEND_MESSAGE_V2 => request.header::<SendMessageRequestHeaderV2>()?.into(),
        RequestCode::SEND_BATCH_MESSAGE => match request.header::<SendMessageRequestHeaderV2>() {
            Ok(v2) => v2.into(),
            Err(_) => request.header()?,
        },
        _ => request.header()?,
    };
    // The header's names were checked as it was read (`remoting::names`).
    if remoting::names::NOT_ALLOWED_SEND_TOPICS.contains(&header.topic.as_str()) {
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
    let topic = match broker
        .topic_or_create(&header.topic, header.default_topic_queue_nums)
        .await
    {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(fail(
                ResponseCode::TOPIC_NOT_EXIST,
                format!(
                    "topic[{}] not exist, apply first please! (autoCreateTopicEnable=false)",
                    header.topic
                ),
            ))
        }
        Err(e) => return Err(append_error(broker, e)),
    };
    if topic.perm & perm::WRITE == 0 {
        return Err(fail(
            ResponseCode::NO_PERMISSION,
            format!("topic[{}] is not writable", header.topic),
        ));
    }
    let queue_id = if header.queue_id < 0 {
        (broker.next_queue.fetch_add(1, Ordering::Relaxed) % topic.write_queue_nums as u32) as i32
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
    let properties = header.properties.as_deref().unwrap_or("");
    let mut records: Vec<Bytes> = Vec::new();
    let mut encode = |body: &[u8], properties: &str, flag: i32| -> Result<(), ProcessError> {
        if body.len() > broker.config.max_message_bytes {
            return Err(fail(
                ResponseCode::MESSAGE_ILLEGAL,
                format!(
                    "message body of {} bytes exceeds maxMessageSize {}",
                    body.len(),
                    broker.config.max_message_bytes
                ),
            ));
        }
        let record = MessageRecord {
            topic: &header.topic,
            queue_id,
            flag,
            queue_offset: 0,
            commit_log_offset: 0,
            sys_flag: header.sys_flag,
            born_timestamp: header.born_timestamp,
            born_host,
            store_timestamp,
            store_host: broker.store_host,
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
    if code == RequestCode::SEND_BATCH_MESSAGE || header.batch == Some(true) {
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
            encode(m.body, m.properties, m.flag)?;
        }
    } else {
        encode(&request.body, properties, header.flag)?;
    }

    let appended = broker
        .node
        .append(records)
        .await
        .map_err(|e| append_error(broker, e))?;
    let mut msg_ids = Vec::with_capacity(appended.records.len());
    let mut first_queue_offset = None;
    for record in &appended.records {
        msg_ids.push(message_id(broker.store_host, record.position as i64));
        let queue_offset = record
            .response
            .as_slice()
            .try_into()
            .map(i64::from_be_bytes)
            .map_err(|_| fail(ResponseCode::SYSTEM_ERROR, "apply gave no queue offset"))?;
        first_queue_offset.get_or_insert(queue_offset);
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

fn bad_record(e: remoting::Error) -> ProcessError {
    fail(ResponseCode::MESSAGE_ILLEGAL, e.to_string())
}

fn append_error(broker: &Broker, e: DLedgerError) -> ProcessError {
    match e {
        DLedgerError::NotLeader { .. } => {
            ProcessError::Response(Box::new(broker.not_leader_response()))
        }
        DLedgerError::TooLarge { .. } | DLedgerError::InvalidRecord { .. } => {
            fail(ResponseCode::MESSAGE_ILLEGAL, e.to_string())
        }
        DLedgerError::Timeout { .. } => fail(
            ResponseCode::FLUSH_SLAVE_TIMEOUT,
            format!("{e}: the message may or may not be stored"),
        ),
        other => {
            warn!(error = %other, "append failed");
            fail(ResponseCode::SERVICE_NOT_AVAILABLE, other.to_string())
        }
    }
}
