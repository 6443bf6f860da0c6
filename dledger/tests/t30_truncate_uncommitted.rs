//! Proves that a node holding an uncommitted suffix from an old term (an isolated leader that
//! kept accepting appends) has that suffix truncated and replaced by the new leader's entries
//! once the partition heals: none of its uncommitted records is ever applied anywhere or
//! acknowledged, the new leader's acknowledged records are on every replica at their
//! acknowledged positions, and all CommitLogs end byte-identical (with ASYNC_FLUSH).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use dledger::DLedgerNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uncommitted_suffix_of_old_term_is_truncated_and_replaced() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    // ASYNC_FLUSH here, so the cluster path of that mode is covered too.
    let group =
        MemoryGroup::start(3, dir.path(), |c| c.flush_mode = dledger::FlushMode::Async).await;
    let old = wait_leader(&group.nodes, Duration::from_secs(10)).await;
    let all_ids: Vec<u64> = (0..3).collect();

    let committed = append_anywhere(
        &group.nodes,
        (0..50)
            .map(|i| record(format!("before-{i}").as_bytes()))
            .collect(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(committed.records.len(), 50);

    // Isolate the leader and keep appending to it: these entries can never commit.
    group.router.isolate(old as u64, &all_ids);
    let old_node: Arc<DLedgerNode> = Arc::clone(group.nodes[old].as_ref().unwrap());
    let committed_before = old_node.committed_position();
    let mut doomed = Vec::new();
    for i in 0..20 {
        let node = Arc::clone(&old_node);
        doomed.push(tokio::spawn(async move {
            node.append(vec![record(
                format!("doomed-{i}-{}", "d".repeat(100)).as_bytes(),
            )])
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        old_node.written_position() > committed_before,
        "the isolated leader holds an uncommitted suffix ({} > {committed_before})",
        old_node.written_position()
    );

    // The majority elects a new leader in a higher term and commits other records.
    let majority: Vec<Option<Arc<DLedgerNode>>> = group
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| if i == old { None } else { n.clone() })
        .collect();
    let new = wait_leader(&majority, Duration::from_secs(10)).await;
    assert_ne!(new, old);
    let mut winners = Vec::new();
    for i in 0..30 {
        let bytes = record(format!("winner-{i}").as_bytes());
        let result = append_anywhere(&majority, vec![bytes.clone()], Duration::from_secs(5)).await;
        winners.push((result.records[0].position, bytes));
    }

    // Heal: the old leader steps down, truncates its suffix and takes the new entries.
    group.router.heal();
    for handle in doomed {
        let outcome = handle.await.unwrap();
        assert!(
            outcome.is_err(),
            "an append to the isolated leader was acknowledged: {outcome:?}"
        );
    }
    let nodes = group.live();
    let end = winners
        .iter()
        .map(|(p, b)| p + b.len() as u64)
        .max()
        .unwrap();
    let position = wait_converged(&nodes, end, Duration::from_secs(20)).await;
    assert_identical_prefix(&nodes, position);
    assert_eq!(
        old_node.written_position(),
        nodes[new].written_position(),
        "suffix replaced, not kept"
    );
    for node in &nodes {
        for (p, bytes) in &winners {
            assert_eq!(&node.read(*p, bytes.len()).unwrap()[..], &bytes[..]);
        }
    }
    for (id, seen) in group.seen.iter().enumerate() {
        let seen = seen.lock().unwrap();
        assert!(
            !seen
                .records
                .iter()
                .any(|(_, r)| r.windows(7).any(|w| w == b"doomed-")),
            "n{id} applied an uncommitted record"
        );
        assert_eq!(seen.records.len(), 80, "n{id} applied 50 + 30 records");
    }
    for node in &nodes {
        node.shutdown().await.unwrap();
    }
}
