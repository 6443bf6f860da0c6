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
