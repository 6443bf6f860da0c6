//! Request, response and language codes, with RocketMQ's numbers.
//!
//! A code is never reused for another meaning; codes this project does not serve are
//! listed anyway so logs can name what a client asked for. Codes of rocketraft's own (not
//! RocketMQ's) live in 9000-9099, a range no RocketMQ version uses.

macro_rules! i32_codes {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $value:expr,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(i32)]
        #[allow(non_camel_case_types)]
        pub enum $name {
            $($variant = $value,)*
        }

        impl $name {
            /// Every code, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The code for a wire number, if it is one we know.
            pub fn from_i32(value: i32) -> Option<Self> {
                match value {
                    $($value => Some($name::$variant),)*
                    _ => None,
                }
            }

            /// RocketMQ's name for the code.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant),)*
                }
            }
        }

        impl From<$name> for i32 {
            fn from(code: $name) -> i32 {
                code as i32
            }
        }
    };
}

i32_codes! {
    /// `RequestCode` in RocketMQ 4.x, and the 5.x codes served (each noted).
    RequestCode {
        SEND_MESSAGE = 10,
        PULL_MESSAGE = 11,
        QUERY_MESSAGE = 12,
        QUERY_BROKER_OFFSET = 13,
        QUERY_CONSUMER_OFFSET = 14,
        UPDATE_CONSUMER_OFFSET = 15,
        UPDATE_AND_CREATE_TOPIC = 17,
        // RocketMQ 5.x: many topics in one request; the body is `CreateTopicListRequestBody`
        // (`crate::route::CreateTopicListRequestBody`), the header carries nothing.
        UPDATE_AND_CREATE_TOPIC_LIST = 18,
        GET_ALL_TOPIC_CONFIG = 21,
        GET_TOPIC_CONFIG_LIST = 22,
        GET_TOPIC_NAME_LIST = 23,
        UPDATE_BROKER_CONFIG = 25,
        GET_BROKER_CONFIG = 26,
        TRIGGER_DELETE_FILES = 27,
        GET_BROKER_RUNTIME_INFO = 28,
        SEARCH_OFFSET_BY_TIMESTAMP = 29,
        GET_MAX_OFFSET = 30,
        GET_MIN_OFFSET = 31,
        GET_EARLIEST_MSG_STORETIME = 32,
        VIEW_MESSAGE_BY_ID = 33,
        HEART_BEAT = 34,
        UNREGISTER_CLIENT = 35,
        CONSUMER_SEND_MSG_BACK = 36,
        END_TRANSACTION = 37,
        GET_CONSUMER_LIST_BY_GROUP = 38,
        CHECK_TRANSACTION_STATE = 39,
        NOTIFY_CONSUMER_IDS_CHANGED = 40,
        LOCK_BATCH_MQ = 41,
        UNLOCK_BATCH_MQ = 42,
        GET_ALL_CONSUMER_OFFSET = 43,
        GET_ALL_DELAY_OFFSET = 45,
        CHECK_CLIENT_CONFIG = 46,
        PUT_KV_CONFIG = 100,
        GET_KV_CONFIG = 101,
        DELETE_KV_CONFIG = 102,
        REGISTER_BROKER = 103,
        UNREGISTER_BROKER = 104,
        GET_ROUTEINFO_BY_TOPIC = 105,
        GET_BROKER_CLUSTER_INFO = 106,
        UPDATE_AND_CREATE_SUBSCRIPTIONGROUP = 200,
        GET_ALL_SUBSCRIPTIONGROUP_CONFIG = 201,
        GET_TOPIC_STATS_INFO = 202,
        GET_CONSUMER_CONNECTION_LIST = 203,
        GET_PRODUCER_CONNECTION_LIST = 204,
        WIPE_WRITE_PERM_OF_BROKER = 205,
        GET_ALL_TOPIC_LIST_FROM_NAMESERVER = 206,
        DELETE_SUBSCRIPTIONGROUP = 207,
        GET_CONSUME_STATS = 208,
        DELETE_TOPIC_IN_BROKER = 215,
        DELETE_TOPIC_IN_NAMESRV = 216,
        GET_KVLIST_BY_NAMESPACE = 219,
        RESET_CONSUMER_CLIENT_OFFSET = 220,
        INVOKE_BROKER_TO_RESET_OFFSET = 222,
        GET_TOPICS_BY_CLUSTER = 224,
        QUERY_TOPIC_CONSUME_BY_WHO = 300,
        CLEAN_EXPIRED_CONSUMEQUEUE = 306,
        GET_CONSUMER_RUNNING_INFO = 307,
        CONSUME_MESSAGE_DIRECTLY = 309,
        SEND_MESSAGE_V2 = 310,
        VIEW_BROKER_STATS_DATA = 315,
        SEND_BATCH_MESSAGE = 320,
        QUERY_CONSUME_QUEUE = 321,
        QUERY_DATA_VERSION = 322,
        ADD_WRITE_PERM_OF_BROKER = 327,
        GET_ALL_PRODUCER_INFO = 328,
        DELETE_EXPIRED_COMMITLOG = 329,
        // rocketraft's own codes, 9000-9099: no RocketMQ version (4.x or 5.x) uses this range.
        // TRANSFER_LEADERSHIP: hand a broker group's Raft leadership to another member
        // (`rocketraft admin transfer-leader`); extFields `brokerName`, `targetId` (`n1`).
        // Only the leader takes it; a follower answers SERVICE_NOT_AVAILABLE with
        // `leaderAddr`. Success carries `leaderId`, `term`, `heldMs`, `elapsedMs`.
        TRANSFER_LEADERSHIP = 9001,
        // ADD_GROUP_NODE: add a node to a broker group's Raft membership (`rocketraft admin
        // add-node`); extFields `brokerName`, `nodeId` (`n3`), `peerAddr` (its dLegerPeers
        // address). Leader only. The node joins as a learner and votes once caught up; a
        // node still catching up at the broker's `membershipChangeTimeoutMs` is answered
        // SYSTEM_ERROR with `catchingUp=true` (ask again to wait on). Success carries the
        // membership as the JSON body of GET_GROUP_MEMBERS.
        ADD_GROUP_NODE = 9002,
        // REMOVE_GROUP_NODE: remove a node (`rocketraft admin remove-node`); extFields
        // `brokerName`, `nodeId`. Leader only, and never the leader itself: that is refused
        // with `targetLeads=true` (move the leadership first). Success carries the membership.
        REMOVE_GROUP_NODE = 9003,
        // GET_GROUP_MEMBERS: the group's Raft membership as the answering node sees it
        // (`rocketraft admin members`); extFields `brokerName`. Any member answers; the body
        // is JSON: nodeId, leaderId, term, voters and learners (`n0` -> peer address),
        // joint, lastLogIndex and, from the leader, each member's matched log index.
        GET_GROUP_MEMBERS = 9004,
    }
}

i32_codes! {
    /// `ResponseCode` and `RemotingSysResponseCode` in RocketMQ 4.x.
    ResponseCode {
        SUCCESS = 0,
        SYSTEM_ERROR = 1,
        SYSTEM_BUSY = 2,
        REQUEST_CODE_NOT_SUPPORTED = 3,
        TRANSACTION_FAILED = 4,
        FLUSH_DISK_TIMEOUT = 10,
        SLAVE_NOT_AVAILABLE = 11,
        FLUSH_SLAVE_TIMEOUT = 12,
        MESSAGE_ILLEGAL = 13,
        SERVICE_NOT_AVAILABLE = 14,
        VERSION_NOT_SUPPORTED = 15,
        NO_PERMISSION = 16,
        TOPIC_NOT_EXIST = 17,
        TOPIC_EXIST_ALREADY = 18,
        PULL_NOT_FOUND = 19,
        PULL_RETRY_IMMEDIATELY = 20,
        PULL_OFFSET_MOVED = 21,
        QUERY_NOT_FOUND = 22,
        SUBSCRIPTION_PARSE_FAILED = 23,
        SUBSCRIPTION_NOT_EXIST = 24,
        SUBSCRIPTION_NOT_LATEST = 25,
        SUBSCRIPTION_GROUP_NOT_EXIST = 26,
        FILTER_DATA_NOT_EXIST = 27,
        FILTER_DATA_NOT_LATEST = 28,
        TRANSACTION_SHOULD_COMMIT = 200,
        TRANSACTION_SHOULD_ROLLBACK = 201,
        TRANSACTION_STATE_UNKNOW = 202,
        TRANSACTION_STATE_GROUP_WRONG = 203,
        NO_BUYER_ID = 204,
        NOT_IN_CURRENT_UNIT = 205,
        CONSUMER_NOT_ONLINE = 206,
        CONSUME_MSG_TIMEOUT = 207,
        NO_MESSAGE = 208,
    }
}

/// `LanguageCode`: the client's language, a name in JSON headers and a byte in
/// ROCKETMQ headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LanguageCode {
    Java,
    Cpp,
    Dotnet,
    Python,
    Delphi,
    Erlang,
    Ruby,
    Other,
    Http,
    Go,
    Php,
    Oms,
    Rust,
}

impl LanguageCode {
    const TABLE: [(LanguageCode, &'static str); 13] = [
        (LanguageCode::Java, "JAVA"),
        (LanguageCode::Cpp, "CPP"),
        (LanguageCode::Dotnet, "DOTNET"),
        (LanguageCode::Python, "PYTHON"),
        (LanguageCode::Delphi, "DELPHI"),
        (LanguageCode::Erlang, "ERLANG"),
        (LanguageCode::Ruby, "RUBY"),
        (LanguageCode::Other, "OTHER"),
        (LanguageCode::Http, "HTTP"),
        (LanguageCode::Go, "GO"),
        (LanguageCode::Php, "PHP"),
        (LanguageCode::Oms, "OMS"),
        (LanguageCode::Rust, "RUST"),
    ];

    /// The byte used in ROCKETMQ binary headers (its ordinal in RocketMQ's enum).
    pub fn code(self) -> u8 {
        Self::TABLE
            .iter()
            .position(|(l, _)| *l == self)
            .unwrap_or(7) as u8
    }

    pub fn from_code(code: u8) -> Self {
        Self::TABLE
            .get(code as usize)
            .map(|(l, _)| *l)
            .unwrap_or(LanguageCode::Other)
    }

    /// The name used in JSON headers.
    pub fn name(self) -> &'static str {
        Self::TABLE
            .iter()
            .find(|(l, _)| *l == self)
            .map(|(_, n)| *n)
            .unwrap_or("OTHER")
    }

    /// Unknown names decode as `OTHER`: a language is informational only.
    pub fn from_name(name: &str) -> Self {
        Self::TABLE
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(l, _)| *l)
            .unwrap_or(LanguageCode::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_keep_rocketmq_numbers() {
        assert_eq!(RequestCode::SEND_MESSAGE as i32, 10);
        assert_eq!(RequestCode::SEND_MESSAGE_V2 as i32, 310);
        assert_eq!(RequestCode::SEND_BATCH_MESSAGE as i32, 320);
        assert_eq!(RequestCode::GET_ROUTEINFO_BY_TOPIC as i32, 105);
        assert_eq!(RequestCode::QUERY_DATA_VERSION as i32, 322);
        assert_eq!(RequestCode::GET_ALL_TOPIC_LIST_FROM_NAMESERVER as i32, 206);
        assert_eq!(RequestCode::CLEAN_EXPIRED_CONSUMEQUEUE as i32, 306);
        assert_eq!(RequestCode::DELETE_EXPIRED_COMMITLOG as i32, 329);
        // Issue 21: RocketMQ 5.3.3's RequestCode.java.
        assert_eq!(RequestCode::UPDATE_AND_CREATE_TOPIC_LIST as i32, 18);
        // Issue 20: the admin codes, as RocketMQ 4.9.8's RequestCode.java numbers them.
        for (code, number) in [
            (RequestCode::UPDATE_BROKER_CONFIG, 25),
            (RequestCode::GET_BROKER_CONFIG, 26),
            (RequestCode::GET_BROKER_RUNTIME_INFO, 28),
            (RequestCode::PUT_KV_CONFIG, 100),
            (RequestCode::GET_KV_CONFIG, 101),
            (RequestCode::DELETE_KV_CONFIG, 102),
            (RequestCode::GET_TOPIC_STATS_INFO, 202),
            (RequestCode::GET_CONSUMER_CONNECTION_LIST, 203),
            (RequestCode::GET_PRODUCER_CONNECTION_LIST, 204),
            (RequestCode::WIPE_WRITE_PERM_OF_BROKER, 205),
            (RequestCode::GET_CONSUME_STATS, 208),
            (RequestCode::DELETE_TOPIC_IN_NAMESRV, 216),
            (RequestCode::RESET_CONSUMER_CLIENT_OFFSET, 220),
            (RequestCode::INVOKE_BROKER_TO_RESET_OFFSET, 222),
            (RequestCode::GET_TOPICS_BY_CLUSTER, 224),
            (RequestCode::QUERY_TOPIC_CONSUME_BY_WHO, 300),
            (RequestCode::GET_CONSUMER_RUNNING_INFO, 307),
            (RequestCode::VIEW_BROKER_STATS_DATA, 315),
            (RequestCode::ADD_WRITE_PERM_OF_BROKER, 327),
            (RequestCode::GET_ALL_PRODUCER_INFO, 328),
        ] {
            assert_eq!(code as i32, number, "{}", code.name());
        }
        assert_eq!(ResponseCode::TOPIC_NOT_EXIST as i32, 17);
        assert_eq!(ResponseCode::PULL_OFFSET_MOVED as i32, 21);
        assert_eq!(ResponseCode::QUERY_NOT_FOUND as i32, 22);
        assert_eq!(RequestCode::TRANSFER_LEADERSHIP as i32, 9001);
        assert_eq!(RequestCode::ADD_GROUP_NODE as i32, 9002);
        assert_eq!(RequestCode::REMOVE_GROUP_NODE as i32, 9003);
        assert_eq!(RequestCode::GET_GROUP_MEMBERS as i32, 9004);
    }

    #[test]
    fn every_code_round_trips_and_none_is_reused() {
        let mut seen = std::collections::HashSet::new();
        for code in RequestCode::ALL {
            assert_eq!(RequestCode::from_i32(*code as i32), Some(*code));
            assert!(seen.insert(*code as i32), "{} reused", code.name());
        }
        seen.clear();
        for code in ResponseCode::ALL {
            assert_eq!(ResponseCode::from_i32(*code as i32), Some(*code));
            assert!(seen.insert(*code as i32), "{} reused", code.name());
        }
        assert_eq!(RequestCode::from_i32(9999), None);
    }

    #[test]
    fn language_codes_round_trip() {
        for (lang, name) in LanguageCode::TABLE {
            assert_eq!(LanguageCode::from_code(lang.code()), lang);
            assert_eq!(LanguageCode::from_name(name), lang);
        }
        assert_eq!(LanguageCode::Java.code(), 0);
        assert_eq!(LanguageCode::Rust.code(), 12);
        assert_eq!(LanguageCode::from_name("KLINGON"), LanguageCode::Other);
    }
}
