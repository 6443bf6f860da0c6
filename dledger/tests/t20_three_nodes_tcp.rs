//! Proves a three-node group over real TCP (loopback, free ports): elects a leader, commits
//! 100k records appended by concurrent tasks, fails over within 2 s when the leader is killed
//! (its tasks stopped, its files kept), keeps every acknowledged record readable at its
//! acknowledged position on the survivors, and lets the old leader restart from its files and
//! catch up to a byte-identical CommitLog whose hook state (a record count written atomically
//! with the applied point) agrees on every replica.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use common::*;
use dledger::DLedgerNode;

const TASKS: usize = 16;
const RECORDS_PER_CALL: usize = 25;

fn total_records() -> usize {
    std::env::var("DLEDGER_T20_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_tcp_failover_and_catch_up() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (peers, listeners) = bind_peers(3).await;
    let mut nodes: Vec<Option<Arc<DLedgerNode>>> = Vec::new();
    let mut seen = Vec::new();
    for (id, listener) in listeners.into_iter().enumerate() {
        let (hook, s) = RecordingHook::new();
        let config = test_config(id as u64, &peers, dir.path());
        nodes.push(Some(Arc::new(
            DLedgerNode::start_with_listener(config, hook, listener)
                .await
                .unwrap(),
        )));
        seen.push(s);
    }
    let started = Instant::now();
    let leader = wait_leader(&nodes, Duration::from_secs(10)).await;
    println!(
        "initial leader n{leader} elected in {:?}",
        started.elapsed()
    );

    // 100k records from concurrent tasks, each call carrying a few records.
    let total = total_records();
    let calls_per_task = total / TASKS / RECORDS_PER_CALL;
    // Leadership can still move right after the first election (a late candidate); the
    // writers follow the leader, so only acknowledged appends count.
    let shared: Arc<Vec<Option<Arc<DLedgerNode>>>> = Arc::new(nodes.clone());
    let appending = Instant::now();
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let nodes = Arc::clone(&shared);
        handles.push(tokio::spawn(async move {
            let mut acked = Vec::with_capacity(calls_per_task * RECORDS_PER_CALL);
            for call in 0..calls_per_task {
                let batch: Vec<_> = (0..RECORDS_PER_CALL)
                    .map(|i| {
                        record(
                            format!("t{task:02}-c{call:05}-r{i:02}-{}", "x".repeat(30)).as_bytes(),
                        )
                    })
                    .collect();
                let result = append_anywhere(&nodes, batch.clone(), Duration::from_secs(10)).await;
                assert_eq!(result.records.len(), batch.len());
                for (r, bytes) in result.records.iter().zip(batch) {
                    assert_eq!(
                        r.response.as_ref().and_then(|h| h.get::<u64>()),
                        Some(&r.position),
                        "hook saw the acked position"
                    );
                    acked.push((r.position, bytes));
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for h in handles {
        acked.extend(h.await.unwrap());
    }
    let elapsed = appending.elapsed();
    println!(
        "appended {} records in {:?} ({:.0} records/s)",
        acked.len(),
        elapsed,
        acked.len() as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(acked.len(), calls_per_task * TASKS * RECORDS_PER_CALL);
    let positions: HashSet<u64> = acked.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        positions.len(),
        acked.len(),
        "every record has its own position"
    );

    // Kill the current leader: stop its tasks and drop it; its files stay.
    drop(shared);
    let leader = wait_leader(&nodes, Duration::from_secs(10)).await;
    let killed = nodes[leader].take().unwrap();
    killed.shutdown().await.unwrap();
    drop(killed);
    let kill_time = Instant::now();
    let after = append_anywhere(
        &nodes,
        vec![record(b"after-failover")],
        Duration::from_secs(5),
    )
    .await;
    let failover = kill_time.elapsed();
    println!("new leader accepted an append {failover:?} after the old leader was killed");
    assert!(
        failover < Duration::from_secs(2),
        "failover took {failover:?}"
    );
    acked.push((after.records[0].position, record(b"after-failover")));

    // Every acknowledged record is readable, byte for byte, on both survivors.
    let survivors: Vec<Arc<DLedgerNode>> = nodes.iter().flatten().cloned().collect();
    let max_end = acked.iter().map(|(p, b)| p + b.len() as u64).max().unwrap();
    wait_converged(&survivors, max_end, Duration::from_secs(10)).await;
    for node in &survivors {
        for (position, bytes) in &acked {
            let read = node.read(*position, bytes.len()).unwrap();
            assert_eq!(
                &read[..],
                &bytes[..],
                "record at {position} on n{}",
                node.node_id()
            );
        }
    }

    // The old leader restarts from its files (same port) and catches up.
    let listener = tokio::net::TcpListener::bind(&peers[leader].addr)
        .await
        .unwrap();
    let (hook, s) = RecordingHook::new();
    let config = test_config(leader as u64, &peers, dir.path());
    let restarted = Instant::now();
    nodes[leader] = Some(Arc::new(
        DLedgerNode::start_with_listener(config, hook, listener)
            .await
            .unwrap(),
    ));
    seen[leader] = s;
    let all: Vec<Arc<DLedgerNode>> = nodes.iter().flatten().cloned().collect();
    let position = wait_converged(&all, max_end, Duration::from_secs(20)).await;
    println!(
        "old leader n{leader} caught up in {:?}",
        restarted.elapsed()
    );
    assert_identical_prefix(&all, position);
    for node in &all {
        let read = node.read(acked[0].0, acked[0].1.len()).unwrap();
        assert_eq!(&read[..], &acked[0].1[..]);
    }
    // Exactly-once apply: the persisted count equals the records in the common log everywhere.
    let counts = settled_stored_counts(&all).await;
    assert!(
        counts.iter().all(|c| *c == counts[0]),
        "hook counts differ: {counts:?}"
    );
    assert!(
        counts[0] >= acked.len() as u64,
        "count {} < acked {}",
        counts[0],
        acked.len()
    );
    for node in &all {
        node.shutdown().await.unwrap();
    }
}
