//! [`PushConsumer`]: subscribe, register a listener, start; the consumer pulls and calls
//! the listener (RocketMQ's `DefaultMQPushConsumer` with a concurrent listener).
//!
//! # What runs
//!
//! - **Heartbeats** (HEART_BEAT with the group, model, subscriptions) at start and every
//!   `heartbeat_broker_interval_ms` to every member of every group serving a
//!   subscribed topic, leaders and followers alike, so any of them can answer for the
//!   group after a failover.
//! - **Rebalance** at start, every `rebalance_interval_ms`, and at once when a broker
//!   sends NOTIFY_CONSUMER_IDS_CHANGED. Clustering: the topic's readable queues are
//!   split among the group's live members (GET_CONSUMER_LIST_BY_GROUP, asked of a
//!   leader) with [`crate::allocate::allocate_averagely`]. Broadcasting: every queue.
//! - **One pull loop per owned queue**: long polling (`broker_suspend_max_time_ms`,
//!   deadline `consumer_timeout_when_suspend_ms`), starting at the committed offset,
//!   else per [`ConsumeFromWhere`]. Flow control: a queue holds at most
//!   `pull_threshold_for_queue` pulled-but-unconsumed messages; its loop waits
//!   while that many are in flight.
//! - **One consume loop per owned queue**: batches (`consume_message_batch_max_size`)
//!   go to the listener in queue order, one batch of a queue at a time; at most
//!   `consume_thread_max` listener calls run at once across all queues.
//! - **Offset commits** every `persist_consumer_offset_interval_ms`, when a queue is
//!   rebalanced away, and at shutdown. The committed offset is the lowest offset of
//!   the queue not yet consumed, so a crash re-delivers, never skips (at least once).
//! - **Offset resets** a broker passes on from an admin (RESET_CONSUMER_CLIENT_OFFSET,
//!   `resetOffsetByTime`): the topic's queues stop as when given away but without
//!   committing, the new offsets are committed, and a rebalance starts them from there.
//!
//! # Giving a queue away
//!
//! When rebalancing takes a queue away, its loops are stopped and its state marked
//! dropped *before* its offset is committed: a listener call still running finishes,
//! but its result no longer moves the offset, and the new owner re-delivers it.
//!
//! # RECONSUME_LATER: retry topics (clustering)
//!
//! As RocketMQ 4.x's concurrent consumer does:
//!
//! - A clustering consumer also subscribes its group to `%RETRY%<group>` with `*`
//!   (heartbeats list it; its queues are rebalanced and pulled like any other). A
//!   message pulled from there that carries RETRY_TOPIC reaches the listener with that
//!   topic, the one it was first consumed from.
//! - Every message of a batch the listener returns [`ConsumeStatus::ReconsumeLater`]
//!   for (or panics on) is given back to the broker ([`crate::retry`]):
//!   CONSUMER_SEND_MSG_BACK to the leader of the group it was pulled from (delay level
//!   `delay_level_when_next_consume`, `max_reconsume_times`), else a re-send of the
//!   message to `%RETRY%<group>` through an internal producer. The broker delivers it
//!   again after the delay, and after `max_reconsume_times` deliveries stores it in
//!   `%DLQ%<group>` instead, which nobody consumes.
//! - Only a message the broker has taken back counts as consumed and lets the offset
//!   pass it. One that could not be given back either way stays in the queue's window
//!   (holding the committed offset back), has its `reconsume_times` raised, and goes to
//!   the listener again after `reconsume_delay_ms`; this repeats until the listener takes
//!   it or it can be given back. It is never counted as consumed unseen.
//! - Later batches of the queue go on meanwhile; a queue given away stops its retries
//!   (its new owner gets the messages again from the committed offset).
//!
//! # Orderly consumption
//!
//! With an orderly listener ([`PushConsumer::register_orderly_listener`], RocketMQ's
//! `MessageListenerOrderly`) each queue's messages reach the listener one batch at a time,
//! in queue order, and in clustering only while this client holds the queue's lock on
//! its broker group (LOCK_BATCH_MQ, kept through Raft there, see `broker::queue_locks`):
//!
//! - A rebalance locks the queues it assigns and takes only those it was granted; one
//!   still held by its previous owner is asked for again a second later.
//! - Every `lock_interval_ms` (20 s) the held locks are renewed; a queue whose renewal is
//!   refused is marked unlocked. Before each batch the queue's lock is checked: taken at
//!   most `lock_max_live_ms` (30 s) ago, counted from when it was asked for. Otherwise the
//!   lock is asked for again, and the batch waits (3 s between refusals).
//! - [`ConsumeOrderlyStatus::SuspendCurrentQueueAMoment`] retries the same batch after
//!   `suspend_current_queue_time_ms`; no later message of the queue passes it. A message
//!   suspended `max_reconsume_times` times (-1: no limit, RocketMQ's orderly default) goes
//!   to the dead-letter topic and the queue moves on; if the broker does not take it, it
//!   is suspended again.
//! - Giving a queue away waits for its running listener call, commits its offset, then
//!   unlocks it; a call still running after `await_termination_when_shutdown_ms` leaves the
//!   lock to expire on the broker (60 s) instead. Shutdown unlocks every queue the same way.
//!
//! # RECONSUME_LATER in broadcasting
//!
//! Broadcasting has no retry topic (a retry would reach every member again): as in
//! RocketMQ, a message the listener refuses is logged and dropped, and the offset
//! passes it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use remoting::admin_body::{ConsumerRunningInfo, ProcessQueueInfo};
use remoting::queue_lock::MessageQueueData;
use remoting::route::{ConsumerData, HeartbeatData};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::allocate::allocate_averagely;
use crate::api::{self, PullArgs, PullResult};
use crate::check_client;
use crate::consume_stats::ConsumeStatsTable;
use crate::error::{ClientError, Result};
use crate::instance::{ClientConfig, ClientInstance};
use crate::message::{validate_topic, MessageExt, MessageQueue};
use crate::offset_store::OffsetStore;
use crate::producer::{Producer, ProducerConfig};
use crate::retry::{self, SendBack};
use crate::selector::MessageSelector;
use crate::unique_id::now_ms;

/// RocketMQ's `MessageModel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageModel {
    /// Each message goes to one member of the group.
    Clustering,
    /// Each message goes to every member.
    Broadcasting,
}

impl MessageModel {
    pub fn name(self) -> &'static str {
        match self {
            MessageModel::Clustering => "CLUSTERING",
            MessageModel::Broadcasting => "BROADCASTING",
        }
    }
}

/// Where a queue with no committed offset starts (RocketMQ's `ConsumeFromWhere`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeFromWhere {
    /// The queue's end (but a new group on a queue whose min offset is 0 starts at 0:
    /// the broker answers the offset query with 0 then).
    LastOffset,
    /// The queue's first stored message.
    FirstOffset,
    /// The first message stored at or after `consume_timestamp_ms`.
    Timestamp,
}

impl ConsumeFromWhere {
    pub fn name(self) -> &'static str {
        match self {
            ConsumeFromWhere::LastOffset => "CONSUME_FROM_LAST_OFFSET",
            ConsumeFromWhere::FirstOffset => "CONSUME_FROM_FIRST_OFFSET",
            ConsumeFromWhere::Timestamp => "CONSUME_FROM_TIMESTAMP",
        }
    }
}

/// A listener's verdict on a batch (RocketMQ's `ConsumeConcurrentlyStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeStatus {
    ConsumeSuccess,
    ReconsumeLater,
}

/// An orderly listener's verdict on a batch (RocketMQ's `ConsumeOrderlyStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeOrderlyStatus {
    Success,
    /// Consume the same batch again after `suspend_current_queue_time_ms`; nothing later
    /// in the queue goes first.
    SuspendCurrentQueueAMoment,
}

/// Orderly: the pause before asking again for a queue lock another client holds
/// (RocketMQ's `tryLockLaterAndReconsume`).
const LOCK_RETRY: Duration = Duration::from_secs(3);
/// Orderly: how soon a rebalance asks again for assigned queues it could not lock.
const RELOCK_SOON: Duration = Duration::from_secs(1);

/// An orderly verdict in the form the consume loops share.
fn orderly_verdict(status: ConsumeOrderlyStatus) -> ConsumeStatus {
    match status {
        ConsumeOrderlyStatus::Success => ConsumeStatus::ConsumeSuccess,
        ConsumeOrderlyStatus::SuspendCurrentQueueAMoment => ConsumeStatus::ReconsumeLater,
    }
}

/// `queues` grouped by broker group.
fn by_broker(queues: &[MessageQueue]) -> BTreeMap<String, Vec<MessageQueue>> {
    let mut groups: BTreeMap<String, Vec<MessageQueue>> = BTreeMap::new();
    for q in queues {
        groups
            .entry(q.broker_name.clone())
            .or_default()
            .push(q.clone());
    }
    groups
}

/// A push consumer's settings, with RocketMQ's names.
#[derive(Debug, Clone)]
pub struct PushConsumerConfig {
    pub client: ClientConfig,
    pub consumer_group: String,
    pub message_model: MessageModel,
    pub consume_from_where: ConsumeFromWhere,
    /// For [`ConsumeFromWhere::Timestamp`]; default: half an hour before start.
    pub consume_timestamp_ms: i64,
    /// Listener calls running at once, across all queues.
    pub consume_thread_max: usize,
    /// Messages per listener call.
    pub consume_message_batch_max_size: usize,
    /// Messages asked for per pull.
    pub pull_batch_size: i32,
    /// Pulled-but-unconsumed messages held per queue before its pulls pause.
    pub pull_threshold_for_queue: usize,
    /// How long a broker may hold a pull with nothing new.
    pub broker_suspend_max_time_ms: u64,
    /// The deadline of a held pull (longer than the hold).
    pub consumer_timeout_when_suspend_ms: u64,
    /// Pause after a failed pull.
    pub pull_time_delay_when_exception_ms: u64,
    pub rebalance_interval_ms: u64,
    pub persist_consumer_offset_interval_ms: u64,
    /// Clustering: pause before messages that could not be given back to the broker
    /// are consumed again here (RocketMQ: 5 s).
    pub reconsume_delay_ms: u64,
    /// Clustering: deliveries of a failed message before the broker moves it to the
    /// dead-letter topic `%DLQ%<group>`; sent with every give-back. -1 means 16,
    /// RocketMQ's default; 0 sends the first failure straight there.
    pub max_reconsume_times: i32,
    /// Clustering: the delay level asked for when a message is given back (RocketMQ's
    /// `delayLevelWhenNextConsume`): 0 lets the broker choose (3 + the times the message
    /// was reconsumed: 10 s, 30 s, 1 min, 2 min, ...), above 0 that level, below 0
    /// straight to the dead-letter topic.
    pub delay_level_when_next_consume: i32,
    /// Broadcasting: where offsets are kept (RocketMQ's
    /// `rocketmq.client.localOffsetStoreDir`).
    pub local_offset_store_dir: PathBuf,
    /// At shutdown, how long running listener calls may take to finish before offsets
    /// are committed.
    pub await_termination_when_shutdown_ms: u64,
    /// Orderly: the pause before a suspended batch is consumed again.
    pub suspend_current_queue_time_ms: u64,
    /// Orderly, clustering: how often held queue locks are renewed (RocketMQ's
    /// `rocketmq.client.rebalance.lockInterval`).
    pub lock_interval_ms: u64,
    /// Orderly, clustering: a queue is consumed only if its lock was taken or renewed
    /// within this long, counted from when it was asked for (RocketMQ's
    /// `rocketmq.client.rebalance.lockMaxLiveTime`); well below the broker's 60 s.
    pub lock_max_live_ms: u64,
}

impl PushConsumerConfig {
    pub fn new(namesrv_addr: impl Into<String>, consumer_group: impl Into<String>) -> Self {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        PushConsumerConfig {
            client: ClientConfig::new(namesrv_addr),
            consumer_group: consumer_group.into(),
            message_model: MessageModel::Clustering,
            consume_from_where: ConsumeFromWhere::LastOffset,
            consume_timestamp_ms: now_ms() - 30 * 60 * 1000,
            consume_thread_max: 20,
            consume_message_batch_max_size: 1,
            pull_batch_size: 32,
            pull_threshold_for_queue: 1000,
            broker_suspend_max_time_ms: 15_000,
            consumer_timeout_when_suspend_ms: 20_000,
            pull_time_delay_when_exception_ms: 3_000,
            rebalance_interval_ms: 20_000,
            persist_consumer_offset_interval_ms: 5_000,
            reconsume_delay_ms: 5_000,
            max_reconsume_times: retry::DEFAULT_MAX_RECONSUME_TIMES,
            delay_level_when_next_consume: 0,
            local_offset_store_dir: home.join(".rocketmq_offsets"),
            await_termination_when_shutdown_ms: 5_000,
            suspend_current_queue_time_ms: 1_000,
            lock_interval_ms: 20_000,
            lock_max_live_ms: 30_000,
        }
    }
}

type SyncListener = dyn Fn(&[MessageExt]) -> ConsumeStatus + Send + Sync;
type AsyncListener = dyn Fn(Vec<MessageExt>) -> BoxFuture<'static, ConsumeStatus> + Send + Sync;

#[derive(Clone)]
enum Listener {
    /// Runs on Tokio's blocking pool.
    Sync(Arc<SyncListener>),
    /// Runs as a task.
    Async(Arc<AsyncListener>),
}

/// A push consumer: [`PushConsumer::new`], [`PushConsumer::subscribe`], a listener,
/// [`PushConsumer::start`], and at the end [`PushConsumer::shutdown`].
pub struct PushConsumer {
    config: PushConsumerConfig,
    subscriptions: BTreeMap<String, MessageSelector>,
    listener: Option<Listener>,
    /// The listener is an orderly one.
    orderly: bool,
    running: Option<Arc<Shared>>,
}

impl PushConsumer {
    pub fn new(config: PushConsumerConfig) -> Self {
        PushConsumer {
            config,
            subscriptions: BTreeMap::new(),
            listener: None,
            orderly: false,
            running: None,
        }
    }

    /// Subscribes to `topic` with a tag expression (`"*"`, `"TagA || TagB"`). Call
    /// before [`Self::start`].
    pub fn subscribe(&mut self, topic: &str, tag_expression: &str) -> Result<()> {
        self.subscribe_with(topic, MessageSelector::by_tag(tag_expression))
    }

    /// Subscribes to `topic` with a SQL92 expression on message properties (RocketMQ's
    /// `subscribe(topic, MessageSelector.bySql(...))`). A bad expression fails here; a
    /// broker without `enablePropertyFilter=true` makes [`Self::start`] fail.
    pub fn subscribe_sql(&mut self, topic: &str, sql_expression: &str) -> Result<()> {
        self.subscribe_with(topic, MessageSelector::by_sql(sql_expression)?)
    }

    /// Subscribes to `topic` with any [`MessageSelector`]. Call before [`Self::start`].
    pub fn subscribe_with(&mut self, topic: &str, selector: MessageSelector) -> Result<()> {
        validate_topic(topic).map_err(|reason| ClientError::InvalidConfig {
            reason: format!("topic `{topic}`: {reason}"),
        })?;
        self.subscriptions.insert(topic.to_string(), selector);
        Ok(())
    }

    /// The listener, called on Tokio's blocking pool (it may block).
    pub fn register_message_listener<F>(&mut self, listener: F)
    where
        F: Fn(&[MessageExt]) -> ConsumeStatus + Send + Sync + 'static,
    {
        self.listener = Some(Listener::Sync(Arc::new(listener)));
        self.orderly = false;
    }

    /// An orderly listener (RocketMQ's `MessageListenerOrderly`), called on Tokio's
    /// blocking pool with each queue's messages in order (module doc, "Orderly
    /// consumption").
    pub fn register_orderly_listener<F>(&mut self, listener: F)
    where
        F: Fn(&[MessageExt]) -> ConsumeOrderlyStatus + Send + Sync + 'static,
    {
        self.listener = Some(Listener::Sync(Arc::new(move |msgs: &[MessageExt]| {
            orderly_verdict(listener(msgs))
        })));
        self.orderly = true;
    }

    /// An async orderly listener, run as a task.
    pub fn register_orderly_async_listener<F, Fut>(&mut self, listener: F)
    where
        F: Fn(Vec<MessageExt>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ConsumeOrderlyStatus> + Send + 'static,
    {
        let listener = Arc::new(listener);
        self.listener = Some(Listener::Async(Arc::new(move |msgs| {
            let listener = listener.clone();
            Box::pin(async move { orderly_verdict(listener(msgs).await) })
                as BoxFuture<'static, ConsumeStatus>
        })));
        self.orderly = true;
    }

    /// An async listener, run as a task.
    pub fn register_async_listener<F, Fut>(&mut self, listener: F)
    where
        F: Fn(Vec<MessageExt>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ConsumeStatus> + Send + 'static,
    {
        self.listener = Some(Listener::Async(Arc::new(move |msgs| {
            Box::pin(listener(msgs)) as BoxFuture<'static, ConsumeStatus>
        })));
        self.orderly = false;
    }

    /// Starts heartbeats, rebalancing and pulling on the current Tokio runtime.
    pub async fn start(&mut self) -> Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let invalid = |reason: &str| ClientError::InvalidConfig {
            reason: reason.to_string(),
        };
        if self.config.consumer_group.is_empty() {
            return Err(invalid("consumer_group is empty"));
        }
        if self.subscriptions.is_empty() {
            return Err(invalid("subscribe to at least one topic before start"));
        }
        let Some(listener) = self.listener.clone() else {
            return Err(invalid("register a listener before start"));
        };
        if self.config.max_reconsume_times < -1 {
            return Err(invalid(
                "max_reconsume_times is -1 (meaning 16) or 0 and above",
            ));
        }
        let instance = ClientInstance::new(self.config.client.clone())?;
        let offsets = match self.config.message_model {
            MessageModel::Clustering => {
                OffsetStore::remote(instance.clone(), &self.config.consumer_group)
            }
            MessageModel::Broadcasting => OffsetStore::local(
                instance.clone(),
                &self.config.consumer_group,
                &self.config.local_offset_store_dir,
            )?,
        };
        let sub_version = now_ms();
        let retry_topic = retry::retry_topic(&self.config.consumer_group);
        let (subscriptions, send_back) = self.retry_setup(&instance, &retry_topic);
        let shared = Arc::new(Shared {
            notify: Mutex::new(Some(
                instance.watch_consumer_ids(&self.config.consumer_group),
            )),
            resets: Mutex::new(Some(
                instance.watch_offset_resets(&self.config.consumer_group),
            )),
            pool: Arc::new(Semaphore::new(self.config.consume_thread_max.max(1))),
            subscriptions: subscriptions
                .into_iter()
                .map(|(t, f)| (t, (f, sub_version)))
                .collect(),
            retry_topic,
            send_back,
            config: self.config.clone(),
            listener,
            orderly: self.orderly,
            relock_soon: AtomicBool::new(false),
            offsets,
            queues: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            rebalance_lock: tokio::sync::Mutex::new(()),
            stats: ConsumeStatsTable::default(),
            started_ms: now_ms(),
            instance,
        });
        let weak = Arc::downgrade(&shared);
        shared.instance.serve_running_info(
            &self.config.consumer_group,
            Arc::new(move |jstack| {
                weak.upgrade()
                    .map(|shared| shared.running_info(jstack))
                    .unwrap_or_default()
            }),
        );
        for topic in shared.subscriptions.keys() {
            match shared.instance.refresh_topic(topic).await {
                Ok(true) => {}
                // The broker creates the retry topic at the first give-back.
                Ok(false) if *topic == shared.retry_topic => {}
                Ok(false) => warn!(%topic, "no route yet; will retry"),
                Err(e) => warn!(%topic, error = %e, "no route yet; will retry"),
            }
        }
        if let Err(e) = check_client::check_subscriptions(
            &shared.instance,
            &self.config.consumer_group,
            &shared.subscriptions,
        )
        .await
        {
            shared.instance.cancel.cancel();
            shared.instance.close_connections();
            return Err(e);
        }
        let refresher = shared.instance.start();
        shared.heartbeat().await;
        shared.rebalance().await;
        let tasks = vec![
            refresher,
            tokio::spawn(shared.clone().heartbeat_loop()),
            tokio::spawn(shared.clone().rebalance_loop()),
            tokio::spawn(shared.clone().reset_loop()),
            tokio::spawn(shared.clone().persist_loop()),
        ];
        let tasks = if shared.locks_queues() {
            let mut tasks = tasks;
            tasks.push(tokio::spawn(shared.clone().lock_loop()));
            tasks
        } else {
            tasks
        };
        shared.tasks.lock().unwrap().extend(tasks);
        info!(client_id = %shared.instance.client_id, consumer_group = %self.config.consumer_group, "push consumer started");
        self.running = Some(shared);
        Ok(())
    }

    /// Clustering: the subscriptions with the group's retry topic added (`*`), and the
    /// way failed messages go back to the broker. Broadcasting: neither.
    fn retry_setup(
        &self,
        instance: &Arc<ClientInstance>,
        retry_topic: &str,
    ) -> (BTreeMap<String, MessageSelector>, Option<SendBack>) {
        let mut subscriptions = self.subscriptions.clone();
        if self.config.message_model == MessageModel::Broadcasting {
            return (subscriptions, None);
        }
        subscriptions.insert(retry_topic.to_string(), MessageSelector::by_tag("*"));
        let inner_producer = ProducerConfig {
            client: self.config.client.clone(),
            producer_group: retry::CLIENT_INNER_PRODUCER_GROUP.into(),
            ..Default::default()
        };
        let send_back = SendBack {
            producer: Producer::on_instance(instance.clone(), inner_producer),
            instance: instance.clone(),
            consumer_group: self.config.consumer_group.clone(),
            delay_level: self.config.delay_level_when_next_consume,
            max_reconsume_times: retry::effective_max_reconsume_times(
                self.config.max_reconsume_times,
            ),
        };
        (subscriptions, Some(send_back))
    }

    /// This consumer's client id, once started.
    pub fn client_id(&self) -> Option<&str> {
        self.running.as_ref().map(|s| s.instance.client_id.as_str())
    }

    /// The queues this consumer owns now, sorted.
    pub fn owned_queues(&self) -> Vec<MessageQueue> {
        let Some(shared) = &self.running else {
            return Vec::new();
        };
        let mut out: Vec<MessageQueue> = shared.queues.lock().unwrap().keys().cloned().collect();
        out.sort();
        out
    }

    /// Stops pulling, lets running listener calls finish (bounded by
    /// `await_termination_when_shutdown_ms`), commits offsets and waits for the
    /// answers, unregisters from every broker and closes connections.
    pub async fn shutdown(&mut self) {
        let Some(shared) = self.running.take() else {
            return;
        };
        shared.instance.cancel.cancel();
        let tasks: Vec<JoinHandle<()>> = shared.tasks.lock().unwrap().drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
        let queues = shared.owned();
        // Running listener calls may finish and move offsets, within the bound.
        let wait = Duration::from_millis(self.config.await_termination_when_shutdown_ms);
        let all = self.config.consume_thread_max.max(1) as u32;
        let drained = tokio::time::timeout(wait, async {
            futures::future::join_all(queues.iter().map(|(_, pq)| pq.stop_tasks(wait))).await;
            shared.pool.acquire_many(all).await.map(|p| p.forget())
        })
        .await;
        if drained.is_err() {
            warn!("listener calls still running at shutdown; their messages will be re-delivered");
        }
        for (_, pq) in &queues {
            pq.dropped.store(true, Ordering::SeqCst);
        }
        let owned: Vec<MessageQueue> = queues.into_iter().map(|(q, _)| q).collect();
        shared.offsets.persist(&owned, true).await;
        if shared.locks_queues() {
            if drained.is_ok() {
                shared.unlock(&owned).await;
            } else {
                warn!("orderly: listener calls still running; queue locks left to expire on the broker");
            }
        }
        shared
            .instance
            .unregister(None, Some(&self.config.consumer_group))
            .await;
        shared.instance.close_connections();
        info!(client_id = %shared.instance.client_id, "push consumer stopped");
    }
}

impl Drop for PushConsumer {
    fn drop(&mut self) {
        if let Some(shared) = &self.running {
            shared.instance.cancel.cancel();
        }
    }
}

/// What the running info names as the client's version.
const CLIENT_VERSION: &str = concat!("rocketraft-client ", env!("CARGO_PKG_VERSION"));

/// One owned queue's state.
struct ProcessQueue {
    queue: MessageQueue,
    /// Stops its loops (rebalance or shutdown).
    cancel: CancellationToken,
    /// Set when the queue is given away: results no longer move its offset.
    dropped: AtomicBool,
    window: Mutex<Window>,
    /// Wakes the pull loop when messages leave the window.
    space: Notify,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Orderly, clustering: the broker granted this client the queue's lock ...
    locked: AtomicBool,
    /// ... asked for at this time (ms).
    lock_asked_ms: AtomicI64,
    /// When the last pull was sent and the last listener call began (ms; 0: never).
    last_pull_ms: AtomicI64,
    last_consume_ms: AtomicI64,
}

#[derive(Default)]
struct Window {
    /// Offsets pulled and not yet consumed.
    in_flight: BTreeSet<i64>,
    /// Where the next pull starts: every offset below it was pulled (or filtered out).
    pulled_until: Option<i64>,
    /// Body bytes of the messages in flight.
    bytes: usize,
}

impl Window {
    /// The lowest offset not yet consumed.
    fn consumed_offset(&self) -> Option<i64> {
        self.in_flight.first().copied().or(self.pulled_until)
    }
}

impl ProcessQueue {
    fn in_flight(&self) -> usize {
        self.window.lock().unwrap().in_flight.len()
    }

    /// Stops the queue's loops and waits up to `wait` for them (a listener call in
    /// progress finishes on its own; the caller decides whether its result counts).
    /// False if one still runs.
    async fn stop_tasks(&self, wait: Duration) -> bool {
        self.cancel.cancel();
        let tasks: Vec<JoinHandle<()>> = self.tasks.lock().unwrap().drain(..).collect();
        if tokio::time::timeout(wait, futures::future::join_all(tasks))
            .await
            .is_err()
        {
            debug!(queue = %self.queue, "a listener call outlived its queue's loops");
            return false;
        }
        true
    }

    /// Orderly, clustering: whether this client may consume the queue now.
    fn holds_lock(&self, lock_max_live_ms: u64) -> bool {
        self.locked.load(Ordering::SeqCst)
            && now_ms() - self.lock_asked_ms.load(Ordering::SeqCst) < lock_max_live_ms as i64
    }

    fn set_lock(&self, granted: bool, asked_ms: i64) {
        if granted {
            self.lock_asked_ms.store(asked_ms, Ordering::SeqCst);
        }
        self.locked.store(granted, Ordering::SeqCst);
    }
}

struct Shared {
    instance: Arc<ClientInstance>,
    config: PushConsumerConfig,
    /// The user's subscriptions and, in clustering, the group's retry topic.
    subscriptions: BTreeMap<String, (MessageSelector, i64)>,
    /// `%RETRY%<group>`.
    retry_topic: String,
    /// Clustering: how failed messages go back to the broker. Broadcasting: none.
    send_back: Option<SendBack>,
    listener: Listener,
    /// The listener is an orderly one.
    orderly: bool,
    /// Orderly, clustering: an assigned queue could not be locked; rebalance again soon.
    relock_soon: AtomicBool,
    offsets: OffsetStore,
    pool: Arc<Semaphore>,
    queues: Mutex<HashMap<MessageQueue, Arc<ProcessQueue>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    rebalance_lock: tokio::sync::Mutex<()>,
    notify: Mutex<Option<mpsc::Receiver<()>>>,
    /// Offset resets brokers pass on (`rocketraft admin resetOffsetByTime`).
    resets: Mutex<Option<mpsc::Receiver<crate::instance::OffsetReset>>>,
    /// Pull and consume rates by topic, for the running info.
    stats: ConsumeStatsTable,
    started_ms: i64,
}

impl Shared {
    async fn sleep_or_stop(&self, ms: u64) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => true,
            _ = self.instance.cancel.cancelled() => false,
        }
    }

    fn heartbeat_data(&self) -> HeartbeatData {
        HeartbeatData {
            client_id: self.instance.client_id.clone(),
            producer_data_set: Vec::new(),
            consumer_data_set: vec![ConsumerData {
                group_name: self.config.consumer_group.clone(),
                consume_type: "CONSUME_PASSIVELY".into(),
                message_model: self.config.message_model.name().into(),
                consume_from_where: self.config.consume_from_where.name().into(),
                subscription_data_set: self
                    .subscriptions
                    .iter()
                    .map(|(topic, (filter, version))| filter.subscription_data(topic, *version))
                    .collect(),
                unit_mode: false,
            }],
        }
    }

    /// GET_CONSUMER_RUNNING_INFO's answer (RocketMQ's `consumerRunningInfo`): settings
    /// under the Java consumer's names, subscriptions, each owned queue's state, each
    /// topic's rates.
    fn running_info(&self, jstack: bool) -> ConsumerRunningInfo {
        type I = ConsumerRunningInfo;
        let c = &self.config;
        let properties = [
            (I::PROP_CONSUME_TYPE, "CONSUME_PASSIVELY".to_string()),
            (I::PROP_CONSUME_ORDERLY, self.orderly.to_string()),
            (
                I::PROP_THREADPOOL_CORE_SIZE,
                c.consume_thread_max.to_string(),
            ),
            (I::PROP_NAMESERVER_ADDR, c.client.namesrv_addr.clone()),
            (I::PROP_CLIENT_VERSION, CLIENT_VERSION.to_string()),
            (
                I::PROP_CONSUMER_START_TIMESTAMP,
                self.started_ms.to_string(),
            ),
            ("consumerGroup", c.consumer_group.clone()),
            ("messageModel", c.message_model.name().to_string()),
            ("consumeFromWhere", c.consume_from_where.name().to_string()),
            ("consumeThreadMin", c.consume_thread_max.to_string()),
            ("consumeThreadMax", c.consume_thread_max.to_string()),
            (
                "consumeMessageBatchMaxSize",
                c.consume_message_batch_max_size.to_string(),
            ),
            ("pullBatchSize", c.pull_batch_size.to_string()),
            (
                "pullThresholdForQueue",
                c.pull_threshold_for_queue.to_string(),
            ),
            ("maxReconsumeTimes", c.max_reconsume_times.to_string()),
            (
                "suspendCurrentQueueTimeMillis",
                c.suspend_current_queue_time_ms.to_string(),
            ),
            ("namesrvAddr", c.client.namesrv_addr.clone()),
            ("unitMode", "false".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let subscription_set = self
            .subscriptions
            .iter()
            .map(|(topic, (filter, version))| filter.subscription_data(topic, *version))
            .collect();
        let mut info = ConsumerRunningInfo {
            properties,
            subscription_set,
            status_table: self.stats.status_table(now_ms()),
            jstack: jstack.then(|| "a Rust client: no JVM thread dump".to_string()),
            ..Default::default()
        };
        for (queue, pq) in self.owned() {
            let (min, max, count, bytes) = {
                let w = pq.window.lock().unwrap();
                let first = w.in_flight.first().copied().unwrap_or(0);
                let last = w.in_flight.last().copied().unwrap_or(0);
                (first, last, w.in_flight.len(), w.bytes)
            };
            let state = ProcessQueueInfo {
                commit_offset: self.offsets.get(&queue).unwrap_or(-1),
                cached_msg_min_offset: min,
                cached_msg_max_offset: max,
                cached_msg_count: count as i32,
                cached_msg_size_in_mib: (bytes / (1024 * 1024)) as i32,
                locked: pq.locked.load(Ordering::SeqCst),
                last_lock_timestamp: pq.lock_asked_ms.load(Ordering::SeqCst),
                droped: pq.dropped.load(Ordering::SeqCst),
                last_pull_timestamp: pq.last_pull_ms.load(Ordering::Relaxed),
                last_consume_timestamp: pq.last_consume_ms.load(Ordering::Relaxed),
                ..Default::default()
            };
            let key = MessageQueueData {
                topic: queue.topic,
                broker_name: queue.broker_name,
                queue_id: queue.queue_id,
            };
            info.mq_table.0.insert(key, state);
        }
        info
    }

    async fn heartbeat(&self) {
        let topics: Vec<String> = self.subscriptions.keys().cloned().collect();
        let ok = self
            .instance
            .heartbeat(&topics, &self.heartbeat_data())
            .await;
        debug!(brokers = ok, "heartbeat sent");
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let interval = Duration::from_millis(self.config.client.heartbeat_broker_interval_ms);
        while self.instance.heartbeat_wait(interval).await {
            self.heartbeat().await;
        }
    }

    async fn rebalance_loop(self: Arc<Self>) {
        let Some(mut notified) = self.notify.lock().unwrap().take() else {
            return;
        };
        let interval = Duration::from_millis(self.config.rebalance_interval_ms.max(10));
        loop {
            let wait = if self.relock_soon.swap(false, Ordering::SeqCst) {
                interval.min(RELOCK_SOON)
            } else {
                interval
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                Some(()) = notified.recv() => debug!("consumer ids changed: rebalancing now"),
                _ = self.instance.cancel.cancelled() => return,
            }
            self.rebalance().await;
        }
    }

    /// Applies offset resets as RocketMQ's client does: the topic's queues stop (nothing
    /// they held is committed), the new offsets are committed, and a rebalance takes the
    /// queues again from there.
    async fn reset_loop(self: Arc<Self>) {
        let Some(mut resets) = self.resets.lock().unwrap().take() else {
            return;
        };
        loop {
            let reset = tokio::select! {
                Some(reset) = resets.recv() => reset,
                _ = self.instance.cancel.cancelled() => return,
            };
            self.apply_reset(reset).await;
            self.rebalance().await;
        }
    }

    async fn apply_reset(&self, reset: crate::instance::OffsetReset) {
        let _one_at_a_time = self.rebalance_lock.lock().await;
        let stopped: Vec<Arc<ProcessQueue>> = {
            let mut queues = self.queues.lock().unwrap();
            let keys: Vec<MessageQueue> = queues
                .keys()
                .filter(|q| q.topic == reset.topic)
                .cloned()
                .collect();
            keys.iter().filter_map(|q| queues.remove(q)).collect()
        };
        for pq in &stopped {
            pq.dropped.store(true, Ordering::SeqCst);
            pq.stop_tasks(Duration::from_secs(1)).await;
        }
        let queues: Vec<MessageQueue> = reset.offsets.iter().map(|(q, _)| q.clone()).collect();
        for (queue, offset) in &reset.offsets {
            self.offsets.update(queue, *offset, false);
        }
        self.offsets.persist(&queues, true).await;
        for queue in &queues {
            self.offsets.remove(queue);
        }
        info!(topic = %reset.topic, queues = queues.len(), stopped = stopped.len(), "offsets reset by an admin");
    }

    async fn persist_loop(self: Arc<Self>) {
        while self
            .sleep_or_stop(self.config.persist_consumer_offset_interval_ms)
            .await
        {
            let owned: Vec<MessageQueue> = self.queues.lock().unwrap().keys().cloned().collect();
            self.offsets.persist(&owned, false).await;
        }
    }

    async fn rebalance(self: &Arc<Self>) {
        let _one_at_a_time = self.rebalance_lock.lock().await;
        for topic in self.subscriptions.keys() {
            if self.instance.cancel.is_cancelled() {
                return;
            }
            let queues = self.instance.routes().subscribe_queues(topic);
            if queues.is_empty() {
                debug!(%topic, "no readable queue known; keeping current queues");
                continue;
            }
            let mine = match self.config.message_model {
                MessageModel::Broadcasting => queues,
                MessageModel::Clustering => match self.consumer_ids(&queues).await {
                    Some(ids) => allocate_averagely(&self.instance.client_id, &queues, &ids),
                    None => continue,
                },
            };
            self.apply_allocation(topic, mine).await;
        }
    }

    /// The group's members, asked of each group's leader in turn until one answers.
    async fn consumer_ids(&self, queues: &[MessageQueue]) -> Option<Vec<String>> {
        let mut groups: Vec<&str> = queues.iter().map(|q| q.broker_name.as_str()).collect();
        groups.dedup();
        for broker_name in groups {
            match api::consumer_ids(&self.instance, &self.config.consumer_group, broker_name).await
            {
                Ok(ids) if !ids.is_empty() => return Some(ids),
                Ok(_) => debug!(%broker_name, "the broker knows no member of the group yet"),
                Err(e) => debug!(%broker_name, error = %e, "consumer list failed"),
            }
        }
        None
    }

    async fn apply_allocation(self: &Arc<Self>, topic: &str, mine: Vec<MessageQueue>) {
        let mine: BTreeSet<MessageQueue> = mine.into_iter().collect();
        let (removed, added): (Vec<Arc<ProcessQueue>>, Vec<MessageQueue>) = {
            let mut queues = self.queues.lock().unwrap();
            let removed_keys: Vec<MessageQueue> = queues
                .keys()
                .filter(|q| q.topic == topic && !mine.contains(*q))
                .cloned()
                .collect();
            let removed = removed_keys
                .iter()
                .filter_map(|q| queues.remove(q))
                .collect();
            let added = mine
                .iter()
                .filter(|q| !queues.contains_key(*q))
                .cloned()
                .collect();
            (removed, added)
        };
        for pq in removed {
            if self.locks_queues() {
                self.give_away_locked(pq).await;
                continue;
            }
            // Stop first, then commit: nothing moves the offset after this point.
            pq.dropped.store(true, Ordering::SeqCst);
            pq.stop_tasks(Duration::from_secs(1)).await;
            self.offsets
                .persist(std::slice::from_ref(&pq.queue), true)
                .await;
            self.offsets.remove(&pq.queue);
            info!(queue = %pq.queue, "queue rebalanced away");
        }
        let (added, lock_asked_ms) = if self.locks_queues() {
            let asked = now_ms();
            let granted = self.lock(&added).await;
            if granted.len() < added.len() {
                debug!(topic, assigned = added.len(), locked = granted.len(),
                    "orderly: some assigned queues are still locked by another client; asking again soon");
                self.relock_soon.store(true, Ordering::SeqCst);
            }
            let added = added.into_iter().filter(|q| granted.contains(q)).collect();
            (added, asked)
        } else {
            (added, 0)
        };
        for queue in added {
            let pq = Arc::new(ProcessQueue {
                queue: queue.clone(),
                cancel: self.instance.cancel.child_token(),
                dropped: AtomicBool::new(false),
                window: Mutex::new(Window::default()),
                space: Notify::new(),
                tasks: Mutex::new(Vec::new()),
                locked: AtomicBool::new(self.locks_queues()),
                lock_asked_ms: AtomicI64::new(lock_asked_ms),
                last_pull_ms: AtomicI64::new(0),
                last_consume_ms: AtomicI64::new(0),
            });
            let capacity = (self.config.pull_threshold_for_queue
                / self.config.consume_message_batch_max_size.max(1))
            .max(1);
            let (tx, rx) = mpsc::channel(capacity);
            let pull = tokio::spawn(self.clone().pull_loop(pq.clone(), tx));
            let consume = if self.orderly {
                tokio::spawn(self.clone().consume_orderly_loop(pq.clone(), rx))
            } else {
                tokio::spawn(self.clone().consume_loop(pq.clone(), rx))
            };
            pq.tasks.lock().unwrap().extend([pull, consume]);
            self.queues.lock().unwrap().insert(queue.clone(), pq);
            info!(%queue, "queue assigned");
        }
    }

    /// The queues owned now, with their state.
    fn owned(&self) -> Vec<(MessageQueue, Arc<ProcessQueue>)> {
        let queues = self.queues.lock().unwrap();
        queues
            .iter()
            .map(|(q, pq)| (q.clone(), pq.clone()))
            .collect()
    }

    /// Orderly consumers of a clustering group lock their queues on the broker.
    fn locks_queues(&self) -> bool {
        self.orderly && self.config.message_model == MessageModel::Clustering
    }

    /// Asks each broker group for this client's locks on `queues`; the queues granted.
    async fn lock(&self, queues: &[MessageQueue]) -> BTreeSet<MessageQueue> {
        let mut granted = BTreeSet::new();
        for (broker_name, queues) in by_broker(queues) {
            match api::lock_batch(
                &self.instance,
                &self.config.consumer_group,
                &broker_name,
                &queues,
            )
            .await
            {
                Ok(locked) => granted.extend(locked),
                Err(e) => debug!(%broker_name, error = %e, "orderly: lock request failed"),
            }
        }
        granted
    }

    /// Gives this client's locks on `queues` back; a failure leaves them to expire.
    async fn unlock(&self, queues: &[MessageQueue]) {
        for (broker_name, queues) in by_broker(queues) {
            if let Err(e) = api::unlock_batch(
                &self.instance,
                &self.config.consumer_group,
                &broker_name,
                &queues,
            )
            .await
            {
                warn!(%broker_name, error = %e, "orderly: unlock failed; the locks will expire on the broker");
            }
        }
    }

    /// Renews the locks of every owned queue every `lock_interval_ms` (RocketMQ's
    /// `lockAll`): a queue whose renewal is refused stops being consumed.
    async fn lock_loop(self: Arc<Self>) {
        while self
            .sleep_or_stop(self.config.lock_interval_ms.max(10))
            .await
        {
            let owned = self.owned();
            let queues: Vec<MessageQueue> = owned.iter().map(|(q, _)| q.clone()).collect();
            let asked = now_ms();
            let granted = self.lock(&queues).await;
            for (queue, pq) in owned {
                let held = granted.contains(&queue);
                if !held && pq.locked.load(Ordering::SeqCst) {
                    warn!(%queue, "orderly: lock renewal refused; the queue pauses until it is locked again");
                }
                pq.set_lock(held, asked);
            }
        }
    }

    /// Orderly, clustering: gives a queue away. Its running listener call is waited for
    /// (so the next owner never overlaps it), its offset committed, then its lock freed.
    async fn give_away_locked(&self, pq: Arc<ProcessQueue>) {
        let wait = Duration::from_millis(self.config.await_termination_when_shutdown_ms);
        let finished = pq.stop_tasks(wait).await;
        pq.dropped.store(true, Ordering::SeqCst);
        let queue = std::slice::from_ref(&pq.queue);
        self.offsets.persist(queue, true).await;
        self.offsets.remove(&pq.queue);
        if finished {
            self.unlock(queue).await;
            info!(queue = %pq.queue, "queue rebalanced away and unlocked");
        } else {
            warn!(queue = %pq.queue, "orderly: a listener call still runs; the queue's lock is left to expire on the broker");
        }
    }

    /// One queue's orderly consume loop: each batch, in order, until the listener takes
    /// it; in clustering only while the queue's lock is held (module doc).
    async fn consume_orderly_loop(
        self: Arc<Self>,
        pq: Arc<ProcessQueue>,
        mut rx: mpsc::Receiver<Vec<MessageExt>>,
    ) {
        let suspend = Duration::from_millis(self.config.suspend_current_queue_time_ms);
        loop {
            let mut batch = tokio::select! {
                b = rx.recv() => match b {
                    Some(b) => b,
                    None => return,
                },
                _ = pq.cancel.cancelled() => return,
            };
            while !batch.is_empty() {
                if pq.cancel.is_cancelled() {
                    return;
                }
                if self.locks_queues() && !pq.holds_lock(self.config.lock_max_live_ms) {
                    let asked = now_ms();
                    let held = self
                        .lock(std::slice::from_ref(&pq.queue))
                        .await
                        .contains(&pq.queue);
                    pq.set_lock(held, asked);
                    if !held {
                        tokio::select! {
                            _ = tokio::time::sleep(LOCK_RETRY) => {}
                            _ = pq.cancel.cancelled() => return,
                        }
                    }
                    continue;
                }
                if self.call_listener(&pq, batch.clone()).await == ConsumeStatus::ConsumeSuccess {
                    self.complete(&pq, &batch);
                    break;
                }
                batch = self.suspend(&pq, batch).await;
                if batch.is_empty() {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(suspend) => {}
                    _ = pq.cancel.cancelled() => return,
                }
            }
        }
    }

    /// A suspended batch: each message is counted as reconsumed once more; those that
    /// reached `max_reconsume_times` go to the dead-letter topic (clustering) or are
    /// dropped (broadcasting) and complete. Returns the messages to consume again.
    async fn suspend(&self, pq: &ProcessQueue, batch: Vec<MessageExt>) -> Vec<MessageExt> {
        let max = match self.config.max_reconsume_times {
            -1 => i32::MAX,
            n => n,
        };
        let mut again = Vec::with_capacity(batch.len());
        let mut done = Vec::new();
        for mut m in batch {
            if m.reconsume_times < max {
                m.reconsume_times += 1;
                again.push(m);
                continue;
            }
            let gone = match &self.send_back {
                Some(send_back) => send_back.dead_letter(&m).await,
                None => {
                    warn!(topic = %m.topic, msg_id = %m.msg_id(), queue_offset = m.queue_offset,
                        "broadcasting: orderly listener kept suspending a message; dropped");
                    true
                }
            };
            if gone {
                done.push(m);
            } else {
                m.reconsume_times += 1;
                again.push(m);
            }
        }
        self.complete(pq, &done);
        again
    }

    /// The offset a newly owned queue starts at.
    async fn start_offset(&self, queue: &MessageQueue) -> Result<i64> {
        if let Some(offset) = self.offsets.read_committed(queue).await? {
            if offset >= 0 {
                return Ok(offset);
            }
        }
        match self.config.consume_from_where {
            ConsumeFromWhere::LastOffset if queue.topic.starts_with("%RETRY%") => Ok(0),
            ConsumeFromWhere::LastOffset => api::max_offset(&self.instance, queue).await,
            ConsumeFromWhere::FirstOffset => api::min_offset(&self.instance, queue).await,
            ConsumeFromWhere::Timestamp => {
                api::search_offset(&self.instance, queue, self.config.consume_timestamp_ms).await
            }
        }
    }

    async fn pull_loop(self: Arc<Self>, pq: Arc<ProcessQueue>, tx: mpsc::Sender<Vec<MessageExt>>) {
        let queue = pq.queue.clone();
        let (filter, sub_version) = self.subscriptions[&queue.topic].clone();
        let delay_ms = self.config.pull_time_delay_when_exception_ms;
        let mut offset = loop {
            let attempt = tokio::select! {
                r = self.start_offset(&queue) => r,
                _ = pq.cancel.cancelled() => return,
            };
            match attempt {
                Ok(offset) => break offset,
                Err(e) => {
                    warn!(%queue, error = %e, "cannot find the start offset; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
                        _ = pq.cancel.cancelled() => return,
                    }
                }
            }
        };
        pq.window.lock().unwrap().pulled_until = Some(offset);
        if !pq.dropped.load(Ordering::SeqCst) {
            // Remember the start so a restart before the first message begins here too.
            self.offsets.update(&queue, offset, true);
        }
        debug!(%queue, offset, "pulling");
        let batch = self.config.consume_message_batch_max_size.max(1);
        loop {
            if pq.in_flight() >= self.config.pull_threshold_for_queue {
                tokio::select! {
                    _ = pq.space.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(1000)) => {}
                    _ = pq.cancel.cancelled() => return,
                }
                continue;
            }
            let args = PullArgs {
                consumer_group: &self.config.consumer_group,
                queue: &queue,
                offset,
                max_nums: self.config.pull_batch_size,
                filter: &filter,
                sub_version,
                suspend: Duration::from_millis(self.config.broker_suspend_max_time_ms),
                timeout: Duration::from_millis(self.config.consumer_timeout_when_suspend_ms),
            };
            pq.last_pull_ms.store(now_ms(), Ordering::Relaxed);
            let asked = Instant::now();
            let result = tokio::select! {
                r = api::pull(&self.instance, args) => r,
                _ = pq.cancel.cancelled() => return,
            };
            match result {
                Ok(PullResult::Found {
                    mut messages,
                    next_begin_offset,
                    ..
                }) => {
                    let took = asked.elapsed().as_millis() as u64;
                    self.stats
                        .pulled(&queue.topic, messages.len(), took, now_ms());
                    retry::restore_topics(&mut messages, &self.retry_topic);
                    {
                        let mut w = pq.window.lock().unwrap();
                        w.in_flight.extend(messages.iter().map(|m| m.queue_offset));
                        w.bytes += messages.iter().map(|m| m.body.len()).sum::<usize>();
                        w.pulled_until = Some(next_begin_offset);
                    }
                    offset = next_begin_offset;
                    for chunk in messages.chunks(batch) {
                        tokio::select! {
                            sent = tx.send(chunk.to_vec()) => if sent.is_err() { return },
                            _ = pq.cancel.cancelled() => return,
                        }
                    }
                }
                Ok(
                    PullResult::NoNewMessage {
                        next_begin_offset, ..
                    }
                    | PullResult::NoMatchedMessage {
                        next_begin_offset, ..
                    },
                ) => {
                    offset = next_begin_offset;
                    self.advance_idle(&pq, next_begin_offset, false);
                }
                Ok(PullResult::OffsetIllegal {
                    next_begin_offset, ..
                }) => {
                    warn!(%queue, offset, next_begin_offset, "offset illegal; moving to the broker's next offset");
                    offset = next_begin_offset;
                    self.advance_idle(&pq, next_begin_offset, true);
                }
                Err(e) => {
                    debug!(%queue, offset, error = %e, "pull failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
                        _ = pq.cancel.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Moves the pull position without new messages; with nothing in flight the
    /// consumed offset follows it (RocketMQ's `correctTagsOffset`).
    fn advance_idle(&self, pq: &ProcessQueue, next: i64, force: bool) {
        let consumed = {
            let mut w = pq.window.lock().unwrap();
            w.pulled_until = Some(next);
            w.consumed_offset()
        };
        if pq.dropped.load(Ordering::SeqCst) {
            return;
        }
        if let Some(consumed) = consumed {
            self.offsets.update(&pq.queue, consumed, !force);
        }
    }

    async fn consume_loop(
        self: Arc<Self>,
        pq: Arc<ProcessQueue>,
        mut rx: mpsc::Receiver<Vec<MessageExt>>,
    ) {
        loop {
            let batch = tokio::select! {
                b = rx.recv() => match b {
                    Some(b) => b,
                    None => return,
                },
                _ = pq.cancel.cancelled() => return,
            };
            match self.call_listener(&pq, batch.clone()).await {
                ConsumeStatus::ConsumeSuccess => self.complete(&pq, &batch),
                ConsumeStatus::ReconsumeLater => self.spawn_failed(&pq, batch),
            }
        }
    }

    /// Handles a refused batch on its own task, so later batches of the queue go on.
    /// The task is one of the queue's: giving the queue away stops it.
    fn spawn_failed(self: &Arc<Self>, pq: &Arc<ProcessQueue>, batch: Vec<MessageExt>) {
        let task = tokio::spawn(self.clone().handle_failed(pq.clone(), batch));
        let mut tasks = pq.tasks.lock().unwrap();
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Gives the refused messages back; those that cannot be given back are consumed
    /// again after `reconsume_delay_ms`, until the listener takes them or they can be
    /// given back (module doc). A dropped queue's messages are left to its new owner.
    async fn handle_failed(self: Arc<Self>, pq: Arc<ProcessQueue>, mut batch: Vec<MessageExt>) {
        let delay = Duration::from_millis(self.config.reconsume_delay_ms);
        loop {
            if pq.dropped.load(Ordering::SeqCst) {
                return;
            }
            batch = self.give_back(&pq, batch).await;
            if batch.is_empty() {
                return;
            }
            for m in &mut batch {
                m.reconsume_times += 1;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = pq.cancel.cancelled() => return,
            }
            if self.call_listener(&pq, batch.clone()).await == ConsumeStatus::ConsumeSuccess {
                self.complete(&pq, &batch);
                return;
            }
        }
    }

    /// Gives each message back to the broker (clustering) and completes those it took;
    /// returns the others. Broadcasting drops them all (module doc).
    async fn give_back(&self, pq: &ProcessQueue, batch: Vec<MessageExt>) -> Vec<MessageExt> {
        let Some(send_back) = &self.send_back else {
            for m in &batch {
                warn!(topic = %m.topic, msg_id = %m.msg_id(), queue_offset = m.queue_offset,
                    "broadcasting: the listener refused a message; dropped (no retry in broadcasting)");
            }
            self.complete(pq, &batch);
            return Vec::new();
        };
        let mut kept = Vec::new();
        let mut given = Vec::new();
        for m in batch {
            if send_back.give_back(&m).await {
                given.push(m);
            } else {
                kept.push(m);
            }
        }
        self.complete(pq, &given);
        kept
    }

    async fn call_listener(&self, pq: &ProcessQueue, batch: Vec<MessageExt>) -> ConsumeStatus {
        let Ok(_slot) = self.pool.acquire().await else {
            return ConsumeStatus::ReconsumeLater;
        };
        pq.last_consume_ms.store(now_ms(), Ordering::Relaxed);
        let began = Instant::now();
        // Counted under the queue's topic (`%RETRY%<group>` for retries), as Java counts.
        let (topic, n) = (pq.queue.topic.clone(), batch.len());
        let status = self.run_listener(batch).await;
        let took = began.elapsed().as_millis() as u64;
        let ok = status == ConsumeStatus::ConsumeSuccess;
        self.stats.consumed(&topic, n, ok, took, now_ms());
        status
    }

    async fn run_listener(&self, batch: Vec<MessageExt>) -> ConsumeStatus {
        let outcome = match &self.listener {
            Listener::Sync(f) => {
                let f = f.clone();
                tokio::task::spawn_blocking(move || f(&batch)).await
            }
            Listener::Async(f) => tokio::spawn(f(batch)).await,
        };
        outcome.unwrap_or_else(|e| {
            warn!(error = %e, "the listener panicked; the batch will be retried");
            ConsumeStatus::ReconsumeLater
        })
    }

    /// Takes consumed messages out of the window and moves the offset.
    fn complete(&self, pq: &ProcessQueue, batch: &[MessageExt]) {
        let consumed = {
            let mut w = pq.window.lock().unwrap();
            for m in batch {
                if w.in_flight.remove(&m.queue_offset) {
                    w.bytes = w.bytes.saturating_sub(m.body.len());
                }
            }
            w.consumed_offset()
        };
        pq.space.notify_one();
        if pq.dropped.load(Ordering::SeqCst) {
            return;
        }
        if let Some(consumed) = consumed {
            self.offsets.update(&pq.queue, consumed, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the committed offset is the lowest in-flight offset, and the pull
    /// position once nothing is in flight (so a crash re-delivers, never skips).
    #[test]
    fn consumed_offset_is_lowest_unconsumed() {
        let mut w = Window::default();
        assert_eq!(w.consumed_offset(), None);
        w.pulled_until = Some(10);
        assert_eq!(w.consumed_offset(), Some(10));
        w.in_flight.extend([10, 11, 12]);
        w.pulled_until = Some(13);
        assert_eq!(w.consumed_offset(), Some(10));
        w.in_flight.remove(&11);
        w.in_flight.remove(&12);
        assert_eq!(w.consumed_offset(), Some(10));
        w.in_flight.remove(&10);
        assert_eq!(w.consumed_offset(), Some(13));
    }
}
