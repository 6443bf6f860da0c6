//! RocketMQ's rules for the names a request carries: topics, consumer and producer groups,
//! client ids.
//!
//! Topics and groups: the characters `[%|a-zA-Z0-9_-]` (RocketMQ's `TopicValidator` and
//! the client's `Validators`), topics at most 127 characters, groups at most 255. Client
//! ids are not checked by RocketMQ, and stock ones hold `@`, `.`, `#`, `:`, `[`, `%` and
//! `;` (`192.168.0.1@12345#8761234`, IPv6 addresses, trace producers named after the
//! name-server list), so for them: 1 to 255 bytes without control characters (no NUL, no
//! line breaks). Broker names, which RocketMQ does not check either, follow the client-id
//! rule (a queue lock's key holds one). A name that breaks its rule is refused before it
//! reaches the Raft log, RocksDB or a file name (issue 15: a NUL in a consumer group once
//! stopped every replica of a group from starting).

use std::fmt;

/// The longest topic RocketMQ accepts (`TopicValidator.TOPIC_MAX_LENGTH`).
pub const TOPIC_MAX_CHARS: usize = 127;
/// The longest group RocketMQ's client accepts (`Validators.CHARACTER_MAX_LENGTH`).
pub const GROUP_MAX_CHARS: usize = 255;
/// The longest client id accepted.
pub const CLIENT_ID_MAX_CHARS: usize = 255;
/// The longest broker name accepted (a host name has at most 253).
pub const BROKER_NAME_MAX_CHARS: usize = 255;

/// Which rule a name follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Topic,
    Group,
    ClientId,
    BrokerName,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Topic => "topic",
            NameKind::Group => "group",
            NameKind::ClientId => "client id",
            NameKind::BrokerName => "broker name",
        })
    }
}

/// Why a name was refused; its `Display` is the remark a client reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadName {
    pub kind: NameKind,
    pub name: String,
    pub reason: &'static str,
}

impl fmt::Display for BadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The name is shown escaped: it may hold control characters.
        write!(
            f,
            "{} `{}` {}",
            self.kind,
            self.name.escape_debug(),
            self.reason
        )
    }
}

impl std::error::Error for BadName {}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'%' | b'|' | b'_' | b'-')
}

/// Checks `name` by the rule of `kind`.
pub fn check(kind: NameKind, name: &str) -> Result<(), BadName> {
    let bad = |reason| {
        Err(BadName {
            kind,
            name: name.chars().take(300).collect(),
            reason,
        })
    };
    let (max, allowed, rule): (usize, fn(u8) -> bool, &'static str) = match kind {
        NameKind::Topic => (
            TOPIC_MAX_CHARS,
            is_name_char,
            "may contain only letters, digits, %, |, _ and - (^[%|a-zA-Z0-9_-]+$)",
        ),
        NameKind::Group => (
            GROUP_MAX_CHARS,
            is_name_char,
            "may contain only letters, digits, %, |, _ and - (^[%|a-zA-Z0-9_-]+$)",
        ),
        NameKind::ClientId => (
            CLIENT_ID_MAX_CHARS,
            |b: u8| !b.is_ascii_control(),
            "may not contain control characters",
        ),
        NameKind::BrokerName => (
            BROKER_NAME_MAX_CHARS,
            |b: u8| !b.is_ascii_control(),
            "may not contain control characters",
        ),
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > max {
        return bad(match kind {
            NameKind::Topic => "is longer than 127 characters",
            _ => "is longer than 255 characters",
        });
    }
    if !name.bytes().all(allowed) {
        return bad(rule);
    }
    Ok(())
}

/// RocketMQ's system topics (`TopicValidator.SYSTEM_TOPIC_SET`, and every `rmq_sys_`
/// name): the broker owns them, so no one creates or deletes them by request.
pub const SYSTEM_TOPICS: [&str; 9] = [
    "TBW102",
    "SCHEDULE_TOPIC_XXXX",
    "BenchmarkTest",
    "RMQ_SYS_TRANS_HALF_TOPIC",
    "RMQ_SYS_TRACE_TOPIC",
    "RMQ_SYS_TRANS_OP_HALF_TOPIC",
    "TRANS_CHECK_MAX_TIME_TOPIC",
    "SELF_TEST_TOPIC",
    "OFFSET_MOVED_EVENT",
];

/// Of the system topics, those no client may send to
/// (`TopicValidator.NOT_ALLOWED_SEND_TOPIC_SET`): the broker writes them itself.
pub const NOT_ALLOWED_SEND_TOPICS: [&str; 6] = [
    "SCHEDULE_TOPIC_XXXX",
    "RMQ_SYS_TRANS_HALF_TOPIC",
    "RMQ_SYS_TRANS_OP_HALF_TOPIC",
    "TRANS_CHECK_MAX_TIME_TOPIC",
    "SELF_TEST_TOPIC",
    "OFFSET_MOVED_EVENT",
];

pub fn is_system_topic(topic: &str) -> bool {
    SYSTEM_TOPICS.contains(&topic) || topic.starts_with("rmq_sys_")
}

pub fn check_topic(topic: &str) -> Result<(), BadName> {
    check(NameKind::Topic, topic)
}

pub fn check_group(group: &str) -> Result<(), BadName> {
    check(NameKind::Group, group)
}

pub fn check_client_id(client_id: &str) -> Result<(), BadName> {
    check(NameKind::ClientId, client_id)
}

pub fn check_broker_name(broker_name: &str) -> Result<(), BadName> {
    check(NameKind::BrokerName, broker_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocketmq_names_pass_and_others_are_refused_with_a_reason() {
        for ok in [
            "TopicTest",
            "%RETRY%group-1",
            "%DLQ%g",
            "a|b_c-D9",
            &"t".repeat(127),
        ] {
            assert_eq!(check_topic(ok), Ok(()), "{ok}");
            assert_eq!(check_group(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_group(&"g".repeat(255)), Ok(()));
        for bad in ["", "app\0g", "a b", "a/b", "a.b", "ü", "a\nb", "../x"] {
            assert!(check_topic(bad).is_err(), "{bad:?}");
            assert!(check_group(bad).is_err(), "{bad:?}");
        }
        let long = check_topic(&"t".repeat(128)).unwrap_err();
        assert!(long.to_string().contains("127"), "{long}");
        assert!(check_group(&"g".repeat(256)).is_err());
        let nul = check_group("app\0g").unwrap_err().to_string();
        assert!(nul.contains("app\\0g"), "the name is shown escaped: {nul}");
    }

    #[test]
    fn stock_client_ids_pass() {
        for ok in [
            "192.168.0.1@12345#8761234567",
            "127.0.0.1@DEFAULT",
            "fe80::1%eth0@4242#1@unit",
            "10.0.0.2@rocketraft-7-1",
            "[fe80:0:0:0:1%eth0]@PID_CLIENT_INNER_TRACE_PRODUCER_127.0.0.1:9876;127.0.0.2:9876",
            "127.0.0.1@my instance",
        ] {
            assert_eq!(check_client_id(ok), Ok(()), "{ok}");
        }
        for bad in ["", "x\0y", "a\nb", "\u{7f}", &"c".repeat(256)] {
            assert!(check_client_id(bad).is_err(), "{bad:?}");
            assert!(check_broker_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_broker_name("broker-a.dc1"), Ok(()));
    }
}
