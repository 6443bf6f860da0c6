//! The broker: one member of a Raft-replicated broker group, serving stock RocketMQ 4.x
//! clients over the remoting protocol.
//!
//! # Layout
//!
//! - [`config`]: RocketMQ-style properties with RocketMQ's DLedger keys.
//! - [`store`]: the apply hook (queue offsets, ConsumeQueue entries, offsets, topics)
//!   and the state every replica derives from the log.
//! - [`consume_queue`]: ConsumeQueue files.
//! - [`index`]: the message index (keys and unique keys to CommitLog offsets) built at
//!   apply, for QUERY_MESSAGE.
//! - [`keys`]: how names are laid out in the keys of the stored state.
//! - [`command`]: commands the broker puts in the Raft log besides messages.
//! - [`clients`]: consumer groups from heartbeats; NOTIFY_CONSUMER_IDS_CHANGED.
//! - [`held_pulls`]: the caps on pulls held by long polling.
//! - [`broker`]: [`Broker`], one node's shared state behind a small API that handlers
//!   and background tasks use (commit an offset, pick a queue, append, read).
//! - [`processor`]: request handlers, one file per request or small family, looked up
//!   once per request code in `processor::handler`.
//! - [`schedule`]: delay levels, timers and retries: stored until due, delivered once by
//!   the leader through the log.
//! - [`transaction`]: half messages, END_TRANSACTION and check-backs, decided once
//!   through the log; [`producers`]: producer groups from heartbeats.
//! - [`copy`]: a stored message copied into another topic (schedule, retry, commit).
//! - [`queue_locks`]: queue locks of orderly consumers, decided at apply through Raft.
//! - [`retention`]: which CommitLog segments go (RocketMQ's `deleteWhen`,
//!   `fileReservedTime` and disk ratios), decided by the leader through the log and purged
//!   by every replica; [`disk`]: the store's disk usage and the disk-full refusal of sends.
//! - [`runtime_config`]: the config keys UPDATE_BROKER_CONFIG changes, through the log.
//! - [`stats`]: message counts and rates for GET_BROKER_RUNTIME_INFO; [`stats_items`]:
//!   RocketMQ's per-topic and per-group stats items for VIEW_BROKER_STATS_DATA.
//! - [`metrics`]: the Prometheus endpoint's figures: RocketMQ 5's metric names and labels,
//!   and `rocketraft_*` for Raft (term, role, indexes, followers' lag, msync times).
//! - [`registration`]: name-server registration ("brokerId 0 = I lead in term T").
//! - [`server`]: wiring: start dledger, the background tasks and the request handler.
//!
//! The broker never speaks openraft: everything Raft goes through `dledger`'s API.
//!
//! Durability of a send: answered SEND_OK only after its Raft entry is held by a quorum
//! (and, with SYNC_FLUSH, fsync'd by each of them) and applied here, so its queue offset
//! is known.

pub mod broker;
pub mod clients;
pub mod command;
pub mod config;
pub mod consume_queue;
pub mod copy;
pub mod disk;
pub mod error;
pub mod held_pulls;
pub mod index;
pub mod keys;
pub mod metrics;
pub mod processor;
pub mod producers;
pub mod queue_locks;
pub mod registration;
pub mod retention;
pub mod runtime_config;
pub mod schedule;
pub mod server;
pub mod stats;
pub mod stats_items;
pub mod store;
pub mod transaction;

pub use broker::Broker;
pub use config::BrokerConfig;
pub use error::{BrokerError, Result};
pub use server::{run, run_with_metrics};
