//! Proves the CommitLog layout rules directly on the store: an entry that does not fit the rest
//! of a segment starts the next segment (20-digit file names at multiples of segment_bytes);
//! reopening rebuilds the same index, positions and bytes; a truncation leaves no stale entry
//! behind after a reopen (with warm segments and with reserved ones); a store refuses to open with
//! another segment_bytes; and flushed bytes older than the page-cache window leave the page cache
//! and read back the same.

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
use openraft::RaftLogReader;

const SEGMENT_BYTES: u64 = 64 * 1024;

fn options(segment_bytes: u64, warm_segments: bool) -> StorageOptions {
    StorageOptions {
        warm_segments,
        page_cache_bytes: 0,
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
        payload: EntryPayload::Normal(Payload::Records(record.into())),
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

/// Appends entries 1..=300 of 500 to 3,500 bytes, one at a time, each waiting for its flush.
async fn append_mixed_sizes(storage: &mut OpenedStorage) {
    for index in 1..=300u64 {
        let size = 500 + (index as usize * 37) % 3000;
        storage
            .log_store
            .blocking_append([entry(index, size)])
            .await
            .unwrap();
    }
}

/// One append of many entries is written from the entries' own bytes, in `pwritev`s of at
/// most 1024 parts: with 1 MiB segments the 1,500 entries (3,000 parts) lie in one run, with
/// 64 KiB segments they roll several times. Either way the bytes are exactly those of the same
/// entries appended one at a time, and read back the same after a reopen.
#[tokio::test]
async fn one_large_append_lays_out_like_single_appends() {
    for segment_bytes in [1 << 20, SEGMENT_BYTES] {
        let entries: Vec<_> = (1..=1500u64)
            .map(|i| entry(i, 40 + (i as usize * 53) % 300))
            .collect();
        let batched_dir = tempfile::tempdir().unwrap();
        let single_dir = tempfile::tempdir().unwrap();
        let mut batched = open(batched_dir.path(), segment_bytes).unwrap();
        batched
            .log_store
            .blocking_append(entries.clone())
            .await
            .unwrap();
        let mut single = open(single_dir.path(), segment_bytes).unwrap();
        for e in &entries {
            single.log_store.blocking_append([e.clone()]).await.unwrap();
        }
        let end = batched.written_position();
        assert_eq!(end, single.written_position());
        assert_eq!(
            batched.digest(0, end).unwrap(),
            single.digest(0, end).unwrap()
        );
        let layout = |s: &OpenedStorage| {
            s.entries()
                .unwrap()
                .into_iter()
                .map(|e| {
                    (
                        e.log_index,
                        e.position,
                        e.total_bytes,
                        e.file.file_name().map(|n| n.to_owned()),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(layout(&batched), layout(&single));
        drop(batched);
        let mut reopened = open(batched_dir.path(), segment_bytes).unwrap();
        let read_back = reopened
            .log_store
            .try_get_log_entries(1..1501)
            .await
            .unwrap();
        assert_eq!(read_back, entries, "segment_bytes {segment_bytes}");
    }
}

async fn roll_and_reopen(warm: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (before, written, digest) = {
        let mut storage = open_with(dir.path(), SEGMENT_BYTES, warm).unwrap();
        append_mixed_sizes(&mut storage).await;
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

/// How many of the pages of `path` are in the page cache (`mincore` on a fresh map of it).
fn resident_pages(path: &Path, offset: usize, len: usize) -> usize {
    let file = std::fs::File::open(path).unwrap();
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let page = 4096;
    let start = offset / page * page;
    let mut vec = vec![0u8; (offset + len - start).div_ceil(page)];
    // SAFETY: a live map covering the range; `vec` has one byte per page of it.
    let rc = unsafe {
        libc::mincore(
            map.as_ptr().add(start) as *mut libc::c_void,
            offset + len - start,
            vec.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&v| v & 1 == 1).count()
}

/// `pageCacheWindowCommitLog`: once more than the window is written and flushed, the older
/// pages are no longer in the page cache, the newest are, and every byte reads back as in a
/// store that keeps everything cached.
#[tokio::test]
async fn bytes_older_than_the_page_cache_window_leave_the_cache_and_read_back_the_same() {
    const WINDOW: u64 = 128 * 1024;
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: statfs into a zeroed struct of the right type.
    let on_tmpfs = unsafe {
        let mut fs: libc::statfs = std::mem::zeroed();
        let path = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
        libc::statfs(path.as_ptr(), &mut fs) == 0 && fs.f_type == libc::TMPFS_MAGIC
    };
    if on_tmpfs {
        eprintln!("skipped: tmpfs keeps every page in memory, so nothing can leave the cache");
        return;
    }
    let control = tempfile::tempdir().unwrap();
    let mut digests = Vec::new();
    for (path, window) in [(dir.path(), WINDOW), (control.path(), 0)] {
        let mut storage = dledger::storage::open(
            path,
            &StorageOptions {
                page_cache_bytes: window,
                ..options(SEGMENT_BYTES, true)
            },
            Box::new(NoopHook),
        )
        .unwrap();
        // SYNC_FLUSH: each append returns after its flush, which drops what fell out.
        append_mixed_sizes(&mut storage).await;
        let written = storage.written_position();
        assert!(written > 4 * WINDOW, "the test writes well past the window");
        if window > 0 {
            // Read nothing before looking: a read would bring pages back.
            let segment = |position: u64| {
                let start = position - position % SEGMENT_BYTES;
                (
                    path.join("commitlog").join(format!("{start:020}")),
                    (position - start) as usize,
                )
            };
            let (file, offset) = segment(written - 1);
            assert_eq!(
                resident_pages(&file, offset, 1),
                1,
                "the newest page is cached"
            );
            // Everything a full window (and a drop step) behind the end has been dropped.
            let dropped_below = (written - 2 * WINDOW) / 4096 * 4096 - 4096;
            let mut start = 0;
            while start < dropped_below {
                let end = (start - start % SEGMENT_BYTES + SEGMENT_BYTES).min(dropped_below);
                let (file, offset) = segment(start);
                assert_eq!(
                    resident_pages(&file, offset, (end - start) as usize),
                    0,
                    "[{start}, {end}) is still cached (written {written})"
                );
                start = end;
            }
        }
        digests.push((written, storage.digest(0, written).unwrap()));
    }
    assert_eq!(
        digests[0], digests[1],
        "the same bytes with and without the window"
    );
}
