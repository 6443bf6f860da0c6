//! RocketMQ 4.x's plain ACL: the client's request signature, `plain_acl.yml`, and the
//! broker's decision whether to serve a request. Facts from RocketMQ 4.9.8
//! (docs/research/issue-19-rocketmq-acl-tls.md, sections 1-4); the code is our own.
//!
//! # Layout
//!
//! - `sign`: [`AclCredentials`] and [`sign()`], as 4.9.4+'s
//!   `AclClientRPCHook`: HmacSHA1 over the values of every ext field in key order, then the
//!   body, standard Base64, sent as ext field `Signature`.
//! - `address`: the address patterns of `globalWhiteRemoteAddresses` and
//!   `whiteRemoteAddress` (`RemoteAddressStrategyFactory`).
//! - `config`: [`PlainAcl`], read from one or several `plain_acl.yml` files, and its
//!   [`PlainAcl::fingerprint`].
//! - `check`: [`PlainAcl::check`], the broker's decision (`PlainAccessValidator.parse` +
//!   `PlainPermissionManager.validate`), with [`Access`] and [`AclDenied`].
//!
//! # What it promises
//!
//! [`PlainAcl::check`] is pure (no I/O, no clock, no logging) and decides in RocketMQ's
//! order: global whitelist, accessKey present and known, the account's whitelist,
//! signature, the trace-topic exemption, admin-only codes, then each resource the request
//! names. A refusal's `Display` is RocketMQ's wording (`Check signature failed for
//! accessKey=ak`), answered with NO_PERMISSION (16) where stock 4.9 brokers answer
//! SYSTEM_ERROR (1), see [`AclDenied::response`]. A file that is not what RocketMQ would accept, or that RocketMQ
//! would accept with a silently surprising meaning, fails to load with an error naming the
//! file and the account.
//!
//! # Where we differ from RocketMQ 4.9.8
//!
//! Stricter loading (stock loads these, with the meaning after "stock:"):
//! - a permission string other than `PUB`, `SUB`, `PUB|SUB`, `SUB|PUB`, `DENY` is an error
//!   (stock: DENY); missing or blank is still DENY, as in RocketMQ;
//! - an accessKey twice in one file, or a resource twice in one account's
//!   `topicPerms`/`groupPerms`, is an error (stock: the first, resp. the last, wins); across files
//!   the first file still wins, with a warning;
//! - in a range pattern, the parts after the range must be `*` (stock: not
//!   compared, `192.168.1-5.7` matches `192.168.3.200`); an IPv6 range with `::` right before the range
//!   group (`fe80::*`) is an error (stock: `fe80:0:*`); a range in the first IPv4 octet is
//!   an error (stock: never matches, or fails every request). Looser: list items may have
//!   spaces around them (stock: error).
//!
//! Checking:
//! - IPv4-mapped IPv6 clients (`::ffff:10.0.0.1`, a dual-stack listener) are matched as
//!   IPv4, as Java sees them.
//! - A missing or malformed field is not the ACL's business: the resource is skipped (as
//!   RocketMQ does for a missing ext field) and the request's handler refuses the header.
//!   Bodies are read only after the signature is verified, so an unsigned request is never
//!   parsed; a body that does not parse is refused ([`AclDenied::BadBody`]). A whitelisted
//!   client's body is not read here (stock refuses a bad heartbeat body even then).
//! - Resources are checked in name order, so groups (`%RETRY%...`) before topics; which
//!   refusal is reported first is unspecified in stock (a HashMap).
//! - The trace-topic exemption spares the trace topic only (stock: the whole request, which
//!   with (b) below would let a batch naming it in `b` and another topic in `topic` through
//!   unchecked).
//! - The signature is accepted over the fields without `_UNIQUE_KEY_QUERY` (what the stock
//!   broker rebuilds) or, when that field is present, with it (what 4.9.4+ clients sign:
//!   apache/rocketmq #5310, #5636). [`sign()`] leaves it out, which every stock broker
//!   accepts (5.x keeps it only for clients newer than 4.9.3; we announce 401).
//! - Extensions beyond stock, each small:
//!   (a) admin-only codes: besides stock's 17, 25, 200, 207 and 215, every rocketraft code
//!   (9000-9099: leadership transfer, membership change and view), the state-changing
//!   operator codes TRIGGER_DELETE_FILES (27), WIPE_WRITE_PERM_OF_BROKER (205),
//!   ADD_WRITE_PERM_OF_BROKER (327), INVOKE_BROKER_TO_RESET_OFFSET (222),
//!   CLEAN_EXPIRED_CONSUMEQUEUE (306),
//!   DELETE_EXPIRED_COMMITLOG (329), and the ACL-management codes 50-53;
//!   (b) SEND_BATCH_MESSAGE (320) needs topic PUB like SEND_MESSAGE_V2, for `b`/`a` and,
//!   because the broker falls back to them, for `topic`/`producerGroup` too;
//!   (c) QUERY_CONSUMER_OFFSET (14) needs group SUB and topic SUB, like
//!   UPDATE_CONSUMER_OFFSET;
//!   (d) LOCK_BATCH_MQ (41) and UNLOCK_BATCH_MQ (42) need the body's consumer group SUB;
//!   (e) SEND_MESSAGE (10) to a `%RETRY%` topic reads the group from `producerGroup` when
//!   `group` is absent (stock reads only `group`, which the v1 header never has, so such a
//!   send was never checked).
//! - END_TRANSACTION (37) stays unchecked beyond the signature, as in stock: its header's
//!   `producerGroup` is not a resource any account lists (sends never check producer
//!   groups), and its topic is only known from the half message in the CommitLog.
//! - `SecurityToken` is signed but, as in stock, never checked.

mod address;
mod check;
mod config;
mod sign;

pub use check::{Access, AclDenied};
pub use config::{AclError, PlainAcl, MAX_ACL_FILE_BYTES};
pub use sign::{sign, AclCredentials};

/// Ext field with the client's access key (`SessionCredentials.ACCESS_KEY`).
pub const ACCESS_KEY: &str = "AccessKey";
/// Ext field with the Base64 HmacSHA1 signature (`SessionCredentials.SIGNATURE`).
pub const SIGNATURE: &str = "Signature";
/// Ext field with the optional security token (`SessionCredentials.SECURITY_TOKEN`).
pub const SECURITY_TOKEN: &str = "SecurityToken";

/// Group resources are kept as their retry topic, `%RETRY%<group>` (`MixAll.getRetryTopic`).
const RETRY_GROUP_TOPIC_PREFIX: &str = "%RETRY%";
