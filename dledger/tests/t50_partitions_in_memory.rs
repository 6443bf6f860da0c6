//! Proves that over the in-memory router, message loss, delays, an isolated leader and
//! minority/majority partitions during concurrent appends never lose a committed entry: after
//! healing, every acknowledged record is on every replica at its acknowledged position, each
//! replica's hook applied every committed record exactly once, and all CommitLogs are
//! byte-identical.

mod common;

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use rand::Rng;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_during_appends_never_lose_a_committed_entry() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let group = MemoryGroup::start(3, dir.path(), |c| c.append_timeout_ms = 2_000).await;
    wait_leader(&group.nodes, Duration::from_secs(10)).await;
    let nodes = group.live();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for task in 0..4 {
        let nodes = nodes.clone();
        let acked = Arc::clone(&acked);
        let stop = Arc::clone(&stop);
        writers.push(tokio::spawn(async move {
            let mut seq = 0u64;
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let bytes =
                    record(format!("w{task}-{seq}-{}", "z".repeat(seq as usize % 50)).as_bytes());
                seq += 1;
                let node = &nodes[seq as usize % nodes.len()];
                match node.append(vec![bytes.clone()]).await {
                    Ok(r) => acked.lock().unwrap().push((r.records[0].position, bytes)),
                    Err(_) => {
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            errors
        }));
    }
    let ids = [0u64, 1, 2];
    let rounds = std::env::var("DLEDGER_T50_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    for round in 0..rounds {
        let fault = round % 4;
        let victim = {
            let leader = nodes
                .iter()
                .position(|n| n.role_watch().borrow().role == dledger::Role::Leader);
            leader.unwrap_or_else(|| rand::thread_rng().gen_range(0..3)) as u64
        };
        match fault {
            0 => {
                group.router.set_loss(0.2);
                group.router.set_delay_ms(0, 15);
            }
            1 => group.router.isolate(victim, &ids),
            2 => {
                let others: Vec<u64> = ids.iter().copied().filter(|i| *i != victim).collect();
                group
                    .router
                    .partition(&[&[victim, others[0]], &[others[1]]]);
                group.router.set_loss(0.1);
            }
            _ => {
                group.router.block(victim, (victim + 1) % 3);
                group.router.set_delay_ms(0, 30);
            }
        }
        println!(
            "round {round}: fault {fault} around n{victim}, {} acked so far",
            acked.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        group.router.heal();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut errors = 0;
    for w in writers {
        errors += w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    println!(
        "{} records acknowledged, {errors} appends failed or timed out",
        acked.len()
    );
    assert!(acked.len() > 100, "the group made progress under faults");

    let end = acked.iter().map(|(p, b)| p + b.len() as u64).max().unwrap();
    let position = wait_converged(&nodes, end, Duration::from_secs(30)).await;
    assert_identical_prefix(&nodes, position);
    for node in &nodes {
        for (p, bytes) in &acked {
            assert_eq!(
                &node.read(*p, bytes.len()).unwrap()[..],
                &bytes[..],
                "n{} lost the record at {p}",
                node.node_id()
            );
        }
    }
    let counts = settled_stored_counts(&nodes).await;
    for (id, seen) in group.seen.iter().enumerate() {
        let seen = seen.lock().unwrap();
        let positions: HashSet<u64> = seen.records.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            positions.len(),
            seen.records.len(),
            "n{id} applied a record twice"
        );
        assert_eq!(
            seen.records.len() as u64,
            counts[id],
            "n{id} persisted count matches what it applied"
        );
        for (p, bytes) in &acked {
            assert!(
                positions.contains(p),
                "n{id} never applied the acked record at {p} ({bytes:?})"
            );
        }
    }
    assert!(
        counts.iter().all(|c| *c == counts[0]),
        "hook counts differ: {counts:?}"
    );
    for node in &nodes {
        node.shutdown().await.unwrap();
    }
}
