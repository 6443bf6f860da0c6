//! `rocketraft bench failover`: SIGKILL the leader N times under a steady produce load
//! and measure, per kill, how long the group stopped acknowledging sends.
//!
//! The cluster is one this command starts (a name server and a three-node group on
//! loopback, under `--dir`) or a running one given by `--attach-namesrv` and
//! `--attach-pids` (the nodes are restarted from their own command lines). Between
//! kills the killed node is restarted and the load runs steadily for `--settle-ms`.
//!
//! Per kill it reports:
//! - **gap**: the longest time without any acknowledgement, from the last one before
//!   the kill to the first one after the new leader is routed (what a producer sees;
//!   sends wait, retry and follow the new leader meanwhile);
//! - **routed**: from the kill until the name server routes a new leader;
//! - the sends that ended unknown or failed in the window.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use chaos::cluster::Cluster;
use client::{Message, Producer, ProducerConfig};

#[derive(clap::Args)]
pub struct FailoverArgs {
    /// Leader kills.
    #[arg(short = 'k', long, default_value_t = 10)]
    kills: usize,
    /// Sends in flight (tasks each sending one at a time).
    #[arg(short = 'w', long, default_value_t = 32)]
    in_flight: usize,
    /// Body size in bytes.
    #[arg(short = 's', long, default_value_t = 1024)]
    size: usize,
    #[arg(short = 't', long, default_value = "FailoverBench")]
    topic: String,
    /// Steady load before each kill (and after each restart), in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    settle_ms: u64,
    /// flushDiskType of the cluster this command starts.
    #[arg(long, default_value = "ASYNC_FLUSH")]
    flush: String,
    /// Where the started cluster keeps its data and logs.
    #[arg(long, default_value = "/tmp/rocketraft-failover-bench")]
    dir: PathBuf,
    /// Use a running cluster: its name server (needs --attach-pids).
    #[arg(long, requires = "attach_pids")]
    attach_namesrv: Option<String>,
    /// The running cluster's broker PIDs, comma separated.
    #[arg(long, value_delimiter = ',', requires = "attach_namesrv")]
    attach_pids: Vec<i32>,
    /// Print one JSON object at the end instead of the text report.
    #[arg(long)]
    json: bool,
}

/// Longest wait for a new leader, or for the first acknowledgement after a kill.
pub(super) const WAIT: Duration = Duration::from_secs(30);

/// Acknowledgement times (µs since start), kept only while a kill is being measured.
pub(super) struct Acks {
    start: Instant,
    acked: AtomicU64,
    unknown: AtomicU64,
    failed: AtomicU64,
    last_us: AtomicU64,
    window: Mutex<Vec<u64>>,
    recording: AtomicBool,
}

impl Acks {
    pub(super) fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Starts recording acknowledgement times; returns the time of the last one so far.
    pub(super) fn record(&self) -> u64 {
        self.window.lock().unwrap().clear();
        self.recording.store(true, Ordering::Relaxed);
        self.last_us.load(Ordering::Relaxed)
    }

    /// Acknowledged sends so far.
    pub(super) fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// (unknown, failed) sends so far.
    pub(super) fn errors(&self) -> (u64, u64) {
        (
            self.unknown.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Waits (bounded) for an acknowledgement after `routed_us`, then stops recording and
    /// returns the longest time without acknowledgements from `before_us` (the last one before
    /// the event) up to it. Responses already on their way at the event can land just after it
    /// and must not hide the outage, hence the longest gap rather than the first one.
    pub(super) async fn gap_until_ack_after(
        &self,
        before_us: u64,
        routed_us: u64,
        what: &str,
    ) -> anyhow::Result<u64> {
        let deadline = Instant::now() + WAIT;
        let gap_us = loop {
            let mut window: Vec<u64> = self.window.lock().unwrap().clone();
            window.sort_unstable();
            if let Some(end) = window.iter().position(|t| *t > routed_us) {
                let mut points = vec![before_us];
                points.extend(window[..=end].iter().copied().filter(|t| *t > before_us));
                break points.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no send acknowledged within {WAIT:?} of {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        self.recording.store(false, Ordering::Relaxed);
        Ok(gap_us)
    }
}

/// The steady produce load both benches run: `in_flight` tasks each sending one message at a
/// time to `topic` until `stop`.
pub(super) fn start_load(
    producer: &Arc<Producer>,
    in_flight: usize,
    size: usize,
    topic: &str,
    stop: &Arc<AtomicBool>,
) -> (Arc<Acks>, Vec<tokio::task::JoinHandle<()>>) {
    let acks = Arc::new(Acks {
        start: Instant::now(),
        acked: AtomicU64::new(0),
        unknown: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        last_us: AtomicU64::new(0),
        window: Mutex::new(Vec::new()),
        recording: AtomicBool::new(false),
    });
    let body = Bytes::from(vec![b'f'; size]);
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (producer, acks, stop, body, topic) = (
            producer.clone(),
            acks.clone(),
            stop.clone(),
            body.clone(),
            topic.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match producer.send(Message::new(&topic, body.clone())).await {
                    Ok(_) => {
                        let now = acks.now_us();
                        acks.acked.fetch_add(1, Ordering::Relaxed);
                        acks.last_us.fetch_max(now, Ordering::Relaxed);
                        if acks.recording.load(Ordering::Relaxed) {
                            acks.window.lock().unwrap().push(now);
                        }
                    }
                    Err(e) if e.is_outcome_unknown() => {
                        acks.unknown.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        acks.failed.fetch_add(1, Ordering::Relaxed);
                        // A definite failure came back at once: do not spin.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }));
    }
    (acks, tasks)
}

/// What a load bench runs against: its group (ready), the producer that created the topic,
/// and the steady load ([`start_load`]) running on it until `stop`.
pub(super) struct Loaded {
    pub(super) group: String,
    pub(super) producer: Arc<Producer>,
    pub(super) acks: Arc<Acks>,
    pub(super) tasks: Vec<tokio::task::JoinHandle<()>>,
    pub(super) stop: Arc<AtomicBool>,
}

/// Waits for the cluster's first group, creates `topic` with one send and starts the load.
pub(super) async fn start_loaded(
    cluster: &Cluster,
    producer_group: &str,
    in_flight: usize,
    size: usize,
    topic: &str,
) -> anyhow::Result<Loaded> {
    let group = cluster
        .groups()
        .first()
        .cloned()
        .context("the cluster has no group")?;
    cluster.wait_ready(WAIT).await?;
    let mut config = ProducerConfig::new(&cluster.namesrv_addr, producer_group);
    config.max_async_sends_in_flight = in_flight;
    let producer = Arc::new(Producer::start(config).await?);
    producer
        .send(Message::new(topic, Bytes::from(vec![b'f'; size])))
        .await
        .context("first send (creates the topic)")?;
    let stop = Arc::new(AtomicBool::new(false));
    let (acks, tasks) = start_load(&producer, in_flight, size, topic, &stop);
    Ok(Loaded {
        group,
        producer,
        acks,
        tasks,
        stop,
    })
}

struct Kill {
    victim: String,
    gap_ms: f64,
    routed_ms: f64,
    unknown: u64,
    failed: u64,
}

pub async fn run(args: FailoverArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.in_flight > 0, "--in-flight must be at least 1");
    anyhow::ensure!(args.kills > 0, "--kills must be at least 1");
    let mut cluster = match &args.attach_namesrv {
        Some(namesrv) => Cluster::attach(namesrv, &args.attach_pids, &args.dir.join("logs"))?,
        None => {
            if args.dir.exists() {
                std::fs::remove_dir_all(&args.dir)
                    .with_context(|| format!("clear {}", args.dir.display()))?;
            }
            let exe = std::env::current_exe().context("locate the rocketraft binary")?;
            Cluster::start(&exe, &args.dir, 1, &args.flush, None)?
        }
    };
    let Loaded {
        group,
        producer,
        acks,
        tasks,
        stop,
    } = start_loaded(
        &cluster,
        "rocketraft-failover-bench",
        args.in_flight,
        args.size,
        &args.topic,
    )
    .await?;

    let mut kills = Vec::new();
    for n in 1..=args.kills {
        tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
        let leader = cluster.wait_for_leader(&group, WAIT).await?;
        let victim = cluster.nodes[leader].label();
        let (unknown0, failed0) = acks.errors();
        let before_us = acks.record();
        let kill_us = acks.now_us();
        cluster.kill(leader);
        cluster.wait_for_leader(&group, WAIT).await?;
        let routed_ms = (acks.now_us() - kill_us) as f64 / 1000.0;
        let routed_us = acks.now_us();
        let gap_us = acks
            .gap_until_ack_after(before_us, routed_us, &format!("killing {victim}"))
            .await?;
        let (unknown1, failed1) = acks.errors();
        let kill = Kill {
            victim,
            gap_ms: gap_us as f64 / 1000.0,
            routed_ms,
            unknown: unknown1 - unknown0,
            failed: failed1 - failed0,
        };
        if !args.json {
            eprintln!(
                "kill {n}/{}: {}  gap {:.0} ms  new leader routed after {:.0} ms  (unknown {}, failed {})",
                args.kills, kill.victim, kill.gap_ms, kill.routed_ms, kill.unknown, kill.failed
            );
        }
        kills.push(kill);
        cluster.start_node(leader)?;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    producer.shutdown().await;
    cluster.stop_all();
    report(&args, &kills, &acks);
    Ok(())
}

/// The `q` quantile (nearest rank) of `sorted`.
pub(super) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn report(args: &FailoverArgs, kills: &[Kill], acks: &Acks) {
    let sorted = |f: fn(&Kill) -> f64| {
        let mut v: Vec<f64> = kills.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let gaps = sorted(|k| k.gap_ms);
    let routed = sorted(|k| k.routed_ms);
    let summary = |v: &[f64]| {
        serde_json::json!({
            "p50": quantile(v, 0.5),
            "p99": quantile(v, 0.99),
            "max": v.last().copied().unwrap_or(0.0),
        })
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "failover",
                "kills": kills.len(),
                "in_flight": args.in_flight,
                "size_bytes": args.size,
                "gap_ms": summary(&gaps),
                "routed_ms": summary(&routed),
                "per_kill": kills.iter().map(|k| serde_json::json!({
                    "victim": k.victim,
                    "gap_ms": k.gap_ms,
                    "routed_ms": k.routed_ms,
                    "unknown": k.unknown,
                    "failed": k.failed,
                })).collect::<Vec<_>>(),
                "acked": acks.acked.load(Ordering::Relaxed),
                "unknown": acks.unknown.load(Ordering::Relaxed),
                "failed": acks.failed.load(Ordering::Relaxed),
            })
        );
    } else {
        println!(
            "failover: {} leader kills, {} in flight, {} B; acked {}, unknown {}, failed {}",
            kills.len(),
            args.in_flight,
            args.size,
            acks.acked.load(Ordering::Relaxed),
            acks.unknown.load(Ordering::Relaxed),
            acks.failed.load(Ordering::Relaxed)
        );
        println!(
            "ack gap ms:       p50 {:.0}  p99 {:.0}  max {:.0}",
            quantile(&gaps, 0.5),
            quantile(&gaps, 0.99),
            gaps.last().copied().unwrap_or(0.0)
        );
        println!(
            "leader routed ms: p50 {:.0}  p99 {:.0}  max {:.0}",
            quantile(&routed, 0.5),
            quantile(&routed, 0.99),
            routed.last().copied().unwrap_or(0.0)
        );
    }
}
