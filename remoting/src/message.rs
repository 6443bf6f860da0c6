//! The message record codec in RocketMQ's CommitLog layout (`MessageExtEncoder`),
//! RocketMQ's properties codec, msgIds, and the batch body of SEND_BATCH_MESSAGE.
//!
//! A record, all big-endian:
//!
//! | field | bytes |
//! | --- | --- |
//! | TOTALSIZE | 4 |
//! | MAGIC (v1 `0xDAA320A7`, v2 `0xDAA320AB`) | 4 |
//! | BODYCRC (CRC32 of the body, top bit cleared) | 4 |
//! | QUEUEID | 4 |
//! | FLAG | 4 |
//! | QUEUEOFFSET | 8 |
//! | PHYSICALOFFSET | 8 |
//! | SYSFLAG | 4 |
//! | BORNTIMESTAMP | 8 |
//! | BORNHOST (IPv4 + port, or IPv6 + port when SYSFLAG has bit 4) | 8 or 20 |
//! | STORETIMESTAMP | 8 |
//! | STOREHOST (likewise, SYSFLAG bit 5) | 8 or 20 |
//! | RECONSUMETIMES | 4 |
//! | PREPARED_TX_OFFSET | 8 |
//! | BODY (i32 length, bytes) | 4 + n |
//! | TOPIC (v1: u8 length; v2: i16 length) | 1 or 2 + n |
//! | PROPERTIES (i16 length, `k\x01v\x02`...) | 2 + n |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BufMut, BytesMut};

use crate::error::{Error, Result};

pub const MAGIC_V1: u32 = 0xDAA3_20A7;
pub const MAGIC_V2: u32 = 0xDAA3_20AB;

/// SYSFLAG bits.
pub mod sys_flag {
    pub const COMPRESSED: i32 = 0x1;
    pub const MULTI_TAGS: i32 = 0x2;
    pub const TRANSACTION_PREPARED: i32 = 0x4;
    pub const TRANSACTION_COMMIT: i32 = 0x8;
    pub const TRANSACTION_ROLLBACK: i32 = 0xC;
    pub const BORN_HOST_V6: i32 = 1 << 4;
    pub const STORE_HOST_V6: i32 = 1 << 5;
    /// Bits 8-10: how a COMPRESSED body was compressed (RocketMQ 4.9.x/5.x
    /// `MessageSysFlag`, `CompressionType`): 0 (older clients) or 3 = zlib, 1 = lz4,
    /// 2 = zstd.
    pub const COMPRESSION_TYPE_MASK: i32 = 0x7 << 8;
    pub const COMPRESSION_LZ4: i32 = 0x1 << 8;
    pub const COMPRESSION_ZSTD: i32 = 0x2 << 8;
    pub const COMPRESSION_ZLIB: i32 = 0x3 << 8;
}

/// Byte position of QUEUEOFFSET inside a record.
pub const QUEUE_OFFSET_POS: usize = 20;
/// Byte position of PHYSICALOFFSET inside a record.
pub const PHYSICAL_OFFSET_POS: usize = 28;
/// Byte position of STORETIMESTAMP for a record whose born host is IPv4.
const SYS_FLAG_POS: usize = 36;

/// Property names RocketMQ defines and rocketraft uses.
pub mod property {
    pub const TAGS: &str = "TAGS";
    pub const KEYS: &str = "KEYS";
    pub const UNIQ_KEY: &str = "UNIQ_KEY";
    pub const WAIT_STORE_MSG_OK: &str = "WAIT";
    pub const DELAY_TIME_LEVEL: &str = "DELAY";
    pub const MIN_OFFSET: &str = "MIN_OFFSET";
    pub const MAX_OFFSET: &str = "MAX_OFFSET";
    pub const SHARDING_KEY: &str = "__SHARDINGKEY";
    /// Where a scheduled (delayed, timer or retry) message is to be delivered.
    pub const REAL_TOPIC: &str = "REAL_TOPIC";
    pub const REAL_QUEUE_ID: &str = "REAL_QID";
    /// The topic a retried message was first consumed from.
    pub const RETRY_TOPIC: &str = "RETRY_TOPIC";
    pub const ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";
    /// Carried by a client's own re-send of a failed message (moved into the send
    /// header's `reconsumeTimes` and `maxReconsumeTimes` by the Java producer).
    pub const RECONSUME_TIME: &str = "RECONSUME_TIME";
    pub const MAX_RECONSUME_TIMES: &str = "MAX_RECONSUME_TIMES";
    pub const TRANSACTION_PREPARED: &str = "TRAN_MSG";
    pub const PRODUCER_GROUP: &str = "PGROUP";
    /// Check-backs a half message has had (RocketMQ's `TRANSACTION_CHECK_TIMES`).
    pub const TRANSACTION_CHECK_TIMES: &str = "TRANSACTION_CHECK_TIMES";
    /// Seconds a half message is not checked back (-1: `transactionTimeOut`).
    pub const CHECK_IMMUNITY_TIME_IN_SECONDS: &str = "CHECK_IMMUNITY_TIME_IN_SECONDS";
    /// RocketMQ 5's timer messages: an absolute delivery time (ms since the epoch), or a
    /// delay from the send in seconds or milliseconds.
    pub const TIMER_DELIVER_MS: &str = "TIMER_DELIVER_MS";
    pub const TIMER_DELAY_SEC: &str = "TIMER_DELAY_SEC";
    pub const TIMER_DELAY_MS: &str = "TIMER_DELAY_MS";
    /// The due time of a stored timer message (RocketMQ 5 sets it on the stored copy).
    pub const TIMER_OUT_MS: &str = "TIMER_OUT_MS";
}

const NAME_VALUE_SEPARATOR: char = '\u{1}';
const PROPERTY_SEPARATOR: char = '\u{2}';

/// RocketMQ's body CRC: CRC32 (IEEE) with the top bit cleared.
pub fn body_crc(body: &[u8]) -> i32 {
    (crc32fast::hash(body) & 0x7FFF_FFFF) as i32
}

/// One message record, borrowing its variable parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord<'a> {
    pub topic: &'a str,
    pub queue_id: i32,
    pub flag: i32,
    pub queue_offset: i64,
    pub commit_log_offset: i64,
    /// Host bits 4 and 5 are set from the addresses when encoding.
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub born_host: SocketAddr,
    pub store_timestamp: i64,
    pub store_host: SocketAddr,
    pub reconsume_times: i32,
    pub prepared_transaction_offset: i64,
    pub body: &'a [u8],
    /// Properties already in RocketMQ's `k\x01v\x02` form.
    pub properties: &'a str,
    /// Filled by the decoder; the encoder computes it from the body.
    pub body_crc: i32,
}

fn host_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

fn put_host(out: &mut BytesMut, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => out.put_slice(&ip.octets()),
        IpAddr::V6(ip) => out.put_slice(&ip.octets()),
    }
    out.put_i32(addr.port() as i32);
}

impl<'a> MessageRecord<'a> {
    /// The record's encoded size, or an error when a part is over its length field.
    pub fn encoded_len(&self) -> Result<usize> {
        if self.properties.len() > i16::MAX as usize {
            return Err(Error::BadRecord {
                at: 0,
                reason: format!("properties of {} bytes exceed 32767", self.properties.len()),
            });
        }
        if self.topic.len() > i16::MAX as usize {
            return Err(Error::BadRecord {
                at: 0,
                reason: format!("topic of {} bytes exceeds 32767", self.topic.len()),
            });
        }
        let topic_len_bytes = if self.topic.len() > 127 { 2 } else { 1 };
        Ok(4 + 4
            + 4
            + 4
            + 4
            + 8
            + 8
            + 4
            + 8
            + host_len(&self.born_host)
            + 8
            + host_len(&self.store_host)
            + 4
            + 8
            + 4
            + self.body.len()
            + topic_len_bytes
            + self.topic.len()
            + 2
            + self.properties.len())
    }

    /// Appends the record to `out` and returns its length. A topic longer than 127
    /// bytes is written as v2 (two-byte topic length), as RocketMQ does.
    pub fn encode(&self, out: &mut BytesMut) -> Result<usize> {
        let total = self.encoded_len()?;
        out.reserve(total);
        let v2 = self.topic.len() > 127;
        let mut sys_flag = self.sys_flag & !(sys_flag::BORN_HOST_V6 | sys_flag::STORE_HOST_V6);
        if self.born_host.is_ipv6() {
            sys_flag |= sys_flag::BORN_HOST_V6;
        }
        if self.store_host.is_ipv6() {
            sys_flag |= sys_flag::STORE_HOST_V6;
        }
        out.put_i32(total as i32);
        out.put_u32(if v2 { MAGIC_V2 } else { MAGIC_V1 });
        out.put_i32(body_crc(self.body));
        out.put_i32(self.queue_id);
        out.put_i32(self.flag);
        out.put_i64(self.queue_offset);
        out.put_i64(self.commit_log_offset);
        out.put_i32(sys_flag);
        out.put_i64(self.born_timestamp);
        put_host(out, &self.born_host);
        out.put_i64(self.store_timestamp);
        put_host(out, &self.store_host);
        out.put_i32(self.reconsume_times);
        out.put_i64(self.prepared_transaction_offset);
        out.put_i32(self.body.len() as i32);
        out.put_slice(self.body);
        if v2 {
            out.put_i16(self.topic.len() as i16);
        } else {
            out.put_u8(self.topic.len() as u8);
        }
        out.put_slice(self.topic.as_bytes());
        out.put_i16(self.properties.len() as i16);
        out.put_slice(self.properties.as_bytes());
        Ok(total)
    }

    /// Decodes the record at the start of `buf`; returns it and its length. The body
    /// CRC is read, not checked: call [`Self::body_crc_ok`].
    pub fn decode(buf: &'a [u8]) -> Result<(MessageRecord<'a>, usize)> {
        let bad = |at: usize, reason: String| Error::BadRecord { at, reason };
        if buf.len() < 8 {
            return Err(bad(0, format!("{} bytes cannot hold a record", buf.len())));
        }
        let total = i32::from_be_bytes(buf[0..4].try_into().unwrap());
        if total < 8 || total as usize > buf.len() {
            return Err(bad(
                0,
                format!("TOTALSIZE {total} but {} bytes available", buf.len()),
            ));
        }
        let total = total as usize;
        let mut r = Reader {
            buf: &buf[..total],
            pos: 4,
        };
        let magic = r.u32()?;
        let v2 = match magic {
            MAGIC_V1 => false,
            MAGIC_V2 => true,
            other => {
                return Err(bad(
                    4,
                    format!("magic {other:#010X} is not a message record"),
                ))
            }
        };
        let body_crc = r.i32()?;
        let queue_id = r.i32()?;
        let flag = r.i32()?;
        let queue_offset = r.i64()?;
        let commit_log_offset = r.i64()?;
        let sys_flag = r.i32()?;
        let born_timestamp = r.i64()?;
        let born_host = r.host(sys_flag & sys_flag::BORN_HOST_V6 != 0)?;
        let store_timestamp = r.i64()?;
        let store_host = r.host(sys_flag & sys_flag::STORE_HOST_V6 != 0)?;
        let reconsume_times = r.i32()?;
        let prepared_transaction_offset = r.i64()?;
        let body_len = r.i32()?;
        if body_len < 0 {
            return Err(bad(r.pos - 4, format!("negative body length {body_len}")));
        }
        let body = r.bytes(body_len as usize)?;
        let topic_len = if v2 { r.i16()? as i64 } else { r.u8()? as i64 };
        if topic_len < 0 {
            return Err(bad(r.pos, "negative topic length".into()));
        }
        let topic_at = r.pos;
        let topic = std::str::from_utf8(r.bytes(topic_len as usize)?)
            .map_err(|_| bad(topic_at, "topic is not UTF-8".into()))?;
        let properties_len = r.i16()?;
        if properties_len < 0 {
            return Err(bad(r.pos, "negative properties length".into()));
        }
        let properties_at = r.pos;
        let properties = std::str::from_utf8(r.bytes(properties_len as usize)?)
            .map_err(|_| bad(properties_at, "properties are not UTF-8".into()))?;
        if r.pos != total {
            return Err(bad(
                r.pos,
                format!("TOTALSIZE {total} but the fields end at {}", r.pos),
            ));
        }
        Ok((
            MessageRecord {
                topic,
                queue_id,
                flag,
                queue_offset,
                commit_log_offset,
                sys_flag,
                born_timestamp,
                born_host,
                store_timestamp,
                store_host,
                reconsume_times,
                prepared_transaction_offset,
                body,
                properties,
                body_crc,
            },
            total,
        ))
    }

    /// True when the stored body CRC matches the body.
    pub fn body_crc_ok(&self) -> bool {
        self.body_crc == body_crc(self.body)
    }

    /// The value of one property.
    pub fn property(&self, name: &str) -> Option<&'a str> {
        property_value(self.properties, name)
    }

    /// msgId: store host and commit log offset, RocketMQ's hex form.
    pub fn msg_id(&self) -> String {
        message_id(self.store_host, self.commit_log_offset)
    }
}

/// Decodes every record in `buf` (a pull body is such a run).
pub fn decode_records(buf: &[u8]) -> Result<Vec<MessageRecord<'_>>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let (record, len) = MessageRecord::decode(&buf[pos..]).map_err(|e| match e {
            Error::BadRecord { at, reason } => Error::BadRecord {
                at: pos + at,
                reason,
            },
            other => other,
        })?;
        out.push(record);
        pos += len;
    }
    Ok(out)
}

/// Writes the queue offset and commit log offset into an encoded record, in place.
/// rocketraft assigns both when a record is applied and fills them in on read.
pub fn patch_offsets(record: &mut [u8], queue_offset: i64, commit_log_offset: i64) {
    record[QUEUE_OFFSET_POS..QUEUE_OFFSET_POS + 8].copy_from_slice(&queue_offset.to_be_bytes());
    record[PHYSICAL_OFFSET_POS..PHYSICAL_OFFSET_POS + 8]
        .copy_from_slice(&commit_log_offset.to_be_bytes());
}

/// Reads the SYSFLAG of an encoded record.
pub fn record_sys_flag(record: &[u8]) -> Option<i32> {
    record
        .get(SYS_FLAG_POS..SYS_FLAG_POS + 4)
        .map(|b| i32::from_be_bytes(b.try_into().unwrap()))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len().saturating_sub(self.pos) < n {
            return Err(Error::BadRecord {
                at: self.pos,
                reason: format!(
                    "needs {n} bytes but {} remain within TOTALSIZE",
                    self.buf.len().saturating_sub(self.pos)
                ),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }
    fn i16(&mut self) -> Result<i16> {
        Ok(self.bytes(2)?.get_i16())
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(self.bytes(4)?.get_i32())
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(self.bytes(4)?.get_u32())
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(self.bytes(8)?.get_i64())
    }
    fn host(&mut self, v6: bool) -> Result<SocketAddr> {
        let ip = if v6 {
            let octets: [u8; 16] = self.bytes(16)?.try_into().unwrap();
            IpAddr::V6(Ipv6Addr::from(octets))
        } else {
            let octets: [u8; 4] = self.bytes(4)?.try_into().unwrap();
            IpAddr::V4(Ipv4Addr::from(octets))
        };
        let port = self.i32()?;
        Ok(SocketAddr::new(ip, port as u16))
    }
}

/// Encodes properties in RocketMQ's `k\x01v\x02` form.
pub fn encode_properties<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        out.push_str(k);
        out.push(NAME_VALUE_SEPARATOR);
        out.push_str(v);
        out.push(PROPERTY_SEPARATOR);
    }
    out
}

/// Iterates over `k\x01v\x02` properties; entries without a separator are skipped,
/// as RocketMQ's `string2messageProperties` does.
pub fn properties_iter(properties: &str) -> impl Iterator<Item = (&str, &str)> {
    properties
        .split(PROPERTY_SEPARATOR)
        .filter_map(|pair| pair.split_once(NAME_VALUE_SEPARATOR))
}

/// The value of one property in a `k\x01v\x02` string: what [`properties_iter`] yields
/// first for `name`. Every apply looks up TAGS of every record, so this compares bytes
/// instead of splitting the string into pairs.
pub fn property_value<'a>(properties: &'a str, name: &str) -> Option<&'a str> {
    let (bytes, key) = (properties.as_bytes(), name.as_bytes());
    let mut start = 0;
    while start <= bytes.len() {
        let end = bytes[start..]
            .iter()
            .position(|&b| b == PROPERTY_SEPARATOR as u8)
            .map_or(bytes.len(), |i| start + i);
        let pair = &bytes[start..end];
        if pair.len() > key.len()
            && pair[key.len()] == NAME_VALUE_SEPARATOR as u8
            && &pair[..key.len()] == key
        {
            // Both ends sit next to one-byte separators: char boundaries.
            return Some(&properties[start + key.len() + 1..end]);
        }
        start = end + 1;
    }
    None
}

/// The values of several properties in one pass over `properties`: `names[i]`'s value at
/// `i` (its first occurrence, as [`property_value`] finds it). For a hot path that needs a
/// few properties of every message.
pub fn property_values<'a, const N: usize>(
    properties: &'a str,
    names: [&str; N],
) -> [Option<&'a str>; N] {
    let mut out = [None; N];
    for pair in properties.split(PROPERTY_SEPARATOR) {
        let Some((name, value)) = pair.split_once(NAME_VALUE_SEPARATOR) else {
            continue;
        };
        if let Some(i) = names.iter().position(|n| *n == name) {
            if out[i].is_none() {
                out[i] = Some(value);
            }
        }
    }
    out
}

/// msgId: store host (IP and port) and commit log offset as uppercase hex, as
/// RocketMQ's `MessageDecoder.createMessageId`.
pub fn message_id(store_host: SocketAddr, commit_log_offset: i64) -> String {
    let mut raw = BytesMut::with_capacity(28);
    put_host(&mut raw, &store_host);
    raw.put_i64(commit_log_offset);
    let mut out = String::with_capacity(raw.len() * 2);
    for b in raw.iter() {
        out.push(
            char::from_digit((b >> 4) as u32, 16)
                .unwrap()
                .to_ascii_uppercase(),
        );
        out.push(
            char::from_digit((b & 0xF) as u32, 16)
                .unwrap()
                .to_ascii_uppercase(),
        );
    }
    out
}

/// Splits a msgId into store host and commit log offset.
pub fn decode_message_id(msg_id: &str) -> Result<(SocketAddr, i64)> {
    let bad = |reason: &str| Error::BadRecord {
        at: 0,
        reason: format!("msgId `{msg_id}`: {reason}"),
    };
    if !msg_id.is_ascii() || (msg_id.len() != 32 && msg_id.len() != 56) {
        return Err(bad("not 32 or 56 hex digits"));
    }
    let mut raw = Vec::with_capacity(msg_id.len() / 2);
    for i in (0..msg_id.len()).step_by(2) {
        raw.push(u8::from_str_radix(&msg_id[i..i + 2], 16).map_err(|_| bad("not hex"))?);
    }
    let mut r = Reader { buf: &raw, pos: 0 };
    let host = r.host(raw.len() == 28)?;
    Ok((host, r.i64()?))
}

/// One message of a SEND_BATCH_MESSAGE body (`MessageDecoder.encodeMessage`):
/// `TOTALSIZE i32 | MAGIC i32 | BODYCRC i32 | FLAG i32 | body (i32 len) | properties (i16 len)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMessage<'a> {
    pub flag: i32,
    pub body: &'a [u8],
    pub properties: &'a str,
}

impl<'a> BatchMessage<'a> {
    pub fn encode(&self, out: &mut BytesMut) {
        let total = 4 + 4 + 4 + 4 + 4 + self.body.len() + 2 + self.properties.len();
        out.put_i32(total as i32);
        out.put_i32(0);
        out.put_i32(0);
        out.put_i32(self.flag);
        out.put_i32(self.body.len() as i32);
        out.put_slice(self.body);
        out.put_i16(self.properties.len() as i16);
        out.put_slice(self.properties.as_bytes());
    }
}

/// Decodes a SEND_BATCH_MESSAGE body.
pub fn decode_batch(buf: &[u8]) -> Result<Vec<BatchMessage<'_>>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let mut r = Reader { buf, pos };
        let total = r.i32()?;
        if total < 22 || pos + total as usize > buf.len() {
            return Err(Error::BadRecord {
                at: pos,
                reason: format!("batch message TOTALSIZE {total} does not fit"),
            });
        }
        let end = pos + total as usize;
        let mut r = Reader {
            buf: &buf[..end],
            pos: pos + 4,
        };
        let _magic = r.i32()?;
        let _crc = r.i32()?;
        let flag = r.i32()?;
        let body_len = r.i32()?;
        if body_len < 0 {
            return Err(Error::BadRecord {
                at: r.pos,
                reason: "negative body length".into(),
            });
        }
        let body = r.bytes(body_len as usize)?;
        let properties_len = r.i16()?;
        if properties_len < 0 {
            return Err(Error::BadRecord {
                at: r.pos,
                reason: "negative properties length".into(),
            });
        }
        let at = r.pos;
        let properties = std::str::from_utf8(r.bytes(properties_len as usize)?).map_err(|_| {
            Error::BadRecord {
                at,
                reason: "properties are not UTF-8".into(),
            }
        })?;
        if r.pos != end {
            return Err(Error::BadRecord {
                at: r.pos,
                reason: format!("batch message TOTALSIZE {total} but the fields end early"),
            });
        }
        out.push(BatchMessage {
            flag,
            body,
            properties,
        });
        pos = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    /// One pass finds what `property_value` finds for each name: first occurrence, empty
    /// values, names that are prefixes of others, missing names.
    #[test]
    fn property_values_agree_with_property_value() {
        let cases = [
            "",
            "TAGS\u{1}a\u{2}KEYS\u{1}k1 k2\u{2}",
            "TAGSX\u{1}no\u{2}TAGS\u{1}\u{2}KEYS\u{1}one",
            "KEYS\u{1}first\u{2}KEYS\u{1}second\u{2}broken\u{2}UNIQ_KEY\u{1}u",
        ];
        let names = ["TAGS", "KEYS", "UNIQ_KEY", "MISSING"];
        for props in cases {
            let found = property_values(props, names);
            for (i, name) in names.iter().enumerate() {
                assert_eq!(found[i], property_value(props, name), "{props:?} {name}");
            }
        }
    }

    use super::*;
    use proptest::prelude::*;

    fn sample<'a>(topic: &'a str, body: &'a [u8], properties: &'a str) -> MessageRecord<'a> {
        MessageRecord {
            topic,
            queue_id: 3,
            flag: 0,
            queue_offset: 17,
            commit_log_offset: 4096,
            sys_flag: 0,
            born_timestamp: 1_700_000_000_123,
            born_host: "10.0.0.9:51234".parse().unwrap(),
            store_timestamp: 1_700_000_000_456,
            store_host: "127.0.0.1:10911".parse().unwrap(),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body,
            properties,
            body_crc: body_crc(body),
        }
    }

    /// A record written byte by byte from RocketMQ's documented layout.
    #[test]
    fn golden_record_written_by_hand() {
        let body = b"Hello";
        let crc = (crc32fast::hash(body) & 0x7FFF_FFFF).to_be_bytes();
        let props = b"TAGS\x01TagA\x02";
        let mut g: Vec<u8> = Vec::new();
        let total: i32 =
            4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + 8 + 8 + 8 + 4 + 8 + 4 + 5 + 1 + 4 + 2 + 10;
        g.extend_from_slice(&total.to_be_bytes()); // TOTALSIZE
        g.extend_from_slice(&[0xDA, 0xA3, 0x20, 0xA7]); // MAGIC v1
        g.extend_from_slice(&crc); // BODYCRC
        g.extend_from_slice(&[0, 0, 0, 3]); // QUEUEID
        g.extend_from_slice(&[0, 0, 0, 0]); // FLAG
        g.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 17]); // QUEUEOFFSET
        g.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x10, 0]); // PHYSICALOFFSET 4096
        g.extend_from_slice(&[0, 0, 0, 0]); // SYSFLAG
        g.extend_from_slice(&1_700_000_000_123i64.to_be_bytes()); // BORNTIMESTAMP
        g.extend_from_slice(&[10, 0, 0, 9, 0, 0, 0xC8, 0x22]); // BORNHOST 10.0.0.9:51234
        g.extend_from_slice(&1_700_000_000_456i64.to_be_bytes()); // STORETIMESTAMP
        g.extend_from_slice(&[127, 0, 0, 1, 0, 0, 0x2A, 0x9F]); // STOREHOST 127.0.0.1:10911
        g.extend_from_slice(&[0, 0, 0, 0]); // RECONSUMETIMES
        g.extend_from_slice(&[0; 8]); // PREPARED_TX_OFFSET
        g.extend_from_slice(&[0, 0, 0, 5]);
        g.extend_from_slice(body); // BODY
        g.push(4);
        g.extend_from_slice(b"Test"); // TOPIC
        g.extend_from_slice(&[0, 10]);
        g.extend_from_slice(props); // PROPERTIES
        assert_eq!(g.len(), total as usize);

        let (record, len) = MessageRecord::decode(&g).unwrap();
        assert_eq!(len, g.len());
        assert_eq!(record, sample("Test", body, "TAGS\u{1}TagA\u{2}"));
        assert!(record.body_crc_ok());
        assert_eq!(record.property(property::TAGS), Some("TagA"));

        let mut ours = BytesMut::new();
        record.encode(&mut ours).unwrap();
        assert_eq!(&ours[..], &g[..]);
        assert_eq!(record.msg_id(), "7F00000100002A9F0000000000001000");
    }

    #[test]
    fn ipv6_hosts_and_long_topics_round_trip() {
        let topic = "t".repeat(200);
        let mut rec = sample(&topic, b"x", "");
        rec.born_host = "[::1]:9".parse().unwrap();
        rec.store_host = "[fe80::1]:10911".parse().unwrap();
        let mut buf = BytesMut::new();
        rec.encode(&mut buf).unwrap();
        assert_eq!(&buf[4..8], &MAGIC_V2.to_be_bytes());
        let (back, _) = MessageRecord::decode(&buf).unwrap();
        assert_eq!(
            back.sys_flag,
            sys_flag::BORN_HOST_V6 | sys_flag::STORE_HOST_V6
        );
        rec.sys_flag = back.sys_flag;
        assert_eq!(back, rec);
        let id = back.msg_id();
        assert_eq!(id.len(), 56);
        assert_eq!(
            decode_message_id(&id).unwrap(),
            (rec.store_host, rec.commit_log_offset)
        );
    }

    /// The ids RocketMQ's `MessageDecoder.createMessageId` makes: IPv4 (4 address bytes,
    /// port as an int, offset as a long: 32 hex digits) and IPv6 (16 address bytes: 56).
    #[test]
    fn message_ids_match_rocketmq_in_both_forms() {
        let v4: SocketAddr = "127.0.0.1:10911".parse().unwrap();
        assert_eq!(message_id(v4, 0x1234), "7F00000100002A9F0000000000001234");
        assert_eq!(
            decode_message_id("7F00000100002A9F0000000000001234").unwrap(),
            (v4, 0x1234)
        );
        let v6: SocketAddr = "[::1]:10911".parse().unwrap();
        let id = "0000000000000000000000000000000100002A9F0000000000000001";
        assert_eq!(message_id(v6, 1), id);
        assert_eq!(decode_message_id(id).unwrap(), (v6, 1));
        // A unique key (UNIQ_KEY) is 32 hex digits too: it decodes to some address, which
        // is why a client falls back to a unique-key query when the address answers nothing.
        assert!(decode_message_id("7F00000100002A9F00000000000012").is_err());
        assert!(decode_message_id("7F00000100002A9F000000000000123G").is_err());
    }

    #[test]
    fn offsets_patch_in_place() {
        let mut buf = BytesMut::new();
        sample("T", b"abc", "").encode(&mut buf).unwrap();
        patch_offsets(&mut buf, 99, 123_456);
        let (rec, _) = MessageRecord::decode(&buf).unwrap();
        assert_eq!((rec.queue_offset, rec.commit_log_offset), (99, 123_456));
        assert_eq!(record_sys_flag(&buf), Some(0));
    }

    #[test]
    fn properties_round_trip_and_skip_malformed_pairs() {
        let s = encode_properties([("KEYS", "k1 k2"), ("TAGS", "a")]);
        assert_eq!(s, "KEYS\u{1}k1 k2\u{2}TAGS\u{1}a\u{2}");
        let pairs: Vec<_> = properties_iter(&s).collect();
        assert_eq!(pairs, vec![("KEYS", "k1 k2"), ("TAGS", "a")]);
        assert_eq!(property_value("junk\u{2}A\u{1}b\u{2}", "A"), Some("b"));
    }

    #[test]
    fn batch_bodies_round_trip() {
        let msgs = vec![
            BatchMessage {
                flag: 0,
                body: b"one",
                properties: "TAGS\u{1}a\u{2}",
            },
            BatchMessage {
                flag: 7,
                body: b"",
                properties: "",
            },
        ];
        let mut buf = BytesMut::new();
        for m in &msgs {
            m.encode(&mut buf);
        }
        assert_eq!(decode_batch(&buf).unwrap(), msgs);
        assert!(decode_batch(&buf[..buf.len() - 1]).is_err());
    }

    #[test]
    fn truncated_and_bad_records_are_errors() {
        let mut buf = BytesMut::new();
        sample("T", b"abc", "K\u{1}V\u{2}")
            .encode(&mut buf)
            .unwrap();
        for cut in 0..buf.len() {
            assert!(MessageRecord::decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = buf.to_vec();
        bad[4] = 0;
        assert!(MessageRecord::decode(&bad).is_err());
        assert!(decode_message_id("zz").is_err());
    }

    /// Found by `cargo fuzz run record_decoder`: a TOTALSIZE of 0 made the reader
    /// subtract past zero.
    #[test]
    fn fuzz_crash_zero_total_size_is_an_error() {
        assert!(decode_records(&[0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        assert!(MessageRecord::decode(&[0, 0, 0, 7, 0xDA, 0xA3, 0x20, 0xA7]).is_err());
    }

    proptest! {
        /// The byte-comparing lookup finds what the pair iterator finds first, over
        /// strings made of the separators, a key's letters and a multi-byte char.
        #[test]
        fn property_value_agrees_with_properties_iter(
            properties in "[\u{1}\u{2}TAGSé]{0,24}",
            name in "[TAGSé]{0,5}",
        ) {
            let expected = properties_iter(&properties).find_map(|(k, v)| (k == name).then_some(v));
            prop_assert_eq!(property_value(&properties, &name), expected);
        }

        #[test]
        fn random_bytes_never_panic_the_record_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_records(&bytes);
            let _ = decode_batch(&bytes);
        }

        #[test]
        fn any_record_round_trips(
            topic in "[a-zA-Z0-9_%-]{1,200}",
            body in proptest::collection::vec(any::<u8>(), 0..200),
            props in "[a-zA-Z]{0,30}",
            queue_id in any::<i32>(),
            queue_offset in any::<i64>(),
            commit_log_offset in any::<i64>(),
        ) {
            let mut rec = sample(&topic, &body, &props);
            rec.queue_id = queue_id;
            rec.queue_offset = queue_offset;
            rec.commit_log_offset = commit_log_offset;
            let mut buf = BytesMut::new();
            let len = rec.encode(&mut buf).unwrap();
            prop_assert_eq!(len, buf.len());
            prop_assert_eq!(rec.encoded_len().unwrap(), len);
            let (back, _) = MessageRecord::decode(&buf).unwrap();
            prop_assert_eq!(back, rec);
        }
    }
}
