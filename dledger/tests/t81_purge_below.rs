//! Proves `DLedgerNode::purge_below` (the Raft-log purge that follows the broker's retention):
//! on every member of a three-node group with 1 MiB segments it snapshots, purges through
//! openraft and deletes exactly the segment files below the position; the members stay
//! byte-identical from there; a second call is a no-op; appends go on; and after a restart
//! of every member the purge holds and the group serves appends again. On a leader, the purge
//! waits for a member that is briefly down, which then catches up from the log.

mod common;

use std::time::Duration;

use common::*;

const SEGMENT_BYTES: u64 = 1 << 20;

async fn fill(group: &MemoryGroup, records: usize) -> u64 {
    let mut end = 0;
    for i in 0..records {
        let body = format!("{i}-{}", "p".repeat(60_000));
        let r = append_anywhere(
            &group.nodes,
            vec![record(body.as_bytes())],
            Duration::from_secs(10),
        )
        .await;
        end = r.records[0].position + r.records[0].size_bytes as u64;
    }
    end
}

fn first_file(dir: &std::path::Path) -> u64 {
    let mut starts: Vec<u64> = std::fs::read_dir(dir.join("commitlog"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
        .collect();
    starts.sort();
    starts[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn purge_below_deletes_the_same_segments_everywhere_and_survives_restart() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut group = MemoryGroup::start(3, dir.path(), |_| {}).await;
    wait_leader(&group.nodes, Duration::from_secs(10)).await;
    let end = fill(&group, 80).await;
    assert!(end > 4 * SEGMENT_BYTES, "wrote {end} bytes");
    let nodes = group.live();
    let applied = wait_converged(&nodes, end, Duration::from_secs(20)).await;

    assert_eq!(
        nodes[0].purge_below(0).await.unwrap(),
        None,
        "nothing below 0"
    );
    let below = 3 * SEGMENT_BYTES;
    let mut purged = Vec::new();
    for node in &nodes {
        assert_eq!(node.segments()[0].start_position, 0);
        purged.push(
            node.purge_below(below)
                .await
                .unwrap()
                .expect("entries below"),
        );
        assert_eq!(node.start_position(), below);
        assert_eq!(node.segments()[0].start_position, below);
        assert_eq!(
            first_file(&dir.path().join(format!("n{}", node.node_id()))),
            below
        );
    }
    assert!(
        purged.iter().all(|p| *p == purged[0]),
        "same last index: {purged:?}"
    );
    assert_identical_prefix(&nodes, applied);
    for node in &nodes {
        assert_eq!(
            node.purge_below(below).await.unwrap(),
            Some(purged[0]),
            "again"
        );
        assert_eq!(node.start_position(), below);
    }
    let end = fill(&group, 10).await;
    drop(nodes);

    for id in 0..3 {
        group.stop_node(id).await;
    }
    for id in 0..3 {
        group.restart_node(id, &|_| {}).await;
    }
    wait_leader(&group.nodes, Duration::from_secs(10)).await;
    let nodes = group.live();
    for node in &nodes {
        assert_eq!(
            node.start_position(),
            below,
            "the purge holds after a restart"
        );
    }
    let end = fill(&group, 10).await.max(end);
    let applied = wait_converged(&nodes, end, Duration::from_secs(20)).await;
    assert_identical_prefix(&nodes, applied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_holds_its_purge_for_a_member_briefly_behind() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut group = MemoryGroup::start(3, dir.path(), |_| {}).await;
    let leader = wait_leader(&group.nodes, Duration::from_secs(10)).await;
    let down = (leader + 1) % 3;
    group.stop_node(down).await;
    let end = fill(&group, 60).await;
    let node = group.nodes[leader].clone().unwrap();
    let purge = tokio::spawn(async move { node.purge_below(2 * SEGMENT_BYTES).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !purge.is_finished(),
        "the purge waits for the member that is down"
    );
    let leader_node = group.nodes[leader].clone().unwrap();
    assert_eq!(leader_node.start_position(), 0);
    group.restart_node(down, &|_| {}).await;
    let purged = tokio::time::timeout(Duration::from_secs(20), purge)
        .await
        .expect("the purge finishes once the member caught up")
        .unwrap()
        .unwrap();
    assert!(purged.is_some());
    assert_eq!(leader_node.start_position(), 2 * SEGMENT_BYTES);
    let nodes = group.live();
    let applied = wait_converged(&nodes, end, Duration::from_secs(20)).await;
    let caught_up = group.nodes[down].clone().unwrap();
    assert_eq!(
        caught_up.start_position(),
        0,
        "caught up from the log, not a snapshot"
    );
    for node in &nodes {
        node.purge_below(2 * SEGMENT_BYTES).await.unwrap();
        assert_eq!(node.start_position(), 2 * SEGMENT_BYTES);
    }
    assert_identical_prefix(&nodes, applied);
}
