//! Regression for a bug found by the broker's system tests: every node of a fresh group
//! called openraft's `initialize` at start, and a node that started late made the
//! sitting leader step down (its candidacy in the same term outranked the leader), which
//! left the group without a leader. Proves a node started on an empty store after the
//! other two have elected a leader joins that group: the leader and its term stay, and
//! the late node catches up.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dledger::DLedgerNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_fresh_node_joins_without_deposing_the_leader() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (peers, mut listeners) = bind_peers(3).await;
    let late_listener = listeners.pop().unwrap();
    let mut nodes: Vec<Option<Arc<DLedgerNode>>> = Vec::new();
    for (id, listener) in listeners.into_iter().enumerate() {
        let (hook, _) = RecordingHook::new();
        let config = test_config(id as u64, &peers, dir.path());
        nodes.push(Some(Arc::new(
            DLedgerNode::start_with_listener(config, hook, listener)
                .await
                .unwrap(),
        )));
    }
    nodes.push(None);
    let leader = wait_leader(&nodes, Duration::from_secs(10)).await;
    let leader_node = nodes[leader].clone().unwrap();
    let term = leader_node.role_watch().borrow().term;
    leader_node.append(vec![record(b"before")]).await.unwrap();

    let (hook, _) = RecordingHook::new();
    let late = Arc::new(
        DLedgerNode::start_with_listener(test_config(2, &peers, dir.path()), hook, late_listener)
            .await
            .unwrap(),
    );
    nodes[2] = Some(late.clone());
    // For three election timeouts, the leader keeps leading in the same term.
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        let state = leader_node.role_watch().borrow().clone();
        assert_eq!(
            (state.role, state.term),
            (dledger::Role::Leader, term),
            "the leader was deposed after a fresh node started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let state = late.role_watch().borrow().clone();
    assert_eq!(state.leader_id, Some(leader as u64));
    assert_eq!(state.term, term);
    let appended = leader_node.append(vec![record(b"after")]).await.unwrap();
    let end = appended.records[0].position + appended.records[0].size_bytes as u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    while late.committed_position() < end {
        assert!(Instant::now() < deadline, "the late node never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
