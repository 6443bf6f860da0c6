//! Protocol tests of the producer against scripted brokers and name servers: follower
//! redirects, dead-leader fallback, outcome-unknown on timeouts and dropped
//! connections, retries on definite failures, ordered and batch sends, delay and timer
//! properties.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::{ClientError, Message, Producer, ProducerConfig, SendStatus};
use common::*;
use remoting::message::{decode_batch, property_value};
use remoting::{RemotingCommand, RequestCode, ResponseCode};

fn config(ns: &NameServer) -> ProducerConfig {
    ProducerConfig {
        client: client_config(ns.addr()),
        producer_group: "pg".into(),
        ..Default::default()
    }
}

fn is_send(req: &RemotingCommand) -> bool {
    [
        RequestCode::SEND_MESSAGE as i32,
        RequestCode::SEND_MESSAGE_V2 as i32,
        RequestCode::SEND_BATCH_MESSAGE as i32,
    ]
    .contains(&req.code)
}

async fn leader() -> Scripted {
    Scripted::answering(|req| {
        Some(if is_send(req) {
            send_ok(req, 7)
        } else {
            RemotingCommand::success()
        })
    })
    .await
}

/// Proves a follower's not-leader answer sends the request at once to the named
/// leader without using a retry (retries are 0), that the answer is SEND_OK with the
/// UNIQ_KEY as msgId, and that the next sends go straight to the leader because the
/// route cache learned it, even across name-server refreshes that still name the
/// follower. The leader is in no route, so only the redirect can find it.
#[tokio::test]
async fn follower_redirect_is_followed_and_cached() {
    let leader = leader().await;
    let leader_addr = leader.addr.clone();
    let follower = Scripted::answering(move |req| {
        Some(if is_send(req) {
            not_leader(Some(&leader_addr))
        } else {
            RemotingCommand::success()
        })
    })
    .await;
    let ns = NameServer::start().await;
    // The stale route names the follower as brokerId 0, and nobody else.
    ns.set_route("T", route(&[("broker-a", vec![follower.addr.clone()])], 4));
    let mut cfg = config(&ns);
    cfg.retry_times_when_send_failed = 0;
    let producer = Producer::start(cfg).await.unwrap();

    let msg = Message::new("T", "hello")
        .with_tags("TagA")
        .with_keys(["k1", "k2"]);
    let result = producer.send(msg).await.unwrap();
    assert_eq!(result.status, SendStatus::SendOk);
    assert_eq!(result.broker_addr, leader.addr);
    assert_eq!(result.msg_id.len(), 32);
    assert_eq!(result.offset_msg_id, "7F00000100002A9F0000000000001000");
    assert_eq!(result.queue.broker_name, "broker-a");
    assert_eq!(result.queue_offset, 7);
    assert_eq!(follower.count(RequestCode::SEND_MESSAGE), 1);

    // What the leader got: SEND_MESSAGE (10) with RocketMQ's header and properties.
    let sent = &leader.received(RequestCode::SEND_MESSAGE)[0];
    let props = sent.ext("properties").unwrap();
    assert_eq!(
        property_value(props, "UNIQ_KEY"),
        Some(result.msg_id.as_str())
    );
    assert_eq!(property_value(props, "WAIT"), Some("true"));
    assert_eq!(property_value(props, "TAGS"), Some("TagA"));
    assert_eq!(property_value(props, "KEYS"), Some("k1 k2"));
    assert_eq!(sent.ext("producerGroup"), Some("pg"));
    assert_eq!(sent.ext("topic"), Some("T"));
    assert_eq!(sent.ext("defaultTopic"), Some("TBW102"));
    assert_eq!(&sent.body[..], b"hello");

    producer.send(Message::new("T", "again")).await.unwrap();
    assert_eq!(
        follower.count(RequestCode::SEND_MESSAGE),
        1,
        "the cache still names the follower"
    );
    assert_eq!(leader.count(RequestCode::SEND_MESSAGE), 2);
    producer.shutdown().await;
}

/// Proves that when the cached leader is dead (connection refused), the client asks
/// the group's other members, follows the not-leader answer to the new leader (which
/// no route names), and the send succeeds without using a retry.
#[tokio::test]
async fn dead_leader_falls_back_to_members() {
    let dead = dead_addr().await;
    let leader = leader().await;
    let leader_addr = leader.addr.clone();
    let follower = Scripted::answering(move |req| {
        Some(if is_send(req) {
            not_leader(Some(&leader_addr))
        } else {
            RemotingCommand::success()
        })
    })
    .await;
    let ns = NameServer::start().await;
    ns.set_route(
        "T",
        route(
            &[("broker-a", vec![dead.clone(), follower.addr.clone()])],
            2,
        ),
    );
    let mut cfg = config(&ns);
    cfg.retry_times_when_send_failed = 0;
    let producer = Producer::start(cfg).await.unwrap();
    let result = producer.send(Message::new("T", "x")).await.unwrap();
    assert_eq!(result.broker_addr, leader.addr);
    assert_eq!(follower.count(RequestCode::SEND_MESSAGE), 1);
    assert_eq!(leader.count(RequestCode::SEND_MESSAGE), 1);
    producer.shutdown().await;
}

/// Proves that when every cached member is dead, the client refreshes the route from
/// the name server within the same send and reaches the new leader there.
#[tokio::test]
async fn all_members_dead_refreshes_route_within_the_send() {
    let dead = dead_addr().await;
    let leader = leader().await;
    let ns = NameServer::start().await;
    ns.set_route("T", route(&[("broker-a", vec![dead.clone()])], 2));
    let mut cfg = config(&ns);
    cfg.retry_times_when_send_failed = 0;
    let producer = Producer::start(cfg).await.unwrap();
    producer.fetch_publish_queues("T").await.unwrap();
    // The group moved while the client was not looking.
    ns.set_route("T", route(&[("broker-a", vec![leader.addr.clone()])], 2));
    let result = producer.send(Message::new("T", "x")).await.unwrap();
    assert_eq!(result.broker_addr, leader.addr);
    producer.shutdown().await;
}

/// Proves a connection that drops after the request was written is reported as
/// outcome unknown and is NOT retried (even with retries left and two groups), and
/// that with `retry_on_outcome_unknown` it is retried but still reported unknown.
#[tokio::test]
async fn dropped_connection_is_outcome_unknown_and_not_retried() {
    let dropper = || {
        Scripted::start(Arc::new(|conn, req| {
            Box::pin(async move {
                if is_send(&req) {
                    conn.close();
                    None
                } else {
                    Some(RemotingCommand::success())
                }
            })
        }))
    };
    let (a, b) = (dropper().await, dropper().await);
    let ns = NameServer::start().await;
    ns.set_route(
        "T",
        route(
            &[
                ("broker-a", vec![a.addr.clone()]),
                ("broker-b", vec![b.addr.clone()]),
            ],
            2,
        ),
    );
    let producer = Producer::start(config(&ns)).await.unwrap();
    let err = producer.send(Message::new("T", "x")).await.unwrap_err();
    assert!(matches!(err, ClientError::OutcomeUnknown { .. }), "{err:?}");
    assert!(err.is_outcome_unknown());
    let sends = a.count(RequestCode::SEND_MESSAGE) + b.count(RequestCode::SEND_MESSAGE);
    assert_eq!(
        sends, 1,
        "an unknown outcome must not be retried by default"
    );
    producer.shutdown().await;

    let mut cfg = config(&ns);
    cfg.retry_on_outcome_unknown = true;
    let producer = Producer::start(cfg).await.unwrap();
    let err = producer.send(Message::new("T", "x")).await.unwrap_err();
    assert!(err.is_outcome_unknown(), "{err:?}");
    let sends = a.count(RequestCode::SEND_MESSAGE) + b.count(RequestCode::SEND_MESSAGE);
    assert_eq!(sends, 1 + 3, "retried twice, all with the same outcome");
    producer.shutdown().await;
}

/// Proves a broker that never answers yields outcome unknown at the deadline, not a
/// failure.
#[tokio::test]
async fn timeout_is_outcome_unknown() {
    let silent = Scripted::start(Arc::new(|_conn, req| {
        Box::pin(async move {
            if is_send(&req) {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            Some(RemotingCommand::success())
        })
    }))
    .await;
    let ns = NameServer::start().await;
    ns.set_route("T", route(&[("broker-a", vec![silent.addr.clone()])], 1));
    let mut cfg = config(&ns);
    cfg.send_msg_timeout_ms = 300;
    let producer = Producer::start(cfg).await.unwrap();
    let began = std::time::Instant::now();
    let err = producer.send(Message::new("T", "x")).await.unwrap_err();
    assert!(matches!(err, ClientError::OutcomeUnknown { .. }), "{err:?}");
    assert!(began.elapsed() < Duration::from_secs(3));
    assert_eq!(silent.count(RequestCode::SEND_MESSAGE), 1);
}

/// Proves a definite failure (SYSTEM_BUSY) is retried on the other group, and that the
/// failed group is then avoided: later sends do not touch it.
#[tokio::test]
async fn busy_group_is_retried_elsewhere_and_avoided() {
    let busy = Scripted::answering(|req| {
        is_send(req).then(|| RemotingCommand::error(ResponseCode::SYSTEM_BUSY, "too busy"))
    })
    .await;
    let ok = leader().await;
    let ns = NameServer::start().await;
    ns.set_route(
        "T",
        route(
            &[
                ("broker-a", vec![busy.addr.clone()]),
                ("broker-b", vec![ok.addr.clone()]),
            ],
            2,
        ),
    );
    let producer = Producer::start(config(&ns)).await.unwrap();
    for _ in 0..8 {
        let r = producer.send(Message::new("T", "x")).await.unwrap();
        assert_eq!(r.queue.broker_name, "broker-b");
    }
    assert!(busy.count(RequestCode::SEND_MESSAGE) <= 1);
    assert_eq!(ok.count(RequestCode::SEND_MESSAGE), 8);

    // A non-retriable code is returned at once, with the broker's remark.
    let refuse = Scripted::answering(|req| {
        is_send(req).then(|| RemotingCommand::error(ResponseCode::MESSAGE_ILLEGAL, "bad message"))
    })
    .await;
    ns.set_route("U", route(&[("broker-c", vec![refuse.addr.clone()])], 1));
    let err = producer.send(Message::new("U", "x")).await.unwrap_err();
    match err {
        ClientError::Broker { code, remark, .. } => {
            assert_eq!(code, ResponseCode::MESSAGE_ILLEGAL as i32);
            assert_eq!(remark, "bad message");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(refuse.count(RequestCode::SEND_MESSAGE), 1);
    // No route at all.
    let err = producer.send(Message::new("Nope", "x")).await.unwrap_err();
    assert!(matches!(err, ClientError::NoRoute { .. }), "{err:?}");
}

/// Proves ordered sends land on queue hash(key) % n and stay on that queue when the
/// group fails once (the retry goes to the same group and queue, never the other).
#[tokio::test]
async fn ordered_send_keeps_its_queue_across_retries() {
    let failures = Arc::new(AtomicUsize::new(0));
    let f = failures.clone();
    let flaky = Scripted::answering(move |req| {
        is_send(req).then(|| {
            if f.fetch_add(1, Ordering::SeqCst) == 0 {
                RemotingCommand::error(ResponseCode::SYSTEM_ERROR, "hiccup")
            } else {
                send_ok(req, 1)
            }
        })
    })
    .await;
    let other = leader().await;
    let ns = NameServer::start().await;
    ns.set_route(
        "T",
        route(
            &[
                ("broker-a", vec![flaky.addr.clone()]),
                ("broker-b", vec![other.addr.clone()]),
            ],
            4,
        ),
    );
    let producer = Producer::start(config(&ns)).await.unwrap();
    let queues = producer.fetch_publish_queues("T").await.unwrap();
    // Find a key that maps to broker-a, queue 2 (index 2 of the sorted 8 queues).
    let key = (0..1000)
        .map(|i| format!("order-{i}"))
        .find(|k| client::producer::select_by_hash(&queues, k) == Some(&queues[2]))
        .unwrap();
    for _ in 0..3 {
        let r = producer
            .send_ordered(Message::new("T", "x"), &key)
            .await
            .unwrap();
        assert_eq!(
            (r.queue.broker_name.as_str(), r.queue.queue_id),
            ("broker-a", 2)
        );
    }
    assert_eq!(other.count(RequestCode::SEND_MESSAGE), 0);
    let sent = flaky.received(RequestCode::SEND_MESSAGE);
    assert_eq!(sent.len(), 4, "one failure, then three successes");
    assert!(sent.iter().all(|r| r.ext("queueId") == Some("2")));
}

/// Proves a batch goes as SEND_BATCH_MESSAGE with a body of BatchMessage encodings,
/// each with its own UNIQ_KEY, and that the result's msg_id lists them in order; also
/// that the V2 switch sends SEND_MESSAGE_V2 with the short header.
#[tokio::test]
async fn batch_and_v2_sends_use_rocketmq_encodings() {
    let leader = leader().await;
    let ns = NameServer::start().await;
    ns.set_route("T", route(&[("broker-a", vec![leader.addr.clone()])], 1));
    let mut cfg = config(&ns);
    cfg.use_send_message_v2 = true;
    let producer = Producer::start(cfg).await.unwrap();
    let msgs = vec![
        Message::new("T", "one").with_tags("a"),
        Message::new("T", "two").with_keys(["k"]),
    ];
    let r = producer.send_batch(msgs).await.unwrap();
    let sent = &leader.received(RequestCode::SEND_BATCH_MESSAGE)[0];
    assert_eq!(sent.ext("batch"), Some("true"));
    assert_eq!(sent.ext("b"), Some("T"), "V2 fields are carried too");
    let batch = decode_batch(&sent.body).unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[0].body, b"one");
    assert_eq!(property_value(batch[0].properties, "TAGS"), Some("a"));
    let ids: Vec<&str> = batch
        .iter()
        .map(|m| property_value(m.properties, "UNIQ_KEY").unwrap())
        .collect();
    assert_eq!(r.msg_id, ids.join(","));
    assert!(producer
        .send_batch(vec![Message::new("T", "x"), Message::new("U", "y")])
        .await
        .is_err());

    producer.send(Message::new("T", "v2")).await.unwrap();
    let v2 = &leader.received(RequestCode::SEND_MESSAGE_V2)[0];
    assert_eq!(v2.ext("b"), Some("T"));
    assert_eq!(v2.ext("a"), Some("pg"));
    assert!(property_value(v2.ext("i").unwrap(), "UNIQ_KEY").is_some());
    producer.shutdown().await;
}

/// Proves async, callback and oneway sends reach the broker, and oneway is sent with
/// the oneway flag.
#[tokio::test]
async fn async_callback_and_oneway_sends() {
    let leader = leader().await;
    let ns = NameServer::start().await;
    ns.set_route("T", route(&[("broker-a", vec![leader.addr.clone()])], 2));
    let producer = Producer::start(config(&ns)).await.unwrap();
    let handle = producer
        .send_async(Message::new("T", "async"))
        .await
        .unwrap();
    assert_eq!(handle.await.unwrap().status, SendStatus::SendOk);
    let (tx, rx) = tokio::sync::oneshot::channel();
    producer
        .send_with_callback(Message::new("T", "cb"), move |r| {
            let _ = tx.send(r.map(|r| r.queue_offset));
        })
        .await
        .unwrap();
    assert_eq!(rx.await.unwrap().unwrap(), 7);
    producer
        .send_oneway(Message::new("T", "oneway"))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(2), || leader
            .received(RequestCode::SEND_MESSAGE)
            .iter()
            .any(|r| r.is_oneway() && &r.body[..] == b"oneway"))
        .await
    );
    producer.shutdown().await;
    // Shut down: an async send is refused, not started.
    assert!(producer
        .send_async(Message::new("T", "late"))
        .await
        .is_err());
}

/// Proves each delay setter puts its RocketMQ property on the wire (DELAY,
/// TIMER_DELIVER_MS, TIMER_DELAY_MS, TIMER_DELAY_SEC), the last setter replacing the
/// others, and that nonsense (a negative level or time, two delays set by hand, a delayed
/// message in a batch) is refused with InvalidMessage before anything is sent.
#[tokio::test]
async fn delays_are_sent_as_rocketmq_properties_and_nonsense_is_refused() {
    let leader = leader().await;
    let ns = NameServer::start().await;
    ns.set_route("T", route(&[("broker-a", vec![leader.addr.clone()])], 1));
    let producer = Producer::start(config(&ns)).await.unwrap();
    let cases = [
        (
            Message::new("T", "a").with_delay_time_level(3),
            "DELAY",
            "3",
        ),
        (
            Message::new("T", "b")
                .with_delay_time_level(3)
                .with_deliver_time_ms(1_900_000_000_000),
            "TIMER_DELIVER_MS",
            "1900000000000",
        ),
        (
            Message::new("T", "c").with_delay_time_ms(1_500),
            "TIMER_DELAY_MS",
            "1500",
        ),
        (
            Message::new("T", "d").with_delay_time_sec(10),
            "TIMER_DELAY_SEC",
            "10",
        ),
    ];
    for (msg, name, value) in cases {
        producer.send(msg).await.unwrap();
        let sent = leader.received(RequestCode::SEND_MESSAGE);
        let props = sent.last().unwrap().ext("properties").unwrap();
        assert_eq!(property_value(props, name), Some(value), "{props:?}");
        let schedules = [
            "DELAY",
            "TIMER_DELIVER_MS",
            "TIMER_DELAY_MS",
            "TIMER_DELAY_SEC",
        ];
        let set: Vec<&str> = schedules
            .into_iter()
            .filter(|p| property_value(props, p).is_some())
            .collect();
        assert_eq!(set, [name], "one delay per message");
        assert_eq!(sent.last().unwrap().ext("reconsumeTimes"), Some("0"));
    }
    let sent_before = leader.count(RequestCode::SEND_MESSAGE);

    let refused = [
        Message::new("T", "x").with_delay_time_level(-1),
        Message::new("T", "x").with_deliver_time_ms(-5),
        Message::new("T", "x").with_delay_time_ms(-1),
        Message::new("T", "x").with_delay_time_sec(-1),
        Message::new("T", "x").with_property("DELAY", "soon"),
        Message::new("T", "x")
            .with_delay_time_level(2)
            .with_property("TIMER_DELAY_MS", "100"),
    ];
    for msg in refused {
        match producer.send(msg.clone()).await {
            Err(ClientError::InvalidMessage { reason, .. }) => {
                assert!(!reason.is_empty());
            }
            other => panic!("{msg:?} was not refused: {other:?}"),
        }
    }
    match producer
        .send(Message::new("T", "x").with_delay_time_level(-1))
        .await
    {
        Err(e) => assert!(e.to_string().contains("delay level"), "{e}"),
        Ok(_) => unreachable!(),
    }
    let batch = vec![
        Message::new("T", "1"),
        Message::new("T", "2").with_delay_time_ms(100),
    ];
    assert!(matches!(
        producer.send_batch(batch).await,
        Err(ClientError::InvalidMessage { .. })
    ));
    assert_eq!(leader.count(RequestCode::SEND_MESSAGE), sent_before);
    assert_eq!(leader.count(RequestCode::SEND_BATCH_MESSAGE), 0);
    producer.shutdown().await;
}
