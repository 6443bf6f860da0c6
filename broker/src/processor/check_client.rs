//! CHECK_CLIENT_CONFIG (46): can this broker serve a consumer's subscription? Answered
//! as RocketMQ 4.9.8's `ClientManageProcessor.checkClientConfig`: a TAG subscription (or
//! none) is SUCCESS; any other type is SYSTEM_ERROR "The broker does not support consumer
//! to filter message by <type>" while `enablePropertyFilter` is off, else
//! SUBSCRIPTION_PARSE_FAILED with the reason when the expression does not compile, else
//! SUCCESS. A consumer sends it at start for each non-TAG subscription and does not start
//! when it is refused. Its client id, group and topic are checked first, as a heartbeat's.

use remoting::names::{check_client_id, check_group, check_topic, BadName};
use remoting::route::{from_json, CheckClientRequestBody};
use remoting::{Connection, RemotingCommand, ResponseCode};
use tracing::warn;

use super::pull_filter::{compile, is_tag_type};
use super::{bad_name, fail, ProcessResult};
use crate::broker::Broker;

pub fn handle(broker: &Broker, _conn: &Connection, request: &RemotingCommand) -> ProcessResult {
    let body: CheckClientRequestBody = if request.body.is_empty() {
        CheckClientRequestBody::default()
    } else {
        from_json("CheckClientRequestBody", &request.body)
            .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))?
    };
    check_names(&body).map_err(bad_name)?;
    let Some(subscription) = body.subscription_data else {
        return Ok(RemotingCommand::success());
    };
    let expression_type = subscription.expression_type.as_str();
    if is_tag_type(Some(expression_type)) {
        return Ok(RemotingCommand::success());
    }
    if !broker.config().enable_property_filter {
        return Err(fail(
            ResponseCode::SYSTEM_ERROR,
            format!("The broker does not support consumer to filter message by {expression_type}"),
        ));
    }
    match compile(expression_type, &subscription.sub_string) {
        Ok(filter) => {
            if let Some(tail) = filter.ignored_tail() {
                warn!(client_id = %body.client_id, consumer_group = %body.group, topic = %subscription.topic,
                    expression = %subscription.sub_string, ignored_from = tail,
                    "SQL92 expression has text the grammar does not read; it is ignored, as RocketMQ ignores it");
            }
            Ok(RemotingCommand::success())
        }
        Err(why) => {
            warn!(client_id = %body.client_id, consumer_group = %body.group, topic = %subscription.topic,
                expression = %subscription.sub_string, error = %why, "failed to compile a filter expression");
            Err(fail(ResponseCode::SUBSCRIPTION_PARSE_FAILED, why))
        }
    }
}

type NameCheck = fn(&str) -> Result<(), BadName>;

/// The body's names by RocketMQ's rules (they reach the logs); an empty one is an absent
/// one, as in the typed headers.
fn check_names(body: &CheckClientRequestBody) -> Result<(), BadName> {
    let topic = body
        .subscription_data
        .as_ref()
        .map_or("", |s| s.topic.as_str());
    let checks: [(&str, NameCheck); 3] = [
        (&body.client_id, check_client_id),
        (&body.group, check_group),
        (topic, check_topic),
    ];
    for (name, check) in checks {
        if !name.is_empty() {
            check(name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use remoting::route::SubscriptionData;

    #[test]
    fn the_bodys_names_are_checked_and_empty_ones_are_absent() {
        let mut body = CheckClientRequestBody::default();
        assert_eq!(check_names(&body), Ok(()));
        body.client_id = "127.0.0.1@1#2".into();
        body.group = "g".into();
        body.subscription_data = Some(SubscriptionData {
            topic: "T".into(),
            ..Default::default()
        });
        assert_eq!(check_names(&body), Ok(()));
        let mut bad = body.clone();
        bad.client_id = "a\nb".into();
        assert!(check_names(&bad).is_err());
        let mut bad = body.clone();
        bad.group = "g\0".into();
        assert!(check_names(&bad).is_err());
        bad = body;
        bad.subscription_data.as_mut().unwrap().topic = "t".repeat(128);
        assert!(check_names(&bad).is_err());
    }
}
