//! Compressed message bodies, as RocketMQ's clients write them.
//!
//! - **Sending**: a body of at least `compress_msg_body_over_howmuch` bytes (4096) is
//!   compressed with zlib (RFC 1950: header, deflate, Adler-32) at `compress_level` (5),
//!   and SYSFLAG gets COMPRESSED (bit 0) and the zlib compression type (bits 8-10 = 3), as
//!   the Java 4.9.8 producer does (`DefaultMQProducerImpl.tryToCompressMessage`). Batches
//!   are not compressed (Java: "batch does not support compressing right now").
//! - **Reading**: a body with COMPRESSED is inflated before anyone sees it, whatever
//!   wrote it: Java 4.9.x/5.x set the type bits to zlib, Java before 4.9, the Apache C++
//!   and Go clients set bit 0 only (type 0, read as zlib as Java's `CompressionType`
//!   does); all three use zlib's format. LZ4 and zstd (types 1 and 2, RocketMQ 5 with
//!   `rocketmq.message.compressType`) are not supported and are reported as such.
//! - **A body that does not inflate** (corrupt, truncated, unsupported type, or larger
//!   than [`MAX_INFLATED_BODY_BYTES`] once inflated) is never handed to a listener: it
//!   is logged at ERROR with its topic, queue, offset and ids, and left out of the pull's
//!   messages; the consumer moves past it, and the message itself stays stored
//!   (Java's `MessageDecoder` also drops it, and with it the rest of that pull).

use std::io::{Read, Write};

use bytes::Bytes;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use remoting::message::sys_flag;

/// RocketMQ's default `compressMsgBodyOverHowmuch`.
pub const DEFAULT_COMPRESS_OVER_BYTES: usize = 4096;
/// RocketMQ's default `rocketmq.message.compressLevel`.
pub const DEFAULT_COMPRESS_LEVEL: u32 = 5;
/// The largest body inflated; a larger one is refused as a decompression bomb.
pub const MAX_INFLATED_BODY_BYTES: usize = 64 << 20;

/// The SYSFLAG bits of a body compressed by [`compress`].
pub const ZLIB_SYS_FLAG: i32 = sys_flag::COMPRESSED | sys_flag::COMPRESSION_ZLIB;

/// zlib-compresses `body` at `level` (0-9).
pub fn compress(body: &[u8], level: u32) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(
        Vec::with_capacity(body.len() / 2),
        Compression::new(level.min(9)),
    );
    // Writing to a Vec cannot fail.
    encoder.write_all(body).expect("compress into memory");
    encoder.finish().expect("compress into memory")
}

/// The body to send and its SYSFLAG bits: compressed when at least `over_bytes` long.
pub fn maybe_compress(body: Bytes, over_bytes: usize, level: u32) -> (Bytes, i32) {
    if body.len() >= over_bytes {
        (Bytes::from(compress(&body, level)), ZLIB_SYS_FLAG)
    } else {
        (body, 0)
    }
}

/// Why a stored body cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    #[error("compression type {0} ({1}) is not supported by this client; only zlib is")]
    Unsupported(i32, &'static str),
    #[error("the body does not inflate as zlib: {0}")]
    Corrupt(String),
    #[error("the body inflates to more than {MAX_INFLATED_BODY_BYTES} bytes")]
    TooLarge,
}

/// The plain body of a stored message with `sys_flag`: as is without COMPRESSED,
/// inflated with it.
pub fn inflate(sys_flag_bits: i32, body: &[u8]) -> Result<Option<Bytes>, InflateError> {
    if sys_flag_bits & sys_flag::COMPRESSED == 0 {
        return Ok(None);
    }
    match (sys_flag_bits & sys_flag::COMPRESSION_TYPE_MASK) >> 8 {
        0 | 3 => {}
        1 => return Err(InflateError::Unsupported(1, "LZ4")),
        2 => return Err(InflateError::Unsupported(2, "ZSTD")),
        other => return Err(InflateError::Unsupported(other, "unknown")),
    }
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(MAX_INFLATED_BODY_BYTES));
    let mut decoder = ZlibDecoder::new(body).take(MAX_INFLATED_BODY_BYTES as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| InflateError::Corrupt(e.to_string()))?;
    if out.len() > MAX_INFLATED_BODY_BYTES {
        return Err(InflateError::TooLarge);
    }
    Ok(Some(Bytes::from(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a body round-trips, the threshold is RocketMQ's `>=`, and the flag bits are
    /// Java 4.9.8's (COMPRESSED | zlib type).
    #[test]
    fn round_trip_and_threshold() {
        let big = Bytes::from(vec![b'x'; 4096]);
        let (c, flag) = maybe_compress(big.clone(), 4096, 5);
        assert_eq!(flag, 0x301);
        assert!(c.len() < 100);
        assert_eq!(c[0], 0x78, "zlib header");
        assert_eq!(inflate(flag, &c).unwrap().unwrap(), big);
        let small = Bytes::from(vec![b'x'; 4095]);
        assert_eq!(maybe_compress(small.clone(), 4096, 5), (small, 0));
        assert_eq!(inflate(0, b"plain").unwrap(), None);
    }

    /// Proves bodies from clients that set bit 0 only (C++, Go, Java before 4.9) inflate,
    /// and that lz4, zstd, corrupt and truncated bodies are refused with a reason.
    #[test]
    fn other_writers_and_bad_bodies() {
        let body = compress(b"hello hello hello", 6);
        assert_eq!(
            inflate(0x1, &body).unwrap().unwrap(),
            &b"hello hello hello"[..]
        );
        assert!(matches!(
            inflate(0x101, &body),
            Err(InflateError::Unsupported(1, "LZ4"))
        ));
        assert!(matches!(
            inflate(0x201, &body),
            Err(InflateError::Unsupported(2, "ZSTD"))
        ));
        assert!(matches!(
            inflate(0x1, b"not zlib at all"),
            Err(InflateError::Corrupt(_))
        ));
        assert!(matches!(
            inflate(0x1, &body[..body.len() - 3]),
            Err(InflateError::Corrupt(_))
        ));
        let mut flipped = body.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0xff;
        assert!(inflate(0x1, &flipped).is_err());
    }

    /// Proves a decompression bomb is refused instead of filling memory.
    #[test]
    fn bombs_are_bounded() {
        let bomb = compress(&vec![0u8; MAX_INFLATED_BODY_BYTES + 1], 9);
        assert!(bomb.len() < 1 << 20);
        assert_eq!(inflate(0x1, &bomb), Err(InflateError::TooLarge));
    }
}
