//! Proves that `chaos run --attach-namesrv ... --attach-pids ...` works on a cluster
//! someone else started: this test starts a name server and a three-node group itself
//! (plain `rocketraft` processes), attaches by PID, kills the leader and pauses the
//! next one, and checks that the run passes, that killed nodes were restarted from
//! their own command lines (new PIDs, same config), and that the cluster is left
//! running with a leader afterwards.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn start(binary: &PathBuf, args: &[String], log: PathBuf) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(binary)
        .args(args)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// Whether the name server routes a leader for broker-a within 30 s.
async fn led(client: &client::NameServerClient) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let routed = client
            .cluster_info()
            .await
            .ok()
            .and_then(|i| {
                i.broker_addr_table
                    .get("broker-a")?
                    .leader_addr()
                    .map(|_| ())
            })
            .is_some();
        if routed {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z"))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attaches_restarts_and_leaves_the_cluster_running() {
    let binary = chaos::test_binary();
    let dir = tempfile::tempdir().unwrap();
    // All seven ports at once, so none repeats.
    let mut ports = chaos::cluster::free_ports(7).unwrap().into_iter();
    let mut port = move || ports.next().unwrap();
    let namesrv = format!("127.0.0.1:{}", port());
    let secret = dir.path().join("cluster.secret");
    remoting::cluster_auth::ensure_secret_file(&secret).unwrap();
    let mut children = vec![start(
        &binary,
        &[
            "namesrv".into(),
            "--listen".into(),
            namesrv.clone(),
            "--cluster-secret-file".into(),
            secret.display().to_string(),
        ],
        dir.path().join("namesrv.log"),
    )];
    let peers = (0..3)
        .map(|i| format!("n{i}-127.0.0.1:{}", port()))
        .collect::<Vec<_>>()
        .join(";");
    for i in 0..3 {
        let conf = dir.path().join(format!("n{i}.conf"));
        std::fs::write(
            &conf,
            format!(
                "brokerClusterName=C\nbrokerName=broker-a\nbrokerIP1=127.0.0.1\n\
                 listenPort={}\nnamesrvAddr={namesrv}\nenableDLegerCommitLog=true\n\
                 dLegerGroup=broker-a\ndLegerPeers={peers}\ndLegerSelfId=n{i}\n\
                 mappedFileSizeCommitLog=67108864\nflushDiskType=ASYNC_FLUSH\n\
                 clusterSecretFile=cluster.secret\n",
                port()
            ),
        )
        .unwrap();
        let store = dir.path().join(format!("store-n{i}"));
        children.push(start(
            &binary,
            &[
                "broker".into(),
                "-c".into(),
                conf.display().to_string(),
                "--store-path".into(),
                store.display().to_string(),
            ],
            dir.path().join(format!("n{i}.log")),
        ));
    }
    let first_pids: Vec<i32> = children[1..].iter().map(|c| c.id() as i32).collect();
    let client =
        client::NameServerClient::new(&namesrv, Duration::from_secs(2)).expect("namesrv client");
    // Attach to a cluster that is up, as a user would.
    assert!(led(&client).await, "the cluster never elected a leader");

    let out = dir.path().join("chaos");
    let args = chaos::RunArgs {
        faults: 2,
        seconds: 60,
        seed: Some(30),
        out: Some(out.clone()),
        mix: "kill-leader=1,pause-leader=1".into(),
        attach_namesrv: Some(namesrv.clone()),
        attach_pids: first_pids.clone(),
        ..Default::default()
    };
    let verdict = chaos::run(args).await;
    let pids_now: Vec<i32> = std::fs::read_to_string(out.join("pids.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();

    // Is the cluster still running and led?
    let led = led(&client).await;
    let all_alive = pids_now.len() == 3 && pids_now.iter().all(|p| alive(*p));

    // Clean up: the nodes (some restarted by the chaos run, so not our children).
    for pid in &pids_now {
        // SAFETY: kill(2) on broker PIDs this test started or the chaos run restarted.
        unsafe {
            libc::kill(*pid, libc::SIGKILL);
        }
    }
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }

    let verdict = verdict.expect("chaos run");
    println!(
        "{}",
        std::fs::read_to_string(out.join("summary.txt")).unwrap()
    );
    assert!(verdict.passed, "{:?}", verdict.failures());
    assert_eq!(verdict.faults_by_kind.get("kill-leader"), Some(&1));
    assert_eq!(verdict.faults_by_kind.get("pause-leader"), Some(&1));
    assert!(
        all_alive,
        "not every broker is running after the run: {pids_now:?}"
    );
    assert!(
        pids_now.iter().any(|p| !first_pids.contains(p)),
        "the killed leader was not restarted: {first_pids:?} -> {pids_now:?}"
    );
    assert!(led, "the cluster has no leader after the run");
}
