//! Proves two things the hot path relies on:
//! - the newest entries, read from memory instead of the segments, are exactly what the
//!   segments hold, and follow truncation (no stale entry is served after `truncate`), and
//!   entries older than the in-memory window still read back from the segments;
//! - the applied point and the hook's writes, which reach RocksDB in batches rather than at
//!   each apply, get there without a further apply, and never apart: after a failed apply
//!   nothing of it (nor anything waiting with it) is written, so the persisted count always
//!   matches the persisted applied point.

mod common;

use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use common::stored_count;
use common::COUNT_KEY;
use dledger::storage::OpenedStorage;
use dledger::storage::StorageOptions;
use dledger::storage::TypeConfig;
use dledger::types::Payload;
use dledger::ApplyHook;
use dledger::CommittedEntry;
use dledger::CommittedPayload;
use dledger::FlushMode;
use dledger::HookError;
use dledger::HookStore;
use dledger::HookWrites;
use openraft::storage::RaftLogStorage;
use openraft::storage::RaftLogStorageExt;
use openraft::storage::RaftStateMachine;
use openraft::CommittedLeaderId;
use openraft::EntryPayload;
use openraft::LogId;
use openraft::RaftLogReader;

type Entry = openraft::Entry<TypeConfig>;

const POISON: &[u8] = b"poison";

/// Counts applied records in the hook's column family; fails on a record holding `POISON`.
struct CountingHook {
    count: u64,
}

impl ApplyHook for CountingHook {
    fn open(&mut self, store: &HookStore) -> Result<(), HookError> {
        self.count = stored_count(store);
        Ok(())
    }

    fn apply(
        &mut self,
        entry: &CommittedEntry<'_>,
        writes: &mut HookWrites<'_>,
    ) -> Result<Vec<dledger::HookResponse>, HookError> {
        if let CommittedPayload::Records(records) = &entry.payload {
            for r in records {
                if r.bytes.windows(POISON.len()).any(|w| w == POISON) {
                    return Err("poisoned record".into());
                }
                self.count += 1;
            }
            writes.put(COUNT_KEY, &self.count.to_be_bytes());
        }
        Ok(Vec::new())
    }
}

fn open(dir: &Path, segment_bytes: u64) -> OpenedStorage {
    dledger::storage::open(
        dir,
        &StorageOptions {
            warm_segments: false,
            page_cache_bytes: 0,
            segment_bytes,
            flush_mode: FlushMode::Async,
            flush_interval_ms: 100,
            read_batch_bytes: usize::MAX,
        },
        Box::new(CountingHook { count: 0 }),
    )
    .unwrap()
}

/// One entry holding one record of `len` bytes (at least 16) that starts with its length.
fn entry(term: u64, index: u64, len: usize, poison: bool) -> Entry {
    let mut record = vec![(index % 200) as u8 + term as u8; len];
    record[..4].copy_from_slice(&(len as u32).to_be_bytes());
    record[4..12].copy_from_slice(&index.to_be_bytes());
    if poison {
        record[len - POISON.len()..].copy_from_slice(POISON);
    }
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 0), index),
        payload: EntryPayload::Normal(Payload::Records(record.into())),
    }
}

fn ids(entries: &[Entry]) -> Vec<(u64, u64)> {
    entries
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect()
}

#[tokio::test]
async fn newest_entries_from_memory_match_the_segments_and_follow_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let appended: Vec<Entry> = (1..=20)
        .map(|i| entry(1, i, 100 + i as usize, false))
        .collect();
    {
        let mut s = open(dir.path(), 1 << 20);
        s.log_store.blocking_append(appended.clone()).await.unwrap();
        let from_memory = s.log_store.try_get_log_entries(3..21).await.unwrap();
        assert_eq!(from_memory, appended[2..].to_vec());

        // Truncation removes the entries from memory too: nothing from 10 on is served.
        s.log_store
            .truncate(LogId::new(CommittedLeaderId::new(1, 0), 10))
            .await
            .unwrap();
        let after_truncate = s.log_store.try_get_log_entries(5..21).await.unwrap();
        assert_eq!(
            ids(&after_truncate),
            (5..10).map(|i| (1, i)).collect::<Vec<_>>()
        );

        // New entries of a later term take their place.
        let replacing: Vec<Entry> = (10..=12).map(|i| entry(2, i, 300, false)).collect();
        s.log_store.blocking_append(replacing).await.unwrap();
        let now = s.log_store.try_get_log_entries(8..30).await.unwrap();
        assert_eq!(ids(&now), vec![(1, 8), (1, 9), (2, 10), (2, 11), (2, 12)]);
    }
    // The same entries, read back from the segments after a reopen (memory starts empty).
    let mut reopened = open(dir.path(), 1 << 20);
    let from_segments = reopened.log_store.try_get_log_entries(1..30).await.unwrap();
    let mut expected: Vec<Entry> = appended[..9].to_vec();
    expected.extend((10..=12).map(|i| entry(2, i, 300, false)));
    assert_eq!(from_segments, expected);
}

#[tokio::test]
async fn entries_older_than_the_memory_window_read_from_the_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path(), 4 << 20);
    // 96 entries of 256 KiB: 24 MiB, more than the 16 MiB kept in memory.
    let appended: Vec<Entry> = (1..=96).map(|i| entry(1, i, 256 << 10, false)).collect();
    for chunk in appended.chunks(8) {
        s.log_store.blocking_append(chunk.to_vec()).await.unwrap();
    }
    let all = s.log_store.try_get_log_entries(1..97).await.unwrap();
    assert_eq!(all, appended);
    let newest = s.log_store.try_get_log_entries(90..97).await.unwrap();
    assert_eq!(newest, appended[89..].to_vec());
}

async fn wait_for_count(s: &OpenedStorage, expected: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let count = stored_count(&s.hook_store());
        if count == expected || Instant::now() > deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn applied_point_reaches_rocksdb_without_a_further_apply() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path(), 1 << 20);
    let entries: Vec<Entry> = (1..=5).map(|i| entry(1, i, 64, false)).collect();
    s.log_store.blocking_append(entries.clone()).await.unwrap();
    s.state_machine.apply(entries).await.unwrap();
    // No further apply comes; the count still reaches RocksDB within the write interval.
    assert_eq!(wait_for_count(&s, 5).await, 5);
    drop(s);
    let mut reopened = open(dir.path(), 1 << 20);
    let (applied, _) = reopened.state_machine.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(5));
}

#[tokio::test]
async fn a_failed_apply_never_lets_the_count_pass_the_applied_point() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path(), 1 << 20);
    let good: Vec<Entry> = (1..=5).map(|i| entry(1, i, 64, false)).collect();
    // Entry 7 is poisoned: entry 6 is applied in memory, then the apply fails.
    let bad: Vec<Entry> = (6..=8).map(|i| entry(1, i, 64, i == 7)).collect();
    let mut all = good.clone();
    all.extend(bad.iter().cloned());
    s.log_store.blocking_append(all).await.unwrap();
    s.state_machine.apply(good).await.unwrap();
    // At once, while the first apply still waits in memory to be written.
    assert!(s.state_machine.apply(bad).await.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let count = stored_count(&s.hook_store());
    drop(s);
    let mut reopened = open(dir.path(), 1 << 20);
    let (applied, _) = reopened.state_machine.applied_state().await.unwrap();
    // One record per entry from index 1: the persisted count equals the applied index.
    assert_eq!(
        count,
        applied.map(|l| l.index).unwrap_or(0),
        "persisted count {count} but applied point {applied:?}"
    );
    assert!(
        count <= 5,
        "the failed apply's writes reached RocksDB: {count}"
    );
}
