//! LOCK_BATCH_MQ (41) and UNLOCK_BATCH_MQ (42): queue locks of orderly consumers. Both go
//! through the Raft log (`crate::queue_locks`), so only the leader takes them.

use remoting::queue_lock::{LockBatchRequestBody, LockBatchResponseBody, UnlockBatchRequestBody};
use remoting::route::{from_json, to_json};
use remoting::{Connection, RemotingCommand, ResponseCode};

use super::{bad_name, fail, ProcessError, ProcessResult};
use crate::broker::Broker;
use crate::command::BrokerCommand;

/// Most queues one request may name (a rebalance asks for its share of a topic's queues).
pub const MAX_QUEUES_PER_REQUEST: usize = 4096;

fn body(
    request: &RemotingCommand,
    what: &'static str,
) -> Result<LockBatchRequestBody, ProcessError> {
    let body: LockBatchRequestBody = from_json(what, &request.body)
        .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))?;
    body.check_names().map_err(bad_name)?;
    if body.mq_set.len() > MAX_QUEUES_PER_REQUEST {
        return Err(fail(
            ResponseCode::SYSTEM_ERROR,
            format!(
                "{what}: {} queues in one request; at most {MAX_QUEUES_PER_REQUEST}",
                body.mq_set.len()
            ),
        ));
    }
    Ok(body)
}

/// LOCK_BATCH_MQ (41): answers with the queues the client holds now (`lockOKMQSet`).
pub async fn lock(broker: &Broker, _conn: &Connection, request: &RemotingCommand) -> ProcessResult {
    let body = body(request, "lock batch body")?;
    let granted = broker
        .lock_queues(&body.consumer_group, &body.client_id, body.mq_set)
        .await
        .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))?;
    let answer = LockBatchResponseBody {
        lock_ok_mq_set: granted,
    };
    Ok(RemotingCommand::success().with_body(to_json(&answer)))
}

/// UNLOCK_BATCH_MQ (42): frees the queues the client holds.
pub async fn unlock(
    broker: &Broker,
    _conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let body: UnlockBatchRequestBody = body(request, "unlock batch body")?;
    let command = BrokerCommand::UnlockQueues {
        consumer_group: body.consumer_group,
        client_id: body.client_id,
        queues: body.mq_set,
    };
    broker
        .propose(&command)
        .await
        .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))?;
    Ok(RemotingCommand::success())
}
