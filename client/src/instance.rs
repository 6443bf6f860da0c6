//! [`ClientInstance`]: what a producer or consumer shares with the cluster — its client
//! id, the name servers, the route cache, one connection per broker address, and the
//! leader-aware request path.
//!
//! # Leader-aware requests
//!
//! [`ClientInstance::request_group`] sends to a broker group's leader (brokerId 0 in
//! the cached route) and promises:
//!
//! - A follower's "not the leader" answer (SERVICE_NOT_AVAILABLE with ext field
//!   `leaderAddr`) sends the same request at once to the named leader, up to
//!   `max_leader_redirects` times per call, and records that leader in the route cache.
//!   A redirect is not a failed attempt.
//! - When the leader cannot be reached (connect refused or timed out: nothing was
//!   sent), the same request goes to the group's other members; a follower names the
//!   leader, a member that now leads answers. When no member helps, the group's routes
//!   are refreshed from the name servers and any new address is tried.
//! - A request that was written but got no answer (deadline, or the connection closed)
//!   ends the call with [`ClientError::OutcomeUnknown`] at once: it is never resent to
//!   another member, because the first one may have carried it out.
//!
//! Every event of this kind also asks the background refresher for a route refresh;
//! it refreshes every `poll_name_server_interval_ms` anyway.
//!
//! # Requests from brokers
//!
//! Brokers send NOTIFY_CONSUMER_IDS_CHANGED on the client's connections; the instance's
//! [`RequestHandler`] wakes the consumer of that group through a one-slot channel (a
//! pending wake-up already covers a second one). CHECK_TRANSACTION_STATE goes to the
//! transactional producer of the message's group ([`crate::transaction`]),
//! RESET_CONSUMER_CLIENT_OFFSET to the push consumer of its group, and
//! GET_CONSUMER_RUNNING_INFO is answered with that consumer's running info. Everything
//! else is answered REQUEST_CODE_NOT_SUPPORTED.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use remoting::admin_body::ConsumerRunningInfo;
use remoting::header::{
    ConsumerGroupRequestHeader, GetConsumerRunningInfoRequestHeader, UnregisterClientRequestHeader,
};
use remoting::route::{to_json, HeartbeatData, LEADER_BROKER_ID};
use remoting::{
    Connection, ConnectionConfig, RemotingCommand, RequestCode, RequestHandler, ResponseCode,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::{ClientError, Result};
use crate::namesrv::NameServerClient;
use crate::route::RouteTable;

/// The ext field in which a follower names the current leader's client address.
pub const LEADER_ADDR_FIELD: &str = "leaderAddr";

/// Settings every producer and consumer shares (RocketMQ's `ClientConfig`).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Name server addresses separated by `;` (RocketMQ's `namesrvAddr`).
    pub namesrv_addr: String,
    /// The IP in the client id; default: this host's outward IPv4 address.
    pub client_ip: Option<String>,
    /// The instance part of the client id; default: `<pid>#<n>`, distinct for every
    /// producer and consumer in the process.
    pub instance_name: Option<String>,
    /// How often cached routes are refreshed from the name servers.
    pub poll_name_server_interval_ms: u64,
    /// How often consumers send heartbeats to every broker serving their topics.
    pub heartbeat_broker_interval_ms: u64,
    /// Deadline of name-server look-ups, heartbeats, offset and admin requests
    /// (RocketMQ's `mqClientApiTimeout`).
    pub mq_client_api_timeout_ms: u64,
    /// Follower redirects followed within one request.
    pub max_leader_redirects: u32,
    /// Limits of each broker and name-server connection.
    pub connection: ConnectionConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            namesrv_addr: String::new(),
            client_ip: None,
            instance_name: None,
            poll_name_server_interval_ms: 30_000,
            heartbeat_broker_interval_ms: 30_000,
            mq_client_api_timeout_ms: 3_000,
            max_leader_redirects: 3,
            connection: ConnectionConfig::default(),
        }
    }
}

impl ClientConfig {
    /// A default config for the given `namesrvAddr`.
    pub fn new(namesrv_addr: impl Into<String>) -> Self {
        ClientConfig {
            namesrv_addr: namesrv_addr.into(),
            ..Default::default()
        }
    }

    /// Signs every request with RocketMQ's ACL signature (`AccessKey`/`Signature`, as the
    /// Java client's `AclClientRPCHook`), for a broker with `aclEnable=true`.
    pub fn with_acl(mut self, access_key: &str, secret_key: &str) -> Self {
        self.connection.request_hook = Some(remoting::connection::RequestHook::acl(
            remoting::acl::AclCredentials::new(access_key, secret_key),
        ));
        self
    }

    /// Connects over TLS (RocketMQ's `useTLS`), trusting any server certificate as the
    /// Java client does by default; for a verified server, set `connection.tls` from
    /// [`remoting::tls::ClientTls::from_lookup`] with `tls.client.authServer=true`.
    pub fn use_tls(mut self) -> Self {
        let lookup = |key: &str| (key == "tls.enable").then(|| "true".to_string());
        self.connection.tls = remoting::tls::ClientTls::from_lookup("use_tls", lookup)
            .expect("TLS settings without files cannot fail")
            .map(std::sync::Arc::new);
        self
    }

    pub(crate) fn api_timeout(&self) -> Duration {
        Duration::from_millis(self.mq_client_api_timeout_ms)
    }
}

/// Whether a request changes state (then only the leader may answer it) or reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Write,
    Read,
}

enum Attempt {
    Answer(RemotingCommand),
    /// Nothing was sent: the connection could not be made.
    NotSent(String),
    /// Sent, and then no answer.
    Unknown(String),
}

type ConnSlot = Arc<tokio::sync::Mutex<Option<Connection>>>;

/// One producer's or consumer's link to the cluster.
pub(crate) struct ClientInstance {
    pub client_id: String,
    pub config: ClientConfig,
    namesrv: NameServerClient,
    routes: RwLock<RouteTable>,
    /// Topics to keep refreshed.
    interest: Mutex<BTreeSet<String>>,
    conns: Mutex<HashMap<String, ConnSlot>>,
    handler: Arc<ClientHandler>,
    refresh_tx: mpsc::Sender<()>,
    refresh_rx: Mutex<Option<mpsc::Receiver<()>>>,
    /// Fired when a group's members or leader change: heartbeats go out at once, so a new
    /// leader (or a member that came back) knows this client's producers and consumers
    /// before it checks back a transaction or answers a rebalance.
    members_changed: tokio::sync::Notify,
    /// The member each queue is pulled from next, as the last pull's answer suggested
    /// (`suggestWhichBrokerId`; absent or 0: the leader).
    pull_from: Mutex<HashMap<crate::message::MessageQueue, i64>>,
    pub cancel: CancellationToken,
}

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

impl ClientInstance {
    pub fn new(config: ClientConfig) -> Result<Arc<Self>> {
        let namesrv = NameServerClient::new(&config.namesrv_addr, config.api_timeout())?
            .with_connection(config.connection.clone());
        let ip = config
            .client_ip
            .clone()
            .unwrap_or_else(|| crate::unique_id::local_ipv4().to_string());
        let instance = config.instance_name.clone().unwrap_or_else(|| {
            format!(
                "{}#{}",
                std::process::id(),
                NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed)
            )
        });
        let (refresh_tx, refresh_rx) = mpsc::channel(1);
        Ok(Arc::new(ClientInstance {
            client_id: format!("{ip}@{instance}"),
            config,
            namesrv,
            routes: RwLock::new(RouteTable::default()),
            interest: Mutex::new(BTreeSet::new()),
            conns: Mutex::new(HashMap::new()),
            handler: Arc::new(ClientHandler::default()),
            refresh_tx,
            refresh_rx: Mutex::new(Some(refresh_rx)),
            members_changed: tokio::sync::Notify::new(),
            pull_from: Mutex::new(HashMap::new()),
            cancel: CancellationToken::new(),
        }))
    }

    /// Starts the route refresher; it stops when [`Self::cancel`] fires.
    pub fn start(self: &Arc<Self>) -> JoinHandle<()> {
        let this = self.clone();
        let mut rx = self
            .refresh_rx
            .lock()
            .unwrap()
            .take()
            .expect("the route refresher starts once");
        tokio::spawn(async move {
            let interval = Duration::from_millis(this.config.poll_name_server_interval_ms.max(100));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    Some(()) = rx.recv() => {}
                    _ = this.cancel.cancelled() => break,
                }
                this.refresh_interest().await;
                // Bound the refresh rate while failures keep asking for more.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = this.cancel.cancelled() => break,
                }
            }
        })
    }

    /// Closes every broker connection.
    pub fn close_connections(&self) {
        let slots: Vec<ConnSlot> = self.conns.lock().unwrap().drain().map(|(_, s)| s).collect();
        for slot in slots {
            if let Ok(guard) = slot.try_lock() {
                if let Some(conn) = guard.as_ref() {
                    conn.close();
                }
            }
        }
    }

    // ---- routes ----

    pub fn routes(&self) -> std::sync::RwLockReadGuard<'_, RouteTable> {
        self.routes.read().unwrap()
    }

    /// Asks the refresher for a refresh soon; never waits.
    pub fn refresh_soon(&self) {
        let _ = self.refresh_tx.try_send(());
    }

    /// Fetches a topic's route now; `false` when no name server knows the topic.
    pub async fn refresh_topic(&self, topic: &str) -> Result<bool> {
        self.interest.lock().unwrap().insert(topic.to_string());
        match self.namesrv.topic_route(topic).await? {
            Some(route) => {
                if self.routes.write().unwrap().update_topic(topic, route) {
                    self.members_changed.notify_waiters();
                }
                Ok(true)
            }
            None => {
                self.routes.write().unwrap().remove_topic(topic);
                Ok(false)
            }
        }
    }

    async fn refresh_interest(&self) {
        let topics: Vec<String> = self.interest.lock().unwrap().iter().cloned().collect();
        for topic in topics {
            if let Err(e) = self.refresh_topic(&topic).await {
                debug!(%topic, error = %e, "route refresh failed");
            }
        }
    }

    /// Like [`Self::ensure_route`], but a topic no name server knows yet is routed as
    /// RocketMQ's producers do: through the default topic (`TBW102`) of brokers that
    /// auto-create topics, with at most `default_queue_nums` queues. The broker creates
    /// the topic on the first send and registers it at once.
    pub async fn ensure_publish_route(
        &self,
        topic: &str,
        default_topic: &str,
        default_queue_nums: i32,
    ) -> Result<()> {
        match self.ensure_route(topic).await {
            Err(ClientError::NoRoute { .. }) if !default_topic.is_empty() => {}
            other => return other,
        }
        let Some(mut route) = self.namesrv.topic_route(default_topic).await? else {
            return Err(ClientError::NoRoute {
                topic: topic.to_string(),
                reason: format!(
                    "no name server knows the topic, nor the default topic {default_topic}                      (is autoCreateTopicEnable off?)"
                ),
            });
        };
        for q in &mut route.queue_datas {
            q.read_queue_nums = q.read_queue_nums.min(default_queue_nums.max(1));
            q.write_queue_nums = q.write_queue_nums.min(default_queue_nums.max(1));
        }
        self.routes
            .write()
            .unwrap()
            .update_topic_provisional(topic, route);
        Ok(())
    }

    /// Makes sure a topic's route is cached; [`ClientError::NoRoute`] if no name
    /// server knows it.
    pub async fn ensure_route(&self, topic: &str) -> Result<()> {
        if self.routes().topic(topic).is_some() {
            return Ok(());
        }
        if self.refresh_topic(topic).await? {
            Ok(())
        } else {
            Err(ClientError::NoRoute {
                topic: topic.to_string(),
                reason: "no name server knows the topic".into(),
            })
        }
    }

    /// Refreshes every topic whose route names `broker_name`, within `deadline`.
    async fn refresh_group(&self, broker_name: &str, deadline: Instant) {
        let topics: Vec<String> = {
            let routes = self.routes();
            routes
                .topics()
                .filter(|t| {
                    routes.topic(t).is_some_and(|r| {
                        r.broker_datas.iter().any(|b| b.broker_name == broker_name)
                    })
                })
                .map(str::to_string)
                .collect()
        };
        for topic in topics {
            match tokio::time::timeout_at(deadline, self.refresh_topic(&topic)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => debug!(%topic, error = %e, "route refresh failed"),
                Err(_) => return,
            }
        }
    }

    // ---- connections ----

    async fn connection(&self, addr: &str) -> remoting::Result<Connection> {
        // Every request comes here: an open connection is found without allocating or
        // waiting. The slot's lock is only held long while a connect is under way.
        let slot = {
            let mut conns = self.conns.lock().unwrap();
            match conns.get(addr) {
                Some(slot) => {
                    if let Ok(guard) = slot.try_lock() {
                        if let Some(conn) = guard.as_ref().filter(|c| !c.is_closed()) {
                            return Ok(conn.clone());
                        }
                    }
                    slot.clone()
                }
                None => conns.entry(addr.to_string()).or_default().clone(),
            }
        };
        let mut guard = slot.lock().await;
        if let Some(conn) = guard.as_ref() {
            if !conn.is_closed() {
                return Ok(conn.clone());
            }
        }
        let conn = Connection::connect(addr, &self.config.connection, self.handler.clone()).await?;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    async fn attempt(&self, addr: &str, request: RemotingCommand, deadline: Instant) -> Attempt {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Attempt::NotSent("the deadline passed before sending".into());
        }
        let conn = match tokio::time::timeout_at(deadline, self.connection(addr)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Attempt::NotSent(format!("connect to {addr}: {e}")),
            Err(_) => return Attempt::NotSent(format!("connect to {addr} timed out")),
        };
        match conn.request(request, remaining).await {
            Ok(response) => Attempt::Answer(response),
            Err(e @ remoting::Error::Busy { .. }) => Attempt::NotSent(e.to_string()),
            Err(e) => Attempt::Unknown(e.to_string()),
        }
    }

    /// Sends `request` to one address; an unanswered request is
    /// [`ClientError::OutcomeUnknown`], an unreachable address is
    /// [`ClientError::NoLeader`] naming `broker_name`.
    pub async fn request_addr(
        &self,
        broker_name: &str,
        addr: &str,
        request: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand> {
        match self.attempt(addr, request, Instant::now() + timeout).await {
            Attempt::Answer(response) => Ok(response),
            Attempt::NotSent(reason) => Err(ClientError::NoLeader {
                broker_name: broker_name.to_string(),
                reason,
            }),
            Attempt::Unknown(reason) => Err(ClientError::OutcomeUnknown {
                broker_name: broker_name.to_string(),
                addr: addr.to_string(),
                reason,
            }),
        }
    }

    /// The address of the member a pull of `queue` should go to, when the last answer
    /// suggested one other than the leader and routes know it.
    pub(crate) fn pull_member(&self, queue: &crate::message::MessageQueue) -> Option<String> {
        let id = *self.pull_from.lock().unwrap().get(queue)?;
        if id == LEADER_BROKER_ID {
            return None;
        }
        self.routes()
            .group(&queue.broker_name)
            .and_then(|members| members.get(&id).cloned())
    }

    /// Records the member a pull's answer suggested for `queue`'s next pull.
    pub(crate) fn suggest_pull_member(&self, queue: &crate::message::MessageQueue, id: i64) {
        let mut table = self.pull_from.lock().unwrap();
        if id == LEADER_BROKER_ID {
            table.remove(queue);
        } else {
            table.insert(queue.clone(), id);
        }
    }

    /// Sends `request` to the leader of `broker_name`, following redirects and falling
    /// back to the other members as the module doc describes. Returns the answering
    /// address and its answer (which may be an error code: the caller decides).
    pub async fn request_group(
        &self,
        broker_name: &str,
        request: RemotingCommand,
        timeout: Duration,
        access: Access,
    ) -> Result<(String, RemotingCommand)> {
        let deadline = Instant::now() + timeout;
        let no_leader = |reason: String| ClientError::NoLeader {
            broker_name: broker_name.to_string(),
            reason,
        };
        let mut target = {
            let routes = self.routes();
            if routes.group(broker_name).is_none() {
                return Err(ClientError::UnknownBroker {
                    broker_name: broker_name.to_string(),
                });
            }
            routes.leader(broker_name).map(str::to_string)
        };
        let mut tried: Vec<String> = Vec::new();
        let mut redirects = 0;
        let mut refreshed = false;
        let mut last_answer: Option<(String, RemotingCommand)> = None;
        let mut last_reason = String::from("no member is known");
        loop {
            let addr = match target.take() {
                Some(addr) => addr,
                None => {
                    let next = self.next_member(broker_name, &tried);
                    match next {
                        Some(addr) => addr,
                        None if !refreshed => {
                            refreshed = true;
                            self.refresh_group(broker_name, deadline).await;
                            match self.next_member(broker_name, &tried) {
                                Some(addr) => addr,
                                None => break,
                            }
                        }
                        None => break,
                    }
                }
            };
            match self.attempt(&addr, request.clone(), deadline).await {
                Attempt::Answer(response) if is_not_leader(&response) => {
                    let hint = response
                        .ext(LEADER_ADDR_FIELD)
                        .map(str::trim)
                        .filter(|h| !h.is_empty())
                        .map(str::to_string);
                    debug!(broker_name, %addr, leader_hint = ?hint, "not the leader");
                    tried.push(addr.clone());
                    self.refresh_soon();
                    match hint {
                        Some(hint)
                            if !tried.contains(&hint)
                                && redirects < self.config.max_leader_redirects =>
                        {
                            redirects += 1;
                            self.routes
                                .write()
                                .unwrap()
                                .learn_leader(broker_name, &hint);
                            self.members_changed.notify_waiters();
                            target = Some(hint);
                        }
                        _ => {
                            last_reason = response.remark.clone().unwrap_or_default();
                            last_answer = Some((addr, response));
                        }
                    }
                }
                Attempt::Answer(response) => {
                    if access == Access::Write
                        && self.routes().leader(broker_name) != Some(addr.as_str())
                    {
                        info!(broker_name, leader = %addr, "a member answered a write: it leads now");
                        self.routes
                            .write()
                            .unwrap()
                            .learn_leader(broker_name, &addr);
                        self.members_changed.notify_waiters();
                    }
                    return Ok((addr, response));
                }
                Attempt::NotSent(reason) => {
                    debug!(broker_name, %addr, %reason, "member unreachable; asking the others");
                    self.routes
                        .write()
                        .unwrap()
                        .forget_learned(broker_name, &addr);
                    tried.push(addr);
                    last_reason = reason;
                    self.refresh_soon();
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                Attempt::Unknown(reason) => {
                    self.refresh_soon();
                    return Err(ClientError::OutcomeUnknown {
                        broker_name: broker_name.to_string(),
                        addr,
                        reason,
                    });
                }
            }
        }
        match last_answer {
            // Every member answered "not available" and none named another leader:
            // hand back a definite answer.
            Some(answer) => Ok(answer),
            None => Err(no_leader(last_reason)),
        }
    }

    fn next_member(&self, broker_name: &str, tried: &[String]) -> Option<String> {
        self.routes()
            .members(broker_name)
            .into_iter()
            .find(|a| !tried.contains(a))
    }

    /// Sends a oneway request to the leader. [`ClientError::NoLeader`] when the leader
    /// cannot be reached (nothing was sent): the caller may then use
    /// [`Self::request_group`], which finds the leader.
    pub async fn oneway_leader(&self, broker_name: &str, request: RemotingCommand) -> Result<()> {
        let Some(addr) = self.routes().leader(broker_name).map(str::to_string) else {
            return Err(ClientError::NoLeader {
                broker_name: broker_name.to_string(),
                reason: "the route names no leader".into(),
            });
        };
        let deadline = Instant::now() + self.config.api_timeout();
        let conn = match tokio::time::timeout_at(deadline, self.connection(&addr)).await {
            Ok(Ok(conn)) => conn,
            other => {
                self.refresh_soon();
                let reason = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "connect timed out".into(),
                };
                return Err(ClientError::NoLeader {
                    broker_name: broker_name.to_string(),
                    reason,
                });
            }
        };
        match tokio::time::timeout_at(deadline, conn.oneway(request)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ClientError::OutcomeUnknown {
                broker_name: broker_name.to_string(),
                addr,
                reason: e.to_string(),
            }),
            Err(_) => Err(ClientError::OutcomeUnknown {
                broker_name: broker_name.to_string(),
                addr,
                reason: "the write queue stayed full".into(),
            }),
        }
    }

    // ---- consumer group plumbing ----

    /// A channel that wakes when a broker says `consumer_group`'s members changed.
    pub fn watch_consumer_ids(&self, consumer_group: &str) -> mpsc::Receiver<()> {
        let (tx, rx) = mpsc::channel(1);
        self.handler
            .notify
            .lock()
            .unwrap()
            .insert(consumer_group.to_string(), tx);
        rx
    }

    /// The offset resets (RESET_CONSUMER_CLIENT_OFFSET) brokers send for `consumer_group`.
    pub(crate) fn watch_offset_resets(&self, consumer_group: &str) -> mpsc::Receiver<OffsetReset> {
        let (tx, rx) = mpsc::channel(RESETS_QUEUED);
        self.handler
            .resets
            .lock()
            .unwrap()
            .insert(consumer_group.to_string(), tx);
        rx
    }

    /// Makes `source` answer GET_CONSUMER_RUNNING_INFO for `consumer_group`.
    pub(crate) fn serve_running_info(&self, consumer_group: &str, source: RunningInfoSource) {
        self.handler
            .running_info
            .lock()
            .unwrap()
            .insert(consumer_group.to_string(), source);
    }

    /// The check-backs (CHECK_TRANSACTION_STATE) brokers send for `producer_group`.
    pub(crate) fn watch_transaction_checks(
        &self,
        producer_group: &str,
    ) -> mpsc::Receiver<crate::transaction::TransactionCheck> {
        let (tx, rx) = mpsc::channel(crate::transaction::CHECKS_QUEUED);
        self.handler
            .checks
            .lock()
            .unwrap()
            .insert(producer_group.to_string(), tx);
        rx
    }

    /// Waits `pause`, or less when a group's members or leader change: a send that found
    /// its group without a leader tries again as soon as any request learns the new one.
    pub(crate) async fn leader_wait(&self, pause: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = self.members_changed.notified() => {}
        }
    }

    /// Waits `interval`, or less when a group's members or leader change; false once the
    /// client is closed.
    pub(crate) async fn heartbeat_wait(&self, interval: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(interval) => true,
            _ = self.members_changed.notified() => true,
            _ = self.cancel.cancelled() => false,
        }
    }

    /// Sends a heartbeat to every member of every group serving `topics`; returns how
    /// many members answered SUCCESS.
    pub async fn heartbeat(&self, topics: &[String], data: &HeartbeatData) -> usize {
        let mut addrs: Vec<(String, String)> = {
            let routes = self.routes();
            topics.iter().flat_map(|t| routes.topic_addrs(t)).collect()
        };
        addrs.sort();
        addrs.dedup();
        self.heartbeat_to(addrs, data).await
    }

    /// Sends a heartbeat to every member of every group this client knows (RocketMQ's
    /// `sendHeartbeatToAllBroker`); returns how many answered SUCCESS.
    pub async fn heartbeat_all(&self, data: &HeartbeatData) -> usize {
        let addrs = self.routes().all_addrs();
        self.heartbeat_to(addrs, data).await
    }

    async fn heartbeat_to(&self, addrs: Vec<(String, String)>, data: &HeartbeatData) -> usize {
        let body = to_json(data);
        let timeout = self.config.api_timeout();
        let sends = addrs.into_iter().map(|(broker_name, addr)| {
            let request =
                RemotingCommand::bare_request(RequestCode::HEART_BEAT).with_body(body.clone());
            async move {
                match self.request_addr(&broker_name, &addr, request, timeout).await {
                    Ok(r) if r.code == ResponseCode::SUCCESS as i32 => true,
                    Ok(r) => {
                        warn!(%broker_name, %addr, code = r.code, remark = ?r.remark, "heartbeat refused");
                        false
                    }
                    Err(e) => {
                        debug!(%broker_name, %addr, error = %e, "heartbeat failed");
                        false
                    }
                }
            }
        });
        futures::future::join_all(sends)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }

    /// Tells every broker this client knows that it is gone (UNREGISTER_CLIENT).
    pub async fn unregister(&self, producer_group: Option<&str>, consumer_group: Option<&str>) {
        let addrs = self.routes().all_addrs();
        let header = UnregisterClientRequestHeader {
            client_id: self.client_id.clone(),
            producer_group: producer_group.map(str::to_string),
            consumer_group: consumer_group.map(str::to_string),
        };
        let timeout = self.config.api_timeout();
        let sends = addrs.into_iter().map(|(broker_name, addr)| {
            let request = RemotingCommand::request(RequestCode::UNREGISTER_CLIENT, &header);
            async move {
                if let Err(e) = self
                    .request_addr(&broker_name, &addr, request, timeout)
                    .await
                {
                    debug!(%broker_name, %addr, error = %e, "unregister failed");
                }
            }
        });
        futures::future::join_all(sends).await;
    }
}

/// A SERVICE_NOT_AVAILABLE answer: "I am not the leader" (with or without a hint).
pub(crate) fn is_not_leader(response: &RemotingCommand) -> bool {
    response.code == ResponseCode::SERVICE_NOT_AVAILABLE as i32
}

/// Serves what brokers send on the client's connections.
#[derive(Default)]
struct ClientHandler {
    notify: Mutex<HashMap<String, mpsc::Sender<()>>>,
    /// Transactional producers' check-back queues, by producer group.
    checks: Mutex<HashMap<String, mpsc::Sender<crate::transaction::TransactionCheck>>>,
    /// Push consumers' offset resets (RESET_CONSUMER_CLIENT_OFFSET), by consumer group.
    resets: Mutex<HashMap<String, mpsc::Sender<OffsetReset>>>,
    /// What answers GET_CONSUMER_RUNNING_INFO for each consumer group of this client.
    running_info: Mutex<HashMap<String, RunningInfoSource>>,
}

/// Writes a consumer's running info (GET_CONSUMER_RUNNING_INFO); `true` asks for a thread
/// dump as well (`jstackEnable`).
pub(crate) type RunningInfoSource = Arc<dyn Fn(bool) -> ConsumerRunningInfo + Send + Sync>;

/// An admin's offset reset a broker passed on (RESET_CONSUMER_CLIENT_OFFSET): each queue
/// of `topic` the broker holds and its new offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OffsetReset {
    pub topic: String,
    pub offsets: Vec<(crate::message::MessageQueue, i64)>,
}

/// Resets queued for one consumer group at most (the admin repeats one that was dropped).
const RESETS_QUEUED: usize = 16;

/// Reads a RESET_CONSUMER_CLIENT_OFFSET: its group and the reset.
fn decode_reset(request: &RemotingCommand) -> remoting::Result<(String, OffsetReset)> {
    let h: remoting::header::ResetOffsetRequestHeader = request.header()?;
    let body = remoting::admin_body::ResetOffsetBody::decode(&request.body)?;
    let offsets = body
        .offset_table
        .0
        .into_iter()
        .filter(|(q, _)| q.topic == h.topic)
        .map(|(q, offset)| {
            let queue = crate::message::MessageQueue {
                topic: q.topic,
                broker_name: q.broker_name,
                queue_id: q.queue_id,
            };
            (queue, offset)
        })
        .collect();
    Ok((
        h.group,
        OffsetReset {
            topic: h.topic,
            offsets,
        },
    ))
}

impl ClientHandler {
    /// GET_CONSUMER_RUNNING_INFO (307), passed on by a broker for an admin tool
    /// (`mqadmin consumerStatus`): the named group's running info, as RocketMQ's client
    /// answers, or SYSTEM_ERROR when this client does not consume for the group.
    fn running_info(&self, request: &RemotingCommand) -> RemotingCommand {
        let h: GetConsumerRunningInfoRequestHeader = match request.header() {
            Ok(h) => h,
            Err(e) => return RemotingCommand::error(ResponseCode::SYSTEM_ERROR, e.to_string()),
        };
        let source = self
            .running_info
            .lock()
            .unwrap()
            .get(&h.consumer_group)
            .cloned();
        match source {
            Some(source) => RemotingCommand::success().with_body(source(h.jstack_enable).encode()),
            None => RemotingCommand::error(
                ResponseCode::SYSTEM_ERROR,
                format!(
                    "The Consumer Group <{}> not exist in this consumer",
                    h.consumer_group
                ),
            ),
        }
    }
}

impl RequestHandler for ClientHandler {
    fn handle(
        &self,
        conn: Connection,
        request: RemotingCommand,
    ) -> BoxFuture<'static, Option<RemotingCommand>> {
        let response = if request.code == RequestCode::CHECK_TRANSACTION_STATE as i32 {
            // Oneway: the answer is an END_TRANSACTION from the producer's check task.
            match crate::transaction::decode_check(&conn, &request) {
                Ok((group, check)) => match self.checks.lock().unwrap().get(&group) {
                    Some(tx) => {
                        if tx.try_send(check).is_err() {
                            warn!(producer_group = %group, "too many check-backs queued; this one is dropped (the broker checks again)");
                        }
                    }
                    None => {
                        debug!(producer_group = %group, "a check-back for a group this client does not produce for")
                    }
                },
                Err(e) => {
                    warn!(peer = %conn.peer(), error = %e, "unreadable CHECK_TRANSACTION_STATE")
                }
            }
            return Box::pin(async { None });
        } else if request.code == RequestCode::RESET_CONSUMER_CLIENT_OFFSET as i32 {
            // Oneway: the push consumer of the group applies it (`push_consumer`).
            match decode_reset(&request) {
                Ok((group, reset)) => match self.resets.lock().unwrap().get(&group) {
                    Some(tx) => {
                        if tx.try_send(reset).is_err() {
                            warn!(consumer_group = %group, "too many offset resets queued; this one is dropped");
                        }
                    }
                    None => {
                        debug!(consumer_group = %group, "an offset reset for a group this client does not push-consume")
                    }
                },
                Err(e) => {
                    warn!(peer = %conn.peer(), error = %e, "unreadable RESET_CONSUMER_CLIENT_OFFSET")
                }
            }
            return Box::pin(async { None });
        } else if request.code == RequestCode::GET_CONSUMER_RUNNING_INFO as i32 {
            self.running_info(&request)
        } else if request.code == RequestCode::NOTIFY_CONSUMER_IDS_CHANGED as i32 {
            match request.header::<ConsumerGroupRequestHeader>() {
                Ok(h) => {
                    debug!(consumer_group = %h.consumer_group, "consumer ids changed");
                    if let Some(tx) = self.notify.lock().unwrap().get(&h.consumer_group) {
                        // Full means a rebalance is already pending.
                        let _ = tx.try_send(());
                    }
                    RemotingCommand::success()
                }
                Err(e) => RemotingCommand::error(ResponseCode::SYSTEM_ERROR, e.to_string()),
            }
        } else {
            RemotingCommand::error(
                ResponseCode::REQUEST_CODE_NOT_SUPPORTED,
                format!(
                    "request code {} is not supported by this client",
                    request.code
                ),
            )
        };
        Box::pin(async move { Some(response) })
    }
}
