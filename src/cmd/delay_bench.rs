//! `rocketraft bench delay`: timer messages at volume. Sends `--count` timer messages
//! (`TIMER_DELIVER_MS`) whose due times are spread evenly over `--over-seconds`, starting
//! once all of them can have been stored; a push consumer of a fresh group receives them.
//! Reports timers stored per second, delivered per second over the due window, lateness
//! p50/p99/p999/max both on the broker (stored in the real topic minus due time) and at
//! the consumer (received minus due time), anything early, missing or delivered twice,
//! and with `--pid` the resident memory of that process (the leader) before and after.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use client::{
    ConsumeFromWhere, ConsumeStatus, Message, Producer, ProducerConfig, PushConsumer,
    PushConsumerConfig,
};
use hdrhistogram::Histogram;

#[derive(clap::Args)]
pub struct DelayArgs {
    /// Name servers, `;`-separated.
    #[arg(short = 'n', long = "namesrv", default_value = "127.0.0.1:9876")]
    namesrv: String,
    #[arg(short = 't', long, default_value = "BenchTimers")]
    topic: String,
    /// Timer messages to send.
    #[arg(short = 'c', long, default_value_t = 100_000)]
    count: u64,
    /// Their due times are spread evenly over this many seconds.
    #[arg(long, default_value_t = 60)]
    over_seconds: u64,
    /// The first is due this many seconds after the run starts (default: enough to store
    /// them all at 5,000 a second, plus 5 s).
    #[arg(long)]
    lead_seconds: Option<u64>,
    /// Body size in bytes.
    #[arg(short = 's', long, default_value_t = 256)]
    size: usize,
    /// Sends in flight.
    #[arg(short = 'w', long, default_value_t = 256)]
    in_flight: usize,
    /// A process (the leader) whose resident memory to report.
    #[arg(long)]
    pid: Option<u32>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Per timer (its `BENCH_INDEX`): (due, stored in its topic, received) of each receipt.
type Receipts = Arc<Mutex<HashMap<u64, Vec<(u64, u64, u64)>>>>;

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub async fn run(a: DelayArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.count > 0 && a.over_seconds > 0,
        "count and over-seconds must be > 0"
    );
    let lead = a.lead_seconds.unwrap_or(a.count / 5_000 + 5);
    let first_due = now_ms() + lead * 1_000;
    let span_ms = a.over_seconds * 1_000;
    let rss_before = a.pid.and_then(rss_kib);

    let received: Receipts = Arc::default();
    let early = Arc::new(AtomicU64::new(0));
    let group = format!("bench-delay-{}", now_ms());
    let mut config = PushConsumerConfig::new(&a.namesrv, &group);
    config.consume_from_where = ConsumeFromWhere::FirstOffset;
    let mut consumer = PushConsumer::new(config);
    consumer.subscribe(&a.topic, "*")?;
    let (r, e, run) = (received.clone(), early.clone(), group.clone());
    consumer.register_message_listener(move |msgs| {
        let at = now_ms();
        let mut r = r.lock().unwrap();
        for m in msgs {
            let due = m
                .property("__TIMER_ORIGIN")
                .and_then(|o| o.split(':').next()?.parse::<u64>().ok());
            let index = m.property("BENCH_INDEX").and_then(|i| i.parse().ok());
            // Messages of earlier runs on the same topic are not this run's.
            if m.property("BENCH_RUN") != Some(run.as_str()) {
                continue;
            }
            if let (Some(due), Some(index)) = (due, index) {
                if (m.store_timestamp as u64) < due {
                    e.fetch_add(1, Ordering::Relaxed);
                }
                let stored = m.store_timestamp as u64;
                r.entry(index).or_default().push((due, stored, at));
            }
        }
        ConsumeStatus::ConsumeSuccess
    });

    let producer = Producer::start(ProducerConfig::new(&a.namesrv, "bench-delay")).await?;
    // One message first, so the topic exists before the consumer starts.
    producer.send(Message::new(&a.topic, "warm-up")).await?;
    consumer.start().await?;

    let body = bytes::Bytes::from(vec![b'x'; a.size]);
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.in_flight.max(1) {
        let (producer, next, failed, body, topic, run) = (
            producer.clone(),
            next.clone(),
            failed.clone(),
            body.clone(),
            a.topic.clone(),
            group.clone(),
        );
        let count = a.count;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let due = first_due + i * span_ms / count;
                let msg = Message::new(&topic, body.clone())
                    .with_property("BENCH_INDEX", i.to_string())
                    .with_property("BENCH_RUN", run.clone())
                    .with_deliver_time_ms(due as i64);
                if producer.send(msg).await.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let store_secs = started.elapsed().as_secs_f64();
    let stored = a.count - failed.load(Ordering::Relaxed);
    println!(
        "stored {stored} timers in {store_secs:.1} s: {:.0} timers/s ({} failed)",
        stored as f64 / store_secs,
        failed.load(Ordering::Relaxed)
    );
    if now_ms() > first_due {
        println!(
            "warning: storing took past the first due time; raise --lead-seconds (early ones were due while being sent)"
        );
    }
    let rss_stored = a.pid.and_then(rss_kib);

    // Wait for the whole due window, plus up to 30 s for stragglers.
    let last_due = first_due + span_ms;
    let deadline =
        Instant::now() + Duration::from_millis(last_due.saturating_sub(now_ms()) + 30_000);
    while Instant::now() < deadline && (received.lock().unwrap().len() as u64) < stored {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    consumer.shutdown().await;
    producer.shutdown().await;

    let received = received.lock().unwrap();
    let mut lateness = Histogram::<u64>::new(3)?;
    let mut store_lateness = Histogram::<u64>::new(3)?;
    let (mut twice, mut first_at, mut last_at) = (0u64, u64::MAX, 0u64);
    for receipts in received.values() {
        twice += receipts.len() as u64 - 1;
        let (due, stored, at) = receipts[0];
        lateness.record(at.saturating_sub(due))?;
        store_lateness.record(stored.saturating_sub(due))?;
        first_at = first_at.min(at);
        last_at = last_at.max(at);
    }
    let delivered = received.len() as u64;
    let window = (last_at.saturating_sub(first_at)).max(1) as f64 / 1_000.0;
    println!(
        "delivered {delivered} of {stored} ({} missing, {twice} twice, {} stored early) over {window:.1} s: {:.0}/s",
        stored.saturating_sub(delivered),
        early.load(Ordering::Relaxed),
        delivered as f64 / window
    );
    for (what, h) in [
        ("broker: stored in its topic - due", &store_lateness),
        ("consumer: received - due", &lateness),
    ] {
        println!(
            "lateness ({what}, ms): p50 {} p99 {} p999 {} max {}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
    if let Some(pid) = a.pid {
        println!(
            "pid {pid} RSS: {} KiB before, {} KiB with all stored, {} KiB at the end",
            rss_before.unwrap_or(0),
            rss_stored.unwrap_or(0),
            rss_kib(pid).unwrap_or(0)
        );
    }
    Ok(())
}
