//! Producer groups and their live members, from heartbeats (`producerDataSet`): the
//! leader sends a transactional check-back (CHECK_TRANSACTION_STATE) on the connection
//! of a live producer of the half message's group ([`crate::transaction`]).
//!
//! A member is dropped when it unregisters, when its connection closes, or when it is
//! silent for `clientChannelExpiredTimeMs`, as RocketMQ's `ProducerManager` drops it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use remoting::admin_body::{ProducerConnection, ProducerInfo, ProducerTableInfo};
use remoting::Connection;
use tokio::time::Instant;
use tracing::info;

use crate::clients::{connection_data, ClientKind};

struct Member {
    conn: Connection,
    kind: ClientKind,
    last_seen: Instant,
    /// Wall-clock time of the last heartbeat (ms), for GET_ALL_PRODUCER_INFO.
    last_seen_ms: i64,
}

/// Producer groups: group → client id → its connection.
#[derive(Default)]
pub struct ProducerTable {
    groups: Mutex<HashMap<String, BTreeMap<String, Member>>>,
}

impl ProducerTable {
    /// Live producer clients, each counted once whatever its groups (metrics).
    pub fn member_count(&self) -> usize {
        let groups = self.groups.lock().unwrap();
        let clients: std::collections::HashSet<&str> = groups
            .values()
            .flat_map(|members| members.keys().map(String::as_str))
            .collect();
        clients.len()
    }

    /// Records that `client_id` on `conn` produces for `group`.
    pub fn heartbeat(&self, conn: &Connection, kind: ClientKind, client_id: &str, group: &str) {
        let mut groups = self.groups.lock().unwrap();
        let members = groups.entry(group.to_string()).or_default();
        let member = Member {
            conn: conn.clone(),
            kind,
            last_seen: Instant::now(),
            last_seen_ms: crate::processor::send::now_ms(),
        };
        if let Some(previous) = members.insert(client_id.to_string(), member) {
            if previous.conn.id() == conn.id() {
                return;
            }
        }
        info!(producer_group = %group, client_id, "producer joined");
    }

    /// Drops `client_id` from `group` (every group when `None`).
    pub fn unregister(&self, client_id: &str, group: Option<&str>) {
        let mut groups = self.groups.lock().unwrap();
        for (name, members) in groups.iter_mut() {
            if group.is_some_and(|g| g != name) {
                continue;
            }
            if members.remove(client_id).is_some() {
                info!(producer_group = %name, client_id, "producer left");
            }
        }
        groups.retain(|_, m| !m.is_empty());
    }

    pub fn connection_closed(&self, conn: &Connection) {
        self.remove_where(|m| m.conn.id() == conn.id(), "connection closed");
    }

    /// Drops producers silent since before `deadline`.
    pub fn expire(&self, deadline: Instant) {
        self.remove_where(|m| m.last_seen < deadline, "expired");
    }

    fn remove_where(&self, doomed: impl Fn(&Member) -> bool, why: &str) {
        let mut groups = self.groups.lock().unwrap();
        for (name, members) in groups.iter_mut() {
            members.retain(|client_id, m| {
                let drop = doomed(m);
                if drop {
                    info!(producer_group = %name, %client_id, why, "producer dropped");
                }
                !drop
            });
        }
        groups.retain(|_, m| !m.is_empty());
    }

    /// A live connection of a producer of `group`: the `pick`-th of its open ones
    /// (modulo their number), so successive check-backs spread over the group.
    pub fn connection(&self, group: &str, pick: usize) -> Option<Connection> {
        let groups = self.groups.lock().unwrap();
        let open: Vec<&Member> = groups
            .get(group)?
            .values()
            .filter(|m| !m.conn.is_closed())
            .collect();
        if open.is_empty() {
            return None;
        }
        Some(open[pick % open.len()].conn.clone())
    }

    /// The group's client ids, sorted.
    pub fn producer_ids(&self, group: &str) -> Vec<String> {
        self.groups
            .lock()
            .unwrap()
            .get(group)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// GET_PRODUCER_CONNECTION_LIST's answer; `None` when the group has no live member.
    pub fn producer_connection(&self, group: &str) -> Option<ProducerConnection> {
        let groups = self.groups.lock().unwrap();
        let members = groups.get(group)?;
        Some(ProducerConnection {
            connection_set: members
                .iter()
                .map(|(id, m)| connection_data(id, &m.conn, m.kind))
                .collect(),
        })
    }

    /// GET_ALL_PRODUCER_INFO's answer: every live producer, by group.
    pub fn all(&self) -> ProducerTableInfo {
        let groups = self.groups.lock().unwrap();
        let data = groups
            .iter()
            .map(|(group, members)| {
                let infos = members
                    .iter()
                    .map(|(id, m)| ProducerInfo {
                        client_id: id.clone(),
                        remote_ip: m.conn.peer().to_string(),
                        language: m.kind.language.name().to_string(),
                        version: m.kind.version,
                        last_update_timestamp: m.last_seen_ms,
                    })
                    .collect();
                (group.clone(), infos)
            })
            .collect();
        ProducerTableInfo { data }
    }
}
