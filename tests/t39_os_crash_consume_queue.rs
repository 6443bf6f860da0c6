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
//!
//! And with syncs every half second, as in production: a queue's count is stored in
//! RocksDB only by a sync, and the journal holds what was applied after it. The follower is
//! killed while sends go on, and only what lies past each queue's stored count (what the
//! crash could lose) is damaged; the node restores it from counts and journal together.

mod common;

use std::collections::HashMap;
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
/// entries were cut off. With `synced` counts (entries a sync made durable, by queue id),
/// only what lies past them is touched.
fn lose_unsynced_pages(store: &std::path::Path, synced: &HashMap<i32, u64>) -> u64 {
    let mut cut = 0;
    let root = store.join("consumequeue").join(TOPIC);
    for queue in std::fs::read_dir(&root).unwrap() {
        let queue = queue.unwrap();
        let queue_id: i32 = queue.file_name().to_str().unwrap().parse().unwrap();
        let durable = synced.get(&queue_id).copied().unwrap_or(0) * 20;
        for file in std::fs::read_dir(queue.path()).unwrap() {
            let path = file.unwrap().path();
            let len = std::fs::metadata(&path).unwrap().len();
            let keep = (len / 2 / 20 * 20).max(durable);
            if keep >= len {
                continue;
            }
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(keep).unwrap();
            let page = (durable.div_ceil(4096) * 4096).max(4096);
            if keep >= page + 4096 {
                f.write_all_at(&[0u8; 4096], page).unwrap();
            }
            f.sync_all().unwrap();
            cut += (len - keep) / 20;
        }
    }
    cut
}

/// The ConsumeQueue counts of `TOPIC` a stopped node stored at its last sync, by queue id.
fn stored_counts(store: &std::path::Path) -> HashMap<i32, u64> {
    let path = store.join("meta");
    let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).unwrap();
    let db =
        rocksdb::DB::open_cf_for_read_only(&rocksdb::Options::default(), &path, &families, false)
            .unwrap();
    let app = db.cf_handle("app").unwrap();
    (0..4)
        .filter_map(|queue_id| {
            let value = db
                .get_cf(app, broker::keys::queue_key(TOPIC, queue_id))
                .unwrap()?;
            Some((queue_id, u64::from_be_bytes(value.try_into().unwrap())))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_rebuilds_consume_queues_an_os_crash_lost() {
    crash_a_follower("SYNC_FLUSH", false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_flush_a_node_fetches_again_the_commit_log_tail_an_os_crash_lost() {
    crash_a_follower("ASYNC_FLUSH", true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counts_stored_by_syncs_and_the_journal_restore_a_crash_between_syncs() {
    crash_a_follower("SYNC_FLUSH", false, true).await;
}

async fn crash_a_follower(flush: &str, lose_log_tail: bool, syncs: bool) {
    let sync_conf = if syncs {
        "flushIntervalConsumeQueue=500\nflushConsumeQueueLeastPages=0"
    } else {
        "flushIntervalConsumeQueue=3600000"
    };
    let mut cluster = Cluster::start(&format!("flushDiskType={flush}\n{sync_conf}"));
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let mut config = ProducerConfig::new(&cluster.namesrv_addr, "t39");
    config.send_msg_timeout_ms = 10_000;
    let producer = Producer::start(config).await.unwrap();
    let mut acked = Acked::new();
    send(&producer, 0, 3_000, &mut acked).await;

    let victim = (cluster.node_index(&leader) + 1) % 3;
    let victim_addr = cluster.nodes[victim].addr.clone();
    // Wait until the victim has applied everything (and, with syncs, stored counts past
    // it), then crash it: with syncs while sends go on, so that some lie past the last.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut first = 3_000;
    if syncs {
        let sending = {
            let producer = producer.clone();
            tokio::spawn(async move {
                let mut acked = Acked::new();
                send(&producer, 3_000, 1_000, &mut acked).await;
                acked
            })
        };
        tokio::time::sleep(Duration::from_millis(700)).await;
        cluster.kill(victim);
        acked.extend(sending.await.unwrap());
        first = 4_000;
    } else {
        cluster.kill(victim);
    }
    let synced = if syncs {
        let counts = stored_counts(&cluster.nodes[victim].store);
        let total: u64 = counts.values().sum();
        println!("n{victim}: counts stored by its last sync {counts:?}");
        assert!(
            total >= 3_000,
            "the syncs stored counts past the first 3,000: {total}"
        );
        counts
    } else {
        HashMap::new()
    };
    // With syncs the files may end where the last sync left them: a queue's newest entries
    // stay in memory until a page of them gathers, and the kill took those.
    let cut = lose_unsynced_pages(&cluster.nodes[victim].store, &synced);
    assert!(syncs || cut > 100, "only {cut} entries cut");
    println!(
        "n{victim}: {cut} ConsumeQueue entries cut off, a page zeroed where a file held one more"
    );
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
    send(&producer, first, 500, &mut acked).await;

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
    let restored = log.contains("written again from the journal");
    // With syncs the journal may hold nothing at the kill (a slow follower's last sync
    // came after its last apply): the stored counts alone must then be right.
    assert!(
        syncs || restored,
        "the node says it repaired its ConsumeQueues"
    );
    println!("n{victim}: entries written again from the journal: {restored}");
    if lose_log_tail {
        assert!(
            log.contains("the CommitLog lost entries this node had applied"),
            "the node says its applied point was ahead of its CommitLog"
        );
    }
    send(&producer, first + 500, 100, &mut acked).await;
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
