//! Proves every `rocketraft admin` verb with mqadmin's name (and `groupStatus`) works
//! against a real name server and three-node group: each runs as an operator runs it, its
//! `--json` output is checked against what the cluster holds, and its table form prints.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use client::{
    ConsumeFromWhere, ConsumeStatus, Message, Producer, ProducerConfig, PushConsumer,
    PushConsumerConfig,
};
use remoting::connection::NoRequests;
use remoting::header::UpdateConsumerOffsetRequestHeader;
use remoting::route::{to_json, ConsumerData, HeartbeatData, ProducerData, SubscriptionData};
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};
use serde_json::Value;

const T: Duration = Duration::from_secs(5);
const TOPIC: &str = "T22";
const GROUP: &str = "t22-group";

/// `Cluster::admin` with `--json`, parsed.
fn admin_json(cluster: &common::Cluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let text = cluster.admin(&all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

fn heartbeat() -> RemotingCommand {
    let data = HeartbeatData {
        client_id: "127.0.0.1@t22".into(),
        // A producer group too, as producers heartbeat.
        producer_data_set: vec![ProducerData {
            group_name: "t22-producers".into(),
        }],
        consumer_data_set: vec![ConsumerData {
            group_name: GROUP.into(),
            consume_type: "CONSUME_ACTIVELY".into(),
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

/// GET_KV_CONFIG of the topic's ORDER_TOPIC_CONFIG, asked of the name server.
async fn order_conf(cluster: &common::Cluster) -> RemotingCommand {
    let conn = Connection::connect(
        &cluster.namesrv_addr,
        &ConnectionConfig::default(),
        Arc::new(NoRequests),
    )
    .await
    .unwrap();
    let request = RemotingCommand::request(
        RequestCode::GET_KV_CONFIG,
        &remoting::header::KVConfigRequestHeader {
            namespace: "ORDER_TOPIC_CONFIG".into(),
            key: TOPIC.into(),
        },
    );
    let answer = conn.request(request, T).await.unwrap();
    conn.close();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mqadmin_verbs_work_against_a_real_cluster() {
    let cluster = common::Cluster::start("");
    let leader = cluster.wait_for_leader(None, Duration::from_secs(30)).await;

    // updateTopic, topicList (all and by cluster), topicRoute, clusterList.
    let out = cluster.admin(&[
        "updateTopic",
        "-t",
        TOPIC,
        "-r",
        "2",
        "-w",
        "2",
        "-o",
        "true",
    ]);
    assert!(out.contains("success"), "{out}");
    // An ordered topic: its layout is in the name server's KV config.
    let layout = order_conf(&cluster).await;
    assert_eq!(
        layout.ext("value"),
        Some("broker-a:2"),
        "{:?}",
        layout.remark
    );
    let list = admin_json(&cluster, &["topicList"]);
    assert!(list["topicList"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == TOPIC));
    let list = admin_json(&cluster, &["topicList", "-c", "TestCluster"]);
    assert!(list["topicList"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == TOPIC));
    let route = admin_json(&cluster, &["topicRoute", "-t", TOPIC]);
    assert_eq!(route["queueDatas"][0]["writeQueueNums"], 2);
    assert!(cluster.admin(&["topicRoute", "-t", TOPIC]).contains("0="));
    let clusters = admin_json(&cluster, &["clusterList"]);
    assert_eq!(
        clusters["brokerAddrTable"][common::GROUP]["brokerAddrs"]["0"],
        leader.as_str()
    );
    assert!(cluster.admin(&["clusterList"]).contains("leader"));

    // Traffic: a producer, and a consumer group that committed an offset.
    let config = ProducerConfig::new(&cluster.namesrv_addr, "t22-producers");
    let producer = Producer::start(config).await.unwrap();
    for i in 0..6 {
        producer
            .send(Message::new(TOPIC, format!("m{i}")))
            .await
            .unwrap();
    }
    let conn = Connection::connect(&leader, &ConnectionConfig::default(), Arc::new(NoRequests))
        .await
        .unwrap();
    assert_eq!(
        conn.request(heartbeat(), T).await.unwrap().response_code(),
        Some(ResponseCode::SUCCESS)
    );
    let commit = RemotingCommand::request(
        RequestCode::UPDATE_CONSUMER_OFFSET,
        &UpdateConsumerOffsetRequestHeader {
            consumer_group: GROUP.into(),
            topic: TOPIC.into(),
            queue_id: 0,
            commit_offset: 1,
        },
    );
    conn.request(commit, T).await.unwrap();

    // resetOffsetByTime reaches a live push consumer (RESET_CONSUMER_CLIENT_OFFSET): after
    // it consumed everything, a reset to time 0 has it consume everything again.
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut push = PushConsumerConfig::new(&cluster.namesrv_addr, "t22-push");
    push.consume_from_where = ConsumeFromWhere::FirstOffset;
    let mut consumer = PushConsumer::new(push);
    consumer.subscribe(TOPIC, "*").unwrap();
    let counter = received.clone();
    consumer.register_message_listener(move |msgs| {
        counter.fetch_add(msgs.len(), std::sync::atomic::Ordering::SeqCst);
        ConsumeStatus::ConsumeSuccess
    });
    consumer.start().await.unwrap();
    let count = || received.load(std::sync::atomic::Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while count() < 6 {
        assert!(std::time::Instant::now() < deadline, "consumed {}", count());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The reset needs the group's offsets at the broker: wait for its periodic commit.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let p = admin_json(
            &cluster,
            &["consumerProgress", "-g", "t22-push", "-t", TOPIC],
        );
        if p["diffTotal"] == 0 && p["queues"].as_array().is_some_and(|q| !q.is_empty()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never committed: {p}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    cluster.admin(&[
        "resetOffsetByTime",
        "-g",
        "t22-push",
        "-t",
        TOPIC,
        "-s",
        "0",
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while count() < 12 {
        assert!(
            std::time::Instant::now() < deadline,
            "consumed {} after the reset",
            count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // consumerStatus: the broker asks the live push consumer itself
    // (GET_CONSUMER_RUNNING_INFO) and passes its answer on.
    let client_id = consumer.client_id().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let one = loop {
        let one = admin_json(
            &cluster,
            &["consumerStatus", "-g", "t22-push", "-i", &client_id],
        );
        let committed: i64 = one["mqTable"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|q| q["topic"] == TOPIC)
            .map(|q| q["state"]["commitOffset"].as_i64().unwrap())
            .sum();
        if committed == 6 {
            break one;
        }
        assert!(std::time::Instant::now() < deadline, "{one}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(one["properties"]["PROP_CONSUME_TYPE"], "CONSUME_PASSIVELY");
    assert_eq!(one["properties"]["consumerGroup"], "t22-push");
    assert_eq!(one["properties"]["PROP_CONSUMEORDERLY"], "false");
    let queues = one["mqTable"].as_array().unwrap();
    assert_eq!(
        queues.iter().filter(|q| q["topic"] == TOPIC).count(),
        2,
        "{one}"
    );
    assert!(queues
        .iter()
        .all(|q| q["state"]["lastPullTimestamp"].as_i64().unwrap() > 0));
    let topics: Vec<&str> = one["subscriptionSet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["topic"].as_str().unwrap())
        .collect();
    assert!(
        topics.contains(&TOPIC) && topics.contains(&"%RETRY%t22-push"),
        "{topics:?}"
    );
    let rates = &one["statusTable"][TOPIC];
    assert!(rates["consumeOKTPS"].as_f64().unwrap() > 0.0, "{rates}");
    assert_eq!(rates["consumeFailedMsgs"], 0);
    let all = admin_json(&cluster, &["consumerStatus", "-g", "t22-push"]);
    assert!(all[client_id.as_str()]["mqTable"].is_array(), "{all}");
    let table = cluster.admin(&["consumerStatus", "-g", "t22-push", "-i", &client_id]);
    assert!(
        table.contains("PROP_CONSUME_TYPE: CONSUME_PASSIVELY"),
        "{table}"
    );
    consumer.shutdown().await;

    // topicStatus, consumerProgress (lag per queue and total).
    let status = admin_json(&cluster, &["topicStatus", "-t", TOPIC]);
    let max: i64 = status
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["maxOffset"].as_i64().unwrap())
        .sum();
    assert_eq!(max, 6);
    let progress = admin_json(&cluster, &["consumerProgress", "-g", GROUP]);
    assert_eq!(progress["diffTotal"], 5, "{progress}");
    assert_eq!(progress["queues"][0]["consumerOffset"], 1);
    let table = cluster.admin(&["consumerProgress", "-g", GROUP, "-t", TOPIC]);
    assert!(table.contains("Diff Total: 5"), "{table}");

    // consumerConnection, producerConnection.
    let cc = admin_json(&cluster, &["consumerConnection", "-g", GROUP]);
    assert_eq!(cc["connectionSet"][0]["clientId"], "127.0.0.1@t22");
    assert_eq!(cc["messageModel"], "CLUSTERING");
    // The Rust producer heartbeats its group as Java's do; the hand-made heartbeat above
    // named the same group.
    let pc = admin_json(
        &cluster,
        &["producerConnection", "-g", "t22-producers", "-t", TOPIC],
    );
    let ids: Vec<&str> = pc["connectionSet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["clientId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{pc}");
    assert!(
        ids.contains(&"127.0.0.1@t22") && ids.contains(&producer.client_id()),
        "{pc}"
    );

    // resetOffsetByTime: to the end (-1), then back to the start; the group follows.
    let reset = admin_json(
        &cluster,
        &["resetOffsetByTime", "-g", GROUP, "-t", TOPIC, "-s", "-1"],
    );
    let total: i64 = reset
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["offset"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 6);
    let progress = admin_json(&cluster, &["consumerProgress", "-g", GROUP, "-t", TOPIC]);
    assert_eq!(progress["diffTotal"], 0);
    cluster.admin(&["resetOffsetByTime", "-g", GROUP, "-t", TOPIC, "-s", "0"]);
    let progress = admin_json(&cluster, &["consumerProgress", "-g", GROUP, "-t", TOPIC]);
    assert_eq!(progress["diffTotal"], 6);

    // getBrokerConfig, updateBrokerConfig (a whole group, through its log), brokerStatus.
    let configs = admin_json(&cluster, &["getBrokerConfig"]);
    assert_eq!(configs.as_object().unwrap().len(), 3, "every member");
    assert_eq!(configs[leader.as_str()]["autoCreateTopicEnable"], "true");
    let out = cluster.admin(&[
        "updateBrokerConfig",
        "-b",
        &leader,
        "-k",
        "autoCreateTopicEnable",
        "-v",
        "false",
    ]);
    assert!(out.contains("success"), "{out}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let configs = admin_json(&cluster, &["getBrokerConfig"]);
        let all = configs
            .as_object()
            .unwrap()
            .values()
            .all(|c| c["autoCreateTopicEnable"] == "false");
        if all {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not applied everywhere: {configs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args([
            "admin",
            "-n",
            &cluster.namesrv_addr,
            "updateBrokerConfig",
            "-k",
            "flushDiskType",
            "-v",
            "ASYNC_FLUSH",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot be changed at runtime"));
    let status = admin_json(&cluster, &["brokerStatus", "-b", &leader]);
    assert_eq!(status[leader.as_str()]["raftRole"], "LEADER");
    assert!(cluster
        .admin(&["brokerStatus"])
        .contains("msgPutTotalTodayNow"));

    // wipeWritePerm / addWritePerm (signed with the cluster secret from the environment).
    let wiped = admin_json(&cluster, &["wipeWritePerm", "-b", common::GROUP]);
    assert!(wiped[0]["topicCount"].as_i64().unwrap() >= 1, "{wiped}");
    let route = admin_json(&cluster, &["topicRoute", "-t", TOPIC]);
    assert_eq!(route["queueDatas"][0]["perm"], 4);
    cluster.admin(&["addWritePerm", "-b", common::GROUP]);
    let route = admin_json(&cluster, &["topicRoute", "-t", TOPIC]);
    assert_eq!(route["queueDatas"][0]["perm"], 6);

    // groupStatus: term, leader, each member's role and positions.
    let group = admin_json(&cluster, &["groupStatus", "-g", common::GROUP]);
    let members = group["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{group}");
    let leaders: Vec<_> = members.iter().filter(|m| m["role"] == "LEADER").collect();
    assert_eq!(leaders.len(), 1, "{group}");
    assert_eq!(leaders[0]["addr"], leader.as_str());
    assert_eq!(
        Some(leaders[0]["nodeId"].as_str().unwrap()),
        group["leaderId"].as_str()
    );
    for m in members {
        assert!(m["appliedPosition"].as_u64().unwrap() > 0, "{m}");
        assert!(m["lagEntries"].as_u64().is_some(), "{m}");
    }
    assert!(cluster
        .admin(&["groupStatus", "-g", common::GROUP])
        .contains("LEADER"));

    // deleteTopic: from the group (through its log) and from the routes.
    producer.shutdown().await;
    cluster.admin(&["deleteTopic", "-t", TOPIC, "-c", "TestCluster"]);
    let list = admin_json(&cluster, &["topicList"]);
    assert!(
        !list["topicList"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == TOPIC),
        "{list}"
    );
    let layout = order_conf(&cluster).await;
    assert_eq!(layout.response_code(), Some(ResponseCode::QUERY_NOT_FOUND));
    conn.close();
}
