//! Proves a SIGKILLed leader loses nothing: while producers run, the leader process is
//! killed; a new leader is elected and producers resume within 2 s (the measured gap is
//! printed); every acknowledged message is then read back at the queue and offset its
//! acknowledgement named, no queue offset repeats or skips; and the killed node,
//! restarted, catches up to a CommitLog byte-identical to the others'.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{Message, Producer, ProducerConfig};

const TOPIC: &str = "Failover";

#[derive(Default)]
struct History {
    /// body -> (queue id, queue offset) for every acknowledged send.
    acked: HashMap<String, (i32, i64)>,
    /// When each acknowledgement arrived.
    ack_times: Vec<Instant>,
    unknown: usize,
    failed: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_loses_no_acknowledged_message() {
    let mut cluster = common::Cluster::start("");
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let mut config = ProducerConfig::new(&cluster.namesrv_addr, "t50-producers");
    config.send_msg_timeout_ms = 5_000;
    let producer = Arc::new(Producer::start(config).await.unwrap());
    producer.send(Message::new(TOPIC, "warmup")).await.unwrap();

    let history = Arc::new(Mutex::new(History::default()));
    let running = Arc::new(AtomicBool::new(true));
    let mut tasks = Vec::new();
    for task in 0..8 {
        let (producer, history, running) = (producer.clone(), history.clone(), running.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while running.load(Ordering::Relaxed) {
                let body = format!("p{task}-{i}");
                i += 1;
                let result = producer.send(Message::new(TOPIC, body.clone())).await;
                let mut h = history.lock().unwrap();
                match result {
                    Ok(r) => {
                        h.acked.insert(body, (r.queue.queue_id, r.queue_offset));
                        h.ack_times.push(Instant::now());
                    }
                    Err(e) if e.is_outcome_unknown() => h.unknown += 1,
                    Err(_) => h.failed += 1,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = cluster.node_index(&leader);
    let kill_time = Instant::now();
    cluster.kill(killed);
    let new_leader = cluster
        .wait_for_leader(Some(&leader), Duration::from_secs(10))
        .await;
    let elected_after = kill_time.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    running.store(false, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    producer.shutdown().await;

    let history = Arc::try_unwrap(history).ok().unwrap().into_inner().unwrap();
    // The producers' stall: the longest pause between consecutive acknowledgements from
    // just before the kill until the end (answers already on the wire when the leader
    // died still arrive after the kill, so "first ack after the kill" would hide it).
    let mut times = history.ack_times.clone();
    times.sort();
    assert!(
        times
            .iter()
            .any(|t| *t > kill_time + Duration::from_millis(100)),
        "no send acknowledged after the kill"
    );
    let gap = times
        .windows(2)
        .filter(|w| w[1] + Duration::from_millis(500) > kill_time)
        .map(|w| w[1] - w[0])
        .max()
        .expect("acknowledgements around the kill");
    println!(
        "failover: new leader {new_leader} routed {:.0} ms after the kill; send gap {:.0} ms; \
         {} acked, {} unknown, {} failed",
        elected_after.as_secs_f64() * 1000.0,
        gap.as_secs_f64() * 1000.0,
        history.acked.len(),
        history.unknown,
        history.failed
    );
    assert!(
        gap < Duration::from_secs(2),
        "producers resumed only after {gap:?}"
    );

    // Every acknowledged message is where its acknowledgement said.
    let queues = common::drain_topic(&cluster.namesrv_addr, TOPIC).await;
    common::assert_offsets_contiguous(&queues);
    let mut stored: HashMap<String, (i32, i64)> = HashMap::new();
    for (queue_id, messages) in &queues {
        for m in messages {
            let body = String::from_utf8_lossy(&m.body).to_string();
            // A duplicate body would be a client retry of an unknown outcome.
            stored.entry(body).or_insert((*queue_id, m.queue_offset));
        }
    }
    for (body, place) in &history.acked {
        assert_eq!(
            stored.get(body),
            Some(place),
            "acknowledged {body} lost or moved"
        );
    }

    // The killed node restarts and catches up byte for byte.
    cluster.start_node(killed);
    cluster
        .wait_commit_logs_identical(&[0, 1, 2], Duration::from_secs(30))
        .await;
    // Its ConsumeQueues, cut back to its applied point on restart and rebuilt by
    // replay, serve exactly what the group serves.
    let restarted = cluster.nodes[killed].addr.clone();
    for (queue_id, messages) in &queues {
        let direct = common::pull_queue_from(&restarted, TOPIC, *queue_id).await;
        let expected: Vec<(i64, Vec<u8>)> = messages
            .iter()
            .map(|m| (m.queue_offset, m.body.to_vec()))
            .collect();
        assert_eq!(
            direct.len(),
            expected.len(),
            "queue {queue_id} on the restarted node"
        );
        assert!(
            direct == expected,
            "queue {queue_id} differs on the restarted node"
        );
    }
}
