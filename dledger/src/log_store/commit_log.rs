//! The CommitLog itself: entries laid out in segment files, the Raft-index → position index,
//! and the dirty/flushed bookkeeping that durability is built on.
//!
//! Owns: the list of mapped segments, the in-memory index (rebuilt by [`super::recovery`] on
//! open), the write position and the flushed position. Promises:
//! - entries are contiguous in index and each is written once, at a position that depends only
//!   on the entries before it and `segment_bytes` (an entry that does not fit the rest of a
//!   segment starts the next one; the rest is a padding marker and zeros);
//! - bytes below [`CommitLog::flushed_position`] have been `msync`'d;
//! - truncated bytes are zeroed and `msync`'d before `truncate` returns, so a stale entry can
//!   never reappear after a restart;
//! - every entry read back from a segment is checked against its CRC and its expected index
//!   (pair assertion); the newest entries are served from memory instead (the entries
//!   appended, kept as they were given: see [`RecentEntries`]).

use std::collections::VecDeque;
use std::ops::Range;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::RwLock;
use std::sync::RwLockReadGuard;
use std::sync::RwLockWriteGuard;

use openraft::LogId;
use tokio::sync::watch;

use super::codec;
use super::codec::Entry;
use super::codec::EntryHeader;
use super::codec::HEADER_BYTES;
use super::codec::PAD_BYTES;
use super::flushed_record::FlushedRecord;
use super::recovery;
use super::segment::parse_segment_name;
use super::segment::sync_dir;
use super::segment::Segment;
use super::segment::SegmentAllocator;
use super::segment::PAGE;
use crate::error::DLedgerError;

/// The least [`CommitLog::drop_cached`] drops at a time (unless the window is smaller), so
/// its system calls stay rare.
const DROP_STEP: u64 = 8 << 20;

/// How many bytes of the newest entries [`CommitLog::entries`] serves from memory.
///
/// Replication to each follower and apply on every node read an entry moments after it was
/// appended; serving those reads from the appended entries themselves (their payload bytes are
/// shared, not copied) saves a copy, a decode and a CRC pass per read. A follower further
/// behind than this, or a node after a restart, reads from the segments.
const RECENT_ENTRY_BYTES: usize = 16 << 20;

/// The newest appended entries, contiguous by index and always ending at the log's last
/// entry (or empty). Changed only under the state's write lock, in step with it.
#[derive(Default)]
struct RecentEntries {
    /// (entry, its encoded size in the CommitLog).
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl RecentEntries {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Adds `entry` after the newest; forgets everything first unless it follows it directly.
    fn push(&mut self, entry: Entry, size: usize) {
        if self
            .last_index()
            .is_some_and(|last| last + 1 != entry.log_id.index)
        {
            self.clear();
        }
        self.bytes += size;
        self.entries.push_back((entry, size));
        while self.bytes > RECENT_ENTRY_BYTES && self.entries.len() > 1 {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    fn pop_back(&mut self) {
        if let Some((_, size)) = self.entries.pop_back() {
            self.bytes -= size;
        }
    }

    /// Forgets entries `index..`.
    fn truncate(&mut self, index: u64) {
        while self.last_index().is_some_and(|last| last >= index) {
            self.pop_back();
        }
    }

    /// Forgets entries `..=index`.
    fn purge(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.pop_front();
        }
    }

    /// Entries `range` (clamped to the newest), as [`CommitLog::entries`] would read them,
    /// if the first of them is held here.
    fn get(&self, range: &Range<u64>, max_bytes: usize) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        let last = self.last_index()?;
        if range.start < first || range.start > last {
            return None;
        }
        let skip = (range.start - first) as usize;
        let count = range.end.min(last + 1).saturating_sub(range.start) as usize;
        let mut out = Vec::with_capacity(count);
        let mut read_bytes = 0usize;
        for (entry, size) in self.entries.iter().skip(skip).take(count) {
            if !out.is_empty() && read_bytes >= max_bytes {
                break;
            }
            read_bytes += size;
            out.push(entry.clone());
        }
        Some(out)
    }
}

/// (last purged, last present or last purged) log ids.
pub(crate) type LogBounds = (Option<LogId<u64>>, Option<LogId<u64>>);

/// Where one entry lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryLocation {
    pub(crate) header: EntryHeader,
    /// CommitLog position of the header.
    pub(crate) position: u64,
}

impl EntryLocation {
    pub(crate) fn body_position(&self) -> u64 {
        self.position + HEADER_BYTES as u64
    }

    pub(crate) fn end(&self) -> u64 {
        self.position + self.header.total_bytes as u64
    }
}

pub(crate) struct LogState {
    /// Mapped segments, contiguous and ascending by start.
    pub(crate) segments: Vec<Arc<Segment>>,
    /// Raft index of `positions[0]`.
    pub(crate) first_index: u64,
    /// Position of every present entry, by index.
    pub(crate) positions: VecDeque<u64>,
    /// Where the next entry (or padding) is written.
    pub(crate) write_pos: u64,
    /// Lowest position written since the last flush.
    dirty_from: u64,
    /// Counts truncations and replacements: bytes a flush msynced may have been rewritten
    /// since if this changed while it ran.
    rewrites: u64,
    pub(crate) last_purged: Option<LogId<u64>>,
}

impl LogState {
    fn next_index(&self) -> Option<u64> {
        if !self.positions.is_empty() {
            Some(self.first_index + self.positions.len() as u64)
        } else {
            self.last_purged.map(|p| p.index + 1)
        }
    }

    fn last_index(&self) -> Option<u64> {
        (!self.positions.is_empty()).then(|| self.first_index + self.positions.len() as u64 - 1)
    }

    fn segment_index(&self, position: u64, segment_bytes: u64) -> Option<usize> {
        let first = self.segments.first()?.start;
        if position < first {
            return None;
        }
        let i = ((position - first) / segment_bytes) as usize;
        (i < self.segments.len()).then_some(i)
    }
}

/// The CommitLog of one node.
pub(crate) struct CommitLog {
    dir: PathBuf,
    segment_bytes: u64,
    state: RwLock<LogState>,
    allocator: Arc<SegmentAllocator>,
    prealloc_tx: Mutex<mpsc::SyncSender<(u64, u64)>>,
    flushed: watch::Sender<u64>,
    committed_end: AtomicU64,
    applied_end: AtomicU64,
    /// Newest bytes left in the page cache (0: no limit); see [`CommitLog::drop_cached`].
    page_cache_bytes: u64,
    /// Bytes below this position have been dropped from the page cache.
    dropped_below: AtomicU64,
    /// Dropping this wakes and ends the ASYNC_FLUSH thread.
    async_flusher_stop: Mutex<Option<mpsc::Sender<()>>>,
    recent: Mutex<RecentEntries>,
    /// Milliseconds every flush waits first, as on a slow disk (tests and benches only).
    flush_delay_ms: AtomicU64,
    /// The durable prefix, recorded in a file (tests only; see [`CommitLog::record_flushed`]).
    flushed_record: OnceLock<FlushedRecord>,
}

impl CommitLog {
    /// Opens (or creates) the CommitLog in `dir`, recovering its tail. See [`super::recovery`].
    pub(crate) fn open(
        dir: PathBuf,
        segment_bytes: u64,
        warm_segments: bool,
        page_cache_bytes: u64,
        last_purged: Option<LogId<u64>>,
        truncate_pending_position: Option<u64>,
    ) -> Result<Arc<Self>, DLedgerError> {
        let opening = std::time::Instant::now();
        std::fs::create_dir_all(&dir).map_err(|e| DLedgerError::io(&dir, e))?;
        let allocator = SegmentAllocator::new(dir.clone(), segment_bytes, warm_segments);
        let segments = open_segments(&dir, segment_bytes, &allocator)?;
        if let Some(position) = truncate_pending_position {
            recovery::finish_truncate(&segments, position)?;
        }
        let recovered = recovery::recover(&segments, segment_bytes, last_purged)?;
        tracing::info!(
            dir = %dir.display(),
            segments = segments.len(),
            entries = recovered.positions.len(),
            first_index = recovered.first_index,
            write_pos = recovered.write_pos,
            took_ms = opening.elapsed().as_millis() as u64,
            "CommitLog recovered"
        );
        let write_pos = recovered.write_pos;
        // A killed process leaves what it wrote in the page cache, unsynced; the flushed
        // point below starts at the write position, so make that true before claiming it
        // (msync writes only the pages still dirty; the rest costs a page-table walk).
        // Without this, a SYNC_FLUSH node could acknowledge entries after a restart while
        // older ones it recovered were still only in memory.
        let syncing = std::time::Instant::now();
        for segment in &segments {
            let end = write_pos.saturating_sub(segment.start).min(segment_bytes) as usize;
            segment
                .flush(0, end)
                .map_err(|e| DLedgerError::io(&segment.path, e))?;
        }
        tracing::debug!(
            took_ms = syncing.elapsed().as_millis() as u64,
            "recovered CommitLog synced"
        );
        let prealloc_tx = allocator.spawn_preallocator();
        let state = LogState {
            segments,
            first_index: recovered.first_index,
            positions: recovered.positions,
            write_pos,
            dirty_from: write_pos,
            rewrites: 0,
            last_purged,
        };
        let next_segment = write_pos - write_pos % segment_bytes + segment_bytes;
        let _ = prealloc_tx.try_send((allocator.generation(), next_segment));
        let (flushed, _) = watch::channel(write_pos);
        Ok(Arc::new(CommitLog {
            dir,
            segment_bytes,
            state: RwLock::new(state),
            allocator,
            prealloc_tx: Mutex::new(prealloc_tx),
            flushed,
            committed_end: AtomicU64::new(0),
            applied_end: AtomicU64::new(0),
            page_cache_bytes,
            dropped_below: AtomicU64::new(write_pos.saturating_sub(page_cache_bytes)),
            async_flusher_stop: Mutex::new(None),
            recent: Mutex::new(RecentEntries::default()),
            flush_delay_ms: AtomicU64::new(0),
            flushed_record: OnceLock::new(),
        }))
    }

    pub(crate) fn dir(&self) -> &PathBuf {
        &self.dir
    }

    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, LogState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, LogState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_async_flusher_stop(&self, stop: mpsc::Sender<()>) {
        *self
            .async_flusher_stop
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(stop);
    }

    /// (last purged, last present or last purged) log ids.
    pub(crate) fn log_state(&self) -> Result<LogBounds, DLedgerError> {
        let state = self.read_state();
        let last = match state.last_index() {
            Some(index) => Some(self.location_locked(&state, index)?.header.log_id()),
            None => state.last_purged,
        };
        Ok((state.last_purged, last))
    }

    fn corrupt(&self, segment: &Segment, position: u64, reason: String) -> DLedgerError {
        DLedgerError::Corrupt {
            file: segment.path.clone(),
            file_offset: position - segment.start,
            position,
            reason,
        }
    }

    /// Header and position of entry `index`, which must be present.
    fn location_locked(&self, state: &LogState, index: u64) -> Result<EntryLocation, DLedgerError> {
        let position = state.positions[(index - state.first_index) as usize];
        let segment = &state.segments[state
            .segment_index(position, self.segment_bytes)
            .expect("indexed positions lie in mapped segments")];
        let offset = (position - segment.start) as usize;
        let available = (segment.end() - position) as usize;
        // SAFETY: read lock held; indexed entries are complete and only truncate rewrites them.
        let bytes = unsafe { segment.bytes(offset, available.min(HEADER_BYTES)) };
        let header = codec::decode_header(bytes, available)
            .map_err(|r| self.corrupt(segment, position, r))?;
        if header.index != index {
            return Err(self.corrupt(
                segment,
                position,
                format!("index {} where {index} expected", header.index),
            ));
        }
        Ok(EntryLocation { header, position })
    }

    /// Where entry `log_id` is, if it is present with exactly this log id.
    pub(crate) fn location(
        &self,
        log_id: &LogId<u64>,
    ) -> Result<Option<EntryLocation>, DLedgerError> {
        let state = self.read_state();
        match state.last_index() {
            Some(last) if log_id.index >= state.first_index && log_id.index <= last => {
                let location = self.location_locked(&state, log_id.index)?;
                Ok((location.header.log_id() == *log_id).then_some(location))
            }
            _ => Ok(None),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentEntries> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads entries `range` (those present), stopping once `max_bytes` are read (but always
    /// returning at least one entry when one is present). The newest entries come from
    /// memory; older ones from the segments, each CRC-checked.
    pub(crate) fn entries(
        &self,
        range: Range<u64>,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, DLedgerError> {
        if let Some(entries) = self.recent().get(&range, max_bytes) {
            return Ok(entries);
        }
        self.read_entries(range, max_bytes)
    }

    /// [`CommitLog::entries`], always from the segments.
    fn read_entries(
        &self,
        range: Range<u64>,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, DLedgerError> {
        let state = self.read_state();
        let Some(last) = state.last_index() else {
            return Ok(Vec::new());
        };
        let start = range.start.max(state.first_index);
        let end = range.end.min(last + 1);
        let mut out = Vec::new();
        let mut read_bytes = 0usize;
        for index in start..end {
            if !out.is_empty() && read_bytes >= max_bytes {
                break;
            }
            let location = self.location_locked(&state, index)?;
            read_bytes += location.header.total_bytes as usize;
            let segment = &state.segments[state
                .segment_index(location.position, self.segment_bytes)
                .expect("mapped")];
            // SAFETY: read lock held.
            let bytes = unsafe {
                segment.bytes(
                    (location.position - segment.start) as usize,
                    location.header.total_bytes as usize,
                )
            };
            codec::check_crc(&location.header, bytes)
                .map_err(|r| self.corrupt(segment, location.position, r))?;
            out.push(
                codec::decode_entry(&location.header, bytes)
                    .map_err(|r| self.corrupt(segment, location.position, r))?,
            );
        }
        Ok(out)
    }

    /// Writes `entries` after the last one; returns the write position after them.
    ///
    /// The bytes are in the page cache when this returns, durable only after a flush. The
    /// entries are kept in memory for the reads that follow (see [`RECENT_ENTRY_BYTES`]).
    pub(crate) fn append(&self, entries: Vec<Entry>) -> Result<u64, DLedgerError> {
        let encoded = entries
            .iter()
            .map(codec::encode)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| DLedgerError::Corrupt {
                file: self.dir.clone(),
                file_offset: 0,
                position: 0,
                reason: format!("refusing to write: {reason}"),
            })?;
        let sizes: Vec<usize> = encoded.iter().map(|e| e.len()).collect();
        let mut state = self.write_state();
        let before = (state.positions.len(), state.write_pos, state.first_index);
        let indexes = entries.iter().map(|e| e.log_id.index);
        let result = self.append_encoded(&mut state, encoded.iter().zip(indexes));
        drop(encoded);
        let mut recent = self.recent();
        match (&result, state.last_index()) {
            (Ok(_), Some(last)) => {
                for (entry, size) in entries.into_iter().zip(sizes) {
                    // Entries at or below the purge point were skipped, not stored.
                    if entry.log_id.index >= state.first_index && entry.log_id.index <= last {
                        recent.push(entry, size);
                    }
                }
            }
            (Ok(_), None) => recent.clear(),
            (Err(_), _) => {
                // Nothing of a failed append is indexed, written or not.
                state.positions.truncate(before.0);
                state.write_pos = before.1;
                state.first_index = before.2;
                recent.clear();
            }
        }
        result
    }

    fn append_encoded<'a>(
        &self,
        state: &mut LogState,
        entries: impl Iterator<Item = (&'a codec::EncodedEntry<'a>, u64)>,
    ) -> Result<u64, DLedgerError> {
        // Entries that land back to back in one segment go out in one `pwritev`.
        let mut run: Option<Run<'a>> = None;
        for (entry, index) in entries {
            if state.positions.is_empty() && state.last_purged.is_some_and(|p| index <= p.index) {
                // Already covered by the purge point (openraft's storage suite does this after
                // "cleaning the hole" below an applied state machine): nothing to store.
                tracing::debug!(
                    log_index = index,
                    "skipping append of an entry at or below the purge point"
                );
                continue;
            }
            if let Some(expected) = state.next_index() {
                if index != expected {
                    return Err(DLedgerError::Raft {
                        node_id: 0,
                        reason: format!(
                            "append of index {index} where {expected} is next: would leave a hole"
                        ),
                    });
                }
            }
            let len = entry.len() as u64;
            if len > self.segment_bytes - PAD_BYTES as u64 {
                return Err(DLedgerError::InvalidConfig {
                    field: "segment_bytes",
                    reason: format!("entry {index} of {len} bytes does not fit a segment"),
                });
            }
            let mut pos = state.write_pos;
            state.dirty_from = state.dirty_from.min(pos);
            let segment_start = pos - pos % self.segment_bytes;
            let remaining = segment_start + self.segment_bytes - pos;
            if len > remaining {
                if let Some(pending) = run.take() {
                    pending.write()?;
                }
                if remaining >= PAD_BYTES as u64 {
                    let segment = self.segment_for_write(state, pos)?;
                    let pad = codec::encode_pad(remaining as u32);
                    // SAFETY: write lock held; [pos, pos + 8) is beyond every indexed entry.
                    unsafe { segment.write((pos - segment.start) as usize, &pad) }
                        .map_err(|e| DLedgerError::io(&segment.path, e))?;
                }
                pos = segment_start + self.segment_bytes;
            }
            if run.as_ref().is_none_or(|r| r.end != pos) {
                if let Some(pending) = run.take() {
                    pending.write()?;
                }
                let segment = self.segment_for_write(state, pos)?;
                run = Some(Run {
                    offset: (pos - segment.start) as usize,
                    segment,
                    end: pos,
                    parts: Vec::new(),
                });
            }
            let pending = run.as_mut().expect("a run was started above");
            pending.parts.push(&entry.header);
            if !entry.body.is_empty() {
                pending.parts.push(&entry.body);
            }
            pending.end = pos + len;
            if state.positions.is_empty() {
                state.first_index = index;
            }
            state.positions.push_back(pos);
            state.write_pos = pos + len;
        }
        if let Some(pending) = run {
            pending.write()?;
        }
        Ok(state.write_pos)
    }

    fn segment_for_write(
        &self,
        state: &mut LogState,
        position: u64,
    ) -> Result<Arc<Segment>, DLedgerError> {
        if let Some(i) = state.segment_index(position, self.segment_bytes) {
            return Ok(Arc::clone(&state.segments[i]));
        }
        let start = position - position % self.segment_bytes;
        let expected = state.segments.last().map(|s| s.end()).unwrap_or(start);
        assert_eq!(start, expected, "segments are added one after another");
        let segment = self.allocator.segment(start)?;
        state.segments.push(Arc::clone(&segment));
        self.preallocate(start + self.segment_bytes);
        tracing::info!(file = %segment.path.display(), "CommitLog rolled to a new segment");
        Ok(segment)
    }

    /// Asks the background thread to create the segment starting at `start`.
    fn preallocate(&self, start: u64) {
        let _ = self
            .prealloc_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_send((self.allocator.generation(), start));
    }

    /// The stored CommitLog from its first segment to the end of entry `index` (applied,
    /// so committed), for a snapshot. `None` or an index with nothing after it in the log
    /// ends the range where the log ends.
    pub(crate) fn range_through(&self, index: Option<u64>) -> Result<LogRange, DLedgerError> {
        let state = self.read_state();
        let end = match (index, state.last_index()) {
            (Some(index), Some(last)) if index >= state.first_index && index <= last => {
                self.location_locked(&state, index)?.end()
            }
            (Some(index), Some(_)) if index + 1 == state.first_index => state.positions[0],
            (Some(index), Some(last)) if index > last => state.write_pos,
            (None, Some(_)) => state.positions[0],
            (Some(index), Some(_)) => {
                return Err(DLedgerError::Raft {
                    node_id: 0,
                    reason: format!(
                        "entry {index} is neither stored nor next to the first stored entry {}",
                        state.first_index
                    ),
                })
            }
            (_, None) => state.write_pos,
        };
        let start = state.segments.first().map(|s| s.start).unwrap_or(end);
        Ok(LogRange {
            start,
            end,
            segments: segment_ranges(&state.segments, start, end)
                .into_iter()
                .map(|(segment, _, _)| segment)
                .collect(),
        })
    }

    /// Replaces the whole CommitLog with the bytes `[start, end)` read from `reader` (a
    /// snapshot's), everything up to `last_purged` counting as purged: the next append
    /// lands at `end`. Nothing of the old log is kept.
    pub(crate) fn replace(
        &self,
        start: u64,
        end: u64,
        last_purged: Option<LogId<u64>>,
        reader: &mut dyn std::io::Read,
    ) -> Result<(), DLedgerError> {
        let creating = self.allocator.new_generation();
        let mut state = self.write_state();
        self.recent().clear();
        state.segments.clear();
        remove_segment_files(&self.dir)?;
        write_segments(&self.allocator, self.segment_bytes, start, end, reader)?;
        let segments = open_segments(&self.dir, self.segment_bytes, &self.allocator)?;
        let recovered = recovery::recover(&segments, self.segment_bytes, last_purged)?;
        if recovered.write_pos != end {
            let first = &segments[0];
            return Err(DLedgerError::Corrupt {
                file: first.path.clone(),
                file_offset: 0,
                position: start,
                reason: format!(
                    "a snapshot's CommitLog ends at {end} but its entries end at {}",
                    recovered.write_pos
                ),
            });
        }
        *state = LogState {
            segments,
            first_index: recovered.first_index,
            positions: recovered.positions,
            write_pos: end,
            dirty_from: end,
            rewrites: state.rewrites + 1,
            last_purged,
        };
        self.flushed.send_modify(|f| *f = end);
        if let Some(record) = self.flushed_record.get() {
            record.replaced(end);
        }
        self.committed_end.store(end, Ordering::Release);
        self.applied_end.store(end, Ordering::Release);
        self.dropped_below.store(
            start.max(end.saturating_sub(self.page_cache_bytes)) & !(PAGE as u64 - 1),
            Ordering::Release,
        );
        drop(state);
        drop(creating);
        self.preallocate(end - end % self.segment_bytes + self.segment_bytes);
        tracing::info!(dir = %self.dir.display(), start, end, ?last_purged, "CommitLog replaced by a snapshot's");
        Ok(())
    }

    /// Position of entry `index` if present.
    pub(crate) fn position_of(&self, index: u64) -> Option<u64> {
        let state = self.read_state();
        let last = state.last_index()?;
        (index >= state.first_index && index <= last)
            .then(|| state.positions[(index - state.first_index) as usize])
    }

    /// Removes entries `index..`: zeroes their bytes and msyncs the zeroes before returning.
    pub(crate) fn truncate(&self, index: u64) -> Result<(), DLedgerError> {
        let mut state = self.write_state();
        let Some(last) = state.last_index() else {
            return Ok(());
        };
        if index > last {
            return Ok(());
        }
        self.recent().truncate(index);
        let keep = index.saturating_sub(state.first_index) as usize;
        let from = state.positions[keep];
        let to = state.write_pos;
        zero_and_flush(&state.segments, from, to)?;
        state.positions.truncate(keep);
        state.write_pos = from;
        state.dirty_from = state.dirty_from.min(from);
        state.rewrites += 1;
        self.flushed.send_modify(|f| *f = (*f).min(from));
        if let Some(record) = self.flushed_record.get() {
            record.truncated(from);
        }
        tracing::info!(dir = %self.dir.display(), log_index = index, position = from, bytes = to - from, "truncated CommitLog");
        Ok(())
    }

    /// Forgets entries `..=log_id.index` and deletes segment files wholly before the first
    /// entry that remains.
    pub(crate) fn purge(&self, log_id: LogId<u64>) -> Result<(), DLedgerError> {
        let mut state = self.write_state();
        if state.last_purged.is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        state.last_purged = Some(log_id);
        self.recent().purge(log_id.index);
        while !state.positions.is_empty() && state.first_index <= log_id.index {
            state.positions.pop_front();
            state.first_index += 1;
        }
        if state.positions.is_empty() {
            state.first_index = log_id.index + 1;
        }
        self.remove_segments_below(&mut state, u64::MAX)
    }

    /// Deletes the segment files wholly below `position` that hold no stored entry (a
    /// snapshot install keeps the sender's older segments, whose entries all count as
    /// purged, until a retention point passes them).
    pub(crate) fn delete_segments_below(&self, position: u64) -> Result<(), DLedgerError> {
        let mut state = self.write_state();
        self.remove_segments_below(&mut state, position)
    }

    /// Deletes the segment files that end at or below both `position` and the first stored
    /// entry (the write position if none), keeping at least one.
    fn remove_segments_below(
        &self,
        state: &mut LogState,
        position: u64,
    ) -> Result<(), DLedgerError> {
        let keep_from = state
            .positions
            .front()
            .copied()
            .unwrap_or(state.write_pos)
            .min(position);
        let mut removed = false;
        while state.segments.len() > 1 && state.segments[0].end() <= keep_from {
            let segment = state.segments.remove(0);
            std::fs::remove_file(&segment.path).map_err(|e| DLedgerError::io(&segment.path, e))?;
            tracing::info!(file = %segment.path.display(), "purged segment");
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// msyncs everything written since the last flush; returns the flushed position. A
    /// failed msync leaves its range dirty, so the next flush tries it again (the kernel may
    /// have dropped the pages' error state, but a bounded retry is all that is owed: a
    /// SYNC_FLUSH caller is told of the failure and the node stops).
    pub(crate) fn flush_dirty(&self) -> std::io::Result<u64> {
        let delay = self.flush_delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        let (ranges, low, high, rewrites) = {
            let mut state = self.write_state();
            let high = state.write_pos;
            let low = state.dirty_from.min(high);
            state.dirty_from = high;
            if let Some(record) = self.flushed_record.get() {
                record.flush_started();
            }
            let ranges = segment_ranges(&state.segments, low, high);
            (ranges, low, high, state.rewrites)
        };
        for (segment, offset, len) in ranges {
            if let Err(e) = segment.flush(offset, len) {
                let mut state = self.write_state();
                state.dirty_from = state.dirty_from.min(low);
                return Err(e);
            }
        }
        self.drop_cached(high);
        // A truncation while the msync ran may have put unflushed entries below `high`; the
        // flushed point then waits for the next flush (truncate lowered it already).
        let state = self.read_state();
        if let Some(record) = self.flushed_record.get() {
            record.flushed(low, high);
        }
        if state.rewrites == rewrites {
            self.flushed.send_if_modified(|f| {
                let changed = *f < high;
                *f = (*f).max(high);
                changed
            });
        }
        drop(state);
        Ok(high)
    }

    /// Drops the flushed bytes older than the newest `page_cache_bytes` from the page cache, a
    /// step of at least [`DROP_STEP`] (or the window, if smaller) at a time.
    ///
    /// Why: new log bytes need new page-cache pages. On a VM that hands free memory back to its
    /// host (this one does), a page never used or long free costs a host fault on first touch:
    /// writing 256 MiB into new pages measured 0.54-0.66 s of CPU against 0.06 s into pages
    /// just freed. Dropping old pages as new ones are written keeps the log's pages recycling;
    /// a consumer further behind than the window reads from the disk instead. The bytes
    /// dropped are all flushed (below `flushed`), so the kernel can drop them right away, and
    /// a read of them finds the same bytes on the disk.
    fn drop_cached(&self, flushed: u64) {
        if self.page_cache_bytes == 0 {
            return;
        }
        let to = flushed.saturating_sub(self.page_cache_bytes) & !(PAGE as u64 - 1);
        let from = self.dropped_below.load(Ordering::Acquire);
        if to < from + DROP_STEP.min(self.page_cache_bytes) {
            return;
        }
        let ranges = segment_ranges(&self.read_state().segments, from, to);
        for (segment, offset, len) in ranges {
            if let Err(e) = segment.drop_cached(offset, len) {
                tracing::debug!(error = %e, file = %segment.path.display(), "dropping cached CommitLog pages failed");
            }
        }
        self.dropped_below.fetch_max(to, Ordering::AcqRel);
    }

    /// From now on, records in `.test-flushed` the position below which every byte has been
    /// msync'd (tests only: `test_record_flushed`; see [`super::flushed_record`]). Called
    /// once, after open and before anything is appended.
    pub(crate) fn record_flushed(&self) -> Result<(), DLedgerError> {
        let write_pos = self.read_state().write_pos;
        let record = FlushedRecord::start(self.dir.clone(), write_pos)
            .map_err(|e| DLedgerError::io(&self.dir, e))?;
        let _ = self.flushed_record.set(record);
        Ok(())
    }

    /// Makes every flush wait `ms` first, as on a slow disk (tests and benches only).
    pub(crate) fn set_flush_delay_ms(&self, ms: u64) {
        self.flush_delay_ms.store(ms, Ordering::Relaxed);
    }

    /// The last entry wholly below the flushed point (the last purged one if none is):
    /// under SYNC_FLUSH the newest entry an OS crash cannot take away.
    pub(crate) fn flushed_last_index(&self) -> Option<u64> {
        self.last_index_below(*self.flushed.borrow())
    }

    /// Changes of the flushed point.
    pub(crate) fn subscribe_flushed(&self) -> watch::Receiver<u64> {
        self.flushed.subscribe()
    }

    /// Index of the last present entry (or the last purged one).
    pub(crate) fn last_index(&self) -> Option<u64> {
        let state = self.read_state();
        state.last_index().or(state.last_purged.map(|p| p.index))
    }

    /// Waits until bytes below `position` are flushed.
    pub(crate) async fn wait_flushed(&self, position: u64) {
        let mut rx = self.flushed.subscribe();
        let _ = rx.wait_for(|f| *f >= position).await;
    }

    pub(crate) fn set_committed_end(&self, position: u64) {
        self.committed_end.fetch_max(position, Ordering::AcqRel);
    }

    pub(crate) fn committed_end(&self) -> u64 {
        self.committed_end.load(Ordering::Acquire)
    }

    pub(crate) fn set_applied_end(&self, position: u64) {
        self.applied_end.fetch_max(position, Ordering::AcqRel);
        self.set_committed_end(position);
    }

    pub(crate) fn applied_end(&self) -> u64 {
        self.applied_end.load(Ordering::Acquire)
    }

    /// End of everything written (committed or not).
    pub(crate) fn written_position(&self) -> u64 {
        self.read_state().write_pos
    }

    /// Location and file of every present entry, in index order.
    pub(crate) fn entry_infos(&self) -> Result<Vec<(EntryLocation, PathBuf, u64)>, DLedgerError> {
        let state = self.read_state();
        let Some(last) = state.last_index() else {
            return Ok(Vec::new());
        };
        (state.first_index..=last)
            .map(|index| {
                let location = self.location_locked(&state, index)?;
                let segment = &state.segments[state
                    .segment_index(location.position, self.segment_bytes)
                    .expect("mapped")];
                Ok((
                    location,
                    segment.path.clone(),
                    location.position - segment.start,
                ))
            })
            .collect()
    }

    /// The last entry that lies wholly below `position` (entries never cross a segment
    /// boundary, so every entry that starts below a segment start ends at or before it).
    pub(crate) fn last_index_below(&self, position: u64) -> Option<u64> {
        let state = self.read_state();
        let below = state.positions.partition_point(|p| *p < position) as u64;
        match below {
            0 => state.last_purged.map(|p| p.index),
            n => Some(state.first_index + n - 1),
        }
    }

    /// Every stored segment file: (start position, end position, path), ascending.
    pub(crate) fn segment_files(&self) -> Vec<(u64, u64, PathBuf)> {
        self.read_state()
            .segments
            .iter()
            .map(|s| (s.start, s.end(), s.path.clone()))
            .collect()
    }

    /// First position still stored.
    pub(crate) fn start_position(&self) -> u64 {
        self.read_state()
            .segments
            .first()
            .map(|s| s.start)
            .unwrap_or(0)
    }

    /// Copies up to `max_bytes` from `position`, never past `end` nor past its segment.
    pub(crate) fn read(
        &self,
        position: u64,
        max_bytes: usize,
        end: u64,
    ) -> Result<Vec<u8>, DLedgerError> {
        let state = self.read_state();
        let start = state.segments.first().map(|s| s.start).unwrap_or(0);
        let out_of_range = || DLedgerError::PositionOutOfRange {
            position,
            start,
            end,
        };
        if position < start || position >= end {
            return Err(out_of_range());
        }
        let i = state
            .segment_index(position, self.segment_bytes)
            .ok_or_else(out_of_range)?;
        let segment = &state.segments[i];
        let len = (max_bytes as u64)
            .min(end - position)
            .min(segment.end() - position) as usize;
        // SAFETY: read lock held; bytes below `end` are committed and never rewritten.
        Ok(unsafe { segment.bytes((position - segment.start) as usize, len) }.to_vec())
    }

    /// CRC32 of the CommitLog bytes `[from, to)`.
    pub(crate) fn digest(&self, from: u64, to: u64) -> Result<u32, DLedgerError> {
        let state = self.read_state();
        let start = state.segments.first().map(|s| s.start).unwrap_or(0);
        let stored_end = state.segments.last().map(|s| s.end()).unwrap_or(0);
        if from < start || to > stored_end || from > to {
            return Err(DLedgerError::PositionOutOfRange {
                position: from,
                start,
                end: stored_end,
            });
        }
        let mut hasher = crc32fast::Hasher::new();
        for (segment, offset, len) in segment_ranges(&state.segments, from, to) {
            // SAFETY: read lock held.
            hasher.update(unsafe { segment.bytes(offset, len) });
        }
        Ok(hasher.finalize())
    }
}

impl Drop for CommitLog {
    fn drop(&mut self) {
        if let Err(e) = self.flush_dirty() {
            tracing::error!(dir = %self.dir.display(), error = %e, "final CommitLog flush failed");
        }
    }
}

/// Maps every segment file in `dir` (creating the first if there is none), checking that
/// they follow one another; an unfinished pre-allocation (`.tmp`) is removed.
fn open_segments(
    dir: &Path,
    segment_bytes: u64,
    allocator: &SegmentAllocator,
) -> Result<Vec<Arc<Segment>>, DLedgerError> {
    let mut starts = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| DLedgerError::io(dir, e))? {
        let item = item.map_err(|e| DLedgerError::io(dir, e))?;
        let name = item.file_name().to_string_lossy().to_string();
        if name.ends_with(".tmp") {
            // An unfinished pre-allocation: never used, safe to drop.
            let _ = std::fs::remove_file(item.path());
        } else if let Some(start) = parse_segment_name(&name) {
            starts.push(start);
        }
    }
    starts.sort_unstable();
    if starts.is_empty() {
        allocator.ensure(0)?;
        starts.push(0);
    }
    let mut segments = Vec::with_capacity(starts.len());
    for (i, start) in starts.iter().copied().enumerate() {
        let path = dir.join(super::segment::segment_name(start));
        if start % segment_bytes != 0 || (i > 0 && start != starts[i - 1] + segment_bytes) {
            return Err(DLedgerError::Corrupt {
                file: path,
                file_offset: 0,
                position: start,
                reason: format!(
                    "segment start is not the previous start + segment_bytes {segment_bytes}: \
                     a segment is missing or segment_bytes changed"
                ),
            });
        }
        segments.push(Arc::new(Segment::open(&path, start, segment_bytes)?));
    }
    Ok(segments)
}

/// Deletes every segment file (and unfinished pre-allocation) in `dir`.
pub(crate) fn remove_segment_files(dir: &Path) -> Result<(), DLedgerError> {
    for item in std::fs::read_dir(dir).map_err(|e| DLedgerError::io(dir, e))? {
        let item = item.map_err(|e| DLedgerError::io(dir, e))?;
        let name = item.file_name().to_string_lossy().to_string();
        if name.ends_with(".tmp") || parse_segment_name(&name).is_some() {
            let path = item.path();
            std::fs::remove_file(&path).map_err(|e| DLedgerError::io(&path, e))?;
        }
    }
    Ok(())
}

/// Writes the CommitLog bytes `[start, end)`, read from `reader`, as segment files from
/// `start` (a segment start) on, each fsync'd; the segment holding `end` is created even if
/// nothing is written to it. The caller holds the allocator's creation lock
/// ([`SegmentAllocator::new_generation`]) and has emptied the directory.
pub(crate) fn write_segments(
    allocator: &SegmentAllocator,
    segment_bytes: u64,
    start: u64,
    end: u64,
    reader: &mut dyn std::io::Read,
) -> Result<(), DLedgerError> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut segment_start = start;
    loop {
        let path = allocator.ensure_locked(segment_start)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| DLedgerError::io(&path, e))?;
        let mut position = segment_start;
        let to = end.min(segment_start + segment_bytes);
        while position < to {
            let n = ((to - position) as usize).min(buf.len());
            reader
                .read_exact(&mut buf[..n])
                .map_err(|e| DLedgerError::io(&path, e))?;
            file.write_all_at(&buf[..n], position - segment_start)
                .map_err(|e| DLedgerError::io(&path, e))?;
            position += n as u64;
        }
        file.sync_data().map_err(|e| DLedgerError::io(&path, e))?;
        if segment_start + segment_bytes >= end {
            break;
        }
        segment_start += segment_bytes;
    }
    sync_dir(allocator.dir())
}

/// CommitLog bytes `[start, end)` as they were when taken: it holds the segments' maps, so
/// the bytes stay readable after a purge deletes their files, and bytes below `end` are
/// committed and never rewritten.
pub(crate) struct LogRange {
    pub(crate) start: u64,
    pub(crate) end: u64,
    segments: Vec<Arc<Segment>>,
}

impl LogRange {
    /// Copies bytes from `position` into `buf`, up to its end, the range's end or the
    /// segment's end; returns how many.
    pub(crate) fn read_at(&self, position: u64, buf: &mut [u8]) -> usize {
        if position < self.start || position >= self.end {
            return 0;
        }
        let Some(segment) = self
            .segments
            .iter()
            .find(|s| s.start <= position && position < s.end())
        else {
            return 0;
        };
        let n = (buf.len() as u64)
            .min(self.end - position)
            .min(segment.end() - position) as usize;
        // SAFETY: committed bytes below `end` are never written again.
        let bytes = unsafe { segment.bytes((position - segment.start) as usize, n) };
        buf[..n].copy_from_slice(bytes);
        n
    }
}

/// The pieces of `[from, to)` in each segment: (segment, offset in segment, length).
fn segment_ranges(
    segments: &[Arc<Segment>],
    from: u64,
    to: u64,
) -> Vec<(Arc<Segment>, usize, usize)> {
    segments
        .iter()
        .filter(|s| s.start < to && s.end() > from)
        .map(|s| {
            let lo = from.max(s.start);
            let hi = to.min(s.end());
            (Arc::clone(s), (lo - s.start) as usize, (hi - lo) as usize)
        })
        .collect()
}

/// Entries that lie back to back in one segment, to be written with one `pwritev`.
///
/// Built under the write lock, for a range beyond every indexed entry.
struct Run<'a> {
    segment: Arc<Segment>,
    /// Where the run starts in `segment`.
    offset: usize,
    /// The CommitLog position just past the run.
    end: u64,
    /// Each entry's header and body, in order.
    parts: Vec<&'a [u8]>,
}

impl Run<'_> {
    fn write(self) -> Result<(), DLedgerError> {
        // SAFETY: the run was built under the write lock, beyond every indexed entry, so no
        // reader can reach these bytes yet.
        unsafe { self.segment.write_vectored(self.offset, &self.parts) }
            .map_err(|e| DLedgerError::io(&self.segment.path, e))
    }
}

/// Zeroes `[from, to)` and msyncs it.
pub(crate) fn zero_and_flush(
    segments: &[Arc<Segment>],
    from: u64,
    to: u64,
) -> Result<(), DLedgerError> {
    for (segment, offset, len) in segment_ranges(segments, from, to) {
        // SAFETY: callers hold the write lock or run before the log is shared.
        unsafe { segment.zero(offset, len) }.map_err(|e| DLedgerError::io(&segment.path, e))?;
        segment
            .flush(offset, len)
            .map_err(|e| DLedgerError::io(&segment.path, e))?;
    }
    Ok(())
}
