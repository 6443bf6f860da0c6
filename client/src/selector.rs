//! [`MessageSelector`]: what a consumer subscribes to in a topic, a tag expression or a
//! SQL92 expression (RocketMQ's `MessageSelector.byTag` / `bySql`).
//!
//! A TAG subscription is filtered on the broker by tag hash and again here by the exact
//! tag (hashes can collide). A SQL92 subscription is filtered on the broker only, by
//! evaluating the expression on each message's properties, as RocketMQ does; it needs a
//! broker with `enablePropertyFilter=true`, which a push consumer checks at start
//! (CHECK_CLIENT_CONFIG) so that it fails clearly instead of receiving nothing.

use remoting::filter::{TagFilter, EXPRESSION_TYPE_TAG};
use remoting::route::SubscriptionData;
use remoting::sql92::{Sql92Filter, EXPRESSION_TYPE_SQL92};

use crate::error::{ClientError, Result};

/// A subscription's expression.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageSelector {
    /// `*`, `TagA || TagB`.
    Tag(TagFilter),
    /// A SQL92 expression on message properties (and `TAGS`), checked for syntax when
    /// made with [`MessageSelector::by_sql`].
    Sql92(String),
}

impl MessageSelector {
    /// A tag expression (`*` or tags separated by `||`).
    pub fn by_tag(expression: &str) -> Self {
        MessageSelector::Tag(TagFilter::parse(expression))
    }

    /// A SQL92 expression, e.g. `TAGS IN ('a', 'b') AND price > 100`. It is compiled here
    /// with the grammar and rules the broker uses, so a bad expression fails at once
    /// with the parser's reason.
    pub fn by_sql(expression: &str) -> Result<Self> {
        if expression.trim().is_empty() {
            return Err(ClientError::InvalidConfig {
                reason: "a SQL92 expression cannot be empty".into(),
            });
        }
        Sql92Filter::parse(expression).map_err(|e| ClientError::InvalidConfig {
            reason: format!("SQL92 expression `{expression}`: {e}"),
        })?;
        Ok(MessageSelector::Sql92(expression.to_string()))
    }

    /// The expression as sent to the broker.
    pub fn expression(&self) -> &str {
        match self {
            MessageSelector::Tag(f) => &f.expression,
            MessageSelector::Sql92(e) => e,
        }
    }

    /// RocketMQ's `expressionType`: `TAG` or `SQL92`.
    pub fn expression_type(&self) -> &'static str {
        match self {
            MessageSelector::Tag(_) => EXPRESSION_TYPE_TAG,
            MessageSelector::Sql92(_) => EXPRESSION_TYPE_SQL92,
        }
    }

    pub fn is_tag(&self) -> bool {
        matches!(self, MessageSelector::Tag(_))
    }

    /// The client's half of filtering: the exact tag for TAG; nothing for SQL92 (the
    /// broker evaluated it; RocketMQ re-filters TAG only).
    pub fn matches_on_client(&self, message_tags: Option<&str>) -> bool {
        match self {
            MessageSelector::Tag(f) => f.matches(message_tags),
            MessageSelector::Sql92(_) => true,
        }
    }

    /// The subscription as heartbeats and CHECK_CLIENT_CONFIG carry it.
    pub fn subscription_data(&self, topic: &str, sub_version: i64) -> SubscriptionData {
        match self {
            MessageSelector::Tag(f) => f.subscription_data(topic, sub_version),
            MessageSelector::Sql92(e) => SubscriptionData {
                class_filter_mode: false,
                topic: topic.to_string(),
                sub_string: e.clone(),
                sub_version,
                expression_type: EXPRESSION_TYPE_SQL92.to_string(),
                ..Default::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves SQL92 selectors are checked at once, carry their type, and are not
    /// re-filtered by tag on the client.
    #[test]
    fn sql_selectors_are_checked_and_typed() {
        let s = MessageSelector::by_sql("price > 100 AND TAGS IN ('a')").unwrap();
        assert_eq!(s.expression_type(), "SQL92");
        assert!(s.matches_on_client(Some("zzz")));
        let data = s.subscription_data("T", 7);
        assert_eq!(data.expression_type, "SQL92");
        assert_eq!(data.sub_string, "price > 100 AND TAGS IN ('a')");
        assert!(data.tags_set.is_empty() && data.code_set.is_empty());
        let err = MessageSelector::by_sql("price >").unwrap_err().to_string();
        assert!(err.contains("Invalid MessageSelector"), "{err}");
        assert!(MessageSelector::by_sql("  ").is_err());
        let t = MessageSelector::by_tag("a || b");
        assert_eq!(t.expression_type(), "TAG");
        assert!(!t.matches_on_client(Some("c")));
    }
}
