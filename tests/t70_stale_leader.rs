//! Proves a paused ex-leader is harmless: the leader is SIGSTOPped, a new leader is
//! elected; after SIGCONT the old one never acknowledges a write sent straight to it and
//! the name server never routes it as brokerId 0 again.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Message, Producer, ProducerConfig};
use remoting::connection::NoRequests;
use remoting::header::SendMessageRequestHeader;
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};

const TOPIC: &str = "Stale";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_woken_ex_leader_never_acknowledges_and_is_never_routed() {
    let cluster = common::Cluster::start("");
    let old = cluster.wait_ready(Duration::from_secs(30)).await;
    let producer = Producer::start(ProducerConfig::new(&cluster.namesrv_addr, "t70-producers"))
        .await
        .unwrap();
    producer.send(Message::new(TOPIC, "before")).await.unwrap();
    // A connection to the old leader, opened while it still leads.
    let conn = Connection::connect(&old, &ConnectionConfig::default(), Arc::new(NoRequests))
        .await
        .unwrap();

    let old_index = cluster.node_index(&old);
    cluster.pause(old_index);
    let new = cluster
        .wait_for_leader(Some(&old), Duration::from_secs(10))
        .await;
    // The producer's first send may still go to the paused node: its outcome is
    // unknown (a timeout), never a failure; the next one finds the new leader.
    let mut during = None;
    for _ in 0..5 {
        match producer.send(Message::new(TOPIC, "during")).await {
            Ok(r) => {
                during = Some(r);
                break;
            }
            Err(e) => assert!(e.is_outcome_unknown(), "a definite failure: {e}"),
        }
    }
    assert_eq!(
        during
            .expect("no send went through the new leader")
            .broker_addr,
        new
    );
    cluster.resume(old_index);

    // For 3 s after waking: writes sent straight to it are never acknowledged, and the
    // route never names it the leader.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut attempts = 0;
    while Instant::now() < deadline {
        let request = RemotingCommand::request(
            RequestCode::SEND_MESSAGE,
            &SendMessageRequestHeader {
                producer_group: "t70".into(),
                topic: TOPIC.into(),
                default_topic: "TBW102".into(),
                default_topic_queue_nums: 4,
                queue_id: 0,
                ..Default::default()
            },
        )
        .with_body(&b"stale"[..]);
        // A short deadline: a woken node on a loaded machine may be slow to answer, and the
        // window must hold several probes (an unanswered one proves nothing either way).
        if let Ok(r) = conn.request(request, Duration::from_millis(500)).await {
            assert_ne!(
                r.response_code(),
                Some(ResponseCode::SUCCESS),
                "the woken ex-leader acknowledged a write: {r:?}"
            );
        }
        attempts += 1;
        if let Some(routed) = cluster.routed_leader().await {
            assert_ne!(
                routed, old,
                "the name server routes the stale ex-leader as brokerId 0"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("{attempts} writes sent to the woken ex-leader in 3 s");
    assert!(attempts >= 5, "only {attempts} probes in 3 s");
    // The group keeps working through the new leader.
    let r = producer.send(Message::new(TOPIC, "after")).await.unwrap();
    assert_eq!(r.broker_addr, new);
    producer.shutdown().await;
    // Nothing the stale node was asked to store is in the queue.
    let queues = common::drain_topic(&cluster.namesrv_addr, TOPIC).await;
    let bodies: Vec<String> = queues
        .values()
        .flatten()
        .map(|m| String::from_utf8_lossy(&m.body).to_string())
        .collect();
    assert!(!bodies.iter().any(|b| b == "stale"), "{bodies:?}");
    assert!(bodies.iter().any(|b| b == "after"));
}
