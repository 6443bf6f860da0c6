//! Typed broker requests the consumers share: pull, offset queries and commits, the
//! queue offset range, search by time, a group's consumer list, and giving a failed
//! message back (CONSUMER_SEND_MSG_BACK). Each goes through
//! [`ClientInstance::request_group`], so it reaches the group's leader (or, for reads,
//! any member when the leader is down) and has a deadline.

use std::collections::BTreeSet;
use std::time::Duration;

use remoting::header::{
    ConsumerGroupRequestHeader, ConsumerSendMsgBackRequestHeader, OffsetResponseHeader,
    PullMessageRequestHeader, PullMessageResponseHeader, QueryConsumerOffsetRequestHeader,
    QueueOffsetRequestHeader, SearchOffsetRequestHeader, UpdateConsumerOffsetRequestHeader,
};
use remoting::queue_lock::{LockBatchRequestBody, LockBatchResponseBody, MessageQueueData};
use remoting::route::{from_json, to_json, ConsumerListBody};
use remoting::{CommandHeader, RemotingCommand, RequestCode, ResponseCode, SerializeType};
use tracing::debug;

use crate::error::{ClientError, Result};
use crate::instance::{Access, ClientInstance};
use crate::message::{MessageExt, MessageQueue};
use crate::selector::MessageSelector;

/// RocketMQ's `PullSysFlag` bits.
pub mod pull_sys_flag {
    /// The request carries the consumer's offset to commit.
    pub const COMMIT_OFFSET: i32 = 1;
    /// The broker may hold the request until a message arrives (long polling).
    pub const SUSPEND: i32 = 1 << 1;
    /// The request carries its subscription expression.
    pub const SUBSCRIPTION: i32 = 1 << 2;
    /// Class filter mode (not used by this client).
    pub const CLASS_FILTER: i32 = 1 << 3;

    pub fn build(
        commit_offset: bool,
        suspend: bool,
        subscription: bool,
        class_filter: bool,
    ) -> i32 {
        let mut flag = 0;
        if commit_offset {
            flag |= COMMIT_OFFSET;
        }
        if suspend {
            flag |= SUSPEND;
        }
        if subscription {
            flag |= SUBSCRIPTION;
        }
        if class_filter {
            flag |= CLASS_FILTER;
        }
        flag
    }
}

/// What a pull found. Every variant carries where the next pull should start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullResult {
    /// Messages matching the subscription. Messages the broker's tag-hash filter let
    /// through but whose exact tag does not match are removed; if none is left the
    /// result is [`PullResult::NoMatchedMessage`] instead.
    Found {
        messages: Vec<MessageExt>,
        next_begin_offset: i64,
        min_offset: i64,
        max_offset: i64,
    },
    /// Nothing new after the requested offset (PULL_NOT_FOUND).
    NoNewMessage {
        next_begin_offset: i64,
        min_offset: i64,
        max_offset: i64,
    },
    /// Messages exist but none matched the subscription (PULL_RETRY_IMMEDIATELY, or
    /// all removed by the exact tag filter).
    NoMatchedMessage {
        next_begin_offset: i64,
        min_offset: i64,
        max_offset: i64,
    },
    /// The requested offset is outside the queue (PULL_OFFSET_MOVED).
    OffsetIllegal {
        next_begin_offset: i64,
        min_offset: i64,
        max_offset: i64,
    },
}

impl PullResult {
    pub fn next_begin_offset(&self) -> i64 {
        match self {
            PullResult::Found {
                next_begin_offset, ..
            }
            | PullResult::NoNewMessage {
                next_begin_offset, ..
            }
            | PullResult::NoMatchedMessage {
                next_begin_offset, ..
            }
            | PullResult::OffsetIllegal {
                next_begin_offset, ..
            } => *next_begin_offset,
        }
    }
}

/// One pull request's parameters.
pub(crate) struct PullArgs<'a> {
    pub consumer_group: &'a str,
    pub queue: &'a MessageQueue,
    pub offset: i64,
    pub max_nums: i32,
    pub filter: &'a MessageSelector,
    pub sub_version: i64,
    /// How long the broker may hold the request; zero for no long polling.
    pub suspend: Duration,
    /// The request's deadline (longer than `suspend`).
    pub timeout: Duration,
}

fn bad_response(addr: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::BadResponse {
        addr: addr.to_string(),
        reason: e.to_string(),
    }
}

fn refused(queue: &MessageQueue, addr: String, response: RemotingCommand) -> ClientError {
    refused_by(&queue.broker_name, addr, response)
}

/// A broker group's refusal (any code but SUCCESS) as an error.
fn refused_by(broker_name: &str, addr: String, response: RemotingCommand) -> ClientError {
    ClientError::Broker {
        broker_name: broker_name.to_string(),
        addr,
        code: response.code,
        remark: response.remark.unwrap_or_default(),
    }
}

fn header<H: CommandHeader>(addr: &str, response: &RemotingCommand) -> Result<H> {
    H::read(&response.ext_fields).map_err(|e| bad_response(addr, e))
}

pub(crate) async fn pull(instance: &ClientInstance, args: PullArgs<'_>) -> Result<PullResult> {
    let suspend = !args.suspend.is_zero();
    let request = RemotingCommand::request(
        RequestCode::PULL_MESSAGE,
        &PullMessageRequestHeader {
            consumer_group: args.consumer_group.to_string(),
            topic: args.queue.topic.clone(),
            queue_id: args.queue.queue_id,
            queue_offset: args.offset,
            max_msg_nums: args.max_nums,
            sys_flag: pull_sys_flag::build(false, suspend, true, false),
            commit_offset: 0,
            suspend_timeout_millis: args.suspend.as_millis() as i64,
            subscription: Some(args.filter.expression().to_string()),
            sub_version: args.sub_version,
            expression_type: Some(args.filter.expression_type().to_string()),
            max_msg_bytes: None,
        },
    )
    .serialized_as(SerializeType::RocketMq);
    let broker_name = &args.queue.broker_name;
    // A member the last answer suggested (a follower, for a reader far behind), else the
    // leader. A suggested member that fails, or that sends the reader back with nothing
    // for it (PULL_RETRY_IMMEDIATELY naming the leader), hands the pull to the leader at
    // once: the caller sees the leader's answer.
    let suggested = match instance.pull_member(args.queue) {
        Some(addr) => match instance
            .request_addr(broker_name, &addr, request.clone(), args.timeout)
            .await
        {
            Ok(response) if sent_back(&response) => {
                instance.suggest_pull_member(args.queue, 0);
                None
            }
            Ok(response) => Some((addr, response)),
            Err(e) => {
                debug!(queue = %args.queue, %addr, error = %e, "the suggested member failed; pulling from the leader");
                instance.suggest_pull_member(args.queue, 0);
                None
            }
        },
        None => None,
    };
    let (addr, response) = match suggested {
        Some(answer) => answer,
        None => {
            instance
                .request_group(broker_name, request, args.timeout, Access::Read)
                .await?
        }
    };
    let code = ResponseCode::from_i32(response.code);
    if !matches!(
        code,
        Some(
            ResponseCode::SUCCESS
                | ResponseCode::PULL_NOT_FOUND
                | ResponseCode::PULL_RETRY_IMMEDIATELY
                | ResponseCode::PULL_OFFSET_MOVED
        )
    ) {
        return Err(refused(args.queue, addr, response));
    }
    let h: PullMessageResponseHeader = header(&addr, &response)?;
    instance.suggest_pull_member(args.queue, h.suggest_which_broker_id);
    let (next_begin_offset, min_offset, max_offset) =
        (h.next_begin_offset, h.min_offset, h.max_offset);
    Ok(match code {
        Some(ResponseCode::SUCCESS) => {
            let messages: Vec<MessageExt> =
                MessageExt::decode_all(&response.body, &args.queue.broker_name)
                    .map_err(|e| bad_response(&addr, e))?
                    .into_iter()
                    .filter(|m| args.filter.matches_on_client(m.tags()))
                    .collect();
            if messages.is_empty() {
                PullResult::NoMatchedMessage {
                    next_begin_offset,
                    min_offset,
                    max_offset,
                }
            } else {
                PullResult::Found {
                    messages,
                    next_begin_offset,
                    min_offset,
                    max_offset,
                }
            }
        }
        Some(ResponseCode::PULL_NOT_FOUND) => PullResult::NoNewMessage {
            next_begin_offset,
            min_offset,
            max_offset,
        },
        Some(ResponseCode::PULL_RETRY_IMMEDIATELY) => PullResult::NoMatchedMessage {
            next_begin_offset,
            min_offset,
            max_offset,
        },
        _ => PullResult::OffsetIllegal {
            next_begin_offset,
            min_offset,
            max_offset,
        },
    })
}

/// A follower's "nothing for you here, ask the leader": PULL_RETRY_IMMEDIATELY suggesting
/// broker 0.
fn sent_back(response: &RemotingCommand) -> bool {
    response.code == ResponseCode::PULL_RETRY_IMMEDIATELY as i32
        && response.ext("suggestWhichBrokerId") == Some("0")
}

/// The group's committed offset, or `None` when it has none (QUERY_NOT_FOUND).
pub(crate) async fn query_consumer_offset(
    instance: &ClientInstance,
    consumer_group: &str,
    queue: &MessageQueue,
) -> Result<Option<i64>> {
    let request = RemotingCommand::request(
        RequestCode::QUERY_CONSUMER_OFFSET,
        &QueryConsumerOffsetRequestHeader {
            consumer_group: consumer_group.to_string(),
            topic: queue.topic.clone(),
            queue_id: queue.queue_id,
            set_zero_if_not_found: None,
        },
    );
    let (addr, response) = instance
        .request_group(
            &queue.broker_name,
            request,
            instance.config.api_timeout(),
            Access::Read,
        )
        .await?;
    match ResponseCode::from_i32(response.code) {
        Some(ResponseCode::SUCCESS) => Ok(Some(
            header::<OffsetResponseHeader>(&addr, &response)?.offset,
        )),
        Some(ResponseCode::QUERY_NOT_FOUND) => Ok(None),
        _ => Err(refused(queue, addr, response)),
    }
}

fn update_offset_request(
    consumer_group: &str,
    queue: &MessageQueue,
    offset: i64,
) -> RemotingCommand {
    RemotingCommand::request(
        RequestCode::UPDATE_CONSUMER_OFFSET,
        &UpdateConsumerOffsetRequestHeader {
            consumer_group: consumer_group.to_string(),
            topic: queue.topic.clone(),
            queue_id: queue.queue_id,
            commit_offset: offset,
        },
    )
}

/// Commits an offset with a oneway UPDATE_CONSUMER_OFFSET to the leader. If the leader
/// cannot be reached (nothing was sent), it is found through the group's members and
/// the commit is sent as a request there (commits are idempotent).
pub(crate) async fn update_consumer_offset_oneway(
    instance: &ClientInstance,
    consumer_group: &str,
    queue: &MessageQueue,
    offset: i64,
) -> Result<()> {
    let request = update_offset_request(consumer_group, queue, offset);
    match instance
        .oneway_leader(&queue.broker_name, request.clone())
        .await
    {
        Err(ClientError::NoLeader { .. }) => {
            update_consumer_offset(instance, consumer_group, queue, offset).await
        }
        other => other,
    }
}

/// Commits an offset and waits for the leader's answer.
pub(crate) async fn update_consumer_offset(
    instance: &ClientInstance,
    consumer_group: &str,
    queue: &MessageQueue,
    offset: i64,
) -> Result<()> {
    let request = update_offset_request(consumer_group, queue, offset);
    let (addr, response) = instance
        .request_group(
            &queue.broker_name,
            request,
            instance.config.api_timeout(),
            Access::Write,
        )
        .await?;
    if response.code == ResponseCode::SUCCESS as i32 {
        Ok(())
    } else {
        Err(refused(queue, addr, response))
    }
}

async fn offset_request(
    instance: &ClientInstance,
    queue: &MessageQueue,
    request: RemotingCommand,
) -> Result<i64> {
    let (addr, response) = instance
        .request_group(
            &queue.broker_name,
            request,
            instance.config.api_timeout(),
            Access::Read,
        )
        .await?;
    if response.code == ResponseCode::SUCCESS as i32 {
        Ok(header::<OffsetResponseHeader>(&addr, &response)?.offset)
    } else {
        Err(refused(queue, addr, response))
    }
}

fn queue_offset_header(queue: &MessageQueue) -> QueueOffsetRequestHeader {
    QueueOffsetRequestHeader {
        topic: queue.topic.clone(),
        queue_id: queue.queue_id,
    }
}

/// The offset after the queue's last message (GET_MAX_OFFSET).
pub(crate) async fn max_offset(instance: &ClientInstance, queue: &MessageQueue) -> Result<i64> {
    let request =
        RemotingCommand::request(RequestCode::GET_MAX_OFFSET, &queue_offset_header(queue));
    offset_request(instance, queue, request).await
}

/// The queue's first offset still stored (GET_MIN_OFFSET).
pub(crate) async fn min_offset(instance: &ClientInstance, queue: &MessageQueue) -> Result<i64> {
    let request =
        RemotingCommand::request(RequestCode::GET_MIN_OFFSET, &queue_offset_header(queue));
    offset_request(instance, queue, request).await
}

/// The first offset stored at or after `timestamp_ms` (SEARCH_OFFSET_BY_TIMESTAMP).
pub(crate) async fn search_offset(
    instance: &ClientInstance,
    queue: &MessageQueue,
    timestamp_ms: i64,
) -> Result<i64> {
    let request = RemotingCommand::request(
        RequestCode::SEARCH_OFFSET_BY_TIMESTAMP,
        &SearchOffsetRequestHeader {
            topic: queue.topic.clone(),
            queue_id: queue.queue_id,
            timestamp: timestamp_ms,
        },
    );
    offset_request(instance, queue, request).await
}

/// The live members of a consumer group, as the leader of `broker_name` knows them
/// (GET_CONSUMER_LIST_BY_GROUP).
pub(crate) async fn consumer_ids(
    instance: &ClientInstance,
    consumer_group: &str,
    broker_name: &str,
) -> Result<Vec<String>> {
    let request = RemotingCommand::request(
        RequestCode::GET_CONSUMER_LIST_BY_GROUP,
        &ConsumerGroupRequestHeader {
            consumer_group: consumer_group.to_string(),
        },
    );
    let (addr, response) = instance
        .request_group(
            broker_name,
            request,
            instance.config.api_timeout(),
            Access::Read,
        )
        .await?;
    if response.code != ResponseCode::SUCCESS as i32 {
        return Err(refused_by(broker_name, addr, response));
    }
    let body: ConsumerListBody =
        from_json("consumer list", &response.body).map_err(|e| bad_response(&addr, e))?;
    Ok(body.consumer_id_list)
}

/// Gives a message the listener failed back to the leader of `broker_name`, the group
/// it was pulled from (CONSUMER_SEND_MSG_BACK): the broker stores it again in the
/// consumer group's retry topic, or in its dead-letter topic. Only SUCCESS is success;
/// no answer is [`ClientError::OutcomeUnknown`] (the broker may have stored it).
pub(crate) async fn consumer_send_msg_back(
    instance: &ClientInstance,
    broker_name: &str,
    header: &ConsumerSendMsgBackRequestHeader,
) -> Result<()> {
    let request = RemotingCommand::request(RequestCode::CONSUMER_SEND_MSG_BACK, header);
    let (addr, response) = instance
        .request_group(
            broker_name,
            request,
            instance.config.api_timeout(),
            Access::Write,
        )
        .await?;
    if response.code == ResponseCode::SUCCESS as i32 {
        return Ok(());
    }
    Err(refused_by(broker_name, addr, response))
}

/// The queue as RocketMQ's `MessageQueue` body form.
fn queue_data(queue: &MessageQueue) -> MessageQueueData {
    MessageQueueData {
        topic: queue.topic.clone(),
        broker_name: queue.broker_name.clone(),
        queue_id: queue.queue_id,
    }
}

/// Sends LOCK_BATCH_MQ or UNLOCK_BATCH_MQ for this client's `queues` (all of
/// `broker_name`) to that group's leader; the SUCCESS answer and who gave it.
async fn queue_lock_request(
    instance: &ClientInstance,
    code: RequestCode,
    consumer_group: &str,
    broker_name: &str,
    queues: &[MessageQueue],
) -> Result<(String, RemotingCommand)> {
    let body = LockBatchRequestBody {
        consumer_group: consumer_group.to_string(),
        client_id: instance.client_id.clone(),
        only_this_broker: false,
        mq_set: queues.iter().map(queue_data).collect(),
    };
    let request = RemotingCommand::bare_request(code).with_body(to_json(&body));
    let (addr, response) = instance
        .request_group(
            broker_name,
            request,
            instance.config.api_timeout(),
            Access::Write,
        )
        .await?;
    if response.code != ResponseCode::SUCCESS as i32 {
        return Err(refused_by(broker_name, addr, response));
    }
    Ok((addr, response))
}

/// Asks the leader of `broker_name` to lock `queues` (all of that group) for this client
/// (LOCK_BATCH_MQ); answers with the queues this client holds now.
pub(crate) async fn lock_batch(
    instance: &ClientInstance,
    consumer_group: &str,
    broker_name: &str,
    queues: &[MessageQueue],
) -> Result<BTreeSet<MessageQueue>> {
    let code = RequestCode::LOCK_BATCH_MQ;
    let (addr, response) =
        queue_lock_request(instance, code, consumer_group, broker_name, queues).await?;
    let answer: LockBatchResponseBody =
        from_json("lock batch answer", &response.body).map_err(|e| bad_response(&addr, e))?;
    Ok(answer
        .lock_ok_mq_set
        .into_iter()
        .map(|q| MessageQueue::new(q.topic, q.broker_name, q.queue_id))
        .collect())
}

/// Gives this client's locks on `queues` (all of `broker_name`) back (UNLOCK_BATCH_MQ).
pub(crate) async fn unlock_batch(
    instance: &ClientInstance,
    consumer_group: &str,
    broker_name: &str,
    queues: &[MessageQueue],
) -> Result<()> {
    let code = RequestCode::UNLOCK_BATCH_MQ;
    queue_lock_request(instance, code, consumer_group, broker_name, queues).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the sys flag bits are RocketMQ's PullSysFlag values.
    #[test]
    fn pull_sys_flag_bits_are_rocketmq_values() {
        assert_eq!(pull_sys_flag::build(true, false, false, false), 1);
        assert_eq!(pull_sys_flag::build(false, true, false, false), 2);
        assert_eq!(pull_sys_flag::build(false, false, true, false), 4);
        assert_eq!(pull_sys_flag::build(false, false, false, true), 8);
        assert_eq!(pull_sys_flag::build(true, true, true, false), 7);
    }
}
