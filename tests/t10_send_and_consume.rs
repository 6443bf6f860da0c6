//! Proves a push consumer group of two members consumes every one of 10k messages sent
//! over several topics and queues exactly once, each queue owned by one member at a
//! time, in queue order: real name server and three broker processes, the Rust client.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{ConsumeStatus, Message, Producer, ProducerConfig, PushConsumer, PushConsumerConfig};

const TOPICS: [&str; 3] = ["OrdersA", "OrdersB", "OrdersC"];
const MESSAGES: usize = 10_000;

#[derive(Debug, Clone)]
struct Seen {
    member: usize,
    topic: String,
    queue_id: i32,
    queue_offset: i64,
    body: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_members_consume_everything_exactly_once_in_queue_order() {
    let cluster = common::Cluster::start("");
    cluster.wait_ready(Duration::from_secs(30)).await;
    let producer = Producer::start(ProducerConfig::new(&cluster.namesrv_addr, "t10-producers"))
        .await
        .unwrap();
    // Create the topics before the consumers subscribe, and send nothing until the two
    // members have split the queues: messages caught in a rebalance hand-off may be
    // delivered twice (at least once, as in RocketMQ), which is not what this proves.
    for topic in TOPICS {
        client::admin::create_topic(&cluster.namesrv(), topic, 4, Duration::from_secs(5))
            .await
            .unwrap();
    }
    for topic in TOPICS {
        cluster.wait_routed(topic, Duration::from_secs(10)).await;
    }

    let seen: Arc<Mutex<Vec<Seen>>> = Arc::new(Mutex::new(Vec::new()));
    let mut consumers = Vec::new();
    for member in 0..2 {
        let mut config = PushConsumerConfig::new(&cluster.namesrv_addr, "t10-group");
        config.client.instance_name = Some(format!("member{member}"));
        config.consume_message_batch_max_size = 8;
        let mut consumer = PushConsumer::new(config);
        for topic in TOPICS {
            consumer.subscribe(topic, "*").unwrap();
        }
        let seen = seen.clone();
        consumer.register_message_listener(move |msgs| {
            let mut seen = seen.lock().unwrap();
            for m in msgs {
                seen.push(Seen {
                    member,
                    topic: m.topic.clone(),
                    queue_id: m.queue_id,
                    queue_offset: m.queue_offset,
                    body: String::from_utf8_lossy(&m.body).to_string(),
                });
            }
            ConsumeStatus::ConsumeSuccess
        });
        consumer.start().await.unwrap();
        consumers.push(consumer);
    }
    // Wait until the two members split the queues between them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a: HashSet<_> = consumers[0].owned_queues().into_iter().collect();
        let b: HashSet<_> = consumers[1].owned_queues().into_iter().collect();
        if !a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && a.len() + b.len() == 12 {
            break;
        }
        assert!(Instant::now() < deadline, "no stable split: {a:?} / {b:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 10k messages from 32 concurrent senders.
    let producer = Arc::new(producer);
    let started = Instant::now();
    let mut senders = Vec::new();
    for task in 0..32 {
        let producer = producer.clone();
        senders.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for i in (task..MESSAGES).step_by(32) {
                let topic = TOPICS[i % TOPICS.len()];
                let body = format!("{topic}-{i}");
                let r = producer
                    .send(Message::new(topic, body.clone()))
                    .await
                    .unwrap();
                sent.push((body, r.queue.queue_id, r.queue_offset));
            }
            sent
        }));
    }
    let mut sent = HashMap::new();
    for s in senders {
        for (body, queue_id, offset) in s.await.unwrap() {
            sent.insert(body, (queue_id, offset));
        }
    }
    let send_secs = started.elapsed().as_secs_f64();
    println!(
        "sent {MESSAGES} messages in {send_secs:.2} s ({:.0} msg/s)",
        MESSAGES as f64 / send_secs
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = seen.lock().unwrap().len();
        if n >= MESSAGES {
            break;
        }
        assert!(Instant::now() < deadline, "consumed only {n} of {MESSAGES}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for mut c in consumers {
        c.shutdown().await;
    }
    producer.shutdown().await;

    let seen = seen.lock().unwrap().clone();
    // Exactly once per group.
    let mut count: HashMap<&str, usize> = HashMap::new();
    for s in &seen {
        *count.entry(&s.body).or_default() += 1;
    }
    let dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.is_empty(),
        "consumed more than once: {:?}",
        &dups[..dups.len().min(10)]
    );
    for (body, (queue_id, offset)) in &sent {
        assert!(
            count.contains_key(body.as_str()),
            "{body} (queue {queue_id} offset {offset}) never consumed"
        );
    }
    // Each queue consumed by one member, offsets strictly increasing in consumption order,
    // and each message where its send said it was.
    let mut per_queue: BTreeMap<(String, i32), Vec<&Seen>> = BTreeMap::new();
    for s in &seen {
        per_queue
            .entry((s.topic.clone(), s.queue_id))
            .or_default()
            .push(s);
        if let Some((q, o)) = sent.get(&s.body) {
            assert_eq!((s.queue_id, s.queue_offset), (*q, *o), "{}", s.body);
        }
    }
    for ((topic, queue_id), list) in &per_queue {
        let members: HashSet<usize> = list.iter().map(|s| s.member).collect();
        assert_eq!(
            members.len(),
            1,
            "{topic}:{queue_id} consumed by {members:?}"
        );
        for pair in list.windows(2) {
            assert!(
                pair[0].queue_offset < pair[1].queue_offset,
                "{topic}:{queue_id}: {} then {}",
                pair[0].queue_offset,
                pair[1].queue_offset
            );
        }
    }
}
