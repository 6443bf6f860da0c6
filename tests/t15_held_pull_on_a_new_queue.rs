//! Proves a long-polling pull held on a queue that has never been written (its
//! ConsumeQueue does not exist yet, as for every queue of a new topic) is answered as soon
//! as the first message lands, not at the next look of a polling loop: real name server
//! and three broker processes, the Rust client.
//!
//! Until this was fixed the broker looked again every 100 ms, so the first messages of a
//! new topic's queues waited 0-100 ms (the 90 ms p999 of the first `bench e2e` run on a
//! fresh cluster). The first messages are sent at eight phases spread over 100 ms, so
//! with that polling most waits would be 30 ms or more; the test allows one (a scheduling
//! hiccup), which polling would pass by chance about once in a thousand runs.

mod common;

use std::time::{Duration, Instant};

use client::{Message, Producer, ProducerConfig, PullConsumer, PullConsumerConfig, PullResult};

const TOPIC: &str = "HeldOnNewQueue";
const QUEUES: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_held_on_a_new_queue_is_answered_when_the_first_message_lands() {
    let cluster = common::Cluster::start("");
    cluster.wait_ready(Duration::from_secs(30)).await;
    client::admin::create_topic(
        &cluster.namesrv(),
        TOPIC,
        QUEUES as i32,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster
        .namesrv()
        .topic_route(TOPIC)
        .await
        .unwrap()
        .is_none()
    {
        assert!(Instant::now() < deadline, "{TOPIC} never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let producer = Producer::start(ProducerConfig::new(&cluster.namesrv_addr, "t15-producers"))
        .await
        .unwrap();
    let consumer = PullConsumer::start(PullConsumerConfig::new(
        &cluster.namesrv_addr,
        "t15-consumers",
    ))
    .await
    .unwrap();
    let queues = consumer.fetch_queues(TOPIC).await.unwrap();
    assert_eq!(queues.len(), QUEUES);

    let mut waits = Vec::new();
    for (k, queue) in queues.iter().enumerate() {
        // Hold a pull on the empty queue, give it time to reach the broker and wait there,
        // then write the queue's first message, each queue at another phase of 100 ms.
        let pull = {
            let (consumer, queue) = (consumer.clone(), queue.clone());
            tokio::spawn(async move {
                let result = consumer
                    .pull(&queue, 0, 32, "*", Duration::from_secs(5))
                    .await;
                (result, Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(300 + (k as u64 * 37) % 100)).await;
        let body = format!("first of queue {}", queue.queue_id);
        producer
            .send_to_queue(Message::new(TOPIC, body.clone()), queue)
            .await
            .unwrap();
        let acked = Instant::now();
        let (result, answered) = pull.await.unwrap();
        match result.unwrap() {
            PullResult::Found { messages, .. } => {
                assert_eq!(messages.len(), 1);
                assert_eq!(messages[0].body, body.as_bytes());
            }
            other => panic!("queue {}: the held pull answered {other:?}", queue.queue_id),
        }
        waits.push(answered.saturating_duration_since(acked));
    }
    let slow = waits
        .iter()
        .filter(|w| **w >= Duration::from_millis(30))
        .count();
    assert!(
        slow <= 1,
        "held pulls answered {waits:?} after the first message was acknowledged"
    );
    producer.shutdown().await;
    consumer.shutdown().await;
}
