//! The workload: producers sending unique values with sync, async and ordered sends
//! over several topics, a push consumer group and a pull consumer receiving
//! everything, orderly consumers of the ordered topic, and the final drain of every queue from offset 0. Every operation goes
//! into the history ([`crate::history`]).
//!
//! Values are `p<producer>-<seq>`, unique in a run. A sync send whose outcome is
//! unknown is retried once with the same value (attempt 2), as an application would;
//! that is how stored duplicates arise and how the checker tells them apart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use client::{
    ConsumeFromWhere, ConsumeOrderlyStatus, ConsumeStatus, LocalTransactionState, Message,
    MessageExt, MessageQueue, Producer, ProducerConfig, PullConsumer, PullConsumerConfig,
    PullResult, PushConsumer, PushConsumerConfig, TransactionProducer,
};
use tokio::task::{JoinHandle, JoinSet};

use crate::history::{Event, QueueRef, Recorder, SendKind};

/// Topics written with round-robin sync and async sends.
pub const ROUND_ROBIN_TOPICS: [&str; 2] = ["ChaosA", "ChaosB"];
/// The topic written with ordered sends by sharding key.
pub const ORDERED_TOPIC: &str = "ChaosOrdered";
/// The topic of timer messages, each due 100 ms to [`DELAY_MAX_MS`] after its send.
pub const DELAYED_TOPIC: &str = "ChaosDelayed";
/// The topic of transactional sends (committed or rolled back by
/// [`crate::checker::txn_decision`]).
pub const TXN_TOPIC: &str = "ChaosTxn";
/// The producer group of the transactional producer.
pub const TXN_GROUP: &str = "chaos-txn";
/// The longest the drain waits for committed transactions to reach the push consumer.
const TXN_SETTLE_MS: u64 = 30_000;
/// The longest delay of a timer message; the drain waits this long after the last send.
pub const DELAY_MAX_MS: u64 = 2_000;
/// The consumer group that fails chosen values of [`RETRY_TOPIC`] (see
/// [`crate::checker::failures_for`]) and gives them back for retry.
pub const RETRY_GROUP: &str = "chaos-retry";
/// The topic the retry consumer reads.
pub const RETRY_TOPIC: &str = ROUND_ROBIN_TOPICS[0];
/// How long the retry topic and DLQ may take to stop changing after the run.
const RETRY_SETTLE_MS: u64 = 60_000;
/// The consumer group of the orderly consumers of [`ORDERED_TOPIC`].
pub const ORDERLY_GROUP: &str = "chaos-orderly";
/// Every this many values of [`ORDERED_TOPIC`] (by sequence number), the orderly
/// consumer that gets it first suspends it once.
pub const ORDERLY_SUSPEND_EVERY: u64 = 50;
/// Sharding keys per ordered producer.
const KEYS_PER_ORDERED_PRODUCER: usize = 4;
/// Async sends one async producer keeps in flight.
const ASYNC_IN_FLIGHT_MAX: usize = 8;
/// Deadline of one send (retries inside the client included).
const SEND_TIMEOUT_MS: u64 = 3_000;
/// Pause between two sends of one producer, so a 2-core machine keeps up.
const SEND_PAUSE_MS: u64 = 5;
/// Attempts per value of a sync producer (the second only after an unknown outcome).
const ATTEMPTS_MAX: u32 = 2;
/// Messages per pull.
const PULL_BATCH: i32 = 32;
/// Long-poll time of the pull consumer.
const PULL_SUSPEND_MS: u64 = 1_000;
/// Longest a drain of one queue may take.
const DRAIN_QUEUE_MS: u64 = 60_000;

pub fn all_topics() -> Vec<&'static str> {
    let mut t = ROUND_ROBIN_TOPICS.to_vec();
    t.push(ORDERED_TOPIC);
    t.push(DELAYED_TOPIC);
    t.push(TXN_TOPIC);
    t
}

/// How many producers of each kind.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub sync_producers: usize,
    pub async_producers: usize,
    pub ordered_producers: usize,
    pub delayed_producers: usize,
    /// A consumer group that fails chosen messages a chosen number of times (needs the
    /// cluster's delay levels short: the chaos cluster's are 1 s).
    pub retry_consumer: bool,
    /// Orderly consumers of [`ORDERED_TOPIC`], one group, each its own client.
    pub orderly_consumers: usize,
    /// Transactional producers of [`TXN_TOPIC`] (needs short check-back settings: the
    /// chaos cluster's are 1 s).
    pub transactional_producers: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            sync_producers: 2,
            async_producers: 1,
            ordered_producers: 2,
            delayed_producers: 1,
            retry_consumer: true,
            orderly_consumers: 2,
            transactional_producers: 1,
        }
    }
}

fn queue_ref(m: &MessageExt) -> QueueRef {
    QueueRef {
        topic: m.topic.clone(),
        broker_name: m.broker_name.clone(),
        queue_id: m.queue_id,
    }
}

fn queue_ref_of(q: &MessageQueue) -> QueueRef {
    QueueRef {
        topic: q.topic.clone(),
        broker_name: q.broker_name.clone(),
        queue_id: q.queue_id,
    }
}

/// Per consumer, per queue: one past the highest offset received.
type Progress = Arc<Mutex<HashMap<String, HashMap<QueueRef, i64>>>>;

fn note_receipt(recorder: &Recorder, progress: &Progress, consumer: &str, m: &MessageExt) {
    let queue = queue_ref(m);
    let value = String::from_utf8_lossy(&m.body).to_string();
    // A delivered scheduled message names the timer it came from: `<due ms>:<offset>`.
    let due_ms = m
        .property("__TIMER_ORIGIN")
        .and_then(|o| o.split(':').next()?.parse().ok());
    recorder.record(|t_us| Event::Recv {
        t_us,
        consumer: consumer.to_string(),
        queue: queue.clone(),
        queue_offset: m.queue_offset,
        value,
        due_ms,
        stored_ms: due_ms.map(|_| m.store_timestamp),
    });
    note_progress(progress, consumer, m);
}

/// Notes that `consumer` has received `m`'s queue up to its offset.
fn note_progress(progress: &Progress, consumer: &str, m: &MessageExt) {
    let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
    let next = p
        .entry(consumer.to_string())
        .or_default()
        .entry(queue_ref(m))
        .or_insert(0);
    *next = (*next).max(m.queue_offset + 1);
}

/// A running workload.
pub struct Workload {
    /// Prefix of every value this run sends.
    tag: String,
    recorder: Arc<Recorder>,
    namesrv_addr: String,
    producing: Arc<AtomicBool>,
    pulling: Arc<AtomicBool>,
    /// `t_us` of the latest acknowledgement.
    pub last_ack_us: Arc<AtomicU64>,
    producers: Vec<JoinHandle<()>>,
    pullers: Vec<JoinHandle<()>>,
    push: Option<PushConsumer>,
    retry: Option<PushConsumer>,
    orderly: Vec<PushConsumer>,
    /// Transactional producers, kept until the consumers stop: they answer check-backs.
    txn_producers: Vec<TransactionProducer>,
    /// Acknowledged values of [`TXN_TOPIC`] whose transaction commits, and the values of
    /// that topic the push consumer received.
    txn_committed: Arc<Mutex<std::collections::HashSet<String>>>,
    txn_received: Arc<Mutex<std::collections::HashSet<String>>>,
    progress: Progress,
}

/// Creates the workload's topics on every group (bounded retries).
pub async fn create_topics(namesrv_addr: &str, queues: i32) -> anyhow::Result<()> {
    let namesrv = crate::access::namesrv(client::NameServerClient::new(
        namesrv_addr,
        Duration::from_secs(3),
    )?);
    for topic in all_topics() {
        let mut last = None;
        for _ in 0..20 {
            match client::admin::create_topic(&namesrv, topic, queues, Duration::from_secs(5)).await
            {
                Ok(_) => {
                    last = None;
                    break;
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        if let Some(e) = last {
            bail!("create topic {topic}: {e}");
        }
    }
    Ok(())
}

/// A push consumer of the workload: from the first offset, quick to see routes, members
/// and brokers come back.
fn consumer_config(namesrv_addr: &str, group: &str) -> PushConsumerConfig {
    let mut config = PushConsumerConfig::new(namesrv_addr, group);
    config.consume_from_where = ConsumeFromWhere::FirstOffset;
    config.client.poll_name_server_interval_ms = 1_000;
    config.client.heartbeat_broker_interval_ms = 1_000;
    config.rebalance_interval_ms = 2_000;
    config.pull_time_delay_when_exception_ms = 200;
    config.client = crate::access::client(config.client);
    config
}

fn drain_config(namesrv_addr: &str) -> PullConsumerConfig {
    let mut config = PullConsumerConfig::new(namesrv_addr, "chaos-drain");
    config.client = crate::access::client(config.client);
    config
}

fn producer_config(namesrv_addr: &str, id: usize) -> ProducerConfig {
    let mut config = ProducerConfig::new(namesrv_addr, format!("chaos-p{id}"));
    config.send_msg_timeout_ms = SEND_TIMEOUT_MS;
    config.client.poll_name_server_interval_ms = 1_000;
    config.client = crate::access::client(config.client);
    config
}

/// Records the outcome of one attempt; returns whether it was unknown.
fn record_outcome(
    recorder: &Recorder,
    last_ack_us: &AtomicU64,
    value: &str,
    attempt: u32,
    started: Instant,
    result: client::Result<client::SendResult>,
) -> bool {
    let latency_us = started.elapsed().as_micros() as u64;
    match result {
        Ok(r) => {
            recorder.record(|t_us| {
                last_ack_us.fetch_max(t_us, Ordering::Relaxed);
                Event::Ok {
                    t_us,
                    value: value.to_string(),
                    attempt,
                    queue: queue_ref_of(&r.queue),
                    queue_offset: r.queue_offset,
                    latency_us,
                }
            });
            false
        }
        Err(e) if e.is_outcome_unknown() => {
            recorder.record(|t_us| Event::Unknown {
                t_us,
                value: value.to_string(),
                attempt,
                error: e.to_string(),
                latency_us,
            });
            true
        }
        Err(e) => {
            recorder.record(|t_us| Event::Fail {
                t_us,
                value: value.to_string(),
                attempt,
                error: e.to_string(),
                latency_us,
            });
            false
        }
    }
}

fn invoke(
    recorder: &Recorder,
    value: &str,
    topic: &str,
    kind: SendKind,
    key: Option<&str>,
    attempt: u32,
) {
    recorder.record(|t_us| Event::Invoke {
        t_us,
        value: value.to_string(),
        topic: topic.to_string(),
        kind,
        sharding_key: key.map(str::to_string),
        attempt,
    });
}

/// The handles a producer task needs.
struct ProducerTask {
    recorder: Arc<Recorder>,
    producing: Arc<AtomicBool>,
    last_ack: Arc<AtomicU64>,
    values: Values,
}

/// Names one producer's values and sharding keys: `<tag>.p<producer>-<seq>` and
/// `<tag>.p<producer>-k<n>`.
struct Values {
    tag: String,
    producer: usize,
}

impl Values {
    fn value(&self, seq: u64) -> String {
        format!("{}.p{}-{seq}", self.tag, self.producer)
    }

    fn key(&self, seq: u64) -> String {
        let n = seq as usize % KEYS_PER_ORDERED_PRODUCER;
        format!("{}.p{}-k{n}", self.tag, self.producer)
    }
}

impl Workload {
    /// Starts consumers, then producers.
    pub async fn start(
        namesrv_addr: &str,
        recorder: Arc<Recorder>,
        shape: Shape,
    ) -> anyhow::Result<Workload> {
        // A tag per run: an attached cluster may hold values of earlier runs.
        let tag = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0)
                ^ u64::from(std::process::id())
        );
        recorder.record(|t_us| Event::Start {
            t_us,
            tag: tag.clone(),
        });
        let mut w = Workload {
            tag,
            recorder: recorder.clone(),
            namesrv_addr: namesrv_addr.to_string(),
            producing: Arc::new(AtomicBool::new(true)),
            pulling: Arc::new(AtomicBool::new(true)),
            last_ack_us: Arc::new(AtomicU64::new(0)),
            producers: Vec::new(),
            pullers: Vec::new(),
            push: None,
            retry: None,
            orderly: Vec::new(),
            txn_producers: Vec::new(),
            txn_committed: Default::default(),
            txn_received: Default::default(),
            progress: Progress::default(),
        };
        w.start_push().await?;
        if shape.retry_consumer {
            w.start_retry_consumer().await?;
        }
        let suspended = Arc::new(Mutex::new(std::collections::HashSet::new()));
        for n in 0..shape.orderly_consumers {
            w.start_orderly_consumer(n, suspended.clone()).await?;
        }
        w.start_pull().await?;
        let mut id = 0;
        for _ in 0..shape.sync_producers {
            w.start_sync_producer(id).await?;
            id += 1;
        }
        for _ in 0..shape.async_producers {
            w.start_async_producer(id).await?;
            id += 1;
        }
        for _ in 0..shape.ordered_producers {
            w.start_ordered_producer(id).await?;
            id += 1;
        }
        for _ in 0..shape.delayed_producers {
            w.start_delayed_producer(id).await?;
            id += 1;
        }
        for _ in 0..shape.transactional_producers {
            w.start_transactional_producer(id).await?;
            id += 1;
        }
        Ok(w)
    }

    async fn start_push(&mut self) -> anyhow::Result<()> {
        let mut config = consumer_config(&self.namesrv_addr, "chaos-push");
        config.consume_thread_max = 4;
        let mut push = PushConsumer::new(config);
        for topic in all_topics() {
            push.subscribe(topic, "*")?;
        }
        let (recorder, progress) = (self.recorder.clone(), self.progress.clone());
        let txn_received = self.txn_received.clone();
        push.register_message_listener(move |msgs| {
            for m in msgs {
                note_receipt(&recorder, &progress, "push", m);
                if m.topic == TXN_TOPIC {
                    let mut r = txn_received.lock().unwrap_or_else(|e| e.into_inner());
                    r.insert(String::from_utf8_lossy(&m.body).to_string());
                }
            }
            ConsumeStatus::ConsumeSuccess
        });
        push.start().await.context("start push consumer")?;
        self.push = Some(push);
        Ok(())
    }

    /// The retry consumer: fails each value of [`RETRY_TOPIC`] as often as
    /// [`crate::checker::failures_for`] says (by its RECONSUMETIMES), so its copies
    /// pass through `%RETRY%<group>` and, past [`crate::checker::RETRY_MAX`] tries, into
    /// the DLQ. It records no receipts, only how far it got in each queue.
    async fn start_retry_consumer(&mut self) -> anyhow::Result<()> {
        let mut config = consumer_config(&self.namesrv_addr, RETRY_GROUP);
        config.consume_message_batch_max_size = 1;
        config.max_reconsume_times = crate::checker::RETRY_MAX;
        config.reconsume_delay_ms = 1_000;
        let mut consumer = PushConsumer::new(config);
        consumer.subscribe(RETRY_TOPIC, "*")?;
        let (progress, recorder) = (self.progress.clone(), self.recorder.clone());
        consumer.register_message_listener(move |msgs| {
            let mut status = ConsumeStatus::ConsumeSuccess;
            for m in msgs {
                let value = String::from_utf8_lossy(&m.body).to_string();
                let fails = crate::checker::failures_for(&value).unwrap_or(0);
                if m.reconsume_times < fails {
                    status = ConsumeStatus::ReconsumeLater;
                }
                if fails > 0 {
                    recorder.record(|t_us| Event::Retried {
                        t_us,
                        value,
                        place: "consumer".into(),
                        reconsume_times: m.reconsume_times,
                    });
                }
                if m.property("RETRY_TOPIC").is_none() {
                    note_progress(&progress, "retry", m);
                }
            }
            status
        });
        consumer.start().await.context("start retry consumer")?;
        self.retry = Some(consumer);
        Ok(())
    }

    /// One orderly consumer of [`ORDERED_TOPIC`] in [`ORDERLY_GROUP`]: records each
    /// listener call as a `processed` event (from its start to its end), and suspends
    /// every [`ORDERLY_SUSPEND_EVERY`]th value once (whichever consumer gets it first).
    async fn start_orderly_consumer(
        &mut self,
        n: usize,
        suspended: Arc<Mutex<std::collections::HashSet<String>>>,
    ) -> anyhow::Result<()> {
        let mut config = consumer_config(&self.namesrv_addr, ORDERLY_GROUP);
        config.suspend_current_queue_time_ms = 100;
        config.consume_thread_max = 4;
        let mut consumer = PushConsumer::new(config);
        consumer.subscribe(ORDERED_TOPIC, "*")?;
        let name = format!("orderly-{n}");
        let (progress, recorder) = (self.progress.clone(), self.recorder.clone());
        consumer.register_orderly_listener(move |msgs| {
            let start_us = recorder.now_us();
            let suspend = msgs.iter().any(|m| {
                let value = String::from_utf8_lossy(&m.body).to_string();
                let seq: Option<u64> = value.rsplit('-').next().and_then(|s| s.parse().ok());
                seq.is_some_and(|s| s % ORDERLY_SUSPEND_EVERY == 0)
                    && suspended
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(value)
            });
            for m in msgs {
                recorder.record(|t_us| Event::Processed {
                    t_us,
                    start_us,
                    consumer: name.clone(),
                    queue: queue_ref(m),
                    queue_offset: m.queue_offset,
                    value: String::from_utf8_lossy(&m.body).to_string(),
                    suspended: suspend,
                });
                if !suspend {
                    note_progress(&progress, "orderly", m);
                }
            }
            if suspend {
                ConsumeOrderlyStatus::SuspendCurrentQueueAMoment
            } else {
                ConsumeOrderlyStatus::Success
            }
        });
        consumer.start().await.context("start orderly consumer")?;
        self.orderly.push(consumer);
        Ok(())
    }

    async fn start_pull(&mut self) -> anyhow::Result<()> {
        let mut config = PullConsumerConfig::new(&self.namesrv_addr, "chaos-pull");
        config.client = crate::access::client(config.client);
        config.client.poll_name_server_interval_ms = 1_000;
        let consumer = Arc::new(PullConsumer::start(config).await?);
        for topic in all_topics() {
            for queue in consumer.fetch_queues(topic).await? {
                let (consumer, recorder, progress, pulling) = (
                    consumer.clone(),
                    self.recorder.clone(),
                    self.progress.clone(),
                    self.pulling.clone(),
                );
                self.pullers.push(tokio::spawn(async move {
                    let mut offset = 0;
                    while pulling.load(Ordering::Relaxed) {
                        let pulled = consumer
                            .pull(
                                &queue,
                                offset,
                                PULL_BATCH,
                                "*",
                                Duration::from_millis(PULL_SUSPEND_MS),
                            )
                            .await;
                        match pulled {
                            Ok(PullResult::Found {
                                messages,
                                next_begin_offset,
                                ..
                            }) => {
                                for m in &messages {
                                    note_receipt(&recorder, &progress, "pull", m);
                                }
                                offset = next_begin_offset;
                            }
                            Ok(other) => offset = other.next_begin_offset().max(offset),
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                }));
            }
        }
        Ok(())
    }

    /// What every producer task shares with the workload.
    fn producer_task(&self, id: usize) -> ProducerTask {
        ProducerTask {
            recorder: self.recorder.clone(),
            producing: self.producing.clone(),
            last_ack: self.last_ack_us.clone(),
            values: Values {
                tag: self.tag.clone(),
                producer: id,
            },
        }
    }

    async fn start_sync_producer(&mut self, id: usize) -> anyhow::Result<()> {
        let producer = Producer::start(producer_config(&self.namesrv_addr, id)).await?;
        let ProducerTask {
            recorder,
            producing,
            last_ack,
            values,
        } = self.producer_task(id);
        self.producers.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while producing.load(Ordering::Relaxed) {
                let value = values.value(seq);
                let topic = ROUND_ROBIN_TOPICS[(seq % 2) as usize];
                seq += 1;
                for attempt in 1..=ATTEMPTS_MAX {
                    invoke(&recorder, &value, topic, SendKind::Sync, None, attempt);
                    let started = Instant::now();
                    let result = producer.send(Message::new(topic, value.clone())).await;
                    let unknown =
                        record_outcome(&recorder, &last_ack, &value, attempt, started, result);
                    if !unknown || !producing.load(Ordering::Relaxed) {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(SEND_PAUSE_MS)).await;
            }
            producer.shutdown().await;
        }));
        Ok(())
    }

    async fn start_async_producer(&mut self, id: usize) -> anyhow::Result<()> {
        let producer = Arc::new(Producer::start(producer_config(&self.namesrv_addr, id)).await?);
        let ProducerTask {
            recorder,
            producing,
            last_ack,
            values,
        } = self.producer_task(id);
        self.producers.push(tokio::spawn(async move {
            let mut seq = 0u64;
            let mut in_flight = JoinSet::new();
            while producing.load(Ordering::Relaxed) {
                while in_flight.len() >= ASYNC_IN_FLIGHT_MAX {
                    in_flight.join_next().await;
                }
                let value = values.value(seq);
                let topic = ROUND_ROBIN_TOPICS[(seq % 2) as usize];
                seq += 1;
                invoke(&recorder, &value, topic, SendKind::Async, None, 1);
                let started = Instant::now();
                match producer
                    .send_async(Message::new(topic, value.clone()))
                    .await
                {
                    Ok(handle) => {
                        let (recorder, last_ack) = (recorder.clone(), last_ack.clone());
                        in_flight.spawn(async move {
                            let result = handle.await;
                            record_outcome(&recorder, &last_ack, &value, 1, started, result);
                        });
                    }
                    Err(e) => {
                        record_outcome(&recorder, &last_ack, &value, 1, started, Err(e));
                    }
                }
                tokio::time::sleep(Duration::from_millis(SEND_PAUSE_MS)).await;
            }
            while in_flight.join_next().await.is_some() {}
            producer.shutdown().await;
        }));
        Ok(())
    }

    async fn start_ordered_producer(&mut self, id: usize) -> anyhow::Result<()> {
        let producer = Producer::start(producer_config(&self.namesrv_addr, id)).await?;
        let ProducerTask {
            recorder,
            producing,
            last_ack,
            values,
        } = self.producer_task(id);
        self.producers.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while producing.load(Ordering::Relaxed) {
                let value = values.value(seq);
                let key = values.key(seq);
                seq += 1;
                invoke(
                    &recorder,
                    &value,
                    ORDERED_TOPIC,
                    SendKind::Ordered,
                    Some(&key),
                    1,
                );
                let started = Instant::now();
                let result = producer
                    .send_ordered(Message::new(ORDERED_TOPIC, value.clone()), &key)
                    .await;
                record_outcome(&recorder, &last_ack, &value, 1, started, result);
                tokio::time::sleep(Duration::from_millis(SEND_PAUSE_MS)).await;
            }
            producer.shutdown().await;
        }));
        Ok(())
    }

    /// Timer messages to [`DELAYED_TOPIC`], each due 100 ms to [`DELAY_MAX_MS`] after
    /// its send. One attempt per value: a second copy would be a duplicate the checker
    /// could not tell from a repeated delivery.
    async fn start_delayed_producer(&mut self, id: usize) -> anyhow::Result<()> {
        let producer = Producer::start(producer_config(&self.namesrv_addr, id)).await?;
        let ProducerTask {
            recorder,
            producing,
            last_ack,
            values,
        } = self.producer_task(id);
        self.producers.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while producing.load(Ordering::Relaxed) {
                let value = values.value(seq);
                let delay_ms = 100 + (seq * 37) % (DELAY_MAX_MS - 100);
                seq += 1;
                invoke(&recorder, &value, DELAYED_TOPIC, SendKind::Delayed, None, 1);
                let started = Instant::now();
                let msg =
                    Message::new(DELAYED_TOPIC, value.clone()).with_delay_time_ms(delay_ms as i64);
                let result = producer.send(msg).await;
                record_outcome(&recorder, &last_ack, &value, 1, started, result);
                tokio::time::sleep(Duration::from_millis(SEND_PAUSE_MS * 4)).await;
            }
            producer.shutdown().await;
        }));
        Ok(())
    }

    /// Transactional sends to [`TXN_TOPIC`]: each value's local transaction answers as
    /// [`crate::checker::txn_decision`] says (commit, roll back, or unknown), and the
    /// check listener answers the final decision. One attempt per value: a retried half
    /// would be a second transaction.
    async fn start_transactional_producer(&mut self, id: usize) -> anyhow::Result<()> {
        use crate::checker::{txn_decision, TxnAnswer};
        let answer = |value: &str| match txn_decision(value) {
            Some((_, true)) => LocalTransactionState::CommitMessage,
            _ => LocalTransactionState::RollbackMessage,
        };
        let listener = move |msg: &MessageExt| answer(&String::from_utf8_lossy(&msg.body));
        let mut config = producer_config(&self.namesrv_addr, id);
        config.producer_group = TXN_GROUP.into();
        let producer = TransactionProducer::start(config, Arc::new(listener)).await?;
        self.txn_producers.push(producer.clone());
        let ProducerTask {
            recorder,
            producing,
            last_ack,
            values,
        } = self.producer_task(id);
        let committed = self.txn_committed.clone();
        self.producers.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while producing.load(Ordering::Relaxed) {
                let value = values.value(seq);
                seq += 1;
                let (local, commits) = txn_decision(&value).unwrap_or((TxnAnswer::Rollback, false));
                invoke(
                    &recorder,
                    &value,
                    TXN_TOPIC,
                    SendKind::Transactional,
                    None,
                    1,
                );
                let started = Instant::now();
                let result = producer
                    .send_message_in_transaction(Message::new(TXN_TOPIC, value.clone()), |_, _| {
                        match local {
                            TxnAnswer::Commit => LocalTransactionState::CommitMessage,
                            TxnAnswer::Rollback => LocalTransactionState::RollbackMessage,
                            TxnAnswer::Unknown => LocalTransactionState::Unknow,
                        }
                    })
                    .await;
                // Only a half stored SEND_OK ran its local transaction; another status may
                // have stored it, so its outcome is unknown.
                let result = match result {
                    Ok(r) if r.send_result.status == client::SendStatus::SendOk => {
                        Ok(r.send_result)
                    }
                    Ok(r) => Err(client::ClientError::OutcomeUnknown {
                        broker_name: r.send_result.queue.broker_name.clone(),
                        addr: r.send_result.broker_addr.clone(),
                        reason: format!("half stored with status {:?}", r.send_result.status),
                    }),
                    Err(e) => Err(e),
                };
                let acked = result.is_ok();
                record_outcome(&recorder, &last_ack, &value, 1, started, result);
                if acked && commits {
                    committed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(value);
                }
                tokio::time::sleep(Duration::from_millis(SEND_PAUSE_MS * 4)).await;
            }
        }));
        Ok(())
    }

    /// After the producers stopped: waits (bounded) until every acknowledged transaction
    /// that commits has reached the push consumer (check-backs resolve those whose end
    /// was lost), then a little longer for halves whose send outcome was unknown, so the
    /// drain sees them. Returns the committed values still missing.
    pub async fn settle_transactions(&self) -> usize {
        if self.txn_producers.is_empty() {
            return 0;
        }
        let deadline = Instant::now() + Duration::from_millis(TXN_SETTLE_MS);
        loop {
            let missing = {
                let committed = self.txn_committed.lock().unwrap_or_else(|e| e.into_inner());
                let received = self.txn_received.lock().unwrap_or_else(|e| e.into_inner());
                committed.difference(&received).count()
            };
            if missing == 0 || Instant::now() > deadline {
                tokio::time::sleep(Duration::from_millis(3_000)).await;
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the producers and waits for their last sends (bounded by the send
    /// deadline).
    pub async fn stop_producers(&mut self) {
        self.producing.store(false, Ordering::Relaxed);
        for p in self.producers.drain(..) {
            let _ =
                tokio::time::timeout(Duration::from_millis(4 * SEND_TIMEOUT_MS + 5_000), p).await;
        }
    }

    /// Waits (up to `timeout`) until the push and pull consumers have received up to
    /// `ends` (one past the last offset of each drained queue). Returns the queues
    /// still behind, per consumer.
    pub async fn wait_consumers(
        &self,
        ends: &HashMap<QueueRef, i64>,
        timeout: Duration,
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let behind: Vec<String> = {
                let p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
                let mut behind = Vec::new();
                for consumer in ["push", "pull", "retry", "orderly"] {
                    if consumer == "retry" && self.retry.is_none()
                        || consumer == "orderly" && self.orderly.is_empty()
                    {
                        continue;
                    }
                    for (queue, end) in ends {
                        if consumer == "retry" && queue.topic != RETRY_TOPIC
                            || consumer == "orderly" && queue.topic != ORDERED_TOPIC
                        {
                            continue;
                        }
                        let got = p
                            .get(consumer)
                            .and_then(|m| m.get(queue))
                            .copied()
                            .unwrap_or(0);
                        if got < *end {
                            behind.push(format!("{consumer} at {queue}: {got} of {end}"));
                        }
                    }
                }
                behind
            };
            if behind.is_empty() || Instant::now() > deadline {
                return behind;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Once the retry consumer has caught up: waits until its retry topic and DLQ stop
    /// changing (each value's tries are 1 s apart in the chaos cluster), then records
    /// every copy in them as a `retried` event and stops it.
    pub async fn settle_retries(&mut self) -> anyhow::Result<()> {
        let Some(mut consumer) = self.retry.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_millis(RETRY_SETTLE_MS);
        let mut last = (usize::MAX, usize::MAX);
        let mut stable_since = Instant::now();
        let copies = loop {
            let retried = read_all(&self.namesrv_addr, &format!("%RETRY%{RETRY_GROUP}")).await?;
            let dead = read_all(&self.namesrv_addr, &format!("%DLQ%{RETRY_GROUP}")).await?;
            let now = (retried.len(), dead.len());
            if now != last {
                last = now;
                stable_since = Instant::now();
            }
            if stable_since.elapsed() > Duration::from_secs(5) || Instant::now() > deadline {
                break [("retry", retried), ("dlq", dead)];
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(15), consumer.shutdown()).await;
        for (place, messages) in copies {
            for m in messages {
                let value = String::from_utf8_lossy(&m.body).to_string();
                self.recorder.record(|t_us| Event::Retried {
                    t_us,
                    value,
                    place: place.into(),
                    reconsume_times: m.reconsume_times,
                });
            }
        }
        Ok(())
    }

    /// Stops the consumers.
    pub async fn stop_consumers(&mut self) {
        self.pulling.store(false, Ordering::Relaxed);
        for p in self.pullers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_millis(PULL_SUSPEND_MS + 5_000), p).await;
        }
        let orderly = std::mem::take(&mut self.orderly);
        let all = [self.push.take(), self.retry.take()].into_iter().flatten();
        for mut consumer in all.chain(orderly) {
            let _ = tokio::time::timeout(Duration::from_secs(15), consumer.shutdown()).await;
        }
        for producer in self.txn_producers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(15), producer.shutdown()).await;
        }
    }
}

/// Reads every queue of every workload topic from offset 0 (or its first kept offset,
/// recorded as a `queue_min` event) and records each message as a `drain` receipt.
/// Returns one past the last offset of each queue.
pub async fn drain(
    namesrv_addr: &str,
    recorder: &Recorder,
) -> anyhow::Result<HashMap<QueueRef, i64>> {
    let consumer = PullConsumer::start(drain_config(namesrv_addr)).await?;
    let mut ends = HashMap::new();
    let progress = Progress::default();
    for topic in all_topics() {
        for queue in consumer.fetch_queues(topic).await? {
            let mut offset = 0i64;
            let deadline = Instant::now() + Duration::from_millis(DRAIN_QUEUE_MS);
            loop {
                if Instant::now() > deadline {
                    bail!("draining {queue} stalled at offset {offset}");
                }
                match consumer
                    .pull(&queue, offset, PULL_BATCH, "*", Duration::ZERO)
                    .await
                {
                    Ok(PullResult::Found {
                        messages,
                        next_begin_offset,
                        ..
                    }) => {
                        for m in &messages {
                            note_receipt(recorder, &progress, crate::checker::DRAIN, m);
                        }
                        offset = next_begin_offset;
                    }
                    Ok(PullResult::NoNewMessage { .. }) => break,
                    // Retention deleted the queue's head: the broker moves the consumer on.
                    Ok(PullResult::OffsetIllegal {
                        next_begin_offset, ..
                    }) if next_begin_offset > offset => {
                        let queue = queue_ref_of(&queue);
                        recorder.record(|t_us| Event::QueueMin {
                            t_us,
                            queue,
                            min_offset: next_begin_offset,
                        });
                        offset = next_begin_offset;
                    }
                    Ok(other) => bail!("drain pull of {queue} at {offset}: {other:?}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            ends.insert(queue_ref_of(&queue), offset);
        }
    }
    consumer.shutdown().await;
    Ok(ends)
}

/// Every message of `topic` (empty if it has no route yet), read from offset 0.
async fn read_all(namesrv_addr: &str, topic: &str) -> anyhow::Result<Vec<MessageExt>> {
    let client = crate::access::client(client::ClientConfig::new(namesrv_addr));
    Ok(client::admin::read_topic(&client, topic).await?)
}
