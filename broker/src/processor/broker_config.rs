//! GET_BROKER_CONFIG (26) and UPDATE_BROKER_CONFIG (25), `mqadmin getBrokerConfig` and
//! `updateBrokerConfig`.
//!
//! GET answers with this node's config as `key=value` lines (RocketMQ's
//! `getAllConfigsFormatString`), runtime keys at their applied values, and the header
//! `version`: the config's data version (its counter counts the runtime values this node set
//! since it started, the stored ones loaded at start included; its timestamp is the start).
//!
//! UPDATE takes a `key=value` body. Only [`crate::runtime_config::RUNTIME_KEYS`] change at
//! runtime; any other key refuses the whole request with a reason (never a silent no-op).
//! The change goes through the group's Raft log, so only the leader takes it; a follower
//! that has applied the same values (it waits up to 2 s for them) answers SUCCESS
//! (`mqadmin updateBrokerConfig -c` sends to every member, leader first), else it answers
//! with the leader's address.

use std::collections::BTreeMap;

use remoting::config_file::Properties;
use remoting::header::GetBrokerConfigResponseHeader;
use remoting::route::DataVersion;
use remoting::{Connection, RemotingCommand, ResponseCode};

use super::{fail, ProcessResult};
use crate::broker::Broker;
use crate::command::BrokerCommand;
use crate::runtime_config::{self, RUNTIME_KEYS};

/// GET_BROKER_CONFIG (26).
pub fn get(broker: &Broker, _conn: &Connection, _request: &RemotingCommand) -> ProcessResult {
    let body: String = config_lines(broker)
        .into_iter()
        .map(|(key, value)| format!("{key}={value}\n"))
        .collect();
    let (_, changes) = broker.runtime_config_applied();
    let version = DataVersion {
        state_version: 0,
        timestamp: broker.started_ms(),
        counter: changes,
    };
    let header = GetBrokerConfigResponseHeader {
        version: String::from_utf8(remoting::route::to_json(&version)).unwrap_or_default(),
    };
    Ok(RemotingCommand::success()
        .with_header(&header)
        .with_body(body.into_bytes()))
}

/// UPDATE_BROKER_CONFIG (25).
pub async fn update(
    broker: &Broker,
    _conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let properties = read_update(broker, &request.body)?;
    if !broker.is_leader() {
        // The leader was asked first (mqadmin's order): give the change a moment to arrive.
        for _ in 0..FOLLOWER_WAITS {
            if in_effect(broker, &properties) {
                return Ok(RemotingCommand::success());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        return Ok(broker.not_leader_response());
    }
    let keys: Vec<String> = properties.keys().cloned().collect();
    broker
        .propose(&BrokerCommand::UpdateBrokerConfig { properties })
        .await
        .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))?;
    tracing::info!(?keys, "broker config changed through the log");
    broker.register_soon();
    Ok(RemotingCommand::success())
}

/// How many times (100 ms apart) a follower looks for the values to be applied.
const FOLLOWER_WAITS: u32 = 20;

/// Whether this node has applied every one of `properties`.
fn in_effect(broker: &Broker, properties: &BTreeMap<String, String>) -> bool {
    let (applied, _) = broker.runtime_config_applied();
    properties.iter().all(|(k, v)| {
        applied
            .get(k.as_str())
            .is_some_and(|a| a.eq_ignore_ascii_case(v))
    })
}

/// The body's keys and values, each a runtime key with a good value; else the refusal.
fn read_update(
    broker: &Broker,
    body: &[u8],
) -> Result<BTreeMap<String, String>, super::ProcessError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| fail(ResponseCode::SYSTEM_ERROR, "the body is not UTF-8"))?;
    let parsed = Properties::parse("UPDATE_BROKER_CONFIG", text)
        .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))?;
    if parsed.entries.is_empty() {
        return Err(fail(
            ResponseCode::SYSTEM_ERROR,
            "UPDATE_BROKER_CONFIG names no key",
        ));
    }
    let known: Vec<&str> = config_lines(broker).into_iter().map(|(k, _)| k).collect();
    let mut out = BTreeMap::new();
    for (key, (value, _line)) in parsed.entries {
        if !RUNTIME_KEYS.contains(&key.as_str()) {
            let why = if known.contains(&key.as_str()) {
                format!(
                    "{key} cannot be changed at runtime: set it in each node's config file and \
                     restart the node (runtime keys: {})",
                    RUNTIME_KEYS.join(", ")
                )
            } else {
                format!(
                    "{key} is not a rocketraft broker config key (runtime keys: {})",
                    RUNTIME_KEYS.join(", ")
                )
            };
            return Err(fail(ResponseCode::SYSTEM_ERROR, why));
        }
        runtime_config::check(&key, &value).map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e))?;
        out.insert(key, value.trim().to_string());
    }
    Ok(out)
}

/// This node's config, key by key (RocketMQ's names), runtime keys as applied.
fn config_lines(broker: &Broker) -> Vec<(&'static str, String)> {
    let c = broker.config();
    let mut lines: Vec<(&'static str, String)> = vec![
        ("brokerClusterName", c.cluster_name.clone()),
        ("brokerName", c.broker_name.clone()),
        ("brokerIP1", c.broker_ip.clone()),
        ("listenPort", c.listen_port.to_string()),
        ("namesrvAddr", c.namesrv_addr.clone()),
        ("storePathRootDir", c.store_path.display().to_string()),
        ("enableDLegerCommitLog", "true".into()),
        ("dLegerGroup", c.dledger_group.clone()),
        ("dLegerPeers", c.dledger_peers.clone()),
        ("dLegerSelfId", c.dledger_self_id.clone()),
        ("preferredLeaderId", c.preferred_leader_id.clone()),
        ("aclEnable", c.acl_enable.to_string()),
        (
            "flushDiskType",
            match c.flush_disk_type {
                crate::config::FlushDiskType::SyncFlush => "SYNC_FLUSH".into(),
                crate::config::FlushDiskType::AsyncFlush => "ASYNC_FLUSH".into(),
            },
        ),
        ("flushIntervalCommitLog", c.flush_interval_ms.to_string()),
        (
            "flushIntervalConsumeQueue",
            c.flush_consume_queue_interval_ms.to_string(),
        ),
        (
            "flushConsumeQueueLeastPages",
            c.flush_consume_queue_least_pages.to_string(),
        ),
        (
            "flushConsumeQueueThoroughInterval",
            c.flush_consume_queue_thorough_interval_ms.to_string(),
        ),
        (
            "mappedFileSizeCommitLog",
            c.commit_log_segment_bytes.to_string(),
        ),
        (
            "mappedFileSizeConsumeQueue",
            c.consume_queue_file_bytes.to_string(),
        ),
        (
            "defaultTopicQueueNums",
            c.default_topic_queue_nums.to_string(),
        ),
        ("maxMessageSize", c.max_message_bytes.to_string()),
        (
            "registerNameServerPeriod",
            c.register_namesrv_interval_ms.to_string(),
        ),
        ("longPollingHoldMaxMs", c.pull_hold_ms_max.to_string()),
        ("maxPullMsgNums", c.max_pull_msg_nums.to_string()),
        (
            "consumerOffsetCommitIntervalMs",
            c.offset_commit_interval_ms.to_string(),
        ),
        ("sendMessageTimeoutMs", c.send_timeout_ms.to_string()),
        ("messageDelayLevel", c.message_delay_level.clone()),
        ("messageIndexEnable", c.message_index_enable.to_string()),
        ("enablePropertyFilter", c.enable_property_filter.to_string()),
        ("transactionTimeOut", c.transaction_timeout_ms.to_string()),
        (
            "transactionCheckInterval",
            c.transaction_check_interval_ms.to_string(),
        ),
        ("transactionCheckMax", c.transaction_check_max.to_string()),
        ("fileReservedTime", c.file_reserved_time_hours.to_string()),
        ("deleteWhen", c.delete_when.clone()),
        (
            "diskMaxUsedSpaceRatio",
            c.disk_max_used_space_ratio.to_string(),
        ),
        (
            "diskSpaceWarningLevelRatio",
            c.disk_space_warning_level_ratio.to_string(),
        ),
        (
            runtime_config::BROKER_PERMISSION,
            broker.broker_permission().to_string(),
        ),
        (
            runtime_config::AUTO_CREATE_TOPIC,
            broker.auto_create_topic_enabled().to_string(),
        ),
        (
            runtime_config::AUTO_CREATE_SUBSCRIPTION_GROUP,
            broker.auto_create_subscription_group_enabled().to_string(),
        ),
    ];
    lines.sort_by_key(|(k, _)| *k);
    lines
}
