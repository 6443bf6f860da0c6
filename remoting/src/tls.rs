//! TLS for remoting connections (being written).
