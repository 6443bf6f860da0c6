//! Finding stored messages: by key, by unique key (UNIQ_KEY, the producer's msgId) and by
//! offset message id (store host + CommitLog offset), as RocketMQ's `MQAdminImpl` and
//! `mqadmin queryMsgByKey` / `queryMsgById` do.
//!
//! Key queries go to one member of every broker group that serves the topic (its leader
//! when routed, else any member) and merge the answers; any member answers from what it
//! has applied, so a group whose leader is gone still answers through a follower.
//!
//! An offset message id names the host that stored the message, but every replica of its
//! group holds the same bytes at the same offset. So [`view_by_id`] asks that host first;
//! if it does not answer (an old leader that died), it asks the members of the group the
//! name servers list that host in, and failing that every member of every group, and
//! accepts the first message whose STOREHOST is the id's host (the same offset in another
//! group holds another message, with another STOREHOST).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use remoting::connection::NoRequests;
use remoting::header::{
    QueryMessageRequestHeader, ViewMessageRequestHeader, UNIQUE_MSG_QUERY_FLAG,
};
use remoting::message::{decode_message_id, property};
use remoting::route::ClusterInfo;
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};
use tracing::debug;

use crate::error::{ClientError, Result};
use crate::message::{MessageExt, KEY_SEPARATOR};
use crate::namesrv::NameServerClient;

/// RocketMQ's `maxMsgsNumBatch`: a broker answers at most this many messages per key query.
pub const MAX_MSGS_NUM_BATCH: i32 = 64;

/// A key query.
#[derive(Debug, Clone)]
pub struct KeyQuery {
    pub topic: String,
    pub key: String,
    /// Store time range, in ms since the epoch, both ends included.
    pub begin_ms: i64,
    pub end_ms: i64,
    /// At most this many messages per broker group (brokers clamp it to 64).
    pub max_num: i32,
}

impl KeyQuery {
    /// Every message of `topic` with `key`, any time, up to 64 per group (`mqadmin
    /// queryMsgByKey`'s query).
    pub fn new(topic: impl Into<String>, key: impl Into<String>) -> Self {
        KeyQuery {
            topic: topic.into(),
            key: key.into(),
            begin_ms: 0,
            end_ms: i64::MAX,
            max_num: MAX_MSGS_NUM_BATCH,
        }
    }
}

/// Messages of `query.topic` whose KEYS hold `query.key`, from every group serving the
/// topic, oldest first by store time. An empty answer is `Ok(vec![])`.
pub async fn query_by_key(
    namesrv: &NameServerClient,
    query: &KeyQuery,
    timeout: Duration,
) -> Result<Vec<MessageExt>> {
    let mut found = query_groups(namesrv, query, false, timeout).await?;
    found.retain(|m| {
        m.topic == query.topic
            && m.keys()
                .is_some_and(|keys| keys.split(KEY_SEPARATOR).any(|k| k == query.key))
    });
    found.sort_by_key(|m| (m.store_timestamp, m.commit_log_offset));
    Ok(found)
}

/// The message of `topic` whose UNIQ_KEY is `uniq_key`; if stored more than once (a send
/// retried after an unknown outcome), the first stored, as RocketMQ answers.
pub async fn query_by_unique_key(
    namesrv: &NameServerClient,
    topic: &str,
    uniq_key: &str,
    timeout: Duration,
) -> Result<Option<MessageExt>> {
    let query = KeyQuery::new(topic, uniq_key);
    let found = query_groups(namesrv, &query, true, timeout).await?;
    Ok(found
        .into_iter()
        .filter(|m| m.topic == topic && m.property(property::UNIQ_KEY) == Some(uniq_key))
        .min_by_key(|m| (m.store_timestamp, m.commit_log_offset)))
}

/// Sends the query to one member of each group serving the topic; a group none of whose
/// members answers is an error (its messages would be missing from the answer).
async fn query_groups(
    namesrv: &NameServerClient,
    query: &KeyQuery,
    unique: bool,
    timeout: Duration,
) -> Result<Vec<MessageExt>> {
    let route = namesrv
        .topic_route(&query.topic)
        .await?
        .ok_or_else(|| ClientError::NoRoute {
            topic: query.topic.clone(),
            reason: "the name servers know no such topic".into(),
        })?;
    let header = QueryMessageRequestHeader {
        topic: query.topic.clone(),
        key: query.key.clone(),
        max_num: query.max_num,
        begin_timestamp: query.begin_ms,
        end_timestamp: query.end_ms,
    };
    let mut found = Vec::new();
    for group in &route.broker_datas {
        // brokerId 0 (the leader) first, then the followers.
        let members: Vec<&String> = group.broker_addrs.values().collect();
        let mut last_error = None;
        let mut answered = false;
        for addr in members {
            let mut request = RemotingCommand::request(RequestCode::QUERY_MESSAGE, &header);
            if unique {
                request = request.with_ext(UNIQUE_MSG_QUERY_FLAG, "true");
            }
            match ask(addr, request, timeout).await {
                Ok(response) => match response.response_code() {
                    Some(ResponseCode::SUCCESS) => {
                        let body = response.body.clone();
                        let messages = MessageExt::decode_all(&body, &group.broker_name)
                            .map_err(|e| bad_response(addr, e))?;
                        found.extend(messages);
                        answered = true;
                        break;
                    }
                    Some(ResponseCode::QUERY_NOT_FOUND) => {
                        answered = true;
                        break;
                    }
                    _ => last_error = Some(refused(&group.broker_name, addr, response)),
                },
                Err(e) => last_error = Some(e),
            }
        }
        if !answered {
            return Err(last_error.unwrap_or_else(|| ClientError::NoLeader {
                broker_name: group.broker_name.clone(),
                reason: "no member routed".into(),
            }));
        }
    }
    Ok(found)
}

/// The message an offset message id names. `Ok(None)` when the id decodes but no member
/// of any group holds a message there stored by that host.
pub async fn view_by_id(
    namesrv: &NameServerClient,
    msg_id: &str,
    timeout: Duration,
) -> Result<Option<MessageExt>> {
    let (host, offset) = decode_message_id(msg_id).map_err(|e| ClientError::InvalidConfig {
        reason: format!("not an offset message id: {e}"),
    })?;
    let host_addr = host.to_string();
    if let Some(found) = view_at(&host_addr, host, offset, "", timeout).await {
        return Ok(Some(found));
    }
    let info = namesrv.cluster_info().await?;
    for (broker_name, addr) in fallback_members(&info, &host_addr) {
        if let Some(found) = view_at(&addr, host, offset, &broker_name, timeout).await {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Where to ask for an id whose host did not answer: first the other members of the group
/// the name servers list that host in, then every member of every other group.
fn fallback_members(info: &ClusterInfo, host: &str) -> Vec<(String, String)> {
    let mut own = Vec::new();
    let mut others = Vec::new();
    for (broker_name, data) in &info.broker_addr_table {
        let is_own = data.broker_addrs.values().any(|a| a == host);
        for addr in data.broker_addrs.values().filter(|a| *a != host) {
            let target = if is_own { &mut own } else { &mut others };
            target.push((broker_name.clone(), addr.clone()));
        }
    }
    own.extend(others);
    own
}

/// VIEW_MESSAGE_BY_ID at `addr`: the message, if `addr` answers one stored by `host`.
async fn view_at(
    addr: &str,
    host: SocketAddr,
    offset: i64,
    broker_name: &str,
    timeout: Duration,
) -> Option<MessageExt> {
    let request = RemotingCommand::request(
        RequestCode::VIEW_MESSAGE_BY_ID,
        &ViewMessageRequestHeader { offset },
    );
    let response = match ask(addr, request, timeout).await {
        Ok(r) => r,
        Err(e) => {
            debug!(addr, offset, error = %e, "VIEW_MESSAGE_BY_ID not answered");
            return None;
        }
    };
    if response.response_code() != Some(ResponseCode::SUCCESS) {
        debug!(addr, offset, remark = ?response.remark, "VIEW_MESSAGE_BY_ID refused");
        return None;
    }
    let body = response.body.clone();
    let message = MessageExt::decode_all(&body, broker_name)
        .ok()?
        .into_iter()
        .next()?;
    (message.store_host == host && message.commit_log_offset == offset).then_some(message)
}

/// A message id as `mqadmin queryMsgById` takes it: an offset message id, else (or when no
/// broker holds it) a unique key of `topic`.
pub async fn view_by_id_or_unique_key(
    namesrv: &NameServerClient,
    topic: Option<&str>,
    id: &str,
    timeout: Duration,
) -> Result<Option<MessageExt>> {
    if decode_message_id(id).is_ok() {
        if let Some(found) = view_by_id(namesrv, id, timeout).await? {
            return Ok(Some(found));
        }
    }
    match topic {
        Some(topic) => query_by_unique_key(namesrv, topic, id, timeout).await,
        None => Ok(None),
    }
}

async fn ask(addr: &str, request: RemotingCommand, timeout: Duration) -> Result<RemotingCommand> {
    let config = ConnectionConfig::default();
    let conn = tokio::time::timeout(
        timeout,
        Connection::connect(addr, &config, Arc::new(NoRequests)),
    )
    .await
    .map_err(|_| ClientError::NoLeader {
        broker_name: String::new(),
        reason: format!("connecting to {addr} timed out"),
    })??;
    let response = conn.request(request, timeout).await;
    conn.close();
    Ok(response?)
}

fn refused(broker_name: &str, addr: &str, response: RemotingCommand) -> ClientError {
    ClientError::Broker {
        broker_name: broker_name.to_string(),
        addr: addr.to_string(),
        code: response.code,
        remark: response.remark.unwrap_or_default(),
    }
}

fn bad_response(addr: &str, e: remoting::Error) -> ClientError {
    ClientError::BadResponse {
        addr: addr.to_string(),
        reason: format!("QUERY_MESSAGE body: {e}"),
    }
}
