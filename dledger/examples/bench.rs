//! Throughput and commit latency of a three-node dledger group on loopback TCP.
//!
//! `cargo run --release -p dledger --example bench -- --flush sync|async --tasks N --seconds S
//!  [--record-bytes 1024] [--segment-mib 128] [--inflight-entries N] [--dir PATH]`
//!
//! Each of N tasks appends one record per call to the leader and waits for the answer
//! (committed on a quorum and applied); the latency of that call is the commit latency.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use dledger::DLedgerConfig;
use dledger::DLedgerNode;
use dledger::FlushMode;
use dledger::NoopHook;
use dledger::Peer;
use dledger::Role;

struct Args {
    flush: FlushMode,
    tasks: usize,
    seconds: u64,
    record_bytes: usize,
    segment_mib: u64,
    inflight_entries: Option<usize>,
    dir: Option<std::path::PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        flush: FlushMode::Sync,
        tasks: 64,
        seconds: 10,
        record_bytes: 1024,
        segment_mib: 128,
        inflight_entries: None,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--flush" => args.flush = FlushMode::parse(&value)?,
            "--tasks" => args.tasks = value.parse()?,
            "--seconds" => args.seconds = value.parse()?,
            "--record-bytes" => args.record_bytes = value.parse()?,
            "--segment-mib" => args.segment_mib = value.parse()?,
            "--inflight-entries" => args.inflight_entries = Some(value.parse()?),
            "--dir" => args.dir = Some(value.into()),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    anyhow::ensure!(args.record_bytes >= 8, "--record-bytes must be at least 8");
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("error"))
        .init();
    let temp = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());

    let mut listeners = Vec::new();
    let mut peers = Vec::new();
    for id in 0..3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        peers.push(Peer {
            id,
            addr: listener.local_addr()?.to_string(),
        });
        listeners.push(listener);
    }
    let mut nodes = Vec::new();
    for (id, listener) in listeners.into_iter().enumerate() {
        let mut config = DLedgerConfig::new(id as u64, peers.clone(), dir.join(format!("n{id}")));
        config.flush_mode = args.flush;
        config.segment_bytes = args.segment_mib << 20;
        config.max_entry_bytes = (config.segment_bytes as usize / 4).min(4 << 20);
        if let Some(n) = args.inflight_entries {
            config.max_inflight_entries = n;
        }
        nodes.push(Arc::new(
            DLedgerNode::start_with_listener(config, NoopHook, listener).await?,
        ));
    }
    let leader = loop {
        if let Some(n) = nodes
            .iter()
            .find(|n| n.role_watch().borrow().role == Role::Leader)
        {
            break Arc::clone(n);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Let the background pre-allocation of the next segments finish before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut payload = vec![b'm'; args.record_bytes];
    payload[..4].copy_from_slice(&(args.record_bytes as u32).to_be_bytes());
    let record = Bytes::from(payload);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..args.tasks {
        let node = Arc::clone(&leader);
        let record = record.clone();
        handles.push(tokio::spawn(async move {
            let mut latencies_us = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match node.append(vec![record.clone()]).await {
                    Ok(_) => latencies_us.push(t.elapsed().as_micros() as u64),
                    Err(_) => errors += 1,
                }
            }
            (latencies_us, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "flush={:?} tasks={} record_bytes={} seconds={:.1}: {} records, {:.0} records/s, {:.1} MB/s, commit latency p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, errors {}",
        args.flush,
        args.tasks,
        args.record_bytes,
        elapsed,
        latencies.len(),
        latencies.len() as f64 / elapsed,
        latencies.len() as f64 * args.record_bytes as f64 / elapsed / 1e6,
        pct(0.50),
        pct(0.99),
        pct(0.999),
        errors
    );
    for node in &nodes {
        node.shutdown().await?;
    }
    Ok(())
}
