//! Proves, in a short bounded run of the real tool against real processes (one
//! three-node group started from the `rocketraft` binary), that five SIGKILLed leaders,
//! a paused leader that wakes up, a killed follower, a crashed follower whose CommitLog
//! lost its unsynced tail (ASYNC_FLUSH), two of three nodes killed at
//! once, two planned leadership transfers and a follower replaced with an empty data
//! directory (removed, started again empty, added back), and two full disks (each node's
//! data on a small tmpfs, filled: the node stops on ENOSPC and starts again by itself once
//! freed) lose no acknowledged message, deliver nothing unexpected or out of order, ack
//! nothing without a quorum, and leave byte-identical replicas; and that the timer
//! messages of the workload are each delivered once and not early, and the retry
//! consumer's failed messages are tried as often as allowed and dead-lettered exactly
//! when they should be: the checker's verdict must be a pass with every one of those
//! counts at zero. The summary is printed.
//!
//! Needs the `rocketraft` binary next to this test's directory (`cargo build -p
//! rocketraft`; `cargo test --workspace` builds it) or its path in `ROCKETRAFT_BIN`.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_chaos_run_loses_and_reorders_nothing() {
    let binary = chaos::test_binary();
    let out = tempfile::tempdir().unwrap();
    let args = chaos::RunArgs {
        faults: 14,
        seconds: 110,
        seed: Some(10),
        out: Some(out.path().to_path_buf()),
        groups: 1,
        flush: "ASYNC_FLUSH".into(),
        mix: "kill-leader=5,pause-leader=1,kill-follower=1,crash-follower=1,kill-two=1,transfer-leader=2,replace-node=1,fill-disk=2".into(),
        binary: Some(binary),
        keep_data: false,
        // Consumers read from followers (every pull short of the end counts as far
        // behind), so the checker covers reads moving between members under faults.
        conf: [
            chaos::debug_build_timers(),
            vec![
                "slaveReadEnable=true".into(),
                "accessMessageInMemoryMaxRatio=0".into(),
            ],
        ]
        .concat(),
        ..Default::default()
    };
    let verdict = chaos::run(args).await.expect("chaos run");
    println!(
        "{}",
        std::fs::read_to_string(out.path().join("summary.txt")).unwrap()
    );
    if !verdict.passed {
        // The history, report and node logs stay for whoever reads the failure.
        let kept = out.keep();
        panic!(
            "chaos run failed (kept in {}): {}",
            kept.display(),
            verdict.failures().join("; ")
        );
    }
    let kinds = &verdict.faults_by_kind;
    assert!(
        kinds.get("kill-leader").copied().unwrap_or(0) >= 5
            && kinds.get("pause-leader").copied().unwrap_or(0) >= 1
            && kinds.get("transfer-leader").copied().unwrap_or(0) >= 1
            && kinds.get("replace-node").copied().unwrap_or(0) >= 1
            && kinds.get("crash-follower").copied().unwrap_or(0) >= 1,
        "not every planned fault ran: {kinds:?}"
    );
    // fill-disk needs each node's data on a tmpfs of its own, which only root can mount.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert!(
            kinds.get("fill-disk").copied().unwrap_or(0) >= 1,
            "no fill-disk fault ran: {kinds:?}"
        );
    } else {
        eprintln!("== WARNING: not root: the fill-disk faults of the short chaos run were skipped");
    }
    assert!(verdict.acked > 0, "nothing was acknowledged");
    assert_eq!(verdict.lost.count, 0, "lost: {:?}", verdict.lost.examples);
    assert_eq!(
        verdict.misplaced.count, 0,
        "{:?}",
        verdict.misplaced.examples
    );
    assert_eq!(
        verdict.unexpected.count, 0,
        "{:?}",
        verdict.unexpected.examples
    );
    assert_eq!(
        verdict.reordered.count, 0,
        "{:?}",
        verdict.reordered.examples
    );
    assert_eq!(
        verdict.divergent.count, 0,
        "{:?}",
        verdict.divergent.examples
    );
    assert_eq!(verdict.acked_without_quorum.count, 0);
    // Timer messages and retries were part of the workload, and checked.
    assert!(
        verdict.delayed_acked > 0,
        "no timer message was acknowledged"
    );
    assert_eq!(verdict.delivered_early.count, 0);
    assert_eq!(verdict.delayed_twice.count, 0);
    assert!(
        verdict.retries_checked && verdict.retried_values > 0,
        "the retry consumer's values were not checked"
    );
    assert_eq!(
        verdict.retries_wrong.count, 0,
        "{:?}",
        verdict.retries_wrong
    );
    assert_eq!(verdict.dead_letters_wrong.count, 0);
    assert!(
        !verdict.replicas.is_empty() && verdict.replicas.iter().all(|r| r.identical),
        "replicas: {:?}",
        verdict.replicas
    );
    assert!(verdict.passed, "{:?}", verdict.failures());
    // On failure the tempdir is kept for the logs.
    if !verdict.passed {
        std::mem::forget(out);
    }
}
