//! Proves the Prometheus endpoints of a real name server and three-node group tell the
//! truth: after 20 sends and their consumption, the leader's RocketMQ 5 counters moved by
//! exactly what was sent and pulled (messages, record bytes, sizes), a stopped group's
//! lag counts exactly the messages sent after it stopped, followers counted none of it,
//! the Raft gauges agree with the group (one leader, the one routed; one term; a lag per
//! follower), every CommitLog flush was timed, every request was timed, dead letters and
//! transaction ends were counted, the name server sees the group and its
//! leader, nothing but `/metrics` is served, and every metric the shipped Grafana
//! dashboard queries is one the endpoints export.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{ConsumeStatus, Message, Producer, ProducerConfig, PushConsumer, PushConsumerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOPIC: &str = "MetricsT";
const GROUP: &str = "t48-group";
const FIRST: usize = 20;
const LATER: usize = 5;
const METRICS_CONF: &str = "metricsExporterType=PROM\nmetricsPromExporterPort=0\n";

/// One sample: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a Prometheus text exposition (label values without escapes, as ours are).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("value");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once("=\"").expect("label");
                (k.to_string(), v.trim_end_matches('"').to_string())
            })
            .collect();
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// The value of the one sample named `name` whose labels include `want` (0 if none).
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(found.len() <= 1, "{name} {want:?}: {found:?}");
    found.first().map_or(0.0, |s| s.value)
}

async fn http_get(addr: &str, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("answered in time")
        .unwrap();
    out
}

async fn scrape(addr: &str) -> Vec<Sample> {
    let answer = http_get(addr, "/metrics").await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("head");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    parse(body)
}

/// The metrics address a process printed in its log (`... metrics on http://ADDR/metrics`).
fn metrics_addr(log: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(|l| {
            l.split_once("metrics on http://")
                .and_then(|(_, rest)| rest.split_once("/metrics"))
                .map(|(addr, _)| addr.to_string())
        }) {
            return addr;
        }
        assert!(
            Instant::now() < deadline,
            "no metrics address in {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoints_count_what_happened_and_agree_with_the_group() {
    let cluster = common::Cluster::start_with(METRICS_CONF, None, METRICS_CONF);
    let leader_addr = cluster.wait_ready(Duration::from_secs(30)).await;
    let leader = cluster.node_index(&leader_addr);
    let namesrv_metrics = metrics_addr(&cluster.path().join("namesrv.log"));
    let node_metrics: Vec<String> = cluster.nodes.iter().map(|n| metrics_addr(&n.log)).collect();

    // Raft gauges agree with the group: one leader, the routed one; one term. A member on a
    // loaded machine may still be starting when the group is routable: wait (bounded) until
    // every member names the routed leader.
    let deadline = Instant::now() + Duration::from_secs(30);
    let before: Vec<Vec<Sample>> = loop {
        let all = futures::future::join_all(node_metrics.iter().map(|a| scrape(a))).await;
        let named = |s: &Vec<Sample>| value(s, "rocketraft_raft_leader_id", &[]);
        if all.iter().all(|s| named(s) == leader as f64) {
            break all;
        }
        let seen: Vec<f64> = all.iter().map(named).collect();
        assert!(Instant::now() < deadline, "leaders named: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let leaders: Vec<usize> = (0..3)
        .filter(|i| value(&before[*i], "rocketraft_raft_role", &[("role", "leader")]) == 1.0)
        .collect();
    assert_eq!(
        leaders,
        vec![leader],
        "exactly the routed leader says it leads"
    );
    let terms: BTreeSet<u64> = before
        .iter()
        .map(|s| value(s, "rocketraft_raft_term", &[]) as u64)
        .collect();
    assert_eq!(terms.len(), 1, "one term: {terms:?}");
    let term = *terms.iter().next().unwrap();
    assert!(term >= 1);
    for (i, s) in before.iter().enumerate() {
        assert_eq!(
            value(s, "rocketraft_raft_leader_id", &[]),
            leader as f64,
            "node {i}"
        );
        assert_eq!(
            value(s, "rocketraft_raft_elections_total", &[]),
            term as f64,
            "a fresh group's every term was one election (node {i})"
        );
        let common = [
            ("cluster", "TestCluster"),
            ("node_type", "broker"),
            ("node_id", common::GROUP),
        ];
        assert_eq!(
            value(s, "rocketraft_raft_term", &common),
            term as f64,
            "constant labels (node {i})"
        );
        let follower_series = s
            .iter()
            .filter(|x| x.name == "rocketraft_raft_replication_lag_entries")
            .count();
        assert_eq!(follower_series, if i == leader { 2 } else { 0 }, "node {i}");
    }

    // Traffic: 20 sends, then consumption by one push consumer.
    client::admin::create_topic(&cluster.namesrv(), TOPIC, 4, Duration::from_secs(5))
        .await
        .unwrap();
    let producer = Producer::start(ProducerConfig::new(&cluster.namesrv_addr, "t48-producers"))
        .await
        .unwrap();
    for i in 0..FIRST {
        producer
            .send(Message::new(
                TOPIC,
                format!("metrics body {i:03} {}", "x".repeat(i * 20)),
            ))
            .await
            .unwrap();
    }
    let consumed = Arc::new(AtomicUsize::new(0));
    let mut consumer = PushConsumer::new(PushConsumerConfig::new(&cluster.namesrv_addr, GROUP));
    consumer.subscribe(TOPIC, "*").unwrap();
    let seen = consumed.clone();
    consumer.register_message_listener(move |msgs| {
        seen.fetch_add(msgs.len(), Ordering::SeqCst);
        ConsumeStatus::ConsumeSuccess
    });
    consumer.start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumed.load(Ordering::SeqCst) < FIRST {
        assert!(
            Instant::now() < deadline,
            "consumed {consumed:?} of {FIRST}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = scrape(&node_metrics[leader]).await;
    assert_eq!(
        value(
            &during,
            "rocketmq_consumer_connections",
            &[("consumer_group", GROUP)]
        ),
        1.0
    );
    consumer.shutdown().await;

    let s = scrape(&node_metrics[leader]).await;
    let sent = [
        ("topic", TOPIC),
        ("message_type", "normal"),
        ("is_system", "false"),
    ];
    let pulled = [
        ("topic", TOPIC),
        ("consumer_group", GROUP),
        ("is_system", "false"),
    ];
    assert_eq!(value(&s, "rocketmq_messages_in_total", &sent), FIRST as f64);
    let bytes_in = value(&s, "rocketmq_throughput_in_total", &sent);
    // "metrics body 000 " is 17 bytes.
    let bodies: usize = (0..FIRST).map(|i| 17 + i * 20).sum();
    assert!(
        bytes_in > bodies as f64,
        "records are bodies and headers: {bytes_in}"
    );
    assert_eq!(
        value(&s, "rocketmq_message_size_count", &sent),
        FIRST as f64,
        "one per send"
    );
    assert_eq!(
        value(&s, "rocketmq_message_size_sum", &sent),
        bytes_in,
        "sizes add up"
    );
    assert_eq!(
        value(
            &s,
            "rocketmq_message_size_bucket",
            &[("topic", TOPIC), ("le", "1024")]
        ),
        value(
            &s,
            "rocketmq_message_size_bucket",
            &[("topic", TOPIC), ("le", "+Inf")]
        ),
        "every record (a body under 400 bytes) is under 1 KiB"
    );
    assert_eq!(
        value(&s, "rocketmq_messages_out_total", &pulled),
        FIRST as f64
    );
    assert_eq!(
        value(&s, "rocketmq_throughput_out_total", &pulled),
        bytes_in,
        "each stored record was pulled once, byte for byte"
    );
    // The Rust producer heartbeats its group, as Java's do.
    assert!(value(&s, "rocketmq_producer_connections", &[]) >= 1.0);
    // Every send was answered and timed: one rpc latency observation each.
    let sends: f64 = ["send_message", "send_message_v2"]
        .iter()
        .map(|code| {
            let labels = [
                ("protocol_type", "remoting"),
                ("request_code", *code),
                ("response_code", "success"),
                ("is_long_polling", "false"),
                ("result", "success"),
            ];
            value(&s, "rocketmq_rpc_latency_count", &labels)
        })
        .sum();
    assert_eq!(sends, FIRST as f64, "one rpc latency per send");
    assert!(value(&s, "rocketraft_connections", &[]) >= 1.0);
    assert!(
        value(&s, "rocketmq_topic_number", &[]) >= 2.0,
        "TBW102 and {TOPIC}"
    );
    assert!(value(&s, "rocketmq_storage_size", &[]) > 0.0);
    dead_letters_and_transactions_are_counted(&cluster, &node_metrics[leader]).await;
    for (i, addr) in node_metrics.iter().enumerate() {
        let s = scrape(addr).await;
        let fsyncs = value(&s, "rocketraft_commitlog_fsync_seconds_count", &[]);
        let before_fsyncs = value(&before[i], "rocketraft_commitlog_fsync_seconds_count", &[]);
        assert!(
            fsyncs > before_fsyncs,
            "node {i} timed its flushes: {before_fsyncs} -> {fsyncs}"
        );
        assert_eq!(
            value(
                &s,
                "rocketraft_commitlog_fsync_seconds_bucket",
                &[("le", "+Inf")]
            ),
            fsyncs
        );
        if i != leader {
            assert_eq!(
                value(&s, "rocketmq_messages_in_total", &sent),
                0.0,
                "node {i}"
            );
            assert!(
                !s.iter().any(|x| x.name == "rocketmq_consumer_lag_messages"),
                "node {i}"
            );
        }
    }

    // Lag: the stopped group has not consumed what is sent now.
    for i in 0..LATER {
        producer
            .send(Message::new(TOPIC, format!("later {i}")))
            .await
            .unwrap();
    }
    let lag_labels = [
        ("topic", TOPIC),
        ("consumer_group", GROUP),
        ("is_retry", "false"),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let all = loop {
        let s = scrape(&node_metrics[leader]).await;
        let lag = value(&s, "rocketmq_consumer_lag_messages", &lag_labels);
        if lag == LATER as f64 {
            break s;
        }
        assert!(Instant::now() < deadline, "lag {lag}, want {LATER}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        value(&all, "rocketmq_messages_in_total", &sent),
        (FIRST + LATER) as f64
    );
    producer.shutdown().await;

    // The name server routes the group and its leader.
    let ns = scrape(&namesrv_metrics).await;
    let group = [("broker_name", common::GROUP), ("node_type", "nameserver")];
    assert_eq!(value(&ns, "rocketraft_namesrv_group_members", &group), 3.0);
    assert_eq!(
        value(&ns, "rocketraft_namesrv_group_has_leader", &group),
        1.0
    );
    assert!(value(&ns, "rocketraft_namesrv_topics", &[]) >= 2.0);

    // Only /metrics.
    for addr in [&namesrv_metrics, &node_metrics[leader]] {
        assert!(http_get(addr, "/").await.starts_with("HTTP/1.1 404 "));
        assert!(http_get(addr, "/metrics/x")
            .await
            .starts_with("HTTP/1.1 404 "));
    }

    // Every metric the dashboard queries is exported by some endpoint.
    let mut exported: BTreeSet<String> = ns.iter().map(|s| s.name.clone()).collect();
    for addr in &node_metrics {
        exported.extend(scrape(addr).await.into_iter().map(|s| s.name));
    }
    exported.extend(all.into_iter().map(|s| s.name));
    exported.extend(during.into_iter().map(|s| s.name));
    let queried = dashboard_metric_names();
    assert!(queried.len() >= 10, "the dashboard queries {queried:?}");
    let missing: Vec<&String> = queried.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?}");
}

/// Metric names in every query of docs/grafana/rocketraft.json (targets' `expr`, template
/// variables' `query`), which must parse as JSON.
/// Scrapes `addr` until `done` holds of the samples (bounded).
async fn scrape_until(addr: &str, what: &str, done: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = scrape(addr).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never counted: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A consumer that refuses every message, with no retries left, sends each to its
/// dead-letter topic: `rocketmq_send_to_dlq_messages_total` counts each once. Transactions
/// committed and rolled back count in `rocketmq_commit_messages_total` /
/// `rocketmq_rollback_messages_total`, each commit's age in
/// `rocketmq_finish_message_latency`; END_TRANSACTION is timed as a oneway request.
async fn dead_letters_and_transactions_are_counted(cluster: &common::Cluster, leader: &str) {
    let mut config = PushConsumerConfig::new(&cluster.namesrv_addr, "t48-dlq");
    config.consume_from_where = client::ConsumeFromWhere::FirstOffset;
    config.max_reconsume_times = 0;
    let mut refusing = PushConsumer::new(config);
    refusing.subscribe(TOPIC, "*").unwrap();
    refusing.register_message_listener(|_| ConsumeStatus::ReconsumeLater);
    refusing.start().await.unwrap();
    let dlq = [
        ("consumer_group", "t48-dlq"),
        ("topic", TOPIC),
        ("is_system", "false"),
    ];
    scrape_until(leader, "dead letters", |s| {
        value(s, "rocketmq_send_to_dlq_messages_total", &dlq) == FIRST as f64
    })
    .await;
    refusing.shutdown().await;

    // A topic of their own: the lag checked later counts TOPIC's messages exactly.
    const TXN_TOPIC: &str = "MetricsTxn";
    client::admin::create_topic(&cluster.namesrv(), TXN_TOPIC, 1, Duration::from_secs(5))
        .await
        .unwrap();
    let producer = client::TransactionProducer::start(
        ProducerConfig::new(&cluster.namesrv_addr, "t48-txn"),
        Arc::new(|_: &client::MessageExt| client::LocalTransactionState::CommitMessage),
    )
    .await
    .unwrap();
    for (i, state) in [
        client::LocalTransactionState::CommitMessage,
        client::LocalTransactionState::CommitMessage,
        client::LocalTransactionState::RollbackMessage,
    ]
    .into_iter()
    .enumerate()
    {
        producer
            .send_message_in_transaction(Message::new(TXN_TOPIC, format!("txn {i}")), |_, _| state)
            .await
            .unwrap();
    }
    let topic = [("topic", TXN_TOPIC)];
    let s = scrape_until(leader, "transaction ends", |s| {
        value(s, "rocketmq_commit_messages_total", &topic) == 2.0
            && value(s, "rocketmq_rollback_messages_total", &topic) == 1.0
    })
    .await;
    assert_eq!(
        value(&s, "rocketmq_finish_message_latency_count", &topic),
        2.0
    );
    let ends = [
        ("request_code", "end_transaction"),
        ("response_code", "success"),
        ("result", "oneway"),
    ];
    assert_eq!(value(&s, "rocketmq_rpc_latency_count", &ends), 3.0);
    producer.shutdown().await;
}

fn dashboard_metric_names() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana/rocketraft.json");
    let text = std::fs::read_to_string(path).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("rocket") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            if name.starts_with("rocketmq_") || name.starts_with("rocketraft_") {
                names.insert(name.to_string());
            }
            rest = &tail[end..];
        }
    }
    names
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}
