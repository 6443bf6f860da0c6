//! Proves crash recovery of the CommitLog:
//! - a torn tail (a half-written next entry plus scribbled bytes after the last entry) is cut
//!   on restart, the node rejoins, nothing committed is lost, and replicas end byte-identical;
//! - a real last entry cut mid-way (an uncommitted entry on an isolated old leader) plus
//!   scribbles is likewise cut, and the node converges with the group;
//! - a damaged entry in the middle of the log makes the node refuse to start with an error
//!   that names the segment file and the entry's offset in it.

mod common;

use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dledger::storage::EntryInfo;
use dledger::storage::StorageOptions;
use dledger::DLedgerError;
use dledger::DLedgerNode;
use dledger::FlushMode;
use dledger::NoopHook;
use rand::Rng;

fn inspect(store: &std::path::Path) -> (Vec<EntryInfo>, u64) {
    let options = StorageOptions {
        warm_segments: true,
        page_cache_bytes: 0,
        segment_bytes: 1 << 20,
        flush_mode: FlushMode::Sync,
        flush_interval_ms: 100,
        read_batch_bytes: 1 << 20,
    };
    let opened = dledger::storage::open(store, &options, Box::new(NoopHook)).unwrap();
    let entries = opened.entries().unwrap();
    let written = opened.written_position();
    (entries, written)
}

fn read_at(file: &std::path::Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = std::fs::File::open(file).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut out = vec![0u8; len];
    f.read_exact(&mut out).unwrap();
    out
}

fn write_at(file: &std::path::Path, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

fn scribble(len: usize) -> Vec<u8> {
    let mut rng = rand::thread_rng();
    (0..len).map(|_| rng.gen_range(1..=255u8)).collect()
}

async fn append_records(group: &MemoryGroup, prefix: &str, n: usize) -> Vec<(u64, bytes::Bytes)> {
    let mut acked = Vec::new();
    for i in 0..n {
        let bytes = record(format!("{prefix}-{i}-{}", "p".repeat(40)).as_bytes());
        let r = append_anywhere(&group.nodes, vec![bytes.clone()], Duration::from_secs(5)).await;
        acked.push((r.records[0].position, bytes));
    }
    acked
}

async fn check_all_readable_and_identical(group: &MemoryGroup, acked: &[(u64, bytes::Bytes)]) {
    let nodes = group.live();
    let end = acked.iter().map(|(p, b)| p + b.len() as u64).max().unwrap();
    let position = wait_converged(&nodes, end, Duration::from_secs(20)).await;
    assert_identical_prefix(&nodes, position);
    for node in &nodes {
        for (p, bytes) in acked {
            assert_eq!(
                &node.read(*p, bytes.len()).unwrap()[..],
                &bytes[..],
                "n{} at {p}",
                node.node_id()
            );
        }
    }
    let counts = settled_stored_counts(&nodes).await;
    assert!(
        counts.iter().all(|c| *c == counts[0]),
        "hook counts differ: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn torn_tail_after_last_entry_is_cut_and_node_rejoins() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut group = MemoryGroup::start(3, dir.path(), |_| {}).await;
    let leader = wait_leader(&group.nodes, Duration::from_secs(10)).await;
    let mut acked = append_records(&group, "a", 100).await;
    let follower = (leader + 1) % 3;
    let position = wait_converged(
        &group.live(),
        acked.last().unwrap().0,
        Duration::from_secs(10),
    )
    .await;
    assert!(position > 0);
    group.stop_node(follower).await;

    // Simulate a crash while writing the next entry: half of a next entry, then garbage.
    let store = dir.path().join(format!("n{follower}"));
    let (entries, written) = inspect(&store);
    let last = entries.last().unwrap().clone();
    let mut next = read_at(&last.file, last.file_offset, last.total_bytes as usize);
    next[24..32].copy_from_slice(&(last.log_index + 1).to_be_bytes());
    let torn_at = last.file_offset + last.total_bytes as u64;
    assert_eq!(last.position + last.total_bytes as u64, written);
    write_at(&last.file, torn_at, &next[..next.len() / 2]);
    write_at(&last.file, torn_at + next.len() as u64 / 2, &scribble(300));

    acked.extend(append_records(&group, "b", 20).await);
    group.restart_node(follower, &|_| {}).await;
    acked.extend(append_records(&group, "c", 20).await);
    check_all_readable_and_identical(&group, &acked).await;
    for node in group.live() {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn last_entry_cut_mid_way_is_cut_and_node_converges() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut group = MemoryGroup::start(3, dir.path(), |_| {}).await;
    let old = wait_leader(&group.nodes, Duration::from_secs(10)).await;
    let mut acked = append_records(&group, "a", 50).await;
    wait_converged(
        &group.live(),
        acked.last().unwrap().0,
        Duration::from_secs(10),
    )
    .await;

    // The isolated leader writes entries that never commit; then it "crashes".
    group.router.isolate(old as u64, &[0, 1, 2]);
    let old_node: Arc<DLedgerNode> = Arc::clone(group.nodes[old].as_ref().unwrap());
    for i in 0..5 {
        let node = Arc::clone(&old_node);
        tokio::spawn(async move {
            let _ = node
                .append(vec![record(
                    format!("doomed-{i}-{}", "d".repeat(200)).as_bytes(),
                )])
                .await;
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(old_node.written_position() > old_node.committed_position());
    drop(old_node);
    group.stop_node(old).await;

    // Cut its real last (uncommitted) entry mid-way and scribble after the cut.
    let store = dir.path().join(format!("n{old}"));
    let (entries, _) = inspect(&store);
    let last = entries.last().unwrap().clone();
    let cut = last.file_offset + last.total_bytes as u64 / 2;
    let zeros = vec![0u8; last.total_bytes as usize];
    write_at(
        &last.file,
        cut,
        &zeros[..(last.total_bytes as u64 - last.total_bytes as u64 / 2) as usize],
    );
    write_at(&last.file, cut + 7, &scribble(64));

    group.router.heal();
    acked.extend(append_records(&group, "b", 20).await);
    group.restart_node(old, &|_| {}).await;
    acked.extend(append_records(&group, "c", 10).await);
    check_all_readable_and_identical(&group, &acked).await;
    for (id, seen) in group.seen.iter().enumerate() {
        assert!(
            !seen
                .lock()
                .unwrap()
                .records
                .iter()
                .any(|(_, r)| r.windows(7).any(|w| w == b"doomed-")),
            "n{id} applied an uncommitted record"
        );
    }
    for node in group.live() {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damage_in_the_middle_refuses_to_start_naming_file_and_offset() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut group = MemoryGroup::start(3, dir.path(), |_| {}).await;
    let leader = wait_leader(&group.nodes, Duration::from_secs(10)).await;
    let acked = append_records(&group, "a", 60).await;
    wait_converged(
        &group.live(),
        acked.last().unwrap().0,
        Duration::from_secs(10),
    )
    .await;
    let follower = (leader + 1) % 3;
    group.stop_node(follower).await;

    let store = dir.path().join(format!("n{follower}"));
    let (entries, _) = inspect(&store);
    let victim = entries[entries.len() / 2].clone();
    let body_byte = victim.file_offset + victim.total_bytes as u64 - 3;
    let mut byte = read_at(&victim.file, body_byte, 1);
    byte[0] ^= 0x5a;
    write_at(&victim.file, body_byte, &byte);

    let mut config = test_config(follower as u64, &group.peers, dir.path());
    config.flush_mode = FlushMode::Sync;
    let (hook, _) = RecordingHook::new();
    let err = match DLedgerNode::start_with_transport(
        config,
        hook,
        group.router.transport_for(follower as u64),
    )
    .await
    {
        Ok(_) => panic!("a node with a damaged entry mid-log started"),
        Err(e) => e,
    };
    println!("refused to start: {err}");
    match &err {
        DLedgerError::Corrupt {
            file, file_offset, ..
        } => {
            assert_eq!(file, &victim.file);
            assert_eq!(*file_offset, victim.file_offset);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&victim.file.display().to_string())
            && text.contains(&victim.file_offset.to_string())
    );
    for node in group.live() {
        node.shutdown().await.unwrap();
    }
}

/// Zeroes the last `n` entries of the CommitLog in `store` (all in its last segment), as an OS
/// crash that lost their unsynced pages would leave it; returns the index of the first lost.
fn lose_tail(store: &std::path::Path, n: usize) -> u64 {
    let (entries, _) = inspect(store);
    let first = entries[entries.len() - n].clone();
    let last = entries.last().unwrap();
    assert_eq!(first.file, last.file, "the lost entries span two segments");
    let end = last.file_offset + last.total_bytes as u64;
    write_at(
        &first.file,
        first.file_offset,
        &vec![0u8; (end - first.file_offset) as usize],
    );
    first.log_index
}

fn async_flush(config: &mut dledger::DLedgerConfig) {
    config.flush_mode = FlushMode::Async;
}

/// ASYNC_FLUSH: an OS crash lost the CommitLog's tail under the applied point. The node starts
/// by itself, fetches the lost entries again from the leader without applying them twice, and
/// ends identical to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_tail_under_the_applied_point_is_fetched_again_not_applied_twice() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut group = MemoryGroup::start(3, dir.path(), async_flush).await;
    let leader = wait_leader(&group.nodes, Duration::from_secs(10)).await;
    let mut acked = append_records(&group, "early", 100).await;
    wait_converged(
        &group.live(),
        acked.last().unwrap().0,
        Duration::from_secs(10),
    )
    .await;
    settled_stored_counts(&group.live()).await;
    let follower = (leader + 1) % 3;
    group.stop_node(follower).await;

    let store = dir.path().join(format!("n{follower}"));
    let first_lost = lose_tail(&store, 10);
    let (entries, _) = inspect(&store);
    assert_eq!(entries.last().unwrap().log_index, first_lost - 1);

    acked.extend(append_records(&group, "b", 20).await);
    group.restart_node(follower, &async_flush).await;
    acked.extend(append_records(&group, "c", 10).await);
    check_all_readable_and_identical(&group, &acked).await;
    {
        let seen = group.seen[follower].lock().unwrap();
        assert!(
            !seen
                .records
                .iter()
                .any(|(_, r)| r.windows(6).any(|w| w == b"early-")),
            "a record applied before the crash was applied again"
        );
        assert_eq!(seen.records.len(), 30, "the records after the crash");
    }
    for node in group.live() {
        node.shutdown().await.unwrap();
    }
}

/// ASYNC_FLUSH: OS crashes lost the same tail on two of three nodes, so the group goes on from
/// an earlier entry with entries of a new term. A node that reaches one stops with a clear
/// error, and neither applies a second history over the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tail_lost_on_a_majority_stops_the_replicas_that_applied_it() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut group = MemoryGroup::start(3, dir.path(), async_flush).await;
    wait_leader(&group.nodes, Duration::from_secs(10)).await;
    let acked = append_records(&group, "a", 50).await;
    wait_converged(
        &group.live(),
        acked.last().unwrap().0,
        Duration::from_secs(10),
    )
    .await;
    settled_stored_counts(&group.live()).await;
    for id in 0..3 {
        group.stop_node(id).await;
    }
    for id in 0..2 {
        lose_tail(&dir.path().join(format!("n{id}")), 10);
    }
    for id in 0..2 {
        group.restart_node(id, &async_flush).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let reasons = loop {
        let reasons: Vec<Option<String>> = group.live().iter().map(|n| n.stop_reason()).collect();
        // The node that applies the new term's first entry first stops; the other learns
        // that entry is committed only from a leader, which may be the one that stopped.
        if reasons.iter().any(|r| r.is_some()) {
            break reasons;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no node stopped: {reasons:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for id in 0..2 {
        assert!(
            group.seen[id].lock().unwrap().records.is_empty(),
            "n{id} applied a record of the new history"
        );
    }
    for reason in reasons.into_iter().flatten() {
        println!("stopped: {reason}");
        assert!(
            reason.contains("applied entries up to") && reason.contains("replace this replica"),
            "{reason}"
        );
    }
    for node in group.live() {
        let _ = node.shutdown().await;
    }
}

/// A clean stop syncs an ASYNC_FLUSH CommitLog. With a flush interval of an hour the timer
/// syncs nothing during the test, so what the node wrote is past the record of what msync
/// covered until `shutdown`, which must bring the record to the end of the log (before,
/// only the last handle's drop synced it, which a process exiting first would skip).
#[tokio::test]
async fn a_clean_stop_syncs_an_async_flush_commit_log() {
    let dir = tempfile::tempdir().unwrap();
    let group = MemoryGroup::start(1, dir.path(), |c| {
        c.flush_mode = FlushMode::Async;
        c.flush_interval_ms = 3_600_000;
        c.test_record_flushed = true;
    })
    .await;
    wait_leader(&group.nodes, Duration::from_secs(10)).await;
    let node = group.nodes[0].clone().unwrap();
    node.append(vec![record(&[7u8; 1_000]); 50]).await.unwrap();
    let written = node.written_position();
    let record = dir.path().join("n0/commitlog/.test-flushed");
    let flushed = || -> u64 {
        std::fs::read_to_string(&record)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert!(
        flushed() < written,
        "synced before the stop ({} of {written}): the test proves nothing",
        flushed()
    );
    node.shutdown().await.unwrap();
    assert_eq!(flushed(), written, "a clean stop left the tail unsynced");
}
