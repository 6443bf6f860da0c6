//! The broker's Prometheus metrics: RocketMQ 5's names and labels where RocketMQ has the
//! figure (so its Grafana dashboards' queries match), `rocketraft_*` for what Raft adds.
//!
//! Owns: [`BrokerMetrics`], made once per process and kept across in-process restarts of
//! the node (so counters only grow), with the request-path counters ([`traffic`]) and a
//! weak handle to the running [`Broker`], which a scrape reads ([`scrape`]). Promises: the
//! request path pays one read-locked hash lookup and a few relaxed atomic adds per send or
//! pull request; everything else (Raft figures, consumer lag, connections, disk) is read
//! when Prometheus asks, in bounded time ([`scrape::LAG_MAX_QUEUES`]).
//!
//! Every series carries RocketMQ 5's constant labels `cluster` (`brokerClusterName`),
//! `node_type="broker"` and `node_id` (`brokerName`, as RocketMQ sets it), plus
//! `dledger_self_id` (`dLegerSelfId`), since the three members of a group share a
//! `brokerName`. The names exported, and RocketMQ's that are not, are listed in
//! `docs/METRICS.md`.

pub mod events;
pub mod scrape;
pub mod traffic;

use std::borrow::Cow;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, Weak};

use prometheus_client::registry::Registry;

use crate::broker::Broker;
use crate::config::BrokerConfig;
pub use traffic::MessageType;

/// One broker process's metrics.
#[derive(Debug)]
pub struct BrokerMetrics {
    pub traffic: traffic::Traffic,
    /// Dead letters, transaction ends and request latency ([`events`]).
    pub events: events::Events,
    /// Client connections the remoting listener holds (kept by `remoting::connection::serve`).
    pub(crate) connections: Arc<AtomicUsize>,
    /// The running node, while there is one.
    broker: Mutex<Weak<Broker>>,
    labels: Vec<(Cow<'static, str>, Cow<'static, str>)>,
}

impl BrokerMetrics {
    pub fn new(config: &BrokerConfig) -> Arc<Self> {
        let labels = [
            ("cluster", config.cluster_name.clone()),
            ("node_type", "broker".to_string()),
            ("node_id", config.broker_name.clone()),
            ("dledger_self_id", config.dledger_self_id.clone()),
        ];
        Arc::new(BrokerMetrics {
            traffic: Default::default(),
            events: Default::default(),
            connections: Arc::default(),
            broker: Mutex::new(Weak::new()),
            labels: labels
                .into_iter()
                .map(|(k, v)| (Cow::Borrowed(k), Cow::Owned(v)))
                .collect(),
        })
    }

    /// The node a scrape reads from now on (each start of the node in this process).
    pub(crate) fn attach(&self, broker: &Arc<Broker>) {
        *self.broker.lock().unwrap() = Arc::downgrade(broker);
    }

    pub(crate) fn broker(&self) -> Option<Arc<Broker>> {
        self.broker.lock().unwrap().upgrade()
    }

    /// Everything, in the Prometheus text format (version 0.0.4).
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::with_labels(self.labels.clone().into_iter());
        registry.register_collector(Box::new(scrape::Scrape(self.clone())));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a running node a scrape still writes the request counters, with RocketMQ 5's
    /// names, types and constant labels.
    #[test]
    fn render_writes_rocketmq_names_and_labels() {
        let metrics = BrokerMetrics::new(&BrokerConfig::default());
        metrics.traffic.record_in("A", MessageType::Delay, 2, 3000);
        metrics.traffic.record_out("A", "g", 2, 3000);
        let text = metrics.render();
        assert!(
            text.contains("# TYPE rocketmq_messages_in_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE rocketmq_message_size histogram\n"),
            "{text}"
        );
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{name}{{")))
                .unwrap_or_else(|| panic!("no {name} in {text}"))
                .to_string()
        };
        let messages_in = line("rocketmq_messages_in_total");
        for label in [
            "cluster=\"DefaultCluster\"",
            "node_type=\"broker\"",
            "node_id=\"broker-a\"",
            "topic=\"A\"",
            "message_type=\"delay\"",
            "is_system=\"false\"",
        ] {
            assert!(messages_in.contains(label), "{label} in {messages_in}");
        }
        assert!(messages_in.ends_with(" 2"), "{messages_in}");
        assert!(line("rocketmq_throughput_in_total").ends_with(" 3000"));
        assert!(line("rocketmq_message_size_count").ends_with(" 1"));
        let out = line("rocketmq_throughput_out_total");
        assert!(
            out.contains("consumer_group=\"g\"") && out.ends_with(" 3000"),
            "{out}"
        );
    }
}
