//! The RocksDB at `<store>/meta`: Raft's small durable state and the apply hook's data.
//!
//! Owns the database handle and its three column families: `raft` (vote, purge point,
//! applied point, last membership, current snapshot, `segment_bytes`, truncate-in-progress
//! marker), `app` (whatever the apply hook writes) and `app_index` (the hook's write-mostly
//! index, kept apart so it can be tuned and purged on its own: keys grouped by their first
//! [`INDEX_GROUP_BYTES`] bytes, each scan within one group). Promises: [`MetaStore::put_sync`] returns only after
//! RocksDB has synced its WAL (`WriteOptions::set_sync(true)`), which is how vote and purge
//! point are durable before openraft's call returns; [`MetaStore::write`] applies a batch
//! atomically, which is how the hook's data and the applied point move together.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use rocksdb::ColumnFamilyDescriptor;
use rocksdb::Options;
use rocksdb::WriteBatch;
use rocksdb::WriteOptions;
use rocksdb::DB;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::DLedgerError;

pub(crate) const CF_RAFT: &str = "raft";
pub(crate) const CF_APP: &str = "app";
pub(crate) const CF_INDEX: &str = "app_index";

/// Keys of the hook's index family are grouped by this many leading bytes; a scan of the
/// index reads one group.
pub const INDEX_GROUP_BYTES: usize = 9;

pub(crate) const KEY_VOTE: &[u8] = b"vote";
pub(crate) const KEY_PURGED: &[u8] = b"purged";
pub(crate) const KEY_APPLIED: &[u8] = b"applied";
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"membership";
pub(crate) const KEY_SNAPSHOT: &[u8] = b"snapshot";
pub(crate) const KEY_SEGMENT_BYTES: &[u8] = b"segment_bytes";
pub(crate) const KEY_TRUNCATE_PENDING: &[u8] = b"truncate_pending";
/// The path of a received snapshot stream whose install has not finished.
pub(crate) const KEY_INSTALLING: &[u8] = b"installing";

/// Shared handle to the meta RocksDB.
#[derive(Clone)]
pub(crate) struct MetaStore {
    db: Arc<DB>,
    path: PathBuf,
}

/// Most write-ahead log RocksDB keeps before it flushes the oldest memtables. A start after
/// a kill replays the WAL and writes it out as L0 files before the node can serve: under
/// full load the default (four times the memtables, 64 MiB each) took 2.2 s of a 4 s
/// restart on the development VM.
const MAX_WAL_BYTES: u64 = 32 << 20;

impl MetaStore {
    /// Opens (creating) the store; `index_filter` runs in compactions of the index family.
    pub(crate) fn open(
        path: &Path,
        index_filter: Option<crate::state_machine::IndexFilter>,
    ) -> Result<Self, DLedgerError> {
        let opening = std::time::Instant::now();
        std::fs::create_dir_all(path).map_err(|e| DLedgerError::io(path, e))?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_max_total_wal_size(MAX_WAL_BYTES);
        let families = || {
            let mut index = Options::default();
            index.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(
                INDEX_GROUP_BYTES,
            ));
            if let Some(filter) = index_filter.clone() {
                index.set_compaction_filter(
                    "dledger-index-filter",
                    move |_level: u32, key: &[u8], _value: &[u8]| {
                        if filter(key) {
                            rocksdb::CompactionDecision::Remove
                        } else {
                            rocksdb::CompactionDecision::Keep
                        }
                    },
                );
            }
            [
                ColumnFamilyDescriptor::new(CF_RAFT, Options::default()),
                ColumnFamilyDescriptor::new(CF_APP, Options::default()),
                ColumnFamilyDescriptor::new(CF_INDEX, index),
            ]
        };
        // A previous instance in this process may still be releasing its handle (its Raft tasks
        // wind down asynchronously): retry the lock briefly.
        let mut attempts = 0;
        let db = loop {
            match DB::open_cf_descriptors(&options, path, families()) {
                Ok(db) => break db,
                Err(e) if attempts < 100 && e.to_string().contains("lock") => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(DLedgerError::Meta {
                        path: path.to_path_buf(),
                        reason: format!("open: {e}"),
                    })
                }
            }
        };
        tracing::info!(path = %path.display(), took_ms = opening.elapsed().as_millis() as u64, "meta store opened");
        Ok(MetaStore {
            db: Arc::new(db),
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn db(&self) -> &Arc<DB> {
        &self.db
    }

    fn err(&self, what: &str, reason: impl std::fmt::Display) -> DLedgerError {
        DLedgerError::Meta {
            path: self.path.clone(),
            reason: format!("{what}: {reason}"),
        }
    }

    fn raft_cf(&self) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(CF_RAFT)
            .expect("raft column family is created at open")
    }

    pub(crate) fn app_cf(&self) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(CF_APP)
            .expect("app column family is created at open")
    }

    pub(crate) fn index_cf(&self) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(CF_INDEX)
            .expect("index column family is created at open")
    }

    /// Reads and decodes one key of the `raft` family.
    pub(crate) fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, DLedgerError> {
        let raw = self
            .db
            .get_cf(self.raft_cf(), key)
            .map_err(|e| self.err("get", format!("{}: {e}", String::from_utf8_lossy(key))))?;
        raw.map(|bytes| {
            bincode::deserialize(&bytes)
                .map_err(|e| self.err("decode", format!("{}: {e}", String::from_utf8_lossy(key))))
        })
        .transpose()
    }

    /// Encodes `value` into `batch` under `key` of the `raft` family.
    pub(crate) fn batch_put<T: Serialize>(&self, batch: &mut WriteBatch, key: &[u8], value: &T) {
        let bytes = bincode::serialize(value).expect("bincode encodes openraft types");
        batch.put_cf(self.raft_cf(), key, bytes);
    }

    /// Deletes `key` of the `raft` family in `batch`.
    pub(crate) fn batch_delete(&self, batch: &mut WriteBatch, key: &[u8]) {
        batch.delete_cf(self.raft_cf(), key);
    }

    /// Writes one key and returns after the WAL is synced to disk.
    pub(crate) fn put_sync<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), DLedgerError> {
        let mut batch = WriteBatch::default();
        self.batch_put(&mut batch, key, value);
        self.write(batch, true)
    }

    /// Deletes one key and returns after the WAL is synced to disk.
    pub(crate) fn delete_sync(&self, key: &[u8]) -> Result<(), DLedgerError> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.raft_cf(), key);
        self.write(batch, true)
    }

    /// Applies `batch` atomically; with `sync` it is durable when this returns.
    pub(crate) fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), DLedgerError> {
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db
            .write_opt(batch, &options)
            .map_err(|e| self.err("write", e))
    }
}
