//! Protocol tests of the push consumer against a scripted broker group (a leader and a
//! follower): heartbeats to every member, delivery in queue order with exact tag
//! filtering, offset commits, immediate rebalancing on NOTIFY_CONSUMER_IDS_CHANGED
//! (and that a queue given away stops being pulled), and broadcasting with a local
//! offset file. RECONSUME_LATER and retry topics: `t40_consumer_retry.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{
    ConsumeFromWhere, ConsumeStatus, MessageExt, MessageModel, PushConsumer, PushConsumerConfig,
};
use common::*;
use remoting::header::{ConsumerGroupRequestHeader, PullMessageRequestHeader};
use remoting::route::{from_json, to_json, ConsumerListBody, HeartbeatData};
use remoting::{RemotingCommand, RequestCode, ResponseCode};

const MESSAGES_PER_QUEUE: i64 = 5;

/// Group membership as the scripted leader sees it.
#[derive(Default)]
struct Members {
    from_heartbeats: BTreeSet<String>,
    extra: BTreeSet<String>,
}

/// A broker serving topic T: each queue holds offsets 0..5, tags alternating TagA/TagB.
/// Pulls past the end are held 100 ms, then answered PULL_NOT_FOUND.
async fn broker(members: Arc<Mutex<Members>>) -> Scripted {
    Scripted::start(Arc::new(move |_conn, req| {
        let members = members.clone();
        Box::pin(async move {
            let code = RequestCode::from_i32(req.code)?;
            Some(match code {
                RequestCode::HEART_BEAT => {
                    let hb: HeartbeatData = from_json("heartbeat", &req.body).unwrap();
                    members.lock().unwrap().from_heartbeats.insert(hb.client_id);
                    RemotingCommand::success()
                }
                RequestCode::GET_CONSUMER_LIST_BY_GROUP => {
                    let m = members.lock().unwrap();
                    let body = ConsumerListBody {
                        consumer_id_list: m.from_heartbeats.union(&m.extra).cloned().collect(),
                    };
                    RemotingCommand::success().with_body(to_json(&body))
                }
                RequestCode::QUERY_CONSUMER_OFFSET => {
                    RemotingCommand::success().with_ext("offset", "0")
                }
                RequestCode::GET_MIN_OFFSET => RemotingCommand::success().with_ext("offset", "0"),
                RequestCode::GET_MAX_OFFSET => {
                    RemotingCommand::success().with_ext("offset", MESSAGES_PER_QUEUE.to_string())
                }
                RequestCode::PULL_MESSAGE => {
                    let h: PullMessageRequestHeader = req.header().unwrap();
                    if h.queue_offset >= MESSAGES_PER_QUEUE {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        pull_answer(
                            ResponseCode::PULL_NOT_FOUND,
                            h.queue_offset,
                            0,
                            MESSAGES_PER_QUEUE,
                        )
                    } else {
                        let msgs: Vec<(i64, Option<&str>)> = (h.queue_offset..MESSAGES_PER_QUEUE)
                            .map(|o| (o, Some(if o % 2 == 0 { "TagA" } else { "TagB" })))
                            .collect();
                        pull_answer(
                            ResponseCode::SUCCESS,
                            MESSAGES_PER_QUEUE,
                            0,
                            MESSAGES_PER_QUEUE,
                        )
                        .with_body(records(&h.topic, h.queue_id, &msgs))
                    }
                }
                _ => RemotingCommand::success(),
            })
        })
    }))
    .await
}

fn config(ns: &NameServer, group: &str) -> PushConsumerConfig {
    let mut c = PushConsumerConfig::new(ns.addr(), group);
    c.client = client_config(ns.addr());
    c.consume_from_where = ConsumeFromWhere::FirstOffset;
    c.rebalance_interval_ms = 60_000;
    c.broker_suspend_max_time_ms = 1_000;
    c.consumer_timeout_when_suspend_ms = 3_000;
    c.pull_time_delay_when_exception_ms = 100;
    c
}

type Seen = Arc<Mutex<Vec<(i32, i64, i32)>>>;

fn recording_listener(seen: Seen) -> impl Fn(&[MessageExt]) -> ConsumeStatus + Send + Sync {
    move |msgs| {
        let mut s = seen.lock().unwrap();
        for m in msgs {
            s.push((m.queue_id, m.queue_offset, m.reconsume_times));
        }
        ConsumeStatus::ConsumeSuccess
    }
}

fn commits(server: &Scripted) -> BTreeMap<String, String> {
    server
        .received(RequestCode::UPDATE_CONSUMER_OFFSET)
        .iter()
        .filter(|r| !r.is_oneway())
        .map(|r| {
            (
                r.ext("queueId").unwrap().to_string(),
                r.ext("commitOffset").unwrap().to_string(),
            )
        })
        .collect()
}

/// Proves: heartbeats reach the leader AND the follower; messages matching "TagA"
/// (and only those) are delivered, in queue order per queue; at shutdown every queue's
/// offset is committed (answered, not oneway) as the lowest unconsumed offset (5), and
/// the client unregisters.
#[tokio::test]
async fn delivers_in_order_heartbeats_everyone_and_commits() {
    let members = Arc::new(Mutex::new(Members::default()));
    let leader = broker(members.clone()).await;
    let follower = broker(Arc::new(Mutex::new(Members::default()))).await;
    let ns = NameServer::start().await;
    ns.set_route(
        "T",
        route(
            &[("broker-a", vec![leader.addr.clone(), follower.addr.clone()])],
            4,
        ),
    );

    let seen: Seen = Arc::default();
    let mut consumer = PushConsumer::new(config(&ns, "cg"));
    consumer.subscribe("T", "TagA").unwrap();
    consumer.register_message_listener(recording_listener(seen.clone()));
    consumer.start().await.unwrap();
    assert_eq!(consumer.owned_queues().len(), 4);

    assert!(eventually(Duration::from_secs(5), || seen.lock().unwrap().len() >= 12).await);
    let seen_now = seen.lock().unwrap().clone();
    for q in 0..4 {
        let offsets: Vec<i64> = seen_now.iter().filter(|s| s.0 == q).map(|s| s.1).collect();
        assert_eq!(offsets, [0, 2, 4], "queue {q}");
    }
    for server in [&leader, &follower] {
        let hb = server.received(RequestCode::HEART_BEAT);
        assert!(!hb.is_empty(), "every member gets heartbeats");
        let data: HeartbeatData = from_json("heartbeat", &hb[0].body).unwrap();
        let group = &data.consumer_data_set[0];
        assert_eq!(group.group_name, "cg");
        assert_eq!(group.consume_type, "CONSUME_PASSIVELY");
        assert_eq!(group.message_model, "CLUSTERING");
        let sub = |topic: &str| {
            group
                .subscription_data_set
                .iter()
                .find(|s| s.topic == topic)
                .map(|s| s.sub_string.clone())
        };
        assert_eq!(sub("T").as_deref(), Some("TagA"));
        assert_eq!(sub("%RETRY%cg").as_deref(), Some("*"));
        assert_eq!(Some(data.client_id.as_str()), consumer.client_id());
    }

    consumer.shutdown().await;
    let committed = commits(&leader);
    for q in 0..4 {
        assert_eq!(
            committed.get(&q.to_string()).map(String::as_str),
            Some("5"),
            "{committed:?}"
        );
    }
    let unregister = leader.received(RequestCode::UNREGISTER_CLIENT);
    assert_eq!(unregister.len(), 1);
    assert_eq!(unregister[0].ext("consumerGroup"), Some("cg"));
    assert_eq!(follower.count(RequestCode::UNREGISTER_CLIENT), 1);
}

/// Proves a broker's NOTIFY_CONSUMER_IDS_CHANGED makes the consumer rebalance at once
/// (the periodic rebalance is a minute away): with a second member it keeps the first
/// half of the queues (RocketMQ's average allocation), commits the offsets of the
/// queues it gives away, and stops pulling them.
#[tokio::test]
async fn notify_rebalances_at_once_and_stops_given_away_queues() {
    let members = Arc::new(Mutex::new(Members::default()));
    let leader = broker(members.clone()).await;
    let ns = NameServer::start().await;
    ns.set_route("T", route(&[("broker-a", vec![leader.addr.clone()])], 4));
    let seen: Seen = Arc::default();
    let mut consumer = PushConsumer::new(config(&ns, "cg2"));
    consumer.subscribe("T", "*").unwrap();
    consumer.register_message_listener(recording_listener(seen.clone()));
    consumer.start().await.unwrap();
    assert_eq!(consumer.owned_queues().len(), 4);
    assert!(eventually(Duration::from_secs(5), || seen.lock().unwrap().len() >= 20).await);

    // "zzz-other" sorts after "127.0.0.1@...": this consumer gets queues 0 and 1.
    members.lock().unwrap().extra.insert("zzz-other".into());
    let conn = leader.conns.lock().unwrap()[0].clone();
    conn.oneway(RemotingCommand::request(
        RequestCode::NOTIFY_CONSUMER_IDS_CHANGED,
        &ConsumerGroupRequestHeader {
            consumer_group: "cg2".into(),
        },
    ))
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || consumer.owned_queues().len()
            == 2)
        .await
    );
    let ids: Vec<i32> = consumer.owned_queues().iter().map(|q| q.queue_id).collect();
    assert_eq!(ids, [0, 1]);
    let committed = commits(&leader);
    assert_eq!(committed.get("2").map(String::as_str), Some("5"));
    assert_eq!(committed.get("3").map(String::as_str), Some("5"));

    let pulls_of = |queue_id: &str| {
        leader
            .received(RequestCode::PULL_MESSAGE)
            .iter()
            .filter(|r| r.ext("queueId") == Some(queue_id))
            .count()
    };
    let (q2, q0) = (pulls_of("2"), pulls_of("0"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        pulls_of("2"),
        q2,
        "a queue given away is not pulled any more"
    );
    assert!(pulls_of("0") > q0, "an owned queue keeps long polling");
    consumer.shutdown().await;
}

/// Proves broadcasting gives every member every queue regardless of the group list,
/// and keeps offsets in the local file (none are committed to the broker).
#[tokio::test]
async fn broadcasting_owns_everything_and_keeps_offsets_locally() {
    let members = Arc::new(Mutex::new(Members::default()));
    members.lock().unwrap().extra.insert("zzz-other".into());
    let leader = broker(members).await;
    let ns = NameServer::start().await;
    ns.set_route("T", route(&[("broker-a", vec![leader.addr.clone()])], 2));
    let dir = tempfile::tempdir().unwrap();
    let seen: Seen = Arc::default();
    let mut cfg = config(&ns, "bg");
    cfg.message_model = MessageModel::Broadcasting;
    cfg.local_offset_store_dir = dir.path().to_path_buf();
    let mut consumer = PushConsumer::new(cfg);
    consumer.subscribe("T", "*").unwrap();
    consumer.register_message_listener(recording_listener(seen.clone()));
    consumer.start().await.unwrap();
    assert_eq!(consumer.owned_queues().len(), 2);
    assert!(eventually(Duration::from_secs(5), || seen.lock().unwrap().len() >= 10).await);
    consumer.shutdown().await;
    assert!(commits(&leader).is_empty());
    let file = std::fs::read_to_string(dir.path().join("bg").join("offsets.json")).unwrap();
    assert!(file.contains("\"T@broker-a@0\": 5"), "{file}");
    assert!(file.contains("\"T@broker-a@1\": 5"), "{file}");
}
