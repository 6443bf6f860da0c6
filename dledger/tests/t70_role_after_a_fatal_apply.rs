//! Proves the role watch reports `Shutdown` when Raft stops on a fatal error. The watch
//! follows openraft's server metrics, which change only with the role, vote, leader or
//! membership; a stop is seen by their sender going away with Raft, not by a metrics
//! value. A failing apply hook is such a stop: the node must not go on looking like a
//! leader (the broker registers leaders with the name servers from this watch).

mod common;

use std::time::{Duration, Instant};

use common::*;
use dledger::{
    ApplyHook, CommittedEntry, CommittedPayload, DLedgerNode, HookError, HookWrites, Role,
};

/// Applies records until one ends with `poison`, then fails.
struct PoisonHook;

impl ApplyHook for PoisonHook {
    fn apply(
        &mut self,
        entry: &CommittedEntry<'_>,
        _writes: &mut HookWrites<'_>,
    ) -> Result<Vec<dledger::HookResponse>, HookError> {
        if let CommittedPayload::Records(records) = &entry.payload {
            if records.iter().any(|r| r.bytes.ends_with(b"poison")) {
                return Err("a poisoned record".into());
            }
        }
        Ok(Vec::new())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_apply_error_shows_as_shutdown() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (peers, mut listeners) = bind_peers(1).await;
    let node = DLedgerNode::start_with_listener(
        test_config(0, &peers, dir.path()),
        PoisonHook,
        listeners.pop().unwrap(),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.role_watch().borrow().role != Role::Leader {
        assert!(Instant::now() < deadline, "no leader within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.append(vec![record(b"fine")]).await.unwrap();
    assert_eq!(node.role_watch().borrow().role, Role::Leader);

    assert!(node.append(vec![record(b"poison")]).await.is_err());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut watch = node.role_watch();
    while watch.borrow_and_update().role != Role::Shutdown {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the role is still {:?} 5 s after the apply failed",
            watch.borrow().role
        );
        let _ = tokio::time::timeout(left, watch.changed()).await;
    }
    assert!(!node.is_leader());
    assert!(node.append(vec![record(b"after")]).await.is_err());
}
