//! Proves, in a short bounded run of the real tool against real processes, that retention
//! and Raft snapshots hold up under faults: the nodes keep 256 KiB CommitLog segments for
//! only a few seconds (`--retention-seconds`), so segments are deleted and the Raft log
//! purged throughout; killed and crashed followers restart behind the leader's first kept
//! entry, a replaced node starts empty, and leaders are killed and moved. The checker must
//! find nothing lost at or above each queue's first kept offset, nothing deleted before
//! its time, nothing unexpected, reordered or divergent, replicas byte-identical from
//! their latest first kept position (one may lack the last entries, as the leader keeps
//! proposing retention decisions while the nodes stop), and at least one snapshot
//! installed. The brokers run RocketMQ's ACL (`--acl`): every client of the run signs, and
//! after the faults unsigned and wrongly signed sends must be refused.
//!
//! Needs the `rocketraft` binary next to this test's directory (`cargo build -p
//! rocketraft`; `cargo test --workspace` builds it) or its path in `ROCKETRAFT_BIN`.

/// Seconds a CommitLog segment is kept.
const RETENTION_SECONDS: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chaos_run_with_seconds_of_retention_keeps_what_it_must() {
    let binary = chaos::test_binary();
    let out = tempfile::tempdir().unwrap();
    let args = chaos::RunArgs {
        faults: 7,
        seconds: 60,
        seed: Some(11),
        out: Some(out.path().to_path_buf()),
        groups: 1,
        flush: "ASYNC_FLUSH".into(),
        mix: "kill-follower=2,crash-follower=1,kill-leader=2,replace-node=1,transfer-leader=1"
            .into(),
        binary: Some(binary),
        keep_data: false,
        net: "loopback".into(),
        conf: chaos::debug_build_timers(),
        retention_seconds: Some(RETENTION_SECONDS),
        // The brokers enforce RocketMQ's ACL and every client signs: the rules must hold
        // on whichever node leads after the faults (checked by the run).
        acl: true,
        ..Default::default()
    };
    let verdict = chaos::run(args).await.expect("chaos run");
    println!(
        "{}",
        std::fs::read_to_string(out.path().join("summary.txt")).unwrap()
    );
    if !verdict.passed {
        let kept = out.keep();
        panic!(
            "chaos run failed (kept in {}): {}",
            kept.display(),
            verdict.failures().join("; ")
        );
    }
    let kinds = &verdict.faults_by_kind;
    assert!(
        kinds.get("replace-node").copied().unwrap_or(0) >= 1
            && kinds.get("kill-follower").copied().unwrap_or(0) >= 1,
        "not every planned fault ran: {kinds:?}"
    );
    assert!(verdict.acked > 0, "nothing was acknowledged");
    assert!(
        verdict.expired > 0,
        "retention deleted nothing the checker saw: the run did not test it"
    );
    assert!(
        verdict.snapshot_installs > 0,
        "no node caught up by snapshot"
    );
    // A pass already means nothing lost at or above a first kept offset, nothing gone
    // early, misplaced, unexpected, reordered or divergent (`Verdict::failures`).
    // The leader keeps proposing retention decisions, so a node stopped at the end may
    // lack the last entry: every replica must be a prefix of the longest, byte for byte.
    assert!(
        !verdict.replicas.is_empty() && verdict.replicas.iter().all(|r| r.identical || r.tail_only),
        "replicas: {:?}",
        verdict.replicas
    );
}
