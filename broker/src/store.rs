//! What the broker builds from committed entries, and the apply hook that builds it.
//!
//! Queue offsets are assigned when a record is applied, in log order, so they are the
//! same on every replica and never depend on who led when the record was appended: an
//! old leader's uncommitted tail that Raft truncates never consumed an offset. The
//! stored record keeps 0 in QUEUEOFFSET and PHYSICALOFFSET; both are filled in when the
//! record is read for a pull (`remoting::message::patch_offsets`), from its ConsumeQueue
//! entry. Writing them at append time would need the leader to predict them, and
//! DLedger's recomputation after every election is exactly the fragile part we avoid.
//!
//! Durable state lives in dledger's RocksDB column family for the hook, written in the
//! same batch as the applied point; [`crate::keys`] lists the keys. Opening it never
//! fails because of one unreadable record: that record is reported loudly and left out.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use dledger::{
    ApplyHook, CommittedEntry, CommittedPayload, HookError, HookResponse, HookStore, HookWrites,
};
use remoting::message::{property, property_values, MessageRecord};
use remoting::route::{DataVersion, TopicConfig};
use tracing::{error, info, warn};

use remoting::filter::tag_hash as tag_code;

use crate::command::BrokerCommand;
use crate::consume_queue::{ConsumeQueue, ConsumeQueueStore, CqEntry, JournalPart};
use crate::keys;
use crate::queue_locks::{Granted, QueueLocks};
use crate::schedule;
use crate::transaction;

/// Key of one consumer offset.
pub type OffsetKey = (String, String, i32);

/// What applying one record made of it, handed back to whoever appended it (typed, through
/// `dledger::HookResponse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Indexed in its queue at `queue_offset`.
    Queued { queue_offset: u64 },
    /// In the CommitLog, indexed in no queue.
    Stored,
}

/// State every replica derives from the log; shared by the hook and the processors.
pub struct BrokerState {
    pub consume_queues: ConsumeQueueStore,
    /// Message counts of this node (messages stored are counted at apply).
    pub stats: crate::stats::BrokerStats,
    /// RocketMQ's per-topic and per-group stats items (VIEW_BROKER_STATS_DATA).
    pub stats_items: crate::stats_items::StatsItems,
    /// Config keys changed at runtime through the log (UPDATE_BROKER_CONFIG).
    pub runtime_config: crate::runtime_config::RuntimeConfig,
    topics: RwLock<BTreeMap<String, TopicConfig>>,
    data_version: RwLock<DataVersion>,
    offsets: RwLock<HashMap<OffsetKey, i64>>,
    leader_addrs: RwLock<HashMap<u64, String>>,
    subscription_groups: RwLock<BTreeMap<String, serde_json::Value>>,
    /// Queue locks of orderly consumers.
    queue_locks: RwLock<QueueLocks>,
    /// Woken when a scheduled message is applied (the leader's delivery task sleeps on it).
    pub(crate) timer_added: tokio::sync::Notify,
    /// The applied retention point (CommitLog position below which everything goes), shared
    /// with the index compaction filter.
    retention_point: Arc<AtomicU64>,
    /// The same point, for the task that purges the Raft log after it moves.
    retention_tx: tokio::sync::watch::Sender<u64>,
    opened: AtomicBool,
}

impl BrokerState {
    pub fn open(store_path: &std::path::Path, cq_file_bytes: u64) -> crate::Result<Arc<Self>> {
        let consume_queues = ConsumeQueueStore::open(
            PathBuf::from(store_path).join("consumequeue"),
            cq_file_bytes,
        )?;
        Ok(Arc::new(BrokerState {
            consume_queues,
            stats: Default::default(),
            stats_items: Default::default(),
            runtime_config: Default::default(),
            topics: RwLock::new(BTreeMap::new()),
            data_version: RwLock::new(DataVersion::default()),
            offsets: RwLock::new(HashMap::new()),
            leader_addrs: RwLock::new(HashMap::new()),
            subscription_groups: RwLock::new(BTreeMap::new()),
            queue_locks: RwLock::new(QueueLocks::default()),
            timer_added: tokio::sync::Notify::new(),
            retention_point: Arc::new(AtomicU64::new(0)),
            retention_tx: tokio::sync::watch::Sender::new(0),
            opened: AtomicBool::new(false),
        }))
    }

    pub fn topic(&self, topic: &str) -> Option<TopicConfig> {
        self.topics.read().unwrap().get(topic).cloned()
    }

    pub fn topics(&self) -> BTreeMap<String, TopicConfig> {
        self.topics.read().unwrap().clone()
    }

    pub fn topic_count(&self) -> usize {
        self.topics.read().unwrap().len()
    }

    pub fn data_version(&self) -> DataVersion {
        *self.data_version.read().unwrap()
    }

    pub fn committed_offset(&self, group: &str, topic: &str, queue_id: i32) -> Option<i64> {
        self.offsets
            .read()
            .unwrap()
            .get(&(group.to_string(), topic.to_string(), queue_id))
            .copied()
    }

    /// Every committed offset of `group`: (topic, queue id) to offset.
    pub fn offsets_of_group(&self, group: &str) -> BTreeMap<(String, i32), i64> {
        let offsets = self.offsets.read().unwrap();
        offsets
            .iter()
            .filter(|((g, _, _), _)| g == group)
            .map(|((_, topic, queue_id), offset)| ((topic.clone(), *queue_id), *offset))
            .collect()
    }

    /// The groups with a committed offset in `topic`.
    pub fn groups_with_offsets_in(&self, topic: &str) -> std::collections::BTreeSet<String> {
        let offsets = self.offsets.read().unwrap();
        offsets
            .keys()
            .filter(|(_, t, _)| t == topic)
            .map(|(group, _, _)| group.clone())
            .collect()
    }

    /// Up to `limit` committed consumer offsets, and how many more there are (metrics).
    pub fn committed_offsets(&self, limit: usize) -> (Vec<(OffsetKey, i64)>, usize) {
        let offsets = self.offsets.read().unwrap();
        let taken: Vec<(OffsetKey, i64)> = offsets
            .iter()
            .take(limit)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let left_out = offsets.len() - taken.len();
        (taken, left_out)
    }

    pub fn subscription_groups(&self) -> BTreeMap<String, serde_json::Value> {
        self.subscription_groups.read().unwrap().clone()
    }

    pub fn subscription_group_count(&self) -> usize {
        self.subscription_groups.read().unwrap().len()
    }

    pub fn subscription_group(&self, name: &str) -> Option<serde_json::Value> {
        self.subscription_groups.read().unwrap().get(name).cloned()
    }

    /// Who holds `group`'s lock on `mq` at `now_ms`, if anyone.
    pub fn queue_lock_holder(
        &self,
        group: &str,
        mq: &remoting::queue_lock::MessageQueueData,
        now_ms: u64,
    ) -> Option<String> {
        let locks = self.queue_locks.read().unwrap();
        locks.holder(group, mq, now_ms).map(str::to_string)
    }

    pub fn leader_addr(&self, node_id: u64) -> Option<String> {
        self.leader_addrs.read().unwrap().get(&node_id).cloned()
    }

    /// Queue offsets `[min, max)` of a queue; `(0, 0)` for a queue never written.
    pub fn queue_bounds(&self, topic: &str, queue_id: i32) -> (u64, u64) {
        match self.consume_queues.get(topic, queue_id) {
            Some(q) => (q.min_offset(), q.max_offset()),
            None => (0, 0),
        }
    }

    /// The applied retention point: nothing below this CommitLog position is kept.
    pub fn retention_point(&self) -> u64 {
        self.retention_point.load(Ordering::Acquire)
    }

    /// Changes of the applied retention point.
    pub fn retention_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.retention_tx.subscribe()
    }

    /// Moves every ConsumeQueue's minimum up to `below` and publishes the point (at apply,
    /// and at open from the stored point).
    fn retain(&self, below: u64) -> Result<(), HookError> {
        for ((topic, queue_id), queue) in self.consume_queues.all() {
            let min = queue.retain_from(below)?;
            tracing::debug!(%topic, queue_id, min_offset = min, "ConsumeQueue minimum moved");
        }
        self.retention_point.fetch_max(below, Ordering::AcqRel);
        self.retention_tx.send_if_modified(|p| {
            let moved = below > *p;
            *p = (*p).max(below);
            moved
        });
        Ok(())
    }
}

/// ConsumeQueue entries one Raft entry adds to one queue: the queue, the first new queue
/// offset, and the entries.
type QueueBatch = (Arc<ConsumeQueue>, u64, Vec<CqEntry>);

/// Queues of one Raft entry found by a scan; past this many, through a map.
const SCAN_QUEUES: usize = 16;

/// The queues (topic, queue id) one Raft entry touches, numbered in the order first seen.
/// An entry touches a few as a rule: they are found by a scan, which costs less than
/// hashing a topic name per record, and through a map once there are many.
#[derive(Default)]
struct EntryQueues<'a> {
    keys: Vec<(&'a str, i32)>,
    /// Empty until there are more than [`SCAN_QUEUES`] keys.
    map: HashMap<(&'a str, i32), usize>,
}

impl<'a> EntryQueues<'a> {
    /// The number of `key`, and whether it was seen here for the first time.
    fn slot(&mut self, key: (&'a str, i32)) -> (usize, bool) {
        let found = if self.keys.len() <= SCAN_QUEUES {
            self.keys.iter().position(|k| k.1 == key.1 && k.0 == key.0)
        } else {
            if self.map.is_empty() {
                let numbered = self.keys.iter().enumerate().map(|(i, k)| (*k, i));
                self.map.extend(numbered);
            }
            self.map.get(&key).copied()
        };
        match found {
            Some(slot) => (slot, false),
            None => {
                self.keys.push(key);
                let slot = self.keys.len() - 1;
                if !self.map.is_empty() {
                    self.map.insert(key, slot);
                }
                (slot, true)
            }
        }
    }
}

/// The broker's apply hook.
pub struct BrokerHook {
    state: Arc<BrokerState>,
    /// Reads of what earlier applies wrote (timer keys); set at open.
    store: Option<HookStore>,
    /// Writes found due at open (keys of an older version rewritten in today's form),
    /// made with the first apply so they commit atomically with an applied point.
    migration: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// `messageIndexEnable`: build the message index.
    index: bool,
}

impl BrokerHook {
    pub fn new(state: Arc<BrokerState>) -> Self {
        BrokerHook {
            state,
            store: None,
            migration: Vec::new(),
            index: true,
        }
    }

    /// Builds the message index (`messageIndexEnable`) or not.
    pub fn with_index(mut self, index: bool) -> Self {
        self.index = index;
        self
    }

    fn apply_records(
        &mut self,
        records: &[dledger::CommittedRecord<'_>],
        writes: &mut HookWrites<'_>,
    ) -> Result<Vec<HookResponse>, HookError> {
        // Entries are gathered per queue and written once per queue per Raft entry.
        let mut out = Vec::with_capacity(records.len());
        let mut queues = EntryQueues::default();
        let mut batches: Vec<QueueBatch> = Vec::new();
        // Timer and half keys this entry resolved: RocksDB shows them only once it is
        // written.
        let mut resolved_here: Vec<Vec<u8>> = Vec::new();
        let mut timers_added = false;
        for record in records {
            let (msg, _) = MessageRecord::decode(record.bytes)
                .map_err(|e| format!("record at CommitLog position {}: {e}", record.position))?;
            let mut tag_hash = None;
            // Every property the apply needs, found in one pass.
            let [txn_origin, timer_origin, tags, uniq_key, keys] = property_values(
                msg.properties,
                [
                    transaction::TRANSACTION_ORIGIN,
                    schedule::TIMER_ORIGIN,
                    property::TAGS,
                    property::UNIQ_KEY,
                    property::KEYS,
                ],
            );
            // A committed or discarded transaction names its half, a delivered scheduled
            // message its timer: either is queued only if that entry is still pending.
            let resolves = match (txn_origin, timer_origin) {
                (Some(v), _) => {
                    Some(transaction::parse_origin(v).map(|h| keys::half_key(h).to_vec()))
                }
                (None, Some(v)) => Some(schedule::parse_origin(v).map(|k| k.to_vec())),
                (None, None) => None,
            };
            if let Some(entry) = resolves {
                let pending = match entry {
                    Ok(key) => self.resolve(&key, &mut resolved_here, writes)?,
                    Err(()) => false,
                };
                writes.write_now();
                if !pending {
                    out.push(HookResponse::new(Applied::Stored));
                    continue;
                }
            } else if schedule::is_schedule_topic(msg.topic) {
                // A scheduled message: its due time is its tag code, and its key waits in
                // RocksDB until it is delivered.
                if let Some(due) = schedule::due_ms(&msg) {
                    let key = keys::timer_key(due, record.position);
                    writes.put(&key, &(record.bytes.len() as u32).to_be_bytes());
                    writes.write_now();
                    timers_added = true;
                    tag_hash = Some(due as i64);
                }
            }
            let last_of_entry = records.last().map(|r| r.position) == Some(record.position);
            if self.index {
                crate::index::index_message(
                    &msg,
                    uniq_key,
                    keys,
                    record.position,
                    last_of_entry,
                    writes,
                );
            }
            let (slot, new) = queues.slot((msg.topic, msg.queue_id));
            if new {
                let queue = self
                    .state
                    .consume_queues
                    .get_or_create(msg.topic, msg.queue_id)?;
                let first = queue.max_offset();
                batches.push((queue, first, Vec::new()));
            }
            let (_, first, entries) = &mut batches[slot];
            let queue_offset = *first + entries.len() as u64;
            out.push(HookResponse::new(Applied::Queued { queue_offset }));
            if msg.topic == transaction::HALF_TOPIC {
                // A half message: pending in the index until committed, rolled back or
                // discarded.
                let state = transaction::half_state(&msg, record.bytes.len(), queue_offset);
                writes.put(&keys::half_key(record.position), &state.encode());
                writes.write_now();
            }
            entries.push(CqEntry {
                commit_log_offset: record.position as i64,
                size: record.bytes.len() as i32,
                tag_hash: tag_hash.unwrap_or_else(|| tags.map(tag_code).unwrap_or(0)),
            });
        }
        if timers_added {
            self.state.timer_added.notify_waiters();
        }
        for (queue, first, entries) in &batches {
            queue.append_many(*first, entries)?;
            self.state.consume_queues.note_written(queue, entries.len());
        }
        if let Some(first_record) = records.first().filter(|_| !batches.is_empty()) {
            // Until the files are synced past them, the entries are also here, one record for
            // the whole Raft entry: an OS crash that loses file pages loses nothing, and the
            // queues' counts are stored only by the sync (see `consume_queue`).
            let parts =
                queues
                    .keys
                    .iter()
                    .zip(&batches)
                    .map(|((topic, queue_id), (_, first, entries))| {
                        (*topic, *queue_id, *first, entries.as_slice())
                    });
            writes.put(
                &keys::journal_key(first_record.position),
                &crate::consume_queue::encode_journal(parts),
            );
            self.state
                .consume_queues
                .note_journaled(first_record.position);
        }
        let bytes = records.iter().map(|r| r.bytes.len() as u64).sum();
        self.state.stats.add_put(records.len() as u64, bytes);
        self.state
            .stats_items
            .add_puts(
                queues
                    .keys
                    .iter()
                    .zip(&batches)
                    .map(|((topic, _), (_, _, e))| {
                        let size: u64 = e.iter().map(|x| x.size as u64).sum();
                        (*topic, e.len() as u64, size)
                    }),
            );
        Ok(out)
    }

    fn apply_command(
        &mut self,
        bytes: &[u8],
        writes: &mut HookWrites<'_>,
    ) -> Result<Vec<HookResponse>, HookError> {
        let command = match BrokerCommand::decode(bytes) {
            Ok(c) => c,
            Err(e) => {
                // Deterministic on every replica: an unknown command is skipped by all.
                warn!(error = %e, "skipping a command this version does not understand");
                return Ok(Vec::new());
            }
        };
        match command {
            BrokerCommand::UpdateOffsets { offsets } => {
                let mut map = self.state.offsets.write().unwrap();
                for u in offsets {
                    writes.put(
                        &keys::offset_key(&u.consumer_group, &u.topic, u.queue_id),
                        &u.offset.to_be_bytes(),
                    );
                    map.insert((u.consumer_group, u.topic, u.queue_id), u.offset);
                }
            }
            BrokerCommand::PutTopic { config } => {
                info!(topic = %config.topic_name, queues = config.write_queue_nums, "topic updated");
                self.put_topics(vec![config], writes)?;
            }
            BrokerCommand::PutTopics { configs } => {
                info!(
                    topics = configs.len(),
                    first = configs.first().map_or("", |c| c.topic_name.as_str()),
                    last = configs.last().map_or("", |c| c.topic_name.as_str()),
                    "topics updated in one entry"
                );
                self.put_topics(configs, writes)?;
            }
            BrokerCommand::DeleteTopic { topic } => {
                writes.delete(format!("t/{topic}").as_bytes());
                self.state.topics.write().unwrap().remove(&topic);
                self.bump_version(writes)?;
            }
            BrokerCommand::PutSubscriptionGroup { config } => {
                let Some(name) = config.get("groupName").and_then(|v| v.as_str()) else {
                    warn!("skipping a subscription group without groupName");
                    return Ok(Vec::new());
                };
                writes.put(
                    format!("g/{name}").as_bytes(),
                    &serde_json::to_vec(&config)?,
                );
                self.state
                    .subscription_groups
                    .write()
                    .unwrap()
                    .insert(name.to_string(), config);
            }
            BrokerCommand::DeleteSubscriptionGroup { group_name } => {
                writes.delete(format!("g/{group_name}").as_bytes());
                self.state
                    .subscription_groups
                    .write()
                    .unwrap()
                    .remove(&group_name);
                let mut locks = self.state.queue_locks.write().unwrap();
                locks.remove_group(&group_name, writes);
            }
            BrokerCommand::LockQueues {
                consumer_group,
                client_id,
                queues,
                now_ms,
                lifetime_ms,
            } => {
                let mut locks = self.state.queue_locks.write().unwrap();
                let granted = locks.lock(
                    &consumer_group,
                    &client_id,
                    &queues,
                    now_ms,
                    lifetime_ms,
                    writes,
                );
                return Ok(vec![HookResponse::new(Granted(granted))]);
            }
            BrokerCommand::UnlockQueues {
                consumer_group,
                client_id,
                queues,
            } => {
                let mut locks = self.state.queue_locks.write().unwrap();
                locks.unlock(&consumer_group, &client_id, &queues, writes);
            }
            BrokerCommand::LeaderInfo {
                node_id,
                broker_addr,
                ..
            } => {
                writes.put(format!("l/{node_id}").as_bytes(), broker_addr.as_bytes());
                self.state
                    .leader_addrs
                    .write()
                    .unwrap()
                    .insert(node_id, broker_addr);
            }
            BrokerCommand::RollbackHalf { commit_log_offset } => {
                writes.delete(&keys::half_key(commit_log_offset));
                writes.write_now();
            }
            BrokerCommand::CheckHalves { commit_log_offsets } => {
                self.count_checks(&commit_log_offsets, writes)?;
            }
            BrokerCommand::UpdateBrokerConfig { properties } => {
                self.update_broker_config(properties, writes)?;
            }
            BrokerCommand::Retain { below } => {
                if below > self.state.retention_point() {
                    info!(below, "retention point moved");
                    writes.put(keys::RETENTION_KEY, &below.to_be_bytes());
                    writes.write_now();
                    self.state.retain(below)?;
                }
            }
        }
        Ok(Vec::new())
    }

    /// One check more on each listed half still pending.
    fn count_checks(&self, offsets: &[u64], writes: &mut HookWrites<'_>) -> Result<(), HookError> {
        let store = self.store.as_ref().ok_or("the hook was not opened")?;
        for offset in offsets {
            let key = keys::half_key(*offset);
            let Some(value) = store.get(&key)? else {
                continue;
            };
            match transaction::HalfState::decode(&value) {
                Some(mut state) => {
                    state.check_times += 1;
                    writes.put(&key, &state.encode());
                }
                None => skipped(&key, "half message state"),
            }
        }
        writes.write_now();
        Ok(())
    }

    /// Applies the runtime keys of an UPDATE_BROKER_CONFIG (the leader checked them; a
    /// key or value this version does not accept is skipped alike on every replica). A
    /// change of `brokerPermission` changes what the group registers: the topic table's
    /// version moves so the name servers take it.
    fn update_broker_config(
        &self,
        properties: BTreeMap<String, String>,
        writes: &mut HookWrites<'_>,
    ) -> Result<(), HookError> {
        let mut permission_changed = false;
        for (key, value) in properties {
            if let Err(why) = crate::runtime_config::check(&key, &value) {
                warn!(key = %key, reason = %why, "skipping a broker config change");
                continue;
            }
            writes.put(&keys::runtime_config_key(&key), value.as_bytes());
            permission_changed |= key == crate::runtime_config::BROKER_PERMISSION;
            info!(key = %key, value = %value, "broker config changed");
            self.state.runtime_config.set(&key, &value);
        }
        if permission_changed {
            self.bump_version(writes)?;
        }
        Ok(())
    }

    /// Creates or replaces `configs`, in the store and in memory, as one topic-table change.
    fn put_topics(
        &self,
        configs: Vec<TopicConfig>,
        writes: &mut HookWrites<'_>,
    ) -> Result<(), HookError> {
        let mut topics = self.state.topics.write().unwrap();
        for config in configs {
            writes.put(
                format!("t/{}", config.topic_name).as_bytes(),
                &serde_json::to_vec(&config)?,
            );
            topics.insert(config.topic_name.clone(), config);
        }
        drop(topics);
        self.bump_version(writes)
    }

    fn bump_version(&self, writes: &mut HookWrites<'_>) -> Result<(), HookError> {
        let mut v = self.state.data_version.write().unwrap();
        v.counter += 1;
        writes.put(b"v", &serde_json::to_vec(&*v)?);
        Ok(())
    }
}

/// Reports a stored record this version cannot read. It is left out, and left in place
/// for an operator to inspect: one bad record must not stop the node.
pub(crate) fn skipped(key: &[u8], what: &str) {
    error!(
        key = %String::from_utf8_lossy(key).escape_debug(),
        what,
        "unreadable record in the meta store left out (written by an older version or a bug)"
    );
}

/// Every `prefix<name>` record whose value is JSON, by name.
fn load_json_table(
    store: &HookStore,
    prefix: &[u8],
    what: &str,
) -> Result<BTreeMap<String, serde_json::Value>, HookError> {
    let mut table = BTreeMap::new();
    for (key, value) in store.scan_prefix(prefix)? {
        let name = std::str::from_utf8(&key[prefix.len()..]).ok();
        match (name, serde_json::from_slice(&value)) {
            (Some(name), Ok(v)) => {
                table.insert(name.to_string(), v);
            }
            _ => skipped(&key, what),
        }
    }
    Ok(table)
}

impl BrokerHook {
    /// Resolves a pending timer or half `key` (deleting it with this batch): false if it
    /// was resolved already, in this entry or before.
    fn resolve(
        &self,
        key: &[u8],
        resolved_here: &mut Vec<Vec<u8>>,
        writes: &mut HookWrites<'_>,
    ) -> Result<bool, HookError> {
        if resolved_here.iter().any(|k| k == key) || !self.pending(key)? {
            return Ok(false);
        }
        writes.delete(key);
        resolved_here.push(key.to_vec());
        Ok(true)
    }

    /// Whether a timer or half key is still stored (not yet delivered or resolved).
    fn pending(&self, key: &[u8]) -> Result<bool, HookError> {
        let store = self.store.as_ref().ok_or("the hook was not opened")?;
        Ok(store.get(key)?.is_some())
    }

    fn load_topics(&self, store: &HookStore) -> Result<BTreeMap<String, TopicConfig>, HookError> {
        let mut topics = BTreeMap::new();
        for (key, value) in store.scan_prefix(b"t/")? {
            match serde_json::from_slice::<TopicConfig>(&value) {
                Ok(config) if key[2..] == *config.topic_name.as_bytes() => {
                    topics.insert(config.topic_name.clone(), config);
                }
                _ => skipped(&key, "topic config"),
            }
        }
        Ok(topics)
    }

    /// Consumer offsets, in today's form and in an older version's (queued for rewriting).
    fn load_offsets(&mut self, store: &HookStore) -> Result<HashMap<OffsetKey, i64>, HookError> {
        let mut offsets = HashMap::new();
        for (key, value) in store.scan_prefix(keys::OFFSET_PREFIX)? {
            match (keys::parse_offset_key(&key), keys::be_u64(&value)) {
                (Some(k), Some(v)) => {
                    offsets.insert(k, v as i64);
                }
                _ => skipped(&key, "consumer offset"),
            }
        }
        for (key, value) in store.scan_prefix(keys::LEGACY_OFFSET_PREFIX)? {
            match (keys::legacy_offset_key(&key), keys::be_u64(&value)) {
                (Some((group, topic, queue_id)), Some(v)) => {
                    let new_key = keys::offset_key(&group, &topic, queue_id);
                    self.migration.push((new_key, Some(value)));
                    self.migration.push((key, None));
                    offsets.entry((group, topic, queue_id)).or_insert(v as i64);
                }
                _ => skipped(&key, "consumer offset"),
            }
        }
        Ok(offsets)
    }

    /// How many entries each ConsumeQueue held at the applied point. A count that cannot be
    /// read is `None`: its queue is then kept as it is on disk rather than cut back to 0.
    fn load_queue_counts(
        &mut self,
        store: &HookStore,
    ) -> Result<HashMap<(String, i32), Option<u64>>, HookError> {
        let mut counts = HashMap::new();
        for (key, value) in store.scan_prefix(keys::QUEUE_PREFIX)? {
            match keys::parse_queue_key(&key) {
                Some(queue) => {
                    if keys::be_u64(&value).is_none() {
                        skipped(&key, "ConsumeQueue entry count");
                    }
                    counts.insert(queue, keys::be_u64(&value));
                }
                None => skipped(&key, "ConsumeQueue entry count"),
            }
        }
        for (key, value) in store.scan_prefix(keys::LEGACY_QUEUE_PREFIX)? {
            match (keys::legacy_queue_key(&key), keys::be_u64(&value)) {
                (Some((topic, queue_id)), Some(count)) => {
                    let new_key = keys::queue_key(&topic, queue_id);
                    self.migration.push((new_key, Some(value)));
                    self.migration.push((key, None));
                    counts.entry((topic, queue_id)).or_insert(Some(count));
                }
                _ => skipped(&key, "ConsumeQueue entry count"),
            }
        }
        Ok(counts)
    }

    /// Makes each ConsumeQueue hold exactly the entries applied with the last batch. A
    /// queue's stored count is as of the last ConsumeQueue sync, and the journal holds what
    /// was applied since: its records are written over the files (restoring whatever an OS
    /// crash lost of them, a tail or a page in the middle) and extend the counts, then
    /// anything past a count (a batch that did not reach RocksDB) is cut. The queues the
    /// journal extended are marked for the next sync, which stores their counts before it
    /// deletes the journal.
    fn repair_queues(
        &self,
        store: &HookStore,
        mut counts: HashMap<(String, i32), Option<u64>>,
    ) -> Result<(), HookError> {
        let mut restored = 0u64;
        let mut extended: Vec<(String, i32)> = Vec::new();
        let mut restore = |part: JournalPart| -> Result<(), HookError> {
            let end = part.first + part.entries.len() as u64;
            let queue = (part.topic, part.queue_id);
            match counts.get_mut(&queue) {
                // Unreadable: the queue is kept as it is on disk.
                Some(None) => return Ok(()),
                Some(Some(count)) if *count >= end => {}
                Some(Some(count)) => *count = end,
                None => {
                    counts.insert(queue.clone(), Some(end));
                }
            }
            if !part.entries.is_empty() {
                self.state
                    .consume_queues
                    .get_or_create(&queue.0, queue.1)?
                    .write_at(part.first, &part.entries)?;
                restored += part.entries.len() as u64;
                extended.push(queue);
            }
            Ok(())
        };
        // Records of versions before issue 21 first: they are older than any of today's.
        for (key, value) in store.scan_prefix(keys::LEGACY_JOURNAL_PREFIX)? {
            let (Some((topic, queue_id, _)), Some((first, entries))) = (
                keys::parse_legacy_journal_key(&key),
                crate::consume_queue::decode_legacy_journal(&value),
            ) else {
                skipped(&key, "ConsumeQueue journal record");
                continue;
            };
            restore(JournalPart {
                topic,
                queue_id,
                first,
                entries,
            })?;
        }
        for (key, value) in store.scan_prefix(keys::JOURNAL_PREFIX)? {
            let (Some(_), Some(parts)) = (
                keys::parse_journal_key(&key),
                crate::consume_queue::decode_journal(&value),
            ) else {
                skipped(&key, "ConsumeQueue journal record");
                continue;
            };
            for part in parts {
                restore(part)?;
            }
        }
        if restored > 0 {
            info!(
                entries = restored,
                "ConsumeQueue entries written again from the journal"
            );
        }
        for (topic, queue_id) in extended {
            if let Some(queue) = self.state.consume_queues.get(&topic, queue_id) {
                self.state.consume_queues.mark_dirty(&queue);
            }
        }
        for ((topic, queue_id), queue) in self.state.consume_queues.all() {
            let on_disk = queue.max_offset();
            let applied = match counts.remove(&(topic.clone(), queue_id)) {
                Some(Some(n)) => n,
                None => 0,
                Some(None) => {
                    warn!(%topic, queue_id, on_disk, "ConsumeQueue kept as found: its entry count was unreadable");
                    continue;
                }
            };
            if on_disk > applied {
                info!(%topic, queue_id, on_disk, applied, "cutting ConsumeQueue back to the applied point");
                queue.truncate(applied)?;
            } else if on_disk < applied {
                return Err(format!(
                    "ConsumeQueue {topic}/{queue_id} holds {on_disk} entries but {applied} were \
                     applied, and its journal does not cover the gap: it lost writes that were \
                     reported fsync'd (a failing disk?)"
                )
                .into());
            }
        }
        let missing = counts
            .into_iter()
            .find_map(|(queue, n)| n.filter(|n| *n > 0).map(|n| (queue, n)));
        if let Some(((topic, queue_id), applied)) = missing {
            return Err(format!(
                "ConsumeQueue {topic}/{queue_id} is missing but {applied} entries were applied"
            )
            .into());
        }
        Ok(())
    }
}

impl ApplyHook for BrokerHook {
    fn open(&mut self, store: &HookStore) -> Result<(), HookError> {
        self.store = Some(store.clone());
        let topics = self.load_topics(store)?;
        *self.state.topics.write().unwrap() = topics;
        if let Some(v) = store.get(b"v")? {
            match serde_json::from_slice(&v) {
                Ok(version) => *self.state.data_version.write().unwrap() = version,
                Err(e) => {
                    error!(error = %e, "unreadable topic table version left out; counting from 0")
                }
            }
        }
        let offsets = self.load_offsets(store)?;
        *self.state.offsets.write().unwrap() = offsets;
        let groups = load_json_table(store, b"g/", "subscription group")?;
        *self.state.subscription_groups.write().unwrap() = groups;
        for (key, value) in store.scan_prefix(b"l/")? {
            let node = std::str::from_utf8(&key[2..])
                .ok()
                .and_then(|n| n.parse::<u64>().ok());
            match (node, String::from_utf8(value)) {
                (Some(node), Ok(addr)) => {
                    self.state.leader_addrs.write().unwrap().insert(node, addr);
                }
                _ => skipped(&key, "leader address"),
            }
        }
        for (key, value) in store.scan_prefix(keys::RUNTIME_CONFIG_PREFIX)? {
            let name = std::str::from_utf8(&key[keys::RUNTIME_CONFIG_PREFIX.len()..]);
            match (name, std::str::from_utf8(&value)) {
                (Ok(name), Ok(value)) if crate::runtime_config::check(name, value).is_ok() => {
                    self.state.runtime_config.set(name, value)
                }
                _ => skipped(&key, "runtime broker config"),
            }
        }
        *self.state.queue_locks.write().unwrap() = QueueLocks::load(store)?;
        let counts = self.load_queue_counts(store)?;
        self.repair_queues(store, counts)?;
        if let Some(value) = store.get(keys::RETENTION_KEY)? {
            match keys::be_u64(&value) {
                Some(below) => self.state.retain(below)?,
                None => skipped(keys::RETENTION_KEY, "retention point"),
            }
        }
        self.state.opened.store(true, Ordering::Release);
        Ok(())
    }

    fn apply(
        &mut self,
        entry: &CommittedEntry<'_>,
        writes: &mut HookWrites<'_>,
    ) -> Result<Vec<HookResponse>, HookError> {
        for (key, value) in self.migration.drain(..) {
            match value {
                Some(value) => writes.put(&key, &value),
                None => writes.delete(&key),
            }
        }
        match &entry.payload {
            CommittedPayload::Records(records) => self.apply_records(records, writes),
            CommittedPayload::Command { bytes, .. } => self.apply_command(bytes, writes),
        }
    }

    fn snapshot_files(&self) -> Result<Vec<dledger::HookFile>, HookError> {
        let queues = &self.state.consume_queues;
        let store_path = queues.root().parent().unwrap_or(queues.root());
        Ok(queues
            .snapshot_files()?
            .into_iter()
            .filter_map(|(path, len)| {
                let path = path.strip_prefix(store_path).ok()?.to_path_buf();
                Some(dledger::HookFile { path, len })
            })
            .collect())
    }

    fn snapshot_dirs(&self) -> Vec<PathBuf> {
        let root = self.state.consume_queues.root();
        vec![PathBuf::from(root.file_name().unwrap_or(root.as_os_str()))]
    }

    fn before_install(&mut self) {
        self.state.consume_queues.installing();
    }

    fn reopen(&mut self, store: &HookStore) -> Result<(), HookError> {
        // The ConsumeQueues on disk are the snapshot's now, and so is every stored table.
        self.state.consume_queues.reload()?;
        self.state.leader_addrs.write().unwrap().clear();
        self.migration.clear();
        self.open(store)?;
        self.state.timer_added.notify_waiters();
        Ok(())
    }

    fn index_compaction_filter(&self) -> Option<dledger::IndexFilter> {
        Some(crate::retention::index_filter(
            self.state.retention_point.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers queues in first-seen order, across the switch from scanning to the map:
    /// 40 queues of two topics, visited three times in different orders.
    #[test]
    fn entry_queues_number_in_first_seen_order() {
        let topics = ["TopicA", "TopicB"];
        let mut keys: Vec<(&str, i32)> = Vec::new();
        for round in 0..3 {
            for i in 0..40 {
                let i = if round == 1 { 39 - i } else { (i * 7) % 40 };
                keys.push((topics[i % 2], (i / 2) as i32));
            }
        }
        let mut queues = EntryQueues::default();
        let mut seen: Vec<(&str, i32)> = Vec::new();
        for key in keys {
            let expected = seen.iter().position(|k| *k == key);
            let (slot, new) = queues.slot(key);
            match expected {
                Some(i) => assert_eq!((slot, new), (i, false), "{key:?}"),
                None => {
                    seen.push(key);
                    assert_eq!((slot, new), (seen.len() - 1, true), "{key:?}");
                }
            }
        }
        assert_eq!(queues.keys, seen);
        assert_eq!(queues.map.len(), 40);
    }
}
