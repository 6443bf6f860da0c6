//! Who is connected: GET_CONSUMER_CONNECTION_LIST (203, `mqadmin consumerConnection`),
//! GET_PRODUCER_CONNECTION_LIST (204, `producerConnection`), GET_ALL_PRODUCER_INFO (328),
//! and GET_CONSUMER_RUNNING_INFO (307, `consumerStatus`), which the broker passes on to the
//! client and answers with the client's answer.
//!
//! Clients heartbeat to every member of a group, so any member answers for its own
//! connections; the admin tools ask the leader (brokerId 0).

use std::time::Duration;

use remoting::header::{
    GetConsumerConnectionListRequestHeader, GetConsumerRunningInfoRequestHeader,
    GetProducerConnectionListRequestHeader,
};
use remoting::route::to_json;
use remoting::{Connection, RemotingCommand, RequestCode, ResponseCode};

use super::{fail, ProcessResult};
use crate::broker::Broker;

/// How long a client has to answer GET_CONSUMER_RUNNING_INFO (RocketMQ's `callClient`).
const CLIENT_ANSWER_MS: u64 = 10_000;

/// GET_CONSUMER_CONNECTION_LIST (203).
pub fn consumers(broker: &Broker, _conn: &Connection, request: &RemotingCommand) -> ProcessResult {
    let h: GetConsumerConnectionListRequestHeader = request.header()?;
    match broker.clients().consumer_connection(&h.consumer_group) {
        Some(body) => Ok(RemotingCommand::success().with_body(to_json(&body))),
        None => Err(fail(
            ResponseCode::CONSUMER_NOT_ONLINE,
            format!("the consumer group[{}] not online", h.consumer_group),
        )),
    }
}

/// GET_PRODUCER_CONNECTION_LIST (204).
pub fn producers(broker: &Broker, _conn: &Connection, request: &RemotingCommand) -> ProcessResult {
    let h: GetProducerConnectionListRequestHeader = request.header()?;
    match broker
        .clients()
        .producers
        .producer_connection(&h.producer_group)
    {
        Some(body) => Ok(RemotingCommand::success().with_body(to_json(&body))),
        None => Err(fail(
            ResponseCode::SYSTEM_ERROR,
            format!("the producer group[{}] not exist", h.producer_group),
        )),
    }
}

/// GET_ALL_PRODUCER_INFO (328): every live producer of this node, by group.
pub fn all_producers(
    broker: &Broker,
    _conn: &Connection,
    _request: &RemotingCommand,
) -> ProcessResult {
    let body = broker.clients().producers.all();
    Ok(RemotingCommand::success().with_body(to_json(&body)))
}

/// GET_CONSUMER_RUNNING_INFO (307): asked of the named client over its own connection,
/// with the request's fields and body; its answer (a `ConsumerRunningInfo`) is passed back
/// as it is. A client that does not answer in time is CONSUME_MSG_TIMEOUT, as in RocketMQ.
pub async fn consumer_running_info(
    broker: &Broker,
    _conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let h: GetConsumerRunningInfoRequestHeader = request.header()?;
    let Some((client, _)) = broker.clients().consumer(&h.consumer_group, &h.client_id) else {
        return Err(fail(
            ResponseCode::SYSTEM_ERROR,
            format!(
                "The Consumer <{}> <{}> not online",
                h.consumer_group, h.client_id
            ),
        ));
    };
    let mut ask = RemotingCommand::request(RequestCode::GET_CONSUMER_RUNNING_INFO, &h);
    ask.body = request.body.clone();
    match client
        .request(ask, Duration::from_millis(CLIENT_ANSWER_MS))
        .await
    {
        Ok(answer) => Ok(answer),
        Err(remoting::Error::Timeout(_)) => Err(fail(
            ResponseCode::CONSUME_MSG_TIMEOUT,
            format!(
                "consumer <{}> <{}> Timeout after {CLIENT_ANSWER_MS} ms",
                h.consumer_group, h.client_id
            ),
        )),
        Err(e) => Err(fail(
            ResponseCode::SYSTEM_ERROR,
            format!(
                "invoke consumer <{}> <{}> Exception: {e}",
                h.consumer_group, h.client_id
            ),
        )),
    }
}
