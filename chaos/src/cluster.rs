//! A cluster of real `rocketraft` processes: one name server and one or two three-node
//! broker groups on loopback, each node a child process with its own data directory,
//! config file and log under the run directory. Nodes can be SIGKILLed, stopped with
//! SIGTERM, paused (SIGSTOP), resumed and restarted. Only processes this cluster
//! started are signalled, by PID; every one is ended when the cluster is dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use client::NameServerClient;

/// Group names, in order (`--groups 2` uses both).
pub const GROUP_NAMES: [&str; 2] = ["broker-a", "broker-b"];
/// Queues per topic on every group.
pub const QUEUES_PER_TOPIC: i32 = 4;
/// Longest wait for a SIGTERMed process to exit before it is killed.
const STOP_WAIT_MS: u64 = 10_000;

/// A free loopback port (bound then released; good enough on loopback).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One broker node.
pub struct Node {
    pub group: String,
    pub name: String,
    pub addr: String,
    pub conf: PathBuf,
    pub store: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl Node {
    /// `broker-a/n1`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.group, self.name)
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct Cluster {
    binary: PathBuf,
    dir: PathBuf,
    pub namesrv_addr: String,
    namesrv: Option<Child>,
    pub nodes: Vec<Node>,
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a PID of a child this cluster started and has not reaped.
    unsafe {
        libc::kill(pid, sig);
    }
}

impl Cluster {
    /// Starts a name server and `groups` three-node groups from `binary`, with all data
    /// under `dir`. `flush` is the groups' `flushDiskType`.
    pub fn start(binary: &Path, dir: &Path, groups: usize, flush: &str) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let namesrv_addr = format!("127.0.0.1:{}", free_port()?);
        let mut cluster = Cluster {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            namesrv_addr: namesrv_addr.clone(),
            namesrv: None,
            nodes: Vec::new(),
        };
        let namesrv = cluster.spawn(
            &[
                "namesrv",
                "--listen",
                &namesrv_addr,
                "--scan-interval-ms",
                "1000",
            ],
            &dir.join("namesrv.log"),
        )?;
        cluster.namesrv = Some(namesrv);
        for group in GROUP_NAMES.iter().take(groups.clamp(1, 2)) {
            let peer_ports = (0..3).map(|_| free_port()).collect::<Result<Vec<_>, _>>()?;
            let peers = peer_ports
                .iter()
                .enumerate()
                .map(|(i, p)| format!("n{i}-127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(";");
            for i in 0..3 {
                let port = free_port()?;
                let store = dir.join(format!("{group}-n{i}"));
                let conf = dir.join(format!("{group}-n{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "brokerClusterName=ChaosCluster\nbrokerName={group}\ndLegerGroup={group}\n\
                         brokerIP1=127.0.0.1\nlistenPort={port}\nnamesrvAddr={namesrv_addr}\n\
                         storePathRootDir={}\nenableDLegerCommitLog=true\ndLegerPeers={peers}\n\
                         dLegerSelfId=n{i}\nmappedFileSizeCommitLog=67108864\n\
                         registerNameServerPeriod=2000\ndefaultTopicQueueNums={QUEUES_PER_TOPIC}\n\
                         flushDiskType={flush}\n",
                        store.display()
                    ),
                )?;
                cluster.nodes.push(Node {
                    group: group.to_string(),
                    name: format!("n{i}"),
                    addr: format!("127.0.0.1:{port}"),
                    log: dir.join(format!("{group}-n{i}.log")),
                    conf,
                    store,
                    child: None,
                    paused: false,
                });
            }
        }
        for i in 0..cluster.nodes.len() {
            cluster.start_node(i)?;
        }
        Ok(cluster)
    }

    fn spawn(&self, args: &[&str], log: &Path) -> anyhow::Result<Child> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        Command::new(&self.binary)
            .args(args)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", self.binary.display()))
    }

    /// The run directory (data, configs, logs).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Indexes of the nodes of `group`.
    pub fn group_nodes(&self, group: &str) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].group == group)
            .collect()
    }

    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self.nodes.iter().map(|n| n.group.clone()).collect();
        groups.dedup();
        groups
    }

    pub fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        if self.nodes[i].child.is_some() {
            return Ok(());
        }
        let conf = self.nodes[i].conf.display().to_string();
        let child = self.spawn(&["broker", "-c", &conf], &self.nodes[i].log.clone())?;
        self.nodes[i].child = Some(child);
        self.nodes[i].paused = false;
        Ok(())
    }

    /// SIGKILL: the node stops at once; its files stay as they were.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            if node.paused {
                signal(child.id() as i32, libc::SIGCONT);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    /// SIGTERM and wait (bounded): a clean stop.
    pub fn stop(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            if node.paused {
                signal(child.id() as i32, libc::SIGCONT);
            }
            signal(child.id() as i32, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_millis(STOP_WAIT_MS);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    node.paused = false;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    pub fn pause(&mut self, i: usize) {
        if let Some(pid) = self.nodes[i].pid() {
            signal(pid, libc::SIGSTOP);
            self.nodes[i].paused = true;
        }
    }

    pub fn resume(&mut self, i: usize) {
        if let Some(pid) = self.nodes[i].pid() {
            signal(pid, libc::SIGCONT);
            self.nodes[i].paused = false;
        }
    }

    pub fn namesrv(&self) -> anyhow::Result<NameServerClient> {
        Ok(NameServerClient::new(
            &self.namesrv_addr,
            Duration::from_secs(2),
        )?)
    }

    /// The node the name server routes as `group`'s leader, if it is one of ours.
    pub async fn routed_leader(&self, group: &str) -> Option<usize> {
        let info = self.namesrv().ok()?.cluster_info().await.ok()?;
        let addr = info
            .broker_addr_table
            .get(group)?
            .leader_addr()?
            .to_string();
        self.nodes
            .iter()
            .position(|n| n.group == group && n.addr == addr)
    }

    /// Waits (up to `timeout`) for a routed leader of `group` that is running and not
    /// paused.
    pub async fn wait_for_leader(&self, group: &str, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.routed_leader(group).await {
                if self.nodes[i].is_running() && !self.nodes[i].paused {
                    return Ok(i);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{group}: no live routed leader within {timeout:?}; logs in {}",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every group has a leader and the default topic TBW102 is routed.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for group in self.groups() {
            self.wait_for_leader(&group, timeout).await?;
        }
        loop {
            let routed = match self.namesrv()?.topic_route("TBW102").await {
                Ok(Some(route)) => route.broker_datas.len() >= self.groups().len(),
                _ => false,
            };
            if routed {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("TBW102 never routed on every group");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Each node's CommitLog bytes with the trailing zero fill removed, by node index.
    pub fn commit_logs(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        self.nodes
            .iter()
            .map(|n| read_commit_log(&n.store))
            .collect()
    }

    /// Stops every node and the name server cleanly.
    pub fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
        if let Some(mut ns) = self.namesrv.take() {
            signal(ns.id() as i32, libc::SIGTERM);
            let _ = ns.wait();
        }
    }
}

/// A node's CommitLog: its 20-digit segment files in order, concatenated, with the
/// trailing zero fill (pre-written segment space) cut off.
pub fn read_commit_log(store: &Path) -> anyhow::Result<Vec<u8>> {
    let dir = store.join("commitlog");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().len() == 20)
                .unwrap_or(false)
        })
        .collect();
    files.sort();
    let mut all = Vec::new();
    for f in files {
        all.extend(std::fs::read(&f).with_context(|| format!("read {}", f.display()))?);
    }
    let end = all.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
    all.truncate(end);
    Ok(all)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if let Some(mut ns) = self.namesrv.take() {
            let _ = ns.kill();
            let _ = ns.wait();
        }
    }
}
