//! [`RemotingCommand`]: one request or response, and its two header encodings.
//!
//! JSON headers look like
//! `{"code":105,"language":"JAVA","version":401,"opaque":7,"flag":0,"extFields":{"topic":"T"},"serializeTypeCurrentRPC":"JSON"}`;
//! every `extFields` value is a JSON string on the way out, and numbers or booleans are
//! accepted on the way in. The ROCKETMQ binary header is `code i16 | language u8 |
//! version i16 | opaque i32 | flag i32 | remark (i32 len, bytes) | extFields (i32 len,
//! then per entry i16 key len, key, i32 value len, value)`, big-endian.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Deserialize;

use crate::code::{LanguageCode, ResponseCode};
use crate::error::{Error, Result};
use crate::ext::ExtFields;
use crate::ext::MAX_EXT_FIELDS;
use crate::header::CommandHeader;

/// A JSON header's `extFields`, read one entry at a time into [`ExtFields`]: the count is
/// checked as entries arrive, so a header with a million fields is refused after
/// [`MAX_EXT_FIELDS`] of them, never held whole in a map first. Scalars become strings
/// (as Java's fastjson reads them); `null` is skipped; a later repeat of a key wins.
struct LimitedExtFields(ExtFields);

impl<'de> Deserialize<'de> for LimitedExtFields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = LimitedExtFields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of scalar extFields")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut ext = ExtFields::new();
                let mut seen = 0usize;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    seen += 1;
                    if seen > MAX_EXT_FIELDS {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX_EXT_FIELDS} extFields"
                        )));
                    }
                    let value = match map.next_value::<serde_json::Value>()? {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Null => continue,
                        serde_json::Value::Bool(b) => b.to_string(),
                        serde_json::Value::Number(n) => n.to_string(),
                        other => {
                            return Err(serde::de::Error::custom(format!(
                                "extFields value for `{key}` is not a scalar: {other}"
                            )))
                        }
                    };
                    ext.insert(&key, &value);
                }
                Ok(LimitedExtFields(ext))
            }
        }
        d.deserialize_map(Visit)
    }
}

fn too_many_ext_fields() -> Error {
    Error::bad_frame(format!("more than {MAX_EXT_FIELDS} extFields"))
}

/// Flag bit 0: the command is a response.
pub const FLAG_RESPONSE: i32 = 1;
/// Flag bit 1: the request wants no response.
pub const FLAG_ONEWAY: i32 = 1 << 1;

/// The version we announce: RocketMQ 4.9.x's `MQVersion` ordinal range.
pub const PROTOCOL_VERSION: i32 = 401;

/// How the header is serialized: the high byte of the frame's second word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SerializeType {
    #[default]
    Json = 0,
    RocketMq = 1,
}

impl SerializeType {
    pub fn from_byte(byte: u8) -> Result<Self> {
        match byte {
            0 => Ok(SerializeType::Json),
            1 => Ok(SerializeType::RocketMq),
            other => Err(Error::UnknownSerializeType(other)),
        }
    }

    fn name(self) -> &'static str {
        match self {
            SerializeType::Json => "JSON",
            SerializeType::RocketMq => "ROCKETMQ",
        }
    }
}

/// One request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotingCommand {
    /// A request code for requests, a response code for responses.
    pub code: i32,
    pub language: LanguageCode,
    pub version: i32,
    /// Matches a response to its request.
    pub opaque: i32,
    pub flag: i32,
    pub remark: Option<String>,
    pub ext_fields: ExtFields,
    pub body: Bytes,
    /// How the header is (or will be) serialized; a response uses its request's type.
    pub serialize_type: SerializeType,
}

impl RemotingCommand {
    fn new(code: i32) -> Self {
        RemotingCommand {
            code,
            language: LanguageCode::Rust,
            version: PROTOCOL_VERSION,
            opaque: 0,
            flag: 0,
            remark: None,
            ext_fields: ExtFields::new(),
            body: Bytes::new(),
            serialize_type: SerializeType::Json,
        }
    }

    /// A request with the given code and typed header.
    pub fn request(code: impl Into<i32>, header: &impl CommandHeader) -> Self {
        let mut cmd = RemotingCommand::new(code.into());
        // Room for a send's header (about 200 bytes, 13 fields) in one allocation each.
        cmd.ext_fields = ExtFields::with_capacity(256, 16);
        header.write(&mut cmd.ext_fields);
        cmd
    }

    /// A request with no header fields.
    pub fn bare_request(code: impl Into<i32>) -> Self {
        RemotingCommand::new(code.into())
    }

    /// A response with the given code and remark; set `opaque` with [`Self::answering`].
    pub fn response(code: ResponseCode, remark: impl Into<Option<String>>) -> Self {
        let mut cmd = RemotingCommand::new(code as i32);
        cmd.flag = FLAG_RESPONSE;
        cmd.remark = remark.into();
        cmd
    }

    /// A SUCCESS response.
    pub fn success() -> Self {
        Self::response(ResponseCode::SUCCESS, None)
    }

    /// An error response with a readable remark.
    pub fn error(code: ResponseCode, remark: impl Into<String>) -> Self {
        Self::response(code, Some(remark.into()))
    }

    /// Marks this response as the answer to `request`: same opaque and header encoding.
    pub fn answering(mut self, request: &RemotingCommand) -> Self {
        self.opaque = request.opaque;
        self.serialize_type = request.serialize_type;
        self
    }

    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    pub fn with_header(mut self, header: &impl CommandHeader) -> Self {
        header.write(&mut self.ext_fields);
        self
    }

    /// Encodes this command's header as `serialize_type` (a response follows its request).
    pub fn serialized_as(mut self, serialize_type: SerializeType) -> Self {
        self.serialize_type = serialize_type;
        self
    }

    pub fn with_ext(mut self, key: &str, value: impl AsRef<str>) -> Self {
        self.ext_fields.insert(key, value.as_ref());
        self
    }

    pub fn oneway(mut self) -> Self {
        self.flag |= FLAG_ONEWAY;
        self
    }

    pub fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    pub fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// The response code, if this is a response with a code we know.
    pub fn response_code(&self) -> Option<ResponseCode> {
        ResponseCode::from_i32(self.code)
    }

    /// Decodes the typed header from `extFields`.
    pub fn header<H: CommandHeader>(&self) -> Result<H> {
        H::read(&self.ext_fields)
    }

    pub fn ext(&self, key: &str) -> Option<&str> {
        self.ext_fields.get(key)
    }

    /// Appends the encoded header to `out` and returns its length.
    pub fn encode_header(&self, out: &mut BytesMut) -> usize {
        let start = out.len();
        match self.serialize_type {
            SerializeType::Json => self.encode_json_header(out),
            SerializeType::RocketMq => self.encode_rocketmq_header(out),
        }
        out.len() - start
    }

    fn encode_json_header(&self, out: &mut BytesMut) {
        #[derive(serde::Serialize)]
        struct JsonHeaderOut<'a> {
            code: i32,
            language: &'static str,
            version: i32,
            opaque: i32,
            flag: i32,
            #[serde(skip_serializing_if = "Option::is_none")]
            remark: Option<&'a str>,
            #[serde(rename = "extFields", skip_serializing_if = "ExtFields::is_empty")]
            ext_fields: &'a ExtFields,
            #[serde(rename = "serializeTypeCurrentRPC")]
            serialize_type: &'static str,
        }
        let header = JsonHeaderOut {
            code: self.code,
            language: self.language.name(),
            version: self.version,
            opaque: self.opaque,
            flag: self.flag,
            remark: self.remark.as_deref(),
            ext_fields: &self.ext_fields,
            serialize_type: SerializeType::Json.name(),
        };
        // Writing a struct of strings and integers into memory cannot fail.
        serde_json::to_writer((&mut *out).writer(), &header).expect("JSON header encodes");
    }

    fn encode_rocketmq_header(&self, out: &mut BytesMut) {
        out.put_i16(self.code as i16);
        out.put_u8(self.language.code());
        out.put_i16(self.version as i16);
        out.put_i32(self.opaque);
        out.put_i32(self.flag);
        match &self.remark {
            Some(remark) => {
                out.put_i32(remark.len() as i32);
                out.put_slice(remark.as_bytes());
            }
            None => out.put_i32(0),
        }
        let ext_len: usize = self
            .ext_fields
            .iter()
            .map(|(k, v)| 2 + k.len() + 4 + v.len())
            .sum();
        out.put_i32(ext_len as i32);
        for (key, value) in self.ext_fields.iter() {
            out.put_i16(key.len() as i16);
            out.put_slice(key.as_bytes());
            out.put_i32(value.len() as i32);
            out.put_slice(value.as_bytes());
        }
    }

    /// Decodes a header of the given type; the body is set by the caller.
    pub fn decode_header(serialize_type: SerializeType, header: &[u8]) -> Result<Self> {
        match serialize_type {
            SerializeType::Json => Self::decode_json_header(header),
            SerializeType::RocketMq => Self::decode_rocketmq_header(header),
        }
    }

    fn decode_json_header(header: &[u8]) -> Result<Self> {
        #[derive(Deserialize)]
        struct JsonHeaderIn {
            code: i32,
            #[serde(default)]
            language: Option<String>,
            #[serde(default)]
            version: i32,
            #[serde(default)]
            opaque: i32,
            #[serde(default)]
            flag: i32,
            #[serde(default)]
            remark: Option<String>,
            #[serde(rename = "extFields", default)]
            ext_fields: Option<LimitedExtFields>,
        }
        let parsed: JsonHeaderIn = serde_json::from_slice(header)
            .map_err(|e| Error::bad_frame(format!("JSON header: {e}")))?;
        let ext_fields = parsed.ext_fields.map(|e| e.0).unwrap_or_default();
        Ok(RemotingCommand {
            code: parsed.code,
            language: parsed
                .language
                .as_deref()
                .map(LanguageCode::from_name)
                .unwrap_or(LanguageCode::Other),
            version: parsed.version,
            opaque: parsed.opaque,
            flag: parsed.flag,
            remark: parsed.remark,
            ext_fields,
            body: Bytes::new(),
            serialize_type: SerializeType::Json,
        })
    }

    fn decode_rocketmq_header(mut header: &[u8]) -> Result<Self> {
        fn need(buf: &[u8], n: usize, what: &str) -> Result<()> {
            if buf.remaining() < n {
                Err(Error::bad_frame(format!(
                    "ROCKETMQ header ends inside {what}"
                )))
            } else {
                Ok(())
            }
        }
        fn string<'a>(buf: &mut &'a [u8], len: usize, what: &str) -> Result<&'a str> {
            need(buf, len, what)?;
            let s = std::str::from_utf8(&buf[..len])
                .map_err(|_| Error::bad_frame(format!("{what} is not UTF-8")))?;
            buf.advance(len);
            Ok(s)
        }
        need(header, 2 + 1 + 2 + 4 + 4 + 4, "fixed fields")?;
        let code = header.get_i16() as i32;
        let language = LanguageCode::from_code(header.get_u8());
        let version = header.get_i16() as i32;
        let opaque = header.get_i32();
        let flag = header.get_i32();
        let remark_len = header.get_i32();
        if remark_len < 0 {
            return Err(Error::bad_frame("negative remark length"));
        }
        let remark = match remark_len {
            0 => None,
            n => Some(string(&mut header, n as usize, "remark")?.to_string()),
        };
        need(header, 4, "extFields length")?;
        let ext_len = header.get_i32();
        if ext_len < 0 || ext_len as usize != header.remaining() {
            return Err(Error::bad_frame(format!(
                "extFields length {ext_len} but {} bytes remain",
                header.remaining()
            )));
        }
        let mut ext_fields = ExtFields::with_capacity(header.remaining(), 16);
        // Counted with repeats: each insert scans the fields so far, so the work stays
        // bounded however the keys repeat.
        let mut read = 0usize;
        while header.has_remaining() {
            if read == MAX_EXT_FIELDS {
                return Err(too_many_ext_fields());
            }
            read += 1;
            need(header, 2, "extFields key length")?;
            let key_len = header.get_i16();
            if key_len < 0 {
                return Err(Error::bad_frame("negative extFields key length"));
            }
            let key = string(&mut header, key_len as usize, "extFields key")?;
            need(header, 4, "extFields value length")?;
            let value_len = header.get_i32();
            if value_len < 0 {
                return Err(Error::bad_frame("negative extFields value length"));
            }
            let value = string(&mut header, value_len as usize, "extFields value")?;
            ext_fields.insert(key, value);
        }
        Ok(RemotingCommand {
            code,
            language,
            version,
            opaque,
            flag,
            remark,
            ext_fields,
            body: Bytes::new(),
            serialize_type: SerializeType::RocketMq,
        })
    }
}
