//! Proves the CommitLog store (mmap segments + RocksDB meta) passes openraft's own storage
//! conformance suite (`openraft::testing::Suite`), in both flush modes, with segments small
//! enough that the suite's entries are exercised on a fresh temp directory each time.

use dledger::storage::LogStore;
use dledger::storage::StateMachine;
use dledger::storage::StorageOptions;
use dledger::storage::TypeConfig;
use dledger::FlushMode;
use dledger::NoopHook;
use openraft::testing::StoreBuilder;
use openraft::testing::Suite;
use openraft::StorageError;
use openraft::StorageIOError;

struct Builder {
    flush_mode: FlushMode,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = StorageOptions {
            warm_segments: true,
            page_cache_bytes: 0,
            segment_bytes: 64 * 1024,
            flush_mode: self.flush_mode,
            flush_interval_ms: 10,
            read_batch_bytes: 1 << 20,
        };
        let opened =
            dledger::storage::open(dir.path(), &options, Box::new(NoopHook)).map_err(|e| {
                StorageError::from(StorageIOError::write(openraft::AnyError::error(
                    e.to_string(),
                )))
            })?;
        Ok((dir, opened.log_store, opened.state_machine))
    }
}

#[test]
fn openraft_suite_passes_with_sync_flush() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    if let Err(e) = Suite::test_all(Builder {
        flush_mode: FlushMode::Sync,
    }) {
        panic!("openraft storage suite failed with SYNC_FLUSH: {e}");
    }
}

#[test]
fn openraft_suite_passes_with_async_flush() {
    if let Err(e) = Suite::test_all(Builder {
        flush_mode: FlushMode::Async,
    }) {
        panic!("openraft storage suite failed with ASYNC_FLUSH: {e}");
    }
}
