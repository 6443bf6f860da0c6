//! Admin requests: topic creation on every broker group of a cluster (like
//! `mqadmin updateTopic`, and in batches like `mqadmin updateTopicList`). Topic changes go
//! through each group's Raft log, so they are sent to each group's leader; a follower's
//! answer naming the leader is followed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use remoting::connection::NoRequests;
use remoting::header::CreateTopicRequestHeader;
use remoting::route::{perm, to_json, CreateTopicListRequestBody, ListedTopicConfig, TopicConfig};
use remoting::{Connection, RemotingCommand, RequestCode, ResponseCode};

use crate::error::{ClientError, Result};
use crate::namesrv::NameServerClient;

/// Creates (or updates) `topic` with `queue_nums` read and write queues on every broker
/// group the name servers know; returns the groups it was created on. Returns once the name
/// servers' route shows the new queues (or `timeout` has passed waiting for that), so a
/// producer started right after is routed to the topic's own queues.
pub async fn create_topic(
    namesrv: &NameServerClient,
    topic: &str,
    queue_nums: i32,
    timeout: Duration,
) -> Result<Vec<String>> {
    update_topic(
        namesrv,
        topic,
        (queue_nums, queue_nums),
        perm::READ_WRITE,
        false,
        timeout,
    )
    .await
}

/// Creates or updates `topic` with `(read, write)` queues, permission `perm` and the
/// `order` flag on every broker group the name servers know (`mqadmin updateTopic`); as
/// [`create_topic`].
pub async fn update_topic(
    namesrv: &NameServerClient,
    topic: &str,
    (read_queue_nums, write_queue_nums): (i32, i32),
    perm: i32,
    order: bool,
    timeout: Duration,
) -> Result<Vec<String>> {
    let info = namesrv.cluster_info().await?;
    let mut created = Vec::new();
    let header = CreateTopicRequestHeader {
        read_queue_nums,
        write_queue_nums,
        perm,
        order,
        ..create_topic_header(topic, write_queue_nums)
    };
    for (broker_name, data) in &info.broker_addr_table {
        let request = RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_TOPIC, &header);
        request_leader(namesrv, broker_name, data, request, timeout).await?;
        created.push(broker_name.clone());
    }
    wait_for_route(namesrv, topic, write_queue_nums, &created, timeout).await;
    Ok(created)
}

/// UPDATE_AND_CREATE_TOPIC's header for a read-write topic of `queue_nums` queues.
fn create_topic_header(topic: &str, queue_nums: i32) -> CreateTopicRequestHeader {
    CreateTopicRequestHeader {
        topic: topic.to_string(),
        default_topic: "TBW102".into(),
        read_queue_nums: queue_nums,
        write_queue_nums: queue_nums,
        perm: perm::READ_WRITE,
        topic_filter_type: "SINGLE_TAG".into(),
        topic_sys_flag: Some(0),
        order: false,
    }
}

/// The most topics [`create_topics`] puts in one UPDATE_AND_CREATE_TOPIC_LIST request.
pub const TOPICS_PER_REQUEST_MAX: usize = 1000;
/// The most body bytes [`create_topics`] puts in one request, well inside a frame (16 MiB):
/// a thousand topics of the longest names (127 characters) take about 300 KB.
pub const TOPIC_LIST_BODY_BYTES_MAX: usize = 1 << 20;

/// Creates (or updates) every topic of `topics` with `queue_nums` read and write queues on
/// every broker group the name servers know, with UPDATE_AND_CREATE_TOPIC_LIST requests of at
/// most [`TOPICS_PER_REQUEST_MAX`] topics and [`TOPIC_LIST_BODY_BYTES_MAX`] body bytes, sent
/// to each group's leader (the groups at once, each group's requests one after another); each
/// request is one Raft entry on its group. Returns the groups, once the name servers route
/// the last topic (or `timeout` has passed waiting for that), as [`create_topic`] does.
///
/// A broker refuses a whole request if one of its topics breaks a rule, naming it, and
/// creates none of that request; requests before it on that group stand. Asking again
/// is harmless: topics already held unchanged are left as they are. A broker that does not
/// serve the list request (REQUEST_CODE_NOT_SUPPORTED: RocketMQ 4.x) is sent one
/// UPDATE_AND_CREATE_TOPIC a topic instead.
pub async fn create_topics(
    namesrv: &NameServerClient,
    topics: &[String],
    queue_nums: i32,
    timeout: Duration,
) -> Result<Vec<String>> {
    let Some(last) = topics.last() else {
        return Ok(Vec::new());
    };
    let bodies = topic_list_bodies(topics, queue_nums);
    let info = namesrv.cluster_info().await?;
    let groups: Vec<String> = info.broker_addr_table.keys().cloned().collect();
    let per_group = info.broker_addr_table.iter().map(|(broker_name, data)| {
        let bodies = &bodies;
        async move {
            for body in bodies {
                let request =
                    RemotingCommand::bare_request(RequestCode::UPDATE_AND_CREATE_TOPIC_LIST)
                        .with_body(body.clone());
                match request_leader(namesrv, broker_name, data, request, timeout).await {
                    Ok(_) => {}
                    // A broker without the list request (RocketMQ 4.x, or rocketraft before
                    // issue 21): one UPDATE_AND_CREATE_TOPIC a topic, 64 at a time.
                    Err(ClientError::Broker { code, .. })
                        if code == ResponseCode::REQUEST_CODE_NOT_SUPPORTED as i32 =>
                    {
                        use futures::{StreamExt, TryStreamExt};
                        return futures::stream::iter(topics)
                            .map(|topic| {
                                let header = create_topic_header(topic, queue_nums);
                                let request = RemotingCommand::request(
                                    RequestCode::UPDATE_AND_CREATE_TOPIC,
                                    &header,
                                );
                                request_leader(namesrv, broker_name, data, request, timeout)
                            })
                            .buffer_unordered(64)
                            .try_for_each(|_| async { Ok(()) })
                            .await;
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok::<_, ClientError>(())
        }
    });
    futures::future::try_join_all(per_group).await?;
    if !groups.is_empty() {
        wait_for_route(namesrv, last, queue_nums, &groups, timeout).await;
    }
    Ok(groups)
}

/// `topics` as UPDATE_AND_CREATE_TOPIC_LIST bodies within the per-request limits, in order.
fn topic_list_bodies(topics: &[String], queue_nums: i32) -> Vec<bytes::Bytes> {
    let listed = |topic: &String| ListedTopicConfig {
        config: TopicConfig {
            topic_name: topic.clone(),
            read_queue_nums: queue_nums,
            write_queue_nums: queue_nums,
            perm: perm::READ_WRITE,
            ..TopicConfig::default()
        },
        attributes: None,
    };
    let encode = |topic_config_list| {
        bytes::Bytes::from(to_json(&CreateTopicListRequestBody { topic_config_list }))
    };
    // `{"topicConfigList":[]}`, then each config's JSON and a comma.
    const WRAPPER_BYTES: usize = 22;
    let mut bodies = Vec::new();
    let (mut batch, mut batch_bytes) = (Vec::new(), WRAPPER_BYTES);
    for topic in topics {
        let config = listed(topic);
        let bytes = to_json(&config).len() + 1;
        let full = batch.len() == TOPICS_PER_REQUEST_MAX
            || batch_bytes + bytes > TOPIC_LIST_BODY_BYTES_MAX;
        if full && !batch.is_empty() {
            bodies.push(encode(std::mem::take(&mut batch)));
            batch_bytes = WRAPPER_BYTES;
        }
        batch.push(config);
        batch_bytes += bytes;
    }
    if !batch.is_empty() {
        bodies.push(encode(batch));
    }
    bodies
}

/// Sends `request` to the leader of broker group `broker_name`, following a follower's
/// answer that names the leader (at most three hops); errors unless it answers SUCCESS.
/// Returns the address that answered and the answer.
pub(crate) async fn request_leader(
    namesrv: &NameServerClient,
    broker_name: &str,
    data: &remoting::route::BrokerData,
    request: RemotingCommand,
    timeout: Duration,
) -> Result<(String, RemotingCommand)> {
    let (target, response) = leader_answer(namesrv, broker_name, data, request, timeout).await?;
    if response.response_code() == Some(ResponseCode::SUCCESS) {
        return Ok((target, response));
    }
    Err(ClientError::Broker {
        broker_name: broker_name.to_string(),
        addr: target,
        code: response.code,
        remark: response.remark.unwrap_or_default(),
    })
}

/// Sends `request` to the leader of broker group `broker_name`, following a follower's
/// answer that names the leader (at most three hops); returns the first answer that is not
/// such a redirect, whatever its code, with the address that gave it.
pub(crate) async fn leader_answer(
    namesrv: &NameServerClient,
    broker_name: &str,
    data: &remoting::route::BrokerData,
    request: RemotingCommand,
    timeout: Duration,
) -> Result<(String, RemotingCommand)> {
    let mut target = data
        .leader_addr()
        .or_else(|| data.broker_addrs.values().next().map(String::as_str))
        .map(str::to_string)
        .ok_or_else(|| ClientError::NoLeader {
            broker_name: broker_name.to_string(),
            reason: "no member registered".into(),
        })?;
    for _ in 0..3 {
        // The name-server client's settings: TLS and the ACL signature apply to brokers too.
        let conn =
            Connection::connect(&target, namesrv.connection_config(), Arc::new(NoRequests)).await?;
        let response = conn.request(request.clone(), timeout).await?;
        conn.close();
        match (response.response_code(), response.ext("leaderAddr")) {
            (Some(ResponseCode::SERVICE_NOT_AVAILABLE), Some(leader)) if leader != target => {
                target = leader.to_string();
            }
            _ => return Ok((target, response)),
        }
    }
    Err(ClientError::NoLeader {
        broker_name: broker_name.to_string(),
        reason: "followed three redirects without reaching the leader".into(),
    })
}

/// Asks the leader of every broker group for a retention pass now (DELETE_EXPIRED_COMMITLOG,
/// like `mqadmin deleteExpiredCommitLog`): expired CommitLog segments go whatever the
/// `deleteWhen` hour. Returns the groups asked; the pass itself runs in the background.
pub async fn delete_expired_commit_log(
    namesrv: &NameServerClient,
    timeout: Duration,
) -> Result<Vec<String>> {
    let info = namesrv.cluster_info().await?;
    let mut asked = Vec::new();
    for (broker_name, data) in &info.broker_addr_table {
        let request = RemotingCommand::bare_request(RequestCode::DELETE_EXPIRED_COMMITLOG);
        request_leader(namesrv, broker_name, data, request, timeout).await?;
        asked.push(broker_name.clone());
    }
    Ok(asked)
}

/// What [`transfer_leadership`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadershipTransfer {
    /// The client address of the node that led and handed over.
    pub from_addr: String,
    /// The new leader, `n1`.
    pub leader_id: String,
    /// The new leader's term.
    pub term: u64,
    /// How long the old leader held appends.
    pub held_ms: u64,
    /// How long the transfer took on the old leader.
    pub elapsed_ms: u64,
}

/// Hands the Raft leadership of broker group `broker_name` to its member `target_id` (`n1`)
/// with TRANSFER_LEADERSHIP (9001, rocketraft's own code), sent to the group's leader as the
/// name servers know it; a follower's answer naming the leader is followed. `timeout` bounds
/// each request (the broker gives up on its own after its transfer timeout).
pub async fn transfer_leadership(
    namesrv: &NameServerClient,
    broker_name: &str,
    target_id: &str,
    timeout: Duration,
) -> Result<LeadershipTransfer> {
    let info = namesrv.cluster_info().await?;
    let data =
        info.broker_addr_table
            .get(broker_name)
            .ok_or_else(|| ClientError::UnknownBroker {
                broker_name: broker_name.to_string(),
            })?;
    let request = RemotingCommand::bare_request(RequestCode::TRANSFER_LEADERSHIP)
        .with_ext("brokerName", broker_name)
        .with_ext("targetId", target_id);
    let (from_addr, response) =
        request_leader(namesrv, broker_name, data, request, timeout).await?;
    let number = |key: &str| {
        response
            .ext(key)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(LeadershipTransfer {
        leader_id: response.ext("leaderId").unwrap_or(target_id).to_string(),
        term: number("term"),
        held_ms: number("heldMs"),
        elapsed_ms: number("elapsedMs"),
        from_addr,
    })
}

/// A broker group's Raft membership (GET_GROUP_MEMBERS, rocketraft's own code 9004), as
/// one member sees it; members are named as in `dLegerPeers` (`n0`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupMembers {
    /// The member that answered.
    pub node_id: String,
    pub leader_id: Option<String>,
    pub term: u64,
    /// Voters and their peer addresses.
    pub voters: BTreeMap<String, String>,
    /// Members that receive the log and do not vote yet.
    pub learners: BTreeMap<String, String>,
    /// A change is half done: the old and the new voters both count.
    pub joint: bool,
    pub last_log_index: Option<u64>,
    /// From the leader: the last log index each other member is known to hold.
    pub matched: BTreeMap<String, Option<u64>>,
}

fn group_data(
    info: &remoting::route::ClusterInfo,
    broker_name: &str,
) -> Result<remoting::route::BrokerData> {
    info.broker_addr_table
        .get(broker_name)
        .cloned()
        .ok_or_else(|| ClientError::UnknownBroker {
            broker_name: broker_name.to_string(),
        })
}

fn members_of(broker_name: &str, addr: &str, response: &RemotingCommand) -> Result<GroupMembers> {
    serde_json::from_slice(&response.body).map_err(|e| ClientError::Broker {
        broker_name: broker_name.to_string(),
        addr: addr.to_string(),
        code: response.code,
        remark: format!("membership body does not decode: {e}"),
    })
}

/// The Raft membership of broker group `broker_name`, as its leader sees it.
pub async fn group_members(
    namesrv: &NameServerClient,
    broker_name: &str,
    timeout: Duration,
) -> Result<GroupMembers> {
    let data = group_data(&namesrv.cluster_info().await?, broker_name)?;
    let request = RemotingCommand::bare_request(RequestCode::GET_GROUP_MEMBERS)
        .with_ext("brokerName", broker_name);
    let (addr, response) = request_leader(namesrv, broker_name, &data, request, timeout).await?;
    members_of(broker_name, &addr, &response)
}

/// Adds node `node_id` (`n3`), listening for peers at `peer_addr`, to broker group
/// `broker_name` (ADD_GROUP_NODE, 9002). The node must be running with
/// `joinExistingGroup=true`. It joins as a learner and becomes a voter once it has caught
/// up; while the leader reports it still catching up, this asks again, until `deadline`.
pub async fn add_node(
    namesrv: &NameServerClient,
    broker_name: &str,
    node_id: &str,
    peer_addr: &str,
    deadline: Duration,
) -> Result<GroupMembers> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let data = group_data(&namesrv.cluster_info().await?, broker_name)?;
        let request = RemotingCommand::bare_request(RequestCode::ADD_GROUP_NODE)
            .with_ext("brokerName", broker_name)
            .with_ext("nodeId", node_id)
            .with_ext("peerAddr", peer_addr);
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let (addr, response) = leader_answer(
            namesrv,
            broker_name,
            &data,
            request,
            left.max(Duration::from_secs(1)),
        )
        .await?;
        if response.response_code() == Some(ResponseCode::SUCCESS) {
            return members_of(broker_name, &addr, &response);
        }
        let catching_up = response.ext("catchingUp") == Some("true");
        if !catching_up || tokio::time::Instant::now() >= until {
            return Err(ClientError::Broker {
                broker_name: broker_name.to_string(),
                addr,
                code: response.code,
                remark: response.remark.unwrap_or_default(),
            });
        }
        tracing::info!(node_id, "the new node is still catching up; waiting on");
    }
}

/// Removes node `node_id` from broker group `broker_name` (REMOVE_GROUP_NODE, 9003). When
/// it is the leader, its leadership is first moved to the most caught-up other voter
/// (TRANSFER_LEADERSHIP), so the removal costs a transfer, not a failover. `timeout` bounds
/// each request.
pub async fn remove_node(
    namesrv: &NameServerClient,
    broker_name: &str,
    node_id: &str,
    timeout: Duration,
) -> Result<GroupMembers> {
    let mut moved = false;
    // Room for a transfer or three besides the removal itself.
    let until = tokio::time::Instant::now() + timeout * 3;
    loop {
        let data = group_data(&namesrv.cluster_info().await?, broker_name)?;
        let request = RemotingCommand::bare_request(RequestCode::REMOVE_GROUP_NODE)
            .with_ext("brokerName", broker_name)
            .with_ext("nodeId", node_id);
        let (addr, response) = leader_answer(namesrv, broker_name, &data, request, timeout).await?;
        let code = response.response_code();
        if code == Some(ResponseCode::SUCCESS) {
            return members_of(broker_name, &addr, &response);
        }
        let leads = response.ext("targetLeads") == Some("true");
        // After a transfer the name servers may route to the old leader a moment longer.
        let stale = code == Some(ResponseCode::SERVICE_NOT_AVAILABLE) && moved;
        if (leads && !moved) || stale {
            if leads {
                let members = group_members(namesrv, broker_name, timeout).await?;
                let to = members
                    .voters
                    .keys()
                    .filter(|v| *v != node_id)
                    .max_by_key(|v| members.matched.get(*v).copied().flatten())
                    .cloned()
                    .ok_or_else(|| ClientError::NoLeader {
                        broker_name: broker_name.to_string(),
                        reason: format!("{node_id} is the only voter"),
                    })?;
                tracing::info!(node_id, to, "moving the leadership off the node to remove");
                // A transfer that could not finish (a loaded target missing its vote
                // deadline) leaves the leadership where it was: try again, bounded.
                let mut tries = 0;
                loop {
                    tries += 1;
                    match transfer_leadership(namesrv, broker_name, &to, timeout).await {
                        Ok(_) => break,
                        // The election it started may still have moved it.
                        Err(_)
                            if leader_moved_off(namesrv, broker_name, node_id, timeout).await =>
                        {
                            break
                        }
                        Err(e) if tries < 3 && tokio::time::Instant::now() < until => {
                            tracing::warn!(node_id, to, error = %e, "transfer failed; trying again");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
                moved = true;
            }
            if tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        return Err(ClientError::Broker {
            broker_name: broker_name.to_string(),
            addr,
            code: response.code,
            remark: response.remark.unwrap_or_default(),
        });
    }
}

/// Whether the group's leader (as the group answers now) is another node than `node_id`.
async fn leader_moved_off(
    namesrv: &NameServerClient,
    broker_name: &str,
    node_id: &str,
    timeout: Duration,
) -> bool {
    tokio::time::sleep(Duration::from_millis(300)).await;
    group_members(namesrv, broker_name, timeout)
        .await
        .is_ok_and(|m| m.leader_id.as_deref().is_some_and(|l| l != node_id))
}

/// Waits (at most `timeout`) until the name server's route for `topic` shows `queue_nums`
/// write queues on every group in `groups`. A broker registers a new topic right after
/// creating it, but without this wait a producer started at once could still be given the
/// default topic's route, and send to a queue the new topic does not have.
async fn wait_for_route(
    namesrv: &NameServerClient,
    topic: &str,
    queue_nums: i32,
    groups: &[String],
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(route)) = namesrv.topic_route(topic).await {
            let has = |group: &String| {
                route
                    .queue_datas
                    .iter()
                    .any(|q| &q.broker_name == group && q.write_queue_nums == queue_nums)
            };
            if groups.iter().all(has) {
                return;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(topic, "the name servers do not show the new topic yet");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Properties the broker or the client writes for its own bookkeeping: a dead letter's
/// re-send does not carry them (a new UNIQ_KEY is given by the producer).
const BOOKKEEPING_PROPERTIES: [&str; 14] = [
    remoting::message::property::UNIQ_KEY,
    remoting::message::property::WAIT_STORE_MSG_OK,
    remoting::message::property::DELAY_TIME_LEVEL,
    remoting::message::property::REAL_TOPIC,
    remoting::message::property::REAL_QUEUE_ID,
    remoting::message::property::RETRY_TOPIC,
    remoting::message::property::RECONSUME_TIME,
    remoting::message::property::MAX_RECONSUME_TIMES,
    remoting::message::property::TIMER_DELIVER_MS,
    remoting::message::property::TIMER_DELAY_SEC,
    remoting::message::property::TIMER_DELAY_MS,
    remoting::message::property::TIMER_OUT_MS,
    remoting::message::property::MIN_OFFSET,
    remoting::message::property::MAX_OFFSET,
];

/// Every message in `%DLQ%<group>`, oldest first, read from the group's leaders (a
/// consumer group's dead letters: the messages it failed `maxReconsumeTimes` times).
pub async fn dead_letters(
    client: &crate::ClientConfig,
    group: &str,
) -> Result<Vec<crate::message::MessageExt>> {
    read_topic(client, &crate::retry::dlq_topic(group)).await
}

/// Every message stored in `topic`, queue by queue from its first kept offset (none if no
/// name server routes it), without committing any offset. `client` gives the name servers
/// and how to connect (ACL, TLS).
pub async fn read_topic(
    client: &crate::ClientConfig,
    topic: &str,
) -> Result<Vec<crate::message::MessageExt>> {
    use crate::pull_consumer::{PullConsumer, PullConsumerConfig, PullResult};
    let mut config = PullConsumerConfig::new(client.namesrv_addr.clone(), "TOOLS_CONSUMER");
    config.client = client.clone();
    let consumer = PullConsumer::start(config).await?;
    let mut out = Vec::new();
    let queues = match consumer.fetch_queues(topic).await {
        Ok(queues) => queues,
        Err(e) => {
            consumer.shutdown().await;
            return match e {
                ClientError::NoRoute { .. } => Ok(out),
                e => Err(e),
            };
        }
    };
    for queue in queues {
        let mut offset = 0i64;
        loop {
            match consumer
                .pull(&queue, offset, 32, "*", Duration::ZERO)
                .await?
            {
                PullResult::Found {
                    messages,
                    next_begin_offset,
                    ..
                } => {
                    out.extend(messages);
                    offset = next_begin_offset;
                }
                PullResult::NoMatchedMessage {
                    next_begin_offset, ..
                } => offset = next_begin_offset,
                // Retention deleted the queue's head: go on from its first kept offset.
                PullResult::OffsetIllegal {
                    next_begin_offset, ..
                } if next_begin_offset > offset => offset = next_begin_offset,
                _ => break,
            }
        }
    }
    consumer.shutdown().await;
    Ok(out)
}

/// The message to re-send for a dead letter: its body, flag and user properties, to the
/// topic it was first consumed from (`RETRY_TOPIC`; its DLQ topic when it has none).
pub fn resend_message(dead_letter: &crate::message::MessageExt) -> crate::message::Message {
    let topic = dead_letter
        .property(remoting::message::property::RETRY_TOPIC)
        .unwrap_or(&dead_letter.topic)
        .to_string();
    let mut message = crate::message::Message::new(topic, dead_letter.body.clone());
    message.flag = dead_letter.flag;
    for (name, value) in &dead_letter.properties {
        if !BOOKKEEPING_PROPERTIES.contains(&name.as_str()) && !name.starts_with("__") {
            message = message.with_property(name.clone(), value.clone());
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &[u8]) -> Vec<TopicConfig> {
        let body: CreateTopicListRequestBody =
            remoting::route::from_json("topic list", body).unwrap();
        body.topic_config_list
            .into_iter()
            .map(|t| t.config)
            .collect()
    }

    /// Batches hold at most 1,000 topics and 1 MiB each, every topic once, in order, with
    /// the queues asked for.
    #[test]
    fn topic_list_bodies_keep_the_per_request_limits() {
        let topics: Vec<String> = (0..2500).map(|i| format!("T-{i}")).collect();
        let bodies = topic_list_bodies(&topics, 4);
        let sizes: Vec<usize> = bodies.iter().map(|b| decode(b).len()).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        let back: Vec<TopicConfig> = bodies.iter().flat_map(|b| decode(b)).collect();
        let names: Vec<&String> = back.iter().map(|c| &c.topic_name).collect();
        assert_eq!(names, topics.iter().collect::<Vec<_>>());
        assert!(back
            .iter()
            .all(|c| (c.read_queue_nums, c.write_queue_nums, c.perm) == (4, 4, perm::READ_WRITE)));

        let long: Vec<String> = (0..40)
            .map(|i| format!("{i}{}", "x".repeat(60_000)))
            .collect();
        let bodies = topic_list_bodies(&long, 1);
        assert!(bodies.len() > 2, "{}", bodies.len());
        assert!(bodies.iter().all(|b| b.len() <= TOPIC_LIST_BODY_BYTES_MAX));
        let back: Vec<String> = bodies
            .iter()
            .flat_map(|b| decode(b))
            .map(|c| c.topic_name)
            .collect();
        assert_eq!(back, long);
        assert!(topic_list_bodies(&[], 1).is_empty());
    }
}
