//! The client's one error type.

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No name server address was given.
    #[error("no name server address given (namesrvAddr is empty)")]
    NoNameServer,

    /// Every name server failed; the last failure is kept.
    #[error("no name server answered ({tried} tried): {last}")]
    NameServersUnavailable { tried: usize, last: remoting::Error },

    /// A server answered with an error code.
    #[error("{addr} answered {code}: {remark}")]
    Refused {
        addr: String,
        code: i32,
        remark: String,
    },

    #[error(transparent)]
    Remoting(#[from] remoting::Error),
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
