//! Proves membership change with real processes, under a producer that never pauses: a new
//! node started with `joinExistingGroup=true` is not routed until `rocketraft admin
//! add-node` has made it a voter, then is at once; the group grows to five; removing the
//! leader first moves its leadership; the removed node is told, leaves the name servers
//! and exits, and its store refuses to start again; a member whose data directory is deleted
//! is replaced (removed, started again empty, added again); the group shrinks back to three.
//! Every acknowledged message is read back at the queue and offset its acknowledgement named,
//! and the final members' CommitLogs are byte-identical.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{Message, Producer, ProducerConfig};
use common::{Acked, Cluster, GROUP};

const TOPIC: &str = "Members";

async fn wait_routed(cluster: &Cluster, addr: &str, present: bool, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while common::routed_members(cluster)
        .await
        .iter()
        .any(|a| a == addr)
        != present
    {
        assert!(
            Instant::now() < deadline,
            "{addr} {} the name servers after {timeout:?}: {:?}; logs in {}",
            if present {
                "never reached"
            } else {
                "never left"
            },
            common::routed_members(cluster).await,
            cluster.path().display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn admin(cluster: &Cluster, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args(["admin", "-n", &cluster.namesrv_addr])
        .args(args)
        .output()
        .expect("run rocketraft admin");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    println!(
        "admin {args:?}:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "admin {args:?} failed");
    stdout
}

async fn add(cluster: &Cluster, i: usize) -> client::admin::GroupMembers {
    let node = &cluster.nodes[i];
    client::admin::add_node(
        &cluster.namesrv(),
        GROUP,
        &node.name,
        &node.peer_addr,
        Duration::from_secs(120),
    )
    .await
    .unwrap_or_else(|e| panic!("adding {}: {e}", node.name))
}

async fn remove(cluster: &Cluster, i: usize) -> client::admin::GroupMembers {
    client::admin::remove_node(
        &cluster.namesrv(),
        GROUP,
        &cluster.nodes[i].name,
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|e| panic!("removing {}: {e}", cluster.nodes[i].name))
}

fn voters(m: &client::admin::GroupMembers) -> Vec<String> {
    m.voters.keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grow_remove_the_leader_replace_and_shrink_under_load() {
    let mut cluster = Cluster::start("");
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let mut config = ProducerConfig::new(&cluster.namesrv_addr, "t56-producers");
    config.send_msg_timeout_ms = 10_000;
    let producer = Arc::new(Producer::start(config).await.unwrap());
    producer.send(Message::new(TOPIC, "warmup")).await.unwrap();
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let running = Arc::new(AtomicBool::new(true));
    let mut tasks = Vec::new();
    for task in 0..4 {
        let (producer, acked, running) = (producer.clone(), acked.clone(), running.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while running.load(Ordering::Relaxed) {
                let body = format!("p{task}-{i}");
                i += 1;
                if let Ok(r) = producer.send(Message::new(TOPIC, body.clone())).await {
                    acked
                        .lock()
                        .unwrap()
                        .insert(r.msg_id, (body, r.queue.queue_id, r.queue_offset));
                }
            }
        }));
    }

    // Grow to five. A joining node is not routed before it votes.
    for expected in [3usize, 4] {
        let i = cluster.start_joining_node();
        assert_eq!(i, expected);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let addr = cluster.nodes[i].addr.clone();
        assert!(
            !common::routed_members(&cluster).await.contains(&addr),
            "n{i} is routed before it was added"
        );
        let started = Instant::now();
        let members = if i == 3 {
            add(&cluster, i).await
        } else {
            let name = cluster.nodes[i].name.clone();
            let peer = cluster.nodes[i].peer_addr.clone();
            let out = admin(
                &cluster,
                &["add-node", "--group", GROUP, "--id", &name, "--addr", &peer],
            );
            assert!(out.contains("caught up and votes"), "{out}");
            client::admin::group_members(&cluster.namesrv(), GROUP, Duration::from_secs(5))
                .await
                .unwrap()
        };
        assert!(voters(&members).contains(&format!("n{i}")), "{members:?}");
        wait_routed(&cluster, &addr, true, Duration::from_secs(5)).await;
        println!(
            "n{i} added and routed {} ms after the request",
            started.elapsed().as_millis()
        );
    }
    let out = admin(&cluster, &["members", "--group", GROUP]);
    for n in 0..5 {
        assert!(out.contains(&format!("\"n{n}\"")), "{out}");
    }

    // Remove the leader: its leadership moves first; it is told, stops, leaves.
    let old = cluster.node_index(&leader);
    let members = remove(&cluster, old).await;
    assert!(
        !voters(&members).contains(&format!("n{old}")),
        "{members:?}"
    );
    assert_eq!(members.voters.len(), 4, "{members:?}");
    wait_routed(&cluster, &leader, false, Duration::from_secs(10)).await;
    // Told it is out, it stops its core, cannot start again on its store, and exits.
    let deadline = Instant::now() + Duration::from_secs(20);
    let exited = loop {
        let child = cluster.nodes[old].child.as_mut().expect("started");
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the removed n{old} still runs after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!exited.success(), "a removed node exits with an error");
    cluster.kill(old);
    cluster.start_node(old);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&cluster.nodes[old].log).unwrap();
        if log.contains("was removed from its group") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the removed n{old} did not refuse to start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.kill(old);

    // Replace a follower whose data directory is gone.
    let leader = cluster.wait_for_leader(None, Duration::from_secs(10)).await;
    let lost = (0..5)
        .find(|i| *i != old && cluster.nodes[*i].addr != leader)
        .unwrap();
    cluster.kill(lost);
    remove(&cluster, lost).await;
    cluster.restart_empty_joining(lost);
    let members = add(&cluster, lost).await;
    assert!(
        voters(&members).contains(&format!("n{lost}")),
        "{members:?}"
    );
    wait_routed(
        &cluster,
        &cluster.nodes[lost].addr,
        true,
        Duration::from_secs(5),
    )
    .await;

    // Shrink to three: remove one more (not the one just replaced).
    let leader = cluster.wait_for_leader(None, Duration::from_secs(10)).await;
    let extra = (0..5)
        .rev()
        .find(|i| *i != old && *i != lost && cluster.nodes[*i].addr != leader)
        .unwrap();
    let members = remove(&cluster, extra).await;
    assert_eq!(members.voters.len(), 3, "{members:?}");
    cluster.kill(extra);
    tokio::time::sleep(Duration::from_secs(1)).await;

    running.store(false, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    producer.shutdown().await;
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() > 100, "only {} acked", acked.len());
    common::assert_acked_read_back(&cluster.namesrv_addr, TOPIC, &acked).await;
    println!("{} acknowledged msgIds all read back", acked.len());

    let members: Vec<usize> = (0..5).filter(|i| ![old, extra].contains(i)).collect();
    cluster
        .wait_commit_logs_identical(&members, Duration::from_secs(20))
        .await;
}
