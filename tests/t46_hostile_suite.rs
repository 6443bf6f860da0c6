//! Proves issue 19's hostile-client suite on real processes (a name server and a three-node
//! group), while a real producer and a real pull consumer work throughout: after every phase
//! each acknowledged message is read back, with its body, at the queue and offset its
//! acknowledgement named.
//!
//! 1. Forged peer frames: a well-formed Vote (term + 1000), AppendEntries (a membership of only
//!    the forger) and InstallSnapshot (the same, purging the log) from a non-member, sent to
//!    every node's Raft peer port raw and after a handshake with a wrong secret, and half-sent
//!    handshakes left open: each connection is closed with nothing but a refusal, each node
//!    logs the refusals, no node ever reaches the forged term (which any accepted frame would
//!    have given it, deposing the leader), and the group still commits.
//! 2. Held pulls: pulls with the suspend flag on queues with nothing new, over several
//!    connections, up to `maxHeldPullsPerConnection` and `maxHeldPulls`; the surplus is
//!    answered SYSTEM_BUSY at once with a remark naming the key, as is a real consumer's long
//!    poll while they are full; a closed connection gives its places back at once; the memory
//!    per held pull is measured and bounded; a send to a held queue answers its held pulls
//!    promptly.
//! 3. Clients per group: heartbeats adding consumers past `maxClientsPerGroup` are refused
//!    SYSTEM_ERROR naming the key; members already in and other groups are unaffected. Then
//!    auto-created subscription groups: a herd of heartbeats naming one new group creates it
//!    once; heartbeats naming new groups past `autoCreateSubscriptionGroupLimit` leave the
//!    broker holding exactly the limit.
//! 4. Auto-created topics: exactly `autoCreateTopicLimit` minus the topics already held are
//!    created and routed, every other new topic is refused TOPIC_NOT_EXIST naming the key, and
//!    the group still registers and routes.
//! 5. A follower killed and restarted starts, registers and catches up (CommitLogs
//!    byte-identical); every server is still up; each process stayed within the memory bound
//!    printed beside it.
//!
//! The default is a short CI run. `HOSTILE_SCALE=long` (`bench/hostile.sh`, a release build)
//! runs the sizes: 50,000 held pulls over four connections and 100,000 auto-created
//! topic attempts against the default limit of 10,000. Idle connections and 1 MiB headers are
//! `tests/t42_hostile_connections.rs`; bad names in every request kind `t43_hostile_names.rs`;
//! forged registrations `t90_issue_15_hostile_requests.rs`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use client::{
    ClientError, Message, MessageQueue, Producer, ProducerConfig, PullConsumer, PullConsumerConfig,
    PullResult,
};
use dledger::network::forge;
use dledger::network::handshake::{self, PeerIdentity, PeerSecret};
use futures::StreamExt;
use remoting::command::FLAG_RESPONSE;
use remoting::connection::NoRequests;
use remoting::header::{
    ConsumerGroupRequestHeader, CreateTopicRequestHeader, PullMessageRequestHeader,
    SendMessageRequestHeader, SendMessageRequestHeaderV2,
};
use remoting::route::{
    from_json, to_json, ConsumerData, ConsumerListBody, HeartbeatData, SubscriptionData,
    TopicConfigSerializeWrapper,
};
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIVE_TOPIC: &str = "HostileLive";
const HELD_TOPIC: &str = "HostileHeld";
const HELD_QUEUES: i32 = 8;
const FULL_GROUP: &str = "hostile-full";
/// The node id the forger claims: not a member of the group (n0, n1, n2).
const STRANGER: u64 = 7;

// ---------------------------------------------------------------------------------------
// Sizes and bounds
// ---------------------------------------------------------------------------------------

/// The sizes of one run, and the memory bounds it asserts.
struct Scale {
    long: bool,
    /// `maxHeldPulls`: the run holds exactly this many pulls.
    held_total: usize,
    /// `maxHeldPullsPerConnection`.
    held_per_connection: usize,
    /// Pulls sent past each cap.
    held_surplus: usize,
    /// `suspendTimeoutMillis` of every held pull.
    hold_ms: i64,
    /// `autoCreateTopicLimit` (the long run keeps the default, 10,000).
    topic_limit: usize,
    /// New topics sent to.
    topic_attempts: usize,
    /// `maxClientsPerGroup`.
    clients_per_group: usize,
    /// Heartbeats sent past it.
    clients_surplus: usize,
    /// `autoCreateSubscriptionGroupLimit`.
    group_limit: usize,
    /// Heartbeats naming a new group each.
    group_attempts: usize,
    /// Bound on the leader's anonymous memory per held pull, beyond its connection's, KiB.
    held_pull_kib_max: f64,
    /// Bound on each broker's and on the name server's resident memory, MiB.
    broker_rss_mib_max: u64,
    namesrv_rss_mib_max: u64,
}

impl Scale {
    fn from_env() -> Scale {
        let long = std::env::var("HOSTILE_SCALE").is_ok_and(|s| s == "long");
        if long {
            Scale {
                long,
                held_total: 50_000,
                held_per_connection: 16_384,
                held_surplus: 200,
                hold_ms: 60_000,
                topic_limit: 10_000,
                topic_attempts: 100_000,
                clients_per_group: 1_000,
                clients_surplus: 50,
                group_limit: 2_000,
                group_attempts: 4_000,
                held_pull_kib_max: 8.0,
                // Measured: 268 MiB at most (the leader holding 50,000 pulls), 45 MiB.
                broker_rss_mib_max: 512,
                namesrv_rss_mib_max: 128,
            }
        } else {
            Scale {
                long,
                held_total: 3_000,
                held_per_connection: 1_000,
                held_surplus: 50,
                hold_ms: 15_000,
                topic_limit: 200,
                topic_attempts: 400,
                clients_per_group: 100,
                clients_surplus: 10,
                group_limit: 60,
                group_attempts: 100,
                held_pull_kib_max: 8.0,
                // Measured (debug build): 181 MiB at most (a restarted follower), 47 MiB.
                broker_rss_mib_max: 384,
                namesrv_rss_mib_max: 128,
            }
        }
    }

    /// The caps, in every broker's config.
    fn broker_conf(&self) -> String {
        let mut conf = format!(
            "maxHeldPulls={}\nmaxHeldPullsPerConnection={}\nlongPollingHoldMaxMs={}\n",
            self.held_total,
            self.held_per_connection,
            self.hold_ms * 2
        );
        // Raft timers well above the harness's: the hostile bursts below (thousands of
        // requests at once) share the broker's runtime with its Raft heartbeats, and a debug
        // build on two loaded cores stalled a leader past a 600 ms election timeout with
        // them. The suite tests the caps; elections under load are t50's and the chaos run's.
        conf.push_str(
            "dLegerHeartbeatIntervalMs=200\ndLegerElectionTimeoutMinMs=1500\n\
             dLegerElectionTimeoutMaxMs=3000\n",
        );
        // The long run keeps the defaults of these two.
        if self.clients_per_group != 1_000 {
            conf.push_str(&format!("maxClientsPerGroup={}\n", self.clients_per_group));
        }
        conf.push_str(&format!(
            "autoCreateSubscriptionGroupLimit={}\n",
            self.group_limit
        ));
        if self.topic_limit != 10_000 {
            conf.push_str(&format!("autoCreateTopicLimit={}\n", self.topic_limit));
        }
        conf
    }
}

// ---------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------

/// (VmRSS, RssAnon) of a process in KiB; `None` once it has gone.
fn rss_kib(pid: i32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("RssAnon:")?))
}

/// The name server this test's cluster started: the child of this process that serves
/// `namesrv_addr` (the harness keeps its handle private).
fn namesrv_pid(namesrv_addr: &str) -> i32 {
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let parent = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .nth(1);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if parent == Some(me.as_str())
            && cmdline.contains(" namesrv ")
            && cmdline.contains(namesrv_addr)
        {
            return pid;
        }
    }
    panic!("no name server process serving {namesrv_addr}");
}

/// One process's memory: (name, VmRSS, RssAnon), KiB.
type Sample = (String, u64, u64);

/// Each server's memory at the end of each phase.
struct Memory {
    namesrv_pid: i32,
    /// (phase, each process's sample).
    rows: Vec<(String, Vec<Sample>)>,
}

impl Memory {
    fn new(cluster: &common::Cluster) -> Memory {
        Memory {
            namesrv_pid: namesrv_pid(&cluster.namesrv_addr),
            rows: Vec::new(),
        }
    }

    fn processes(&self, cluster: &common::Cluster) -> Vec<(String, Option<i32>)> {
        let mut out = vec![("namesrv".to_string(), Some(self.namesrv_pid))];
        for node in &cluster.nodes {
            out.push((node.name.clone(), node.pid()));
        }
        out
    }

    fn sample(&mut self, cluster: &common::Cluster, phase: &str) {
        let row = self
            .processes(cluster)
            .into_iter()
            .filter_map(|(name, pid)| {
                let (rss, anon) = rss_kib(pid?)?;
                Some((name, rss, anon))
            })
            .collect();
        self.rows.push((phase.to_string(), row));
    }

    /// Prints every sample (MiB) and asserts each process's largest stayed within its bound.
    fn report_and_check(&self, scale: &Scale) {
        println!("resident memory, MiB (VmRSS / RssAnon):");
        for (phase, row) in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .map(|(name, rss, anon)| format!("{name} {} / {}", rss / 1024, anon / 1024))
                .collect();
            println!("  {phase:<32} {}", cells.join("  "));
        }
        let mut peaks: HashMap<&str, u64> = HashMap::new();
        for (_, row) in &self.rows {
            for (name, rss, _) in row {
                let peak = peaks.entry(name.as_str()).or_default();
                *peak = (*peak).max(*rss);
            }
        }
        let mut names: Vec<_> = peaks.into_iter().collect();
        names.sort();
        for (name, peak) in names {
            let bound = match name {
                "namesrv" => scale.namesrv_rss_mib_max,
                _ => scale.broker_rss_mib_max,
            };
            println!(
                "  {name}: largest VmRSS {} MiB (bound {bound} MiB)",
                peak / 1024
            );
            assert!(
                peak / 1024 <= bound,
                "{name} reached {} MiB (bound {bound} MiB)",
                peak / 1024
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// A real producer and consumer, throughout
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct LiveState {
    /// (queue id, queue offset) -> body, of every acknowledged send.
    acked: HashMap<(i32, i64), String>,
    /// (queue id, queue offset) -> body, of every message the consumer read.
    received: HashMap<(i32, i64), String>,
    send_errors: usize,
    pull_errors: usize,
    last_ack: Option<Instant>,
    longest_ack_gap: Duration,
}

/// A message read back with another body than acknowledged: its (queue id, queue offset),
/// the body acknowledged, the body read.
type Mismatch = ((i32, i64), String, String);

/// A real producer sending to [`LIVE_TOPIC`] every 20 ms and a real pull consumer reading
/// each of its queues, in the background until [`Live::stop`].
struct Live {
    state: Arc<Mutex<LiveState>>,
    /// Set to stop the producer, and then the consumer.
    stop_producing: Arc<AtomicBool>,
    stop_consuming: Arc<AtomicBool>,
    producing: tokio::task::JoinHandle<()>,
    consuming: Vec<tokio::task::JoinHandle<()>>,
    producer: Producer,
    consumer: PullConsumer,
    /// Acknowledged sends at the last checkpoint.
    checked: usize,
}

impl Live {
    async fn start(namesrv_addr: &str) -> Live {
        let producer = Producer::start(ProducerConfig::new(namesrv_addr, "hostile-live-p"))
            .await
            .unwrap();
        producer
            .send(Message::new(LIVE_TOPIC, "live-0"))
            .await
            .expect("the first live send (it creates the topic)");
        let consumer = PullConsumer::start(PullConsumerConfig::new(namesrv_addr, "hostile-live-c"))
            .await
            .unwrap();
        // The topic the send created reaches the name servers' routes with the group's
        // next registration: ask until it does (a fresh-clone CI run once asked too soon).
        let deadline = Instant::now() + Duration::from_secs(15);
        let queues = loop {
            match consumer.fetch_queues(LIVE_TOPIC).await {
                Ok(queues) => break queues,
                Err(e) if Instant::now() >= deadline => panic!("{LIVE_TOPIC} never routed: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        let state = Arc::new(Mutex::new(LiveState::default()));
        let (stop_producing, stop_consuming) = Default::default();
        let producing = tokio::spawn(produce(
            producer.clone(),
            state.clone(),
            Arc::clone(&stop_producing),
        ));
        let consuming = queues
            .into_iter()
            .map(|queue| {
                let stop = Arc::clone(&stop_consuming);
                tokio::spawn(consume(consumer.clone(), queue, state.clone(), stop))
            })
            .collect();
        Live {
            state,
            stop_producing,
            stop_consuming,
            producing,
            consuming,
            producer,
            consumer,
            checked: 0,
        }
    }

    /// Asserts that within 20 s the producer is acknowledged again (since the last
    /// checkpoint) and every acknowledged message is read back with its body.
    async fn checkpoint(&mut self, phase: &str) {
        self.check(phase, true).await;
    }

    async fn check(&mut self, phase: &str, require_new: bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (acked, missing, wrong) = self.unread();
            assert_eq!(wrong, None, "{phase}: read back with another body");
            if missing == 0 && (acked > self.checked || !require_new) {
                let s = self.state.lock().unwrap();
                println!(
                    "[{phase}] live: +{} acknowledged ({acked} in all, {} failed sends, longest gap \
                     between acknowledgements {} ms), every one read back ({} failed pulls)",
                    acked - self.checked,
                    s.send_errors,
                    s.longest_ack_gap.as_millis(),
                    s.pull_errors
                );
                self.checked = acked;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{phase}: {acked} acknowledged ({} at the last checkpoint), {missing} of them not \
                 read back within 20 s",
                self.checked
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// (acknowledged, of them not read yet, one read back with another body).
    fn unread(&self) -> (usize, usize, Option<Mismatch>) {
        let s = self.state.lock().unwrap();
        let mut missing = 0;
        for (place, body) in &s.acked {
            match s.received.get(place) {
                Some(read) if read != body => {
                    return (0, 0, Some((*place, body.clone(), read.clone())));
                }
                Some(_) => {}
                None => missing += 1,
            }
        }
        (s.acked.len(), missing, None)
    }

    /// Stops the producer, checks that the consumer reads back everything acknowledged, and
    /// stops the consumer.
    async fn stop(mut self) {
        self.stop_producing.store(true, Ordering::Relaxed);
        (&mut self.producing).await.unwrap();
        self.check("end", false).await;
        self.stop_consuming.store(true, Ordering::Relaxed);
        for task in std::mem::take(&mut self.consuming) {
            task.await.unwrap();
        }
        let gap = self.state.lock().unwrap().longest_ack_gap;
        assert!(
            gap < Duration::from_secs(10),
            "the live producer went {} ms without an acknowledgement",
            gap.as_millis()
        );
        self.producer.shutdown().await;
        self.consumer.shutdown().await;
    }
}

async fn produce(producer: Producer, state: Arc<Mutex<LiveState>>, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let body = format!("live-{n}");
        let sent = producer.send(Message::new(LIVE_TOPIC, body.clone())).await;
        record_send(&state, sent, body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn record_send(state: &Mutex<LiveState>, sent: client::Result<client::SendResult>, body: String) {
    let mut s = state.lock().unwrap();
    match sent {
        Ok(r) => {
            let now = Instant::now();
            if let Some(last) = s.last_ack {
                s.longest_ack_gap = s.longest_ack_gap.max(now - last);
            }
            s.last_ack = Some(now);
            s.acked.insert((r.queue.queue_id, r.queue_offset), body);
        }
        Err(_) => s.send_errors += 1,
    }
}

/// Reads `queue` from offset 0 with short polls (a long poll would take a place among
/// the held pulls this test fills on purpose).
async fn consume(
    consumer: PullConsumer,
    queue: MessageQueue,
    state: Arc<Mutex<LiveState>>,
    stop: Arc<AtomicBool>,
) {
    let mut offset = 0i64;
    while !stop.load(Ordering::Relaxed) {
        match consumer.pull(&queue, offset, 32, "*", Duration::ZERO).await {
            Ok(PullResult::Found {
                messages,
                next_begin_offset,
                ..
            }) => {
                let mut s = state.lock().unwrap();
                for m in messages {
                    let body = String::from_utf8_lossy(&m.body).to_string();
                    s.received.insert((queue.queue_id, m.queue_offset), body);
                }
                offset = next_begin_offset;
            }
            Ok(PullResult::NoNewMessage { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(other) => panic!("live pull of {queue} at {offset}: {other:?}"),
            Err(_) => {
                state.lock().unwrap().pull_errors += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A client connection driven by hand
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Answer {
    opaque: i32,
    code: i32,
    remark: String,
    at: Instant,
}

/// A client connection whose requests are written in batches, without waiting; a reader task
/// collects the answers with the time each came, and counts the requests the broker sends
/// (NOTIFY_CONSUMER_IDS_CHANGED).
struct Raw {
    writer: tokio::net::tcp::OwnedWriteHalf,
    answers: tokio::sync::mpsc::UnboundedReceiver<Answer>,
    notified: Arc<AtomicUsize>,
    reader: tokio::task::JoinHandle<()>,
    next_opaque: i32,
}

impl Raw {
    async fn connect(addr: &str) -> Raw {
        let (read, writer) = TcpStream::connect(addr).await.unwrap().into_split();
        let (tx, answers) = tokio::sync::mpsc::unbounded_channel();
        let notified = Arc::new(AtomicUsize::new(0));
        let reader = tokio::spawn(read_answers(read, tx, notified.clone()));
        Raw {
            writer,
            answers,
            notified,
            reader,
            next_opaque: 1,
        }
    }

    /// Writes `requests` in one go, each with the next opaque; returns their opaques.
    async fn send(&mut self, requests: Vec<RemotingCommand>) -> Vec<i32> {
        let mut out = BytesMut::new();
        let mut opaques = Vec::with_capacity(requests.len());
        for mut request in requests {
            request.opaque = self.next_opaque;
            opaques.push(self.next_opaque);
            self.next_opaque += 1;
            out.extend_from_slice(&remoting::codec::encode_frame(&request).unwrap());
        }
        self.writer.write_all(&out).await.unwrap();
        opaques
    }

    /// The answers that come within `within`, stopping early once `n` have come.
    async fn answers(&mut self, n: usize, within: Duration) -> Vec<Answer> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        while out.len() < n {
            match tokio::time::timeout_at(deadline, self.answers.recv()).await {
                Ok(Some(answer)) => out.push(answer),
                Ok(None) | Err(_) => break,
            }
        }
        out
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_answers(
    mut read: tokio::net::tcp::OwnedReadHalf,
    tx: tokio::sync::mpsc::UnboundedSender<Answer>,
    notified: Arc<AtomicUsize>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        while let Some(command) = next_frame(&mut buf) {
            if command.flag & FLAG_RESPONSE == 0 {
                notified.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let _ = tx.send(Answer {
                opaque: command.opaque,
                code: command.code,
                remark: command.remark.unwrap_or_default(),
                at: Instant::now(),
            });
        }
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Takes one whole frame off `buf` if it holds one:
/// `i32 length | serialize type << 24 | header length | header | body`.
fn next_frame(buf: &mut BytesMut) -> Option<RemotingCommand> {
    let length = u32::from_be_bytes(buf.get(..4)?.try_into().unwrap()) as usize;
    if buf.len() < 4 + length {
        return None;
    }
    let mut frame = buf.split_to(4 + length);
    frame.advance(4);
    let word = frame.get_u32();
    let kind = remoting::SerializeType::from_byte((word >> 24) as u8).unwrap();
    let header = frame.split_to((word & 0xff_ffff) as usize);
    let mut command = RemotingCommand::decode_header(kind, &header).unwrap();
    command.body = frame.freeze();
    Some(command)
}

/// One request over a plain client connection, answered within 10 s.
async fn ask(conn: &Connection, request: RemotingCommand) -> RemotingCommand {
    conn.request(request, Duration::from_secs(10))
        .await
        .unwrap()
}

async fn connect(addr: &str) -> Connection {
    Connection::connect(addr, &ConnectionConfig::default(), Arc::new(NoRequests))
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// 1. Forged peer frames
// ---------------------------------------------------------------------------------------

/// Every "role changed" line of node `i`'s log, as (role, term), in order.
fn role_changes(cluster: &common::Cluster, i: usize) -> Vec<(String, u64)> {
    let log = std::fs::read_to_string(&cluster.nodes[i].log).unwrap_or_default();
    let field = |line: &str, key: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(key).map(str::to_string))
    };
    log.lines()
        .map(strip_ansi)
        .filter(|l| l.contains("role changed"))
        .filter_map(|l| {
            let term = field(&l, "term=")?.parse().ok()?;
            Some((field(&l, "role=")?, term))
        })
        .collect()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads until the server closes `stream`; `None` if it is still open after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()?;
    Some(got)
}

/// Asserts `bytes` hold nothing but handshake refusals (`u16 length | 1 | reason`): no
/// answer to a peer RPC, no handshake accepted.
fn only_refusals(what: &str, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        assert!(rest.len() >= 3, "{what}: stray bytes {rest:?}");
        let length = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let message = rest
            .get(2..2 + length)
            .unwrap_or_else(|| panic!("{what}: not a handshake message: {bytes:?}"));
        assert_eq!(
            message.first(),
            Some(&1),
            "{what}: answered with something other than a refusal: {bytes:?}"
        );
        rest = &rest[2 + length..];
    }
}

/// The frames a stranger forges against node `target`, all in the term `term`.
fn forged_frames(target: u64, term: u64) -> Vec<(String, Vec<u8>)> {
    let members = [(STRANGER, "127.0.0.1:1".to_string())];
    let member = (target + 1) % 3;
    vec![
        ("vote".into(), forge::vote_frame(1, STRANGER, term, 1 << 40)),
        (
            format!("vote in n{member}'s name"),
            forge::vote_frame(2, member, term, 1 << 40),
        ),
        (
            "append-entries".into(),
            forge::append_entries_frame(3, STRANGER, term, 0, &members),
        ),
        (
            "install-snapshot".into(),
            forge::install_snapshot_frame(4, STRANGER, term, 1 << 40, &members, b"forged"),
        ),
    ]
}

/// Sends each forged frame to node `i`'s peer port raw, and after a handshake with a
/// wrong secret; every connection must be closed with nothing but a refusal.
async fn forge_against(cluster: &common::Cluster, i: usize, term: u64) {
    let addr = &cluster.nodes[i].peer_addr;
    let stranger = PeerIdentity {
        cluster: "TestCluster".into(),
        group: common::GROUP.into(),
        secret: PeerSecret::new(b"a guess at the cluster secret".to_vec()),
        rules: String::new(),
    };
    for (kind, frame) in forged_frames(i as u64, term) {
        let what = format!("n{i}: {kind} without a handshake");
        let mut raw = TcpStream::connect(addr).await.unwrap();
        raw.write_all(&frame).await.unwrap();
        let got = read_until_closed(&mut raw, Duration::from_secs(5)).await;
        only_refusals(&what, &got.unwrap_or_else(|| panic!("{what}: left open")));

        let what = format!("n{i}: {kind} after a handshake with a wrong secret");
        let mut wrong = TcpStream::connect(addr).await.unwrap();
        let timeout = Duration::from_secs(3);
        let e = handshake::client(&mut wrong, &stranger, STRANGER, i as u64, timeout)
            .await
            .expect_err("a wrong secret passed the handshake");
        assert!(e.to_string().contains("did not prove"), "{what}: {e}");
        let _ = wrong.write_all(&frame).await;
        let got = read_until_closed(&mut wrong, Duration::from_secs(5)).await;
        only_refusals(&what, &got.unwrap_or_else(|| panic!("{what}: left open")));
    }
}

/// Half-sent handshakes left open on node `i`'s peer port: one that claims a 64 MiB frame,
/// and ones that send half of a 500-byte hello. All must be closed within the handshake
/// deadline (the peer RPC deadline, 3 s) and a margin.
async fn half_sent_peer_frames(cluster: &common::Cluster, i: usize) {
    let addr = &cluster.nodes[i].peer_addr;
    let mut open = Vec::new();
    for k in 0..20 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let bytes: Vec<u8> = if k == 0 {
            (64u32 << 20)
                .to_be_bytes()
                .into_iter()
                .chain([0u8; 64])
                .collect()
        } else {
            500u16.to_be_bytes().into_iter().chain([0u8; 250]).collect()
        };
        s.write_all(&bytes).await.unwrap();
        open.push(s);
    }
    for (k, s) in open.iter_mut().enumerate() {
        let got = read_until_closed(s, Duration::from_secs(6)).await;
        let what = format!("n{i}: half-sent handshake {k}");
        only_refusals(&what, &got.unwrap_or_else(|| panic!("{what}: left open")));
    }
}

async fn forged_peer_frames(cluster: &common::Cluster) {
    let started = Instant::now();
    let before: Vec<_> = (0..3).map(|i| role_changes(cluster, i)).collect();
    let term = before.iter().flatten().map(|(_, t)| *t).max().unwrap();
    // The three nodes at once: each half-sent handshake waits out its deadline (3 s).
    futures::future::join_all((0..3).map(|i| async move {
        forge_against(cluster, i, term + 1_000).await;
        half_sent_peer_frames(cluster, i).await;
    }))
    .await;
    // Had any frame reached openraft, its node would have taken the forged term (a vote
    // moves to it, an append or snapshot makes the forger its leader), and the leader would
    // have been deposed into it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let forged = term + 1_000;
    let mut unchanged = true;
    for (i, before) in before.iter().enumerate() {
        let now = role_changes(cluster, i);
        let highest = now.iter().map(|(_, t)| *t).max().unwrap_or(0);
        assert!(
            highest < forged,
            "n{i} took the forged term {forged}: {now:?}"
        );
        unchanged &= &now == before;
        let log = std::fs::read_to_string(&cluster.nodes[i].log).unwrap();
        assert!(
            log.contains("refused a peer connection"),
            "n{i} did not log the refusals"
        );
    }
    assert!(cluster.routed_leader().await.is_some(), "no routed leader");
    // An election below the forged term is not the forgery's doing (a debug build stalled
    // on a loaded machine); it is reported, not failed.
    let roles = match unchanged {
        true => format!("no node changed role or term (highest term {term})"),
        false => format!(
            "an ordinary election happened meanwhile (terms now {:?}), none reached the \
             forged term {forged}",
            (0..3)
                .map(|i| role_changes(cluster, i).last().cloned())
                .collect::<Vec<_>>()
        ),
    };
    println!(
        "[forged peer frames] 4 kinds x 2 ways + 20 half-sent handshakes on each of 3 peer \
         ports: every one closed with nothing but a refusal, each node logged them; {roles}; \
         {} ms",
        started.elapsed().as_millis()
    );
}

// ---------------------------------------------------------------------------------------
// 2. Held pulls
// ---------------------------------------------------------------------------------------

fn create_topic(topic: &str, queues: i32) -> RemotingCommand {
    let header = CreateTopicRequestHeader {
        topic: topic.into(),
        default_topic: "TBW102".into(),
        read_queue_nums: queues,
        write_queue_nums: queues,
        perm: 6,
        topic_filter_type: "SINGLE_TAG".into(),
        ..Default::default()
    };
    RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_TOPIC, &header)
}

/// A pull from offset 0 of an empty queue of [`HELD_TOPIC`], with the suspend flag.
fn held_pull(queue_id: i32, hold_ms: i64) -> RemotingCommand {
    RemotingCommand::request(
        RequestCode::PULL_MESSAGE,
        &PullMessageRequestHeader {
            consumer_group: "hostile-holders".into(),
            topic: HELD_TOPIC.into(),
            queue_id,
            queue_offset: 0,
            max_msg_nums: 32,
            // Suspend | subscription.
            sys_flag: 2 | 4,
            suspend_timeout_millis: hold_ms,
            subscription: Some("*".into()),
            ..Default::default()
        },
    )
}

/// A connection holding pulls: opaque -> queue id of each pull sent and not answered.
struct Holder {
    raw: Raw,
    held: HashMap<i32, i32>,
}

impl Holder {
    async fn open(addr: &str) -> Holder {
        let mut raw = Raw::connect(addr).await;
        // One request answered, so the connection's read and write paths have both run.
        raw.send(vec![RemotingCommand::bare_request(9999)]).await;
        assert_eq!(raw.answers(1, Duration::from_secs(5)).await.len(), 1);
        Holder {
            raw,
            held: HashMap::new(),
        }
    }

    /// Sends `n` held pulls over the topic's queues in turn.
    async fn pull(&mut self, n: usize, hold_ms: i64) -> Instant {
        let queues: Vec<i32> = (0..n).map(|k| k as i32 % HELD_QUEUES).collect();
        let requests = queues.iter().map(|q| held_pull(*q, hold_ms)).collect();
        let sent = Instant::now();
        let opaques = self.raw.send(requests).await;
        self.held.extend(opaques.into_iter().zip(queues));
        sent
    }

    /// The answers that come within `within` (at most `n`), each no longer held.
    async fn answers(&mut self, n: usize, within: Duration) -> Vec<Answer> {
        let answers = self.raw.answers(n, within).await;
        for a in &answers {
            self.held.remove(&a.opaque);
        }
        answers
    }
}

/// Asserts the `n` pulls just sent past a cap were each answered SYSTEM_BUSY at once with a
/// remark naming `key`, and that nothing else was answered; returns when the last came.
async fn surplus_refused(holder: &mut Holder, n: usize, key: &str, sent: Instant) -> Duration {
    let mut answers = holder.answers(n, Duration::from_secs(3)).await;
    // Anything more within the next half second is a pull that should have been held.
    answers.extend(holder.answers(1, Duration::from_millis(500)).await);
    assert_eq!(
        answers.len(),
        n,
        "{n} pulls past {key}: {} answered within 3.5 s: {answers:?}",
        answers.len()
    );
    for a in &answers {
        assert_eq!(a.code, ResponseCode::SYSTEM_BUSY as i32, "{a:?}");
        assert!(
            a.remark.contains(key),
            "the remark does not name {key}: {a:?}"
        );
    }
    answers
        .iter()
        .map(|a| a.at - sent)
        .max()
        .unwrap_or_default()
}

/// One connection sends `maxHeldPullsPerConnection` held pulls and a surplus: the surplus is
/// refused at once.
async fn per_connection_cap(holder: &mut Holder, scale: &Scale) {
    let per = scale.held_per_connection;
    let sent = holder.pull(per + scale.held_surplus, scale.hold_ms).await;
    let key = "maxHeldPullsPerConnection";
    let busy = surplus_refused(holder, scale.held_surplus, key, sent).await;
    println!(
        "[held pulls] {} pulls past {key}={per} on one connection: all SYSTEM_BUSY, the last \
         within {} ms",
        scale.held_surplus,
        busy.as_millis()
    );
}

/// Opens connections to `leader` (one more than the caps need) and fills the held-pull caps:
/// the first connection past `maxHeldPullsPerConnection`, the rest up to `maxHeldPulls`, and
/// the last past it. Returns the connections and the leader's memory per held pull (KiB).
async fn fill_held_pulls(
    leader: &str,
    scale: &Scale,
    memory: &mut Memory,
    cluster: &common::Cluster,
) -> (Vec<Holder>, f64) {
    let per = scale.held_per_connection;
    let count = scale.held_total.div_ceil(per);
    let mut holders = Vec::new();
    for _ in 0..count + 1 {
        holders.push(Holder::open(leader).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = cluster.nodes[cluster.node_index(leader)].pid().unwrap();
    let (_, idle) = rss_kib(pid).unwrap();
    memory.sample(cluster, "held pulls: connections open");

    per_connection_cap(&mut holders[0], scale).await;
    let mut left = scale.held_total - per;
    for holder in &mut holders[1..count] {
        let n = left.min(per);
        holder.pull(n, scale.hold_ms).await;
        left -= n;
    }
    // Let every pull reach its wait before the total cap is probed.
    tokio::time::sleep(Duration::from_secs(if scale.long { 3 } else { 1 })).await;
    for (k, holder) in holders[..count].iter_mut().enumerate() {
        let early = holder.answers(usize::MAX, Duration::ZERO).await;
        assert!(
            early.is_empty(),
            "connection {k}: held pulls answered: {early:?}"
        );
    }
    let last = &mut holders[count];
    let sent = last.pull(scale.held_surplus, scale.hold_ms).await;
    let busy = surplus_refused(last, scale.held_surplus, "maxHeldPulls=", sent).await;
    let (_, full) = rss_kib(pid).unwrap();
    memory.sample(cluster, "held pulls: caps full");
    let per_pull = full.saturating_sub(idle) as f64 / scale.held_total as f64;
    println!(
        "[held pulls] {} held over {count} connections; {} more on another connection: all \
         SYSTEM_BUSY (maxHeldPulls), the last within {} ms; leader RssAnon {} -> {} KiB: \
         {per_pull:.2} KiB per held pull (bound {} KiB)",
        scale.held_total,
        scale.held_surplus,
        busy.as_millis(),
        idle,
        full,
        scale.held_pull_kib_max
    );
    (holders, per_pull)
}

/// While the caps are full, a real consumer's long poll is refused SYSTEM_BUSY and its short
/// poll still answers.
async fn long_poll_refused_while_full(namesrv_addr: &str) {
    let consumer = PullConsumer::start(PullConsumerConfig::new(namesrv_addr, "hostile-probe"))
        .await
        .unwrap();
    let queue = MessageQueue::new(HELD_TOPIC, common::GROUP, 1);
    match consumer
        .pull(&queue, 0, 1, "*", Duration::from_secs(1))
        .await
    {
        Err(ClientError::Broker {
            code: 2, remark, ..
        }) => {
            assert!(remark.contains("maxHeldPulls="), "{remark}")
        }
        other => panic!("a long poll while maxHeldPulls are held: {other:?}"),
    }
    match consumer.pull(&queue, 0, 1, "*", Duration::ZERO).await {
        Ok(PullResult::NoNewMessage { .. }) => {}
        other => panic!("a short poll while maxHeldPulls are held: {other:?}"),
    }
    consumer.shutdown().await;
}

/// A send to queue 0 answers every pull held on it, promptly.
async fn send_answers_held_pulls(namesrv_addr: &str, holders: &mut [Holder]) {
    let producer = Producer::start(ProducerConfig::new(namesrv_addr, "hostile-waker"))
        .await
        .unwrap();
    let queue = MessageQueue::new(HELD_TOPIC, common::GROUP, 0);
    let waiting: Vec<usize> = holders
        .iter()
        .map(|h| h.held.values().filter(|q| **q == 0).count())
        .collect();
    let sent = Instant::now();
    producer
        .send_to_queue(Message::new(HELD_TOPIC, "wake"), &queue)
        .await
        .unwrap();
    let mut latencies = Vec::new();
    for (holder, n) in holders.iter_mut().zip(&waiting) {
        let answers = holder.answers(*n, Duration::from_secs(10)).await;
        assert_eq!(answers.len(), *n, "held pulls on queue 0 answered");
        for a in answers {
            assert_eq!(a.code, ResponseCode::SUCCESS as i32, "{a:?}");
            latencies.push(a.at - sent);
        }
    }
    producer.shutdown().await;
    latencies.sort();
    let (first, last) = (latencies[0], *latencies.last().unwrap());
    println!(
        "[held pulls] a send to queue 0 answered its {} held pulls: the first {} ms, the last \
         {} ms after the send",
        latencies.len(),
        first.as_millis(),
        last.as_millis()
    );
    assert!(
        first < Duration::from_secs(1),
        "first held pull answered after {first:?}"
    );
    assert!(
        last < Duration::from_secs(5),
        "last held pull answered after {last:?}"
    );
}

/// Closes the first (full) connection; a new connection then holds as many pulls: the
/// places of the closed connection's pulls must be given back, not kept to their deadline.
async fn closed_connection_gives_back(leader: &str, scale: &Scale, holders: &mut Vec<Holder>) {
    let closed = holders.remove(0);
    let n = closed.held.len();
    drop(closed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut next = Holder::open(leader).await;
    next.pull(n, scale.hold_ms).await;
    let refused = next.answers(n, Duration::from_millis(1500)).await;
    println!(
        "[held pulls] a connection holding {n} closed; 0.5 s later a new one sent {n}: {} \
         refused",
        refused.len()
    );
    assert!(
        refused.is_empty(),
        "the held pulls of a closed connection kept their places: {} of {n} refused, e.g. {:?}",
        refused.len(),
        refused.first()
    );
    holders.push(next);
}

async fn held_pulls(cluster: &common::Cluster, leader: &str, scale: &Scale, memory: &mut Memory) {
    let started = Instant::now();
    let admin = connect(leader).await;
    let created = ask(&admin, create_topic(HELD_TOPIC, HELD_QUEUES)).await;
    assert_eq!(
        created.response_code(),
        Some(ResponseCode::SUCCESS),
        "{created:?}"
    );
    let (mut holders, per_pull) = fill_held_pulls(leader, scale, memory, cluster).await;
    long_poll_refused_while_full(&cluster.namesrv_addr).await;
    closed_connection_gives_back(leader, scale, &mut holders).await;
    send_answers_held_pulls(&cluster.namesrv_addr, &mut holders).await;
    drop(holders);
    tokio::time::sleep(Duration::from_millis(500)).await;
    memory.sample(cluster, "held pulls: connections closed");
    assert!(
        per_pull < scale.held_pull_kib_max,
        "{per_pull:.2} KiB per held pull (bound {} KiB)",
        scale.held_pull_kib_max
    );
    println!("[held pulls] {} ms", started.elapsed().as_millis());
}

// ---------------------------------------------------------------------------------------
// 3. Clients per group
// ---------------------------------------------------------------------------------------

fn consumer_heartbeat(client_id: &str, group: &str) -> RemotingCommand {
    let data = HeartbeatData {
        client_id: client_id.into(),
        producer_data_set: Vec::new(),
        consumer_data_set: vec![ConsumerData {
            group_name: group.into(),
            consume_type: "CONSUME_PASSIVELY".into(),
            message_model: "CLUSTERING".into(),
            consume_from_where: "CONSUME_FROM_LAST_OFFSET".into(),
            subscription_data_set: vec![SubscriptionData {
                topic: LIVE_TOPIC.into(),
                sub_string: "*".into(),
                expression_type: "TAG".into(),
                ..Default::default()
            }],
            unit_mode: false,
        }],
    };
    RemotingCommand::bare_request(RequestCode::HEART_BEAT).with_body(to_json(&data))
}

async fn consumer_ids(admin: &Connection, group: &str) -> Vec<String> {
    let header = ConsumerGroupRequestHeader {
        consumer_group: group.into(),
    };
    let answer = ask(
        admin,
        RemotingCommand::request(RequestCode::GET_CONSUMER_LIST_BY_GROUP, &header),
    )
    .await;
    let body: ConsumerListBody = from_json("consumer list", &answer.body).unwrap();
    body.consumer_id_list
}

async fn clients_per_group(leader: &str, scale: &Scale) {
    let started = Instant::now();
    let (cap, surplus) = (scale.clients_per_group, scale.clients_surplus);
    let mut raw = Raw::connect(leader).await;
    let heartbeats = (0..cap + surplus)
        .map(|i| consumer_heartbeat(&format!("127.0.0.1@hostile-{i}"), FULL_GROUP))
        .collect();
    raw.send(heartbeats).await;
    let answers = raw.answers(cap + surplus, Duration::from_secs(60)).await;
    assert_eq!(answers.len(), cap + surplus, "heartbeats answered");
    let accepted = answers.iter().filter(|a| a.code == 0).count();
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.code != 0).collect();
    for a in &refused {
        assert_eq!(a.code, ResponseCode::SYSTEM_ERROR as i32, "{a:?}");
        assert!(a.remark.contains("maxClientsPerGroup"), "{a:?}");
    }
    assert_eq!((accepted, refused.len()), (cap, surplus));
    let took = started.elapsed();

    let admin = connect(leader).await;
    assert_eq!(consumer_ids(&admin, FULL_GROUP).await.len(), cap);
    // A member already in the full group heartbeats again; a client of another group joins.
    let mut again = raw
        .send(vec![consumer_heartbeat("127.0.0.1@hostile-0", FULL_GROUP)])
        .await;
    again.extend(
        raw.send(vec![consumer_heartbeat("127.0.0.1@other", "hostile-other")])
            .await,
    );
    let answers = raw.answers(2, Duration::from_secs(10)).await;
    assert_eq!(answers.len(), 2);
    for a in &answers {
        assert_eq!(a.code, 0, "{a:?}");
    }
    assert_eq!(consumer_ids(&admin, "hostile-other").await.len(), 1);
    println!(
        "[clients per group] {} heartbeats into one group: {cap} joined, {surplus} refused \
         SYSTEM_ERROR (maxClientsPerGroup) in {} ms; a member again and another group's client \
         accepted; {} NOTIFY_CONSUMER_IDS_CHANGED received by the hostile connection (each \
         join notifies every member: {cap} joins cost {} notifications)",
        cap + surplus,
        took.as_millis(),
        raw.notified.load(Ordering::Relaxed),
        cap * (cap + 1) / 2
    );
}

async fn group_names(admin: &Connection) -> Vec<String> {
    let answer = ask(
        admin,
        RemotingCommand::bare_request(RequestCode::GET_ALL_SUBSCRIPTIONGROUP_CONFIG),
    )
    .await;
    let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    body["subscriptionGroupTable"]
        .as_object()
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

/// Heartbeats naming new consumer groups: a herd of 50 naming one at once (created once,
/// under the broker's creation lock), then one new group each, past
/// `autoCreateSubscriptionGroupLimit`: the broker holds exactly the limit afterwards.
async fn auto_created_groups(leader: &str, scale: &Scale) {
    let started = Instant::now();
    let admin = connect(leader).await;
    let before = group_names(&admin).await.len();
    assert!(
        before < scale.group_limit,
        "{before} groups before the phase"
    );
    let mut raw = Raw::connect(leader).await;
    let mut heartbeats: Vec<RemotingCommand> = (0..50)
        .map(|i| consumer_heartbeat(&format!("127.0.0.1@herd-{i}"), "hostile-herd"))
        .collect();
    heartbeats.extend((0..scale.group_attempts).map(|i| {
        consumer_heartbeat(
            &format!("127.0.0.1@group-{i}"),
            &format!("hostile-group-{i}"),
        )
    }));
    let n = heartbeats.len();
    raw.send(heartbeats).await;
    // Heartbeats are answered after the group (and its retry topic) is created or refused.
    let answers = raw.answers(n, Duration::from_secs(180)).await;
    assert_eq!(answers.len(), n, "heartbeats answered");
    let after = group_names(&admin).await;
    assert!(
        after.iter().any(|g| g == "hostile-herd"),
        "the herd's group"
    );
    assert_eq!(
        after.len(),
        scale.group_limit,
        "groups held after {} new ones were named",
        scale.group_attempts + 1
    );
    println!(
        "[auto-created groups] {before} groups held; a herd of 50 heartbeats for one new group \
         and {} for a new group each: {} created, the rest refused \
         (autoCreateSubscriptionGroupLimit={}) in {} ms",
        scale.group_attempts,
        after.len() - before,
        scale.group_limit,
        started.elapsed().as_millis()
    );
}

// ---------------------------------------------------------------------------------------
// 4. Auto-created topics
// ---------------------------------------------------------------------------------------

fn auto_send(topic: &str) -> RemotingCommand {
    let header = SendMessageRequestHeader {
        producer_group: "hostile-auto".into(),
        topic: topic.into(),
        default_topic: "TBW102".into(),
        default_topic_queue_nums: 4,
        queue_id: 0,
        born_timestamp: 1,
        ..Default::default()
    };
    RemotingCommand::request(
        RequestCode::SEND_MESSAGE_V2,
        &SendMessageRequestHeaderV2::from(header),
    )
    .with_body("auto")
}

async fn topic_names(admin: &Connection) -> Vec<String> {
    let answer = ask(
        admin,
        RemotingCommand::bare_request(RequestCode::GET_ALL_TOPIC_CONFIG),
    )
    .await;
    let topics: TopicConfigSerializeWrapper = from_json("topics", &answer.body).unwrap();
    topics.topic_config_table.into_keys().collect()
}

/// Sends to every topic of `topics` (64 at a time): (created, refused naming the limit).
async fn send_to_new_topics(admin: &Connection, topics: Vec<String>) -> (Vec<String>, Vec<String>) {
    let answers: Vec<(String, RemotingCommand)> = futures::stream::iter(topics)
        .map(|topic| async move {
            let answer = ask(admin, auto_send(&topic)).await;
            (topic, answer)
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let (mut created, mut refused) = (Vec::new(), Vec::new());
    for (topic, answer) in answers {
        match answer.response_code() {
            Some(ResponseCode::SUCCESS) => created.push(topic),
            Some(ResponseCode::TOPIC_NOT_EXIST)
                if answer
                    .remark
                    .as_deref()
                    .is_some_and(|r| r.contains("autoCreateTopicLimit")) =>
            {
                refused.push(topic)
            }
            _ => panic!("a send to the new topic {topic}: {answer:?}"),
        }
    }
    created.sort();
    refused.sort();
    (created, refused)
}

async fn wait_routed(cluster: &common::Cluster, topic: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while cluster
        .namesrv()
        .topic_route(topic)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "{topic} not routed within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn auto_created_topics(cluster: &common::Cluster, leader: &str, scale: &Scale) {
    let started = Instant::now();
    let admin = connect(leader).await;
    let held = topic_names(&admin).await.len();
    let allowed = scale.topic_limit.saturating_sub(held);
    let topics = (0..scale.topic_attempts)
        .map(|i| format!("HostileAuto{i:06}"))
        .collect();
    let (created, refused) = send_to_new_topics(&admin, topics).await;
    let took = started.elapsed();
    assert_eq!(
        created.len(),
        allowed,
        "{held} topics held, autoCreateTopicLimit={}",
        scale.topic_limit
    );
    let now = topic_names(&admin).await;
    assert_eq!(
        now.len(),
        scale.topic_limit,
        "topics held after the attempts"
    );
    assert!(
        refused.iter().all(|t| !now.contains(t)),
        "a refused topic exists"
    );
    // The group still registers: its newest topics route, and its live topic still does.
    let timeout = Duration::from_secs(if scale.long { 120 } else { 30 });
    wait_routed(cluster, created.first().unwrap(), timeout).await;
    wait_routed(cluster, created.last().unwrap(), timeout).await;
    wait_routed(cluster, LIVE_TOPIC, timeout).await;
    let refused_route = cluster.namesrv().topic_route(&refused[0]).await.unwrap();
    assert!(refused_route.is_none(), "{} is routed", refused[0]);
    assert!(
        cluster.routed_leader().await.is_some(),
        "the group has no routed leader"
    );
    println!(
        "[auto-created topics] {} new topics sent to with {held} held and \
         autoCreateTopicLimit={}: {} created and routed, {} refused TOPIC_NOT_EXIST \
         (autoCreateTopicLimit) in {} ms; {} ms in all",
        scale.topic_attempts,
        scale.topic_limit,
        created.len(),
        refused.len(),
        took.as_millis(),
        started.elapsed().as_millis()
    );
}

// ---------------------------------------------------------------------------------------
// 5. Restart, and every server still up
// ---------------------------------------------------------------------------------------

async fn restart_a_follower(cluster: &mut common::Cluster, leader: &str, live: &mut Live) {
    let follower = (0..3).find(|&i| cluster.nodes[i].addr != leader).unwrap();
    cluster.kill(follower);
    tokio::time::sleep(Duration::from_secs(2)).await;
    live.checkpoint("a follower down").await;
    let started = Instant::now();
    cluster.start_node(follower);
    let addr = cluster.nodes[follower].addr.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !common::routed_members(cluster).await.contains(&addr) {
        assert!(
            Instant::now() < deadline,
            "n{follower} never registered after its restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "[restart] n{follower} killed and started: registered again after {} ms",
        started.elapsed().as_millis()
    );
}

/// The terms in which some node became leader, in order.
fn leader_terms(cluster: &common::Cluster) -> Vec<u64> {
    let mut terms: Vec<u64> = (0..cluster.nodes.len())
        .flat_map(|i| cluster.led_terms(i))
        .collect();
    terms.sort();
    terms.dedup();
    terms
}

fn all_servers_up(cluster: &mut common::Cluster, namesrv_pid: i32) {
    for node in &mut cluster.nodes {
        let child = node.child.as_mut().expect("started");
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "{} has exited",
            node.name
        );
    }
    let stat = std::fs::read_to_string(format!("/proc/{namesrv_pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next();
    assert!(
        matches!(state, Some(s) if s != "Z" && s != "X"),
        "the name server has exited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_clients_and_strangers_leave_the_group_working() {
    let started = Instant::now();
    let scale = Scale::from_env();
    let mut cluster = common::Cluster::start(&scale.broker_conf());
    cluster.wait_ready(Duration::from_secs(60)).await;
    let mut memory = Memory::new(&cluster);
    memory.sample(&cluster, "ready");
    let mut live = Live::start(&cluster.namesrv_addr).await;
    live.checkpoint("start").await;

    forged_peer_frames(&cluster).await;
    live.checkpoint("forged peer frames").await;
    memory.sample(&cluster, "forged peer frames");

    // Each phase goes to the leader of the moment: on a loaded machine a stalled debug
    // build may lose an election (the forged frames' check tells that from a forgery).
    let leader = cluster.wait_for_leader(None, Duration::from_secs(30)).await;
    held_pulls(&cluster, &leader, &scale, &mut memory).await;
    live.checkpoint("held pulls").await;

    let leader = cluster.wait_for_leader(None, Duration::from_secs(30)).await;
    clients_per_group(&leader, &scale).await;
    live.checkpoint("clients per group").await;
    memory.sample(&cluster, "clients per group");

    let leader = cluster.wait_for_leader(None, Duration::from_secs(30)).await;
    auto_created_groups(&leader, &scale).await;
    live.checkpoint("auto-created groups").await;

    let leader = cluster.wait_for_leader(None, Duration::from_secs(30)).await;
    auto_created_topics(&cluster, &leader, &scale).await;
    live.checkpoint("auto-created topics").await;
    memory.sample(&cluster, "auto-created topics");

    let leader = cluster.wait_for_leader(None, Duration::from_secs(30)).await;
    restart_a_follower(&mut cluster, &leader, &mut live).await;
    live.checkpoint("restarted follower").await;
    live.stop().await;
    println!(
        "terms with a new leader during the run: {:?}",
        leader_terms(&cluster)
    );
    let timeout = Duration::from_secs(if scale.long { 300 } else { 60 });
    cluster
        .wait_commit_logs_identical(&[0, 1, 2], timeout)
        .await;
    memory.sample(&cluster, "end");
    all_servers_up(&mut cluster, memory.namesrv_pid);
    memory.report_and_check(&scale);
    println!(
        "hostile suite ({}) done in {} s",
        if scale.long { "long" } else { "short" },
        started.elapsed().as_secs()
    );
}
