//! The client's route cache: per topic, the name servers' route; per broker group, its
//! members with the current leader as brokerId 0.
//!
//! Routes are replaced by each name-server refresh. Between refreshes the client
//! learns of a new leader from a follower's redirect ([`RouteTable::learn_leader`]);
//! the group's member list stays complete, so a dead leader's followers can still be
//! asked who leads now. A learned leader outlives refreshes that still name another
//! leader for [`LEARNED_LEADER_TTL`] (name servers may lag an election), until the
//! name servers agree, or until it cannot be reached ([`RouteTable::forget_learned`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use remoting::route::{perm, TopicRouteData, LEADER_BROKER_ID};

use crate::message::MessageQueue;

/// How long a leader learned from a redirect wins over name-server routes that name
/// another leader.
pub const LEARNED_LEADER_TTL: Duration = Duration::from_secs(30);

/// What the client knows of routes.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    topics: HashMap<String, TopicRouteData>,
    groups: HashMap<String, BTreeMap<i64, String>>,
    /// Leaders learned from redirects, and when.
    learned: HashMap<String, (String, Instant)>,
    /// Per topic, its writable queues as [`RouteTable::publish_queues`] lists them: every
    /// send chooses from this list, so it is built when routes change, not per send.
    publish: HashMap<String, Arc<[MessageQueue]>>,
    /// Topics routed through the default topic (`TBW102`) because no name server knew
    /// them yet: a refresh that still finds nothing keeps such a route (the broker
    /// registers the topic once the first send created it).
    provisional: std::collections::HashSet<String>,
}

impl RouteTable {
    /// Stores a topic's route and the members of its groups; returns whether some group's
    /// members or leader changed.
    pub fn update_topic(&mut self, topic: &str, route: TopicRouteData) -> bool {
        self.provisional.remove(topic);
        self.update_topic_at(topic, route, Instant::now())
    }

    /// Routes `topic`, which no name server knows yet, through the default topic's
    /// `route`, until a refresh finds the topic itself.
    pub fn update_topic_provisional(&mut self, topic: &str, route: TopicRouteData) -> bool {
        let changed = self.update_topic_at(topic, route, Instant::now());
        self.provisional.insert(topic.to_string());
        changed
    }

    fn update_topic_at(&mut self, topic: &str, route: TopicRouteData, now: Instant) -> bool {
        let mut new_groups = false;
        let mut changed = false;
        for broker in &route.broker_datas {
            if broker.broker_addrs.is_empty() {
                continue;
            }
            let name = &broker.broker_name;
            let before = self
                .groups
                .insert(name.clone(), broker.broker_addrs.clone());
            new_groups |= before.as_ref().is_none_or(|g| g.is_empty());
            if let Some((addr, at)) = self.learned.get(name).cloned() {
                let agrees = broker.leader_addr() == Some(addr.as_str());
                if agrees || now.duration_since(at) >= LEARNED_LEADER_TTL {
                    self.learned.remove(name);
                } else {
                    self.set_leader(name, &addr);
                }
            }
            changed |= before.as_ref() != self.groups.get(name);
        }
        self.topics.insert(topic.to_string(), route);
        if new_groups {
            // Other topics may have queues on a group that had no member until now.
            self.rebuild_publish_all();
        } else {
            self.rebuild_publish(topic);
        }
        changed
    }

    fn rebuild_publish(&mut self, topic: &str) {
        let queues = self.queues(topic, perm::WRITE, |q| q.write_queue_nums, true);
        self.publish.insert(topic.to_string(), queues.into());
    }

    fn rebuild_publish_all(&mut self) {
        let topics: Vec<String> = self.topics.keys().cloned().collect();
        for topic in topics {
            self.rebuild_publish(&topic);
        }
    }

    /// Records a leader named by a redirect (or found answering writes): it leads the
    /// group now, and keeps doing so across refreshes for [`LEARNED_LEADER_TTL`].
    pub fn learn_leader(&mut self, broker_name: &str, addr: &str) {
        self.learned
            .insert(broker_name.to_string(), (addr.to_string(), Instant::now()));
        self.set_leader(broker_name, addr);
    }

    /// Drops a learned leader that could not be reached.
    pub fn forget_learned(&mut self, broker_name: &str, addr: &str) {
        if self
            .learned
            .get(broker_name)
            .is_some_and(|(a, _)| a == addr)
        {
            self.learned.remove(broker_name);
        }
    }

    /// Forgets a topic the name servers no longer know.
    /// Forgets a topic no name server knows; a provisional route is kept (see
    /// [`RouteTable::update_topic_provisional`]).
    pub fn remove_topic(&mut self, topic: &str) {
        if self.provisional.contains(topic) {
            return;
        }
        self.topics.remove(topic);
        self.publish.remove(topic);
    }

    pub fn topic(&self, topic: &str) -> Option<&TopicRouteData> {
        self.topics.get(topic)
    }

    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(String::as_str)
    }

    /// A group's members by brokerId (0 = leader).
    pub fn group(&self, broker_name: &str) -> Option<&BTreeMap<i64, String>> {
        self.groups.get(broker_name)
    }

    pub fn leader(&self, broker_name: &str) -> Option<&str> {
        self.groups
            .get(broker_name)
            .and_then(|g| g.get(&LEADER_BROKER_ID))
            .map(String::as_str)
    }

    /// Every member's address, the leader first.
    pub fn members(&self, broker_name: &str) -> Vec<String> {
        self.groups
            .get(broker_name)
            .map(|g| g.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every address of every group serving `topic`.
    pub fn topic_addrs(&self, topic: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(route) = self.topics.get(topic) {
            for broker in &route.broker_datas {
                for addr in self.members(&broker.broker_name) {
                    out.push((broker.broker_name.clone(), addr));
                }
            }
        }
        out
    }

    /// Every address of every group known.
    pub fn all_addrs(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .groups
            .iter()
            .flat_map(|(name, g)| g.values().map(move |a| (name.clone(), a.clone())))
            .collect();
        out.sort();
        out
    }

    /// Records that `addr` leads `broker_name` now. A follower entry with that address
    /// is removed, and the old leader, if different, is kept as a follower so it can be
    /// asked again later.
    pub fn set_leader(&mut self, broker_name: &str, addr: &str) {
        let group = self.groups.entry(broker_name.to_string()).or_default();
        if group.get(&LEADER_BROKER_ID).map(String::as_str) == Some(addr) {
            return;
        }
        let new_group = group.is_empty();
        let freed = group
            .iter()
            .find(|(id, a)| **id != LEADER_BROKER_ID && a.as_str() == addr)
            .map(|(id, _)| *id);
        if let Some(id) = freed {
            group.remove(&id);
        }
        if let Some(old) = group.insert(LEADER_BROKER_ID, addr.to_string()) {
            let id = freed.unwrap_or_else(|| group.keys().max().copied().unwrap_or(0) + 1);
            group.insert(id, old);
        }
        if new_group {
            self.rebuild_publish_all();
        }
    }

    /// The writable queues of `topic`, sorted by group then queue id (RocketMQ's
    /// `topicRouteData2TopicPublishInfo`). A group is included while it has any known
    /// member: its followers can name the leader.
    pub fn publish_queues(&self, topic: &str) -> Arc<[MessageQueue]> {
        match self.publish.get(topic) {
            Some(queues) => Arc::clone(queues),
            None => Arc::new([]),
        }
    }

    /// Every writable queue of `topic`, sorted, including those of a group that has no
    /// member right now (the name server keeps a restarting group's queues, without
    /// addresses, for an expiry period). Ordered sends hash over this list, so a key
    /// keeps its queue while its group restarts instead of moving to another group.
    pub fn ordered_queues(&self, topic: &str) -> Vec<MessageQueue> {
        self.queues(topic, perm::WRITE, |q| q.write_queue_nums, false)
    }

    /// The readable queues of `topic`, sorted (RocketMQ's
    /// `topicRouteData2TopicSubscribeInfo`): like Java's client, a group with no
    /// member right now keeps its queues, so a group restart does not reshuffle the
    /// consumers' allocation.
    pub fn subscribe_queues(&self, topic: &str) -> Vec<MessageQueue> {
        self.queues(topic, perm::READ, |q| q.read_queue_nums, false)
    }

    fn queues(
        &self,
        topic: &str,
        needed: i32,
        count: impl Fn(&remoting::route::QueueData) -> i32,
        live_groups_only: bool,
    ) -> Vec<MessageQueue> {
        let Some(route) = self.topics.get(topic) else {
            return Vec::new();
        };
        let mut datas: Vec<_> = route.queue_datas.iter().collect();
        datas.sort_by(|a, b| a.broker_name.cmp(&b.broker_name));
        let mut out = Vec::new();
        for qd in datas {
            if qd.perm & needed == 0
                || (live_groups_only
                    && self
                        .groups
                        .get(&qd.broker_name)
                        .is_none_or(|g| g.is_empty()))
            {
                continue;
            }
            for queue_id in 0..count(qd).max(0) {
                out.push(MessageQueue::new(topic, qd.broker_name.clone(), queue_id));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remoting::route::{BrokerData, QueueData};

    fn route() -> TopicRouteData {
        let group = |name: &str, base: u16| BrokerData {
            cluster: "c".into(),
            broker_name: name.into(),
            broker_addrs: (0..3)
                .map(|i| (i as i64, format!("127.0.0.1:{}", base + i)))
                .collect(),
            enable_acting_master: false,
        };
        TopicRouteData {
            queue_datas: vec![
                QueueData {
                    broker_name: "broker-b".into(),
                    read_queue_nums: 2,
                    write_queue_nums: 1,
                    perm: perm::READ_WRITE,
                    topic_sys_flag: 0,
                },
                QueueData {
                    broker_name: "broker-a".into(),
                    read_queue_nums: 2,
                    write_queue_nums: 2,
                    perm: perm::READ_WRITE,
                    topic_sys_flag: 0,
                },
                QueueData {
                    broker_name: "broker-c".into(),
                    read_queue_nums: 1,
                    write_queue_nums: 1,
                    perm: perm::READ,
                    topic_sys_flag: 0,
                },
            ],
            broker_datas: vec![
                group("broker-a", 100),
                group("broker-b", 200),
                group("broker-c", 300),
            ],
            ..Default::default()
        }
    }

    /// Proves publish queues are the writable ones sorted by group and id, and
    /// subscribe queues the readable ones; a read-only group takes no writes.
    #[test]
    fn queues_follow_perm_and_counts() {
        let mut t = RouteTable::default();
        t.update_topic("T", route());
        let names = |qs: &[MessageQueue]| -> Vec<String> {
            qs.iter()
                .map(|q| format!("{}/{}", q.broker_name, q.queue_id))
                .collect()
        };
        assert_eq!(
            names(&t.publish_queues("T")),
            ["broker-a/0", "broker-a/1", "broker-b/0"]
        );
        assert_eq!(
            names(&t.subscribe_queues("T")),
            [
                "broker-a/0",
                "broker-a/1",
                "broker-b/0",
                "broker-b/1",
                "broker-c/0"
            ]
        );
        assert!(t.publish_queues("other").is_empty());
    }

    /// Proves a topic routed through the default topic keeps its queues while the name
    /// servers do not know it yet (a send racing the refresher once found no queue at
    /// all), and is forgotten normally once a real route replaced it.
    #[test]
    fn a_refresh_says_whether_members_or_leader_changed() {
        let mut t = RouteTable::default();
        assert!(t.update_topic("T", route()), "first sight of the groups");
        assert!(!t.update_topic("T", route()), "the same route again");
        t.learn_leader("broker-a", "127.0.0.1:101");
        assert!(
            !t.update_topic("T", route()),
            "a learned leader the name servers do not know yet is no change"
        );
        let mut moved = route();
        moved.broker_datas[0].broker_addrs.remove(&1);
        assert!(t.update_topic("T", moved), "a member left");
    }

    #[test]
    fn a_provisional_route_outlives_refreshes_that_find_nothing() {
        let mut t = RouteTable::default();
        t.update_topic_provisional("New", route());
        t.remove_topic("New");
        assert_eq!(t.publish_queues("New").len(), 3);
        t.update_topic("New", route());
        t.remove_topic("New");
        assert!(t.publish_queues("New").is_empty());
        assert!(t.topic("New").is_none());
    }
    /// Proves a redirect makes the named follower the leader and keeps the old leader
    /// as a member, so the group still has three addresses to ask.
    #[test]
    fn set_leader_swaps_roles_and_keeps_members() {
        let mut t = RouteTable::default();
        t.update_topic("T", route());
        t.set_leader("broker-a", "127.0.0.1:102");
        assert_eq!(t.leader("broker-a"), Some("127.0.0.1:102"));
        let mut members = t.members("broker-a");
        assert_eq!(members[0], "127.0.0.1:102");
        members.sort();
        assert_eq!(members, ["127.0.0.1:100", "127.0.0.1:101", "127.0.0.1:102"]);
        // Idempotent.
        t.set_leader("broker-a", "127.0.0.1:102");
        assert_eq!(t.members("broker-a").len(), 3);
        // An address never seen before joins as leader.
        t.set_leader("broker-a", "127.0.0.1:999");
        assert_eq!(t.leader("broker-a"), Some("127.0.0.1:999"));
        assert_eq!(t.members("broker-a").len(), 4);
        // A name-server refresh replaces the group again.
        t.update_topic("T", route());
        assert_eq!(t.leader("broker-a"), Some("127.0.0.1:100"));
    }

    /// Proves a leader learned from a redirect survives name-server refreshes that
    /// still name the old leader, until the name servers agree, the TTL passes, or it
    /// is forgotten as unreachable.
    #[test]
    fn learned_leader_outlives_stale_refreshes() {
        let mut t = RouteTable::default();
        let t0 = Instant::now();
        t.update_topic_at("T", route(), t0);
        t.learn_leader("broker-a", "127.0.0.1:101");
        t.update_topic_at("T", route(), t0 + Duration::from_secs(1));
        assert_eq!(t.leader("broker-a"), Some("127.0.0.1:101"));
        assert_eq!(t.members("broker-a").len(), 3);
        t.update_topic_at(
            "T",
            route(),
            t0 + LEARNED_LEADER_TTL + Duration::from_secs(1),
        );
        assert_eq!(t.leader("broker-a"), Some("127.0.0.1:100"));

        t.learn_leader("broker-a", "127.0.0.1:102");
        t.forget_learned("broker-a", "127.0.0.1:999"); // another address: kept
        t.update_topic("T", route());
        assert_eq!(t.leader("broker-a"), Some("127.0.0.1:102"));
        t.forget_learned("broker-a", "127.0.0.1:102");
        t.update_topic("T", route());
        assert_eq!(t.leader("broker-a"), Some("127.0.0.1:100"));

        // Once the name servers agree, the learned entry is dropped.
        t.learn_leader("broker-a", "127.0.0.1:100");
        t.update_topic("T", route());
        assert!(t.learned.is_empty());
    }

    /// Regression for a bug the two-group chaos run found (issue 5): when every node of
    /// a group was gone, its queues dropped out of the client's queue list, the count
    /// shrank, and ordered sends re-hashed their keys onto the other group's queues.
    /// Now a group the name server lists without addresses is left out of round-robin
    /// sends but kept for ordered sends and subscriptions, so a key keeps its queue.
    #[test]
    fn issue_5_ordered_keys_keep_their_queue_while_a_group_restarts() {
        let mut live = RouteTable::default();
        live.update_topic("T", route());
        let mut down = route();
        for b in &mut down.broker_datas {
            if b.broker_name == "broker-b" {
                b.broker_addrs.clear();
            }
        }
        let mut restarting = RouteTable::default();
        restarting.update_topic("T", down);

        assert_eq!(restarting.ordered_queues("T"), live.ordered_queues("T"));
        assert_eq!(restarting.subscribe_queues("T"), live.subscribe_queues("T"));
        assert!(restarting
            .publish_queues("T")
            .iter()
            .all(|q| q.broker_name != "broker-b"));
        for key in ["k0", "k1", "order-42", "Aa", "BB"] {
            let before = crate::producer::select_by_hash(&live.ordered_queues("T"), key).cloned();
            let during =
                crate::producer::select_by_hash(&restarting.ordered_queues("T"), key).cloned();
            assert_eq!(before, during, "key {key} moved while broker-b restarted");
        }
    }

    /// The publish list is built when routes change, not per send: it must follow every
    /// change that adds a group's queues, including one learned through another topic's
    /// route or a redirect, and a removed topic must have none.
    #[test]
    fn publish_queues_follow_route_changes() {
        let names = |t: &RouteTable, topic: &str| -> Vec<String> {
            t.publish_queues(topic)
                .iter()
                .map(|q| format!("{}/{}", q.broker_name, q.queue_id))
                .collect()
        };
        let without_b = || {
            let mut r = route();
            for b in &mut r.broker_datas {
                if b.broker_name == "broker-b" {
                    b.broker_addrs.clear();
                }
            }
            r
        };
        let mut t = RouteTable::default();
        t.update_topic("T", without_b());
        assert_eq!(names(&t, "T"), ["broker-a/0", "broker-a/1"]);
        // Another topic's route names broker-b's members: T's queues there are usable.
        t.update_topic("U", route());
        assert_eq!(names(&t, "T"), ["broker-a/0", "broker-a/1", "broker-b/0"]);
        assert_eq!(names(&t, "U"), names(&t, "T"));

        // A redirect names a leader of a group no route listed yet.
        let mut t = RouteTable::default();
        t.update_topic("T", without_b());
        t.learn_leader("broker-b", "127.0.0.1:20000");
        assert_eq!(names(&t, "T"), ["broker-a/0", "broker-a/1", "broker-b/0"]);

        // A refresh that changes the queue count, then the topic's removal.
        let mut fewer = route();
        for q in &mut fewer.queue_datas {
            if q.broker_name == "broker-a" {
                q.write_queue_nums = 1;
            }
        }
        t.update_topic("T", fewer);
        assert_eq!(names(&t, "T"), ["broker-a/0", "broker-b/0"]);
        t.remove_topic("T");
        assert!(t.publish_queues("T").is_empty());
    }
}
