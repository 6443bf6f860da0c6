//! A follower whose msync outlasts openraft's append-entries bound (one heartbeat) still
//! lets the group commit when it is the only follower up (three nodes over TCP).
//!
//! SYNC_FLUSH: a follower's append-entries answer waits for its msync. n2's every msync waits
//! `SLOW_MSYNC_MS` (2.5 heartbeats, the test key `test_flush_delay_ms`); n1 is stopped, so
//! every commit needs n2, while appends arrive at a steady pace. The appends must all
//! commit, n0 must keep its leadership and the two CommitLogs must agree.
//!
//! What it guards: `PeerService::append_entries` (requests take turns into the Raft core,
//! and one still waiting after 60% of a heartbeat is answered with the entries stored so
//! far). Honest limit: at this level the code before that change passed too; the stall it
//! fixed showed with a broker's load (`bench/slow-follower.sh`, docs/PERFORMANCE.md: at
//! 120 ms per msync no send was acknowledged within 3 s before, 156 msg/s after).

mod common;

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use common::*;
use dledger::DLedgerNode;

const HEARTBEAT_MS: u64 = 100;
const SLOW_MSYNC_MS: u64 = 250;
const APPENDS: usize = 300;
const APPEND_EVERY_MS: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lone_follower_on_a_slow_disk_keeps_commits_going() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let tweak = |c: &mut dledger::config::DLedgerConfig| {
        c.heartbeat_interval_ms = HEARTBEAT_MS;
        c.election_timeout_min_ms = 1_000;
        c.election_timeout_max_ms = 2_000;
        c.preferred_leader_id = Some(0);
        c.append_timeout_ms = 5_000;
        // No cap on entries per request below what the test sends: a capped request
        // would carry only entries n2 already holds and be answered in time anyway.
        c.max_payload_entries = 100_000;
        // Many entries in flight, as a broker's producers keep them: each new try of
        // the leader carries entries n2 has not seen yet.
        c.max_inflight_entries = 64;
        if c.self_id == 2 {
            c.test_flush_delay_ms = SLOW_MSYNC_MS;
        }
    };
    let (peers, listeners) = bind_peers(3).await;
    let mut nodes: Vec<Option<Arc<DLedgerNode>>> = Vec::new();
    for (id, listener) in listeners.into_iter().enumerate() {
        let (hook, _) = RecordingHook::new();
        let mut config = test_config(id as u64, &peers, dir.path());
        tweak(&mut config);
        nodes.push(Some(Arc::new(
            DLedgerNode::start_with_listener(config, hook, listener)
                .await
                .unwrap(),
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    // n0 leads and every node follows it in its term: the slow n2 may still campaign from
    // the start (its first vote answer waits for a slow flush), and appends made across that
    // change of term would fail for it, not for what the test is about.
    loop {
        let leader = wait_leader(&nodes, Duration::from_secs(10)).await;
        let states: Vec<_> = nodes
            .iter()
            .flatten()
            .map(|n| n.role_watch().borrow().clone())
            .collect();
        let term = states[0].term;
        if leader == 0
            && states
                .iter()
                .all(|s| s.leader_id == Some(0) && s.term == term)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n0 (preferred) did not take over: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes[1].take().unwrap().shutdown().await.unwrap();

    // Appends started at a steady pace without waiting for earlier ones (open loop, as
    // producers under load), so every try of the leader carries entries that need another
    // msync of n2.
    let started = Instant::now();
    let leader = Arc::clone(nodes[0].as_ref().unwrap());
    let mut appends = Vec::new();
    for i in 0..APPENDS {
        let leader = Arc::clone(&leader);
        appends.push(tokio::spawn(async move {
            leader
                .append(vec![record(format!("slow-{i:04}").as_bytes())])
                .await
                .map(|r| r.records[0].position)
                .map_err(|e| format!("append {i}: {e}"))
        }));
        tokio::time::sleep(Duration::from_millis(APPEND_EVERY_MS)).await;
    }
    let mut positions = Vec::new();
    for append in appends {
        match append.await.unwrap() {
            Ok(position) => positions.push(position),
            Err(e) => panic!(
                "{e}: did not commit with the slow follower alone ({:?} after the first)",
                started.elapsed()
            ),
        }
    }
    println!(
        "{APPENDS} appends, one every {APPEND_EVERY_MS} ms, committed through a follower whose \
         msync takes {SLOW_MSYNC_MS} ms (heartbeat {HEARTBEAT_MS} ms) in {:?}",
        started.elapsed()
    );
    assert!(leader.is_leader(), "n0 kept its leadership");

    let live: Vec<Arc<DLedgerNode>> = nodes.iter().flatten().cloned().collect();
    let end = wait_converged(
        &live,
        *positions.iter().max().unwrap(),
        Duration::from_secs(20),
    )
    .await;
    assert_identical_prefix(&live, end);
    for node in live {
        node.shutdown().await.unwrap();
    }
}
