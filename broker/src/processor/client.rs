//! HEART_BEAT (34), UNREGISTER_CLIENT (35), GET_CONSUMER_LIST_BY_GROUP (38).

use remoting::header::{ConsumerGroupRequestHeader, UnregisterClientRequestHeader};
use remoting::route::{from_json, to_json, ConsumerListBody, HeartbeatData};
use remoting::{Connection, RemotingCommand, RequestCode, ResponseCode};

use super::{bad_name, fail, ProcessResult};
use crate::server::Broker;

pub fn process(
    broker: &Broker,
    conn: &Connection,
    code: RequestCode,
    request: &RemotingCommand,
) -> ProcessResult {
    match code {
        RequestCode::HEART_BEAT => {
            let data: HeartbeatData = from_json("heartbeat", &request.body)
                .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))?;
            data.check_names().map_err(bad_name)?;
            broker.clients.heartbeat(conn, data);
            Ok(RemotingCommand::success())
        }
        RequestCode::UNREGISTER_CLIENT => {
            let h: UnregisterClientRequestHeader = request.header()?;
            broker
                .clients
                .unregister(&h.client_id, h.consumer_group.as_deref());
            Ok(RemotingCommand::success())
        }
        RequestCode::GET_CONSUMER_LIST_BY_GROUP => {
            let h: ConsumerGroupRequestHeader = request.header()?;
            let ids = broker.clients.consumer_ids(&h.consumer_group);
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
        _ => unreachable!("dispatched by code"),
    }
}
