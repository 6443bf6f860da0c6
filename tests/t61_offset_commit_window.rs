//! An offset commit stays visible on the leader while its batch goes through Raft.
//!
//! The leader keeps consumer offset commits in a pending table and moves them into the Raft
//! log in batches (`consumerOffsetCommitIntervalMs`). A batch once left the table before it
//! was proposed, so until it applied the offset was in neither place, and a
//! QUERY_CONSUMER_OFFSET (or an offset reset) then found none: the CI found it under load.
//! Here every CommitLog msync waits 400 ms (`testCommitLogFlushDelayMs`, SYNC_FLUSH), so each
//! batch spends that long in Raft, and the test reads the offset back every 10 ms
//! throughout: it must never be missing, and a newer commit made while the older batch is in
//! Raft must not be dropped when that batch applies.

mod common;

use std::time::{Duration, Instant};

use client::{Message, MessageQueue, Producer, ProducerConfig, PullConsumer, PullConsumerConfig};

const TOPIC: &str = "OffsetWindow";
const GROUP: &str = "t61-group";
/// Each CommitLog msync waits this long, so each offset batch is in Raft at least this long.
const FLUSH_DELAY_MS: u64 = 400;

/// Waits until the leader answers `offset` for the queue, then reads it every 10 ms for
/// `watch`: every answer must be `offset`. Returns how many reads were made.
async fn answers_only(
    consumer: &PullConsumer,
    queue: &MessageQueue,
    offset: i64,
    watch: Duration,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match consumer.query_offset(queue).await {
            Ok(Some(o)) if o == offset => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the commit of {offset} never showed (last answer {other:?})"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let end = Instant::now() + watch;
    let mut reads = 0;
    while Instant::now() < end {
        let answer = consumer.query_offset(queue).await.unwrap();
        reads += 1;
        assert_eq!(
            answer,
            Some(offset),
            "read {reads} after the commit of {offset} showed: the leader answered {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    reads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_committed_offset_is_never_missing_while_its_batch_is_in_raft() {
    let cluster = common::Cluster::start(&format!(
        "flushDiskType=SYNC_FLUSH\ntestCommitLogFlushDelayMs={FLUSH_DELAY_MS}\n"
    ));
    cluster.wait_ready(Duration::from_secs(30)).await;
    let producer = Producer::start(ProducerConfig::new(&cluster.namesrv_addr, "t61-producers"))
        .await
        .unwrap();
    for i in 0..10 {
        producer
            .send(Message::new(TOPIC, format!("m-{i}")))
            .await
            .unwrap();
    }
    cluster.wait_routed(TOPIC, Duration::from_secs(30)).await;
    let consumer = PullConsumer::start(PullConsumerConfig::new(&cluster.namesrv_addr, GROUP))
        .await
        .unwrap();
    let queue = consumer.fetch_queues(TOPIC).await.unwrap().remove(0);

    // First commit: from the pending table, through a batch's time in Raft, to the log.
    consumer.update_offset(&queue, 1).await.unwrap();
    let watch = Duration::from_millis(3 * FLUSH_DELAY_MS + 600);
    let reads = answers_only(&consumer, &queue, 1, watch).await;

    // A newer commit lands while the batch holding the older one is in Raft: when that
    // batch applies, the newer offset stays (pending, then in the next batch).
    consumer.update_offset(&queue, 2).await.unwrap();
    answers_only(&consumer, &queue, 2, Duration::from_millis(250)).await;
    consumer.update_offset(&queue, 3).await.unwrap();
    let more = answers_only(&consumer, &queue, 3, watch).await;
    println!(
        "offsets read back {} times while commits went through Raft ({FLUSH_DELAY_MS} ms \
         msyncs): never missing, never older than the newest commit",
        reads + more
    );
    consumer.shutdown().await;
}
