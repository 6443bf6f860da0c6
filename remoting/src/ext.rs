//! [`ExtFields`]: the `extFields` of a command, a few short string pairs.
//!
//! Every send and every answer carries a dozen of them, so they live in one string buffer
//! with a list of spans instead of a map of separately allocated strings: writing a header
//! is appends to one buffer (numbers formatted straight into it), reading one is a short
//! linear scan, and cloning or dropping a command is two allocations however many fields
//! it has. With a `BTreeMap<String, String>` the client spent about a fifth of its CPU
//! building, cloning, encoding and dropping these maps (docs/PERFORMANCE.md).

use std::fmt;

/// The most fields a decoded header may carry, repeats included; RocketMQ's headers carry
/// at most a few dozen. Bounds the work of inserting with replacement (a linear scan each).
pub const MAX_EXT_FIELDS: usize = 1024;

/// Keys and values of `extFields`. A key appears at most once: inserting an existing key
/// replaces its value.
#[derive(Clone, Default)]
pub struct ExtFields {
    /// Every key and value, back to back. A replaced value stays behind, unused: headers
    /// are built once, so little is wasted.
    text: String,
    /// Per field: where its key starts, where its value starts (= where the key ends) and
    /// where the value ends, in `text`.
    spans: Vec<[u32; 3]>,
}

impl ExtFields {
    pub fn new() -> Self {
        ExtFields::default()
    }

    /// Room for about `bytes` of keys and values and `fields` fields.
    pub fn with_capacity(bytes: usize, fields: usize) -> Self {
        ExtFields {
            text: String::with_capacity(bytes),
            spans: Vec::with_capacity(fields),
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    fn key_at(&self, span: &[u32; 3]) -> &str {
        &self.text[span[0] as usize..span[1] as usize]
    }

    fn value_at(&self, span: &[u32; 3]) -> &str {
        &self.text[span[1] as usize..span[2] as usize]
    }

    fn find(&self, key: &str) -> Option<usize> {
        // Bytes, lengths first: no UTF-8 boundary checks in the loop (a header read looks
        // up each of its fields, so this runs about a hundred times per send).
        let (text, key) = (self.text.as_bytes(), key.as_bytes());
        self.spans.iter().position(|&[k, v, _]| {
            (v - k) as usize == key.len() && &text[k as usize..v as usize] == key
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key).map(|i| self.value_at(&self.spans[i]))
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: &str, value: &str) {
        self.insert_with(key, |text| text.push_str(value));
    }

    /// Sets `key` to the decimal form of an integer (`-` when `negative`, then
    /// `magnitude`): every header carries several numbers, and `Display` goes through the
    /// formatting machinery for each.
    pub fn insert_decimal(&mut self, key: &str, negative: bool, magnitude: u64) {
        self.insert_with(key, |text| {
            let mut digits = [0u8; 20];
            let mut rest = magnitude;
            let mut start = digits.len();
            loop {
                start -= 1;
                digits[start] = b'0' + (rest % 10) as u8;
                rest /= 10;
                if rest == 0 {
                    break;
                }
            }
            if negative {
                text.push('-');
            }
            text.push_str(std::str::from_utf8(&digits[start..]).expect("ASCII digits"));
        });
    }

    fn insert_with(&mut self, key: &str, write_value: impl FnOnce(&mut String)) {
        let existing = self.find(key);
        let key_start = self.text.len();
        self.text.push_str(key);
        let value_start = self.text.len();
        write_value(&mut self.text);
        let span = [key_start, value_start, self.text.len()].map(|p| {
            u32::try_from(p).expect("extFields are far smaller than 4 GiB (frames are bounded)")
        });
        match existing {
            Some(i) => self.spans[i] = span,
            None => self.spans.push(span),
        }
    }

    /// The fields in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.spans
            .iter()
            .map(|s| (self.key_at(s), self.value_at(s)))
    }

    fn sorted(&self) -> Vec<(&str, &str)> {
        let mut pairs: Vec<_> = self.iter().collect();
        pairs.sort_unstable();
        pairs
    }
}

/// Equal when they hold the same keys with the same values, in any order.
impl PartialEq for ExtFields {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.sorted() == other.sorted()
    }
}

impl Eq for ExtFields {}

impl fmt::Debug for ExtFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for ExtFields {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut ext = ExtFields::new();
        for (k, v) in iter {
            ext.insert(k.as_ref(), v.as_ref());
        }
        ext
    }
}

impl serde::Serialize for ExtFields {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_and_get_finds_the_latest_value() {
        let mut ext = ExtFields::new();
        ext.insert("topic", "T");
        ext.insert_decimal("queueId", false, 7);
        ext.insert_decimal("bornTimestamp", true, 1);
        ext.insert("topic", "U");
        assert_eq!(ext.len(), 3);
        assert_eq!(ext.get("topic"), Some("U"));
        assert_eq!(ext.get("queueId"), Some("7"));
        assert_eq!(ext.get("bornTimestamp"), Some("-1"));
        assert_eq!(ext.get("queue"), None);
        assert_eq!(
            ext.iter().collect::<Vec<_>>(),
            vec![("topic", "U"), ("queueId", "7"), ("bornTimestamp", "-1")]
        );
    }

    #[test]
    fn decimals_read_as_display_writes_them() {
        let mut ext = ExtFields::new();
        for v in [
            0i128,
            1,
            9,
            10,
            -1,
            -10,
            1_763_769_600_000,
            i64::MIN as i128,
            i64::MAX as i128,
            u64::MAX as i128,
        ] {
            ext.insert_decimal("n", v < 0, v.unsigned_abs() as u64);
            assert_eq!(ext.get("n"), Some(v.to_string().as_str()));
        }
    }

    #[test]
    fn equality_ignores_order_and_replaced_values() {
        let a: ExtFields = [("a", "1"), ("b", "2")].into_iter().collect();
        let mut b = ExtFields::new();
        b.insert("b", "0");
        b.insert("a", "1");
        assert_ne!(a, b);
        b.insert("b", "2");
        assert_eq!(a, b);
        assert_eq!(format!("{b:?}"), r#"{"b": "2", "a": "1"}"#);
    }
}
