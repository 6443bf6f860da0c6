//! Address patterns of `globalWhiteRemoteAddresses` and `whiteRemoteAddress`, read as
//! RocketMQ 4.9's `RemoteAddressStrategyFactory` reads them, trying in this order:
//!
//! 1. blank: matches nothing (an account without a whitelist);
//! 2. `*`, `*.*.*.*`, `*:*:*:*:*:*:*:*`: matches every address;
//! 3. ends with `}`: `192.168.1.{1,2,3}` or `fe80::{1,2}`, the text before `{` joined to
//!    each item;
//! 4. contains `,`: a list of whole addresses, `10.0.0.1,10.0.0.2`;
//! 5. contains `*` or `-`: a range on one part. IPv4: the first of octets 2-4 that is `*`
//!    or `a-b` (decimal, 0-255), the octets before it equal (`192.168.*.*`,
//!    `192.168.1.1-100`). IPv6: the last group is `*` or `a-b`, or the last is `*` and the
//!    one before it `a-b` (hex, 0-ffff); the groups before it equal, a `::` among them
//!    expanding so the range lands on group 8, resp. 7;
//! 6. otherwise one address. IPv6 addresses compare as addresses (any spelling).
//!
//! Where RocketMQ would load a pattern and then read it in a surprising way, loading fails
//! instead (see the module doc of [`crate::acl`]).

use std::fmt;
use std::net::IpAddr;

/// One parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AddressPattern {
    Never,
    Any,
    /// Sorted, without repeats.
    List(Vec<IpAddr>),
    One(IpAddr),
    /// The first `prefix.len()` octets equal, the next in `low..=high`, the rest ignored.
    V4Range {
        prefix: Vec<u8>,
        low: u8,
        high: u8,
    },
    /// The first `prefix.len()` groups equal, the next in `low..=high`, the rest ignored.
    V6Range {
        prefix: Vec<u16>,
        low: u16,
        high: u16,
    },
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as a dual-stack listener reports IPv4
/// clients) as the IPv4 address it is; Java reports such clients as IPv4 too.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

impl AddressPattern {
    /// Parses one pattern; the error says what is wrong with it.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(AddressPattern::Never);
        }
        if matches!(text, "*" | "*.*.*.*" | "*:*:*:*:*:*:*:*") {
            return Ok(AddressPattern::Any);
        }
        if text.ends_with('}') {
            return parse_braces(text).map(AddressPattern::List);
        }
        if text.contains(',') {
            return parse_list(text.split(',')).map(AddressPattern::List);
        }
        if text.contains(['*', '-']) {
            return if text.contains(':') {
                parse_v6_range(text)
            } else {
                parse_v4_range(text)
            };
        }
        parse_ip(text).map(AddressPattern::One)
    }

    pub(crate) fn matches(&self, ip: IpAddr) -> bool {
        match (self, canonical_ip(ip)) {
            (AddressPattern::Never, _) => false,
            (AddressPattern::Any, _) => true,
            (AddressPattern::List(ips), ip) => ips.binary_search(&ip).is_ok(),
            (AddressPattern::One(one), ip) => *one == ip,
            (AddressPattern::V4Range { prefix, low, high }, IpAddr::V4(v4)) => {
                let octets = v4.octets();
                octets.starts_with(prefix) && (*low..=*high).contains(&octets[prefix.len()])
            }
            (AddressPattern::V6Range { prefix, low, high }, IpAddr::V6(v6)) => {
                let groups = v6.segments();
                groups.starts_with(prefix) && (*low..=*high).contains(&groups[prefix.len()])
            }
            _ => false,
        }
    }
}

/// The canonical form: equal for patterns that match the same addresses the same way
/// (part of [`crate::acl::PlainAcl::fingerprint`]).
impl fmt::Display for AddressPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressPattern::Never => Ok(()),
            AddressPattern::Any => f.write_str("*"),
            AddressPattern::One(ip) => write!(f, "{ip}"),
            AddressPattern::List(ips) => {
                let items: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
                f.write_str(&items.join(","))
            }
            AddressPattern::V4Range { prefix, low, high } => {
                for octet in prefix {
                    write!(f, "{octet}.")?;
                }
                write!(f, "{low}-{high}")?;
                (prefix.len() + 1..4).try_for_each(|_| f.write_str(".*"))
            }
            AddressPattern::V6Range { prefix, low, high } => {
                for group in prefix {
                    write!(f, "{group:x}:")?;
                }
                write!(f, "{low:x}-{high:x}")?;
                (prefix.len() + 1..8).try_for_each(|_| f.write_str(":*"))
            }
        }
    }
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse::<IpAddr>()
        .map(canonical_ip)
        .map_err(|_| format!("`{text}` is not an IPv4 or IPv6 address"))
}

fn parse_list(items: impl Iterator<Item = impl AsRef<str>>) -> Result<Vec<IpAddr>, String> {
    let mut ips = Vec::new();
    for item in items {
        let item = item.as_ref().trim();
        if !item.is_empty() {
            ips.push(parse_ip(item)?);
        }
    }
    if ips.is_empty() {
        return Err("lists no address".into());
    }
    ips.sort_unstable();
    ips.dedup();
    Ok(ips)
}

/// `192.168.1.{1,2}` or `fe80::{1,2}`: only the last octet or group is a `{...}` list.
fn parse_braces(text: &str) -> Result<Vec<IpAddr>, String> {
    let Some(open) = text.find('{') else {
        return Err("ends with `}` but has no `{`".into());
    };
    let (prefix, items) = (&text[..open], &text[open + 1..text.len() - 1]);
    let separator = if text.contains(':') { ':' } else { '.' };
    let last_part_is_list = prefix.ends_with(separator) && !items.contains(['{', '}']);
    if !last_part_is_list || (separator == '.' && prefix.matches('.').count() != 3) {
        return Err("only the last octet or group may be a `{a,b}` list".into());
    }
    let items = items
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty());
    parse_list(items.map(|item| format!("{prefix}{item}")))
}

/// `a-b` (or `*`, meaning `0..=max`) with `a <= b <= max`, numbers read by `number`.
fn parse_range<T: Copy + Ord>(
    text: &str,
    max: T,
    number: impl Fn(&str) -> Option<T>,
) -> Result<(T, T), String> {
    if text == "*" {
        return Ok((number("0").expect("zero parses"), max));
    }
    let bounds = text
        .split_once('-')
        .and_then(|(low, high)| Some((number(low.trim())?, number(high.trim())?)));
    match bounds {
        Some((low, high)) if low <= high => Ok((low, high)),
        _ => Err(format!(
            "`{text}` is not `*` or a range `low-high` with low <= high"
        )),
    }
}

fn octet(text: &str) -> Option<u8> {
    let digits = !text.is_empty() && text.len() <= 3 && text.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| text.parse().ok()).flatten()
}

fn group(text: &str) -> Option<u16> {
    let hex = !text.is_empty() && text.len() <= 4 && text.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| u16::from_str_radix(text, 16).ok()).flatten()
}

fn parse_v4_range(text: &str) -> Result<AddressPattern, String> {
    let parts: Vec<&str> = text.split('.').map(str::trim).collect();
    if parts.len() != 4 {
        return Err("an IPv4 range has four octets, like `192.168.1.1-100` or `10.1.*.*`".into());
    }
    let is_range = |part: &&str| *part == "*" || part.contains('-');
    let Some(at) = parts.iter().position(is_range) else {
        return Err(format!("`{text}` is neither an address nor a range"));
    };
    if at == 0 {
        return Err("the first octet of a range must be a number".into());
    }
    let prefix = parts[..at]
        .iter()
        .map(|part| octet(part).ok_or_else(|| format!("`{part}` is not an octet (0-255)")))
        .collect::<Result<Vec<u8>, String>>()?;
    let (low, high) = parse_range(parts[at], u8::MAX, octet)?;
    if parts[at + 1..].iter().any(|part| *part != "*") {
        return Err("octets after the range must be `*` (RocketMQ does not compare them)".into());
    }
    Ok(AddressPattern::V4Range { prefix, low, high })
}

/// `P:*`, `P:a-b` (range on the group after `P`) or `P:a-b:*`.
fn parse_v6_range(text: &str) -> Result<AddressPattern, String> {
    let (head, last) = text.rsplit_once(':').expect("an IPv6 pattern has a colon");
    let (prefix_text, range_text, groups_before_range) = match head.rsplit_once(':') {
        Some((prefix, range)) if last.trim() == "*" && range.contains('-') => (prefix, range, 6),
        _ => (head, last, 7),
    };
    if prefix_text.ends_with(':') || prefix_text.is_empty() {
        return Err(
            "`::` right before the range is ambiguous (RocketMQ reads `fe80::*` as \
             `fe80:0:*`); write the groups before the range out"
                .into(),
        );
    }
    let prefix = v6_prefix(prefix_text, groups_before_range)?;
    let (low, high) = parse_range(range_text.trim(), u16::MAX, group)?;
    Ok(AddressPattern::V6Range { prefix, low, high })
}

/// The groups of `text`: as written, or with its `::` expanded to make `groups` groups.
fn v6_prefix(text: &str, groups: usize) -> Result<Vec<u16>, String> {
    let bad = || format!("`{text}` is not the start of an IPv6 address");
    if text.contains("::") {
        let padded = format!("{text}{}", ":0".repeat(8 - groups));
        let address: std::net::Ipv6Addr = padded.parse().map_err(|_| bad())?;
        return Ok(address.segments()[..groups].to_vec());
    }
    let prefix = text
        .split(':')
        .map(|part| group(part.trim()).ok_or_else(bad))
        .collect::<Result<Vec<u16>, String>>()?;
    if prefix.len() > groups {
        return Err(bad());
    }
    Ok(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn pattern(text: &str) -> AddressPattern {
        AddressPattern::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// Each form of pattern matches what RocketMQ's strategies match, and no more.
    #[test]
    fn each_form_matches_as_rocketmq() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("", &[], &["10.0.0.1", "::1"]),
            ("   ", &[], &["10.0.0.1"]),
            ("*", &["10.0.0.1", "::1"], &[]),
            ("*.*.*.*", &["1.2.3.4", "fe80::1"], &[]),
            ("*:*:*:*:*:*:*:*", &["1.2.3.4"], &[]),
            (
                "192.168.1.{1,2, 3}",
                &["192.168.1.1", "192.168.1.3"],
                &["192.168.1.4"],
            ),
            (
                "fe80::{1,a}",
                &["fe80::1", "fe80:0:0:0:0:0:0:a"],
                &["fe80::2"],
            ),
            ("10.0.0.1,10.0.0.2", &["10.0.0.2"], &["10.0.0.3"]),
            ("10.0.0.1, ::1", &["::1", "10.0.0.1"], &["::2"]),
            (
                "192.168.*.*",
                &["192.168.0.0", "192.168.255.9"],
                &["192.169.0.1", "::1"],
            ),
            (
                "192.168.1.1-100",
                &["192.168.1.1", "192.168.1.100"],
                &["192.168.1.101"],
            ),
            ("192.168.1.1-100", &[], &["192.168.10.1", "192.168.1.0"]),
            ("10.*.*.*", &["10.200.3.4"], &["11.0.0.1"]),
            (
                "10.10.103.*",
                &["10.10.103.0", "10.10.103.255"],
                &["10.10.104.1"],
            ),
            ("10.5-6.*.*", &["10.5.1.1", "10.6.255.255"], &["10.7.0.0"]),
            (
                "192.168.0.1",
                &["192.168.0.1", "::ffff:192.168.0.1"],
                &["192.168.0.2"],
            ),
            (
                "2001:db8::1",
                &["2001:0DB8:0:0:0:0:0:1"],
                &["2001:db8::2", "1.2.3.4"],
            ),
            (
                "2001:db8:*",
                &["2001:db8:5::1", "2001:db8::"],
                &["2001:db9::1"],
            ),
            (
                "2001:db8::1:10-20",
                &["2001:db8::1:10", "2001:db8::1:20"],
                &["2001:db8::1:21"],
            ),
            (
                "fe80::1:2:1-200:*",
                &["fe80::1:2:1ff:ab", "fe80::1:2:1:0"],
                &["fe80::1:2:201:0"],
            ),
            (
                "1:2:3:4:5:6:7:*",
                &["1:2:3:4:5:6:7:ffff"],
                &["1:2:3:4:5:6:8:0", "1.2.3.4"],
            ),
        ];
        for (text, yes, no) in cases {
            let p = pattern(text);
            for a in *yes {
                assert!(p.matches(ip(a)), "`{text}` should match {a}");
            }
            for a in *no {
                assert!(!p.matches(ip(a)), "`{text}` should not match {a}");
            }
        }
    }

    /// Bad patterns fail to load with a reason, including those RocketMQ would load but
    /// read surprisingly.
    #[test]
    fn invalid_patterns_are_rejected_with_a_reason() {
        for (text, reason) in [
            ("300.1.1.1", "not an IPv4 or IPv6 address"),
            ("1.2.3", "not an IPv4 or IPv6 address"),
            ("abc", "not an IPv4 or IPv6 address"),
            ("fe80::1%eth0", "not an IPv4 or IPv6 address"),
            ("1.2.3.4,zz", "`zz` is not"),
            ("1.2.3.{}", "lists no address"),
            ("1.2.{3,4}.5}", "only the last octet"),
            ("1.2.{3,4}", "only the last octet"),
            ("1.2.3.{4,300}", "`1.2.3.300` is not"),
            ("*.1.1.1", "first octet"),
            ("1-5.1.1.1", "first octet"),
            ("1.2.5-3.*", "low <= high"),
            ("1.2.-3.*", "low <= high"),
            ("1.2.3-.*", "low <= high"),
            ("1.2.3.4-256", "low <= high"),
            ("1.2.3.4-5x", "low <= high"),
            ("1.2.1-5.7", "after the range must be `*`"),
            ("1.2.*", "four octets"),
            ("1.x.*.*", "`x` is not an octet"),
            ("fe80::*", "ambiguous"),
            ("1:2:*:3", "not the start of an IPv6 address"),
            ("1:2:3:4:5:6:7:8:*", "not the start of an IPv6 address"),
            ("1:2:g:*", "not the start of an IPv6 address"),
            ("1:2:3-1:*", "low <= high"),
            ("1:2:10000-1ffff", "low <= high"),
        ] {
            let err = AddressPattern::parse(text).expect_err(text);
            assert!(err.contains(reason), "`{text}`: {err}");
        }
    }

    /// The canonical form is the same for spellings with the same meaning.
    #[test]
    fn canonical_form_ignores_spelling() {
        let same = [
            ("10.0.0.2,10.0.0.1", "10.0.0.{1,2}"),
            ("192.168.*.*", "192.168.0-255.*"),
            ("2001:DB8::1", "2001:db8:0:0:0:0:0:1"),
            ("fe80::1:*", "fe80:0:0:0:0:0:1:0-ffff"),
        ];
        for (a, b) in same {
            assert_eq!(pattern(a).to_string(), pattern(b).to_string(), "{a} vs {b}");
        }
        assert_eq!(pattern("192.168.1.1-100").to_string(), "192.168.1.1-100");
        assert_eq!(pattern("10.*.*.*").to_string(), "10.0-255.*.*");
        assert_eq!(
            pattern("fe80::1:2:1-200:*").to_string(),
            "fe80:0:0:0:1:2:1-200:*"
        );
    }
}
