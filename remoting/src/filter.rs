//! Tag expressions (`"*"`, `"TagA || TagB"`), the tag hash stored in the ConsumeQueue,
//! and the exact client-side match that follows the broker's hash filter.
//!
//! The broker filters by hash only, so two tags with the same hash both get through;
//! [`TagFilter::matches`] then keeps exactly the subscribed tags, as RocketMQ's
//! `PullAPIWrapper.processPullResult` does.

use std::collections::BTreeSet;

use crate::route::SubscriptionData;

/// The expression that subscribes to every tag.
pub const SUB_ALL: &str = "*";

/// RocketMQ's expression type for tag expressions.
pub const EXPRESSION_TYPE_TAG: &str = "TAG";

/// Java's `String.hashCode()`: `s[0]*31^(n-1) + ... + s[n-1]` over UTF-16 code units,
/// wrapping in 32 bits.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(unit as i32))
}

/// The tag code the broker keeps in each 20-byte ConsumeQueue entry: RocketMQ's
/// `tagsString2tagsCode`, i.e. `tag.hashCode()` widened to i64. The broker must use
/// the same function, or hash filtering drops messages.
pub fn tag_hash(tag: &str) -> i64 {
    java_string_hash(tag) as i64
}

/// A parsed tag expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFilter {
    /// The expression as sent to the broker (`*` when it subscribes to everything).
    pub expression: String,
    /// Empty means every tag.
    pub tags: BTreeSet<String>,
}

impl TagFilter {
    /// Parses RocketMQ's tag expression (`FilterAPI.buildSubscriptionData`): empty or
    /// `*` is every tag; otherwise tags separated by `||`, blanks trimmed, empty parts
    /// skipped.
    pub fn parse(expression: &str) -> TagFilter {
        let trimmed = expression.trim();
        if trimmed.is_empty() || trimmed == SUB_ALL {
            return TagFilter {
                expression: SUB_ALL.to_string(),
                tags: BTreeSet::new(),
            };
        }
        let tags: BTreeSet<String> = trimmed
            .split("||")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        if tags.is_empty() || tags.contains(SUB_ALL) {
            return TagFilter {
                expression: SUB_ALL.to_string(),
                tags: BTreeSet::new(),
            };
        }
        TagFilter {
            expression: trimmed.to_string(),
            tags,
        }
    }

    pub fn is_all(&self) -> bool {
        self.tags.is_empty()
    }

    /// The tag codes the broker compares with ConsumeQueue entries; `None` for every
    /// tag. Two tags may share a code, so clients check the exact tag afterwards.
    pub fn tag_hashes(&self) -> Option<std::collections::HashSet<i64>> {
        (!self.is_all()).then(|| self.tags.iter().map(|t| tag_hash(t)).collect())
    }

    /// The exact match: every message for `*`, otherwise only messages whose tag is
    /// one of the subscribed tags (a message without a tag never matches).
    pub fn matches(&self, message_tags: Option<&str>) -> bool {
        self.is_all() || message_tags.is_some_and(|t| self.tags.contains(t))
    }

    /// The hash codes the broker compares against ConsumeQueue entries.
    pub fn codes(&self) -> BTreeSet<i32> {
        self.tags.iter().map(|t| java_string_hash(t)).collect()
    }

    /// The subscription as heartbeats carry it.
    pub fn subscription_data(&self, topic: &str, sub_version: i64) -> SubscriptionData {
        SubscriptionData {
            class_filter_mode: false,
            topic: topic.to_string(),
            sub_string: self.expression.clone(),
            tags_set: self.tags.clone(),
            code_set: self.codes(),
            sub_version,
            expression_type: EXPRESSION_TYPE_TAG.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the hash equals Java's String.hashCode on values computed with a JVM
    /// (`"TagA".hashCode() == 2598919` etc.), including wrap-around and non-ASCII.
    #[test]
    fn tag_hash_is_java_string_hash_code() {
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("TagA"), 2_598_919);
        assert_eq!(java_string_hash("TagB"), 2_598_920);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        // Overflows i32: "Hello, World!".hashCode() == 1498789909.
        assert_eq!(java_string_hash("Hello, World!"), 1_498_789_909);
        // Negative: "polygenelubricants".hashCode() == Integer.MIN_VALUE.
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(tag_hash("polygenelubricants"), i32::MIN as i64);
        // A character outside the BMP counts as two UTF-16 units: "😀".hashCode() == 1772899.
        assert_eq!(java_string_hash("\u{1F600}"), 1_772_899);
        // "é" is one unit, 233.
        assert_eq!(java_string_hash("é"), 233);
    }

    /// Proves expressions parse as FilterAPI.buildSubscriptionData parses them.
    #[test]
    fn tag_expressions_parse_like_rocketmq() {
        assert!(TagFilter::parse("*").is_all());
        assert!(TagFilter::parse("").is_all());
        assert!(TagFilter::parse("  ").is_all());
        let f = TagFilter::parse(" TagA ||TagB|| ||  TagC ");
        let tags: Vec<&str> = f.tags.iter().map(String::as_str).collect();
        assert_eq!(tags, ["TagA", "TagB", "TagC"]);
        assert!(f.codes().contains(&2_598_919));
        let sub = f.subscription_data("T", 42);
        assert_eq!(sub.sub_version, 42);
        assert_eq!(sub.expression_type, "TAG");
        assert_eq!(sub.code_set.len(), 3);
        assert_eq!(
            TagFilter::parse("*").subscription_data("T", 1).sub_string,
            "*"
        );
    }

    /// Proves the exact filter keeps only subscribed tags, even when the broker lets a
    /// hash collision through ("Aa" and "BB" share a Java hash).
    #[test]
    fn exact_match_drops_hash_collisions() {
        assert_eq!(java_string_hash("Aa"), java_string_hash("BB"));
        let f = TagFilter::parse("Aa");
        assert!(f.matches(Some("Aa")));
        assert!(!f.matches(Some("BB")));
        assert!(!f.matches(None));
        let all = TagFilter::parse("*");
        assert!(all.matches(None));
        assert!(all.matches(Some("anything")));
    }
}
