//! The user's message types: [`Message`] to send, [`MessageExt`] as received,
//! [`MessageQueue`] naming one queue of one broker group.
//!
//! A [`MessageExt`] owns its data (decoded from the broker's stored records), so a
//! listener may keep it after the pull buffer is gone.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;
use remoting::message::{message_id, properties_iter, property, sys_flag, MessageRecord};

use crate::error::{ClientError, Result};

/// RocketMQ separates several keys in the KEYS property with a space.
pub const KEY_SEPARATOR: &str = " ";

/// RocketMQ's longest topic name (`Validators.TOPIC_MAX_LENGTH`).
pub const TOPIC_MAX_LENGTH: usize = 127;

/// One queue of one broker group. Ordered by broker name, then queue id, as RocketMQ
/// sorts them for allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageQueue {
    pub topic: String,
    pub broker_name: String,
    pub queue_id: i32,
}

impl MessageQueue {
    pub fn new(topic: impl Into<String>, broker_name: impl Into<String>, queue_id: i32) -> Self {
        MessageQueue {
            topic: topic.into(),
            broker_name: broker_name.into(),
            queue_id,
        }
    }
}

impl fmt::Display for MessageQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MessageQueue [topic={}, brokerName={}, queueId={}]",
            self.topic, self.broker_name, self.queue_id
        )
    }
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub body: Bytes,
    /// RocketMQ's user flag, stored with the message and not interpreted.
    pub flag: i32,
    /// User and system properties (TAGS, KEYS, DELAY, ...). The producer adds UNIQ_KEY
    /// and WAIT.
    pub properties: BTreeMap<String, String>,
}

impl Message {
    pub fn new(topic: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Message {
            topic: topic.into(),
            body: body.into(),
            flag: 0,
            properties: BTreeMap::new(),
        }
    }

    /// Sets the message's tag (one per message; consumers filter on it).
    pub fn with_tags(mut self, tags: impl Into<String>) -> Self {
        self.properties
            .insert(property::TAGS.to_string(), tags.into());
        self
    }

    /// Sets the message's keys (indexed by the broker for look-up by key).
    pub fn with_keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let joined = keys
            .into_iter()
            .map(|k| k.as_ref().to_string())
            .collect::<Vec<_>>()
            .join(KEY_SEPARATOR);
        self.properties.insert(property::KEYS.to_string(), joined);
        self
    }

    /// Sets a user property.
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }

    /// Delays delivery by one of the broker's delay levels (RocketMQ 4.x; property
    /// DELAY). With RocketMQ's default `messageDelayLevel` the levels are 1 s, 5 s, 10 s,
    /// 30 s, 1 min, 2 min, ... 10 min, 20 min, 30 min, 1 h, 2 h (1 to 18); a broker treats a
    /// level above its highest as its highest, and 0 as no delay. A negative level is
    /// refused when the message is sent. Replaces any delay set before (see
    /// [`Self::with_deliver_time_ms`]).
    pub fn with_delay_time_level(self, level: i32) -> Self {
        self.with_schedule(property::DELAY_TIME_LEVEL, level.into())
    }

    /// Delivers the message at `epoch_ms` (milliseconds since the Unix epoch; property
    /// TIMER_DELIVER_MS), a RocketMQ 5 timer message. A time in the past is delivered at
    /// once; RocketMQ 5's broker refuses (MESSAGE_ILLEGAL) a time more than
    /// `timerMaxDelaySec` ahead (3 days by default) and rounds down to its
    /// `timerPrecisionMs` (1 s). A broker without timer messages (RocketMQ 4.x) ignores
    /// the property and delivers at once. A negative time is refused when the message is
    /// sent.
    ///
    /// A message has one delay: a delay level, a delivery time or a delay from now. Each
    /// of these four setters replaces the others, and a message whose properties (set
    /// with [`Self::with_property`]) hold two of them is refused when sent.
    pub fn with_deliver_time_ms(self, epoch_ms: i64) -> Self {
        self.with_schedule(property::TIMER_DELIVER_MS, epoch_ms)
    }

    /// Delivers the message `delay_ms` milliseconds after the broker stores it (property
    /// TIMER_DELAY_MS), a RocketMQ 5 timer message; see [`Self::with_deliver_time_ms`].
    pub fn with_delay_time_ms(self, delay_ms: i64) -> Self {
        self.with_schedule(property::TIMER_DELAY_MS, delay_ms)
    }

    /// Delivers the message `delay_sec` seconds after the broker stores it (property
    /// TIMER_DELAY_SEC), a RocketMQ 5 timer message; see [`Self::with_deliver_time_ms`].
    pub fn with_delay_time_sec(self, delay_sec: i64) -> Self {
        self.with_schedule(property::TIMER_DELAY_SEC, delay_sec)
    }

    fn with_schedule(mut self, name: &str, value: i64) -> Self {
        for p in SCHEDULE_PROPERTIES {
            self.properties.remove(p);
        }
        self.properties.insert(name.to_string(), value.to_string());
        self
    }

    /// The delay level (property DELAY), 0 when there is none (RocketMQ's
    /// `getDelayTimeLevel`).
    pub fn delay_time_level(&self) -> i32 {
        self.property(property::DELAY_TIME_LEVEL)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Whether the broker should answer only once the message is stored (WAIT, default
    /// true).
    pub fn with_wait_store_msg_ok(mut self, wait: bool) -> Self {
        self.properties
            .insert(property::WAIT_STORE_MSG_OK.to_string(), wait.to_string());
        self
    }

    pub fn tags(&self) -> Option<&str> {
        self.property(property::TAGS)
    }

    pub fn keys(&self) -> Option<&str> {
        self.property(property::KEYS)
    }

    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }

    /// The client-generated unique id (UNIQ_KEY), once the producer has set it.
    pub fn uniq_key(&self) -> Option<&str> {
        self.property(property::UNIQ_KEY)
    }

    /// RocketMQ's `Validators.checkMessage`: what a broker would refuse anyway.
    pub fn validate(&self, max_message_bytes: usize) -> Result<()> {
        let bad = |reason: String| ClientError::InvalidMessage {
            topic: self.topic.clone(),
            reason,
        };
        validate_topic(&self.topic).map_err(bad)?;
        if self.body.is_empty() {
            return Err(bad("the body is empty".into()));
        }
        if self.body.len() > max_message_bytes {
            return Err(bad(format!(
                "the body is {} bytes, over the maximum of {max_message_bytes}",
                self.body.len()
            )));
        }
        for (k, v) in &self.properties {
            if k.contains(['\u{1}', '\u{2}']) || v.contains(['\u{1}', '\u{2}']) {
                return Err(bad(format!(
                    "property `{k}` holds a separator character (\\u0001 or \\u0002)"
                )));
            }
        }
        self.schedule().map_err(bad)?;
        Ok(())
    }

    /// The property that delays the message (a delay level above 0, or a timer
    /// property), if any; an error for a value that is not a number, a negative one, or
    /// two delays at once.
    pub(crate) fn schedule(&self) -> std::result::Result<Option<&'static str>, String> {
        let mut found = Vec::new();
        for name in SCHEDULE_PROPERTIES {
            let Some(value) = self.property(name) else {
                continue;
            };
            let n: i64 = value
                .parse()
                .map_err(|_| format!("{name} is `{value}`, not a whole number"))?;
            if n < 0 {
                return Err(match name {
                    property::DELAY_TIME_LEVEL => format!(
                        "the delay level (DELAY) is {n}: levels start at 1 (0 means no delay)"
                    ),
                    _ => format!("{name} is {n}: a delivery time or delay cannot be negative"),
                });
            }
            if name == property::DELAY_TIME_LEVEL && n > i64::from(i32::MAX) {
                return Err(format!("the delay level (DELAY) {n} is not a level"));
            }
            // DELAY=0 is "no delay"; a timer property always schedules.
            if name != property::DELAY_TIME_LEVEL || n > 0 {
                found.push(name);
            }
        }
        match found[..] {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            _ => Err(format!(
                "{} are all set: a message has one delay (a delay level, a delivery time or a \
                 delay from now)",
                found.join(" and ")
            )),
        }
    }
}

/// The properties that delay a message: RocketMQ 4.x's delay level and RocketMQ 5's
/// timer properties. At most one of them is set on a message this client sends.
pub(crate) const SCHEDULE_PROPERTIES: [&str; 4] = [
    property::DELAY_TIME_LEVEL,
    property::TIMER_DELIVER_MS,
    property::TIMER_DELAY_MS,
    property::TIMER_DELAY_SEC,
];

/// A topic name RocketMQ accepts: 1 to 127 of `[%|a-zA-Z0-9_-]`.
pub fn validate_topic(topic: &str) -> std::result::Result<(), String> {
    if topic.is_empty() {
        return Err("the topic is empty".into());
    }
    if topic.len() > TOPIC_MAX_LENGTH {
        return Err(format!(
            "the topic is {} characters, over {TOPIC_MAX_LENGTH}",
            topic.len()
        ));
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '_' | '-')))
    {
        return Err(format!(
            "the topic holds `{c}`; only [%|a-zA-Z0-9_-] are allowed"
        ));
    }
    Ok(())
}

/// A message as stored and delivered: the record's fields, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageExt {
    pub topic: String,
    pub queue_id: i32,
    pub queue_offset: i64,
    pub commit_log_offset: i64,
    pub flag: i32,
    pub sys_flag: i32,
    pub body: Bytes,
    /// The body CRC the broker stored.
    pub body_crc: i32,
    pub properties: BTreeMap<String, String>,
    pub born_timestamp: i64,
    pub born_host: SocketAddr,
    pub store_timestamp: i64,
    pub store_host: SocketAddr,
    pub reconsume_times: i32,
    pub prepared_transaction_offset: i64,
    /// The broker's id of the stored record: store host and commit log offset.
    pub offset_msg_id: String,
    /// The broker group it was pulled from.
    pub broker_name: String,
}

impl MessageExt {
    /// Copies one decoded record out of a pull body.
    pub fn from_record(record: &MessageRecord<'_>, broker_name: &str) -> Self {
        MessageExt {
            topic: record.topic.to_string(),
            queue_id: record.queue_id,
            queue_offset: record.queue_offset,
            commit_log_offset: record.commit_log_offset,
            flag: record.flag,
            sys_flag: record.sys_flag,
            body: Bytes::copy_from_slice(record.body),
            body_crc: record.body_crc,
            properties: properties_iter(record.properties)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            born_timestamp: record.born_timestamp,
            born_host: record.born_host,
            store_timestamp: record.store_timestamp,
            store_host: record.store_host,
            reconsume_times: record.reconsume_times,
            prepared_transaction_offset: record.prepared_transaction_offset,
            offset_msg_id: message_id(record.store_host, record.commit_log_offset),
            broker_name: broker_name.to_string(),
        }
    }

    /// Decodes a pull body (a run of stored records). Compressed bodies are inflated;
    /// a message whose body cannot be inflated is logged at ERROR and left out, never
    /// delivered as garbage ([`crate::compression`]).
    pub fn decode_all(body: &[u8], broker_name: &str) -> remoting::Result<Vec<MessageExt>> {
        Ok(remoting::message::decode_records(body)?
            .iter()
            .filter_map(|r| {
                let mut m = MessageExt::from_record(r, broker_name);
                match crate::compression::inflate(m.sys_flag, &m.body) {
                    Ok(None) => Some(m),
                    Ok(Some(plain)) => {
                        m.body = plain;
                        Some(m)
                    }
                    Err(e) => {
                        tracing::error!(
                            topic = %m.topic, queue_id = m.queue_id, queue_offset = m.queue_offset,
                            broker_name, msg_id = %m.msg_id(), offset_msg_id = %m.offset_msg_id,
                            sys_flag = m.sys_flag, error = %e,
                            "compressed message body cannot be read: not delivered (it stays stored)"
                        );
                        None
                    }
                }
            })
            .collect())
    }

    /// The id the producer's user saw: UNIQ_KEY, or the broker's offset msgId for a
    /// message sent without one.
    pub fn msg_id(&self) -> &str {
        self.property(property::UNIQ_KEY)
            .unwrap_or(&self.offset_msg_id)
    }

    pub fn tags(&self) -> Option<&str> {
        self.property(property::TAGS)
    }

    pub fn keys(&self) -> Option<&str> {
        self.property(property::KEYS)
    }

    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }

    /// True when the stored body was compressed (the producer compressed a large body);
    /// [`Self::body`] is already inflated. SYSFLAG is kept as stored, as Java keeps it.
    pub fn is_body_compressed(&self) -> bool {
        self.sys_flag & sys_flag::COMPRESSED != 0
    }

    /// The queue this message came from.
    pub fn queue(&self) -> MessageQueue {
        MessageQueue::new(self.topic.clone(), self.broker_name.clone(), self.queue_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use remoting::message::{body_crc, encode_properties};

    fn record<'a>(props: &'a str, body: &'a [u8], offset: i64) -> MessageRecord<'a> {
        MessageRecord {
            topic: "TopicTest",
            queue_id: 2,
            flag: 5,
            queue_offset: offset,
            commit_log_offset: 1000 + offset,
            sys_flag: 0,
            born_timestamp: 1_700_000_000_001,
            born_host: "10.0.0.9:51234".parse().unwrap(),
            store_timestamp: 1_700_000_000_002,
            store_host: "127.0.0.1:10911".parse().unwrap(),
            reconsume_times: 3,
            prepared_transaction_offset: 0,
            body,
            properties: props,
            body_crc: body_crc(body),
        }
    }

    /// Proves a pull body of two records decodes into owned messages with every field,
    /// the UNIQ_KEY as msg_id and the store host + offset as offset_msg_id.
    #[test]
    fn pull_body_decodes_into_owned_messages() {
        let props = encode_properties([
            ("TAGS", "TagA"),
            ("KEYS", "k1 k2"),
            ("UNIQ_KEY", "0A00000900002A9F0000000000000001"),
        ]);
        let mut buf = BytesMut::new();
        record(&props, b"hello", 7).encode(&mut buf).unwrap();
        record("", b"world", 8).encode(&mut buf).unwrap();
        let msgs = MessageExt::decode_all(&buf, "broker-a").unwrap();
        assert_eq!(msgs.len(), 2);
        let m = &msgs[0];
        assert_eq!(m.topic, "TopicTest");
        assert_eq!(
            (m.queue_id, m.queue_offset, m.commit_log_offset),
            (2, 7, 1007)
        );
        assert_eq!(&m.body[..], b"hello");
        assert_eq!(m.tags(), Some("TagA"));
        assert_eq!(m.keys(), Some("k1 k2"));
        assert_eq!(m.msg_id(), "0A00000900002A9F0000000000000001");
        assert_eq!(m.offset_msg_id, "7F00000100002A9F00000000000003EF");
        assert_eq!(m.reconsume_times, 3);
        assert_eq!(m.flag, 5);
        assert_eq!(m.born_timestamp, 1_700_000_000_001);
        assert_eq!(m.store_timestamp, 1_700_000_000_002);
        assert_eq!(m.queue(), MessageQueue::new("TopicTest", "broker-a", 2));
        // Without UNIQ_KEY the msg_id falls back to the broker's id.
        assert_eq!(msgs[1].msg_id(), msgs[1].offset_msg_id);
        assert_eq!(msgs[1].tags(), None);
        // A torn body is an error, not a short list.
        assert!(MessageExt::decode_all(&buf[..buf.len() - 1], "b").is_err());
    }

    /// Proves the checks RocketMQ's Validators make are made before sending.
    #[test]
    fn validation_refuses_what_a_broker_would() {
        assert!(Message::new("T", "x").validate(10).is_ok());
        assert!(Message::new("", "x").validate(10).is_err());
        assert!(Message::new("T", "").validate(10).is_err());
        assert!(Message::new("T", "x".repeat(11)).validate(10).is_err());
        assert!(Message::new("a b", "x").validate(10).is_err());
        assert!(Message::new("t".repeat(128), "x").validate(10).is_err());
        assert!(Message::new("%RETRY%g|x-_1", "x").validate(10).is_ok());
        assert!(Message::new("T", "x")
            .with_property("a\u{1}", "b")
            .validate(10)
            .is_err());
        let m = Message::new("T", "x").with_keys(["a", "b"]).with_tags("t");
        assert_eq!(m.keys(), Some("a b"));
        assert_eq!(m.tags(), Some("t"));
    }

    /// Proves a message holds one delay (each setter replaces the others), DELAY=0 is no
    /// delay, and negative, unparsable or doubled delays are refused by validation.
    #[test]
    fn one_delay_per_message() {
        let m = Message::new("T", "x")
            .with_delay_time_sec(5)
            .with_delay_time_level(4);
        assert_eq!(m.delay_time_level(), 4);
        assert_eq!(m.property(property::TIMER_DELAY_SEC), None);
        assert_eq!(m.schedule(), Ok(Some(property::DELAY_TIME_LEVEL)));
        let m = m.with_deliver_time_ms(1_900_000_000_000);
        assert_eq!(m.delay_time_level(), 0);
        assert_eq!(m.schedule(), Ok(Some(property::TIMER_DELIVER_MS)));
        assert!(m.validate(10).is_ok());
        assert_eq!(Message::new("T", "x").schedule(), Ok(None));
        let zero = Message::new("T", "x").with_delay_time_level(0);
        assert_eq!(zero.schedule(), Ok(None));
        // A delivered timer message re-sent with DELAY=0 is not two delays.
        assert!(zero
            .with_property(property::TIMER_DELIVER_MS, "1")
            .validate(10)
            .is_ok());
        for bad in [
            Message::new("T", "x").with_delay_time_level(-2),
            Message::new("T", "x").with_delay_time_ms(-1),
            Message::new("T", "x").with_property(property::TIMER_DELAY_SEC, "1.5"),
            Message::new("T", "x")
                .with_delay_time_ms(1)
                .with_property(property::TIMER_DELAY_SEC, "1"),
        ] {
            assert!(bad.validate(10).is_err(), "{bad:?}");
        }
    }
}
