//! Proves leadership transfer over the in-memory router: under concurrent appends, each
//! transfer makes its target leader in a higher term with appends held briefly, and nothing
//! acknowledged is lost (every acked record is on every replica at its position, CommitLogs
//! byte-identical); a transfer to a stopped node, to itself, or asked of a follower is refused
//! at once with leadership unchanged; one that cannot finish within its bound fails and
//! appends go on; `preferred_leader_id` brings leadership back to the
//! preferred node after it restarts, and leaves it alone while that node is down.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use common::*;
use dledger::DLedgerError;
use dledger::DLedgerNode;
use dledger::Role;

type Acked = Arc<Mutex<Vec<(u64, bytes::Bytes)>>>;

/// Writers appending to whichever node accepts, until `stop`.
fn start_writers(
    nodes: &[Arc<DLedgerNode>],
    acked: &Acked,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..4)
        .map(|task| {
            let (nodes, acked, stop) = (nodes.to_vec(), Arc::clone(acked), Arc::clone(stop));
            tokio::spawn(async move {
                let (mut seq, mut errors) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let bytes = record(format!("w{task}-{seq}").as_bytes());
                    seq += 1;
                    let node = &nodes[seq as usize % nodes.len()];
                    match node.append(vec![bytes.clone()]).await {
                        Ok(r) => acked.lock().unwrap().push((r.records[0].position, bytes)),
                        Err(_) => {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                }
                errors
            })
        })
        .collect()
}

fn slow_elections(c: &mut dledger::DLedgerConfig) {
    c.election_timeout_min_ms = 1_500;
    c.election_timeout_max_ms = 2_000;
}

fn assert_nothing_lost(nodes: &[Arc<DLedgerNode>], acked: &[(u64, bytes::Bytes)], position: u64) {
    assert_identical_prefix(nodes, position);
    for node in nodes {
        for (p, bytes) in acked {
            assert_eq!(
                &node.read(*p, bytes.len()).unwrap()[..],
                &bytes[..],
                "n{} lost the acked record at {p}",
                node.node_id()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_under_load_lose_nothing() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    // Elections with openraft's vote deadline of 500-1000 ms: on a loaded 2-core machine a
    // vote round trip (with its fsync) has taken 450 ms, past the 101 ms of the defaults.
    let group = MemoryGroup::start(3, dir.path(), slow_elections).await;
    let mut leader = wait_leader(&group.nodes, Duration::from_secs(10)).await;
    let nodes = group.live();
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&nodes, &acked, &stop);
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let target = (leader + 1 + round % 2) % 3;
        let before = nodes[leader].role_watch().borrow().term;
        let done = nodes[leader]
            .transfer_leadership(target as u64)
            .await
            .unwrap_or_else(|e| panic!("round {round}: n{leader} -> n{target}: {e}"));
        println!("round {round}: n{leader} -> n{target}: {done:?}");
        assert_eq!(done.to, target as u64);
        assert!(done.term > before, "a transfer starts a new term");
        assert!(done.held_ms < 1_000, "appends held {} ms", done.held_ms);
        let now = wait_leader(&group.nodes, Duration::from_secs(5)).await;
        assert_eq!(now, target, "the target leads after the transfer");
        leader = now;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "only {} appends acknowledged",
        acked.len()
    );
    let end = acked.iter().map(|(p, b)| p + b.len() as u64).max().unwrap();
    let position = wait_converged(&nodes, end, Duration::from_secs(20)).await;
    assert_nothing_lost(&nodes, &acked, position);
    for node in &nodes {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_to_a_stopped_node_or_from_a_follower_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut group = MemoryGroup::start(3, dir.path(), |_| {}).await;
    let leader = wait_leader(&group.nodes, Duration::from_secs(10)).await;
    let (follower, stopped) = ((leader + 1) % 3, (leader + 2) % 3);
    let term = group.nodes[leader]
        .as_ref()
        .unwrap()
        .role_watch()
        .borrow()
        .term;
    group.stop_node(stopped).await;
    let node = group.nodes[leader].clone().unwrap();

    let asked = Instant::now();
    let err = node.transfer_leadership(stopped as u64).await.unwrap_err();
    assert!(matches!(err, DLedgerError::TransferRefused { .. }), "{err}");
    assert!(asked.elapsed() < Duration::from_secs(2), "refused at once");
    let err = node.transfer_leadership(leader as u64).await.unwrap_err();
    assert!(matches!(err, DLedgerError::TransferRefused { .. }), "{err}");
    let err = node.transfer_leadership(7).await.unwrap_err();
    assert!(err.to_string().contains("not a voter"), "{err}");
    let other = group.nodes[follower].clone().unwrap();
    let err = other.transfer_leadership(leader as u64).await.unwrap_err();
    assert!(matches!(err, DLedgerError::NotLeader { .. }), "{err}");

    let state = node.role_watch().borrow().clone();
    assert_eq!(
        (state.role, state.term),
        (Role::Leader, term),
        "leadership unchanged"
    );
    node.append(vec![record(b"after refusals")])
        .await
        .expect("appends go on after a refused transfer");
    for node in group.live() {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transfer_that_cannot_finish_in_time_fails_and_appends_resume() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    // A 1 ms bound: the hand-over cannot complete (the TimeoutNow has no time left).
    let group = MemoryGroup::start(3, dir.path(), |c| c.transfer_timeout_ms = 1).await;
    let leader = wait_leader(&group.nodes, Duration::from_secs(10)).await;
    let node = group.nodes[leader].clone().unwrap();
    node.append(vec![record(b"before")]).await.unwrap();
    let err = node
        .transfer_leadership(((leader + 1) % 3) as u64)
        .await
        .unwrap_err();
    println!("{err}");
    assert!(matches!(err, DLedgerError::TransferFailed { .. }), "{err}");
    let appended = append_anywhere(&group.nodes, vec![record(b"after")], Duration::from_secs(5))
        .await
        .records[0]
        .position;
    let nodes = group.live();
    let position = wait_converged(&nodes, appended, Duration::from_secs(10)).await;
    assert_identical_prefix(&nodes, position);
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preferred_leader_takes_over_once_back() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let tweak = |c: &mut dledger::DLedgerConfig| {
        c.preferred_leader_id = Some(0);
        c.preferred_leader_check_interval_ms = 200;
    };
    let mut group = MemoryGroup::start(3, dir.path(), tweak).await;
    let leads_within = |group: &MemoryGroup, id: usize, timeout: Duration| {
        let nodes = group.nodes.clone();
        async move {
            let deadline = Instant::now() + timeout;
            loop {
                if wait_leader(&nodes, Duration::from_secs(5)).await == id {
                    return true;
                }
                if Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(
        leads_within(&group, 0, Duration::from_secs(10)).await,
        "n0 is preferred and leads"
    );
    group.stop_node(0).await;
    let interim = wait_leader(&group.nodes, Duration::from_secs(10)).await;
    let term = group.nodes[interim]
        .as_ref()
        .unwrap()
        .role_watch()
        .borrow()
        .term;
    append_anywhere(
        &group.nodes,
        vec![record(b"while n0 is down")],
        Duration::from_secs(5),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let state = group.nodes[interim]
        .as_ref()
        .unwrap()
        .role_watch()
        .borrow()
        .clone();
    assert_eq!(
        (state.role, state.term),
        (Role::Leader, term),
        "no election while the preferred node is down"
    );
    group.restart_node(0, &tweak).await;
    assert!(
        leads_within(&group, 0, Duration::from_secs(10)).await,
        "n0 leads again once it is back and caught up"
    );
    let nodes = group.live();
    let end = append_anywhere(&group.nodes, vec![record(b"back")], Duration::from_secs(5))
        .await
        .records[0]
        .position;
    let position = wait_converged(&nodes, end, Duration::from_secs(10)).await;
    assert_identical_prefix(&nodes, position);
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}
