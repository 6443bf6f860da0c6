//! [`PlainAcl::check`]: whether a broker serves a request, as RocketMQ 4.9.8's
//! `PlainAccessValidator.parse` + `PlainPermissionManager.validate` + `checkPerm` decide,
//! with the extensions listed in [`crate::acl`]'s module doc.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::config::{Account, Perm};
use super::sign::signature_matches;
use super::{PlainAcl, ACCESS_KEY, RETRY_GROUP_TOPIC_PREFIX};
use crate::code::{RequestCode, ResponseCode};
use crate::command::RemotingCommand;
use crate::queue_lock::LockBatchRequestBody;
use crate::route::{from_json, HeartbeatData};

/// The topic of message traces, which any signed account may send to
/// (`TopicValidator.RMQ_SYS_TRACE_TOPIC`).
const TRACE_TOPIC: &str = "RMQ_SYS_TRACE_TOPIC";

/// RocketMQ codes that code.rs does not list (the broker does not serve them), admin-only
/// in case it ever does: the ACL-management codes UPDATE_AND_CREATE_ACL_CONFIG,
/// DELETE_ACL_CONFIG, GET_BROKER_CLUSTER_ACL_INFO, UPDATE_GLOBAL_WHITE_ADDRS_CONFIG.
const UNLISTED_ADMIN_CODES: [i32; 4] = [50, 51, 52, 53];

/// rocketraft's own codes (code.rs): all are `rocketraft admin` commands.
const ROCKETRAFT_CODES: std::ops::RangeInclusive<i32> = 9000..=9099;

/// Why a request was let through, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The client's address is in `globalWhiteRemoteAddresses`; nothing else was checked.
    GlobalWhitelist,
    /// The client's address is in the account's `whiteRemoteAddress`; the signature and
    /// permissions were not checked.
    AccountWhitelist { access_key: String },
    /// Signed; a send to the trace topic, which needs no permission.
    TraceTopic { access_key: String },
    /// Signed by an admin account: an admin-only code, or an admin without per-resource
    /// entries (which holds every resource).
    Admin { access_key: String },
    /// Signed; the request names no resource, so the signature is all that is checked.
    Signed { access_key: String },
    /// Signed, and the account holds what each resource the request names needs.
    Permitted { access_key: String },
}

impl Access {
    /// The account that was used, unless a global whitelist let the request through.
    pub fn access_key(&self) -> Option<&str> {
        match self {
            Access::GlobalWhitelist => None,
            Access::AccountWhitelist { access_key }
            | Access::TraceTopic { access_key }
            | Access::Admin { access_key }
            | Access::Signed { access_key }
            | Access::Permitted { access_key } => Some(access_key),
        }
    }
}

/// Why a request was refused; `Display` is RocketMQ's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclDenied {
    #[error("No accessKey is configured")]
    NoAccessKey,
    #[error("No acl config for {access_key}")]
    UnknownAccessKey { access_key: String },
    #[error("Check signature failed for accessKey={access_key}")]
    BadSignature { access_key: String },
    #[error("Need admin permission for request code={code}, but accessKey={access_key} is not")]
    NeedAdmin { code: i32, access_key: String },
    #[error("No default permission for topic:{topic}")]
    NoTopicPermission { topic: String },
    #[error("No default permission for group:{group}")]
    NoGroupPermission { group: String },
    /// A body the check must read (HEART_BEAT's, LOCK_BATCH_MQ's) does not parse.
    #[error("{reason}")]
    BadBody { reason: String },
}

impl AclDenied {
    /// The answer to a refused request: NO_PERMISSION (16) with RocketMQ's reason as remark.
    /// A stock 4.9 broker answers SYSTEM_ERROR (1) instead; a client treats both as a
    /// failed request, and NO_PERMISSION says what happened (a client that retries on a
    /// system error must not retry a refusal). A oneway request gets no answer; that is the
    /// caller's to skip.
    pub fn response(&self, request: &RemotingCommand) -> RemotingCommand {
        RemotingCommand::error(ResponseCode::NO_PERMISSION, self.to_string()).answering(request)
    }
}

impl PlainAcl {
    /// Decides whether `request`, from `remote_ip`, may be served. Pure: reads only its
    /// arguments and the rules.
    pub fn check(&self, request: &RemotingCommand, remote_ip: IpAddr) -> Result<Access, AclDenied> {
        if self
            .global_white_remote_addresses
            .iter()
            .any(|pattern| pattern.matches(remote_ip))
        {
            return Ok(Access::GlobalWhitelist);
        }
        let access_key = request.ext(ACCESS_KEY).ok_or(AclDenied::NoAccessKey)?;
        let account = self
            .accounts
            .get(access_key)
            .ok_or_else(|| AclDenied::UnknownAccessKey {
                access_key: access_key.into(),
            })?;
        let access_key = access_key.to_string();
        if account.white_remote_address.matches(remote_ip) {
            return Ok(Access::AccountWhitelist { access_key });
        }
        if !signature_matches(request, &account.secret_key) {
            return Err(AclDenied::BadSignature { access_key });
        }
        let mut needed = needed_resources(request)?;
        // Sending to the trace topic needs no permission; any other topic the request
        // names (a batch's `topic` beside `b`) still does.
        if needed.get(TRACE_TOPIC) == Some(&Perm::PUB) {
            needed.remove(TRACE_TOPIC);
            if needed.is_empty() {
                return Ok(Access::TraceTopic { access_key });
            }
        }
        check_perm(account, request.code, &needed)
    }
}

fn needs_admin(code: i32) -> bool {
    use RequestCode as C;
    let stock = [
        C::UPDATE_AND_CREATE_TOPIC,
        // RocketMQ 5.x's batch form of UPDATE_AND_CREATE_TOPIC: the same class.
        C::UPDATE_AND_CREATE_TOPIC_LIST,
        C::UPDATE_BROKER_CONFIG,
        C::DELETE_TOPIC_IN_BROKER,
        C::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
        C::DELETE_SUBSCRIPTIONGROUP,
    ];
    // The read-only admin codes (GET_BROKER_CONFIG, GET_BROKER_RUNTIME_INFO,
    // GET_TOPIC_STATS_INFO, GET_CONSUME_STATS, the connection lists, QUERY_TOPIC_CONSUME_BY_WHO,
    // GET_CONSUMER_RUNNING_INFO, VIEW_BROKER_STATS_DATA, GET_ALL_PRODUCER_INFO) need only
    // the signature, as in stock.
    let ours = [
        C::TRIGGER_DELETE_FILES,
        C::WIPE_WRITE_PERM_OF_BROKER,
        C::ADD_WRITE_PERM_OF_BROKER,
        C::INVOKE_BROKER_TO_RESET_OFFSET,
        C::CLEAN_EXPIRED_CONSUMEQUEUE,
        C::DELETE_EXPIRED_COMMITLOG,
    ];
    stock.iter().chain(&ours).any(|c| *c as i32 == code)
        || UNLISTED_ADMIN_CODES.contains(&code)
        || ROCKETRAFT_CODES.contains(&code)
}

/// `checkPerm`: admin-only codes, then each needed resource against the account's entry
/// for it or, without one, its default for topics or groups.
fn check_perm(
    account: &Account,
    code: i32,
    needed: &BTreeMap<String, Perm>,
) -> Result<Access, AclDenied> {
    let access_key = account.access_key.clone();
    let admin_code = needs_admin(code);
    if admin_code && !account.admin {
        return Err(AclDenied::NeedAdmin { code, access_key });
    }
    if needed.is_empty() {
        return Ok(if admin_code {
            Access::Admin { access_key }
        } else {
            Access::Signed { access_key }
        });
    }
    if account.admin && account.resource_perms.is_empty() {
        return Ok(Access::Admin { access_key });
    }
    for (resource, &perm) in needed {
        let group = resource.strip_prefix(RETRY_GROUP_TOPIC_PREFIX);
        let owned = match (account.resource_perms.get(resource), group) {
            (Some(&owned), _) => owned,
            (None, Some(_)) => account.default_group_perm,
            (None, None) => account.default_topic_perm,
        };
        if !owned.grants(perm) {
            return Err(match group {
                Some(group) => AclDenied::NoGroupPermission {
                    group: group.into(),
                },
                None => AclDenied::NoTopicPermission {
                    topic: resource.clone(),
                },
            });
        }
    }
    Ok(Access::Permitted { access_key })
}

/// What a request needs, by resource: a topic by name, a group as `%RETRY%<group>` (so a
/// `%RETRY%` topic is checked as its group). A name that is absent is skipped.
#[derive(Default)]
struct Needed(BTreeMap<String, Perm>);

impl Needed {
    fn topic(&mut self, topic: Option<&str>, perm: Perm) {
        if let Some(topic) = topic {
            self.0.insert(topic.to_string(), perm);
        }
    }

    fn group(&mut self, group: Option<&str>) {
        if let Some(group) = group {
            self.0
                .insert(format!("{RETRY_GROUP_TOPIC_PREFIX}{group}"), Perm::SUB);
        }
    }

    /// A send to `topic`: PUB on it, or SUB on `group` if it is a retry topic.
    fn send(&mut self, topic: Option<&str>, group: Option<&str>) {
        match topic {
            Some(topic) if topic.starts_with(RETRY_GROUP_TOPIC_PREFIX) => self.group(group),
            topic => self.topic(topic, Perm::PUB),
        }
    }
}

/// `PlainAccessValidator.parse`'s table (issue-19 research, section 3.2), extended.
fn needed_resources(request: &RemotingCommand) -> Result<BTreeMap<String, Perm>, AclDenied> {
    use RequestCode as C;
    let ext = |key| request.ext(key);
    let mut needed = Needed::default();
    let Some(code) = RequestCode::from_i32(request.code) else {
        return Ok(needed.0);
    };
    match code {
        C::SEND_MESSAGE => needed.send(ext("topic"), ext("group").or(ext("producerGroup"))),
        C::SEND_MESSAGE_V2 => needed.send(ext("b"), ext("a")),
        C::SEND_BATCH_MESSAGE => {
            needed.send(ext("b"), ext("a"));
            needed.send(ext("topic"), ext("producerGroup"));
        }
        C::CONSUMER_SEND_MSG_BACK => needed.group(ext("group")),
        C::PULL_MESSAGE | C::UPDATE_CONSUMER_OFFSET | C::QUERY_CONSUMER_OFFSET => {
            needed.topic(ext("topic"), Perm::SUB);
            needed.group(ext("consumerGroup"));
        }
        C::QUERY_MESSAGE => needed.topic(ext("topic"), Perm::SUB),
        C::HEART_BEAT => {
            let heartbeat: HeartbeatData = body("heartbeat", request)?;
            for consumer in &heartbeat.consumer_data_set {
                needed.group(Some(&consumer.group_name));
                for subscription in &consumer.subscription_data_set {
                    needed.topic(Some(&subscription.topic), Perm::SUB);
                }
            }
        }
        C::UNREGISTER_CLIENT | C::GET_CONSUMER_LIST_BY_GROUP => needed.group(ext("consumerGroup")),
        C::LOCK_BATCH_MQ | C::UNLOCK_BATCH_MQ => {
            let lock: LockBatchRequestBody = body("lock batch", request)?;
            needed.group(Some(&lock.consumer_group));
        }
        _ => {}
    }
    Ok(needed.0)
}

fn body<T: serde::de::DeserializeOwned>(
    what: &'static str,
    request: &RemotingCommand,
) -> Result<T, AclDenied> {
    from_json(what, &request.body).map_err(|e| AclDenied::BadBody {
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{sign, AclCredentials, SIGNATURE};

    const RULES: &str = "
accounts:
  - accessKey: admin001
    secretKey: admin-secret
    admin: true
  - accessKey: reader01
    secretKey: reader-secret
    defaultTopicPerm: SUB
    defaultGroupPerm: SUB
  - accessKey: writer01
    secretKey: writer-secret
    defaultTopicPerm: PUB
  - accessKey: mixed001
    secretKey: mixed-secret
    admin: true
    defaultGroupPerm: SUB
    topicPerms: [T=PUB|SUB, Hidden=DENY]
    whiteRemoteAddress: 192.168.7.*
";

    fn acl() -> PlainAcl {
        PlainAcl::parse(RULES, "rules.yml").unwrap()
    }

    fn client() -> IpAddr {
        "10.1.2.3".parse().unwrap()
    }

    fn heartbeat(group: &str, topic: &str) -> RemotingCommand {
        let body = format!(
            r#"{{"clientID":"10.1.2.3@1","consumerDataSet":[{{"groupName":"{group}","subscriptionDataSet":[{{"topic":"{topic}","subString":"*"}}]}}],"producerDataSet":[{{"groupName":"P"}}]}}"#
        );
        RemotingCommand::bare_request(RequestCode::HEART_BEAT).with_body(body.into_bytes())
    }

    fn group_topic(code: RequestCode) -> RemotingCommand {
        RemotingCommand::bare_request(code)
            .with_ext("consumerGroup", "g")
            .with_ext("topic", "T")
            .with_ext("queueId", "0")
    }

    fn requests() -> Vec<(&'static str, RemotingCommand)> {
        vec![
            (
                "send",
                RemotingCommand::bare_request(RequestCode::SEND_MESSAGE)
                    .with_ext("producerGroup", "P")
                    .with_ext("topic", "T")
                    .with_body(&b"payload"[..]),
            ),
            (
                "send v2",
                RemotingCommand::bare_request(RequestCode::SEND_MESSAGE_V2)
                    .with_ext("a", "P")
                    .with_ext("b", "T")
                    .with_body(&b"payload"[..]),
            ),
            ("pull", group_topic(RequestCode::PULL_MESSAGE)),
            ("heartbeat", heartbeat("g", "T")),
            (
                "update offset",
                group_topic(RequestCode::UPDATE_CONSUMER_OFFSET),
            ),
            (
                "query offset",
                group_topic(RequestCode::QUERY_CONSUMER_OFFSET),
            ),
            (
                "create topic",
                RemotingCommand::bare_request(RequestCode::UPDATE_AND_CREATE_TOPIC)
                    .with_ext("topic", "T"),
            ),
            (
                "delete topic",
                RemotingCommand::bare_request(RequestCode::DELETE_TOPIC_IN_BROKER)
                    .with_ext("topic", "T"),
            ),
            (
                "transfer leadership",
                RemotingCommand::bare_request(RequestCode::TRANSFER_LEADERSHIP)
                    .with_ext("brokerName", "broker-a"),
            ),
        ]
    }

    fn signed(mut request: RemotingCommand, access_key: &str, secret_key: &str) -> RemotingCommand {
        sign(&mut request, &AclCredentials::new(access_key, secret_key));
        request
    }

    /// Every request kind against every kind of account: what RocketMQ allows (plus the
    /// listed extensions: QUERY_CONSUMER_OFFSET checked, rocketraft codes admin-only),
    /// and the stock reason for each refusal.
    #[test]
    fn requests_by_accounts_table() {
        let acl = acl();
        // Per account: its credentials, then per request "ok" or part of the refusal.
        type Row = (
            &'static str,
            Option<(&'static str, &'static str)>,
            [&'static str; 9],
        );
        let accounts: [Row; 5] = [
            ("admin", Some(("admin001", "admin-secret")), ["ok"; 9]),
            (
                "read-only",
                Some(("reader01", "reader-secret")),
                [
                    "topic:T",
                    "topic:T",
                    "ok",
                    "ok",
                    "ok",
                    "ok",
                    "code=17",
                    "code=215",
                    "code=9001",
                ],
            ),
            (
                "write-only",
                Some(("writer01", "writer-secret")),
                [
                    "ok",
                    "ok",
                    "group:g",
                    "group:g",
                    "group:g",
                    "group:g",
                    "code=17",
                    "code=215",
                    "code=9001",
                ],
            ),
            (
                "wrong secret",
                Some(("reader01", "not-the-secret")),
                ["Check signature failed for accessKey=reader01"; 9],
            ),
            ("no credentials", None, ["No accessKey is configured"; 9]),
        ];
        for (account, credentials, expected) in accounts {
            for ((request_name, request), expected) in requests().into_iter().zip(expected) {
                let request = match credentials {
                    Some((ak, sk)) => signed(request, ak, sk),
                    None => request,
                };
                let outcome = acl.check(&request, client());
                let case = format!("{account} × {request_name}: {outcome:?}");
                match (expected, &outcome) {
                    ("ok", Ok(_)) => {}
                    (reason, Err(denied)) if reason != "ok" => {
                        assert!(
                            denied.to_string().contains(reason),
                            "{case}, wanted {reason}"
                        )
                    }
                    _ => panic!("{case}, wanted {expected}"),
                }
            }
        }
    }

    /// The refusals read as RocketMQ's, in full.
    #[test]
    fn refusals_use_rocketmq_wording() {
        let acl = acl();
        let [(_, send), _, (_, pull), ..] = <[_; 9]>::try_from(requests()).unwrap();
        let expect = |request: RemotingCommand, wording: &str| {
            let denied = acl.check(&request, client()).unwrap_err();
            assert_eq!(denied.to_string(), wording);
            let response = denied.response(&request);
            assert_eq!(response.code, ResponseCode::NO_PERMISSION as i32);
            assert_eq!(response.remark.as_deref(), Some(wording));
        };
        expect(
            signed(send.clone(), "nobody01", "whatever"),
            "No acl config for nobody01",
        );
        expect(send.clone(), "No accessKey is configured");
        expect(
            signed(send, "reader01", "reader-secret"),
            "No default permission for topic:T",
        );
        expect(
            signed(pull, "writer01", "writer-secret"),
            "No default permission for group:g",
        );
        expect(
            signed(heartbeat("g", "U"), "mixed001", "mixed-secret"),
            "No default permission for topic:U",
        );
        expect(
            signed(
                RemotingCommand::bare_request(RequestCode::ADD_GROUP_NODE),
                "reader01",
                "reader-secret",
            ),
            "Need admin permission for request code=9002, but accessKey=reader01 is not",
        );
    }

    /// Why a request passed is reported: admin, plain permission, signature only.
    #[test]
    fn access_says_why() {
        let acl = acl();
        let pull = group_topic(RequestCode::PULL_MESSAGE);
        let by = |request: RemotingCommand, ak, sk| acl.check(&signed(request, ak, sk), client());
        let key = |k: &str| k.to_string();
        assert_eq!(
            by(pull.clone(), "admin001", "admin-secret"),
            Ok(Access::Admin {
                access_key: key("admin001")
            })
        );
        assert_eq!(
            by(pull.clone(), "reader01", "reader-secret"),
            Ok(Access::Permitted {
                access_key: key("reader01")
            })
        );
        let routes =
            RemotingCommand::bare_request(RequestCode::GET_MAX_OFFSET).with_ext("topic", "X");
        assert_eq!(
            by(routes, "writer01", "writer-secret"),
            Ok(Access::Signed {
                access_key: key("writer01")
            })
        );
        let members = RemotingCommand::bare_request(RequestCode::GET_GROUP_MEMBERS);
        let access = by(members, "admin001", "admin-secret").unwrap();
        assert_eq!(
            access,
            Access::Admin {
                access_key: key("admin001")
            }
        );
        assert_eq!(access.access_key(), Some("admin001"));
    }

    /// UPDATE_AND_CREATE_TOPIC_LIST (18) is in UPDATE_AND_CREATE_TOPIC's (17) class: admin
    /// accounts only, whatever topics the body names.
    #[test]
    fn topic_list_creation_needs_admin_like_one_topic() {
        let acl = acl();
        let body = br#"{"topicConfigList":[{"topicName":"T"}]}"#;
        for (ak, sk, admin) in [
            ("admin001", "admin-secret", true),
            ("mixed001", "mixed-secret", true),
            ("reader01", "reader-secret", false),
            ("writer01", "writer-secret", false),
        ] {
            for code in [
                RequestCode::UPDATE_AND_CREATE_TOPIC,
                RequestCode::UPDATE_AND_CREATE_TOPIC_LIST,
            ] {
                let request = RemotingCommand::bare_request(code).with_body(&body[..]);
                let outcome = acl.check(&signed(request, ak, sk), client());
                match admin {
                    true => assert!(outcome.is_ok(), "{ak} {code:?}: {outcome:?}"),
                    false => assert_eq!(
                        outcome,
                        Err(AclDenied::NeedAdmin {
                            code: code as i32,
                            access_key: ak.to_string()
                        })
                    ),
                }
            }
        }
    }

    /// An admin with per-resource entries is checked like anyone else (stock), for
    /// explicit entries first and then the defaults.
    #[test]
    fn admin_with_resource_entries_is_checked() {
        let acl = acl();
        let send = |topic: &str| {
            let request = RemotingCommand::bare_request(RequestCode::SEND_MESSAGE_V2)
                .with_ext("a", "P")
                .with_ext("b", topic);
            acl.check(&signed(request, "mixed001", "mixed-secret"), client())
        };
        assert!(send("T").is_ok());
        assert_eq!(
            send("Hidden").unwrap_err().to_string(),
            "No default permission for topic:Hidden"
        );
        assert_eq!(
            send("Other").unwrap_err().to_string(),
            "No default permission for topic:Other"
        );
        let create = RemotingCommand::bare_request(RequestCode::UPDATE_AND_CREATE_TOPIC);
        assert!(acl
            .check(&signed(create, "mixed001", "mixed-secret"), client())
            .is_ok());
    }

    /// A global whitelist lets anything through from its addresses, unsigned; an
    /// account's lets that account through unsigned, and no other account.
    #[test]
    fn whitelists() {
        let text = format!("globalWhiteRemoteAddresses: [10.0.0.*, 'fd00::1']\n{RULES}");
        let acl = PlainAcl::parse(&text, "rules.yml").unwrap();
        let delete = RemotingCommand::bare_request(RequestCode::DELETE_TOPIC_IN_BROKER);
        for ip in ["10.0.0.9", "::ffff:10.0.0.9", "fd00::1"] {
            assert_eq!(
                acl.check(&delete, ip.parse().unwrap()),
                Ok(Access::GlobalWhitelist),
                "{ip}"
            );
        }
        assert_eq!(
            acl.check(&delete, "10.0.1.9".parse().unwrap()),
            Err(AclDenied::NoAccessKey)
        );

        let unsigned = group_topic(RequestCode::PULL_MESSAGE)
            .with_ext(ACCESS_KEY, "mixed001")
            .with_ext(SIGNATURE, "bogus");
        assert_eq!(
            acl.check(&unsigned, "192.168.7.40".parse().unwrap()),
            Ok(Access::AccountWhitelist {
                access_key: "mixed001".into()
            })
        );
        assert_eq!(
            acl.check(&unsigned, "192.168.8.40".parse().unwrap()),
            Err(AclDenied::BadSignature {
                access_key: "mixed001".into()
            })
        );
        let other = unsigned.with_ext(ACCESS_KEY, "reader01");
        assert!(acl.check(&other, "192.168.7.40".parse().unwrap()).is_err());
    }

    /// Sends to the trace topic need no permission; a retry-topic send needs its
    /// producer group's SUB (stock, plus `producerGroup` for v1); a batch is checked on
    /// every topic field the broker may read.
    #[test]
    fn send_variants() {
        let acl = acl();
        let check = |request: RemotingCommand| {
            acl.check(&signed(request, "reader01", "reader-secret"), client())
        };
        let trace = RemotingCommand::bare_request(RequestCode::SEND_MESSAGE_V2)
            .with_ext("a", "P")
            .with_ext("b", TRACE_TOPIC);
        assert_eq!(
            check(trace),
            Ok(Access::TraceTopic {
                access_key: "reader01".into()
            })
        );
        let retry_v1 = RemotingCommand::bare_request(RequestCode::SEND_MESSAGE)
            .with_ext("producerGroup", "g")
            .with_ext("topic", "%RETRY%g");
        assert!(check(retry_v1).is_ok(), "reader has group SUB");
        let writer = |request: RemotingCommand| {
            acl.check(&signed(request, "writer01", "writer-secret"), client())
        };
        let retry_v2 = RemotingCommand::bare_request(RequestCode::SEND_MESSAGE_V2)
            .with_ext("a", "g")
            .with_ext("b", "%RETRY%g");
        assert_eq!(
            writer(retry_v2).unwrap_err().to_string(),
            "No default permission for group:g"
        );

        let batch = |b: &str, topic: Option<&str>| {
            let mut request = RemotingCommand::bare_request(RequestCode::SEND_BATCH_MESSAGE)
                .with_ext("a", "P")
                .with_ext("b", b);
            if let Some(topic) = topic {
                request = request
                    .with_ext("topic", topic)
                    .with_ext("producerGroup", "P");
            }
            writer(request)
        };
        assert!(batch("T", None).is_ok());
        let text =
            "accounts:\n  - {accessKey: writer01, secretKey: writer-secret, topicPerms: [T=PUB]}\n";
        let narrow = PlainAcl::parse(text, "narrow.yml").unwrap();
        let request = RemotingCommand::bare_request(RequestCode::SEND_BATCH_MESSAGE)
            .with_ext("b", "T")
            .with_ext("topic", "Secret");
        let denied = narrow.check(&signed(request, "writer01", "writer-secret"), client());
        assert_eq!(
            denied.unwrap_err().to_string(),
            "No default permission for topic:Secret"
        );
        assert!(batch("T", Some("T")).is_ok());
        let request = RemotingCommand::bare_request(RequestCode::SEND_BATCH_MESSAGE)
            .with_ext("b", TRACE_TOPIC)
            .with_ext("topic", "Secret");
        let denied = narrow.check(&signed(request, "writer01", "writer-secret"), client());
        assert_eq!(
            denied.unwrap_err().to_string(),
            "No default permission for topic:Secret",
            "the trace exemption covers the trace topic only"
        );
    }

    /// Group bodies are read: LOCK_BATCH_MQ's group needs SUB; a heartbeat that does not
    /// parse is refused, but only once the signature holds.
    #[test]
    fn bodies_are_read_after_the_signature() {
        let acl = acl();
        let lock = RemotingCommand::bare_request(RequestCode::LOCK_BATCH_MQ)
            .with_body(&br#"{"consumerGroup":"g","clientId":"c","mqSet":[]}"#[..]);
        assert!(acl
            .check(&signed(lock.clone(), "reader01", "reader-secret"), client())
            .is_ok());
        let denied = acl.check(&signed(lock, "writer01", "writer-secret"), client());
        assert_eq!(
            denied.unwrap_err().to_string(),
            "No default permission for group:g"
        );

        let garbage =
            RemotingCommand::bare_request(RequestCode::HEART_BEAT).with_body(&b"{nope"[..]);
        let unsigned = garbage.clone().with_ext(ACCESS_KEY, "reader01");
        assert!(matches!(
            acl.check(&unsigned, client()),
            Err(AclDenied::BadSignature { .. })
        ));
        let denied = acl.check(&signed(garbage, "reader01", "reader-secret"), client());
        assert!(
            matches!(denied, Err(AclDenied::BadBody { .. })),
            "{denied:?}"
        );
    }

    /// Every rocketraft code and the listed operator codes need an admin.
    #[test]
    fn admin_only_codes() {
        use RequestCode as C;
        for code in [
            C::TRANSFER_LEADERSHIP,
            C::ADD_GROUP_NODE,
            C::REMOVE_GROUP_NODE,
            C::GET_GROUP_MEMBERS,
            C::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
            C::DELETE_SUBSCRIPTIONGROUP,
            C::UPDATE_BROKER_CONFIG,
            C::WIPE_WRITE_PERM_OF_BROKER,
            C::ADD_WRITE_PERM_OF_BROKER,
            C::INVOKE_BROKER_TO_RESET_OFFSET,
        ] {
            assert!(needs_admin(code as i32), "{}", code.name());
        }
        for code in [50, 53] {
            assert!(needs_admin(code), "{code}");
        }
        for code in [
            C::SEND_MESSAGE,
            C::PULL_MESSAGE,
            C::GET_ROUTEINFO_BY_TOPIC,
            C::END_TRANSACTION,
            C::GET_BROKER_CONFIG,
            C::GET_BROKER_RUNTIME_INFO,
            C::GET_CONSUME_STATS,
            C::GET_CONSUMER_CONNECTION_LIST,
            C::GET_CONSUMER_RUNNING_INFO,
        ] {
            assert!(!needs_admin(code as i32), "{}", code.name());
        }
    }
}
