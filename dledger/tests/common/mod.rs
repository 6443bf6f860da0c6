//! Helpers shared by the dledger integration tests: records, a recording apply hook, and
//! three-node groups over TCP or the in-memory router.
#![allow(dead_code)]

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use dledger::network::memory::MemoryRouter;
use dledger::ApplyHook;
use dledger::CommittedEntry;
use dledger::CommittedPayload;
use dledger::DLedgerConfig;
use dledger::DLedgerNode;
use dledger::HookError;
use dledger::HookStore;
use dledger::HookWrites;
use dledger::Peer;
use dledger::Role;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,dledger=info")),
        )
        .with_test_writer()
        .try_init();
}

/// A record: big-endian u32 total length, then `payload`.
pub fn record(payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&((payload.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// What a recording hook saw.
#[derive(Default)]
pub struct Seen {
    /// (position, record bytes) of every applied record, in apply order.
    pub records: Vec<(u64, Vec<u8>)>,
    pub commands: Vec<Vec<u8>>,
}

/// A hook that remembers what it applied and keeps a persisted record count in the meta store
/// (atomically with the applied point), answering each record with its position.
pub struct RecordingHook {
    pub seen: Arc<Mutex<Seen>>,
    count: u64,
}

pub const COUNT_KEY: &[u8] = b"record_count";

impl RecordingHook {
    pub fn new() -> (Self, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        (
            RecordingHook {
                seen: Arc::clone(&seen),
                count: 0,
            },
            seen,
        )
    }
}

pub fn stored_count(store: &HookStore) -> u64 {
    store
        .get(COUNT_KEY)
        .unwrap()
        .map(|v| u64::from_be_bytes(v.try_into().unwrap()))
        .unwrap_or(0)
}

/// Each node's persisted hook count, once the counts stop changing. The applied point and
/// the hook's writes reach RocksDB within a few tens of milliseconds of an apply, not at it.
pub async fn settled_stored_counts(nodes: &[Arc<DLedgerNode>]) -> Vec<u64> {
    let read = || -> Vec<u64> {
        nodes
            .iter()
            .map(|n| stored_count(&n.hook_store()))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = read();
    loop {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = read();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

impl ApplyHook for RecordingHook {
    fn open(&mut self, store: &HookStore) -> Result<(), HookError> {
        self.count = stored_count(store);
        Ok(())
    }

    fn apply(
        &mut self,
        entry: &CommittedEntry<'_>,
        writes: &mut HookWrites<'_>,
    ) -> Result<Vec<dledger::HookResponse>, HookError> {
        let mut seen = self.seen.lock().unwrap();
        match &entry.payload {
            CommittedPayload::Records(records) => {
                self.count += records.len() as u64;
                writes.put(COUNT_KEY, &self.count.to_be_bytes());
                let mut responses = Vec::new();
                for r in records {
                    seen.records.push((r.position, r.bytes.to_vec()));
                    responses.push(dledger::HookResponse::new(r.position));
                }
                Ok(responses)
            }
            CommittedPayload::Command { bytes, .. } => {
                seen.commands.push(bytes.to_vec());
                Ok(vec![dledger::HookResponse::new("ok")])
            }
        }
    }
}

pub fn test_config(id: u64, peers: &[Peer], dir: &Path) -> DLedgerConfig {
    let mut config = DLedgerConfig::new(id, peers.to_vec(), dir.join(format!("n{id}")));
    config.segment_bytes = 1 << 20;
    config.max_entry_bytes = 256 << 10;
    config.max_records_per_entry = 1024;
    config.append_timeout_ms = 5_000;
    config.rpc_timeout_ms = 1_000;
    // Debug builds must ship one append-entries batch within a heartbeat interval.
    config.max_append_entries_bytes = 256 << 10;
    // Over TCP every connection proves this (the memory transport ignores it).
    config.identity = dledger::network::handshake::PeerIdentity {
        cluster: "test".into(),
        group: "g".into(),
        secret: dledger::network::handshake::PeerSecret::new(b"dledger tests".to_vec()),
        rules: String::new(),
    };
    config
}

/// Peers on free loopback ports, and their listeners.
pub async fn bind_peers(n: u64) -> (Vec<Peer>, Vec<tokio::net::TcpListener>) {
    let mut peers = Vec::new();
    let mut listeners = Vec::new();
    for id in 0..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.push(Peer {
            id,
            addr: listener.local_addr().unwrap().to_string(),
        });
        listeners.push(listener);
    }
    (peers, listeners)
}

/// Waits until exactly one of `nodes` is leader, in the highest term seen; returns its index.
pub async fn wait_leader(nodes: &[Option<Arc<DLedgerNode>>], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let states: Vec<_> = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n.role_watch().borrow().clone())))
            .collect();
        let leaders: Vec<_> = states
            .iter()
            .filter(|(_, s)| s.role == Role::Leader)
            .collect();
        if leaders.len() == 1 {
            let max_term = states.iter().map(|(_, s)| s.term).max().unwrap();
            if leaders[0].1.term == max_term {
                return leaders[0].0;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no single leader within {timeout:?}: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every node has applied the same CommitLog prefix of at least `min_position`
/// bytes and returns that position.
pub async fn wait_converged(
    nodes: &[Arc<DLedgerNode>],
    min_position: u64,
    timeout: Duration,
) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let applied: Vec<u64> = nodes.iter().map(|n| n.applied_position()).collect();
        if applied.iter().all(|p| *p == applied[0]) && applied[0] >= min_position {
            return applied[0];
        }
        assert!(Instant::now() < deadline, "nodes did not converge within {timeout:?}: applied {applied:?}, want >= {min_position}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts every node's committed CommitLog bytes up to `position` are identical.
pub fn assert_identical_prefix(nodes: &[Arc<DLedgerNode>], position: u64) {
    let digests: Vec<_> = nodes
        .iter()
        .map(|n| n.commit_log_digest(position).unwrap())
        .collect();
    for d in &digests {
        assert_eq!(
            d.crc32, digests[0].crc32,
            "CommitLog prefixes differ: {digests:?}"
        );
    }
    println!(
        "identical committed prefix on {} nodes: {:?}",
        nodes.len(),
        digests[0]
    );
}

/// Appends `record` on whichever node is leader, retrying NotLeader/Timeout until `timeout`.
pub async fn append_anywhere(
    nodes: &[Option<Arc<DLedgerNode>>],
    records: Vec<Bytes>,
    timeout: Duration,
) -> dledger::AppendResult {
    let deadline = Instant::now() + timeout;
    loop {
        for node in nodes.iter().flatten() {
            if let Ok(result) = node.append(records.clone()).await {
                return result;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no node accepted an append within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A group over the in-memory router.
pub struct MemoryGroup {
    pub router: MemoryRouter,
    pub peers: Vec<Peer>,
    pub dir: PathBuf,
    pub nodes: Vec<Option<Arc<DLedgerNode>>>,
    pub seen: Vec<Arc<Mutex<Seen>>>,
}

impl MemoryGroup {
    pub async fn start(n: u64, dir: &Path, tweak: impl Fn(&mut DLedgerConfig)) -> Self {
        let router = MemoryRouter::new();
        let peers: Vec<Peer> = (0..n)
            .map(|id| Peer {
                id,
                addr: format!("mem-{id}:1"),
            })
            .collect();
        let mut group = MemoryGroup {
            router,
            peers,
            dir: dir.to_path_buf(),
            nodes: Vec::new(),
            seen: Vec::new(),
        };
        for id in 0..n {
            let (node, seen) = group.start_node(id, &tweak).await;
            group.nodes.push(Some(node));
            group.seen.push(seen);
        }
        group
    }

    pub async fn start_node(
        &self,
        id: u64,
        tweak: &impl Fn(&mut DLedgerConfig),
    ) -> (Arc<DLedgerNode>, Arc<Mutex<Seen>>) {
        let mut config = test_config(id, &self.peers, &self.dir);
        tweak(&mut config);
        let (hook, seen) = RecordingHook::new();
        let node = DLedgerNode::start_with_transport(config, hook, self.router.transport_for(id))
            .await
            .unwrap();
        self.router.register(id, node.peer_service());
        (Arc::new(node), seen)
    }

    pub async fn stop_node(&mut self, id: usize) {
        self.router.unregister(id as u64);
        if let Some(node) = self.nodes[id].take() {
            node.shutdown().await.unwrap();
        }
    }

    pub async fn restart_node(&mut self, id: usize, tweak: &impl Fn(&mut DLedgerConfig)) {
        let (node, seen) = self.start_node(id as u64, tweak).await;
        self.nodes[id] = Some(node);
        self.seen[id] = seen;
    }

    pub fn live(&self) -> Vec<Arc<DLedgerNode>> {
        self.nodes.iter().flatten().cloned().collect()
    }

    /// Starts node `id` (a new one past the last, or one started again with an empty store)
    /// as a joining member: it waits to be added instead of starting a group of its own.
    pub async fn start_joining(&mut self, id: usize, tweak: &impl Fn(&mut DLedgerConfig)) {
        if id == self.peers.len() {
            self.peers.push(Peer {
                id: id as u64,
                addr: format!("mem-{id}:1"),
            });
            self.nodes.push(None);
            self.seen.push(Arc::default());
        }
        let joining = |c: &mut DLedgerConfig| {
            tweak(c);
            c.join_existing = true;
        };
        let (node, seen) = self.start_node(id as u64, &joining).await;
        self.nodes[id] = Some(node);
        self.seen[id] = seen;
    }
}
