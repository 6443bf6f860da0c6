//! [`TransactionProducer`]: RocketMQ's `TransactionMQProducer`.
//!
//! [`TransactionProducer::send_message_in_transaction`] sends the message prepared (a
//! half message: `TRAN_MSG=true`, `PGROUP`, the prepared system flag), which the broker
//! keeps invisible to consumers; on SEND_OK it runs the local transaction, and ends the
//! transaction with its answer: END_TRANSACTION (oneway) to the group's current leader,
//! commit, rollback or unknown. A half's CommitLog offset is the same on every replica of
//! its group, so the end reaches it through whichever member leads now.
//!
//! A half left unknown (or whose end was lost) is checked back by the broker
//! (CHECK_TRANSACTION_STATE) on the connection of a live producer of the group: the
//! [`TransactionListener`] answers, and the answer goes back on that connection as
//! END_TRANSACTION with `fromTransactionCheck=true`. The producer heartbeats its group
//! (`producerDataSet`) to every member of every group it sent to, so each member, and so
//! any later leader, knows where to send check-backs.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use remoting::header::{CheckTransactionStateRequestHeader, EndTransactionRequestHeader};
use remoting::message::{decode_message_id, property, sys_flag};
use remoting::route::{HeartbeatData, ProducerData};
use remoting::{Connection, RemotingCommand, RequestCode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::error::{ClientError, Result};
use crate::instance::ClientInstance;
use crate::message::{Message, MessageExt};
use crate::producer::{Producer, ProducerConfig, SendResult, SendStatus};

/// RocketMQ's `LocalTransactionState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalTransactionState {
    CommitMessage,
    RollbackMessage,
    /// Not known yet: the broker checks the transaction back later.
    Unknow,
}

impl LocalTransactionState {
    /// The `commitOrRollback` value of END_TRANSACTION (a `MessageSysFlag` type).
    pub fn commit_or_rollback(self) -> i32 {
        match self {
            LocalTransactionState::CommitMessage => sys_flag::TRANSACTION_COMMIT,
            LocalTransactionState::RollbackMessage => sys_flag::TRANSACTION_ROLLBACK,
            LocalTransactionState::Unknow => 0,
        }
    }
}

/// Answers the broker's check-backs (RocketMQ's `TransactionListener.
/// checkLocalTransaction`). Called on the producer's check task, one check at a time.
pub trait TransactionListener: Send + Sync + 'static {
    /// The state of the local transaction of `msg` (its real topic and queue; its
    /// [`MessageExt::msg_id`] is the transaction id the send returned).
    fn check_local_transaction(&self, msg: &MessageExt) -> LocalTransactionState;
}

impl<F> TransactionListener for F
where
    F: Fn(&MessageExt) -> LocalTransactionState + Send + Sync + 'static,
{
    fn check_local_transaction(&self, msg: &MessageExt) -> LocalTransactionState {
        self(msg)
    }
}

/// What [`TransactionProducer::send_message_in_transaction`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionSendResult {
    /// The half message's send: `msg_id` is the transaction id.
    pub send_result: SendResult,
    /// The local transaction's answer (ROLLBACK when the half was not stored SEND_OK).
    pub local_transaction_state: LocalTransactionState,
}

/// One CHECK_TRANSACTION_STATE from a broker, for the producer of its group.
pub(crate) struct TransactionCheck {
    pub conn: Connection,
    pub header: CheckTransactionStateRequestHeader,
    pub msg: MessageExt,
}

/// Check-backs waiting for the listener; past this, more are dropped (the broker
/// checks again next interval).
pub(crate) const CHECKS_QUEUED: usize = 4096;

/// Reads a CHECK_TRANSACTION_STATE: its header and the half message in its body.
pub(crate) fn decode_check(
    conn: &Connection,
    request: &RemotingCommand,
) -> std::result::Result<(String, TransactionCheck), String> {
    let header: CheckTransactionStateRequestHeader = request
        .header()
        .map_err(|e: remoting::Error| e.to_string())?;
    let broker_name = conn.peer().to_string();
    let mut msgs =
        MessageExt::decode_all(&request.body, &broker_name).map_err(|e| e.to_string())?;
    if msgs.len() != 1 {
        return Err(format!("the body holds {} messages, not one", msgs.len()));
    }
    let msg = msgs.remove(0);
    let group = msg
        .property(property::PRODUCER_GROUP)
        .ok_or("the checked message names no producer group (PGROUP)")?
        .to_string();
    Ok((
        group,
        TransactionCheck {
            conn: conn.clone(),
            header,
            msg,
        },
    ))
}

struct Inner {
    producer: Producer,
    instance: Arc<ClientInstance>,
    group: String,
    /// Topics sent to: the heartbeat goes to every member of their groups.
    topics: Mutex<BTreeSet<String>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A transactional producer. Cheap to clone.
#[derive(Clone)]
pub struct TransactionProducer {
    inner: Arc<Inner>,
}

impl TransactionProducer {
    /// Starts a producer of `config.producer_group` whose check-backs `listener` answers.
    pub async fn start(
        config: ProducerConfig,
        listener: Arc<dyn TransactionListener>,
    ) -> Result<TransactionProducer> {
        if config.producer_group.is_empty() {
            return Err(ClientError::InvalidConfig {
                reason: "producer_group is empty".into(),
            });
        }
        let instance = ClientInstance::new(config.client.clone())?;
        let refresher = instance.start();
        let checks = instance.watch_transaction_checks(&config.producer_group);
        let group = config.producer_group.clone();
        let producer = Producer::on_instance(instance.clone(), config);
        let inner = Arc::new(Inner {
            producer,
            instance,
            group,
            topics: Mutex::new(BTreeSet::new()),
            tasks: Mutex::new(vec![refresher]),
        });
        let weak = Arc::downgrade(&inner);
        let check_task = tokio::spawn(answer_checks(weak.clone(), checks, listener));
        let heartbeat_task = tokio::spawn(heartbeat_loop(weak));
        inner
            .tasks
            .lock()
            .unwrap()
            .extend([check_task, heartbeat_task]);
        Ok(TransactionProducer { inner })
    }

    /// This producer's client id.
    pub fn client_id(&self) -> &str {
        self.inner.producer.client_id()
    }

    /// Makes the brokers of `topic` know this producer now (a heartbeat to every member
    /// of its groups), as a first transactional send does.
    pub async fn register_topic(&self, topic: &str) -> Result<()> {
        self.inner
            .producer
            .fetch_publish_queues(topic)
            .await
            .map(|_| ())?;
        let new = self.inner.topics.lock().unwrap().insert(topic.to_string());
        if new {
            self.inner.heartbeat().await;
        }
        Ok(())
    }

    /// Sends `msg` as a half message, runs `execute` (the local transaction) once it is
    /// stored, and ends the transaction with its answer. A half not stored SEND_OK is
    /// rolled back without running `execute`. An end that cannot be delivered is logged:
    /// the broker checks the transaction back.
    pub async fn send_message_in_transaction<F>(
        &self,
        msg: Message,
        execute: F,
    ) -> Result<TransactionSendResult>
    where
        F: FnOnce(&Message, &SendResult) -> LocalTransactionState,
    {
        if msg.delay_time_level() > 0 || matches!(msg.schedule(), Ok(Some(_))) {
            return Err(ClientError::InvalidMessage {
                topic: msg.topic.clone(),
                reason: "a transactional message cannot be delayed".into(),
            });
        }
        self.register_topic(&msg.topic).await?;
        let prepared = msg
            .clone()
            .with_property(property::TRANSACTION_PREPARED, "true")
            .with_property(property::PRODUCER_GROUP, self.inner.group.clone());
        let send_result = self.inner.producer.send(prepared).await?;
        let state = match send_result.status {
            SendStatus::SendOk => execute(&msg, &send_result),
            other => {
                warn!(status = ?other, msg_id = %send_result.msg_id, "the half message was not stored SEND_OK; rolling back");
                LocalTransactionState::RollbackMessage
            }
        };
        if let Err(e) = self.end_transaction(&send_result, state).await {
            warn!(msg_id = %send_result.msg_id, ?state, error = %e, "ending the transaction failed; the broker will check it back");
        }
        Ok(TransactionSendResult {
            send_result,
            local_transaction_state: state,
        })
    }

    /// END_TRANSACTION (oneway) for a half this producer sent, to its group's current
    /// leader (the route is refreshed and the leader looked up again while none can be
    /// reached, within `send_msg_timeout_ms`).
    pub async fn end_transaction(
        &self,
        sent: &SendResult,
        state: LocalTransactionState,
    ) -> Result<()> {
        let (_, commit_log_offset) =
            decode_message_id(&sent.offset_msg_id).map_err(|e| ClientError::BadResponse {
                addr: sent.broker_addr.clone(),
                reason: e.to_string(),
            })?;
        let header = EndTransactionRequestHeader {
            producer_group: self.inner.group.clone(),
            tran_state_table_offset: sent.queue_offset,
            commit_log_offset,
            commit_or_rollback: state.commit_or_rollback(),
            from_transaction_check: Some(false),
            msg_id: sent.msg_id.clone(),
            transaction_id: Some(sent.msg_id.clone()),
        };
        let instance = &self.inner.instance;
        let broker_name = &sent.queue.broker_name;
        let deadline =
            Instant::now() + Duration::from_millis(self.inner.producer_config_timeout_ms());
        loop {
            let request = RemotingCommand::request(RequestCode::END_TRANSACTION, &header).oneway();
            match instance.oneway_leader(broker_name, request).await {
                Ok(()) => return Ok(()),
                Err(e @ ClientError::NoLeader { .. }) => {
                    if Instant::now() >= deadline {
                        return Err(e);
                    }
                    debug!(%broker_name, error = %e, "no leader for END_TRANSACTION yet");
                    let _ = instance.refresh_topic(&sent.queue.topic).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Stops checks and heartbeats, unregisters the group and closes connections.
    pub async fn shutdown(&self) {
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.inner.tasks.lock().unwrap());
        for task in &tasks[1..] {
            task.abort();
        }
        self.inner.producer.shutdown().await;
    }
}

impl Inner {
    fn producer_config_timeout_ms(&self) -> u64 {
        self.producer.send_msg_timeout_ms()
    }

    fn heartbeat_data(&self) -> HeartbeatData {
        HeartbeatData {
            client_id: self.instance.client_id.clone(),
            producer_data_set: vec![ProducerData {
                group_name: self.group.clone(),
            }],
            consumer_data_set: Vec::new(),
        }
    }

    async fn heartbeat(&self) {
        let topics: Vec<String> = self.topics.lock().unwrap().iter().cloned().collect();
        if topics.is_empty() {
            return;
        }
        let ok = self
            .instance
            .heartbeat(&topics, &self.heartbeat_data())
            .await;
        debug!(brokers = ok, producer_group = %self.group, "producer heartbeat sent");
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().iter() {
            task.abort();
        }
    }
}

async fn heartbeat_loop(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(this) = inner.upgrade() else { return };
        let interval =
            Duration::from_millis(this.instance.config.heartbeat_broker_interval_ms.max(100));
        let instance = Arc::clone(&this.instance);
        drop(this);
        if !instance.heartbeat_wait(interval).await {
            return;
        }
        let Some(this) = inner.upgrade() else { return };
        this.heartbeat().await;
    }
}

/// Answers check-backs one at a time: the listener's state goes back on the connection the
/// check came on (the broker that asked), as RocketMQ's producer answers.
async fn answer_checks(
    inner: std::sync::Weak<Inner>,
    mut checks: mpsc::Receiver<TransactionCheck>,
    listener: Arc<dyn TransactionListener>,
) {
    while let Some(check) = checks.recv().await {
        let Some(this) = inner.upgrade() else { return };
        let state = listener.check_local_transaction(&check.msg);
        let header = EndTransactionRequestHeader {
            producer_group: this.group.clone(),
            tran_state_table_offset: check.header.tran_state_table_offset,
            commit_log_offset: check.header.commit_log_offset,
            commit_or_rollback: state.commit_or_rollback(),
            from_transaction_check: Some(true),
            msg_id: check.msg.msg_id().to_string(),
            transaction_id: check.header.transaction_id.clone(),
        };
        debug!(msg_id = %check.msg.msg_id(), ?state, peer = %check.conn.peer(), "answering a transaction check-back");
        let request = RemotingCommand::request(RequestCode::END_TRANSACTION, &header).oneway();
        if let Err(e) = check.conn.oneway(request).await {
            warn!(msg_id = %check.msg.msg_id(), error = %e, "answering a check-back failed; the broker will check again");
        }
    }
}
