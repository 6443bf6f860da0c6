//! A cluster of real `rocketraft` processes: one name server and one or two three-node
//! broker groups, each node a child process with its own data directory, config file
//! and log under the run directory. Nodes run on loopback, or each in a network
//! namespace of its own when the run partitions ([`crate::net`]). A cluster can also be
//! *attached*: nodes someone else started, named by PID, whose command lines are read
//! from `/proc` so that they can be restarted the same way.
//!
//! Nodes can be SIGKILLed, stopped with SIGTERM, paused (SIGSTOP), resumed and
//! restarted. Only processes this cluster started, or was given by PID, are signalled;
//! the ones it started are ended when the cluster is dropped (an attached cluster is
//! left running).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use client::NameServerClient;

use crate::net::Net;

/// Every delay level 1 s: the retry consumer's tries come 1 s apart.
const CHAOS_DELAY_LEVELS: &str = "1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s";

/// Group names, in order (`--groups 2` uses both).
pub const GROUP_NAMES: [&str; 2] = ["broker-a", "broker-b"];
/// Queues per topic on every group.
pub const QUEUES_PER_TOPIC: i32 = 4;
/// Longest wait for a SIGTERMed process to exit before it is killed.
const STOP_WAIT_MS: u64 = 10_000;
/// Ports used inside namespaces, where every node has an address of its own.
const NS_NAMESRV_PORT: u16 = 9876;
const NS_LISTEN_PORT: u16 = 10911;
const NS_PEER_PORT: u16 = 40911;

/// `n` distinct free loopback ports for servers this process will start, each reserved
/// for the life of this process.
///
/// A port the kernel hands out for `bind(0)` is taken from the ephemeral range, where, once
/// released, it can go to any other program's `bind(0)` or outgoing connection before the
/// child process binds it: under a parallel test run a name server once found its port taken
/// by another test's name server, and its brokers registered with the wrong one. So the ports
/// come from below the ephemeral range, where the kernel never picks, and each is reserved
/// with an open-file-description lock on its byte of one shared lock file: a port another
/// process reserved is skipped, and the reservation ends when this process does, so nothing
/// goes stale. A port something already listens on is skipped too.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let mut reserved = RESERVED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    if reserved.file.is_none() {
        let path = std::env::temp_dir().join("rocketraft-test-ports.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        reserved.file = Some(file);
    }
    let range = reservable_ports();
    let span = u32::from(range.end - range.start);
    let start: u32 = rand::random::<u32>() % span;
    let mut ports = Vec::with_capacity(n);
    for step in 0..span {
        if ports.len() == n {
            break;
        }
        let port = range.start + ((start + step) % span) as u16;
        if reserved.ports.contains(&port) || !reserved.try_lock(port)? {
            continue;
        }
        reserved.ports.insert(port);
        // Held by us now; still skip it if some other program already listens on it.
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    if ports.len() < n {
        bail!(
            "only {} of {n} free loopback ports in {range:?}",
            ports.len()
        );
    }
    Ok(ports)
}

/// Ports this process reserved, and the lock file that holds the reservations.
struct ReservedPorts {
    file: Option<std::fs::File>,
    ports: std::collections::BTreeSet<u16>,
}

static RESERVED_PORTS: std::sync::Mutex<ReservedPorts> = std::sync::Mutex::new(ReservedPorts {
    file: None,
    ports: std::collections::BTreeSet::new(),
});

impl ReservedPorts {
    /// Locks byte `port` of the lock file without waiting: false when another process
    /// holds it.
    fn try_lock(&self, port: u16) -> anyhow::Result<bool> {
        use std::os::fd::AsRawFd;
        let file = self.file.as_ref().expect("opened above");
        // SAFETY: a zeroed flock is a valid value; the fields that matter are set below.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = libc::F_WRLCK as _;
        lock.l_whence = libc::SEEK_SET as _;
        lock.l_start = libc::off_t::from(port);
        lock.l_len = 1;
        // SAFETY: the descriptor is open for the life of the process and `lock` is valid.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) } == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
            _ => Err(err).context("lock a port in the port reservation file"),
        }
    }
}

/// Ports below the kernel's ephemeral range (`ip_local_port_range`), from 10000; above it
/// when it starts too low to leave room.
fn reservable_ports() -> std::ops::Range<u16> {
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    if low >= 12_000 {
        10_000..low
    } else {
        high.saturating_add(1).max(1024)..u16::MAX
    }
}

/// Where [`Cluster::start`] puts node `i` of `group`'s data under `dir`.
pub fn store_path(dir: &Path, group: &str, i: usize) -> PathBuf {
    dir.join(format!("{group}-n{i}"))
}

/// One broker node.
pub struct Node {
    pub group: String,
    pub name: String,
    pub addr: String,
    /// Its dledger peer address (`dLegerPeers`), when this cluster wrote its config.
    pub peer_addr: Option<String>,
    /// Its config file, when this cluster wrote it.
    conf: Option<PathBuf>,
    pub store: PathBuf,
    pub log: PathBuf,
    /// Program and arguments that (re)start it.
    command: Vec<String>,
    /// Working directory to start it in (attached nodes keep theirs).
    cwd: Option<PathBuf>,
    /// Its namespace index in [`Net`], when it runs in one.
    pub net_index: Option<usize>,
    pid: Option<i32>,
    /// Set when this cluster started the process (an attached one is not our child).
    child: Option<Child>,
    paused: bool,
}

impl Node {
    /// `broker-a/n1`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.group, self.name)
    }

    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    pub fn is_running(&self) -> bool {
        self.pid.is_some()
    }
}

pub struct Cluster {
    dir: PathBuf,
    pub namesrv_addr: String,
    namesrv: Option<Child>,
    pub nodes: Vec<Node>,
    /// The namespaces nodes run in, when the run partitions.
    pub net: Option<Arc<Net>>,
    /// Nodes were given by PID: leave them running at the end.
    attached: bool,
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with the PID of a process this cluster started or was given.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Whether `pid` is gone (or a zombie waiting for a parent that is not us).
fn exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
            .unwrap_or(false),
    }
}

impl Cluster {
    /// Starts a name server and `groups` three-node groups from `binary`, with all data
    /// under `dir`. `flush` is the groups' `flushDiskType`. With `net`, node `k` runs in
    /// namespace `k` and the name server in the hub (the caller must be in the hub).
    pub fn start(
        binary: &Path,
        dir: &Path,
        groups: usize,
        flush: &str,
        net: Option<Arc<Net>>,
    ) -> anyhow::Result<Cluster> {
        Self::start_with(binary, dir, groups, flush, net, "")
    }

    /// [`Cluster::start`], with `extra` lines at the end of every node's config (a key
    /// there replaces the same key above it).
    pub fn start_with(
        binary: &Path,
        dir: &Path,
        groups: usize,
        flush: &str,
        net: Option<Arc<Net>>,
        extra: &str,
    ) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let groups = groups.clamp(1, 2);
        // Loopback ports for the name server and each node's client and Raft ports.
        let mut ports = free_ports(1 + 6 * groups)?.into_iter();
        let mut port = || ports.next().context("ran out of allocated ports");
        let namesrv_addr = match &net {
            Some(net) => format!("{}:{NS_NAMESRV_PORT}", net.hub_ip()),
            None => format!("127.0.0.1:{}", port()?),
        };
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            namesrv_addr: namesrv_addr.clone(),
            namesrv: None,
            nodes: Vec::new(),
            net: net.clone(),
            attached: false,
        };
        // Every node config names it (`clusterSecretFile=cluster.secret`, next to it).
        let secret = dir.join("cluster.secret");
        remoting::cluster_auth::ensure_secret_file(&secret)?;
        let mut namesrv_cmd = vec![binary.display().to_string()];
        namesrv_cmd.extend(
            [
                "namesrv",
                "--listen",
                &namesrv_addr,
                "--scan-interval-ms",
                "1000",
                "--cluster-secret-file",
                &secret.display().to_string(),
            ]
            .map(String::from),
        );
        let namesrv = spawn(&namesrv_cmd, None, &dir.join("namesrv.log"))?;
        cluster.namesrv = Some(namesrv);
        for group in GROUP_NAMES.iter().take(groups) {
            let first = cluster.nodes.len();
            // (host, client port, peer port) of each node.
            let hosts = (0..3)
                .map(|i| -> anyhow::Result<(String, u16, u16)> {
                    Ok(match &net {
                        Some(net) => (net.node_ip(first + i), NS_LISTEN_PORT, NS_PEER_PORT),
                        None => ("127.0.0.1".to_string(), port()?, port()?),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let peers = hosts
                .iter()
                .enumerate()
                .map(|(i, (host, _, peer))| format!("n{i}-{host}:{peer}"))
                .collect::<Vec<_>>()
                .join(";");
            // A 1 MiB page-cache window, far below the default: flushed CommitLog bytes are
            // dropped from the cache almost at once, so replication catch-up and consumers
            // read dropped pages back from the disk throughout the run.
            for (i, (host, port, peer_port)) in hosts.iter().enumerate() {
                let store = store_path(dir, group, i);
                let conf = dir.join(format!("{group}-n{i}.conf"));
                let base = format!(
                    "brokerClusterName=ChaosCluster\nbrokerName={group}\ndLegerGroup={group}\n\
                     brokerIP1={host}\nlistenPort={port}\nnamesrvAddr={namesrv_addr}\n\
                     storePathRootDir={}\nenableDLegerCommitLog=true\ndLegerPeers={peers}\n\
                     dLegerSelfId=n{i}\nmappedFileSizeCommitLog=67108864\n\
                     registerNameServerPeriod=2000\ndefaultTopicQueueNums={QUEUES_PER_TOPIC}\n\
                     flushDiskType={flush}\npageCacheWindowCommitLog=1048576\n\
                     messageDelayLevel={CHAOS_DELAY_LEVELS}\n\
                     transactionTimeOut=1000\ntransactionCheckInterval=1000\n\
                     clusterSecretFile=cluster.secret\n",
                    store.display()
                );
                // A key in `extra` replaces ours (a key twice is refused at start).
                let replaced = |line: &str| {
                    line.split_once('=').is_some_and(|(key, _)| {
                        extra.lines().any(|l| l.starts_with(&format!("{key}=")))
                    })
                };
                let mut text: String = base
                    .lines()
                    .filter(|l| !replaced(l))
                    .map(|l| format!("{l}\n"))
                    .collect();
                text.push_str(extra);
                text.push('\n');
                std::fs::write(&conf, text)?;
                let net_index = net.as_ref().map(|_| first + i);
                let mut command = match (&net, net_index) {
                    (Some(net), Some(k)) => net.exec_prefix(k),
                    _ => Vec::new(),
                };
                command.push(binary.display().to_string());
                command.extend(["broker".into(), "-c".into(), conf.display().to_string()]);
                cluster.nodes.push(Node {
                    group: group.to_string(),
                    name: format!("n{i}"),
                    addr: format!("{host}:{port}"),
                    peer_addr: Some(format!("{host}:{peer_port}")),
                    conf: Some(conf.clone()),
                    log: dir.join(format!("{group}-n{i}.log")),
                    store,
                    command,
                    cwd: None,
                    net_index,
                    pid: None,
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

    /// Attaches to a running cluster: its name server at `namesrv_addr` and broker
    /// processes `pids`, each started as `rocketraft broker -c <conf> [flags]`. Each
    /// node's group, address and store are read from its command line and config file;
    /// a node this tool kills is restarted with the same command line and directory,
    /// its output appended to a log under `dir`.
    pub fn attach(namesrv_addr: &str, pids: &[i32], dir: &Path) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let mut nodes = Vec::new();
        for &pid in pids {
            let node = attached_node(pid, dir)
                .with_context(|| format!("attach to broker process {pid}"))?;
            nodes.push(node);
        }
        nodes.sort_by(|a, b| (&a.group, &a.name).cmp(&(&b.group, &b.name)));
        if nodes.is_empty() {
            bail!("no broker PIDs given");
        }
        Ok(Cluster {
            dir: dir.to_path_buf(),
            namesrv_addr: namesrv_addr.to_string(),
            namesrv: None,
            nodes,
            net: None,
            attached: true,
        })
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
        let node = &mut self.nodes[i];
        if node.pid.is_some() {
            return Ok(());
        }
        let child = spawn(&node.command, node.cwd.as_deref(), &node.log)?;
        node.pid = Some(child.id() as i32);
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Deletes stopped node `i`'s data directory and makes its config join the running group
    /// (`joinExistingGroup=true`): started again, it waits to be added as a new node.
    pub fn wipe_for_rejoin(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        if node.pid.is_some() {
            bail!("{} still runs", node.label());
        }
        let Some(conf) = &node.conf else {
            bail!(
                "{} was not started by this tool: its config is not ours to change",
                node.label()
            );
        };
        // Its contents, not the directory: it may be a mount point (a small disk).
        if let Ok(entries) = std::fs::read_dir(&node.store) {
            for entry in entries {
                let path = entry?.path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.with_context(|| format!("delete {}", path.display()))?;
            }
        }
        let text = std::fs::read_to_string(conf)?;
        if !text.lines().any(|l| l.starts_with("joinExistingGroup=")) {
            std::fs::write(conf, format!("{text}joinExistingGroup=true\n"))?;
        }
        Ok(())
    }

    /// SIGKILL: the node stops at once; its files stay as they were.
    pub fn kill(&mut self, i: usize) {
        self.end(i, libc::SIGKILL);
    }

    /// SIGTERM and wait (bounded, then SIGKILL): a clean stop.
    pub fn stop(&mut self, i: usize) {
        self.end(i, libc::SIGTERM);
    }

    /// Sends `sig` to node `i` and waits for it to exit (bounded; SIGKILL after).
    fn end(&mut self, i: usize, sig: i32) {
        let node = &mut self.nodes[i];
        let Some(pid) = node.pid.take() else {
            return;
        };
        if node.paused {
            signal(pid, libc::SIGCONT);
        }
        node.paused = false;
        signal(pid, sig);
        let mut child = node.child.take();
        let gone = |child: &mut Option<Child>| match child {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => exited(pid),
        };
        let deadline = Instant::now() + Duration::from_millis(STOP_WAIT_MS);
        while !gone(&mut child) {
            if Instant::now() > deadline {
                signal(pid, libc::SIGKILL);
                if let Some(c) = child.as_mut() {
                    let _ = c.wait();
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
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

    /// Cuts node `i` off the network (isolated) or reconnects it.
    pub fn isolate(&self, i: usize, on: bool) -> anyhow::Result<()> {
        let (net, k) = self.net_of(i)?;
        net.isolate(k, on)
    }

    /// Cuts (or mends) the link between nodes `a` and `b` only.
    pub fn cut(&self, a: usize, b: usize, on: bool) -> anyhow::Result<()> {
        let (net, ka) = self.net_of(a)?;
        let (_, kb) = self.net_of(b)?;
        net.cut(ka, kb, on)
    }

    fn net_of(&self, i: usize) -> anyhow::Result<(&Net, usize)> {
        match (&self.net, self.nodes[i].net_index) {
            (Some(net), Some(k)) => Ok((net, k)),
            _ => bail!(
                "{} does not run in a network namespace",
                self.nodes[i].label()
            ),
        }
    }

    pub fn namesrv(&self) -> anyhow::Result<NameServerClient> {
        Ok(crate::access::namesrv(NameServerClient::new(
            &self.namesrv_addr,
            Duration::from_secs(2),
        )?))
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

    /// Each node's CommitLog (its first kept position and its bytes from there, the
    /// trailing zero fill removed), by node index.
    pub fn commit_logs(&self) -> anyhow::Result<Vec<StoredLog>> {
        self.nodes
            .iter()
            .map(|n| read_commit_log(&n.store))
            .collect()
    }

    /// Stops every node and the name server cleanly. An attached cluster is left
    /// running (the nodes this tool restarted included).
    pub fn stop_all(&mut self) {
        if self.attached {
            return;
        }
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
        if let Some(mut ns) = self.namesrv.take() {
            signal(ns.id() as i32, libc::SIGTERM);
            let _ = ns.wait();
        }
    }

    /// Whether the nodes were given by PID (see [`Cluster::attach`]).
    pub fn is_attached(&self) -> bool {
        self.attached
    }
}

/// Starts `command` (program, then arguments) in `cwd`, its output appended to `log`.
fn spawn(command: &[String], cwd: Option<&Path>, log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .env("RUST_LOG", "info,openraft=warn")
        .stdout(out.try_clone()?)
        .stderr(out)
        .stdin(Stdio::null());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.spawn()
        .with_context(|| format!("start {}", command.join(" ")))
}

/// A running broker process, read from `/proc/<pid>`: its command line, directory,
/// and the config it was started with (`-c`/`--config` plus the override flags).
fn attached_node(pid: i32, dir: &Path) -> anyhow::Result<Node> {
    // A process started a moment ago may not have exec'd yet (its command line is
    // still empty or its parent's): give it a little time.
    let deadline = Instant::now() + Duration::from_secs(3);
    let command = loop {
        let raw = std::fs::read(format!("/proc/{pid}/cmdline"))
            .with_context(|| format!("no process {pid}"))?;
        let command: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if command.iter().any(|a| a == "broker") || Instant::now() > deadline {
            break command;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
        .with_context(|| format!("working directory of {pid}"))?;
    let Some(sub) = command.iter().position(|a| a == "broker") else {
        bail!(
            "`{}` is not a `rocketraft broker` command line",
            command.join(" ")
        );
    };
    let mut config: Option<PathBuf> = None;
    let mut overrides: Vec<(&str, String)> = Vec::new();
    let mut args = command[sub + 1..].iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let key = match flag {
            "-c" | "--config" => None,
            other => match broker::config::override_key(other) {
                Some(key) => Some(key),
                None => bail!("unexpected argument `{other}` in `{}`", command.join(" ")),
            },
        };
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .with_context(|| format!("`{flag}` without a value"))?
                .clone(),
        };
        match key {
            None => config = Some(cwd.join(value)),
            Some(key) => overrides.push((key, value)),
        }
    }
    let mut props = match &config {
        Some(path) => remoting::config_file::Properties::load(path)
            .with_context(|| format!("read {}", path.display()))?,
        None => remoting::config_file::Properties::default(),
    };
    for (key, value) in overrides {
        props.entries.insert(key.to_string(), (value, 0));
    }
    let mut get = |key: &str| -> anyhow::Result<Option<String>> {
        props
            .take::<String>(key)
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    let group = get("brokerName")?.unwrap_or_else(|| "DefaultBrokerName".into());
    let host = get("brokerIP1")?.unwrap_or_else(|| "127.0.0.1".into());
    let port = get("listenPort")?.unwrap_or_else(|| "10911".into());
    let name = get("dLegerSelfId")?.unwrap_or_else(|| format!("pid{pid}"));
    let store = get("storePathRootDir")?
        .map(|s| cwd.join(s))
        .context("no storePathRootDir in the config or flags")?;
    Ok(Node {
        log: dir.join(format!("{group}-{name}.log")),
        group,
        name,
        addr: format!("{host}:{port}"),
        peer_addr: None,
        conf: None,
        store,
        command,
        cwd: Some(cwd),
        net_index: None,
        pid: Some(pid),
        child: None,
        paused: false,
    })
}

/// A node's CommitLog: its 20-digit segment files in order, concatenated, with the
/// trailing zero fill (pre-written segment space) cut off.
/// A node's CommitLog as stored: segment files are named by their start position, and
/// retention deletes the oldest, so replicas agree from the latest first position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLog {
    /// Position of the first kept segment's first byte.
    pub start: u64,
    pub bytes: Vec<u8>,
}

impl StoredLog {
    /// Bytes from `position` on (empty if it lies past the end).
    pub fn from(&self, position: u64) -> &[u8] {
        let skip = position.saturating_sub(self.start) as usize;
        &self.bytes[skip.min(self.bytes.len())..]
    }

    /// Whether every log's bytes from the latest start on are the same.
    pub fn agree(logs: &[&StoredLog]) -> bool {
        let start = logs.iter().map(|l| l.start).max().unwrap_or(0);
        logs.windows(2)
            .all(|w| w[0].from(start) == w[1].from(start))
    }

    /// Whether, from the latest start on, every log is a prefix of the longest.
    pub fn agree_but_tail(logs: &[&StoredLog]) -> bool {
        let start = logs.iter().map(|l| l.start).max().unwrap_or(0);
        let Some(longest) = logs.iter().map(|l| l.from(start)).max_by_key(|b| b.len()) else {
            return true;
        };
        logs.iter().all(|l| longest.starts_with(l.from(start)))
    }
}

pub fn read_commit_log(store: &Path) -> anyhow::Result<StoredLog> {
    let dir = store.join("commitlog");
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().to_string();
            let start = (name.len() == 20).then(|| name.parse::<u64>().ok())??;
            Some((start, p))
        })
        .collect();
    files.sort();
    let start = files.first().map_or(0, |f| f.0);
    let mut all = Vec::new();
    for (_, f) in files {
        all.extend(std::fs::read(&f).with_context(|| format!("read {}", f.display()))?);
    }
    let end = all.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
    all.truncate(end);
    Ok(StoredLog { start, bytes: all })
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.attached {
            return;
        }
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if let Some(mut ns) = self.namesrv.take() {
            let _ = ns.kill();
            let _ = ns.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StoredLog;

    // Proves ports handed out are distinct, below the ephemeral range, and reserved where
    // another process would see it: a second open file description cannot lock them.
    #[test]
    fn free_ports_are_reserved_outside_the_ephemeral_range() {
        use std::os::fd::AsRawFd;
        let a = super::free_ports(20).unwrap();
        let b = super::free_ports(20).unwrap();
        let all: std::collections::BTreeSet<u16> = a.iter().chain(&b).copied().collect();
        assert_eq!(all.len(), 40, "ports repeat: {a:?} {b:?}");
        let range = super::reservable_ports();
        assert!(
            all.iter().all(|p| range.contains(p)),
            "{all:?} outside {range:?}"
        );
        let other = std::fs::OpenOptions::new()
            .write(true)
            .open(std::env::temp_dir().join("rocketraft-test-ports.lock"))
            .unwrap();
        for port in all {
            // SAFETY: zeroed flock is valid; the descriptor is open.
            let mut lock: libc::flock = unsafe { std::mem::zeroed() };
            lock.l_type = libc::F_WRLCK as _;
            lock.l_whence = libc::SEEK_SET as _;
            lock.l_start = libc::off_t::from(port);
            lock.l_len = 1;
            let rc = unsafe { libc::fcntl(other.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
            assert_eq!(rc, -1, "port {port} could be reserved twice");
        }
    }

    fn log(start: u64, bytes: &[u8]) -> StoredLog {
        StoredLog {
            start,
            bytes: bytes.to_vec(),
        }
    }

    // Proves replicas are compared from the latest first kept position, and that a
    // missing tail is told apart from different bytes.
    #[test]
    fn logs_are_compared_from_the_latest_start() {
        let a = log(0, b"abcdef");
        let b = log(2, b"cdef");
        assert!(StoredLog::agree(&[&a, &b]));
        let short = log(2, b"cde");
        assert!(!StoredLog::agree(&[&a, &short]));
        assert!(StoredLog::agree_but_tail(&[&a, &short]));
        let other = log(2, b"cdxf");
        assert!(!StoredLog::agree_but_tail(&[&a, &other]));
        // A start past the end compares nothing.
        assert_eq!(log(0, b"ab").from(5), b"");
    }
}
