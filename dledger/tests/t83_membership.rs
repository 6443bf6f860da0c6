//! Proves membership change over the in-memory router, under concurrent appends: a group of
//! three grows to five (each new node joins as a learner, catches up, then votes), shrinks
//! back to three, and replaces a member whose store was deleted (removed, started again
//! empty, added again); nothing acknowledged is lost and every replica ends byte-identical.
//! Changes that could not commit or would be unsafe are refused with nothing changed: adding
//! a voter again, the leader removing itself, a follower asked to change anything, and a
//! removal that would leave the remaining voters without a majority that answers.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;
use std::time::Duration;

use common::*;
use dledger::DLedgerConfig;
use dledger::DLedgerError;
use dledger::DLedgerNode;
use dledger::Members;

type Acked = Arc<Mutex<Vec<(u64, bytes::Bytes)>>>;
type Live = Arc<RwLock<Vec<Arc<DLedgerNode>>>>;

/// Writers appending to whichever live node accepts, until `stop`.
fn start_writers(
    live: &Live,
    acked: &Acked,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..3)
        .map(|task| {
            let (live, acked, stop) = (Arc::clone(live), Arc::clone(acked), Arc::clone(stop));
            tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let bytes = record(format!("w{task}-{seq}").as_bytes());
                    seq += 1;
                    let node = {
                        let live = live.read().unwrap();
                        Arc::clone(&live[seq as usize % live.len()])
                    };
                    match node.append(vec![bytes.clone()]).await {
                        Ok(r) => acked.lock().unwrap().push((r.records[0].position, bytes)),
                        Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
                    }
                }
            })
        })
        .collect()
}

fn tweak(c: &mut DLedgerConfig) {
    // Elections with openraft's vote deadline of 500-1000 ms (see t82).
    c.election_timeout_min_ms = 1_500;
    c.election_timeout_max_ms = 2_000;
    c.membership_timeout_ms = 30_000;
}

fn voters(m: &Members) -> BTreeSet<u64> {
    m.voters.keys().copied().collect()
}

fn set(ids: &[u64]) -> BTreeSet<u64> {
    ids.iter().copied().collect()
}

fn refused(result: Result<Members, DLedgerError>, what: &str) -> String {
    match result {
        Err(DLedgerError::MembershipRefused { reason, .. }) => {
            println!("{what}: refused: {reason}");
            reason
        }
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

async fn publish(group: &MemoryGroup, live: &Live) {
    *live.write().unwrap() = group.live();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grow_shrink_and_replace_under_load_lose_nothing() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut group = MemoryGroup::start(3, dir.path(), tweak).await;
    let leader = wait_leader(&group.nodes, Duration::from_secs(10)).await;
    let live: Live = Arc::new(RwLock::new(group.live()));
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&live, &acked, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let leader_node = group.nodes[leader].clone().unwrap();
    let follower = (leader + 1) % 3;
    let follower_node = group.nodes[follower].clone().unwrap();
    assert!(
        matches!(
            follower_node.add_node(3, "mem-3:1").await,
            Err(DLedgerError::NotLeader { .. })
        ),
        "a follower must not change the membership"
    );
    drop(follower_node);

    // Grow to five: each new node joins as a learner, catches up, then votes.
    for id in [3usize, 4] {
        group.start_joining(id, &tweak).await;
        let joined = group.nodes[id].clone().unwrap();
        assert!(
            !joined.role_watch().borrow().voter,
            "n{id} votes before it is added"
        );
        let members = leader_node
            .add_node(id as u64, &format!("mem-{id}:1"))
            .await
            .unwrap_or_else(|e| panic!("adding n{id}: {e}"));
        assert!(members.voters.contains_key(&(id as u64)), "{members:?}");
        assert!(!members.joint, "{members:?}");
        publish(&group, &live).await;
    }
    let members = leader_node.members();
    assert_eq!(voters(&members), set(&[0, 1, 2, 3, 4]));
    for node in group.live() {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !node.role_watch().borrow().voter {
            assert!(
                std::time::Instant::now() < deadline,
                "n{} never learned it votes",
                node.node_id()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    refused(
        leader_node.add_node(3, "mem-3:1").await,
        "adding a voter again",
    );
    refused(
        leader_node.remove_node(leader as u64).await,
        "the leader removing itself",
    );
    refused(
        leader_node.add_node(7, "mem-3:1").await,
        "a second node at a member's address",
    );

    // Two of five stopped: removing a third live voter would leave {4 voters, 2 answering}.
    let (gone_a, gone_b) = (3usize, 4usize);
    group.stop_node(gone_a).await;
    group.stop_node(gone_b).await;
    publish(&group, &live).await;
    let reason = refused(
        leader_node.remove_node(follower as u64).await,
        "a removal leaving no answering majority",
    );
    assert!(reason.contains("majority"), "{reason}");
    assert_eq!(voters(&leader_node.members()), set(&[0, 1, 2, 3, 4]));

    // Shrink back to three: remove a stopped node, then a live one, which is told it is
    // out: it stops its Raft core and its store refuses to start again.
    group.restart_node(gone_a, &tweak).await;
    publish(&group, &live).await;
    let members = leader_node.remove_node(gone_b as u64).await.unwrap();
    assert!(
        !members.voters.contains_key(&(gone_b as u64)),
        "{members:?}"
    );
    let removed = group.nodes[gone_a].clone().unwrap();
    let members = leader_node.remove_node(gone_a as u64).await.unwrap();
    assert!(
        !members.voters.contains_key(&(gone_a as u64)),
        "{members:?}"
    );
    assert_eq!(voters(&leader_node.members()), set(&[0, 1, 2]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while removed.role_watch().borrow().role != dledger::Role::Shutdown {
        assert!(
            std::time::Instant::now() < deadline,
            "the removed n{gone_a} still runs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(removed);
    group.router.unregister(gone_a as u64);
    let stopped = group.nodes[gone_a].take().unwrap();
    let _ = stopped.shutdown().await; // its core stopped already
    drop(stopped);
    publish(&group, &live).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut config = test_config(gone_a as u64, &group.peers, dir.path());
    tweak(&mut config);
    let (hook, _) = RecordingHook::new();
    match DLedgerNode::start_with_transport(config, hook, group.router.transport_for(gone_a as u64))
        .await
    {
        Err(e @ DLedgerError::Removed { .. }) => println!("a removed store refuses to start: {e}"),
        Err(e) => panic!("a removed store must refuse to start as removed, not: {e}"),
        Ok(_) => panic!("a removed store started again"),
    }

    // Replace a follower whose store is gone: remove it, start it again empty, add it back.
    group.stop_node(follower).await;
    publish(&group, &live).await;
    // The storage is released once the writers let go of the stopped node.
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::remove_dir_all(dir.path().join(format!("n{follower}"))).unwrap();
    leader_node.remove_node(follower as u64).await.unwrap();
    group.start_joining(follower, &tweak).await;
    let members = leader_node
        .add_node(follower as u64, &format!("mem-{follower}:1"))
        .await
        .unwrap();
    assert_eq!(voters(&members), set(&[0, 1, 2]));
    publish(&group, &live).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let nodes = group.live();
    let position = wait_converged(&nodes, 0, Duration::from_secs(20)).await;
    assert_identical_prefix(&nodes, position);
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        acked.len() > 100,
        "only {} appends acknowledged",
        acked.len()
    );
    for node in &nodes {
        for (p, bytes) in acked.iter() {
            assert_eq!(
                &node.read(*p, bytes.len()).unwrap()[..],
                &bytes[..],
                "n{} lost the acked record at {p}",
                node.node_id()
            );
        }
    }
    println!(
        "{} appends acknowledged across grow to 5, shrink to 3 and a replacement; CommitLogs identical up to {position}",
        acked.len()
    );
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}
