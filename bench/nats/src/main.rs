//! `bench-nats`: the NATS JetStream side of rocketraft's side-by-side benchmark
//! (`bench/compare.sh`, issue 6). It measures what `rocketraft bench` measures, the same
//! way, so the two can sit in one table:
//!
//! - `produce`: (re)creates a file-backed stream with the given replicas, then publishes
//!   fixed-size messages from `--in-flight` tasks, each awaiting its JetStream ack
//!   (PubAck: stored by a quorum of the stream's replicas) before its next publish, like
//!   `rocketraft bench produce -w N`. Reports msg/s, MB/s and p50/p90/p99/p999/max ack
//!   latency from an HDR histogram.
//! - `consume`: reads back the first `--count` stored messages as fast as possible
//!   through an ephemeral pull consumer (no acks, batched pulls), like
//!   `rocketraft bench consume`, and reports msg/s.
//!
//! `--json` prints one JSON object at the end with the fields rocketraft's bench uses.
//! Failures and timeouts are counted, never hidden.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, from 1 µs to 60 s.
const HISTOGRAM_MAX_US: u64 = 60_000_000;

#[derive(clap::Parser)]
#[command(about = "NATS JetStream produce/consume benchmark (the NATS side of bench/compare.sh)")]
struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Publish with JetStream acks; report throughput and ack latency.
    Produce(ProduceArgs),
    /// Read back stored messages as fast as possible; report msg/s.
    Consume(ConsumeArgs),
}

#[derive(clap::Args)]
struct Common {
    /// Server URLs, `,`-separated.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    servers: String,
    #[arg(long, default_value = "BENCH")]
    stream: String,
    #[arg(long, default_value = "bench")]
    subject: String,
    /// Print one JSON object at the end instead of the text report.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ProduceArgs {
    #[command(flatten)]
    common: Common,
    /// Body size in bytes.
    #[arg(short = 's', long, default_value_t = 1024)]
    size: usize,
    /// Publishes in flight (tasks each awaiting its ack before the next publish).
    #[arg(short = 'w', long, default_value_t = 256)]
    in_flight: usize,
    /// How long to publish, in seconds.
    #[arg(short = 'd', long, default_value_t = 10)]
    seconds: u64,
    /// Stop after this many acknowledged messages instead.
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// Replicas of the stream (1 or 3).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Keep the stream if it exists (default: delete and recreate it, empty).
    #[arg(long)]
    keep: bool,
}

#[derive(clap::Args)]
struct ConsumeArgs {
    #[command(flatten)]
    common: Common,
    /// How many stored messages to read (from the first).
    #[arg(short = 'c', long)]
    count: u64,
    /// Messages asked for in one pull request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Args = clap::Parser::parse();
    match args.what {
        What::Produce(a) => produce(a).await,
        What::Consume(a) => consume(a).await,
    }
}

async fn connect(servers: &str) -> anyhow::Result<jetstream::Context> {
    let urls: Vec<&str> = servers.split(',').map(str::trim).collect();
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(urls)
        .await
        .with_context(|| format!("connecting to {servers}"))?;
    // Acks are awaited by the tasks; a publish waits (not fails) when too many are pending.
    Ok(jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_ack_inflight(65_536)
        .backpressure_on_inflight(true)
        .build(client))
}

fn percentile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

struct Stats {
    histogram: Mutex<Histogram<u64>>,
    acked: AtomicU64,
    unknown: AtomicU64,
    failed: AtomicU64,
}

async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.in_flight > 0, "--in-flight must be at least 1");
    anyhow::ensure!(args.replicas >= 1, "--replicas must be at least 1");
    let js = connect(&args.common.servers).await?;
    let stream_name = args.common.stream.clone();
    if !args.keep {
        // A missing stream is fine; any other error shows up at create.
        let _ = js.delete_stream(&stream_name).await;
    }
    js.get_or_create_stream(stream::Config {
        name: stream_name.clone(),
        subjects: vec![args.common.subject.clone()],
        storage: stream::StorageType::File,
        num_replicas: args.replicas,
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating stream {stream_name} (R{})", args.replicas))?;
    let subject = args.common.subject.clone();
    // One acknowledged publish before timing anything: the stream has a leader.
    js.publish(subject.clone(), Bytes::from(vec![b'w'; args.size]))
        .await?
        .await
        .context("first publish")?;

    let body = Bytes::from(vec![b'x'; args.size]);
    let stats = Arc::new(Stats {
        histogram: Mutex::new(Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3)?),
        acked: AtomicU64::new(0),
        unknown: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.in_flight {
        let (js, stats, stop, body, subject) = (
            js.clone(),
            stats.clone(),
            stop.clone(),
            body.clone(),
            subject.clone(),
        );
        let count = args.count;
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) && (count.is_some() || Instant::now() < deadline) {
                if count.is_some_and(|c| stats.acked.load(Ordering::Relaxed) >= c) {
                    break;
                }
                let begin = Instant::now();
                let outcome = match js.publish(subject.clone(), body.clone()).await {
                    Ok(ack) => ack.await.map_err(|e| e.kind()),
                    Err(e) => Err(e.kind()),
                };
                match outcome {
                    Ok(_) => {
                        // One shared histogram, one short lock per sample, as in
                        // rocketraft's bench.
                        let micros = begin.elapsed().as_micros().max(1) as u64;
                        let _ = stats.histogram.lock().unwrap().record(micros);
                        stats.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    // A timed-out ack is "outcome unknown", as in rocketraft's bench.
                    Err(PublishErrorKind::TimedOut) => {
                        stats.unknown.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let progress = progress_line(stats.clone(), stop.clone(), started, args.common.json);
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    progress.abort();

    let h = stats.histogram.lock().unwrap();
    let acked = stats.acked.load(Ordering::Relaxed);
    let (unknown, failed) = (
        stats.unknown.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
    );
    let rate = acked as f64 / elapsed;
    let mb = rate * args.size as f64 / (1024.0 * 1024.0);
    if args.common.json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "produce",
                "system": "nats",
                "replicas": args.replicas,
                "size_bytes": args.size,
                "in_flight": args.in_flight,
                "seconds": elapsed,
                "acked": acked,
                "unknown": unknown,
                "failed": failed,
                "msg_per_s": rate,
                "mb_per_s": mb,
                "latency_ms": {
                    "p50": percentile_ms(&h, 0.5),
                    "p90": percentile_ms(&h, 0.9),
                    "p99": percentile_ms(&h, 0.99),
                    "p999": percentile_ms(&h, 0.999),
                    "max": h.max() as f64 / 1000.0,
                }
            })
        );
    } else {
        println!(
            "produce: {acked} acked in {elapsed:.1} s = {rate:.0} msg/s, {mb:.1} MB/s ({} B, {} in flight, R{}; unknown {unknown}, failed {failed})",
            args.size, args.in_flight, args.replicas
        );
        println!(
            "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p999 {:.2}  max {:.2}",
            percentile_ms(&h, 0.5),
            percentile_ms(&h, 0.9),
            percentile_ms(&h, 0.99),
            percentile_ms(&h, 0.999),
            h.max() as f64 / 1000.0
        );
    }
    Ok(())
}

/// One progress line a second on stderr (unless `quiet`).
fn progress_line(
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    started: Instant,
    quiet: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let acked = stats.acked.load(Ordering::Relaxed);
            if !quiet {
                let h = stats.histogram.lock().unwrap();
                eprintln!(
                    "[{:>4.0}s] {:>8} msg/s  p50 {:.2} ms  p99 {:.2} ms  (unknown {}, failed {})",
                    started.elapsed().as_secs_f64(),
                    acked - last,
                    percentile_ms(&h, 0.5),
                    percentile_ms(&h, 0.99),
                    stats.unknown.load(Ordering::Relaxed),
                    stats.failed.load(Ordering::Relaxed)
                );
            }
            last = acked;
        }
    })
}

async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.count > 0, "--count must be at least 1");
    let js = connect(&args.common.servers).await?;
    let stream = js
        .get_stream(&args.common.stream)
        .await
        .with_context(|| format!("stream {}", args.common.stream))?;
    // Ephemeral, no acks, from the first message: a pure read-back, like a rocketraft pull
    // consumer reading a queue from its min offset without committing offsets.
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            filter_subject: args.common.subject.clone(),
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .context("creating the pull consumer")?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_seconds);
    // Batched pulls, the next one asked for before the current one is used up.
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(args.batch)
        .expires(Duration::from_secs(5))
        .messages()
        .await?;
    let (mut received, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    let mut last_report = started;
    let mut last_received = 0;
    while received < args.count {
        let next = tokio::time::timeout_at(deadline.into(), messages.next()).await;
        match next {
            Err(_) => {
                eprintln!("consume: gave up after {} s", args.timeout_seconds);
                break;
            }
            Ok(None) => break,
            Ok(Some(Ok(m))) => {
                received += 1;
                bytes += m.payload.len() as u64;
            }
            Ok(Some(Err(e))) => {
                errors += 1;
                anyhow::ensure!(errors < 100, "too many pull errors, last: {e}");
            }
        }
        if !args.common.json && last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "[{:>4.0}s] {:>8} msg/s  ({received} of {})",
                started.elapsed().as_secs_f64(),
                received - last_received,
                args.count
            );
            last_report = Instant::now();
            last_received = received;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = received as f64 / elapsed;
    let mb = bytes as f64 / elapsed / (1024.0 * 1024.0);
    if args.common.json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "consume",
                "system": "nats",
                "requested": args.count,
                "received": received,
                "errors": errors,
                "seconds": elapsed,
                "msg_per_s": rate,
                "mb_per_s": mb,
            })
        );
    } else {
        println!(
            "consume: {received} of {} in {elapsed:.1} s = {rate:.0} msg/s, {mb:.1} MB/s (errors {errors})",
            args.count
        );
    }
    anyhow::ensure!(
        received >= args.count,
        "read only {received} of {} messages",
        args.count
    );
    Ok(())
}
