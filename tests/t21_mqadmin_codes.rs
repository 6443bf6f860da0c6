//! Proves the request codes mqadmin, the dashboard and the exporter use (issue 20) are
//! served with RocketMQ's headers and bodies by a real name server and three-node group:
//! each code is sent as a stock tool sends it and its answer decoded as the tool decodes it
//! (fastjson's `MessageQueue`-keyed maps included). The state-changing ones are checked
//! across the three nodes: UPDATE_BROKER_CONFIG and INVOKE_BROKER_TO_RESET_OFFSET go through
//! the Raft log (taken by the leader, seen applied on a follower, refused or redirected by a
//! follower), the name server's write-permission, topic-deletion and KV codes need the
//! cluster secret's signature.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{Message, Producer, ProducerConfig};
use futures::future::BoxFuture;
use remoting::admin_body::{
    BrokerStatsData, ConsumeStats, ConsumerConnection, GroupList, KVTable, ProducerConnection,
    ProducerTableInfo, ResetOffsetBody, TopicStatsTable,
};
use remoting::cluster_auth::{sign_broker_request, ClusterSecret};
use remoting::connection::NoRequests;
use remoting::header::*;
use remoting::route::{
    from_json, to_json, ConsumerData, HeartbeatData, ProducerData, SubscriptionData, TopicList,
};
use remoting::{
    Connection, ConnectionConfig, RemotingCommand, RequestCode, RequestHandler, ResponseCode,
};

const T: Duration = Duration::from_secs(5);
const TOPIC: &str = "T21";
const GROUP: &str = "t21-group";
const CLIENT_ID: &str = "127.0.0.1@t21-fake";

async fn connect(addr: &str) -> Connection {
    Connection::connect(addr, &ConnectionConfig::default(), Arc::new(NoRequests))
        .await
        .unwrap()
}

async fn ask(addr: &str, request: RemotingCommand) -> RemotingCommand {
    let conn = connect(addr).await;
    let r = conn.request(request, T).await.unwrap();
    conn.close();
    r
}

fn ok(r: &RemotingCommand) {
    assert_eq!(
        r.response_code(),
        Some(ResponseCode::SUCCESS),
        "remark: {:?}",
        r.remark
    );
}

/// A consumer as the broker sees it: it heartbeats, and records what the broker asks it
/// (RESET_CONSUMER_CLIENT_OFFSET), answering GET_CONSUMER_RUNNING_INFO.
#[derive(Default)]
struct FakeConsumer {
    asked: Mutex<Vec<RemotingCommand>>,
}

impl RequestHandler for FakeConsumer {
    fn handle(
        &self,
        _conn: Connection,
        request: RemotingCommand,
    ) -> BoxFuture<'static, Option<RemotingCommand>> {
        let answer = (request.code == RequestCode::GET_CONSUMER_RUNNING_INFO as i32).then(|| {
            RemotingCommand::success().with_body(&br#"{"properties":{"t21":"running"}}"#[..])
        });
        self.asked.lock().unwrap().push(request);
        Box::pin(async move { answer })
    }
}

fn heartbeat() -> RemotingCommand {
    let data = HeartbeatData {
        client_id: CLIENT_ID.into(),
        // A producer group too, as producers heartbeat.
        producer_data_set: vec![ProducerData {
            group_name: "t21-producers".into(),
        }],
        consumer_data_set: vec![ConsumerData {
            group_name: GROUP.into(),
            consume_type: "CONSUME_PASSIVELY".into(),
            message_model: "CLUSTERING".into(),
            consume_from_where: "CONSUME_FROM_FIRST_OFFSET".into(),
            subscription_data_set: vec![SubscriptionData {
                topic: TOPIC.into(),
                sub_string: "*".into(),
                expression_type: "TAG".into(),
                ..Default::default()
            }],
            unit_mode: false,
        }],
    };
    RemotingCommand::bare_request(RequestCode::HEART_BEAT).with_body(to_json(&data))
}

fn update_config(line: &str) -> RemotingCommand {
    RemotingCommand::bare_request(RequestCode::UPDATE_BROKER_CONFIG)
        .with_body(format!("{line}\n").into_bytes())
}

fn config_of(r: &RemotingCommand) -> String {
    ok(r);
    String::from_utf8(r.body.to_vec()).unwrap()
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within 20 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_codes_are_served_as_rocketmq_serves_them() {
    let cluster = common::Cluster::start("");
    let leader = cluster.wait_for_leader(None, Duration::from_secs(30)).await;
    let follower = cluster
        .nodes
        .iter()
        .map(|n| n.addr.clone())
        .find(|a| *a != leader)
        .unwrap();
    let namesrv = cluster.namesrv();
    client::admin::create_topic(&namesrv, TOPIC, 2, T)
        .await
        .unwrap();
    let config = ProducerConfig::new(&cluster.namesrv_addr, "t21-producers");
    let producer = Producer::start(config).await.unwrap();
    for i in 0..10 {
        producer
            .send(Message::new(TOPIC, format!("m{i}")))
            .await
            .unwrap();
    }
    let fake = Arc::new(FakeConsumer::default());
    let consumer_conn = Connection::connect(&leader, &ConnectionConfig::default(), fake.clone())
        .await
        .unwrap();
    ok(&consumer_conn.request(heartbeat(), T).await.unwrap());

    runtime_info(&leader, &follower).await;
    let max = topic_stats(&leader).await;
    consume_stats_and_who(&leader, &consumer_conn, max.clone()).await;
    connections(&leader, &fake).await;
    reset_offset(&leader, &follower, &fake, max).await;
    broker_config(&cluster, &leader, &follower).await;
    stats_data(&leader).await;
    namesrv_codes(&cluster).await;
    producer.shutdown().await;
    consumer_conn.close();
}

/// GET_BROKER_RUNTIME_INFO (28): a KVTable with RocketMQ's keys and Raft's, per node.
async fn runtime_info(leader: &str, follower: &str) {
    let r = ask(
        leader,
        RemotingCommand::bare_request(RequestCode::GET_BROKER_RUNTIME_INFO),
    )
    .await;
    ok(&r);
    let t = from_json::<KVTable>("kv", &r.body).unwrap().table;
    assert_eq!(t["brokerVersion"], "401");
    assert_eq!(t["raftRole"], "LEADER");
    let put: u64 = t["msgPutTotalTodayNow"].parse().unwrap();
    assert!(put >= 10, "stored messages counted: {t:?}");
    exporter_reads(&t);
    // Each member answers for itself (an election on a loaded machine may be under way:
    // asked again until one leads and another follows).
    wait_until("one member leads and another follows", || async move {
        let mut roles = Vec::new();
        for addr in [leader, follower] {
            let r = ask(
                addr,
                RemotingCommand::bare_request(RequestCode::GET_BROKER_RUNTIME_INFO),
            )
            .await;
            let t = from_json::<KVTable>("kv", &r.body).unwrap().table;
            roles.push((t["raftRole"].clone(), t["raftNodeId"].clone()));
        }
        roles.sort();
        roles[0].0 == "FOLLOWER" && roles[1].0 == "LEADER" && roles[0].1 != roles[1].1
    })
    .await;
}

/// Reads the table as rocketmq-exporter's `BrokerRuntimeStats` does, which fails on any
/// missing key or unparsable value: numbers, the three rates, the latency buckets, the
/// disk capacity and the bytes to flush.
fn exporter_reads(t: &std::collections::BTreeMap<String, String>) {
    let get = |key: &str| t.get(key).unwrap_or_else(|| panic!("{key} missing: {t:?}"));
    for key in [
        "msgPutTotalTodayNow",
        "sendThreadPoolQueueHeadWaitTimeMills",
        "queryThreadPoolQueueHeadWaitTimeMills",
        "msgGetTotalTodayNow",
        "queryThreadPoolQueueSize",
        "bootTimestamp",
        "msgPutTotalYesterdayMorning",
        "msgGetTotalYesterdayMorning",
        "pullThreadPoolQueueSize",
        "commitLogMinOffset",
        "pullThreadPoolQueueHeadWaitTimeMills",
        "dispatchMaxBuffer",
        "pageCacheLockTimeMills",
        "commitLogMaxOffset",
        "getMessageEntireTimeMax",
        "msgPutTotalTodayMorning",
        "putMessageTimesTotal",
        "msgGetTotalTodayMorning",
        "sendThreadPoolQueueSize",
        "startAcceptSendRequestTimeStamp",
        "putMessageEntireTimeMax",
        "earliestMessageTimeStamp",
        "remainTransientStoreBufferNumbs",
        "queryThreadPoolQueueCapacity",
        "dispatchBehindBytes",
        "putMessageSizeTotal",
        "sendThreadPoolQueueCapacity",
        "pullThreadPoolQueueCapacity",
    ] {
        get(key)
            .parse::<i64>()
            .unwrap_or_else(|e| panic!("{key}={}: {e}", get(key)));
    }
    assert!(get("brokerVersion").parse::<i32>().is_ok());
    for key in [
        "consumeQueueDiskRatio",
        "commitLogDiskRatio",
        "putMessageAverageSize",
    ] {
        assert!(get(key).parse::<f64>().is_ok(), "{key}={}", get(key));
    }
    for key in [
        "putTps",
        "getMissTps",
        "getTransferedTps",
        "getTotalTps",
        "getFoundTps",
    ] {
        for rate in get(key).split(' ').filter(|r| !r.is_empty()) {
            assert!(rate.parse::<f64>().is_ok(), "{key}={}", get(key));
        }
    }
    for bucket in get("putMessageDistributeTime").split_whitespace() {
        let (_, n) = bucket.split_once(':').expect("[range]:count");
        assert!(n.parse::<i64>().is_ok(), "{bucket}");
    }
    let capacity: Vec<&str> = get("commitLogDirCapacity").split(' ').collect();
    assert_eq!(
        (capacity[0], capacity[4]),
        ("Total", "Free"),
        "{capacity:?}"
    );
    assert!(capacity[2].parse::<f64>().is_ok() && capacity[6].parse::<f64>().is_ok());
    let flush: Vec<&str> = get("remainHowManyDataToFlush").split(' ').collect();
    assert!(
        flush[0].parse::<f64>().is_ok() && flush.len() == 2,
        "{flush:?}"
    );
    assert!(get("earliestMessageTimeStamp").parse::<i64>().unwrap() > 1_600_000_000_000);
}

/// GET_TOPIC_STATS_INFO (202), fastjson's form; TOPIC_NOT_EXIST for an unknown topic.
/// Returns each queue's max offset.
async fn topic_stats(leader: &str) -> Vec<i64> {
    let request = |topic: &str| {
        RemotingCommand::request(
            RequestCode::GET_TOPIC_STATS_INFO,
            &TopicRequestHeader {
                topic: topic.into(),
            },
        )
    };
    let r = ask(leader, request(TOPIC)).await;
    ok(&r);
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(
        text.contains(r#"{"brokerName":"broker-a","queueId":0,"topic":"T21"}:{"#),
        "fastjson's MessageQueue keys: {text}"
    );
    let table = TopicStatsTable::decode(&r.body).unwrap();
    assert_eq!(table.offset_table.0.len(), 2);
    let max: Vec<i64> = table
        .offset_table
        .0
        .values()
        .map(|o| o.max_offset)
        .collect();
    assert_eq!(max.iter().sum::<i64>(), 10);
    for o in table.offset_table.0.values().filter(|o| o.max_offset > 0) {
        assert!(o.last_update_timestamp > 1_600_000_000_000, "{o:?}");
    }
    let r = ask(leader, request("T21-unknown")).await;
    assert_eq!(r.response_code(), Some(ResponseCode::TOPIC_NOT_EXIST));
    max
}

/// GET_CONSUME_STATS (208) after an offset commit; QUERY_TOPIC_CONSUME_BY_WHO (300).
async fn consume_stats_and_who(leader: &str, conn: &Connection, max: Vec<i64>) {
    let commit = RemotingCommand::request(
        RequestCode::UPDATE_CONSUMER_OFFSET,
        &UpdateConsumerOffsetRequestHeader {
            consumer_group: GROUP.into(),
            topic: TOPIC.into(),
            queue_id: 0,
            commit_offset: 1,
        },
    );
    ok(&conn.request(commit, T).await.unwrap());
    let r = ask(
        leader,
        RemotingCommand::request(
            RequestCode::GET_CONSUME_STATS,
            &GetConsumeStatsRequestHeader {
                consumer_group: GROUP.into(),
                topic: None,
            },
        ),
    )
    .await;
    ok(&r);
    let stats = ConsumeStats::decode(&r.body).unwrap();
    let rows: Vec<_> = stats.offset_table.0.iter().collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[0].1.broker_offset, rows[0].1.consumer_offset),
        (max[0], 1)
    );
    assert!(rows[0].1.last_timestamp > 0);
    assert_eq!(
        (rows[1].1.broker_offset, rows[1].1.consumer_offset),
        (max[1], 0)
    );
    assert_eq!(stats.total_diff(), 9);

    // Names are checked by RocketMQ's rules before anything is looked up.
    let mut bad = RemotingCommand::bare_request(RequestCode::GET_CONSUME_STATS);
    bad.ext_fields.insert("consumerGroup", "bad\ngroup");
    let r = ask(leader, bad).await;
    assert_eq!(r.response_code(), Some(ResponseCode::SYSTEM_ERROR));
    assert!(r.remark.unwrap().contains("consumerGroup"));

    let r = ask(
        leader,
        RemotingCommand::request(
            RequestCode::QUERY_TOPIC_CONSUME_BY_WHO,
            &TopicRequestHeader {
                topic: TOPIC.into(),
            },
        ),
    )
    .await;
    ok(&r);
    let groups = from_json::<GroupList>("groups", &r.body)
        .unwrap()
        .group_list;
    assert!(groups.contains(GROUP), "{groups:?}");
}

/// GET_CONSUMER_CONNECTION_LIST (203), GET_PRODUCER_CONNECTION_LIST (204),
/// GET_ALL_PRODUCER_INFO (328), GET_CONSUMER_RUNNING_INFO (307, asked of the client).
async fn connections(leader: &str, fake: &FakeConsumer) {
    let r = ask(
        leader,
        RemotingCommand::request(
            RequestCode::GET_CONSUMER_CONNECTION_LIST,
            &GetConsumerConnectionListRequestHeader {
                consumer_group: GROUP.into(),
            },
        ),
    )
    .await;
    ok(&r);
    let c: ConsumerConnection = from_json("cc", &r.body).unwrap();
    assert_eq!(c.connection_set.len(), 1);
    assert_eq!(c.connection_set[0].client_id, CLIENT_ID);
    assert_eq!(c.connection_set[0].language, "RUST");
    assert_eq!(c.connection_set[0].version, 401);
    assert_eq!(c.message_model.as_deref(), Some("CLUSTERING"));
    assert!(c.subscription_table.contains_key(TOPIC));
    let r = ask(
        leader,
        RemotingCommand::request(
            RequestCode::GET_CONSUMER_CONNECTION_LIST,
            &GetConsumerConnectionListRequestHeader {
                consumer_group: "t21-nobody".into(),
            },
        ),
    )
    .await;
    assert_eq!(r.response_code(), Some(ResponseCode::CONSUMER_NOT_ONLINE));

    let r = ask(
        leader,
        RemotingCommand::request(
            RequestCode::GET_PRODUCER_CONNECTION_LIST,
            &GetProducerConnectionListRequestHeader {
                producer_group: "t21-producers".into(),
            },
        ),
    )
    .await;
    ok(&r);
    let p: ProducerConnection = from_json("pc", &r.body).unwrap();
    // This fake client, and the test's Rust producer of the same group once its heartbeat
    // (sent when it learns the group's members) has arrived.
    assert!(
        p.connection_set.iter().any(|c| c.client_id == CLIENT_ID),
        "{p:?}"
    );
    assert!(p.connection_set.len() <= 2, "{p:?}");
    let r = ask(
        leader,
        RemotingCommand::request(
            RequestCode::GET_PRODUCER_CONNECTION_LIST,
            &GetProducerConnectionListRequestHeader {
                producer_group: "t21-nobody".into(),
            },
        ),
    )
    .await;
    assert_eq!(r.response_code(), Some(ResponseCode::SYSTEM_ERROR));

    let r = ask(
        leader,
        RemotingCommand::bare_request(RequestCode::GET_ALL_PRODUCER_INFO),
    )
    .await;
    ok(&r);
    let all: ProducerTableInfo = from_json("producers", &r.body).unwrap();
    assert!(
        all.data["t21-producers"][0].last_update_timestamp > 0,
        "{all:?}"
    );

    let running = |client_id: &str| {
        RemotingCommand::request(
            RequestCode::GET_CONSUMER_RUNNING_INFO,
            &GetConsumerRunningInfoRequestHeader {
                consumer_group: GROUP.into(),
                client_id: client_id.into(),
                jstack_enable: false,
            },
        )
    };
    let r = ask(leader, running(CLIENT_ID)).await;
    ok(&r);
    assert_eq!(&r.body[..], br#"{"properties":{"t21":"running"}}"#);
    assert!(fake
        .asked
        .lock()
        .unwrap()
        .iter()
        .any(|a| a.code == RequestCode::GET_CONSUMER_RUNNING_INFO as i32
            && a.ext("clientId") == Some(CLIENT_ID)));
    let r = ask(leader, running("127.0.0.1@gone")).await;
    assert_eq!(r.response_code(), Some(ResponseCode::SYSTEM_ERROR));
    assert!(r.remark.unwrap().contains("not online"));
}

/// INVOKE_BROKER_TO_RESET_OFFSET (222): through the log (a follower redirects; the new
/// offsets reach a follower), the live client told with RESET_CONSUMER_CLIENT_OFFSET (220).
async fn reset_offset(leader: &str, follower: &str, fake: &FakeConsumer, max: Vec<i64>) {
    let reset = |timestamp: i64| {
        RemotingCommand::request(
            RequestCode::INVOKE_BROKER_TO_RESET_OFFSET,
            &ResetOffsetRequestHeader {
                topic: TOPIC.into(),
                group: GROUP.into(),
                timestamp,
                is_force: true,
            },
        )
    };
    let r = ask(follower, reset(-1)).await;
    assert_eq!(r.response_code(), Some(ResponseCode::SERVICE_NOT_AVAILABLE));
    assert_eq!(r.ext("leaderAddr"), Some(leader));

    let r = ask(leader, reset(-1)).await;
    ok(&r);
    let body = ResetOffsetBody::decode(&r.body).unwrap();
    let offsets: Vec<i64> = body.offset_table.0.values().copied().collect();
    assert_eq!(offsets, max, "-1 resets to the end of each queue");
    // Oneway, on the client's own connection: it may land after the admin's answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    let told = loop {
        let told = fake
            .asked
            .lock()
            .unwrap()
            .iter()
            .find(|a| a.code == RequestCode::RESET_CONSUMER_CLIENT_OFFSET as i32)
            .cloned();
        match told {
            Some(told) => break told,
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            None => panic!("the live client is not told of the reset"),
        }
    };
    assert_eq!(told.ext("group"), Some(GROUP));
    let told = ResetOffsetBody::decode(&told.body).unwrap();
    assert_eq!(told.offset_table, body.offset_table);

    // Back to the first message (time 0), and every replica holds it.
    let r = ask(leader, reset(0)).await;
    ok(&r);
    let query = RemotingCommand::request(
        RequestCode::QUERY_CONSUMER_OFFSET,
        &QueryConsumerOffsetRequestHeader {
            consumer_group: GROUP.into(),
            topic: TOPIC.into(),
            queue_id: 0,
            set_zero_if_not_found: None,
        },
    );
    wait_until("the follower applied the reset", || {
        let query = query.clone();
        async move { ask(follower, query).await.ext("offset") == Some("0") }
    })
    .await;
    // Without isForce a reset only moves backwards: the end is ahead, so nothing moves.
    let mut forward = reset(-1);
    forward.ext_fields.insert("isForce", "false");
    let r = ask(leader, forward).await;
    ok(&r);
    let body = ResetOffsetBody::decode(&r.body).unwrap();
    assert!(body.offset_table.0.values().all(|o| *o == 0), "{body:?}");
}

/// GET_BROKER_CONFIG (26) and UPDATE_BROKER_CONFIG (25) across the three nodes.
async fn broker_config(cluster: &common::Cluster, leader: &str, follower: &str) {
    let get = || RemotingCommand::bare_request(RequestCode::GET_BROKER_CONFIG);
    let r = ask(leader, get()).await;
    let text = config_of(&r);
    assert!(text.contains("brokerName=broker-a\n"), "{text}");
    assert!(text.contains("brokerPermission=6\n"), "{text}");
    let version: remoting::route::DataVersion =
        serde_json::from_str(r.ext("version").unwrap()).unwrap();
    assert_eq!(version.counter, 0);

    for (line, why) in [
        ("flushDiskType=ASYNC_FLUSH", "cannot be changed at runtime"),
        ("noSuchKey=1", "not a rocketraft broker config key"),
        ("brokerPermission=7", "must be 6"),
    ] {
        let r = ask(leader, update_config(line)).await;
        assert_eq!(
            r.response_code(),
            Some(ResponseCode::SYSTEM_ERROR),
            "{line}"
        );
        assert!(
            r.remark.as_deref().unwrap().contains(why),
            "{line}: {:?}",
            r.remark
        );
    }
    let r = ask(follower, update_config("brokerPermission=4")).await;
    assert_eq!(r.response_code(), Some(ResponseCode::SERVICE_NOT_AVAILABLE));

    ok(&ask(leader, update_config("brokerPermission=4")).await);
    // Sends are refused by the leader at once; every member applies the change.
    let r = ask(leader, raw_send()).await;
    assert_eq!(r.response_code(), Some(ResponseCode::NO_PERMISSION));
    assert!(r.remark.unwrap().contains("sending message is forbidden"));
    for node in &cluster.nodes {
        let addr = node.addr.clone();
        wait_until("brokerPermission=4 applied on every member", || {
            let addr = addr.clone();
            async move {
                config_of(
                    &ask(
                        &addr,
                        RemotingCommand::bare_request(RequestCode::GET_BROKER_CONFIG),
                    )
                    .await,
                )
                .contains("brokerPermission=4\n")
            }
        })
        .await;
    }
    ok(&ask(follower, update_config("brokerPermission=4")).await);
    let namesrv = cluster.namesrv();
    let ns = &namesrv;
    wait_until("the route shows the group read-only", || async move {
        let route = ns.topic_route(TOPIC).await.unwrap().unwrap();
        route.queue_datas[0].perm == 4
    })
    .await;
    ok(&ask(leader, update_config("brokerPermission=6")).await);
    ok(&ask(leader, raw_send()).await);
    wait_until("the route shows the group writable again", || async move {
        let route = ns.topic_route(TOPIC).await.unwrap().unwrap();
        route.queue_datas[0].perm == 6
    })
    .await;
    let r = ask(
        leader,
        RemotingCommand::bare_request(RequestCode::GET_BROKER_CONFIG),
    )
    .await;
    let version: remoting::route::DataVersion =
        serde_json::from_str(r.ext("version").unwrap()).unwrap();
    assert_eq!(version.counter, 2, "two changes applied");
}

fn raw_send() -> RemotingCommand {
    RemotingCommand::request(
        RequestCode::SEND_MESSAGE,
        &SendMessageRequestHeader {
            producer_group: "t21-producers".into(),
            topic: TOPIC.into(),
            default_topic: "TBW102".into(),
            default_topic_queue_nums: 4,
            queue_id: 0,
            ..Default::default()
        },
    )
    .with_body(&b"x"[..])
}

/// VIEW_BROKER_STATS_DATA (315): a topic's and the node's puts over the last minute, as
/// RocketMQ samples them (every 10 s: sends go on until a window holds some); an item not
/// kept is refused as RocketMQ refuses it.
async fn stats_data(leader: &str) {
    let view = |name: &str, key: &str| {
        RemotingCommand::request(
            RequestCode::VIEW_BROKER_STATS_DATA,
            &ViewBrokerStatsDataRequestHeader {
                stats_name: name.into(),
                stats_key: key.into(),
            },
        )
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        ok(&ask(leader, raw_send()).await);
        let r = ask(leader, view("TOPIC_PUT_NUMS", TOPIC)).await;
        ok(&r);
        let data: BrokerStatsData = from_json("stats", &r.body).unwrap();
        if data.stats_minute.sum > 0 {
            assert!(data.stats_minute.tps > 0.0, "{data:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no puts in a minute window: {data:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let r = ask(leader, view("BROKER_PUT_NUMS", "TestCluster")).await;
    ok(&r);
    let node: BrokerStatsData = from_json("stats", &r.body).unwrap();
    assert!(node.stats_minute.sum > 0, "{node:?}");
    let r = ask(leader, view("TOPIC_PUT_NUMS", "T21-never-sent")).await;
    assert_eq!(r.response_code(), Some(ResponseCode::SYSTEM_ERROR));
    assert!(r.remark.unwrap().contains("not exist"));
}

/// The name server's codes: GET_TOPICS_BY_CLUSTER (224), WIPE/ADD_WRITE_PERM_OF_BROKER
/// (205/327), DELETE_TOPIC_IN_NAMESRV (216), PUT/GET/DELETE_KV_CONFIG (100/101/102); those
/// that change routes only signed with the cluster secret.
async fn namesrv_codes(cluster: &common::Cluster) {
    let ns = cluster.namesrv_addr.as_str();
    let secret = ClusterSecret::load(&cluster.path().join("cluster.secret")).unwrap();
    let signed = |mut r: RemotingCommand| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        sign_broker_request(&mut r, &secret, now);
        r
    };

    let by_cluster = |cluster: &str| {
        RemotingCommand::request(
            RequestCode::GET_TOPICS_BY_CLUSTER,
            &GetTopicsByClusterRequestHeader {
                cluster: cluster.into(),
            },
        )
    };
    let r = ask(ns, by_cluster("TestCluster")).await;
    ok(&r);
    assert!(from_json::<TopicList>("tl", &r.body)
        .unwrap()
        .topic_list
        .contains(TOPIC));
    let r = ask(ns, by_cluster("NoCluster")).await;
    assert!(from_json::<TopicList>("tl", &r.body)
        .unwrap()
        .topic_list
        .is_empty());

    let perm = |code| {
        RemotingCommand::request(
            code,
            &BrokerNameRequestHeader {
                broker_name: common::GROUP.into(),
            },
        )
    };
    let r = ask(ns, perm(RequestCode::WIPE_WRITE_PERM_OF_BROKER)).await;
    assert_eq!(
        r.response_code(),
        Some(ResponseCode::NO_PERMISSION),
        "unsigned"
    );
    let r = ask(ns, signed(perm(RequestCode::WIPE_WRITE_PERM_OF_BROKER))).await;
    ok(&r);
    let wiped: i32 = r.ext("wipeTopicCount").unwrap().parse().unwrap();
    assert!(wiped >= 1);
    let namesrv = cluster.namesrv();
    let ns_client = &namesrv;
    let perm_now = || async move {
        ns_client
            .topic_route(TOPIC)
            .await
            .unwrap()
            .unwrap()
            .queue_datas[0]
            .perm
    };
    assert_eq!(perm_now().await, 4);
    let r = ask(ns, signed(perm(RequestCode::ADD_WRITE_PERM_OF_BROKER))).await;
    ok(&r);
    assert_eq!(r.ext("addTopicCount"), Some(wiped.to_string().as_str()));
    assert_eq!(perm_now().await, 6);

    let kv_put = RemotingCommand::request(
        RequestCode::PUT_KV_CONFIG,
        &PutKVConfigRequestHeader {
            namespace: "ORDER_TOPIC_CONFIG".into(),
            key: TOPIC.into(),
            value: "broker-a:2".into(),
        },
    );
    let kv = |code| {
        RemotingCommand::request(
            code,
            &KVConfigRequestHeader {
                namespace: "ORDER_TOPIC_CONFIG".into(),
                key: TOPIC.into(),
            },
        )
    };
    let r = ask(ns, kv_put.clone()).await;
    assert_eq!(
        r.response_code(),
        Some(ResponseCode::NO_PERMISSION),
        "unsigned"
    );
    ok(&ask(ns, signed(kv_put)).await);
    let r = ask(ns, kv(RequestCode::GET_KV_CONFIG)).await;
    ok(&r);
    assert_eq!(r.ext("value"), Some("broker-a:2"));
    ok(&ask(ns, signed(kv(RequestCode::DELETE_KV_CONFIG))).await);
    let r = ask(ns, kv(RequestCode::GET_KV_CONFIG)).await;
    assert_eq!(r.response_code(), Some(ResponseCode::QUERY_NOT_FOUND));

    let delete = RemotingCommand::request(
        RequestCode::DELETE_TOPIC_IN_NAMESRV,
        &DeleteTopicFromNamesrvRequestHeader {
            topic: TOPIC.into(),
            cluster_name: None,
        },
    );
    let r = ask(ns, delete.clone()).await;
    assert_eq!(
        r.response_code(),
        Some(ResponseCode::NO_PERMISSION),
        "unsigned"
    );
    ok(&ask(ns, signed(delete)).await);
    assert!(namesrv.topic_route(TOPIC).await.unwrap().is_none());
}
