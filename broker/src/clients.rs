//! Clients known to this node from their heartbeats: consumer groups, their members and
//! subscriptions. Every node of a group tracks them (clients heartbeat to every member),
//! so rebalancing keeps working after a failover.
//!
//! When a group's membership changes, each of its clients gets
//! NOTIFY_CONSUMER_IDS_CHANGED (40, oneway) so it rebalances at once. Clients silent for
//! `client_expiry_ms`, or whose connection closes, are dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use remoting::admin_body::{ConnectionData, ConsumerConnection};
use remoting::header::ConsumerGroupRequestHeader;
use remoting::route::{HeartbeatData, SubscriptionData};
use remoting::{Connection, LanguageCode, RemotingCommand, RequestCode};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Refused joins, logged at most once every 10 s.
static GROUP_FULL: remoting::throttle::Throttle = remoting::throttle::Throttle::new(10_000);

/// What a client's heartbeat request says of the client itself (its header's `language`
/// and `version`), for the admin's connection lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientKind {
    pub language: LanguageCode,
    pub version: i32,
}

impl ClientKind {
    pub fn of(request: &RemotingCommand) -> Self {
        ClientKind {
            language: request.language,
            version: request.version,
        }
    }
}

/// One client connection as the admin's connection lists show it.
pub(crate) fn connection_data(
    client_id: &str,
    conn: &Connection,
    kind: ClientKind,
) -> ConnectionData {
    ConnectionData {
        client_id: client_id.to_string(),
        client_addr: conn.peer().to_string(),
        language: kind.language.name().to_string(),
        version: kind.version,
    }
}

struct Member {
    conn: Connection,
    kind: ClientKind,
    last_seen: Instant,
    subscriptions: Vec<SubscriptionData>,
}

#[derive(Default)]
struct Group {
    members: BTreeMap<String, Member>,
    /// From the newest heartbeat: `CONSUME_ACTIVELY`/`CONSUME_PASSIVELY`, `CLUSTERING`/
    /// `BROADCASTING`, and where a new consumer starts.
    consume_type: String,
    message_model: String,
    consume_from_where: String,
}

/// Consumer groups and their live members.
pub struct ClientManager {
    groups: Mutex<HashMap<String, Group>>,
    /// `maxClientsPerGroup`: each join notifies every member, so a group's size is bounded.
    max_per_group: usize,
    /// Producer groups (check-backs of transactional messages go to them).
    pub producers: crate::producers::ProducerTable,
}

impl ClientManager {
    pub fn new(max_per_group: usize) -> Self {
        ClientManager {
            groups: Mutex::default(),
            max_per_group: max_per_group.max(1),
            producers: Default::default(),
        }
    }

    /// Records a heartbeat; notifies groups whose membership changed. A consumer that
    /// would join a group holding `maxClientsPerGroup` members already is left out, and
    /// `Err` says which (the rest of the heartbeat is recorded).
    pub fn heartbeat(
        &self,
        conn: &Connection,
        kind: ClientKind,
        data: HeartbeatData,
    ) -> Result<(), String> {
        for producer in &data.producer_data_set {
            self.producers
                .heartbeat(conn, kind, &data.client_id, &producer.group_name);
        }
        let mut changed = Vec::new();
        let mut full = Vec::new();
        {
            let mut groups = self.groups.lock().unwrap();
            for consumer in data.consumer_data_set {
                if groups.get(&consumer.group_name).is_some_and(|g| {
                    g.members.len() >= self.max_per_group
                        && !g.members.contains_key(&data.client_id)
                }) {
                    full.push(consumer.group_name);
                    continue;
                }
                let group = groups.entry(consumer.group_name.clone()).or_default();
                group.consume_type = consumer.consume_type;
                group.message_model = consumer.message_model;
                group.consume_from_where = consumer.consume_from_where;
                let member = Member {
                    conn: conn.clone(),
                    kind,
                    last_seen: Instant::now(),
                    subscriptions: consumer.subscription_data_set,
                };
                let previous = group.members.insert(data.client_id.clone(), member);
                let is_new = match previous {
                    None => true,
                    Some(p) => p.conn.id() != conn.id(),
                };
                if is_new {
                    info!(consumer_group = %consumer.group_name, client_id = %data.client_id, "consumer joined");
                    changed.push(consumer.group_name);
                }
            }
        }
        for group in changed {
            self.notify(&group);
        }
        if full.is_empty() {
            return Ok(());
        }
        if let Some(left_out) = GROUP_FULL.admit() {
            warn!(client_id = %data.client_id, groups = ?full, max = self.max_per_group, left_out, "consumer refused: its group holds maxClientsPerGroup members");
        }
        Err(format!(
            "consumer {} not registered in {}: each holds maxClientsPerGroup={} clients",
            data.client_id,
            full.join(", "),
            self.max_per_group
        ))
    }

    pub fn unregister(&self, client_id: &str, consumer_group: Option<&str>) {
        let mut changed = Vec::new();
        {
            let mut groups = self.groups.lock().unwrap();
            for (name, group) in groups.iter_mut() {
                if consumer_group.is_some_and(|g| g != name) {
                    continue;
                }
                if group.members.remove(client_id).is_some() {
                    info!(consumer_group = %name, client_id, "consumer left");
                    changed.push(name.clone());
                }
            }
        }
        for group in changed {
            self.notify(&group);
        }
    }

    pub fn connection_closed(&self, conn: &Connection) {
        self.producers.connection_closed(conn);
        self.remove_where(|m| m.conn.id() == conn.id(), "connection closed");
    }

    /// Drops clients silent since before `deadline`.
    pub fn expire(&self, deadline: Instant) {
        self.producers.expire(deadline);
        self.remove_where(|m| m.last_seen < deadline, "expired");
    }

    fn remove_where(&self, doomed: impl Fn(&Member) -> bool, why: &str) {
        let mut changed = Vec::new();
        {
            let mut groups = self.groups.lock().unwrap();
            for (name, group) in groups.iter_mut() {
                let before = group.members.len();
                group.members.retain(|client_id, m| {
                    let drop = doomed(m);
                    if drop {
                        info!(consumer_group = %name, %client_id, why, "consumer dropped");
                    }
                    !drop
                });
                if group.members.len() != before {
                    changed.push(name.clone());
                }
            }
            groups.retain(|_, g| !g.members.is_empty());
        }
        for group in changed {
            self.notify(&group);
        }
    }

    /// The group's live client ids, sorted.
    pub fn consumer_ids(&self, group: &str) -> Vec<String> {
        self.groups
            .lock()
            .unwrap()
            .get(group)
            .map(|g| g.members.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Live members of each consumer group (metrics).
    pub fn member_counts(&self) -> Vec<(String, usize)> {
        let groups = self.groups.lock().unwrap();
        groups
            .iter()
            .map(|(name, g)| (name.clone(), g.members.len()))
            .collect()
    }

    /// A group's subscription to a topic, as its clients last reported it.
    pub fn subscription(&self, group: &str, topic: &str) -> Option<SubscriptionData> {
        let groups = self.groups.lock().unwrap();
        groups
            .get(group)?
            .members
            .values()
            .find_map(|m| m.subscriptions.iter().find(|s| s.topic == topic).cloned())
    }

    /// GET_CONSUMER_CONNECTION_LIST's answer: the group's live members and what they
    /// subscribe; `None` when no member is connected.
    pub fn consumer_connection(&self, group: &str) -> Option<ConsumerConnection> {
        let groups = self.groups.lock().unwrap();
        let g = groups.get(group)?;
        let mut subscription_table = BTreeMap::new();
        for member in g.members.values() {
            for s in &member.subscriptions {
                subscription_table.insert(s.topic.clone(), s.clone());
            }
        }
        let text = |s: &String| (!s.is_empty()).then(|| s.clone());
        Some(ConsumerConnection {
            connection_set: g
                .members
                .iter()
                .map(|(id, m)| connection_data(id, &m.conn, m.kind))
                .collect(),
            subscription_table,
            consume_type: text(&g.consume_type),
            message_model: text(&g.message_model),
            consume_from_where: text(&g.consume_from_where),
        })
    }

    /// The groups with a live member subscribed to `topic`.
    pub fn groups_subscribing(&self, topic: &str) -> BTreeSet<String> {
        let groups = self.groups.lock().unwrap();
        groups
            .iter()
            .filter(|(_, g)| {
                g.members
                    .values()
                    .any(|m| m.subscriptions.iter().any(|s| s.topic == topic))
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Whether any live member of `group` subscribes to anything.
    pub fn has_subscriptions(&self, group: &str) -> bool {
        let groups = self.groups.lock().unwrap();
        groups
            .get(group)
            .is_some_and(|g| g.members.values().any(|m| !m.subscriptions.is_empty()))
    }

    /// The connection and kind of member `client_id` of `group`, if it is live.
    pub fn consumer(&self, group: &str, client_id: &str) -> Option<(Connection, ClientKind)> {
        let groups = self.groups.lock().unwrap();
        let m = groups.get(group)?.members.get(client_id)?;
        Some((m.conn.clone(), m.kind))
    }

    /// Every live member of `group`: client id and connection.
    pub fn consumers(&self, group: &str) -> Vec<(String, Connection)> {
        let groups = self.groups.lock().unwrap();
        groups
            .get(group)
            .map(|g| {
                g.members
                    .iter()
                    .map(|(id, m)| (id.clone(), m.conn.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn notify(&self, group: &str) {
        let conns: Vec<Connection> = self
            .groups
            .lock()
            .unwrap()
            .get(group)
            .map(|g| g.members.values().map(|m| m.conn.clone()).collect())
            .unwrap_or_default();
        for conn in conns {
            let request = RemotingCommand::request(
                RequestCode::NOTIFY_CONSUMER_IDS_CHANGED,
                &ConsumerGroupRequestHeader {
                    consumer_group: group.to_string(),
                },
            );
            tokio::spawn(async move {
                if let Err(e) = conn.oneway(request).await {
                    debug!(peer = %conn.peer(), error = %e, "could not notify a consumer");
                }
            });
        }
    }
}
