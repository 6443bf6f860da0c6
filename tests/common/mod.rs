//! A cluster of real `rocketraft` processes for whole-system tests: one name server and
//! one three-node broker group on loopback, each node in its own process with its own
//! data directory, so tests can SIGKILL, SIGSTOP and restart them. Every process is
//! ended (by PID) when the cluster is dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client::NameServerClient;

pub const GROUP: &str = "broker-a";

pub struct Node {
    pub name: String,
    pub addr: String,
    /// The dledger peer address (its `dLegerPeers` entry).
    pub peer_addr: String,
    pub conf: PathBuf,
    pub store: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Node {
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }
}

pub struct Cluster {
    dir: Option<tempfile::TempDir>,
    pub namesrv_addr: String,
    namesrv: Option<Child>,
    pub nodes: Vec<Node>,
    /// Config lines every node gets after its own.
    common_conf: String,
}

fn spawn(args: &[String], log: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args(args)
        .env("RUST_LOG", "info,openraft=warn")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .expect("start rocketraft")
}

fn signal(pid: i32, sig: i32) {
    // Only processes this cluster started, by PID.
    unsafe {
        libc::kill(pid, sig);
    }
}

impl Cluster {
    /// Starts a name server and a three-node group; `extra` lines go into every node's
    /// config (a `mappedFileSizeCommitLog` or disk ratio there replaces the default).
    ///
    /// The disk ratios default to 100%: how full the test machine's shared disk happens to
    /// be must not make a test's brokers refuse sends (above 90%) or delete unexpired
    /// segments (above 85%). Retention's reaction to the ratios is tested with injected
    /// figures (`broker::retention`, `broker::disk`). The Raft timers are twice the
    /// broker's defaults: debug builds of three brokers and the test itself share CI's two
    /// cores with other tests, and a test that wants a stable leader must not see elections
    /// a stall caused (the chaos run keeps the defaults).
    pub fn start(extra: &str) -> Cluster {
        Self::start_with_store(extra, None)
    }

    /// [`Cluster::start`], with node `i`'s data directory at `path` (e.g. on a small
    /// filesystem the test made).
    pub fn start_with_store(extra: &str, store: Option<(usize, PathBuf)>) -> Cluster {
        Self::start_with(extra, store, "")
    }

    /// [`Cluster::start_with_store`], the name server also reading `namesrv_conf` (its
    /// config file's lines, e.g. `tls.server.mode=enforcing`).
    pub fn start_with(extra: &str, store: Option<(usize, PathBuf)>, namesrv_conf: &str) -> Cluster {
        let mut segment = String::new();
        for (key, value) in [
            ("mappedFileSizeCommitLog", "67108864"),
            ("diskMaxUsedSpaceRatio", "100"),
            ("diskSpaceCleanForciblyRatio", "100"),
            ("diskSpaceWarningLevelRatio", "100"),
            ("dLegerHeartbeatIntervalMs", "100"),
            ("dLegerElectionTimeoutMinMs", "300"),
            ("dLegerElectionTimeoutMaxMs", "600"),
        ] {
            if !extra.contains(&format!("{key}=")) {
                segment.push_str(&format!("{key}={value}\n"));
            }
        }
        let dir = tempfile::tempdir().unwrap();
        // All seven ports at once, so none repeats.
        let mut ports = chaos::cluster::free_ports(7).unwrap().into_iter();
        let namesrv_addr = format!("127.0.0.1:{}", ports.next().unwrap());
        let namesrv_log = dir.path().join("namesrv.log");
        // Every node config names it (`clusterSecretFile=cluster.secret`, next to it).
        let secret = dir.path().join("cluster.secret");
        remoting::cluster_auth::ensure_secret_file(&secret).unwrap();
        let namesrv_conf_path = dir.path().join("namesrv.conf");
        std::fs::write(&namesrv_conf_path, namesrv_conf).unwrap();
        let namesrv = spawn(
            &[
                "namesrv".into(),
                "-c".into(),
                namesrv_conf_path.display().to_string(),
                "--listen".into(),
                namesrv_addr.clone(),
                "--scan-interval-ms".into(),
                "1000".into(),
                "--cluster-secret-file".into(),
                secret.display().to_string(),
            ],
            &namesrv_log,
        );
        let peer_ports: Vec<u16> = ports.by_ref().take(3).collect();
        let mut cluster = Cluster {
            dir: Some(dir),
            namesrv_addr,
            namesrv: Some(namesrv),
            nodes: Vec::new(),
            common_conf: format!(
                "{segment}registerNameServerPeriod=2000\ndefaultTopicQueueNums=4\n{extra}\n"
            ),
        };
        for (i, peer_port) in peer_ports.into_iter().enumerate() {
            let port = ports.next().unwrap();
            cluster.push_node(i, port, peer_port);
        }
        if let Some((i, path)) = store {
            cluster.nodes[i].store = path;
        }
        for i in 0..3 {
            cluster.write_conf(i, "");
        }
        for i in 0..3 {
            cluster.start_node(i);
        }
        cluster
    }

    fn push_node(&mut self, i: usize, port: u16, peer_port: u16) {
        let dir = self.path().to_path_buf();
        self.nodes.push(Node {
            name: format!("n{i}"),
            addr: format!("127.0.0.1:{port}"),
            peer_addr: format!("127.0.0.1:{peer_port}"),
            log: dir.join(format!("n{i}.log")),
            conf: dir.join(format!("n{i}.conf")),
            store: dir.join(format!("n{i}")),
            child: None,
        });
    }

    /// Writes node `i`'s config file: every node so far as its peers, then `more` lines.
    fn write_conf(&self, i: usize, more: &str) {
        let peers = self
            .nodes
            .iter()
            .map(|n| format!("{}-{}", n.name, n.peer_addr))
            .collect::<Vec<_>>()
            .join(";");
        let node = &self.nodes[i];
        let port = node.addr.rsplit(':').next().unwrap();
        std::fs::write(
            &node.conf,
            format!(
                "brokerClusterName=TestCluster\nbrokerName={GROUP}\nlistenPort={port}\n\
                 namesrvAddr={}\nstorePathRootDir={}\nenableDLegerCommitLog=true\n\
                 dLegerPeers={peers}\ndLegerSelfId={}\nclusterSecretFile=cluster.secret\n{}{more}",
                self.namesrv_addr,
                node.store.display(),
                node.name,
                self.common_conf,
            ),
        )
        .unwrap();
    }

    /// Starts a new node (`n3`, `n4`, ...) that joins the running group: its config names
    /// every node so far and sets `joinExistingGroup=true`. It waits to be added
    /// (`admin add-node`). Returns its index.
    pub fn start_joining_node(&mut self) -> usize {
        let i = self.nodes.len();
        let ports = chaos::cluster::free_ports(2).unwrap();
        self.push_node(i, ports[0], ports[1]);
        self.write_conf(i, "joinExistingGroup=true\n");
        self.start_node(i);
        i
    }

    /// Starts node `i` again with an empty store, joining the group as a new node would.
    pub fn restart_empty_joining(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "stop n{i} first");
        let _ = std::fs::remove_dir_all(&self.nodes[i].store);
        self.write_conf(i, "joinExistingGroup=true\n");
        self.start_node(i);
    }

    pub fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} already running", node.name);
        node.child = Some(spawn(
            &[
                "broker".into(),
                "-c".into(),
                node.conf.display().to_string(),
            ],
            &node.log,
        ));
    }

    /// SIGKILL: the node stops at once; its files stay as they were.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            signal(child.id() as i32, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pause(&self, i: usize) {
        signal(self.nodes[i].pid().expect("running"), libc::SIGSTOP);
    }

    pub fn resume(&self, i: usize) {
        signal(self.nodes[i].pid().expect("running"), libc::SIGCONT);
    }

    pub fn node_index(&self, addr: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.addr == addr)
            .unwrap_or_else(|| panic!("no node at {addr}"))
    }

    pub fn namesrv(&self) -> NameServerClient {
        NameServerClient::new(&self.namesrv_addr, Duration::from_secs(2)).unwrap()
    }

    /// Waits (up to `timeout`) until the name server routes `topic` to a readable queue
    /// (an auto-created topic reaches it with its group's next registration).
    pub async fn wait_routed(&self, topic: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let readable = |r: &remoting::route::TopicRouteData| {
            r.queue_datas.iter().any(|q| q.read_queue_nums > 0)
        };
        while !self
            .namesrv()
            .topic_route(topic)
            .await
            .unwrap()
            .is_some_and(|r| readable(&r))
        {
            assert!(Instant::now() < deadline, "{topic} never routed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The address the name server routes as brokerId 0, if any.
    pub async fn routed_leader(&self) -> Option<String> {
        let info = self.namesrv().cluster_info().await.ok()?;
        info.broker_addr_table
            .get(GROUP)?
            .leader_addr()
            .map(str::to_string)
    }

    /// Waits for a routed leader other than `not`, up to `timeout`.
    pub async fn wait_for_leader(&self, not: Option<&str>, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.routed_leader().await {
                if Some(leader.as_str()) != not {
                    return leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader (other than {not:?}) within {timeout:?}; logs in {}",
                self.path().display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the group has a routed leader and its default topic (TBW102) is
    /// registered, so producers can auto-create topics, and the routed leader has stayed
    /// the same for half a second (at start, openraft 0.9 lets a higher node id take over
    /// within the first term); returns the leader.
    pub async fn wait_ready(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut leader = self.wait_for_leader(None, timeout).await;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            match self.routed_leader().await {
                Some(now) if now == leader => break,
                Some(now) => leader = now,
                None => leader = self.wait_for_leader(None, timeout).await,
            }
            assert!(Instant::now() < deadline, "the leader never settled");
        }
        while self
            .namesrv()
            .topic_route("TBW102")
            .await
            .ok()
            .flatten()
            .is_none()
        {
            assert!(Instant::now() < deadline, "TBW102 never registered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        leader
    }

    /// Each node's CommitLog bytes with trailing zero fill removed.
    pub fn commit_logs(&self) -> Vec<Vec<u8>> {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.commit_logs_of(&all)
    }

    /// Waits (at most `timeout`) until the CommitLogs of the nodes at `indexes` are
    /// byte-identical, and returns their length; fails the test naming the lengths if they
    /// never are.
    pub async fn wait_commit_logs_identical(&self, indexes: &[usize], timeout: Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let logs = self.commit_logs_of(indexes);
            if logs.windows(2).all(|w| w[0] == w[1]) {
                println!(
                    "{} CommitLog bytes identical on nodes {indexes:?}",
                    logs[0].len()
                );
                return logs[0].len();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "CommitLogs of nodes {indexes:?} differ: lengths {:?}",
                logs.iter().map(Vec::len).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The CommitLog bytes of the nodes at `indexes`, trailing zero fill removed.
    pub fn commit_logs_of(&self, indexes: &[usize]) -> Vec<Vec<u8>> {
        indexes
            .iter()
            .map(|i| &self.nodes[*i])
            .map(|n| {
                let dir = n.store.join("commitlog");
                let mut files: Vec<_> = std::fs::read_dir(&dir)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.file_name().unwrap().to_string_lossy().len() == 20)
                    .collect();
                files.sort();
                let mut all = Vec::new();
                for f in files {
                    all.extend(std::fs::read(f).unwrap());
                }
                while all.last() == Some(&0) {
                    all.pop();
                }
                all
            })
            .collect()
    }

    /// The start positions of node `i`'s first and last segment files.
    pub fn first_and_last_segment(&self, i: usize) -> (u64, u64) {
        let files = segment_files(&self.nodes[i].store);
        (
            files.first().map_or(0, |(s, _)| *s),
            files.last().map_or(0, |(s, _)| *s),
        )
    }

    /// Every node's CommitLog bytes from the largest first kept segment on (trailing zeros
    /// cut), and that position. Retention may delete a file between the listing and the
    /// read: the whole picture is then taken again.
    pub fn kept_logs(&self) -> (u64, Vec<Vec<u8>>) {
        let mut attempts = 0;
        loop {
            let from = (0..self.nodes.len())
                .map(|i| self.first_and_last_segment(i).0)
                .max()
                .unwrap();
            let logs: std::io::Result<Vec<Vec<u8>>> = (0..self.nodes.len())
                .map(|i| {
                    let mut all = Vec::new();
                    for (start, path) in segment_files(&self.nodes[i].store) {
                        if start >= from {
                            all.extend(std::fs::read(path)?);
                        }
                    }
                    while all.last() == Some(&0) {
                        all.pop();
                    }
                    Ok(all)
                })
                .collect();
            match logs {
                Ok(logs) => return (from, logs),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 50 => {
                    attempts += 1;
                }
                Err(e) => panic!("reading CommitLog segments: {e}"),
            }
        }
    }

    /// The directory holding every node's data, config and log.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }

    /// Runs `rocketraft admin -n NAMESRV ARGS` with this cluster's secret (the name-server
    /// codes that change routes need it); its stdout, or a panic with its stderr.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
            .args(["admin", "-n", &self.namesrv_addr])
            .args(args)
            .env(
                "ROCKETRAFT_CLUSTER_SECRET_FILE",
                self.path().join("cluster.secret"),
            )
            .output()
            .expect("run rocketraft admin");
        assert!(
            out.status.success(),
            "admin {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            if let Some(pid) = self.nodes[i].pid() {
                // A paused process must be woken to die from SIGKILL promptly.
                signal(pid, libc::SIGCONT);
            }
            self.kill(i);
        }
        if let Some(mut ns) = self.namesrv.take() {
            let _ = ns.kill();
            let _ = ns.wait();
        }
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("test failed: cluster logs kept in {}", dir.keep().display());
            }
        }
    }
}

/// Reads every message of `topic` from offset 0 with a pull consumer: queue id ->
/// messages in queue-offset order.
pub async fn drain_topic(
    namesrv_addr: &str,
    topic: &str,
) -> std::collections::BTreeMap<i32, Vec<client::MessageExt>> {
    use client::{PullConsumer, PullConsumerConfig, PullResult};
    let consumer = PullConsumer::start(PullConsumerConfig::new(namesrv_addr, "drain-checker"))
        .await
        .unwrap();
    let mut out = std::collections::BTreeMap::new();
    for queue in consumer.fetch_queues(topic).await.unwrap() {
        let mut offset = 0i64;
        let mut messages = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                Instant::now() < deadline,
                "draining {queue} stalled at {offset}"
            );
            match consumer.pull(&queue, offset, 32, "*", Duration::ZERO).await {
                Ok(PullResult::Found {
                    messages: got,
                    next_begin_offset,
                    ..
                }) => {
                    messages.extend(got);
                    offset = next_begin_offset;
                }
                Ok(PullResult::NoNewMessage { .. }) => break,
                Ok(other) => panic!("pull of {queue} at {offset}: {other:?}"),
                Err(e) => {
                    eprintln!("pull of {queue} at {offset} failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        out.insert(queue.queue_id, messages);
    }
    consumer.shutdown().await;
    out
}

/// Asserts that every queue's offsets run 0, 1, 2, ... with no gap or repeat.
pub fn assert_offsets_contiguous(
    queues: &std::collections::BTreeMap<i32, Vec<client::MessageExt>>,
) {
    for (queue_id, messages) in queues {
        for (i, m) in messages.iter().enumerate() {
            assert_eq!(
                m.queue_offset, i as i64,
                "queue {queue_id}: offset {} at position {i}",
                m.queue_offset
            );
        }
    }
}

/// (start position, path) of each CommitLog segment file under `store`, ascending.
pub fn segment_files(store: &Path) -> Vec<(u64, PathBuf)> {
    let mut files: Vec<_> = std::fs::read_dir(store.join("commitlog"))
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name()?.to_str()?.to_string();
            (name.len() == 20).then_some((name.parse().ok()?, path))
        })
        .collect();
    files.sort();
    files
}

/// The start position of the first CommitLog segment file under `store`.
pub fn first_segment(store: &Path) -> u64 {
    segment_files(store).first().map_or(0, |(s, _)| *s)
}

/// Pulls every message of one queue straight from the node at `addr` (no routing), from
/// the queue's minimum (nothing if the topic does not exist yet):
/// (queue offset, body) in order.
pub async fn pull_queue_from(addr: &str, topic: &str, queue_id: i32) -> Vec<(i64, Vec<u8>)> {
    use remoting::header::{PullMessageRequestHeader, PullMessageResponseHeader};
    use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};
    let conn = Connection::connect(
        addr,
        &ConnectionConfig::default(),
        std::sync::Arc::new(remoting::connection::NoRequests),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let mut offset = 0i64;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "pulling {topic}:{queue_id} from {addr} stalled"
        );
        let request = RemotingCommand::request(
            RequestCode::PULL_MESSAGE,
            &PullMessageRequestHeader {
                consumer_group: "direct-checker".into(),
                topic: topic.into(),
                queue_id,
                queue_offset: offset,
                max_msg_nums: 32,
                sys_flag: 4,
                subscription: Some("*".into()),
                ..Default::default()
            },
        );
        let r = conn.request(request, Duration::from_secs(5)).await.unwrap();
        match r.response_code() {
            Some(ResponseCode::SUCCESS) => {
                let h: PullMessageResponseHeader = r.header().unwrap();
                for rec in remoting::message::decode_records(&r.body).unwrap() {
                    out.push((rec.queue_offset, rec.body.to_vec()));
                }
                offset = h.next_begin_offset;
            }
            Some(ResponseCode::PULL_NOT_FOUND) => return out,
            // A topic made on first use (a DLQ, a retry topic) holds nothing before it is.
            Some(ResponseCode::TOPIC_NOT_EXIST) if offset == 0 => return out,
            // Retention moved the queue's minimum past `offset`: start there.
            Some(ResponseCode::PULL_OFFSET_MOVED) => {
                let h: PullMessageResponseHeader = r.header().unwrap();
                assert!(h.next_begin_offset > offset, "moved backwards: {r:?}");
                offset = h.next_begin_offset;
            }
            _ => panic!("pull from {addr} at {offset}: {r:?}"),
        }
    }
}

/// msgId (UNIQ_KEY) -> (body, queue id, queue offset) of acknowledged sends.
pub type Acked = std::collections::HashMap<String, (String, i32, i64)>;

/// Drains `topic` and asserts every acknowledged message is stored at the queue and offset
/// its acknowledgement named (queue offsets contiguous); returns how many were checked. A
/// message may also be stored elsewhere: a send retried after an attempt whose outcome was
/// unknown stores it twice under one UNIQ_KEY, as RocketMQ allows.
pub async fn assert_acked_read_back(namesrv_addr: &str, topic: &str, acked: &Acked) -> usize {
    let queues = drain_topic(namesrv_addr, topic).await;
    assert_offsets_contiguous(&queues);
    let mut stored: std::collections::HashMap<String, Vec<(String, i32, i64)>> =
        std::collections::HashMap::new();
    for (queue_id, messages) in &queues {
        for m in messages {
            let id = m.property("UNIQ_KEY").unwrap_or_default().to_string();
            let body = String::from_utf8_lossy(&m.body).to_string();
            stored
                .entry(id)
                .or_default()
                .push((body, *queue_id, m.queue_offset));
        }
    }
    for (id, place) in acked {
        let places = stored.get(id).map(Vec::as_slice).unwrap_or_default();
        assert!(
            places.contains(place),
            "acknowledged {id} lost or moved: acknowledged at {:?}, stored at {:?}",
            (place.1, place.2),
            places.iter().map(|p| (p.1, p.2)).collect::<Vec<_>>()
        );
    }
    acked.len()
}

/// The client addresses the name servers list for the group (empty if unreachable).
pub async fn routed_members(cluster: &Cluster) -> Vec<String> {
    let Ok(info) = cluster.namesrv().cluster_info().await else {
        return Vec::new();
    };
    info.broker_addr_table
        .get(GROUP)
        .map(|d| d.broker_addrs.values().cloned().collect())
        .unwrap_or_default()
}

impl Cluster {
    /// Rewrites node `i`'s config with `more` lines after the common ones; the node reads
    /// it at its next start.
    pub fn set_node_conf(&self, i: usize, more: &str) {
        self.write_conf(i, more);
    }

    /// The terms in which node `i` says it became leader (its "role changed" log lines with
    /// `role=Leader`), in log order, each once.
    pub fn led_terms(&self, i: usize) -> Vec<u64> {
        let log = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let mut terms = Vec::new();
        for line in log.lines().map(strip_ansi) {
            if !line.contains("role changed") || !line.contains("role=Leader") {
                continue;
            }
            let term = line
                .split_whitespace()
                .find_map(|field| field.strip_prefix("term=")?.parse::<u64>().ok());
            if let Some(term) = term.filter(|t| !terms.contains(t)) {
                terms.push(term);
            }
        }
        terms
    }
}

/// `line` without terminal colour codes (`ESC [ ... m`), as the nodes' logs hold them.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
