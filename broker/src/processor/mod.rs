//! Request processors, one file per family. Each returns the response to send; errors
//! become responses with a readable remark, never a panic or a dropped connection.

pub mod admin;
pub mod client;
pub mod offset;
pub mod pull;
pub mod send;

use remoting::{RemotingCommand, ResponseCode};

/// Why a processor answers with an error.
pub enum ProcessError {
    /// A ready error response (boxed: errors stay small on the success path).
    Response(Box<RemotingCommand>),
    /// A header that does not decode.
    Header(remoting::Error),
}

impl From<remoting::Error> for ProcessError {
    fn from(e: remoting::Error) -> Self {
        ProcessError::Header(e)
    }
}

pub type ProcessResult = Result<RemotingCommand, ProcessError>;

pub(crate) fn fail(code: ResponseCode, remark: impl Into<String>) -> ProcessError {
    ProcessError::Response(Box::new(RemotingCommand::error(code, remark)))
}

/// RocketMQ's topic name rule: `[%|a-zA-Z0-9_-]`, at most 127 characters.
pub(crate) fn check_topic(topic: &str) -> Result<(), ProcessError> {
    if topic.is_empty() || topic.len() > 127 {
        return Err(fail(
            ResponseCode::MESSAGE_ILLEGAL,
            format!("topic `{topic}` must be 1 to 127 characters"),
        ));
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'|' | b'_' | b'-'))
    {
        return Err(fail(
            ResponseCode::MESSAGE_ILLEGAL,
            format!("topic `{topic}` may contain only letters, digits, %, |, _ and -"),
        ));
    }
    Ok(())
}
