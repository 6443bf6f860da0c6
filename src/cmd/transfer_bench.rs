//! `rocketraft bench transfer`: move a group's leadership N times under a steady produce
//! load (TRANSFER_LEADERSHIP, as `rocketraft admin transfer-leader` does) and measure, per
//! transfer, how long the group stopped acknowledging sends: the planned counterpart of
//! `rocketraft bench failover` ([`super::failover_bench`]), with the same load and the same
//! gap measure, so the two figures sit side by side.
//!
//! The cluster is one this command starts (a name server and a three-node group on loopback,
//! under `--dir`). Leadership moves round the group (n0 -> n1 -> n2 -> n0 ...), with
//! `--settle-ms` of steady load before each transfer.
//!
//! Per transfer it reports:
//! - **gap**: the longest time without any acknowledgement, from the last one before the
//!   request to the first one after the name server routes the new leader;
//! - **routed**: from the request until the name server routes the new leader;
//! - **held**: how long the old leader held appends (the broker's own figure);
//! - the sends that ended unknown or failed in the window.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use chaos::cluster::Cluster;

use super::failover_bench::{quantile, start_loaded, Acks, Loaded, WAIT};

#[derive(clap::Args)]
pub struct TransferArgs {
    /// Leadership transfers.
    #[arg(short = 'k', long, default_value_t = 10)]
    transfers: usize,
    /// Sends in flight (tasks each sending one at a time).
    #[arg(short = 'w', long, default_value_t = 32)]
    in_flight: usize,
    /// Body size in bytes.
    #[arg(short = 's', long, default_value_t = 1024)]
    size: usize,
    #[arg(short = 't', long, default_value = "TransferBench")]
    topic: String,
    /// Steady load before each transfer, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    settle_ms: u64,
    /// flushDiskType of the cluster this command starts.
    #[arg(long, default_value = "ASYNC_FLUSH")]
    flush: String,
    /// Where the started cluster keeps its data and logs.
    #[arg(long, default_value = "/tmp/rocketraft-transfer-bench")]
    dir: PathBuf,
    /// Print one JSON object at the end instead of the text report.
    #[arg(long)]
    json: bool,
}

struct Transfer {
    from: String,
    to: String,
    gap_ms: f64,
    routed_ms: f64,
    held_ms: f64,
    unknown: u64,
    failed: u64,
}

pub async fn run(args: TransferArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.in_flight > 0, "--in-flight must be at least 1");
    anyhow::ensure!(args.transfers > 0, "--transfers must be at least 1");
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("clear {}", args.dir.display()))?;
    }
    let exe = std::env::current_exe().context("locate the rocketraft binary")?;
    let mut cluster = Cluster::start(&exe, &args.dir, 1, &args.flush, None)?;
    let Loaded {
        group,
        producer,
        acks,
        tasks,
        stop,
    } = start_loaded(
        &cluster,
        "rocketraft-transfer-bench",
        args.in_flight,
        args.size,
        &args.topic,
    )
    .await?;
    let namesrv = cluster.namesrv()?;

    let members = cluster.group_nodes(&group);
    let mut transfers = Vec::new();
    for n in 1..=args.transfers {
        tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
        let leader = cluster.wait_for_leader(&group, WAIT).await?;
        let at = members.iter().position(|i| *i == leader).unwrap_or(0);
        let target = members[(at + 1) % members.len()];
        let (unknown0, failed0) = acks.errors();
        let before_us = acks.record();
        let asked_us = acks.now_us();
        let done = client::admin::transfer_leadership(
            &namesrv,
            &group,
            &cluster.nodes[target].name,
            Duration::from_secs(10),
        )
        .await
        .with_context(|| format!("transfer {n} to {}", cluster.nodes[target].label()))?;
        wait_routed(&cluster, &group, target).await?;
        let routed_us = acks.now_us();
        let gap_us = acks
            .gap_until_ack_after(before_us, routed_us, &format!("transfer {n}"))
            .await?;
        let (unknown1, failed1) = acks.errors();
        let transfer = Transfer {
            from: cluster.nodes[leader].label(),
            to: cluster.nodes[target].label(),
            gap_ms: gap_us as f64 / 1000.0,
            routed_ms: (routed_us - asked_us) as f64 / 1000.0,
            held_ms: done.held_ms as f64,
            unknown: unknown1 - unknown0,
            failed: failed1 - failed0,
        };
        if !args.json {
            eprintln!(
                "transfer {n}/{}: {} -> {}  gap {:.0} ms  routed after {:.0} ms  appends held {:.0} ms  (unknown {}, failed {})",
                args.transfers,
                transfer.from,
                transfer.to,
                transfer.gap_ms,
                transfer.routed_ms,
                transfer.held_ms,
                transfer.unknown,
                transfer.failed
            );
        }
        transfers.push(transfer);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    producer.shutdown().await;
    cluster.stop_all();
    report(&args, &transfers, &acks);
    Ok(())
}

/// Waits until the name server routes `target` as `group`'s leader.
async fn wait_routed(cluster: &Cluster, group: &str, target: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while cluster.routed_leader(group).await != Some(target) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} not routed as leader within {WAIT:?}",
            cluster.nodes[target].label()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn report(args: &TransferArgs, transfers: &[Transfer], acks: &Acks) {
    let sorted = |f: fn(&Transfer) -> f64| {
        let mut v: Vec<f64> = transfers.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let gaps = sorted(|t| t.gap_ms);
    let routed = sorted(|t| t.routed_ms);
    let held = sorted(|t| t.held_ms);
    let summary = |v: &[f64]| {
        serde_json::json!({
            "p50": quantile(v, 0.5),
            "max": v.last().copied().unwrap_or(0.0),
        })
    };
    let (unknown, failed) = acks.errors();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "transfer",
                "transfers": transfers.len(),
                "in_flight": args.in_flight,
                "size_bytes": args.size,
                "gap_ms": summary(&gaps),
                "routed_ms": summary(&routed),
                "held_ms": summary(&held),
                "per_transfer": transfers.iter().map(|t| serde_json::json!({
                    "from": t.from,
                    "to": t.to,
                    "gap_ms": t.gap_ms,
                    "routed_ms": t.routed_ms,
                    "held_ms": t.held_ms,
                    "unknown": t.unknown,
                    "failed": t.failed,
                })).collect::<Vec<_>>(),
                "acked": acks.acked(),
                "unknown": unknown,
                "failed": failed,
            })
        );
        return;
    }
    println!(
        "transfer: {} leadership transfers, {} in flight, {} B; acked {}, unknown {unknown}, failed {failed}",
        transfers.len(),
        args.in_flight,
        args.size,
        acks.acked(),
    );
    for (name, v) in [
        ("ack gap ms:      ", &gaps),
        ("leader routed ms:", &routed),
        ("appends held ms: ", &held),
    ] {
        println!(
            "{name} p50 {:.0}  max {:.0}",
            quantile(v, 0.5),
            v.last().copied().unwrap_or(0.0)
        );
    }
}
