//! REGISTER_BROKER's compressed body: RocketMQ's `RegisterBrokerBody.encode(true)`, sent
//! with the header field `compressed=true`.
//!
//! A zlib stream (RFC 1950, as Java's `DeflaterOutputStream`) of, with every int a 4-byte
//! big-endian:
//! 1. `len` + the DataVersion as JSON;
//! 2. the topic count, then per topic `len` + the line `name read write perm filterType`
//!    (`TopicConfig.encode()`: not JSON, fields separated by one space);
//! 3. `len` + the filter-server list as a JSON array.
//!
//! `topicSysFlag` and `order` are not carried (RocketMQ's decoder leaves them at their
//! defaults, and so does this one). A 127-character topic costs about 150 bytes before
//! compression and a few after, against about 200 in the JSON form, so 100,000 topics fit
//! the name server's frame limit with room to spare.
//!
//! Decoding is bounded: at most `max_inflated` bytes are inflated (a small compressed body
//! cannot claim gigabytes), and every length is checked against what is left.

use std::io::{Read, Write};

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;

#[cfg(test)]
use crate::route::DataVersion;
use crate::route::{RegisterBrokerBody, TopicConfig};

/// The header's `bodyCrc32`: CRC32 of the body as sent (compressed or not), with the sign
/// bit cleared (RocketMQ's `UtilAll.crc32`).
pub fn body_crc32(body: &[u8]) -> i32 {
    (crc32fast::hash(body) & 0x7FFF_FFFF) as i32
}

/// The compressed form of `body`.
pub fn encode_compressed(body: &RegisterBrokerBody) -> Vec<u8> {
    let wrapper = &body.topic_config_serialize_wrapper;
    let mut raw = Vec::with_capacity(64 + wrapper.topic_config_table.len() * 160);
    let mut put = |bytes: &[u8]| {
        raw.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        raw.extend_from_slice(bytes);
    };
    put(&serde_json::to_vec(&wrapper.data_version).expect("a DataVersion encodes"));
    let mut lines = Vec::with_capacity(wrapper.topic_config_table.len());
    for config in wrapper.topic_config_table.values() {
        lines.push(format!(
            "{} {} {} {} {}",
            config.topic_name,
            config.read_queue_nums,
            config.write_queue_nums,
            config.perm,
            config.topic_filter_type
        ));
    }
    raw.extend_from_slice(&(lines.len() as i32).to_be_bytes());
    for line in &lines {
        raw.extend_from_slice(&(line.len() as i32).to_be_bytes());
        raw.extend_from_slice(line.as_bytes());
    }
    let filters = serde_json::to_vec(&body.filter_server_list).expect("a list encodes");
    raw.extend_from_slice(&(filters.len() as i32).to_be_bytes());
    raw.extend_from_slice(&filters);
    let mut out = ZlibEncoder::new(Vec::with_capacity(raw.len() / 4), Compression::best());
    out.write_all(&raw).expect("writing into memory");
    out.finish().expect("writing into memory")
}

/// Reads a compressed body, inflating at most `max_inflated` bytes.
pub fn decode_compressed(bytes: &[u8], max_inflated: usize) -> Result<RegisterBrokerBody, String> {
    let mut raw = Vec::new();
    ZlibDecoder::new(bytes)
        .take(max_inflated as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("compressed register body: {e}"))?;
    if raw.len() > max_inflated {
        return Err(format!(
            "compressed register body inflates past {max_inflated} bytes"
        ));
    }
    let next_int = |at: &mut usize, what: &str| -> Result<usize, String> {
        let b = raw
            .get(*at..*at + 4)
            .ok_or_else(|| format!("compressed register body ends before {what}"))?;
        *at += 4;
        let n = i32::from_be_bytes(b.try_into().expect("4 bytes"));
        usize::try_from(n).map_err(|_| format!("negative {what} ({n})"))
    };
    let chunk = |from: usize, len: usize, what: &str| -> Result<std::ops::Range<usize>, String> {
        let end = from
            .checked_add(len)
            .filter(|end| *end <= raw.len())
            .ok_or_else(|| format!("{what} of {len} bytes runs past the body"))?;
        Ok(from..end)
    };
    let mut body = RegisterBrokerBody::default();
    let mut at = 0usize;
    let len = next_int(&mut at, "the data version's length")?;
    let range = chunk(at, len, "the data version")?;
    body.topic_config_serialize_wrapper.data_version = serde_json::from_slice(&raw[range.clone()])
        .map_err(|e| format!("compressed register body's data version: {e}"))?;
    at = range.end;
    let topics = next_int(&mut at, "the topic count")?;
    for i in 0..topics {
        let len = next_int(&mut at, "a topic's length")?;
        let range = chunk(at, len, "a topic line")?;
        at = range.end;
        let line =
            std::str::from_utf8(&raw[range]).map_err(|_| format!("topic line {i} is not UTF-8"))?;
        let config = decode_topic_line(line).map_err(|e| format!("topic line {i}: {e}"))?;
        body.topic_config_serialize_wrapper
            .topic_config_table
            .insert(config.topic_name.clone(), config);
    }
    let len = next_int(&mut at, "the filter-server list's length")?;
    let range = chunk(at, len, "the filter-server list")?;
    body.filter_server_list = serde_json::from_slice(&raw[range.clone()])
        .map_err(|e| format!("compressed register body's filter servers: {e}"))?;
    if range.end != raw.len() {
        return Err(format!(
            "{} bytes after the compressed register body's end",
            raw.len() - range.end
        ));
    }
    Ok(body)
}

/// `TopicConfig.decode`: `name read write perm filterType`.
fn decode_topic_line(line: &str) -> Result<TopicConfig, String> {
    let parts: Vec<&str> = line.split(' ').collect();
    let [name, read, write, perm, filter] = parts[..] else {
        return Err(format!("`{line}` is not `name read write perm filterType`"));
    };
    let number = |what: &str, text: &str| {
        text.parse::<i32>()
            .map_err(|_| format!("{what} `{text}` is not a number"))
    };
    Ok(TopicConfig {
        topic_name: name.to_string(),
        read_queue_nums: number("readQueueNums", read)?,
        write_queue_nums: number("writeQueueNums", write)?,
        perm: number("perm", perm)?,
        topic_filter_type: filter.to_string(),
        ..TopicConfig::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(topics: usize) -> RegisterBrokerBody {
        let mut body = RegisterBrokerBody::default();
        body.topic_config_serialize_wrapper.data_version = DataVersion {
            state_version: 0,
            timestamp: 1_700_000_000_000,
            counter: 7,
        };
        for i in 0..topics {
            let name = format!("{i:06}-{}", "t".repeat(120));
            body.topic_config_serialize_wrapper
                .topic_config_table
                .insert(
                    name.clone(),
                    TopicConfig {
                        topic_name: name,
                        read_queue_nums: 8,
                        write_queue_nums: 8,
                        perm: 6,
                        topic_filter_type: "SINGLE_TAG".into(),
                        ..TopicConfig::default()
                    },
                );
        }
        body
    }

    // Proves a body round-trips (but for topicSysFlag and order, which the format does not
    // carry), and that 100,000 topics of 127 characters compress to well under the name
    // server's 16 MiB frame limit, where their JSON form does not fit.
    #[test]
    fn round_trip_and_100k_topics() {
        let small = body(3);
        assert_eq!(
            decode_compressed(&encode_compressed(&small), 1 << 20).unwrap(),
            small
        );
        let big = body(100_000);
        let json = serde_json::to_vec(&big).unwrap();
        let compressed = encode_compressed(&big);
        println!(
            "100,000 topics: JSON {} bytes, compressed {} bytes",
            json.len(),
            compressed.len()
        );
        assert!(json.len() > 16 << 20, "the JSON form no longer overflows");
        assert!(compressed.len() < 4 << 20);
        let decoded = decode_compressed(&compressed, 64 << 20).unwrap();
        assert_eq!(
            decoded
                .topic_config_serialize_wrapper
                .topic_config_table
                .len(),
            100_000
        );
        assert_eq!(decoded, big);
    }

    // Proves bad input is refused with a reason: a zip bomb past the limit, garbage, a cut
    // stream, a length past the end, a bad topic line.
    #[test]
    fn bad_bodies_are_refused() {
        let bomb = {
            let mut e = ZlibEncoder::new(Vec::new(), Compression::best());
            e.write_all(&vec![0u8; 8 << 20]).unwrap();
            e.finish().unwrap()
        };
        assert!(decode_compressed(&bomb, 1 << 20)
            .unwrap_err()
            .contains("inflates past"));
        assert!(decode_compressed(b"not zlib", 1 << 20).is_err());
        let good = encode_compressed(&body(2));
        assert!(decode_compressed(&good[..good.len() / 2], 1 << 20).is_err());
        let mut raw = Vec::new();
        raw.extend_from_slice(&1000i32.to_be_bytes());
        raw.extend_from_slice(b"{}");
        let mut e = ZlibEncoder::new(Vec::new(), Compression::best());
        e.write_all(&raw).unwrap();
        let err = decode_compressed(&e.finish().unwrap(), 1 << 20).unwrap_err();
        assert!(err.contains("runs past"), "{err}");
        assert!(decode_topic_line("t 8 8 six SINGLE_TAG").is_err());
        assert!(decode_topic_line("t 8 8 6").is_err());
    }
}
