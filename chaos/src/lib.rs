//! rocketraft's chaos tool and checker: `rocketraft chaos run` starts a real cluster
//! (a name server and one or two three-node groups, each node its own process), runs a
//! recorded workload, injects faults on a seeded schedule bounded in count and time,
//! heals, drains every queue, checks the history and writes a report. It exits
//! non-zero on any lost, unexpected or reordered message, or replicas that disagree.
//!
//! # Layout
//!
//! - [`cluster`]: the processes: start, SIGKILL, SIGTERM, SIGSTOP/SIGCONT, restart,
//!   routed leaders, CommitLog bytes per node.
//! - [`history`]: the JSON-lines history every operation is recorded in.
//! - [`workload`]: producers (sync, async, ordered), push and pull consumers, drain.
//! - [`faults`]: fault kinds and the seeded schedule.
//! - [`checker`]: what the history proves (lost, unexpected, order, duplicates,
//!   recovery times, replica agreement).
//! - [`report`]: summary text and JSON, and the timeline SVG.

pub mod access;
pub mod checker;
pub mod cluster;
pub mod disks;
pub mod faults;
pub mod history;
pub mod net;
pub mod report;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use checker::ReplicaCheck;
use cluster::Cluster;
use faults::{FaultKind, Planned};
use history::{Event, Recorder};
use net::Net;
use workload::Workload;

/// Longest wait for a group to have a live leader again.
const LEADER_WAIT_MS: u64 = 60_000;
/// Longest wait for an acknowledged send after a heal.
const SERVICE_WAIT_MS: u64 = 30_000;
/// Longest wait for the consumers to catch up with the drained queues.
const CONSUMER_CATCH_UP_MS: u64 = 60_000;
/// Longest wait for replicas to converge before they are stopped and compared.
const REPLICA_WAIT_MS: u64 = 60_000;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand, Debug)]
enum What {
    /// Start a cluster, run a workload under faults, check and report.
    Run(Box<RunArgs>),
    /// Check a run's history again (replica results are read from the summary.json
    /// beside it) and rewrite its report.
    Check(CheckArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// The run directory (holding history.jsonl and summary.json).
    pub dir: PathBuf,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Faults to inject (at most).
    #[arg(long, default_value_t = 20)]
    pub faults: usize,
    /// Time budget of the fault phase, in seconds; no fault starts after it.
    #[arg(long, default_value_t = 120)]
    pub seconds: u64,
    /// Seed of the fault schedule (default: from the clock; printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where the history, report and node data go (default: /tmp/rocketraft-chaos-<seed>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Broker groups: 1 or 2.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=2))]
    pub groups: u64,
    /// flushDiskType of every node: SYNC_FLUSH or ASYNC_FLUSH.
    #[arg(long, default_value = "ASYNC_FLUSH")]
    pub flush: String,
    /// The deck of faults, `kind=count,...`; shuffled by the seed and dealt until
    /// `--faults` is reached.
    #[arg(long, default_value = faults::DEFAULT_MIX)]
    pub mix: String,
    /// The rocketraft binary to start nodes from (default: this executable).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Keep node data after a passing run (it is always kept after a failing one).
    #[arg(long)]
    pub keep_data: bool,
    /// Where nodes run: `namespaces` (each node in a network namespace of its own,
    /// needed for partition faults; needs root), `loopback` (partitions are skipped),
    /// or `auto` (namespaces when the machine allows them).
    #[arg(long, default_value = "auto", value_parser = ["auto", "namespaces", "loopback"])]
    pub net: String,
    /// Attach to a running cluster instead of starting one: its name server address.
    /// Needs `--attach-pids`.
    #[arg(long, requires = "attach_pids")]
    pub attach_namesrv: Option<String>,
    /// The broker processes of the attached cluster, by PID (comma separated); each
    /// must be a `rocketraft broker -c <conf> ...` command. Killed nodes are restarted
    /// with their own command line; the cluster is left running afterwards.
    #[arg(long, value_delimiter = ',', requires = "attach_namesrv")]
    pub attach_pids: Vec<i32>,
    /// A `key=value` line added to every node's config (again for more), replacing the
    /// tool's own value of that key; e.g. `--conf dLegerHeartbeatIntervalMs=100`.
    #[arg(long = "conf", value_name = "KEY=VALUE")]
    pub conf: Vec<String>,
    /// Keep CommitLog segments only this many seconds (`fileReservedTimeSeconds`, with
    /// `deleteWhen=*`, 256 KiB segments and a retention pass every second): segments are
    /// deleted and the Raft log purged during the run, so a node that restarts behind
    /// the leader's first kept entry, or is replaced, catches up by snapshot. The
    /// checker then does not ask for values sent more than this long (less 3 s) before
    /// the end, and fails one found deleted earlier.
    #[arg(long)]
    pub retention_seconds: Option<u64>,
    /// Run the brokers with RocketMQ's ACL (`aclEnable=true` and a `plain_acl.yml` the
    /// tool writes with one admin account and a fresh secret): every client of the run
    /// signs, and after the faults unsigned, wrongly signed and unknown-account sends must
    /// be refused with NO_PERMISSION on the leader of the moment (the run fails otherwise).
    #[arg(long)]
    pub acl: bool,
}

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            faults: 20,
            seconds: 120,
            seed: None,
            out: None,
            groups: 1,
            flush: "ASYNC_FLUSH".into(),
            mix: faults::DEFAULT_MIX.into(),
            binary: None,
            keep_data: false,
            net: "auto".into(),
            attach_namesrv: None,
            attach_pids: Vec::new(),
            conf: Vec::new(),
            retention_seconds: None,
            acl: false,
        }
    }
}

/// `rocketraft chaos ...`.
pub async fn main(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Run(run_args) => {
            let verdict = run(*run_args).await?;
            if !verdict.passed {
                bail!("chaos run failed: {}", verdict.failures().join("; "));
            }
            Ok(())
        }
        What::Check(check_args) => {
            let verdict = recheck(&check_args.dir)?;
            if !verdict.passed {
                bail!("check failed: {}", verdict.failures().join("; "));
            }
            Ok(())
        }
    }
}

/// Re-runs the checker on a run directory and rewrites its report.
pub fn recheck(dir: &Path) -> anyhow::Result<checker::Verdict> {
    let events = history::read(&dir.join("history.jsonl"))?;
    let replicas = std::fs::read(dir.join("summary.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| serde_json::from_value(v.get("replicas")?.clone()).ok())
        .unwrap_or_default();
    let verdict = checker::check(&events, replicas);
    let header = format!("rocketraft chaos check of {}", dir.display());
    println!("{}", report::write(dir, &verdict, &events, &header)?);
    Ok(verdict)
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Waits (bounded) for an acknowledgement later than `after_us`.
async fn wait_for_ack(workload: &Workload, after_us: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if workload.last_ack_us.load(Ordering::Relaxed) > after_us {
            return true;
        }
        sleep_ms(20).await;
    }
    false
}

fn labels(cluster: &Cluster, nodes: &[usize]) -> String {
    let group = &cluster.nodes[nodes[0]].group;
    let names: Vec<&str> = nodes
        .iter()
        .map(|i| cluster.nodes[*i].name.as_str())
        .collect();
    format!("{group}/{}", names.join(","))
}

/// What a fault acts with besides the cluster.
struct Env<'a> {
    workload: &'a Workload,
    recorder: &'a Recorder,
    /// Whether partition faults can run, or why not.
    partition: &'a Result<(), String>,
    /// The nodes' small disks, when fill-disk faults can run.
    disks: Option<&'a disks::SmallDisks>,
    /// flushDiskType of every node.
    flush: &'a str,
}

/// How much of a crashed follower's CommitLog tail a `crash-follower` fault drops.
const CRASH_LOST_BYTES: u64 = 64 << 10;

/// Injects one fault, holds it, heals it, and waits for service to return.
async fn inject(
    cluster: &mut Cluster,
    env: &Env<'_>,
    id: u32,
    planned: &Planned,
) -> anyhow::Result<()> {
    let (workload, recorder, partition) = (env.workload, env.recorder, env.partition);
    let groups = cluster.groups();
    let group = groups[planned.group % groups.len()].clone();
    let leader_wait = Duration::from_millis(LEADER_WAIT_MS);
    let leader = cluster.wait_for_leader(&group, leader_wait).await?;
    let followers: Vec<usize> = cluster
        .group_nodes(&group)
        .into_iter()
        .filter(|i| *i != leader)
        .collect();
    let kind = planned.kind;
    let victims: Vec<usize> = match kind {
        FaultKind::KillLeader | FaultKind::PauseLeader | FaultKind::PartitionLeader => {
            vec![leader]
        }
        // A transfer's "victim" is its target.
        FaultKind::KillFollower
        | FaultKind::CrashFollower
        | FaultKind::TransferLeader
        | FaultKind::ReplaceNode => {
            vec![followers[(id as usize) % followers.len()]]
        }
        FaultKind::KillTwo | FaultKind::PartitionBridge => {
            vec![leader, followers[(id as usize) % followers.len()]]
        }
        FaultKind::FillDisk if id % 2 == 0 => vec![leader],
        FaultKind::FillDisk => vec![followers[(id as usize) % followers.len()]],
        FaultKind::RestartGroup => cluster.group_nodes(&group),
    };
    let target = labels(cluster, &victims);
    if kind.is_partition() {
        if let Err(reason) = partition {
            recorder.record(|t_us| Event::Note {
                t_us,
                text: format!("fault #{id} {kind} of {target} skipped: {reason}"),
            });
            return Ok(());
        }
    }
    let small_disk = env
        .disks
        .filter(|d| d.holds(&cluster.nodes[victims[0]].store));
    if kind == FaultKind::FillDisk && small_disk.is_none() {
        // Said once at the start of the run.
        return Ok(());
    }
    if matches!(kind, FaultKind::ReplaceNode | FaultKind::CrashFollower)
        && cluster.nodes[victims[0]].peer_addr.is_none()
    {
        recorder.record(|t_us| Event::Note {
            t_us,
            text: format!(
                "fault #{id} {kind} of {target} skipped: an attached node's config is not ours"
            ),
        });
        return Ok(());
    }
    let record_start = || {
        recorder.record(|t_us| Event::FaultStart {
            t_us,
            id,
            fault: kind.name().into(),
            target: target.clone(),
        })
    };
    // Recorded before the fault, so that every send failing from here on is this
    // fault's; except kill-two, whose start must be when both are down (the quorum
    // check counts acks of sends invoked after it).
    if kind != FaultKind::KillTwo {
        record_start();
    }
    // replace-node: whether the victim left the group (only then is its store deleted).
    let mut removed = false;
    // fill-disk: the filler file, and how often the victim's log said ENOSPC before.
    let mut filled: Option<(PathBuf, usize)> = None;
    match kind {
        FaultKind::PauseLeader => cluster.pause(leader),
        FaultKind::PartitionLeader => cluster.isolate(leader, true)?,
        FaultKind::PartitionBridge => cluster.cut(victims[0], victims[1], true)?,
        FaultKind::TransferLeader => {
            transfer_leader(cluster, recorder, id, &group, victims[0]).await
        }
        FaultKind::FillDisk => {
            let node = &cluster.nodes[victims[0]];
            let before = enospc_count(&node.log);
            let disk = small_disk.expect("checked above");
            filled = Some((disk.fill(&node.store)?, before));
        }
        FaultKind::CrashFollower => {
            cluster.kill(victims[0]);
            let node = &cluster.nodes[victims[0]];
            let text = if env.flush == "ASYNC_FLUSH" {
                let store = node.store.clone();
                let lost = tokio::task::spawn_blocking(move || {
                    disks::lose_commit_log_tail(&store, CRASH_LOST_BYTES)
                })
                .await??;
                match lost {
                    Some((file, end)) => format!(
                        "fault #{id}: {} crashed; the last {} KiB of its CommitLog (written \
                         to {end} in {}) dropped as unsynced pages",
                        node.label(),
                        CRASH_LOST_BYTES >> 10,
                        file.display()
                    ),
                    None => format!(
                        "fault #{id}: {} crashed with no CommitLog data",
                        node.label()
                    ),
                }
            } else {
                format!(
                    "fault #{id}: {} crashed; {} fsyncs every acknowledged CommitLog byte, so \
                     nothing is dropped",
                    node.label(),
                    env.flush
                )
            };
            println!("{text}");
            recorder.record(|t_us| Event::Note { t_us, text });
        }
        FaultKind::ReplaceNode => {
            cluster.kill(victims[0]);
            removed = remove_member(cluster, recorder, id, &group, victims[0]).await;
            if removed {
                cluster.wipe_for_rejoin(victims[0])?;
            }
        }
        _ => victims.iter().for_each(|i| cluster.kill(*i)),
    }
    if kind == FaultKind::KillTwo {
        record_start();
    }
    println!("fault #{id}: {kind} {target} (hold {} ms)", planned.hold_ms);
    sleep_ms(planned.hold_ms).await;
    recorder.record(|t_us| Event::FaultEnd {
        t_us,
        id,
        fault: kind.name().into(),
    });
    let healed_us = recorder.now_us();
    match kind {
        FaultKind::PauseLeader => cluster.resume(leader),
        FaultKind::PartitionLeader => cluster.isolate(leader, false)?,
        FaultKind::PartitionBridge => cluster.cut(victims[0], victims[1], false)?,
        FaultKind::TransferLeader => {}
        FaultKind::FillDisk => {
            let (filler, before) = filled.take().expect("filled at the start");
            let node = &cluster.nodes[victims[0]];
            let stopped = enospc_count(&node.log) > before;
            std::fs::remove_file(&filler)
                .with_context(|| format!("remove {}", filler.display()))?;
            let text = if stopped {
                format!(
                    "fault #{id}: {} stopped on ENOSPC; its disk is free again and it starts \
                     again by itself",
                    node.label()
                )
            } else {
                format!(
                    "fault #{id}: {} did not run out of space within the hold",
                    node.label()
                )
            };
            println!("{text}");
            recorder.record(|t_us| Event::Note { t_us, text });
        }
        FaultKind::ReplaceNode => {
            cluster.start_node(victims[0])?;
            if removed {
                add_member(cluster, recorder, id, &group, victims[0]).await;
            }
        }
        FaultKind::KillTwo => {
            // One comes back: a quorum again, so service must return before the other.
            cluster.start_node(victims[0])?;
            cluster.wait_for_leader(&group, leader_wait).await?;
            if !wait_for_ack(workload, healed_us, Duration::from_millis(SERVICE_WAIT_MS)).await {
                recorder.record(|t_us| Event::Note {
                    t_us,
                    text: format!(
                        "{}fault #{id}: no ack within {SERVICE_WAIT_MS} ms of quorum returning",
                        checker::LIVENESS
                    ),
                });
            }
            cluster.start_node(victims[1])?;
        }
        _ => {
            for i in &victims {
                cluster.start_node(*i)?;
            }
        }
    }
    cluster.wait_for_leader(&group, leader_wait).await?;
    if !wait_for_ack(workload, healed_us, Duration::from_millis(SERVICE_WAIT_MS)).await {
        recorder.record(|t_us| Event::Note {
            t_us,
            text: format!(
                "{}fault #{id}: no ack within {SERVICE_WAIT_MS} ms after healing",
                checker::LIVENESS
            ),
        });
    }
    sleep_ms(planned.gap_ms).await;
    Ok(())
}

/// Asks `group`'s leader to hand leadership to node `target`. A refused or failed transfer
/// is a note, not a failure: safety is what the checker judges, and a transfer may meet a
/// leader elected a moment ago or a target still catching up after an earlier fault.
async fn transfer_leader(
    cluster: &Cluster,
    recorder: &Recorder,
    id: u32,
    group: &str,
    target: usize,
) {
    let name = cluster.nodes[target].name.clone();
    let outcome = match cluster.namesrv() {
        Ok(namesrv) => {
            client::admin::transfer_leadership(&namesrv, group, &name, Duration::from_secs(10))
                .await
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    let text = match outcome {
        Ok(done) => format!(
            "fault #{id}: leadership of {group} moved to {} (term {}), appends held {} ms",
            done.leader_id, done.term, done.held_ms
        ),
        Err(e) => format!("fault #{id}: transfer of {group} to {name} did not happen: {e}"),
    };
    println!("{text}");
    recorder.record(|t_us| Event::Note { t_us, text });
}

/// How often a node's log has said "No space left on device".
fn enospc_count(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("No space left on device")
        .count()
}

/// Removes stopped node `victim` from `group` (as `rocketraft admin remove-node` does);
/// whether it left. A refusal (the rest of the group not answering after an earlier fault)
/// is a note: the node is then started again on its own store.
async fn remove_member(
    cluster: &Cluster,
    recorder: &Recorder,
    id: u32,
    group: &str,
    victim: usize,
) -> bool {
    let name = cluster.nodes[victim].name.clone();
    let outcome = match cluster.namesrv() {
        Ok(namesrv) => remove_with_retries(&namesrv, group, &name).await,
        Err(e) => Err(e.to_string()),
    };
    let (text, removed) = match outcome {
        Ok(m) => (
            format!(
                "fault #{id}: {name} removed from {group}; voters now {:?}",
                m.voters.keys().collect::<Vec<_>>()
            ),
            true,
        ),
        Err(e) => (
            format!("fault #{id}: {name} could not be removed from {group} (it restarts on its own store): {e}"),
            false,
        ),
    };
    println!("{text}");
    recorder.record(|t_us| Event::Note { t_us, text });
    removed
}

/// Removes `name`, asking again for up to 10 s while the leader refuses (a member that
/// just came back from an earlier fault may not answer its probe yet); a removal whose
/// answer was lost counts once the membership no longer names the node.
async fn remove_with_retries(
    namesrv: &client::NameServerClient,
    group: &str,
    name: &str,
) -> Result<client::admin::GroupMembers, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let error =
            match client::admin::remove_node(namesrv, group, name, Duration::from_secs(10)).await {
                Ok(members) => return Ok(members),
                Err(e) => e.to_string(),
            };
        if let Ok(m) = client::admin::group_members(namesrv, group, Duration::from_secs(5)).await {
            if !m.voters.contains_key(name) && !m.learners.contains_key(name) {
                return Ok(m);
            }
        }
        if Instant::now() >= deadline {
            return Err(error);
        }
        sleep_ms(500).await;
    }
}

/// Adds the emptied, restarted node `victim` back to `group` (as `rocketraft admin
/// add-node` does), waiting (bounded) for it to catch up and vote.
async fn add_member(cluster: &Cluster, recorder: &Recorder, id: u32, group: &str, victim: usize) {
    let node = &cluster.nodes[victim];
    let outcome = match (cluster.namesrv(), &node.peer_addr) {
        (Ok(namesrv), Some(peer)) => {
            client::admin::add_node(&namesrv, group, &node.name, peer, Duration::from_secs(60))
                .await
                .map_err(|e| e.to_string())
        }
        (Err(e), _) => Err(e.to_string()),
        (_, None) => Err("its peer address is unknown".into()),
    };
    let text = match outcome {
        Ok(m) => format!(
            "fault #{id}: {} added back to {group} empty; voters now {:?}",
            node.name,
            m.voters.keys().collect::<Vec<_>>()
        ),
        Err(e) => format!(
            "{}fault #{id}: {} could not be added back to {group}: {e}",
            checker::LIVENESS,
            node.name
        ),
    };
    println!("{text}");
    recorder.record(|t_us| Event::Note { t_us, text });
}

/// Compares each group's replicas: waits (bounded) for them to converge while
/// running, stops every node cleanly, then compares the CommitLog bytes.
async fn replica_agreement(
    cluster: &mut Cluster,
    tail_allowed: bool,
) -> anyhow::Result<Vec<ReplicaCheck>> {
    let deadline = Instant::now() + Duration::from_millis(REPLICA_WAIT_MS);
    loop {
        let logs = cluster.commit_logs()?;
        let agree = |g: &String| {
            let group: Vec<_> = cluster.group_nodes(g).iter().map(|i| &logs[*i]).collect();
            cluster::StoredLog::agree(&group)
        };
        let converged = cluster.groups().iter().all(agree);
        if converged || Instant::now() > deadline {
            break;
        }
        sleep_ms(500).await;
    }
    cluster.stop_all();
    let logs = cluster.commit_logs()?;
    Ok(cluster
        .groups()
        .iter()
        .map(|g| {
            let group: Vec<_> = cluster.group_nodes(g).iter().map(|i| &logs[*i]).collect();
            let start = group.iter().map(|l| l.start).max().unwrap_or(0);
            ReplicaCheck {
                group: g.clone(),
                from_position: start,
                lengths_bytes: group.iter().map(|l| l.from(start).len()).collect(),
                identical: cluster::StoredLog::agree(&group),
                tail_only: cluster::StoredLog::agree_but_tail(&group),
                tail_allowed,
            }
        })
        .collect())
}

/// Runs one chaos run and returns the checker's verdict (the report is written).
pub async fn run(args: RunArgs) -> anyhow::Result<checker::Verdict> {
    let deck = faults::parse_mix(&args.mix)?;
    let wants_partitions = deck.iter().any(|k| k.is_partition());
    let nodes = 3 * args.groups as usize;
    let net = match args.net.as_str() {
        _ if args.attach_namesrv.is_some() => {
            Err("an attached cluster runs on the host's network".to_string())
        }
        "loopback" => Err("--net loopback".to_string()),
        "auto" if !wants_partitions => Err("the mix has no partition faults".to_string()),
        mode => match Net::create(nodes) {
            Ok(net) => Ok(Arc::new(net)),
            Err(e) if mode == "auto" => {
                Err(format!("network namespaces are not available here: {e:#}"))
            }
            Err(e) => return Err(e.context("--net namespaces")),
        },
    };
    let net = match net {
        Ok(net) => net,
        Err(reason) => return run_in(args, None, Err(reason)).await,
    };
    // The run itself (workload, name server, checker) lives in the hub namespace: a
    // thread of its own enters it and runs a runtime whose threads inherit it.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("chaos-hub".into())
        .spawn(move || {
            let result = net.enter_hub().and_then(|()| {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                runtime.block_on(run_in(args, Some(net.clone()), Ok(())))
            });
            // The cluster (and every process in the namespaces) is gone by now: delete
            // the namespaces before answering, so they are gone when the caller exits.
            drop(net);
            let _ = tx.send(result);
        })
        .context("start the chaos thread")?;
    rx.await
        .context("the chaos thread ended without a verdict")?
}

/// [`run`], in the network the cluster will use; `partition` says whether partition
/// faults can run, or why not.
async fn run_in(
    args: RunArgs,
    net: Option<Arc<Net>>,
    partition: Result<(), String>,
) -> anyhow::Result<checker::Verdict> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/rocketraft-chaos-{seed}")));
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("locate the rocketraft binary")?,
    };
    let deck = faults::parse_mix(&args.mix)?;
    let cluster_dir = out.join("cluster");
    // Declared before the cluster: unmounted after its nodes are gone.
    let disks: Result<disks::SmallDisks, String> = if !deck.contains(&FaultKind::FillDisk) {
        Err("the mix has no fill-disk faults".into())
    } else if args.attach_namesrv.is_some() {
        Err("an attached cluster's disks are not the tool's to fill".into())
    } else {
        let stores: Vec<PathBuf> = cluster::GROUP_NAMES
            .iter()
            .take(args.groups as usize)
            .flat_map(|g| (0..3).map(|i| cluster::store_path(&cluster_dir, g, i)))
            .collect();
        disks::SmallDisks::mount(&stores).map_err(|e| format!("{e:#} (needs root)"))
    };
    if args.retention_seconds.is_some() && args.attach_namesrv.is_some() {
        bail!("--retention-seconds configures the nodes this tool starts; an attached cluster keeps its own");
    }
    let mut conf = args.conf.clone();
    let acl_secret = if args.acl {
        if args.attach_namesrv.is_some() {
            bail!("--acl configures the nodes this tool starts; an attached cluster keeps its own");
        }
        let secret = access::new_secret();
        std::fs::create_dir_all(&cluster_dir)?;
        // `aclFile` defaults to plain_acl.yml beside each node's config, in this directory.
        std::fs::write(
            cluster_dir.join("plain_acl.yml"),
            access::plain_acl_yml(&secret),
        )?;
        conf.push("aclEnable=true".into());
        access::sign_as(&secret);
        Some(secret)
    } else {
        None
    };
    if let Some(seconds) = args.retention_seconds {
        let ours = [
            format!("fileReservedTimeSeconds={seconds}"),
            "deleteWhen=*".to_string(),
            "mappedFileSizeCommitLog=262144".to_string(),
            "cleanResourceInterval=1000".to_string(),
        ];
        // A key the caller gave with --conf keeps the caller's value.
        for line in ours {
            let key = line.split('=').next().unwrap_or_default();
            if !conf.iter().any(|c| c.starts_with(&format!("{key}="))) {
                conf.push(line);
            }
        }
    }
    let mut cluster = match &args.attach_namesrv {
        Some(namesrv) => Cluster::attach(namesrv, &args.attach_pids, &cluster_dir)?,
        None => Cluster::start_with(
            &binary,
            &cluster_dir,
            args.groups as usize,
            &args.flush,
            net,
            &conf.join("\n"),
        )?,
    };
    let groups = cluster.groups().len();
    let plan = faults::schedule(args.faults, &deck, groups, seed);
    let header = format!(
        "rocketraft chaos run: seed {seed}, {} faults planned (mix {}), {} s budget, {groups} group(s), {}; out {}",
        plan.len(),
        args.mix,
        args.seconds,
        args.flush,
        out.display()
    );
    println!("{header}");

    let recorder = Arc::new(Recorder::create(&out.join("history.jsonl"))?);
    if let Some(seconds) = args.retention_seconds {
        println!("retention: CommitLog segments of 256 KiB kept {seconds} s");
        recorder.record(|t_us| Event::Retention {
            t_us,
            retention_ms: seconds * 1000,
        });
    }
    match &partition {
        Err(reason) if deck.iter().any(|k| k.is_partition()) => {
            println!("partition faults skipped: {reason}");
            recorder.record(|t_us| Event::Note {
                t_us,
                text: format!("partition faults skipped: {reason}"),
            });
        }
        Ok(()) => println!(
            "nodes run in network namespaces (partitions on); name server {}",
            cluster.namesrv_addr
        ),
        Err(_) => {}
    }
    match &disks {
        Ok(_) => println!(
            "each node's data is on a tmpfs of its own ({} MiB) for fill-disk faults",
            disks::DISK_BYTES >> 20
        ),
        Err(reason) if deck.contains(&FaultKind::FillDisk) => {
            println!("fill-disk faults skipped: {reason}");
            recorder.record(|t_us| Event::Note {
                t_us,
                text: format!("fill-disk faults skipped: {reason}"),
            });
        }
        Err(_) => {}
    }
    cluster.wait_ready(Duration::from_secs(60)).await?;
    workload::create_topics(&cluster.namesrv_addr, cluster::QUEUES_PER_TOPIC).await?;
    // An attached cluster keeps RocketMQ's delay levels (10 s, 30 s, ... between tries):
    // too slow for the retry consumer's checks to settle in a run.
    let shape = workload::Shape {
        retry_consumer: !cluster.is_attached(),
        // Its check-backs, too, need the chaos cluster's short settings.
        transactional_producers: usize::from(!cluster.is_attached()),
        ..Default::default()
    };
    let mut workload = Workload::start(&cluster.namesrv_addr, recorder.clone(), shape).await?;
    if !wait_for_ack(&workload, 0, Duration::from_secs(30)).await {
        bail!(
            "no send acknowledged within 30 s of start; logs in {}",
            cluster_dir.display()
        );
    }
    sleep_ms(1_000).await;

    let started = Instant::now();
    let budget = Duration::from_secs(args.seconds);
    for (n, planned) in plan.iter().enumerate() {
        if started.elapsed() > budget {
            let text = format!(
                "time budget of {} s reached after {n} of {} faults",
                args.seconds,
                plan.len()
            );
            println!("{text}");
            recorder.record(|t_us| Event::Note { t_us, text });
            break;
        }
        let id = n as u32 + 1;
        let env = Env {
            workload: &workload,
            recorder: &recorder,
            partition: &partition,
            disks: disks.as_ref().ok(),
            flush: &args.flush,
        };
        if let Err(e) = inject(&mut cluster, &env, id, planned).await {
            let text = format!(
                "{}fault phase stopped at fault #{id}: {e:#}",
                checker::LIVENESS
            );
            println!("{text}");
            recorder.record(|t_us| Event::Note { t_us, text });
            break;
        }
    }

    // Heal: the network whole, every node up and running, service back, then a
    // little more load.
    if let Some(net) = &cluster.net {
        net.heal()?;
    }
    for i in 0..cluster.nodes.len() {
        let _ = std::fs::remove_file(cluster.nodes[i].store.join(disks::FILLER));
        cluster.resume(i);
        cluster.start_node(i)?;
    }
    if let Err(e) = cluster
        .wait_ready(Duration::from_millis(LEADER_WAIT_MS))
        .await
    {
        let text = format!("{}after the final heal: {e:#}", checker::LIVENESS);
        recorder.record(|t_us| Event::Note { t_us, text });
    }
    let healed = recorder.now_us();
    if !wait_for_ack(&workload, healed, Duration::from_millis(SERVICE_WAIT_MS)).await {
        let text = format!(
            "{}no ack within {SERVICE_WAIT_MS} ms of the final heal",
            checker::LIVENESS
        );
        recorder.record(|t_us| Event::Note { t_us, text });
    }
    sleep_ms(2_000).await;
    workload.stop_producers().await;
    // The last timer messages fall due before the drain reads their topic.
    sleep_ms(workload::DELAY_MAX_MS + 3_000).await;
    println!(
        "faults done after {:.0} s; draining",
        started.elapsed().as_secs_f64()
    );

    let unresolved = workload.settle_transactions().await;
    if unresolved > 0 {
        recorder.record(|t_us| Event::Note {
            t_us,
            text: format!("{unresolved} committed transactions not received before the drain"),
        });
    }
    let ends = workload::drain(&cluster.namesrv_addr, &recorder).await?;
    let behind = workload
        .wait_consumers(&ends, Duration::from_millis(CONSUMER_CATCH_UP_MS))
        .await;
    if !behind.is_empty() {
        recorder.record(|t_us| Event::Note {
            t_us,
            text: format!("consumers still behind after {CONSUMER_CATCH_UP_MS} ms: {behind:?}"),
        });
    }
    workload.settle_retries().await?;
    workload.stop_consumers().await;
    if let Some(secret) = &acl_secret {
        let problems = access::probe(
            &cluster.namesrv_addr,
            workload::ROUND_ROBIN_TOPICS[0],
            secret,
        )
        .await;
        println!(
            "ACL after the faults: {}",
            if problems.is_empty() {
                "held".to_string()
            } else {
                problems.join("; ")
            }
        );
        for problem in problems {
            recorder.record(|t_us| Event::Note {
                t_us,
                text: format!("{}{problem}", checker::ACCESS),
            });
        }
    }
    let replicas = replica_agreement(&mut cluster, args.retention_seconds.is_some()).await?;
    recorder.flush()?;

    let events = history::read(&out.join("history.jsonl"))?;
    let mut verdict = checker::check(&events, replicas);
    verdict.snapshot_installs = cluster
        .nodes
        .iter()
        .filter_map(|n| std::fs::read_to_string(&n.log).ok())
        .map(|log| log.matches("snapshot installed").count())
        .sum();
    let text = report::write(&out, &verdict, &events, &header)?;
    println!("{text}");
    println!(
        "report: {}/summary.txt, summary.json, timeline.svg; history: history.jsonl",
        out.display()
    );
    if cluster.is_attached() {
        // Nodes this run restarted have new PIDs: say which, for whoever runs the cluster.
        let pids: String = cluster
            .nodes
            .iter()
            .map(|n| format!("{} {}\n", n.label(), n.pid().unwrap_or(0)))
            .collect();
        std::fs::write(out.join("pids.txt"), &pids)?;
        println!(
            "the attached cluster is left running; its brokers now (also in pids.txt):\n{pids}"
        );
    }
    if verdict.passed && !args.keep_data && !cluster.is_attached() {
        remove_node_data(&cluster);
    }
    Ok(verdict)
}

/// Removes node stores (configs and logs stay).
fn remove_node_data(cluster: &Cluster) {
    for n in &cluster.nodes {
        let _ = std::fs::remove_dir_all(&n.store);
    }
}

/// Where `cargo` put the `rocketraft` binary next to a test executable
/// (`target/<profile>/deps/<test>` -> `target/<profile>/rocketraft`).
pub fn binary_next_to(exe: &Path) -> Option<PathBuf> {
    let candidate = exe.parent()?.parent()?.join("rocketraft");
    candidate.exists().then_some(candidate)
}

/// The config lines the tool's own tests give debug brokers: twice the default Raft timers.
/// openraft gives each append-entries RPC one heartbeat, and 50 ms (the default) is too
/// little for a debug follower sharing CI's two cores with the test (a follower kill then
/// paused acknowledgements for about a second while the other follower's answers timed out).
pub fn debug_build_timers() -> Vec<String> {
    vec![
        "dLegerHeartbeatIntervalMs=100".into(),
        "dLegerElectionTimeoutMinMs=300".into(),
        "dLegerElectionTimeoutMaxMs=600".into(),
    ]
}

/// The `rocketraft` binary a test should start: `ROCKETRAFT_BIN`, or the one `cargo`
/// built next to the running test executable. Panics with what to do when there is none.
pub fn test_binary() -> PathBuf {
    std::env::var_os("ROCKETRAFT_BIN")
        .map(PathBuf::from)
        .or_else(|| binary_next_to(&std::env::current_exe().ok()?))
        .expect("no rocketraft binary: run `cargo build -p rocketraft` or set ROCKETRAFT_BIN")
}
