//! [`Producer`]: sync (awaited), async (spawned, [`SendHandle`]), callback, oneway,
//! batch and ordered sends.
//!
//! # What a send promises
//!
//! - Every message gets a UNIQ_KEY (client-made, 32 hex digits, see
//!   [`crate::unique_id`]) before the first attempt; it is [`SendResult::msg_id`] and
//!   stays the same across retries, so a consumer can drop duplicates.
//! - `Ok(SendResult)` means the broker group's leader answered SEND_OK (or one of the
//!   stored-but statuses): with rocketraft, the message is committed in the group's
//!   Raft log.
//! - [`ClientError::OutcomeUnknown`]: an attempt was written and no answer came. The
//!   message may be stored. It is not retried unless `retry_on_outcome_unknown` is set,
//!   and if any attempt's outcome was unknown the send reports unknown, never a plain
//!   failure.
//! - Definite failures ([`ClientError::Broker`], [`ClientError::NoLeader`]) are retried
//!   up to `retry_times_when_send_failed` times, each time on another group when one is
//!   available, all within `send_msg_timeout_ms`. Follower redirects within a group are
//!   followed by [`crate::instance`] and do not count as attempts.
//! - Ordered sends ([`Producer::send_ordered`]) pick queue `hash(key) % n` over the
//!   topic's sorted writable queues and never switch queues on retry; they only follow
//!   the group's leader.
//! - At most `max_async_sends_in_flight` async and callback sends run at once; further
//!   calls wait for a slot.
//!
//! # Delays and retry topics
//!
//! - A message may carry one delay: a delay level ([`Message::with_delay_time_level`],
//!   RocketMQ 4.x) or a RocketMQ 5 timer ([`Message::with_deliver_time_ms`],
//!   [`Message::with_delay_time_ms`], [`Message::with_delay_time_sec`]). Negative or
//!   unparsable values, or two delays on one message, are refused before sending
//!   ([`ClientError::InvalidMessage`]); so are delays in a batch.
//! - A message to a retry topic (`%RETRY%<group>`) that carries RECONSUME_TIME and
//!   MAX_RECONSUME_TIMES has them moved from its properties into the send header's
//!   `reconsumeTimes` and `maxReconsumeTimes`, as RocketMQ's producer does: the broker
//!   reads them there to decide whether the message goes to the dead-letter topic.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use remoting::header::{
    SendMessageRequestHeader, SendMessageRequestHeaderV2, SendMessageResponseHeader,
};
use remoting::message::{encode_properties, property, BatchMessage};
use remoting::route::{HeartbeatData, ProducerData};
use remoting::{CommandHeader, RemotingCommand, RequestCode, ResponseCode};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::error::{ClientError, Result};
use crate::fault::{FaultConfig, LatencyFaultTolerance};
use crate::filter::java_string_hash;
use crate::instance::{Access, ClientConfig, ClientInstance};
use crate::message::{Message, MessageQueue};
use crate::unique_id::{new_uniq_key, now_ms};

/// A producer's settings, with RocketMQ's names (`DefaultMQProducer`).
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub client: ClientConfig,
    pub producer_group: String,
    /// The topic whose config a broker copies when auto-creating a topic.
    pub create_topic_key: String,
    pub default_topic_queue_nums: i32,
    /// Deadline of one send, retries included.
    pub send_msg_timeout_ms: u64,
    /// Extra attempts after a definite failure (RocketMQ's default: 2).
    pub retry_times_when_send_failed: u32,
    /// Whether an attempt with an unknown outcome may be retried (the message may then
    /// be stored twice; its UNIQ_KEY is the same). Off by default.
    pub retry_on_outcome_unknown: bool,
    /// The largest body (or batch body) sent (RocketMQ's `maxMessageSize`).
    pub max_message_bytes: usize,
    /// Send with SEND_MESSAGE_V2 (310) and its short header instead of SEND_MESSAGE
    /// (10).
    pub use_send_message_v2: bool,
    /// Fault avoidance between broker groups.
    pub fault: FaultConfig,
    /// Async and callback sends running at once.
    pub max_async_sends_in_flight: usize,
    /// RocketMQ's `compressMsgBodyOverHowmuch`: a single message's body of at least this
    /// many bytes is sent zlib-compressed (COMPRESSED sysFlag); `usize::MAX` never
    /// compresses. Batches are never compressed, as in RocketMQ.
    pub compress_msg_body_over_howmuch: usize,
    /// zlib level of compressed bodies (RocketMQ's `rocketmq.message.compressLevel`, 5).
    pub compress_level: u32,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            client: ClientConfig::default(),
            producer_group: "DEFAULT_PRODUCER".into(),
            create_topic_key: "TBW102".into(),
            default_topic_queue_nums: 4,
            send_msg_timeout_ms: 3_000,
            retry_times_when_send_failed: 2,
            retry_on_outcome_unknown: false,
            max_message_bytes: 4 * 1024 * 1024,
            use_send_message_v2: false,
            fault: FaultConfig::default(),
            max_async_sends_in_flight: 1024,
            compress_msg_body_over_howmuch: crate::compression::DEFAULT_COMPRESS_OVER_BYTES,
            compress_level: crate::compression::DEFAULT_COMPRESS_LEVEL,
        }
    }
}

impl ProducerConfig {
    pub fn new(namesrv_addr: impl Into<String>, producer_group: impl Into<String>) -> Self {
        ProducerConfig {
            client: ClientConfig::new(namesrv_addr),
            producer_group: producer_group.into(),
            ..Default::default()
        }
    }
}

/// RocketMQ's `SendStatus`: every one of them means the message is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    SendOk,
    FlushDiskTimeout,
    FlushSlaveTimeout,
    SlaveNotAvailable,
}

impl SendStatus {
    fn from_code(code: i32) -> Option<SendStatus> {
        match ResponseCode::from_i32(code)? {
            ResponseCode::SUCCESS => Some(SendStatus::SendOk),
            ResponseCode::FLUSH_DISK_TIMEOUT => Some(SendStatus::FlushDiskTimeout),
            ResponseCode::FLUSH_SLAVE_TIMEOUT => Some(SendStatus::FlushSlaveTimeout),
            ResponseCode::SLAVE_NOT_AVAILABLE => Some(SendStatus::SlaveNotAvailable),
            _ => None,
        }
    }
}

/// A stored message's ids and place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    pub status: SendStatus,
    /// The UNIQ_KEY (comma-separated for a batch): the id users see.
    pub msg_id: String,
    /// The broker's id (store host and commit log offset; comma-separated for a batch).
    pub offset_msg_id: String,
    pub queue: MessageQueue,
    /// The queue offset of the (first) message.
    pub queue_offset: i64,
    /// The address that answered.
    pub broker_addr: String,
}

/// True for a refusal that means "this group is electing a leader": every member
/// answered not-leader with no leader to name, or none could be reached.
fn is_leaderless(error: &ClientError) -> bool {
    match error {
        ClientError::NoLeader { .. } => true,
        // An ordered send's group with no member at all: it is restarting.
        ClientError::UnknownBroker { .. } => true,
        ClientError::Broker { code, .. } => *code == ResponseCode::SERVICE_NOT_AVAILABLE as i32,
        _ => false,
    }
}

/// Response codes after which the next attempt goes to another group (RocketMQ's
/// `retryResponseCodes`).
pub const RETRY_RESPONSE_CODES: [ResponseCode; 5] = [
    ResponseCode::SYSTEM_ERROR,
    ResponseCode::SYSTEM_BUSY,
    ResponseCode::SERVICE_NOT_AVAILABLE,
    ResponseCode::NO_PERMISSION,
    ResponseCode::TOPIC_NOT_EXIST,
];

fn is_retry_code(code: i32) -> bool {
    RETRY_RESPONSE_CODES.iter().any(|c| *c as i32 == code)
}

/// How the queue is chosen.
#[derive(Debug, Clone)]
enum Choice {
    RoundRobin,
    Ordered(String),
    Queue(MessageQueue),
}

/// What is sent: one message or a batch.
struct Outgoing {
    topic: String,
    code: RequestCode,
    flag: i32,
    properties: String,
    body: bytes::Bytes,
    batch: bool,
    msg_id: String,
    /// The send header's `reconsumeTimes` (0 but for a retry-topic re-send).
    reconsume_times: i32,
    max_reconsume_times: Option<i32>,
    /// The send header's `sysFlag`: COMPRESSED and compression-type bits when the body is
    /// compressed; prepared for a transactional half (`TRAN_MSG=true`).
    sys_flag: i32,
}

struct Inner {
    instance: Arc<ClientInstance>,
    config: ProducerConfig,
    fault: LatencyFaultTolerance,
    counters: Mutex<HashMap<String, usize>>,
    async_slots: Arc<Semaphore>,
    refresher: Mutex<Option<JoinHandle<()>>>,
    heartbeats: Mutex<Option<JoinHandle<()>>>,
}

/// A producer. Cheap to clone; all clones share connections and routes.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl Producer {
    /// Starts a producer (its route refresher runs on the current Tokio runtime).
    pub async fn start(config: ProducerConfig) -> Result<Producer> {
        if config.producer_group.is_empty() {
            return Err(ClientError::InvalidConfig {
                reason: "producer_group is empty".into(),
            });
        }
        let instance = ClientInstance::new(config.client.clone())?;
        let refresher = instance.start();
        let producer = Producer::on_instance(instance, config);
        *producer.inner.refresher.lock().unwrap() = Some(refresher);
        let heartbeats = tokio::spawn(heartbeat_loop(Arc::downgrade(&producer.inner)));
        *producer.inner.heartbeats.lock().unwrap() = Some(heartbeats);
        Ok(producer)
    }

    /// A producer on another client's instance (its connections, routes and route
    /// refresher), as a consumer's internal producer. Dropping the last clone cancels the
    /// instance: it must not outlive its owner's use of it.
    pub(crate) fn on_instance(instance: Arc<ClientInstance>, config: ProducerConfig) -> Producer {
        Producer {
            inner: Arc::new(Inner {
                fault: LatencyFaultTolerance::new(config.fault.clone()),
                async_slots: Arc::new(Semaphore::new(config.max_async_sends_in_flight.max(1))),
                instance,
                config,
                counters: Mutex::new(HashMap::new()),
                refresher: Mutex::new(None),
                heartbeats: Mutex::new(None),
            }),
        }
    }

    /// This producer's client id (`ip@instance`).
    pub fn client_id(&self) -> &str {
        &self.inner.instance.client_id
    }

    /// The deadline of one send (`send_msg_timeout_ms`).
    pub fn send_msg_timeout_ms(&self) -> u64 {
        self.inner.config.send_msg_timeout_ms
    }

    /// The topic's writable queues, sorted by group and id.
    pub async fn fetch_publish_queues(&self, topic: &str) -> Result<Vec<MessageQueue>> {
        self.inner.ensure_publish_route(topic).await?;
        Ok(self.inner.instance.routes().publish_queues(topic).to_vec())
    }

    /// Sends one message and waits for the broker's answer.
    pub async fn send(&self, msg: Message) -> Result<SendResult> {
        self.inner.send_one(msg, Choice::RoundRobin).await
    }

    /// Sends to the queue `hash(sharding_key) % n`: messages with the same key keep
    /// their order. Retries stay on that queue.
    pub async fn send_ordered(&self, msg: Message, sharding_key: &str) -> Result<SendResult> {
        self.inner
            .send_one(msg, Choice::Ordered(sharding_key.to_string()))
            .await
    }

    /// Sends to the given queue; retries stay on it.
    pub async fn send_to_queue(&self, msg: Message, queue: &MessageQueue) -> Result<SendResult> {
        self.inner.send_one(msg, Choice::Queue(queue.clone())).await
    }

    /// Sends messages of one topic as one SEND_BATCH_MESSAGE; they are stored together,
    /// in order, in one queue.
    pub async fn send_batch(&self, msgs: Vec<Message>) -> Result<SendResult> {
        let outgoing = self.inner.prepare_batch(msgs)?;
        self.inner.send_outgoing(outgoing, Choice::RoundRobin).await
    }

    /// Starts a send in the background and returns a handle that resolves to its
    /// result. Waits only for a free slot (`max_async_sends_in_flight`).
    pub async fn send_async(&self, msg: Message) -> Result<SendHandle> {
        let slot = self.async_slot().await?;
        let inner = self.inner.clone();
        Ok(SendHandle(tokio::spawn(async move {
            let result = inner.send_one(msg, Choice::RoundRobin).await;
            drop(slot);
            result
        })))
    }

    /// Starts a send in the background and calls `callback` with its result.
    pub async fn send_with_callback<F>(&self, msg: Message, callback: F) -> Result<()>
    where
        F: FnOnce(Result<SendResult>) + Send + 'static,
    {
        let slot = self.async_slot().await?;
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let result = inner.send_one(msg, Choice::RoundRobin).await;
            drop(slot);
            callback(result);
        });
        Ok(())
    }

    /// Sends without waiting for an answer. `Ok` means the request was queued on a
    /// connection to a group's leader; the message may still be lost. Groups that
    /// cannot be reached (nothing was sent) are skipped, within the retry count.
    pub async fn send_oneway(&self, msg: Message) -> Result<()> {
        let outgoing = self.inner.prepare_one(msg)?;
        self.inner.send_oneway(outgoing).await
    }

    async fn async_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        self.inner
            .async_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ClientError::NotRunning { what: "producer" })
    }

    /// Waits for async sends (up to `send_msg_timeout_ms`), unregisters from the
    /// brokers and closes connections.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        let all = inner.config.max_async_sends_in_flight.max(1) as u32;
        let wait = Duration::from_millis(inner.config.send_msg_timeout_ms);
        if let Ok(Ok(permits)) =
            tokio::time::timeout(wait, inner.async_slots.acquire_many(all)).await
        {
            permits.forget();
        }
        inner.async_slots.close();
        if let Some(task) = inner.heartbeats.lock().unwrap().take() {
            task.abort();
        }
        inner
            .instance
            .unregister(Some(&inner.config.producer_group), None)
            .await;
        inner.instance.cancel.cancel();
        let task = inner.refresher.lock().unwrap().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        inner.instance.close_connections();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.instance.cancel.cancel();
    }
}

/// A started producer heartbeats its group to every broker it knows, every
/// `heartbeat_broker_interval_ms` and as soon as it learns a group's members, as Java's
/// producers do: the brokers then list it (`producerConnection`, GET_ALL_PRODUCER_INFO).
/// Ends with the producer.
async fn heartbeat_loop(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(this) = inner.upgrade() else { return };
        let instance = Arc::clone(&this.instance);
        let data = HeartbeatData {
            client_id: instance.client_id.clone(),
            producer_data_set: vec![ProducerData {
                group_name: this.config.producer_group.clone(),
            }],
            consumer_data_set: Vec::new(),
        };
        drop(this);
        let ok = instance.heartbeat_all(&data).await;
        debug!(brokers = ok, "producer heartbeat sent");
        let interval = Duration::from_millis(instance.config.heartbeat_broker_interval_ms.max(100));
        if !instance.heartbeat_wait(interval).await {
            return;
        }
    }
}

/// The result of [`Producer::send_async`].
pub struct SendHandle(JoinHandle<Result<SendResult>>);

impl Future for SendHandle {
    type Output = Result<SendResult>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| match joined {
            Ok(result) => result,
            // The task died (runtime shut down): it may have sent the message.
            Err(e) => Err(ClientError::OutcomeUnknown {
                broker_name: String::new(),
                addr: String::new(),
                reason: format!("the send task ended: {e}"),
            }),
        })
    }
}

impl Inner {
    async fn ensure_publish_route(&self, topic: &str) -> Result<()> {
        self.instance
            .ensure_publish_route(
                topic,
                &self.config.create_topic_key,
                self.config.default_topic_queue_nums,
            )
            .await
    }

    fn prepare_one(&self, mut msg: Message) -> Result<Outgoing> {
        msg.validate(self.config.max_message_bytes)?;
        let (reconsume_times, max_reconsume_times) = take_reconsume_times(&mut msg)?;
        let (msg_id, properties) = stamped_properties(&msg);
        let prepared = msg
            .property(property::TRANSACTION_PREPARED)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let (body, compressed) = crate::compression::maybe_compress(
            msg.body,
            self.config.compress_msg_body_over_howmuch,
            self.config.compress_level,
        );
        let transaction = match prepared {
            true => remoting::message::sys_flag::TRANSACTION_PREPARED,
            false => 0,
        };
        Ok(Outgoing {
            sys_flag: compressed | transaction,
            reconsume_times,
            max_reconsume_times,
            code: if self.config.use_send_message_v2 {
                RequestCode::SEND_MESSAGE_V2
            } else {
                RequestCode::SEND_MESSAGE
            },
            flag: msg.flag,
            properties,
            body,
            topic: msg.topic,
            batch: false,
            msg_id,
        })
    }

    fn prepare_batch(&self, msgs: Vec<Message>) -> Result<Outgoing> {
        let Some(first) = msgs.first() else {
            return Err(ClientError::InvalidConfig {
                reason: "a batch needs at least one message".into(),
            });
        };
        let topic = first.topic.clone();
        let mut body = BytesMut::new();
        let mut ids = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let bad = |reason: &str| ClientError::InvalidMessage {
                topic: msg.topic.clone(),
                reason: reason.to_string(),
            };
            if msg.topic != topic {
                return Err(bad("every message of a batch must have the same topic"));
            }
            msg.validate(self.config.max_message_bytes)?;
            if matches!(msg.schedule(), Ok(Some(_))) {
                return Err(bad("a batch cannot hold delayed messages"));
            }
            let (id, properties) = stamped_properties(&msg);
            ids.push(id);
            BatchMessage {
                flag: msg.flag,
                body: &msg.body,
                properties: &properties,
            }
            .encode(&mut body);
        }
        if body.len() > self.config.max_message_bytes {
            return Err(ClientError::InvalidMessage {
                topic,
                reason: format!(
                    "the batch body is {} bytes, over the maximum of {}",
                    body.len(),
                    self.config.max_message_bytes
                ),
            });
        }
        Ok(Outgoing {
            topic,
            code: RequestCode::SEND_BATCH_MESSAGE,
            flag: 0,
            properties: encode_properties([
                (property::WAIT_STORE_MSG_OK, "true"),
                (property::UNIQ_KEY, &new_uniq_key()),
            ]),
            body: body.freeze(),
            batch: true,
            msg_id: ids.join(","),
            reconsume_times: 0,
            sys_flag: 0,
            max_reconsume_times: None,
        })
    }

    async fn send_one(&self, msg: Message, choice: Choice) -> Result<SendResult> {
        let outgoing = self.prepare_one(msg)?;
        self.send_outgoing(outgoing, choice).await
    }

    fn request(&self, out: &Outgoing, queue_id: i32) -> RemotingCommand {
        let header = SendMessageRequestHeader {
            producer_group: self.config.producer_group.clone(),
            topic: out.topic.clone(),
            default_topic: self.config.create_topic_key.clone(),
            default_topic_queue_nums: self.config.default_topic_queue_nums,
            queue_id,
            sys_flag: out.sys_flag,
            born_timestamp: now_ms(),
            flag: out.flag,
            properties: Some(out.properties.clone()),
            reconsume_times: Some(out.reconsume_times),
            unit_mode: Some(false),
            batch: Some(out.batch),
            max_reconsume_times: out.max_reconsume_times,
        };
        let mut request = match out.code {
            RequestCode::SEND_MESSAGE_V2 => RemotingCommand::request(
                RequestCode::SEND_MESSAGE_V2,
                &SendMessageRequestHeaderV2::from(header),
            ),
            RequestCode::SEND_BATCH_MESSAGE => {
                // RocketMQ's broker reads a batch header as V2, the remoting docs here
                // as V1: carry both (their field names do not overlap).
                let mut r = RemotingCommand::request(RequestCode::SEND_BATCH_MESSAGE, &header);
                SendMessageRequestHeaderV2::from(header).write(&mut r.ext_fields);
                r
            }
            code => RemotingCommand::request(code, &header),
        };
        request.body = out.body.clone();
        // RocketMQ's binary header encoding: no JSON to write here or to parse at the
        // broker (which answers in kind); RocketMQ brokers accept it too.
        request.serialized_as(remoting::SerializeType::RocketMq)
    }

    fn counter(&self, topic: &str) -> usize {
        let mut counters = self.counters.lock().unwrap();
        if let Some(counter) = counters.get_mut(topic) {
            let next = *counter;
            *counter = next.wrapping_add(1);
            return next;
        }
        let start = (crate::unique_id::random_u64() % 1024) as usize;
        counters.insert(topic.to_string(), start + 1);
        start
    }

    fn choose(
        &self,
        topic: &str,
        choice: &Choice,
        fixed: &mut Option<MessageQueue>,
        last_failed: Option<&str>,
        now: std::time::Instant,
    ) -> Result<MessageQueue> {
        if let Some(q) = fixed {
            return Ok(q.clone());
        }
        let queues = self.instance.routes().publish_queues(topic);
        let no_route = |reason: &str| ClientError::NoRoute {
            topic: topic.to_string(),
            reason: reason.to_string(),
        };
        match choice {
            Choice::RoundRobin => self
                .fault
                .select(&queues, self.counter(topic), last_failed, now)
                .cloned()
                .ok_or_else(|| no_route("no writable queue")),
            Choice::Ordered(key) => {
                let all = self.instance.routes().ordered_queues(topic);
                let q = select_by_hash(&all, key)
                    .cloned()
                    .ok_or_else(|| no_route("no writable queue"))?;
                *fixed = Some(q.clone());
                Ok(q)
            }
            Choice::Queue(q) => {
                *fixed = Some(q.clone());
                Ok(q.clone())
            }
        }
    }

    async fn send_outgoing(&self, out: Outgoing, choice: Choice) -> Result<SendResult> {
        let timeout = Duration::from_millis(self.config.send_msg_timeout_ms);
        let deadline = Instant::now() + timeout;
        self.check_running()?;
        self.ensure_publish_route(&out.topic).await?;
        let attempts = 1 + self.config.retry_times_when_send_failed;
        let sticky = !matches!(choice, Choice::RoundRobin);
        let mut fixed: Option<MessageQueue> = None;
        let mut last_failed: Option<String> = None;
        let mut last_error: Option<ClientError> = None;
        let mut unknown: Option<ClientError> = None;
        // Attempts refused because a group has no leader (an election is under way) do
        // not count: they are retried with a short backoff until the send deadline, so a
        // send outlives a failover of about a second instead of failing during it. A wait
        // ends early once any request of this client learns the new leader.
        let mut attempt = 0;
        let mut leaderless_waits = 0u32;
        while attempt < attempts {
            let begin = Instant::now();
            let remaining = deadline.saturating_duration_since(begin);
            if remaining.is_zero() {
                break;
            }
            let queue = self.choose(
                &out.topic,
                &choice,
                &mut fixed,
                last_failed.as_deref(),
                begin.into_std(),
            )?;
            let result = self
                .instance
                .request_group(
                    &queue.broker_name,
                    self.request(&out, queue.queue_id),
                    remaining,
                    Access::Write,
                )
                .await;
            let latency_ms = begin.elapsed().as_millis() as u64;
            let now = Instant::now().into_std();
            // rocketraft answers FLUSH_SLAVE_TIMEOUT with no msgId when the Raft commit
            // timed out after the entry entered the log: it may or may not be stored.
            let result = result.and_then(|(addr, response)| {
                if response.code == ResponseCode::FLUSH_SLAVE_TIMEOUT as i32
                    && response.ext("msgId").is_none()
                {
                    Err(ClientError::OutcomeUnknown {
                        broker_name: queue.broker_name.clone(),
                        addr,
                        reason: response.remark.unwrap_or_default(),
                    })
                } else {
                    Ok((addr, response))
                }
            });
            let error = match result {
                Ok((addr, response)) => match SendStatus::from_code(response.code) {
                    Some(status) => {
                        self.fault
                            .update(&queue.broker_name, latency_ms, false, now);
                        return send_result(&out, queue, addr, status, &response);
                    }
                    None => {
                        let retry = is_retry_code(response.code);
                        let e = ClientError::Broker {
                            broker_name: queue.broker_name.clone(),
                            addr,
                            code: response.code,
                            remark: response.remark.unwrap_or_default(),
                        };
                        if !retry {
                            return Err(unknown.unwrap_or(e));
                        }
                        e
                    }
                },
                Err(e @ ClientError::OutcomeUnknown { .. }) => {
                    self.fault.update(&queue.broker_name, latency_ms, true, now);
                    warn!(topic = %out.topic, msg_id = %out.msg_id, error = %e, "send outcome unknown");
                    if !self.config.retry_on_outcome_unknown {
                        return Err(e);
                    }
                    unknown = Some(e);
                    attempt += 1;
                    continue;
                }
                Err(e @ (ClientError::NoLeader { .. } | ClientError::UnknownBroker { .. })) => e,
                Err(e) => return Err(unknown.unwrap_or(e)),
            };
            self.fault.update(&queue.broker_name, latency_ms, true, now);
            last_failed = Some(queue.broker_name.clone());
            if is_leaderless(&error) {
                leaderless_waits += 1;
                let backoff = Duration::from_millis(50 * u64::from(leaderless_waits.min(4)));
                let pause = backoff.min(deadline.saturating_duration_since(Instant::now()) / 2);
                debug!(topic = %out.topic, broker_name = %queue.broker_name, error = %error, "group has no leader; waiting");
                last_error = Some(error);
                self.instance.leader_wait(pause).await;
                continue;
            }
            attempt += 1;
            debug!(topic = %out.topic, attempt, broker_name = %queue.broker_name, error = %error, "send failed; retrying");
            last_error = Some(error);
            if sticky && attempt + 1 < attempts {
                // Same queue next time: give the group a moment to elect a leader.
                let pause = Duration::from_millis(200)
                    .min(deadline.saturating_duration_since(Instant::now()) / 2);
                tokio::time::sleep(pause).await;
            }
        }
        Err(unknown
            .or(last_error)
            .unwrap_or_else(|| ClientError::NoRoute {
                topic: out.topic.clone(),
                reason: format!(
                    "send_msg_timeout_ms {} passed",
                    self.config.send_msg_timeout_ms
                ),
            }))
    }

    fn check_running(&self) -> Result<()> {
        if self.instance.cancel.is_cancelled() {
            return Err(ClientError::NotRunning { what: "producer" });
        }
        Ok(())
    }

    async fn send_oneway(&self, out: Outgoing) -> Result<()> {
        self.check_running()?;
        self.ensure_publish_route(&out.topic).await?;
        let attempts = 1 + self.config.retry_times_when_send_failed;
        let mut last_failed: Option<String> = None;
        let mut last_error = None;
        let mut fixed = None;
        for _ in 0..attempts {
            let queue = self.choose(
                &out.topic,
                &Choice::RoundRobin,
                &mut fixed,
                last_failed.as_deref(),
                Instant::now().into_std(),
            )?;
            match self
                .instance
                .oneway_leader(&queue.broker_name, self.request(&out, queue.queue_id))
                .await
            {
                Ok(()) => return Ok(()),
                Err(e @ ClientError::NoLeader { .. }) => {
                    self.fault
                        .update(&queue.broker_name, 0, true, Instant::now().into_std());
                    last_failed = Some(queue.broker_name.clone());
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }
}

/// The message's UNIQ_KEY and its properties encoded for the wire, with a new UNIQ_KEY
/// (unless the user set one) and WAIT=true (unless set) added. They go straight into the
/// encoded string, not into the message's map first: two map entries fewer per send.
fn stamped_properties(msg: &Message) -> (String, String) {
    let user_key = msg.uniq_key();
    let msg_id = user_key.map_or_else(new_uniq_key, str::to_string);
    let uniq = user_key
        .is_none()
        .then_some((property::UNIQ_KEY, msg_id.as_str()));
    let wait = msg
        .property(property::WAIT_STORE_MSG_OK)
        .is_none()
        .then_some((property::WAIT_STORE_MSG_OK, "true"));
    let properties = encode_properties(
        msg.properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(uniq)
            .chain(wait),
    );
    (msg_id, properties)
}

/// For a message to a retry topic, takes RECONSUME_TIME and MAX_RECONSUME_TIMES out of its
/// properties: they go in the send header (RocketMQ's `sendKernelImpl`). Other topics
/// send them as ordinary properties, with `reconsumeTimes` 0.
fn take_reconsume_times(msg: &mut Message) -> Result<(i32, Option<i32>)> {
    if !msg.topic.starts_with(crate::retry::RETRY_TOPIC_PREFIX) {
        return Ok((0, None));
    }
    let topic = msg.topic.clone();
    let mut take = |name: &str| -> Result<Option<i32>> {
        msg.properties
            .remove(name)
            .map(|v| {
                v.parse().map_err(|_| ClientError::InvalidMessage {
                    topic: topic.clone(),
                    reason: format!("{name} is `{v}`, not a whole number"),
                })
            })
            .transpose()
    };
    let reconsume_times = take(property::RECONSUME_TIME)?.unwrap_or(0);
    let max_reconsume_times = take(property::MAX_RECONSUME_TIMES)?;
    Ok((reconsume_times, max_reconsume_times))
}

/// RocketMQ's `SelectMessageQueueByHash`: `abs(key.hashCode() % n)`.
pub fn select_by_hash<'a>(queues: &'a [MessageQueue], key: &str) -> Option<&'a MessageQueue> {
    if queues.is_empty() {
        return None;
    }
    let index = (java_string_hash(key) % queues.len() as i32).unsigned_abs() as usize;
    queues.get(index)
}

fn send_result(
    out: &Outgoing,
    queue: MessageQueue,
    addr: String,
    status: SendStatus,
    response: &RemotingCommand,
) -> Result<SendResult> {
    let header: SendMessageResponseHeader =
        response
            .header()
            .map_err(|e: remoting::Error| ClientError::BadResponse {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
    Ok(SendResult {
        status,
        msg_id: out.msg_id.clone(),
        offset_msg_id: header.msg_id,
        queue: MessageQueue {
            // The message's topic, also when the caller chose a queue of another name.
            topic: if queue.topic == out.topic {
                queue.topic
            } else {
                out.topic.clone()
            },
            broker_name: queue.broker_name,
            queue_id: header.queue_id,
        },
        queue_offset: header.queue_offset,
        broker_addr: addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use remoting::message::property_value;

    /// Proves ordered sends pick `abs(hashCode % n)` as RocketMQ's
    /// SelectMessageQueueByHash, including keys with negative hashes.
    #[test]
    fn ordered_queue_is_java_hash_mod_count() {
        let queues: Vec<MessageQueue> = (0..8)
            .map(|i| MessageQueue::new("T", if i < 4 { "a" } else { "b" }, i % 4))
            .collect();
        // "order-1".hashCode() = -1207111310 (negative): Java's % 8 is -6, abs 6.
        assert_eq!(java_string_hash("order-1"), -1_207_111_310);
        assert_eq!(select_by_hash(&queues, "order-1"), Some(&queues[6]));
        // "TagA".hashCode() = 2598919 -> 2598919 % 8 = 7.
        assert_eq!(select_by_hash(&queues, "TagA"), Some(&queues[7]));
        // "polygenelubricants" hashes to i32::MIN: % 8 == 0.
        assert_eq!(
            select_by_hash(&queues, "polygenelubricants"),
            Some(&queues[0])
        );
        // Over three queues: -1207111310 % 3 is -2 in Java, abs 2.
        let three = &queues[..3];
        assert_eq!(select_by_hash(three, "order-1"), Some(&three[2]));
        assert!(select_by_hash(&[], "k").is_none());
        // The same key always lands on the same queue.
        for k in ["a", "b", "order-77"] {
            assert_eq!(select_by_hash(&queues, k), select_by_hash(&queues, k));
        }
    }

    /// Proves a send gets a 32-digit UNIQ_KEY and WAIT=true, and that a user's own
    /// UNIQ_KEY and WAIT are kept.
    #[test]
    fn stamp_adds_uniq_key_and_wait() {
        let m = Message::new("T", "x");
        let (id, properties) = stamped_properties(&m);
        assert_eq!(
            property_value(&properties, property::UNIQ_KEY),
            Some(id.as_str())
        );
        assert_eq!(id.len(), 32);
        assert_eq!(property_value(&properties, "WAIT"), Some("true"));
        let mine = Message::new("T", "x")
            .with_property(property::UNIQ_KEY, "MINE")
            .with_wait_store_msg_ok(false);
        let (id, properties) = stamped_properties(&mine);
        assert_eq!(id, "MINE");
        assert_eq!(
            property_value(&properties, property::UNIQ_KEY),
            Some("MINE")
        );
        assert_eq!(property_value(&properties, "WAIT"), Some("false"));
    }
}
