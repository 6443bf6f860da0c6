//! Crash recovery of the CommitLog: rebuild the index, cut a torn tail, refuse mid-log damage.
//!
//! Definitions used here and in the crate docs:
//!
//! - The **valid prefix** is the longest run of entries, starting at the first segment, in
//!   which every entry has a good magic, a length that fits its segment, a good CRC (checked
//!   for the last [`VERIFY_CRC_SEGMENTS`] segments; earlier segments were verified when they were
//!   the tail and are checked again on every read) and the index following its predecessor.
//!   Between entries the only other thing allowed is end-of-segment filler: a padding marker
//!   or zeros up to the end of the segment, followed by the next segment.
//! - The **stop point** is the first position after the valid prefix.
//! - The **tail** is everything from the stop point to the end of the last segment file.
//!
//! The tail is a *torn tail* when it contains no complete, CRC-valid entry: that is what a crash
//! in the middle of writing (or before flushing) leaves behind. It is cut off: its non-zero
//! bytes are zeroed and msync'd, and a warning names the file, offset and byte count.
//! If the tail contains a CRC-valid entry, the damage at the stop point is **mid-log
//! corruption** (a later entry survived, so the bad bytes are not an unfinished write): the
//! node refuses to start with [`DLedgerError::Corrupt`] naming file and offset. This is sound
//! because truncation zeroes what it removes before returning, so no stale entry is ever left
//! behind a valid prefix.

use std::collections::VecDeque;
use std::sync::Arc;

use openraft::LogId;

use super::codec;
use super::codec::ENTRY_MAGIC;
use super::codec::PAD_BYTES;
use super::commit_log::zero_and_flush;
use super::segment::Segment;
use crate::error::DLedgerError;

/// CRCs are verified at start for this many trailing segments.
pub(crate) const VERIFY_CRC_SEGMENTS: usize = 2;

pub(crate) struct Recovered {
    pub(crate) first_index: u64,
    pub(crate) positions: VecDeque<u64>,
    pub(crate) write_pos: u64,
}

/// Finishes a truncation that a crash interrupted: zeroes everything from `position` on.
pub(crate) fn finish_truncate(
    segments: &[Arc<Segment>],
    position: u64,
) -> Result<(), DLedgerError> {
    let end = segments.last().map(|s| s.end()).unwrap_or(position);
    tracing::warn!(position, "finishing an interrupted CommitLog truncation");
    zero_nonzero(segments, position, end)
}

/// Zeroes (and msyncs) only the 4 KiB chunks of `[from, to)` that hold a non-zero byte.
fn zero_nonzero(segments: &[Arc<Segment>], from: u64, to: u64) -> Result<(), DLedgerError> {
    const CHUNK: u64 = 4096;
    let mut position = from;
    while position < to {
        let segment = segments
            .iter()
            .find(|s| s.start <= position && position < s.end())
            .expect("in range");
        let chunk_end = (position - position % CHUNK + CHUNK)
            .min(to)
            .min(segment.end());
        // SAFETY: recovery runs before the CommitLog is shared.
        let bytes = unsafe {
            segment.bytes(
                (position - segment.start) as usize,
                (chunk_end - position) as usize,
            )
        };
        if bytes.iter().any(|b| *b != 0) {
            zero_and_flush(std::slice::from_ref(segment), position, chunk_end)?;
        }
        position = chunk_end;
    }
    Ok(())
}

enum Step {
    /// Entry accepted; continue at the given position.
    Next(u64),
    /// Valid prefix ends at `stop`; look for surviving entries from `tail_from`.
    Stop {
        stop: u64,
        tail_from: u64,
        reason: String,
    },
}

/// Scans the segments, rebuilds the index and handles the tail as described in the module doc.
pub(crate) fn recover(
    segments: &[Arc<Segment>],
    segment_bytes: u64,
    last_purged: Option<LogId<u64>>,
) -> Result<Recovered, DLedgerError> {
    let verify_from = segments.len().saturating_sub(VERIFY_CRC_SEGMENTS);
    let purged_index = last_purged.map(|p| p.index);
    let mut positions = VecDeque::new();
    let mut first_index = purged_index.map(|p| p + 1).unwrap_or(0);
    let mut expected: Option<u64> = None;
    let mut position = segments[0].start;
    let mut si = 0usize;

    let (stop, tail_from, reason) = loop {
        let segment = &segments[si];
        let offset = (position - segment.start) as usize;
        let remaining = (segment_bytes - (position - segment.start)) as usize;
        // SAFETY: recovery runs before the CommitLog is shared.
        let bytes = unsafe { segment.bytes(offset, remaining) };
        let next_segment = segments.get(si + 1);
        let step = if remaining >= 4 && codec::magic_at(bytes) == Some(ENTRY_MAGIC) {
            match codec::decode_header(bytes, remaining) {
                Err(reason) => Step::Stop {
                    stop: position,
                    tail_from: position,
                    reason,
                },
                Ok(header) => {
                    let crc = if si >= verify_from {
                        codec::check_crc(&header, &bytes[..header.total_bytes as usize])
                    } else {
                        Ok(())
                    };
                    let index_ok = match expected {
                        Some(e) => header.index == e,
                        None => purged_index.is_none_or(|p| header.index <= p + 1),
                    };
                    match (crc, index_ok) {
                        (Err(reason), _) => Step::Stop {
                            stop: position,
                            tail_from: position,
                            reason,
                        },
                        (Ok(()), false) => Step::Stop {
                            stop: position,
                            tail_from: position,
                            reason: format!(
                                "entry index {} where {:?} was expected",
                                header.index, expected
                            ),
                        },
                        (Ok(()), true) => {
                            if purged_index.is_none_or(|p| header.index > p) {
                                if positions.is_empty() {
                                    first_index = header.index;
                                }
                                positions.push_back(position);
                            }
                            expected = Some(header.index + 1);
                            Step::Next(position + header.total_bytes as u64)
                        }
                    }
                }
            }
        } else {
            let pad_ok = codec::pad_length(bytes) == Some(remaining as u32);
            let zeros = bytes.len() < PAD_BYTES
                || bytes[..PAD_BYTES.min(bytes.len())].iter().all(|b| *b == 0);
            let next_continues = next_segment.is_some_and(|next| {
                // SAFETY: as above.
                let head = unsafe { next.bytes(0, segment_bytes as usize) };
                codec::valid_entry_at(head).is_some_and(|h| expected.is_none_or(|e| h.index == e))
            });
            if remaining == 0 || ((pad_ok || zeros) && next_continues) {
                match next_segment {
                    Some(next) => {
                        si += 1;
                        Step::Next(next.start)
                    }
                    None => Step::Stop {
                        stop: position,
                        tail_from: position,
                        reason: "end of segments".into(),
                    },
                }
            } else if pad_ok {
                // A padding marker at the very end of the log: the next write rewrites it.
                Step::Stop {
                    stop: position,
                    tail_from: position + PAD_BYTES as u64,
                    reason: "padding at end".into(),
                }
            } else if zeros {
                Step::Stop {
                    stop: position,
                    tail_from: position,
                    reason: "zeros".into(),
                }
            } else {
                let magic = codec::magic_at(bytes).unwrap_or(0);
                Step::Stop {
                    stop: position,
                    tail_from: position,
                    reason: format!("bad magic {magic:#010x}"),
                }
            }
        };
        match step {
            Step::Next(next) => position = next,
            Step::Stop {
                stop,
                tail_from,
                reason,
            } => break (stop, tail_from, reason),
        }
    };

    if let (Some(p), false) = (purged_index, positions.is_empty()) {
        if first_index != p + 1 {
            let segment = &segments[0];
            return Err(DLedgerError::Corrupt {
                file: segment.path.clone(),
                file_offset: 0,
                position: segment.start,
                reason: format!(
                    "first entry after purge point {p} is {first_index}: entries are missing"
                ),
            });
        }
    }

    let stop_segment = segments
        .iter()
        .find(|s| s.start <= stop && stop <= s.end())
        .expect("stop lies in a segment");
    let end = segments.last().expect("at least one segment").end();
    // Look for a surviving entry in the tail.
    for segment in segments.iter().filter(|s| s.end() > tail_from) {
        let from = tail_from.max(segment.start);
        // SAFETY: as above.
        let bytes = unsafe {
            segment.bytes(
                (from - segment.start) as usize,
                (segment.end() - from) as usize,
            )
        };
        if let Some(offset) = codec::find_valid_entry(bytes) {
            let found_at = from + offset as u64;
            let index = codec::valid_entry_at(&bytes[offset..])
                .map(|h| h.index)
                .unwrap_or_default();
            return Err(DLedgerError::Corrupt {
                file: stop_segment.path.clone(),
                file_offset: stop - stop_segment.start,
                position: stop,
                reason: format!(
                    "{reason}; a valid entry (index {index}) follows at {} offset {}, \
                     so this is mid-log corruption, not a torn tail",
                    segment.path.display(),
                    found_at - segment.start
                ),
            });
        }
    }
    // Cut a torn tail: anything non-zero after the tail start.
    let torn_bytes = count_nonzero_extent(segments, tail_from, end);
    if let Some(last_nonzero) = torn_bytes {
        tracing::warn!(
            file = %stop_segment.path.display(),
            file_offset = stop - stop_segment.start,
            position = stop,
            bytes = last_nonzero + 1 - tail_from,
            reason = %reason,
            "cutting torn CommitLog tail"
        );
        zero_nonzero(segments, tail_from, last_nonzero + 1)?;
    }
    Ok(Recovered {
        first_index,
        positions,
        write_pos: stop,
    })
}

/// Position of the last non-zero byte in `[from, to)`, if any.
fn count_nonzero_extent(segments: &[Arc<Segment>], from: u64, to: u64) -> Option<u64> {
    let mut last = None;
    for segment in segments.iter().filter(|s| s.end() > from && s.start < to) {
        let lo = from.max(segment.start);
        let hi = to.min(segment.end());
        // SAFETY: recovery runs before the CommitLog is shared.
        let bytes = unsafe { segment.bytes((lo - segment.start) as usize, (hi - lo) as usize) };
        if let Some(i) = bytes.iter().rposition(|b| *b != 0) {
            last = Some(lo + i as u64);
        }
    }
    last
}
