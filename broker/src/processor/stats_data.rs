//! VIEW_BROKER_STATS_DATA (315, `mqadmin statsAll`, the dashboard, the exporter): one of
//! RocketMQ's stats items of this node ([`crate::stats_items`]) over the last minute, hour
//! and day. An item not kept is refused as RocketMQ refuses it (SYSTEM_ERROR, "The stats
//! <name> <key> not exist"); the tools take that as "not used".

use remoting::header::ViewBrokerStatsDataRequestHeader;
use remoting::route::to_json;
use remoting::{Connection, RemotingCommand, ResponseCode};

use super::{fail, ProcessResult};
use crate::broker::Broker;

/// VIEW_BROKER_STATS_DATA (315).
pub fn handle(broker: &Broker, _conn: &Connection, request: &RemotingCommand) -> ProcessResult {
    let h: ViewBrokerStatsDataRequestHeader = request.header()?;
    let cluster = &broker.config().cluster_name;
    match broker
        .stats_items()
        .view(&h.stats_name, &h.stats_key, cluster)
    {
        Some(data) => Ok(RemotingCommand::success().with_body(to_json(&data))),
        None => Err(fail(
            ResponseCode::SYSTEM_ERROR,
            format!("The stats <{}> <{}> not exist", h.stats_name, h.stats_key),
        )),
    }
}
