//! Request handlers: one file per request or small family, each request code looked up
//! once in [`handler`]; adding a request means adding a handler and a row there. Each
//! handler returns the response to send; errors become responses with a readable remark,
//! never a panic or a dropped connection.

pub mod admin;
pub mod broker_config;
pub mod check_client;
pub mod client;
pub mod connections;
pub mod consume_stats;
pub mod create_topic_list;
pub mod end_transaction;
pub mod membership;
pub mod offset;
pub mod pull;
pub mod pull_filter;
pub mod query;
pub mod queue_lock;
pub mod reset_offset;
pub mod runtime_info;
pub mod send;
pub mod send_back;
pub mod stats_data;
pub mod transfer_leadership;

use futures::future::BoxFuture;
use remoting::{Connection, RemotingCommand, RequestCode, ResponseCode};

use crate::broker::Broker;

/// A request handler.
pub type Handle =
    for<'a> fn(&'a Broker, &'a Connection, &'a RemotingCommand) -> BoxFuture<'a, ProcessResult>;

/// An async handler `path(broker, conn, request)` as a [`Handle`].
macro_rules! handle {
    ($path:path) => {
        |broker, conn, request| Box::pin($path(broker, conn, request))
    };
}

/// An async handler of a request only the leader takes (it goes through the Raft
/// log), as a [`Handle`]: elsewhere the request is answered with the leader's address.
macro_rules! leader_only {
    ($path:path) => {
        |broker, conn, request| {
            if broker.is_leader() {
                Box::pin($path(broker, conn, request))
            } else {
                Box::pin(std::future::ready(Ok(broker.not_leader_response())))
            }
        }
    };
}

/// A handler that never waits, `path(broker, conn, request)`, as a [`Handle`].
macro_rules! handle_now {
    ($path:path) => {
        |broker, conn, request| Box::pin(std::future::ready($path(broker, conn, request)))
    };
}

/// The handler of each request code the broker serves; `None` for the rest, which are
/// refused with REQUEST_CODE_NOT_SUPPORTED.
pub fn handler(code: RequestCode) -> Option<Handle> {
    use RequestCode as C;
    Some(match code {
        C::SEND_MESSAGE | C::SEND_MESSAGE_V2 | C::SEND_BATCH_MESSAGE => leader_only!(timed_send),
        C::CONSUMER_SEND_MSG_BACK => leader_only!(send_back::handle),
        C::END_TRANSACTION => leader_only!(end_transaction::handle),
        C::PULL_MESSAGE => handle!(pull::handle),
        C::QUERY_CONSUMER_OFFSET => handle_now!(offset::query),
        C::UPDATE_CONSUMER_OFFSET => handle_now!(offset::update),
        C::GET_MAX_OFFSET => handle_now!(offset::max),
        C::GET_MIN_OFFSET => handle_now!(offset::min),
        C::SEARCH_OFFSET_BY_TIMESTAMP => handle_now!(offset::search_by_time),
        C::QUERY_MESSAGE => handle_now!(query::query),
        C::VIEW_MESSAGE_BY_ID => handle_now!(query::view_by_id),
        C::HEART_BEAT => handle!(client::heartbeat),
        C::UNREGISTER_CLIENT => handle_now!(client::unregister),
        C::GET_CONSUMER_LIST_BY_GROUP => handle_now!(client::consumer_list),
        C::CHECK_CLIENT_CONFIG => handle_now!(check_client::handle),
        C::UPDATE_AND_CREATE_TOPIC => leader_only!(admin::create_topic),
        C::UPDATE_AND_CREATE_TOPIC_LIST => leader_only!(create_topic_list::handle),
        C::GET_ALL_TOPIC_CONFIG => handle_now!(admin::all_topics),
        C::DELETE_TOPIC_IN_BROKER => leader_only!(admin::delete_topic),
        C::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP => leader_only!(admin::put_subscription_group),
        C::GET_ALL_SUBSCRIPTIONGROUP_CONFIG => handle_now!(admin::all_subscription_groups),
        C::DELETE_SUBSCRIPTIONGROUP => leader_only!(admin::delete_subscription_group),
        C::LOCK_BATCH_MQ => leader_only!(queue_lock::lock),
        C::UNLOCK_BATCH_MQ => leader_only!(queue_lock::unlock),
        C::DELETE_EXPIRED_COMMITLOG | C::CLEAN_EXPIRED_CONSUMEQUEUE => {
            leader_only!(admin::delete_expired)
        }
        C::TRANSFER_LEADERSHIP => leader_only!(transfer_leadership::handle),
        C::ADD_GROUP_NODE => leader_only!(membership::add),
        C::REMOVE_GROUP_NODE => leader_only!(membership::remove),
        C::GET_GROUP_MEMBERS => handle_now!(membership::members),
        C::GET_BROKER_RUNTIME_INFO => handle_now!(runtime_info::handle),
        C::GET_BROKER_CONFIG => handle_now!(broker_config::get),
        // Followers answer it too: SUCCESS if the values are in effect, else the leader.
        C::UPDATE_BROKER_CONFIG => handle!(broker_config::update),
        C::GET_TOPIC_STATS_INFO => handle_now!(consume_stats::topic_stats),
        C::GET_CONSUME_STATS => handle_now!(consume_stats::consume_stats),
        C::QUERY_TOPIC_CONSUME_BY_WHO => handle_now!(consume_stats::consumed_by),
        C::GET_CONSUMER_CONNECTION_LIST => handle_now!(connections::consumers),
        C::GET_PRODUCER_CONNECTION_LIST => handle_now!(connections::producers),
        C::GET_ALL_PRODUCER_INFO => handle_now!(connections::all_producers),
        C::GET_CONSUMER_RUNNING_INFO => handle!(connections::consumer_running_info),
        C::INVOKE_BROKER_TO_RESET_OFFSET => leader_only!(reset_offset::handle),
        C::VIEW_BROKER_STATS_DATA => handle_now!(stats_data::handle),
        _ => return None,
    })
}

/// A send, its latency (arrival to SUCCESS) counted for GET_BROKER_RUNTIME_INFO.
async fn timed_send(
    broker: &Broker,
    conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let started = std::time::Instant::now();
    let result = send::handle(broker, conn, request).await;
    if matches!(&result, Ok(r) if r.code == ResponseCode::SUCCESS as i32) {
        broker.stats().add_put_latency(started.elapsed());
    }
    result
}

/// Why a processor answers with an error.
pub enum ProcessError {
    /// A ready error response (boxed: errors stay small on the success path).
    Response(Box<RemotingCommand>),
    /// A header that does not decode.
    Header(remoting::Error),
}

impl From<remoting::Error> for ProcessError {
    fn from(e: remoting::Error) -> Self {
        ProcessError::Header(e)
    }
}

pub type ProcessResult = Result<RemotingCommand, ProcessError>;

pub(crate) fn fail(code: ResponseCode, remark: impl Into<String>) -> ProcessError {
    ProcessError::Response(Box::new(RemotingCommand::error(code, remark)))
}

/// A name that breaks RocketMQ's rules ([`remoting::names`]), as an answer. Names in typed
/// headers are checked as the header is read; this serves names in bodies and raw fields.
pub(crate) fn bad_name(e: remoting::names::BadName) -> ProcessError {
    fail(ResponseCode::SYSTEM_ERROR, e.to_string())
}

/// The value of a required `extFields` entry that has no typed header.
pub(crate) fn required_ext<'a>(
    request: &'a RemotingCommand,
    field: &str,
) -> Result<&'a str, ProcessError> {
    request.ext(field).ok_or_else(|| {
        fail(
            ResponseCode::SYSTEM_ERROR,
            format!("missing header field `{field}`"),
        )
    })
}
