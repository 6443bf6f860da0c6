//! Proves topic and subscription-group config go through the Raft log: with
//! autoCreateTopicEnable=false a send to an unknown topic is refused with
//! TOPIC_NOT_EXIST; a topic created through the leader is then writable and known to
//! every replica; a subscription group created on the leader is served by followers;
//! and SEARCH_OFFSET_BY_TIMESTAMP finds the first message stored at or after a time.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use client::{ClientError, Message, Producer, ProducerConfig, PullConsumer, PullConsumerConfig};
use remoting::connection::NoRequests;
use remoting::route::{from_json, TopicConfigSerializeWrapper};
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};

const T: Duration = Duration::from_secs(5);

async fn connect(addr: &str) -> Connection {
    Connection::connect(addr, &ConnectionConfig::default(), Arc::new(NoRequests))
        .await
        .unwrap()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_changes_go_through_raft() {
    let cluster = common::Cluster::start("autoCreateTopicEnable=false");
    let leader = cluster.wait_for_leader(None, Duration::from_secs(30)).await;
    let mut config = ProducerConfig::new(&cluster.namesrv_addr, "t20-producers");
    config.send_msg_timeout_ms = 2_000;
    let producer = Producer::start(config).await.unwrap();

    // No auto-creation: no route at all (no TBW102 either).
    match producer.send(Message::new("Unknown", "x")).await {
        Err(ClientError::NoRoute { .. }) => {}
        other => panic!("a send to an unknown topic must fail without a route: {other:?}"),
    }
    // Straight to the leader: TOPIC_NOT_EXIST with a readable remark.
    let conn = connect(&leader).await;
    let request = RemotingCommand::request(
        RequestCode::SEND_MESSAGE,
        &remoting::header::SendMessageRequestHeader {
            producer_group: "t20".into(),
            topic: "Unknown".into(),
            default_topic: "TBW102".into(),
            default_topic_queue_nums: 4,
            queue_id: 0,
            ..Default::default()
        },
    )
    .with_body(&b"x"[..]);
    let r = conn.request(request, T).await.unwrap();
    assert_eq!(r.response_code(), Some(ResponseCode::TOPIC_NOT_EXIST));
    assert!(r.remark.unwrap().contains("Unknown"));

    // Create through the admin path; then sends work.
    let groups = client::admin::create_topic(&cluster.namesrv(), "Created", 2, T)
        .await
        .unwrap();
    assert_eq!(groups, vec![common::GROUP.to_string()]);
    // create_topic returns only once the name server routes the new queues: at once, no wait.
    let route = cluster
        .namesrv()
        .topic_route("Created")
        .await
        .unwrap()
        .expect("the name server knows the topic when create_topic returns");
    assert!(
        route
            .queue_datas
            .iter()
            .any(|q| q.broker_name == common::GROUP && q.write_queue_nums == 2),
        "route right after create_topic: {:?}",
        route.queue_datas
    );
    let before = now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut sent = Vec::new();
    for i in 0..10 {
        sent.push(
            producer
                .send(Message::new("Created", format!("m{i}")))
                .await
                .unwrap(),
        );
        if i == 4 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(sent.iter().all(|r| r.queue.queue_id < 2));

    // Every replica holds the topic config (GET_ALL_TOPIC_CONFIG answered locally).
    for node in &cluster.nodes {
        let c = connect(&node.addr).await;
        let deadline = Instant::now() + T;
        loop {
            let r = c
                .request(
                    RemotingCommand::bare_request(RequestCode::GET_ALL_TOPIC_CONFIG),
                    T,
                )
                .await
                .unwrap();
            let wrapper: TopicConfigSerializeWrapper = from_json("topics", &r.body).unwrap();
            if let Some(t) = wrapper.topic_config_table.get("Created") {
                assert_eq!(t.write_queue_nums, 2);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never learned the topic",
                node.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // A subscription group created on the leader is served by every follower.
    let r = conn
        .request(
            RemotingCommand::bare_request(RequestCode::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
                .with_body(&br#"{"groupName":"audit","retryMaxTimes":3,"consumeEnable":true}"#[..]),
            T,
        )
        .await
        .unwrap();
    assert_eq!(r.response_code(), Some(ResponseCode::SUCCESS), "{r:?}");
    for node in cluster.nodes.iter().filter(|n| n.addr != leader) {
        let c = connect(&node.addr).await;
        let deadline = Instant::now() + T;
        loop {
            let r = c
                .request(
                    RemotingCommand::bare_request(RequestCode::GET_ALL_SUBSCRIPTIONGROUP_CONFIG),
                    T,
                )
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            if body["subscriptionGroupTable"]["audit"]["retryMaxTimes"] == 3 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never learned the group",
                node.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Followers refuse config writes, naming the leader.
        let r = c
            .request(
                RemotingCommand::bare_request(RequestCode::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
                    .with_body(&br#"{"groupName":"x"}"#[..]),
                T,
            )
            .await
            .unwrap();
        assert_eq!(r.response_code(), Some(ResponseCode::SERVICE_NOT_AVAILABLE));
    }
    let r = conn
        .request(
            RemotingCommand::bare_request(RequestCode::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
                .with_body(&b"{}"[..]),
            T,
        )
        .await
        .unwrap();
    assert_eq!(r.response_code(), Some(ResponseCode::SYSTEM_ERROR));

    // Search by time: before everything is offset 0; after everything is the max.
    let checker = PullConsumer::start(PullConsumerConfig::new(&cluster.namesrv_addr, "t20"))
        .await
        .unwrap();
    for q in checker.fetch_queues("Created").await.unwrap() {
        let max = checker.max_offset(&q).await.unwrap();
        assert_eq!(checker.search_offset(&q, before).await.unwrap(), 0);
        assert_eq!(
            checker.search_offset(&q, now_ms() + 60_000).await.unwrap(),
            max
        );
    }
    checker.shutdown().await;
    producer.shutdown().await;
}
