//! Protocol tests of RocketMQ 4.x retry behaviour in the push consumer, against a
//! scripted broker group (a leader and a follower): the automatic `%RETRY%<group>`
//! subscription, CONSUMER_SEND_MSG_BACK for refused messages, the re-send to the retry
//! topic when the broker refuses that, keeping a message nobody takes back, restoring
//! a retried message's topic, and dropping refused messages in broadcasting.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{
    ConsumeFromWhere, ConsumeStatus, MessageExt, MessageModel, PushConsumer, PushConsumerConfig,
};
use common::*;
use remoting::header::{ConsumerSendMsgBackRequestHeader, PullMessageRequestHeader};
use remoting::message::property_value;
use remoting::route::{from_json, to_json, ConsumerListBody, HeartbeatData};
use remoting::{RemotingCommand, RequestCode, ResponseCode};

const GROUP: &str = "cg";
const RETRY: &str = "%RETRY%cg";

/// What the scripted broker stores and how it answers give-backs.
struct Store {
    /// Per topic, the records of its one queue (offsets 0, 1, ...).
    topics: HashMap<String, Vec<Rec>>,
    /// The answer to CONSUMER_SEND_MSG_BACK.
    send_back: ResponseCode,
    /// The answer to SEND_MESSAGE: SUCCESS means SEND_OK.
    send: ResponseCode,
    members: Vec<String>,
}

/// The leader of broker-a: serves `store`, holds pulls past the end 100 ms.
async fn broker(store: Arc<Mutex<Store>>) -> Scripted {
    Scripted::start(Arc::new(move |_conn, req| {
        let store = store.clone();
        Box::pin(async move {
            let code = RequestCode::from_i32(req.code)?;
            Some(match code {
                RequestCode::HEART_BEAT => {
                    let hb: HeartbeatData = from_json("heartbeat", &req.body).unwrap();
                    let mut s = store.lock().unwrap();
                    if !s.members.contains(&hb.client_id) {
                        s.members.push(hb.client_id);
                    }
                    RemotingCommand::success()
                }
                RequestCode::GET_CONSUMER_LIST_BY_GROUP => {
                    let body = ConsumerListBody {
                        consumer_id_list: store.lock().unwrap().members.clone(),
                    };
                    RemotingCommand::success().with_body(to_json(&body))
                }
                RequestCode::QUERY_CONSUMER_OFFSET | RequestCode::GET_MIN_OFFSET => {
                    RemotingCommand::success().with_ext("offset", "0")
                }
                RequestCode::PULL_MESSAGE => {
                    let h: PullMessageRequestHeader = req.header().unwrap();
                    let recs = store
                        .lock()
                        .unwrap()
                        .topics
                        .get(&h.topic)
                        .cloned()
                        .unwrap_or_default();
                    let end = recs.len() as i64;
                    if h.queue_offset >= end {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        pull_answer(ResponseCode::PULL_NOT_FOUND, h.queue_offset, 0, end)
                    } else {
                        let from = &recs[h.queue_offset as usize..];
                        pull_answer(ResponseCode::SUCCESS, end, 0, end)
                            .with_body(records_with(&h.topic, h.queue_id, from))
                    }
                }
                RequestCode::CONSUMER_SEND_MSG_BACK => match store.lock().unwrap().send_back {
                    ResponseCode::SUCCESS => RemotingCommand::success(),
                    code => RemotingCommand::error(code, "scripted refusal"),
                },
                RequestCode::SEND_MESSAGE => match store.lock().unwrap().send {
                    ResponseCode::SUCCESS => send_ok(&req, 0),
                    code => RemotingCommand::error(code, "scripted refusal"),
                },
                _ => RemotingCommand::success(),
            })
        })
    }))
    .await
}

/// Topic T holds `t` (queue 0), the retry topic holds `retry`.
fn store(t: Vec<Rec>, retry: Vec<Rec>, send_back: ResponseCode, send: ResponseCode) -> Store {
    Store {
        topics: HashMap::from([("T".to_string(), t), (RETRY.to_string(), retry)]),
        send_back,
        send,
        members: Vec::new(),
    }
}

/// Five plain messages, UNIQ_KEY `U<offset>`, tag `TagA`, reconsumed `reconsume_times`.
fn plain(reconsume_times: i32) -> Vec<Rec> {
    (0..5)
        .map(|o| {
            let uniq = format!("U{o}");
            Rec::new(o, &[("UNIQ_KEY", &uniq), ("TAGS", "TagA")], reconsume_times)
        })
        .collect()
}

struct Cluster {
    leader: Scripted,
    follower: Scripted,
    ns: NameServer,
}

async fn cluster(store: Store) -> Cluster {
    let leader = broker(Arc::new(Mutex::new(store))).await;
    let follower = Scripted::answering(|_| Some(RemotingCommand::success())).await;
    let ns = NameServer::start().await;
    let members = vec![leader.addr.clone(), follower.addr.clone()];
    ns.set_route("T", route(&[("broker-a", members.clone())], 1));
    ns.set_route(RETRY, route(&[("broker-a", members)], 1));
    Cluster {
        leader,
        follower,
        ns,
    }
}

fn config(ns: &NameServer) -> PushConsumerConfig {
    let mut c = PushConsumerConfig::new(ns.addr(), GROUP);
    c.client = client_config(ns.addr());
    c.consume_from_where = ConsumeFromWhere::FirstOffset;
    c.rebalance_interval_ms = 60_000;
    c.broker_suspend_max_time_ms = 1_000;
    c.consumer_timeout_when_suspend_ms = 3_000;
    c.pull_time_delay_when_exception_ms = 100;
    c.reconsume_delay_ms = 50;
    c
}

/// One delivery as the listener saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    topic: String,
    queue_offset: i64,
    reconsume_times: i32,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Records every delivery; refuses those of `refuse` (topic, queue offset).
fn listener(
    log: Log,
    refuse: Option<(&'static str, i64)>,
) -> impl Fn(&[MessageExt]) -> ConsumeStatus + Send + Sync {
    move |msgs| {
        let mut status = ConsumeStatus::ConsumeSuccess;
        for m in msgs {
            log.lock().unwrap().push(Seen {
                topic: m.topic.clone(),
                queue_offset: m.queue_offset,
                reconsume_times: m.reconsume_times,
            });
            if refuse == Some((m.topic.as_str(), m.queue_offset)) {
                status = ConsumeStatus::ReconsumeLater;
            }
        }
        status
    }
}

async fn start(
    cfg: PushConsumerConfig,
    log: &Log,
    refuse: Option<(&'static str, i64)>,
) -> PushConsumer {
    let mut consumer = PushConsumer::new(cfg);
    consumer.subscribe("T", "TagA").unwrap();
    consumer.register_message_listener(listener(log.clone(), refuse));
    consumer.start().await.unwrap();
    consumer
}

/// Answered commits, by (topic, queue id).
fn commits(server: &Scripted) -> BTreeMap<(String, String), String> {
    server
        .received(RequestCode::UPDATE_CONSUMER_OFFSET)
        .iter()
        .filter(|r| !r.is_oneway())
        .map(|r| {
            (
                (
                    r.ext("topic").unwrap().to_string(),
                    r.ext("queueId").unwrap().to_string(),
                ),
                r.ext("commitOffset").unwrap().to_string(),
            )
        })
        .collect()
}

fn committed(server: &Scripted, topic: &str) -> Option<String> {
    commits(server)
        .get(&(topic.to_string(), "0".to_string()))
        .cloned()
}

fn deliveries_of(log: &Log, topic: &str, queue_offset: i64) -> Vec<i32> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.topic == topic && s.queue_offset == queue_offset)
        .map(|s| s.reconsume_times)
        .collect()
}

/// The subscriptions of the first heartbeat `server` got: topic -> expression.
fn heartbeat_subscriptions(server: &Scripted) -> BTreeMap<String, String> {
    let hb = server.received(RequestCode::HEART_BEAT);
    let data: HeartbeatData = from_json("heartbeat", &hb[0].body).unwrap();
    data.consumer_data_set[0]
        .subscription_data_set
        .iter()
        .map(|s| (s.topic.clone(), s.sub_string.clone()))
        .collect()
}

/// Proves a clustering consumer subscribes its group to `%RETRY%cg` with `*` besides
/// the user's topic (as the HEART_BEAT body shows, to every member), and pulls that
/// topic too.
#[tokio::test]
async fn clustering_subscribes_to_the_group_retry_topic() {
    let c = cluster(store(
        plain(0),
        Vec::new(),
        ResponseCode::SUCCESS,
        ResponseCode::SUCCESS,
    ))
    .await;
    let log: Log = Arc::default();
    let mut consumer = start(config(&c.ns), &log, None).await;
    for server in [&c.leader, &c.follower] {
        let subs = heartbeat_subscriptions(server);
        assert_eq!(
            subs,
            BTreeMap::from([
                (RETRY.to_string(), "*".to_string()),
                ("T".to_string(), "TagA".to_string()),
            ])
        );
    }
    let queues: Vec<String> = consumer
        .owned_queues()
        .iter()
        .map(|q| q.topic.clone())
        .collect();
    assert_eq!(queues, [RETRY, "T"]);
    assert!(
        eventually(Duration::from_secs(5), || c
            .leader
            .received(RequestCode::PULL_MESSAGE)
            .iter()
            .any(|r| r.ext("topic") == Some(RETRY)))
        .await,
        "the retry topic is pulled"
    );
    consumer.shutdown().await;
}

/// Proves a refused message is given back with CONSUMER_SEND_MSG_BACK to the group's
/// leader (not the follower), the header naming its commit-log offset, the group, the
/// configured delay level, its msgId (UNIQ_KEY), its topic and max reconsume times 16
/// (configured -1); that once the broker answers SUCCESS it is not delivered again here
/// nor re-sent, and the offset passes it.
#[tokio::test]
async fn refused_message_is_sent_back_to_the_leader() {
    let c = cluster(store(
        plain(0),
        Vec::new(),
        ResponseCode::SUCCESS,
        ResponseCode::SUCCESS,
    ))
    .await;
    let log: Log = Arc::default();
    let mut cfg = config(&c.ns);
    cfg.max_reconsume_times = -1;
    cfg.delay_level_when_next_consume = 2;
    let mut consumer = start(cfg, &log, Some(("T", 2))).await;

    assert!(
        eventually(Duration::from_secs(5), || c
            .leader
            .count(RequestCode::CONSUMER_SEND_MSG_BACK)
            == 1)
        .await
    );
    let sent = &c.leader.received(RequestCode::CONSUMER_SEND_MSG_BACK)[0];
    let h: ConsumerSendMsgBackRequestHeader = sent.header().unwrap();
    assert_eq!(h.offset, 1000 + 2 * 100, "the commit-log offset");
    assert_eq!(h.group, GROUP);
    assert_eq!(h.delay_level, 2);
    assert_eq!(h.origin_msg_id.as_deref(), Some("U2"));
    assert_eq!(h.origin_topic.as_deref(), Some("T"));
    assert_eq!(h.max_reconsume_times, Some(16));
    assert_eq!(c.follower.count(RequestCode::CONSUMER_SEND_MSG_BACK), 0);

    assert!(eventually(Duration::from_secs(5), || log.lock().unwrap().len() >= 5).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(deliveries_of(&log, "T", 2), [0], "not consumed again here");
    assert_eq!(c.leader.count(RequestCode::SEND_MESSAGE), 0, "no fallback");
    consumer.shutdown().await;
    assert_eq!(committed(&c.leader, "T").as_deref(), Some("5"));
}

/// Proves that when the broker refuses CONSUMER_SEND_MSG_BACK, the refused message
/// (reconsumed twice before) is re-sent to `%RETRY%cg` by the internal producer with
/// every original property, DELAY = 3 + 2, RETRY_TOPIC = T, ORIGIN_MESSAGE_ID = its
/// msgId, and reconsumeTimes 3 and maxReconsumeTimes 16 in the send header (not in the
/// properties); and that the offset then passes it.
#[tokio::test]
async fn refused_send_back_falls_back_to_a_retry_topic_send() {
    let c = cluster(store(
        plain(2),
        Vec::new(),
        ResponseCode::SYSTEM_ERROR,
        ResponseCode::SUCCESS,
    ))
    .await;
    let log: Log = Arc::default();
    let mut consumer = start(config(&c.ns), &log, Some(("T", 1))).await;

    assert!(
        eventually(Duration::from_secs(5), || c
            .leader
            .count(RequestCode::SEND_MESSAGE)
            == 1)
        .await
    );
    assert_eq!(c.leader.count(RequestCode::CONSUMER_SEND_MSG_BACK), 1);
    let sent = &c.leader.received(RequestCode::SEND_MESSAGE)[0];
    assert_eq!(sent.ext("topic"), Some(RETRY));
    assert_eq!(sent.ext("producerGroup"), Some("CLIENT_INNER_PRODUCER"));
    assert_eq!(sent.ext("reconsumeTimes"), Some("3"));
    assert_eq!(sent.ext("maxReconsumeTimes"), Some("16"));
    assert_eq!(&sent.body[..], b"body-1");
    let props = sent.ext("properties").unwrap();
    assert_eq!(property_value(props, "DELAY"), Some("5"));
    assert_eq!(property_value(props, "RETRY_TOPIC"), Some("T"));
    assert_eq!(property_value(props, "ORIGIN_MESSAGE_ID"), Some("U1"));
    assert_eq!(property_value(props, "UNIQ_KEY"), Some("U1"));
    assert_eq!(property_value(props, "TAGS"), Some("TagA"));
    assert_eq!(property_value(props, "RECONSUME_TIME"), None);
    assert_eq!(property_value(props, "MAX_RECONSUME_TIMES"), None);

    assert!(eventually(Duration::from_secs(5), || log.lock().unwrap().len() >= 5).await);
    assert_eq!(deliveries_of(&log, "T", 1), [2], "not consumed again here");
    consumer.shutdown().await;
    assert_eq!(committed(&c.leader, "T").as_deref(), Some("5"));
}

/// Proves a refused message that neither the send-back nor the re-send gets to the
/// broker is kept: it is consumed again here with reconsume_times raised each time,
/// well past any local retry limit of old, and the committed offset stays on it (1),
/// never passing it.
#[tokio::test]
async fn message_nobody_takes_back_is_kept_and_consumed_again() {
    let c = cluster(store(
        plain(0),
        Vec::new(),
        ResponseCode::SYSTEM_ERROR,
        ResponseCode::SYSTEM_ERROR,
    ))
    .await;
    let log: Log = Arc::default();
    let mut cfg = config(&c.ns);
    cfg.reconsume_delay_ms = 10;
    cfg.max_reconsume_times = 1;
    let mut consumer = start(cfg, &log, Some(("T", 1))).await;

    assert!(
        eventually(Duration::from_secs(20), || deliveries_of(&log, "T", 1)
            .len()
            >= 4)
        .await,
        "{:?}",
        log.lock().unwrap()
    );
    let times = deliveries_of(&log, "T", 1);
    assert_eq!(times[..4], [0, 1, 2, 3]);
    assert!(c.leader.count(RequestCode::CONSUMER_SEND_MSG_BACK) >= 4);
    consumer.shutdown().await;
    assert_eq!(committed(&c.leader, "T").as_deref(), Some("1"));
}

/// Proves a message pulled from `%RETRY%cg` that carries RETRY_TOPIC=T reaches the
/// listener with topic T (and its retry-topic offset), one without RETRY_TOPIC keeps the
/// retry topic, and the retry queue's offset is committed.
#[tokio::test]
async fn retried_message_reaches_the_listener_with_its_first_topic() {
    let retried = vec![
        Rec::new(
            0,
            &[("UNIQ_KEY", "U9"), ("RETRY_TOPIC", "T"), ("TAGS", "TagA")],
            1,
        ),
        Rec::new(1, &[("UNIQ_KEY", "U10")], 1),
    ];
    let c = cluster(store(
        Vec::new(),
        retried,
        ResponseCode::SUCCESS,
        ResponseCode::SUCCESS,
    ))
    .await;
    let log: Log = Arc::default();
    let mut consumer = start(config(&c.ns), &log, None).await;
    assert!(eventually(Duration::from_secs(5), || log.lock().unwrap().len() >= 2).await);
    let mut seen = log.lock().unwrap().clone();
    seen.sort_by_key(|s| s.queue_offset);
    assert_eq!(
        seen,
        [
            Seen {
                topic: "T".into(),
                queue_offset: 0,
                reconsume_times: 1
            },
            Seen {
                topic: RETRY.into(),
                queue_offset: 1,
                reconsume_times: 1
            },
        ]
    );
    consumer.shutdown().await;
    assert_eq!(committed(&c.leader, RETRY).as_deref(), Some("2"));
}

/// Proves a broadcasting consumer does not subscribe to the retry topic, and drops a
/// refused message after logging it: no CONSUMER_SEND_MSG_BACK, no re-send, no second
/// delivery, and its offset (kept locally) passes it.
#[tokio::test]
async fn broadcasting_drops_refused_messages() {
    let c = cluster(store(
        plain(0),
        Vec::new(),
        ResponseCode::SUCCESS,
        ResponseCode::SUCCESS,
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Arc::default();
    let mut cfg = config(&c.ns);
    cfg.message_model = MessageModel::Broadcasting;
    cfg.local_offset_store_dir = dir.path().to_path_buf();
    let mut consumer = start(cfg, &log, Some(("T", 1))).await;
    let subs = heartbeat_subscriptions(&c.leader);
    assert_eq!(subs.keys().collect::<Vec<_>>(), ["T"]);
    assert!(eventually(Duration::from_secs(5), || log.lock().unwrap().len() >= 5).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(deliveries_of(&log, "T", 1), [0]);
    consumer.shutdown().await;
    assert_eq!(c.leader.count(RequestCode::CONSUMER_SEND_MSG_BACK), 0);
    assert_eq!(c.leader.count(RequestCode::SEND_MESSAGE), 0);
    let file = std::fs::read_to_string(dir.path().join(GROUP).join("offsets.json")).unwrap();
    assert!(file.contains("\"T@broker-a@0\": 5"), "{file}");
}
