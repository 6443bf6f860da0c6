//! Proves the CommitLog layout rules directly on the store: an entry that does not fit the rest
//! of a segment starts the next segment (20-digit file names at multiples of segment_bytes);
//! reopening rebuilds the same index, positions and bytes; a truncation leaves no stale entry
//! behind after a reopen (with warm segments and with reserved ones); and a store refuses to open with another segment_bytes.

use std::path::Path;

use dledger::storage::OpenedStorage;
use dledger::storage::StorageOptions;
use dledger::types::Payload;
use dledger::DLedgerError;
use dledger::FlushMode;
use dledger::NoopHook;
use openraft::storage::RaftLogStorage;
use openraft::storage::RaftLogStorageExt;
use openraft::CommittedLeaderId;
use openraft::EntryPayload;
use openraft::LogId;

const SEGMENT_BYTES: u64 = 64 * 1024;

fn options(segment_bytes: u64, warm_segments: bool) -> StorageOptions {
    StorageOptions {
        warm_segments,
        segment_bytes,
        flush_mode: FlushMode::Sync,
        flush_interval_ms: 100,
        read_batch_bytes: 1 << 20,
    }
}

fn open(dir: &Path, segment_bytes: u64) -> Result<OpenedStorage, DLedgerError> {
    open_with(dir, segment_bytes, true)
}

fn open_with(
    dir: &Path,
    segment_bytes: u64,
    warm_segments: bool,
) -> Result<OpenedStorage, DLedgerError> {
    dledger::storage::open(
        dir,
        &options(segment_bytes, warm_segments),
        Box::new(NoopHook),
    )
}

fn entry(index: u64, record_bytes: usize) -> openraft::Entry<dledger::storage::TypeConfig> {
    let mut record = vec![(index % 251) as u8 + 1; record_bytes];
    record[..4].copy_from_slice(&(record_bytes as u32).to_be_bytes());
    openraft::Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
        payload: EntryPayload::Normal(Payload::Records(record)),
    }
}

#[tokio::test]
async fn entries_roll_segments_and_reopen_identically() {
    roll_and_reopen(true).await;
}

/// The same with segments whose blocks are only reserved (`warmMapedFileEnable=false`).
#[tokio::test]
async fn entries_in_unwarmed_segments_roll_and_reopen_identically() {
    let dir = roll_and_reopen(false).await;
    // Every segment file has all its blocks: nothing was left sparse.
    for item in std::fs::read_dir(dir.path().join("commitlog")).unwrap() {
        let meta = item.unwrap().metadata().unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.len(), SEGMENT_BYTES);
        assert!(
            meta.blocks() * 512 >= SEGMENT_BYTES,
            "{} of {SEGMENT_BYTES} bytes reserved",
            meta.blocks() * 512
        );
    }
}

async fn roll_and_reopen(warm: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (before, written, digest) = {
        let mut storage = open_with(dir.path(), SEGMENT_BYTES, warm).unwrap();
        for index in 1..=300u64 {
            let size = 500 + (index as usize * 37) % 3000;
            storage
                .log_store
                .blocking_append([entry(index, size)])
                .await
                .unwrap();
        }
        let entries = storage.entries().unwrap();
        let written = storage.written_position();
        (entries, written, storage.digest(0, written).unwrap())
    };
    assert_eq!(before.len(), 300);
    let mut rolled = 0;
    for pair in before.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let a_end = a.position + a.total_bytes as u64;
        if b.position != a_end {
            // Only a segment roll may leave a gap, and it lands exactly on the next segment.
            assert_eq!(
                b.position % SEGMENT_BYTES,
                0,
                "gap not at a segment start: {a:?} {b:?}"
            );
            assert!(
                a_end + b.total_bytes as u64 > b.position,
                "entry {} would have fitted",
                b.log_index
            );
            assert_eq!(b.file_offset, 0);
            rolled += 1;
        }
        assert_eq!(
            b.file.file_name().unwrap().to_string_lossy(),
            format!("{:020}", b.position - b.file_offset)
        );
    }
    assert!(
        rolled >= 5,
        "the test spans several segments ({rolled} rolls)"
    );

    let reopened = open_with(dir.path(), SEGMENT_BYTES, warm).unwrap();
    assert_eq!(reopened.entries().unwrap(), before);
    assert_eq!(reopened.written_position(), written);
    assert_eq!(reopened.digest(0, written).unwrap(), digest);
    dir
}

#[tokio::test]
async fn truncation_leaves_no_stale_entry_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let truncated_at = {
        let mut storage = open(dir.path(), SEGMENT_BYTES).unwrap();
        for index in 1..=100u64 {
            storage
                .log_store
                .blocking_append([entry(index, 1500)])
                .await
                .unwrap();
        }
        let at = storage.entries().unwrap()[59].position;
        storage
            .log_store
            .truncate(LogId::new(CommittedLeaderId::new(1, 0), 60))
            .await
            .unwrap();
        // A shorter replacement suffix, as after a conflict.
        for index in 60..=62u64 {
            storage
                .log_store
                .blocking_append([entry(index, 100)])
                .await
                .unwrap();
        }
        at
    };
    let reopened = open(dir.path(), SEGMENT_BYTES).unwrap();
    let entries = reopened.entries().unwrap();
    assert_eq!(entries.len(), 62);
    assert_eq!(entries[59].position, truncated_at);
    assert_eq!(entries.last().unwrap().total_bytes, 40 + 100);
}

#[tokio::test]
async fn refuses_another_segment_size() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), SEGMENT_BYTES).unwrap());
    match open(dir.path(), SEGMENT_BYTES * 2) {
        Err(DLedgerError::SegmentBytesMismatch {
            stored_bytes,
            configured_bytes,
            ..
        }) => {
            assert_eq!(
                (stored_bytes, configured_bytes),
                (SEGMENT_BYTES, SEGMENT_BYTES * 2)
            );
        }
        Err(other) => panic!("expected SegmentBytesMismatch, got {other}"),
        Ok(_) => panic!("opened with another segment_bytes"),
    }
}
