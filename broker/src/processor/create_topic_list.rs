//! UPDATE_AND_CREATE_TOPIC_LIST (18, RocketMQ 5.x): many topics created or updated by one
//! request, through the Raft log in one entry (invariant 4; more only when the list exceeds
//! the log's entry limit, see [`Broker::put_topics`]). Only the leader takes it.
//!
//! Every topic is checked, by the rules of UPDATE_AND_CREATE_TOPIC, before anything is
//! proposed: one that breaks a rule refuses the whole request with a remark naming it and
//! its place in the list, and nothing is created. RocketMQ's broker answers SUCCESS as soon
//! as it meets a topic it holds unchanged, creating none of the list; here such topics are
//! left out and the others created. A topic listed twice is refused (which of its configs
//! was meant?), and so is any `attributes` entry: this broker keeps no topic attributes, and
//! a topic asked for as FIFO or transactional must not be created as a plain one.

use std::collections::HashSet;

use remoting::names::check_topic;
use remoting::route::{from_json, CreateTopicListRequestBody, ListedTopicConfig, TopicConfig};
use remoting::{Connection, RemotingCommand, ResponseCode};

use super::admin::check_topic_config;
use super::{fail, ProcessError, ProcessResult};
use crate::broker::Broker;

/// UPDATE_AND_CREATE_TOPIC_LIST (18).
pub async fn handle(
    broker: &Broker,
    _conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let body: CreateTopicListRequestBody =
        from_json("UPDATE_AND_CREATE_TOPIC_LIST body", &request.body)
            .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))?;
    let configs = checked(body.topic_config_list)?;
    broker
        .put_topics(configs)
        .await
        .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))?;
    Ok(RemotingCommand::success())
}

/// The configs of `listed`, once every one of them keeps the rules; else the answer naming
/// the first that does not.
fn checked(listed: Vec<ListedTopicConfig>) -> Result<Vec<TopicConfig>, ProcessError> {
    let mut seen = HashSet::with_capacity(listed.len());
    let mut configs = Vec::with_capacity(listed.len());
    for (i, topic) in listed.into_iter().enumerate() {
        check_listed(&topic, &mut seen).map_err(|reason| {
            fail(
                ResponseCode::SYSTEM_ERROR,
                format!("topicConfigList[{i}]: {reason}; no topic of this request was created"),
            )
        })?;
        configs.push(topic.config);
    }
    Ok(configs)
}

/// Why one listed topic is refused, naming it; `seen` holds the names listed before it.
fn check_listed(topic: &ListedTopicConfig, seen: &mut HashSet<String>) -> Result<(), String> {
    let name = &topic.config.topic_name;
    check_topic(name).map_err(|e| e.to_string())?;
    check_topic_config(&topic.config).map_err(|reason| format!("topic `{name}`: {reason}"))?;
    if let Some(attributes) = topic.attributes.as_ref().filter(|a| !a.is_empty()) {
        return Err(format!(
            "topic `{name}`: attributes {} are not supported (this broker keeps no topic \
             attributes)",
            // JSON escapes control characters: the remark stays one readable line.
            serde_json::to_string(attributes).unwrap_or_default()
        ));
    }
    if !seen.insert(name.clone()) {
        return Err(format!("topic `{name}` is listed twice"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(name: &str) -> ListedTopicConfig {
        ListedTopicConfig {
            config: TopicConfig {
                topic_name: name.to_string(),
                read_queue_nums: 4,
                write_queue_nums: 4,
                ..TopicConfig::default()
            },
            attributes: Some(Default::default()),
        }
    }

    fn refusal(list: Vec<ListedTopicConfig>) -> String {
        match checked(list) {
            Ok(configs) => panic!("accepted {configs:?}"),
            Err(ProcessError::Response(r)) => {
                assert_eq!(r.code, ResponseCode::SYSTEM_ERROR as i32);
                r.remark.unwrap_or_default()
            }
            Err(ProcessError::Header(e)) => panic!("{e}"),
        }
    }

    /// A good list passes whole and in order; each kind of bad topic anywhere in a list
    /// refuses it, with a remark naming the topic (escaped) and its place.
    #[test]
    fn one_bad_topic_refuses_the_list_naming_it() {
        let good: Vec<_> = (0..5).map(|i| listed(&format!("T-{i}"))).collect();
        let configs = checked(good.clone()).unwrap_or_else(|_| panic!("refused"));
        let names: Vec<_> = configs.iter().map(|c| c.topic_name.as_str()).collect();
        assert_eq!(names, ["T-0", "T-1", "T-2", "T-3", "T-4"]);

        let long = "x".repeat(200);
        let with = |i: usize, bad: ListedTopicConfig| {
            let mut list = good.clone();
            list.insert(i, bad);
            refusal(list)
        };
        let remark = with(3, listed("a\0b"));
        assert!(
            remark.starts_with("topicConfigList[3]: topic `a\\0b` may contain only"),
            "{remark}"
        );
        assert!(
            remark.ends_with("no topic of this request was created"),
            "{remark}"
        );
        let remark = with(0, listed(&long));
        assert!(
            remark.contains(&format!("topic `{long}` is longer than 127")),
            "{remark}"
        );
        let remark = with(5, listed(""));
        assert!(
            remark.starts_with("topicConfigList[5]: topic `` is empty"),
            "{remark}"
        );
        let remark = with(1, listed("TBW102"));
        assert!(
            remark.contains("The topic[TBW102] is conflict with system topic."),
            "{remark}"
        );

        let mut queues = listed("Q");
        queues.config.write_queue_nums = 0;
        assert!(with(2, queues).contains("topic `Q`: readQueueNums and writeQueueNums"));
        let mut queues = listed("Q");
        queues.config.read_queue_nums = 1025;
        assert!(with(2, queues).contains("topic `Q`: readQueueNums and writeQueueNums"));
        let mut filter = listed("F");
        filter.config.topic_filter_type = "ANY".into();
        assert!(with(1, filter).contains("topic `F`: topicFilterType = [ANY] value invalid"));
        let mut perm = listed("P");
        perm.config.perm = 64;
        assert!(with(1, perm).contains("topic `P`: perm = [64] value invalid"));
        let mut typed = listed("A");
        typed.attributes = Some([("+message.type".to_string(), "FIFO".to_string())].into());
        let remark = with(4, typed);
        assert!(
            remark.contains(r#"topic `A`: attributes {"+message.type":"FIFO"} are not supported"#),
            "{remark}"
        );
        assert_eq!(
            with(5, listed("T-2")),
            "topicConfigList[5]: topic `T-2` is listed twice; no topic of this request was created"
        );
    }

    /// Absent or empty attributes are no attributes.
    #[test]
    fn empty_or_absent_attributes_pass() {
        let mut none = listed("N");
        none.attributes = None;
        assert!(checked(vec![none, listed("E")]).is_ok());
    }
}
