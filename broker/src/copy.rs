//! A stored message copied into another topic and queue by this node: a delivered
//! scheduled message ([`crate::schedule`]), a retry or dead letter
//! (`processor::send_back`), a committed or discarded transaction
//! ([`crate::transaction`]). Each caller decides the properties; the copy keeps the
//! original's body, flag, born time and host, and is stored anew (this node's store
//! host, the given store time, offsets filled in at apply).

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use remoting::message::MessageRecord;

/// The encoded copy of `original` for `topic`/`queue_id` with `properties`, stored at
/// `store_timestamp` by `store_host`; `edit` changes anything else the copy needs
/// (system flag, reconsume times, prepared transaction offset).
pub fn stored_copy(
    original: &MessageRecord<'_>,
    topic: &str,
    queue_id: i32,
    properties: &str,
    store_timestamp: i64,
    store_host: SocketAddr,
    edit: impl FnOnce(&mut MessageRecord<'_>),
) -> Result<Bytes, String> {
    let mut copy = MessageRecord {
        topic,
        queue_id,
        queue_offset: 0,
        commit_log_offset: 0,
        store_timestamp,
        store_host,
        properties,
        body_crc: 0,
        ..original.clone()
    };
    edit(&mut copy);
    let mut buf = BytesMut::with_capacity(copy.encoded_len().map_err(|e| e.to_string())?);
    copy.encode(&mut buf).map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}
