//! dledger: the Raft-replicated CommitLog of rocketraft.
//!
//! Each broker group is a Raft group whose CommitLog IS the Raft log (DLedger-style): every
//! Raft entry is written once, into mmap'd segment files, and committed entries are handed to
//! the broker's apply hook with the byte position of each record. `dledger` knows nothing of
//! topics: records and commands are opaque bytes.
//!
//! # Layout
//!
//! - [`config`]: [`DLedgerConfig`] (every limit, units last), [`FlushMode`], the `dLegerPeers`
//!   parser.
//! - [`error`]: [`DLedgerError`], the crate's one error type; retriable vs fatal.
//! - [`types`]: openraft's type configuration and the entry payload (records or a command).
//! - `log_store` (private): the CommitLog as openraft's `RaftLogStorage`: entry codec, segment
//!   files, the index, crash recovery, the flusher (group commit).
//! - `meta` (private): the RocksDB at `<store>/meta` (vote, purge point, applied point, hook data).
//! - [`state_machine`]: the apply side and the [`ApplyHook`] contract the broker implements.
//! - [`network`]: the peer transport trait, bincode-over-TCP, and an in-memory router for tests.
//! - [`node`]: [`DLedgerNode`], the API the broker uses (start, append, read, role watch).
//! - [`storage`]: opening a node's storage without Raft (conformance suite, tools).
//! - [`membership`]: adding a node (learner, catch-up, voter) and removing one.
//! - [`status`]: [`RaftStatus`], the node's Raft figures for metrics (term, role, indexes,
//!   followers' lag, msync times), read from openraft's metrics watch when asked.
//! - [`transfer`]: leadership transfer (TimeoutNow over the peer transport, appends held for
//!   the hand-over) and the `preferred_leader_id` check.
//!
//! # openraft
//!
//! openraft is pinned to exactly `=0.9.25` with `storage-v2`: the v2 storage API separates the
//! log store from the state machine and gives `append` a flush callback, which is what lets the
//! CommitLog itself be the Raft log with group commit; 0.9.x is the stable line (0.10 is alpha
//! and changes these traits), and the pin keeps every replica of a group on identical Raft
//! semantics and identical bincode wire formats. The broker never names an openraft type.
//!
//! # Durability, said out loud
//!
//! - An `append` is answered after its entry is committed, that is held by a quorum, each of
//!   which has, with `SYNC_FLUSH`, msync'd it (the append callback fires only after msync; one
//!   msync covers every append queued meanwhile), and with `ASYNC_FLUSH` written it to the page
//!   cache (flushed every `flush_interval_ms`; an OS crash on a quorum can lose the last interval).
//!   It is also applied on the answering node.
//! - Vote and purge point are written to RocksDB with `set_sync(true)` before openraft's call
//!   returns.
//! - The apply hook's writes and the applied log id go into one RocksDB batch; with
//!   `SYNC_FLUSH` that batch is written only after the applied entries are msync'd.
//! - Truncation (conflict resolution) zeroes and msyncs the removed bytes before returning.
//! - On start, a torn tail (no complete CRC-valid entry after the valid prefix) is cut and
//!   logged with file and offset; any damage followed by a valid entry stops the node with an
//!   error naming file and offset (precise definitions in `log_store::recovery`).
//! - openraft never snapshots or purges by policy. The broker decides retention through the
//!   log and then calls [`DLedgerNode::purge_below`] on every member, which builds a snapshot
//!   and purges the Raft log (whole segment files) below the decided position. A node that
//!   falls behind a purge point cannot be repaired by snapshot yet (issue 18, part 2).

pub mod config;
pub mod error;
mod log_store;
pub mod membership;
mod meta;
pub mod network;
pub mod node;
mod parts;
pub mod snapshot;
pub mod state_machine;
pub mod status;
pub mod storage;
pub mod transfer;
pub mod types;

pub use config::parse_node_name;
pub use config::parse_peers;
pub use config::DLedgerConfig;
pub use config::FlushMode;
pub use config::Peer;
pub use error::DLedgerError;
pub use membership::Members;
pub use meta::INDEX_GROUP_BYTES;
pub use node::AppendResult;
pub use node::AppendedRecord;
pub use node::CommandResult;
pub use node::CommitLogDigest;
pub use node::DLedgerNode;
pub use node::Role;
pub use node::RoleState;
pub use node::SegmentFile;
pub use snapshot::HookFile;
pub use state_machine::ApplyHook;
pub use state_machine::CommittedEntry;
pub use state_machine::CommittedPayload;
pub use state_machine::CommittedRecord;
pub use state_machine::HookError;
pub use state_machine::HookStore;
pub use state_machine::HookWrites;
pub use state_machine::IndexFilter;
pub use state_machine::LocalWrites;
pub use state_machine::NoopHook;
pub use status::RaftStatus;
pub use transfer::TransferResult;
pub use types::HookResponse;
