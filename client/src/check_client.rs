//! CHECK_CLIENT_CONFIG (46) at a push consumer's start, as Java's
//! `MQClientInstance.checkClientInBroker`: each non-TAG subscription is shown to one
//! broker serving its topic (brokers of a cluster are assumed configured alike), and a
//! refusal (filter disabled, expression that does not compile) stops the start with
//! [`ClientError::SubscriptionRefused`]. A topic with no route yet is not checked, as in
//! Java (there is no broker to ask).

use std::collections::BTreeMap;

use remoting::route::{to_json, CheckClientRequestBody};
use remoting::{RemotingCommand, RequestCode, ResponseCode};
use tracing::warn;

use crate::error::{ClientError, Result};
use crate::instance::{Access, ClientInstance};
use crate::selector::MessageSelector;

pub(crate) async fn check_subscriptions(
    instance: &ClientInstance,
    consumer_group: &str,
    subscriptions: &BTreeMap<String, (MessageSelector, i64)>,
) -> Result<()> {
    for (topic, (selector, sub_version)) in subscriptions {
        if selector.is_tag() {
            continue;
        }
        let broker_name = instance
            .routes()
            .topic(topic)
            .and_then(|r| r.broker_datas.first().map(|b| b.broker_name.clone()));
        let Some(broker_name) = broker_name else {
            warn!(%topic, "no route yet: the SQL92 subscription is not checked with a broker");
            continue;
        };
        let body = CheckClientRequestBody {
            client_id: instance.client_id.clone(),
            group: consumer_group.to_string(),
            subscription_data: Some(selector.subscription_data(topic, *sub_version)),
        };
        let request = RemotingCommand::bare_request(RequestCode::CHECK_CLIENT_CONFIG)
            .with_body(to_json(&body));
        let (addr, response) = instance
            .request_group(
                &broker_name,
                request,
                instance.config.api_timeout(),
                Access::Read,
            )
            .await?;
        if response.code != ResponseCode::SUCCESS as i32 {
            return Err(ClientError::SubscriptionRefused {
                topic: topic.clone(),
                selector: format!("{} `{}`", selector.expression_type(), selector.expression()),
                broker: format!("{broker_name} ({addr})"),
                code: response.code,
                remark: response.remark.unwrap_or_default(),
            });
        }
    }
    Ok(())
}
