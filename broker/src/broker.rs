//! [`Broker`]: one running broker node's shared state, behind a small API.
//!
//! Request handlers and background tasks go through these methods (commit an offset,
//! pick a queue, append records, read the CommitLog, look up a topic) rather than the
//! locks and stores underneath, so each rule lives in one place: offsets committed on
//! the leader wait here until `server::commit_offsets` puts them in the Raft log, topic
//! auto-creation is serialised here, and every append's typed outcome
//! ([`Applied`]) is taken from the apply hook here.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dledger::{DLedgerError, DLedgerNode, RoleState};
use remoting::queue_lock::MessageQueueData;
use remoting::route::{perm, DataVersion, TopicConfig};
use remoting::{RemotingCommand, ResponseCode};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::clients::ClientManager;
use crate::command::{BrokerCommand, OffsetUpdate};
use crate::config::BrokerConfig;
use crate::consume_queue::ConsumeQueue;
use crate::disk::{DiskUsage, StatVfs};
use crate::held_pulls::HeldPulls;
use crate::queue_locks::Granted;
use crate::store::{Applied, BrokerState, OffsetKey};

/// RocketMQ's default topic: producers with auto-create send unknown topics "through" it.
pub const DEFAULT_TOPIC: &str = "TBW102";

/// What one appended record became, with where it lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedRecord {
    pub commit_log_offset: u64,
    pub applied: Applied,
}

/// One running broker node.
pub struct Broker {
    config: BrokerConfig,
    node: DLedgerNode,
    state: Arc<BrokerState>,
    clients: ClientManager,
    /// Pulls held (long polling) now, against `maxHeldPulls` and its per-connection twin.
    held_pulls: HeldPulls,
    /// Offsets committed by consumers on this leader, not yet in the Raft log.
    pending_offsets: Mutex<HashMap<OffsetKey, i64>>,
    /// This node's client address, written into every record as STOREHOST.
    store_host: SocketAddr,
    /// Wakes the registration task (role change, new topic).
    register_now: Notify,
    /// Serialises topic auto-creation.
    topic_create: tokio::sync::Mutex<()>,
    /// Serialises subscription-group auto-creation (a burst of heartbeats naming one new
    /// group made one Raft entry each).
    group_create: tokio::sync::Mutex<()>,
    /// Round-robin for sends that leave the queue to the broker.
    next_queue: AtomicU32,
    /// `messageDelayLevel`, parsed once.
    delay_levels_ms: Vec<u64>,
    /// The store's disk usage, refreshed by the retention task.
    disk: DiskUsage,
    /// Wakes the retention task for a pass now (DELETE_EXPIRED_COMMITLOG).
    clean_now: Notify,
    /// Retention passes still to count as "time to delete" after an operator asked.
    manual_passes: AtomicU32,
    /// Held while pending offsets are taken and proposed, and while an offset reset is.
    offset_flush: tokio::sync::Mutex<()>,
    /// When this node started (ms since the epoch).
    started_ms: i64,
    /// The process's metrics (they outlive this node's in-process restarts).
    metrics: Arc<crate::metrics::BrokerMetrics>,
}

/// Refused auto-creations, logged at most once every 10 s.
static AUTO_CREATE_REFUSED: remoting::throttle::Throttle =
    remoting::throttle::Throttle::new(10_000);

impl Broker {
    pub(crate) fn new(
        config: BrokerConfig,
        node: DLedgerNode,
        state: Arc<BrokerState>,
        store_host: SocketAddr,
        metrics: Arc<crate::metrics::BrokerMetrics>,
    ) -> Self {
        let disk = DiskUsage::new(
            Box::new(StatVfs::new(&config.store_path)),
            config.disk_space_warning_level_ratio,
        );
        Broker {
            delay_levels_ms: config.delay_levels_ms(),
            disk,
            clean_now: Notify::new(),
            manual_passes: AtomicU32::new(0),
            clients: ClientManager::new(config.max_clients_per_group),
            held_pulls: HeldPulls::new(config.max_held_pulls, config.max_held_pulls_per_connection),
            config,
            node,
            state,
            pending_offsets: Mutex::new(HashMap::new()),
            store_host,
            register_now: Notify::new(),
            topic_create: tokio::sync::Mutex::new(()),
            group_create: tokio::sync::Mutex::new(()),
            next_queue: AtomicU32::new(0),
            offset_flush: tokio::sync::Mutex::new(()),
            started_ms: crate::processor::send::now_ms(),
            metrics,
        }
    }

    /// The request-path counters and what a scrape reads ([`crate::metrics`]).
    pub fn metrics(&self) -> &crate::metrics::BrokerMetrics {
        &self.metrics
    }

    pub fn topic_count(&self) -> usize {
        self.state.topic_count()
    }

    pub fn subscription_group_count(&self) -> usize {
        self.state.subscription_group_count()
    }

    /// Up to `limit` consumer offsets, each the one pending on this leader if any, else
    /// the one committed through the log, and how many more there were (for metrics).
    pub fn consumer_offsets(&self, limit: usize) -> (Vec<(OffsetKey, i64)>, usize) {
        let (committed, mut left_out) = self.state.committed_offsets(limit);
        let mut offsets: HashMap<OffsetKey, i64> = committed.into_iter().collect();
        let pending = self.pending_offsets.lock().unwrap();
        for (key, offset) in pending.iter() {
            if offsets.contains_key(key) || offsets.len() < limit {
                offsets.insert(key.clone(), *offset);
            } else {
                left_out += 1;
            }
        }
        drop(pending);
        (offsets.into_iter().collect(), left_out)
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The delay of each level of `messageDelayLevel` (ms), level 1 first.
    pub fn delay_levels_ms(&self) -> &[u64] {
        &self.delay_levels_ms
    }

    pub(crate) fn node(&self) -> &DLedgerNode {
        &self.node
    }

    pub fn held_pulls(&self) -> &HeldPulls {
        &self.held_pulls
    }

    pub fn clients(&self) -> &ClientManager {
        &self.clients
    }

    pub fn store_host(&self) -> SocketAddr {
        self.store_host
    }

    /// This node's message counts and rates.
    pub fn stats(&self) -> &crate::stats::BrokerStats {
        &self.state.stats
    }

    /// This node's per-topic and per-group stats items (VIEW_BROKER_STATS_DATA).
    pub fn stats_items(&self) -> &crate::stats_items::StatsItems {
        &self.state.stats_items
    }

    /// When this node started (ms since the epoch).
    pub fn started_ms(&self) -> i64 {
        self.started_ms
    }

    // --- config keys that change at runtime (`crate::runtime_config`) ---

    /// `brokerPermission` as applied: sends need its write bit, pulls its read bit.
    pub fn broker_permission(&self) -> i32 {
        self.state.runtime_config.broker_permission()
    }

    /// `autoCreateTopicEnable`: the applied value, else the config file's.
    pub fn auto_create_topic_enabled(&self) -> bool {
        self.state
            .runtime_config
            .auto_create_topic(self.config.auto_create_topic)
    }

    /// `autoCreateSubscriptionGroup`: the applied value, else the config file's.
    pub fn auto_create_subscription_group_enabled(&self) -> bool {
        self.state
            .runtime_config
            .auto_create_subscription_group(self.config.auto_create_subscription_group)
    }

    /// The runtime keys changed so far and how many changes were applied.
    pub fn runtime_config_applied(&self) -> (BTreeMap<&'static str, String>, i64) {
        let c = &self.state.runtime_config;
        (c.applied(), c.changes())
    }

    // --- role ---

    pub fn role(&self) -> RoleState {
        self.node.role_watch().borrow().clone()
    }

    pub fn is_leader(&self) -> bool {
        self.node.is_leader()
    }

    /// True on a leader that has applied everything in its log: what it derives from the
    /// log (queue ends, pending timers) is then the whole truth, not a lagging view.
    pub fn is_up_to_date_leader(&self) -> bool {
        self.is_leader() && self.node.applied_position() == self.node.written_position()
    }

    /// The CommitLog position this node has applied to, and the end of what it has
    /// written (committed or not).
    pub(crate) fn log_positions(&self) -> (u64, u64) {
        (self.node.applied_position(), self.node.written_position())
    }

    /// The end of the committed CommitLog prefix this node knows of.
    pub(crate) fn committed_position(&self) -> u64 {
        self.node.committed_position()
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

    // --- the log ---

    /// Appends a command through Raft (leader only).
    pub async fn propose(&self, command: &BrokerCommand) -> Result<(), DLedgerError> {
        self.node.append_command(command.encode()).await?;
        Ok(())
    }

    /// Appends encoded records as one atomic group (leader only); answers once they are
    /// committed and applied, with what the apply hook made of each.
    pub async fn append(&self, records: Vec<Bytes>) -> Result<Vec<AppendedRecord>, DLedgerError> {
        let appended = self.node.append(records).await?;
        Ok(appended
            .records
            .iter()
            .map(|r| AppendedRecord {
                commit_log_offset: r.position,
                applied: r
                    .response
                    .as_ref()
                    .and_then(|h| h.get::<Applied>())
                    .copied()
                    .unwrap_or(Applied::Stored),
            })
            .collect())
    }

    /// Asks for `group`'s locks on `queues` for `client_id` through Raft (leader only);
    /// answers with the queues the client holds once the request is applied.
    pub async fn lock_queues(
        &self,
        group: &str,
        client_id: &str,
        queues: Vec<MessageQueueData>,
    ) -> Result<Vec<MessageQueueData>, DLedgerError> {
        let command = BrokerCommand::LockQueues {
            consumer_group: group.to_string(),
            client_id: client_id.to_string(),
            queues,
            now_ms: crate::processor::send::now_ms() as u64,
            lifetime_ms: self.config.rebalance_lock_max_live_ms,
        };
        let result = self.node.append_command(command.encode()).await?;
        Ok(result
            .response
            .as_ref()
            .and_then(|r| r.get::<Granted>())
            .map(|g| g.0.clone())
            .unwrap_or_default())
    }

    /// Who holds `group`'s lock on `mq` now, as this node has applied it.
    pub fn queue_lock_holder(&self, group: &str, mq: &MessageQueueData) -> Option<String> {
        self.state
            .queue_lock_holder(group, mq, crate::processor::send::now_ms() as u64)
    }

    /// Up to `max_bytes` committed CommitLog bytes from `position`.
    pub fn read_commit_log(
        &self,
        position: u64,
        max_bytes: usize,
    ) -> Result<Vec<u8>, DLedgerError> {
        self.node.read(position, max_bytes)
    }

    // --- topics ---

    pub fn topic(&self, topic: &str) -> Option<TopicConfig> {
        self.state.topic(topic)
    }

    pub fn topics(&self) -> BTreeMap<String, TopicConfig> {
        self.state.topics()
    }

    pub fn data_version(&self) -> DataVersion {
        self.state.data_version()
    }

    pub fn subscription_groups(&self) -> BTreeMap<String, serde_json::Value> {
        self.state.subscription_groups()
    }

    /// A subscription group's config (RocketMQ's `SubscriptionGroupConfig`, as sent).
    pub fn subscription_group(&self, name: &str) -> Option<serde_json::Value> {
        self.state.subscription_group(name)
    }

    /// The topic's config, creating it (through Raft) when auto-creation allows; `Err`
    /// with the reason when it does not.
    pub async fn topic_or_create(
        &self,
        topic: &str,
        queue_nums: i32,
    ) -> Result<Result<TopicConfig, String>, DLedgerError> {
        if let Some(config) = self.state.topic(topic) {
            return Ok(Ok(config));
        }
        if !self.auto_create_topic_enabled() {
            return Ok(Err(format!(
                "topic[{topic}] not exist, apply first please! (autoCreateTopicEnable=false)"
            )));
        }
        let queues = queue_nums.clamp(1, self.config.default_topic_queue_nums);
        self.auto_create_topic(TopicConfig {
            topic_name: topic.to_string(),
            read_queue_nums: queues,
            write_queue_nums: queues,
            perm: perm::READ_WRITE,
            ..TopicConfig::default()
        })
        .await
    }

    /// Creates `config` through Raft unless its topic exists; the topic's config either way.
    /// For an admin's request: not limited by `autoCreateTopicLimit`.
    pub async fn create_topic(&self, config: TopicConfig) -> Result<TopicConfig, DLedgerError> {
        let _guard = self.topic_create.lock().await;
        match self.state.topic(&config.topic_name) {
            Some(existing) => Ok(existing),
            None => self.put_topic(config).await,
        }
    }

    /// Creates `config` as [`Broker::create_topic`] does, unless the broker holds
    /// `autoCreateTopicLimit` topics already: then `Err` with the reason, for the client.
    /// Checked under the creation lock, so concurrent sends cannot overshoot it.
    pub async fn auto_create_topic(
        &self,
        config: TopicConfig,
    ) -> Result<Result<TopicConfig, String>, DLedgerError> {
        let _guard = self.topic_create.lock().await;
        if let Some(existing) = self.state.topic(&config.topic_name) {
            return Ok(Ok(existing));
        }
        let (topics, limit) = (
            self.state.topic_count(),
            self.config.auto_create_topic_limit,
        );
        if topics >= limit {
            if let Some(left_out) = AUTO_CREATE_REFUSED.admit() {
                warn!(topic = %config.topic_name, topics, limit, left_out, "auto-creation refused: the broker holds autoCreateTopicLimit topics");
            }
            return Ok(Err(format!(
                "topic[{}] not exist and not created: this broker holds {topics} topics, \
                 autoCreateTopicLimit={limit} (an admin can create it, or raise the limit)",
                config.topic_name
            )));
        }
        self.put_topic(config).await.map(Ok)
    }

    /// Creates the subscription group `config` names (RocketMQ's `SubscriptionGroupConfig`
    /// JSON) through Raft unless it exists, or, once the broker holds
    /// `autoCreateSubscriptionGroupLimit` groups, `Err` with the reason. One at a time.
    pub async fn auto_create_subscription_group(
        &self,
        name: &str,
        config: serde_json::Value,
    ) -> Result<Result<(), String>, DLedgerError> {
        let _guard = self.group_create.lock().await;
        if self.state.subscription_group(name).is_some() {
            return Ok(Ok(()));
        }
        let (groups, limit) = (
            self.state.subscription_group_count(),
            self.config.auto_create_group_limit,
        );
        if groups >= limit {
            if let Some(left_out) = AUTO_CREATE_REFUSED.admit() {
                warn!(group = name, groups, limit, left_out, "auto-creation refused: the broker holds autoCreateSubscriptionGroupLimit groups");
            }
            return Ok(Err(format!(
                "subscription group [{name}] not exist and not created: this broker holds \
                 {groups} groups, autoCreateSubscriptionGroupLimit={limit}"
            )));
        }
        self.propose(&BrokerCommand::PutSubscriptionGroup { config })
            .await
            .map(|_| Ok(()))
    }

    /// Creates or replaces every topic of `configs` through Raft (leader only), leaving out
    /// those already held exactly so; returns how many changed. One entry holds them all
    /// unless they exceed the log's entry limit: then consecutive entries, each applied
    /// whole, so a failure part-way (a lost leadership) leaves a prefix created and the
    /// answer an error; asking again creates the rest. The name servers learn the new
    /// table once, after the last entry. The caller has checked every config.
    pub async fn put_topics(&self, configs: Vec<TopicConfig>) -> Result<usize, DLedgerError> {
        let changed: Vec<TopicConfig> = configs
            .into_iter()
            .filter(|c| self.state.topic(&c.topic_name).as_ref() != Some(c))
            .collect();
        let count = changed.len();
        if count == 0 {
            return Ok(0);
        }
        let commands = crate::command::put_topics_commands(changed, self.node.max_entry_bytes());
        info!(topics = count, entries = commands.len(), "creating topics");
        let mut proposed = Ok(count);
        for command in &commands {
            if let Err(e) = self.propose(command).await {
                proposed = Err(e);
                break;
            }
        }
        // Even after a failure: entries before it may have been applied.
        self.register_now.notify_one();
        proposed
    }

    /// Proposes `config`; the caller holds `topic_create`.
    async fn put_topic(&self, config: TopicConfig) -> Result<TopicConfig, DLedgerError> {
        info!(topic = %config.topic_name, queues = config.write_queue_nums, "creating topic");
        self.propose(&BrokerCommand::PutTopic {
            config: config.clone(),
        })
        .await?;
        self.register_now.notify_one();
        Ok(config)
    }

    /// The queue a send that left the choice to the broker goes to (round-robin).
    pub fn next_queue_id(&self, write_queue_nums: i32) -> i32 {
        let n = write_queue_nums.max(1) as u32;
        (self.next_queue.fetch_add(1, Ordering::Relaxed) % n) as i32
    }

    // --- queues and offsets ---

    /// Queue offsets `[min, max)` of a queue; `(0, 0)` for a queue never written.
    pub fn queue_bounds(&self, topic: &str, queue_id: i32) -> (u64, u64) {
        self.state.queue_bounds(topic, queue_id)
    }

    pub fn consume_queue(&self, topic: &str, queue_id: i32) -> Option<Arc<ConsumeQueue>> {
        self.state.consume_queues.get(topic, queue_id)
    }

    /// Resolves when some ConsumeQueue is created after this call (see `pull`).
    pub(crate) fn queue_created(&self) -> tokio::sync::futures::Notified<'_> {
        self.state.consume_queues.created.notified()
    }

    /// Records a consumer's offset commit on the leader; it reaches the Raft log with the
    /// next batch (`consumerOffsetCommitIntervalMs`).
    pub fn commit_offset(&self, group: &str, topic: &str, queue_id: i32, offset: i64) {
        self.pending_offsets
            .lock()
            .unwrap()
            .insert((group.to_string(), topic.to_string(), queue_id), offset);
    }

    /// The group's offset in a queue: committed here and still pending, else from the log.
    pub fn consumer_offset(&self, group: &str, topic: &str, queue_id: i32) -> Option<i64> {
        let key = (group.to_string(), topic.to_string(), queue_id);
        let pending = self.pending_offsets.lock().unwrap().get(&key).copied();
        pending.or_else(|| self.state.committed_offset(group, topic, queue_id))
    }

    /// Every offset of `group` (committed here and pending, else from the log), by topic
    /// and queue.
    pub fn offsets_of_group(&self, group: &str) -> BTreeMap<(String, i32), i64> {
        let mut offsets = self.state.offsets_of_group(group);
        for ((g, topic, queue_id), offset) in self.pending_offsets.lock().unwrap().iter() {
            if g == group {
                offsets.insert((topic.clone(), *queue_id), *offset);
            }
        }
        offsets
    }

    /// The groups with an offset (committed or pending) in `topic`.
    pub fn groups_with_offsets_in(&self, topic: &str) -> std::collections::BTreeSet<String> {
        let mut groups = self.state.groups_with_offsets_in(topic);
        for (g, t, _) in self.pending_offsets.lock().unwrap().keys() {
            if t == topic {
                groups.insert(g.clone());
            }
        }
        groups
    }

    /// Sets `group`'s offsets in `topic` through Raft (leader only, INVOKE_BROKER_TO_RESET_OFFSET):
    /// answers once every replica will hold them. Commits of the group in `topic` still
    /// pending here are dropped first, so an older commit never lands after the reset;
    /// a consumer that commits its old position afterwards moves it again (as in RocketMQ,
    /// live clients are told of the reset to prevent that).
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> Result<(), DLedgerError> {
        let _flush = self.offset_flush.lock().await;
        self.pending_offsets
            .lock()
            .unwrap()
            .retain(|(g, t, _), _| !(g == group && t == topic));
        let offsets = offsets
            .iter()
            .map(|&(queue_id, offset)| OffsetUpdate {
                consumer_group: group.to_string(),
                topic: topic.to_string(),
                queue_id,
                offset,
            })
            .collect();
        self.propose(&BrokerCommand::UpdateOffsets { offsets })
            .await
    }

    /// Held by whoever takes pending offsets and proposes them (see `reset_offsets`).
    pub(crate) async fn offset_flush(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.offset_flush.lock().await
    }

    /// The store time of the message at `queue_offset` in a queue, if it is stored here.
    pub fn store_timestamp(&self, topic: &str, queue_id: i32, queue_offset: u64) -> Option<i64> {
        let queue = self.consume_queue(topic, queue_id)?;
        let entry = *queue.read(queue_offset, 1).ok()?.first()?;
        let bytes = self
            .read_commit_log(entry.commit_log_offset as u64, entry.size as usize)
            .ok()?;
        let (record, _) = remoting::message::MessageRecord::decode(&bytes).ok()?;
        Some(record.store_timestamp)
    }

    /// The store time of the oldest message this node still queues (RocketMQ's
    /// `earliestMessageTimeStamp`): the queue entry lowest in the CommitLog, one entry read
    /// per queue. `None` when no queue holds a message.
    pub fn earliest_store_timestamp(&self) -> Option<i64> {
        let oldest = self
            .state
            .consume_queues
            .all()
            .into_iter()
            .filter(|(_, q)| q.max_offset() > q.min_offset())
            .filter_map(|(_, q)| q.read(q.min_offset(), 1).ok()?.first().copied())
            .min_by_key(|entry| entry.commit_log_offset)?;
        let bytes = self
            .read_commit_log(oldest.commit_log_offset as u64, oldest.size as usize)
            .ok()?;
        let (record, _) = remoting::message::MessageRecord::decode(&bytes).ok()?;
        Some(record.store_timestamp)
    }

    /// The pending offset commits, copied for one Raft command. They stay pending (and
    /// visible to readers) until [`Self::release_pending_offsets`] after the command: taken
    /// out before it applied, an offset would be in neither place for the while, and a
    /// reader then (QUERY_CONSUMER_OFFSET, an offset reset) would find none.
    pub(crate) fn pending_offsets(&self) -> Vec<OffsetUpdate> {
        self.pending_offsets
            .lock()
            .unwrap()
            .iter()
            .map(|((consumer_group, topic, queue_id), offset)| OffsetUpdate {
                consumer_group: consumer_group.clone(),
                topic: topic.clone(),
                queue_id: *queue_id,
                offset: *offset,
            })
            .collect()
    }

    /// Drops the pending commits of `batch` that no newer commit replaced.
    pub(crate) fn release_pending_offsets(&self, batch: Vec<OffsetUpdate>) {
        let mut pending = self.pending_offsets.lock().unwrap();
        for u in batch {
            let key = (u.consumer_group, u.topic, u.queue_id);
            if pending.get(&key) == Some(&u.offset) {
                pending.remove(&key);
            }
        }
    }

    // --- name servers ---

    /// Asks the registration task to register now (role or topics changed).
    pub fn register_soon(&self) {
        self.register_now.notify_one();
    }

    pub(crate) fn register_requested(&self) -> tokio::sync::futures::Notified<'_> {
        self.register_now.notified()
    }

    /// Resolves when a scheduled message is applied after this call.
    pub(crate) fn timer_added(&self) -> tokio::sync::futures::Notified<'_> {
        self.state.timer_added.notified()
    }

    /// Reads of the state the apply hook stored (timer keys).
    pub(crate) fn hook_store(&self) -> dledger::HookStore {
        self.node.hook_store()
    }

    /// Makes the ConsumeQueue entries written since the last sync durable and prunes their
    /// journal, when due ([`crate::consume_queue::ConsumeQueueSync`]); blocking.
    pub(crate) fn sync_consume_queues(
        &self,
        sync: &mut crate::consume_queue::ConsumeQueueSync,
    ) -> crate::Result<bool> {
        sync.run(&self.state.consume_queues, &self.hook_store())
    }

    /// The client address a node of this group announced when it led.
    pub fn leader_addr(&self, node_id: u64) -> Option<String> {
        self.state.leader_addr(node_id)
    }

    // --- retention ---

    /// The store's disk usage and whether sends are refused for it.
    pub fn disk(&self) -> &DiskUsage {
        &self.disk
    }

    /// Asks the retention task for a pass now, counting as "time to delete" for this and
    /// the next passes (DELETE_EXPIRED_COMMITLOG, RocketMQ's manual delete).
    pub fn request_clean(&self) {
        self.manual_passes
            .store(crate::retention::MANUAL_PASSES, Ordering::Release);
        self.clean_now.notify_one();
    }

    pub(crate) fn clean_requested(&self) -> tokio::sync::futures::Notified<'_> {
        self.clean_now.notified()
    }

    /// Whether this pass counts as asked for by an operator (one of the passes left).
    pub(crate) fn take_manual_pass(&self) -> bool {
        self.manual_passes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// The applied retention point: nothing below this CommitLog position is kept.
    pub fn retention_point(&self) -> u64 {
        self.state.retention_point()
    }

    pub(crate) fn retention_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state.retention_watch()
    }

    /// This node's CommitLog segment files, oldest first.
    pub fn segments(&self) -> Vec<dledger::SegmentFile> {
        self.node.segments()
    }

    /// The first CommitLog position this node still stores.
    pub fn commit_log_start(&self) -> u64 {
        self.node.start_position()
    }

    /// Purges this node's Raft log below `position` (see `retention::purge`).
    pub(crate) async fn purge_commit_log_below(&self, position: u64) -> Result<(), DLedgerError> {
        self.node.purge_below(position).await.map(|_| ())
    }

    /// Hands leadership to node `target` of this group ([`DLedgerNode::transfer_leadership`]).
    pub async fn transfer_leadership(
        &self,
        target: u64,
    ) -> Result<dledger::TransferResult, DLedgerError> {
        self.node.transfer_leadership(target).await
    }

    /// Adds node `id` at peer address `addr` to this group ([`DLedgerNode::add_node`]).
    pub async fn add_node(&self, id: u64, addr: &str) -> Result<dledger::Members, DLedgerError> {
        self.node.add_node(id, addr).await
    }

    /// Removes node `id` from this group ([`DLedgerNode::remove_node`]).
    pub async fn remove_node(&self, id: u64) -> Result<dledger::Members, DLedgerError> {
        self.node.remove_node(id).await
    }

    /// This group's membership as this node sees it.
    pub fn members(&self) -> dledger::Members {
        self.node.members()
    }

    pub(crate) async fn shutdown_node(self) -> Result<(), DLedgerError> {
        let result = self.node.shutdown().await;
        // Nothing is applied any more: the entries queues hold in memory go to their files,
        // so that the next start has less of the journal to write again.
        if let Err(e) = self.state.consume_queues.flush_all() {
            warn!(error = %e, "ConsumeQueue entries left to the journal at stop");
        }
        result
    }
}
