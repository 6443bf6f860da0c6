//! mqadmin's everyday requests (issue 20), for `rocketraft admin`'s verbs of the same
//! names: broker figures and config, topic and consumer progress, connections, offset
//! resets, write permission on the name servers, and a broker group's Raft status.
//!
//! Requests that go through a group's Raft log (config changes, offset resets) go to the
//! group's leader, following a follower's answer that names it ([`crate::admin`]); figures
//! are read from the leader too, as mqadmin reads them from brokerId 0. Requests that
//! change routes go to every name server, signed with the cluster secret when one is given
//! (name servers with authentication on refuse them unsigned).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use remoting::admin_body::{
    ConsumeStats, ConsumerConnection, ConsumerRunningInfo, KVTable, ProducerConnection,
    ResetOffsetBody, TopicStatsTable,
};
use remoting::cluster_auth::{sign_broker_request, ClusterSecret};
use remoting::connection::NoRequests;
use remoting::header::{
    BrokerNameRequestHeader, GetConsumeStatsRequestHeader, GetConsumerConnectionListRequestHeader,
    GetConsumerRunningInfoRequestHeader, GetProducerConnectionListRequestHeader,
    ResetOffsetRequestHeader, TopicRequestHeader,
};
use remoting::route::{from_json, BrokerData};
use remoting::{Connection, RemotingCommand, RequestCode, ResponseCode};

use crate::admin::{leader_answer, GroupMembers};
use crate::error::{ClientError, Result};
use crate::namesrv::NameServerClient;

/// Sends `request` to `addr` and returns its answer, whatever its code.
pub async fn ask(
    namesrv: &NameServerClient,
    addr: &str,
    request: RemotingCommand,
    timeout: Duration,
) -> Result<RemotingCommand> {
    let conn = Connection::connect(addr, namesrv.connection_config(), Arc::new(NoRequests)).await?;
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

fn success(broker_name: &str, addr: &str, response: RemotingCommand) -> Result<RemotingCommand> {
    match response.response_code() {
        Some(ResponseCode::SUCCESS) => Ok(response),
        _ => Err(refused(broker_name, addr, response)),
    }
}

/// Every broker group the name servers know, by name.
async fn groups(namesrv: &NameServerClient) -> Result<BTreeMap<String, BrokerData>> {
    Ok(namesrv.cluster_info().await?.broker_addr_table)
}

/// The groups that serve `topic`, by name (none if no name server routes it).
async fn groups_of_topic(
    namesrv: &NameServerClient,
    topic: &str,
) -> Result<BTreeMap<String, BrokerData>> {
    let route = namesrv
        .topic_route(topic)
        .await?
        .ok_or_else(|| ClientError::NoRoute {
            topic: topic.to_string(),
            reason: "no name server routes it".into(),
        })?;
    Ok(route
        .broker_datas
        .into_iter()
        .map(|d| (d.broker_name.clone(), d))
        .collect())
}

/// `request` to each group's leader; each group's answer body, or the first refusal.
async fn from_each_leader(
    namesrv: &NameServerClient,
    groups: &BTreeMap<String, BrokerData>,
    request: &RemotingCommand,
    timeout: Duration,
) -> Result<Vec<(String, String, RemotingCommand)>> {
    let mut out = Vec::new();
    for (name, data) in groups {
        let (addr, response) = leader_answer(namesrv, name, data, request.clone(), timeout).await?;
        out.push((name.clone(), addr, response));
    }
    Ok(out)
}

/// GET_BROKER_RUNTIME_INFO (28) of the node at `addr`.
pub async fn broker_runtime_info(
    namesrv: &NameServerClient,
    addr: &str,
    timeout: Duration,
) -> Result<BTreeMap<String, String>> {
    let request = RemotingCommand::bare_request(RequestCode::GET_BROKER_RUNTIME_INFO);
    let response = success("-", addr, ask(namesrv, addr, request, timeout).await?)?;
    Ok(from_json::<KVTable>("runtime info", &response.body)?.table)
}

/// GET_BROKER_CONFIG (26) of the node at `addr`: its config, key by key.
pub async fn broker_config(
    namesrv: &NameServerClient,
    addr: &str,
    timeout: Duration,
) -> Result<BTreeMap<String, String>> {
    let request = RemotingCommand::bare_request(RequestCode::GET_BROKER_CONFIG);
    let response = success("-", addr, ask(namesrv, addr, request, timeout).await?)?;
    let text = String::from_utf8_lossy(&response.body);
    Ok(text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

/// UPDATE_BROKER_CONFIG (25) with `key=value` on the leader of `broker_name`, or of every
/// group when `None`: the change goes through each group's Raft log. Returns the groups
/// changed.
pub async fn update_broker_config(
    namesrv: &NameServerClient,
    broker_name: Option<&str>,
    key: &str,
    value: &str,
    timeout: Duration,
) -> Result<Vec<String>> {
    let mut all = groups(namesrv).await?;
    if let Some(name) = broker_name {
        all.retain(|n, _| n == name);
        if all.is_empty() {
            return Err(ClientError::UnknownBroker {
                broker_name: name.to_string(),
            });
        }
    }
    let request = RemotingCommand::bare_request(RequestCode::UPDATE_BROKER_CONFIG)
        .with_body(format!("{key}={value}\n").into_bytes());
    let mut changed = Vec::new();
    for (name, addr, response) in from_each_leader(namesrv, &all, &request, timeout).await? {
        success(&name, &addr, response)?;
        changed.push(name);
    }
    Ok(changed)
}

/// GET_TOPIC_STATS_INFO (202) from the leader of every group serving `topic`, merged.
pub async fn topic_stats(
    namesrv: &NameServerClient,
    topic: &str,
    timeout: Duration,
) -> Result<TopicStatsTable> {
    let groups = groups_of_topic(namesrv, topic).await?;
    let request = RemotingCommand::request(
        RequestCode::GET_TOPIC_STATS_INFO,
        &TopicRequestHeader {
            topic: topic.to_string(),
        },
    );
    let mut table = TopicStatsTable::default();
    for (name, addr, response) in from_each_leader(namesrv, &groups, &request, timeout).await? {
        let response = success(&name, &addr, response)?;
        table
            .offset_table
            .0
            .extend(TopicStatsTable::decode(&response.body)?.offset_table.0);
    }
    Ok(table)
}

/// GET_CONSUME_STATS (208) of `group` (in `topic`, or in every topic it has offsets in)
/// from the leader of every group, merged.
pub async fn consume_stats(
    namesrv: &NameServerClient,
    group: &str,
    topic: Option<&str>,
    timeout: Duration,
) -> Result<ConsumeStats> {
    let request = RemotingCommand::request(
        RequestCode::GET_CONSUME_STATS,
        &GetConsumeStatsRequestHeader {
            consumer_group: group.to_string(),
            topic: topic.map(str::to_string),
        },
    );
    let groups = match topic {
        Some(topic) => groups_of_topic(namesrv, topic).await?,
        None => groups(namesrv).await?,
    };
    let mut stats = ConsumeStats::default();
    for (name, addr, response) in from_each_leader(namesrv, &groups, &request, timeout).await? {
        let response = success(&name, &addr, response)?;
        let part = ConsumeStats::decode(&response.body)?;
        stats.offset_table.0.extend(part.offset_table.0);
        stats.consume_tps += part.consume_tps;
    }
    Ok(stats)
}

/// GET_CONSUMER_CONNECTION_LIST (203) from the leader of every group, merged; an error
/// when no group has a live member of `group` (CONSUMER_NOT_ONLINE).
pub async fn consumer_connection(
    namesrv: &NameServerClient,
    group: &str,
    timeout: Duration,
) -> Result<ConsumerConnection> {
    let request = RemotingCommand::request(
        RequestCode::GET_CONSUMER_CONNECTION_LIST,
        &GetConsumerConnectionListRequestHeader {
            consumer_group: group.to_string(),
        },
    );
    let mut merged: Option<ConsumerConnection> = None;
    let mut offline = None;
    for (name, addr, response) in
        from_each_leader(namesrv, &groups(namesrv).await?, &request, timeout).await?
    {
        if response.response_code() == Some(ResponseCode::CONSUMER_NOT_ONLINE) {
            offline = Some(refused(&name, &addr, response));
            continue;
        }
        let response = success(&name, &addr, response)?;
        let part: ConsumerConnection = from_json("consumer connection", &response.body)?;
        match &mut merged {
            None => merged = Some(part),
            Some(m) => {
                m.connection_set.extend(part.connection_set);
                m.subscription_table.extend(part.subscription_table);
            }
        }
    }
    let mut merged = match (merged, offline) {
        (Some(m), _) => m,
        (None, Some(e)) => return Err(e),
        (None, None) => {
            return Err(ClientError::NoLeader {
                broker_name: "-".into(),
                reason: "no broker group is registered".into(),
            })
        }
    };
    merged.connection_set.sort();
    merged
        .connection_set
        .dedup_by(|a, b| a.client_id == b.client_id);
    Ok(merged)
}

/// GET_CONSUMER_RUNNING_INFO (307) of one client of `group`, which the broker asks of the
/// client over the client's own connection: the leader of each group is asked in turn,
/// and the first that holds the client's connection passes its answer back.
pub async fn consumer_running_info(
    namesrv: &NameServerClient,
    group: &str,
    client_id: &str,
    jstack: bool,
    timeout: Duration,
) -> Result<ConsumerRunningInfo> {
    let request = RemotingCommand::request(
        RequestCode::GET_CONSUMER_RUNNING_INFO,
        &GetConsumerRunningInfoRequestHeader {
            consumer_group: group.to_string(),
            client_id: client_id.to_string(),
            jstack_enable: jstack,
        },
    );
    let mut last_refusal = None;
    for (name, data) in &groups(namesrv).await? {
        let (addr, response) = leader_answer(namesrv, name, data, request.clone(), timeout).await?;
        match response.response_code() {
            Some(ResponseCode::SUCCESS) => return Ok(ConsumerRunningInfo::decode(&response.body)?),
            _ => last_refusal = Some(refused(name, &addr, response)),
        }
    }
    Err(last_refusal.unwrap_or_else(|| ClientError::NoLeader {
        broker_name: "-".into(),
        reason: "no broker group is registered".into(),
    }))
}

/// GET_PRODUCER_CONNECTION_LIST (204) from the leader of every group, merged.
pub async fn producer_connection(
    namesrv: &NameServerClient,
    group: &str,
    timeout: Duration,
) -> Result<ProducerConnection> {
    let request = RemotingCommand::request(
        RequestCode::GET_PRODUCER_CONNECTION_LIST,
        &GetProducerConnectionListRequestHeader {
            producer_group: group.to_string(),
        },
    );
    let mut merged = ProducerConnection::default();
    let mut last_refusal = None;
    for (name, addr, response) in
        from_each_leader(namesrv, &groups(namesrv).await?, &request, timeout).await?
    {
        match response.response_code() {
            Some(ResponseCode::SUCCESS) => {
                let part: ProducerConnection = from_json("producer connection", &response.body)?;
                merged.connection_set.extend(part.connection_set);
            }
            _ => last_refusal = Some(refused(&name, &addr, response)),
        }
    }
    if merged.connection_set.is_empty() {
        if let Some(e) = last_refusal {
            return Err(e);
        }
    }
    merged.connection_set.sort();
    merged
        .connection_set
        .dedup_by(|a, b| a.client_id == b.client_id);
    Ok(merged)
}

/// INVOKE_BROKER_TO_RESET_OFFSET (222) on the leader of every group serving `topic`: the
/// group's offsets move to the first message stored at or after `timestamp` (ms; -1: the
/// end), only backwards unless `force`. Returns each queue's new offset.
pub async fn reset_offset_by_time(
    namesrv: &NameServerClient,
    group: &str,
    topic: &str,
    timestamp: i64,
    force: bool,
    timeout: Duration,
) -> Result<ResetOffsetBody> {
    let request = RemotingCommand::request(
        RequestCode::INVOKE_BROKER_TO_RESET_OFFSET,
        &ResetOffsetRequestHeader {
            topic: topic.to_string(),
            group: group.to_string(),
            timestamp,
            is_force: force,
        },
    );
    let groups = groups_of_topic(namesrv, topic).await?;
    let mut body = ResetOffsetBody::default();
    for (name, addr, response) in from_each_leader(namesrv, &groups, &request, timeout).await? {
        let response = success(&name, &addr, response)?;
        body.offset_table
            .0
            .extend(ResetOffsetBody::decode(&response.body)?.offset_table.0);
    }
    Ok(body)
}

/// WIPE_WRITE_PERM_OF_BROKER (205, `wipe`) or ADD_WRITE_PERM_OF_BROKER (327) for group
/// `broker_name` on every name server, signed with `secret` if given. Returns each name
/// server's count of topics changed.
pub async fn write_perm(
    namesrv: &NameServerClient,
    broker_name: &str,
    wipe: bool,
    secret: Option<&ClusterSecret>,
    timeout: Duration,
) -> Result<Vec<(String, i32)>> {
    let code = match wipe {
        true => RequestCode::WIPE_WRITE_PERM_OF_BROKER,
        false => RequestCode::ADD_WRITE_PERM_OF_BROKER,
    };
    let header = BrokerNameRequestHeader {
        broker_name: broker_name.to_string(),
    };
    let field = if wipe {
        "wipeTopicCount"
    } else {
        "addTopicCount"
    };
    let mut out = Vec::new();
    for addr in namesrv.addrs() {
        let mut request = RemotingCommand::request(code, &header);
        if let Some(secret) = secret {
            sign_broker_request(&mut request, secret, now_ms());
        }
        let response = ask(namesrv, addr, request, timeout).await?;
        if response.response_code() != Some(ResponseCode::SUCCESS) {
            return Err(ClientError::Refused {
                addr: addr.clone(),
                code: response.code,
                remark: response.remark.unwrap_or_default(),
            });
        }
        let count = response
            .ext(field)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        out.push((addr.clone(), count));
    }
    Ok(out)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One member of a broker group, as `groupStatus` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// `n0`, as in `dLegerPeers`.
    pub node_id: String,
    /// The client address it registered (empty if the name servers do not route it).
    pub addr: String,
    /// `LEADER`, `FOLLOWER`, `CANDIDATE`, `LEARNER`, ...; `UNREACHABLE` if it did not answer.
    pub role: String,
    pub term: Option<u64>,
    /// CommitLog positions (bytes): committed, applied and written by this member.
    pub committed_position: Option<u64>,
    pub applied_position: Option<u64>,
    pub written_position: Option<u64>,
    /// From the leader: the last log index this member is known to hold, and how many
    /// entries it is behind the leader's last.
    pub matched_index: Option<u64>,
    pub lag_entries: Option<u64>,
}

/// A broker group's Raft status (`groupStatus`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    pub broker_name: String,
    pub term: u64,
    pub leader_id: Option<String>,
    pub last_log_index: Option<u64>,
    pub members: Vec<MemberStatus>,
}

/// The Raft status of group `broker_name`: the membership as its leader sees it
/// (GET_GROUP_MEMBERS, rocketraft's 9004) and each registered member's own figures
/// (GET_BROKER_RUNTIME_INFO).
pub async fn group_status(
    namesrv: &NameServerClient,
    broker_name: &str,
    timeout: Duration,
) -> Result<GroupStatus> {
    let members: GroupMembers = crate::admin::group_members(namesrv, broker_name, timeout).await?;
    let data = groups(namesrv)
        .await?
        .remove(broker_name)
        .unwrap_or_default();
    let mut runtime = BTreeMap::new();
    for addr in data.broker_addrs.values() {
        if let Ok(info) = broker_runtime_info(namesrv, addr, timeout).await {
            if let Some(id) = info.get("raftNodeId").cloned() {
                runtime.insert(id, (addr.clone(), info));
            }
        }
    }
    let mut ids: Vec<String> = members.voters.keys().cloned().collect();
    ids.extend(members.learners.keys().cloned());
    let number =
        |info: &BTreeMap<String, String>, key: &str| info.get(key).and_then(|v| v.parse().ok());
    let out = ids
        .into_iter()
        .map(|id| {
            let (addr, info) = runtime.get(&id).cloned().unwrap_or_default();
            let matched = match members.leader_id.as_deref() == Some(id.as_str()) {
                true => members.last_log_index,
                false => members.matched.get(&id).copied().flatten(),
            };
            let role = match (info.get("raftRole"), members.learners.contains_key(&id)) {
                (Some(role), false) => role.clone(),
                (Some(_), true) => "LEARNER".into(),
                (None, _) => "UNREACHABLE".into(),
            };
            MemberStatus {
                role,
                term: number(&info, "raftTerm"),
                committed_position: number(&info, "raftCommittedPosition"),
                applied_position: number(&info, "raftAppliedPosition"),
                written_position: number(&info, "raftWrittenPosition"),
                lag_entries: members
                    .last_log_index
                    .zip(matched)
                    .map(|(last, m)| last.saturating_sub(m)),
                matched_index: matched,
                node_id: id,
                addr,
            }
        })
        .collect();
    Ok(GroupStatus {
        broker_name: broker_name.to_string(),
        term: members.term,
        leader_id: members.leader_id,
        last_log_index: members.last_log_index,
        members: out,
    })
}

/// `mqadmin deleteTopic`: DELETE_TOPIC_IN_BROKER (215) on the leader of every group (of
/// `cluster`, if given), through each group's Raft log, then DELETE_TOPIC_IN_NAMESRV (216)
/// on every name server, signed with `secret` if given. Returns the groups it was deleted
/// from.
pub async fn delete_topic(
    namesrv: &NameServerClient,
    topic: &str,
    cluster: Option<&str>,
    secret: Option<&ClusterSecret>,
    timeout: Duration,
) -> Result<Vec<String>> {
    let info = namesrv.cluster_info().await?;
    let mut groups = info.broker_addr_table;
    if let Some(cluster) = cluster {
        let names = info
            .cluster_addr_table
            .get(cluster)
            .cloned()
            .unwrap_or_default();
        groups.retain(|name, _| names.contains(name));
    }
    let request =
        RemotingCommand::bare_request(RequestCode::DELETE_TOPIC_IN_BROKER).with_ext("topic", topic);
    let mut deleted = Vec::new();
    for (name, addr, response) in from_each_leader(namesrv, &groups, &request, timeout).await? {
        success(&name, &addr, response)?;
        deleted.push(name);
    }
    // As mqadmin deleteTopic: an ordered topic's layout goes with it.
    set_kv_config(
        namesrv,
        NAMESPACE_ORDER_TOPIC_CONFIG,
        topic,
        None,
        secret,
        timeout,
    )
    .await?;
    let header = remoting::header::DeleteTopicFromNamesrvRequestHeader {
        topic: topic.to_string(),
        cluster_name: cluster.map(str::to_string),
    };
    for addr in namesrv.addrs() {
        let mut request = RemotingCommand::request(RequestCode::DELETE_TOPIC_IN_NAMESRV, &header);
        if let Some(secret) = secret {
            sign_broker_request(&mut request, secret, now_ms());
        }
        let response = ask(namesrv, addr, request, timeout).await?;
        if response.response_code() != Some(ResponseCode::SUCCESS) {
            return Err(ClientError::Refused {
                addr: addr.clone(),
                code: response.code,
                remark: response.remark.unwrap_or_default(),
            });
        }
    }
    Ok(deleted)
}

/// RocketMQ's KV namespace of ordered topics' layouts (`NamesrvUtil`).
pub const NAMESPACE_ORDER_TOPIC_CONFIG: &str = "ORDER_TOPIC_CONFIG";

/// PUT_KV_CONFIG (100) with `value`, or DELETE_KV_CONFIG (102) when `None`, on every name
/// server, signed with `secret` if given.
pub async fn set_kv_config(
    namesrv: &NameServerClient,
    namespace: &str,
    key: &str,
    value: Option<&str>,
    secret: Option<&ClusterSecret>,
    timeout: Duration,
) -> Result<()> {
    for addr in namesrv.addrs() {
        let mut request = match value {
            Some(value) => RemotingCommand::request(
                RequestCode::PUT_KV_CONFIG,
                &remoting::header::PutKVConfigRequestHeader {
                    namespace: namespace.to_string(),
                    key: key.to_string(),
                    value: value.to_string(),
                },
            ),
            None => RemotingCommand::request(
                RequestCode::DELETE_KV_CONFIG,
                &remoting::header::KVConfigRequestHeader {
                    namespace: namespace.to_string(),
                    key: key.to_string(),
                },
            ),
        };
        if let Some(secret) = secret {
            sign_broker_request(&mut request, secret, now_ms());
        }
        let response = ask(namesrv, addr, request, timeout).await?;
        if response.response_code() != Some(ResponseCode::SUCCESS) {
            return Err(ClientError::Refused {
                addr: addr.clone(),
                code: response.code,
                remark: response.remark.unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// GET_TOPICS_BY_CLUSTER (224): the topics of `cluster`'s groups.
pub async fn topics_by_cluster(
    namesrv: &NameServerClient,
    cluster: &str,
) -> Result<remoting::route::TopicList> {
    let request = RemotingCommand::request(
        RequestCode::GET_TOPICS_BY_CLUSTER,
        &remoting::header::GetTopicsByClusterRequestHeader {
            cluster: cluster.to_string(),
        },
    );
    let (addr, response) = namesrv.request(request).await?;
    match response.response_code() {
        Some(ResponseCode::SUCCESS) => Ok(from_json("topic list", &response.body)?),
        _ => Err(ClientError::Refused {
            addr,
            code: response.code,
            remark: response.remark.unwrap_or_default(),
        }),
    }
}
