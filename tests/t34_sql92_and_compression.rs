//! Proves SQL92 subscriptions and compressed bodies with real processes. With
//! `enablePropertyFilter=true`: a push consumer subscribed with a SQL92 expression gets
//! exactly the messages whose properties match (large bodies among them, sent compressed
//! by the Rust producer and stored compressed, arrive inflated); a pull whose expression
//! matches nothing moves its offset past every message; a bad expression is refused by
//! CHECK_CLIENT_CONFIG and by PULL_MESSAGE with SUBSCRIPTION_PARSE_FAILED, and by
//! `subscribe_sql` itself; bodies compressed exactly as the Java client (zlib level 5,
//! sysFlag COMPRESSED|ZLIB) and as the C++/Go clients (COMPRESSED only) write them are
//! read inflated, and a corrupt compressed body is never delivered while the messages
//! after it are. With the filter off (RocketMQ's default), a SQL92 consumer's start fails
//! with the broker's reason and a SQL92 pull gets SYSTEM_ERROR.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{
    ClientError, ConsumeFromWhere, ConsumeStatus, Message, Producer, ProducerConfig, PullConsumer,
    PullConsumerConfig, PullResult, PushConsumer, PushConsumerConfig,
};
use remoting::connection::NoRequests;
use remoting::header::{
    PullMessageRequestHeader, PullMessageResponseHeader, SendMessageRequestHeader,
};
use remoting::message::encode_properties;
use remoting::route::{to_json, CheckClientRequestBody, SubscriptionData};
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};

/// (property `a`, body) of each delivery.
type Seen = Arc<Mutex<Vec<(usize, Vec<u8>)>>>;

const T: Duration = Duration::from_secs(5);
const SQL: &str = "TAGS = 'even' AND a BETWEEN 10 AND 40 OR a IN ('55')";

async fn connect(addr: &str) -> Connection {
    Connection::connect(addr, &ConnectionConfig::default(), Arc::new(NoRequests))
        .await
        .unwrap()
}

fn body_of(i: usize) -> Vec<u8> {
    if i % 10 == 0 {
        // Large and compressible: the producer sends it compressed.
        format!("body-{i}-").repeat(1_500).into_bytes()
    } else {
        format!("m{i}").into_bytes()
    }
}

fn sql_pull(topic: &str, queue_id: i32, offset: i64, expression: &str) -> RemotingCommand {
    RemotingCommand::request(
        RequestCode::PULL_MESSAGE,
        &PullMessageRequestHeader {
            consumer_group: "raw-sql".into(),
            topic: topic.into(),
            queue_id,
            queue_offset: offset,
            max_msg_nums: 32,
            sys_flag: 4,
            subscription: Some(expression.into()),
            expression_type: Some("SQL92".into()),
            ..Default::default()
        },
    )
}

fn check_client(topic: &str, expression: &str, expression_type: &str) -> RemotingCommand {
    let body = CheckClientRequestBody {
        client_id: "127.0.0.1@t34".into(),
        group: "g".into(),
        subscription_data: Some(SubscriptionData {
            topic: topic.into(),
            sub_string: expression.into(),
            expression_type: expression_type.into(),
            ..Default::default()
        }),
    };
    RemotingCommand::bare_request(RequestCode::CHECK_CLIENT_CONFIG).with_body(to_json(&body))
}

/// A SEND_MESSAGE with raw body and sysFlag, as another client would send it.
fn raw_send(topic: &str, sys_flag: i32, body: Vec<u8>, n: usize) -> RemotingCommand {
    RemotingCommand::request(
        RequestCode::SEND_MESSAGE,
        &SendMessageRequestHeader {
            producer_group: "raw-pg".into(),
            topic: topic.into(),
            default_topic: "TBW102".into(),
            default_topic_queue_nums: 4,
            queue_id: 0,
            sys_flag,
            born_timestamp: 1,
            properties: Some(encode_properties([("KEYS", format!("k{n}").as_str())])),
            ..Default::default()
        },
    )
    .with_body(body)
}

/// zlib at level 5, as Java's `UtilAll.compress(body, 5)` / `ZlibCompressor` writes it.
fn java_zlib(body: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(5));
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

async fn send_all(namesrv: &str, topic: &str) {
    let producer = Producer::start(ProducerConfig::new(namesrv, "t34-producer"))
        .await
        .unwrap();
    for i in 0..60usize {
        let tag = if i % 2 == 0 { "even" } else { "odd" };
        let msg = Message::new(topic, body_of(i))
            .with_tags(tag)
            .with_property("a", i.to_string());
        producer.send(msg).await.unwrap();
    }
    producer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql92_filters_on_the_broker_and_bodies_inflate() {
    let cluster = common::Cluster::start("enablePropertyFilter=true\n");
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let ns = cluster.namesrv_addr.clone();
    let topic = "Sql92Topic";
    send_all(&ns, topic).await;

    // The producer stored the large bodies compressed (COMPRESSED | zlib type).
    let conn = connect(&leader).await;
    let (mut stored, mut compressed) = (0, 0);
    for queue_id in 0..4 {
        let r = conn
            .request(sql_pull(topic, queue_id, 0, "TRUE"), T)
            .await
            .unwrap();
        assert_eq!(r.response_code(), Some(ResponseCode::SUCCESS), "{r:?}");
        for rec in remoting::message::decode_records(&r.body).unwrap() {
            let big = rec.property("a").unwrap().parse::<usize>().unwrap() % 10 == 0;
            assert_eq!(
                rec.sys_flag & 0x701 == 0x301,
                big,
                "sysFlag {:#x}",
                rec.sys_flag
            );
            assert!(!big || rec.body.len() < 1_000, "stored compressed");
            compressed += usize::from(big);
            stored += 1;
        }
    }
    assert_eq!((stored, compressed), (60, 6), "`TRUE` reads every message");

    // A push consumer with a SQL92 subscription gets exactly the matching messages.
    let mut config = PushConsumerConfig::new(&ns, "t34-sql");
    config.consume_from_where = ConsumeFromWhere::FirstOffset;
    let mut consumer = PushConsumer::new(config);
    consumer.subscribe_sql(topic, SQL).unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    consumer.register_message_listener(move |msgs| {
        for m in msgs {
            let a = m.property("a").unwrap().parse().unwrap();
            record.lock().unwrap().push((a, m.body.to_vec()));
        }
        ConsumeStatus::ConsumeSuccess
    });
    consumer.start().await.unwrap();
    let want: BTreeSet<usize> = (10..=40).step_by(2).chain([55]).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < want.len() {
        assert!(
            Instant::now() < deadline,
            "got {:?}",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Time for anything that should not come.
    tokio::time::sleep(Duration::from_secs(2)).await;
    consumer.shutdown().await;
    let seen = seen.lock().unwrap().clone();
    let got: BTreeSet<usize> = seen.iter().map(|(a, _)| *a).collect();
    assert_eq!(got, want, "delivered {seen:?}");
    assert_eq!(seen.len(), want.len(), "no message twice");
    for (a, body) in &seen {
        assert_eq!(body, &body_of(*a), "body of a={a} arrives inflated");
    }

    // A pull whose expression matches nothing moves past every message at once.
    let r = conn
        .request(sql_pull(topic, 1, 0, "a = 'never'"), T)
        .await
        .unwrap();
    assert_eq!(
        r.response_code(),
        Some(ResponseCode::PULL_RETRY_IMMEDIATELY),
        "{r:?}"
    );
    let h: PullMessageResponseHeader = r.header().unwrap();
    assert!(h.max_offset > 0);
    assert_eq!(
        h.next_begin_offset, h.max_offset,
        "offset moves past non-matching messages"
    );

    // Bad expressions: at subscribe, at CHECK_CLIENT_CONFIG, at pull.
    let mut bad = PushConsumer::new(PushConsumerConfig::new(&ns, "t34-bad"));
    let err = bad.subscribe_sql(topic, "a >").unwrap_err();
    assert!(err.to_string().contains("Invalid MessageSelector"), "{err}");
    let r = conn
        .request(check_client(topic, "a >", "SQL92"), T)
        .await
        .unwrap();
    assert_eq!(
        r.response_code(),
        Some(ResponseCode::SUBSCRIPTION_PARSE_FAILED),
        "{r:?}"
    );
    let r = conn
        .request(check_client(topic, SQL, "SQL92"), T)
        .await
        .unwrap();
    assert_eq!(r.response_code(), Some(ResponseCode::SUCCESS), "{r:?}");
    let r = conn
        .request(check_client(topic, "a >", "TAG"), T)
        .await
        .unwrap();
    assert_eq!(
        r.response_code(),
        Some(ResponseCode::SUCCESS),
        "TAG is not compiled: {r:?}"
    );
    let r = conn
        .request(sql_pull(topic, 0, 0, "a = NULL"), T)
        .await
        .unwrap();
    assert_eq!(
        r.response_code(),
        Some(ResponseCode::SUBSCRIPTION_PARSE_FAILED),
        "{r:?}"
    );

    // Bodies compressed by other clients, and a corrupt one.
    let raw_topic = "RawCompressed";
    let plain = b"compressed the way the Java client does it ".repeat(200);
    let sends = [
        (0x301, java_zlib(&plain)),          // Java 4.9.x: COMPRESSED | ZLIB type
        (0x1, b"\x78\x9c garbage".to_vec()), // corrupt
        (0x1, java_zlib(b"C++ and Go set bit 0 only")),
        (0x0, b"plain".to_vec()),
    ];
    for (n, (flag, body)) in sends.into_iter().enumerate() {
        let r = conn
            .request(raw_send(raw_topic, flag, body, n), T)
            .await
            .unwrap();
        assert_eq!(r.response_code(), Some(ResponseCode::SUCCESS), "{r:?}");
    }
    cluster
        .wait_routed(raw_topic, Duration::from_secs(30))
        .await;
    let pull = PullConsumer::start(PullConsumerConfig::new(&ns, "t34-raw"))
        .await
        .unwrap();
    let queue = pull
        .fetch_queues(raw_topic)
        .await
        .unwrap()
        .into_iter()
        .find(|q| q.queue_id == 0)
        .unwrap();
    let result = pull.pull(&queue, 0, 32, "*", Duration::ZERO).await.unwrap();
    let PullResult::Found {
        messages,
        next_begin_offset,
        ..
    } = result
    else {
        panic!("{result:?}")
    };
    pull.shutdown().await;
    let got: Vec<(i64, Vec<u8>)> = messages
        .iter()
        .map(|m| (m.queue_offset, m.body.to_vec()))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, plain.clone()),
            (2, b"C++ and Go set bit 0 only".to_vec()),
            (3, b"plain".to_vec()),
        ],
        "the corrupt body (offset 1) is not delivered"
    );
    assert_eq!(next_begin_offset, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql92_is_refused_when_the_property_filter_is_off() {
    let cluster = common::Cluster::start("");
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let ns = cluster.namesrv_addr.clone();
    let topic = "Sql92Off";
    let producer = Producer::start(ProducerConfig::new(&ns, "t34-off"))
        .await
        .unwrap();
    producer
        .send(Message::new(topic, "x").with_property("a", "1"))
        .await
        .unwrap();
    producer.shutdown().await;
    // The consumer checks a SQL92 subscription with a broker that routes the topic; an
    // auto-created topic reaches the name server with the next registration.
    cluster.wait_routed(topic, Duration::from_secs(30)).await;

    let mut consumer = PushConsumer::new(PushConsumerConfig::new(&ns, "t34-off-sql"));
    consumer.subscribe_sql(topic, "a = 1").unwrap();
    consumer.register_message_listener(|_| ConsumeStatus::ConsumeSuccess);
    match consumer.start().await {
        Err(ClientError::SubscriptionRefused { code, remark, .. }) => {
            assert_eq!(code, ResponseCode::SYSTEM_ERROR as i32);
            assert_eq!(
                remark,
                "The broker does not support consumer to filter message by SQL92"
            );
        }
        other => panic!("start must fail clearly, got {:?}", other.map(|_| ())),
    }

    let conn = connect(&leader).await;
    let r = conn
        .request(sql_pull(topic, 0, 0, "a = 1"), T)
        .await
        .unwrap();
    assert_eq!(r.response_code(), Some(ResponseCode::SYSTEM_ERROR), "{r:?}");
    // A TAG consumer is unaffected.
    let r = conn
        .request(check_client(topic, "*", "TAG"), T)
        .await
        .unwrap();
    assert_eq!(r.response_code(), Some(ResponseCode::SUCCESS));
}
