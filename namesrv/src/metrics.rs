//! The name server's Prometheus metrics, read from the route table when Prometheus asks
//! (nothing is counted on the request path). None of RocketMQ 5's broker metrics apply to
//! a name server, so these are rocketraft's: the groups it routes, their members and
//! whether each has a leader, the topics it knows, and its connections.
//!
//! Every series carries RocketMQ 5's constant labels `node_type="nameserver"` and
//! `node_id` (the listen address).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use remoting::route::BrokerData;

use crate::route_table::RouteTable;

/// What a scrape of one name server reads.
#[derive(Debug, Clone)]
pub struct NamesrvMetrics {
    table: Arc<Mutex<RouteTable>>,
    /// Connections the remoting listener holds (kept by `remoting::connection::serve`).
    pub(crate) connections: Arc<AtomicUsize>,
    node_id: String,
}

impl NamesrvMetrics {
    pub(crate) fn new(table: Arc<Mutex<RouteTable>>, node_id: String) -> Self {
        NamesrvMetrics {
            table,
            connections: Arc::default(),
            node_id,
        }
    }

    /// Everything, in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let labels = [
            ("node_type", "nameserver".to_string()),
            ("node_id", self.node_id.clone()),
        ];
        let mut registry =
            Registry::with_labels(labels.into_iter().map(|(k, v)| (k.into(), v.into())));
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
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

impl Collector for NamesrvMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        // Copied out, so the table's lock is not held while the text is written.
        let (info, topics) = {
            let table = self.table.lock().unwrap();
            (table.cluster_info(), table.all_topics().topic_list.len())
        };
        gauge(
            &mut encoder,
            "rocketraft_namesrv_broker_groups",
            "Broker groups this name server routes to",
            info.broker_addr_table.len() as u64,
        )?;
        // One gauge a group, labelled by its cluster and name.
        let mut per_group = |name: &str, help: &str, value: &dyn Fn(&BrokerData) -> u64| {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (broker_name, data) in &info.broker_addr_table {
                let labels = [
                    ("cluster", data.cluster.as_str()),
                    ("broker_name", broker_name.as_str()),
                ];
                metric.encode_family(&labels)?.encode_gauge(&value(data))?;
            }
            Ok::<_, fmt::Error>(())
        };
        per_group(
            "rocketraft_namesrv_group_members",
            "Registered members of each broker group",
            &|data| data.broker_addrs.len() as u64,
        )?;
        per_group(
            "rocketraft_namesrv_group_has_leader",
            "1 if a member of the group is routed as its leader (brokerId 0), else 0",
            &|data| u64::from(data.broker_addrs.contains_key(&0)),
        )?;
        gauge(
            &mut encoder,
            "rocketraft_namesrv_topics",
            "Topics some registered broker group serves",
            topics as u64,
        )?;
        gauge(
            &mut encoder,
            "rocketraft_connections",
            "Connections the name server's remoting port holds",
            self.connections.load(Ordering::Relaxed) as u64,
        )
    }
}
