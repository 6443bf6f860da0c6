//! What a scrape reads and how it is written: the request-path counters, then, while the
//! node runs, its Raft figures (`DLedgerNode::raft_status`, from openraft's metrics watch),
//! consumer lag, connections, held pulls and disk use.
//!
//! Consumer lag (`rocketmq_consumer_lag_messages`, leader only, since the leader is where
//! consumers commit and the figure would otherwise be counted once per replica): for at
//! most [`LAG_MAX_QUEUES`] (group, topic, queue) offsets, the queue's max offset minus the
//! group's offset, summed per group and topic. Each costs a lookup in the offsets and queue
//! tables, so a scrape's lag work is bounded by that number whatever the broker holds;
//! offsets past it are left out and counted in `rocketraft_consumer_lag_queues_skipped`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dledger::{RaftStatus, Role};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use remoting::histogram::HistogramSnapshot;
use remoting::{RequestCode, ResponseCode};

use super::traffic::{MessageType, OVERFLOW_TOPIC};
use super::{events, BrokerMetrics};
use crate::broker::Broker;

/// (group, topic, queue) offsets a scrape reads at most for consumer lag.
pub const LAG_MAX_QUEUES: usize = 10_000;

/// The collector registered for one scrape.
#[derive(Debug)]
pub(super) struct Scrape(pub(super) Arc<BrokerMetrics>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        traffic(&self.0, &mut encoder)?;
        events(&self.0.events, &mut encoder)?;
        let connections = self.0.connections.load(Ordering::Relaxed);
        gauge(
            &mut encoder,
            "rocketraft_connections",
            "Client connections the broker's remoting port holds",
            connections as u64,
        )?;
        if let Some(broker) = self.0.broker() {
            node(&broker, &mut encoder)?;
        }
        Ok(())
    }
}

fn bool_label(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        metric.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

fn counter(metric: &mut MetricEncoder, labels: &impl EncodeLabelSet, value: u64) -> fmt::Result {
    metric
        .encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// One counter family: a row per label set.
fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        counter(&mut metric, &labels, value)?;
    }
    Ok(())
}

/// A histogram recorded in some unit, as (sum, count, buckets) in base units (`scale` base
/// units per recorded unit), the overflow as the `+Inf` bucket.
fn scaled(snapshot: &HistogramSnapshot, scale: f64) -> (f64, u64, Vec<(f64, u64)>) {
    let mut buckets: Vec<(f64, u64)> = snapshot
        .bounds
        .iter()
        .zip(&snapshot.counts)
        .map(|(bound, count)| (*bound as f64 * scale, *count))
        .collect();
    buckets.push((f64::INFINITY, *snapshot.counts.last().unwrap_or(&0)));
    (snapshot.sum as f64 * scale, snapshot.count(), buckets)
}

fn histogram(
    metric: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    snapshot: &HistogramSnapshot,
    scale: f64,
) -> fmt::Result {
    let (sum, count, buckets) = scaled(snapshot, scale);
    metric
        .encode_family(labels)?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

fn is_system(topic: &str, group: Option<&str>) -> bool {
    remoting::names::is_system_topic(topic)
        || group.is_some_and(|g| g.to_ascii_uppercase().starts_with("CID_RMQ_SYS_"))
}

/// RocketMQ 5's request metrics, from the request-path counters.
fn traffic(metrics: &BrokerMetrics, encoder: &mut DescriptorEncoder) -> fmt::Result {
    let mut incoming = metrics.traffic.incoming();
    incoming.sort_by(|a, b| a.0.cmp(&b.0));
    let rows = || {
        incoming.iter().flat_map(|(topic, by_type)| {
            MessageType::ALL.into_iter().filter_map(move |kind| {
                let c = &by_type[kind as usize];
                let system = topic != OVERFLOW_TOPIC && is_system(topic, None);
                let labels = [
                    ("topic", topic.as_str()),
                    ("message_type", kind.label()),
                    ("is_system", bool_label(system)),
                ];
                (c.messages.load(Ordering::Relaxed) > 0).then_some((labels, c))
            })
        })
    };
    counters(
        encoder,
        "rocketmq_messages_in",
        "Messages stored by sends (RocketMQ 5's name), by topic and message type",
        rows().map(|(labels, c)| (labels, c.messages.load(Ordering::Relaxed))),
    )?;
    counters(
        encoder,
        "rocketmq_throughput_in",
        "Bytes of CommitLog records stored by sends (RocketMQ 5's name)",
        rows().map(|(labels, c)| (labels, c.bytes.load(Ordering::Relaxed))),
    )?;
    let mut m = encoder.encode_descriptor(
        "rocketmq_message_size",
        "Record bytes per message of each send request (RocketMQ 5's name and buckets)",
        None,
        MetricType::Histogram,
    )?;
    for (labels, c) in rows() {
        histogram(&mut m, &labels, &c.size.snapshot(), 1.0)?;
    }

    let mut outgoing = metrics.traffic.outgoing();
    outgoing.sort_by(|a, b| a.0.cmp(&b.0));
    let rows = || {
        outgoing.iter().map(|((topic, group), c)| {
            let system = topic != OVERFLOW_TOPIC && is_system(topic, Some(group));
            let labels = [
                ("topic", topic.as_str()),
                ("consumer_group", group.as_str()),
                ("is_system", bool_label(system)),
            ];
            (labels, c)
        })
    };
    counters(
        encoder,
        "rocketmq_messages_out",
        "Messages answered to pulls (RocketMQ 5's name), by topic and consumer group",
        rows().map(|(labels, c)| (labels, c.messages.load(Ordering::Relaxed))),
    )?;
    counters(
        encoder,
        "rocketmq_throughput_out",
        "Bytes of records answered to pulls (RocketMQ 5's name)",
        rows().map(|(labels, c)| (labels, c.bytes.load(Ordering::Relaxed))),
    )
}

/// A request or response code as RocketMQ 5's label spells it: its name in lower case,
/// else its number.
fn code_label<C: Copy>(
    code: i32,
    from: fn(i32) -> Option<C>,
    name: fn(C) -> &'static str,
) -> String {
    if code == events::OVERFLOW_CODE {
        return "overflow".to_string();
    }
    from(code).map_or_else(|| code.to_string(), |c| name(c).to_ascii_lowercase())
}

/// Dead letters, transaction ends and request latency.
fn events(events: &events::Events, encoder: &mut DescriptorEncoder) -> fmt::Result {
    let mut dead_letters = events.dead_letters.snapshot();
    dead_letters.sort_by(|a, b| a.0.cmp(&b.0));
    counters(
        encoder,
        "rocketmq_send_to_dlq_messages",
        "Messages moved to a dead-letter topic (RocketMQ 5's name), by consumer group and topic",
        dead_letters.iter().map(|((group, topic), c)| {
            let system = topic != OVERFLOW_TOPIC && is_system(topic, Some(group));
            let labels = [
                ("consumer_group", group.as_str()),
                ("topic", topic.as_str()),
                ("is_system", bool_label(system)),
            ];
            (labels, c.load(Ordering::Relaxed))
        }),
    )?;
    for (name, help, series) in [
        (
            "rocketmq_commit_messages",
            "Half messages committed (RocketMQ 5's name), by real topic",
            &events.commits,
        ),
        (
            "rocketmq_rollback_messages",
            "Half messages rolled back (RocketMQ 5's name), by real topic",
            &events.rollbacks,
        ),
    ] {
        let mut rows = series.snapshot();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        counters(
            encoder,
            name,
            help,
            rows.iter()
                .map(|(topic, c)| ([("topic", topic.as_str())], c.load(Ordering::Relaxed))),
        )?;
    }
    let mut latency = events.finish_latency.snapshot();
    latency.sort_by(|a, b| a.0.cmp(&b.0));
    let mut m = encoder.encode_descriptor(
        "rocketmq_finish_message_latency",
        "Age of each committed half message in seconds, born to commit (RocketMQ 5's name and buckets)",
        None,
        MetricType::Histogram,
    )?;
    for (topic, h) in &latency {
        histogram(&mut m, &[("topic", topic.as_str())], &h.snapshot(), 1.0)?;
    }
    let mut rpcs = events.rpc.snapshot();
    rpcs.sort_by_key(|a| a.0);
    let mut m = encoder.encode_descriptor(
        "rocketmq_rpc_latency",
        "Milliseconds from a request's arrival to its answer (RocketMQ 5's name and buckets)",
        None,
        MetricType::Histogram,
    )?;
    for (rpc, h) in &rpcs {
        let request = code_label(rpc.request_code, RequestCode::from_i32, RequestCode::name);
        let response = code_label(
            rpc.response_code,
            ResponseCode::from_i32,
            ResponseCode::name,
        );
        let labels = [
            ("protocol_type", "remoting"),
            ("request_code", request.as_str()),
            ("response_code", response.as_str()),
            ("is_long_polling", bool_label(rpc.long_polling)),
            ("result", if rpc.oneway { "oneway" } else { "success" }),
        ];
        histogram(&mut m, &labels, &h.snapshot(), 1.0)?;
    }
    Ok(())
}

/// Figures of the running node.
fn node(broker: &Broker, encoder: &mut DescriptorEncoder) -> fmt::Result {
    let status = broker.node().raft_status();
    raft(&status, encoder)?;
    storage(broker, &status, encoder)?;
    gauge(
        encoder,
        "rocketraft_held_pulls",
        "Pulls held by long polling now",
        broker.held_pulls().total() as u64,
    )?;
    gauge(
        encoder,
        "rocketmq_topic_number",
        "Topics this node knows (RocketMQ 5's name)",
        broker.topic_count() as u64,
    )?;
    gauge(
        encoder,
        "rocketmq_consumer_group_number",
        "Subscription groups this node knows (RocketMQ 5's name)",
        broker.subscription_group_count() as u64,
    )?;
    clients(broker, encoder)?;
    if status.role == Role::Leader {
        consumer_lag(broker, encoder)?;
    }
    Ok(())
}

fn role_label(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::Learner => "learner",
        Role::Shutdown => "shutdown",
    }
}

fn raft(s: &RaftStatus, encoder: &mut DescriptorEncoder) -> fmt::Result {
    gauge(encoder, "rocketraft_raft_term", "Current Raft term", s.term)?;
    let roles = [
        Role::Leader,
        Role::Follower,
        Role::Candidate,
        Role::Learner,
        Role::Shutdown,
    ];
    gauges(
        encoder,
        "rocketraft_raft_role",
        "1 for this node's current Raft role, 0 for the others",
        roles
            .into_iter()
            .map(|r| ([("role", role_label(r))], u64::from(r == s.role))),
    )?;
    gauge(
        encoder,
        "rocketraft_raft_leader_id",
        "Node id of the leader this node knows (-1: none)",
        s.leader_id.map_or(-1, |id| id as i64),
    )?;
    let mut m = encoder.encode_descriptor(
        "rocketraft_raft_elections",
        "Terms begun since this node started: one per election, won or not",
        None,
        MetricType::Counter,
    )?;
    m.encode_counter::<NoLabelSet, _, u64>(&s.elections, None)?;
    for (name, help, value) in [
        (
            "rocketraft_raft_last_log_index",
            "Index of the last entry in this node's log",
            s.last_log_index,
        ),
        (
            "rocketraft_raft_commit_index",
            "Index of the last entry this node knows committed",
            s.commit_index,
        ),
        (
            "rocketraft_raft_applied_index",
            "Index of the last entry applied on this node",
            s.applied_index,
        ),
        (
            "rocketraft_commitlog_written_position_bytes",
            "CommitLog position past the last byte written",
            s.written_position,
        ),
        (
            "rocketraft_commitlog_committed_position_bytes",
            "CommitLog position past the last committed byte",
            s.committed_position,
        ),
        (
            "rocketraft_commitlog_applied_position_bytes",
            "CommitLog position past the last applied byte",
            s.applied_position,
        ),
    ] {
        gauge(encoder, name, help, value)?;
    }
    let followers = || {
        s.followers
            .iter()
            .map(|f| [("follower", format!("n{}", f.node_id))])
    };
    gauges(
        encoder,
        "rocketraft_raft_replication_lag_entries",
        "On the leader: entries of its log each other member lacks",
        followers().zip(s.followers.iter().map(|f| f.lag_entries)),
    )?;
    gauges(
        encoder,
        "rocketraft_raft_replication_matched_index",
        "On the leader: the last index each other member holds (-1: none yet)",
        followers().zip(
            s.followers
                .iter()
                .map(|f| f.matched_index.map_or(-1, |i| i as i64)),
        ),
    )?;
    let mut m = encoder.encode_descriptor(
        "rocketraft_commitlog_fsync_seconds",
        "Time of each CommitLog flush (msync of the dirty bytes) by the flush thread",
        None,
        MetricType::Histogram,
    )?;
    let (sum, count, buckets) = scaled(&s.flush_latency_us, 1e-6);
    m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

fn storage(broker: &Broker, s: &RaftStatus, encoder: &mut DescriptorEncoder) -> fmt::Result {
    let segment_bytes: u64 = broker
        .segments()
        .iter()
        .map(|f| f.end_position - f.start_position)
        .sum();
    gauge(
        encoder,
        "rocketmq_storage_size",
        "Bytes of this node's CommitLog segment files (RocketMQ 5's name)",
        segment_bytes,
    )?;
    gauge(
        encoder,
        "rocketmq_storage_dispatch_behind_bytes",
        "CommitLog bytes committed but not yet applied to the ConsumeQueues (RocketMQ 5's name)",
        s.committed_position.saturating_sub(s.applied_position),
    )?;
    gauge(
        encoder,
        "rocketraft_disk_used_ratio",
        "Used share of the store's filesystem (0 to 1), as the disk-full check reads it",
        broker.disk().used_percent() / 100.0,
    )
}

fn clients(broker: &Broker, encoder: &mut DescriptorEncoder) -> fmt::Result {
    let producers = broker.clients().producers.member_count();
    gauges(
        encoder,
        "rocketmq_producer_connections",
        "Live producer clients known from heartbeats (RocketMQ 5's name)",
        [([("protocol_type", "remoting")], producers as u64)],
    )?;
    let consumers = broker.clients().member_counts();
    gauges(
        encoder,
        "rocketmq_consumer_connections",
        "Live consumer clients known from heartbeats, by group (RocketMQ 5's name)",
        consumers.iter().map(|(group, n)| {
            let system = bool_label(is_system("", Some(group)));
            let labels = [
                ("consumer_group", group.as_str()),
                ("protocol_type", "remoting"),
                ("is_system", system),
            ];
            (labels, *n as u64)
        }),
    )
}

fn consumer_lag(broker: &Broker, encoder: &mut DescriptorEncoder) -> fmt::Result {
    let (offsets, skipped) = broker.consumer_offsets(LAG_MAX_QUEUES);
    let mut lag: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for ((group, topic, queue_id), offset) in &offsets {
        let (_, max) = broker.queue_bounds(topic, *queue_id);
        let behind = max.saturating_sub((*offset).max(0) as u64);
        *lag.entry((group.as_str(), topic.as_str())).or_default() += behind;
    }
    gauges(
        encoder,
        "rocketmq_consumer_lag_messages",
        "Messages each group has yet to consume of a topic: queue max offsets minus the group's offsets (RocketMQ 5's name; leader only)",
        lag.iter().map(|((group, topic), behind)| {
            let labels = [
                ("topic", *topic),
                ("consumer_group", *group),
                ("is_retry", bool_label(topic.starts_with("%RETRY%"))),
                ("is_system", bool_label(is_system(topic, Some(group)))),
            ];
            (labels, *behind)
        }),
    )?;
    gauge(
        encoder,
        "rocketraft_consumer_lag_queues_skipped",
        "Consumer offsets left out of this scrape's lag (over the bound per scrape)",
        skipped as u64,
    )
}
