//! Proves reads of cold messages move to followers and back (`slaveReadEnable`, RocketMQ's
//! `suggestWhichBrokerId`), on a real name server and three-node group where every pull
//! short of the CommitLog's end counts as far behind (`accessMessageInMemoryMaxRatio=0`):
//! the leader names a follower (in the name servers' numbering), the follower keeps a
//! reader that is behind and sends one that caught up back to the leader at once
//! (PULL_RETRY_IMMEDIATELY, never held), and a Rust push consumer reading a backlog from
//! its start gets every message once while followers serve most of its pulls. Without the
//! key every answer names the leader.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{ConsumeFromWhere, ConsumeStatus, Message, Producer, ProducerConfig, PushConsumer};
use remoting::admin_body::KVTable;
use remoting::connection::NoRequests;
use remoting::header::{PullMessageRequestHeader, PullMessageResponseHeader};
use remoting::route::from_json;
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};

const TOPIC: &str = "FollowerReads";
const SENT: usize = 300;
const T: Duration = Duration::from_secs(5);

async fn connect(addr: &str) -> Connection {
    Connection::connect(addr, &ConnectionConfig::default(), Arc::new(NoRequests))
        .await
        .unwrap()
}

/// A held pull (suspend flag, 15 s) of queue 0 at `offset`: its code and suggestion.
async fn pull(conn: &Connection, offset: i64, max: i32) -> (Option<ResponseCode>, i64, Duration) {
    let request = RemotingCommand::request(
        RequestCode::PULL_MESSAGE,
        &PullMessageRequestHeader {
            consumer_group: "t57-direct".into(),
            topic: TOPIC.into(),
            queue_id: 0,
            queue_offset: offset,
            max_msg_nums: max,
            sys_flag: 2 | 4,
            suspend_timeout_millis: 15_000,
            subscription: Some("*".into()),
            ..Default::default()
        },
    );
    let asked = Instant::now();
    let r = conn
        .request(request, Duration::from_secs(20))
        .await
        .unwrap();
    let h: PullMessageResponseHeader = r.header().unwrap();
    (
        r.response_code(),
        h.suggest_which_broker_id,
        asked.elapsed(),
    )
}

/// Messages this node answered to pulls (GET_BROKER_RUNTIME_INFO's `getTotalTps`'s
/// source, `msgGetTotalTodayNow`).
async fn pulled_by(addr: &str) -> u64 {
    let conn = connect(addr).await;
    let r = conn
        .request(
            RemotingCommand::bare_request(RequestCode::GET_BROKER_RUNTIME_INFO),
            T,
        )
        .await
        .unwrap();
    let table: KVTable = from_json("runtime info", &r.body).unwrap();
    table.table["msgGetTotalTodayNow"].parse().unwrap()
}

/// Messages the members other than `leader` answered to pulls.
async fn followers_pulled(cluster: &common::Cluster, leader: &str) -> u64 {
    let followers = cluster.nodes.iter().filter(|n| n.addr != leader);
    futures::future::join_all(followers.map(|n| pulled_by(&n.addr)))
        .await
        .into_iter()
        .sum()
}

async fn fill(cluster: &common::Cluster) {
    client::admin::create_topic(&cluster.namesrv(), TOPIC, 1, T)
        .await
        .unwrap();
    let producer = Producer::start(ProducerConfig::new(&cluster.namesrv_addr, "t57-producers"))
        .await
        .unwrap();
    for i in 0..SENT {
        producer
            .send(Message::new(TOPIC, format!("m{i}")))
            .await
            .unwrap();
    }
    producer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cold_readers_move_to_a_follower_and_back() {
    let cluster = common::Cluster::start("slaveReadEnable=true\naccessMessageInMemoryMaxRatio=0\n");
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    fill(&cluster).await;
    // Every follower has applied the backlog before it is read there.
    cluster
        .wait_commit_logs_identical(&[0, 1, 2], Duration::from_secs(30))
        .await;

    // The leader names a follower for a reader behind its end, the leader for one at it.
    let to_leader = connect(&leader).await;
    let (code, suggested, _) = pull(&to_leader, 0, 10).await;
    assert_eq!(code, Some(ResponseCode::SUCCESS));
    // Queue 0: the first follower in the name servers' numbering, which routes map to a
    // member other than the leader.
    assert_eq!(suggested, 1, "the leader names a follower");
    let route = cluster.namesrv().topic_route(TOPIC).await.unwrap().unwrap();
    let follower = route.broker_datas[0].broker_addrs[&suggested].clone();
    assert_ne!(follower, leader);
    let (_, at_end, _) = pull(&to_leader, SENT as i64 - 10, 10).await;
    assert_eq!(
        at_end, 0,
        "a reader that reached the end stays on the leader"
    );

    // The follower keeps a reader behind, sends a caught-up one back, and does not hold
    // a pull with nothing new (the reader must go to the leader now).
    let to_follower = connect(&follower).await;
    let (code, kept, _) = pull(&to_follower, 10, 10).await;
    assert_eq!(
        (code, kept),
        (Some(ResponseCode::SUCCESS), suggested),
        "a reader behind stays on the follower"
    );
    let (code, back, _) = pull(&to_follower, SENT as i64 - 10, 10).await;
    assert_eq!((code, back), (Some(ResponseCode::SUCCESS), 0));
    let (code, back, took) = pull(&to_follower, SENT as i64, 10).await;
    assert_eq!(
        (code, back),
        (Some(ResponseCode::PULL_RETRY_IMMEDIATELY), 0),
        "nothing new on a follower: back to the leader"
    );
    assert!(took < Duration::from_secs(5), "not held: {took:?}");

    // A push consumer reading the backlog from its start: every message once, part of
    // them served by followers.
    let before = followers_pulled(&cluster, &leader).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut config = client::PushConsumerConfig::new(&cluster.namesrv_addr, "t57-group");
    config.consume_from_where = ConsumeFromWhere::FirstOffset;
    config.pull_batch_size = 8;
    let mut consumer = PushConsumer::new(config);
    consumer.subscribe(TOPIC, "*").unwrap();
    let sink = seen.clone();
    consumer.register_message_listener(move |msgs| {
        let mut seen = sink.lock().unwrap();
        seen.extend(msgs.iter().map(|m| m.queue_offset));
        ConsumeStatus::ConsumeSuccess
    });
    consumer.start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < SENT {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {SENT}",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    consumer.shutdown().await;
    let offsets: Vec<i64> = seen.lock().unwrap().clone();
    let unique: BTreeSet<i64> = offsets.iter().copied().collect();
    assert_eq!(unique.len(), SENT, "every message");
    assert_eq!(offsets.len(), SENT, "each once: {offsets:?}");
    let after = followers_pulled(&cluster, &leader).await;
    assert!(
        after - before >= (SENT * 3 / 4) as u64,
        "followers served {} of the consumer's {SENT} messages",
        after - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_key_every_answer_names_the_leader() {
    let cluster = common::Cluster::start("accessMessageInMemoryMaxRatio=0\n");
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    fill(&cluster).await;
    let (code, suggested, _) = pull(&connect(&leader).await, 0, 10).await;
    assert_eq!((code, suggested), (Some(ResponseCode::SUCCESS), 0));
}
