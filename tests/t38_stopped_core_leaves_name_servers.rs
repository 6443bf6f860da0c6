//! Proves a node whose Raft core has stopped leaves the name servers instead of staying
//! routed as a healthy member: a follower whose apply fails (its ConsumeQueue directory for
//! a new topic cannot be created) stops its core and unregisters, while the other two keep
//! taking sends; once the obstacle is gone it starts again by itself (no operator step),
//! re-applies what it missed, serves it, and is routed again.

mod common;

use std::time::{Duration, Instant};

use client::{Message, Producer, ProducerConfig};

/// The group's member addresses the name server routes.
async fn routed(cluster: &common::Cluster) -> Vec<String> {
    let info = cluster.namesrv().cluster_info().await.unwrap();
    info.broker_addr_table
        .get(common::GROUP)
        .map(|b| b.broker_addrs.values().cloned().collect())
        .unwrap_or_default()
}

async fn wait_routed(cluster: &common::Cluster, addr: &str, present: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while routed(cluster).await.iter().any(|a| a == addr) != present {
        assert!(
            Instant::now() < deadline,
            "{addr} still {} routed after 20 s: {:?}",
            if present { "not" } else { "" },
            routed(cluster).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_raft_core_stopped_is_no_longer_routed() {
    let cluster = common::Cluster::start("");
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let victim = (cluster.node_index(&leader) + 1) % 3;
    let victim_addr = cluster.nodes[victim].addr.clone();
    wait_routed(&cluster, &victim_addr, true).await;

    // A file where the follower will want the topic's ConsumeQueue directory.
    let obstacle = cluster.nodes[victim]
        .store
        .join("consumequeue")
        .join("Poison");
    std::fs::create_dir_all(obstacle.parent().unwrap()).unwrap();
    std::fs::write(&obstacle, b"not a directory").unwrap();

    let producer = Producer::start(ProducerConfig::new(&cluster.namesrv_addr, "t38"))
        .await
        .unwrap();
    producer
        .send(Message::new("Poison", "first"))
        .await
        .unwrap();
    wait_routed(&cluster, &victim_addr, false).await;
    let log = std::fs::read_to_string(&cluster.nodes[victim].log).unwrap();
    assert!(
        log.contains("the Raft core has stopped"),
        "the node says why it left"
    );
    // The other two still form a quorum.
    for i in 0..20 {
        producer
            .send(Message::new("Poison", format!("more-{i}")))
            .await
            .unwrap();
    }

    // Without the obstacle, it starts again by itself and applies what it missed. (While
    // the obstacle is there, each restart registers until the apply fails again.)
    std::fs::remove_file(&obstacle).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut routed_since: Option<Instant> = None;
    while routed_since.is_none_or(|t| t.elapsed() < Duration::from_secs(3)) {
        assert!(
            Instant::now() < deadline,
            "n{victim} never came back by itself"
        );
        let now_routed = routed(&cluster).await.contains(&victim_addr);
        routed_since = match (now_routed, routed_since) {
            (true, Some(t)) => Some(t),
            (true, None) => Some(Instant::now()),
            (false, _) => None,
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut served = 0;
    for queue_id in 0..4 {
        served += common::pull_queue_from(&victim_addr, "Poison", queue_id)
            .await
            .len();
    }
    assert_eq!(
        served, 21,
        "the restarted node serves every message of the topic"
    );
    let log = std::fs::read_to_string(&cluster.nodes[victim].log).unwrap();
    assert!(
        log.contains("starting this node"),
        "the node says it starts again"
    );
    producer.shutdown().await;
}
