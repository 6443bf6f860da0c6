//! The broker's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Stored data contradicts itself: the node stops instead of serving wrong data.
    #[error("{what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },

    #[error("bad config: {0}")]
    Config(String),

    #[error(transparent)]
    DLedger(#[from] dledger::DLedgerError),

    #[error(transparent)]
    Remoting(#[from] remoting::Error),
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
