//! Opening a node's storage (CommitLog + meta RocksDB) without starting Raft.
//!
//! Owns the on-disk layout under a store path (`commitlog/`, `meta/`). Public for openraft's
//! storage conformance suite and for tools (chaos checker, inspection); the broker uses
//! [`crate::DLedgerNode`] and never needs this module.

use std::path::Path;

use crate::config::FlushMode;
use crate::error::DLedgerError;
use crate::log_store::CommitLog;
pub use crate::log_store::LogReader;
pub use crate::log_store::LogStore;
use crate::meta::MetaStore;
use crate::state_machine::ApplyHook;
pub use crate::state_machine::StateMachine;
pub use crate::types::TypeConfig;

/// Storage settings (a subset of [`crate::DLedgerConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct StorageOptions {
    pub segment_bytes: u64,
    pub flush_mode: FlushMode,
    pub flush_interval_ms: u64,
    /// Most bytes of entries read for one append-entries RPC.
    pub read_batch_bytes: usize,
    /// New segments are written with zeros before use (true) or only have their blocks
    /// reserved with `fallocate` (false). See [`crate::DLedgerConfig::warm_segments`].
    pub warm_segments: bool,
    /// Newest bytes left in the page cache; see [`crate::DLedgerConfig::page_cache_bytes`].
    pub page_cache_bytes: u64,
}

/// Everything opened under one store path.
pub struct OpenedStorage {
    pub log_store: LogStore,
    pub state_machine: StateMachine,
    pub(crate) log: std::sync::Arc<CommitLog>,
    pub(crate) meta: MetaStore,
}

/// Opens (creating if empty) the storage of one node and recovers it.
pub fn open(
    store_path: &Path,
    options: &StorageOptions,
    hook: Box<dyn ApplyHook>,
) -> Result<OpenedStorage, DLedgerError> {
    let meta = MetaStore::open(&store_path.join("meta"), hook.index_compaction_filter())?;
    crate::snapshot::finish_interrupted_install(
        store_path,
        &meta,
        options.segment_bytes,
        options.warm_segments,
        &hook.snapshot_dirs(),
    )?;
    let log_store = LogStore::open(store_path.join("commitlog"), meta.clone(), options)?;
    let log = std::sync::Arc::clone(log_store.commit_log());
    let state_machine = StateMachine::open(
        std::sync::Arc::clone(&log),
        meta.clone(),
        hook,
        options.flush_mode,
        store_path.to_path_buf(),
        options.segment_bytes,
    )?;
    Ok(OpenedStorage {
        log_store,
        state_machine,
        log,
        meta,
    })
}

/// Where one entry of a CommitLog lives (for tools and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub log_index: u64,
    pub term: u64,
    /// CommitLog position of the entry header.
    pub position: u64,
    /// Header plus payload.
    pub total_bytes: u32,
    pub file: std::path::PathBuf,
    pub file_offset: u64,
}

impl OpenedStorage {
    /// Every entry present in the CommitLog, in index order.
    pub fn entries(&self) -> Result<Vec<EntryInfo>, DLedgerError> {
        Ok(self
            .log
            .entry_infos()?
            .into_iter()
            .map(|(location, file, file_offset)| EntryInfo {
                log_index: location.header.index,
                term: location.header.term,
                position: location.position,
                total_bytes: location.header.total_bytes,
                file,
                file_offset,
            })
            .collect())
    }

    /// Read access to the apply hook's data, as persisted so far.
    pub fn hook_store(&self) -> crate::state_machine::HookStore {
        crate::state_machine::HookStore::new(self.meta.clone())
    }

    /// End of everything written to the CommitLog.
    pub fn written_position(&self) -> u64 {
        self.log.written_position()
    }

    /// CRC32 of the CommitLog bytes `[from, to)` (see [`crate::DLedgerNode::commit_log_digest`]).
    pub fn digest(&self, from: u64, to: u64) -> Result<u32, DLedgerError> {
        self.log.digest(from, to)
    }
}
