//! Proves, in a short run against real processes each in a network namespace of its
//! own, that cutting the leader off the network and cutting the link between the
//! leader and one follower lose, reorder and invent nothing, and that the cuts were
//! real: isolating the leader stops acknowledgements for a while (a new leader has to
//! be elected and found), which no-op "faults" could not do.
//!
//! Needs root (`ip netns add`). Where the machine forbids namespaces the test fails,
//! saying so, unless ROCKETRAFT_SKIP_NETNS=1 is set.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_lose_and_reorder_nothing() {
    if let Err(reason) = chaos::net::Net::probe() {
        if std::env::var_os("ROCKETRAFT_SKIP_NETNS").is_some() {
            eprintln!("skipped (ROCKETRAFT_SKIP_NETNS set): {reason}");
            return;
        }
        panic!("{reason}; set ROCKETRAFT_SKIP_NETNS=1 to skip this test");
    }
    let binary = chaos::test_binary();
    let out = tempfile::tempdir().unwrap();
    let args = chaos::RunArgs {
        faults: 4,
        seconds: 90,
        seed: Some(20),
        out: Some(out.path().to_path_buf()),
        mix: "partition-leader=1,partition-bridge=1".into(),
        binary: Some(binary),
        net: "namespaces".into(),
        conf: chaos::debug_build_timers(),
        ..Default::default()
    };
    let verdict = chaos::run(args).await.expect("chaos run");
    println!(
        "{}",
        std::fs::read_to_string(out.path().join("summary.txt")).unwrap()
    );
    let kinds = &verdict.faults_by_kind;
    assert_eq!(kinds.get("partition-leader").copied(), Some(2), "{kinds:?}");
    assert_eq!(kinds.get("partition-bridge").copied(), Some(2), "{kinds:?}");
    let isolated_gap = verdict
        .recovery
        .iter()
        .filter(|r| r.fault == "partition-leader")
        .map(|r| r.ack_gap_ms)
        .fold(0.0, f64::max);
    assert!(
        isolated_gap >= 300.0,
        "isolating the leader never stopped acknowledgements (longest gap {isolated_gap} ms): \
         the cut did not cut"
    );
    assert!(verdict.acked > 0, "nothing was acknowledged");
    assert!(verdict.passed, "{:?}", verdict.failures());
    let leftover = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let prefix = format!("rrc{}-", std::process::id());
    assert!(
        !String::from_utf8_lossy(&leftover.stdout).contains(&prefix),
        "namespaces left behind: {}",
        String::from_utf8_lossy(&leftover.stdout)
    );
}
