//! Proves (issue 19, durability) that with SYNC_FLUSH an OS crash of one follower followed by
//! a kill of the leader loses no acknowledged message, and documents what the same loses
//! with ASYNC_FLUSH.
//!
//! The OS crash is simulated exactly: every node runs with `testRecordFlushedPosition=true`
//! and records how far its msyncs have covered its CommitLog; once the follower is SIGKILLed,
//! every byte at or past that point is zeroed (`chaos::disks::drop_unsynced_commit_log`), as
//! a crash that lost every unsynced page leaves the files.
//!
//! Scenario, on a real three-node group with leader L and followers F1, F2:
//! 1. Some sends (the topic is created), then a wait until F1's record covers them: at once
//!    with SYNC_FLUSH; with ASYNC_FLUSH at its first timed flush, the last one it makes here
//!    (`flushIntervalCommitLog` is 60 s). More sends; all three CommitLogs are waited
//!    identical.
//! 2. F2 is SIGSTOPped: L and F1 are the only quorum. Producers send 4 KiB messages (every
//!    one is checked answered by L).
//! 3. F1 is paused until it is caught holding writes no msync covered, then SIGKILLed and
//!    loses them. L is SIGKILLed. The producers stop.
//! 4. F2 is resumed; it may still read append-entries L had sent it before it stopped, from
//!    its socket buffers: once its CommitLog is steady, where it ends is noted (P2). F1 is
//!    restarted, and the two elect a leader while L is down (terms printed). L is restarted;
//!    Raft truncates what it has that the new leader lacks.
//! 5. Every acknowledged message is read back.
//!
//! What must be lost, exactly: a message acknowledged while F2 was stopped lies in an entry
//! only L and F1 held (F2's CommitLog is checked unchanged while stopped), unless F2 took it
//! from its socket buffers after (below P2). After the crash it is kept iff it lies below F1's
//! recorded point or below P2 (both are entry ends, so this is decided by the message's own
//! CommitLog position, from its offsetMsgId). Messages sent before the pause are on F2. So the
//! loss must equal E = {acknowledged during the pause at a position at or past both F1's
//! recorded point and P2}, and the test asserts exactly that, in both modes, plus:
//! - SYNC_FLUSH: F1 acknowledged an entry only after its msync, so E is empty and nothing is
//!   lost; the crash must have dropped bytes (asserted), or the test would prove nothing.
//! - ASYNC_FLUSH: E must not be empty (asserted, so it cannot pass vacuously: L sends F2 at
//!   most 1 MiB of entries past F2's last match per append-entries, and more is sent while
//!   F2 is stopped); the loss is printed. L, which applied the lost entries, is printed
//!   as caught up or not: it cannot take the new history below its applied point.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{Message, Producer, ProducerConfig};
use common::Cluster;

const TOPIC: &str = "OsCrashThenLeaderKill";
/// Concurrent senders while F2 is stopped.
const PRODUCERS: usize = 8;
/// Sends acknowledged while F2 is stopped, at least, before F1 crashes: 1.6 MB of bodies,
/// more than one append-entries to F2 carries (`max_append_entries_bytes`, 1 MiB).
const PAUSED_ACKS: usize = 400;
/// Below the producer's compression threshold (4096), so each body takes its full size.
const BODY_BYTES: usize = 4000;

/// One acknowledged send.
#[derive(Debug, Clone)]
struct Ack {
    body: String,
    queue_id: i32,
    queue_offset: i64,
    /// CommitLog position of the record (from its offsetMsgId).
    position: u64,
    /// The node that answered.
    broker_addr: String,
    /// Acknowledged while F2 was stopped.
    during_pause: bool,
}

/// msgId (UNIQ_KEY) -> its acknowledgement.
type Acks = HashMap<String, Ack>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_flush_os_crash_of_a_follower_then_leader_kill_loses_nothing_acknowledged() {
    let outcome = crash_follower_then_kill_leader("SYNC_FLUSH").await;
    assert!(
        outcome.dropped_bytes > 0,
        "the crash dropped no unsynced byte: the test proved nothing"
    );
    assert!(
        outcome.lost.is_empty(),
        "with SYNC_FLUSH, {} of {} acknowledged messages were lost ({} past F1's msync'd \
         point and F2's log): {:?}",
        outcome.lost.len(),
        outcome.acked,
        outcome.expected_lost.len(),
        outcome.lost
    );
    assert!(
        outcome.expected_lost.is_empty(),
        "F1 acknowledged entries past its msync'd point: {:?}",
        outcome.expected_lost
    );
    println!(
        "with SYNC_FLUSH, 0 of {} acknowledged messages were lost ({} acknowledged while F2 \
         was stopped; F1's crash dropped {} unsynced bytes)",
        outcome.acked, outcome.acked_during_pause, outcome.dropped_bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_flush_os_crash_of_a_follower_then_leader_kill_loses_what_it_had_not_flushed() {
    let outcome = crash_follower_then_kill_leader("ASYNC_FLUSH").await;
    println!(
        "with ASYNC_FLUSH, {} of {} acknowledged messages were lost: those acknowledged while \
         F2 was stopped ({}) that lay past both F1's last msync and F2's log ({} expected); \
         F1's crash dropped {} unsynced bytes",
        outcome.lost.len(),
        outcome.acked,
        outcome.acked_during_pause,
        outcome.expected_lost.len(),
        outcome.dropped_bytes
    );
    assert!(
        !outcome.expected_lost.is_empty(),
        "no acknowledged message lay past F1's msync'd point and F2's log: the test proved \
         nothing"
    );
    assert_eq!(
        outcome.lost, outcome.expected_lost,
        "the messages lost are exactly those acknowledged while F2 was stopped and past both \
         F1's msync'd point and F2's log"
    );
}

/// What one run lost and what it should have.
struct Outcome {
    acked: usize,
    acked_during_pause: usize,
    dropped_bytes: u64,
    /// msgIds acknowledged and not read back at their acknowledged place.
    lost: BTreeSet<String>,
    /// msgIds acknowledged while F2 was stopped, past F1's recorded point and F2's log.
    expected_lost: BTreeSet<String>,
}

async fn crash_follower_then_kill_leader(flush: &str) -> Outcome {
    let mut cluster = Cluster::start(&format!(
        "flushDiskType={flush}\nflushIntervalCommitLog=60000\ntestRecordFlushedPosition=true"
    ));
    let leader_addr = cluster.wait_ready(Duration::from_secs(30)).await;
    let l = cluster.node_index(&leader_addr);
    let (f1, f2) = ((l + 1) % 3, (l + 2) % 3);
    println!(
        "{flush}: L = n{l} (leader in terms {:?}), F1 = n{f1}, F2 = n{f2}",
        cluster.led_terms(l)
    );

    let mut config = ProducerConfig::new(&cluster.namesrv_addr, "t44");
    config.send_msg_timeout_ms = 5_000;
    let producer = Arc::new(Producer::start(config).await.unwrap());
    let acks = Arc::new(Mutex::new(Acks::new()));
    send_sequentially(&producer, "before", 20, &acks).await;
    let setup_end = cluster
        .wait_commit_logs_identical(&[0, 1, 2], Duration::from_secs(30))
        .await as u64;
    let synced_at = wait_flushed_to(&cluster, f1, setup_end, Duration::from_secs(120)).await;
    println!("n{f1} (F1) msync'd its CommitLog to {synced_at}");
    send_sequentially(&producer, "between", 20, &acks).await;
    let before_pause = cluster
        .wait_commit_logs_identical(&[0, 1, 2], Duration::from_secs(30))
        .await as u64;

    cluster.pause(f2);
    println!("n{f2} (F2) SIGSTOPped with its CommitLog at {before_pause} bytes");
    let running = Arc::new(AtomicBool::new(true));
    let not_acked = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..PRODUCERS)
        .map(|task| {
            let (producer, acks) = (producer.clone(), acks.clone());
            let (running, not_acked) = (running.clone(), not_acked.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while running.load(Ordering::Relaxed) {
                    let tag = format!("paused-{task}-{i}");
                    i += 1;
                    if !send(&producer, &tag, true, &acks).await {
                        not_acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while count_during_pause(&acks) < PAUSED_ACKS {
        assert!(
            Instant::now() < deadline,
            "only {} sends acknowledged while F2 was stopped",
            count_during_pause(&acks)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{} sends acknowledged while F2 was stopped; L led terms {:?}",
        count_during_pause(&acks),
        cluster.led_terms(l)
    );

    let (flushed_at, dropped_bytes) = crash_with_unsynced_writes(&mut cluster, f1).await;
    println!(
        "n{f1} (F1) SIGKILLed and crashed: its CommitLog kept to the {flushed_at} bytes \
         msync'd, {dropped_bytes} unsynced bytes dropped"
    );
    let l_terms = cluster.led_terms(l);
    cluster.kill(l);
    running.store(false, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    let l_written = written_bytes(&cluster, l);
    let f2_written = written_bytes(&cluster, f2);
    println!(
        "n{l} (L, leader in terms {l_terms:?}) SIGKILLed with {l_written} CommitLog bytes; \
         {} sends acknowledged while F2 was stopped, {} not",
        count_during_pause(&acks),
        not_acked.load(Ordering::Relaxed)
    );
    assert_eq!(
        f2_written, before_pause,
        "F2's CommitLog changed while it was stopped"
    );
    assert!(
        l_written > before_pause,
        "L wrote nothing while F2 was stopped"
    );
    let others = acks
        .lock()
        .unwrap()
        .values()
        .filter(|a| a.during_pause && a.broker_addr != leader_addr)
        .count();
    assert_eq!(
        others, 0,
        "sends acknowledged while F2 was stopped came from L only"
    );

    // F2 resumes and takes what its sockets still hold from L; then F1 and F2 elect a
    // leader without L.
    cluster.resume(f2);
    let f2_end = steady_written_bytes(&cluster, f2).await;
    println!(
        "n{f2} (F2) resumed: its CommitLog ends at {f2_end} ({} bytes taken from what L had \
         sent it before it stopped)",
        f2_end - before_pause
    );
    cluster.start_node(f1);
    let new_addr = cluster
        .wait_for_leader(Some(&leader_addr), Duration::from_secs(60))
        .await;
    let new = cluster.node_index(&new_addr);
    assert!(cluster.nodes[l].child.is_none(), "L is down");
    let new_term = *cluster
        .led_terms(new)
        .last()
        .expect("the new leader logged it");
    println!("with n{l} (L) down, n{new} was elected in term {new_term}");
    assert!(
        new != l && l_terms.iter().all(|t| *t < new_term),
        "a new term without L"
    );

    // L comes back; Raft truncates what it has that the new leader lacks.
    cluster.start_node(l);
    let caught_up =
        commit_logs_become_identical(&cluster, &[l, new], Duration::from_secs(60)).await;
    report_rejoin(&cluster, l, f1, caught_up);
    assert!(
        caught_up || flush == "ASYNC_FLUSH",
        "n{l} (L) never caught up with n{new}; logs in {}",
        cluster.path().display()
    );
    for i in 0..3 {
        println!("n{i} led terms {:?}", cluster.led_terms(i));
    }
    producer.shutdown().await;

    let acks = acks.lock().unwrap().clone();
    let kept_below = flushed_at.max(f2_end);
    let expected_lost: BTreeSet<String> = acks
        .iter()
        .filter(|(_, a)| a.during_pause && a.position >= kept_below)
        .map(|(id, _)| id.clone())
        .collect();
    let lost = read_back_lost(&cluster, &acks, &expected_lost).await;
    Outcome {
        acked: acks.len(),
        acked_during_pause: acks.values().filter(|a| a.during_pause).count(),
        dropped_bytes,
        lost,
        expected_lost,
    }
}

/// Prints whether L caught up after its restart, and if not, why.
fn report_rejoin(cluster: &Cluster, l: usize, f1: usize, caught_up: bool) {
    let log = |i: usize| std::fs::read_to_string(&cluster.nodes[i].log).unwrap();
    if caught_up {
        println!(
            "n{l} (L) restarted and caught up{}",
            if log(l).contains("truncated CommitLog") {
                ", its extra entries truncated"
            } else {
                ""
            }
        );
        return;
    }
    // ASYNC_FLUSH: L applied entries that the group no longer has.
    println!(
        "n{l} (L) restarted and did NOT catch up: openraft's assertion that no entry at or \
         below its applied point is replaced {}; F1 {}",
        if log(l).contains("self.committed()") {
            "panicked its Raft core"
        } else {
            "did not fire"
        },
        if log(f1).contains("that the group no longer has") {
            "stopped its state machine: it had applied entries the group no longer has"
        } else {
            "runs"
        }
    );
}

/// Waits until node `i` records its CommitLog msync'd to `position` or further; returns
/// the recorded point.
async fn wait_flushed_to(cluster: &Cluster, i: usize, position: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let record = flushed_record(cluster, i);
        if record >= position {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "n{i} msync'd only {record} of {position} bytes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Node `i`'s CommitLog bytes, trailing zero fill cut.
fn written_bytes(cluster: &Cluster, i: usize) -> u64 {
    cluster.commit_logs_of(&[i])[0].len() as u64
}

/// Node `i`'s CommitLog length once it has not changed for 1.5 s.
async fn steady_written_bytes(cluster: &Cluster, i: usize) -> u64 {
    let mut last = written_bytes(cluster, i);
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_millis(1500) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = written_bytes(cluster, i);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

/// Whether the CommitLogs of the nodes at `indexes` become byte-identical within `timeout`.
async fn commit_logs_become_identical(
    cluster: &Cluster,
    indexes: &[usize],
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let logs = cluster.commit_logs_of(indexes);
        if logs.windows(2).all(|w| w[0] == w[1]) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Sends `count` messages one after another; each must be acknowledged.
async fn send_sequentially(producer: &Producer, tag: &str, count: usize, acks: &Mutex<Acks>) {
    for i in 0..count {
        let tag = format!("{tag}-{i}");
        assert!(send(producer, &tag, false, acks).await, "send {tag} failed");
    }
}

/// Sends one message (`tag` padded to [`BODY_BYTES`]); records it if acknowledged and says
/// whether it was.
async fn send(producer: &Producer, tag: &str, during_pause: bool, acks: &Mutex<Acks>) -> bool {
    let body = format!("{tag:.<BODY_BYTES$}");
    let Ok(r) = producer.send(Message::new(TOPIC, body.clone())).await else {
        return false;
    };
    let (_, position) = remoting::message::decode_message_id(&r.offset_msg_id).unwrap();
    let ack = Ack {
        body,
        queue_id: r.queue.queue_id,
        queue_offset: r.queue_offset,
        position: position as u64,
        broker_addr: r.broker_addr,
        during_pause,
    };
    acks.lock().unwrap().insert(r.msg_id, ack);
    true
}

fn count_during_pause(acks: &Mutex<Acks>) -> usize {
    acks.lock()
        .unwrap()
        .values()
        .filter(|a| a.during_pause)
        .count()
}

/// The position node `i` last recorded as msync'd.
fn flushed_record(cluster: &Cluster, i: usize) -> u64 {
    let path = cluster.nodes[i]
        .store
        .join("commitlog")
        .join(chaos::disks::FLUSHED_RECORD);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// Whether the CommitLog under `store` holds anything at `position`: entries lie back to
/// back from the start, and whatever lies at a position (an entry's header, a segment's
/// padding marker) begins with non-zero bytes within its first 64 KiB (the next segment's,
/// if `position` is a segment's end).
fn written_past(store: &Path, position: u64) -> bool {
    use std::os::unix::fs::FileExt;
    common::segment_files(store)
        .into_iter()
        .any(|(start, path)| {
            let file = std::fs::File::open(path).unwrap();
            let len = file.metadata().unwrap().len();
            if start + len <= position {
                return false;
            }
            let mut buf = vec![0u8; 64 << 10];
            let n = file
                .read_at(&mut buf, position.saturating_sub(start))
                .unwrap();
            buf[..n].iter().any(|b| *b != 0)
        })
}

/// Catches node `i` holding CommitLog bytes no msync covered (pausing it to look), SIGKILLs
/// it and drops those bytes; returns (the recorded point, bytes dropped).
async fn crash_with_unsynced_writes(cluster: &mut Cluster, i: usize) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for attempt in 1.. {
        cluster.pause(i);
        if written_past(&cluster.nodes[i].store, flushed_record(cluster, i)) {
            println!("n{i} caught holding unsynced writes at look {attempt}");
            break;
        }
        cluster.resume(i);
        assert!(Instant::now() < deadline, "n{i} never held unsynced writes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.kill(i);
    let store = cluster.nodes[i].store.clone();
    tokio::task::spawn_blocking(move || chaos::disks::drop_unsynced_commit_log(&store))
        .await
        .unwrap()
        .unwrap()
}

/// Reads the topic back until the acknowledged messages missing from their acknowledged
/// place are `expected` (the new leader may still be applying) or 30 s pass; returns them.
async fn read_back_lost(
    cluster: &Cluster,
    acks: &Acks,
    expected: &BTreeSet<String>,
) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let queues = common::drain_topic(&cluster.namesrv_addr, TOPIC).await;
        common::assert_offsets_contiguous(&queues);
        let mut stored: HashMap<&str, Vec<(String, i32, i64)>> = HashMap::new();
        for (queue_id, messages) in &queues {
            for m in messages {
                stored
                    .entry(m.property("UNIQ_KEY").unwrap_or_default())
                    .or_default()
                    .push((
                        String::from_utf8_lossy(&m.body).to_string(),
                        *queue_id,
                        m.queue_offset,
                    ));
            }
        }
        let lost: BTreeSet<String> = acks
            .iter()
            .filter(|(id, a)| {
                let place = (a.body.clone(), a.queue_id, a.queue_offset);
                !stored.get(id.as_str()).is_some_and(|p| p.contains(&place))
            })
            .map(|(id, _)| id.clone())
            .collect();
        if &lost == expected || Instant::now() > deadline {
            return lost;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
