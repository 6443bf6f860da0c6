//! Regression for a bug the 200-fault chaos run found (issue 5): a pull past the end of
//! a replica's queue was answered PULL_OFFSET_MOVED with nextBeginOffset 0 (RocketMQ's
//! master rule) even by a follower, which may only be behind; a push consumer that fell
//! back to a restarted follower then re-read its whole queue (656,837 re-deliveries in
//! that run). Proves a follower keeps the consumer's offset (PULL_NOT_FOUND, next =
//! the requested offset) while the up-to-date leader still moves a bogus one.

mod common;

use std::sync::Arc;
use std::time::Duration;

use remoting::connection::NoRequests;
use remoting::header::{PullMessageRequestHeader, PullMessageResponseHeader};
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};

const T: Duration = Duration::from_secs(5);

async fn pull_at(addr: &str, offset: i64) -> Result<(Option<ResponseCode>, i64), String> {
    let conn = Connection::connect(addr, &ConnectionConfig::default(), Arc::new(NoRequests))
        .await
        .unwrap();
    let r = conn
        .request(
            RemotingCommand::request(
                RequestCode::PULL_MESSAGE,
                &PullMessageRequestHeader {
                    consumer_group: "t90".into(),
                    topic: "Lag".into(),
                    queue_id: 0,
                    queue_offset: offset,
                    max_msg_nums: 32,
                    sys_flag: 4,
                    subscription: Some("*".into()),
                    ..Default::default()
                },
            ),
            T,
        )
        .await
        .unwrap();
    match r.header::<PullMessageResponseHeader>() {
        Ok(h) => Ok((r.response_code(), h.next_begin_offset)),
        // Not a pull's answer (a node between roles under load, say): the caller asks again.
        Err(_) => Err(format!(
            "{addr} answered {:?}: {}",
            r.response_code(),
            r.remark.unwrap_or_default()
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_never_moves_a_consumer_offset_to_zero() {
    let cluster = common::Cluster::start("");
    cluster.wait_ready(Duration::from_secs(30)).await;
    client::admin::create_topic(&cluster.namesrv(), "Lag", 1, T)
        .await
        .unwrap();
    let producer =
        client::Producer::start(client::ProducerConfig::new(&cluster.namesrv_addr, "t90"))
            .await
            .unwrap();
    for i in 0..5 {
        producer
            .send(client::Message::new("Lag", format!("m{i}")))
            .await
            .unwrap();
    }
    producer.shutdown().await;
    // On a loaded machine the leadership may move meanwhile: ask the current leader, and
    // again (at most 5 times) when a node answers with something other than a pull's answer.
    let mut leader = cluster.wait_for_leader(None, Duration::from_secs(30)).await;
    for attempt in 1..=5 {
        match check_once(&cluster, &leader).await {
            Ok(()) => return,
            Err(e) if attempt < 5 => {
                eprintln!("attempt {attempt}: {e}; asking again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                leader = cluster.wait_for_leader(None, Duration::from_secs(30)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Every follower keeps the offset; the leader moves it to 0.
async fn check_once(cluster: &common::Cluster, leader: &str) -> Result<(), String> {
    for node in cluster.nodes.iter().filter(|n| n.addr != leader) {
        let (code, next) = pull_at(&node.addr, 1000).await?;
        assert_eq!(code, Some(ResponseCode::PULL_NOT_FOUND), "{}", node.name);
        assert_eq!(next, 1000, "{} moved the consumer's offset", node.name);
    }
    let (code, next) = pull_at(leader, 1000).await?;
    assert_eq!(code, Some(ResponseCode::PULL_OFFSET_MOVED));
    assert_eq!(next, 0);
    Ok(())
}
