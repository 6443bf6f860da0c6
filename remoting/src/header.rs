//! Typed headers: the `extFields` of each request and response this project serves,
//! with RocketMQ's field names.
//!
//! Fields are read as RocketMQ's Java broker reads them (`RemotingCommand.
//! decodeCommandCustomHeader`): what Java marks `@CFNotNull` is required here, every other
//! field is optional and takes its default when missing, numbers are decimal and booleans
//! follow `Boolean.parseBoolean` (never an error). A required field that is missing, a
//! number that does not parse, or a name that breaks RocketMQ's rules
//! ([`crate::names`]) is a [`Error::BadHeaderField`] naming the field, so the server can
//! answer with a readable remark (the Java broker fails such a request with
//! SYSTEM_ERROR too, once its processor meets the missing value).

use crate::error::{Error, Result};
use crate::ext::ExtFields;
use crate::names::{self, NameKind};

/// RocketMQ's `MixAll.UNIQUE_MSG_QUERY_FLAG`: the QUERY_MESSAGE ext field that marks the key
/// as a unique key.
pub const UNIQUE_MSG_QUERY_FLAG: &str = "_UNIQUE_KEY_QUERY";

/// A header carried in `extFields`.
pub trait CommandHeader: Sized {
    fn write(&self, ext: &mut ExtFields);
    fn read(ext: &ExtFields) -> Result<Self>;
}

/// A value that can stand in `extFields` (always a string on the wire).
pub trait ExtValue: Sized {
    /// Sets `key` to this value; an absent optional value sets nothing.
    fn put_ext(&self, key: &'static str, ext: &mut ExtFields);
    fn from_ext(value: Option<&str>, field: &'static str) -> Result<Self>;
}

fn missing(field: &'static str) -> Error {
    Error::BadHeaderField {
        field,
        reason: "missing".into(),
    }
}

impl ExtValue for String {
    fn put_ext(&self, key: &'static str, ext: &mut ExtFields) {
        ext.insert(key, self);
    }
    fn from_ext(value: Option<&str>, field: &'static str) -> Result<Self> {
        value.map(str::to_string).ok_or_else(|| missing(field))
    }
}

macro_rules! numeric_ext {
    ($($t:ty),*) => {$(
        impl ExtValue for $t {
            fn put_ext(&self, key: &'static str, ext: &mut ExtFields) {
                let value = *self as i128;
                ext.insert_decimal(key, value < 0, value.unsigned_abs() as u64);
            }
            fn from_ext(value: Option<&str>, field: &'static str) -> Result<Self> {
                let value = value.ok_or_else(|| missing(field))?;
                value.trim().parse().map_err(|_| Error::BadHeaderField {
                    field,
                    reason: format!("`{value}` is not a valid {}", stringify!($t)),
                })
            }
        }
    )*};
}
numeric_ext!(i32, i64, u64);

impl ExtValue for bool {
    fn put_ext(&self, key: &'static str, ext: &mut ExtFields) {
        ext.insert(key, if *self { "true" } else { "false" });
    }
    /// As Java's broker reads it (`Boolean.parseBoolean`): `true` in any case is true,
    /// anything else, missing included, is false. Clients differ here: Apache's C++ client
    /// sends `0` and `1`, which Java reads as false (issue 15: refusing them refused
    /// every send of that client).
    fn from_ext(value: Option<&str>, _field: &'static str) -> Result<Self> {
        Ok(value.is_some_and(|v| v.eq_ignore_ascii_case("true")))
    }
}

impl<T: ExtValue> ExtValue for Option<T> {
    fn put_ext(&self, key: &'static str, ext: &mut ExtFields) {
        if let Some(value) = self {
            value.put_ext(key, ext);
        }
    }
    fn from_ext(value: Option<&str>, field: &'static str) -> Result<Self> {
        match value {
            None => Ok(None),
            Some(v) => T::from_ext(Some(v), field).map(Some),
        }
    }
}

/// A header field that holds a name RocketMQ has rules for ([`crate::names`]).
trait NameField {
    fn check_name(&self, kind: NameKind, field: &'static str) -> Result<()>;
}

impl NameField for String {
    fn check_name(&self, kind: NameKind, field: &'static str) -> Result<()> {
        names::check(kind, self).map_err(|bad| Error::BadHeaderField {
            field,
            reason: bad.to_string(),
        })
    }
}

impl NameField for Option<String> {
    fn check_name(&self, kind: NameKind, field: &'static str) -> Result<()> {
        // An empty optional name is an absent one: Apache's C++ client sends the group it
        // does not mean as "" (UNREGISTER_CLIENT), and Java reads nothing into it either.
        match self {
            Some(name) if !name.is_empty() => name.check_name(kind, field),
            _ => Ok(()),
        }
    }
}

/// Declares a header struct and its `extFields` mapping. A field marked `as Topic`,
/// `as Group` or `as ClientId` is checked by RocketMQ's rule for that name when the header
/// is read, so no handler can let a bad name through to the log or the disk.
macro_rules! command_header {
    ($(
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$fmeta:meta])* pub $field:ident : $ty:ty => $key:literal $(as $kind:ident)?,)*
        }
    )*) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl CommandHeader for $name {
            #[allow(unused_variables)]
            fn write(&self, ext: &mut ExtFields) {
                $(ExtValue::put_ext(&self.$field, $key, ext);)*
            }

            #[allow(unused_variables)]
            fn read(ext: &ExtFields) -> Result<Self> {
                let header = $name {
                    $($field: ExtValue::from_ext(ext.get($key), $key)?,)*
                };
                $($(NameField::check_name(&header.$field, NameKind::$kind, $key)?;)?)*
                Ok(header)
            }
        }
    )*};
}

command_header! {
    /// GET_ROUTEINFO_BY_TOPIC (105).
    pub struct GetRouteInfoRequestHeader {
        pub topic: String => "topic" as Topic,
    }

    /// REGISTER_BROKER (103). `raftTerm` is rocketraft's: with `brokerId` 0 it says
    /// "I lead my group in this term"; with any other id, "I follow in this term".
    pub struct RegisterBrokerRequestHeader {
        pub broker_name: String => "brokerName",
        pub broker_addr: String => "brokerAddr",
        pub cluster_name: String => "clusterName",
        pub ha_server_addr: String => "haServerAddr",
        pub broker_id: i64 => "brokerId",
        pub heartbeat_timeout_millis: Option<i64> => "heartbeatTimeoutMillis",
        pub enable_acting_master: Option<bool> => "enableActingMaster",
        pub compressed: Option<bool> => "compressed",
        pub body_crc32: Option<i32> => "bodyCrc32",
        pub raft_term: Option<u64> => "raftTerm",
    }

    /// The answer to REGISTER_BROKER.
    pub struct RegisterBrokerResponseHeader {
        pub ha_server_addr: Option<String> => "haServerAddr",
        pub master_addr: Option<String> => "masterAddr",
    }

    /// UNREGISTER_BROKER (104).
    pub struct UnRegisterBrokerRequestHeader {
        pub broker_name: String => "brokerName",
        pub broker_addr: String => "brokerAddr",
        pub cluster_name: String => "clusterName",
        pub broker_id: i64 => "brokerId",
    }

    /// QUERY_DATA_VERSION (322); the body is the broker's [`crate::route::DataVersion`].
    pub struct QueryDataVersionRequestHeader {
        pub broker_name: String => "brokerName",
        pub broker_addr: String => "brokerAddr",
        pub cluster_name: String => "clusterName",
        pub broker_id: i64 => "brokerId",
        pub raft_term: Option<u64> => "raftTerm",
    }

    /// The answer to QUERY_DATA_VERSION: whether the name server needs the topic table.
    pub struct QueryDataVersionResponseHeader {
        pub changed: bool => "changed",
    }

    /// SEND_MESSAGE (10). RocketMQ sends SEND_MESSAGE_V2 (310) and SEND_BATCH_MESSAGE
    /// (320) with the one-letter names of [`SendMessageRequestHeaderV2`].
    pub struct SendMessageRequestHeader {
        pub producer_group: String => "producerGroup" as Group,
        pub topic: String => "topic" as Topic,
        pub default_topic: String => "defaultTopic",
        pub default_topic_queue_nums: i32 => "defaultTopicQueueNums",
        pub queue_id: i32 => "queueId",
        pub sys_flag: i32 => "sysFlag",
        pub born_timestamp: i64 => "bornTimestamp",
        pub flag: i32 => "flag",
        pub properties: Option<String> => "properties",
        pub reconsume_times: Option<i32> => "reconsumeTimes",
        pub unit_mode: Option<bool> => "unitMode",
        pub batch: Option<bool> => "batch",
        pub max_reconsume_times: Option<i32> => "maxReconsumeTimes",
    }

    /// SEND_MESSAGE_V2 (310): the same fields under one-letter names.
    pub struct SendMessageRequestHeaderV2 {
        pub a: String => "a" as Group,
        pub b: String => "b" as Topic,
        pub c: String => "c",
        pub d: i32 => "d",
        pub e: i32 => "e",
        pub f: i32 => "f",
        pub g: i64 => "g",
        pub h: i32 => "h",
        pub i: Option<String> => "i",
        pub j: Option<i32> => "j",
        pub k: Option<bool> => "k",
        pub l: Option<i32> => "l",
        pub m: Option<bool> => "m",
    }

    /// The answer to a send.
    pub struct SendMessageResponseHeader {
        pub msg_id: String => "msgId",
        pub queue_id: i32 => "queueId",
        pub queue_offset: i64 => "queueOffset",
        pub transaction_id: Option<String> => "transactionId",
    }

    /// PULL_MESSAGE (11).
    pub struct PullMessageRequestHeader {
        pub consumer_group: String => "consumerGroup" as Group,
        pub topic: String => "topic" as Topic,
        pub queue_id: i32 => "queueId",
        pub queue_offset: i64 => "queueOffset",
        pub max_msg_nums: i32 => "maxMsgNums",
        pub sys_flag: i32 => "sysFlag",
        pub commit_offset: i64 => "commitOffset",
        pub suspend_timeout_millis: i64 => "suspendTimeoutMillis",
        pub subscription: Option<String> => "subscription",
        pub sub_version: i64 => "subVersion",
        pub expression_type: Option<String> => "expressionType",
        pub max_msg_bytes: Option<i32> => "maxMsgBytes",
    }

    /// The answer to PULL_MESSAGE.
    pub struct PullMessageResponseHeader {
        pub suggest_which_broker_id: i64 => "suggestWhichBrokerId",
        pub next_begin_offset: i64 => "nextBeginOffset",
        pub min_offset: i64 => "minOffset",
        pub max_offset: i64 => "maxOffset",
    }

    /// QUERY_CONSUMER_OFFSET (14).
    pub struct QueryConsumerOffsetRequestHeader {
        pub consumer_group: String => "consumerGroup" as Group,
        pub topic: String => "topic" as Topic,
        pub queue_id: i32 => "queueId",
        pub set_zero_if_not_found: Option<bool> => "setZeroIfNotFound",
    }

    /// The answer to QUERY_CONSUMER_OFFSET, GET_MAX_OFFSET, GET_MIN_OFFSET and
    /// SEARCH_OFFSET_BY_TIMESTAMP.
    pub struct OffsetResponseHeader {
        pub offset: i64 => "offset",
    }

    /// UPDATE_CONSUMER_OFFSET (15), sent oneway.
    pub struct UpdateConsumerOffsetRequestHeader {
        pub consumer_group: String => "consumerGroup" as Group,
        pub topic: String => "topic" as Topic,
        pub queue_id: i32 => "queueId",
        pub commit_offset: i64 => "commitOffset",
    }

    /// GET_MAX_OFFSET (30) and GET_MIN_OFFSET (31).
    pub struct QueueOffsetRequestHeader {
        pub topic: String => "topic" as Topic,
        pub queue_id: i32 => "queueId",
    }

    /// SEARCH_OFFSET_BY_TIMESTAMP (29).
    pub struct SearchOffsetRequestHeader {
        pub topic: String => "topic" as Topic,
        pub queue_id: i32 => "queueId",
        pub timestamp: i64 => "timestamp",
    }

    /// GET_CONSUMER_LIST_BY_GROUP (38) and NOTIFY_CONSUMER_IDS_CHANGED (40).
    pub struct ConsumerGroupRequestHeader {
        pub consumer_group: String => "consumerGroup" as Group,
    }

    /// END_TRANSACTION (37), usually oneway: a producer commits or rolls back the half
    /// message at `commitLogOffset`. `commitOrRollback` is a `MessageSysFlag` transaction
    /// type: 0 (not type: unknown), 8 (commit) or 12 (rollback).
    pub struct EndTransactionRequestHeader {
        pub producer_group: String => "producerGroup" as Group,
        pub tran_state_table_offset: i64 => "tranStateTableOffset",
        pub commit_log_offset: i64 => "commitLogOffset",
        pub commit_or_rollback: i32 => "commitOrRollback",
        pub from_transaction_check: Option<bool> => "fromTransactionCheck",
        pub msg_id: String => "msgId",
        pub transaction_id: Option<String> => "transactionId",
    }

    /// CHECK_TRANSACTION_STATE (39), oneway from the broker to a producer; the body is
    /// the half message for its real topic and queue.
    pub struct CheckTransactionStateRequestHeader {
        pub tran_state_table_offset: i64 => "tranStateTableOffset",
        pub commit_log_offset: i64 => "commitLogOffset",
        pub msg_id: Option<String> => "msgId",
        pub transaction_id: Option<String> => "transactionId",
        pub offset_msg_id: Option<String> => "offsetMsgId",
    }

    /// UNREGISTER_CLIENT (35).
    pub struct UnregisterClientRequestHeader {
        pub client_id: String => "clientID" as ClientId,
        pub producer_group: Option<String> => "producerGroup" as Group,
        pub consumer_group: Option<String> => "consumerGroup" as Group,
    }

    /// CONSUMER_SEND_MSG_BACK (36): a consumer gives a message it failed back to the
    /// broker, which stores it for a later retry (or in the group's DLQ).
    pub struct ConsumerSendMsgBackRequestHeader {
        /// CommitLog offset of the message.
        pub offset: i64 => "offset",
        pub group: String => "group" as Group,
        /// 0: the broker picks (3 + reconsume times); below 0: straight to the DLQ.
        pub delay_level: i32 => "delayLevel",
        pub origin_msg_id: Option<String> => "originMsgId",
        pub origin_topic: Option<String> => "originTopic" as Topic,
        pub unit_mode: Option<bool> => "unitMode",
        pub max_reconsume_times: Option<i32> => "maxReconsumeTimes",
    }

    /// QUERY_MESSAGE (12): messages of `topic` with `key` stored within
    /// `[beginTimestamp, endTimestamp]`; with the ext field [`UNIQUE_MSG_QUERY_FLAG`]
    /// `true`, `key` is a unique key (UNIQ_KEY).
    pub struct QueryMessageRequestHeader {
        pub topic: String => "topic" as Topic,
        pub key: String => "key",
        pub max_num: i32 => "maxNum",
        pub begin_timestamp: i64 => "beginTimestamp",
        pub end_timestamp: i64 => "endTimestamp",
    }

    /// The answer to QUERY_MESSAGE: how far the index reaches.
    pub struct QueryMessageResponseHeader {
        pub index_last_update_timestamp: i64 => "indexLastUpdateTimestamp",
        pub index_last_update_phyoffset: i64 => "indexLastUpdatePhyoffset",
    }

    /// VIEW_MESSAGE_BY_ID (33): the message at a CommitLog offset.
    pub struct ViewMessageRequestHeader {
        pub offset: i64 => "offset",
    }

    /// UPDATE_AND_CREATE_TOPIC (17).
    pub struct CreateTopicRequestHeader {
        pub topic: String => "topic" as Topic,
        pub default_topic: String => "defaultTopic",
        pub read_queue_nums: i32 => "readQueueNums",
        pub write_queue_nums: i32 => "writeQueueNums",
        pub perm: i32 => "perm",
        pub topic_filter_type: String => "topicFilterType",
        pub topic_sys_flag: Option<i32> => "topicSysFlag",
        pub order: bool => "order",
    }

    /// The answer to GET_BROKER_CONFIG (26): the config's data version, as JSON; the body
    /// is the config as `key=value` lines.
    pub struct GetBrokerConfigResponseHeader {
        pub version: String => "version",
    }

    /// GET_TOPIC_STATS_INFO (202) and QUERY_TOPIC_CONSUME_BY_WHO (300).
    pub struct TopicRequestHeader {
        pub topic: String => "topic" as Topic,
    }

    /// GET_CONSUME_STATS (208): one group's progress in `topic`, or in every topic it has
    /// offsets in when `topic` is absent or blank.
    pub struct GetConsumeStatsRequestHeader {
        pub consumer_group: String => "consumerGroup" as Group,
        pub topic: Option<String> => "topic" as Topic,
    }

    /// GET_CONSUMER_CONNECTION_LIST (203).
    pub struct GetConsumerConnectionListRequestHeader {
        pub consumer_group: String => "consumerGroup" as Group,
    }

    /// GET_PRODUCER_CONNECTION_LIST (204).
    pub struct GetProducerConnectionListRequestHeader {
        pub producer_group: String => "producerGroup" as Group,
    }

    /// GET_CONSUMER_RUNNING_INFO (307), to a broker and from it on to the client.
    pub struct GetConsumerRunningInfoRequestHeader {
        pub consumer_group: String => "consumerGroup" as Group,
        pub client_id: String => "clientId" as ClientId,
        pub jstack_enable: bool => "jstackEnable",
    }

    /// INVOKE_BROKER_TO_RESET_OFFSET (222), and RESET_CONSUMER_CLIENT_OFFSET (220) from the
    /// broker to each live client of the group. `timestamp` -1 means "the end of each queue".
    pub struct ResetOffsetRequestHeader {
        pub topic: String => "topic" as Topic,
        pub group: String => "group" as Group,
        pub timestamp: i64 => "timestamp",
        pub is_force: bool => "isForce",
    }

    /// GET_TOPICS_BY_CLUSTER (224).
    pub struct GetTopicsByClusterRequestHeader {
        pub cluster: String => "cluster" as BrokerName,
    }

    /// VIEW_BROKER_STATS_DATA (315).
    /// The key is a topic, `topic@group` or a cluster name: the client-id rule.
    pub struct ViewBrokerStatsDataRequestHeader {
        pub stats_name: String => "statsName" as BrokerName,
        pub stats_key: String => "statsKey" as BrokerName,
    }

    /// WIPE_WRITE_PERM_OF_BROKER (205) and ADD_WRITE_PERM_OF_BROKER (327), to a name server.
    pub struct BrokerNameRequestHeader {
        pub broker_name: String => "brokerName" as BrokerName,
    }

    /// The answer to WIPE_WRITE_PERM_OF_BROKER: how many topics lost write permission.
    pub struct WipeWritePermOfBrokerResponseHeader {
        pub wipe_topic_count: i32 => "wipeTopicCount",
    }

    /// The answer to ADD_WRITE_PERM_OF_BROKER: how many topics got write permission back.
    pub struct AddWritePermOfBrokerResponseHeader {
        pub add_topic_count: i32 => "addTopicCount",
    }

    /// DELETE_TOPIC_IN_NAMESRV (216): from every group, or only from `clusterName`'s.
    pub struct DeleteTopicFromNamesrvRequestHeader {
        pub topic: String => "topic" as Topic,
        pub cluster_name: Option<String> => "clusterName" as BrokerName,
    }

    /// PUT_KV_CONFIG (100).
    pub struct PutKVConfigRequestHeader {
        pub namespace: String => "namespace" as BrokerName,
        pub key: String => "key" as BrokerName,
        pub value: String => "value",
    }

    /// GET_KV_CONFIG (101) and DELETE_KV_CONFIG (102).
    pub struct KVConfigRequestHeader {
        pub namespace: String => "namespace" as BrokerName,
        pub key: String => "key" as BrokerName,
    }

    /// The answer to GET_KV_CONFIG.
    pub struct GetKVConfigResponseHeader {
        pub value: Option<String> => "value",
    }
}

impl From<SendMessageRequestHeaderV2> for SendMessageRequestHeader {
    fn from(v2: SendMessageRequestHeaderV2) -> Self {
        SendMessageRequestHeader {
            producer_group: v2.a,
            topic: v2.b,
            default_topic: v2.c,
            default_topic_queue_nums: v2.d,
            queue_id: v2.e,
            sys_flag: v2.f,
            born_timestamp: v2.g,
            flag: v2.h,
            properties: v2.i,
            reconsume_times: v2.j,
            unit_mode: v2.k,
            max_reconsume_times: v2.l,
            batch: v2.m,
        }
    }
}

impl From<SendMessageRequestHeader> for SendMessageRequestHeaderV2 {
    fn from(v1: SendMessageRequestHeader) -> Self {
        SendMessageRequestHeaderV2 {
            a: v1.producer_group,
            b: v1.topic,
            c: v1.default_topic,
            d: v1.default_topic_queue_nums,
            e: v1.queue_id,
            f: v1.sys_flag,
            g: v1.born_timestamp,
            h: v1.flag,
            i: v1.properties,
            j: v1.reconsume_times,
            k: v1.unit_mode,
            l: v1.max_reconsume_times,
            m: v1.batch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip<H: CommandHeader + PartialEq + std::fmt::Debug>(h: H) {
        let mut ext = ExtFields::new();
        h.write(&mut ext);
        assert_eq!(H::read(&ext).unwrap(), h);
    }

    #[test]
    fn every_header_round_trips() {
        round_trip(GetRouteInfoRequestHeader { topic: "T".into() });
        round_trip(RegisterBrokerRequestHeader {
            broker_name: "broker-a".into(),
            broker_addr: "127.0.0.1:10911".into(),
            cluster_name: "DefaultCluster".into(),
            ha_server_addr: "".into(),
            broker_id: 0,
            heartbeat_timeout_millis: Some(120_000),
            enable_acting_master: Some(false),
            compressed: Some(false),
            body_crc32: Some(-5),
            raft_term: Some(7),
        });
        round_trip(RegisterBrokerResponseHeader::default());
        round_trip(UnRegisterBrokerRequestHeader::default());
        round_trip(QueryDataVersionRequestHeader::default());
        round_trip(QueryDataVersionResponseHeader { changed: true });
        round_trip(QueryMessageRequestHeader {
            topic: "T".into(),
            key: "order-1".into(),
            max_num: 64,
            begin_timestamp: 0,
            end_timestamp: i64::MAX,
        });
        round_trip(QueryMessageResponseHeader {
            index_last_update_timestamp: 1_700_000_000_000,
            index_last_update_phyoffset: 4096,
        });
        round_trip(ViewMessageRequestHeader { offset: 123 });
        round_trip(SendMessageRequestHeader {
            producer_group: "pg".into(),
            topic: "T".into(),
            default_topic: "TBW102".into(),
            properties: Some("TAGS\u{1}a\u{2}".into()),
            batch: Some(true),
            ..Default::default()
        });
        round_trip(SendMessageRequestHeaderV2 {
            a: "pg".into(),
            b: "T".into(),
            ..Default::default()
        });
        round_trip(SendMessageResponseHeader::default());
        round_trip(PullMessageRequestHeader {
            consumer_group: "g".into(),
            topic: "T".into(),
            subscription: Some("*".into()),
            ..Default::default()
        });
        round_trip(PullMessageResponseHeader::default());
        round_trip(QueryConsumerOffsetRequestHeader {
            consumer_group: "g".into(),
            topic: "T".into(),
            ..Default::default()
        });
        round_trip(OffsetResponseHeader { offset: -1 });
        round_trip(UpdateConsumerOffsetRequestHeader {
            consumer_group: "g".into(),
            topic: "T".into(),
            ..Default::default()
        });
        round_trip(QueueOffsetRequestHeader {
            topic: "T".into(),
            ..Default::default()
        });
        round_trip(SearchOffsetRequestHeader {
            topic: "T".into(),
            ..Default::default()
        });
        round_trip(ConsumerGroupRequestHeader {
            consumer_group: "g".into(),
        });
        round_trip(UnregisterClientRequestHeader {
            client_id: "127.0.0.1@1#2".into(),
            ..Default::default()
        });
        round_trip(CreateTopicRequestHeader {
            topic: "T".into(),
            ..Default::default()
        });
        round_trip(ResetOffsetRequestHeader {
            topic: "T".into(),
            group: "g".into(),
            timestamp: -1,
            is_force: true,
        });
        round_trip(GetConsumeStatsRequestHeader {
            consumer_group: "g".into(),
            topic: None,
        });
        round_trip(GetConsumerRunningInfoRequestHeader {
            consumer_group: "g".into(),
            client_id: "127.0.0.1@1".into(),
            jstack_enable: false,
        });
        round_trip(PutKVConfigRequestHeader {
            namespace: "ORDER_TOPIC_CONFIG".into(),
            key: "T".into(),
            value: "broker-a:4".into(),
        });
        round_trip(DeleteTopicFromNamesrvRequestHeader {
            topic: "T".into(),
            cluster_name: Some("DefaultCluster".into()),
        });
        round_trip(ConsumerSendMsgBackRequestHeader {
            offset: 4567,
            group: "CG".into(),
            delay_level: 0,
            origin_msg_id: Some("C0A8000100002A9F0000000000001234".into()),
            origin_topic: Some("TopicTest".into()),
            unit_mode: Some(false),
            max_reconsume_times: Some(16),
        });
    }

    /// Issue 15: names are checked by RocketMQ's rules as the header is read.
    #[test]
    fn bad_names_are_refused_naming_the_field() {
        let mut ext = ExtFields::new();
        UpdateConsumerOffsetRequestHeader {
            consumer_group: "app\0g".into(),
            topic: "TBW102".into(),
            queue_id: 0,
            commit_offset: 1,
        }
        .write(&mut ext);
        match UpdateConsumerOffsetRequestHeader::read(&ext) {
            Err(Error::BadHeaderField {
                field: "consumerGroup",
                reason,
            }) => assert!(reason.contains("app\\0g"), "{reason}"),
            other => panic!("{other:?}"),
        }
        ext.insert("consumerGroup", "g");
        ext.insert("topic", &"t".repeat(128));
        match UpdateConsumerOffsetRequestHeader::read(&ext) {
            Err(Error::BadHeaderField { field: "topic", .. }) => {}
            other => panic!("{other:?}"),
        }
        let mut ext = ExtFields::new();
        ext.insert("clientID", "a\nb");
        assert!(UnregisterClientRequestHeader::read(&ext).is_err());
    }

    #[test]
    fn v1_and_v2_send_headers_carry_the_same_fields() {
        let v1 = SendMessageRequestHeader {
            producer_group: "pg".into(),
            topic: "T".into(),
            default_topic: "TBW102".into(),
            default_topic_queue_nums: 4,
            queue_id: 3,
            sys_flag: 0,
            born_timestamp: 1_700_000_000_000,
            flag: 0,
            properties: Some("KEYS\u{1}k\u{2}".into()),
            reconsume_times: Some(0),
            unit_mode: Some(false),
            batch: Some(false),
            max_reconsume_times: None,
        };
        let v2: SendMessageRequestHeaderV2 = v1.clone().into();
        let mut ext = ExtFields::new();
        v2.write(&mut ext);
        assert_eq!(ext.get("b"), Some("T"));
        assert_eq!(ext.get("e"), Some("3"));
        let back: SendMessageRequestHeader = SendMessageRequestHeaderV2::read(&ext).unwrap().into();
        assert_eq!(back, v1);
    }

    #[test]
    fn missing_and_malformed_fields_name_the_field() {
        let mut ext = ExtFields::new();
        match QueueOffsetRequestHeader::read(&ext) {
            Err(Error::BadHeaderField { field: "topic", .. }) => {}
            other => panic!("{other:?}"),
        }
        ext.insert("topic", "T");
        ext.insert("queueId", "x1");
        match QueueOffsetRequestHeader::read(&ext) {
            Err(Error::BadHeaderField {
                field: "queueId",
                reason,
            }) => {
                assert!(reason.contains("x1"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #[test]
        fn arbitrary_ext_fields_never_panic_header_readers(
            ext in proptest::collection::btree_map("[a-zA-Z]{1,12}", ".{0,12}", 0..12)
        ) {
            let ext: ExtFields = ext.into_iter().collect();
            let _ = PullMessageRequestHeader::read(&ext);
            let _ = SendMessageRequestHeader::read(&ext);
            let _ = RegisterBrokerRequestHeader::read(&ext);
        }
    }
}
