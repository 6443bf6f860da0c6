//! Protocol tests of the pull consumer against scripted brokers: result mapping for
//! every pull answer, exact tag filtering after the broker's hash filter, follower
//! fallback when the leader is down, and the offset requests.

mod common;

use std::time::Duration;

use client::pull_consumer::pull_sys_flag;
use client::{MessageQueue, PullConsumer, PullConsumerConfig, PullResult};
use common::*;
use remoting::header::PullMessageRequestHeader;
use remoting::{RemotingCommand, RequestCode, ResponseCode};

fn config(ns: &NameServer) -> PullConsumerConfig {
    PullConsumerConfig {
        client: client_config(ns.addr()),
        consumer_group: "cg".into(),
        consumer_pull_timeout_ms: 2_000,
    }
}

/// A broker that serves queue 0 of topic T: offsets 0..3 with tags Aa, BB, TagB
/// ("Aa" and "BB" share a hash, so a hash filter lets both through).
fn broker_script(req: &RemotingCommand) -> Option<RemotingCommand> {
    let code = RequestCode::from_i32(req.code)?;
    Some(match code {
        RequestCode::PULL_MESSAGE => {
            let h: PullMessageRequestHeader = req.header().unwrap();
            match h.queue_offset {
                0 => pull_answer(ResponseCode::SUCCESS, 3, 0, 3).with_body(records(
                    "T",
                    0,
                    &[(0, Some("Aa")), (1, Some("BB")), (2, Some("TagB"))],
                )),
                3 => pull_answer(ResponseCode::PULL_NOT_FOUND, 3, 0, 3),
                4 => pull_answer(ResponseCode::PULL_RETRY_IMMEDIATELY, 5, 0, 3),
                _ => pull_answer(ResponseCode::PULL_OFFSET_MOVED, 0, 0, 3),
            }
        }
        RequestCode::QUERY_CONSUMER_OFFSET => {
            if req.ext("queueId") == Some("0") {
                RemotingCommand::success().with_ext("offset", "2")
            } else {
                RemotingCommand::error(ResponseCode::QUERY_NOT_FOUND, "no offset")
            }
        }
        RequestCode::GET_MAX_OFFSET => RemotingCommand::success().with_ext("offset", "3"),
        RequestCode::GET_MIN_OFFSET => RemotingCommand::success().with_ext("offset", "0"),
        RequestCode::SEARCH_OFFSET_BY_TIMESTAMP => {
            RemotingCommand::success().with_ext("offset", req.ext("timestamp").unwrap())
        }
        _ => RemotingCommand::success(),
    })
}

/// Proves each pull answer maps to its result, that a found pull is decoded and then
/// filtered by exact tag (the hash-collision "BB" is dropped), and that the request
/// carries RocketMQ's sysFlag bits, subscription and hold time.
#[tokio::test]
async fn pull_results_and_exact_tag_filter() {
    let broker = Scripted::answering(broker_script).await;
    let ns = NameServer::start().await;
    ns.set_route("T", route(&[("broker-a", vec![broker.addr.clone()])], 2));
    let consumer = PullConsumer::start(config(&ns)).await.unwrap();
    let queues = consumer.fetch_queues("T").await.unwrap();
    assert_eq!(queues.len(), 2);
    let q = &queues[0];
    assert_eq!(q, &MessageQueue::new("T", "broker-a", 0));

    let hold = Duration::from_millis(500);
    match consumer.pull(q, 0, 32, "Aa || TagB", hold).await.unwrap() {
        PullResult::Found {
            messages,
            next_begin_offset,
            min_offset,
            max_offset,
        } => {
            let tags: Vec<_> = messages.iter().map(|m| m.tags().unwrap()).collect();
            assert_eq!(tags, ["Aa", "TagB"]);
            assert_eq!((next_begin_offset, min_offset, max_offset), (3, 0, 3));
            assert_eq!(messages[1].queue_offset, 2);
            assert_eq!(&messages[1].body[..], b"body-2");
            assert_eq!(messages[1].msg_id(), format!("{:032X}", 2));
            assert_eq!(messages[1].broker_name, "broker-a");
        }
        other => panic!("{other:?}"),
    }
    let sent: PullMessageRequestHeader = broker.received(RequestCode::PULL_MESSAGE)[0]
        .header()
        .unwrap();
    assert_eq!(
        sent.sys_flag,
        pull_sys_flag::SUSPEND | pull_sys_flag::SUBSCRIPTION
    );
    assert_eq!(sent.subscription.as_deref(), Some("Aa || TagB"));
    assert_eq!(sent.suspend_timeout_millis, 500);
    assert_eq!(sent.consumer_group, "cg");
    assert_eq!(sent.max_msg_nums, 32);

    // The scripted broker does not filter: for "Zz" the exact filter keeps nothing,
    // so the found pull is reported as no matched message.
    assert!(matches!(
        consumer.pull(q, 0, 32, "Zz", Duration::ZERO).await.unwrap(),
        PullResult::NoMatchedMessage {
            next_begin_offset: 3,
            ..
        }
    ));
    let no_hold: PullMessageRequestHeader = broker.received(RequestCode::PULL_MESSAGE)[1]
        .header()
        .unwrap();
    assert_eq!(no_hold.sys_flag & pull_sys_flag::SUSPEND, 0);

    assert!(matches!(
        consumer.pull(q, 3, 32, "*", hold).await.unwrap(),
        PullResult::NoNewMessage {
            next_begin_offset: 3,
            ..
        }
    ));
    assert!(matches!(
        consumer.pull(q, 4, 32, "*", hold).await.unwrap(),
        PullResult::NoMatchedMessage {
            next_begin_offset: 5,
            ..
        }
    ));
    let illegal = consumer.pull(q, 99, 32, "*", hold).await.unwrap();
    assert!(matches!(
        illegal,
        PullResult::OffsetIllegal {
            next_begin_offset: 0,
            ..
        }
    ));
    assert_eq!(illegal.next_begin_offset(), 0);
    consumer.shutdown().await;
}

/// Proves the offset requests: committed offset found / not found, oneway commit to
/// the leader, max, min and search by time.
#[tokio::test]
async fn offset_requests() {
    let broker = Scripted::answering(broker_script).await;
    let ns = NameServer::start().await;
    ns.set_route("T", route(&[("broker-a", vec![broker.addr.clone()])], 2));
    let consumer = PullConsumer::start(config(&ns)).await.unwrap();
    let q0 = MessageQueue::new("T", "broker-a", 0);
    let q1 = MessageQueue::new("T", "broker-a", 1);
    assert_eq!(consumer.query_offset(&q0).await.unwrap(), Some(2));
    assert_eq!(consumer.query_offset(&q1).await.unwrap(), None);
    assert_eq!(consumer.max_offset(&q0).await.unwrap(), 3);
    assert_eq!(consumer.min_offset(&q0).await.unwrap(), 0);
    assert_eq!(consumer.search_offset(&q0, 12345).await.unwrap(), 12345);
    consumer.update_offset(&q1, 9).await.unwrap();
    assert!(
        eventually(Duration::from_secs(2), || {
            broker
                .received(RequestCode::UPDATE_CONSUMER_OFFSET)
                .iter()
                .any(|r| {
                    r.is_oneway()
                        && r.ext("commitOffset") == Some("9")
                        && r.ext("queueId") == Some("1")
                        && r.ext("consumerGroup") == Some("cg")
                })
        })
        .await
    );
    consumer.shutdown().await;
}

/// Proves a pull goes to a follower when the leader cannot be reached, and the
/// follower's answer is used (followers serve committed reads).
#[tokio::test]
async fn pull_falls_back_to_a_follower() {
    let dead = dead_addr().await;
    let follower = Scripted::answering(broker_script).await;
    let ns = NameServer::start().await;
    ns.set_route(
        "T",
        route(&[("broker-a", vec![dead, follower.addr.clone()])], 1),
    );
    let consumer = PullConsumer::start(config(&ns)).await.unwrap();
    let q = MessageQueue::new("T", "broker-a", 0);
    let result = consumer.pull(&q, 0, 32, "*", Duration::ZERO).await.unwrap();
    match result {
        PullResult::Found { messages, .. } => assert_eq!(messages.len(), 3),
        other => panic!("{other:?}"),
    }
    assert_eq!(follower.count(RequestCode::PULL_MESSAGE), 1);
    consumer.shutdown().await;
}
