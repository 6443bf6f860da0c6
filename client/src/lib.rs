//! The Rust client for rocketraft (and RocketMQ 4.x name servers).
//!
//! # Layout
//!
//! - [`namesrv`]: [`NameServerClient`], route, cluster and topic-list look-ups against
//!   one or more name servers, failing over between them.
//! - [`error`]: the crate's error type.
//!
//! Producer and consumers come with the broker.

pub mod error;
pub mod namesrv;

pub use error::{ClientError, Result};
pub use namesrv::NameServerClient;
