//! Proves issue 19's "names and limits" with real processes: every request that carries a
//! topic, a consumer or producer group, a client id or a broker name (in a header, a body or
//! a property) refuses one that breaks RocketMQ's rules (`remoting::names`) with a remark
//! that names the rule, and so does a group whose `%RETRY%<group>` topic would be too long.
//! Table-driven: one row per request code and field, each sent over a raw connection with
//! three bad names (a NUL; one character over the limit; a character outside
//! `[%|a-zA-Z0-9_-]`, or a line break for client ids and broker names). Afterwards no bad
//! name is in the group's topic or subscription-group table or in the name server's topic
//! list, the group still sends and reads back, and a follower killed and restarted starts
//! and catches up (its CommitLog byte-identical to the others').

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Message, Producer, ProducerConfig, PullConsumer, PullConsumerConfig};
use remoting::cluster_auth::{sign_broker_request, ClusterSecret};
use remoting::connection::NoRequests;
use remoting::header::{
    ConsumerGroupRequestHeader, ConsumerSendMsgBackRequestHeader, CreateTopicRequestHeader,
    EndTransactionRequestHeader, GetRouteInfoRequestHeader, PullMessageRequestHeader,
    QueryConsumerOffsetRequestHeader, QueryMessageRequestHeader, QueueOffsetRequestHeader,
    RegisterBrokerRequestHeader, SearchOffsetRequestHeader, SendMessageRequestHeader,
    SendMessageRequestHeaderV2, UnregisterClientRequestHeader, UpdateConsumerOffsetRequestHeader,
};
use remoting::names;
use remoting::queue_lock::{LockBatchRequestBody, MessageQueueData};
use remoting::route::{
    from_json, to_json, CheckClientRequestBody, ConsumerData, HeartbeatData, ProducerData,
    RegisterBrokerBody, SubscriptionData, TopicConfig, TopicConfigSerializeWrapper, TopicList,
};
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};

const TIMEOUT: Duration = Duration::from_secs(5);
const TOPIC: &str = "HostileNames";
const GROUP: &str = "hostile-g";
const CLIENT_ID: &str = "127.0.0.1@hostile";

/// What a row's request needs besides the bad name.
struct Ctx {
    secret: ClusterSecret,
    /// The CommitLog offset of a stored message (CONSUMER_SEND_MSG_BACK names one).
    stored_offset: i64,
}

/// Which name a row puts the bad one in, and so which bad names it gets.
#[derive(Clone, Copy, Debug)]
enum Names {
    Topic,
    Group,
    ClientId,
    BrokerName,
    /// A valid group whose `%RETRY%<group>` is longer than a topic may be.
    RetryTopicOfGroup,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum To {
    Leader,
    Namesrv,
}

struct Row {
    request: &'static str,
    field: &'static str,
    names: Names,
    to: To,
    build: Build,
}

/// A row's request, given the bad name.
type Build = fn(&Ctx, &str) -> RemotingCommand;

const ONLY_NAME_CHARS: &str = "may contain only letters, digits, %, |, _ and -";
const NO_CONTROL: &str = "may not contain control characters";

/// The bad names a row is sent with, each with what the refusal's remark must say: the
/// kind of name, and the rule it breaks.
fn bad_names(names: Names) -> Vec<(String, &'static str, &'static str)> {
    let (kind, chars, long, odd) = match names {
        Names::Topic => ("topic", ONLY_NAME_CHARS, "t".repeat(128), "a.b"),
        Names::Group => ("group", ONLY_NAME_CHARS, "g".repeat(256), "a b"),
        Names::ClientId => ("client id", NO_CONTROL, "c".repeat(256), "a\nb"),
        Names::BrokerName => ("broker name", NO_CONTROL, "b".repeat(256), "a\nb"),
        Names::RetryTopicOfGroup => {
            return vec![("g".repeat(121), "topic", "longer than 127 characters")]
        }
    };
    let longer = match names {
        Names::Topic => "longer than 127 characters",
        _ => "longer than 255 characters",
    };
    vec![
        ("a\0b".to_string(), kind, chars),
        (long, kind, longer),
        (odd.to_string(), kind, chars),
    ]
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn send_header(topic: &str, producer_group: &str) -> SendMessageRequestHeader {
    SendMessageRequestHeader {
        producer_group: producer_group.into(),
        topic: topic.into(),
        default_topic: "TBW102".into(),
        default_topic_queue_nums: 4,
        queue_id: 0,
        born_timestamp: now_ms(),
        ..Default::default()
    }
}

fn send(code: RequestCode, topic: &str, producer_group: &str) -> RemotingCommand {
    let header = send_header(topic, producer_group);
    let request = match code {
        RequestCode::SEND_MESSAGE => RemotingCommand::request(code, &header),
        _ => RemotingCommand::request(code, &SendMessageRequestHeaderV2::from(header)),
    };
    request.with_body("hostile")
}

/// A prepared (transactional) send whose own PGROUP property is `group`.
fn prepared_send(group: &str) -> RemotingCommand {
    let header = SendMessageRequestHeader {
        sys_flag: 4,
        properties: Some(format!("TRAN_MSG\u{1}true\u{2}PGROUP\u{1}{group}\u{2}")),
        ..send_header(TOPIC, GROUP)
    };
    RemotingCommand::request(
        RequestCode::SEND_MESSAGE_V2,
        &SendMessageRequestHeaderV2::from(header),
    )
    .with_body("half")
}

fn pull(topic: &str, group: &str) -> RemotingCommand {
    RemotingCommand::request(
        RequestCode::PULL_MESSAGE,
        &PullMessageRequestHeader {
            consumer_group: group.into(),
            topic: topic.into(),
            max_msg_nums: 1,
            subscription: Some("*".into()),
            ..Default::default()
        },
    )
}

fn query_offset(topic: &str, group: &str) -> RemotingCommand {
    RemotingCommand::request(
        RequestCode::QUERY_CONSUMER_OFFSET,
        &QueryConsumerOffsetRequestHeader {
            consumer_group: group.into(),
            topic: topic.into(),
            queue_id: 0,
            set_zero_if_not_found: Some(true),
        },
    )
}

fn update_offset(topic: &str, group: &str) -> RemotingCommand {
    RemotingCommand::request(
        RequestCode::UPDATE_CONSUMER_OFFSET,
        &UpdateConsumerOffsetRequestHeader {
            consumer_group: group.into(),
            topic: topic.into(),
            queue_id: 0,
            commit_offset: 1,
        },
    )
}

fn queue_offset(code: RequestCode, topic: &str) -> RemotingCommand {
    RemotingCommand::request(
        code,
        &QueueOffsetRequestHeader {
            topic: topic.into(),
            queue_id: 0,
        },
    )
}

fn heartbeat(
    client_id: &str,
    producer_group: &str,
    consumer_group: &str,
    topic: &str,
) -> RemotingCommand {
    let data = HeartbeatData {
        client_id: client_id.into(),
        producer_data_set: vec![ProducerData {
            group_name: producer_group.into(),
        }],
        consumer_data_set: vec![ConsumerData {
            group_name: consumer_group.into(),
            consume_type: "CONSUME_ACTIVELY".into(),
            message_model: "CLUSTERING".into(),
            consume_from_where: "CONSUME_FROM_LAST_OFFSET".into(),
            subscription_data_set: vec![subscription(topic)],
            unit_mode: false,
        }],
    };
    RemotingCommand::bare_request(RequestCode::HEART_BEAT).with_body(to_json(&data))
}

fn subscription(topic: &str) -> SubscriptionData {
    SubscriptionData {
        topic: topic.into(),
        sub_string: "*".into(),
        expression_type: "TAG".into(),
        ..Default::default()
    }
}

fn unregister(client_id: &str, producer_group: &str, consumer_group: &str) -> RemotingCommand {
    RemotingCommand::request(
        RequestCode::UNREGISTER_CLIENT,
        &UnregisterClientRequestHeader {
            client_id: client_id.into(),
            producer_group: Some(producer_group.into()),
            consumer_group: Some(consumer_group.into()),
        },
    )
}

fn check_client(client_id: &str, group: &str, topic: &str) -> RemotingCommand {
    let body = CheckClientRequestBody {
        client_id: client_id.into(),
        group: group.into(),
        subscription_data: Some(subscription(topic)),
    };
    RemotingCommand::bare_request(RequestCode::CHECK_CLIENT_CONFIG).with_body(to_json(&body))
}

fn lock(
    code: RequestCode,
    group: &str,
    client_id: &str,
    topic: &str,
    broker_name: &str,
) -> RemotingCommand {
    let body = LockBatchRequestBody {
        consumer_group: group.into(),
        client_id: client_id.into(),
        only_this_broker: false,
        mq_set: vec![MessageQueueData {
            topic: topic.into(),
            broker_name: broker_name.into(),
            queue_id: 0,
        }],
    };
    RemotingCommand::bare_request(code).with_body(to_json(&body))
}

fn send_back(ctx: &Ctx, group: &str, origin_topic: &str) -> RemotingCommand {
    RemotingCommand::request(
        RequestCode::CONSUMER_SEND_MSG_BACK,
        &ConsumerSendMsgBackRequestHeader {
            offset: ctx.stored_offset,
            group: group.into(),
            delay_level: 0,
            origin_msg_id: None,
            origin_topic: Some(origin_topic.into()),
            unit_mode: Some(false),
            max_reconsume_times: Some(16),
        },
    )
}

/// A signed registration of a made-up group whose topic table holds `topic`.
fn register(ctx: &Ctx, topic: &str) -> RemotingCommand {
    let header = RegisterBrokerRequestHeader {
        broker_name: "hostile-b".into(),
        broker_addr: "127.0.0.1:1".into(),
        cluster_name: "TestCluster".into(),
        broker_id: 0,
        compressed: Some(false),
        raft_term: Some(1),
        ..Default::default()
    };
    let topic_config = TopicConfig {
        topic_name: topic.into(),
        ..Default::default()
    };
    let body = RegisterBrokerBody {
        topic_config_serialize_wrapper: TopicConfigSerializeWrapper {
            topic_config_table: BTreeMap::from([(topic.to_string(), topic_config)]),
            ..Default::default()
        },
        filter_server_list: Vec::new(),
    };
    let mut request =
        RemotingCommand::request(RequestCode::REGISTER_BROKER, &header).with_body(to_json(&body));
    sign_broker_request(&mut request, &ctx.secret, now_ms());
    request
}

fn search_offset(topic: &str) -> RemotingCommand {
    let header = SearchOffsetRequestHeader {
        topic: topic.into(),
        queue_id: 0,
        timestamp: 0,
    };
    RemotingCommand::request(RequestCode::SEARCH_OFFSET_BY_TIMESTAMP, &header)
}

fn query_message(topic: &str) -> RemotingCommand {
    let header = QueryMessageRequestHeader {
        topic: topic.into(),
        key: "k".into(),
        max_num: 1,
        begin_timestamp: 0,
        end_timestamp: i64::MAX,
    };
    RemotingCommand::request(RequestCode::QUERY_MESSAGE, &header)
}

fn consumer_list(group: &str) -> RemotingCommand {
    let header = ConsumerGroupRequestHeader {
        consumer_group: group.into(),
    };
    RemotingCommand::request(RequestCode::GET_CONSUMER_LIST_BY_GROUP, &header)
}

fn create_topic(topic: &str) -> RemotingCommand {
    let header = CreateTopicRequestHeader {
        topic: topic.into(),
        default_topic: "TBW102".into(),
        read_queue_nums: 4,
        write_queue_nums: 4,
        perm: 6,
        topic_filter_type: "SINGLE_TAG".into(),
        ..Default::default()
    };
    RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_TOPIC, &header)
}

/// UPDATE_AND_CREATE_TOPIC_LIST with a good topic, then `topic`.
fn create_topic_list(topic: &str) -> RemotingCommand {
    let listed = |name: &str| serde_json::json!({ "topicName": name, "readQueueNums": 4, "writeQueueNums": 4 });
    let body =
        serde_json::json!({ "topicConfigList": [listed("HostileNamesGood"), listed(topic)] });
    RemotingCommand::bare_request(RequestCode::UPDATE_AND_CREATE_TOPIC_LIST)
        .with_body(body.to_string())
}

fn put_subscription_group(group: &str) -> RemotingCommand {
    let body = serde_json::json!({ "groupName": group, "consumeEnable": true });
    RemotingCommand::bare_request(RequestCode::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
        .with_body(body.to_string())
}

fn end_transaction(producer_group: &str) -> RemotingCommand {
    let header = EndTransactionRequestHeader {
        producer_group: producer_group.into(),
        commit_or_rollback: 8,
        msg_id: "hostile".into(),
        ..Default::default()
    };
    RemotingCommand::request(RequestCode::END_TRANSACTION, &header)
}

fn route(topic: &str) -> RemotingCommand {
    let header = GetRouteInfoRequestHeader {
        topic: topic.into(),
    };
    RemotingCommand::request(RequestCode::GET_ROUTEINFO_BY_TOPIC, &header)
}

fn r(request: &'static str, field: &'static str, names: Names, to: To, build: Build) -> Row {
    Row {
        request,
        field,
        names,
        to,
        build,
    }
}

/// One row per request code and field that holds a name.
#[rustfmt::skip]
fn rows() -> Vec<Row> {
    use {Names::*, RequestCode as C, To::*};
    const BROKER: &str = common::GROUP;
    vec![
        r("SEND_MESSAGE", "topic", Topic, Leader, |_, n| send(C::SEND_MESSAGE, n, GROUP)),
        r("SEND_MESSAGE", "producerGroup", Group, Leader, |_, n| send(C::SEND_MESSAGE, TOPIC, n)),
        r("SEND_MESSAGE_V2", "b (topic)", Topic, Leader, |_, n| send(C::SEND_MESSAGE_V2, n, GROUP)),
        r("SEND_MESSAGE_V2", "a (producerGroup)", Group, Leader, |_, n| send(C::SEND_MESSAGE_V2, TOPIC, n)),
        r("SEND_BATCH_MESSAGE", "b (topic)", Topic, Leader, |_, n| send(C::SEND_BATCH_MESSAGE, n, GROUP)),
        r("SEND_BATCH_MESSAGE", "a (producerGroup)", Group, Leader, |_, n| send(C::SEND_BATCH_MESSAGE, TOPIC, n)),
        r("SEND_MESSAGE_V2 prepared", "property PGROUP", Group, Leader, |_, n| prepared_send(n)),
        r("PULL_MESSAGE", "topic", Topic, Leader, |_, n| pull(n, GROUP)),
        r("PULL_MESSAGE", "consumerGroup", Group, Leader, |_, n| pull(TOPIC, n)),
        r("QUERY_CONSUMER_OFFSET", "topic", Topic, Leader, |_, n| query_offset(n, GROUP)),
        r("QUERY_CONSUMER_OFFSET", "consumerGroup", Group, Leader, |_, n| query_offset(TOPIC, n)),
        r("UPDATE_CONSUMER_OFFSET", "topic", Topic, Leader, |_, n| update_offset(n, GROUP)),
        r("UPDATE_CONSUMER_OFFSET", "consumerGroup", Group, Leader, |_, n| update_offset(TOPIC, n)),
        r("GET_MAX_OFFSET", "topic", Topic, Leader, |_, n| queue_offset(C::GET_MAX_OFFSET, n)),
        r("GET_MIN_OFFSET", "topic", Topic, Leader, |_, n| queue_offset(C::GET_MIN_OFFSET, n)),
        r("SEARCH_OFFSET_BY_TIMESTAMP", "topic", Topic, Leader, |_, n| search_offset(n)),
        r("QUERY_MESSAGE", "topic", Topic, Leader, |_, n| query_message(n)),
        r("HEART_BEAT", "clientID", ClientId, Leader, |_, n| heartbeat(n, GROUP, GROUP, TOPIC)),
        r("HEART_BEAT", "producerDataSet.groupName", Group, Leader, |_, n| heartbeat(CLIENT_ID, n, GROUP, TOPIC)),
        r("HEART_BEAT", "consumerDataSet.groupName", Group, Leader, |_, n| heartbeat(CLIENT_ID, GROUP, n, TOPIC)),
        r("HEART_BEAT", "subscriptionDataSet.topic", Topic, Leader, |_, n| heartbeat(CLIENT_ID, GROUP, GROUP, n)),
        r("UNREGISTER_CLIENT", "clientID", ClientId, Leader, |_, n| unregister(n, GROUP, GROUP)),
        r("UNREGISTER_CLIENT", "producerGroup", Group, Leader, |_, n| unregister(CLIENT_ID, n, GROUP)),
        r("UNREGISTER_CLIENT", "consumerGroup", Group, Leader, |_, n| unregister(CLIENT_ID, GROUP, n)),
        r("GET_CONSUMER_LIST_BY_GROUP", "consumerGroup", Group, Leader, |_, n| consumer_list(n)),
        r("CHECK_CLIENT_CONFIG", "clientId", ClientId, Leader, |_, n| check_client(n, GROUP, TOPIC)),
        r("CHECK_CLIENT_CONFIG", "group", Group, Leader, |_, n| check_client(CLIENT_ID, n, TOPIC)),
        r("CHECK_CLIENT_CONFIG", "subscriptionData.topic", Topic, Leader, |_, n| check_client(CLIENT_ID, GROUP, n)),
        r("UPDATE_AND_CREATE_TOPIC", "topic", Topic, Leader, |_, n| create_topic(n)),
        r("UPDATE_AND_CREATE_TOPIC_LIST", "topicConfigList.topicName", Topic, Leader, |_, n| create_topic_list(n)),
        r("DELETE_TOPIC_IN_BROKER", "topic", Topic, Leader, |_, n| RemotingCommand::bare_request(C::DELETE_TOPIC_IN_BROKER).with_ext("topic", n)),
        r("UPDATE_AND_CREATE_SUBSCRIPTIONGROUP", "groupName", Group, Leader, |_, n| put_subscription_group(n)),
        r("DELETE_SUBSCRIPTIONGROUP", "groupName", Group, Leader, |_, n| RemotingCommand::bare_request(C::DELETE_SUBSCRIPTIONGROUP).with_ext("groupName", n)),
        r("LOCK_BATCH_MQ", "consumerGroup", Group, Leader, |_, n| lock(C::LOCK_BATCH_MQ, n, CLIENT_ID, TOPIC, BROKER)),
        r("LOCK_BATCH_MQ", "clientId", ClientId, Leader, |_, n| lock(C::LOCK_BATCH_MQ, GROUP, n, TOPIC, BROKER)),
        r("LOCK_BATCH_MQ", "mqSet.topic", Topic, Leader, |_, n| lock(C::LOCK_BATCH_MQ, GROUP, CLIENT_ID, n, BROKER)),
        r("LOCK_BATCH_MQ", "mqSet.brokerName", BrokerName, Leader, |_, n| lock(C::LOCK_BATCH_MQ, GROUP, CLIENT_ID, TOPIC, n)),
        r("UNLOCK_BATCH_MQ", "consumerGroup", Group, Leader, |_, n| lock(C::UNLOCK_BATCH_MQ, n, CLIENT_ID, TOPIC, BROKER)),
        r("UNLOCK_BATCH_MQ", "clientId", ClientId, Leader, |_, n| lock(C::UNLOCK_BATCH_MQ, GROUP, n, TOPIC, BROKER)),
        r("UNLOCK_BATCH_MQ", "mqSet.topic", Topic, Leader, |_, n| lock(C::UNLOCK_BATCH_MQ, GROUP, CLIENT_ID, n, BROKER)),
        r("UNLOCK_BATCH_MQ", "mqSet.brokerName", BrokerName, Leader, |_, n| lock(C::UNLOCK_BATCH_MQ, GROUP, CLIENT_ID, TOPIC, n)),
        r("CONSUMER_SEND_MSG_BACK", "group", Group, Leader, |c, n| send_back(c, n, TOPIC)),
        r("CONSUMER_SEND_MSG_BACK", "originTopic", Topic, Leader, |c, n| send_back(c, GROUP, n)),
        r("CONSUMER_SEND_MSG_BACK", "%RETRY%<group>", RetryTopicOfGroup, Leader, |c, n| send_back(c, n, TOPIC)),
        r("END_TRANSACTION", "producerGroup", Group, Leader, |_, n| end_transaction(n)),
        r("GET_ROUTEINFO_BY_TOPIC", "topic", Topic, Namesrv, |_, n| route(n)),
        r("REGISTER_BROKER", "topicConfigTable", Topic, Namesrv, register),
    ]
}

async fn connect(addr: &str) -> Connection {
    Connection::connect(addr, &ConnectionConfig::default(), Arc::new(NoRequests))
        .await
        .unwrap()
}

/// Connections to the group's leader and the name server; follows the leader when it moves.
struct Peers {
    leader: String,
    broker: Connection,
    namesrv: Connection,
}

impl Peers {
    async fn ask(
        &mut self,
        cluster: &common::Cluster,
        to: To,
        request: impl Fn() -> RemotingCommand,
    ) -> RemotingCommand {
        for _ in 0..5 {
            let conn = match to {
                To::Leader => &self.broker,
                To::Namesrv => &self.namesrv,
            };
            let answer = conn.request(request(), TIMEOUT).await.unwrap();
            let moved = answer
                .remark
                .as_deref()
                .is_some_and(|r| r.contains("is not the leader"));
            if to == To::Namesrv || !moved {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.leader = cluster.wait_for_leader(None, Duration::from_secs(10)).await;
            self.broker = connect(&self.leader).await;
        }
        panic!("the leader kept moving");
    }
}

/// Every row, with each bad name: refused, with a remark naming the kind of name and rule.
async fn every_row_refuses_its_bad_names(cluster: &common::Cluster, peers: &mut Peers, ctx: &Ctx) {
    let rows = rows();
    for row in &rows {
        for (bad, kind, rule) in bad_names(row.names) {
            let answer = peers.ask(cluster, row.to, || (row.build)(ctx, &bad)).await;
            let remark = answer.remark.clone().unwrap_or_default();
            let what = format!(
                "{} {} = {:?}",
                row.request,
                row.field,
                bad.escape_debug().to_string()
            );
            assert_ne!(
                answer.response_code(),
                Some(ResponseCode::SUCCESS),
                "{what} was accepted"
            );
            assert!(
                remark.contains(kind) && remark.contains(rule),
                "{what}: the remark does not say `{kind}` and `{rule}`: {remark}"
            );
            if bad.contains('\0') {
                assert!(
                    remark.contains("a\\0b"),
                    "{what}: the name is not shown escaped: {remark}"
                );
            }
        }
    }
    println!("{} rows refused every bad name", rows.len());
}

/// No name that breaks the rules is in the group's topic or subscription-group table, nor
/// in the name server's topic list.
async fn no_bad_name_is_stored(cluster: &common::Cluster, peers: &mut Peers) {
    let bare = |code: RequestCode| move || RemotingCommand::bare_request(code);
    let topics = peers
        .ask(cluster, To::Leader, bare(RequestCode::GET_ALL_TOPIC_CONFIG))
        .await;
    let topics: TopicConfigSerializeWrapper = from_json("topics", &topics.body).unwrap();
    for topic in topics.topic_config_table.keys() {
        assert_eq!(names::check_topic(topic), Ok(()), "stored topic");
    }
    assert!(topics.topic_config_table.contains_key(TOPIC));
    let groups = peers
        .ask(
            cluster,
            To::Leader,
            bare(RequestCode::GET_ALL_SUBSCRIPTIONGROUP_CONFIG),
        )
        .await;
    let groups: serde_json::Value = serde_json::from_slice(&groups.body).unwrap();
    let groups = groups["subscriptionGroupTable"]
        .as_object()
        .expect("a table");
    for group in groups.keys() {
        assert_eq!(
            names::check_group(group),
            Ok(()),
            "stored subscription group"
        );
    }
    let listed = peers
        .ask(
            cluster,
            To::Namesrv,
            bare(RequestCode::GET_ALL_TOPIC_LIST_FROM_NAMESERVER),
        )
        .await;
    let listed: TopicList = from_json("topic list", &listed.body).unwrap();
    for topic in &listed.topic_list {
        assert_eq!(names::check_topic(topic), Ok(()), "routed topic");
    }
    println!(
        "{} topics, {} subscription groups, {} routed topics: every name passes",
        topics.topic_config_table.len(),
        groups.len(),
        listed.topic_list.len()
    );
}

/// The CommitLog offset a send's offset message id names (its last 16 hex digits).
fn commit_log_offset(offset_msg_id: &str) -> i64 {
    i64::from_str_radix(&offset_msg_id[offset_msg_id.len() - 16..], 16).unwrap()
}

async fn send_all(producer: &Producer, prefix: &str, n: usize) {
    for i in 0..n {
        producer
            .send(Message::new(TOPIC, format!("{prefix}-{i}")))
            .await
            .unwrap();
    }
}

/// The group `GROUP` commits an offset and reads it back from the leader.
async fn the_consumer_group_commits(cluster: &common::Cluster) {
    let consumer = PullConsumer::start(PullConsumerConfig::new(&cluster.namesrv_addr, GROUP))
        .await
        .unwrap();
    let queue = consumer.fetch_queues(TOPIC).await.unwrap().remove(0);
    consumer.update_offset(&queue, 1).await.unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while consumer.query_offset(&queue).await.ok().flatten() != Some(1) {
        assert!(Instant::now() < deadline, "{GROUP}'s commit never landed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_names_are_refused_and_the_group_works_and_restarts() {
    let started = Instant::now();
    let mut cluster = common::Cluster::start("");
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let producer = Producer::start(ProducerConfig::new(&cluster.namesrv_addr, GROUP))
        .await
        .unwrap();
    let first = producer
        .send(Message::new(TOPIC, "before-0"))
        .await
        .unwrap();
    let ctx = Ctx {
        secret: ClusterSecret::load(&cluster.path().join("cluster.secret")).unwrap(),
        stored_offset: commit_log_offset(&first.offset_msg_id),
    };
    let mut peers = Peers {
        broker: connect(&leader).await,
        namesrv: connect(&cluster.namesrv_addr).await,
        leader,
    };

    every_row_refuses_its_bad_names(&cluster, &mut peers, &ctx).await;
    // A valid group of 200 characters heartbeats; its retry topic (207) is not created.
    let long_group = "g".repeat(200);
    let answer = peers
        .ask(&cluster, To::Leader, || {
            heartbeat(CLIENT_ID, GROUP, &long_group, TOPIC)
        })
        .await;
    assert_eq!(
        answer.response_code(),
        Some(ResponseCode::SUCCESS),
        "{answer:?}"
    );
    no_bad_name_is_stored(&cluster, &mut peers).await;

    // The group still sends, reads back and keeps its consumers' offsets.
    send_all(&producer, "after", 20).await;
    the_consumer_group_commits(&cluster).await;

    // A follower killed and restarted starts, and catches up with what it missed.
    let follower = (0..3)
        .find(|&i| cluster.nodes[i].addr != peers.leader)
        .unwrap();
    cluster.kill(follower);
    send_all(&producer, "while-down", 10).await;
    cluster.start_node(follower);
    cluster
        .wait_commit_logs_identical(&[0, 1, 2], Duration::from_secs(30))
        .await;
    producer.shutdown().await;
    let queues = common::drain_topic(&cluster.namesrv_addr, TOPIC).await;
    common::assert_offsets_contiguous(&queues);
    let bodies: BTreeSet<String> = queues
        .values()
        .flatten()
        .map(|m| String::from_utf8_lossy(&m.body).to_string())
        .collect();
    let sent = (0..1)
        .map(|i| format!("before-{i}"))
        .chain((0..20).map(|i| format!("after-{i}")))
        .chain((0..10).map(|i| format!("while-down-{i}")));
    for body in sent {
        assert!(bodies.contains(&body), "{body} was not read back");
    }
    // Nothing a refused request carried was stored.
    assert_eq!(bodies.len(), 31, "{bodies:?}");
    println!("done in {} ms", started.elapsed().as_millis());
}
