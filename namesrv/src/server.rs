//! The request handler: register, unregister, data-version queries, the route, cluster
//! and topic-list answers, and the admin's requests: write permission of a group, topic
//! deletion, the KV config.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use remoting::cluster_auth::{verify_broker_request, ClusterSecret};
use remoting::header::{
    AddWritePermOfBrokerResponseHeader, BrokerNameRequestHeader,
    DeleteTopicFromNamesrvRequestHeader, GetKVConfigResponseHeader, GetRouteInfoRequestHeader,
    GetTopicsByClusterRequestHeader, KVConfigRequestHeader, PutKVConfigRequestHeader,
    QueryDataVersionRequestHeader, QueryDataVersionResponseHeader, RegisterBrokerRequestHeader,
    RegisterBrokerResponseHeader, UnRegisterBrokerRequestHeader,
    WipeWritePermOfBrokerResponseHeader,
};
use remoting::names::check_topic;
use remoting::register_body::decode_compressed;
use remoting::route::{from_json, to_json, DataVersion, RegisterBrokerBody, TopicConfig};
use remoting::throttle::Throttle;
use remoting::{Connection, RemotingCommand, RequestCode, RequestHandler, ResponseCode};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::kv_config::{KvConfig, NAMESPACE_ORDER_TOPIC_CONFIG};
use crate::route_table::{Registration, RouteTable};

/// The most a compressed REGISTER_BROKER body may inflate to: 100,000 topics of 127
/// characters take about 15 MB.
const MAX_INFLATED_REGISTER_BYTES: usize = 128 << 20;

/// Serves the name server's requests over a shared route table.
pub struct NamesrvHandler {
    table: Arc<Mutex<RouteTable>>,
    /// Brokers' requests, and the admin's that change routes, must be signed with it;
    /// `None`: authentication is off.
    secret: Option<ClusterSecret>,
    kv: Mutex<KvConfig>,
    /// `orderMessageEnable`: routes carry `orderTopicConf`.
    order_message_enable: bool,
}

/// Refused broker requests, logged at most once every 10 s.
static REFUSALS: Throttle = Throttle::new(10_000);

impl NamesrvHandler {
    pub fn new(table: Arc<Mutex<RouteTable>>, secret: Option<ClusterSecret>) -> Self {
        NamesrvHandler {
            table,
            secret,
            kv: Mutex::default(),
            order_message_enable: false,
        }
    }

    /// This handler with the KV config `kv`, and routes carrying `orderTopicConf` when
    /// `order_message_enable`.
    pub fn with_kv(mut self, kv: KvConfig, order_message_enable: bool) -> Self {
        self.kv = Mutex::new(kv);
        self.order_message_enable = order_message_enable;
        self
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
        if changes_routes(code) {
            if let Some(refusal) = self.refuse_unproven(conn, request) {
                return RemotingCommand::error(
                    ResponseCode::NO_PERMISSION,
                    format!(
                        "{} changes routes, so it must be signed with the cluster secret \
                         (rocketraft admin --cluster-secret-file): {}",
                        code.name(),
                        refusal.remark.unwrap_or_default()
                    ),
                );
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
            RequestCode::GET_TOPICS_BY_CLUSTER => self.topics_by_cluster(request),
            RequestCode::WIPE_WRITE_PERM_OF_BROKER | RequestCode::ADD_WRITE_PERM_OF_BROKER => {
                self.write_perm(code, request)
            }
            RequestCode::DELETE_TOPIC_IN_NAMESRV => self.delete_topic(request),
            RequestCode::PUT_KV_CONFIG => self.put_kv(request),
            RequestCode::GET_KV_CONFIG => self.get_kv(request),
            RequestCode::DELETE_KV_CONFIG => self.delete_kv(request),
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
            Some(mut route) => {
                if self.order_message_enable {
                    let kv = self.kv.lock().unwrap();
                    route.order_topic_conf = kv
                        .get(NAMESPACE_ORDER_TOPIC_CONFIG, &header.topic)
                        .map(str::to_string);
                }
                RemotingCommand::success().with_body(to_json(&route))
            }
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

impl NamesrvHandler {
    /// GET_TOPICS_BY_CLUSTER (224): a `TopicList`.
    fn topics_by_cluster(&self, request: &RemotingCommand) -> remoting::Result<RemotingCommand> {
        let h: GetTopicsByClusterRequestHeader = request.header()?;
        let topics = self.table.lock().unwrap().topics_by_cluster(&h.cluster);
        Ok(RemotingCommand::success().with_body(to_json(&topics)))
    }

    /// WIPE_WRITE_PERM_OF_BROKER (205) and ADD_WRITE_PERM_OF_BROKER (327): the count of
    /// topics changed in `wipeTopicCount` / `addTopicCount`.
    fn write_perm(
        &self,
        code: RequestCode,
        request: &RemotingCommand,
    ) -> remoting::Result<RemotingCommand> {
        let h: BrokerNameRequestHeader = request.header()?;
        let mut table = self.table.lock().unwrap();
        let wipe = code == RequestCode::WIPE_WRITE_PERM_OF_BROKER;
        let count = match wipe {
            true => table.wipe_write_perm(&h.broker_name),
            false => table.add_write_perm(&h.broker_name),
        };
        let Some(count) = count else {
            return Ok(RemotingCommand::error(
                ResponseCode::SYSTEM_ERROR,
                format!("broker group {} is not registered here", h.broker_name),
            ));
        };
        Ok(match wipe {
            true => RemotingCommand::success().with_header(&WipeWritePermOfBrokerResponseHeader {
                wipe_topic_count: count,
            }),
            false => RemotingCommand::success().with_header(&AddWritePermOfBrokerResponseHeader {
                add_topic_count: count,
            }),
        })
    }

    /// DELETE_TOPIC_IN_NAMESRV (216).
    fn delete_topic(&self, request: &RemotingCommand) -> remoting::Result<RemotingCommand> {
        let h: DeleteTopicFromNamesrvRequestHeader = request.header()?;
        let cluster = h.cluster_name.as_deref().filter(|c| !c.is_empty());
        self.table.lock().unwrap().delete_topic(&h.topic, cluster);
        Ok(RemotingCommand::success())
    }

    /// PUT_KV_CONFIG (100): answered once the value is durable (with `kvConfigPath`).
    fn put_kv(&self, request: &RemotingCommand) -> remoting::Result<RemotingCommand> {
        let h: PutKVConfigRequestHeader = request.header()?;
        let done = self.kv.lock().unwrap().put(&h.namespace, &h.key, &h.value);
        Ok(match done {
            Ok(()) => RemotingCommand::success(),
            Err(e) => RemotingCommand::error(ResponseCode::SYSTEM_ERROR, e),
        })
    }

    /// GET_KV_CONFIG (101): the value in the `value` header field, or QUERY_NOT_FOUND.
    fn get_kv(&self, request: &RemotingCommand) -> remoting::Result<RemotingCommand> {
        let h: KVConfigRequestHeader = request.header()?;
        let kv = self.kv.lock().unwrap();
        Ok(match kv.get(&h.namespace, &h.key) {
            Some(value) => RemotingCommand::success().with_header(&GetKVConfigResponseHeader {
                value: Some(value.to_string()),
            }),
            None => RemotingCommand::error(
                ResponseCode::QUERY_NOT_FOUND,
                format!("No config item, Namespace: {} Key: {}", h.namespace, h.key),
            ),
        })
    }

    /// DELETE_KV_CONFIG (102).
    fn delete_kv(&self, request: &RemotingCommand) -> remoting::Result<RemotingCommand> {
        let h: KVConfigRequestHeader = request.header()?;
        let done = self.kv.lock().unwrap().delete(&h.namespace, &h.key);
        Ok(match done {
            Ok(()) => RemotingCommand::success(),
            Err(e) => RemotingCommand::error(ResponseCode::SYSTEM_ERROR, e),
        })
    }
}

/// The admin's requests that change what routes say: signed with the cluster secret when
/// authentication is on, as brokers' registrations are.
fn changes_routes(code: RequestCode) -> bool {
    matches!(
        code,
        RequestCode::PUT_KV_CONFIG
            | RequestCode::DELETE_KV_CONFIG
            | RequestCode::WIPE_WRITE_PERM_OF_BROKER
            | RequestCode::ADD_WRITE_PERM_OF_BROKER
            | RequestCode::DELETE_TOPIC_IN_NAMESRV
    )
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
