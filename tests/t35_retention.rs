//! Proves retention with real processes: a group with 1 MiB segments and 3 s of retention
//! (`fileReservedTimeSeconds=3`, `deleteWhen=*`) under paced load for 45 s keeps every
//! node's commitlog directory under a bound far below what was sent; a consumer group left
//! far behind is moved to the new minimum (PULL_OFFSET_MOVED, GET_MIN_OFFSET > 0) and then
//! receives every message from there on; replicas stay byte-identical from the largest first
//! kept segment; a pending timer keeps its segment until it is delivered, then retention
//! passes it; the purge and the queue minimums survive a restart of every node; and with
//! `deleteWhen` set to another hour nothing expired goes until `rocketraft admin
//! delete-expired-commitlog` asks for a pass. The disk ratios stay at the test cluster's
//! 100%, so how full the shared test disk is does not count.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use client::{
    ConsumeFromWhere, ConsumeStatus, Message, MessageExt, Producer, ProducerConfig, PushConsumer,
    PushConsumerConfig,
};
use common::{first_segment, segment_files, Cluster};
use remoting::header::{
    OffsetResponseHeader, PullMessageRequestHeader, PullMessageResponseHeader,
    QueueOffsetRequestHeader,
};
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};

const TOPIC: &str = "RetainT";
const QUEUES: i32 = 4;
const SEGMENT_BYTES: u64 = 1 << 20;
/// What a node's commitlog directory may hold under load: 3 s of retention, a 1 s pass,
/// the purge, and the segments written ahead, at about 1-2 MB/s.
const DIR_BOUND_BYTES: u64 = 16 << 20;
const BODY_BYTES: usize = 2048;

fn config(delete_when: &str) -> String {
    format!(
        "mappedFileSizeCommitLog={SEGMENT_BYTES}\nfileReservedTimeSeconds=3\ndeleteWhen={delete_when}\n\
         cleanResourceInterval=1000\nmappedFileSizeConsumeQueue=20000\nflushDiskType=ASYNC_FLUSH"
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn dir_bytes(store: &Path) -> u64 {
    segment_files(store)
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

async fn connect(addr: &str) -> Connection {
    Connection::connect(
        addr,
        &ConnectionConfig::default(),
        Arc::new(remoting::connection::NoRequests),
    )
    .await
    .unwrap()
}

/// GET_MIN_OFFSET and GET_MAX_OFFSET of every queue from the node at `addr`.
async fn bounds(addr: &str) -> BTreeMap<i32, (i64, i64)> {
    let conn = connect(addr).await;
    let mut out = BTreeMap::new();
    for queue_id in 0..QUEUES {
        let header = QueueOffsetRequestHeader {
            topic: TOPIC.into(),
            queue_id,
        };
        let mut ends = [0i64; 2];
        for (i, code) in [RequestCode::GET_MIN_OFFSET, RequestCode::GET_MAX_OFFSET]
            .into_iter()
            .enumerate()
        {
            let r = conn
                .request(
                    RemotingCommand::request(code, &header),
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
            assert_eq!(r.response_code(), Some(ResponseCode::SUCCESS), "{r:?}");
            ends[i] = r.header::<OffsetResponseHeader>().unwrap().offset;
        }
        out.insert(queue_id, (ends[0], ends[1]));
    }
    conn.close();
    out
}

/// A pull at queue offset 0: (response code, nextBeginOffset).
async fn pull_at_zero(addr: &str, queue_id: i32) -> (i32, i64) {
    let conn = connect(addr).await;
    let request = RemotingCommand::request(
        RequestCode::PULL_MESSAGE,
        &PullMessageRequestHeader {
            consumer_group: "direct-checker".into(),
            topic: TOPIC.into(),
            queue_id,
            queue_offset: 0,
            max_msg_nums: 8,
            sys_flag: 4,
            subscription: Some("*".into()),
            ..Default::default()
        },
    );
    let r = conn.request(request, Duration::from_secs(5)).await.unwrap();
    conn.close();
    let h: PullMessageResponseHeader = r.header().unwrap();
    (r.code, h.next_begin_offset)
}

/// Sends `BODY_BYTES` messages from four tasks, about 1000 a second in all, until `stop`.
fn start_load(
    producer: Arc<Producer>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|task| {
            let (producer, stop, sent) = (producer.clone(), stop.clone(), sent.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(4));
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let body = format!("{task}-{n}-").into_bytes();
                    let mut body = body.clone();
                    body.resize(BODY_BYTES, b'x');
                    if producer.send(Message::new(TOPIC, body)).await.is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
            })
        })
        .collect()
}

/// Queue offsets each push consumer delivery carried, per queue (queue -1: the timer's).
type Received = Arc<Mutex<BTreeMap<i32, Vec<i64>>>>;

async fn push_consumer(namesrv: &str, group: &str) -> (PushConsumer, Received) {
    let mut config = PushConsumerConfig::new(namesrv, group);
    config.consume_from_where = ConsumeFromWhere::FirstOffset;
    config.client.poll_name_server_interval_ms = 500;
    config.rebalance_interval_ms = 500;
    let mut c = PushConsumer::new(config);
    c.subscribe(TOPIC, "*").unwrap();
    let received: Received = Arc::default();
    let record = received.clone();
    c.register_message_listener(move |msgs: &[MessageExt]| {
        let mut r = record.lock().unwrap();
        for m in msgs {
            r.entry(m.queue_id).or_default().push(m.queue_offset);
            if &m.body[..] == b"timer" {
                r.entry(-1).or_default().push(m.queue_offset);
            }
        }
        ConsumeStatus::ConsumeSuccess
    });
    c.start().await.unwrap();
    (c, received)
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until no node's first segment has moved for `quiet`.
async fn wait_settled(cluster: &Cluster, quiet: Duration, timeout: Duration) -> Vec<u64> {
    let deadline = Instant::now() + timeout;
    let firsts = || -> Vec<u64> {
        cluster
            .nodes
            .iter()
            .map(|n| first_segment(&n.store))
            .collect()
    };
    let mut last = firsts();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = firsts();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "retention never settled: {last:?}"
        );
    }
}

/// Every replica's CommitLog is byte-identical from the largest first kept segment (waits
/// up to 15 s for the last entries, e.g. offset commits, to reach every node).
async fn assert_identical(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (from, logs) = cluster.kept_logs();
        assert!(!logs[0].is_empty());
        let differing = (1..logs.len()).find(|i| logs[*i] != logs[0]);
        let Some(i) = differing else {
            return;
        };
        assert!(
            Instant::now() < deadline,
            "node n{i}'s CommitLog differs from n0's from position {from} ({} vs {} bytes)",
            logs[i].len(),
            logs[0].len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The local hour, as the broker reads `deleteWhen`.
fn local_hour() -> i32 {
    let now = (now_ms() / 1000) as libc::time_t;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&now, &mut tm) };
    tm.tm_hour
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_bounds_disk_moves_consumers_and_survives_restart() {
    let mut cluster = Cluster::start(&config("*"));
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    client::admin::create_topic(&cluster.namesrv(), TOPIC, QUEUES, Duration::from_secs(5))
        .await
        .unwrap();
    let producer = Arc::new(
        Producer::start(ProducerConfig::new(
            &cluster.namesrv_addr,
            "retain-producer",
        ))
        .await
        .unwrap(),
    );

    // A group that consumes the first messages and goes away, far behind what stays.
    for i in 0..200 {
        producer
            .send(Message::new(TOPIC, format!("early-{i}")))
            .await
            .unwrap();
    }
    let (mut slow, early) = push_consumer(&cluster.namesrv_addr, "slow-group").await;
    wait_until(
        "the slow group reads the first messages",
        Duration::from_secs(30),
        || early.lock().unwrap().values().map(Vec::len).sum::<usize>() >= 200,
    )
    .await;
    slow.shutdown().await;

    // Load for 45 s: every node's commitlog directory stays bounded.
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let load = start_load(producer.clone(), stop.clone(), sent.clone());
    let started = Instant::now();
    let mut largest = 0u64;
    while started.elapsed() < Duration::from_secs(45) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for node in &cluster.nodes {
            let bytes = dir_bytes(&node.store);
            largest = largest.max(bytes);
            assert!(
                bytes <= DIR_BOUND_BYTES,
                "{}'s commitlog holds {bytes} bytes after {:?} (bound {DIR_BOUND_BYTES}); logs in {}",
                node.name,
                started.elapsed(),
                cluster.path().display()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let sent_bytes = sent.load(Ordering::Relaxed) * BODY_BYTES as u64;
    println!("sent {sent_bytes} bytes in 45 s; largest commitlog directory {largest} bytes");
    assert!(
        sent_bytes >= 2 * DIR_BOUND_BYTES,
        "the load ({sent_bytes} bytes) was too small to prove the bound"
    );

    // Retention settles with only the segment being written (and the next) left.
    wait_settled(&cluster, Duration::from_secs(4), Duration::from_secs(30)).await;
    let before = bounds(&leader).await;
    for (queue_id, (min, max)) in &before {
        assert!(
            *min > 0 && min <= max,
            "queue {queue_id}: min {min} max {max}"
        );
        let (code, next) = pull_at_zero(&leader, *queue_id).await;
        assert_eq!(
            code,
            ResponseCode::PULL_OFFSET_MOVED as i32,
            "queue {queue_id}"
        );
        assert_eq!(next, *min, "queue {queue_id}: moved to the minimum");
    }
    // The slow group comes back: moved to each minimum, it receives everything from there.
    let (mut slow, got) = push_consumer(&cluster.namesrv_addr, "slow-group").await;
    let expected: usize = before.values().map(|(min, max)| (max - min) as usize).sum();
    wait_until("the slow group catches up", Duration::from_secs(60), || {
        got.lock().unwrap().values().map(Vec::len).sum::<usize>() >= expected
    })
    .await;
    slow.shutdown().await;
    for (queue_id, (min, max)) in &before {
        let mut offsets = got
            .lock()
            .unwrap()
            .get(queue_id)
            .cloned()
            .unwrap_or_default();
        offsets.sort();
        offsets.dedup();
        assert_eq!(
            offsets,
            (*min..*max).collect::<Vec<_>>(),
            "queue {queue_id}"
        );
    }
    assert_identical(&cluster).await;

    // A timer pending far ahead keeps its segment; once delivered, retention passes it.
    let (mut watch, watched) = push_consumer(&cluster.namesrv_addr, "timer-watch").await;
    let due = now_ms() + 15_000;
    let timer = producer
        .send(Message::new(TOPIC, "timer").with_deliver_time_ms(due))
        .await
        .unwrap();
    let timer_offset = u64::from_str_radix(&timer.offset_msg_id[16..], 16).unwrap();
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let load = start_load(producer.clone(), stop.clone(), sent.clone());
    while now_ms() < due - 1_000 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for node in &cluster.nodes {
            let first = first_segment(&node.store);
            assert!(
                first <= timer_offset,
                "{} purged past a pending timer at {timer_offset} (first segment {first})",
                node.name
            );
        }
    }
    let timer_segment = timer_offset - timer_offset % SEGMENT_BYTES;
    let written = segment_files(&cluster.nodes[0].store).last().unwrap().0;
    assert!(
        written >= timer_segment + 4 * SEGMENT_BYTES,
        "segments after the timer's had time to expire (timer in {timer_segment}, writing {written})"
    );
    wait_until(
        "retention passes the delivered timer",
        Duration::from_secs(30),
        || {
            cluster
                .nodes
                .iter()
                .all(|n| first_segment(&n.store) > timer_segment)
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    wait_until(
        "the timer reaches its consumer",
        Duration::from_secs(30),
        || watched.lock().unwrap().contains_key(&-1),
    )
    .await;
    watch.shutdown().await;

    // Restart every node with deleteWhen at another hour: the purge and the minimums stay.
    let firsts = wait_settled(&cluster, Duration::from_secs(4), Duration::from_secs(30)).await;
    let leader = cluster.wait_for_leader(None, Duration::from_secs(10)).await;
    let settled = bounds(&leader).await;
    let other_hour = format!("{:02}", (local_hour() + 12) % 24);
    for i in 0..3 {
        cluster.stop(i);
        let conf = std::fs::read_to_string(&cluster.nodes[i].conf).unwrap();
        std::fs::write(
            &cluster.nodes[i].conf,
            conf.replace("deleteWhen=*", &format!("deleteWhen={other_hour}")),
        )
        .unwrap();
    }
    for i in 0..3 {
        cluster.start_node(i);
    }
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    for (i, node) in cluster.nodes.iter().enumerate() {
        assert!(
            first_segment(&node.store) >= firsts[i],
            "{} un-purged",
            node.name
        );
    }
    let after = bounds(&leader).await;
    for (queue_id, (min, _)) in &after {
        assert_eq!(
            *min, settled[queue_id].0,
            "queue {queue_id}'s minimum after the restart"
        );
    }
    assert_identical(&cluster).await;

    // Not the hour: expired segments stay until an operator asks.
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let load = start_load(producer.clone(), stop.clone(), sent.clone());
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let held = cluster
        .nodes
        .iter()
        .map(|n| first_segment(&n.store))
        .collect::<Vec<_>>();
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (i, node) in cluster.nodes.iter().enumerate() {
        assert_eq!(
            first_segment(&node.store),
            held[i],
            "{} purged outside deleteWhen",
            node.name
        );
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args([
            "admin",
            "-n",
            &cluster.namesrv_addr,
            "delete-expired-commitlog",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the asked-for pass purges", Duration::from_secs(20), || {
        cluster
            .nodes
            .iter()
            .enumerate()
            .all(|(i, n)| first_segment(&n.store) > held[i])
    })
    .await;
    wait_settled(&cluster, Duration::from_secs(3), Duration::from_secs(30)).await;
    assert_identical(&cluster).await;
    producer.shutdown().await;
}
