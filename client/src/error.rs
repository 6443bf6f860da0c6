//! The client's one error type.
//!
//! Three kinds of failure are kept apart, because a caller acts differently on each:
//!
//! - **Outcome unknown** ([`ClientError::OutcomeUnknown`]): the request was written and
//!   then the deadline passed or the connection dropped. The broker may have carried it
//!   out. It is never reported as a failure, and the producer does not retry it unless
//!   told to (`retry_on_outcome_unknown`).
//! - **Definite failures**: a broker answered with an error code
//!   ([`ClientError::Broker`]), no member of a group could be reached so nothing was
//!   sent ([`ClientError::NoLeader`]), or there is no route ([`ClientError::NoRoute`]).
//! - **Misuse**: a bad message or config, or a call after shutdown.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No name server address was given.
    #[error("no name server address given (namesrvAddr is empty)")]
    NoNameServer,

    /// Every name server failed; the last failure is kept.
    #[error("no name server answered ({tried} tried): {last}")]
    NameServersUnavailable { tried: usize, last: remoting::Error },

    /// A name server answered with an error code.
    #[error("{addr} answered {code}: {remark}")]
    Refused {
        addr: String,
        code: i32,
        remark: String,
    },

    /// A broker answered with an error code: the request was not carried out.
    #[error("broker {broker_name} ({addr}) answered {code}: {remark}")]
    Broker {
        broker_name: String,
        addr: String,
        code: i32,
        remark: String,
    },

    /// A broker refused a subscription at the consumer's start (CHECK_CLIENT_CONFIG):
    /// e.g. SQL92 on a broker with `enablePropertyFilter=false` (code 1), or an
    /// expression it cannot compile (SUBSCRIPTION_PARSE_FAILED, 23).
    #[error(
        "subscription to {topic} ({selector}) refused by broker {broker}, code {code}: {remark}"
    )]
    SubscriptionRefused {
        topic: String,
        /// The expression type and expression, e.g. ``SQL92 `a > 1` ``.
        selector: String,
        /// The broker group and the address that answered.
        broker: String,
        code: i32,
        remark: String,
    },

    /// The request was written but no answer came (deadline passed, or the connection
    /// closed): the broker may or may not have carried it out.
    #[error("outcome unknown at broker {broker_name} ({addr}): {reason}")]
    OutcomeUnknown {
        broker_name: String,
        addr: String,
        reason: String,
    },

    /// No member of the group could be reached, or none of them leads it: nothing was
    /// carried out.
    #[error("broker group {broker_name} has no reachable leader: {reason}")]
    NoLeader { broker_name: String, reason: String },

    /// The name servers know no route for the topic, or it has no queue for the
    /// operation (no writable queue for a send, no readable one for a pull).
    #[error("no route for topic {topic}: {reason}")]
    NoRoute { topic: String, reason: String },

    /// The name servers know no group of this name.
    #[error("unknown broker group {broker_name}")]
    UnknownBroker { broker_name: String },

    /// A message the broker would refuse; nothing was sent.
    #[error("invalid message for topic {topic}: {reason}")]
    InvalidMessage { topic: String, reason: String },

    /// A config or argument that cannot work.
    #[error("invalid config: {reason}")]
    InvalidConfig { reason: String },

    /// An answer that does not decode.
    #[error("bad response from {addr}: {reason}")]
    BadResponse { addr: String, reason: String },

    /// The local offset file (broadcasting consumers) could not be read or written.
    #[error("local offset store {path:?}: {source}")]
    OffsetStore {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The producer or consumer has been shut down (or not started).
    #[error("{what} is not running")]
    NotRunning { what: &'static str },

    #[error(transparent)]
    Remoting(#[from] remoting::Error),
}

impl ClientError {
    /// True when the request may have been carried out even though no answer came.
    pub fn is_outcome_unknown(&self) -> bool {
        match self {
            ClientError::OutcomeUnknown { .. } => true,
            ClientError::Remoting(e) => e.is_outcome_unknown(),
            _ => false,
        }
    }

    /// The broker's response code, when a broker refused.
    pub fn broker_code(&self) -> Option<i32> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
