//! Tag expressions (`*`, `TagA`, `TagA || TagB`) and the hash filter over ConsumeQueue
//! entries; clients check the exact tag afterwards, as in RocketMQ.

use std::collections::HashSet;

use crate::command::tag_hash;

/// A parsed subscription expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagFilter {
    All,
    Hashes(HashSet<i64>),
}

impl TagFilter {
    pub fn parse(expression: &str) -> TagFilter {
        let expression = expression.trim();
        if expression.is_empty() || expression == "*" {
            return TagFilter::All;
        }
        let hashes: HashSet<i64> = expression
            .split("||")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(tag_hash)
            .collect();
        if hashes.is_empty() {
            TagFilter::All
        } else {
            TagFilter::Hashes(hashes)
        }
    }

    pub fn matches(&self, hash: i64) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Hashes(set) => set.contains(&hash),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_parse_to_hash_sets() {
        assert_eq!(TagFilter::parse("*"), TagFilter::All);
        assert_eq!(TagFilter::parse(" "), TagFilter::All);
        let f = TagFilter::parse("TagA || TagB");
        assert!(f.matches(tag_hash("TagA")) && f.matches(tag_hash("TagB")));
        assert!(!f.matches(tag_hash("TagC")));
    }
}
