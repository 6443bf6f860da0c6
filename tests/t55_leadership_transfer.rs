//! Proves planned leadership transfer with real processes: while producers send without
//! pause, leadership is moved three times (twice through the client library, once through
//! `rocketraft admin transfer-leader`); each time the target leads and is routed, the
//! producers' longest pause is printed and bounded, every acknowledged msgId is read back by a
//! consumer at the queue and offset its acknowledgement named, and the three CommitLogs end
//! byte-identical. A transfer to a stopped node fails at once with a clear error and leaves
//! leadership where it was. With `preferredLeaderId=n0`, leadership returns to n0 after it is
//! killed and restarted, and stays put while n0 is down.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{Message, Producer, ProducerConfig};

const TOPIC: &str = "Transfer";

#[derive(Default)]
struct History {
    /// msgId (UNIQ_KEY) -> (body, queue id, queue offset) for every acknowledged send.
    acked: HashMap<String, (String, i32, i64)>,
    ack_times: Vec<Instant>,
}

/// The longest pause between acknowledgements in `[from, to]`.
fn longest_pause(times: &[Instant], from: Instant, to: Instant) -> Duration {
    let mut window: Vec<Instant> = times
        .iter()
        .copied()
        .filter(|t| *t >= from && *t <= to)
        .collect();
    window.sort();
    window
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(to - from)
}

async fn wait_routed(cluster: &common::Cluster, addr: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cluster.routed_leader().await.as_deref() == Some(addr) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn admin(cluster: &common::Cluster, to: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args(["admin", "-n", &cluster.namesrv_addr, "transfer-leader"])
        .args(["--group", common::GROUP, "--to", to])
        .output()
        .expect("run rocketraft admin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_under_load_loses_no_acknowledged_message() {
    let cluster = common::Cluster::start("");
    let mut leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let mut config = ProducerConfig::new(&cluster.namesrv_addr, "t55-producers");
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
                if let Ok(r) = producer.send(Message::new(TOPIC, body.clone())).await {
                    let mut h = history.lock().unwrap();
                    h.acked
                        .insert(r.msg_id, (body, r.queue.queue_id, r.queue_offset));
                    h.ack_times.push(Instant::now());
                }
            }
        }));
    }
    let namesrv = cluster.namesrv();
    let mut asked = Vec::new();
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let from = cluster.node_index(&leader);
        let to = (from + 1) % 3;
        let to_name = cluster.nodes[to].name.clone();
        let at = Instant::now();
        if round == 2 {
            let out = admin(&cluster, &to_name);
            let stdout = String::from_utf8_lossy(&out.stdout);
            println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "admin transfer-leader failed");
            assert!(stdout.contains(&format!("to {to_name}")), "{stdout}");
        } else {
            let done = client::admin::transfer_leadership(
                &namesrv,
                common::GROUP,
                &to_name,
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
            println!("round {round}: {done:?}");
            assert_eq!(done.leader_id, to_name);
        }
        let to_addr = cluster.nodes[to].addr.clone();
        assert!(
            wait_routed(&cluster, &to_addr, Duration::from_secs(5)).await,
            "round {round}: {to_name} is not routed as leader"
        );
        asked.push(at);
        leader = to_addr;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.store(false, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    producer.shutdown().await;
    let history = Arc::try_unwrap(history).ok().unwrap().into_inner().unwrap();
    for (round, at) in asked.iter().enumerate() {
        let pause = longest_pause(&history.ack_times, *at, *at + Duration::from_secs(1));
        println!("transfer {round}: longest acknowledgement pause {pause:?}");
        assert!(
            pause < Duration::from_secs(1),
            "transfer {round} paused sends {pause:?}"
        );
    }

    assert!(
        history.acked.len() > 100,
        "only {} acked",
        history.acked.len()
    );
    common::assert_acked_read_back(&cluster.namesrv_addr, TOPIC, &history.acked).await;
    println!("{} acknowledged msgIds all read back", history.acked.len());
    cluster
        .wait_commit_logs_identical(&[0, 1, 2], Duration::from_secs(20))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_to_a_stopped_node_fails_cleanly() {
    let mut cluster = common::Cluster::start("");
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let stopped = (cluster.node_index(&leader) + 1) % 3;
    cluster.kill(stopped);
    let name = cluster.nodes[stopped].name.clone();
    let asked = Instant::now();
    let out = admin(&cluster, &name);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert!(
        !out.status.success(),
        "a transfer to a stopped node must fail"
    );
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(asked.elapsed() < Duration::from_secs(5), "failed at once");
    let out = admin(&cluster, "n9");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a voter"));
    assert_eq!(
        cluster.routed_leader().await.as_deref(),
        Some(leader.as_str())
    );
    let producer = Producer::start(ProducerConfig::new(&cluster.namesrv_addr, "t55-after"))
        .await
        .unwrap();
    let sent = producer.send(Message::new(TOPIC, "after")).await.unwrap();
    assert_eq!(sent.broker_addr, leader, "the old leader still takes sends");
    producer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preferred_leader_takes_over_after_restart() {
    let mut cluster = common::Cluster::start("preferredLeaderId=n0");
    cluster.wait_ready(Duration::from_secs(30)).await;
    let n0 = cluster.nodes[0].addr.clone();
    assert!(
        wait_routed(&cluster, &n0, Duration::from_secs(15)).await,
        "the preferred node n0 leads"
    );
    cluster.kill(0);
    let interim = cluster
        .wait_for_leader(Some(&n0), Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        cluster.routed_leader().await.as_deref(),
        Some(interim.as_str()),
        "leadership stays put while the preferred node is down"
    );
    cluster.start_node(0);
    assert!(
        wait_routed(&cluster, &n0, Duration::from_secs(20)).await,
        "n0 leads again after its restart"
    );
}
