//! Wiring: the dledger node, the derived state, the background tasks (name-server
//! registration, consumer-offset commits, client expiry, leader announcements) and the
//! remoting request handler.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dledger::{DLedgerConfig, DLedgerError, DLedgerNode, FlushMode, Role, RoleState};
use futures::future::BoxFuture;
use remoting::route::{perm, TopicConfig};
use remoting::{
    Connection, ConnectionConfig, RemotingCommand, RequestCode, RequestHandler, ResponseCode,
};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::clients::ClientManager;
use crate::command::BrokerCommand;
use crate::config::{BrokerConfig, FlushDiskType};
use crate::error::{BrokerError, Result};
use crate::processor;
use crate::store::{BrokerHook, BrokerState, OffsetKey};

/// RocketMQ's default topic: producers with auto-create send unknown topics "through" it.
pub const DEFAULT_TOPIC: &str = "TBW102";

/// One running broker node.
pub struct Broker {
    pub config: BrokerConfig,
    pub node: DLedgerNode,
    pub state: Arc<BrokerState>,
    pub clients: ClientManager,
    /// Offsets committed by consumers on this leader, not yet in the Raft log.
    pub pending_offsets: Mutex<HashMap<OffsetKey, i64>>,
    /// This node's client address, written into every record as STOREHOST.
    pub store_host: SocketAddr,
    /// Wakes the registration task (role change, new topic).
    pub register_now: Notify,
    /// Serialises topic auto-creation.
    pub topic_create: tokio::sync::Mutex<()>,
    /// Round-robin for sends that leave the queue to the broker.
    pub next_queue: std::sync::atomic::AtomicU32,
}

impl Broker {
    pub fn role(&self) -> RoleState {
        self.node.role_watch().borrow().clone()
    }

    pub fn is_leader(&self) -> bool {
        self.node.is_leader()
    }

    /// SERVICE_NOT_AVAILABLE naming the leader's client address (remark and `leaderAddr`).
    pub fn not_leader_response(&self) -> RemotingCommand {
        let role = self.role();
        let leader = role.leader_id.and_then(|id| self.state.leader_addr(id));
        let remark = match &leader {
            Some(addr) => format!(
                "broker {} node n{} is not the leader (term {}); the leader is {addr}",
                self.config.broker_name, role.node_id, role.term
            ),
            None => format!(
                "broker {} node n{} is not the leader (term {}); no leader known yet",
                self.config.broker_name, role.node_id, role.term
            ),
        };
        let mut response = RemotingCommand::error(ResponseCode::SERVICE_NOT_AVAILABLE, remark);
        if let Some(addr) = leader {
            response = response.with_ext("leaderAddr", addr);
        }
        response
    }

    /// Appends a command through Raft (leader only).
    pub async fn propose(&self, command: &BrokerCommand) -> Result<(), DLedgerError> {
        self.node.append_command(command.encode()).await?;
        Ok(())
    }

    /// The topic's config, creating it (through Raft) when auto-creation allows.
    pub async fn topic_or_create(
        &self,
        topic: &str,
        queue_nums: i32,
    ) -> Result<Option<TopicConfig>, DLedgerError> {
        if let Some(config) = self.state.topic(topic) {
            return Ok(Some(config));
        }
        if !self.config.auto_create_topic {
            return Ok(None);
        }
        let _guard = self.topic_create.lock().await;
        if let Some(config) = self.state.topic(topic) {
            return Ok(Some(config));
        }
        let queues = queue_nums.clamp(1, self.config.default_topic_queue_nums);
        let config = TopicConfig {
            topic_name: topic.to_string(),
            read_queue_nums: queues,
            write_queue_nums: queues,
            perm: perm::READ_WRITE,
            ..TopicConfig::default()
        };
        info!(topic, queues, "auto-creating topic");
        self.propose(&BrokerCommand::PutTopic {
            config: config.clone(),
        })
        .await?;
        self.register_now.notify_one();
        Ok(Some(config))
    }
}

fn dledger_config(config: &BrokerConfig) -> Result<DLedgerConfig> {
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
pub async fn run(
    listener: TcpListener,
    config: BrokerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let store_host = listener.local_addr().map_err(|e| BrokerError::Io {
        path: "listener".into(),
        source: e,
    })?;
    std::fs::create_dir_all(&config.store_path).map_err(|e| BrokerError::Io {
        path: config.store_path.clone(),
        source: e,
    })?;
    let state = BrokerState::open(&config.store_path, config.consume_queue_file_bytes)?;
    let node = DLedgerNode::start(dledger_config(&config)?, BrokerHook::new(state.clone())).await?;
    let broker = Arc::new(Broker {
        config,
        node,
        state,
        clients: ClientManager::default(),
        pending_offsets: Mutex::new(HashMap::new()),
        store_host,
        register_now: Notify::new(),
        topic_create: tokio::sync::Mutex::new(()),
        next_queue: Default::default(),
    });
    info!(
        broker_name = %broker.config.broker_name,
        node = %broker.config.dledger_self_id,
        addr = %store_host,
        "broker started"
    );

    let mut tasks = vec![
        tokio::spawn(watch_role(broker.clone())),
        tokio::spawn(crate::registration::run(broker.clone())),
        tokio::spawn(commit_offsets(broker.clone())),
        tokio::spawn(expire_clients(broker.clone())),
    ];
    let connection_config = ConnectionConfig {
        max_frame_bytes: broker.config.max_message_bytes * 2 + 1024 * 1024,
        ..ConnectionConfig::default()
    };
    remoting::connection::serve(
        listener,
        connection_config,
        Arc::new(Handler {
            broker: broker.clone(),
        }),
        shutdown,
    )
    .await;

    // Leave cleanly: final offsets, name servers, then Raft.
    flush_offsets(&broker).await;
    crate::registration::unregister_all(&broker).await;
    for task in tasks.drain(..) {
        task.abort();
        let _ = task.await;
    }
    // Connections closed by `serve` drop their handles to the broker as they finish.
    let mut broker = broker;
    for _ in 0..50 {
        match Arc::try_unwrap(broker) {
            Ok(b) => {
                b.node.shutdown().await?;
                return Ok(());
            }
            Err(b) => broker = b,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    warn!("requests still running at shutdown; dledger stops with the process");
    Ok(())
}

/// On becoming leader: announce the client address through the log, make sure the
/// default topic exists, and register at once.
async fn watch_role(broker: Arc<Broker>) {
    let mut rx: watch::Receiver<RoleState> = broker.node.role_watch();
    let mut last = None;
    loop {
        let state = rx.borrow_and_update().clone();
        let key = (state.role, state.term, state.leader_id);
        if last != Some(key) {
            info!(
                node_id = state.node_id,
                role = ?state.role,
                term = state.term,
                leader_id = ?state.leader_id,
                "role changed"
            );
            last = Some(key);
            broker.register_now.notify_one();
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
        node_id: broker.node.node_id(),
        term,
        broker_addr: broker.config.broker_addr(),
    };
    if let Err(e) = broker.propose(&announce).await {
        warn!(error = %e, term, "could not announce leadership");
        return;
    }
    if broker.config.auto_create_topic && broker.state.topic(DEFAULT_TOPIC).is_none() {
        let config = TopicConfig {
            topic_name: DEFAULT_TOPIC.into(),
            read_queue_nums: broker.config.default_topic_queue_nums,
            write_queue_nums: broker.config.default_topic_queue_nums,
            perm: perm::READ_WRITE | perm::INHERIT,
            ..TopicConfig::default()
        };
        if let Err(e) = broker.propose(&BrokerCommand::PutTopic { config }).await {
            warn!(error = %e, "could not create the default topic");
        }
    }
    broker.register_now.notify_one();
}

/// Moves consumer offsets committed on this leader into the Raft log, in batches.
async fn commit_offsets(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(Duration::from_millis(
        broker.config.offset_commit_interval_ms,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        flush_offsets(&broker).await;
    }
}

pub(crate) async fn flush_offsets(broker: &Broker) {
    let batch: Vec<_> = std::mem::take(&mut *broker.pending_offsets.lock().unwrap())
        .into_iter()
        .map(
            |((group, topic, queue_id), offset)| crate::command::OffsetUpdate {
                consumer_group: group,
                topic,
                queue_id,
                offset,
            },
        )
        .collect();
    if batch.is_empty() {
        return;
    }
    let n = batch.len();
    if let Err(e) = broker
        .propose(&BrokerCommand::UpdateOffsets { offsets: batch })
        .await
    {
        // Consumers re-commit every few seconds; a new leader gets them then.
        warn!(error = %e, offsets = n, "could not commit consumer offsets");
    }
}

async fn expire_clients(broker: Arc<Broker>) {
    let expiry = Duration::from_millis(broker.config.client_expiry_ms);
    let mut tick = tokio::time::interval(Duration::from_secs(10).min(expiry));
    loop {
        tick.tick().await;
        if let Some(deadline) = tokio::time::Instant::now().checked_sub(expiry) {
            broker.clients.expire(deadline);
        }
    }
}

struct Handler {
    broker: Arc<Broker>,
}

impl RequestHandler for Handler {
    fn handle(
        &self,
        conn: Connection,
        request: RemotingCommand,
    ) -> BoxFuture<'static, Option<RemotingCommand>> {
        let broker = self.broker.clone();
        Box::pin(async move {
            let Some(code) = RequestCode::from_i32(request.code) else {
                return Some(RemotingCommand::error(
                    ResponseCode::REQUEST_CODE_NOT_SUPPORTED,
                    format!("request code {} is not supported", request.code),
                ));
            };
            let response = match code {
                RequestCode::SEND_MESSAGE
                | RequestCode::SEND_MESSAGE_V2
                | RequestCode::SEND_BATCH_MESSAGE => {
                    processor::send::process(&broker, &conn, code, &request).await
                }
                RequestCode::PULL_MESSAGE => processor::pull::process(&broker, &request).await,
                RequestCode::QUERY_CONSUMER_OFFSET
                | RequestCode::UPDATE_CONSUMER_OFFSET
                | RequestCode::GET_MAX_OFFSET
                | RequestCode::GET_MIN_OFFSET
                | RequestCode::SEARCH_OFFSET_BY_TIMESTAMP => {
                    processor::offset::process(&broker, code, &request)
                }
                RequestCode::HEART_BEAT
                | RequestCode::UNREGISTER_CLIENT
                | RequestCode::GET_CONSUMER_LIST_BY_GROUP => {
                    processor::client::process(&broker, &conn, code, &request)
                }
                RequestCode::UPDATE_AND_CREATE_TOPIC
                | RequestCode::GET_ALL_TOPIC_CONFIG
                | RequestCode::DELETE_TOPIC_IN_BROKER
                | RequestCode::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP
                | RequestCode::GET_ALL_SUBSCRIPTIONGROUP_CONFIG
                | RequestCode::DELETE_SUBSCRIPTIONGROUP => {
                    processor::admin::process(&broker, code, &request).await
                }
                other => Ok(RemotingCommand::error(
                    ResponseCode::REQUEST_CODE_NOT_SUPPORTED,
                    format!(
                        "{} ({}) is not supported by rocketraft yet",
                        other.name(),
                        request.code
                    ),
                )),
            };
            let response = response.unwrap_or_else(|e| match e {
                processor::ProcessError::Response(r) => *r,
                processor::ProcessError::Header(e) => RemotingCommand::error(
                    ResponseCode::SYSTEM_ERROR,
                    format!("{}: {e}", code.name()),
                ),
            });
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
        self.broker.clients.connection_closed(conn);
    }
}
