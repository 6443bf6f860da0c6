//! The API the broker uses: start a node, append, read, watch the role.
//!
//! Owns: the running Raft instance, the group-commit batcher task, the role watcher task and
//! (with TCP) the peer server task. Promises:
//! - `append` answers only after the entry holding the records is committed (a quorum holds
//!   it, and with `SYNC_FLUSH` has msync'd it) AND applied on this node; each record's answer
//!   carries its CommitLog position, the same on every replica.
//! - Concurrent `append` callers are coalesced into one Raft entry (at most
//!   `max_records_per_entry` records and `max_entry_bytes` bytes), with at most
//!   `max_inflight_entries` entries proposed and not yet applied; callers beyond
//!   `append_queue_capacity` wait.
//! - Every call has a deadline (`append_timeout_ms`); a timeout means "outcome unknown".
//! - `read` returns committed bytes only.
//! - `add_node` / `remove_node` change the group's membership ([`crate::membership`]).
//! - `transfer_leadership` hands leadership to a caught-up voter, holding appends for the
//!   hand-over only, and gives up within `transfer_timeout_ms` ([`crate::transfer`]).
//! - A new store waits a randomized election timeout for a running group to reach it; if
//!   none has, it initializes the group with the full peer set (idempotent: the first
//!   entry is the same membership entry everywhere). Initializing at once would let a late
//!   node depose a sitting leader (openraft's leader ids order candidates within a term).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::ClientWriteError;
use openraft::error::RaftError;
use openraft::BasicNode;
use openraft::Raft;
use openraft::ServerState;
use openraft::SnapshotPolicy;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::sync::watch;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::config::DLedgerConfig;
use crate::error::DLedgerError;
use crate::log_store::CommitLog;
use crate::membership::Members;
use crate::membership::Membership;
use crate::network::tcp::TcpLimits;
use crate::network::tcp::TcpTransport;
use crate::network::NetworkFactory;
use crate::network::PeerService;
use crate::network::PeerTransport;
use crate::state_machine::ApplyHook;
use crate::state_machine::HookStore;
use crate::storage::StorageOptions;
use crate::transfer::TransferResult;
use crate::transfer::Transfers;
use crate::transfer::WriteGate;
use crate::types::AppliedEntry;
use crate::types::HookResponse;
use crate::types::NodeId;
use crate::types::Payload;
use crate::types::TypeConfig;

/// This node's part in the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

/// What the name-server registration needs to know, published on every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleState {
    pub node_id: NodeId,
    pub role: Role,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    /// The leader's peer address (from the group's membership).
    pub leader_addr: Option<String>,
    /// This node is a voter of the group's current membership (false for a learner still
    /// catching up, and for a node removed from the group).
    pub voter: bool,
}

/// One appended record, once committed and applied.
#[derive(Debug, Clone)]
pub struct AppendedRecord {
    /// CommitLog position of the record's first byte.
    pub position: u64,
    pub size_bytes: u32,
    /// The apply hook's response for this record, if it gave one.
    pub response: Option<HookResponse>,
}

/// The answer to [`DLedgerNode::append`].
#[derive(Debug, Clone)]
pub struct AppendResult {
    pub log_index: u64,
    pub term: u64,
    /// One per appended record, in the order given.
    pub records: Vec<AppendedRecord>,
}

/// The answer to [`DLedgerNode::append_command`].
#[derive(Debug, Clone)]
pub struct CommandResult {
    pub log_index: u64,
    pub term: u64,
    /// CommitLog position of the command bytes.
    pub position: u64,
    pub response: Option<HookResponse>,
}

/// A CRC32 over the CommitLog bytes `[from_position, to_position)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitLogDigest {
    pub from_position: u64,
    pub to_position: u64,
    pub crc32: u32,
}

/// One CommitLog segment file (see [`DLedgerNode::segments`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// CommitLog position of the file's first byte (its name).
    pub start_position: u64,
    /// CommitLog position just past the file's last byte.
    pub end_position: u64,
    pub path: std::path::PathBuf,
}

struct AppendRequest {
    records: Vec<Bytes>,
    lengths: Vec<u32>,
    bytes: usize,
    reply: oneshot::Sender<Result<AppendResult, DLedgerError>>,
}

/// A running dledger node.
pub struct DLedgerNode {
    node_id: NodeId,
    config: Arc<DLedgerConfig>,
    raft: Raft<TypeConfig>,
    log: Arc<CommitLog>,
    hook_store: HookStore,
    append_tx: mpsc::Sender<AppendRequest>,
    role_rx: watch::Receiver<RoleState>,
    transfers: Transfers,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    server_shutdown: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    /// For [`DLedgerNode::raft_status`].
    flush_latency: crate::log_store::FlushLatency,
    term_at_start: u64,
}

impl DLedgerNode {
    /// Starts a node that listens for peers on its own `dLegerPeers` address.
    pub async fn start(config: DLedgerConfig, hook: impl ApplyHook) -> Result<Self, DLedgerError> {
        config.validate()?;
        let addr = config.self_peer().expect("validated").addr.clone();
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|e| DLedgerError::InvalidConfig {
                field: "peers",
                reason: format!("cannot listen on {addr}: {e}"),
            })?;
        Self::start_with_listener(config, hook, listener).await
    }

    /// Starts a node whose peer server uses an already bound `listener` (tests bind port 0).
    pub async fn start_with_listener(
        config: DLedgerConfig,
        hook: impl ApplyHook,
        listener: TcpListener,
    ) -> Result<Self, DLedgerError> {
        config.validate()?;
        let transport = TcpTransport::new(TcpLimits {
            self_id: config.self_id,
            identity: config.identity.clone(),
            tls: config.peer_tls.clone(),
            max_frame_bytes: config.max_frame_bytes,
            max_inflight_rpcs_per_peer: config.max_inflight_rpcs_per_peer,
            reconnect_backoff_min_ms: config.reconnect_backoff_min_ms,
            reconnect_backoff_max_ms: config.reconnect_backoff_max_ms,
            rpc_timeout_ms: config.rpc_timeout_ms,
        });
        let serve_limits = crate::network::tcp::ServeLimits {
            self_id: config.self_id,
            identity: config.identity.clone(),
            tls: config.peer_tls.clone(),
            max_frame_bytes: config.max_frame_bytes,
            max_inflight_per_connection: config.max_inflight_rpcs_per_peer,
            max_connections: config.max_peer_connections,
            handshake_timeout: Duration::from_millis(config.rpc_timeout_ms),
        };
        let node = Self::start_with_transport(config, hook, transport).await?;
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let service = node.peer_service();
        node.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tokio::spawn(crate::network::tcp::serve(
                listener,
                service,
                serve_limits,
                async move {
                    let _ = shutdown_rx.await;
                },
            )));
        *node
            .server_shutdown
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(shutdown_tx);
        Ok(node)
    }

    /// Starts a node over any transport; the caller routes incoming requests to
    /// [`DLedgerNode::peer_service`] (e.g. [`crate::network::memory::MemoryRouter::register`]).
    pub async fn start_with_transport(
        config: DLedgerConfig,
        hook: impl ApplyHook,
        transport: Arc<dyn PeerTransport>,
    ) -> Result<Self, DLedgerError> {
        config.validate()?;
        let node_id = config.self_id;
        crate::membership::check_not_removed(&config.store_path)?;
        let storage = crate::storage::open(
            &config.store_path,
            &StorageOptions {
                warm_segments: config.warm_segments,
                page_cache_bytes: config.page_cache_bytes,
                segment_bytes: config.segment_bytes,
                flush_mode: config.flush_mode,
                flush_interval_ms: config.flush_interval_ms,
                read_batch_bytes: config.max_append_entries_bytes,
            },
            Box::new(hook),
        )?;
        let log = Arc::clone(&storage.log);
        let flush_latency = storage.log_store.flush_latency();
        if config.test_flush_delay_ms > 0 {
            tracing::warn!(
                node_id,
                delay_ms = config.test_flush_delay_ms,
                "every CommitLog flush of this node waits first, as on a slow disk (a test key)"
            );
            log.set_flush_delay_ms(config.test_flush_delay_ms);
        }
        if config.test_record_flushed {
            tracing::warn!(
                node_id,
                "every CommitLog msync of this node is recorded in commitlog/.test-flushed (a test key)"
            );
            log.record_flushed()?;
        }
        let hook_store = HookStore::new(storage.meta.clone());
        let (election_timeout_min, election_timeout_max) = openraft_election_timeouts(&config);
        let raft_config = openraft::Config {
            cluster_name: "dledger".into(),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min,
            election_timeout_max,
            install_snapshot_timeout: config.rpc_timeout_ms,
            max_payload_entries: config.max_payload_entries,
            // The CommitLog is the log: never snapshot nor purge by openraft's policy. The
            // broker decides retention through the log and calls `purge_below` on every member.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: u64::MAX,
            ..Default::default()
        };
        let raft_config =
            Arc::new(
                raft_config
                    .validate()
                    .map_err(|e| DLedgerError::InvalidConfig {
                        field: "election_timeout_min_ms",
                        reason: e.to_string(),
                    })?,
            );
        let network = NetworkFactory {
            transport: Arc::clone(&transport),
            rpc_timeout: Duration::from_millis(config.rpc_timeout_ms),
            unreachable_backoff: Duration::from_millis(config.heartbeat_interval_ms),
        };
        let raft = Raft::new(
            node_id,
            raft_config,
            network,
            storage.log_store,
            storage.state_machine.starting(),
        )
        .await
        .map_err(|e| DLedgerError::Raft {
            node_id,
            reason: e.to_string(),
        })?;

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| DLedgerError::Raft {
                node_id,
                reason: e.to_string(),
            })?;
        // A node that restarts on its store holds elections for a while: a running group's
        // leader tries an unreachable member again at most every 500 ms (the network's
        // backoff), and a campaign before that reached it would only depose a healthy leader
        // (openraft 0.9 has no pre-vote). A restarted group elects that much later.
        if initialized {
            raft.runtime_config().elect(false);
            let raft = raft.clone();
            let hold = Duration::from_millis((config.election_timeout_max_ms * 2).max(600));
            tokio::spawn(async move {
                tokio::time::sleep(hold).await;
                raft.runtime_config().elect(true);
            });
        }
        // A fresh store does not start an election at once: it first gives a running
        // group the chance to reach it. With openraft's default leader ids a candidacy in
        // the current term outranks the sitting leader, so a node that joined late and
        // initialized at once would depose a healthy leader. After a randomized election
        // timeout, a node that has still heard from no leader initializes the group with
        // the full peer set (idempotent: the first entry is the same everywhere).
        let initializer = if initialized || config.join_existing {
            None
        } else {
            let members: BTreeMap<NodeId, BasicNode> = config
                .peers
                .iter()
                .map(|p| {
                    (
                        p.id,
                        BasicNode {
                            addr: p.addr.clone(),
                        },
                    )
                })
                .collect();
            let delay_ms = rand::Rng::gen_range(
                &mut rand::thread_rng(),
                config.election_timeout_min_ms..config.election_timeout_max_ms,
            );
            let raft = raft.clone();
            Some(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                let heard_from_leader = raft.metrics().borrow().current_leader.is_some();
                if heard_from_leader || raft.is_initialized().await.unwrap_or(true) {
                    tracing::info!(node_id, "joined a running group");
                    return;
                }
                match raft.initialize(members).await {
                    Ok(()) => tracing::info!(node_id, delay_ms, "initialized a new group"),
                    Err(e) => tracing::debug!(node_id, error = %e, "already initialized"),
                }
            }))
        };

        let term_at_start = raft.metrics().borrow().current_term;
        let initial = RoleState {
            node_id,
            role: Role::Follower,
            term: 0,
            leader_id: None,
            leader_addr: None,
            voter: false,
        };
        let (role_tx, role_rx) = watch::channel(initial);
        let mut tasks = vec![tokio::spawn(watch_role(raft.clone(), role_tx))];
        tasks.extend(initializer);
        let transfers = Transfers {
            node_id,
            raft: raft.clone(),
            transport,
            gate: WriteGate::default(),
            leader_since: Arc::default(),
            lease: Duration::from_millis(election_timeout_max),
            rpc_timeout: Duration::from_millis(config.rpc_timeout_ms),
            timeout: Duration::from_millis(config.transfer_timeout_ms),
            max_lag_entries: config.max_transfer_lag_entries,
            running: Arc::default(),
        };
        tasks.push(tokio::spawn(crate::transfer::track_leader_since(
            role_rx.clone(),
            Arc::clone(&transfers.leader_since),
        )));
        if let Some(preferred) = config.preferred_leader_id {
            tasks.push(tokio::spawn(crate::transfer::keep_preferred_leader(
                transfers.clone(),
                preferred,
                Duration::from_millis(config.preferred_leader_check_interval_ms),
            )));
        }
        let (append_tx, append_rx) = mpsc::channel(config.append_queue_capacity);
        tasks.push(tokio::spawn(batcher(
            node_id,
            raft.clone(),
            append_rx,
            config.max_records_per_entry,
            config.max_entry_bytes,
            Arc::new(Semaphore::new(config.max_inflight_entries)),
            Arc::clone(&transfers.gate),
        )));
        Ok(DLedgerNode {
            node_id,
            config: Arc::new(config),
            raft,
            log,
            hook_store,
            append_tx,
            role_rx,
            transfers,
            tasks: std::sync::Mutex::new(tasks),
            server_shutdown: std::sync::Mutex::new(None),
            flush_latency,
            term_at_start,
        })
    }

    /// Term, role, log indexes and positions, each follower's lag (on the leader) and the
    /// flush times, read now from openraft's metrics and the CommitLog (for metrics).
    pub fn raft_status(&self) -> crate::status::RaftStatus {
        crate::status::read(
            &self.raft.metrics().borrow(),
            &self.log,
            self.term_at_start,
            self.flush_latency.snapshot(),
        )
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The most bytes one entry (a batch of records, or a command) may carry: a caller
    /// with more splits it ([`DLedgerNode::append_command`] refuses a longer command).
    pub fn max_entry_bytes(&self) -> usize {
        self.config.max_entry_bytes
    }

    /// The receiving side of this node's peer RPCs.
    pub fn peer_service(&self) -> PeerService {
        PeerService::new(self.raft.clone(), Arc::clone(&self.log), &self.config)
    }

    /// Read access to the apply hook's data.
    pub fn hook_store(&self) -> HookStore {
        self.hook_store.clone()
    }

    /// Whether this node is the leader right now (as last published by openraft).
    pub fn is_leader(&self) -> bool {
        self.role_rx.borrow().role == Role::Leader
    }

    /// Role, term and leader, updated on every change.
    pub fn role_watch(&self) -> watch::Receiver<RoleState> {
        self.role_rx.clone()
    }

    fn not_leader(&self) -> Option<DLedgerError> {
        let state = self.role_rx.borrow();
        (state.role != Role::Leader).then(|| DLedgerError::NotLeader {
            node_id: self.node_id,
            leader_id: state.leader_id,
            leader_addr: state.leader_addr.clone(),
        })
    }

    /// Appends records as one atomic group; answers once they are committed and applied.
    ///
    /// Each record must begin with its own big-endian u32 total length.
    pub async fn append(&self, records: Vec<Bytes>) -> Result<AppendResult, DLedgerError> {
        let mut lengths = Vec::with_capacity(records.len());
        let mut bytes = 0usize;
        for (record_index, record) in records.iter().enumerate() {
            let declared = record
                .get(..4)
                .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")));
            match declared {
                Some(length) if length as usize == record.len() => {}
                _ => {
                    return Err(DLedgerError::InvalidRecord {
                        record_index,
                        reason: format!(
                            "is {} bytes but begins with TOTALSIZE {declared:?} (big-endian u32 of its own length)",
                            record.len()
                        ),
                    })
                }
            }
            lengths.push(record.len() as u32);
            bytes += record.len();
        }
        if records.is_empty() {
            return Err(DLedgerError::InvalidRecord {
                record_index: 0,
                reason: "no records to append".into(),
            });
        }
        if records.len() > self.config.max_records_per_entry || bytes > self.config.max_entry_bytes
        {
            return Err(DLedgerError::TooLarge {
                records: records.len(),
                bytes,
                max_records: self.config.max_records_per_entry,
                max_bytes: self.config.max_entry_bytes,
            });
        }
        if let Some(e) = self.not_leader() {
            return Err(e);
        }
        let (reply, rx) = oneshot::channel();
        let request = AppendRequest {
            records,
            lengths,
            bytes,
            reply,
        };
        let node_id = self.node_id;
        let timeout_ms = self.config.append_timeout_ms;
        let call = async {
            self.append_tx
                .send(request)
                .await
                .map_err(|_| DLedgerError::Shutdown { node_id })?;
            rx.await.map_err(|_| DLedgerError::Shutdown { node_id })?
        };
        tokio::time::timeout(Duration::from_millis(timeout_ms), call)
            .await
            .map_err(|_| DLedgerError::Timeout {
                node_id,
                what: "append",
                timeout_ms,
            })?
    }

    /// Appends one opaque application command; answers once committed and applied.
    pub async fn append_command(&self, command: Vec<u8>) -> Result<CommandResult, DLedgerError> {
        if command.len() > self.config.max_entry_bytes {
            return Err(DLedgerError::TooLarge {
                records: 1,
                bytes: command.len(),
                max_records: 1,
                max_bytes: self.config.max_entry_bytes,
            });
        }
        if let Some(e) = self.not_leader() {
            return Err(e);
        }
        let node_id = self.node_id;
        let timeout_ms = self.config.append_timeout_ms;
        let write = async {
            // Held until applied: a leadership transfer waits for it, and holds new ones.
            let _gate = self.transfers.gate.read().await;
            self.raft
                .client_write(Payload::Command(Bytes::from(command)))
                .await
        };
        let written = tokio::time::timeout(Duration::from_millis(timeout_ms), write)
            .await
            .map_err(|_| DLedgerError::Timeout {
                node_id,
                what: "append_command",
                timeout_ms,
            })?
            .map_err(|e| write_error(node_id, e))?;
        let AppliedEntry {
            body_position,
            responses,
        } = written.data;
        Ok(CommandResult {
            log_index: written.log_id.index,
            term: written.log_id.leader_id.term,
            position: body_position,
            response: responses.into_iter().next(),
        })
    }

    /// Hands leadership to voter `target` once it holds this leader's whole log (appends are
    /// held meanwhile, and answered NotLeader after). Refused at once, nothing held, when this
    /// node does not lead or `target` is down, lagging or not a voter; failed (appends resumed)
    /// when the hand-over does not complete within `transfer_timeout_ms`.
    pub async fn transfer_leadership(
        &self,
        target: NodeId,
    ) -> Result<TransferResult, DLedgerError> {
        self.transfers.transfer(target).await
    }

    /// Up to `max_bytes` committed CommitLog bytes from `position` (never past the end of its
    /// segment). Entry headers and segment padding lie between records: read records at the
    /// positions the apply hook was given.
    pub fn read(&self, position: u64, max_bytes: usize) -> Result<Vec<u8>, DLedgerError> {
        self.log.read(position, max_bytes, self.log.committed_end())
    }

    /// The first CommitLog position this node still stores: anything below it was purged
    /// (retention), and reads there fail.
    pub fn start_position(&self) -> u64 {
        self.log.start_position()
    }

    /// Adds node `id`, listening for peers at `addr`, to the group (leader only): as a
    /// learner first, which catches up by snapshot and log, then as a voter. The node must
    /// have been started with `join_existing`, so that it waits to be added instead of
    /// starting a group of its own. See [`crate::membership`] for what is refused.
    pub async fn add_node(&self, id: NodeId, addr: &str) -> Result<Members, DLedgerError> {
        self.membership().add(id, addr).await
    }

    /// Removes node `id` from the group (leader only; never this node itself).
    pub async fn remove_node(&self, id: NodeId) -> Result<Members, DLedgerError> {
        self.membership().remove(id).await
    }

    /// The group's membership as this node sees it now.
    pub fn members(&self) -> Members {
        Members::from_metrics(&self.raft.metrics().borrow())
    }

    fn membership(&self) -> Membership<'_> {
        Membership {
            node_id: self.node_id,
            raft: &self.raft,
            transfers: &self.transfers,
            timeout: Duration::from_millis(self.config.membership_timeout_ms),
        }
    }

    /// Why this node's Raft core stopped by itself (a storage or apply failure, or this
    /// node's removal from the group); `None` while it runs or after a plain shutdown.
    pub fn stop_reason(&self) -> Option<String> {
        match &self.raft.metrics().borrow().running_state {
            Ok(()) | Err(openraft::error::Fatal::Stopped) => {
                crate::membership::removed_detail(&self.config.store_path)
            }
            Err(fatal) => Some(fatal.to_string()),
        }
    }

    /// End of the committed CommitLog prefix known to this node.
    pub fn committed_position(&self) -> u64 {
        self.log.committed_end()
    }

    /// End of everything written to this node's CommitLog, committed or not.
    pub fn written_position(&self) -> u64 {
        self.log.written_position()
    }

    /// End of the prefix applied by this node's hook.
    pub fn applied_position(&self) -> u64 {
        self.log.applied_end()
    }

    /// A digest of this node's CommitLog bytes from its first stored position up to
    /// `to_position`, which must be committed here. Equal digests at the same position mean
    /// byte-identical prefixes.
    pub fn commit_log_digest(&self, to_position: u64) -> Result<CommitLogDigest, DLedgerError> {
        let from_position = self.log.start_position();
        let end = self.log.committed_end();
        if to_position > end {
            return Err(DLedgerError::PositionOutOfRange {
                position: to_position,
                start: from_position,
                end,
            });
        }
        let crc32 = self.log.digest(from_position, to_position)?;
        Ok(CommitLogDigest {
            from_position,
            to_position,
            crc32,
        })
    }

    /// Every CommitLog segment file this node stores, oldest first.
    pub fn segments(&self) -> Vec<SegmentFile> {
        self.log
            .segment_files()
            .into_iter()
            .map(|(start_position, end_position, path)| SegmentFile {
                start_position,
                end_position,
                path,
            })
            .collect()
    }

    /// Purges this node's Raft log (and so its CommitLog segment files) below `position`,
    /// a segment start the caller has decided through the log (retention). Returns the last
    /// purged log index, if anything is purged.
    ///
    /// openraft purges only what a snapshot covers: this builds a snapshot (on any member),
    /// waits until openraft reports one that covers the last entry wholly below `position`,
    /// on the leader waits a while for members behind that entry (`hold_for_followers`),
    /// then asks openraft to purge up to that entry; openraft then calls the log store's
    /// `purge`, which makes the purge point durable and deletes the segment files. It waits
    /// for openraft to report the purge (a leader may defer it while a replication task still
    /// reads those entries). Idempotent: a position already purged returns at once, so it may
    /// be called again after a restart. Must not be called from inside the apply hook
    /// (openraft's state-machine worker would wait on itself).
    pub async fn purge_below(&self, position: u64) -> Result<Option<u64>, DLedgerError> {
        let Some(index) = self.log.last_index_below(position) else {
            return Ok(None);
        };
        let node_id = self.node_id;
        let raft_err = |e: &dyn std::fmt::Display| DLedgerError::Raft {
            node_id,
            reason: e.to_string(),
        };
        let purged = |m: &openraft::RaftMetrics<NodeId, BasicNode>| {
            m.purged.is_some_and(|p| p.index >= index)
        };
        if purged(&self.raft.metrics().borrow()) {
            // Entries purged already (e.g. by a snapshot install, which keeps the sender's
            // older segments): only files may be left to delete.
            self.log.delete_segments_below(position)?;
            return Ok(Some(index));
        }
        let applied = self.raft.metrics().borrow().last_applied;
        if applied.is_none_or(|a| a.index < index) {
            // Never purge what this node has not applied: the caller retries later.
            return Ok(None);
        }
        let covered = |m: &openraft::RaftMetrics<NodeId, BasicNode>| {
            m.snapshot.is_some_and(|s| s.index >= index)
        };
        let timeout = Duration::from_millis(self.config.purge_timeout_ms);
        if !covered(&self.raft.metrics().borrow()) {
            self.raft
                .trigger()
                .snapshot()
                .await
                .map_err(|e| raft_err(&e))?;
            self.wait_metrics(covered, timeout, "a snapshot covering the purge")
                .await?;
        }
        self.hold_for_followers(index, timeout).await;
        self.raft
            .trigger()
            .purge_log(index)
            .await
            .map_err(|e| raft_err(&e))?;
        self.wait_metrics(purged, timeout, "the Raft log purge")
            .await?;
        tracing::info!(
            node_id,
            log_index = index,
            position,
            start_position = self.log.start_position(),
            "purged the Raft log below the retention point"
        );
        Ok(Some(index))
    }

    /// On the leader, waits (at most `timeout`) until every member holds entry `index`, so a
    /// follower that is only briefly behind (a slow disk, a pause) catches up from the log
    /// rather than needing a snapshot. A member still behind after that does not hold the
    /// purge back any longer: a dead member must not fill the leader's disk.
    async fn hold_for_followers(&self, index: u64, timeout: Duration) {
        let caught_up = |m: &openraft::RaftMetrics<NodeId, BasicNode>| {
            m.replication.as_ref().is_none_or(|r| {
                r.values()
                    .all(|matched| matched.is_some_and(|l| l.index >= index))
            })
        };
        if self
            .wait_metrics(caught_up, timeout, "followers")
            .await
            .is_err()
        {
            let behind: Vec<NodeId> = (self.raft.metrics().borrow().replication.iter())
                .flatten()
                .filter(|(_, matched)| matched.is_none_or(|l| l.index < index))
                .map(|(id, _)| *id)
                .collect();
            tracing::warn!(
                node_id = self.node_id,
                log_index = index,
                ?behind,
                "purging the Raft log past members still behind it: they will need a snapshot"
            );
        }
    }

    async fn wait_metrics(
        &self,
        done: impl Fn(&openraft::RaftMetrics<NodeId, BasicNode>) -> bool,
        timeout: Duration,
        what: &'static str,
    ) -> Result<(), DLedgerError> {
        let mut metrics = self.raft.metrics();
        let node_id = self.node_id;
        let result = tokio::time::timeout(timeout, async {
            metrics.wait_for(|m| done(m)).await.map(|_| ())
        })
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(DLedgerError::Shutdown { node_id }),
            Err(_) => Err(DLedgerError::Timeout {
                node_id,
                what,
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }

    /// Stops the node: peer server, batcher, Raft. Files stay as they are. The storage is
    /// released once the last handle to this node is dropped.
    pub async fn shutdown(&self) -> Result<(), DLedgerError> {
        if let Some(tx) = self
            .server_shutdown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = tx.send(());
        }
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
        let result = self.raft.shutdown().await;
        // Under ASYNC_FLUSH the tail written since the last interval is still only in the
        // page cache: a clean stop syncs it here, rather than when the last handle to the
        // CommitLog happens to drop (which a process exiting first would skip).
        if let Err(e) = self.log.flush_dirty() {
            tracing::error!(node_id = self.node_id, error = %e, "final CommitLog msync failed");
        }
        tracing::info!(node_id = self.node_id, "dledger node stopped");
        result.map_err(|e| DLedgerError::Raft {
            node_id: self.node_id,
            reason: e.to_string(),
        })
    }
}

impl Drop for DLedgerNode {
    fn drop(&mut self) {
        if let Some(tx) = self
            .server_shutdown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = tx.send(());
        }
        for task in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            task.abort();
        }
    }
}

/// Maps our election window onto openraft's timers.
///
/// A follower of a live leader starts an election once openraft's leader lease (equal to its
/// `election_timeout_max`) plus its randomized election timeout have passed since the last
/// heartbeat. To make that window `[election_timeout_min_ms, election_timeout_max_ms)` we give
/// openraft half of our max as its max (the lease) and the rest of our min as its min (never
/// below one heartbeat). Defaults 500-1000 ms give openraft 101-500 ms: a follower starts an
/// election 601-1000 ms after the last heartbeat.
fn openraft_election_timeouts(config: &DLedgerConfig) -> (u64, u64) {
    let heartbeat = config.heartbeat_interval_ms;
    let max = (config.election_timeout_max_ms / 2).max(heartbeat + 2);
    let min = config
        .election_timeout_min_ms
        .saturating_sub(max)
        .clamp(heartbeat + 1, max - 1);
    (min, max)
}

fn write_error(
    node_id: NodeId,
    e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
) -> DLedgerError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => DLedgerError::NotLeader {
            node_id,
            leader_id: f.leader_id,
            leader_addr: f.leader_node.map(|n| n.addr),
        },
        RaftError::APIError(e) => DLedgerError::Raft {
            node_id,
            reason: e.to_string(),
        },
        RaftError::Fatal(e) => DLedgerError::Raft {
            node_id,
            reason: format!("raft stopped: {e}"),
        },
    }
}

fn duplicate(e: &DLedgerError) -> DLedgerError {
    match e {
        DLedgerError::NotLeader {
            node_id,
            leader_id,
            leader_addr,
        } => DLedgerError::NotLeader {
            node_id: *node_id,
            leader_id: *leader_id,
            leader_addr: leader_addr.clone(),
        },
        DLedgerError::Shutdown { node_id } => DLedgerError::Shutdown { node_id: *node_id },
        other => DLedgerError::Raft {
            node_id: 0,
            reason: other.to_string(),
        },
    }
}

/// Coalesces queued appends into Raft entries and fans the results out.
async fn batcher(
    node_id: NodeId,
    raft: Raft<TypeConfig>,
    mut rx: mpsc::Receiver<AppendRequest>,
    max_records: usize,
    max_bytes: usize,
    inflight: Arc<Semaphore>,
    gate: WriteGate,
) {
    let mut carried: Option<AppendRequest> = None;
    loop {
        let Ok(permit) = Arc::clone(&inflight).acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(first) => first,
            None => match rx.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut records = first.records.len();
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while let Ok(next) = rx.try_recv() {
            if records + next.records.len() > max_records || bytes + next.bytes > max_bytes {
                carried = Some(next);
                break;
            }
            records += next.records.len();
            bytes += next.bytes;
            batch.push(next);
        }
        let mut body = Vec::with_capacity(bytes);
        for request in &batch {
            for record in &request.records {
                body.extend_from_slice(record);
            }
        }
        // Held until applied: a leadership transfer waits for it, and holds the next batch.
        let held = Arc::clone(&gate).read_owned().await;
        let raft = raft.clone();
        tokio::spawn(async move {
            let written = raft.client_write(Payload::Records(Bytes::from(body))).await;
            drop(held);
            drop(permit);
            match written {
                Ok(written) => {
                    let log_index = written.log_id.index;
                    let term = written.log_id.leader_id.term;
                    let AppliedEntry {
                        body_position,
                        responses,
                    } = written.data;
                    let mut responses: Vec<Option<HookResponse>> =
                        responses.into_iter().map(Some).collect();
                    let mut position = body_position;
                    let mut record_index = 0usize;
                    for request in batch {
                        let mut out = Vec::with_capacity(request.lengths.len());
                        for length in request.lengths {
                            let response = responses.get_mut(record_index).and_then(Option::take);
                            out.push(AppendedRecord {
                                position,
                                size_bytes: length,
                                response,
                            });
                            position += length as u64;
                            record_index += 1;
                        }
                        let _ = request.reply.send(Ok(AppendResult {
                            log_index,
                            term,
                            records: out,
                        }));
                    }
                }
                Err(e) => {
                    let e = write_error(node_id, e);
                    tracing::debug!(node_id, error = %e, records, "append failed");
                    for request in batch {
                        let _ = request.reply.send(Err(duplicate(&e)));
                    }
                }
            }
        });
    }
}

/// Publishes role changes from openraft's metrics and logs elections.
///
/// Watches openraft's server metrics, which change only with the vote, the role, the leader
/// or the membership; the full metrics change with every entry written or applied, and
/// following them woke this task for each. When Raft stops (on shutdown or a fatal error)
/// the metrics' sender goes away with it, and the role becomes `Shutdown`.
async fn watch_role(raft: Raft<TypeConfig>, role_tx: watch::Sender<RoleState>) {
    let mut metrics = raft.server_metrics();
    loop {
        let next = {
            let m = metrics.borrow_and_update();
            let role = match m.state {
                ServerState::Shutdown => Role::Shutdown,
                ServerState::Leader => Role::Leader,
                ServerState::Follower => Role::Follower,
                ServerState::Candidate => Role::Candidate,
                ServerState::Learner => Role::Learner,
            };
            let leader_addr = m.current_leader.and_then(|l| {
                m.membership_config
                    .membership()
                    .get_node(&l)
                    .map(|n| n.addr.clone())
            });
            let voter = m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == m.id);
            RoleState {
                node_id: m.id,
                role,
                term: m.vote.leader_id().get_term(),
                leader_id: m.current_leader,
                leader_addr,
                voter,
            }
        };
        let changed = role_tx.send_if_modified(|current| {
            if *current == next {
                return false;
            }
            if current.voter != next.voter {
                tracing::info!(
                    node_id = next.node_id,
                    voter = next.voter,
                    "this node's vote in the group changed"
                );
            }
            if current.role != next.role || current.leader_id != next.leader_id {
                tracing::info!(
                    node_id = next.node_id,
                    term = next.term,
                    role = ?next.role,
                    leader_id = ?next.leader_id,
                    "role changed"
                );
            }
            *current = next.clone();
            true
        });
        let _ = changed;
        if next.role == Role::Shutdown || metrics.changed().await.is_err() {
            role_tx.send_modify(|s| s.role = Role::Shutdown);
            return;
        }
    }
}
