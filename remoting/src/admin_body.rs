//! The bodies of RocketMQ's admin requests (issue 20), with the field names of RocketMQ
//! 4.9.8's classes (`KVTable`, `TopicStatsTable`, `ConsumeStats`, `ConsumerConnection`,
//! `ProducerConnection`, `GroupList`, `ResetOffsetBody`, `ProducerTableInfo`,
//! `BrokerStatsData`).
//!
//! Three of them hold a map keyed by `MessageQueue` objects. Java's fastjson writes such a
//! map with JSON objects as keys (`{"offsetTable":{{"brokerName":"b","queueId":0,"topic":"T"}:
//! {...}}}`), which is not JSON, and stock tools read only that form. [`MqMap`] writes it
//! and [`parse_fastjson`] reads it back (object keys become their compact JSON text).

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::queue_lock::MessageQueueData;
use crate::route::SubscriptionData;

/// The body of GET_BROKER_RUNTIME_INFO's answer (and of any other `KVTable`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct KVTable {
    pub table: BTreeMap<String, String>,
}

/// One queue's bounds in GET_TOPIC_STATS_INFO's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicOffset {
    pub min_offset: i64,
    pub max_offset: i64,
    /// Store time of the queue's last message; 0 for an empty queue.
    pub last_update_timestamp: i64,
}

/// One queue's progress in GET_CONSUME_STATS's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OffsetWrapper {
    /// The queue's max offset (one past its last message).
    pub broker_offset: i64,
    /// The group's committed offset.
    pub consumer_offset: i64,
    /// Store time of the last message the group consumed; 0 if none.
    pub last_timestamp: i64,
}

/// A map keyed by `MessageQueue`, in fastjson's form (see the module doc), queues sorted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MqMap<V>(pub BTreeMap<MessageQueueData, V>);

impl<V: Serialize> MqMap<V> {
    /// fastjson's text: `{KEY:VALUE,...}` with each key a `MessageQueue` object.
    pub fn to_fastjson(&self) -> String {
        let mut out = String::from("{");
        for (i, (mq, value)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Our field names sorted, as fastjson writes them.
            out.push_str(&format!(
                "{{\"brokerName\":{},\"queueId\":{},\"topic\":{}}}:{}",
                json(&mq.broker_name),
                mq.queue_id,
                json(&mq.topic),
                json(value)
            ));
        }
        out.push('}');
        out
    }
}

impl<V: DeserializeOwned> MqMap<V> {
    /// From a value [`parse_fastjson`] made: each key the JSON text of a `MessageQueue`.
    pub fn from_value(what: &'static str, value: Option<&Value>) -> Result<Self> {
        let mut map = BTreeMap::new();
        let Some(Value::Object(entries)) = value else {
            return Ok(MqMap(map));
        };
        for (key, v) in entries {
            let mq: MessageQueueData = serde_json::from_str(key).map_err(|e| bad(what, e))?;
            map.insert(
                mq,
                serde_json::from_value(v.clone()).map_err(|e| bad(what, e))?,
            );
        }
        Ok(MqMap(map))
    }
}

fn json<T: Serialize + ?Sized>(value: &T) -> String {
    // Strings, numbers and our plain structs: encoding cannot fail.
    serde_json::to_string(value).expect("admin body encodes")
}

fn bad(what: &'static str, e: impl std::fmt::Display) -> Error {
    Error::BadBody {
        what,
        reason: e.to_string(),
    }
}

/// GET_TOPIC_STATS_INFO's answer (`TopicStatsTable`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TopicStatsTable {
    pub offset_table: MqMap<TopicOffset>,
}

impl TopicStatsTable {
    pub fn encode(&self) -> Vec<u8> {
        format!("{{\"offsetTable\":{}}}", self.offset_table.to_fastjson()).into_bytes()
    }

    pub fn decode(body: &[u8]) -> Result<Self> {
        let value = parse_fastjson("topic stats", body)?;
        Ok(TopicStatsTable {
            offset_table: MqMap::from_value("topic stats", value.get("offsetTable"))?,
        })
    }
}

/// GET_CONSUME_STATS's answer (`ConsumeStats`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConsumeStats {
    pub offset_table: MqMap<OffsetWrapper>,
    pub consume_tps: f64,
}

impl ConsumeStats {
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{{\"consumeTps\":{},\"offsetTable\":{}}}",
            json(&self.consume_tps),
            self.offset_table.to_fastjson()
        )
        .into_bytes()
    }

    pub fn decode(body: &[u8]) -> Result<Self> {
        let value = parse_fastjson("consume stats", body)?;
        Ok(ConsumeStats {
            offset_table: MqMap::from_value("consume stats", value.get("offsetTable"))?,
            consume_tps: value
                .get("consumeTps")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
        })
    }

    /// Messages not yet consumed, over every queue (`computeTotalDiff`).
    pub fn total_diff(&self) -> i64 {
        self.offset_table
            .0
            .values()
            .map(|w| w.broker_offset - w.consumer_offset)
            .sum()
    }
}

/// One owned queue's state in a consumer's running info (`ProcessQueueInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProcessQueueInfo {
    /// The offset the client will commit next for the queue.
    pub commit_offset: i64,
    /// Pulled and not yet consumed: the lowest and highest offset, and how many.
    pub cached_msg_min_offset: i64,
    pub cached_msg_max_offset: i64,
    pub cached_msg_count: i32,
    #[serde(rename = "cachedMsgSizeInMiB")]
    pub cached_msg_size_in_mib: i32,
    pub transaction_msg_min_offset: i64,
    pub transaction_msg_max_offset: i64,
    pub transaction_msg_count: i32,
    /// Orderly: the client holds the queue's lock on the broker.
    pub locked: bool,
    pub try_unlock_times: i64,
    pub last_lock_timestamp: i64,
    /// RocketMQ's spelling.
    pub droped: bool,
    pub last_pull_timestamp: i64,
    pub last_consume_timestamp: i64,
}

/// One topic's consume rates in a consumer's running info (`ConsumeStatus`): per second
/// (TPS) and milliseconds (RT), over the last minute.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumeStatus {
    #[serde(rename = "pullRT")]
    pub pull_rt: f64,
    #[serde(rename = "pullTPS")]
    pub pull_tps: f64,
    #[serde(rename = "consumeRT")]
    pub consume_rt: f64,
    #[serde(rename = "consumeOKTPS")]
    pub consume_ok_tps: f64,
    #[serde(rename = "consumeFailedTPS")]
    pub consume_failed_tps: f64,
    /// Failed deliveries in the last hour.
    pub consume_failed_msgs: i64,
}

/// GET_CONSUMER_RUNNING_INFO's answer, written by the consumer itself
/// (`ConsumerRunningInfo`): its settings as properties, its subscriptions, each owned
/// queue's state and each topic's rates.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConsumerRunningInfo {
    pub properties: BTreeMap<String, String>,
    pub subscription_set: Vec<SubscriptionData>,
    pub mq_table: MqMap<ProcessQueueInfo>,
    pub status_table: BTreeMap<String, ConsumeStatus>,
    /// Java's thread dump when `jstackEnable` asked for one.
    pub jstack: Option<String>,
}

impl ConsumerRunningInfo {
    /// The property naming the consume type (`CONSUME_PASSIVELY` for push consumers).
    pub const PROP_CONSUME_TYPE: &'static str = "PROP_CONSUME_TYPE";
    pub const PROP_CONSUME_ORDERLY: &'static str = "PROP_CONSUMEORDERLY";
    pub const PROP_THREADPOOL_CORE_SIZE: &'static str = "PROP_THREADPOOL_CORE_SIZE";
    pub const PROP_NAMESERVER_ADDR: &'static str = "PROP_NAMESERVER_ADDR";
    pub const PROP_CLIENT_VERSION: &'static str = "PROP_CLIENT_VERSION";
    pub const PROP_CONSUMER_START_TIMESTAMP: &'static str = "PROP_CONSUMER_START_TIMESTAMP";

    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "{{\"mqTable\":{},\"properties\":{},\"statusTable\":{},\"subscriptionSet\":{}",
            self.mq_table.to_fastjson(),
            json(&self.properties),
            json(&self.status_table),
            json(&self.subscription_set)
        );
        if let Some(jstack) = &self.jstack {
            out.push_str(&format!(",\"jstack\":{}", json(jstack)));
        }
        out.push('}');
        out.into_bytes()
    }

    pub fn decode(body: &[u8]) -> Result<Self> {
        const WHAT: &str = "consumer running info";
        let value = parse_fastjson(WHAT, body)?;
        let field = |name: &str| value.get(name).cloned().unwrap_or(Value::Null);
        let or_default = |v: Value| {
            if v.is_null() {
                Value::Object(Default::default())
            } else {
                v
            }
        };
        // Java's `Properties` may carry non-string values; keep their text.
        let properties = match field("properties") {
            Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        let subscription_set = match field("subscriptionSet") {
            Value::Null => Vec::new(),
            v => serde_json::from_value(v).map_err(|e| bad(WHAT, e))?,
        };
        Ok(ConsumerRunningInfo {
            properties,
            subscription_set,
            mq_table: MqMap::from_value(WHAT, value.get("mqTable"))?,
            status_table: serde_json::from_value(or_default(field("statusTable")))
                .map_err(|e| bad(WHAT, e))?,
            jstack: value
                .get("jstack")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

/// The body of RESET_CONSUMER_CLIENT_OFFSET and of INVOKE_BROKER_TO_RESET_OFFSET's answer
/// (`ResetOffsetBody`): each queue's new offset.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResetOffsetBody {
    pub offset_table: MqMap<i64>,
}

impl ResetOffsetBody {
    pub fn encode(&self) -> Vec<u8> {
        format!("{{\"offsetTable\":{}}}", self.offset_table.to_fastjson()).into_bytes()
    }

    pub fn decode(body: &[u8]) -> Result<Self> {
        let value = parse_fastjson("reset offset", body)?;
        Ok(ResetOffsetBody {
            offset_table: MqMap::from_value("reset offset", value.get("offsetTable"))?,
        })
    }
}

/// One client connection (`Connection`): its id, address, language (`JAVA`, `RUST`, ...)
/// and protocol version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConnectionData {
    pub client_id: String,
    pub client_addr: String,
    pub language: String,
    pub version: i32,
}

/// GET_CONSUMER_CONNECTION_LIST's answer (`ConsumerConnection`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerConnection {
    pub connection_set: Vec<ConnectionData>,
    pub subscription_table: BTreeMap<String, SubscriptionData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consume_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consume_from_where: Option<String>,
}

/// GET_PRODUCER_CONNECTION_LIST's answer (`ProducerConnection`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerConnection {
    pub connection_set: Vec<ConnectionData>,
}

/// QUERY_TOPIC_CONSUME_BY_WHO's answer (`GroupList`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GroupList {
    pub group_list: BTreeSet<String>,
}

/// One producer in GET_ALL_PRODUCER_INFO's answer (`ProducerInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerInfo {
    pub client_id: String,
    #[serde(rename = "remoteIP")]
    pub remote_ip: String,
    pub language: String,
    pub version: i32,
    pub last_update_timestamp: i64,
}

/// GET_ALL_PRODUCER_INFO's answer (`ProducerTableInfo`): producers by group.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProducerTableInfo {
    pub data: BTreeMap<String, Vec<ProducerInfo>>,
}

/// One window of VIEW_BROKER_STATS_DATA's answer (`BrokerStatsItem`): the window's sum,
/// its rate per second, and the sum per call.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BrokerStatsItem {
    pub sum: i64,
    pub tps: f64,
    pub avgpt: f64,
}

/// VIEW_BROKER_STATS_DATA's answer (`BrokerStatsData`): the last minute, hour and day.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BrokerStatsData {
    pub stats_minute: BrokerStatsItem,
    pub stats_hour: BrokerStatsItem,
    pub stats_day: BrokerStatsItem,
}

/// The most nesting [`parse_fastjson`] follows.
const MAX_DEPTH: usize = 64;

/// Reads fastjson's text, in which an object's keys may be objects: each such key becomes
/// its compact JSON text (fields sorted), everything else is JSON as usual.
pub fn parse_fastjson(what: &'static str, body: &[u8]) -> Result<Value> {
    let mut p = Parser { s: body, i: 0 };
    let value = p.value(0).map_err(|reason| bad(what, reason))?;
    p.ws();
    if p.i != body.len() {
        return Err(bad(what, format!("trailing bytes at {}", p.i)));
    }
    Ok(value)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        self.ws();
        let hit = self.s.get(self.i) == Some(&byte);
        self.i += hit as usize;
        hit
    }

    fn value(&mut self, depth: usize) -> std::result::Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("nested too deep".into());
        }
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => self.object(depth),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                if self.eat(b']') {
                    return Ok(Value::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    if self.eat(b']') {
                        return Ok(Value::Array(items));
                    }
                    if !self.eat(b',') {
                        return Err(format!("expected `,` or `]` at {}", self.i));
                    }
                }
            }
            Some(_) => self.leaf(),
            None => Err("unexpected end".into()),
        }
    }

    fn object(&mut self, depth: usize) -> std::result::Result<Value, String> {
        self.i += 1;
        let mut map = serde_json::Map::new();
        if self.eat(b'}') {
            return Ok(Value::Object(map));
        }
        loop {
            self.ws();
            let key = match self.s.get(self.i) {
                Some(b'"') => match self.leaf()? {
                    Value::String(s) => s,
                    _ => unreachable!("a quote starts a string"),
                },
                Some(b'{') => self.object(depth + 1)?.to_string(),
                _ => return Err(format!("expected a key at {}", self.i)),
            };
            if !self.eat(b':') {
                return Err(format!("expected `:` at {}", self.i));
            }
            let value = self.value(depth + 1)?;
            map.insert(key, value);
            if self.eat(b'}') {
                return Ok(Value::Object(map));
            }
            if !self.eat(b',') {
                return Err(format!("expected `,` or `}}` at {}", self.i));
            }
        }
    }

    /// A string, number, `true`, `false` or `null`, read by serde_json.
    fn leaf(&mut self) -> std::result::Result<Value, String> {
        let mut stream =
            serde_json::Deserializer::from_slice(&self.s[self.i..]).into_iter::<Value>();
        let value = match stream.next() {
            Some(Ok(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null))) => v,
            Some(Ok(_)) => return Err(format!("unexpected value at {}", self.i)),
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("unexpected end".into()),
        };
        self.i += stream.byte_offset();
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mq(topic: &str, queue_id: i32) -> MessageQueueData {
        MessageQueueData {
            topic: topic.into(),
            broker_name: "broker-a".into(),
            queue_id,
        }
    }

    /// What fastjson writes for a `ConsumeStats` (keys are `MessageQueue` objects, fields
    /// sorted) is what we write, and reads back.
    #[test]
    fn consume_stats_are_written_as_fastjson_writes_them() {
        let mut stats = ConsumeStats::default();
        stats.offset_table.0.insert(
            mq("T", 1),
            OffsetWrapper {
                broker_offset: 10,
                consumer_offset: 4,
                last_timestamp: 1_700_000_000_000,
            },
        );
        stats
            .offset_table
            .0
            .insert(mq("T", 0), OffsetWrapper::default());
        let text = String::from_utf8(stats.encode()).unwrap();
        assert_eq!(
            text,
            "{\"consumeTps\":0.0,\"offsetTable\":{\
             {\"brokerName\":\"broker-a\",\"queueId\":0,\"topic\":\"T\"}:\
             {\"brokerOffset\":0,\"consumerOffset\":0,\"lastTimestamp\":0},\
             {\"brokerName\":\"broker-a\",\"queueId\":1,\"topic\":\"T\"}:\
             {\"brokerOffset\":10,\"consumerOffset\":4,\"lastTimestamp\":1700000000000}}}"
        );
        let back = ConsumeStats::decode(text.as_bytes()).unwrap();
        assert_eq!(back, stats);
        assert_eq!(back.total_diff(), 6);
    }

    /// fastjson's own output (pretty, fields in its order, spaces) reads as well.
    #[test]
    fn stock_bodies_decode() {
        let stock = br#"{
            "offsetTable":{{"brokerName":"b","queueId":3,"topic":"T%1"}:
                {"lastUpdateTimestamp":7,"maxOffset":9,"minOffset":2}}
        }"#;
        let table = TopicStatsTable::decode(stock).unwrap();
        let (q, o) = table.offset_table.0.iter().next().unwrap();
        assert_eq!(
            (q.topic.as_str(), q.broker_name.as_str(), q.queue_id),
            ("T%1", "b", 3)
        );
        assert_eq!(
            (o.min_offset, o.max_offset, o.last_update_timestamp),
            (2, 9, 7)
        );
        let reset = ResetOffsetBody::decode(
            br#"{"offsetTable":{{"brokerName":"b","queueId":0,"topic":"T"}:42}}"#,
        )
        .unwrap();
        assert_eq!(
            reset.offset_table.0.values().copied().collect::<Vec<_>>(),
            [42]
        );
    }

    /// A running info as a Java client writes it (fastjson: `MessageQueue` keys, Java's
    /// field names, a number among the properties) reads, and ours reads back the same.
    #[test]
    fn consumer_running_info_reads_as_java_writes_it() {
        let stock = br#"{"jstack":"","mqTable":{{"brokerName":"b","queueId":1,"topic":"T"}:
            {"cachedMsgCount":2,"cachedMsgMaxOffset":11,"cachedMsgMinOffset":10,
             "cachedMsgSizeInMiB":0,"commitOffset":10,"droped":false,"lastConsumeTimestamp":5,
             "lastLockTimestamp":0,"lastPullTimestamp":6,"locked":false,
             "transactionMsgCount":0,"transactionMsgMaxOffset":0,"transactionMsgMinOffset":0,
             "tryUnlockTimes":0}},
            "properties":{"PROP_CONSUME_TYPE":"CONSUME_PASSIVELY","pullBatchSize":32},
            "statusTable":{"T":{"consumeFailedMsgs":1,"consumeFailedTPS":0.5,
             "consumeOKTPS":12.5,"consumeRT":3.0,"pullRT":1.5,"pullTPS":4.0}},
            "subscriptionSet":[{"classFilterMode":false,"codeSet":[],"expressionType":"TAG",
             "subString":"*","subVersion":1,"tagsSet":[],"topic":"T"}]}"#;
        let info = ConsumerRunningInfo::decode(stock).unwrap();
        assert_eq!(info.properties["PROP_CONSUME_TYPE"], "CONSUME_PASSIVELY");
        assert_eq!(info.properties["pullBatchSize"], "32");
        let pq = info.mq_table.0[&mq_of("b", "T", 1)];
        assert_eq!((pq.commit_offset, pq.cached_msg_count), (10, 2));
        assert_eq!((pq.last_pull_timestamp, pq.last_consume_timestamp), (6, 5));
        assert_eq!(info.status_table["T"].consume_ok_tps, 12.5);
        assert_eq!(info.status_table["T"].consume_failed_msgs, 1);
        assert_eq!(info.subscription_set[0].topic, "T");
        assert_eq!(info.jstack.as_deref(), Some(""));
        let back = ConsumerRunningInfo::decode(&info.encode()).unwrap();
        assert_eq!(back, info);
        // A client that leaves tables out is still read.
        let bare = ConsumerRunningInfo::decode(br#"{"properties":{}}"#).unwrap();
        assert!(bare.mq_table.0.is_empty() && bare.status_table.is_empty());
    }

    fn mq_of(broker: &str, topic: &str, queue_id: i32) -> MessageQueueData {
        MessageQueueData {
            topic: topic.into(),
            broker_name: broker.into(),
            queue_id,
        }
    }

    #[test]
    fn malformed_fastjson_is_an_error_not_a_panic() {
        for bad in [
            &b"{"[..],
            b"{{\"a\":1}}",
            b"{\"a\":1,}",
            b"[1,2",
            b"{\"a\":1} x",
            b"{1:2}",
        ] {
            assert!(
                parse_fastjson("t", bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse_fastjson("t", deep.as_bytes()).is_err());
    }
}
