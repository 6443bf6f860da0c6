//! ConsumeQueue files: per topic and queue, one 20-byte entry per message (commit log
//! offset i64, size i32, tag hash i64, big-endian), under
//! `consumequeue/<topic>/<queueId>/<20-digit byte offset>` as in RocketMQ.
//!
//! Entries are written only when a record is applied (so only committed messages are
//! ever visible), in queue-offset order, identically on every replica.
//!
//! The files are written to the page cache only, and made durable by one `syncfs` of their
//! file system when due ([`ConsumeQueueSync`]): one call whatever the number of queues,
//! where an `fsync` per written queue cost 20,000 calls a second with 20,000 queues
//! (issue 21). What an OS crash can lose of them (a tail, or any page in the middle, in any
//! order) is restored from the journal: each apply also writes the entries it appended, to
//! every queue its Raft entry touched, as one RocksDB record in the same batch as the
//! applied point (key `j` + the entry's first CommitLog position,
//! [`crate::keys::journal_key`]). A sync then stores, for each queue written since the last,
//! its entry count as of the newest journal record RocksDB holds (`Q` keys,
//! [`crate::keys::queue_key`]) and deletes the journal below that record, in one write: the
//! apply itself writes one RocksDB record however many queues it touched (a count per queue
//! and apply was the largest cost at 8,000 queues). On start each queue's count is its
//! stored one extended by the journal, whose records are written over the files again
//! ([`ConsumeQueue::write_at`]); anything past it (a batch that did not reach RocksDB) is
//! cut. So the entries are exactly what was applied, with no operator step.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Notify;
use tracing::warn;

use crate::error::{BrokerError, Result};

/// Bytes of one entry.
pub const ENTRY_BYTES: u64 = 20;

/// One ConsumeQueue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqEntry {
    pub commit_log_offset: i64,
    pub size: i32,
    pub tag_hash: i64,
}

impl CqEntry {
    pub(crate) fn encode(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[0..8].copy_from_slice(&self.commit_log_offset.to_be_bytes());
        out[8..12].copy_from_slice(&self.size.to_be_bytes());
        out[12..20].copy_from_slice(&self.tag_hash.to_be_bytes());
        out
    }

    pub(crate) fn decode(b: &[u8]) -> CqEntry {
        CqEntry {
            commit_log_offset: i64::from_be_bytes(b[0..8].try_into().unwrap()),
            size: i32::from_be_bytes(b[8..12].try_into().unwrap()),
            tag_hash: i64::from_be_bytes(b[12..20].try_into().unwrap()),
        }
    }
}

/// One queue's part of a journal record: `entries` appended from queue offset `first`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JournalPart {
    pub topic: String,
    pub queue_id: i32,
    pub first: u64,
    pub entries: Vec<CqEntry>,
}

/// A journal record: for each queue one Raft entry appended to, its topic (u16 BE length and
/// bytes), queue id (i32 BE), first queue offset (u64 BE), entry count (u32 BE) and the
/// 20-byte entries.
pub(crate) fn encode_journal<'a>(
    parts: impl IntoIterator<Item = (&'a str, i32, u64, &'a [CqEntry])>,
) -> Vec<u8> {
    let mut out = Vec::new();
    for (topic, queue_id, first, entries) in parts {
        let len = u16::try_from(topic.len()).expect("topic names are checked to be short");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(topic.as_bytes());
        out.extend_from_slice(&queue_id.to_be_bytes());
        out.extend_from_slice(&first.to_be_bytes());
        let count = u32::try_from(entries.len()).expect("a Raft entry holds far fewer records");
        out.extend_from_slice(&count.to_be_bytes());
        for e in entries {
            out.extend_from_slice(&e.encode());
        }
    }
    out
}

/// The parts of a journal record; `None` if it is malformed.
pub(crate) fn decode_journal(mut value: &[u8]) -> Option<Vec<JournalPart>> {
    fn take<'a>(value: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = value.split_at_checked(n)?;
        *value = rest;
        Some(head)
    }
    let mut parts = Vec::new();
    while !value.is_empty() {
        let len = u16::from_be_bytes(take(&mut value, 2)?.try_into().ok()?);
        let topic = std::str::from_utf8(take(&mut value, len as usize)?).ok()?;
        let queue_id = i32::from_be_bytes(take(&mut value, 4)?.try_into().ok()?);
        let first = u64::from_be_bytes(take(&mut value, 8)?.try_into().ok()?);
        let count = u32::from_be_bytes(take(&mut value, 4)?.try_into().ok()?) as usize;
        let bytes = take(&mut value, count.checked_mul(ENTRY_BYTES as usize)?)?;
        parts.push(JournalPart {
            topic: topic.to_string(),
            queue_id,
            first,
            entries: bytes
                .chunks_exact(ENTRY_BYTES as usize)
                .map(CqEntry::decode)
                .collect(),
        });
    }
    Some(parts)
}

/// (first queue offset, entries) of a journal record written before issue 21 (one per queue
/// and apply); `None` if it is malformed.
pub(crate) fn decode_legacy_journal(value: &[u8]) -> Option<(u64, Vec<CqEntry>)> {
    let first = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let body = &value[8..];
    if body.len() % ENTRY_BYTES as usize != 0 {
        return None;
    }
    Some((
        first,
        body.chunks_exact(ENTRY_BYTES as usize)
            .map(CqEntry::decode)
            .collect(),
    ))
}

fn io_err(path: &Path, source: std::io::Error) -> BrokerError {
    BrokerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A queue's files by their first byte offset: every file that exists, open or not.
type FileMap = Mutex<BTreeMap<u64, Option<Arc<File>>>>;

/// Bounds the ConsumeQueue files held open on a node. A queue's file is opened when it is
/// first read or written and stays open until more than `limit` are; then the files opened
/// longest ago are closed (and opened again when next used). Tens of thousands of queues
/// would otherwise hold as many descriptors and run into the process's limit (issue 21).
pub(crate) struct OpenFiles {
    /// Files in the order they were opened: (their queue's map, start). An entry whose file
    /// was closed or removed since is skipped when it comes up.
    order: Mutex<std::collections::VecDeque<(std::sync::Weak<FileMap>, u64)>>,
    open: std::sync::atomic::AtomicUsize,
    limit: usize,
}

impl OpenFiles {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(OpenFiles {
            order: Mutex::new(std::collections::VecDeque::new()),
            open: std::sync::atomic::AtomicUsize::new(0),
            limit: limit.max(1),
        })
    }

    /// The process's limit on open files (raised to its hard limit first, see
    /// [`raise_open_files_limit`]) less 2,048 for RocksDB, the CommitLog, peers and the
    /// like; half of it when that leaves little. Connections may take from it too: a file
    /// that cannot be opened for want of descriptors makes room ([`OpenFiles::make_room`]).
    pub(crate) fn limit_for_this_process() -> usize {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid rlimit to fill.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return 512;
        }
        let n = limit.rlim_cur.min(1 << 24) as usize;
        if n > 8_192 { n - 2_048 } else { n / 2 }.max(64)
    }

    /// Counts a file just opened in `files` and closes the oldest past the limit.
    fn opened(&self, files: &Arc<FileMap>, start: u64) {
        self.open.fetch_add(1, Ordering::AcqRel);
        let mut order = self.order.lock().unwrap();
        order.push_back((Arc::downgrade(files), start));
        self.close_oldest(&mut order, self.limit);
        // Entries of files closed or removed otherwise pile up only while under the limit.
        if order.len() > 2 * self.limit + 1024 {
            order.retain(|(map, start)| {
                map.upgrade()
                    .is_some_and(|m| m.lock().unwrap().get(start).is_some_and(Option::is_some))
            });
        }
    }

    /// Closes the files opened longest ago until at most `keep` are open.
    fn close_oldest(
        &self,
        order: &mut std::collections::VecDeque<(std::sync::Weak<FileMap>, u64)>,
        keep: usize,
    ) {
        while self.open.load(Ordering::Acquire) > keep {
            let Some((map, start)) = order.pop_front() else {
                break;
            };
            if let Some(map) = map.upgrade() {
                if let Some(slot @ Some(_)) = map.lock().unwrap().get_mut(&start) {
                    *slot = None;
                    self.open.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// The process ran out of descriptors (connections took them): closes the older half of
    /// the files held open, so that a ConsumeQueue can still be written. Running out must
    /// never stop a node as a failing disk does.
    fn make_room(&self) {
        let mut order = self.order.lock().unwrap();
        let keep = self.open.load(Ordering::Acquire) / 2;
        self.close_oldest(&mut order, keep);
        warn!(
            open = self.open.load(Ordering::Acquire),
            "out of file descriptors: closed the ConsumeQueue files opened longest ago"
        );
    }

    /// Counts `n` files closed other than by [`OpenFiles::opened`].
    fn closed(&self, n: usize) {
        if n > 0 {
            self.open.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit, as a server with many
/// queues needs (RocketMQ's docs ask for `ulimit -n 655350`); returns the limit now in force.
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to fill, then to pass back.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Bytes of entries a queue gathers in memory before it writes them to its file: about a
/// page, so that a queue written one entry at a time (tens of thousands of queues) costs one
/// write a page, not one a message.
const TAIL_BYTES: usize = 204 * ENTRY_BYTES as usize;

/// A queue's newest entries, appended but not yet written to its files.
struct Tail {
    /// The queue offset of the first: every entry below it is in the files.
    start: u64,
    /// The entries, encoded.
    bytes: Vec<u8>,
}

/// One queue's files.
pub struct ConsumeQueue {
    dir: PathBuf,
    file_bytes: u64,
    files: Arc<FileMap>,
    budget: Arc<OpenFiles>,
    /// Entries appended (to the files or `tail`): the next queue offset.
    max_offset: AtomicU64,
    /// The entries from `tail.start` to `max_offset`, in memory until about a page of them
    /// gathers ([`TAIL_BYTES`]) or a sync or snapshot needs them in the files
    /// ([`ConsumeQueue::flush`]). A crash loses them as it loses unsynced pages: the
    /// journal restores them.
    tail: Mutex<Tail>,
    /// The first entry whose record retention has kept (see [`ConsumeQueue::retain_from`]).
    min_offset: AtomicU64,
    /// Woken whenever entries are added (long polling waits on it).
    pub(crate) appended: Notify,
    /// Written since the last sync stored its count ([`ConsumeQueueStore::note_written`]).
    dirty: AtomicBool,
    /// Its count key in RocksDB ([`crate::keys::queue_key`]).
    count_key: Box<[u8]>,
}

impl ConsumeQueue {
    fn open(
        dir: PathBuf,
        count_key: Vec<u8>,
        file_bytes: u64,
        budget: Arc<OpenFiles>,
    ) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let mut files = BTreeMap::new();
        let mut end = 0u64;
        for item in std::fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
            let item = item.map_err(|e| io_err(&dir, e))?;
            let name = item.file_name().to_string_lossy().to_string();
            let Ok(start) = name.parse::<u64>() else {
                continue;
            };
            let path = item.path();
            let len = std::fs::metadata(&path)
                .map_err(|e| io_err(&path, e))?
                .len();
            end = end.max(start + len);
            // Opened when first used.
            files.insert(start, None);
        }
        Ok(ConsumeQueue {
            dir,
            file_bytes,
            files: Arc::new(Mutex::new(files)),
            budget,
            max_offset: AtomicU64::new(end / ENTRY_BYTES),
            tail: Mutex::new(Tail {
                start: end / ENTRY_BYTES,
                bytes: Vec::new(),
            }),
            min_offset: AtomicU64::new(0),
            appended: Notify::new(),
            dirty: AtomicBool::new(false),
            count_key: count_key.into_boxed_slice(),
        })
    }

    /// The next queue offset to be written (entries `0..max` exist).
    pub fn max_offset(&self) -> u64 {
        self.max_offset.load(Ordering::Acquire)
    }

    /// The first queue offset whose message is still stored: entries below it point below
    /// the retention point.
    pub fn min_offset(&self) -> u64 {
        self.min_offset.load(Ordering::Acquire)
    }

    /// Moves the minimum to the first entry whose record lies at or above CommitLog
    /// `position` (the end, if none does), and deletes the files wholly below it. Entries
    /// lie in CommitLog order, so this is a binary search, starting from the first file
    /// still present. Deterministic: every replica holds the same entries and gets the same
    /// minimum. Never moves the minimum back; a repeat (replay after a crash) finds the files
    /// gone and the same answer.
    pub fn retain_from(&self, position: u64) -> Result<u64> {
        // Entries still in memory go to their files first: none is written later into a
        // file this deletes.
        self.flush()?;
        let first_file = self.files.lock().unwrap().keys().next().copied();
        let mut lo = self
            .min_offset()
            .max(first_file.map_or(0, |start| start / ENTRY_BYTES));
        let mut hi = self.max_offset();
        lo = lo.min(hi);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let Some(entry) = self.read(mid, 1)?.first().copied() else {
                return Err(BrokerError::Corrupt {
                    what: format!("consume queue {}", self.dir.display()),
                    reason: format!("entry {mid} is missing below its end"),
                });
            };
            if (entry.commit_log_offset as u64) < position {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let min = self.min_offset.fetch_max(lo, Ordering::AcqRel).max(lo);
        self.delete_files_below(min)?;
        Ok(min)
    }

    /// Deletes the files whose entries all lie below queue offset `min`.
    fn delete_files_below(&self, min: u64) -> Result<()> {
        let mut files = self.files.lock().unwrap();
        let below: Vec<u64> = files
            .keys()
            .copied()
            .filter(|start| start + self.file_bytes <= min * ENTRY_BYTES)
            .collect();
        for start in below {
            if let Some(Some(_)) = files.remove(&start) {
                self.budget.closed(1);
            }
            let path = self.dir.join(format!("{start:020}"));
            std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
        }
        Ok(())
    }

    fn file_for(&self, byte_offset: u64, create: bool) -> Result<Option<(u64, Arc<File>)>> {
        let start = byte_offset - byte_offset % self.file_bytes;
        let mut files = self.files.lock().unwrap();
        match files.get(&start) {
            Some(Some(f)) => return Ok(Some((start, f.clone()))),
            Some(None) => {}
            None if !create => return Ok(None),
            None => {}
        }
        let path = self.dir.join(format!("{start:020}"));
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
        };
        let file = match open() {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                // Other queues' locks are taken to make room: this one's is released first.
                drop(files);
                self.budget.make_room();
                files = self.files.lock().unwrap();
                open()
            }
            other => other,
        }
        .map_err(|e| io_err(&path, e))?;
        if let Some(Some(theirs)) = files.get(&start) {
            // Opened by another caller while the lock was released above.
            return Ok(Some((start, theirs.clone())));
        }
        let file = Arc::new(file);
        files.insert(start, Some(file.clone()));
        // The budget takes other queues' locks: this one's is released first.
        drop(files);
        self.budget.opened(&self.files, start);
        Ok(Some((start, file)))
    }

    /// Writes the entry for `queue_offset`, which must be the next one.
    pub fn append(&self, queue_offset: u64, entry: CqEntry) -> Result<()> {
        self.append_many(queue_offset, &[entry])
    }

    /// Appends consecutive entries from `first_queue_offset`, which must be the next one,
    /// to the queue's tail in memory (written to its file once about a page gathers), then
    /// wakes held pulls.
    pub fn append_many(&self, first_queue_offset: u64, entries: &[CqEntry]) -> Result<()> {
        let mut tail = self.tail.lock().unwrap();
        let expected = self.max_offset();
        if first_queue_offset != expected {
            return Err(BrokerError::Corrupt {
                what: format!("consume queue {}", self.dir.display()),
                reason: format!("append at queue offset {first_queue_offset}, expected {expected}"),
            });
        }
        if tail.bytes.is_empty() {
            tail.start = first_queue_offset;
        }
        for e in entries {
            tail.bytes.extend_from_slice(&e.encode());
        }
        self.max_offset
            .store(first_queue_offset + entries.len() as u64, Ordering::Release);
        if tail.bytes.len() >= TAIL_BYTES {
            self.write_tail(&mut tail)?;
        }
        drop(tail);
        self.appended.notify_waiters();
        Ok(())
    }

    /// Writes the tail to the files (keeping its buffer for the next entries).
    fn write_tail(&self, tail: &mut Tail) -> Result<()> {
        if tail.bytes.is_empty() {
            return Ok(());
        }
        self.write_encoded_at(tail.start, &tail.bytes)?;
        tail.start += (tail.bytes.len() as u64) / ENTRY_BYTES;
        tail.bytes.clear();
        Ok(())
    }

    /// Writes every entry appended to the files (the page cache), as a sync or snapshot
    /// needs, and lets the tail's buffer go.
    pub(crate) fn flush(&self) -> Result<()> {
        let mut tail = self.tail.lock().unwrap();
        self.write_tail(&mut tail)?;
        tail.bytes = Vec::new();
        Ok(())
    }

    /// Writes `entries` at queue offsets from `first`, over what is there (crash repair
    /// from the journal); the queue then holds at least `first + entries.len()` entries.
    pub fn write_at(&self, first: u64, entries: &[CqEntry]) -> Result<()> {
        let mut tail = self.tail.lock().unwrap();
        self.write_tail(&mut tail)?;
        let mut bytes = Vec::with_capacity(entries.len() * ENTRY_BYTES as usize);
        for e in entries {
            bytes.extend_from_slice(&e.encode());
        }
        self.write_encoded_at(first, &bytes)?;
        let end = first + entries.len() as u64;
        tail.start = self.max_offset.fetch_max(end, Ordering::AcqRel).max(end);
        Ok(())
    }

    /// Writes encoded entries to the files from queue offset `first`: one write per file.
    fn write_encoded_at(&self, first: u64, bytes: &[u8]) -> Result<()> {
        let mut byte_offset = first * ENTRY_BYTES;
        let mut rest = bytes;
        while !rest.is_empty() {
            let (start, file) = self.file_for(byte_offset, true)?.expect("created");
            let n = ((start + self.file_bytes - byte_offset) as usize).min(rest.len());
            file.write_all_at(&rest[..n], byte_offset - start)
                .map_err(|e| io_err(&self.dir, e))?;
            byte_offset += n as u64;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Reads up to `max_entries` entries from `from`.
    pub fn read(&self, from: u64, max_entries: usize) -> Result<Vec<CqEntry>> {
        // What the tail holds is copied first: entries below its start are in the files,
        // and stay there while it moves on.
        let (in_files, from_tail) = {
            let tail = self.tail.lock().unwrap();
            let max = self.max_offset();
            let in_files = tail.start.min(max);
            let first = from.max(in_files);
            let before = in_files.saturating_sub(from).min(max_entries as u64);
            let wanted = (max - first.min(max)).min(max_entries as u64 - before);
            let at = ((first - tail.start) * ENTRY_BYTES) as usize;
            let bytes = &tail.bytes[at.min(tail.bytes.len())..];
            let bytes = &bytes[..(wanted * ENTRY_BYTES) as usize];
            let entries: Vec<CqEntry> = bytes
                .chunks_exact(ENTRY_BYTES as usize)
                .map(CqEntry::decode)
                .collect();
            (in_files, entries)
        };
        let mut out = Vec::new();
        let mut offset = from;
        let mut buf = Vec::new();
        while offset < in_files && out.len() < max_entries {
            let byte_offset = offset * ENTRY_BYTES;
            let Some((start, file)) = self.file_for(byte_offset, false)? else {
                // A file missing below the tail: read no further than it.
                return Ok(out);
            };
            let in_file = ((start + self.file_bytes - byte_offset) / ENTRY_BYTES)
                .min(in_files - offset)
                .min((max_entries - out.len()) as u64);
            buf.resize((in_file * ENTRY_BYTES) as usize, 0);
            file.read_exact_at(&mut buf, byte_offset - start)
                .map_err(|e| io_err(&self.dir, e))?;
            out.extend(buf.chunks_exact(ENTRY_BYTES as usize).map(CqEntry::decode));
            offset += in_file;
        }
        out.extend(from_tail);
        Ok(out)
    }

    /// The queue offset and entry of the record at `commit_log_offset`, if this queue
    /// holds it: a binary search, since a queue's entries lie in CommitLog order.
    pub fn find(&self, commit_log_offset: i64) -> Result<Option<(u64, CqEntry)>> {
        let (mut lo, mut hi) = (self.min_offset(), self.max_offset());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let Some(entry) = self.read(mid, 1)?.first().copied() else {
                return Ok(None);
            };
            match entry.commit_log_offset.cmp(&commit_log_offset) {
                std::cmp::Ordering::Equal => return Ok(Some((mid, entry))),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(None)
    }

    /// How many entries point below CommitLog position `end`. Entries lie in CommitLog
    /// order, so they are a prefix; searched from the tail, where the few past `end` are
    /// (entries applied but not yet in RocksDB, see [`ConsumeQueueSync`]).
    fn count_below(&self, end: u64) -> Result<u64> {
        const STEP: u64 = 64;
        let floor = self.min_offset();
        let mut n = self.max_offset();
        while n > floor {
            let from = n.saturating_sub(STEP).max(floor);
            let entries = self.read(from, (n - from) as usize)?;
            if entries.len() as u64 != n - from {
                return Err(BrokerError::Corrupt {
                    what: format!("consume queue {}", self.dir.display()),
                    reason: format!("entries {from}..{n} are missing below its end"),
                });
            }
            if let Some(i) = entries
                .iter()
                .rposition(|e| (e.commit_log_offset as u64) < end)
            {
                return Ok(from + i as u64 + 1);
            }
            n = from;
        }
        Ok(n)
    }

    /// Cuts the queue back to `count` entries (crash recovery).
    pub fn truncate(&self, count: u64) -> Result<()> {
        let mut tail = self.tail.lock().unwrap();
        self.write_tail(&mut tail)?;
        tail.start = count;
        let mut files = self.files.lock().unwrap();
        let cut = count * ENTRY_BYTES;
        let starts: Vec<u64> = files.keys().copied().collect();
        for start in starts {
            let path = self.dir.join(format!("{start:020}"));
            if start >= cut {
                if let Some(Some(_)) = files.remove(&start) {
                    self.budget.closed(1);
                }
                std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
            } else if start + self.file_bytes > cut {
                let cut_at = cut - start;
                match &files[&start] {
                    Some(file) => file.set_len(cut_at),
                    None => OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(cut_at)),
                }
                .map_err(|e| io_err(&path, e))?;
            }
        }
        self.max_offset.store(count, Ordering::Release);
        Ok(())
    }
}

impl Drop for ConsumeQueue {
    fn drop(&mut self) {
        let open = self
            .files
            .lock()
            .map(|f| f.values().filter(|f| f.is_some()).count())
            .unwrap_or(0);
        self.budget.closed(open);
    }
}

/// Every queue of every topic on this node.
pub struct ConsumeQueueStore {
    root: PathBuf,
    file_bytes: u64,
    budget: Arc<OpenFiles>,
    queues: RwLock<HashMap<String, HashMap<i32, Arc<ConsumeQueue>>>>,
    /// Woken when a queue is created: pulls held on a queue that did not exist yet.
    pub(crate) created: Notify,
    /// One past the CommitLog position of the last journal record whose entries are
    /// appended; a sync that finds it where the last one left it has nothing to do.
    journaled: AtomicU64,
    /// Queues written since the last sync stored their counts (each once: its `dirty`
    /// flag), and entries appended since.
    dirty: Mutex<Vec<Arc<ConsumeQueue>>>,
    written_entries: AtomicU64,
    /// Held by a sync while it runs; true from [`ConsumeQueueStore::installing`] (a
    /// snapshot install is about to replace files and RocksDB) until
    /// [`ConsumeQueueStore::reload`].
    installing: Mutex<bool>,
}

impl ConsumeQueueStore {
    /// Opens `<root>` and every queue found under it, holding at most the process's
    /// open-file limit less 2,048 of their files open at once ([`OpenFiles`]).
    pub fn open(root: PathBuf, file_bytes: u64) -> Result<Self> {
        Self::open_with(
            root,
            file_bytes,
            OpenFiles::new(OpenFiles::limit_for_this_process()),
        )
    }

    fn open_with(root: PathBuf, file_bytes: u64, budget: Arc<OpenFiles>) -> Result<Self> {
        std::fs::create_dir_all(&root).map_err(|e| io_err(&root, e))?;
        let mut queues = HashMap::new();
        for topic_dir in std::fs::read_dir(&root).map_err(|e| io_err(&root, e))? {
            let topic_dir = topic_dir.map_err(|e| io_err(&root, e))?;
            if !topic_dir.file_type().is_ok_and(|t| t.is_dir()) {
                warn!(path = %topic_dir.path().display(), "not a ConsumeQueue topic directory; ignored");
                continue;
            }
            let topic = topic_dir.file_name().to_string_lossy().to_string();
            for queue_dir in std::fs::read_dir(topic_dir.path()).map_err(|e| io_err(&root, e))? {
                let queue_dir = queue_dir.map_err(|e| io_err(&root, e))?;
                let Ok(queue_id) = queue_dir.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                if !queue_dir.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let queue = ConsumeQueue::open(
                    queue_dir.path(),
                    crate::keys::queue_key(&topic, queue_id),
                    file_bytes,
                    budget.clone(),
                )?;
                queues
                    .entry(topic.clone())
                    .or_insert_with(HashMap::new)
                    .insert(queue_id, Arc::new(queue));
            }
        }
        Ok(ConsumeQueueStore {
            root,
            file_bytes,
            budget,
            queues: RwLock::new(queues),
            created: Notify::new(),
            journaled: AtomicU64::new(0),
            dirty: Mutex::new(Vec::new()),
            written_entries: AtomicU64::new(0),
            installing: Mutex::new(false),
        })
    }

    /// Counts `entries` appended to `queue`: the next sync stores its count and counts the
    /// entries towards its due test.
    pub(crate) fn note_written(&self, queue: &Arc<ConsumeQueue>, entries: usize) {
        self.mark_dirty(queue);
        self.written_entries
            .fetch_add(entries as u64, Ordering::Relaxed);
    }

    /// Makes the next sync store `queue`'s count.
    pub(crate) fn mark_dirty(&self, queue: &Arc<ConsumeQueue>) {
        if !queue.dirty.swap(true, Ordering::AcqRel) {
            self.dirty.lock().unwrap().push(queue.clone());
        }
    }

    /// A snapshot install is about to replace the files and RocksDB: waits for a sync under
    /// way and stops syncs until [`ConsumeQueueStore::reload`].
    pub(crate) fn installing(&self) {
        *self.installing.lock().unwrap() = true;
    }

    /// Records that the entries of the journal record at CommitLog `position` are appended
    /// to their queues.
    pub(crate) fn note_journaled(&self, position: u64) {
        self.journaled.fetch_max(position + 1, Ordering::AcqRel);
    }

    /// The queue, if it has ever been written.
    pub fn get(&self, topic: &str, queue_id: i32) -> Option<Arc<ConsumeQueue>> {
        self.queues
            .read()
            .unwrap()
            .get(topic)
            .and_then(|queues| queues.get(&queue_id))
            .cloned()
    }

    /// The queue, created if needed.
    pub fn get_or_create(&self, topic: &str, queue_id: i32) -> Result<Arc<ConsumeQueue>> {
        if let Some(q) = self.get(topic, queue_id) {
            return Ok(q);
        }
        let queue = {
            let mut all = self.queues.write().unwrap();
            let queues = all.entry(topic.to_string()).or_default();
            if let Some(q) = queues.get(&queue_id) {
                return Ok(q.clone());
            }
            let dir = self.root.join(topic).join(queue_id.to_string());
            let queue = Arc::new(ConsumeQueue::open(
                dir,
                crate::keys::queue_key(topic, queue_id),
                self.file_bytes,
                self.budget.clone(),
            )?);
            queues.insert(queue_id, queue.clone());
            queue
        };
        self.created.notify_waiters();
        Ok(queue)
    }

    /// The directory holding every queue (`<store>/consumequeue`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes every queue's entries held in memory to its files.
    pub fn flush_all(&self) -> Result<()> {
        for (_, queue) in self.all() {
            queue.flush()?;
        }
        Ok(())
    }

    /// Every file of every queue and the bytes of it that hold entries, for a snapshot.
    pub fn snapshot_files(&self) -> Result<Vec<(PathBuf, u64)>> {
        let mut out = Vec::new();
        for (_, queue) in self.all() {
            queue.flush()?;
            let end = queue.max_offset() * ENTRY_BYTES;
            let starts: Vec<u64> = queue.files.lock().unwrap().keys().copied().collect();
            for start in &starts {
                let path = queue.dir.join(format!("{start:020}"));
                let len = match std::fs::metadata(&path) {
                    Ok(meta) => meta.len(),
                    // Deleted by retention since the listing.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&path, e)),
                };
                let len = len.min(end.saturating_sub(*start));
                if len > 0 {
                    out.push((path, len));
                }
            }
        }
        Ok(out)
    }

    /// Forgets every queue and opens what the directory holds now (a snapshot install
    /// replaced it). Queues handed out before keep working on the files they opened.
    /// Syncs stop from [`ConsumeQueueStore::installing`] until here; the queues the old
    /// state had written are forgotten (the start repairs mark the new state's, see
    /// [`crate::store`]).
    pub fn reload(&self) -> Result<()> {
        let mut installing = self.installing.lock().unwrap();
        let fresh =
            ConsumeQueueStore::open_with(self.root.clone(), self.file_bytes, self.budget.clone())?;
        *self.queues.write().unwrap() = fresh.queues.into_inner().unwrap();
        self.dirty.lock().unwrap().clear();
        self.journaled.store(0, Ordering::Release);
        *installing = false;
        self.created.notify_waiters();
        Ok(())
    }

    /// Every queue and its entry count.
    pub fn all(&self) -> Vec<((String, i32), Arc<ConsumeQueue>)> {
        self.queues
            .read()
            .unwrap()
            .iter()
            .flat_map(|(topic, queues)| {
                queues
                    .iter()
                    .map(|(id, q)| ((topic.clone(), *id), q.clone()))
            })
            .collect()
    }
}

/// Makes the ConsumeQueue entries written so far durable with one `syncfs` of the file
/// system that holds them, then deletes the journal records the sync covered (see the module
/// comment). Called every `flushIntervalConsumeQueue`, it syncs only when due, by RocketMQ's
/// rule: the queues written since the last sync hold `flushConsumeQueueLeastPages` pages of
/// new entries each (on average here, one sync serving all), or
/// `flushConsumeQueueThoroughInterval` has passed. With many queues each written a little,
/// a sync a second would write every touched page again each second (a 4 KiB page for a few
/// 20-byte entries); waiting lets the entries of a page gather first, while the journal keeps
/// them safe.
pub struct ConsumeQueueSync {
    /// The journal bound the last sync reached; `None` before the first, which also deletes
    /// the journal records of versions before issue 21 (the start restored them).
    synced: Option<u64>,
    last: std::time::Instant,
    least_bytes: u64,
    thorough: std::time::Duration,
}

impl ConsumeQueueSync {
    pub fn new(least_pages: u64, thorough: std::time::Duration) -> Self {
        ConsumeQueueSync {
            synced: None,
            last: std::time::Instant::now(),
            least_bytes: least_pages.saturating_mul(4096),
            thorough,
        }
    }

    /// Whether a sync is due, `written` queues having been given `entries` entries in
    /// `elapsed` since the last sync (something was journaled since).
    fn due(&self, written: u64, entries: u64, elapsed: std::time::Duration) -> bool {
        self.synced.is_none()
            || elapsed >= self.thorough
            || entries.saturating_mul(ENTRY_BYTES) >= self.least_bytes.saturating_mul(written)
    }

    /// Syncs if due; returns whether it did.
    pub fn run(
        &mut self,
        queues: &ConsumeQueueStore,
        hook_store: &dledger::HookStore,
    ) -> Result<bool> {
        let installing = queues.installing.lock().unwrap();
        if *installing {
            return Ok(false);
        }
        let journaled = queues.journaled.load(Ordering::Acquire);
        if self.synced == Some(journaled) {
            return Ok(false);
        }
        let written = queues.dirty.lock().unwrap().len() as u64;
        let entries = queues.written_entries.load(Ordering::Relaxed);
        if !self.due(written, entries, self.last.elapsed()) {
            return Ok(false);
        }
        queues.written_entries.store(0, Ordering::Relaxed);
        // Read before the sync: every entry below it was appended before its batch reached
        // RocksDB, and is written to the files here, so the sync covers it.
        let end = committed_end(hook_store)?;
        let written: Vec<Arc<ConsumeQueue>> = queues.dirty.lock().unwrap().clone();
        for queue in &written {
            queue.flush()?;
        }
        drop(written);
        let root = File::open(&queues.root).map_err(|e| io_err(&queues.root, e))?;
        // SAFETY: `root` is an open descriptor for the call's duration.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&root)) } != 0 {
            return Err(io_err(&queues.root, std::io::Error::last_os_error()));
        }
        let mut writes = dledger::LocalWrites::default();
        if self.synced.is_none() {
            writes.delete_range(crate::keys::LEGACY_JOURNAL_PREFIX, b"K");
        }
        let dirty = std::mem::take(&mut *queues.dirty.lock().unwrap());
        let stored = end.map_or(Ok(()), |end| {
            // Each written queue's count at `end` with the journal below `end`, in one
            // write: a start then finds the count or the journal, never neither.
            for queue in &dirty {
                queue.dirty.store(false, Ordering::Release);
                let count = queue.count_below(end)?;
                writes.put(&queue.count_key, &count.to_be_bytes());
                if queue.max_offset() > count {
                    // Entries whose batch is not in RocksDB yet: the next sync.
                    queues.mark_dirty(queue);
                }
            }
            writes.delete_range(&crate::keys::journal_key(0), &crate::keys::journal_key(end));
            Ok(())
        });
        let stored = stored.and_then(|()| {
            if writes.is_empty() {
                return Ok(());
            }
            hook_store.write_local(writes).map_err(BrokerError::from)
        });
        if let Err(e) = stored {
            for queue in &dirty {
                queue.dirty.store(false, Ordering::Release);
                queues.mark_dirty(queue);
            }
            return Err(e);
        }
        if end.is_none() {
            // Nothing journaled is in RocksDB yet: the queues wait for the next sync.
            for queue in &dirty {
                queue.dirty.store(false, Ordering::Release);
                queues.mark_dirty(queue);
            }
        }
        drop(installing);
        self.synced = Some(journaled);
        self.last = std::time::Instant::now();
        Ok(true)
    }
}

/// One past the last CommitLog position that the newest journal record in RocksDB holds an
/// entry for: the entries of every batch written to RocksDB lie below it, those of batches
/// applied but not yet written at or above. `None` if RocksDB holds no journal record.
fn committed_end(hook_store: &dledger::HookStore) -> Result<Option<u64>> {
    let prefix = crate::keys::JOURNAL_PREFIX;
    let mut until = prefix.to_vec();
    *until.last_mut().expect("a prefix") += 1;
    let Some((key, value)) = hook_store.last_in(prefix, &until)? else {
        return Ok(None);
    };
    let corrupt = |reason: &str| BrokerError::Corrupt {
        what: "ConsumeQueue journal".into(),
        reason: format!("record {key:?}: {reason}"),
    };
    let first = crate::keys::parse_journal_key(&key).ok_or_else(|| corrupt("malformed key"))?;
    let parts = decode_journal(&value).ok_or_else(|| corrupt("malformed record"))?;
    let last = parts
        .iter()
        .flat_map(|p| p.entries.iter())
        .map(|e| e.commit_log_offset as u64)
        .max()
        .unwrap_or(first);
    Ok(Some(last.max(first) + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> CqEntry {
        CqEntry {
            commit_log_offset: (i * 100) as i64,
            size: 100,
            tag_hash: i as i64 * 7,
        }
    }

    /// A journal record decodes to what was encoded, a malformed one to `None`; and
    /// `write_at` puts entries back over a cut and zeroed file, across a file boundary.
    /// A sync is due at the first call, once the written queues hold the least pages on
    /// average, or once the thorough interval has passed; with 0 least pages, always.
    #[test]
    fn consume_queue_sync_is_due_by_rocketmq_rule() {
        use std::time::Duration;
        let second = Duration::from_secs(1);
        let mut sync = ConsumeQueueSync::new(2, Duration::from_secs(60));
        assert!(sync.due(80_000, 40_000, second), "the first sync");
        sync.synced = Some(1);
        // 8 queues, 80k entries: 200 KiB each, far past 2 pages.
        assert!(sync.due(8, 80_000, second));
        // 80,000 queues written once or twice each: wait for entries to gather.
        assert!(!sync.due(80_000, 40_000, second));
        assert!(!sync.due(80_000, 40_000, Duration::from_secs(59)));
        assert!(
            sync.due(80_000, 40_000, Duration::from_secs(60)),
            "thorough"
        );
        // Exactly 2 pages per queue on average.
        assert!(sync.due(10, 10 * 8192 / 20 + 1, second));
        assert!(!sync.due(10, 10 * 8192 / 20 - 1, second));
        let every = ConsumeQueueSync {
            synced: Some(1),
            ..ConsumeQueueSync::new(0, Duration::from_secs(60))
        };
        assert!(every.due(80_000, 1, second));
    }

    /// The count below a CommitLog position is found across files and search steps, from
    /// an empty queue to one with every entry below; past the retained minimum it stops.
    #[test]
    fn count_below_finds_the_entries_before_a_position() {
        let dir = tempfile::tempdir().unwrap();
        // Files of 7 entries: the search crosses them.
        let store =
            ConsumeQueueStore::open_with(dir.path().to_path_buf(), 20 * 7, OpenFiles::new(8))
                .unwrap();
        let queue = store.get_or_create("T", 0).unwrap();
        assert_eq!(queue.count_below(1_000).unwrap(), 0);
        for i in 0..300 {
            queue.append(i, entry(i)).unwrap();
        }
        // Entry i points at i * 100.
        for (end, count) in [
            (0, 0),
            (1, 1),
            (100, 1),
            (101, 2),
            (15_000, 150),
            (29_901, 300),
            (u64::MAX, 300),
        ] {
            assert_eq!(queue.count_below(end).unwrap(), count, "below {end}");
        }
        queue.retain_from(20_000).unwrap();
        assert_eq!(queue.min_offset(), 200);
        assert_eq!(queue.count_below(100).unwrap(), 200);
        assert_eq!(queue.count_below(25_050).unwrap(), 251);
    }

    /// Past the limit the files opened longest ago are closed, and opened again when used:
    /// every entry of every queue reads back, across a reopen of the store.
    #[test]
    fn open_files_stay_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let open = |limit| {
            ConsumeQueueStore::open_with(dir.path().to_path_buf(), 20 * 4, OpenFiles::new(limit))
                .unwrap()
        };
        let store = open(5);
        for round in 0..3u64 {
            for q in 0..12 {
                let queue = store.get_or_create("T", q).unwrap();
                // Two entries a round: a new file every other round.
                queue.append(round * 2, entry(round * 2)).unwrap();
                queue.append(round * 2 + 1, entry(round * 2 + 1)).unwrap();
                queue.flush().unwrap();
                assert!(store.budget.open.load(Ordering::Acquire) <= 5);
            }
        }
        let held: usize = store
            .all()
            .iter()
            .map(|(_, q)| {
                q.files
                    .lock()
                    .unwrap()
                    .values()
                    .filter(|f| f.is_some())
                    .count()
            })
            .sum();
        assert_eq!(held, store.budget.open.load(Ordering::Acquire));
        assert_eq!(held, 5);
        // Out of descriptors: the older half is closed, and everything still reads.
        store.budget.make_room();
        assert_eq!(store.budget.open.load(Ordering::Acquire), 2);
        for q in 0..12 {
            let queue = store.get("T", q).unwrap();
            assert_eq!(
                queue.read(0, 10).unwrap(),
                (0..6).map(entry).collect::<Vec<_>>()
            );
            queue.truncate(3).unwrap();
        }
        assert!(store.budget.open.load(Ordering::Acquire) <= 5);
        drop(store);
        let store = open(2);
        assert_eq!(
            store.budget.open.load(Ordering::Acquire),
            0,
            "nothing opened at start"
        );
        for q in 0..12 {
            let queue = store.get("T", q).unwrap();
            assert_eq!(queue.max_offset(), 3);
            assert_eq!(
                queue.read(0, 10).unwrap(),
                (0..3).map(entry).collect::<Vec<_>>()
            );
        }
        store.reload().unwrap();
        assert!(store.budget.open.load(Ordering::Acquire) <= 2);
    }

    #[test]
    fn journal_records_restore_lost_entries() {
        let entries: Vec<CqEntry> = (5..12).map(entry).collect();
        let other: Vec<CqEntry> = (0..2).map(entry).collect();
        let record = encode_journal([("T", 0, 5, &entries[..]), ("U\0/", -1, 9, &other[..])]);
        let parts = decode_journal(&record).unwrap();
        assert_eq!(
            parts,
            vec![
                JournalPart {
                    topic: "T".into(),
                    queue_id: 0,
                    first: 5,
                    entries: entries.clone()
                },
                JournalPart {
                    topic: "U\0/".into(),
                    queue_id: -1,
                    first: 9,
                    entries: other.clone()
                },
            ]
        );
        // Cut anywhere but between parts, a record is malformed.
        let boundary = encode_journal([("T", 0, 5, &entries[..])]).len();
        for cut in 1..record.len() {
            let want = (cut == boundary).then(|| parts[..1].to_vec());
            assert_eq!(decode_journal(&record[..cut]), want, "cut at {cut}");
        }
        assert_eq!(decode_journal(&[1, 2]), None);
        assert_eq!(decode_journal(&[]), Some(vec![]));
        let mut legacy = 5u64.to_be_bytes().to_vec();
        entries
            .iter()
            .for_each(|e| legacy.extend_from_slice(&e.encode()));
        assert_eq!(decode_legacy_journal(&legacy), Some((5, entries.clone())));
        assert_eq!(decode_legacy_journal(&legacy[..legacy.len() - 1]), None);

        let dir = tempfile::tempdir().unwrap();
        let store = ConsumeQueueStore::open(dir.path().to_path_buf(), 20 * 8).unwrap();
        let q = store.get_or_create("T", 0).unwrap();
        for i in 0..12 {
            q.append(i, entry(i)).unwrap();
        }
        q.flush().unwrap();
        drop(store);
        // As a crash could leave it: the second file gone, a page of the first zeroed.
        std::fs::remove_file(dir.path().join("T/0/00000000000000000160")).unwrap();
        let first = dir.path().join("T/0/00000000000000000000");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&first)
            .unwrap()
            .write_all_at(&[0u8; 40], 100)
            .unwrap();
        let store = ConsumeQueueStore::open(dir.path().to_path_buf(), 20 * 8).unwrap();
        let q = store.get("T", 0).unwrap();
        assert_eq!(q.max_offset(), 8);
        let part = &decode_journal(&record).unwrap()[0];
        q.write_at(part.first, &part.entries).unwrap();
        assert_eq!(q.max_offset(), 12);
        assert_eq!(
            q.read(0, 20).unwrap(),
            (0..12).map(entry).collect::<Vec<_>>()
        );
    }

    #[test]
    fn find_locates_a_record_by_its_commit_log_offset() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConsumeQueueStore::open(dir.path().to_path_buf(), 20 * 8).unwrap();
        let q = store.get_or_create("T", 0).unwrap();
        assert_eq!(q.find(0).unwrap(), None);
        for i in 0..30 {
            q.append(i, entry(i)).unwrap();
        }
        for i in 0..30 {
            assert_eq!(q.find(i as i64 * 100).unwrap(), Some((i, entry(i))));
        }
        for missing in [-1, 1, 150, 2_999, 3_000] {
            assert_eq!(q.find(missing).unwrap(), None, "{missing}");
        }
    }

    /// Retention moves the minimum to the first entry at or above the point, deletes the
    /// files wholly below it, never moves back, and gives the same minimum after a reopen
    /// (the broker recomputes it at open from the stored point).
    #[test]
    fn min_offset_follows_retention_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let file_bytes = 20 * 8;
        let store = ConsumeQueueStore::open(dir.path().to_path_buf(), file_bytes).unwrap();
        let q = store.get_or_create("T", 0).unwrap();
        for i in 0..30 {
            q.append(i, entry(i)).unwrap();
        }
        q.flush().unwrap();
        assert_eq!(q.min_offset(), 0);
        assert_eq!(q.retain_from(0).unwrap(), 0);
        // Entry i lies at CommitLog offset 100 * i: the first at or above 1_750 is 18.
        assert_eq!(q.retain_from(1_750).unwrap(), 18);
        assert_eq!(q.min_offset(), 18);
        for gone in ["00000000000000000000", "00000000000000000160"] {
            assert!(!dir.path().join("T/0").join(gone).exists(), "{gone}");
        }
        assert!(
            dir.path().join("T/0/00000000000000000320").exists(),
            "holds 16..24"
        );
        assert_eq!(q.read(18, 2).unwrap(), vec![entry(18), entry(19)]);
        assert_eq!(q.find(1_800).unwrap(), Some((18, entry(18))));
        assert_eq!(q.retain_from(500).unwrap(), 18, "never moves back");
        drop(store);

        let store = ConsumeQueueStore::open(dir.path().to_path_buf(), file_bytes).unwrap();
        let q = store.get("T", 0).unwrap();
        assert_eq!(q.max_offset(), 30);
        assert_eq!(
            q.retain_from(1_750).unwrap(),
            18,
            "same answer after a reopen"
        );
        // Past the last entry: the minimum is the end, and new entries follow.
        assert_eq!(q.retain_from(1_000_000).unwrap(), 30);
        q.append(30, entry(30)).unwrap();
        assert_eq!(q.read(30, 5).unwrap(), vec![entry(30)]);
        assert_eq!((q.min_offset(), q.max_offset()), (30, 31));
    }

    #[test]
    fn entries_round_trip_across_files_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConsumeQueueStore::open(dir.path().to_path_buf(), 20 * 8).unwrap();
        let q = store.get_or_create("T", 3).unwrap();
        for i in 0..30 {
            q.append(i, entry(i)).unwrap();
        }
        assert!(
            q.append(7, entry(7)).is_err(),
            "out-of-order append must fail"
        );
        let all = q.read(0, 100).unwrap();
        assert_eq!(all, (0..30).map(entry).collect::<Vec<_>>());
        assert_eq!(q.read(5, 3).unwrap(), vec![entry(5), entry(6), entry(7)]);
        q.flush().unwrap();
        assert!(dir.path().join("T/3/00000000000000000160").exists());
        drop(store);

        let store = ConsumeQueueStore::open(dir.path().to_path_buf(), 20 * 8).unwrap();
        let q = store.get("T", 3).unwrap();
        assert_eq!(q.max_offset(), 30);
        q.truncate(10).unwrap();
        assert_eq!(q.max_offset(), 10);
        assert_eq!(q.read(0, 100).unwrap().len(), 10);
        q.append(10, entry(99)).unwrap();
        assert_eq!(q.read(10, 1).unwrap(), vec![entry(99)]);
        q.flush().unwrap();
        drop(store);
        let store = ConsumeQueueStore::open(dir.path().to_path_buf(), 20 * 8).unwrap();
        assert_eq!(store.get("T", 3).unwrap().max_offset(), 11);

        // A batch that crosses two file boundaries lands exactly as single appends do.
        let q = store.get_or_create("U", 0).unwrap();
        let batch: Vec<CqEntry> = (0..19).map(entry).collect();
        q.append_many(0, &batch[..3]).unwrap();
        assert!(
            q.append_many(5, &batch[3..]).is_err(),
            "a gap must be refused"
        );
        q.append_many(3, &batch[3..]).unwrap();
        assert_eq!(q.max_offset(), 19);
        assert_eq!(q.read(0, 100).unwrap(), batch);
        q.flush().unwrap();
        assert!(dir.path().join("U/0/00000000000000000320").exists());
        assert_eq!(q.read(0, 100).unwrap(), batch);
    }

    /// Entries gather in memory until about a page of them is there, then go to the file;
    /// reads see both parts at every split, and a reopen without a flush (a crash) finds
    /// only what was written, for the journal to restore.
    #[test]
    fn the_tail_gathers_a_page_in_memory_and_reads_see_it() {
        let dir = tempfile::tempdir().unwrap();
        // Files of 100 entries: the page written crosses file boundaries.
        let store = ConsumeQueueStore::open(dir.path().to_path_buf(), 20 * 100).unwrap();
        let q = store.get_or_create("T", 0).unwrap();
        let per_page = TAIL_BYTES / ENTRY_BYTES as usize;
        let n = per_page as u64 + 50;
        for i in 0..n {
            q.append(i, entry(i)).unwrap();
        }
        let written: u64 = std::fs::read_dir(dir.path().join("T/0"))
            .unwrap()
            .map(|f| f.unwrap().metadata().unwrap().len() / ENTRY_BYTES)
            .sum();
        assert_eq!(
            written, per_page as u64,
            "one page written, the rest in memory"
        );
        let all: Vec<CqEntry> = (0..n).map(entry).collect();
        for from in [0, 1, per_page as u64 - 1, per_page as u64, n - 1, n, n + 5] {
            for max in [1, 2, 60, 1_000] {
                let want: Vec<CqEntry> =
                    all.iter().skip(from as usize).take(max).copied().collect();
                assert_eq!(
                    q.read(from, max).unwrap(),
                    want,
                    "from {from}, {max} entries"
                );
            }
        }
        assert_eq!(q.count_below(100 * (n - 10)).unwrap(), n - 10);
        assert_eq!(
            q.find(100 * (n as i64 - 3)).unwrap(),
            Some((n - 3, entry(n - 3)))
        );
        drop(store);
        let store = ConsumeQueueStore::open(dir.path().to_path_buf(), 20 * 100).unwrap();
        let q = store.get("T", 0).unwrap();
        assert_eq!(
            q.max_offset(),
            per_page as u64,
            "the tail went with the process"
        );
        // Cut into the written part, then appended past it: reads stay exact.
        q.truncate(per_page as u64 - 4).unwrap();
        for i in per_page as u64 - 4..n {
            q.append(i, entry(i)).unwrap();
        }
        assert_eq!(q.read(0, 1_000).unwrap(), all);
    }
}
