//! Protocol tests of `client::admin::create_topics` against a scripted name server and
//! brokers: topics go in UPDATE_AND_CREATE_TOPIC_LIST requests to each group's leader, and a
//! broker that does not serve that request (RocketMQ 4.x answers REQUEST_CODE_NOT_SUPPORTED)
//! gets one UPDATE_AND_CREATE_TOPIC a topic instead.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use remoting::header::CreateTopicRequestHeader;
use remoting::route::{to_json, BrokerData, ClusterInfo, CreateTopicListRequestBody};
use remoting::{RemotingCommand, RequestCode, ResponseCode};

/// A broker that records the topics it was asked to create; `lists` says whether it serves
/// UPDATE_AND_CREATE_TOPIC_LIST.
async fn broker(lists: bool, created: Arc<Mutex<Vec<String>>>) -> Scripted {
    Scripted::answering(move |req| {
        let mut created = created.lock().unwrap();
        if req.code == RequestCode::UPDATE_AND_CREATE_TOPIC_LIST as i32 && lists {
            let body: CreateTopicListRequestBody = serde_json::from_slice(&req.body).unwrap();
            created.extend(
                body.topic_config_list
                    .into_iter()
                    .map(|c| c.config.topic_name),
            );
            Some(RemotingCommand::success())
        } else if req.code == RequestCode::UPDATE_AND_CREATE_TOPIC as i32 {
            created.push(req.header::<CreateTopicRequestHeader>().unwrap().topic);
            Some(RemotingCommand::success())
        } else {
            Some(RemotingCommand::error(
                ResponseCode::REQUEST_CODE_NOT_SUPPORTED,
                "not served here",
            ))
        }
    })
    .await
}

/// A name server that knows the groups `(name, leader address)` and routes every topic to
/// them with 4 queues.
async fn name_server(groups: Vec<(String, String)>) -> Scripted {
    Scripted::answering(move |req| {
        let table: BTreeMap<String, BrokerData> = groups
            .iter()
            .map(|(name, addr)| {
                let data = BrokerData {
                    cluster: "DefaultCluster".into(),
                    broker_name: name.clone(),
                    broker_addrs: BTreeMap::from([(0, addr.clone())]).into_iter().collect(),
                    enable_acting_master: false,
                };
                (name.clone(), data)
            })
            .collect();
        Some(match req.code {
            c if c == RequestCode::GET_BROKER_CLUSTER_INFO as i32 => {
                let info = ClusterInfo {
                    cluster_addr_table: BTreeMap::from([(
                        "DefaultCluster".to_string(),
                        table.keys().cloned().collect::<BTreeSet<_>>(),
                    )]),
                    broker_addr_table: table,
                };
                RemotingCommand::success().with_body(to_json(&info))
            }
            c if c == RequestCode::GET_ROUTEINFO_BY_TOPIC as i32 => {
                let groups: Vec<(&str, Vec<String>)> = table
                    .iter()
                    .map(|(name, data)| {
                        (name.as_str(), data.broker_addrs.values().cloned().collect())
                    })
                    .collect();
                RemotingCommand::success().with_body(to_json(&route(&groups, 4)))
            }
            _ => RemotingCommand::error(ResponseCode::REQUEST_CODE_NOT_SUPPORTED, "no"),
        })
    })
    .await
}

/// Proves 2,500 topics reach a listing broker in three list requests (at most 1,000 each) and
/// a RocketMQ 4.x broker, which refuses the list, one request a topic: both end up with every
/// topic exactly once.
#[tokio::test]
async fn topics_are_created_in_lists_or_one_by_one_where_lists_are_refused() {
    let (new_created, old_created) = (Arc::default(), Arc::default());
    let new_broker = broker(true, Arc::clone(&new_created)).await;
    let old_broker = broker(false, Arc::clone(&old_created)).await;
    let ns = name_server(vec![
        ("broker-new".into(), new_broker.addr.clone()),
        ("broker-old".into(), old_broker.addr.clone()),
    ])
    .await;
    let namesrv = client::NameServerClient::new(&ns.addr, Duration::from_secs(3)).unwrap();
    let topics: Vec<String> = (0..2_500).map(|i| format!("T-{i}")).collect();
    let groups = client::admin::create_topics(&namesrv, &topics, 4, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        groups,
        vec!["broker-new".to_string(), "broker-old".to_string()]
    );
    let lists = |s: &Scripted, code: RequestCode| {
        s.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.code == code as i32)
            .count()
    };
    assert_eq!(
        lists(&new_broker, RequestCode::UPDATE_AND_CREATE_TOPIC_LIST),
        3
    );
    assert_eq!(lists(&new_broker, RequestCode::UPDATE_AND_CREATE_TOPIC), 0);
    assert_eq!(
        lists(&old_broker, RequestCode::UPDATE_AND_CREATE_TOPIC_LIST),
        1
    );
    assert_eq!(
        lists(&old_broker, RequestCode::UPDATE_AND_CREATE_TOPIC),
        2_500
    );
    for created in [new_created, old_created] {
        let mut created = created.lock().unwrap().clone();
        created.sort();
        let mut want = topics.clone();
        want.sort();
        assert_eq!(created, want);
    }
}
