//! Proves a node restarts by itself after an OS crash that lost unsynced ConsumeQueue
//! writes, with real processes under SYNC_FLUSH. The ConsumeQueue files are fsync'd only
//! every `flushIntervalConsumeQueue`, set here past the test's length, so every byte of them
//! is unsynced: a crash may lose any of it. A follower is SIGKILLed and its files are then
//! damaged as such a crash could leave them (each queue's file cut to half, and a 4 KiB page
//! in what is left zeroed); meanwhile the others take more sends. Restarted, the node writes
//! the lost entries again from its RocksDB journal with no operator step, serves every queue
//! exactly as the leader does, and nothing acknowledged is lost.
//!
//! The same under ASYNC_FLUSH, where the crash also loses the CommitLog's tail under the
//! applied point RocksDB kept: the node fetches those entries again from the leader without
//! applying them twice, and its CommitLog ends identical to the others'.

mod common;

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use client::{Message, Producer, ProducerConfig};
use common::{Acked, Cluster};

const TOPIC: &str = "Crash";

async fn send(producer: &Producer, from: usize, count: usize, acked: &mut Acked) {
    for i in from..from + count {
        let body = format!("c{i:06}");
        let r = producer
            .send(Message::new(TOPIC, body.clone()))
            .await
            .unwrap_or_else(|e| panic!("send {i}: {e}"));
        acked.insert(r.msg_id, (body, r.queue.queue_id, r.queue_offset));
    }
}

/// Cuts every ConsumeQueue file of `TOPIC` under `store` to half (whole entries) and zeroes
/// a page in what is left, as an OS crash that lost unsynced pages could; returns how many
/// entries were cut off.
fn lose_unsynced_pages(store: &std::path::Path) -> u64 {
    let mut cut = 0;
    let root = store.join("consumequeue").join(TOPIC);
    for queue in std::fs::read_dir(&root).unwrap() {
        for file in std::fs::read_dir(queue.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let len = std::fs::metadata(&path).unwrap().len();
            let keep = len / 2 / 20 * 20;
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(keep).unwrap();
            if keep > 8192 {
                f.write_all_at(&[0u8; 4096], 4096).unwrap();
            }
            f.sync_all().unwrap();
            cut += (len - keep) / 20;
        }
    }
    cut
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_rebuilds_consume_queues_an_os_crash_lost() {
    crash_a_follower("SYNC_FLUSH", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_flush_a_node_fetches_again_the_commit_log_tail_an_os_crash_lost() {
    crash_a_follower("ASYNC_FLUSH", true).await;
}

async fn crash_a_follower(flush: &str, lose_log_tail: bool) {
    let mut cluster = Cluster::start(&format!(
        "flushDiskType={flush}\nflushIntervalConsumeQueue=3600000"
    ));
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let mut config = ProducerConfig::new(&cluster.namesrv_addr, "t39");
    config.send_msg_timeout_ms = 10_000;
    let producer = Producer::start(config).await.unwrap();
    let mut acked = Acked::new();
    send(&producer, 0, 3_000, &mut acked).await;

    let victim = (cluster.node_index(&leader) + 1) % 3;
    let victim_addr = cluster.nodes[victim].addr.clone();
    // Wait until the victim has applied everything, then crash it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill(victim);
    let cut = lose_unsynced_pages(&cluster.nodes[victim].store);
    assert!(cut > 100, "only {cut} entries cut");
    println!("n{victim}: {cut} ConsumeQueue entries cut off and a page zeroed per file");
    if lose_log_tail {
        let (file, end) =
            chaos::disks::lose_commit_log_tail(&cluster.nodes[victim].store, 64 << 10)
                .unwrap()
                .expect("a CommitLog with data");
        println!(
            "n{victim}: the last 64 KiB of its CommitLog (written to {end} in {}) zeroed",
            file.display()
        );
    }
    send(&producer, 3_000, 500, &mut acked).await;

    cluster.start_node(victim);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut since: Option<Instant> = None;
    while since.is_none_or(|t| t.elapsed() < Duration::from_secs(3)) {
        assert!(
            Instant::now() < deadline,
            "n{victim} did not come back by itself; logs in {}",
            cluster.path().display()
        );
        if common::routed_members(&cluster)
            .await
            .contains(&victim_addr)
        {
            since.get_or_insert_with(Instant::now);
        } else {
            since = None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(&cluster.nodes[victim].log).unwrap();
    assert!(
        log.contains("written again from the journal"),
        "the node says it repaired its ConsumeQueues"
    );
    if lose_log_tail {
        assert!(
            log.contains("the CommitLog lost entries this node had applied"),
            "the node says its applied point was ahead of its CommitLog"
        );
    }
    send(&producer, 3_500, 100, &mut acked).await;
    producer.shutdown().await;

    // The repaired node serves every queue exactly as the leader does.
    let leader = cluster.wait_for_leader(None, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    for queue_id in 0..4 {
        loop {
            let theirs = common::pull_queue_from(&leader, TOPIC, queue_id).await;
            let ours = common::pull_queue_from(&victim_addr, TOPIC, queue_id).await;
            if ours == theirs {
                println!("queue {queue_id}: {} messages served alike", ours.len());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "queue {queue_id}: n{victim} serves {} messages, the leader {}",
                ours.len(),
                theirs.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    common::assert_acked_read_back(&cluster.namesrv_addr, TOPIC, &acked).await;
    println!("{} acknowledged messages all read back", acked.len());
    cluster
        .wait_commit_logs_identical(&[0, 1, 2], Duration::from_secs(10))
        .await;
}
