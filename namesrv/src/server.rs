//! The request handler: register, unregister, data-version queries, and the route,
//! cluster and topic-list answers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use remoting::cluster_auth::{verify_broker_request, ClusterSecret};
use remoting::header::{
    GetRouteInfoRequestHeader, QueryDataVersionRequestHeader, QueryDataVersionResponseHeader,
    RegisterBrokerRequestHeader, RegisterBrokerResponseHeader, UnRegisterBrokerRequestHeader,
};
use remoting::names::check_topic;
use remoting::register_body::decode_compressed;
use remoting::route::{from_json, to_json, DataVersion, RegisterBrokerBody, TopicConfig};
use remoting::throttle::Throttle;
use remoting::{Connection, RemotingCommand, RequestCode, RequestHandler, ResponseCode};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::route_table::{Registration, RouteTable};

/// The most a compressed REGISTER_BROKER body may inflate to: 100,000 topics of 127
/// characters take about 15 MB.
const MAX_INFLATED_REGISTER_BYTES: usize = 128 << 20;

/// Serves the name server's requests over a shared route table.
pub struct NamesrvHandler {
    table: Arc<Mutex<RouteTable>>,
    /// Brokers' requests must be signed with it; `None`: authentication is off.
    secret: Option<ClusterSecret>,
}

/// Refused broker requests, logged at most once every 10 s.
static REFUSALS: Throttle = Throttle::new(10_000);

impl NamesrvHandler {
    pub fn new(table: Arc<Mutex<RouteTable>>, secret: Option<ClusterSecret>) -> Self {
        NamesrvHandler { table, secret }
    }

    /// Checks the signature of a broker's request; the refusal to send back, if any.
    fn refuse_unproven(
        &self,
        conn: &Connection,
        request: &RemotingCommand,
    ) -> Option<RemotingCommand> {
        let secret = self.secret.as_ref()?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let reason = verify_broker_request(request, secret, now_ms).err()?;
        if let Some(left_out) = REFUSALS.admit() {
            warn!(peer = %conn.peer(), code = request.code, broker_addr = ?request.ext("brokerAddr"), reason = %reason, left_out, "refused a broker request");
        }
        Some(RemotingCommand::error(ResponseCode::NO_PERMISSION, reason))
    }

    fn process(&self, conn: &Connection, request: &RemotingCommand) -> RemotingCommand {
        let Some(code) = RequestCode::from_i32(request.code) else {
            return RemotingCommand::error(
                ResponseCode::REQUEST_CODE_NOT_SUPPORTED,
                format!("request code {} is not supported", request.code),
            );
        };
        if matches!(
            code,
            RequestCode::REGISTER_BROKER
                | RequestCode::UNREGISTER_BROKER
                | RequestCode::QUERY_DATA_VERSION
        ) {
            if let Some(refusal) = self.refuse_unproven(conn, request) {
                return refusal;
            }
        }
        let result = match code {
            RequestCode::REGISTER_BROKER => self.register(conn, request),
            RequestCode::UNREGISTER_BROKER => self.unregister(request),
            RequestCode::QUERY_DATA_VERSION => self.query_data_version(request),
            RequestCode::GET_ROUTEINFO_BY_TOPIC => self.route(request),
            RequestCode::GET_BROKER_CLUSTER_INFO => {
                let info = self.table.lock().unwrap().cluster_info();
                Ok(RemotingCommand::success().with_body(to_json(&info)))
            }
            RequestCode::GET_ALL_TOPIC_LIST_FROM_NAMESERVER => {
                let topics = self.table.lock().unwrap().all_topics();
                Ok(RemotingCommand::success().with_body(to_json(&topics)))
            }
            other => Ok(RemotingCommand::error(
                ResponseCode::REQUEST_CODE_NOT_SUPPORTED,
                format!(
                    "{} ({}) is not served by the name server",
                    other.name(),
                    request.code
                ),
            )),
        };
        result.unwrap_or_else(|e| {
            RemotingCommand::error(ResponseCode::SYSTEM_ERROR, format!("{}: {e}", code.name()))
        })
    }

    fn register(
        &self,
        conn: &Connection,
        request: &RemotingCommand,
    ) -> remoting::Result<RemotingCommand> {
        let header: RegisterBrokerRequestHeader = request.header()?;
        if let Some(crc) = header.body_crc32.filter(|crc| *crc != 0) {
            let actual = remoting::register_body::body_crc32(&request.body);
            if actual != crc {
                return Ok(RemotingCommand::error(
                    ResponseCode::SYSTEM_ERROR,
                    "crc32 not match",
                ));
            }
        }
        let (data_version, topics) = if request.body.is_empty() {
            (DataVersion::default(), None)
        } else {
            let body: RegisterBrokerBody = if header.compressed == Some(true) {
                decode_compressed(&request.body, MAX_INFLATED_REGISTER_BYTES).map_err(|e| {
                    remoting::Error::BadFrame {
                        reason: format!("register broker: {e}"),
                    }
                })?
            } else {
                from_json("register broker", &request.body)?
            };
            let wrapper = body.topic_config_serialize_wrapper;
            (wrapper.data_version, Some(wrapper.topic_config_table))
        };
        if let Some(refusal) = topics.as_ref().and_then(refuse_bad_topics) {
            return Ok(refusal);
        }
        let outcome = self.table.lock().unwrap().register(
            Registration {
                cluster: header.cluster_name,
                broker_name: header.broker_name,
                broker_addr: header.broker_addr,
                broker_id: header.broker_id,
                term: header.raft_term.unwrap_or(0),
                data_version,
                topics,
                connection_id: Some(conn.id()),
            },
            Instant::now(),
        );
        let mut response = RemotingCommand::success().with_header(&RegisterBrokerResponseHeader {
            ha_server_addr: None,
            master_addr: outcome.leader_addr,
        });
        if outcome.stale_claim {
            response = response.with_ext("staleLeaderClaim", "true");
        }
        Ok(response)
    }

    fn unregister(&self, request: &RemotingCommand) -> remoting::Result<RemotingCommand> {
        let header: UnRegisterBrokerRequestHeader = request.header()?;
        self.table
            .lock()
            .unwrap()
            .unregister(&header.broker_name, &header.broker_addr);
        Ok(RemotingCommand::success())
    }

    fn query_data_version(&self, request: &RemotingCommand) -> remoting::Result<RemotingCommand> {
        let header: QueryDataVersionRequestHeader = request.header()?;
        let version: DataVersion = from_json("data version", &request.body)?;
        let changed = self.table.lock().unwrap().query_data_version(
            &header.broker_name,
            &header.broker_addr,
            header.broker_id,
            header.raft_term.unwrap_or(0),
            &version,
            Instant::now(),
        );
        Ok(RemotingCommand::success()
            .with_header(&QueryDataVersionResponseHeader { changed })
            .with_body(to_json(&version)))
    }

    fn route(&self, request: &RemotingCommand) -> remoting::Result<RemotingCommand> {
        let header: GetRouteInfoRequestHeader = request.header()?;
        let route = self.table.lock().unwrap().topic_route(&header.topic);
        Ok(match route {
            Some(route) => RemotingCommand::success().with_body(to_json(&route)),
            None => RemotingCommand::error(
                ResponseCode::TOPIC_NOT_EXIST,
                format!(
                    "No topic route info in name server for the topic: {}",
                    header.topic
                ),
            ),
        })
    }
}

/// Refuses a topic table that names a topic against RocketMQ's rules ([`remoting::names`]):
/// no client could ask for its route (GET_ROUTEINFO_BY_TOPIC checks the name), and the
/// route table is only for what clients can use. A broker leaves such topics out of what it
/// registers, so only a forged or faulty registration is refused.
fn refuse_bad_topics(topics: &BTreeMap<String, TopicConfig>) -> Option<RemotingCommand> {
    let bad = topics.keys().find_map(|name| check_topic(name).err())?;
    Some(RemotingCommand::error(
        ResponseCode::SYSTEM_ERROR,
        format!("REGISTER_BROKER: topicConfigTable: {bad}; nothing was registered"),
    ))
}

impl RequestHandler for NamesrvHandler {
    fn handle(
        &self,
        conn: Connection,
        request: RemotingCommand,
    ) -> BoxFuture<'static, Option<RemotingCommand>> {
        let response = self.process(&conn, &request);
        debug!(peer = %conn.peer(), code = request.code, answer = response.code, "namesrv request");
        Box::pin(async move { Some(response) })
    }

    fn on_close(&self, conn: &Connection) {
        self.table.lock().unwrap().connection_closed(conn.id());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_table_with_a_bad_name_is_refused_naming_it() {
        let mut topics = BTreeMap::from([("TopicTest".to_string(), TopicConfig::default())]);
        assert!(refuse_bad_topics(&topics).is_none());
        topics.insert("a\0b".into(), TopicConfig::default());
        let refusal = refuse_bad_topics(&topics).expect("refused");
        assert_eq!(refusal.response_code(), Some(ResponseCode::SYSTEM_ERROR));
        let remark = refusal.remark.unwrap_or_default();
        assert!(
            remark.contains("topicConfigTable") && remark.contains("a\\0b"),
            "{remark}"
        );
    }
}
