//! Client-generated message ids (the UNIQ_KEY property), as RocketMQ's
//! `MessageClientIDSetter` makes them: 16 bytes as 32 uppercase hex digits.
//!
//! | bytes | what |
//! | --- | --- |
//! | 4 | this host's IPv4 address |
//! | 2 | the process id (low 16 bits) |
//! | 4 | a random number fixed for the process (RocketMQ: the class loader's hash) |
//! | 4 | milliseconds since the start of the current month (UTC here) |
//! | 2 | a counter, wrapping |
//!
//! The id is what the producer's user sees as the msgId; it is unique as long as one
//! process makes fewer than 65,536 ids in a millisecond.

use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

const DAY_MS: i64 = 86_400_000;

struct Fixed {
    prefix: String,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let mut raw = Vec::with_capacity(10);
        raw.extend_from_slice(&local_ipv4().octets());
        raw.extend_from_slice(&(std::process::id() as u16).to_be_bytes());
        raw.extend_from_slice(&(random_u64() as u32).to_be_bytes());
        Fixed {
            prefix: hex_upper(&raw),
        }
    })
}

static COUNTER: AtomicU16 = AtomicU16::new(0);

/// A new UNIQ_KEY.
pub fn new_uniq_key() -> String {
    new_uniq_key_at(now_ms())
}

fn new_uniq_key_at(now_ms: i64) -> String {
    let diff = (now_ms - start_of_month_ms(now_ms)) as i32;
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tail = [0u8; 6];
    tail[..4].copy_from_slice(&diff.to_be_bytes());
    tail[4..].copy_from_slice(&counter.to_be_bytes());
    let mut out = String::with_capacity(32);
    out.push_str(&fixed().prefix);
    out.push_str(&hex_upper(&tail));
    out
}

/// The parts of a UNIQ_KEY made by this module's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UniqKeyParts {
    pub ip: Ipv4Addr,
    pub pid: u16,
    pub ms_since_month_start: i32,
    pub counter: u16,
}

/// Splits a 32-digit UNIQ_KEY; `None` if it is not 32 hex digits.
pub fn parse_uniq_key(id: &str) -> Option<UniqKeyParts> {
    if id.len() != 32 || !id.is_ascii() {
        return None;
    }
    let mut raw = [0u8; 16];
    for (i, byte) in raw.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&id[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(UniqKeyParts {
        ip: Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]),
        pid: u16::from_be_bytes([raw[4], raw[5]]),
        ms_since_month_start: i32::from_be_bytes([raw[10], raw[11], raw[12], raw[13]]),
        counter: u16::from_be_bytes([raw[14], raw[15]]),
    })
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Midnight UTC on the first day of the month holding `ms`.
fn start_of_month_ms(ms: i64) -> i64 {
    let days = ms.div_euclid(DAY_MS);
    let day_of_month = civil_day_of_month(days);
    (days - (day_of_month - 1)) * DAY_MS
}

/// Day of month (1-based) of a day count since 1970-01-01 (Hinnant's civil_from_days).
fn civil_day_of_month(days: i64) -> i64 {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    doy - (153 * mp + 2) / 5 + 1
}

/// This host's outward IPv4 address (no packet is sent), else 127.0.0.1.
pub(crate) fn local_ipv4() -> Ipv4Addr {
    let probe = || -> std::io::Result<Ipv4Addr> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.connect("8.8.8.8:53")?;
        match socket.local_addr()?.ip() {
            std::net::IpAddr::V4(ip) if !ip.is_unspecified() => Ok(ip),
            _ => Ok(Ipv4Addr::LOCALHOST),
        }
    };
    probe().unwrap_or(Ipv4Addr::LOCALHOST)
}

pub(crate) fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

fn hex_upper(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xF) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Proves the id is 32 uppercase hex digits laid out as MessageClientIDSetter's,
    /// carrying this host's IP, our pid and the time since the month began.
    #[test]
    fn uniq_key_has_rocketmq_layout() {
        let now = now_ms();
        let id = new_uniq_key_at(now);
        assert_eq!(id.len(), 32);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)));
        let parts = parse_uniq_key(&id).unwrap();
        assert_eq!(parts.ip, local_ipv4());
        assert_eq!(parts.pid, std::process::id() as u16);
        assert_eq!(
            parts.ms_since_month_start as i64,
            now - start_of_month_ms(now)
        );
        assert!(parts.ms_since_month_start >= 0);
        assert!((parts.ms_since_month_start as i64) < 31 * DAY_MS);
        assert!(parse_uniq_key("xyz").is_none());
        assert!(parse_uniq_key(&"G".repeat(32)).is_none());
    }

    /// Proves ids made in a burst are all distinct and the counter advances.
    #[test]
    fn uniq_keys_are_distinct_in_a_burst() {
        let ids: Vec<String> = (0..10_000).map(|_| new_uniq_key()).collect();
        let set: HashSet<&String> = ids.iter().collect();
        assert_eq!(set.len(), ids.len());
        let a = parse_uniq_key(&ids[0]).unwrap().counter;
        let b = parse_uniq_key(&ids[1]).unwrap().counter;
        // Other tests may make ids concurrently, so only "moves forward" is certain.
        assert_ne!(a, b);
    }

    /// Proves the month start against dates worked out by hand.
    #[test]
    fn month_start_matches_the_calendar() {
        // 2024-02-29T13:00:00Z -> 2024-02-01T00:00:00Z (leap year).
        assert_eq!(start_of_month_ms(1_709_211_600_000), 1_706_745_600_000);
        // 2023-12-31T23:59:59.999Z -> 2023-12-01.
        assert_eq!(start_of_month_ms(1_704_067_199_999), 1_701_388_800_000);
        // 2024-01-01T00:00:00Z is its own month start.
        assert_eq!(start_of_month_ms(1_704_067_200_000), 1_704_067_200_000);
    }
}
