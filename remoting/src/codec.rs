//! The frame codec: `i32 total length | i32 (serialize type << 24 | header length) |
//! header | body`, big-endian. The total length counts everything after itself.
//!
//! A frame over the maximum, a length that cannot hold its own header, or an unknown
//! serialize type is an error: the connection that sent it is closed. The decoder never
//! reserves more than the maximum frame size, whatever a length field claims.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::command::{RemotingCommand, SerializeType};
use crate::error::{Error, Result};

/// RocketMQ's default maximum frame: 16 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// The least spare room the read buffer has when the decoder asks for more bytes. Without
/// it the room left after frames were split off (often a few KiB) bounded each read, and a
/// producer's stream of 1 KiB sends took about one `recv` per five frames.
const READ_SPARE_BYTES: usize = 32 * 1024;

/// The largest header accepted by default: real ones are a few hundred bytes (a send with
/// many user properties a few KiB; RocketMQ caps properties at 32 KiB).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// Encodes and decodes whole frames, with a bound on their size and on their header's.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_frame_bytes: usize,
    max_header_bytes: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl FrameCodec {
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameCodec {
            max_frame_bytes,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }

    /// A header longer than `max_header_bytes` closes the connection as soon as its length
    /// is read, before the frame is buffered or the header parsed.
    pub fn with_max_header_bytes(mut self, max_header_bytes: usize) -> Self {
        self.max_header_bytes = max_header_bytes;
        self
    }

    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }
}

impl Decoder for FrameCodec {
    type Item = RemotingCommand;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<RemotingCommand>> {
        if src.len() < 4 {
            src.reserve(READ_SPARE_BYTES);
            return Ok(None);
        }
        let total = i32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        if total < 4 {
            return Err(Error::bad_frame(format!("frame length {total} is below 4")));
        }
        let total = total as usize;
        if total > self.max_frame_bytes {
            return Err(Error::FrameTooLarge {
                frame_bytes: total,
                max_frame_bytes: self.max_frame_bytes,
            });
        }
        if src.len() >= 8 {
            let header_len =
                (u32::from_be_bytes([src[4], src[5], src[6], src[7]]) & 0x00FF_FFFF) as usize;
            if header_len > self.max_header_bytes {
                return Err(Error::bad_frame(format!(
                    "header of {header_len} bytes exceeds max_header_bytes {}",
                    self.max_header_bytes
                )));
            }
        }
        if src.len() < 4 + total {
            // Room for the rest of this (bounded) frame, and for a read of many frames: the
            // reader reads only into spare room, which shrinks as frames are split off.
            src.reserve((4 + total - src.len()).max(READ_SPARE_BYTES));
            return Ok(None);
        }
        let mut frame = src.split_to(4 + total);
        frame.advance(4);
        let word = frame.get_u32();
        let serialize_type = SerializeType::from_byte((word >> 24) as u8)?;
        let header_len = (word & 0x00FF_FFFF) as usize;
        if header_len > frame.len() {
            return Err(Error::bad_frame(format!(
                "header length {header_len} exceeds the {} bytes left in the frame",
                frame.len()
            )));
        }
        let header = frame.split_to(header_len);
        let mut cmd = RemotingCommand::decode_header(serialize_type, &header)?;
        cmd.body = frame.freeze();
        Ok(Some(cmd))
    }
}

impl Encoder<RemotingCommand> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, cmd: RemotingCommand, dst: &mut BytesMut) -> Result<()> {
        encode_into(&cmd, dst, self.max_frame_bytes)
    }
}

impl Encoder<&RemotingCommand> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, cmd: &RemotingCommand, dst: &mut BytesMut) -> Result<()> {
        encode_into(cmd, dst, self.max_frame_bytes)
    }
}

fn encode_into(cmd: &RemotingCommand, dst: &mut BytesMut, max_frame_bytes: usize) -> Result<()> {
    let start = dst.len();
    dst.put_u32(0); // total length, patched below
    dst.put_u32(0); // serialize type and header length, patched below
    let header_len = cmd.encode_header(dst);
    if header_len > 0x00FF_FFFF {
        dst.truncate(start);
        return Err(Error::bad_frame(format!("header of {header_len} bytes")));
    }
    let total = 4 + header_len + cmd.body.len();
    if total > max_frame_bytes {
        dst.truncate(start);
        return Err(Error::FrameTooLarge {
            frame_bytes: total,
            max_frame_bytes,
        });
    }
    dst.extend_from_slice(&cmd.body);
    dst[start..start + 4].copy_from_slice(&(total as u32).to_be_bytes());
    let word = ((cmd.serialize_type as u32) << 24) | header_len as u32;
    dst[start + 4..start + 8].copy_from_slice(&word.to_be_bytes());
    Ok(())
}

/// Encodes one command as a whole frame.
pub fn encode_frame(cmd: &RemotingCommand) -> Result<BytesMut> {
    let mut out = BytesMut::with_capacity(64 + cmd.body.len());
    encode_into(cmd, &mut out, usize::MAX)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::{LanguageCode, RequestCode, ResponseCode};
    use crate::header::GetRouteInfoRequestHeader;
    use proptest::prelude::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<RemotingCommand>> {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(cmd) = codec.decode(&mut buf)? {
            out.push(cmd);
        }
        Ok(out)
    }

    /// A ROCKETMQ binary header with the given `extFields` pairs, as raw bytes.
    fn binary_header(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut ext = Vec::new();
        for (k, v) in fields {
            ext.extend_from_slice(&(k.len() as i16).to_be_bytes());
            ext.extend_from_slice(k.as_bytes());
            ext.extend_from_slice(&(v.len() as i32).to_be_bytes());
            ext.extend_from_slice(v.as_bytes());
        }
        let mut h = vec![0, 10, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        h.extend_from_slice(&(ext.len() as i32).to_be_bytes());
        h.extend_from_slice(&ext);
        h
    }

    /// JSON `extFields` are counted as they are read: past the limit the header is refused
    /// (not first collected whole); scalars become strings, `null` is skipped, a repeated
    /// key keeps its last value.
    #[test]
    fn json_ext_fields_are_limited_while_read() {
        let cmd = RemotingCommand::decode_header(
            SerializeType::Json,
            br#"{"code":10,"extFields":{"topic":"A","queueId":1,"flag":true,"x":null,"topic":"B"}}"#,
        )
        .unwrap();
        assert_eq!(cmd.ext("topic"), Some("B"));
        assert_eq!(cmd.ext("queueId"), Some("1"));
        assert_eq!(cmd.ext("flag"), Some("true"));
        assert_eq!(cmd.ext("x"), None);
        let fields = |n: usize| {
            let body: Vec<String> = (0..n).map(|i| format!("\"k{i}\":\"v\"")).collect();
            format!("{{\"code\":10,\"extFields\":{{{}}}}}", body.join(","))
        };
        let ok = RemotingCommand::decode_header(
            SerializeType::Json,
            fields(crate::ext::MAX_EXT_FIELDS).as_bytes(),
        )
        .unwrap();
        assert_eq!(ok.ext_fields.len(), crate::ext::MAX_EXT_FIELDS);
        let err = RemotingCommand::decode_header(
            SerializeType::Json,
            fields(crate::ext::MAX_EXT_FIELDS + 1).as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("more than 1024 extFields"), "{err}");
        let nested = RemotingCommand::decode_header(
            SerializeType::Json,
            br#"{"code":10,"extFields":{"a":{"b":1}}}"#,
        );
        assert!(nested.unwrap_err().to_string().contains("not a scalar"));
    }

    /// A header longer than the limit is refused as soon as the frame's first 8 bytes are
    /// in, before the rest of a (large) frame is buffered.
    #[test]
    fn long_headers_are_refused_before_the_frame_arrives() {
        let mut codec = FrameCodec::new(16 << 20).with_max_header_bytes(1024);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(1_000_000i32).to_be_bytes());
        buf.extend_from_slice(&(2000u32).to_be_bytes());
        let err = codec.decode(&mut buf).unwrap_err().to_string();
        assert!(err.contains("exceeds max_header_bytes 1024"), "{err}");
        // At the limit, a header is read as usual.
        let cmd = RemotingCommand::bare_request(10).with_ext("k", "v".repeat(900));
        let mut frame = BytesMut::new();
        FrameCodec::default().encode(cmd, &mut frame).unwrap();
        assert!(codec.decode(&mut frame).unwrap().is_some());
    }

    /// A repeated key keeps its last value (as a map would); more fields than any header
    /// has, repeats included, is a clear error, not quadratic work.
    #[test]
    fn binary_ext_fields_repeat_and_limit() {
        let cmd = RemotingCommand::decode_header(
            SerializeType::RocketMq,
            &binary_header(&[("topic", "A"), ("queueId", "1"), ("topic", "B")]),
        )
        .unwrap();
        assert_eq!(cmd.ext("topic"), Some("B"));
        assert_eq!(cmd.ext_fields.len(), 2);
        let keys: Vec<String> = (0..=crate::ext::MAX_EXT_FIELDS)
            .map(|i| format!("k{i}"))
            .collect();
        let many: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "v")).collect();
        let err = RemotingCommand::decode_header(SerializeType::RocketMq, &binary_header(&many))
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 1024 extFields"), "{err}");
        let ok = RemotingCommand::decode_header(
            SerializeType::RocketMq,
            &binary_header(&many[..crate::ext::MAX_EXT_FIELDS]),
        )
        .unwrap();
        assert_eq!(ok.ext_fields.len(), crate::ext::MAX_EXT_FIELDS);
        let repeated = vec![("k", "v"); crate::ext::MAX_EXT_FIELDS + 1];
        let err =
            RemotingCommand::decode_header(SerializeType::RocketMq, &binary_header(&repeated))
                .unwrap_err()
                .to_string();
        assert!(err.contains("more than 1024 extFields"), "{err}");
    }

    fn sample(serialize_type: SerializeType) -> RemotingCommand {
        let mut cmd = RemotingCommand::request(
            RequestCode::GET_ROUTEINFO_BY_TOPIC,
            &GetRouteInfoRequestHeader {
                topic: "TopicTest".into(),
            },
        )
        .with_ext("extra", "1")
        .with_body(&b"hello"[..]);
        cmd.opaque = 42;
        cmd.remark = Some("remark é".into());
        cmd.serialize_type = serialize_type;
        cmd
    }

    #[test]
    fn frames_round_trip_in_both_header_types() {
        for st in [SerializeType::Json, SerializeType::RocketMq] {
            let cmd = sample(st);
            let frame = encode_frame(&cmd).unwrap();
            assert_eq!(decode_all(&frame).unwrap(), vec![cmd.clone()]);
            let resp =
                RemotingCommand::error(ResponseCode::TOPIC_NOT_EXIST, "no route").answering(&cmd);
            let frame = encode_frame(&resp).unwrap();
            let back = decode_all(&frame).unwrap();
            assert_eq!(back, vec![resp]);
            assert!(back[0].is_response());
        }
    }

    #[test]
    fn frames_split_at_every_byte_decode_once_whole() {
        let frame = encode_frame(&sample(SerializeType::Json)).unwrap();
        for cut in 0..frame.len() {
            let mut codec = FrameCodec::default();
            let mut buf = BytesMut::from(&frame[..cut]);
            assert!(codec.decode(&mut buf).unwrap().is_none());
            buf.extend_from_slice(&frame[cut..]);
            assert!(codec.decode(&mut buf).unwrap().is_some());
            assert!(buf.is_empty());
        }
    }

    /// A JSON frame written by hand from RocketMQ's documented layout, not by our encoder.
    #[test]
    fn golden_json_frame_written_by_hand() {
        let header = br#"{"code":105,"extFields":{"topic":"TopicTest"},"flag":0,"language":"JAVA","opaque":3,"serializeTypeCurrentRPC":"JSON","version":401}"#;
        let mut frame = Vec::new();
        frame.extend_from_slice(&((4 + header.len()) as u32).to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0, header.len() as u8]);
        frame.extend_from_slice(header);
        let cmd = decode_all(&frame).unwrap().remove(0);
        assert_eq!(cmd.code, 105);
        assert_eq!(cmd.language, LanguageCode::Java);
        assert_eq!(cmd.opaque, 3);
        assert_eq!(cmd.version, 401);
        assert_eq!(cmd.ext("topic"), Some("TopicTest"));
        assert!(cmd.body.is_empty());
        assert!(!cmd.is_response());
    }

    /// A ROCKETMQ binary header written by hand, byte for byte; our encoder must
    /// produce exactly these bytes.
    #[test]
    fn golden_rocketmq_frame_written_by_hand() {
        #[rustfmt::skip]
        let header: Vec<u8> = vec![
            0x00, 0x69,             // code 105
            0x00,                   // language JAVA
            0x01, 0x91,             // version 401
            0x00, 0x00, 0x00, 0x07, // opaque 7
            0x00, 0x00, 0x00, 0x00, // flag 0
            0x00, 0x00, 0x00, 0x00, // remark: none
            0x00, 0x00, 0x00, 0x0F, // extFields: 15 bytes
            0x00, 0x05, b't', b'o', b'p', b'i', b'c',
            0x00, 0x00, 0x00, 0x04, b'T', b'e', b's', b't',
        ];
        let body = b"xy";
        let mut frame = Vec::new();
        frame.extend_from_slice(&((4 + header.len() + body.len()) as u32).to_be_bytes());
        frame.extend_from_slice(&[0x01, 0, 0, header.len() as u8]);
        frame.extend_from_slice(&header);
        frame.extend_from_slice(body);

        let cmd = decode_all(&frame).unwrap().remove(0);
        assert_eq!(cmd.code, 105);
        assert_eq!(cmd.opaque, 7);
        assert_eq!(cmd.serialize_type, SerializeType::RocketMq);
        assert_eq!(cmd.ext("topic"), Some("Test"));
        assert_eq!(&cmd.body[..], body);

        let mut ours = cmd.clone();
        ours.language = LanguageCode::Java;
        assert_eq!(&encode_frame(&ours).unwrap()[..], &frame[..]);
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        // Length below 4.
        assert!(decode_all(&[0, 0, 0, 1, 0, 0, 0, 0]).is_err());
        // Negative length.
        assert!(decode_all(&[0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        // Over the maximum: rejected from the length alone, nothing reserved.
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&[0x7F, 0xFF, 0xFF, 0xFF][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(Error::FrameTooLarge { .. })
        ));
        assert!(buf.capacity() < 1024);
        // Unknown serialize type.
        assert!(matches!(
            decode_all(&[0, 0, 0, 4, 7, 0, 0, 0]),
            Err(Error::UnknownSerializeType(7))
        ));
        // Header longer than the frame.
        assert!(decode_all(&[0, 0, 0, 4, 0, 0, 0, 9]).is_err());
        // Header that is not JSON.
        assert!(decode_all(&[0, 0, 0, 6, 0, 0, 0, 2, b'{', b'x']).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_all(&bytes);
        }

        #[test]
        fn random_headers_behind_a_valid_length_never_panic(
            st in 0u8..2,
            header in proptest::collection::vec(any::<u8>(), 0..256),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut frame = Vec::new();
            frame.extend_from_slice(&((4 + header.len() + body.len()) as u32).to_be_bytes());
            frame.extend_from_slice(&(((st as u32) << 24) | header.len() as u32).to_be_bytes());
            frame.extend_from_slice(&header);
            frame.extend_from_slice(&body);
            let _ = decode_all(&frame);
        }

        #[test]
        fn any_command_round_trips(
            code in any::<i16>(),
            opaque in any::<i32>(),
            flag in 0i32..4,
            remark in proptest::option::of("[ -~]{0,20}"),
            ext in proptest::collection::btree_map("[a-zA-Z]{1,8}", "[ -~]{0,16}", 0..6),
            body in proptest::collection::vec(any::<u8>(), 0..128),
            binary in any::<bool>(),
        ) {
            let mut cmd = RemotingCommand::bare_request(code as i32);
            cmd.opaque = opaque;
            cmd.flag = flag;
            cmd.remark = remark.filter(|r| !r.is_empty());
            cmd.ext_fields = ext.into_iter().collect();
            cmd.body = body.into();
            cmd.serialize_type = if binary { SerializeType::RocketMq } else { SerializeType::Json };
            let frame = encode_frame(&cmd).unwrap();
            prop_assert_eq!(decode_all(&frame).unwrap(), vec![cmd]);
        }
    }
}
