//! `rocketraft bench e2e`: end-to-end latency, from the moment a producer hands a
//! message to the client to the moment a consumer holds it.
//!
//! Producers (`--in-flight` tasks, each awaiting its acknowledgement) write the send
//! time, microseconds since the Unix epoch, into the first 8 bytes of every body; one
//! long-polling pull loop per queue reads from each queue's end as it was at the start
//! and records `now - send time` for every message. Producer and consumers run in this
//! process, so they share one clock. At the end: messages sent, acknowledged and
//! received, msg/s, and end-to-end p50/p90/p99/p999/max from an HDR histogram.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use client::{Message, Producer, ProducerConfig, PullConsumer, PullConsumerConfig, PullResult};
use hdrhistogram::Histogram;

use super::bench::{latency_json, latency_line, percentile_ms, spawn_progress};

#[derive(clap::Args)]
pub struct E2eArgs {
    /// Name servers, `;`-separated.
    #[arg(short = 'n', long = "namesrv", default_value = "127.0.0.1:9876")]
    namesrv: String,
    #[arg(short = 't', long, default_value = "BenchE2E")]
    topic: String,
    /// Body size in bytes (at least 8: the send time).
    #[arg(short = 's', long, default_value_t = 1024)]
    size: usize,
    /// Sends in flight (tasks each sending one at a time).
    #[arg(short = 'w', long, default_value_t = 32)]
    in_flight: usize,
    /// How long to send, in seconds.
    #[arg(short = 'd', long, default_value_t = 10)]
    seconds: u64,
    /// Print one JSON object at the end instead of the text report.
    #[arg(long)]
    json: bool,
}

/// Longest wait for the consumers to catch up once the producers stop.
const DRAIN: Duration = Duration::from_secs(10);
/// Long-poll hold of one pull.
const HOLD: Duration = Duration::from_millis(500);

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub async fn run(args: E2eArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.size >= 8, "--size must be at least 8 (the send time)");
    anyhow::ensure!(args.in_flight > 0, "--in-flight must be at least 1");
    let mut config = ProducerConfig::new(&args.namesrv, "rocketraft-bench-e2e");
    config.max_async_sends_in_flight = args.in_flight;
    let producer = Arc::new(Producer::start(config).await?);
    // Creates the topic (and its route) before anything is timed.
    producer
        .send(Message::new(&args.topic, Bytes::from(vec![0u8; args.size])))
        .await?;
    let consumer = PullConsumer::start(PullConsumerConfig::new(
        &args.namesrv,
        "rocketraft-bench-e2e",
    ))
    .await?;
    let queues = consumer.fetch_queues(&args.topic).await?;
    let mut starts = Vec::new();
    for q in &queues {
        starts.push((q.clone(), consumer.max_offset(q).await?));
    }

    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let (sent, acked, failed, received, pull_errors) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let producing = Arc::new(AtomicBool::new(true));
    let consuming = Arc::new(AtomicBool::new(true));

    let mut pullers = Vec::new();
    let ready = Arc::new(AtomicU64::new(0));
    let queue_count = starts.len() as u64;
    for (queue, start) in starts {
        let (consumer, histogram, received, consuming, pull_errors) = (
            consumer.clone(),
            histogram.clone(),
            received.clone(),
            consuming.clone(),
            pull_errors.clone(),
        );
        let ready = ready.clone();
        pullers.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut offset = start;
            // One pull that does not wait, before anything is timed: it opens the
            // connection and finds the route, which the first run against a fresh cluster
            // otherwise paid inside its p999 (90 ms).
            let _ = consumer.pull(&queue, offset, 1, "*", Duration::ZERO).await;
            ready.fetch_add(1, Ordering::Relaxed);
            while consuming.load(Ordering::Relaxed) {
                match consumer.pull(&queue, offset, 64, "*", HOLD).await {
                    Ok(PullResult::Found {
                        messages,
                        next_begin_offset,
                        ..
                    }) => {
                        let now = now_us();
                        for m in &messages {
                            if let Some(t) = m.body.get(..8) {
                                let sent_us = u64::from_be_bytes(t.try_into().unwrap());
                                let _ = local.record(now.saturating_sub(sent_us).max(1));
                            }
                        }
                        received.fetch_add(messages.len() as u64, Ordering::Relaxed);
                        offset = next_begin_offset;
                        histogram.lock().unwrap().add(&local).unwrap();
                        local.reset();
                    }
                    Ok(other) => offset = other.next_begin_offset().max(offset),
                    // A failed pull is retried after a pause, until told to stop.
                    Err(e) => {
                        pull_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(error = %e, "pull failed");
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                }
            }
        }));
    }

    let ready_deadline = Instant::now() + DRAIN;
    while ready.load(Ordering::Relaxed) < queue_count && Instant::now() < ready_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut producers = Vec::new();
    for _ in 0..args.in_flight {
        let (producer, topic, sent, acked, failed, producing) = (
            producer.clone(),
            args.topic.clone(),
            sent.clone(),
            acked.clone(),
            failed.clone(),
            producing.clone(),
        );
        let size = args.size;
        producers.push(tokio::spawn(async move {
            let mut body = BytesMut::with_capacity(size);
            while producing.load(Ordering::Relaxed) && Instant::now() < deadline {
                body.put_u64(now_us());
                body.resize(size, b'e');
                let message = Message::new(&topic, body.split().freeze());
                sent.fetch_add(1, Ordering::Relaxed);
                match producer.send(message).await {
                    Ok(_) => acked.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let progress = {
        let histogram = histogram.clone();
        spawn_progress(received.clone(), args.json, started, move |rate, _| {
            let h = histogram.lock().unwrap();
            format!(
                "{rate:>8} msg/s received  e2e p50 {:.2} ms  p99 {:.2} ms",
                percentile_ms(&h, 0.5),
                percentile_ms(&h, 0.99)
            )
        })
    };
    for p in producers {
        p.await?;
    }
    producing.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    // Let the consumers read what was acknowledged (bounded).
    let drain_deadline = Instant::now() + DRAIN;
    while received.load(Ordering::Relaxed) < acked.load(Ordering::Relaxed)
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consuming.store(false, Ordering::Relaxed);
    for p in pullers {
        let _ = p.await;
    }
    progress.abort();
    producer.shutdown().await;
    consumer.shutdown().await;

    let h = histogram.lock().unwrap();
    let (sent, acked, failed, received, pull_errors) = (
        sent.load(Ordering::Relaxed),
        acked.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
        pull_errors.load(Ordering::Relaxed),
    );
    let rate = received as f64 / elapsed;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "e2e",
                "size_bytes": args.size,
                "in_flight": args.in_flight,
                "seconds": elapsed,
                "sent": sent,
                "acked": acked,
                "failed_or_unknown": failed,
                "received": received,
                "pull_errors": pull_errors,
                "msg_per_s": rate,
                "e2e_latency_ms": latency_json(&h),
            })
        );
    } else {
        println!(
            "e2e: {sent} sent, {acked} acked, {received} received in {elapsed:.1} s = {rate:.0} msg/s ({} B, {} in flight; failed or unknown {failed}, pull errors {pull_errors})",
            args.size, args.in_flight
        );
        println!("end-to-end ms: {}", latency_line(&h));
    }
    anyhow::ensure!(
        received >= acked,
        "received {received} of {acked} acknowledged messages within {DRAIN:?} of the end"
    );
    Ok(())
}
