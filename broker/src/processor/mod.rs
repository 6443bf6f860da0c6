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

/// A name that breaks RocketMQ's rules ([`remoting::names`]), as an answer. Names in typed
/// headers are checked as the header is read; this serves names in bodies and raw fields.
pub(crate) fn bad_name(e: remoting::names::BadName) -> ProcessError {
    fail(ResponseCode::SYSTEM_ERROR, e.to_string())
}

/// The value of a required `extFields` entry that has no typed header.
pub(crate) fn required_ext<'a>(
    request: &'a RemotingCommand,
    field: &str,
) -> Result<&'a str, ProcessError> {
    request.ext(field).ok_or_else(|| {
        fail(
            ResponseCode::SYSTEM_ERROR,
            format!("missing header field `{field}`"),
        )
    })
}
