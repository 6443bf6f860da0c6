//! `rocketraft bench query`: query latency by key with many messages stored. Sends
//! `--count` small messages, message i with the key `<prefix>-<i>` (in batches, to load
//! quickly), then times `--queries` QUERY_MESSAGE requests, one at a time, each for the key
//! of a random message sent, against one member of every broker group of the topic (the
//! routed leader, or with `--member N` the N-th member the route lists), and prints
//! p50/p99/p999/max. Every query must find exactly its message: a miss or an extra message
//! is counted and reported; messages whose send failed are not queried. With `--count 0` nothing is sent and `--key-space` names how
//! many messages an earlier run with the same `--prefix` sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Message, MessageExt, NameServerClient, Producer, ProducerConfig};
use hdrhistogram::Histogram;
use remoting::header::QueryMessageRequestHeader;
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};

#[derive(clap::Args)]
pub struct QueryArgs {
    /// Name servers, `;`-separated.
    #[arg(short = 'n', long = "namesrv", default_value = "127.0.0.1:9876")]
    namesrv: String,
    #[arg(short = 't', long, default_value = "BenchQuery")]
    topic: String,
    /// Messages to send before querying (0: query what an earlier run sent).
    #[arg(short = 'c', long, default_value_t = 1_000_000)]
    count: u64,
    /// With --count 0: how many messages the earlier run sent.
    #[arg(long)]
    key_space: Option<u64>,
    /// Keys are `<prefix>-<i>`.
    #[arg(long, default_value = "bq")]
    prefix: String,
    /// Body size in bytes.
    #[arg(short = 's', long, default_value_t = 100)]
    size: usize,
    /// Messages per batch send.
    #[arg(long, default_value_t = 32)]
    batch: u64,
    /// Batch sends in flight.
    #[arg(short = 'w', long, default_value_t = 32)]
    in_flight: usize,
    /// Key queries to time.
    #[arg(short = 'q', long, default_value_t = 10_000)]
    queries: u64,
    /// Ask the N-th member of each group the route lists (0: the leader).
    #[arg(long, default_value_t = 0)]
    member: usize,
}

pub async fn run(a: QueryArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.batch > 0 && a.queries > 0,
        "batch and queries must be > 0"
    );
    let mut failed_ranges = Vec::new();
    let key_space = if a.count > 0 {
        failed_ranges = send_all(&a).await?;
        a.count
    } else {
        a.key_space
            .ok_or_else(|| anyhow::anyhow!("--count 0 needs --key-space"))?
    };
    anyhow::ensure!(key_space > 0, "no keys to query");
    let namesrv = NameServerClient::new(&a.namesrv, Duration::from_secs(3))?;
    let route = namesrv
        .topic_route(&a.topic)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no route for {}", a.topic))?;
    let mut members = Vec::new();
    for group in &route.broker_datas {
        let addr =
            group.broker_addrs.values().nth(a.member).ok_or_else(|| {
                anyhow::anyhow!("{} has no member {}", group.broker_name, a.member)
            })?;
        let conn = Connection::connect(
            addr,
            &ConnectionConfig::default(),
            Arc::new(remoting::connection::NoRequests),
        )
        .await?;
        members.push((addr.clone(), conn));
    }
    println!(
        "querying {} keys of {key_space} at {}",
        a.queries,
        members
            .iter()
            .map(|(a, _)| a.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut latency = Histogram::<u64>::new(3)?;
    let (mut missed, mut extra) = (0u64, 0u64);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..a.queries {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut i = rng % key_space;
        // A send that failed may not be stored: query a neighbour that was acknowledged.
        while failed_ranges
            .iter()
            .any(|r: &std::ops::Range<u64>| r.contains(&i))
        {
            i = (i + 1) % key_space;
        }
        let key = format!("{}-{}", a.prefix, i);
        let started = Instant::now();
        let mut found = 0usize;
        for (addr, conn) in &members {
            found += query_one(addr, conn, &a.topic, &key).await?;
        }
        latency.record(started.elapsed().as_micros() as u64)?;
        match found {
            0 => missed += 1,
            1 => {}
            _ => extra += 1,
        }
    }
    for (_, conn) in &members {
        conn.close();
    }
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1_000.0;
    println!(
        "query by key, {} queries over {key_space} stored: p50 {:.3} ms p99 {:.3} ms p999 {:.3} ms max {:.3} ms; {missed} found nothing, {extra} found more than one",
        latency.len(),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        latency.max() as f64 / 1_000.0
    );
    anyhow::ensure!(
        missed == 0 && extra == 0,
        "some queries did not find exactly their message"
    );
    Ok(())
}

/// Messages one member answers for `key`.
async fn query_one(addr: &str, conn: &Connection, topic: &str, key: &str) -> anyhow::Result<usize> {
    let header = QueryMessageRequestHeader {
        topic: topic.to_string(),
        key: key.to_string(),
        max_num: 64,
        begin_timestamp: 0,
        end_timestamp: i64::MAX,
    };
    let response = conn
        .request(
            RemotingCommand::request(RequestCode::QUERY_MESSAGE, &header),
            Duration::from_secs(5),
        )
        .await?;
    match response.response_code() {
        Some(ResponseCode::SUCCESS) => Ok(MessageExt::decode_all(&response.body, "")?.len()),
        Some(ResponseCode::QUERY_NOT_FOUND) => Ok(0),
        _ => anyhow::bail!("{addr} answered {}: {:?}", response.code, response.remark),
    }
}

/// Sends messages `0..count`, each with its key, in batches; reports the rate. Returns the
/// ranges of messages whose batch send failed (or had an unknown outcome).
async fn send_all(a: &QueryArgs) -> anyhow::Result<Vec<std::ops::Range<u64>>> {
    let producer = Producer::start(ProducerConfig::new(&a.namesrv, "bench-query")).await?;
    let body = bytes::Bytes::from(vec![b'q'; a.size]);
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.in_flight.max(1) {
        let (producer, next, failed, body) =
            (producer.clone(), next.clone(), failed.clone(), body.clone());
        let (count, batch, topic, prefix) = (a.count, a.batch, a.topic.clone(), a.prefix.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= count {
                    return;
                }
                let msgs: Vec<Message> = (first..(first + batch).min(count))
                    .map(|i| {
                        Message::new(&topic, body.clone()).with_keys([format!("{prefix}-{i}")])
                    })
                    .collect();
                let n = msgs.len() as u64;
                if producer.send_batch(msgs).await.is_err() {
                    failed.lock().unwrap().push(first..first + n);
                }
            }
        }));
    }
    let progress = {
        let next = next.clone();
        let count = a.count;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let sent = next.load(Ordering::Relaxed).min(count);
                println!(
                    "sent {sent} of {count} ({:.0} s)",
                    started.elapsed().as_secs_f64()
                );
            }
        })
    };
    for t in tasks {
        t.await?;
    }
    progress.abort();
    producer.shutdown().await;
    let secs = started.elapsed().as_secs_f64();
    let failed = std::mem::take(&mut *failed.lock().unwrap());
    let failed_count: u64 = failed.iter().map(|r| r.end - r.start).sum();
    println!(
        "stored {} messages in {secs:.1} s: {:.0} msg/s ({failed_count} in failed or unknown batch sends, not queried)",
        a.count - failed_count,
        (a.count - failed_count) as f64 / secs
    );
    anyhow::ensure!(failed_count < a.count, "every send failed");
    Ok(failed)
}
