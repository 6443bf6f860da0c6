//! UPDATE_AND_CREATE_TOPIC (17; its list form is in `super::create_topic_list`),
//! GET_ALL_TOPIC_CONFIG (21), DELETE_TOPIC_IN_BROKER (215),
//! UPDATE_AND_CREATE_SUBSCRIPTIONGROUP (200), GET_ALL_SUBSCRIPTIONGROUP_CONFIG (201),
//! DELETE_SUBSCRIPTIONGROUP (207): topic and subscription-group changes go through the
//! Raft log (invariant 4), so only the leader takes them; every replica answers reads.
//! DELETE_EXPIRED_COMMITLOG (329) and CLEAN_EXPIRED_CONSUMEQUEUE (306) ask the leader for a
//! retention pass now (`crate::retention`).

use remoting::header::CreateTopicRequestHeader;
use remoting::names::{check_group, check_topic, is_system_topic};
use remoting::route::{perm, to_json, TopicConfig, TopicConfigSerializeWrapper};
use remoting::{Connection, RemotingCommand, ResponseCode};

use super::{bad_name, fail, required_ext, ProcessError, ProcessResult};
use crate::broker::Broker;
use crate::command::BrokerCommand;

/// DELETE_EXPIRED_COMMITLOG (329) and CLEAN_EXPIRED_CONSUMEQUEUE (306): a retention pass
/// now, deleting expired segments whatever the `deleteWhen` hour (for this pass and the
/// next ones, as RocketMQ's manual delete does). Answered at once, as RocketMQ does: the
/// pass runs in the leader's retention task, and the ConsumeQueues follow the CommitLog.
pub async fn delete_expired(
    broker: &Broker,
    _conn: &Connection,
    _request: &RemotingCommand,
) -> ProcessResult {
    broker.request_clean();
    Ok(RemotingCommand::success())
}

/// GET_ALL_TOPIC_CONFIG (21).
pub fn all_topics(
    broker: &Broker,
    _conn: &Connection,
    _request: &RemotingCommand,
) -> ProcessResult {
    let wrapper = TopicConfigSerializeWrapper {
        topic_config_table: broker.topics(),
        data_version: broker.data_version(),
    };
    Ok(RemotingCommand::success().with_body(to_json(&wrapper)))
}

/// UPDATE_AND_CREATE_TOPIC (17).
pub async fn create_topic(
    broker: &Broker,
    _conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let h: CreateTopicRequestHeader = request.header()?;
    let config = TopicConfig {
        topic_name: h.topic,
        read_queue_nums: h.read_queue_nums,
        write_queue_nums: h.write_queue_nums,
        perm: h.perm,
        topic_filter_type: h.topic_filter_type,
        topic_sys_flag: h.topic_sys_flag.unwrap_or(0),
        order: h.order,
    };
    check_topic_config(&config).map_err(|reason| fail(ResponseCode::SYSTEM_ERROR, reason))?;
    propose(broker, BrokerCommand::PutTopic { config }).await?;
    broker.register_soon();
    Ok(RemotingCommand::success())
}

/// The rules every topic an admin creates or updates must keep (UPDATE_AND_CREATE_TOPIC
/// and its list form): a name by RocketMQ's rules that is not a system topic, a filter type
/// RocketMQ knows, 1 to 1024 read and write queues, and only known permission bits. `Err`
/// is the remark a client reads.
pub(super) fn check_topic_config(config: &TopicConfig) -> Result<(), String> {
    check_topic(&config.topic_name).map_err(|e| e.to_string())?;
    if is_system_topic(&config.topic_name) {
        return Err(system_topic_remark(&config.topic_name));
    }
    if !matches!(
        config.topic_filter_type.as_str(),
        "SINGLE_TAG" | "MULTI_TAG"
    ) {
        return Err(format!(
            "topicFilterType = [{}] value invalid",
            config.topic_filter_type.escape_debug()
        ));
    }
    let queues = 1..=MAX_QUEUE_NUMS;
    if !queues.contains(&config.write_queue_nums) || !queues.contains(&config.read_queue_nums) {
        return Err(format!(
            "readQueueNums and writeQueueNums must be in 1..={MAX_QUEUE_NUMS}"
        ));
    }
    let known = perm::PRIORITY | perm::READ_WRITE | perm::INHERIT;
    if config.perm & !known != 0 {
        return Err(format!(
            "perm = [{}] value invalid: 6 is read and write, 4 read only, 2 write only",
            config.perm
        ));
    }
    Ok(())
}

/// The most read or write queues a topic may have on one broker group.
const MAX_QUEUE_NUMS: i32 = 1024;

/// DELETE_TOPIC_IN_BROKER (215).
pub async fn delete_topic(
    broker: &Broker,
    _conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let topic = required_ext(request, "topic")?.to_string();
    check_topic(&topic).map_err(bad_name)?;
    refuse_system_topic(&topic)?;
    propose(broker, BrokerCommand::DeleteTopic { topic }).await?;
    broker.register_soon();
    Ok(RemotingCommand::success())
}

/// UPDATE_AND_CREATE_SUBSCRIPTIONGROUP (200).
pub async fn put_subscription_group(
    broker: &Broker,
    _conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let config: serde_json::Value = serde_json::from_slice(&request.body).map_err(|e| {
        fail(
            ResponseCode::SYSTEM_ERROR,
            format!("bad subscription group body: {e}"),
        )
    })?;
    match config.get("groupName").and_then(|v| v.as_str()) {
        Some(name) => check_group(name).map_err(bad_name)?,
        None => {
            return Err(fail(
                ResponseCode::SYSTEM_ERROR,
                "subscription group body needs a groupName",
            ))
        }
    }
    propose(broker, BrokerCommand::PutSubscriptionGroup { config }).await?;
    Ok(RemotingCommand::success())
}

/// GET_ALL_SUBSCRIPTIONGROUP_CONFIG (201).
pub fn all_subscription_groups(
    broker: &Broker,
    _conn: &Connection,
    _request: &RemotingCommand,
) -> ProcessResult {
    let body = serde_json::json!({
        "subscriptionGroupTable": broker.subscription_groups(),
        "dataVersion": broker.data_version(),
    });
    Ok(RemotingCommand::success().with_body(serde_json::to_vec(&body).unwrap_or_default()))
}

/// DELETE_SUBSCRIPTIONGROUP (207).
pub async fn delete_subscription_group(
    broker: &Broker,
    _conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let group_name = required_ext(request, "groupName")?.to_string();
    check_group(&group_name).map_err(bad_name)?;
    propose(
        broker,
        BrokerCommand::DeleteSubscriptionGroup { group_name },
    )
    .await?;
    Ok(RemotingCommand::success())
}

async fn propose(broker: &Broker, command: BrokerCommand) -> Result<(), ProcessError> {
    broker
        .propose(&command)
        .await
        .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))
}

/// The broker owns RocketMQ's system topics: they are not created or deleted by request.
fn refuse_system_topic(topic: &str) -> Result<(), ProcessError> {
    if is_system_topic(topic) {
        return Err(fail(ResponseCode::SYSTEM_ERROR, system_topic_remark(topic)));
    }
    Ok(())
}

/// RocketMQ's answer to a request that would change a system topic.
fn system_topic_remark(topic: &str) -> String {
    format!("The topic[{topic}] is conflict with system topic.")
}
