//! Proves a node started on a store written before issue 21 reads the old ConsumeQueue
//! journal (one `J` record per queue and apply) once and then deletes it: a stopped node's
//! ConsumeQueue is zeroed, as an OS crash could leave it, today's journal records are
//! removed and an old-form record holding the same entries is planted; the node starts,
//! says it wrote the entries again, serves them as before, and after its first sync the
//! old record is gone.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use client::{Message, Producer, ProducerConfig};

const TOPIC: &str = "Legacy21";

fn open_meta(store: &Path) -> rocksdb::DB {
    let path = store.join("meta");
    let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).unwrap();
    rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, &families).unwrap()
}

/// `J` + u16 length + topic + queue id + end: the journal key before issue 21.
fn legacy_key(queue_id: i32, end: u64) -> Vec<u8> {
    let mut key = b"J".to_vec();
    key.extend_from_slice(&(TOPIC.len() as u16).to_be_bytes());
    key.extend_from_slice(TOPIC.as_bytes());
    key.extend_from_slice(&queue_id.to_be_bytes());
    key.extend_from_slice(&end.to_be_bytes());
    key
}

fn keys_with_prefix(db: &rocksdb::DB, prefix: &[u8]) -> usize {
    let app = db.cf_handle("app").unwrap();
    db.prefix_iterator_cf(app, prefix)
        .map(Result::unwrap)
        .take_while(|(k, _)| k.starts_with(prefix))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_journal_of_the_old_form_is_restored_once_then_deleted() {
    // No sync during the test's sends: every entry is still in today's journal, which the
    // test removes, so only the planted old-form record can restore the queue.
    let mut cluster = common::Cluster::start("flushConsumeQueueThoroughInterval=3600000");
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    // Each node's first sync runs a second after its start and prunes whatever is journaled
    // by then; the sends come after it, so that their records stay.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let producer = Producer::start(ProducerConfig::new(&cluster.namesrv_addr, "t90-21"))
        .await
        .unwrap();
    for i in 0..40 {
        producer
            .send(Message::new(TOPIC, format!("m{i}")))
            .await
            .unwrap();
    }
    producer.shutdown().await;
    cluster
        .wait_commit_logs_identical(&[0, 1, 2], Duration::from_secs(30))
        .await;
    let victim = (cluster.node_index(&leader) + 1) % 3;
    // Let the follower apply everything, then stop it cleanly.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.stop(victim);
    let store = cluster.nodes[victim].store.clone();
    let file = store.join(format!("consumequeue/{TOPIC}/0/{:020}", 0));
    let original = std::fs::read(&file).unwrap();
    let count = (original.len() / 20) as u64;
    assert!(count >= 2, "queue 0 holds {count} entries");
    {
        let db = open_meta(&store);
        let app = db.cf_handle("app").unwrap();
        assert!(
            keys_with_prefix(&db, b"j") > 0,
            "today's journal holds the sends"
        );
        db.delete_range_cf(app, b"j", b"k").unwrap();
        let mut record = 0u64.to_be_bytes().to_vec();
        record.extend_from_slice(&original);
        db.put_cf(app, legacy_key(0, count), record).unwrap();
        db.flush_cf(app).unwrap();
    }
    std::fs::write(&file, vec![0u8; original.len()]).unwrap();

    cluster.start_node(victim);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&cluster.nodes[victim].log)
        .unwrap()
        .contains("ConsumeQueue entries written again from the journal")
    {
        assert!(
            Instant::now() < deadline,
            "the node did not restore its queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::read(&file).unwrap(), original, "entries restored");
    // The first sync (a second after start) deletes the old record.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.stop(victim);
    let db = open_meta(&store);
    assert_eq!(keys_with_prefix(&db, b"J"), 0, "the old journal is deleted");
    drop(db);
    assert_eq!(std::fs::read(&file).unwrap(), original);
}
