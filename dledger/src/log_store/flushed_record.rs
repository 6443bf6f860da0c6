//! Test-only record of the CommitLog's durable prefix (`test_record_flushed`, the broker's
//! `testRecordFlushedPosition`), so a test can simulate an OS crash exactly: zero every byte
//! at or past the recorded position (`chaos::disks::drop_unsynced_commit_log`).
//!
//! Owns the file `<store>/commitlog/.test-flushed`: one decimal CommitLog position and a
//! newline, replaced (temp file, then rename) whenever it changes. Promises: every byte below
//! the recorded position has been covered by a successful msync since it was last written.
//! The record is updated before the msync that advanced it is reported to anyone (an
//! append-entries answer, the flushed point), so whatever a node acknowledged under
//! SYNC_FLUSH lies below it. It may lag (a kill between an msync and the file's
//! replacement), never lead: a simulated crash may drop more than a real one, never less.
//!
//! Only [`super::commit_log::CommitLog`] calls it, always under its state lock (write or
//! read), so the record changes in the order the CommitLog does; a node without the knob
//! never creates one and pays one `OnceLock` load per flush.

use std::path::PathBuf;
use std::sync::Mutex;

/// Name of the record file in the CommitLog directory.
pub(crate) const FILE_NAME: &str = ".test-flushed";

pub(crate) struct FlushedRecord {
    path: PathBuf,
    state: Mutex<RecordState>,
}

struct RecordState {
    /// Every byte below this has been msync'd since it was last written.
    durable: u64,
    /// Lowest position truncated (or, 0, replaced) since the running flush took its range:
    /// that flush's msync covered the bytes below it only (`u64::MAX`: nothing truncated).
    rewritten_from: u64,
}

impl FlushedRecord {
    /// Starts the record of the CommitLog in `dir`, whose entries end at `write_pos`.
    ///
    /// The bytes a previous run of this node left are durable only up to its record: a
    /// SIGKILLed process msync'd nothing after that, and this run msyncs only what it writes
    /// itself (its first flush starts at `write_pos`). Without an earlier record nothing is
    /// known to be durable (0), which is exact for a new store.
    pub(crate) fn start(dir: PathBuf, write_pos: u64) -> std::io::Result<Self> {
        let path = dir.join(FILE_NAME);
        let earlier = match std::fs::read_to_string(&path) {
            Ok(text) => Some(text.trim().parse::<u64>().map_err(|e| {
                std::io::Error::other(format!("{}: {text:?}: {e}", path.display()))
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if earlier.is_none() && write_pos > 0 {
            tracing::warn!(
                file = %path.display(),
                write_pos,
                "no earlier flushed-position record: the recovered CommitLog counts as not durable"
            );
        }
        let record = FlushedRecord {
            path,
            state: Mutex::new(RecordState {
                durable: earlier.unwrap_or(0).min(write_pos),
                rewritten_from: u64::MAX,
            }),
        };
        let durable = record.lock().durable;
        record.write(durable)?;
        Ok(record)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecordState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A flush took its range; called with the range taken.
    pub(crate) fn flush_started(&self) {
        self.lock().rewritten_from = u64::MAX;
    }

    /// The msync of `[low, high)` succeeded. It extends the durable prefix only if it starts
    /// within it, and only up to the first byte rewritten while it ran.
    pub(crate) fn flushed(&self, low: u64, high: u64) {
        let mut state = self.lock();
        if low > state.durable {
            // Bytes between were never msync'd (left by an earlier run): they stay a gap.
            return;
        }
        let durable = state.durable.max(high.min(state.rewritten_from));
        if durable != state.durable {
            state.durable = durable;
            self.write_logged(durable);
        }
    }

    /// Bytes from `from` on were removed (zeroed and msync'd): whatever is written there
    /// next is not durable until msync'd again.
    pub(crate) fn truncated(&self, from: u64) {
        let mut state = self.lock();
        state.rewritten_from = state.rewritten_from.min(from);
        if from < state.durable {
            state.durable = from;
            self.write_logged(from);
        }
    }

    /// The whole CommitLog was replaced by bytes ending at `end`, all fsync'd.
    pub(crate) fn replaced(&self, end: u64) {
        let mut state = self.lock();
        state.rewritten_from = 0;
        state.durable = end;
        self.write_logged(end);
    }

    fn write_logged(&self, durable: u64) {
        if let Err(e) = self.write(durable) {
            tracing::error!(file = %self.path.display(), error = %e, "writing the flushed-position record failed");
        }
    }

    fn write(&self, durable: u64) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, format!("{durable}\n"))?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dir: &std::path::Path) -> u64 {
        std::fs::read_to_string(dir.join(FILE_NAME))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    // Proves the record follows what msync covered: contiguous flushes advance it, a
    // truncation lowers it, a flush that a truncation overlapped counts only below the
    // truncation, and a gap left by an earlier run is never covered over.
    #[test]
    fn record_follows_what_msync_covered() {
        let dir = tempfile::tempdir().unwrap();
        let record = FlushedRecord::start(dir.path().to_path_buf(), 0).unwrap();
        assert_eq!(read(dir.path()), 0);
        record.flush_started();
        record.flushed(0, 100);
        assert_eq!(read(dir.path()), 100);
        record.flush_started();
        record.truncated(150);
        record.flushed(100, 200);
        assert_eq!(
            read(dir.path()),
            150,
            "a flush counts up to the truncation it overlapped"
        );
        record.truncated(120);
        assert_eq!(read(dir.path()), 120);
        record.flush_started();
        record.flushed(120, 180);
        assert_eq!(read(dir.path()), 180);
        drop(record);

        // A restart whose log ends past the record: the gap stays until it is msync'd.
        let record = FlushedRecord::start(dir.path().to_path_buf(), 300).unwrap();
        assert_eq!(read(dir.path()), 180);
        record.flush_started();
        record.flushed(300, 400);
        assert_eq!(read(dir.path()), 180);
        record.replaced(500);
        assert_eq!(read(dir.path()), 500);
        // A restart whose log was cut below the record.
        drop(record);
        FlushedRecord::start(dir.path().to_path_buf(), 450).unwrap();
        assert_eq!(read(dir.path()), 450);
    }

    // Proves a CommitLog with the record on keeps it at its flushed point: unchanged by
    // writes, advanced by each msync, lowered by a truncation.
    #[test]
    fn commit_log_records_each_msync_and_truncation() {
        use openraft::CommittedLeaderId;
        use openraft::EntryPayload;
        use openraft::LogId;

        use crate::log_store::CommitLog;
        use crate::types::TypeConfig;

        let store = tempfile::tempdir().unwrap();
        let dir = store.path().join("commitlog");
        let log = CommitLog::open(dir.clone(), 1 << 20, false, 0, None, None).unwrap();
        log.record_flushed().unwrap();
        let entries = |from: u64, to: u64| -> Vec<openraft::Entry<TypeConfig>> {
            (from..to)
                .map(|index| openraft::Entry {
                    log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
                    payload: EntryPayload::Blank,
                })
                .collect()
        };
        log.append(entries(1, 4)).unwrap();
        assert_eq!(read(&dir), 0, "written is not msync'd");
        let flushed = log.flush_dirty().unwrap();
        assert_eq!(read(&dir), flushed);
        assert_eq!(flushed, log.written_position());
        let from = log.position_of(2).unwrap();
        log.truncate(2).unwrap();
        assert_eq!(read(&dir), from);
        log.append(entries(2, 6)).unwrap();
        assert_eq!(read(&dir), from);
        assert_eq!(log.flush_dirty().unwrap(), log.written_position());
        assert_eq!(read(&dir), log.written_position());
    }
}
