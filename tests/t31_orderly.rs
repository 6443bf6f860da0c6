//! Proves ordered consumption with real processes:
//! - queue locks (LOCK_BATCH_MQ / UNLOCK_BATCH_MQ) are one table through Raft: a lock held
//!   on the old leader is still held on the new one after a SIGKILL, and after every node
//!   restarts; it is freed by its holder's unlock or by expiry, never by a failover;
//! - two orderly consumers of one group never process the same queue at the same time,
//!   across a leader SIGKILL, while a third client trying to lock every queue after the
//!   failover gets none; each queue is processed in order (a suspended message is retried
//!   before anything after it), and a message suspended past `max_reconsume_times` goes to
//!   the dead-letter topic while its queue moves on.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{
    ConsumeFromWhere, ConsumeOrderlyStatus, Message, MessageExt, MessageQueue, Producer,
    ProducerConfig, PushConsumer, PushConsumerConfig,
};
use remoting::queue_lock::{LockBatchRequestBody, LockBatchResponseBody, MessageQueueData};
use remoting::route::{from_json, to_json};
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};

const TOPIC: &str = "Ordered";
/// The group of the lock-table test.
const G: &str = "orderly-g";
/// The group of the consumer test.
const CONSUMERS: &str = "orderly-consumers";

fn mq(queue_id: i32) -> MessageQueueData {
    MessageQueueData {
        topic: TOPIC.into(),
        broker_name: common::GROUP.into(),
        queue_id,
    }
}

/// Sends LOCK_BATCH_MQ (or UNLOCK_BATCH_MQ) straight to `addr`; the queue ids granted
/// (`None` when the node did not answer SUCCESS).
async fn lock_request(
    addr: &str,
    code: RequestCode,
    group: &str,
    client_id: &str,
    queue_ids: &[i32],
) -> Option<BTreeSet<i32>> {
    let conn = Connection::connect(
        addr,
        &ConnectionConfig::default(),
        Arc::new(remoting::connection::NoRequests),
    )
    .await
    .ok()?;
    let body = LockBatchRequestBody {
        consumer_group: group.into(),
        client_id: client_id.into(),
        only_this_broker: false,
        mq_set: queue_ids.iter().map(|&q| mq(q)).collect(),
    };
    let request = RemotingCommand::bare_request(code).with_body(to_json(&body));
    let response = conn.request(request, Duration::from_secs(5)).await.ok()?;
    if response.code != ResponseCode::SUCCESS as i32 {
        eprintln!(
            "{code:?} at {addr}: {} {:?}",
            response.code, response.remark
        );
        return None;
    }
    if code == RequestCode::UNLOCK_BATCH_MQ {
        return Some(BTreeSet::new());
    }
    let answer: LockBatchResponseBody = from_json("lock answer", &response.body).unwrap();
    Some(answer.lock_ok_mq_set.iter().map(|q| q.queue_id).collect())
}

/// Locks on the routed leader, retrying while a new leader settles.
async fn lock_on_leader(
    cluster: &common::Cluster,
    code: RequestCode,
    group: &str,
    client_id: &str,
    queue_ids: &[i32],
) -> BTreeSet<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leader = cluster.wait_for_leader(None, Duration::from_secs(20)).await;
        if let Some(granted) = lock_request(&leader, code, group, client_id, queue_ids).await {
            return granted;
        }
        assert!(Instant::now() < deadline, "no leader took {code:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn set(ids: &[i32]) -> BTreeSet<i32> {
    ids.iter().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_locks_are_one_table_through_raft_across_failover_and_restart() {
    let mut cluster = common::Cluster::start("rebalanceLockMaxLiveTime=20000");
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let (x, y) = ("127.0.0.1@x", "127.0.0.1@y");
    let lock = RequestCode::LOCK_BATCH_MQ;

    assert_eq!(
        lock_on_leader(&cluster, lock, G, x, &[0, 1]).await,
        set(&[0, 1])
    );
    assert_eq!(
        lock_on_leader(&cluster, lock, G, y, &[0, 1, 2]).await,
        set(&[2])
    );
    let locked_at = Instant::now();
    // Hostile bodies get a clear error and change nothing: a NUL in the group, more
    // queues than one request may name, a body that is not JSON.
    let conn = Connection::connect(
        &leader,
        &ConnectionConfig::default(),
        Arc::new(remoting::connection::NoRequests),
    )
    .await
    .unwrap();
    let nul = LockBatchRequestBody {
        consumer_group: "g\0x".into(),
        client_id: y.into(),
        only_this_broker: false,
        mq_set: vec![mq(0)],
    };
    let many = LockBatchRequestBody {
        consumer_group: G.into(),
        mq_set: (0..5000).map(mq).collect(),
        ..nul.clone()
    };
    for body in [to_json(&nul), to_json(&many), b"{not json".to_vec()] {
        let request = RemotingCommand::bare_request(lock).with_body(body);
        let response = conn.request(request, Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            response.code,
            ResponseCode::SYSTEM_ERROR as i32,
            "{response:?}"
        );
        assert!(response.remark.is_some_and(|r| !r.is_empty()));
    }
    assert_eq!(
        lock_on_leader(&cluster, lock, G, y, &[0, 1]).await,
        set(&[])
    );
    // A follower refuses: locks are decided through the log.
    let follower = cluster.nodes.iter().find(|n| n.addr != leader).unwrap();
    assert_eq!(lock_request(&follower.addr, lock, G, y, &[0]).await, None);

    cluster.kill(cluster.node_index(&leader));
    let new_leader = cluster
        .wait_for_leader(Some(&leader), Duration::from_secs(20))
        .await;
    eprintln!("failover {leader} -> {new_leader}");
    assert!(
        locked_at.elapsed() < Duration::from_secs(15),
        "the failover took too long for the lifetime"
    );
    assert_eq!(
        lock_on_leader(&cluster, lock, G, y, &[0, 1]).await,
        set(&[]),
        "the new leader must know x's locks"
    );
    assert_eq!(
        lock_on_leader(&cluster, lock, G, x, &[0, 1]).await,
        set(&[0, 1])
    );
    lock_on_leader(&cluster, RequestCode::UNLOCK_BATCH_MQ, G, y, &[0]).await;
    assert_eq!(
        lock_on_leader(&cluster, lock, G, y, &[0]).await,
        set(&[]),
        "an unlock by a client that does not hold the queue frees nothing"
    );
    lock_on_leader(&cluster, RequestCode::UNLOCK_BATCH_MQ, G, x, &[0]).await;
    assert_eq!(lock_on_leader(&cluster, lock, G, y, &[0]).await, set(&[0]));

    // Every node stops at once and starts again: the table is in each node's store.
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.start_node(i);
    }
    cluster.wait_ready(Duration::from_secs(30)).await;
    assert_eq!(lock_on_leader(&cluster, lock, G, y, &[1]).await, set(&[]));
    // x renews queue 1 at some time between these two instants.
    let renewing_at = Instant::now();
    assert_eq!(lock_on_leader(&cluster, lock, G, x, &[1]).await, set(&[1]));
    let renewed_at = Instant::now();
    assert!(renewed_at - renewing_at < Duration::from_secs(8));

    // Expiry: 20 s after x's last renewal of queue 1, y may take it.
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(renewing_at.elapsed())).await;
    assert_eq!(
        lock_on_leader(&cluster, lock, G, y, &[1]).await,
        set(&[]),
        "{:?} after renewal the lock still holds",
        renewing_at.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(21).saturating_sub(renewed_at.elapsed())).await;
    assert_eq!(lock_on_leader(&cluster, lock, G, y, &[1]).await, set(&[1]));
}

/// One listener call: who, which queue offset, when, and what it answered.
#[derive(Debug, Clone)]
struct Call {
    consumer: &'static str,
    queue_id: i32,
    offset: i64,
    start: Instant,
    end: Instant,
    suspended: bool,
}

const PER_QUEUE: i64 = 120;
const QUEUES: i32 = 4;
/// The message of each queue at this offset is always suspended: it must reach the
/// dead-letter topic and its queue must move on.
const POISON: i64 = 77;
const MAX_RECONSUME: i32 = 2;

fn orderly_consumer(
    namesrv: &str,
    name: &'static str,
    calls: Arc<Mutex<Vec<Call>>>,
    suspended_once: Arc<Mutex<BTreeSet<(i32, i64)>>>,
) -> PushConsumer {
    let mut config = PushConsumerConfig::new(namesrv, CONSUMERS);
    config.consume_from_where = ConsumeFromWhere::FirstOffset;
    config.rebalance_interval_ms = 1_000;
    config.suspend_current_queue_time_ms = 200;
    config.max_reconsume_times = MAX_RECONSUME;
    config.persist_consumer_offset_interval_ms = 500;
    let mut consumer = PushConsumer::new(config);
    consumer.subscribe(TOPIC, "*").unwrap();
    consumer.register_orderly_listener(move |msgs: &[MessageExt]| {
        let start = Instant::now();
        let m = &msgs[0];
        std::thread::sleep(Duration::from_millis(3));
        let suspend = m.queue_offset == POISON
            || (m.queue_offset % 25 == 0
                && suspended_once
                    .lock()
                    .unwrap()
                    .insert((m.queue_id, m.queue_offset)));
        calls.lock().unwrap().push(Call {
            consumer: name,
            queue_id: m.queue_id,
            offset: m.queue_offset,
            start,
            end: Instant::now(),
            suspended: suspend,
        });
        if suspend {
            ConsumeOrderlyStatus::SuspendCurrentQueueAMoment
        } else {
            ConsumeOrderlyStatus::Success
        }
    });
    consumer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_orderly_consumers_never_overlap_and_keep_order_across_a_leader_kill() {
    let mut cluster = common::Cluster::start("");
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    client::admin::create_topic(&cluster.namesrv(), TOPIC, QUEUES, Duration::from_secs(5))
        .await
        .unwrap();
    let producer = Producer::start(ProducerConfig::new(&cluster.namesrv_addr, "orderly-p"))
        .await
        .unwrap();
    // Half the messages before the consumers start, half while they run.
    let send = |producer: &Producer, from: i64, to: i64| {
        let producer = producer.clone();
        async move {
            for seq in from..to {
                for q in 0..QUEUES {
                    let queue = MessageQueue::new(TOPIC, common::GROUP, q);
                    let msg = Message::new(TOPIC, format!("{q}:{seq}").into_bytes());
                    let mut tries = 0;
                    while let Err(e) = producer.send_to_queue(msg.clone(), &queue).await {
                        tries += 1;
                        assert!(tries < 100, "send {q}:{seq}: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    send(&producer, 0, PER_QUEUE / 2).await;
    let sender = tokio::spawn(send(&producer, PER_QUEUE / 2, PER_QUEUE));

    let calls = Arc::new(Mutex::new(Vec::new()));
    let once = Arc::new(Mutex::new(BTreeSet::new()));
    let mut a = orderly_consumer(&cluster.namesrv_addr, "a", calls.clone(), once.clone());
    a.start().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut b = orderly_consumer(&cluster.namesrv_addr, "b", calls.clone(), once.clone());
    b.start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.owned_queues().iter().filter(|q| q.topic == TOPIC).count() != 2
        || b.owned_queues().iter().filter(|q| q.topic == TOPIC).count() != 2
    {
        assert!(Instant::now() < deadline, "the queues were never split");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    cluster.kill(cluster.node_index(&leader));
    let new_leader = cluster
        .wait_for_leader(Some(&leader), Duration::from_secs(20))
        .await;
    eprintln!("failover {leader} -> {new_leader}");
    let rogue = lock_on_leader(
        &cluster,
        RequestCode::LOCK_BATCH_MQ,
        CONSUMERS,
        "127.0.0.1@rogue",
        &[0, 1, 2, 3],
    )
    .await;
    assert!(
        rogue.is_empty(),
        "after the failover another client got queues the consumers hold: {rogue:?}"
    );

    sender.await.unwrap();
    // Every message is taken (or, the poison ones, dead-lettered) by some consumer.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let done: BTreeSet<(i32, i64)> = calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| !c.suspended)
            .map(|c| (c.queue_id, c.offset))
            .collect();
        let missing = (0..QUEUES)
            .flat_map(|q| (0..PER_QUEUE).map(move |o| (q, o)))
            .filter(|k| k.1 != POISON && !done.contains(k))
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} messages never consumed; logs in {}",
            cluster.path().display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
    producer.shutdown().await;

    let calls = calls.lock().unwrap().clone();
    let mut by_queue: BTreeMap<i32, Vec<Call>> = BTreeMap::new();
    for c in calls {
        by_queue.entry(c.queue_id).or_default().push(c);
    }
    for (queue_id, mut calls) in by_queue {
        calls.sort_by_key(|c| c.start);
        // No two consumers at once on one queue.
        for (i, c) in calls.iter().enumerate() {
            for d in &calls[i + 1..] {
                if d.consumer != c.consumer {
                    assert!(
                        d.start >= c.end,
                        "queue {queue_id}: {} took offset {} while {} was still on offset {}",
                        d.consumer,
                        d.offset,
                        c.consumer,
                        c.offset
                    );
                }
            }
        }
        // In order: within one consumer's run, the next call is the same offset after a
        // suspension (or the next one once the poison message is dead-lettered), else the
        // next offset. A new owner may start over from the committed offset.
        let mut poison_tries = 0;
        for pair in calls.windows(2) {
            let (c, d) = (&pair[0], &pair[1]);
            if c.offset == POISON {
                poison_tries += 1;
            }
            if d.consumer != c.consumer {
                assert!(
                    d.offset <= c.offset + 1,
                    "queue {queue_id}: {} started at {} after {} stopped at {}",
                    d.consumer,
                    d.offset,
                    c.consumer,
                    c.offset
                );
                continue;
            }
            let expected = if c.suspended && c.offset != POISON {
                vec![c.offset]
            } else if c.suspended {
                vec![c.offset, c.offset + 1]
            } else {
                vec![c.offset + 1]
            };
            assert!(
                expected.contains(&d.offset),
                "queue {queue_id}: {} went from offset {} (suspended: {}) to {}",
                c.consumer,
                c.offset,
                c.suspended,
                d.offset
            );
            if c.suspended && d.offset == c.offset {
                assert!(
                    d.start.duration_since(c.end) >= Duration::from_millis(150),
                    "queue {queue_id}: offset {} retried without the suspend pause",
                    c.offset
                );
            }
        }
        assert!(
            poison_tries > MAX_RECONSUME as usize,
            "queue {queue_id}: the poison message was tried {poison_tries} times"
        );
    }
    let dead =
        client::admin::dead_letters(&client::ClientConfig::new(&cluster.namesrv_addr), CONSUMERS)
            .await
            .unwrap();
    let dead: BTreeSet<String> = dead
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    let expected: BTreeSet<String> = (0..QUEUES).map(|q| format!("{q}:{POISON}")).collect();
    assert!(
        expected.is_subset(&dead),
        "dead letters {dead:?}, expected {expected:?}"
    );
}
