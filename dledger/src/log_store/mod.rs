//! The CommitLog as openraft's log store ([`RaftLogStorage`]).
//!
//! Owns: [`LogStore`] (the writer handle given to openraft), [`LogReader`] (read handles for
//! replication), and the flusher threads. Durability promises, as openraft's "### Correctness"
//! asks:
//! - `save_vote` and `purge` write to the meta RocksDB with `set_sync(true)` before returning;
//! - `append` returns once the entries are readable (in the page cache); its callback fires
//!   with `SYNC_FLUSH` only after `msync` of those bytes (one msync covers every append queued
//!   meanwhile: group commit), with `ASYNC_FLUSH` at once (a thread msyncs every
//!   `flush_interval_ms`);
//! - `truncate` zeroes and msyncs the removed bytes before returning, bracketed by a durable
//!   "truncate pending" marker so a crash mid-truncate is finished on the next start.
//!
//! Nothing is purged by openraft's own policy (the node disables automatic snapshots and keeps
//! every snapshotted entry, see [`crate::node`]): `purge` is called after the broker asks for
//! it through [`crate::DLedgerNode::purge_below`], with a retention point decided through the
//! log, so every replica deletes the same whole segment files; and after a snapshot install,
//! which has already replaced the CommitLog (see [`crate::snapshot`]).

pub(crate) mod codec;
pub(crate) mod commit_log;
mod flushed_record;
mod recovery;
pub(crate) mod segment;

use std::fmt::Debug;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::sync::mpsc;
use std::sync::Arc;
use std::sync::Weak;
use std::time::Duration;

use openraft::storage::LogFlushed;
use openraft::storage::LogState;
use openraft::storage::RaftLogStorage;
use openraft::AnyError;
use openraft::LogId;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::StorageError;
use openraft::StorageIOError;
use openraft::Vote;

pub(crate) use self::commit_log::CommitLog;
use crate::config::FlushMode;
use crate::error::DLedgerError;
use crate::meta::MetaStore;
use crate::meta::KEY_PURGED;
use crate::meta::KEY_TRUNCATE_PENDING;
use crate::meta::KEY_VOTE;
use crate::storage::StorageOptions;
use crate::types::TypeConfig;

type Entry = openraft::Entry<TypeConfig>;

/// Flush requests queued for the SYNC_FLUSH thread, at most.
const FLUSH_QUEUE_CAPACITY: usize = 4096;

/// Upper bounds (µs) of the buckets of [`LogStore::flush_latency`]: 50 µs to 2.5 s.
pub const FLUSH_LATENCY_BOUNDS_US: [u64; 15] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// How long each CommitLog flush (the msync of the dirty bytes) took, in µs.
pub type FlushLatency = Arc<remoting::histogram::AtomicHistogram>;

fn read_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_logs(AnyError::error(e.to_string())).into()
}

fn write_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_logs(AnyError::error(e.to_string())).into()
}

/// openraft's handle to write the CommitLog.
pub struct LogStore {
    log: Arc<CommitLog>,
    read_batch_bytes: usize,
    meta: MetaStore,
    flush_tx: Option<tokio::sync::mpsc::Sender<LogFlushed<TypeConfig>>>,
    flush_latency: FlushLatency,
}

/// A read-only handle to the CommitLog, used by replication tasks.
#[derive(Clone)]
pub struct LogReader {
    log: Arc<CommitLog>,
    read_batch_bytes: usize,
}

impl LogStore {
    /// Opens the CommitLog under `dir` with the durable state in `meta`, and starts its flusher.
    pub(crate) fn open(
        dir: std::path::PathBuf,
        meta: MetaStore,
        options: &StorageOptions,
    ) -> Result<Self, DLedgerError> {
        let StorageOptions {
            segment_bytes,
            flush_mode,
            flush_interval_ms,
            read_batch_bytes,
            warm_segments,
            page_cache_bytes,
        } = *options;
        let stored: Option<u64> = meta.get(crate::meta::KEY_SEGMENT_BYTES)?;
        match stored {
            Some(stored) if stored != segment_bytes => {
                return Err(DLedgerError::SegmentBytesMismatch {
                    path: meta.path().to_path_buf(),
                    stored_bytes: stored,
                    configured_bytes: segment_bytes,
                })
            }
            Some(_) => {}
            None => meta.put_sync(crate::meta::KEY_SEGMENT_BYTES, &segment_bytes)?,
        }
        let last_purged: Option<LogId<u64>> = meta.get(KEY_PURGED)?;
        let truncate_pending: Option<u64> = meta.get(KEY_TRUNCATE_PENDING)?;
        let log = CommitLog::open(
            dir,
            segment_bytes,
            warm_segments,
            page_cache_bytes,
            last_purged,
            truncate_pending,
        )?;
        if truncate_pending.is_some() {
            meta.delete_sync(KEY_TRUNCATE_PENDING)?;
        }
        let flush_latency: FlushLatency = Arc::new(remoting::histogram::AtomicHistogram::new(
            &FLUSH_LATENCY_BOUNDS_US,
        ));
        let flush_tx = match flush_mode {
            FlushMode::Sync => Some(spawn_sync_flusher(
                Arc::downgrade(&log),
                flush_latency.clone(),
            )),
            FlushMode::Async => {
                spawn_async_flusher(
                    &log,
                    Duration::from_millis(flush_interval_ms),
                    flush_latency.clone(),
                );
                None
            }
        };
        Ok(LogStore {
            log,
            read_batch_bytes,
            meta,
            flush_tx,
            flush_latency,
        })
    }

    pub(crate) fn commit_log(&self) -> &Arc<CommitLog> {
        &self.log
    }

    /// The flush threads' msync times (µs), one record per flush that had bytes to sync.
    pub(crate) fn flush_latency(&self) -> FlushLatency {
        self.flush_latency.clone()
    }
}

fn spawn_sync_flusher(
    log: Weak<CommitLog>,
    latency: FlushLatency,
) -> tokio::sync::mpsc::Sender<LogFlushed<TypeConfig>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<LogFlushed<TypeConfig>>(FLUSH_QUEUE_CAPACITY);
    std::thread::Builder::new()
        .name("dledger-flush".into())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut callbacks = vec![first];
                while let Ok(more) = rx.try_recv() {
                    callbacks.push(more);
                }
                let started = std::time::Instant::now();
                let result = match log.upgrade() {
                    Some(log) => log.flush_dirty().map(|_| ()),
                    None => Err(std::io::Error::other("CommitLog closed")),
                };
                if result.is_ok() {
                    latency.record(started.elapsed().as_micros() as u64);
                }
                if let Err(e) = &result {
                    tracing::error!(error = %e, "CommitLog msync failed; the node will stop");
                }
                for callback in callbacks {
                    let outcome = match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                    };
                    callback.log_io_completed(outcome);
                }
            }
        })
        .expect("spawn flush thread");
    tx
}

fn spawn_async_flusher(log: &Arc<CommitLog>, interval: Duration, latency: FlushLatency) {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    log.set_async_flusher_stop(stop_tx);
    let weak = Arc::downgrade(log);
    std::thread::Builder::new()
        .name("dledger-flush".into())
        .spawn(move || {
            let mut flushed = 0;
            while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(interval) {
                let Some(log) = weak.upgrade() else { break };
                let started = std::time::Instant::now();
                match log.flush_dirty() {
                    // A pass with nothing new to sync is not a flush worth timing.
                    Ok(high) if high > flushed => {
                        latency.record(started.elapsed().as_micros() as u64);
                        flushed = high;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "CommitLog background msync failed"),
                }
            }
        })
        .expect("spawn flush thread");
}

fn to_range<RB: RangeBounds<u64>>(range: &RB) -> std::ops::Range<u64> {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e + 1,
        Bound::Excluded(e) => *e,
        Bound::Unbounded => u64::MAX,
    };
    start..end
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<u64>> {
        self.log
            .entries(to_range(&range), usize::MAX)
            .map_err(read_err)
    }

    /// Bounded by `read_batch_bytes`, so one append-entries RPC stays below `max_frame_bytes`.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError<u64>> {
        self.log
            .entries(start..end, self.read_batch_bytes)
            .map_err(read_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<u64>> {
        self.log
            .entries(to_range(&range), usize::MAX)
            .map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let (last_purged_log_id, last_log_id) = self.log.log_state().map_err(read_err)?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            log: Arc::clone(&self.log),
            read_batch_bytes: self.read_batch_bytes,
        }
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.meta
            .put_sync(KEY_VOTE, vote)
            .map_err(|e| StorageIOError::write_vote(AnyError::error(e.to_string())).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        let vote: Option<Vote<u64>> = self
            .meta
            .get(KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(AnyError::error(e.to_string())))?;
        // With ASYNC_FLUSH an OS crash may have lost entries this node wrote as leader.
        // openraft would resume a committed vote of its own as leader in the same term and
        // write other entries under the same log ids, which the followers that kept the
        // lost ones would take as matching. So the vote is read as not yet committed: this
        // node leads again only after winning a new term (a follower's vote is committed
        // again by its leader's next message).
        Ok(match vote {
            Some(v) if self.flush_tx.is_none() && v.is_committed() => Some(Vote::new(
                v.leader_id.term,
                v.leader_id.voted_for().unwrap_or_default(),
            )),
            v => v,
        })
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        // Not persisted: the applied point is, and the leader re-sends the commit index.
        if let Some(log_id) = committed {
            if let Some(location) = self.log.location(&log_id).map_err(read_err)? {
                self.log.set_committed_end(location.end());
            }
        }
        Ok(())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.log.append(entries).map_err(write_err)?;
        match &self.flush_tx {
            Some(tx) => tx
                .send(callback)
                .await
                .map_err(|_| write_err("flush thread stopped"))?,
            None => callback.log_io_completed(Ok(())),
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let Some(position) = self.log.position_of(log_id.index) else {
            return Ok(());
        };
        self.meta
            .put_sync(KEY_TRUNCATE_PENDING, &position)
            .map_err(write_err)?;
        self.log.truncate(log_id.index).map_err(write_err)?;
        self.meta
            .delete_sync(KEY_TRUNCATE_PENDING)
            .map_err(write_err)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.meta.put_sync(KEY_PURGED, &log_id).map_err(write_err)?;
        self.log.purge(log_id).map_err(write_err)
    }
}
