//! The apply side: committed entries handed to the broker's [`ApplyHook`], in log order.
//!
//! Owns: the [`ApplyHook`] contract, the hook's view of the meta RocksDB ([`HookStore`] for
//! reads, [`HookWrites`] for writes), and [`StateMachine`], openraft's `RaftStateMachine`.
//!
//! Promises:
//! - The hook sees every committed entry once, in log order, on every replica, with the
//!   CommitLog position of each record (the same on every replica).
//! - What the hook writes through [`HookWrites`] and the applied log id (plus the last
//!   membership) go into ONE RocksDB write batch, so after a crash both are at the same entry;
//!   on restart openraft re-applies from there, so the hook sees each entry exactly once per
//!   persisted applied point. The batch collects the applies of up to
//!   [`APPLIED_WRITE_INTERVAL`] and is written once (also before a snapshot and when the state
//!   machine is dropped): one RocksDB write per apply cost a tenth of a follower's CPU. A
//!   crash loses at most that much of the applied point, which replay restores.
//! - With `SYNC_FLUSH`, that batch is written only after the applied entries are msync'd in the
//!   CommitLog, so the applied point never survives a crash that the entries did not.
//! - With `ASYNC_FLUSH` an OS crash can keep the applied point and lose the CommitLog's tail
//!   under it. The node still starts: openraft is told the last entry the CommitLog holds is
//!   applied, the leader sends the lost entries again, and those up to the stored applied
//!   point are not handed to the hook a second time (its state has them). The entry at the
//!   stored applied point must come back with the same log id (then, by Raft's log matching,
//!   so did every entry before it); an entry of a later term in that range, or another at
//!   that point, means the group lost entries this replica applied, and the node stops with
//!   [`DLedgerError::AppliedEntriesLost`] rather than apply a different history.
//! - A hook error is fatal: openraft stops the node rather than skip an entry.
//!
//! Snapshots (see [`crate::snapshot`]): openraft builds one only when asked
//! (`SnapshotPolicy::Never`), to purge its log below a retention point; such a build records
//! the applied point and carries no data. The snapshot openraft sends to a node behind the
//! first kept entry is taken when it asks for it (`get_current_snapshot`), at the applied
//! point of that moment, and carries the hook's RocksDB families and files and the
//! CommitLog from its first kept segment.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::Weak;
use std::time::Duration;
use std::time::Instant;

use openraft::storage::RaftStateMachine;
use openraft::storage::Snapshot;
use openraft::AnyError;
use openraft::EntryPayload;
use openraft::LogId;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::SnapshotMeta;
use openraft::StorageError;
use openraft::StorageIOError;
use openraft::StoredMembership;
use rocksdb::WriteBatch;
use serde::Deserialize;
use serde::Serialize;

use crate::config::FlushMode;
use crate::error::DLedgerError;
use crate::log_store::CommitLog;
use crate::meta::MetaStore;
use crate::meta::KEY_APPLIED;
use crate::meta::KEY_MEMBERSHIP;
use crate::meta::KEY_SNAPSHOT;
use crate::snapshot::SnapshotData;
use crate::types::AppliedEntry;
use crate::types::HookResponse;
use crate::types::Payload;
use crate::types::TypeConfig;

/// How long the applied point and the hook's writes may wait in memory for one RocksDB write.
pub(crate) const APPLIED_WRITE_INTERVAL: Duration = Duration::from_millis(20);

/// How long a snapshot taken to be sent is offered again instead of a new one. It stays
/// a true picture of its applied point however old it is; reusing it only makes the
/// receiver replay a few more entries, and keeps its files open that long. A snapshot
/// built meanwhile (for a purge) ends the reuse: openraft then expects what it sends to
/// reach at least that one.
const SNAPSHOT_REUSE: Duration = Duration::from_secs(10);

/// Error type an [`ApplyHook`] returns; any error stops the node.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// A key and its value in the hook's column family.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Says whether RocksDB may drop a key of the hook's index family when a compaction passes
/// it (true: drop). It may run on any RocksDB thread at any time, so it may differ between
/// replicas: only for keys no replica answers with any more (see
/// [`ApplyHook::index_compaction_filter`]).
pub type IndexFilter = std::sync::Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// One committed record, where it lives in the CommitLog.
#[derive(Debug, Clone, Copy)]
pub struct CommittedRecord<'a> {
    /// CommitLog position of the record's first byte (its TOTALSIZE).
    pub position: u64,
    /// The record, TOTALSIZE included.
    pub bytes: &'a [u8],
}

/// What a committed entry carries, as the hook sees it.
#[derive(Debug, Clone)]
pub enum CommittedPayload<'a> {
    /// Records appended with `append`.
    Records(Vec<CommittedRecord<'a>>),
    /// A command appended with `append_command`, at CommitLog `position`.
    Command { position: u64, bytes: &'a [u8] },
}

/// A committed entry handed to the hook.
#[derive(Debug, Clone)]
pub struct CommittedEntry<'a> {
    pub log_index: u64,
    pub term: u64,
    pub payload: CommittedPayload<'a>,
}

/// Read access to the hook's column family in `<store>/meta`.
#[derive(Clone)]
pub struct HookStore {
    meta: MetaStore,
}

impl HookStore {
    pub(crate) fn new(meta: MetaStore) -> Self {
        HookStore { meta }
    }

    /// The value stored under `key`, as of the last applied batch.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DLedgerError> {
        self.meta
            .db()
            .get_cf(self.meta.app_cf(), key)
            .map_err(|e| DLedgerError::Meta {
                path: self.meta.path().to_path_buf(),
                reason: format!("hook get: {e}"),
            })
    }

    /// Up to `limit` (key, value) pairs with `from <= key < until`, in key order.
    pub fn scan(
        &self,
        from: &[u8],
        until: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, DLedgerError> {
        self.scan_while(from, limit, |key| key < until)
    }

    /// Up to `limit` (key, value) pairs of the index family with `from <= key < until`,
    /// in key order, within `from`'s group (its first [`crate::INDEX_GROUP_BYTES`] bytes).
    pub fn scan_index(
        &self,
        from: &[u8],
        until: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, DLedgerError> {
        let mut read = rocksdb::ReadOptions::default();
        read.set_prefix_same_as_start(true);
        read.set_iterate_upper_bound(until.to_vec());
        let iter = self.meta.db().iterator_cf_opt(
            self.meta.index_cf(),
            read,
            rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter.take(limit) {
            let (key, value) = item.map_err(|e| DLedgerError::Meta {
                path: self.meta.path().to_path_buf(),
                reason: format!("hook index scan: {e}"),
            })?;
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    /// Writes `writes` at once, outside any apply: only for keys the hook keeps for itself
    /// on this node (e.g. a journal it prunes), never for replicated state, whose writes go
    /// with the applied point ([`HookWrites`]).
    pub fn write_local(&self, writes: LocalWrites) -> Result<(), DLedgerError> {
        let mut batch = WriteBatch::default();
        for op in writes.ops {
            match op {
                LocalOp::Put(key, value) => batch.put_cf(self.meta.app_cf(), key, value),
                LocalOp::DeleteRange(from, to) => {
                    batch.delete_range_cf(self.meta.app_cf(), from, to)
                }
            }
        }
        self.meta.write(batch, false)
    }

    /// The last (key, value) with `from <= key < until`, if any.
    pub fn last_in(&self, from: &[u8], until: &[u8]) -> Result<Option<KeyValue>, DLedgerError> {
        let mut read = rocksdb::ReadOptions::default();
        read.set_iterate_lower_bound(from.to_vec());
        read.set_iterate_upper_bound(until.to_vec());
        let mut iter =
            self.meta
                .db()
                .iterator_cf_opt(self.meta.app_cf(), read, rocksdb::IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(Ok((key, value))) => Ok(Some((key.to_vec(), value.to_vec()))),
            Some(Err(e)) => Err(DLedgerError::Meta {
                path: self.meta.path().to_path_buf(),
                reason: format!("hook last key: {e}"),
            }),
        }
    }

    /// Every (key, value) whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, DLedgerError> {
        self.scan_while(prefix, usize::MAX, |key| key.starts_with(prefix))
    }

    /// Up to `limit` pairs from `from` on, in key order, while `keep` holds for the key.
    fn scan_while(
        &self,
        from: &[u8],
        limit: usize,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<KeyValue>, DLedgerError> {
        let mut out = Vec::new();
        let iter = self.meta.db().iterator_cf(
            self.meta.app_cf(),
            rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(|e| DLedgerError::Meta {
                path: self.meta.path().to_path_buf(),
                reason: format!("hook scan: {e}"),
            })?;
            if out.len() >= limit || !keep(&key) {
                break;
            }
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }
}

/// Writes the hook keeps for itself on this node, made at once by [`HookStore::write_local`].
#[derive(Default)]
pub struct LocalWrites {
    ops: Vec<LocalOp>,
}

enum LocalOp {
    Put(Vec<u8>, Vec<u8>),
    DeleteRange(Vec<u8>, Vec<u8>),
}

impl LocalWrites {
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.ops.push(LocalOp::Put(key.to_vec(), value.to_vec()));
    }

    /// Deletes the keys in `[from, to)`.
    pub fn delete_range(&mut self, from: &[u8], to: &[u8]) {
        self.ops
            .push(LocalOp::DeleteRange(from.to_vec(), to.to_vec()));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Writes of the hook, committed atomically with the applied point.
pub struct HookWrites<'a> {
    batch: &'a mut WriteBatch,
    meta: &'a MetaStore,
    write_now: bool,
}

impl HookWrites<'_> {
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.batch.put_cf(self.meta.app_cf(), key, value);
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.batch.delete_cf(self.meta.app_cf(), key);
    }

    /// Writes `key` to the index family (see [`HookStore::scan_index`]); its first
    /// [`crate::INDEX_GROUP_BYTES`] bytes are its group.
    pub fn put_index(&mut self, key: &[u8], value: &[u8]) {
        self.batch.put_cf(self.meta.index_cf(), key, value);
    }

    /// Writes the batch (with this entry's applied point) to RocksDB as soon as this entry
    /// is applied, rather than within [`APPLIED_WRITE_INTERVAL`]: for a hook that reads its
    /// own writes back through [`HookStore`] when it applies a later entry. Costs one
    /// RocksDB write per entry that asks.
    pub fn write_now(&mut self) {
        self.write_now = true;
    }
}

/// The broker's side of apply.
///
/// ### Contract
/// - `open` is called once at start, before any `apply`, with the hook's stored data as of the
///   persisted applied point.
/// - `apply` is called for every committed records or command entry after that point, in log
///   order. It must be deterministic in what it writes (every replica runs it) and must not
///   write outside `writes` anything that has to survive a crash consistently with the log.
/// - It returns the responses for the proposer: for a records entry either none or exactly one
///   per record, for a command at most one. They reach the `append` caller on the leader.
pub trait ApplyHook: Send + 'static {
    fn open(&mut self, store: &HookStore) -> Result<(), HookError> {
        let _ = store;
        Ok(())
    }

    fn apply(
        &mut self,
        entry: &CommittedEntry<'_>,
        writes: &mut HookWrites<'_>,
    ) -> Result<Vec<HookResponse>, HookError>;

    /// The files the hook keeps beside RocksDB that a snapshot must carry, as they are now
    /// (called between applies, with the applied state written): paths relative to the
    /// store path, each inside one of [`ApplyHook::snapshot_dirs`].
    fn snapshot_files(&self) -> Result<Vec<crate::snapshot::HookFile>, HookError> {
        Ok(Vec::new())
    }

    /// The directories (relative to the store path) holding the hook's files; a snapshot
    /// install empties them before it writes the snapshot's files.
    fn snapshot_dirs(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    /// Called before a snapshot install replaces the hook's stored data and files: whatever
    /// the hook writes on its own ([`HookStore::write_local`]) must stop until
    /// [`ApplyHook::reopen`], or it would mix the old state into the new.
    fn before_install(&mut self) {}

    /// Called after a snapshot install replaced the hook's stored data and files, instead
    /// of a second `open`: everything the hook holds in memory must be reloaded.
    fn reopen(&mut self, store: &HookStore) -> Result<(), HookError> {
        self.open(store)
    }

    /// A filter for RocksDB's compactions of the index family, asked for once before the
    /// store opens: keys it drops disappear as compactions pass, with no write of their own.
    /// Only for keys that nothing reads any more (e.g. index entries below the retention
    /// point), since when they go differs from replica to replica.
    fn index_compaction_filter(&self) -> Option<IndexFilter> {
        None
    }
}

/// A hook that stores nothing and answers nothing.
pub struct NoopHook;

impl ApplyHook for NoopHook {
    fn apply(
        &mut self,
        _entry: &CommittedEntry<'_>,
        _writes: &mut HookWrites<'_>,
    ) -> Result<Vec<HookResponse>, HookError> {
        Ok(Vec::new())
    }
}

/// The applied point and the membership as of it.
type AppliedState = (
    Option<LogId<u64>>,
    StoredMembership<u64, openraft::BasicNode>,
);

/// The metadata of the last snapshot built or installed, as stored (`data` is empty: the
/// data of a snapshot is taken when one is sent).
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    pub(crate) meta: SnapshotMeta<u64, openraft::BasicNode>,
    pub(crate) data: Vec<u8>,
}

/// openraft's state machine over the CommitLog and the apply hook.
pub struct StateMachine {
    log: Arc<CommitLog>,
    meta: MetaStore,
    /// A mutex only to make the state machine `Sync`; used through `get_mut`, never locked.
    hook: std::sync::Mutex<Box<dyn ApplyHook>>,
    flush_mode: FlushMode,
    /// Where `commitlog/`, `meta/` and the hook's files live.
    store_path: PathBuf,
    segment_bytes: u64,
    /// The last snapshot taken to be sent, and when: a member that cannot be reached is
    /// offered one again every few hundred milliseconds, and each would otherwise cost a
    /// RocksDB checkpoint (see [`SNAPSHOT_REUSE`]).
    last_taken: Option<(Instant, Snapshot<TypeConfig>)>,
    /// Set while openraft starts: it asks for the current snapshot then only for its
    /// metadata, which must not cost a checkpoint (see [`StateMachine::starting`]).
    starting: bool,
    /// The applied point and membership, and what is not yet written of them; shared with
    /// the thread that writes it when no further apply comes.
    pending: Arc<Mutex<PendingApplies>>,
}

/// The state machine's applied point and membership, and the applies not yet written to
/// RocksDB: the hook's writes, written together with the applied point (and membership) they
/// belong to (see [`APPLIED_WRITE_INTERVAL`]).
struct PendingApplies {
    meta: MetaStore,
    batch: WriteBatch,
    /// The last entry applied in memory (written to RocksDB with the batch).
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, openraft::BasicNode>,
    /// When the oldest apply not yet written was made; `None`: nothing to write.
    since: Option<Instant>,
    /// An apply or a write failed: nothing of it, nor anything later, is ever written, so
    /// the stored applied point never passes writes that were lost.
    failed: bool,
    /// The stored applied point, while it is ahead of the CommitLog (see the module doc):
    /// the hook's state already holds every entry up to it, so those are not given to the
    /// hook again, and it stays the stored applied point until `applied` reaches it.
    ahead: Option<LogId<u64>>,
}

impl PendingApplies {
    fn write(&mut self) -> Result<(), DLedgerError> {
        if self.failed || self.since.take().is_none() {
            return Ok(());
        }
        let mut batch = std::mem::take(&mut self.batch);
        let applied = self.ahead.or(self.applied);
        self.meta.batch_put(&mut batch, KEY_APPLIED, &applied);
        self.meta
            .batch_put(&mut batch, KEY_MEMBERSHIP, &self.membership);
        let result = self.meta.write(batch, false);
        self.failed = result.is_err();
        result
    }

    fn fail(&mut self) {
        self.failed = true;
        self.batch = WriteBatch::default();
        self.since = None;
    }
}

fn lock(pending: &Mutex<PendingApplies>) -> MutexGuard<'_, PendingApplies> {
    pending.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes what waited [`APPLIED_WRITE_INTERVAL`] without a further apply; ends with the
/// state machine.
fn spawn_pending_writer(pending: Weak<Mutex<PendingApplies>>) -> Result<(), DLedgerError> {
    std::thread::Builder::new()
        .name("dledger-applied".into())
        .spawn(move || loop {
            std::thread::sleep(APPLIED_WRITE_INTERVAL);
            let Some(pending) = pending.upgrade() else {
                return;
            };
            let mut pending = lock(&pending);
            if pending
                .since
                .is_some_and(|since| since.elapsed() >= APPLIED_WRITE_INTERVAL)
            {
                if let Err(e) = pending.write() {
                    tracing::error!(error = %e, "writing the applied point failed; the state machine stops");
                }
            }
        })
        .map(|_| ())
        .map_err(|e| DLedgerError::Raft {
            node_id: 0,
            reason: format!("cannot start the applied-point writer thread: {e}"),
        })
}

/// The stored applied point, if it is ahead of the last entry the CommitLog holds and the node
/// can start anyway (see the module doc); an error if it is ahead and cannot.
fn applied_ahead_of_log(
    log: &CommitLog,
    meta: &MetaStore,
    applied: Option<LogId<u64>>,
    membership: &StoredMembership<u64, openraft::BasicNode>,
) -> Result<Option<LogId<u64>>, DLedgerError> {
    let Some(applied) = applied else {
        return Ok(None);
    };
    let (_, last) = log.log_state()?;
    let last_index = last.map(|l| l.index);
    if last_index.is_some_and(|l| l >= applied.index) {
        return Ok(None);
    }
    // openraft must not see a membership or a snapshot past the applied point it is told.
    let refuse = |reason: &str| DLedgerError::AppliedAheadOfLog {
        path: log.dir().clone(),
        applied_index: applied.index,
        last_log_index: last_index,
        reason: reason.to_string(),
    };
    let past_log =
        |id: Option<&LogId<u64>>| id.is_some_and(|id| last_index.is_none_or(|l| id.index > l));
    if past_log(membership.log_id().as_ref()) {
        return Err(refuse("a membership change was among the entries lost"));
    }
    let snapshot: Option<StoredSnapshot> = meta.get(KEY_SNAPSHOT)?;
    if past_log(snapshot.as_ref().and_then(|s| s.meta.last_log_id.as_ref())) {
        return Err(refuse("a snapshot was taken among the entries lost"));
    }
    Ok(Some(applied))
}

fn sm_read_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_state_machine(AnyError::error(e.to_string())).into()
}

fn sm_write_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

impl StateMachine {
    pub(crate) fn open(
        log: Arc<CommitLog>,
        meta: MetaStore,
        mut hook: Box<dyn ApplyHook>,
        flush_mode: FlushMode,
        store_path: PathBuf,
        segment_bytes: u64,
    ) -> Result<Self, DLedgerError> {
        let mut applied: Option<LogId<u64>> = meta.get(KEY_APPLIED)?.flatten();
        let membership: StoredMembership<u64, openraft::BasicNode> =
            meta.get(KEY_MEMBERSHIP)?.unwrap_or_default();
        let ahead = applied_ahead_of_log(&log, &meta, applied, &membership)?;
        if let Some(stored) = ahead {
            let (_, last) = log.log_state()?;
            tracing::warn!(
                applied_index = stored.index,
                last_log_index = last.map(|l| l.index),
                "the CommitLog lost entries this node had applied (an OS crash with \
                 ASYNC_FLUSH?): they are fetched again from the leader and not applied twice"
            );
            applied = last;
        }
        if let Some(applied) = applied {
            match log.location(&applied)? {
                Some(location) => log.set_applied_end(location.end()),
                // Purged (a snapshot was installed at it): it ends where the entries
                // after it begin.
                None => log.set_applied_end(log.range_through(Some(applied.index))?.end),
            }
        }
        hook.open(&HookStore::new(meta.clone()))
            .map_err(|e| DLedgerError::Raft {
                node_id: 0,
                reason: format!("apply hook open failed: {e}"),
            })?;
        let pending = Arc::new(Mutex::new(PendingApplies {
            meta: meta.clone(),
            batch: WriteBatch::default(),
            applied,
            membership,
            since: None,
            failed: false,
            ahead,
        }));
        spawn_pending_writer(Arc::downgrade(&pending))?;
        Ok(StateMachine {
            log,
            meta,
            hook: std::sync::Mutex::new(hook),
            flush_mode,
            store_path,
            segment_bytes,
            last_taken: None,
            starting: false,
            pending,
        })
    }

    async fn apply_entries<I>(&mut self, entries: I) -> Result<Vec<AppliedEntry>, StorageError<u64>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<openraft::Entry<TypeConfig>> = entries.into_iter().collect();
        // With SYNC_FLUSH nothing of these entries may reach RocksDB before they are msync'd.
        if let (FlushMode::Sync, Some(last)) = (self.flush_mode, entries.last()) {
            if let Some(location) = self.log.location(&last.log_id).map_err(sm_read_err)? {
                self.log.wait_flushed(location.end()).await;
            }
        }
        let pending = Arc::clone(&self.pending);
        let mut pending = lock(&pending);
        if pending.failed {
            return Err(sm_write_err(
                "an earlier apply or write failed; the state machine is stopped",
            ));
        }
        let mut responses = Vec::new();
        let mut applied_end = None;
        let mut membership_changed = false;
        let hook = self.hook.get_mut().unwrap_or_else(|e| e.into_inner());
        let pending = &mut *pending;
        let mut write_now = false;
        for entry in entries {
            let log_id = entry.log_id;
            let location = self.log.location(&log_id).map_err(sm_read_err)?;
            let body_position = location.map(|l| l.body_position()).unwrap_or(0);
            let replayed = match pending.ahead {
                Some(stored) if log_id.index <= stored.index => {
                    if log_id.leader_id.term > stored.leader_id.term
                        || (log_id.index == stored.index && log_id != stored)
                    {
                        let lost = DLedgerError::AppliedEntriesLost {
                            applied: stored.to_string(),
                            entry: log_id.to_string(),
                        };
                        tracing::error!(error = %lost, "the state machine stops");
                        return Err(StorageIOError::apply(log_id, AnyError::error(lost)).into());
                    }
                    if log_id.index == stored.index {
                        pending.ahead = None;
                    }
                    true
                }
                _ => false,
            };
            let output = match &entry.payload {
                // Applied before the CommitLog lost it: the hook's state has it.
                _ if replayed => Vec::new(),
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Membership(m) => {
                    pending.membership = StoredMembership::new(Some(log_id), m.clone());
                    membership_changed = true;
                    Vec::new()
                }
                EntryPayload::Normal(payload) => {
                    if location.is_none() {
                        return Err(StorageIOError::apply(
                            log_id,
                            AnyError::error(format!(
                                "entry {log_id} to apply is not in the CommitLog"
                            )),
                        )
                        .into());
                    }
                    let (committed, expected) = match payload {
                        Payload::Records(bytes) => {
                            let lengths =
                                crate::types::validate_records(bytes).map_err(|(i, r)| {
                                    StorageIOError::apply(
                                        log_id,
                                        AnyError::error(format!("record #{i}: {r}")),
                                    )
                                })?;
                            let mut records = Vec::with_capacity(lengths.len());
                            let mut offset = 0usize;
                            for length in lengths {
                                records.push(CommittedRecord {
                                    position: body_position + offset as u64,
                                    bytes: &bytes[offset..offset + length as usize],
                                });
                                offset += length as usize;
                            }
                            let n = records.len();
                            (CommittedPayload::Records(records), n)
                        }
                        Payload::Command(bytes) => (
                            CommittedPayload::Command {
                                position: body_position,
                                bytes,
                            },
                            1,
                        ),
                    };
                    let committed_entry = CommittedEntry {
                        log_index: log_id.index,
                        term: log_id.leader_id.term,
                        payload: committed,
                    };
                    let mut writes = HookWrites {
                        batch: &mut pending.batch,
                        meta: &self.meta,
                        write_now: false,
                    };
                    let output = hook.apply(&committed_entry, &mut writes).map_err(|e| {
                        StorageIOError::apply(log_id, AnyError::error(format!("apply hook: {e}")))
                    })?;
                    write_now |= writes.write_now;
                    let is_records = matches!(payload, Payload::Records(_));
                    if !(output.is_empty()
                        || (is_records && output.len() == expected)
                        || (!is_records && output.len() == 1))
                    {
                        return Err(StorageIOError::apply(
                            log_id,
                            AnyError::error(format!(
                                "apply hook returned {} responses for {expected} records",
                                output.len()
                            )),
                        )
                        .into());
                    }
                    output
                }
            };
            if let Some(location) = location {
                applied_end = Some(location.end());
            }
            pending.applied = Some(log_id);
            pending.since.get_or_insert_with(Instant::now);
            if std::mem::take(&mut write_now) {
                pending.write().map_err(sm_write_err)?;
            }
            responses.push(AppliedEntry {
                body_position,
                responses: output,
            });
        }
        let since = pending.since;
        if membership_changed || since.is_some_and(|t| t.elapsed() >= APPLIED_WRITE_INTERVAL) {
            pending.write().map_err(sm_write_err)?;
        }
        if let Some(end) = applied_end {
            self.log.set_applied_end(end);
        }
        Ok(responses)
    }

    /// The applied point and membership, with the applied state written to RocksDB.
    fn written_applied_state(&self) -> Result<AppliedState, DLedgerError> {
        let mut pending = lock(&self.pending);
        pending.write()?;
        Ok((pending.applied, pending.membership.clone()))
    }

    /// A snapshot that records the applied point and carries no data: what openraft needs
    /// to purge its log (see the module doc).
    fn build_snapshot_now(&mut self) -> Result<Snapshot<TypeConfig>, DLedgerError> {
        let (applied, membership) = self.written_applied_state()?;
        // openraft expects every snapshot sent from now on to reach at least this one.
        self.last_taken = None;
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id: crate::snapshot::snapshot_id(&applied),
        };
        self.meta.put_sync(
            KEY_SNAPSHOT,
            &StoredSnapshot {
                meta: meta.clone(),
                data: Vec::new(),
            },
        )?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotData::meta_only()),
        })
    }

    /// Marks the state machine as handed to a starting openraft, which reads the current
    /// snapshot's metadata once at start: that one read is answered with the metadata of
    /// the last snapshot built or installed and no data. Every later request takes one.
    pub(crate) fn starting(mut self) -> Self {
        self.starting = true;
        self
    }

    /// A snapshot to send, taken now at the applied point.
    fn take_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, DLedgerError> {
        if std::mem::take(&mut self.starting) {
            let stored: Option<StoredSnapshot> = self.meta.get(KEY_SNAPSHOT)?;
            return Ok(stored.map(|s| Snapshot {
                meta: s.meta,
                snapshot: Box::new(SnapshotData::meta_only()),
            }));
        }
        if let Some((at, snapshot)) = &self.last_taken {
            if at.elapsed() < SNAPSHOT_REUSE {
                return Ok(Some(snapshot.clone()));
            }
        }
        self.last_taken = None;
        if let Some(stored) = lock(&self.pending).ahead {
            // The hook's state is ahead of the applied point openraft knows: no snapshot
            // can say what it holds. Only a leader sends one, and a replica in this state
            // stops before it leads (its first entry as leader is of a later term).
            return Err(DLedgerError::Snapshot {
                reason: format!(
                    "the applied state is at {stored}, ahead of the CommitLog, until the \
                     entries up to it are received again"
                ),
            });
        }
        let (applied, membership) = self.written_applied_state()?;
        if applied.is_none() {
            return Ok(None);
        }
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id: crate::snapshot::snapshot_id(&applied),
        };
        let hook_files = self
            .hook
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot_files()
            .map_err(|e| DLedgerError::Snapshot {
                reason: format!("the apply hook's files: {e}"),
            })?;
        let outgoing = crate::snapshot::capture(
            &self.store_path,
            &self.meta,
            &self.log,
            self.segment_bytes,
            hook_files,
            meta.clone(),
        )?;
        let snapshot = Snapshot {
            meta,
            snapshot: Box::new(SnapshotData(crate::snapshot::Inner::Outgoing(Arc::new(
                outgoing,
            )))),
        };
        self.last_taken = Some((Instant::now(), snapshot.clone()));
        Ok(Some(snapshot))
    }

    /// Replaces the whole state (hook data and files, CommitLog, applied point) with the
    /// snapshot's.
    fn install_now(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        data: &SnapshotData,
    ) -> Result<(), DLedgerError> {
        // What was applied before is written first, so nothing written later mixes into
        // the installed state.
        self.written_applied_state()?;
        self.last_taken = None;
        let hook = self.hook.get_mut().unwrap_or_else(|e| e.into_inner());
        hook.before_install();
        let installed = crate::snapshot::install_data(
            &self.store_path,
            &self.meta,
            &self.log,
            self.segment_bytes,
            &hook.snapshot_dirs(),
            data,
        )?;
        if installed.last_log_id != meta.last_log_id {
            return Err(DLedgerError::Snapshot {
                reason: format!(
                    "the stream holds a snapshot at {:?}, openraft installs one at {:?}",
                    installed.last_log_id, meta.last_log_id
                ),
            });
        }
        hook.reopen(&HookStore::new(self.meta.clone()))
            .map_err(|e| DLedgerError::Snapshot {
                reason: format!("the apply hook could not reload: {e}"),
            })?;
        let mut pending = lock(&self.pending);
        pending.batch = WriteBatch::default();
        pending.since = None;
        pending.applied = meta.last_log_id;
        pending.membership = meta.last_membership.clone();
        pending.ahead = None;
        Ok(())
    }
}

impl Drop for StateMachine {
    fn drop(&mut self) {
        if let Err(e) = lock(&self.pending).write() {
            tracing::warn!(error = %e, "writing the applied point on close failed; replay restores it");
        }
    }
}

/// Snapshot builder: captures the applied point at the time it is asked for.
pub struct SnapshotBuilder {
    snapshot: Result<Snapshot<TypeConfig>, String>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        match &self.snapshot {
            Ok(s) => Ok(Snapshot {
                meta: s.meta.clone(),
                snapshot: s.snapshot.clone(),
            }),
            Err(e) => Err(sm_write_err(e)),
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<u64>>,
            StoredMembership<u64, openraft::BasicNode>,
        ),
        StorageError<u64>,
    > {
        let pending = lock(&self.pending);
        Ok((pending.applied, pending.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<AppliedEntry>, StorageError<u64>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let result = self.apply_entries(entries).await;
        if result.is_err() {
            // Part of the batch may be applied in memory: write none of it, ever.
            lock(&self.pending).fail();
        }
        result
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            snapshot: self.build_snapshot_now().map_err(|e| e.to_string()),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError<u64>> {
        // Snapshots travel by the peer transport's own stream (see `network`), which hands
        // openraft a complete one; this box is only ever replaced.
        Ok(Box::new(SnapshotData::meta_only()))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError<u64>> {
        tracing::info!(snapshot = %meta, "installing a snapshot");
        self.install_now(meta, &snapshot).map_err(sm_write_err)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        self.take_snapshot().map_err(sm_read_err)
    }
}
