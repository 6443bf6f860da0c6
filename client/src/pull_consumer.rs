//! [`PullConsumer`]: the caller names queues and offsets (RocketMQ's
//! `DefaultMQPullConsumer`).
//!
//! Pulls go to the group's leader; when it cannot be reached they go to a follower,
//! which serves committed data. Results are filtered by exact tag after the broker's
//! hash filter. Offsets are committed only when the caller says so
//! ([`PullConsumer::update_offset`], oneway to the leader).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::api::{self, PullArgs};
pub use crate::api::{pull_sys_flag, PullResult};
use crate::error::{ClientError, Result};
use crate::instance::{ClientConfig, ClientInstance};
use crate::message::MessageQueue;
use crate::selector::MessageSelector;
use crate::unique_id::now_ms;

/// A pull consumer's settings.
#[derive(Debug, Clone)]
pub struct PullConsumerConfig {
    pub client: ClientConfig,
    pub consumer_group: String,
    /// A pull's deadline beyond the time the broker may hold it (RocketMQ's
    /// `consumerPullTimeoutMillis`).
    pub consumer_pull_timeout_ms: u64,
}

impl PullConsumerConfig {
    pub fn new(namesrv_addr: impl Into<String>, consumer_group: impl Into<String>) -> Self {
        PullConsumerConfig {
            client: ClientConfig::new(namesrv_addr),
            consumer_group: consumer_group.into(),
            consumer_pull_timeout_ms: 10_000,
        }
    }
}

/// A pull consumer. Cheap to clone.
#[derive(Clone)]
pub struct PullConsumer {
    instance: Arc<ClientInstance>,
    config: Arc<PullConsumerConfig>,
    refresher: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// Stops the background work when the last clone is dropped.
    _stop_on_drop: Arc<tokio_util::sync::DropGuard>,
}

impl PullConsumer {
    /// Starts a pull consumer (its route refresher runs on the current runtime).
    pub async fn start(config: PullConsumerConfig) -> Result<PullConsumer> {
        if config.consumer_group.is_empty() {
            return Err(ClientError::InvalidConfig {
                reason: "consumer_group is empty".into(),
            });
        }
        let instance = ClientInstance::new(config.client.clone())?;
        let refresher = instance.start();
        Ok(PullConsumer {
            config: Arc::new(config),
            refresher: Arc::new(Mutex::new(Some(refresher))),
            _stop_on_drop: Arc::new(instance.cancel.clone().drop_guard()),
            instance,
        })
    }

    pub fn client_id(&self) -> &str {
        &self.instance.client_id
    }

    /// The topic's readable queues, sorted by group and id.
    pub async fn fetch_queues(&self, topic: &str) -> Result<Vec<MessageQueue>> {
        self.instance.refresh_topic(topic).await?;
        let queues = self.instance.routes().subscribe_queues(topic);
        if queues.is_empty() {
            return Err(ClientError::NoRoute {
                topic: topic.to_string(),
                reason: "no readable queue".into(),
            });
        }
        Ok(queues)
    }

    /// Pulls up to `max_nums` messages from `offset`. With a non-zero
    /// `suspend_timeout` the broker holds the request until a message arrives or the
    /// time passes (long polling).
    pub async fn pull(
        &self,
        queue: &MessageQueue,
        offset: i64,
        max_nums: i32,
        tag_expression: &str,
        suspend_timeout: Duration,
    ) -> Result<PullResult> {
        let selector = MessageSelector::by_tag(tag_expression);
        self.pull_selected(queue, offset, max_nums, &selector, suspend_timeout)
            .await
    }

    /// [`Self::pull`] with any selector: a SQL92 one ([`MessageSelector::by_sql`]) is
    /// evaluated by the broker, which must have `enablePropertyFilter=true`.
    pub async fn pull_selected(
        &self,
        queue: &MessageQueue,
        offset: i64,
        max_nums: i32,
        filter: &MessageSelector,
        suspend_timeout: Duration,
    ) -> Result<PullResult> {
        self.instance.ensure_route(&queue.topic).await?;
        api::pull(
            &self.instance,
            PullArgs {
                consumer_group: &self.config.consumer_group,
                queue,
                offset,
                max_nums,
                filter,
                sub_version: now_ms(),
                suspend: suspend_timeout,
                timeout: suspend_timeout
                    + Duration::from_millis(self.config.consumer_pull_timeout_ms),
            },
        )
        .await
    }

    /// The group's committed offset, `None` if it has none.
    pub async fn query_offset(&self, queue: &MessageQueue) -> Result<Option<i64>> {
        self.instance.ensure_route(&queue.topic).await?;
        api::query_consumer_offset(&self.instance, &self.config.consumer_group, queue).await
    }

    /// Commits the group's offset (oneway to the leader: `Ok` means sent, not stored).
    pub async fn update_offset(&self, queue: &MessageQueue, offset: i64) -> Result<()> {
        self.instance.ensure_route(&queue.topic).await?;
        api::update_consumer_offset_oneway(
            &self.instance,
            &self.config.consumer_group,
            queue,
            offset,
        )
        .await
    }

    /// The offset after the queue's last message.
    pub async fn max_offset(&self, queue: &MessageQueue) -> Result<i64> {
        self.instance.ensure_route(&queue.topic).await?;
        api::max_offset(&self.instance, queue).await
    }

    /// The queue's first stored offset.
    pub async fn min_offset(&self, queue: &MessageQueue) -> Result<i64> {
        self.instance.ensure_route(&queue.topic).await?;
        api::min_offset(&self.instance, queue).await
    }

    /// The first offset stored at or after `timestamp_ms`.
    pub async fn search_offset(&self, queue: &MessageQueue, timestamp_ms: i64) -> Result<i64> {
        self.instance.ensure_route(&queue.topic).await?;
        api::search_offset(&self.instance, queue, timestamp_ms).await
    }

    /// Stops the route refresher and closes connections.
    pub async fn shutdown(&self) {
        self.instance.cancel.cancel();
        let task = self.refresher.lock().unwrap().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.instance.close_connections();
    }
}
