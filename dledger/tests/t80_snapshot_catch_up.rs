//! Proves a member that is behind the purge point catches up by a snapshot, over real TCP:
//! a follower stopped while the others purge their log past it restarts and receives the
//! leader's state (the hook's RocksDB data and files) and CommitLog from the first kept
//! segment, ending byte-identical from there, with the same hook data; it then follows by
//! ordinary replication. The same for a brand-new member added as a learner. An install
//! stopped half-way (a fail point after the CommitLog was replaced) is finished by the next
//! start, from the stream kept on disk.

mod common;

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dledger::ApplyHook;
use dledger::CommittedEntry;
use dledger::CommittedPayload;
use dledger::DLedgerNode;
use dledger::HookError;
use dledger::HookFile;
use dledger::HookStore;
use dledger::HookWrites;
use dledger::Peer;

/// A hook that keeps, besides a count in RocksDB, a file of the position of every record it
/// applied: state outside RocksDB that a snapshot must carry. At open the file is cut back
/// to the count, as the broker cuts back its ConsumeQueues.
struct FileHook {
    path: PathBuf,
    count: u64,
}

const DIR: &str = "hookfiles";

impl FileHook {
    fn new(store: &Path) -> Self {
        FileHook {
            path: store.join(DIR).join("positions"),
            count: 0,
        }
    }
}

impl ApplyHook for FileHook {
    fn open(&mut self, store: &HookStore) -> Result<(), HookError> {
        self.count = stored_count(store);
        std::fs::create_dir_all(self.path.parent().unwrap())?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)?;
        file.set_len(self.count * 8)?;
        Ok(())
    }

    fn apply(
        &mut self,
        entry: &CommittedEntry<'_>,
        writes: &mut HookWrites<'_>,
    ) -> Result<Vec<dledger::HookResponse>, HookError> {
        use std::io::Write;
        let CommittedPayload::Records(records) = &entry.payload else {
            return Ok(vec![dledger::HookResponse::new("ok")]);
        };
        let mut file = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        let mut out = Vec::with_capacity(records.len() * 8);
        for r in records {
            out.extend_from_slice(&r.position.to_be_bytes());
        }
        file.write_all(&out)?;
        self.count += records.len() as u64;
        writes.put(COUNT_KEY, &self.count.to_be_bytes());
        Ok(records
            .iter()
            .map(|r| dledger::HookResponse::new(r.position))
            .collect())
    }

    fn snapshot_files(&self) -> Result<Vec<HookFile>, HookError> {
        Ok(vec![HookFile {
            path: PathBuf::from(DIR).join("positions"),
            len: self.count * 8,
        }])
    }

    fn snapshot_dirs(&self) -> Vec<PathBuf> {
        vec![PathBuf::from(DIR)]
    }
}

/// The fail point is an environment variable, seen by every node of the process: the two
/// tests run one after the other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Group {
    dir: tempfile::TempDir,
    peers: Vec<Peer>,
    nodes: Vec<Option<Arc<DLedgerNode>>>,
}

impl Group {
    fn store(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("n{id}"))
    }

    async fn start_node(&mut self, id: usize, listener: Option<tokio::net::TcpListener>) {
        let listener = match listener {
            Some(l) => l,
            None => tokio::net::TcpListener::bind(&self.peers[id].addr)
                .await
                .unwrap(),
        };
        // The first three are the group; a fourth joins it later.
        let mut config = test_config(id as u64, &self.peers[..3.max(id + 1)], self.dir.path());
        config.join_existing = id >= 3;
        // The leader's purge waits this long for a stopped member before purging past it.
        config.purge_timeout_ms = 2_000;
        let hook = FileHook::new(&self.store(id));
        self.nodes[id] = Some(Arc::new(
            DLedgerNode::start_with_listener(config, hook, listener)
                .await
                .unwrap(),
        ));
    }

    async fn stop_node(&mut self, id: usize) {
        let node = self.nodes[id].take().unwrap();
        // A node whose core already stopped answers with that error.
        let _ = node.shutdown().await;
        drop(node);
        // The storage is released once the Raft tasks let go of it.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    fn live(&self) -> Vec<Arc<DLedgerNode>> {
        self.nodes.iter().flatten().cloned().collect()
    }

    async fn append_kib(&self, records: usize) {
        let payload = vec![7u8; 1020];
        for _ in 0..records / 50 {
            let batch = (0..50).map(|_| record(&payload)).collect();
            append_anywhere(&self.nodes, batch, Duration::from_secs(20)).await;
        }
    }
}

/// Every live node: same first stored position, same bytes up to `position`, same hook
/// count and hook file.
async fn assert_same_state(group: &Group, position: u64) {
    let nodes = group.live();
    let starts: Vec<u64> = nodes.iter().map(|n| n.start_position()).collect();
    assert!(
        starts.iter().all(|s| *s == starts[0]),
        "first stored positions differ: {starts:?}"
    );
    assert_identical_prefix(&nodes, position);
    let counts = settled_stored_counts(&nodes).await;
    assert!(
        counts.iter().all(|c| *c == counts[0]),
        "hook counts differ: {counts:?}"
    );
    let files: Vec<Vec<u8>> = (0..group.nodes.len())
        .filter(|id| group.nodes[*id].is_some())
        .map(|id| std::fs::read(group.store(id).join(DIR).join("positions")).unwrap())
        .collect();
    for f in &files {
        assert_eq!(f.len() as u64, counts[0] * 8, "hook file length");
        assert!(*f == files[0], "hook files differ");
    }
    println!(
        "same state on {} nodes: start {}, count {}",
        nodes.len(),
        starts[0],
        counts[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_behind_the_purge_point_catch_up_by_snapshot() {
    let _one = ONE_AT_A_TIME.lock().await;
    init_tracing();
    let (peers, mut listeners) = bind_peers(4).await;
    let new_listener = listeners.pop().unwrap();
    let mut group = Group {
        dir: tempfile::tempdir().unwrap(),
        peers,
        nodes: vec![None, None, None, None],
    };
    for (id, listener) in listeners.into_iter().enumerate() {
        group.start_node(id, Some(listener)).await;
    }
    let leader = wait_leader(&group.nodes, Duration::from_secs(10)).await;
    group.append_kib(2_000).await;
    let follower = (leader + 1) % 3;
    group.stop_node(follower).await;

    // About 4 MiB more while it is away, then every live member purges below the segment
    // before the one being written.
    group.append_kib(4_000).await;
    let live = group.live();
    let applied = wait_converged(&live, 0, Duration::from_secs(20)).await;
    let segment = 1u64 << 20;
    let purge_at = (applied / segment - 1) * segment;
    assert!(purge_at >= 3 * segment, "applied only {applied}");
    for node in &live {
        let purged = node.purge_below(purge_at).await.unwrap();
        assert!(purged.is_some());
        assert_eq!(
            node.start_position(),
            purge_at,
            "segments below the purge point deleted"
        );
    }

    // The stopped follower is behind the purge point: it catches up by snapshot.
    group.start_node(follower, None).await;
    let applied = wait_converged(&group.live(), applied, Duration::from_secs(30)).await;
    assert_same_state(&group, applied).await;
    // ... and then by ordinary replication.
    group.append_kib(500).await;
    let applied = wait_converged(&group.live(), applied + 1, Duration::from_secs(20)).await;
    assert_same_state(&group, applied).await;

    // A brand-new member joins as a learner: it too starts from a snapshot.
    group.start_node(3, Some(new_listener)).await;
    let leader = wait_leader(&group.nodes, Duration::from_secs(10)).await;
    let leader_node = group.nodes[leader].clone().unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        leader_node.add_node(3, &group.peers[3].addr),
    )
    .await
    .expect("the learner caught up within 60 s")
    .unwrap();
    let applied = wait_converged(&group.live(), applied, Duration::from_secs(30)).await;
    assert_same_state(&group, applied).await;
    group.append_kib(200).await;
    let applied = wait_converged(&group.live(), applied + 1, Duration::from_secs(20)).await;
    assert_same_state(&group, applied).await;
    for node in group.live() {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_install_is_finished_at_the_next_start() {
    let _one = ONE_AT_A_TIME.lock().await;
    init_tracing();
    let (peers, listeners) = bind_peers(3).await;
    let mut group = Group {
        dir: tempfile::tempdir().unwrap(),
        peers,
        nodes: vec![None, None, None],
    };
    for (id, listener) in listeners.into_iter().enumerate() {
        group.start_node(id, Some(listener)).await;
    }
    let leader = wait_leader(&group.nodes, Duration::from_secs(10)).await;
    group.append_kib(1_000).await;
    let follower = (leader + 1) % 3;
    group.stop_node(follower).await;
    group.append_kib(3_000).await;
    let live = group.live();
    let applied = wait_converged(&live, 0, Duration::from_secs(20)).await;
    let segment = 1u64 << 20;
    let purge_at = (applied / segment - 1) * segment;
    for node in &live {
        node.purge_below(purge_at).await.unwrap();
    }

    // The install stops after replacing the CommitLog, before the hook's data: the node's
    // Raft core stops with it.
    std::env::set_var("DLEDGER_FAILPOINT", "snapshot-install-after-log");
    group.start_node(follower, None).await;
    let node = group.nodes[follower].clone().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while node.role_watch().borrow().role != dledger::Role::Shutdown {
        assert!(
            std::time::Instant::now() < deadline,
            "the install did not fail"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::env::remove_var("DLEDGER_FAILPOINT");
    drop(node);
    group.stop_node(follower).await;
    let stream_kept = std::fs::read_dir(group.store(follower).join("snapshot"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        stream_kept > 0,
        "the received stream is kept for the next start"
    );

    // The next start finishes the install, then the node follows the log.
    group.start_node(follower, None).await;
    let applied = wait_converged(&group.live(), applied, Duration::from_secs(30)).await;
    assert_same_state(&group, applied).await;
    group.append_kib(200).await;
    let applied = wait_converged(&group.live(), applied + 1, Duration::from_secs(20)).await;
    assert_same_state(&group, applied).await;
    let left: Vec<_> = std::fs::read_dir(group.store(follower).join("snapshot"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing of the install is left: {left:?}");
    for node in group.live() {
        node.shutdown().await.unwrap();
    }
}
