//! `rocketraft bench orderly`: push-consume the same stored backlog twice in one run, once
//! with a concurrent listener and once with an orderly one (each a fresh consumer group
//! starting at the first offset, so both read the same messages), and report msg/s of
//! each and their ratio. The listeners do no work: the figure is what the consumer
//! itself costs, queue locks and one-at-a-time delivery included.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use client::{
    ConsumeFromWhere, ConsumeOrderlyStatus, ConsumeStatus, PullConsumer, PullConsumerConfig,
    PushConsumer, PushConsumerConfig,
};

#[derive(clap::Args)]
pub struct OrderlyArgs {
    /// Name servers, `;`-separated.
    #[arg(short = 'n', long = "namesrv", default_value = "127.0.0.1:9876")]
    namesrv: String,
    #[arg(short = 't', long, default_value = "BenchTopic")]
    topic: String,
    /// Messages each listener must take (default: everything stored when the run starts).
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// Listener calls running at once (`consumeThreadMax`).
    #[arg(long, default_value_t = 20)]
    threads: usize,
    /// Give up on one mode after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_seconds: u64,
    /// Print one JSON object at the end instead of the text report.
    #[arg(long)]
    json: bool,
}

/// Messages stored in every readable queue of `topic` now.
async fn stored(namesrv: &str, topic: &str) -> anyhow::Result<u64> {
    let consumer =
        PullConsumer::start(PullConsumerConfig::new(namesrv, "rocketraft-bench-orderly")).await?;
    let mut stored = 0u64;
    for q in consumer.fetch_queues(topic).await? {
        let (min, max) = (
            consumer.min_offset(&q).await?,
            consumer.max_offset(&q).await?,
        );
        stored += (max - min).max(0) as u64;
    }
    consumer.shutdown().await;
    Ok(stored)
}

/// Consumes `want` messages of the backlog with a fresh group; msg/s.
async fn one_mode(args: &OrderlyArgs, orderly: bool, want: u64) -> anyhow::Result<f64> {
    let mode = if orderly { "orderly" } else { "concurrent" };
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let mut config =
        PushConsumerConfig::new(&args.namesrv, format!("rocketraft-bench-{mode}-{stamp}"));
    config.consume_from_where = ConsumeFromWhere::FirstOffset;
    config.consume_thread_max = args.threads;
    let mut consumer = PushConsumer::new(config);
    consumer.subscribe(&args.topic, "*")?;
    let taken = Arc::new(AtomicU64::new(0));
    let counter = taken.clone();
    if orderly {
        consumer.register_orderly_listener(move |msgs| {
            counter.fetch_add(msgs.len() as u64, Ordering::Relaxed);
            ConsumeOrderlyStatus::Success
        });
    } else {
        consumer.register_message_listener(move |msgs| {
            counter.fetch_add(msgs.len() as u64, Ordering::Relaxed);
            ConsumeStatus::ConsumeSuccess
        });
    }
    let started = Instant::now();
    consumer.start().await?;
    let progress =
        super::bench::spawn_progress(taken.clone(), args.json, started, move |rate, now| {
            format!("{mode}: {rate:>8} msg/s  ({now} of {want})")
        });
    let deadline = started + Duration::from_secs(args.timeout_seconds);
    while taken.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    progress.abort();
    consumer.shutdown().await;
    let got = taken.load(Ordering::Relaxed);
    anyhow::ensure!(got >= want, "{mode}: took only {got} of {want} messages");
    Ok(want as f64 / elapsed)
}

pub async fn run(args: OrderlyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.threads > 0, "--threads must be at least 1");
    let stored = stored(&args.namesrv, &args.topic).await?;
    let want = args.count.unwrap_or(stored);
    anyhow::ensure!(
        want > 0 && stored >= want,
        "topic {} holds {stored} messages; asked for {want}",
        args.topic
    );
    let concurrent = one_mode(&args, false, want).await?;
    let orderly = one_mode(&args, true, want).await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "orderly",
                "messages": want,
                "concurrent_msg_per_s": concurrent,
                "orderly_msg_per_s": orderly,
                "orderly_over_concurrent": orderly / concurrent,
            })
        );
    } else {
        println!(
            "push consume of {want} stored messages: concurrent {concurrent:.0} msg/s, orderly {orderly:.0} msg/s (orderly/concurrent {:.2})",
            orderly / concurrent
        );
    }
    Ok(())
}
