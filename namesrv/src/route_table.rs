//! The route table: broker groups, their members, and the topics they serve.
//!
//! Leader tracking by term (invariant 6): in each group (`brokerName`) the registered
//! member with the newest term that says it leads is brokerId 0; the others get 1, 2, ...
//! in address order. A claim of leadership with a term older than another registered
//! member's claim is routed as a follower, so a paused ex-leader that wakes up is never
//! brokerId 0 while the leader that replaced it is registered.
//!
//! Fencing follows live members only: a claim fences older claims while its claimant is
//! registered, and when that member goes (unregistered, its connection closed, expired),
//! the best claim among those still registered leads again. A term remembered after its
//! claimant left would let one wrong or forged claim (`raftTerm` i64::MAX from an address
//! that then disconnects) fence the real leader until the name server restarts.
//! Follower terms do not count: a partitioned follower that keeps raising its term must
//! not take the route away from a leader that still has a quorum.

use std::collections::{BTreeMap, BTreeSet};

use remoting::route::{
    perm, BrokerData, ClusterInfo, DataVersion, QueueData, TopicConfig, TopicList, TopicRouteData,
};
use tokio::time::Instant;
use tracing::info;

/// One registration, as the handler has decoded it.
#[derive(Debug, Clone)]
pub struct Registration {
    pub cluster: String,
    pub broker_name: String,
    pub broker_addr: String,
    /// 0 means "I lead in `term`".
    pub broker_id: i64,
    pub term: u64,
    pub data_version: DataVersion,
    /// `None` when the body was left out because the version did not change.
    pub topics: Option<BTreeMap<String, TopicConfig>>,
    pub connection_id: Option<u64>,
}

#[derive(Debug, Clone)]
struct Member {
    /// It registered as brokerId 0: "I lead in `term`". Whether it is routed as the
    /// leader is decided against the other members' claims in [`Group::elect`].
    claims_leadership: bool,
    term: u64,
    data_version: DataVersion,
    last_seen: Instant,
    connection_id: Option<u64>,
}

#[derive(Debug, Default)]
struct Group {
    cluster: String,
    members: BTreeMap<String, Member>,
    /// The member that is brokerId 0, if any.
    leader: Option<String>,
    topics: BTreeMap<String, TopicConfig>,
    /// When the last member left; its queues stay in routes (with no address) for one
    /// expiry period, so ordered sends keep their queue instead of re-hashing onto
    /// another group's while a whole group restarts.
    emptied_at: Option<Instant>,
    /// WIPE_WRITE_PERM_OF_BROKER: routes show the group's queues without write permission
    /// until ADD_WRITE_PERM_OF_BROKER (whatever the group registers meanwhile).
    write_wiped: bool,
    /// Topics deleted here (DELETE_TOPIC_IN_NAMESRV) with the data version their table had
    /// then: a registration of that same version does not bring them back.
    deleted: BTreeMap<String, i64>,
}

impl Group {
    /// A topic's permission as routes show it.
    fn routed_perm(&self, config: &TopicConfig) -> i32 {
        if self.write_wiped {
            config.perm & !perm::WRITE
        } else {
            config.perm
        }
    }
}

impl Group {
    /// The newest term any registered member claims to lead in, except `except`'s claim.
    fn newest_claim(&self, except: Option<&str>) -> Option<u64> {
        self.members
            .iter()
            .filter(|(addr, m)| m.claims_leadership && except != Some(addr.as_str()))
            .map(|(_, m)| m.term)
            .max()
    }

    fn elect(&mut self, broker_name: &str) {
        let newest = self.newest_claim(None);
        let leader = self
            .members
            .iter()
            .filter(|(_, m)| m.claims_leadership && Some(m.term) == newest)
            .max_by_key(|(_, m)| m.last_seen)
            .map(|(addr, _)| addr.clone());
        if leader != self.leader {
            info!(
                broker_name,
                term = newest.unwrap_or(0),
                leader = leader.as_deref().unwrap_or("none"),
                "route leader changed"
            );
            self.leader = leader;
        }
    }

    fn broker_addrs(&self) -> BTreeMap<i64, String> {
        let mut addrs = BTreeMap::new();
        let mut next_id = 1;
        for addr in self.members.keys() {
            if self.leader.as_deref() == Some(addr) {
                addrs.insert(0, addr.clone());
            } else {
                addrs.insert(next_id, addr.clone());
                next_id += 1;
            }
        }
        addrs
    }

    fn broker_data(&self, broker_name: &str) -> BrokerData {
        BrokerData {
            cluster: self.cluster.clone(),
            broker_name: broker_name.to_string(),
            broker_addrs: self.broker_addrs(),
            enable_acting_master: false,
        }
    }
}

/// What a registration changed, for the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterOutcome {
    /// The group's leader after this registration, if any.
    pub leader_addr: Option<String>,
    /// True if this member claims to lead in a term older than another registered
    /// member's claim, so it is routed as a follower.
    pub stale_claim: bool,
}

/// All groups and topics one name server knows.
#[derive(Debug, Default)]
pub struct RouteTable {
    groups: BTreeMap<String, Group>,
}

impl RouteTable {
    pub fn register(&mut self, reg: Registration, now: Instant) -> RegisterOutcome {
        let group = self.groups.entry(reg.broker_name.clone()).or_default();
        group.cluster = reg.cluster;
        group.emptied_at = None;
        let claims = reg.broker_id == 0;
        let stale_claim = claims
            && group
                .newest_claim(Some(&reg.broker_addr))
                .is_some_and(|t| reg.term < t);
        let member = Member {
            claims_leadership: claims,
            term: reg.term,
            data_version: reg.data_version,
            last_seen: now,
            connection_id: reg.connection_id,
        };
        if group
            .members
            .insert(reg.broker_addr.clone(), member)
            .is_none()
        {
            info!(
                broker_name = %reg.broker_name,
                broker_addr = %reg.broker_addr,
                term = reg.term,
                "broker registered"
            );
        }
        if stale_claim {
            info!(
                broker_name = %reg.broker_name,
                broker_addr = %reg.broker_addr,
                term = reg.term,
                newest_claim = group.newest_claim(Some(&reg.broker_addr)).unwrap_or(0),
                "stale leadership claim routed as a follower"
            );
        }
        if let Some(topics) = reg.topics {
            // Every member holds the same Raft-replicated topic table, its version counted
            // at apply, so a lagging member sends an older one: take a table only if no
            // other member holds a newer one. (Taking the last one received let a
            // follower that had not yet applied TBW102 erase it, right after an election,
            // until the next periodic registration 30 s later.)
            let newest_other = group
                .members
                .iter()
                .filter(|(addr, _)| **addr != reg.broker_addr)
                .map(|(_, m)| m.data_version.counter)
                .max();
            if newest_other.is_none_or(|other| reg.data_version.counter >= other) {
                group.topics = topics;
                let counter = reg.data_version.counter;
                group.deleted.retain(|_, at| *at >= counter);
                let deleted = &group.deleted;
                group.topics.retain(|t, _| !deleted.contains_key(t));
            }
        }
        group.elect(&reg.broker_name);
        RegisterOutcome {
            leader_addr: group.leader.clone(),
            stale_claim,
        }
    }

    /// Answers QUERY_DATA_VERSION: true when the broker must send its topic table, or
    /// re-register because its role or term is not what we hold. Refreshes liveness.
    pub fn query_data_version(
        &mut self,
        broker_name: &str,
        broker_addr: &str,
        broker_id: i64,
        term: u64,
        version: &DataVersion,
        now: Instant,
    ) -> bool {
        let Some(group) = self.groups.get_mut(broker_name) else {
            return true;
        };
        let Some(member) = group.members.get_mut(broker_addr) else {
            return true;
        };
        member.last_seen = now;
        let claims = broker_id == 0;
        member.data_version != *version || member.term != term || member.claims_leadership != claims
    }

    pub fn unregister(&mut self, broker_name: &str, broker_addr: &str) -> bool {
        self.remove_where(
            Instant::now(),
            |name, addr, _| name == broker_name && addr == broker_addr,
            "unregistered",
        )
    }

    /// Drops every member registered over a connection that has closed.
    pub fn connection_closed(&mut self, connection_id: u64) -> bool {
        self.remove_where(
            Instant::now(),
            |_, _, m| m.connection_id == Some(connection_id),
            "connection closed",
        )
    }

    /// Drops every member silent for `expiry`, and the queues of groups that have had
    /// no member for that long.
    pub fn expire(&mut self, now: Instant, expiry: std::time::Duration) -> bool {
        let Some(deadline) = now.checked_sub(expiry) else {
            return false;
        };
        let removed = self.remove_where(now, |_, _, m| m.last_seen < deadline, "expired");
        for (name, group) in self.groups.iter_mut() {
            if group.emptied_at.is_some_and(|t| t < deadline) && !group.topics.is_empty() {
                info!(broker_name = %name, "group gone for a whole expiry period: its queues leave the routes");
                group.topics.clear();
            }
        }
        removed
    }

    fn remove_where(
        &mut self,
        now: Instant,
        mut doomed: impl FnMut(&str, &str, &Member) -> bool,
        why: &str,
    ) -> bool {
        let mut removed = false;
        for (name, group) in self.groups.iter_mut() {
            let before = group.members.len();
            group.members.retain(|addr, m| {
                let drop = doomed(name, addr, m);
                if drop {
                    info!(broker_name = %name, broker_addr = %addr, why, "broker removed");
                }
                !drop
            });
            if group.members.len() != before {
                removed = true;
                group.elect(name);
                if group.members.is_empty() {
                    group.emptied_at = Some(now);
                }
            }
        }
        removed
    }

    /// A group whose every member is gone still appears, with no address, until its
    /// queues expire: clients skip it for round-robin sends, and ordered sends keep
    /// hashing over the same queue count.
    pub fn topic_route(&self, topic: &str) -> Option<TopicRouteData> {
        let mut route = TopicRouteData::default();
        for (name, group) in &self.groups {
            if let Some(config) = group.topics.get(topic) {
                route.queue_datas.push(QueueData {
                    broker_name: name.clone(),
                    read_queue_nums: config.read_queue_nums,
                    write_queue_nums: config.write_queue_nums,
                    perm: group.routed_perm(config),
                    topic_sys_flag: config.topic_sys_flag,
                });
                route.broker_datas.push(group.broker_data(name));
            }
        }
        (!route.queue_datas.is_empty()).then_some(route)
    }

    pub fn cluster_info(&self) -> ClusterInfo {
        let mut info = ClusterInfo::default();
        for (name, group) in &self.groups {
            if group.members.is_empty() {
                continue;
            }
            info.broker_addr_table
                .insert(name.clone(), group.broker_data(name));
            info.cluster_addr_table
                .entry(group.cluster.clone())
                .or_default()
                .insert(name.clone());
        }
        info
    }

    /// WIPE_WRITE_PERM_OF_BROKER: routes show the group's queues read-only from now on;
    /// how many of its topics were writable. `None` for a group this name server does not
    /// know.
    pub fn wipe_write_perm(&mut self, broker_name: &str) -> Option<i32> {
        let group = self.groups.get_mut(broker_name)?;
        let count = if group.write_wiped {
            0
        } else {
            group
                .topics
                .values()
                .filter(|t| t.perm & perm::WRITE != 0)
                .count() as i32
        };
        group.write_wiped = true;
        info!(broker_name, topics = count, "write permission wiped");
        Some(count)
    }

    /// ADD_WRITE_PERM_OF_BROKER: routes show the group's queues with the permission it
    /// registered again; how many of its topics are writable again.
    pub fn add_write_perm(&mut self, broker_name: &str) -> Option<i32> {
        let group = self.groups.get_mut(broker_name)?;
        let count = if group.write_wiped {
            group
                .topics
                .values()
                .filter(|t| t.perm & perm::WRITE != 0)
                .count() as i32
        } else {
            0
        };
        group.write_wiped = false;
        info!(broker_name, topics = count, "write permission given back");
        Some(count)
    }

    /// DELETE_TOPIC_IN_NAMESRV: the topic leaves the routes of every group, or of
    /// `cluster`'s groups only. It comes back when its group registers a newer topic table
    /// that still holds it (as in RocketMQ, deleting it from the brokers comes first).
    pub fn delete_topic(&mut self, topic: &str, cluster: Option<&str>) -> usize {
        let mut removed = 0;
        for (broker_name, group) in self.groups.iter_mut() {
            if cluster.is_some_and(|c| c != group.cluster) {
                continue;
            }
            if group.topics.remove(topic).is_some() {
                let counter = group
                    .members
                    .values()
                    .map(|m| m.data_version.counter)
                    .max()
                    .unwrap_or(0);
                group.deleted.insert(topic.to_string(), counter);
                info!(%broker_name, topic, "topic deleted from routes");
                removed += 1;
            }
        }
        removed
    }

    /// GET_TOPICS_BY_CLUSTER: the topics of `cluster`'s groups.
    pub fn topics_by_cluster(&self, cluster: &str) -> TopicList {
        TopicList {
            topic_list: self
                .groups
                .values()
                .filter(|g| g.cluster == cluster)
                .flat_map(|g| g.topics.keys().cloned())
                .collect(),
            broker_addr: None,
        }
    }

    pub fn all_topics(&self) -> TopicList {
        let topic_list: BTreeSet<String> = self
            .groups
            .values()
            .flat_map(|g| g.topics.keys().cloned())
            .collect();
        TopicList {
            topic_list,
            broker_addr: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn reg(addr: &str, broker_id: i64, term: u64) -> Registration {
        let mut topics = BTreeMap::new();
        topics.insert(
            "T".to_string(),
            TopicConfig {
                topic_name: "T".into(),
                read_queue_nums: 4,
                write_queue_nums: 4,
                ..Default::default()
            },
        );
        Registration {
            cluster: "c".into(),
            broker_name: "g".into(),
            broker_addr: addr.into(),
            broker_id,
            term,
            data_version: DataVersion::default(),
            topics: Some(topics),
            connection_id: None,
        }
    }

    fn leader(t: &RouteTable) -> Option<String> {
        t.topic_route("T")
            .and_then(|r| r.broker_datas[0].leader_addr().map(str::to_string))
    }

    #[test]
    fn newest_claim_leads_and_stale_claims_follow() {
        let now = Instant::now();
        let mut t = RouteTable::default();
        t.register(reg("a", 0, 3), now);
        t.register(reg("b", 1, 3), now);
        t.register(reg("c", 2, 3), now);
        assert_eq!(leader(&t).as_deref(), Some("a"));
        let addrs = &t.topic_route("T").unwrap().broker_datas[0].broker_addrs;
        assert_eq!(addrs.len(), 3);
        assert_eq!(addrs.get(&1).map(String::as_str), Some("b"));

        // b wins term 4.
        t.register(reg("b", 0, 4), now);
        assert_eq!(leader(&t).as_deref(), Some("b"));
        // a wakes up still claiming term 3: recorded as a follower.
        let out = t.register(reg("a", 0, 3), now);
        assert!(out.stale_claim);
        assert_eq!(leader(&t).as_deref(), Some("b"));
        // b leaves: fencing follows live members, so a's claim, the best one left, leads.
        t.unregister("g", "b");
        assert_eq!(leader(&t).as_deref(), Some("a"));
        // b comes back as the leader of term 4 and fences a again.
        let out = t.register(reg("b", 0, 4), now);
        assert!(!out.stale_claim);
        assert_eq!(leader(&t).as_deref(), Some("b"));
        // A follower with a huge term does not take the route away from a leader.
        t.register(reg("c", 0, 5), now);
        t.register(reg("a", 1, 90), now);
        assert_eq!(leader(&t).as_deref(), Some("c"));
    }

    /// Regression (issue 15): one forged registration claiming brokerId 0 in term
    /// i64::MAX fenced the real leader for good, even after the forger disconnected.
    /// Now its claim fences only while it is registered.
    #[test]
    fn issue_15_a_departed_claim_fences_no_one() {
        let now = Instant::now();
        let mut t = RouteTable::default();
        t.register(reg("real", 0, 7), now);
        t.register(reg("f1", 1, 7), now);
        let mut forged = reg("127.0.0.1:1", 0, i64::MAX as u64);
        forged.connection_id = Some(99);
        t.register(forged, now);
        assert_eq!(leader(&t).as_deref(), Some("127.0.0.1:1"));
        // While the forger is registered, the real leader's claim is older.
        assert!(t.register(reg("real", 0, 7), now).stale_claim);
        assert!(t.connection_closed(99));
        assert_eq!(leader(&t).as_deref(), Some("real"), "no leader routed");
        let out = t.register(reg("real", 0, 7), now);
        assert!(!out.stale_claim);
        assert_eq!(out.leader_addr.as_deref(), Some("real"));
        // The same after expiry: a member that reported a wrong term and went silent.
        let later = now + Duration::from_secs(10);
        t.register(reg("wrong", 0, 1_000), now);
        t.register(reg("real", 0, 7), later);
        t.register(reg("f1", 1, 7), later);
        assert_eq!(leader(&t).as_deref(), Some("wrong"));
        t.expire(later + Duration::from_secs(1), Duration::from_secs(5));
        assert_eq!(leader(&t).as_deref(), Some("real"));
    }

    #[test]
    fn expiry_and_connection_close_drop_members() {
        let start = Instant::now();
        let mut t = RouteTable::default();
        let mut a = reg("a", 0, 1);
        a.connection_id = Some(7);
        t.register(a, start);
        t.register(reg("b", 1, 1), start + Duration::from_secs(5));
        assert!(t.connection_closed(7));
        assert_eq!(leader(&t), None);
        assert!(t.topic_route("T").is_some());
        let expiry = Duration::from_secs(1);
        assert!(t.expire(start + Duration::from_secs(7), expiry));
        // Every member gone: the queues stay, with no address, for one expiry period.
        let route = t
            .topic_route("T")
            .expect("queues kept while the group restarts");
        assert!(route.broker_datas[0].broker_addrs.is_empty());
        assert_eq!(route.queue_datas[0].write_queue_nums, 4);
        assert!(t.cluster_info().broker_addr_table.is_empty());
        assert!(!t.expire(start + Duration::from_secs(7) + expiry / 2, expiry));
        assert!(t.topic_route("T").is_some());
        t.expire(start + Duration::from_secs(9), expiry);
        assert!(t.topic_route("T").is_none());
        assert!(t.all_topics().topic_list.is_empty());
    }

    #[test]
    fn data_version_query_asks_for_changes_only() {
        let now = Instant::now();
        let mut t = RouteTable::default();
        let v = DataVersion {
            state_version: 0,
            timestamp: 1,
            counter: 1,
        };
        assert!(t.query_data_version("g", "a", 0, 1, &v, now));
        let mut r = reg("a", 0, 1);
        r.data_version = v;
        t.register(r, now);
        assert!(!t.query_data_version("g", "a", 0, 1, &v, now));
        let newer = DataVersion { counter: 2, ..v };
        assert!(t.query_data_version("g", "a", 0, 1, &newer, now));
        // A role or term change forces a re-registration.
        assert!(t.query_data_version("g", "a", 1, 2, &v, now));
    }

    /// Regression (found by the benchmark scripts: a fresh group's first sends failed
    /// with "no route for TBW102" for 30 s): the leader registers its topic table with
    /// TBW102 (version 1), then a follower that has not applied it yet registers its
    /// older table (version 0). The newer table must stay.
    #[test]
    fn issue_6_a_lagging_member_does_not_erase_newer_topics() {
        let now = Instant::now();
        let mut t = RouteTable::default();
        let mut leader = reg("a", 0, 1);
        leader.data_version.counter = 1;
        leader.topics.as_mut().unwrap().insert(
            "TBW102".into(),
            TopicConfig {
                topic_name: "TBW102".into(),
                read_queue_nums: 8,
                write_queue_nums: 8,
                ..Default::default()
            },
        );
        t.register(leader, now);
        let follower = reg("b", 1, 1); // version 0, no TBW102 yet
        t.register(follower, now);
        assert!(t.topic_route("TBW102").is_some(), "TBW102 was erased");
        // Once the follower has caught up, its table is taken again.
        let mut caught_up = reg("b", 1, 1);
        caught_up.data_version.counter = 2;
        t.register(caught_up, now);
        assert!(
            t.topic_route("TBW102").is_none(),
            "the newer table (without TBW102) wins"
        );
    }

    /// Issue 20: WIPE/ADD_WRITE_PERM_OF_BROKER mask the routed permission whatever the group
    /// registers meanwhile; DELETE_TOPIC_IN_NAMESRV holds until the group's table changes.
    #[test]
    fn write_perm_and_topic_deletion_hold_across_registrations() {
        let mut t = RouteTable::default();
        let now = Instant::now();
        t.register(reg("a:1", 0, 1), now);
        assert_eq!(t.wipe_write_perm("nope"), None);
        assert_eq!(t.wipe_write_perm("g"), Some(1));
        assert_eq!(t.wipe_write_perm("g"), Some(0));
        t.register(reg("a:1", 0, 1), now);
        assert_eq!(t.topic_route("T").unwrap().queue_datas[0].perm, perm::READ);
        assert_eq!(t.add_write_perm("g"), Some(1));
        assert_eq!(
            t.topic_route("T").unwrap().queue_datas[0].perm,
            perm::READ_WRITE
        );
        assert_eq!(
            t.topics_by_cluster("c")
                .topic_list
                .into_iter()
                .collect::<Vec<_>>(),
            ["T"]
        );
        assert!(t.topics_by_cluster("other").topic_list.is_empty());

        assert_eq!(t.delete_topic("T", Some("other")), 0);
        assert_eq!(t.delete_topic("T", None), 1);
        t.register(reg("a:1", 0, 1), now);
        assert!(t.topic_route("T").is_none(), "the same table again");
        let mut newer = reg("a:1", 0, 1);
        newer.data_version.counter = 1;
        t.register(newer, now);
        assert!(t.topic_route("T").is_some(), "a newer table holding it");
    }
}
