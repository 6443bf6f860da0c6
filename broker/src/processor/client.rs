//! HEART_BEAT (34), UNREGISTER_CLIENT (35), GET_CONSUMER_LIST_BY_GROUP (38).

use remoting::header::{ConsumerGroupRequestHeader, UnregisterClientRequestHeader};
use remoting::route::{from_json, to_json, ConsumerListBody, HeartbeatData};
use remoting::{Connection, RemotingCommand, ResponseCode};

use tracing::debug;

use super::{bad_name, fail, ProcessResult};
use crate::broker::Broker;

/// HEART_BEAT (34). On the leader, as the Java broker does, a clustering consumer group's
/// subscription group (when `autoCreateSubscriptionGroup`) and its `%RETRY%<group>` topic
/// are created when first seen, so the group's retries have a route before its first
/// failure.
pub async fn heartbeat(
    broker: &Broker,
    conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let data: HeartbeatData = from_json("heartbeat", &request.body)
        .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))?;
    data.check_names().map_err(bad_name)?;
    let clustering: Vec<String> = data
        .consumer_data_set
        .iter()
        .filter(|c| c.message_model == "CLUSTERING")
        .map(|c| c.group_name.clone())
        .collect();
    let kind = crate::clients::ClientKind::of(request);
    let joined = broker.clients().heartbeat(conn, kind, data);
    if broker.is_leader() {
        for group in clustering {
            if let Err(super::ProcessError::Response(r)) =
                super::send_back::prepare_retries(broker, &group).await
            {
                debug!(consumer_group = %group, remark = ?r.remark, "retry topic not created yet");
            }
        }
    }
    joined.map_err(|why| fail(ResponseCode::SYSTEM_ERROR, why))?;
    Ok(RemotingCommand::success())
}

/// UNREGISTER_CLIENT (35).
pub fn unregister(broker: &Broker, _conn: &Connection, request: &RemotingCommand) -> ProcessResult {
    let h: UnregisterClientRequestHeader = request.header()?;
    // As the Java broker: only the named consumer group loses the client (a producer's
    // unregister names none; Apache's C++ client names it as "").
    if let Some(group) = h.consumer_group.as_deref().filter(|g| !g.is_empty()) {
        broker.clients().unregister(&h.client_id, Some(group));
    }
    if let Some(group) = h.producer_group.as_deref().filter(|g| !g.is_empty()) {
        broker
            .clients()
            .producers
            .unregister(&h.client_id, Some(group));
    }
    Ok(RemotingCommand::success())
}

/// GET_CONSUMER_LIST_BY_GROUP (38).
pub fn consumer_list(
    broker: &Broker,
    _conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let h: ConsumerGroupRequestHeader = request.header()?;
    let ids = broker.clients().consumer_ids(&h.consumer_group);
    if ids.is_empty() {
        return Err(fail(
            ResponseCode::SYSTEM_ERROR,
            format!("no consumer of group {} is connected", h.consumer_group),
        ));
    }
    Ok(
        RemotingCommand::success().with_body(to_json(&ConsumerListBody {
            consumer_id_list: ids,
        })),
    )
}
