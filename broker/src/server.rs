//! Wiring: the dledger node, the derived state, the background tasks (name-server
//! registration, consumer-offset commits, client expiry, leader announcements) and the
//! remoting request handler, which looks each request code up once in the processor
//! table (`processor::handler`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dledger::network::handshake::{PeerIdentity, PeerSecret};
use dledger::{DLedgerConfig, DLedgerNode, FlushMode, Role, RoleState};
use futures::future::BoxFuture;
use remoting::acl::PlainAcl;
use remoting::route::{perm, TopicConfig};
use remoting::throttle::Throttle;
use remoting::{
    Connection, ConnectionConfig, RemotingCommand, RequestCode, RequestHandler, ResponseCode,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::broker::{Broker, DEFAULT_TOPIC};
use crate::command::BrokerCommand;
use crate::config::{BrokerConfig, FlushDiskType};
use crate::error::{BrokerError, Result};
use crate::metrics::BrokerMetrics;
use crate::processor;
use crate::store::{BrokerHook, BrokerState};

fn dledger_config(config: &BrokerConfig, acl: Option<&PlainAcl>) -> Result<DLedgerConfig> {
    let peers = dledger::parse_peers(&config.dledger_peers)?;
    let self_id = dledger::parse_node_name(&config.dledger_self_id)?;
    let mut d = DLedgerConfig::new(self_id, peers, config.store_path.clone());
    d.segment_bytes = config.commit_log_segment_bytes;
    d.warm_segments = config.warm_mapped_file;
    d.page_cache_bytes = config.page_cache_window;
    d.flush_mode = match config.flush_disk_type {
        FlushDiskType::SyncFlush => FlushMode::Sync,
        FlushDiskType::AsyncFlush => FlushMode::Async,
    };
    d.flush_interval_ms = config.flush_interval_ms;
    d.heartbeat_interval_ms = config.heartbeat_interval_ms;
    d.election_timeout_min_ms = config.election_timeout_min_ms;
    d.election_timeout_max_ms = config.election_timeout_max_ms;
    if !config.preferred_leader_id.trim().is_empty() {
        d.preferred_leader_id = Some(dledger::parse_node_name(&config.preferred_leader_id)?);
    }
    d.join_existing = config.join_existing_group;
    d.membership_timeout_ms = config.membership_change_timeout_ms;
    d.test_flush_delay_ms = config.test_commit_log_flush_delay_ms;
    d.test_record_flushed = config.test_record_flushed_position;
    d.identity = PeerIdentity {
        cluster: config.cluster_name.clone(),
        group: config.dledger_group.clone(),
        secret: match config.auth.secret().map_err(BrokerError::Config)? {
            Some(secret) => PeerSecret::new(secret.bytes().to_vec()),
            None => PeerSecret::default(),
        },
        rules: acl.map(PlainAcl::fingerprint).unwrap_or_default(),
    };
    d.peer_tls = config.peer_tls.clone();
    d.append_timeout_ms = config.send_timeout_ms;
    d.max_entry_bytes = d
        .max_entry_bytes
        .max(config.max_message_bytes + 64 * 1024)
        .min((config.commit_log_segment_bytes / 2) as usize);
    d.max_frame_bytes = d.max_frame_bytes.max(d.max_entry_bytes * 2 + 4096);
    d.validate()?;
    Ok(d)
}

/// Runs a broker on an already bound client listener until `shutdown` resolves. The
/// dledger peer port comes from `dLegerPeers`.
///
/// When the node's Raft core stops by itself (a full disk, an I/O error, a failed apply),
/// the node leaves the name servers, says why, and starts again in this process once its
/// store's filesystem has room for a new CommitLog segment ([`room_to_restart`]), after a
/// backoff (1 s, doubling up to a minute): opening the store again runs the same recovery
/// as a restart after a crash. A store marked removed from its group does not start again:
/// the error ends `run`. Errors of the first start end `run` at once.
pub async fn run(
    listener: TcpListener,
    config: BrokerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    run_with_metrics(listener, None, config, shutdown).await
}

/// [`run`], also serving the Prometheus endpoint (`GET /metrics`, [`crate::metrics`]) on
/// `metrics_listener` when given, for as long as `run` would run: across the node's
/// in-process restarts, which keep the counters.
pub async fn run_with_metrics(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    config: BrokerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    use futures::FutureExt;
    let addr = listener.local_addr().map_err(|e| BrokerError::Io {
        path: "listener".into(),
        source: e,
    })?;
    let shutdown = Box::pin(shutdown).shared();
    let open_files = crate::consume_queue::raise_open_files_limit();
    info!(
        open_files,
        consume_queue_files = crate::consume_queue::OpenFiles::limit_for_this_process(),
        "open-file limits: the process's, and how many ConsumeQueue files stay open at once"
    );
    let metrics = BrokerMetrics::new(&config);
    let _endpoint = metrics_listener.map(|metrics_listener| {
        let m = metrics.clone();
        AbortOnDrop(tokio::spawn(remoting::metrics_http::serve(
            metrics_listener,
            remoting::metrics_http::MetricsHttpConfig::default(),
            Arc::new(move || m.render()),
            std::future::pending(),
        )))
    });
    let mut listener = Some(listener);
    let mut backoff = RESTART_BACKOFF_MIN;
    let mut restarting = false;
    loop {
        let listener = match listener.take() {
            Some(listener) => listener,
            None => TcpListener::bind(addr).await.map_err(|e| BrokerError::Io {
                path: format!("listener {addr}").into(),
                source: e,
            })?,
        };
        let started = tokio::time::Instant::now();
        match run_node(listener, config.clone(), metrics.clone(), shutdown.clone()).await {
            Ok(Exit::Shutdown) => return Ok(()),
            Ok(Exit::CoreStopped(reason)) => {
                error!(
                    %reason,
                    "this node's Raft core stopped: it has left the name servers and starts \
                     again once its disk has room"
                );
                if started.elapsed() >= RESTART_BACKOFF_RESET {
                    backoff = RESTART_BACKOFF_MIN;
                }
            }
            Err(BrokerError::DLedger(e @ dledger::DLedgerError::Removed { .. })) => {
                return Err(BrokerError::DLedger(e))
            }
            Err(e) if restarting => warn!(error = %e, "starting this node again failed; retrying"),
            Err(e) => return Err(e),
        }
        restarting = true;
        tokio::select! {
            _ = shutdown.clone() => return Ok(()),
            _ = room_to_restart(&config, backoff) => {}
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
    }
}

/// Ends the metrics endpoint with `run`, whichever way it returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// First wait before starting a stopped node again; doubled per failed start, up to the max.
const RESTART_BACKOFF_MIN: Duration = Duration::from_secs(1);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A node that ran this long before it stopped starts again after the shortest wait.
const RESTART_BACKOFF_RESET: Duration = Duration::from_secs(600);
/// Room a restart needs besides one CommitLog segment: RocksDB's logs, ConsumeQueue files.
const RESTART_ROOM_MARGIN: u64 = 16 << 20;

/// Waits `backoff`, then until the store's filesystem has room for a new CommitLog segment
/// and a margin (checked every second). Only that much: once running, the node's own
/// retention can delete expired segments, which a stopped node cannot.
async fn room_to_restart(config: &BrokerConfig, backoff: Duration) {
    tokio::time::sleep(backoff).await;
    let needed = config.commit_log_segment_bytes + RESTART_ROOM_MARGIN;
    let mut said = false;
    loop {
        match crate::disk::available_bytes(&config.store_path) {
            Ok(available) if available >= needed => {
                info!(available, "the store has room again: starting this node");
                return;
            }
            Ok(available) if !said => {
                warn!(
                    available,
                    needed,
                    store = %config.store_path.display(),
                    "waiting for room on the store's filesystem before starting again"
                );
                said = true;
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot read the store's free space"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How one run of the node ended.
enum Exit {
    /// `shutdown` resolved.
    Shutdown,
    /// The Raft core stopped by itself, for this reason.
    CoreStopped(String),
}

/// One run of the node: open the store, serve until `shutdown` or until the Raft core
/// stops by itself, then close everything (the store's files and locks are released).
async fn run_node(
    listener: TcpListener,
    config: BrokerConfig,
    metrics: Arc<BrokerMetrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<Exit> {
    let store_host = listener.local_addr().map_err(|e| BrokerError::Io {
        path: "listener".into(),
        source: e,
    })?;
    std::fs::create_dir_all(&config.store_path).map_err(|e| BrokerError::Io {
        path: config.store_path.clone(),
        source: e,
    })?;
    let acl = match config.acl_enable {
        true => {
            let files = config.acl_files();
            let acl = PlainAcl::load(&files).map_err(|e| BrokerError::Config(e.to_string()))?;
            info!(
                files = ?files,
                accounts = acl.access_keys().count(),
                fingerprint = %acl.fingerprint(),
                "ACL enabled"
            );
            Some(Arc::new(acl))
        }
        false => None,
    };
    let opening = std::time::Instant::now();
    let state = BrokerState::open(&config.store_path, config.consume_queue_file_bytes)?;
    info!(
        took_ms = opening.elapsed().as_millis() as u64,
        "broker state opened"
    );
    let node = DLedgerNode::start(
        dledger_config(&config, acl.as_deref())?,
        BrokerHook::new(state.clone()).with_index(config.message_index_enable),
    )
    .await?;
    let broker = Arc::new(Broker::new(
        config,
        node,
        state,
        store_host,
        metrics.clone(),
    ));
    metrics.attach(&broker);
    info!(
        broker_name = %broker.config().broker_name,
        node = %broker.config().dledger_self_id,
        addr = %store_host,
        took_ms = opening.elapsed().as_millis() as u64,
        "broker started"
    );

    let mut tasks = vec![
        tokio::spawn(watch_role(broker.clone())),
        tokio::spawn(crate::registration::run(broker.clone())),
        tokio::spawn(commit_offsets(broker.clone())),
        tokio::spawn(crate::stats::run(broker.clone())),
        tokio::spawn(expire_clients(broker.clone())),
        tokio::spawn(crate::schedule::run(broker.clone())),
        tokio::spawn(crate::transaction::run(broker.clone())),
        tokio::spawn(crate::retention::run(broker.clone())),
        tokio::spawn(crate::retention::purge(broker.clone())),
        tokio::spawn(sync_consume_queues(broker.clone())),
    ];
    let connection_config = ConnectionConfig {
        max_frame_bytes: broker.config().max_message_bytes * 2 + 1024 * 1024,
        server_tls: Some(broker.config().server_tls.clone()),
        idle_timeout_ms: broker.config().server_idle_seconds * 1000,
        max_connections: broker.config().server_max_connections.max(1),
        max_header_bytes: broker.config().server_max_header_bytes,
        open_connections: Some(metrics.connections.clone()),
        ..ConnectionConfig::default()
    };
    let stopped: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let core_stopped = {
        let (broker, stopped) = (broker.clone(), stopped.clone());
        async move {
            let mut role = broker.node().role_watch();
            let _ = role.wait_for(|s| s.role == Role::Shutdown).await;
            let reason = broker
                .node()
                .stop_reason()
                .unwrap_or_else(|| "the Raft core stopped".into());
            *stopped.lock().unwrap() = Some(reason);
        }
    };
    remoting::connection::serve(
        listener,
        connection_config,
        Arc::new(Handler {
            timed: broker.config().metrics_addr.is_some(),
            broker: broker.clone(),
            acl,
        }),
        async {
            tokio::select! {
                _ = shutdown => {}
                _ = core_stopped => {}
            }
        },
    )
    .await;
    let stopped = stopped.lock().unwrap().take();

    // Leave cleanly: final offsets, name servers, then Raft.
    if stopped.is_none() {
        flush_offsets(&broker).await;
    }
    crate::registration::unregister_all(&broker).await;
    for task in tasks.drain(..) {
        task.abort();
        let _ = task.await;
    }
    // Connections closed by `serve` drop their handles to the broker as they finish.
    let mut broker = broker;
    for _ in 0..250 {
        match Arc::try_unwrap(broker) {
            Ok(b) => {
                let result = b.shutdown_node().await;
                return match stopped {
                    // The core is gone already; stopping it again only repeats why.
                    Some(reason) => Ok(Exit::CoreStopped(reason)),
                    None => result.map(|()| Exit::Shutdown).map_err(Into::into),
                };
            }
            Err(b) => broker = b,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    warn!("requests still running at shutdown; dledger stops with them");
    Ok(match stopped {
        Some(reason) => Exit::CoreStopped(reason),
        None => Exit::Shutdown,
    })
}

/// On becoming leader: announce the client address through the log, make sure the
/// default topic exists, and register at once.
async fn watch_role(broker: Arc<Broker>) {
    let mut rx: watch::Receiver<RoleState> = broker.node().role_watch();
    let mut last = None;
    loop {
        let state = rx.borrow_and_update().clone();
        let key = (state.role, state.term, state.leader_id, state.voter);
        if last != Some(key) {
            info!(
                node_id = state.node_id,
                role = ?state.role,
                term = state.term,
                leader_id = ?state.leader_id,
                voter = state.voter,
                "role changed"
            );
            last = Some(key);
            broker.register_soon();
            if state.role == Role::Leader {
                let b = broker.clone();
                tokio::spawn(async move { on_elected(b, state.term).await });
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn on_elected(broker: Arc<Broker>, term: u64) {
    let announce = BrokerCommand::LeaderInfo {
        node_id: broker.node().node_id(),
        term,
        broker_addr: broker.config().broker_addr(),
    };
    if let Err(e) = broker.propose(&announce).await {
        warn!(error = %e, term, "could not announce leadership");
        return;
    }
    if broker.auto_create_topic_enabled() && broker.topic(DEFAULT_TOPIC).is_none() {
        let config = TopicConfig {
            topic_name: DEFAULT_TOPIC.into(),
            read_queue_nums: broker.config().default_topic_queue_nums,
            write_queue_nums: broker.config().default_topic_queue_nums,
            perm: perm::READ_WRITE | perm::INHERIT,
            ..TopicConfig::default()
        };
        if let Err(e) = broker.propose(&BrokerCommand::PutTopic { config }).await {
            warn!(error = %e, "could not create the default topic");
        }
    }
    broker.register_soon();
}

/// Every `flushIntervalConsumeQueue`, syncs the ConsumeQueues if due and prunes their journal.
async fn sync_consume_queues(broker: Arc<Broker>) {
    let config = broker.config();
    let interval = Duration::from_millis(config.flush_consume_queue_interval_ms.max(1));
    let mut synced = crate::consume_queue::ConsumeQueueSync::new(
        config.flush_consume_queue_least_pages,
        Duration::from_millis(config.flush_consume_queue_thorough_interval_ms),
    );
    loop {
        tokio::time::sleep(interval).await;
        let b = broker.clone();
        let done = tokio::task::spawn_blocking(move || {
            let result = b.sync_consume_queues(&mut synced);
            (synced, result)
        })
        .await;
        match done {
            Ok((back, result)) => {
                synced = back;
                if let Err(e) = result {
                    // The journal keeps what was not synced; the next pass tries again.
                    warn!(error = %e, "fsync of the ConsumeQueues failed");
                }
            }
            Err(_) => return,
        }
    }
}

/// Moves consumer offsets committed on this leader into the Raft log, in batches.
async fn commit_offsets(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(Duration::from_millis(
        broker.config().offset_commit_interval_ms,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        flush_offsets(&broker).await;
    }
}

pub(crate) async fn flush_offsets(broker: &Broker) {
    // Held from the copy to the release, so an offset reset (`Broker::reset_offsets`)
    // never lands between a batch's copy and its append and is overwritten by it.
    let _flush = broker.offset_flush().await;
    let batch = broker.pending_offsets();
    if batch.is_empty() {
        return;
    }
    let n = batch.len();
    let command = BrokerCommand::UpdateOffsets {
        offsets: batch.clone(),
    };
    if let Err(e) = broker.propose(&command).await {
        // Consumers re-commit every few seconds; a new leader gets them then.
        warn!(error = %e, offsets = n, "could not commit consumer offsets");
    }
    broker.release_pending_offsets(batch);
}

async fn expire_clients(broker: Arc<Broker>) {
    let expiry = Duration::from_millis(broker.config().client_expiry_ms);
    let mut tick = tokio::time::interval(Duration::from_secs(10).min(expiry));
    loop {
        tick.tick().await;
        if let Some(deadline) = tokio::time::Instant::now().checked_sub(expiry) {
            broker.clients().expire(deadline);
        }
    }
}

struct Handler {
    broker: Arc<Broker>,
    /// With `aclEnable`: every request passes it before its handler runs.
    acl: Option<Arc<PlainAcl>>,
    /// With the metrics endpoint on: each request's latency is recorded
    /// (`rocketmq_rpc_latency`); without it no one reads the figure, and none is taken.
    timed: bool,
}

/// ACL refusals, logged at most once every 10 s.
static ACL_REFUSALS: Throttle = Throttle::new(10_000);

impl RequestHandler for Handler {
    fn handle(
        &self,
        conn: Connection,
        request: RemotingCommand,
    ) -> BoxFuture<'static, Option<RemotingCommand>> {
        let broker = self.broker.clone();
        let timed = self.timed;
        if let Some(acl) = &self.acl {
            if let Err(denied) = acl.check(&request, conn.peer().ip()) {
                if let Some(left_out) = ACL_REFUSALS.admit() {
                    warn!(peer = %conn.peer(), code = request.code, access_key = request.ext(remoting::acl::ACCESS_KEY).unwrap_or(""), reason = %denied, left_out, "request refused by the ACL");
                }
                let response = (!request.is_oneway()).then(|| denied.response(&request));
                return Box::pin(async move { response });
            }
        }
        Box::pin(async move {
            let arrived = timed.then(std::time::Instant::now);
            let Some((code, handle)) = RequestCode::from_i32(request.code)
                .and_then(|code| processor::handler(code).map(|h| (code, h)))
            else {
                let name = RequestCode::from_i32(request.code).map_or("request code", |c| c.name());
                return Some(RemotingCommand::error(
                    ResponseCode::REQUEST_CODE_NOT_SUPPORTED,
                    format!(
                        "{name} ({}) is not supported by rocketraft yet",
                        request.code
                    ),
                ));
            };
            let response = handle(&broker, &conn, &request).await;
            let response = response.unwrap_or_else(|e| match e {
                processor::ProcessError::Response(r) => *r,
                processor::ProcessError::Header(e) => RemotingCommand::error(
                    ResponseCode::SYSTEM_ERROR,
                    format!("{}: {e}", code.name()),
                ),
            });
            if let Some(arrived) = arrived {
                let rpc = crate::metrics::events::Rpc {
                    request_code: request.code,
                    response_code: response.code,
                    long_polling: remoting::connection::request_slot_released(),
                    oneway: request.is_oneway(),
                };
                let took = arrived.elapsed().as_millis() as u64;
                broker.metrics().events.rpc(rpc, took);
            }
            if request.is_oneway() && response.code != ResponseCode::SUCCESS as i32 {
                // No one reads this answer: say it here, or a client bug goes unseen.
                warn!(
                    peer = %conn.peer(),
                    request = code.name(),
                    code = response.code,
                    remark = response.remark.as_deref().unwrap_or(""),
                    "oneway request refused"
                );
            }
            Some(response)
        })
    }

    fn on_close(&self, conn: &Connection) {
        self.broker.clients().connection_closed(conn);
    }
}
