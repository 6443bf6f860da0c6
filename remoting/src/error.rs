//! The crate's one error type.

use std::time::Duration;

/// What can go wrong while encoding, decoding or exchanging remoting frames.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A frame that cannot be decoded: the connection that sent it is closed.
    #[error("bad frame: {reason}")]
    BadFrame { reason: String },

    /// A frame over the configured maximum: the connection that sent it is closed.
    #[error("frame of {frame_bytes} bytes exceeds the maximum of {max_frame_bytes} bytes")]
    FrameTooLarge {
        frame_bytes: usize,
        max_frame_bytes: usize,
    },

    /// A header's serialize type is neither JSON (0) nor ROCKETMQ (1).
    #[error("unknown serialize type {0}")]
    UnknownSerializeType(u8),

    /// A typed header is missing a field or has one that does not parse.
    #[error("bad header field `{field}`: {reason}")]
    BadHeaderField { field: &'static str, reason: String },

    /// A JSON body that does not parse as the expected shape.
    #[error("bad {what} body: {reason}")]
    BadBody { what: &'static str, reason: String },

    /// A message record that does not decode.
    #[error("bad message record at byte {at}: {reason}")]
    BadRecord { at: usize, reason: String },

    /// No response arrived before the deadline. The request may or may not have been
    /// carried out: the outcome is unknown, never "failed".
    #[error("no response within {0:?}: outcome unknown")]
    Timeout(Duration),

    /// The in-flight window stayed full for the whole deadline; the request was not sent.
    #[error("too many requests in flight to {peer}; not sent")]
    Busy { peer: String },

    /// The connection was closed before the request was handed to it: it was not sent.
    #[error("connection to {peer} is closed; request not sent")]
    NotSent { peer: String },

    /// The connection is closed; requests in flight on it have an unknown outcome.
    #[error("connection to {peer} closed")]
    ConnectionClosed { peer: String },

    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    pub(crate) fn bad_frame(reason: impl Into<String>) -> Self {
        Error::BadFrame {
            reason: reason.into(),
        }
    }

    /// True when the request may have reached the peer and been carried out.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Error::Timeout(_) | Error::ConnectionClosed { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
