//! The request signature, as RocketMQ 4.9.4+'s `AclClientRPCHook` computes it and the
//! broker rebuilds it: HmacSHA1, keyed with the secret key's UTF-8, over the values (not
//! the keys) of the ext fields in key order, then the body; standard Base64 with padding.
//!
//! Typed headers are written into [`ExtFields`](crate::ExtFields) when the command is
//! built ([`RemotingCommand::request`]), so [`sign()`] sees exactly the fields that go on
//! the wire. Sign last: a field added afterwards breaks the signature.

use std::cmp::Ordering;
use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use super::{ACCESS_KEY, SECURITY_TOKEN, SIGNATURE};
use crate::command::RemotingCommand;
use crate::header::UNIQUE_MSG_QUERY_FLAG;

/// What a client signs with (`SessionCredentials`). The secret key never goes on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct AclCredentials {
    pub access_key: String,
    pub secret_key: String,
    pub security_token: Option<String>,
}

impl AclCredentials {
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        AclCredentials {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            security_token: None,
        }
    }
}

/// Shows the access key only: credentials end up in logged configs.
impl fmt::Debug for AclCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AclCredentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// HmacSHA1, as RocketMQ's `AclSigner` computes it.
type HmacSha1 = Hmac<Sha1>;

/// A MAC keyed with `secret_key`'s UTF-8 (HMAC takes a key of any length).
fn mac(secret_key: &str) -> HmacSha1 {
    HmacSha1::new_from_slice(secret_key.as_bytes()).expect("HMAC takes a key of any length")
}

/// Adds `AccessKey` (and `SecurityToken`, if set) to `request` and signs it: ext field
/// `Signature`. Signing again (a retry) replaces the signature.
///
/// `_UNIQUE_KEY_QUERY` is left out of the signed content, unlike the 4.9.4+ hook: every
/// stock broker rebuilds the content without it (5.x only for clients announcing 4.9.3 or
/// older, as we do), so QUERY_MESSAGE by unique key passes everywhere.
pub fn sign(request: &mut RemotingCommand, credentials: &AclCredentials) {
    request
        .ext_fields
        .insert(ACCESS_KEY, &credentials.access_key);
    if let Some(token) = &credentials.security_token {
        request.ext_fields.insert(SECURITY_TOKEN, token);
    }
    let tag = request_mac(
        request,
        &[SIGNATURE, UNIQUE_MSG_QUERY_FLAG],
        &credentials.secret_key,
    )
    .finalize()
    .into_bytes();
    request.ext_fields.insert(SIGNATURE, &BASE64.encode(tag));
}

/// The signature of `content`: HmacSHA1 keyed with `secret_key`'s UTF-8, standard Base64.
#[cfg(test)]
fn signature(secret_key: &str, content: &[u8]) -> String {
    let mut mac = mac(secret_key);
    mac.update(content);
    BASE64.encode(mac.finalize().into_bytes())
}

/// The bytes RocketMQ signs (`AclUtils.combineRequestContent`): the values of `fields`
/// sorted by key, concatenated as UTF-8 with no separator, then `body`. A `Signature`
/// field is left out. Keys sort as Java's `String.compareTo` does (UTF-16 code units; for
/// ASCII keys, byte order). Keys must be distinct, as ext fields are.
///
/// Signing and checking feed the same values, in the same order, into the MAC without
/// gathering them; this is that content as one buffer, for tests.
#[cfg(test)]
fn signed_content<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    body: &[u8],
) -> Vec<u8> {
    let values = sorted_values(fields);
    let values_len: usize = values.iter().map(|v| v.len()).sum();
    let mut content = Vec::with_capacity(values_len + body.len());
    for value in values {
        content.extend_from_slice(value.as_bytes());
    }
    content.extend_from_slice(body);
    content
}

/// The values of `fields` but `Signature`, in the order RocketMQ signs them.
fn sorted_values<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<&'a str> {
    let mut fields: Vec<(&str, &str)> = fields
        .into_iter()
        .filter(|(key, _)| *key != SIGNATURE)
        .collect();
    fields.sort_unstable_by(|a, b| java_string_order(a.0, b.0));
    fields.into_iter().map(|(_, value)| value).collect()
}

/// Java's `String.compareTo`: UTF-16 code units. ASCII strings (every key a client sends)
/// compare as bytes, which is the same order.
fn java_string_order(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        return a.cmp(b);
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

/// The MAC of `request`'s signed content, leaving out the ext fields named in `skip`.
fn request_mac(request: &RemotingCommand, skip: &[&str], secret_key: &str) -> HmacSha1 {
    let mut mac = mac(secret_key);
    let fields = request
        .ext_fields
        .iter()
        .filter(|(key, _)| !skip.contains(key));
    for value in sorted_values(fields) {
        mac.update(value.as_bytes());
    }
    mac.update(&request.body);
    mac
}

/// The signed content of `request`, leaving out the ext fields named in `skip`.
#[cfg(test)]
fn request_content(request: &RemotingCommand, skip: &[&str]) -> Vec<u8> {
    signed_content(
        request
            .ext_fields
            .iter()
            .filter(|(key, _)| !skip.contains(key)),
        &request.body,
    )
}

/// True when `request`'s `Signature` is the one `secret_key` gives, over the fields
/// without `_UNIQUE_KEY_QUERY` (as the stock broker rebuilds them) or, when it is present,
/// with it (as 4.9.4+ clients sign). Compared in constant time; a signature that is not
/// canonical standard Base64 never matches (Java compares the Base64 strings).
pub(crate) fn signature_matches(request: &RemotingCommand, secret_key: &str) -> bool {
    let Some(tag) = request
        .ext(SIGNATURE)
        .and_then(|text| BASE64.decode(text).ok())
    else {
        return false;
    };
    let matches = |skip: &[&str]| {
        request_mac(request, skip, secret_key)
            .verify_slice(&tag)
            .is_ok()
    };
    matches(&[SIGNATURE, UNIQUE_MSG_QUERY_FLAG])
        || (request.ext(UNIQUE_MSG_QUERY_FLAG).is_some() && matches(&[SIGNATURE]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::RequestCode;

    /// A pull request with three header fields, an access key and a body.
    fn pull_request() -> RemotingCommand {
        RemotingCommand::bare_request(RequestCode::PULL_MESSAGE)
            .with_ext("topic", "TopicTest")
            .with_ext("consumerGroup", "group-a")
            .with_ext("queueId", "3")
            .with_body(&b"hello"[..])
    }

    // python3 -c 'import hmac,hashlib,base64;print(base64.b64encode(hmac.new(b"12345678",b"rocketmq2group-a3TopicTesthello",hashlib.sha1).digest()).decode())'
    const PULL_SIGNATURE: &str = "/CvWrhjhUsNyvttjxnFLDwikxLg=";

    /// The stock signature, rebuilt by hand: values in key order (`AccessKey` sorts before
    /// the lower-case keys), no keys, then the body; HmacSHA1 and Base64 match a value
    /// computed independently with Python.
    #[test]
    fn signature_is_stock_hmac_sha1_over_sorted_values_and_body() {
        let mut request = pull_request();
        sign(&mut request, &AclCredentials::new("rocketmq2", "12345678"));
        assert_eq!(request.ext(ACCESS_KEY), Some("rocketmq2"));
        assert_eq!(request.ext(SECURITY_TOKEN), None);

        let by_hand = b"rocketmq2group-a3TopicTesthello";
        assert_eq!(
            request_content(&request, &[SIGNATURE, UNIQUE_MSG_QUERY_FLAG]),
            by_hand
        );
        // ring's HMAC (another implementation) agrees with the Python-computed value.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"12345678");
        let expected = BASE64.encode(ring::hmac::sign(&key, by_hand).as_ref());
        assert_eq!(expected, PULL_SIGNATURE);
        assert_eq!(request.ext(SIGNATURE), Some(PULL_SIGNATURE));
        assert_eq!(signature("12345678", by_hand), PULL_SIGNATURE);
        assert!(signature_matches(&request, "12345678"));
        assert!(!signature_matches(&request, "12345679"));
    }

    // python3 -c 'import hmac,hashlib,base64;print(base64.b64encode(hmac.new("sécret-clé".encode(),"ak-1234567token-99clé".encode(),hashlib.sha1).digest()).decode())'
    const UTF8_SIGNATURE: &str = "t2AlLjsh2gkcWBYnkLnWXQHmxnM=";

    /// A security token is added and signed; non-ASCII values and secrets are signed as
    /// UTF-8; re-signing replaces the old signature instead of signing it.
    #[test]
    fn token_and_utf8_values_are_signed_and_resigning_is_stable() {
        let mut request =
            RemotingCommand::bare_request(RequestCode::QUERY_MESSAGE).with_ext("key", "clé");
        let credentials = AclCredentials {
            security_token: Some("token-99".into()),
            ..AclCredentials::new("ak-1234567", "sécret-clé")
        };
        sign(&mut request, &credentials);
        assert_eq!(request.ext(SECURITY_TOKEN), Some("token-99"));
        assert_eq!(request.ext(SIGNATURE), Some(UTF8_SIGNATURE));
        sign(&mut request, &credentials);
        assert_eq!(request.ext(SIGNATURE), Some(UTF8_SIGNATURE));
        assert!(!format!("{credentials:?}").contains("sécret"));
    }

    /// Keys sort as Java's `String.compareTo`: by UTF-16 code units, so U+FFFD sorts after
    /// U+10000 (a surrogate pair starting 0xD800), unlike byte order.
    #[test]
    fn keys_sort_by_utf16_code_units() {
        let content = signed_content([("\u{fffd}", "b"), ("\u{10000}", "a"), ("A", "0")], b"");
        assert_eq!(content, b"0ab");
        let content = signed_content([("b", "2"), (SIGNATURE, "x"), ("a", "1")], b"!");
        assert_eq!(content, b"12!");
    }

    /// `_UNIQUE_KEY_QUERY` is left out by `sign`, and a 4.9.4+ client's signature that
    /// includes it is accepted too; changing any signed value or the body breaks it.
    #[test]
    fn unique_key_flag_is_accepted_either_way_and_tampering_is_caught() {
        let credentials = AclCredentials::new("rocketmq2", "12345678");
        let mut ours = pull_request().with_ext(UNIQUE_MSG_QUERY_FLAG, "true");
        sign(&mut ours, &credentials);
        assert!(signature_matches(&ours, "12345678"));

        let mut stock = pull_request()
            .with_ext(UNIQUE_MSG_QUERY_FLAG, "true")
            .with_ext(ACCESS_KEY, "rocketmq2");
        let all_fields = request_content(&stock, &[SIGNATURE]);
        stock
            .ext_fields
            .insert(SIGNATURE, &signature("12345678", &all_fields));
        assert_ne!(stock.ext(SIGNATURE), ours.ext(SIGNATURE));
        assert!(signature_matches(&stock, "12345678"));

        let mut tampered = ours.clone().with_body(&b"hellp"[..]);
        assert!(!signature_matches(&tampered, "12345678"));
        tampered = ours.clone().with_ext("queueId", "4");
        assert!(!signature_matches(&tampered, "12345678"));
        let unpadded = PULL_SIGNATURE.trim_end_matches('=');
        let mut request = pull_request();
        sign(&mut request, &credentials);
        request.ext_fields.insert(SIGNATURE, unpadded);
        assert!(!signature_matches(&request, "12345678"));
    }
}
