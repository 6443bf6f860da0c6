//! Proves consumer offsets go through the Raft log: offsets a group committed before the
//! leader is killed are what the new leader answers, and a consumer of that group
//! started after the failover re-consumes nothing it had committed (the measured count
//! is printed; it is bounded by the commit interval).

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{
    ConsumeStatus, Message, Producer, ProducerConfig, PullConsumer, PullConsumerConfig,
    PushConsumer, PushConsumerConfig,
};

const TOPIC: &str = "Offsets";
const GROUP: &str = "t60-group";

fn consumer(namesrv: &str, seen: Arc<Mutex<Vec<String>>>) -> PushConsumer {
    let mut config = PushConsumerConfig::new(namesrv, GROUP);
    config.persist_consumer_offset_interval_ms = 1_000;
    let mut c = PushConsumer::new(config);
    c.subscribe(TOPIC, "*").unwrap();
    c.register_message_listener(move |msgs| {
        let mut seen = seen.lock().unwrap();
        seen.extend(
            msgs.iter()
                .map(|m| String::from_utf8_lossy(&m.body).to_string()),
        );
        ConsumeStatus::ConsumeSuccess
    });
    c
}

async fn wait_for(seen: &Mutex<Vec<String>>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {n}",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn committed_offsets_survive_a_leader_kill() {
    let mut cluster = common::Cluster::start("");
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let producer = Producer::start(ProducerConfig::new(&cluster.namesrv_addr, "t60-producers"))
        .await
        .unwrap();
    producer.send(Message::new(TOPIC, "first")).await.unwrap();
    for i in 0..1000 {
        producer
            .send(Message::new(TOPIC, format!("old-{i}")))
            .await
            .unwrap();
    }

    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut c = consumer(&cluster.namesrv_addr, seen.clone());
    c.start().await.unwrap();
    wait_for(&seen, 1001).await;
    c.shutdown().await; // commits its offsets and waits for the answer

    // What the leader holds for the group, queue by queue.
    let checker = PullConsumer::start(PullConsumerConfig::new(&cluster.namesrv_addr, GROUP))
        .await
        .unwrap();
    let queues = checker.fetch_queues(TOPIC).await.unwrap();
    let mut before = Vec::new();
    for q in &queues {
        let committed = checker.query_offset(q).await.unwrap().unwrap_or(-1);
        assert_eq!(
            committed,
            checker.max_offset(q).await.unwrap(),
            "{q} not fully committed"
        );
        before.push(committed);
    }
    // Let the leader's batched commit reach the Raft log, then kill it.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.kill(cluster.node_index(&leader));
    cluster
        .wait_for_leader(Some(&leader), Duration::from_secs(10))
        .await;

    let mut after = Vec::new();
    for q in &queues {
        let deadline = Instant::now() + Duration::from_secs(10);
        let committed = loop {
            match checker.query_offset(q).await {
                Ok(o) => break o.unwrap_or(-1),
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "query of {q} after failover: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        after.push(committed);
    }
    assert_eq!(
        after, before,
        "offsets the new leader holds differ from the old leader's"
    );

    // A consumer started now re-consumes nothing it had committed.
    let seen_after = Arc::new(Mutex::new(Vec::new()));
    let mut c = consumer(&cluster.namesrv_addr, seen_after.clone());
    c.start().await.unwrap();
    for i in 0..100 {
        producer
            .send(Message::new(TOPIC, format!("new-{i}")))
            .await
            .unwrap();
    }
    wait_for(&seen_after, 100).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.shutdown().await;
    producer.shutdown().await;
    checker.shutdown().await;
    let got = seen_after.lock().unwrap().clone();
    let reconsumed = got.iter().filter(|b| !b.starts_with("new-")).count();
    println!(
        "re-consumed after failover: {reconsumed} messages (of 1001 committed before the kill)"
    );
    assert_eq!(
        reconsumed,
        0,
        "re-consumed committed messages: {:?}",
        &got[..got.len().min(10)]
    );
    let new: HashSet<_> = got.iter().filter(|b| b.starts_with("new-")).collect();
    assert_eq!(new.len(), 100);
}
