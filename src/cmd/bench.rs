//! `rocketraft bench produce`: send fixed-size messages through the client against a
//! running cluster and report throughput and acknowledgement latency.
//!
//! `--in-flight N` sends from N tasks, each waiting for its acknowledgement before the
//! next send (N = 1 measures one-at-a-time latency), spread over `--producers P`
//! producer instances and `--topics T` topics (created first with `--queues Q` queues
//! per group when given, in batches of UPDATE_AND_CREATE_TOPIC_LIST, and the creation
//! rate printed). A progress line is printed every
//! second; at the end p50/p90/p99/p999/max from an HDR histogram, msg/s and MB/s, and
//! with `--json` one JSON object for scripts. Unknown outcomes and failures are counted,
//! never hidden.
//!
//! `rocketraft bench consume`: catch-up read of messages already stored. Every readable
//! queue of the topic is read from its min offset by its own task, as fast as the broker
//! answers non-held pulls, until `--count` messages (over all queues) or the end of every
//! queue; reports msg/s. Offsets are not committed, so runs can be repeated.
//!
//! `rocketraft bench failover`: see [`super::failover_bench`]; `rocketraft bench transfer`:
//! see [`super::transfer_bench`]; `rocketraft bench e2e`:
//! see [`super::e2e_bench`]; `rocketraft bench delay`: see [`super::delay_bench`];
//! `rocketraft bench orderly`: see [`super::orderly_bench`].
//! `rocketraft bench txn`: see [`super::txn_bench`].
//! `rocketraft bench query`: see [`super::query_bench`].
//! `rocketraft bench catch-up`: see [`super::catchup_bench`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{Message, Producer, ProducerConfig};
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Produce throughput and acknowledgement latency.
    Produce(ProduceArgs),
    /// Catch-up consume: read stored messages back as fast as possible.
    Consume(ConsumeArgs),
    /// Kill the leader N times under load; report the acknowledgement gap per kill.
    Failover(super::failover_bench::FailoverArgs),
    /// Move the leadership N times under load; report the acknowledgement gap per transfer.
    Transfer(super::transfer_bench::TransferArgs),
    /// A follower behind the purge point catches up by snapshot under load: MB/s, and the
    /// load's throughput before, during and after.
    CatchUp(super::catchup_bench::CatchUpArgs),
    /// End-to-end latency: from the producer's send to the consumer's receipt.
    E2e(super::e2e_bench::E2eArgs),
    /// Timer messages at volume: stored/s, delivered/s, lateness after the due time.
    Delay(super::delay_bench::DelayArgs),
    /// Push-consume one backlog with a concurrent listener, then an orderly one: msg/s.
    Orderly(super::orderly_bench::OrderlyArgs),
    /// Transactional sends (half + commit) against plain sends, side by side.
    Txn(super::txn_bench::TxnArgs),
    /// Query latency by key with many messages stored.
    Query(super::query_bench::QueryArgs),
}

#[derive(clap::Args)]
struct ConsumeArgs {
    /// Name servers, `;`-separated.
    #[arg(short = 'n', long = "namesrv", default_value = "127.0.0.1:9876")]
    namesrv: String,
    #[arg(short = 't', long, default_value = "BenchTopic")]
    topic: String,
    /// Stop after this many messages (default: everything stored when the run starts).
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// Messages asked for in one pull (the broker caps it at its maxPullMsgNums).
    #[arg(long, default_value_t = 64)]
    batch: i32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
    /// Print one JSON object at the end instead of the text report.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ProduceArgs {
    /// Name servers, `;`-separated.
    #[arg(short = 'n', long = "namesrv", default_value = "127.0.0.1:9876")]
    namesrv: String,
    #[arg(short = 't', long, default_value = "BenchTopic")]
    topic: String,
    /// Body size in bytes.
    #[arg(short = 's', long, default_value_t = 1024)]
    size: usize,
    /// Sends in flight (tasks each sending one at a time).
    #[arg(short = 'w', long, default_value_t = 256)]
    in_flight: usize,
    /// How long to send, in seconds.
    #[arg(short = 'd', long, default_value_t = 10)]
    seconds: u64,
    /// Stop after this many acknowledged messages instead.
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// Producer instances (each its own client and connections); the in-flight tasks
    /// are spread over them.
    #[arg(short = 'p', long, default_value_t = 1)]
    producers: usize,
    /// Topics: with more than one, `<topic>-0`, `<topic>-1`, ..., spread over the tasks.
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// Create the topics first with this many queues on every group (default: created
    /// on first send with the broker's default).
    #[arg(short = 'q', long)]
    queues: Option<i32>,
    /// Print one JSON object at the end instead of the text report.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    access: super::admin::Access,
}

struct Stats {
    histogram: Mutex<Histogram<u64>>,
    acked: Arc<AtomicU64>,
    unknown: AtomicU64,
    failed: AtomicU64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Produce(a) => produce(a).await,
        What::Consume(a) => consume(a).await,
        What::Failover(a) => super::failover_bench::run(a).await,
        What::Transfer(a) => super::transfer_bench::run(a).await,
        What::CatchUp(a) => super::catchup_bench::run(a).await,
        What::E2e(a) => super::e2e_bench::run(a).await,
        What::Delay(a) => super::delay_bench::run(a).await,
        What::Orderly(a) => super::orderly_bench::run(a).await,
        What::Txn(a) => super::txn_bench::run(a).await,
        What::Query(a) => super::query_bench::run(a).await,
    }
}

/// Prints a progress line to stderr every second (unless `quiet`) until aborted:
/// `[<seconds>s] ` and then `line(per-second increase of the count, the count)`.
pub(super) fn spawn_progress(
    counter: Arc<AtomicU64>,
    quiet: bool,
    started: Instant,
    line: impl Fn(u64, u64) -> String + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = counter.load(Ordering::Relaxed);
            if !quiet {
                eprintln!(
                    "[{:>4.0}s] {}",
                    started.elapsed().as_secs_f64(),
                    line(now - last, now)
                );
            }
            last = now;
        }
    })
}

/// The `q` quantile of a histogram of microseconds, in milliseconds.
pub(super) fn percentile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// p50/p90/p99/p999/max of a histogram of microseconds, in milliseconds, as JSON.
pub(super) fn latency_json(h: &Histogram<u64>) -> serde_json::Value {
    serde_json::json!({
        "p50": percentile_ms(h, 0.5),
        "p90": percentile_ms(h, 0.9),
        "p99": percentile_ms(h, 0.99),
        "p999": percentile_ms(h, 0.999),
        "max": h.max() as f64 / 1000.0,
    })
}

/// The same as one line of text.
pub(super) fn latency_line(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.2}  p90 {:.2}  p99 {:.2}  p999 {:.2}  max {:.2}",
        percentile_ms(h, 0.5),
        percentile_ms(h, 0.9),
        percentile_ms(h, 0.99),
        percentile_ms(h, 0.999),
        h.max() as f64 / 1000.0
    )
}

async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.in_flight > 0, "--in-flight must be at least 1");
    anyhow::ensure!(args.producers > 0, "--producers must be at least 1");
    anyhow::ensure!(args.topics > 0, "--topics must be at least 1");
    let topics: Vec<String> = if args.topics == 1 {
        vec![args.topic.clone()]
    } else {
        (0..args.topics)
            .map(|i| format!("{}-{i}", args.topic))
            .collect()
    };
    if let Some(queues) = args.queues {
        anyhow::ensure!(queues > 0, "--queues must be at least 1");
        let connection = args
            .access
            .apply(client::ClientConfig::new(&args.namesrv))?
            .connection;
        let namesrv = client::NameServerClient::new(&args.namesrv, Duration::from_secs(3))?
            .with_connection(connection);
        let begin = Instant::now();
        client::admin::create_topics(&namesrv, &topics, queues, Duration::from_secs(10)).await?;
        let seconds = begin.elapsed().as_secs_f64();
        eprintln!(
            "created {} topics ({queues} queues each, every group) in {seconds:.2} s = {:.0} topics/s",
            topics.len(),
            topics.len() as f64 / seconds
        );
    }
    let mut producers = Vec::with_capacity(args.producers);
    for _ in 0..args.producers {
        let mut config = ProducerConfig::new(&args.namesrv, "rocketraft-bench");
        config.client = args.access.apply(config.client)?;
        config.max_async_sends_in_flight = args.in_flight.div_ceil(args.producers);
        let producer = Arc::new(Producer::start(config).await?);
        // Create the topics (and learn their routes) before timing anything, 64 at a time.
        let warm = Bytes::from(vec![b'w'; args.size]);
        futures::stream::iter(&topics)
            .map(|topic| producer.send(Message::new(topic, warm.clone())))
            .buffer_unordered(64)
            .try_for_each(|_| async { Ok(()) })
            .await?;
        producers.push(producer);
    }
    let body = Bytes::from(vec![b'x'; args.size]);
    let stats = Arc::new(Stats {
        histogram: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        acked: Arc::new(AtomicU64::new(0)),
        unknown: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    let topics = Arc::new(topics);
    let in_flight = args.in_flight;
    for task in 0..in_flight {
        let (producer, stats, stop, body, topics) = (
            producers[task % producers.len()].clone(),
            stats.clone(),
            stop.clone(),
            body.clone(),
            topics.clone(),
        );
        let count = args.count;
        tasks.push(tokio::spawn(async move {
            // Task `task` sends its n-th message to topic `task + n * in_flight`: every
            // topic gets its share even when there are more topics than sends in flight.
            let mut next = task;
            while !stop.load(Ordering::Relaxed) {
                let topic = &topics[next % topics.len()];
                next = (next + in_flight) % topics.len();
                let begin = Instant::now();
                if begin >= deadline
                    || count.is_some_and(|c| stats.acked.load(Ordering::Relaxed) >= c)
                {
                    break;
                }
                match producer.send(Message::new(topic, body.clone())).await {
                    Ok(_) => {
                        // One shared histogram, one short lock per sample: merging per-task
                        // histograms walked every bucket each time and cost the client about
                        // 4% of its CPU.
                        let micros = begin.elapsed().as_micros().max(1) as u64;
                        let _ = stats.histogram.lock().unwrap().record(micros);
                        stats.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.is_outcome_unknown() => {
                        stats.unknown.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // One progress line a second.
    let progress = {
        let stats = stats.clone();
        spawn_progress(stats.acked.clone(), args.json, started, move |rate, _| {
            let h = stats.histogram.lock().unwrap();
            format!(
                "{rate:>8} msg/s  p50 {:.2} ms  p99 {:.2} ms  (unknown {}, failed {})",
                percentile_ms(&h, 0.5),
                percentile_ms(&h, 0.99),
                stats.unknown.load(Ordering::Relaxed),
                stats.failed.load(Ordering::Relaxed)
            )
        })
    };
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    progress.abort();
    for producer in &producers {
        producer.shutdown().await;
    }

    let h = stats.histogram.lock().unwrap();
    let acked = stats.acked.load(Ordering::Relaxed);
    let rate = acked as f64 / elapsed;
    let mb = rate * args.size as f64 / (1024.0 * 1024.0);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "produce",
                "size_bytes": args.size,
                "in_flight": args.in_flight,
                "producers": args.producers,
                "topics": args.topics,
                "seconds": elapsed,
                "acked": acked,
                "unknown": stats.unknown.load(Ordering::Relaxed),
                "failed": stats.failed.load(Ordering::Relaxed),
                "msg_per_s": rate,
                "mb_per_s": mb,
                "latency_ms": latency_json(&h),
            })
        );
    } else {
        println!(
            "produce: {acked} acked in {elapsed:.1} s = {rate:.0} msg/s, {mb:.1} MB/s ({} B, {} in flight; unknown {}, failed {})",
            args.size,
            args.in_flight,
            stats.unknown.load(Ordering::Relaxed),
            stats.failed.load(Ordering::Relaxed)
        );
        println!("latency ms: {}", latency_line(&h));
    }
    Ok(())
}

async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    use client::{PullConsumer, PullConsumerConfig, PullResult};

    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    let consumer = PullConsumer::start(PullConsumerConfig::new(
        &args.namesrv,
        "rocketraft-bench-consume",
    ))
    .await?;
    let queues = consumer.fetch_queues(&args.topic).await?;
    // What is stored now is what we read: each queue from its min to its current max.
    let mut ranges = Vec::new();
    let mut stored = 0u64;
    for q in &queues {
        let (min, max) = (consumer.min_offset(q).await?, consumer.max_offset(q).await?);
        stored += (max - min).max(0) as u64;
        ranges.push((q.clone(), min, max));
    }
    let want = args.count.unwrap_or(stored);
    anyhow::ensure!(
        stored >= want,
        "topic {} holds {stored} messages, fewer than the {want} asked for",
        args.topic
    );
    let received = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_seconds);
    let mut tasks = Vec::new();
    for (queue, min, max) in ranges {
        let (consumer, received, bytes, errors) = (
            consumer.clone(),
            received.clone(),
            bytes.clone(),
            errors.clone(),
        );
        let batch = args.batch;
        tasks.push(tokio::spawn(async move {
            let mut offset = min;
            // Bounded: every pull either advances the offset or counts an error.
            while offset < max
                && received.load(Ordering::Relaxed) < want
                && Instant::now() < deadline
                && errors.load(Ordering::Relaxed) < 100
            {
                match consumer
                    .pull(&queue, offset, batch, "*", Duration::ZERO)
                    .await
                {
                    Ok(PullResult::Found {
                        messages,
                        next_begin_offset,
                        ..
                    }) => {
                        let n: u64 = messages.len() as u64;
                        let b: u64 = messages.iter().map(|m| m.body.len() as u64).sum();
                        received.fetch_add(n, Ordering::Relaxed);
                        bytes.fetch_add(b, Ordering::Relaxed);
                        offset = next_begin_offset;
                    }
                    Ok(other) => {
                        let next = other.next_begin_offset();
                        if next <= offset {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        offset = next.max(offset);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let progress = spawn_progress(received.clone(), args.json, started, move |rate, now| {
        format!("{rate:>8} msg/s  ({now} of {want})")
    });
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    progress.abort();
    consumer.shutdown().await;
    let received = received.load(Ordering::Relaxed);
    let errors = errors.load(Ordering::Relaxed);
    let rate = received as f64 / elapsed;
    let mb = bytes.load(Ordering::Relaxed) as f64 / elapsed / (1024.0 * 1024.0);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "consume",
                "system": "rocketraft",
                "queues": queues.len(),
                "requested": want,
                "received": received,
                "errors": errors,
                "seconds": elapsed,
                "msg_per_s": rate,
                "mb_per_s": mb,
            })
        );
    } else {
        println!(
            "consume: {received} of {want} from {} queues in {elapsed:.1} s = {rate:.0} msg/s, {mb:.1} MB/s (errors {errors})",
            queues.len()
        );
    }
    anyhow::ensure!(received >= want, "read only {received} of {want} messages");
    Ok(())
}
