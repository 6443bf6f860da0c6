//! RocketMQ's remoting protocol, wire-compatible with stock RocketMQ 4.x clients.
//!
//! # Layout
//!
//! - [`code`]: request, response and language codes with RocketMQ's numbers.
//! - [`command`]: [`RemotingCommand`], its flags, and the two header encodings
//!   (JSON and the `ROCKETMQ` binary form).
//! - [`codec`]: the frame codec (`i32 total length | i32 serialize type << 24 | header
//!   length | header | body`, big-endian) with a bounded frame size.
//! - [`ext`]: [`ExtFields`], the `extFields` of a command, kept in one buffer.
//! - [`header`]: typed request and response headers carried in `extFields`.
//! - [`filter`]: tag expressions and the ConsumeQueue tag code (Java's `hashCode`),
//!   shared by the broker's hash filter and the client's exact filter.
//! - [`message`]: the CommitLog message record codec (`MessageExtEncoder`'s layout),
//!   the properties codec and msgId.
//! - [`names`]: RocketMQ's rules for topic, group and client-id names, checked when a
//!   header is read.
//! - [`register_body`]: REGISTER_BROKER's compressed body (`compressed=true`).
//! - [`queue_lock`]: the bodies of LOCK_BATCH_MQ and UNLOCK_BATCH_MQ (ordered consumption).
//! - [`sql92`]: the SQL92 message filter (`expressionType=SQL92`): parser and evaluator
//!   with RocketMQ 4.9.8's semantics, bounded in length and depth.
//! - [`route`]: RocketMQ's JSON bodies: route data, cluster info, topic config,
//!   register-broker and heartbeat bodies, data versions.
//! - [`admin_body`]: the bodies of the admin requests (runtime info, topic and consume stats,
//!   connections, offset resets), including fastjson's maps keyed by `MessageQueue`.
//! - [`acl`]: RocketMQ 4.x's plain ACL: the request signature (`AccessKey`/`Signature`),
//!   `plain_acl.yml`, and the check of a request against it.
//! - [`cluster_auth`]: the cluster secret (`clusterSecretFile`) and the signature brokers
//!   put on what they tell the name servers.
//! - [`tls`]: TLS with RocketMQ's `tls.server.mode` (disabled, permissive, enforcing) and
//!   certificate keys, for servers and clients.
//! - [`throttle`]: rate-limited warnings.
//! - [`histogram`]: a lock-free fixed-bucket histogram for figures taken on hot paths;
//!   [`metrics_http`]: the Prometheus scrape endpoint (`GET /metrics` only, bounded).
//! - [`connection`]: one TCP (or TLS) connection used by every server and client: requests
//!   matched to responses by `opaque` with a deadline, oneway sends, requests that the
//!   peer starts, a bounded in-flight window; and [`connection::serve`], the accept loop.
//!
//! This crate depends on nothing else of rocketraft's.

pub mod acl;
pub mod admin_body;
pub mod cluster_auth;
pub mod code;
pub mod codec;
pub mod command;
pub mod config_file;
pub mod connection;
pub mod error;
pub mod ext;
pub mod filter;
pub mod header;
pub mod histogram;
pub mod message;
pub mod metrics_http;
pub mod names;
pub mod queue_lock;
pub mod register_body;
pub mod route;
pub mod sql92;
pub mod throttle;
pub mod tls;

pub use code::{LanguageCode, RequestCode, ResponseCode};
pub use codec::{FrameCodec, DEFAULT_MAX_FRAME_BYTES};
pub use command::{RemotingCommand, SerializeType};
pub use connection::{Connection, ConnectionConfig, RequestHandler};
pub use error::{Error, Result};
pub use ext::ExtFields;
pub use header::CommandHeader;
