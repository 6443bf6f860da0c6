//! RocketMQ's JSON bodies: route data, cluster info, topic configs, register-broker
//! and heartbeat bodies, data versions. Field names are RocketMQ's (camelCase); a
//! field RocketMQ may leave out decodes to its default.

use std::collections::{BTreeMap, BTreeSet};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};

/// Permission bits of a topic or broker.
pub mod perm {
    pub const PRIORITY: i32 = 1 << 3;
    pub const READ: i32 = 1 << 2;
    pub const WRITE: i32 = 1 << 1;
    pub const INHERIT: i32 = 1;
    pub const READ_WRITE: i32 = READ | WRITE;
}

/// brokerId of a group's leader (RocketMQ's `MixAll.MASTER_ID`).
pub const LEADER_BROKER_ID: i64 = 0;

/// Encodes a body as RocketMQ's JSON.
pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Our body types hold only strings, numbers, maps and lists: encoding cannot fail.
    serde_json::to_vec(value).expect("route body encodes")
}

/// Decodes a JSON body, naming what was expected on failure.
pub fn from_json<T: DeserializeOwned>(what: &'static str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::BadBody {
        what,
        reason: e.to_string(),
    })
}

/// The body of GET_ROUTEINFO_BY_TOPIC's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicRouteData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_topic_conf: Option<String>,
    pub queue_datas: Vec<QueueData>,
    pub broker_datas: Vec<BrokerData>,
    pub filter_server_table: BTreeMap<String, Vec<String>>,
}

/// One broker group's queues for a topic.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QueueData {
    pub broker_name: String,
    pub read_queue_nums: i32,
    pub write_queue_nums: i32,
    pub perm: i32,
    pub topic_sys_flag: i32,
}

/// One broker group's members: brokerId 0 is the leader, 1.. the followers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BrokerData {
    pub cluster: String,
    pub broker_name: String,
    pub broker_addrs: BTreeMap<i64, String>,
    pub enable_acting_master: bool,
}

impl BrokerData {
    /// The leader's address, if the group has one.
    pub fn leader_addr(&self) -> Option<&str> {
        self.broker_addrs.get(&LEADER_BROKER_ID).map(String::as_str)
    }
}

/// The body of GET_BROKER_CLUSTER_INFO's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterInfo {
    pub broker_addr_table: BTreeMap<String, BrokerData>,
    pub cluster_addr_table: BTreeMap<String, BTreeSet<String>>,
}

/// The body of GET_ALL_TOPIC_LIST_FROM_NAMESERVER's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicList {
    pub topic_list: BTreeSet<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_addr: Option<String>,
}

/// A topic's config as a broker keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicConfig {
    pub topic_name: String,
    pub read_queue_nums: i32,
    pub write_queue_nums: i32,
    pub perm: i32,
    pub topic_filter_type: String,
    pub topic_sys_flag: i32,
    pub order: bool,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            topic_name: String::new(),
            read_queue_nums: 16,
            write_queue_nums: 16,
            perm: perm::READ_WRITE,
            topic_filter_type: "SINGLE_TAG".into(),
            topic_sys_flag: 0,
            order: false,
        }
    }
}

/// The body of UPDATE_AND_CREATE_TOPIC_LIST (18, RocketMQ 5.x's `CreateTopicListRequestBody`):
/// the topics to create or update, each a RocketMQ `TopicConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateTopicListRequestBody {
    /// Required, as RocketMQ's `@CFNotNull` makes it: a body without it does not decode.
    pub topic_config_list: Vec<ListedTopicConfig>,
}

/// One topic of [`CreateTopicListRequestBody`]: RocketMQ 5.x's `TopicConfig`, which adds
/// `attributes` (the topic's message type and the like) to the fields a broker keeps.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ListedTopicConfig {
    #[serde(flatten)]
    pub config: TopicConfig,
    /// RocketMQ's Java client sends `{}` for none; absent or `null` reads as none too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
}

/// A broker's topic-table version: changes whenever its topics change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataVersion {
    pub state_version: i64,
    pub timestamp: i64,
    pub counter: i64,
}

/// A broker's topics and their version.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicConfigSerializeWrapper {
    pub topic_config_table: BTreeMap<String, TopicConfig>,
    pub data_version: DataVersion,
}

/// The body of REGISTER_BROKER (uncompressed form).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RegisterBrokerBody {
    pub topic_config_serialize_wrapper: TopicConfigSerializeWrapper,
    pub filter_server_list: Vec<String>,
}

/// The body of HEART_BEAT (34) from a client.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeartbeatData {
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub producer_data_set: Vec<ProducerData>,
    pub consumer_data_set: Vec<ConsumerData>,
}

impl HeartbeatData {
    /// Checks the client id, every group and every subscribed topic by RocketMQ's rules
    /// ([`crate::names`]).
    pub fn check_names(&self) -> Result<(), crate::names::BadName> {
        use crate::names::{check_client_id, check_group, check_topic};
        check_client_id(&self.client_id)?;
        for producer in &self.producer_data_set {
            check_group(&producer.group_name)?;
        }
        for consumer in &self.consumer_data_set {
            check_group(&consumer.group_name)?;
            for subscription in &consumer.subscription_data_set {
                check_topic(&subscription.topic)?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerData {
    pub group_name: String,
}

/// A consumer group as one client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerData {
    pub group_name: String,
    /// `CONSUME_ACTIVELY` (pull) or `CONSUME_PASSIVELY` (push).
    #[serde(deserialize_with = "lenient::consume_type")]
    pub consume_type: String,
    /// `CLUSTERING` or `BROADCASTING`.
    #[serde(deserialize_with = "lenient::message_model")]
    pub message_model: String,
    #[serde(deserialize_with = "lenient::consume_from_where")]
    pub consume_from_where: String,
    pub subscription_data_set: Vec<SubscriptionData>,
    pub unit_mode: bool,
}

/// One topic subscription with its tag expression.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionData {
    pub class_filter_mode: bool,
    pub topic: String,
    pub sub_string: String,
    pub tags_set: BTreeSet<String>,
    #[serde(deserialize_with = "lenient::code_set")]
    pub code_set: BTreeSet<i32>,
    #[serde(deserialize_with = "lenient::integer")]
    pub sub_version: i64,
    pub expression_type: String,
}

/// CHECK_CLIENT_CONFIG's body (RocketMQ's `CheckClientRequestBody`): a consumer asks
/// whether the broker can serve one of its subscriptions before it starts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CheckClientRequestBody {
    pub client_id: String,
    pub group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_data: Option<SubscriptionData>,
}

/// Heartbeat fields as the clients that exist send them. Java writes the enums by name and
/// numbers as numbers; Apache's C++ client writes the three enums as their ordinals and
/// `subVersion` as a string; the Go client writes `codeSet` as strings. Each is read into
/// the Java form.
mod lenient {
    use std::collections::BTreeSet;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Int(i64),
        Text(String),
    }

    /// An enum given by name or by its Java ordinal in `names`.
    fn java_enum<'de, D: Deserializer<'de>>(d: D, names: &[&str]) -> Result<String, D::Error> {
        match Scalar::deserialize(d)? {
            Scalar::Text(name) => Ok(name),
            Scalar::Int(i) => usize::try_from(i)
                .ok()
                .and_then(|i| names.get(i))
                .map(|name| name.to_string())
                .ok_or_else(|| D::Error::custom(format!("no enum value has ordinal {i}"))),
        }
    }

    pub fn consume_type<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        java_enum(d, &["CONSUME_ACTIVELY", "CONSUME_PASSIVELY", "CONSUME_POP"])
    }

    pub fn message_model<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        java_enum(d, &["BROADCASTING", "CLUSTERING"])
    }

    pub fn consume_from_where<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        java_enum(
            d,
            &[
                "CONSUME_FROM_LAST_OFFSET",
                "CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST",
                "CONSUME_FROM_MIN_OFFSET",
                "CONSUME_FROM_MAX_OFFSET",
                "CONSUME_FROM_FIRST_OFFSET",
                "CONSUME_FROM_TIMESTAMP",
            ],
        )
    }

    fn to_integer<E: Error>(scalar: Scalar) -> Result<i64, E> {
        match scalar {
            Scalar::Int(i) => Ok(i),
            Scalar::Text(t) => t
                .trim()
                .parse()
                .map_err(|_| E::custom(format!("`{t}` is not an integer"))),
        }
    }

    pub fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        to_integer(Scalar::deserialize(d)?)
    }

    pub fn code_set<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeSet<i32>, D::Error> {
        let mut codes = BTreeSet::new();
        for scalar in Vec::<Scalar>::deserialize(d)? {
            let code = to_integer::<D::Error>(scalar)?;
            codes.insert(
                i32::try_from(code).map_err(|_| D::Error::custom(format!("tag code {code}")))?,
            );
        }
        Ok(codes)
    }
}

/// The body of GET_CONSUMER_LIST_BY_GROUP's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerListBody {
    pub consumer_id_list: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Route JSON as RocketMQ's name server writes it (standard-JSON form).
    #[test]
    fn golden_route_json_decodes() {
        let json = br#"{"brokerDatas":[{"brokerAddrs":{"0":"127.0.0.1:10911","1":"127.0.0.1:10921"},"brokerName":"broker-a","cluster":"DefaultCluster","enableActingMaster":false}],"filterServerTable":{},"queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}"#;
        let route: TopicRouteData = from_json("route", json).unwrap();
        assert_eq!(route.broker_datas[0].leader_addr(), Some("127.0.0.1:10911"));
        assert_eq!(route.queue_datas[0].write_queue_nums, 4);
        let back: TopicRouteData = from_json("route", &to_json(&route)).unwrap();
        assert_eq!(back, route);
        let text = String::from_utf8(to_json(&route)).unwrap();
        for key in [
            "filterServerTable",
            "cluster",
            "enableActingMaster",
            "topicSysFlag",
            "brokerAddrs",
        ] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
    }

    /// UPDATE_AND_CREATE_TOPIC_LIST's body as RocketMQ 5.x's Java client writes it
    /// (fastjson: fields in alphabetical order, `attributes` an empty map unless set) reads
    /// field by field; a body without `topicConfigList` does not.
    #[test]
    fn create_topic_list_body_decodes_the_java_clients_json() {
        let json = br#"{"topicConfigList":[{"attributes":{},"order":false,"perm":6,"readQueueNums":8,"topicFilterType":"SINGLE_TAG","topicName":"Orders-0","topicSysFlag":0,"writeQueueNums":8},{"attributes":{"+message.type":"FIFO"},"order":true,"perm":4,"readQueueNums":2,"topicFilterType":"MULTI_TAG","topicName":"Orders-1","topicSysFlag":1,"writeQueueNums":3}]}"#;
        let body: CreateTopicListRequestBody = from_json("topic list", json).unwrap();
        assert_eq!(body.topic_config_list.len(), 2);
        let first = &body.topic_config_list[0];
        assert_eq!(
            first.config,
            TopicConfig {
                topic_name: "Orders-0".into(),
                read_queue_nums: 8,
                write_queue_nums: 8,
                perm: perm::READ_WRITE,
                topic_filter_type: "SINGLE_TAG".into(),
                topic_sys_flag: 0,
                order: false,
            }
        );
        assert_eq!(first.attributes, Some(BTreeMap::new()));
        let second = &body.topic_config_list[1];
        assert_eq!(
            second.config,
            TopicConfig {
                topic_name: "Orders-1".into(),
                read_queue_nums: 2,
                write_queue_nums: 3,
                perm: perm::READ,
                topic_filter_type: "MULTI_TAG".into(),
                topic_sys_flag: 1,
                order: true,
            }
        );
        assert_eq!(
            second.attributes,
            Some([("+message.type".to_string(), "FIFO".to_string())].into())
        );
        // Fields the Java client leaves at their defaults may be absent; `null` attributes
        // are none.
        let sparse = br#"{"topicConfigList":[{"topicName":"T","attributes":null}]}"#;
        let sparse: CreateTopicListRequestBody = from_json("topic list", sparse).unwrap();
        assert_eq!(sparse.topic_config_list[0].config.read_queue_nums, 16);
        assert_eq!(sparse.topic_config_list[0].attributes, None);
        let back: CreateTopicListRequestBody = from_json("topic list", &to_json(&body)).unwrap();
        assert_eq!(back, body);
        for bad in [&b"{}"[..], b"{\"topicConfigList\":null}", b"[1,2"] {
            assert!(from_json::<CreateTopicListRequestBody>("topic list", bad).is_err());
        }
    }

    #[test]
    fn register_body_and_heartbeat_round_trip() {
        let mut body = RegisterBrokerBody::default();
        body.topic_config_serialize_wrapper
            .topic_config_table
            .insert(
                "T".into(),
                TopicConfig {
                    topic_name: "T".into(),
                    ..Default::default()
                },
            );
        body.topic_config_serialize_wrapper.data_version = DataVersion {
            state_version: 0,
            timestamp: 5,
            counter: 2,
        };
        let back: RegisterBrokerBody = from_json("register", &to_json(&body)).unwrap();
        assert_eq!(back, body);

        let hb = br#"{"clientID":"127.0.0.1@1","consumerDataSet":[{"consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","consumeType":"CONSUME_PASSIVELY","groupName":"g","messageModel":"CLUSTERING","subscriptionDataSet":[{"classFilterMode":false,"codeSet":[],"expressionType":"TAG","subString":"*","subVersion":1,"tagsSet":[],"topic":"T"}],"unitMode":false}],"producerDataSet":[{"groupName":"CLIENT_INNER_PRODUCER"}]}"#;
        let hb: HeartbeatData = from_json("heartbeat", hb).unwrap();
        assert_eq!(hb.client_id, "127.0.0.1@1");
        assert_eq!(hb.consumer_data_set[0].subscription_data_set[0].topic, "T");
        assert!(from_json::<HeartbeatData>("heartbeat", b"[1,2").is_err());
    }
}
