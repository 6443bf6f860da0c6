//! Node configuration: [`DLedgerConfig`], [`FlushMode`] and the `dLegerPeers` parser.
//!
//! Owns every limit of the crate (units last in each name) and their defaults. Promises:
//! [`DLedgerConfig::validate`] rejects combinations that would break an invariant (an entry
//! that can never fit a segment, an empty election window) before anything touches disk.

use std::path::PathBuf;
use std::sync::Arc;

use remoting::tls::PeerTls;

use crate::error::DLedgerError;
use crate::network::handshake::PeerIdentity;
use crate::types::NodeId;

/// When an appended entry counts as stored on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// RocketMQ `SYNC_FLUSH`: a replica acknowledges an entry only after `msync` of its bytes.
    Sync,
    /// RocketMQ `ASYNC_FLUSH`: a replica acknowledges once the entry is in the page cache; a
    /// background flush runs every `flush_interval_ms`. An OS crash can lose the last interval.
    Async,
}

impl FlushMode {
    /// Parses RocketMQ's `flushDiskType` values (`SYNC_FLUSH`, `ASYNC_FLUSH`) or `sync`/`async`.
    pub fn parse(text: &str) -> Result<Self, DLedgerError> {
        match text.trim().to_ascii_uppercase().as_str() {
            "SYNC_FLUSH" | "SYNC" => Ok(FlushMode::Sync),
            "ASYNC_FLUSH" | "ASYNC" => Ok(FlushMode::Async),
            other => Err(DLedgerError::InvalidConfig {
                field: "flush_mode",
                reason: format!("{other:?} is neither SYNC_FLUSH nor ASYNC_FLUSH"),
            }),
        }
    }
}

/// One member of the group: `n<id>` and its peer address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: NodeId,
    pub addr: String,
}

impl Peer {
    /// The DLedger name of this peer, e.g. `n0`.
    pub fn name(&self) -> String {
        format!("n{}", self.id)
    }
}

/// Parses a DLedger node name (`n0`, `n12`) into its numeric id.
pub fn parse_node_name(name: &str) -> Result<NodeId, DLedgerError> {
    let bad = |reason: String| DLedgerError::InvalidPeers {
        input: name.to_string(),
        reason,
    };
    let digits = name
        .trim()
        .strip_prefix('n')
        .ok_or_else(|| bad("a node name is `n` followed by a number, e.g. n0".into()))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("{digits:?} after `n` is not a number")));
    }
    digits
        .parse::<NodeId>()
        .map_err(|e| bad(format!("node number {digits:?}: {e}")))
}

/// Parses RocketMQ's `dLegerPeers`: `n0-127.0.0.1:40911;n1-127.0.0.1:40912;n2-127.0.0.1:40913`.
///
/// Empty items (a trailing `;`) are ignored; duplicate ids, a missing port or an empty list are
/// errors that quote the offending item.
pub fn parse_peers(input: &str) -> Result<Vec<Peer>, DLedgerError> {
    let bad = |reason: String| DLedgerError::InvalidPeers {
        input: input.to_string(),
        reason,
    };
    let mut peers: Vec<Peer> = Vec::new();
    for item in input.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, addr) = item.split_once('-').ok_or_else(|| {
            bad(format!(
                "item {item:?} is not of the form n<id>-<host>:<port>"
            ))
        })?;
        let id = parse_node_name(name).map_err(|e| bad(format!("item {item:?}: {e}")))?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| bad(format!("item {item:?}: address {addr:?} has no :port")))?;
        if host.is_empty() {
            return Err(bad(format!("item {item:?}: empty host")));
        }
        port.parse::<u16>()
            .map_err(|e| bad(format!("item {item:?}: port {port:?}: {e}")))?;
        if peers.iter().any(|p| p.id == id) {
            return Err(bad(format!("node n{id} is listed twice")));
        }
        peers.push(Peer {
            id,
            addr: addr.to_string(),
        });
    }
    if peers.is_empty() {
        return Err(bad("no peers listed".into()));
    }
    Ok(peers)
}

/// Everything a dledger node needs to start. Build with [`DLedgerConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct DLedgerConfig {
    /// This node's id (`dLegerSelfId` = `n<id>`).
    pub self_id: NodeId,
    /// Every member of the group, this node included (`dLegerPeers`).
    pub peers: Vec<Peer>,
    /// Root of this node's files: `<store_path>/commitlog/` and `<store_path>/meta/`.
    pub store_path: PathBuf,
    /// Size of one CommitLog segment file. Must be equal on every replica; persisted at creation.
    pub segment_bytes: u64,
    /// Write a new segment full of zeros before use (true, the default) or only reserve its
    /// blocks with `fallocate` (false): warm segments measured faster for ASYNC_FLUSH and for
    /// SYNC_FLUSH latency, reserved ones for SYNC_FLUSH throughput under load, and they save
    /// the extra disk write (`warmMapedFileEnable` in the broker's file).
    pub warm_segments: bool,
    /// How many of the newest CommitLog bytes are left in the page cache: older bytes, once
    /// flushed, are dropped from it, and reads of them go to the disk. 0 leaves the cache to
    /// the kernel. Bounding it lets new log pages reuse freshly freed memory, which on a VM
    /// whose free memory goes back to the host costs a fraction of touching new memory
    /// (`pageCacheWindowCommitLog` in the broker's file; docs/PERFORMANCE.md).
    pub page_cache_bytes: u64,
    /// `SYNC_FLUSH` or `ASYNC_FLUSH`.
    pub flush_mode: FlushMode,
    /// Period of the background flush in `ASYNC_FLUSH` mode.
    pub flush_interval_ms: u64,
    /// Leader heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// Election timeout is drawn uniformly from `[min, max)` after the last heartbeat.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Most records coalesced into one Raft entry by the group-commit batcher.
    pub max_records_per_entry: usize,
    /// Most payload bytes in one Raft entry (records or command). Must fit a segment.
    pub max_entry_bytes: usize,
    /// Capacity of the append queue in front of the batcher (callers wait when it is full).
    pub append_queue_capacity: usize,
    /// Raft entries proposed by the batcher and not yet applied, at most. Small on purpose:
    /// while they are in flight, waiting appends pile up into the next (bigger) entry. On the
    /// 2-core test machine 1-2 gave ~22k records/s with SYNC_FLUSH and 4+ collapsed to <2k/s
    /// (many one-record entries, each applied and flushed on its own).
    pub max_inflight_entries: usize,
    /// Deadline of one `append`/`append_command` call, queueing included.
    pub append_timeout_ms: u64,
    /// Upper bound of the deadline of one peer RPC (vote, append-entries, snapshot chunk).
    pub rpc_timeout_ms: u64,
    /// Largest peer frame accepted or sent.
    pub max_frame_bytes: usize,
    /// The cluster, group and secret this node proves to its peers and checks in theirs
    /// ([`crate::network::handshake`]). The default (empty names, no secret) suits tests
    /// that start every node alike; the broker always sets it.
    pub identity: PeerIdentity,
    /// TLS on peer connections (`tls.peer.mode`, [`PeerTls`]): mutual, each end verifying
    /// the other's certificate before the handshake above runs inside it. `None`
    /// (the default): plaintext.
    pub peer_tls: Option<Arc<PeerTls>>,
    /// Peer connections the peer port holds open at once (a member opens two to each
    /// other member); one more is closed at accept.
    pub max_peer_connections: usize,
    /// Peer RPCs in flight to one peer, at most.
    pub max_inflight_rpcs_per_peer: usize,
    /// Reconnect backoff to a peer: starts at min, doubles up to max.
    pub reconnect_backoff_min_ms: u64,
    pub reconnect_backoff_max_ms: u64,
    /// Most Raft entries in one append-entries RPC.
    pub max_payload_entries: u64,
    /// Most entry bytes in one append-entries RPC (at least one entry is always sent).
    /// openraft 0.9 gives an append-entries RPC one heartbeat interval to complete, so a
    /// lagging follower only catches up if one batch ships and persists well within it.
    pub max_append_entries_bytes: usize,
    /// A new member of a running group: never initializes a group by itself, however long
    /// it hears from no leader; it waits to be added ([`crate::DLedgerNode::add_node`]).
    pub join_existing: bool,
    /// Deadline of each step of [`crate::DLedgerNode::purge_below`]: the snapshot that must
    /// cover the purge, then openraft's purge (a leader defers it while replication reads).
    pub purge_timeout_ms: u64,
    /// DLedger's `preferredLeaderId`: while this node leads and the preferred node is a
    /// caught-up voter, leadership is handed to it (checked every
    /// `preferred_leader_check_interval_ms`). `None`: leadership stays where elections put it.
    pub preferred_leader_id: Option<NodeId>,
    /// Period of the preferred-leader check on the leader.
    pub preferred_leader_check_interval_ms: u64,
    /// A leadership transfer is refused when its target is more than this many entries behind
    /// the leader's last entry (DLedger's `maxLeadershipTransferWaitIndex`): catching up would
    /// hold appends too long.
    pub max_transfer_lag_entries: u64,
    /// Longest a leadership transfer may hold appends; past it the old leader resumes (if it
    /// still leads) and the transfer is reported failed. A leader elected less than one
    /// leader lease ago first waits that out, before holding anything.
    pub transfer_timeout_ms: u64,
    /// Deadline of each step of a membership change ([`crate::DLedgerNode::add_node`],
    /// [`crate::DLedgerNode::remove_node`]): a new node's catch-up as a learner, then the
    /// commit of the joint and the new configuration. A learner still catching up at the
    /// deadline keeps catching up; asking again waits on.
    pub membership_timeout_ms: u64,
    /// For tests and benches only: every CommitLog msync of this node waits this long first,
    /// as on a slow disk (0: none). Under SYNC_FLUSH a follower answers append-entries only
    /// after its msync, so this is how long its answers are held.
    pub test_flush_delay_ms: u64,
    /// For tests only: after every CommitLog msync, this node records the position below
    /// which every byte is msync'd in `<store_path>/commitlog/.test-flushed`, so a test can
    /// drop exactly the unsynced bytes as an OS crash would (off: no file, no extra work).
    pub test_record_flushed: bool,
}

impl DLedgerConfig {
    /// A config with the defaults of the design: 1 GiB segments, SYNC_FLUSH, 100 ms heartbeat,
    /// 500-1000 ms election timeout.
    pub fn new(self_id: NodeId, peers: Vec<Peer>, store_path: impl Into<PathBuf>) -> Self {
        DLedgerConfig {
            self_id,
            peers,
            store_path: store_path.into(),
            segment_bytes: 1 << 30,
            warm_segments: true,
            page_cache_bytes: 64 << 20,
            flush_mode: FlushMode::Sync,
            flush_interval_ms: 500,
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            max_records_per_entry: 4096,
            max_entry_bytes: 4 << 20,
            append_queue_capacity: 16 * 1024,
            max_inflight_entries: 2,
            append_timeout_ms: 10_000,
            rpc_timeout_ms: 3_000,
            max_frame_bytes: 64 << 20,
            identity: PeerIdentity::default(),
            peer_tls: None,
            max_peer_connections: 64,
            max_inflight_rpcs_per_peer: 64,
            reconnect_backoff_min_ms: 20,
            reconnect_backoff_max_ms: 1_000,
            max_payload_entries: 256,
            max_append_entries_bytes: 1 << 20,
            join_existing: false,
            purge_timeout_ms: 30_000,
            preferred_leader_id: None,
            preferred_leader_check_interval_ms: 1_000,
            max_transfer_lag_entries: 1_000,
            transfer_timeout_ms: 2_000,
            membership_timeout_ms: 60_000,
            test_flush_delay_ms: 0,
            test_record_flushed: false,
        }
    }

    /// This node's own peer entry.
    pub fn self_peer(&self) -> Option<&Peer> {
        self.peers.iter().find(|p| p.id == self.self_id)
    }

    /// Rejects values that cannot work together.
    pub fn validate(&self) -> Result<(), DLedgerError> {
        let bad =
            |field: &'static str, reason: String| DLedgerError::InvalidConfig { field, reason };
        if self.self_peer().is_none() {
            return Err(bad("self_id", format!("n{} is not in peers", self.self_id)));
        }
        if self.segment_bytes < 64 * 1024 || self.segment_bytes > (1 << 40) {
            return Err(bad(
                "segment_bytes",
                format!("{} not in [64 KiB, 1 TiB]", self.segment_bytes),
            ));
        }
        if self.max_entry_bytes == 0
            || (self.max_entry_bytes as u64) + 4096 > self.segment_bytes
            || self.max_entry_bytes > u32::MAX as usize / 2
        {
            return Err(bad(
                "max_entry_bytes",
                format!(
                    "{} must be > 0 and at least 4 KiB below segment_bytes {}",
                    self.max_entry_bytes, self.segment_bytes
                ),
            ));
        }
        if self.max_frame_bytes < self.max_entry_bytes + 4096 {
            return Err(bad(
                "max_frame_bytes",
                "must exceed max_entry_bytes + 4 KiB".into(),
            ));
        }
        if self.max_append_entries_bytes == 0
            || self.max_append_entries_bytes > self.max_frame_bytes / 2
        {
            return Err(bad(
                "max_append_entries_bytes",
                "must be in (0, max_frame_bytes / 2]".into(),
            ));
        }
        if self.heartbeat_interval_ms == 0 {
            return Err(bad("heartbeat_interval_ms", "must be > 0".into()));
        }
        if self.election_timeout_min_ms <= self.heartbeat_interval_ms
            || self.election_timeout_max_ms <= self.election_timeout_min_ms
        {
            return Err(bad(
                "election_timeout_min_ms",
                "need heartbeat_interval_ms < election_timeout_min_ms < election_timeout_max_ms"
                    .into(),
            ));
        }
        for (field, value) in [
            ("max_records_per_entry", self.max_records_per_entry),
            ("append_queue_capacity", self.append_queue_capacity),
            ("max_inflight_entries", self.max_inflight_entries),
            ("max_peer_connections", self.max_peer_connections),
            (
                "max_inflight_rpcs_per_peer",
                self.max_inflight_rpcs_per_peer,
            ),
        ] {
            if value == 0 {
                return Err(bad(field, "must be > 0".into()));
            }
        }
        if let Some(preferred) = self.preferred_leader_id {
            if !self.peers.iter().any(|p| p.id == preferred) {
                return Err(bad(
                    "preferred_leader_id",
                    format!("n{preferred} is not in peers"),
                ));
            }
        }
        if self.membership_timeout_ms == 0 {
            return Err(bad(
                "membership_timeout_ms",
                "membership_timeout_ms must be > 0".into(),
            ));
        }
        if self.preferred_leader_check_interval_ms == 0 || self.transfer_timeout_ms == 0 {
            return Err(bad(
                "transfer_timeout_ms",
                "transfer_timeout_ms and preferred_leader_check_interval_ms must be > 0".into(),
            ));
        }
        if self.flush_interval_ms == 0 || self.rpc_timeout_ms == 0 || self.append_timeout_ms == 0 {
            return Err(bad(
                "flush_interval_ms",
                "timeouts and intervals must be > 0".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the dLegerPeers parser accepts RocketMQ's format and names the bad item otherwise.
    #[test]
    fn parses_peers_and_reports_bad_items() {
        let peers =
            parse_peers("n0-127.0.0.1:40911;n1-127.0.0.1:40912;n2-127.0.0.1:40913;").unwrap();
        assert_eq!(peers.len(), 3);
        assert_eq!(
            peers[2],
            Peer {
                id: 2,
                addr: "127.0.0.1:40913".into()
            }
        );
        assert_eq!(peers[0].name(), "n0");

        let err = parse_peers("n0-127.0.0.1:40911;x1-127.0.0.1:1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("x1-127.0.0.1:1"), "{err}");
        let err = parse_peers("n0-127.0.0.1").unwrap_err().to_string();
        assert!(err.contains("no :port"), "{err}");
        let err = parse_peers("n0-a:1;n0-b:2").unwrap_err().to_string();
        assert!(err.contains("listed twice"), "{err}");
        assert!(parse_peers(" ; ").is_err());
        assert!(parse_peers("n0-h:99999").is_err());
        assert_eq!(parse_node_name("n7").unwrap(), 7);
        assert!(parse_node_name("7").is_err());
    }

    // Proves validation rejects an entry limit that could not fit one segment.
    #[test]
    fn validate_rejects_entry_larger_than_segment() {
        let peers = parse_peers("n0-127.0.0.1:1").unwrap();
        let mut config = DLedgerConfig::new(0, peers, "/tmp/x");
        assert!(config.validate().is_ok());
        config.segment_bytes = 1 << 20;
        config.max_entry_bytes = 1 << 20;
        assert!(config.validate().is_err());
        config.max_entry_bytes = 256 << 10;
        assert!(config.validate().is_ok());
        config.self_id = 5;
        assert!(config.validate().is_err());
    }
}
