//! Snapshots: how a node that is behind the leader's first kept entry, or new and empty,
//! is brought to the leader's state.
//!
//! Owns: [`SnapshotData`] (openraft's snapshot type here), the stream a snapshot travels
//! as, taking one ([`capture`]) and installing one ([`install`]).
//!
//! A snapshot at applied entry A carries everything the state machine holds at A:
//! - the meta RocksDB as of A (a RocksDB checkpoint: its SST files are hard links, so
//!   taking it costs a memtable flush), of which the receiver keeps the hook's families;
//! - the files the apply hook keeps beside RocksDB (the broker's ConsumeQueues), as long
//!   as they were at A;
//! - the CommitLog from its first kept segment up to the end of entry A.
//!
//! The receiver's CommitLog then starts at the same segment as the sender's and holds the
//! same bytes, so replicas stay byte-identical from there, and the entries after A reach it
//! by ordinary replication. The CommitLog part is why snapshots are taken when one is to be
//! sent ([`crate::state_machine::StateMachine`]'s `get_current_snapshot`) and not kept: a
//! kept one would pin old segments on disk.
//!
//! The stream: `MAGIC | u32 BE header length | bincode header | meta files | hook files |
//! CommitLog bytes`, each file's bytes in the order and lengths the header lists.
//!
//! Installing is crash-safe: the received stream is kept in a file under
//! `<store>/snapshot/` and its path recorded in the `raft` family before anything is
//! replaced; a node that finds that record at start installs the stream again
//! ([`finish_interrupted_install`]) before it opens its CommitLog.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Component;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::LogId;
use openraft::SnapshotMeta;
use rocksdb::WriteBatch;
use serde::Deserialize;
use serde::Serialize;

use crate::error::DLedgerError;
use crate::log_store::commit_log::LogRange;
use crate::log_store::CommitLog;
use crate::meta::MetaStore;
use crate::meta::CF_APP;
use crate::meta::CF_INDEX;
use crate::meta::KEY_APPLIED;
use crate::meta::KEY_INSTALLING;
use crate::meta::KEY_MEMBERSHIP;
use crate::meta::KEY_PURGED;
use crate::meta::KEY_SNAPSHOT;
use crate::meta::KEY_TRUNCATE_PENDING;
use crate::state_machine::StoredSnapshot;

/// The first bytes of a snapshot stream (and its format version).
const MAGIC: &[u8; 8] = b"RRSNAP01";

/// Largest header a receiver accepts.
const MAX_HEADER_BYTES: u32 = 16 << 20;

/// The directory, under a store path, where snapshots are taken and received.
pub(crate) const SNAPSHOT_DIR: &str = "snapshot";

/// A file in a snapshot: its path (relative) and length.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileEntry {
    path: String,
    len: u64,
}

/// What a snapshot stream holds, after its magic.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    meta: SnapshotMeta<u64, openraft::BasicNode>,
    segment_bytes: u64,
    /// CommitLog bytes `[log_start, log_end)` close the stream.
    log_start: u64,
    log_end: u64,
    /// The RocksDB checkpoint's files (plain names).
    meta_files: Vec<FileEntry>,
    /// The apply hook's files, relative to the store path.
    hook_files: Vec<FileEntry>,
}

/// openraft's snapshot data: a snapshot to send, a received one, or only metadata.
#[derive(Clone)]
pub struct SnapshotData(pub(crate) Inner);

#[derive(Clone)]
pub(crate) enum Inner {
    /// Built only so that openraft may purge its log; nothing to send.
    MetaOnly,
    /// Taken to be sent.
    Outgoing(Arc<Outgoing>),
    /// Received, in a file.
    Incoming(PathBuf),
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::MetaOnly => f.write_str("SnapshotData::MetaOnly"),
            Inner::Outgoing(o) => write!(f, "SnapshotData::Outgoing({} bytes)", o.len()),
            Inner::Incoming(p) => write!(f, "SnapshotData::Incoming({})", p.display()),
        }
    }
}

impl SnapshotData {
    pub(crate) fn meta_only() -> Self {
        SnapshotData(Inner::MetaOnly)
    }

    pub(crate) fn incoming(path: PathBuf) -> Self {
        SnapshotData(Inner::Incoming(path))
    }

    /// The stream to send, if this snapshot has one.
    pub(crate) fn outgoing(&self) -> Option<&Arc<Outgoing>> {
        match &self.0 {
            Inner::Outgoing(o) => Some(o),
            _ => None,
        }
    }
}

/// One piece of an outgoing stream.
enum Part {
    File { file: File, len: u64 },
    Log(LogRange),
}

impl Part {
    fn len(&self) -> u64 {
        match self {
            Part::File { len, .. } => *len,
            Part::Log(range) => range.end - range.start,
        }
    }
}

/// A snapshot taken to be sent: its stream, read from the files it holds open (so a purge
/// or a later write cannot change what it sends).
pub(crate) struct Outgoing {
    head: Vec<u8>,
    parts: Vec<Part>,
    len: u64,
    /// The RocksDB checkpoint, removed when the snapshot is dropped.
    checkpoint: PathBuf,
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.checkpoint) {
            tracing::warn!(dir = %self.checkpoint.display(), error = %e, "removing a snapshot's checkpoint failed");
        }
    }
}

impl Outgoing {
    /// Bytes in the stream.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Copies stream bytes from `position` into `buf`; returns how many (0 at the end).
    pub(crate) fn read_at(&self, position: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let head = self.head.len() as u64;
        if position < head {
            let n = buf.len().min((head - position) as usize);
            buf[..n].copy_from_slice(&self.head[position as usize..position as usize + n]);
            return Ok(n);
        }
        let mut at = head;
        for part in &self.parts {
            let len = part.len();
            if position < at + len {
                let offset = position - at;
                let n = (buf.len() as u64).min(len - offset) as usize;
                return match part {
                    Part::File { file, .. } => {
                        file.read_exact_at(&mut buf[..n], offset)?;
                        Ok(n)
                    }
                    Part::Log(range) => Ok(range.read_at(range.start + offset, &mut buf[..n])),
                };
            }
            at += len;
        }
        Ok(0)
    }

    /// The whole stream as a reader (a local install, as openraft's storage suite does).
    fn reader(&self) -> impl Read + '_ {
        struct StreamReader<'a> {
            outgoing: &'a Outgoing,
            position: u64,
        }
        impl Read for StreamReader<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.outgoing.read_at(self.position, buf)?;
                self.position += n as u64;
                Ok(n)
            }
        }
        StreamReader {
            outgoing: self,
            position: 0,
        }
    }
}

/// A file the apply hook keeps beside RocksDB, for a snapshot.
#[derive(Debug, Clone)]
pub struct HookFile {
    /// Relative to the store path, e.g. `consumequeue/TopicA/0/00000000000000000000`.
    pub path: PathBuf,
    /// Bytes of it that belong to the snapshot (the file may be longer).
    pub len: u64,
}

fn snapshot_err(reason: impl std::fmt::Display) -> DLedgerError {
    DLedgerError::Snapshot {
        reason: reason.to_string(),
    }
}

/// Takes a snapshot at `meta.last_log_id`: called with nothing applied after that entry
/// and the applied state written to RocksDB.
pub(crate) fn capture(
    store_path: &Path,
    meta_store: &MetaStore,
    log: &CommitLog,
    segment_bytes: u64,
    hook_files: Vec<HookFile>,
    meta: SnapshotMeta<u64, openraft::BasicNode>,
) -> Result<Outgoing, DLedgerError> {
    let dir = store_path.join(SNAPSHOT_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| DLedgerError::io(&dir, e))?;
    let checkpoint = dir.join(format!(
        "out-{}-{}",
        meta.snapshot_id,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    rocksdb::checkpoint::Checkpoint::new(meta_store.db())
        .and_then(|c| c.create_checkpoint(&checkpoint))
        .map_err(|e| snapshot_err(format!("RocksDB checkpoint {}: {e}", checkpoint.display())))?;
    let mut outgoing = Outgoing {
        head: Vec::new(),
        parts: Vec::new(),
        len: 0,
        checkpoint,
    };
    let mut names: Vec<String> = std::fs::read_dir(&outgoing.checkpoint)
        .map_err(|e| DLedgerError::io(&outgoing.checkpoint, e))?
        .map(|item| item.map(|i| i.file_name().to_string_lossy().to_string()))
        .collect::<Result<_, _>>()
        .map_err(|e| DLedgerError::io(&outgoing.checkpoint, e))?;
    names.sort();
    let mut meta_files = Vec::new();
    for name in names {
        let path = outgoing.checkpoint.join(&name);
        let file = File::open(&path).map_err(|e| DLedgerError::io(&path, e))?;
        let len = file
            .metadata()
            .map_err(|e| DLedgerError::io(&path, e))?
            .len();
        meta_files.push(FileEntry { path: name, len });
        outgoing.parts.push(Part::File { file, len });
    }
    let mut files = Vec::new();
    for hook_file in hook_files {
        let path = store_path.join(&hook_file.path);
        let file = File::open(&path).map_err(|e| DLedgerError::io(&path, e))?;
        files.push(FileEntry {
            path: hook_file.path.to_string_lossy().to_string(),
            len: hook_file.len,
        });
        outgoing.parts.push(Part::File {
            file,
            len: hook_file.len,
        });
    }
    let range = log.range_through(meta.last_log_id.map(|l| l.index))?;
    let header = Header {
        meta,
        segment_bytes,
        log_start: range.start,
        log_end: range.end,
        meta_files,
        hook_files: files,
    };
    outgoing.parts.push(Part::Log(range));
    let encoded = bincode::serialize(&header).map_err(snapshot_err)?;
    outgoing.head.extend_from_slice(MAGIC);
    outgoing
        .head
        .extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    outgoing.head.extend_from_slice(&encoded);
    outgoing.len = outgoing.head.len() as u64 + outgoing.parts.iter().map(Part::len).sum::<u64>();
    tracing::info!(
        snapshot = %header.meta,
        bytes = outgoing.len,
        log_start = header.log_start,
        log_end = header.log_end,
        hook_files = header.hook_files.len(),
        "snapshot taken"
    );
    Ok(outgoing)
}

/// A relative path that stays below the directory it is joined to.
fn contained(path: &str) -> Option<PathBuf> {
    let path = PathBuf::from(path);
    let plain = !path.as_os_str().is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    plain.then_some(path)
}

/// Where the CommitLog of a store lives.
fn commit_log_dir(store_path: &Path) -> PathBuf {
    store_path.join("commitlog")
}

/// Copies `len` bytes from `reader` into a new file at `path`, fsync'd.
fn copy_to_file(reader: &mut dyn Read, path: &Path, len: u64) -> Result<(), DLedgerError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DLedgerError::io(parent, e))?;
    }
    let mut file = File::create(path).map_err(|e| DLedgerError::io(path, e))?;
    let copied =
        std::io::copy(&mut reader.take(len), &mut file).map_err(|e| DLedgerError::io(path, e))?;
    if copied != len {
        return Err(snapshot_err(format!(
            "stream ended inside {} ({copied} of {len} bytes)",
            path.display()
        )));
    }
    file.sync_all().map_err(|e| DLedgerError::io(path, e))
}

/// Where the CommitLog part of an install goes.
pub(crate) enum LogTarget<'a> {
    /// The running node's CommitLog, replaced in place.
    Live(&'a CommitLog),
    /// The files of a CommitLog not yet opened (a start that finishes an interrupted install).
    Files { warm_segments: bool },
}

/// Installs the snapshot stream read from `reader`: the hook's directories and files, the
/// CommitLog, then the hook's RocksDB families with the applied point, membership and purge
/// point in one synced batch. `segment_bytes` must be the sender's. Returns the snapshot's
/// metadata.
pub(crate) fn install(
    store_path: &Path,
    meta_store: &MetaStore,
    segment_bytes: u64,
    hook_dirs: &[PathBuf],
    log: LogTarget<'_>,
    reader: &mut dyn Read,
) -> Result<SnapshotMeta<u64, openraft::BasicNode>, DLedgerError> {
    let mut magic = [0u8; 8];
    reader
        .read_exact(&mut magic)
        .map_err(|e| snapshot_err(format!("reading the magic: {e}")))?;
    if &magic != MAGIC {
        return Err(snapshot_err(format!(
            "not a snapshot stream (magic {:?})",
            String::from_utf8_lossy(&magic)
        )));
    }
    let mut len = [0u8; 4];
    reader
        .read_exact(&mut len)
        .map_err(|e| snapshot_err(format!("reading the header length: {e}")))?;
    let len = u32::from_be_bytes(len);
    if len > MAX_HEADER_BYTES {
        return Err(snapshot_err(format!("header of {len} bytes")));
    }
    let mut head = vec![0u8; len as usize];
    reader
        .read_exact(&mut head)
        .map_err(|e| snapshot_err(format!("reading the header: {e}")))?;
    let header: Header = bincode::deserialize(&head).map_err(snapshot_err)?;
    if header.segment_bytes != segment_bytes {
        return Err(snapshot_err(format!(
            "the sender's segments are {} bytes, ours {segment_bytes} (mappedFileSizeCommitLog must be the same on every member)",
            header.segment_bytes
        )));
    }
    if header.log_start % segment_bytes != 0 || header.log_end < header.log_start {
        return Err(snapshot_err(format!(
            "CommitLog range [{}, {}) does not start at a segment",
            header.log_start, header.log_end
        )));
    }
    let last_log_id = header
        .meta
        .last_log_id
        .ok_or_else(|| snapshot_err("a snapshot of nothing applied"))?;

    // RocksDB checkpoint files, staged beside the stream.
    let staged = store_path.join(SNAPSHOT_DIR).join("in-meta");
    if staged.exists() {
        std::fs::remove_dir_all(&staged).map_err(|e| DLedgerError::io(&staged, e))?;
    }
    for entry in &header.meta_files {
        let name = contained(&entry.path)
            .filter(|p| p.components().count() == 1)
            .ok_or_else(|| snapshot_err(format!("meta file name {:?}", entry.path)))?;
        copy_to_file(reader, &staged.join(name), entry.len)?;
    }

    // The hook's files replace everything in its directories.
    for dir in hook_dirs {
        let dir = store_path.join(dir);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| DLedgerError::io(&dir, e))?;
        }
    }
    for entry in &header.hook_files {
        let path = contained(&entry.path)
            .filter(|p| hook_dirs.iter().any(|d| p.starts_with(d)))
            .ok_or_else(|| snapshot_err(format!("hook file path {:?}", entry.path)))?;
        copy_to_file(reader, &store_path.join(path), entry.len)?;
    }

    // The CommitLog: everything up to the snapshot's entry counts as purged.
    let mut log_bytes = reader.take(header.log_end - header.log_start);
    match log {
        LogTarget::Live(log) => log.replace(
            header.log_start,
            header.log_end,
            Some(last_log_id),
            &mut log_bytes,
        )?,
        LogTarget::Files { warm_segments } => {
            let dir = commit_log_dir(store_path);
            std::fs::create_dir_all(&dir).map_err(|e| DLedgerError::io(&dir, e))?;
            let allocator = crate::log_store::segment::SegmentAllocator::new(
                dir.clone(),
                segment_bytes,
                warm_segments,
            );
            let _creating = allocator.new_generation();
            crate::log_store::commit_log::remove_segment_files(&dir)?;
            crate::log_store::commit_log::write_segments(
                &allocator,
                segment_bytes,
                header.log_start,
                header.log_end,
                &mut log_bytes,
            )?;
        }
    }

    if failpoint("snapshot-install-after-log") {
        return Err(snapshot_err("failpoint snapshot-install-after-log"));
    }

    // The hook's families, then the Raft keys, then the install is done.
    copy_families(meta_store, &staged)?;
    let mut batch = WriteBatch::default();
    meta_store.batch_put(&mut batch, KEY_APPLIED, &header.meta.last_log_id);
    meta_store.batch_put(&mut batch, KEY_MEMBERSHIP, &header.meta.last_membership);
    meta_store.batch_put(&mut batch, KEY_PURGED, &last_log_id);
    meta_store.batch_put(
        &mut batch,
        KEY_SNAPSHOT,
        &StoredSnapshot {
            meta: header.meta.clone(),
            data: Vec::new(),
        },
    );
    meta_store.batch_delete(&mut batch, KEY_TRUNCATE_PENDING);
    meta_store.batch_delete(&mut batch, KEY_INSTALLING);
    meta_store.write(batch, true)?;
    if let Err(e) = std::fs::remove_dir_all(&staged) {
        tracing::warn!(dir = %staged.display(), error = %e, "removing a staged checkpoint failed");
    }
    tracing::info!(snapshot = %header.meta, log_start = header.log_start, log_end = header.log_end, "snapshot installed");
    Ok(header.meta)
}

/// Test-only fault injection: true when `DLEDGER_FAILPOINT` names this point (a test
/// stops an install half-way to prove the next start finishes it).
fn failpoint(name: &str) -> bool {
    std::env::var("DLEDGER_FAILPOINT").is_ok_and(|v| v == name)
}

/// Replaces the hook's families (`app`, `app_index`) with those of the checkpoint at `dir`.
fn copy_families(meta_store: &MetaStore, dir: &Path) -> Result<(), DLedgerError> {
    let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir)
        .map_err(|e| snapshot_err(format!("the checkpoint's families: {e}")))?;
    let source =
        rocksdb::DB::open_cf_for_read_only(&rocksdb::Options::default(), dir, &names, false)
            .map_err(|e| snapshot_err(format!("opening the checkpoint: {e}")))?;
    let db = meta_store.db();
    for family in [CF_APP, CF_INDEX] {
        let target = db.cf_handle(family).expect("families are created at open");
        // Everything of ours goes first: delete_range up to the last key, then that key.
        let last = db
            .iterator_cf(target, rocksdb::IteratorMode::End)
            .next()
            .transpose()
            .map_err(snapshot_err)?
            .map(|(k, _)| k);
        if let Some(last) = last {
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(target, b"" as &[u8], &last[..]);
            batch.delete_cf(target, &last);
            meta_store.write(batch, false)?;
        }
        let Some(from) = source.cf_handle(family) else {
            continue;
        };
        let mut batch = WriteBatch::default();
        for item in source.iterator_cf(from, rocksdb::IteratorMode::Start) {
            let (key, value) = item.map_err(snapshot_err)?;
            batch.put_cf(target, &key, &value);
            if batch.size_in_bytes() >= 4 << 20 {
                meta_store.write(std::mem::take(&mut batch), false)?;
            }
        }
        meta_store.write(batch, false)?;
    }
    Ok(())
}

/// Records that the stream at `path` is being installed (see the module doc).
pub(crate) fn mark_installing(meta_store: &MetaStore, path: &Path) -> Result<(), DLedgerError> {
    meta_store.put_sync(KEY_INSTALLING, &path.to_string_lossy().to_string())
}

/// At start, before the CommitLog is opened: installs again a stream whose install was
/// interrupted, and removes what earlier snapshots left under `<store>/snapshot/`.
pub(crate) fn finish_interrupted_install(
    store_path: &Path,
    meta_store: &MetaStore,
    segment_bytes: u64,
    warm_segments: bool,
    hook_dirs: &[PathBuf],
) -> Result<(), DLedgerError> {
    let installing: Option<String> = meta_store.get(KEY_INSTALLING)?;
    if let Some(stream) = installing {
        let stream = PathBuf::from(stream);
        tracing::warn!(stream = %stream.display(), "finishing a snapshot install that was interrupted");
        let mut file =
            std::io::BufReader::new(File::open(&stream).map_err(|e| DLedgerError::io(&stream, e))?);
        install(
            store_path,
            meta_store,
            segment_bytes,
            hook_dirs,
            LogTarget::Files { warm_segments },
            &mut file,
        )?;
    }
    let dir = store_path.join(SNAPSHOT_DIR);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| DLedgerError::io(&dir, e))?;
    }
    Ok(())
}

/// Installs `data` (received or taken locally) into a running node's stores.
pub(crate) fn install_data(
    store_path: &Path,
    meta_store: &MetaStore,
    log: &CommitLog,
    segment_bytes: u64,
    hook_dirs: &[PathBuf],
    data: &SnapshotData,
) -> Result<SnapshotMeta<u64, openraft::BasicNode>, DLedgerError> {
    match &data.0 {
        Inner::MetaOnly => Err(snapshot_err("a snapshot without data cannot be installed")),
        Inner::Outgoing(outgoing) => install(
            store_path,
            meta_store,
            segment_bytes,
            hook_dirs,
            LogTarget::Live(log),
            &mut outgoing.reader(),
        ),
        Inner::Incoming(path) => {
            mark_installing(meta_store, path)?;
            let mut file = std::io::BufReader::with_capacity(
                1 << 20,
                File::open(path).map_err(|e| DLedgerError::io(path, e))?,
            );
            let meta = install(
                store_path,
                meta_store,
                segment_bytes,
                hook_dirs,
                LogTarget::Live(log),
                &mut file,
            )?;
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(file = %path.display(), error = %e, "removing a received snapshot failed");
            }
            Ok(meta)
        }
    }
}

/// The log id a snapshot names, as openraft's metadata has it.
pub(crate) fn snapshot_id(last: &Option<LogId<u64>>) -> String {
    match last {
        Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
        None => "none".to_string(),
    }
}
