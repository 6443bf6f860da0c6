//! The Rust client for rocketraft (and RocketMQ 4.x brokers and name servers).
//!
//! # Layout
//!
//! - [`producer`]: [`Producer`] — sync, async, callback, oneway, batch and ordered
//!   sends, with retries across broker groups and fault avoidance; delayed sends (a
//!   RocketMQ 4.x delay level, or a RocketMQ 5 delivery time or delay).
//! - [`pull_consumer`]: [`PullConsumer`] — pulls from explicit queues and offsets;
//!   offset queries and commits.
//! - [`push_consumer`]: [`PushConsumer`] — subscriptions, heartbeats, rebalancing, one
//!   long-polling pull loop per owned queue, a bounded listener pool, offset commits.
//! - [`retry`]: what happens to a message the listener refuses — RocketMQ 4.x's retry
//!   topics (`%RETRY%<group>`, CONSUMER_SEND_MSG_BACK, a re-send as fallback) and, after
//!   `max_reconsume_times`, the dead-letter topic (`%DLQ%<group>`).
//! - [`transaction`]: [`TransactionProducer`] — half messages, a local transaction
//!   executor and a check-back listener (RocketMQ's `TransactionMQProducer`).
//! - [`message`]: [`Message`], [`MessageExt`], [`MessageQueue`].
//! - [`compression`]: zlib bodies: the producer compresses large bodies, every read
//!   inflates them; a body that does not inflate is reported, never delivered.
//! - [`selector`]: [`MessageSelector`], a subscription's tag or SQL92 expression
//!   (SQL92 is filtered by the broker; a push consumer checks it with CHECK_CLIENT_CONFIG
//!   at start).
//! - [`filter`]: tag expressions, [`tag_hash`] (the ConsumeQueue tag code), exact
//!   client-side tag filtering.
//! - [`allocate`]: RocketMQ's average queue allocation.
//! - [`unique_id`]: UNIQ_KEY message ids.
//! - [`instance`]: the shared link to the cluster: client id, routes, connections and
//!   the leader-aware request path (follower redirects, dead-leader fallback).
//! - [`route`]: the route cache. [`fault`]: send-side fault avoidance.
//! - `offset_store`: consumer offsets, on the broker (clustering) or in a local file
//!   (broadcasting).
//! - [`admin`]: topic creation on every broker group (like `mqadmin updateTopic`).
//! - [`mqadmin`]: mqadmin's everyday requests (broker status and config, topic and
//!   consumer progress, connections, offset resets, write permission, group status).
//! - [`query`]: finding stored messages by key, unique key or offset message id.
//! - [`namesrv`]: [`NameServerClient`], route, cluster and topic-list look-ups.
//! - [`error`]: the crate's error type; an unanswered request is
//!   [`ClientError::OutcomeUnknown`], never a failure.
//!
//! # Delays and retries
//!
//! A message can be delayed by a RocketMQ 4.x delay level
//! ([`Message::with_delay_time_level`], property DELAY) or, on a broker with RocketMQ 5
//! timer messages, delivered at a time ([`Message::with_deliver_time_ms`], property
//! TIMER_DELIVER_MS) or after a delay ([`Message::with_delay_time_ms`],
//! [`Message::with_delay_time_sec`]). A message has one delay; nonsense (a negative
//! level, two delays) is refused before sending.
//!
//! A clustering [`PushConsumer`] retries as RocketMQ 4.x's does: it subscribes to its
//! group's retry topic, and a message its listener refuses (or panics on) is given back
//! to the broker, which delivers it again after a growing delay and, after
//! `max_reconsume_times` (16) deliveries, moves it to the group's dead-letter topic. The
//! offset passes a refused message only once the broker has it back; until then it is
//! consumed again locally. A broadcasting consumer logs and drops refused messages, as
//! RocketMQ does. Details in [`push_consumer`] and [`retry`].
//!
//! # Example
//!
//! ```no_run
//! use client::{ConsumeStatus, Message, Producer, ProducerConfig, PushConsumer, PushConsumerConfig};
//!
//! # async fn example() -> client::Result<()> {
//! let producer = Producer::start(ProducerConfig::new("127.0.0.1:9876", "my-producers")).await?;
//! let sent = producer.send(Message::new("TopicTest", "hello").with_tags("TagA")).await?;
//! println!("stored as {} at {}", sent.msg_id, sent.queue);
//!
//! let mut consumer = PushConsumer::new(PushConsumerConfig::new("127.0.0.1:9876", "my-consumers"));
//! consumer.subscribe("TopicTest", "TagA || TagB")?;
//! consumer.register_message_listener(|msgs| {
//!     for m in msgs {
//!         println!("{} {:?}", m.msg_id(), m.body);
//!     }
//!     ConsumeStatus::ConsumeSuccess
//! });
//! consumer.start().await?;
//! // ...
//! consumer.shutdown().await;
//! producer.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod admin;
pub mod allocate;
mod api;
mod check_client;
pub mod compression;
mod consume_stats;
pub mod error;
pub mod fault;
pub use remoting::filter;
pub mod instance;
pub mod message;
pub mod mqadmin;
pub mod namesrv;
mod offset_store;
pub mod producer;
pub mod pull_consumer;
pub mod push_consumer;
pub mod query;
pub mod retry;
pub mod route;
pub mod selector;
pub mod transaction;
pub mod unique_id;

pub use error::{ClientError, Result};
pub use filter::{tag_hash, TagFilter};
pub use instance::ClientConfig;
pub use message::{Message, MessageExt, MessageQueue};
pub use namesrv::NameServerClient;
pub use producer::{Producer, ProducerConfig, SendHandle, SendResult, SendStatus};
pub use pull_consumer::{PullConsumer, PullConsumerConfig, PullResult};
pub use push_consumer::{
    ConsumeFromWhere, ConsumeOrderlyStatus, ConsumeStatus, MessageModel, PushConsumer,
    PushConsumerConfig,
};
pub use selector::MessageSelector;
pub use transaction::{
    LocalTransactionState, TransactionListener, TransactionProducer, TransactionSendResult,
};
