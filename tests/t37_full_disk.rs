//! Proves a full disk with real processes and a real small filesystem (a 64 MiB tmpfs the
//! test mounts; skipped, loudly, where mounting is not allowed): node n2's store lives on
//! it. Filled while n2 follows, n2 hits ENOSPC, says so, leaves the name servers, and the
//! other two go on acknowledging every send; freed, n2 starts again by itself and catches
//! up. Filled while n2 leads, n2 steps down the same way, a new leader takes the sends, and
//! freed, n2 comes back. Every acknowledged message is read back at the queue and offset its
//! acknowledgement named, and the three CommitLogs end byte-identical.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use client::{Message, Producer, ProducerConfig};
use common::{Acked, Cluster, GROUP};

const TOPIC: &str = "FullDisk";
const FS_BYTES: u64 = 64 << 20;

/// A tmpfs of [`FS_BYTES`] mounted for the test, unmounted when dropped.
struct SmallFs {
    path: PathBuf,
}

impl SmallFs {
    fn mount(path: &Path) -> Option<SmallFs> {
        std::fs::create_dir_all(path).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={FS_BYTES}"), "tmpfs"])
            .arg(path)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "== WARNING: t37 skipped: cannot mount a tmpfs here ({}); the full-disk test \
                 needs root",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(SmallFs {
            path: path.to_path_buf(),
        })
    }

    fn available(&self) -> u64 {
        broker::disk::available_bytes(&self.path).unwrap()
    }

    /// Takes all but `leave` bytes of the filesystem with one file.
    fn fill(&self, leave: u64) -> PathBuf {
        let filler = self.path.join("filler");
        let len = self.available().saturating_sub(leave);
        let file = std::fs::File::create(&filler).unwrap();
        file.set_len(len).unwrap();
        // tmpfs holds what is written: write it, so the space is really taken.
        use std::os::unix::fs::FileExt;
        let chunk = vec![0xAAu8; 1 << 20];
        let mut done = 0;
        while done < len {
            let n = chunk.len().min((len - done) as usize);
            file.write_all_at(&chunk[..n], done).unwrap();
            done += n as u64;
        }
        file.sync_all().unwrap();
        println!("filled: {} bytes left", self.available());
        filler
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Sends `count` messages of 2 KiB numbered from `from`; records what is acknowledged.
async fn send(producer: &Producer, from: usize, count: usize, acked: &mut Acked) -> usize {
    let mut failed = 0;
    for i in from..from + count {
        let mut body = format!("m{i:08}-");
        body.push_str(&"x".repeat(2048 - body.len()));
        match producer.send(Message::new(TOPIC, body.clone())).await {
            Ok(r) => {
                acked.insert(r.msg_id, (body, r.queue.queue_id, r.queue_offset));
            }
            Err(_) => failed += 1,
        }
    }
    failed
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count_in_log(cluster: &Cluster, i: usize, text: &str) -> usize {
    std::fs::read_to_string(&cluster.nodes[i].log)
        .unwrap_or_default()
        .matches(text)
        .count()
}

/// Waits until n2 has stopped for want of space (a new mention of ENOSPC in its log) and
/// left the name servers, then frees the filesystem and waits until it is back, routed for
/// three seconds in a row.
async fn stop_and_recover(cluster: &Cluster, fs: &SmallFs, filler: &Path, enospc_before: usize) {
    let n2 = cluster.nodes[2].addr.clone();
    wait_until("n2 stops on ENOSPC", Duration::from_secs(60), async || {
        count_in_log(cluster, 2, "No space left on device") > enospc_before
    })
    .await;
    wait_until(
        "n2 leaves the name servers",
        Duration::from_secs(20),
        async || !common::routed_members(cluster).await.contains(&n2),
    )
    .await;
    let log = std::fs::read_to_string(&cluster.nodes[2].log).unwrap_or_default();
    let why = log
        .lines()
        .rfind(|l| l.contains("Raft core stopped"))
        .expect("n2 says why it stopped");
    println!("n2 stopped on ENOSPC and left the name servers: {why}");
    std::fs::remove_file(filler).unwrap();
    println!("freed: {} bytes available", fs.available());
    let mut since: Option<Instant> = None;
    wait_until(
        "n2 comes back by itself",
        Duration::from_secs(90),
        async || {
            if common::routed_members(cluster).await.contains(&n2) {
                since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(3)
            } else {
                since = None;
                false
            }
        },
    )
    .await;
    println!("n2 started again by itself and is routed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_on_a_follower_then_on_the_leader_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = SmallFs::mount(&dir.path().join("small")) else {
        return;
    };
    let cluster = Cluster::start_with_store(
        "mappedFileSizeCommitLog=4194304\nmappedFileSizeConsumeQueue=60000\nflushDiskType=ASYNC_FLUSH",
        Some((2, fs.path.join("n2"))),
    );
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let namesrv = cluster.namesrv();
    if cluster.node_index(&leader) == 2 {
        client::admin::transfer_leadership(&namesrv, GROUP, "n0", Duration::from_secs(10))
            .await
            .unwrap();
    }
    let mut config = ProducerConfig::new(&cluster.namesrv_addr, "t37");
    config.send_msg_timeout_ms = 10_000;
    let producer = Producer::start(config).await.unwrap();
    let mut acked = Acked::new();
    send(&producer, 0, 500, &mut acked).await;

    // A follower's disk fills: the other two acknowledge every send meanwhile.
    let filler = fs.fill(1 << 20);
    let failed = send(&producer, 500, 4_500, &mut acked).await;
    assert_eq!(
        failed, 0,
        "sends failed while only a follower was out of space"
    );
    stop_and_recover(&cluster, &fs, &filler, 0).await;

    // The leader's disk fills: it steps down, another leads, sends go on.
    // (n2 may still be catching up: a transfer to a lagging node is refused; ask again.)
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) =
        client::admin::transfer_leadership(&namesrv, GROUP, "n2", Duration::from_secs(10)).await
    {
        assert!(
            Instant::now() < deadline,
            "no transfer to n2 within 60 s: {e}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let n2 = cluster.nodes[2].addr.clone();
    wait_until(
        "n2 is routed as leader",
        Duration::from_secs(10),
        async || cluster.routed_leader().await.as_deref() == Some(n2.as_str()),
    )
    .await;
    let enospc = count_in_log(&cluster, 2, "No space left on device");
    let filler = fs.fill(1 << 20);
    let failed = send(&producer, 5_000, 4_500, &mut acked).await;
    println!("{failed} sends failed while the leader ran out of space");
    stop_and_recover(&cluster, &fs, &filler, enospc).await;
    send(&producer, 9_500, 200, &mut acked).await;
    producer.shutdown().await;

    assert!(acked.len() > 9_000, "only {} acknowledged", acked.len());
    common::assert_acked_read_back(&cluster.namesrv_addr, TOPIC, &acked).await;
    println!("{} acknowledged messages all read back", acked.len());
    cluster
        .wait_commit_logs_identical(&[0, 1, 2], Duration::from_secs(30))
        .await;
    drop(cluster);
    drop(fs);
}
