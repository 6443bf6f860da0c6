//! `rocketraft bench txn`: transactional send throughput against plain send, side by side
//! in one run. Two phases of `--seconds` each, with `--in-flight` sending tasks:
//!
//! - plain: `Producer::send` of `--size`-byte messages to `<topic>-plain`;
//! - txn: `TransactionProducer::send_message_in_transaction` to `<topic>-txn`, the local
//!   transaction answering commit at once: a half (one Raft append, awaited) and a
//!   oneway END_TRANSACTION (a second append, by the broker).
//!
//! A transaction counts when its call returns; because the commit is oneway, the run then
//! waits until every committed message is in its topic (max offsets of `<topic>-txn`) and
//! reports "committed/s" up to that moment too. Per phase: msg/s, p50/p99/max of the
//! call's latency, failures and unknown outcomes (never hidden).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{
    LocalTransactionState, Message, Producer, ProducerConfig, PullConsumer, PullConsumerConfig,
    TransactionProducer,
};
use hdrhistogram::Histogram;

use super::bench::latency_line;

#[derive(clap::Args)]
pub struct TxnArgs {
    /// Name servers, `;`-separated.
    #[arg(short = 'n', long = "namesrv", default_value = "127.0.0.1:9876")]
    namesrv: String,
    /// Topic prefix: `<topic>-plain` and `<topic>-txn` (created with 8 queues).
    #[arg(short = 't', long, default_value = "BenchTxn")]
    topic: String,
    /// Body size in bytes.
    #[arg(short = 's', long, default_value_t = 1024)]
    size: usize,
    /// Sending tasks, each waiting for its call before the next.
    #[arg(short = 'w', long, default_value_t = 64)]
    in_flight: usize,
    /// Seconds per phase.
    #[arg(short = 'd', long, default_value_t = 20)]
    seconds: u64,
}

struct Phase {
    done: AtomicU64,
    failed: AtomicU64,
    histogram: Mutex<Histogram<u64>>,
}

impl Phase {
    fn new() -> Arc<Phase> {
        Arc::new(Phase {
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            histogram: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()),
        })
    }

    fn record(&self, started: Instant, ok: bool) {
        if ok {
            self.done.fetch_add(1, Ordering::Relaxed);
            let us = started.elapsed().as_micros().max(1) as u64;
            let _ = self.histogram.lock().unwrap().record(us.min(60_000_000));
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn line(&self, name: &str, elapsed: Duration) -> String {
        let done = self.done.load(Ordering::Relaxed);
        format!(
            "{name:<6} {done:>9} ok {:>6} failed {:>9.0} msg/s   latency ms: {}",
            self.failed.load(Ordering::Relaxed),
            done as f64 / elapsed.as_secs_f64(),
            latency_line(&self.histogram.lock().unwrap())
        )
    }
}

/// Messages stored in every queue of `topic`.
async fn stored(consumer: &PullConsumer, topic: &str) -> anyhow::Result<u64> {
    let mut total = 0;
    for queue in consumer.fetch_queues(topic).await? {
        total += consumer.max_offset(&queue).await?.max(0) as u64;
    }
    Ok(total)
}

pub async fn run(args: TxnArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.in_flight > 0, "--in-flight must be at least 1");
    let plain_topic = format!("{}-plain", args.topic);
    let txn_topic = format!("{}-txn", args.topic);
    let namesrv = client::NameServerClient::new(&args.namesrv, Duration::from_secs(3))?;
    for topic in [&plain_topic, &txn_topic] {
        client::admin::create_topic(&namesrv, topic, 8, Duration::from_secs(5)).await?;
    }
    let body = Bytes::from(vec![b'x'; args.size]);
    let window = Duration::from_secs(args.seconds);

    // Plain sends.
    let mut config = ProducerConfig::new(&args.namesrv, "rocketraft-bench-plain");
    config.max_async_sends_in_flight = args.in_flight;
    let producer = Producer::start(config).await?;
    producer.fetch_publish_queues(&plain_topic).await?;
    let plain = Phase::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.in_flight {
        let (producer, phase, body, topic) = (
            producer.clone(),
            plain.clone(),
            body.clone(),
            plain_topic.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < window {
                let t = Instant::now();
                let ok = producer
                    .send(Message::new(&topic, body.clone()))
                    .await
                    .is_ok();
                phase.record(t, ok);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let plain_elapsed = started.elapsed();
    producer.shutdown().await;
    eprintln!("{}", plain.line("plain", plain_elapsed));

    // Transactions, committed by the local transaction.
    let checker = PullConsumer::start(PullConsumerConfig::new(
        &args.namesrv,
        "rocketraft-bench-txn-check",
    ))
    .await?;
    let before = stored(&checker, &txn_topic).await?;
    let mut config = ProducerConfig::new(&args.namesrv, "rocketraft-bench-txn");
    config.max_async_sends_in_flight = args.in_flight;
    let listener = |_: &client::MessageExt| LocalTransactionState::CommitMessage;
    let txn_producer = TransactionProducer::start(config, Arc::new(listener)).await?;
    txn_producer.register_topic(&txn_topic).await?;
    let txn = Phase::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.in_flight {
        let (producer, phase, body, topic) = (
            txn_producer.clone(),
            txn.clone(),
            body.clone(),
            txn_topic.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < window {
                let t = Instant::now();
                let result = producer
                    .send_message_in_transaction(Message::new(&topic, body.clone()), |_, _| {
                        LocalTransactionState::CommitMessage
                    })
                    .await;
                phase.record(t, result.is_ok());
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let txn_elapsed = started.elapsed();
    let committed = txn.done.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut now_stored = stored(&checker, &txn_topic).await? - before;
    while now_stored < committed && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        now_stored = stored(&checker, &txn_topic).await? - before;
    }
    let all_committed = started.elapsed();
    txn_producer.shutdown().await;
    checker.shutdown().await;

    println!(
        "bench txn: {} B bodies, {} in flight, {} s per phase",
        args.size, args.in_flight, args.seconds
    );
    println!("{}", plain.line("plain", plain_elapsed));
    println!("{}", txn.line("txn", txn_elapsed));
    println!(
        "txn    {now_stored} of {committed} committed messages in {txn_topic} after {:.1} s: {:.0} committed/s",
        all_committed.as_secs_f64(),
        now_stored as f64 / all_committed.as_secs_f64()
    );
    Ok(())
}
