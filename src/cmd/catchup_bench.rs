//! `rocketraft bench catch-up`: how fast a follower that is behind the purge point catches
//! up by snapshot while the group serves a steady produce load, and what the load's
//! throughput does meanwhile.
//!
//! It starts a name server and a three-node group (under `--dir`) with short retention
//! (`fileReservedTimeSeconds`, `deleteWhen=*`), runs the load of `rocketraft bench
//! failover` ([`super::failover_bench`]) until the retained log is full, SIGKILLs a follower,
//! keeps the load on until the others have purged past everything it holds, then restarts
//! it. The leader streams it a snapshot (its state and its CommitLog from the first kept
//! segment, see docs/DESIGN-NOTES.md "Snapshots carry the whole state"). Reported, from the
//! leader's log line "snapshot sent and installed": the snapshot's bytes and the time from
//! its first chunk to its installation, so the rate in MB/s; and the acknowledged sends per
//! second before the restart, during the transfer and after it.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use chaos::cluster::Cluster;

use super::failover_bench::{start_loaded, Acks, Loaded, WAIT};

#[derive(clap::Args)]
pub struct CatchUpArgs {
    /// Sends in flight (tasks each sending one at a time).
    #[arg(short = 'w', long, default_value_t = 32)]
    in_flight: usize,
    /// Body size in bytes.
    #[arg(short = 's', long, default_value_t = 1024)]
    size: usize,
    #[arg(short = 't', long, default_value = "CatchUpBench")]
    topic: String,
    /// CommitLog segment size, in MiB (`mappedFileSizeCommitLog`).
    #[arg(long, default_value_t = 64)]
    segment_mib: u64,
    /// Retention in seconds (`fileReservedTimeSeconds`): with the load's rate, how much
    /// CommitLog a snapshot carries.
    #[arg(long, default_value_t = 20)]
    retention_s: u64,
    /// flushDiskType of the group.
    #[arg(long, default_value = "ASYNC_FLUSH")]
    flush: String,
    /// Where the group keeps its data and logs (removed first).
    #[arg(long, default_value = "/tmp/rocketraft-catchup-bench")]
    dir: PathBuf,
}

/// Longest wait for the snapshot to be sent and installed.
const INSTALL_WAIT: Duration = Duration::from_secs(600);

/// The start of the first CommitLog segment file under `store`.
fn first_segment(store: &Path) -> Option<u64> {
    std::fs::read_dir(store.join("commitlog"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .min()
}

/// The end of the last CommitLog segment file under `store`.
fn segments_end(store: &Path, segment_bytes: u64) -> u64 {
    std::fs::read_dir(store.join("commitlog"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
                .max()
                .map_or(0, |s| s + segment_bytes)
        })
        .unwrap_or(0)
}

/// Without terminal colour sequences.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// (bytes, elapsed ms) of the last "snapshot sent and installed" line in `log`.
fn installed(log: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .rev()
        .map(plain)
        .find(|l| l.contains("snapshot sent and installed"))?;
    let field = |key: &str| -> Option<u64> {
        let at = line.find(&format!(" {key}="))? + key.len() + 2;
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some((field("bytes")?, field("elapsed_ms")?))
}

/// Acknowledged sends per second over `window`.
async fn rate(acks: &Acks, window: Duration) -> f64 {
    let before = acks.acked();
    tokio::time::sleep(window).await;
    (acks.acked() - before) as f64 / window.as_secs_f64()
}

pub async fn run(args: CatchUpArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.in_flight > 0, "--in-flight must be at least 1");
    anyhow::ensure!(args.segment_mib > 0, "--segment-mib must be at least 1");
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("clear {}", args.dir.display()))?;
    }
    let segment_bytes = args.segment_mib << 20;
    let exe = std::env::current_exe().context("locate the rocketraft binary")?;
    // The disk ratios at 100%: how full this machine's disk is must not decide the run.
    let extra = format!(
        "mappedFileSizeCommitLog={segment_bytes}\nfileReservedTimeSeconds={}\ndeleteWhen=*\n\
         cleanResourceInterval=1000\ndiskMaxUsedSpaceRatio=100\ndiskSpaceCleanForciblyRatio=100\n\
         diskSpaceWarningLevelRatio=100",
        args.retention_s
    );
    let mut cluster = Cluster::start_with(&exe, &args.dir, 1, &args.flush, None, &extra)?;
    let Loaded {
        group,
        producer,
        acks,
        tasks,
        stop,
    } = start_loaded(
        &cluster,
        "rocketraft-catchup-bench",
        args.in_flight,
        args.size,
        &args.topic,
    )
    .await?;

    // Fill the retained window, then take a follower away.
    let filling = Duration::from_secs(args.retention_s + 10);
    println!("filling the retained log for {filling:?}");
    tokio::time::sleep(filling).await;
    let leader = cluster.wait_for_leader(&group, WAIT).await?;
    let follower = (0..cluster.nodes.len())
        .find(|i| *i != leader)
        .context("no follower")?;
    let holds = segments_end(&cluster.nodes[follower].store, segment_bytes);
    cluster.kill(follower);
    println!(
        "killed {} (its CommitLog ends at {holds}); waiting for the others to purge past it",
        cluster.nodes[follower].label()
    );
    let deadline = Instant::now() + INSTALL_WAIT;
    loop {
        let passed = (0..cluster.nodes.len())
            .filter(|i| *i != follower)
            .all(|i| first_segment(&cluster.nodes[i].store).is_some_and(|f| f >= holds));
        if passed {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "retention did not pass {holds}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let before = rate(&acks, Duration::from_secs(5)).await;

    let leader = cluster.wait_for_leader(&group, WAIT).await?;
    let leader_log = cluster.nodes[leader].log.clone();
    let restarted = Instant::now();
    let acked_at_restart = acks.acked();
    cluster.start_node(follower)?;
    let (bytes, elapsed_ms) = loop {
        if let Some(done) = installed(&leader_log) {
            break done;
        }
        anyhow::ensure!(
            restarted.elapsed() < INSTALL_WAIT,
            "no snapshot installed within {INSTALL_WAIT:?}; logs in {}",
            args.dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let until_installed = restarted.elapsed();
    let during = (acks.acked() - acked_at_restart) as f64 / until_installed.as_secs_f64();
    let after = rate(&acks, Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let (unknown, failed) = acks.errors();
    let mb = bytes as f64 / 1e6;
    println!(
        "snapshot: {mb:.1} MB in {elapsed_ms} ms = {:.1} MB/s (restart to installed: {:.1} s)",
        mb / (elapsed_ms.max(1) as f64 / 1000.0),
        until_installed.as_secs_f64()
    );
    println!(
        "load ({} B x {} in flight): {before:.0} msg/s before the restart, {during:.0} during the \
         catch-up, {after:.0} after; {unknown} sends ended unknown, {failed} failed",
        args.size, args.in_flight
    );
    producer.shutdown().await;
    drop(cluster);
    std::fs::remove_dir_all(&args.dir).ok();
    Ok(())
}
