//! Proves, with real processes, that a follower SIGKILLed while retention purges the others'
//! logs past it catches up by snapshot when it restarts: its CommitLog then starts at the
//! same segment as the others' and is byte-identical from there; its ConsumeQueues, queue
//! minimums and consumer offsets (all from the snapshot) serve the same messages as the
//! others'; and after the leader is killed, what is sent next is applied and served by it.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use client::{Message, Producer, ProducerConfig};
use common::Cluster;

const TOPIC: &str = "SnapT";
const SEGMENT_BYTES: u64 = 1 << 20;

/// Sends `count` messages of 2 KiB, numbered from `from`, paced so that retention's passes
/// see segments age; returns the bodies acknowledged.
async fn send(producer: &Producer, from: usize, count: usize) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    for i in from..from + count {
        let mut body = format!("m{i:08}-").into_bytes();
        body.resize(2048, b'x');
        producer
            .send(Message::new(TOPIC, body.clone()))
            .await
            .unwrap();
        sent.push(body);
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    sent
}

/// Every message of every queue of `TOPIC` as the node at `addr` serves it.
async fn served_by(addr: &str) -> BTreeMap<i32, Vec<(i64, Vec<u8>)>> {
    let mut out = BTreeMap::new();
    for queue_id in 0..4 {
        out.insert(
            queue_id,
            common::pull_queue_from(addr, TOPIC, queue_id).await,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_behind_the_purge_point_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(&format!(
        "mappedFileSizeCommitLog={SEGMENT_BYTES}\nfileReservedTimeSeconds=2\ndeleteWhen=*\n\
         cleanResourceInterval=500\nflushDiskType=ASYNC_FLUSH"
    ));
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let mut config = ProducerConfig::new(&cluster.namesrv_addr, "t36");
    config.send_msg_timeout_ms = 10_000;
    let producer = Producer::start(config).await.unwrap();
    send(&producer, 0, 1_000).await;

    let follower = (cluster.node_index(&leader) + 1) % 3;
    cluster.kill(follower);
    let behind = cluster.first_and_last_segment(follower).1;

    // About 8 MiB more while it is away: the others purge past everything it holds.
    let mut late = send(&producer, 1_000, 4_000).await.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let firsts: Vec<u64> = (0..3)
            .filter(|i| *i != follower)
            .map(|i| cluster.first_and_last_segment(i).0)
            .collect();
        if firsts.iter().all(|f| *f > behind + SEGMENT_BYTES) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not pass the stopped follower's log: first segments {firsts:?}, it holds up to {behind}"
        );
        late += send(&producer, 1_000 + late, 200).await.len();
    }

    // Restarted, it is behind the first kept entry: a snapshot brings it up to date.
    cluster.start_node(follower);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (from, logs) = cluster.kept_logs();
        let same_start = (0..3)
            .map(|i| cluster.first_and_last_segment(i).0)
            .all(|f| f == from);
        if same_start && logs.iter().all(|l| *l == logs[0]) {
            println!("byte-identical from {from}: {} bytes", logs[0].len());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted follower did not catch up to a byte-identical CommitLog; logs in {}",
            cluster.path().display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Retention keeps moving the minimums (2 s of retention), so the two pulls are
    // compared where both still serve: the same offsets hold the same messages.
    let other = served_by(&cluster.nodes[(follower + 1) % 3].addr).await;
    let mine = served_by(&cluster.nodes[follower].addr).await;
    let mut compared = 0;
    for (queue_id, theirs) in &other {
        let ours: BTreeMap<i64, &Vec<u8>> = mine[queue_id].iter().map(|(o, b)| (*o, b)).collect();
        for (offset, body) in theirs {
            if let Some(b) = ours.get(offset) {
                assert!(*b == body, "queue {queue_id} offset {offset} differs");
                compared += 1;
            }
        }
        assert!(
            theirs.first().is_some_and(|(o, _)| *o > 0),
            "queue {queue_id}'s minimum moved past the purge"
        );
    }
    assert!(compared > 100, "only {compared} messages served by both");
    println!("{compared} messages served alike by the snapshot node and another");

    // It can lead: every message sent after the purge point is read from it.
    cluster.kill(cluster.node_index(&leader));
    let new_leader = cluster
        .wait_for_leader(Some(&leader), Duration::from_secs(20))
        .await;
    println!(
        "new leader {new_leader} (the snapshot node is {})",
        cluster.nodes[follower].addr
    );
    // Entries after the snapshot apply on it like on any member.
    let after = send(&producer, 1_000_000, 20).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let served: Vec<Vec<u8>> = served_by(&cluster.nodes[follower].addr)
            .await
            .into_values()
            .flatten()
            .map(|(_, body)| body)
            .collect();
        if after.iter().all(|b| served.contains(b)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the snapshot node does not serve the messages sent after the failover"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    producer.shutdown().await;
}
