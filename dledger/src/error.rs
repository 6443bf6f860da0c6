//! The one error type of the `dledger` crate.
//!
//! Owns: [`DLedgerError`] and the split between retriable outcomes (`NotLeader`, `Busy`,
//! `Timeout`) and fatal ones (`Corrupt`, `Io`, `Raft`): a fatal error means this node has stopped
//! (or refuses to start) rather than serve wrong data.

use std::path::PathBuf;

/// Everything that can go wrong in `dledger`, with enough context to act on it.
#[derive(Debug, thiserror::Error)]
pub enum DLedgerError {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid dledger config: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    /// The `dLegerPeers` string could not be parsed.
    #[error("invalid dLegerPeers {input:?}: {reason}")]
    InvalidPeers { input: String, reason: String },

    /// A file-system operation failed.
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The RocksDB meta store failed or holds undecodable data.
    #[error("meta store {path}: {reason}")]
    Meta { path: PathBuf, reason: String },

    /// The store was created with another segment size; all replicas must use the same one.
    #[error(
        "segment_bytes mismatch in {path}: store was created with {stored_bytes}, \
         config says {configured_bytes}"
    )]
    SegmentBytesMismatch {
        path: PathBuf,
        stored_bytes: u64,
        configured_bytes: u64,
    },

    /// The CommitLog is damaged before its tail: the node refuses to start.
    #[error(
        "CommitLog corrupt in {file} at file offset {file_offset} \
         (commit log position {position}): {reason}"
    )]
    Corrupt {
        file: PathBuf,
        file_offset: u64,
        position: u64,
        reason: String,
    },

    /// The applied point in the meta store is ahead of the last entry in the CommitLog, and
    /// the node cannot fetch the lost entries again (usually it can: see the state machine).
    #[error(
        "applied log index {applied_index} is ahead of the last CommitLog entry {last_log_index:?} \
         in {path}: the CommitLog lost data (ASYNC_FLUSH and an OS crash?) and {reason}; \
         replace this replica (README, \"Adding, removing and replacing nodes\")"
    )]
    AppliedAheadOfLog {
        path: PathBuf,
        applied_index: u64,
        last_log_index: Option<u64>,
        reason: String,
    },

    /// The group's log no longer holds entries this replica applied: they were lost from a
    /// majority (ASYNC_FLUSH and OS crashes on several nodes), and the group went on with
    /// other entries at those indexes.
    #[error(
        "this replica applied entries up to {applied} that the group no longer has (entry \
         {entry} replaces one of them: ASYNC_FLUSH and OS crashes on a majority lost them); \
         it stops rather than apply another history; replace this replica (README, \
         \"Adding, removing and replacing nodes\")"
    )]
    AppliedEntriesLost { applied: String, entry: String },

    /// This node is not the leader; retry on `leader_id` (its peer address is `leader_addr`).
    #[error("node {node_id} is not the leader; leader is {leader_id:?} at {leader_addr:?}")]
    NotLeader {
        node_id: u64,
        leader_id: Option<u64>,
        leader_addr: Option<String>,
    },

    /// A record does not start with its own big-endian u32 total length, or is too small.
    #[error("invalid record #{record_index}: {reason}")]
    InvalidRecord { record_index: usize, reason: String },

    /// One append call does not fit one Raft entry.
    #[error(
        "append of {records} records / {bytes} bytes exceeds max_records_per_entry \
         {max_records} / max_entry_bytes {max_bytes}"
    )]
    TooLarge {
        records: usize,
        bytes: usize,
        max_records: usize,
        max_bytes: usize,
    },

    /// A read asked for bytes that are not (yet) committed or no longer stored.
    #[error("position {position} is not readable: committed CommitLog is [{start}, {end})")]
    PositionOutOfRange { position: u64, start: u64, end: u64 },

    /// The deadline passed; the outcome is unknown (the write may still commit).
    #[error("{what} timed out after {timeout_ms} ms on node {node_id}: outcome unknown")]
    Timeout {
        node_id: u64,
        what: &'static str,
        timeout_ms: u64,
    },

    /// The node has been shut down.
    #[error("node {node_id} is shut down")]
    Shutdown { node_id: u64 },

    /// The Raft core stopped with an error (storage failure, apply hook failure, ...).
    #[error("raft on node {node_id} failed: {reason}")]
    Raft { node_id: u64, reason: String },

    /// A snapshot could not be taken, sent or installed.
    #[error("snapshot: {reason}")]
    Snapshot { reason: String },

    /// A leadership transfer was refused before anything was held (target down, lagging,
    /// not a voter, not following this leader): leadership and appends are as they were.
    #[error("leadership transfer from n{node_id} to n{target} refused: {reason}")]
    TransferRefused {
        node_id: u64,
        target: u64,
        reason: String,
    },

    /// A leadership transfer held appends and did not complete in time: appends resumed, and
    /// `reason` says who leads now (this node again, or an election decides).
    #[error("leadership transfer from n{node_id} to n{target} failed: {reason}")]
    TransferFailed {
        node_id: u64,
        target: u64,
        reason: String,
    },

    /// This store belongs to a node that was removed from its group: it must not take part
    /// again (its vote and log are from before the removal).
    #[error(
        "this node was removed from its group ({detail}); its store at {path} cannot rejoin: \
         delete the store and add the node again (admin add-node)"
    )]
    Removed { path: PathBuf, detail: String },

    /// A membership change was refused before anything changed (the node is already a
    /// member, the change would leave no reachable quorum, this node would remove itself).
    #[error("membership change on n{node_id} refused: {reason}")]
    MembershipRefused { node_id: u64, reason: String },

    /// A membership change started and did not complete within `membership_timeout_ms`.
    /// With `catching_up`, the node is a learner still receiving the log: asking again
    /// waits on, and promotes it once it has caught up.
    #[error("membership change on n{node_id} did not complete: {reason}")]
    MembershipIncomplete {
        node_id: u64,
        catching_up: bool,
        reason: String,
    },
}

impl DLedgerError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DLedgerError::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether retrying (possibly on another node) may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            DLedgerError::NotLeader { .. } | DLedgerError::Timeout { .. }
        )
    }
}
