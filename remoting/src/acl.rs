//! RocketMQ 4.x's plain ACL (being written).
