//! The checker: reads a history (see [`crate::history`]) and decides whether the
//! cluster kept its promises.
//!
//! What it proves, from the history alone (the drained queues are `recv` events of the
//! `drain` consumer, which read every queue from offset 0 after healing):
//!
//! - **lost**: a value acknowledged (`ok`) but absent from the drained queues; and
//!   **misplaced**: present, but not at the queue and offset its acknowledgement named.
//! - **unexpected**: a value some consumer received that was never sent; and
//!   **failed but stored**: every attempt of a value failed definitely, yet it is stored.
//! - **divergent**: a push or pull consumer received, at some queue offset, a value
//!   other than the one stored there after healing (it read data that was later
//!   truncated: an uncommitted read).
//! - **order**: the drained queues hold offsets 0, 1, 2, ... with no gap; each
//!   consumer's offsets in each queue strictly increase (a repeat of an offset it
//!   already had is a re-delivery, not a reorder); each sharding key's acknowledged
//!   ordered sends sit at increasing offsets (**reordered**) in one queue (**ordered
//!   key moved**: a key whose sends went to two queues cannot be consumed in order).
//! - **not delivered**: acknowledged values a push or pull consumer never received.
//! - **scheduled**: no delivered timer message was stored in its topic before its due
//!   time (**delivered early**), and each acknowledged one is stored exactly once
//!   (**delayed stored twice**; its producer never retries, so a second copy can only be
//!   a repeated delivery). Its acknowledgement names the schedule queue it waited in,
//!   so it is not checked for placement.
//! - **retries**: the retry consumer fails chosen values of its topic a chosen number of
//!   times ([`failures_for`]). For every acknowledged one, its listener saw each try it
//!   was allowed (RECONSUMETIMES 0, 1, ... up to its failures or [`RETRY_MAX`]); the
//!   broker's retry copies never go past [`RETRY_MAX`]; it is in the dead-letter queue
//!   exactly when it failed more than [`RETRY_MAX`] times; values never failed have no
//!   copy. A try seen twice (a consumer may receive a message twice) is reported, not
//!   failed, and so is a try the client retried locally because it could not give the
//!   message back (as the Java client does during a failover). A value the client had to
//!   re-send to `%RETRY%` itself after its last allowed-but-one try is dead-lettered by the
//!   broker at once, as RocketMQ's does (its RECONSUME_TIME reached the maximum): such a
//!   dead letter carries RECONSUMETIMES [`RETRY_MAX`] instead of one more, and its last try
//!   is not required (counted as "dead-lettered a try early").
//! - **orderly**: the orderly consumers of the ordered topic (one group, several clients,
//!   each listener call a `processed` event with its start and end). No two clients'
//!   calls on one queue overlap in time (**orderly overlap**: the queue locks failed);
//!   no call takes an offset beyond one past the highest offset already taken in its
//!   queue, and a suspended offset comes again before any later one (**orderly out of
//!   order**); each acknowledged value of the topic is taken (**not delivered to
//!   orderly**). A new owner may start again from the committed offset (re-deliveries
//!   are counted, not failed).
//! - **transactions**: the transactional producer's local transaction commits, rolls
//!   back or answers unknown for each value, and its check listener gives the final
//!   answer ([`txn_decision`]). An acknowledged half whose transaction commits is stored
//!   in its topic exactly once (**transaction commit lost / stored twice**: a commit
//!   forgotten across a failover, or applied twice); a value whose transaction rolls back
//!   is never stored there (**rolled-back transaction delivered**), whatever its half's
//!   send outcome; an unacknowledged one that commits is stored at most once.
//! - **liveness**: after every heal, the group elected a leader and acknowledged a send
//!   within the tool's bounds (the run records a `liveness:` note otherwise).
//! - **access** (runs with `--acl`): after the faults, sends that are unsigned, signed
//!   with a wrong secret or by an unknown account were refused with NO_PERMISSION, and a
//!   signed one was accepted (the run records an `access:` note otherwise).
//! - **quorum**: no send invoked while two of a group's three nodes were down was
//!   acknowledged by that group.
//! - **duplicated** (reported, not a failure): values stored more than once, split into
//!   retries of unknown sends and unexplained copies; values a consumer received more
//!   than once, split into re-deliveries of one offset and copies stored twice.
//! - **recovery** per fault: from the first failed or unknown send at or after the
//!   fault (invoked after the previous fault was healed) to the next acknowledged send
//!   invoked after it; and the longest gap between two acknowledgements of the fault's
//!   group, which shows unavailability even when sends only waited.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::history::{Event, QueueRef, SendKind};

/// The consumer that reads every queue from 0 after healing.
pub const DRAIN: &str = "drain";

/// The prefix of a note saying service did not return in time; it fails the run.
pub const LIVENESS: &str = "liveness: ";

/// The prefix of a note saying the ACL let through what it should have refused (or
/// refused the workload's own account); it fails the run.
pub const ACCESS: &str = "access: ";

/// Tries the retry consumer gives a message after its first (`maxReconsumeTimes`).
pub const RETRY_MAX: i32 = 2;

/// How many times the retry consumer fails `value` (by its sequence number): every 40th
/// always (it ends in the DLQ), every 40th from the 20th once, the rest never.
pub fn failures_for(value: &str) -> Option<i32> {
    let seq: u64 = value.rsplit('-').next()?.parse().ok()?;
    match seq % 40 {
        0 => Some(i32::MAX),
        20 => Some(1),
        _ => None,
    }
}

/// What the transactional producer's local transaction answers for a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnAnswer {
    Commit,
    Rollback,
    /// Unknown: the broker checks it back, and the check listener decides.
    Unknown,
}

/// The local transaction's answer for `value` and whether its transaction finally
/// commits, by its sequence number: 0 mod 4 commits at once, 1 rolls back at once,
/// 2 is unknown then committed at check-back, 3 unknown then rolled back.
pub fn txn_decision(value: &str) -> Option<(TxnAnswer, bool)> {
    let seq: u64 = value.rsplit('-').next()?.parse().ok()?;
    Some(match seq % 4 {
        0 => (TxnAnswer::Commit, true),
        1 => (TxnAnswer::Rollback, false),
        2 => (TxnAnswer::Unknown, true),
        _ => (TxnAnswer::Unknown, false),
    })
}

/// Examples kept per finding, so a report stays readable.
const EXAMPLES_MAX: usize = 10;

/// Replica agreement of one group, measured outside the history.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ReplicaCheck {
    pub group: String,
    /// Where the comparison starts: the latest first kept position of the replicas
    /// (retention deletes old segments on each replica in its own time).
    #[serde(default)]
    pub from_position: u64,
    /// CommitLog bytes from `from_position` (trailing zero fill trimmed) per node.
    pub lengths_bytes: Vec<usize>,
    pub identical: bool,
    /// Not identical, but every replica's bytes are a prefix of the longest one's: some
    /// replica stopped before an entry reached it (an uncommitted tail, or a last entry
    /// not yet replicated when the nodes stopped).
    #[serde(default)]
    pub tail_only: bool,
    /// Whether `tail_only` passes: in runs with retention the leader keeps proposing
    /// retention decisions, so the nodes never stop at one quiet point.
    #[serde(default)]
    pub tail_allowed: bool,
}

/// Counts with a few examples.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Finding {
    pub count: usize,
    pub examples: Vec<String>,
}

impl Finding {
    fn add(&mut self, example: impl FnOnce() -> String) {
        self.count += 1;
        if self.examples.len() < EXAMPLES_MAX {
            self.examples.push(example());
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Duplicates {
    /// Values stored at more than one queue offset after an unknown attempt was retried.
    pub stored_by_retry_of_unknown: usize,
    /// Values stored more than once with no retry to explain it.
    pub stored_unexplained: Finding,
    /// Per consumer: receipts of an offset it had already received (re-delivery after
    /// failover or rebalance).
    pub redelivered: BTreeMap<String, usize>,
    /// Per consumer: values received at two different offsets (stored twice).
    pub received_stored_twice: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Recovery {
    pub id: u32,
    pub fault: String,
    pub target: String,
    pub start_ms: f64,
    pub end_ms: Option<f64>,
    /// None: no send failed or was unknown in the fault's window.
    pub disrupted_at_ms: Option<f64>,
    /// None with `disrupted_at_ms` set: no send was acknowledged afterwards.
    pub recovery_ms: Option<f64>,
    /// The longest time without any acknowledgement from the fault's group, from the
    /// last one before the fault to the next fault (or the end): unavailability even
    /// when sends only waited and none failed.
    pub ack_gap_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoveryStats {
    pub faults: usize,
    pub disrupted: usize,
    pub never_recovered: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub ack_gap_p50_ms: f64,
    pub ack_gap_p99_ms: f64,
    pub ack_gap_max_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    pub sends_invoked: usize,
    pub values: usize,
    pub acked: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Unknown attempts whose value turned out stored / not stored.
    pub unknown_stored: usize,
    pub unknown_not_stored: usize,
    pub stored_messages: usize,
    /// Messages consumers received that carry another run's tag (values left in an
    /// attached cluster by earlier runs); not checked.
    pub foreign: usize,
    pub received: BTreeMap<String, usize>,
    pub lost: Finding,
    /// Under retention (`--retention-seconds`): acknowledged values absent because
    /// retention may have deleted them (sent more than the retention before the end).
    pub expired: usize,
    /// Under retention: acknowledged values below their queue's first kept offset that
    /// were sent too recently for retention to delete them.
    pub expired_early: Finding,
    /// Snapshots the nodes installed (counted in their logs after the run).
    pub snapshot_installs: usize,
    pub misplaced: Finding,
    pub unexpected: Finding,
    pub failed_but_stored: Finding,
    pub divergent: Finding,
    pub reordered: Finding,
    /// A sharding key whose acknowledged ordered sends went to more than one queue: no
    /// consumer can see them in order.
    pub ordered_key_moved: Finding,
    pub not_delivered: BTreeMap<String, Finding>,
    pub acked_without_quorum: Finding,
    /// Scheduled messages stored in their topic before their due time.
    pub delivered_early: Finding,
    /// Timer messages stored in their topic more than once.
    pub delayed_twice: Finding,
    /// Timer messages acknowledged (each checked for its delivery).
    pub delayed_acked: usize,
    /// Whether the run had a retry consumer (any `retried` event).
    pub retries_checked: bool,
    /// Failed values whose allowed tries the consumer did not all see, or whose retry
    /// copies went past the limit (or exist though the value never failed).
    pub retries_wrong: Finding,
    /// Values in the DLQ that should not be, or missing from it.
    pub dead_letters_wrong: Finding,
    /// Tries the consumer saw more than once.
    pub retries_repeated: usize,
    /// Values dead-lettered one try early by a client's fallback re-send (see
    /// [`check_retries`]); reported, not failed.
    pub dead_lettered_early: usize,
    /// Transactional halves acknowledged.
    pub txn_acked: usize,
    /// Acknowledged transactions that commit, not stored exactly once in their topic (or
    /// unacknowledged ones stored more than once).
    pub txn_commit_wrong: Finding,
    /// Transactions that roll back, stored in their topic.
    pub txn_rolled_back_stored: Finding,
    /// Listener calls of the orderly consumers.
    pub orderly_calls: usize,
    /// Calls of two orderly clients on one queue that overlapped in time.
    pub orderly_overlap: Finding,
    /// Orderly calls that skipped ahead of the queue's order.
    pub orderly_out_of_order: Finding,
    /// Offsets the orderly group took more than once (a new owner starting again from the
    /// committed offset).
    pub orderly_redelivered: usize,
    /// Acknowledged values the retry consumer was to fail, checked above.
    pub retried_values: usize,
    pub duplicates: Duplicates,
    pub faults_by_kind: BTreeMap<String, usize>,
    pub recovery: Vec<Recovery>,
    pub recovery_stats: RecoveryStats,
    pub recovery_by_kind: BTreeMap<String, RecoveryStats>,
    pub replicas: Vec<ReplicaCheck>,
    pub notes: Vec<String>,
    /// Notes of the run that say service did not return in time (`liveness: ...`).
    pub liveness: Vec<String>,
    /// Notes of the run that say the ACL did not hold (`access: ...`).
    pub access: Vec<String>,
    pub passed: bool,
}

impl Verdict {
    pub fn reordered_count(&self) -> usize {
        self.reordered.count
    }

    /// Why the run failed, one reason per line; empty when it passed.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |name: &str, f: &Finding| {
            if f.count > 0 {
                out.push(format!(
                    "{name}: {} (e.g. {})",
                    f.count,
                    f.examples.join("; ")
                ));
            }
        };
        check("lost", &self.lost);
        check("misplaced", &self.misplaced);
        check("unexpected", &self.unexpected);
        check("failed but stored", &self.failed_but_stored);
        check("divergent", &self.divergent);
        check("reordered", &self.reordered);
        check(
            "ordered key moved to another queue",
            &self.ordered_key_moved,
        );
        check("acknowledged without quorum", &self.acked_without_quorum);
        check("delivered before due", &self.delivered_early);
        check("delayed message stored twice", &self.delayed_twice);
        check("retries wrong", &self.retries_wrong);
        check("expired early", &self.expired_early);
        check("dead-letter queue wrong", &self.dead_letters_wrong);
        check("orderly overlap", &self.orderly_overlap);
        check(
            "transaction commit lost or stored twice",
            &self.txn_commit_wrong,
        );
        check(
            "rolled-back transaction delivered",
            &self.txn_rolled_back_stored,
        );
        check("orderly out of order", &self.orderly_out_of_order);
        for (consumer, f) in &self.not_delivered {
            check(&format!("not delivered to {consumer}"), f);
        }
        for r in &self.replicas {
            if !(r.identical || r.tail_only && r.tail_allowed) {
                out.push(format!(
                    "replicas of {} disagree: CommitLog lengths from position {} {:?}",
                    r.group, r.from_position, r.lengths_bytes
                ));
            }
        }
        for problem in &self.liveness {
            out.push(format!("liveness: {problem}"));
        }
        for problem in &self.access {
            out.push(format!("access: {problem}"));
        }
        if self.replicas.is_empty() {
            out.push("replica agreement was not checked".into());
        }
        out
    }
}

/// What the retry consumer and the broker did with one value.
#[derive(Debug, Clone, Default)]
struct Retries {
    /// RECONSUMETIMES of each delivery to the retry consumer's listener.
    seen: Vec<i32>,
    /// RECONSUMETIMES of each copy in the retry topic.
    copies: Vec<i32>,
    /// Copies in the dead-letter queue.
    dead: usize,
    /// Whether one of them carries RECONSUMETIMES [`RETRY_MAX`] (see [`check_retries`]).
    dead_by_fallback: bool,
}

/// The retry consumer's deliveries and the broker's copies against what
/// [`failures_for`] allowed each value.
fn check_retries(
    v: &mut Verdict,
    sends: &BTreeMap<String, Send>,
    retried: &BTreeMap<String, Retries>,
    expiry: &Expiry,
) {
    let topic = crate::workload::RETRY_TOPIC;
    for (value, s) in sends {
        if s.topic != topic || s.acks.is_empty() {
            continue;
        }
        let fails = failures_for(value).unwrap_or(0);
        if fails > 0 {
            v.retried_values += 1;
        }
        let r = retried.get(value).cloned().unwrap_or_default();
        // A dead letter normally carries RECONSUMETIMES max + 1 (the broker's copy of the
        // last try, which carried max). One carrying max came another way, RocketMQ's: a
        // failed CONSUMER_SEND_MSG_BACK (a fault at that moment) makes the client re-send
        // the message to %RETRY% itself with RECONSUME_TIME = its try + 1, and the broker
        // dead-letters such a send once that reaches the maximum: one try early.
        let last_try = if r.dead_by_fallback && fails > RETRY_MAX {
            v.dead_lettered_early += 1;
            RETRY_MAX - 1
        } else {
            fails.min(RETRY_MAX)
        };
        let allowed: BTreeSet<i32> = (0..=last_try).collect();
        let seen: BTreeSet<i32> = r.seen.iter().copied().collect();
        v.retries_repeated += r.seen.len() - seen.len();
        // Retention may have deleted a retry copy before it was consumed, or a dead letter.
        let may_be_gone = expiry.may_be_gone(value);
        if fails > 0 && !allowed.is_subset(&seen) && !may_be_gone {
            v.retries_wrong.add(|| {
                format!(
                    "{value} (fails {fails}): tries seen {:?}, allowed {allowed:?}",
                    r.seen
                )
            });
        }
        let beyond = r.copies.iter().any(|t| *t > RETRY_MAX || *t > fails);
        if beyond || (fails == 0 && !r.copies.is_empty()) {
            v.retries_wrong.add(|| {
                format!(
                    "{value} (fails {fails}): retry copies with RECONSUMETIMES {:?}",
                    r.copies
                )
            });
        }
        let should_be_dead = fails > RETRY_MAX;
        if should_be_dead != (r.dead > 0) && !(should_be_dead && may_be_gone) {
            v.dead_letters_wrong
                .add(|| format!("{value} (fails {fails}): {} copies in the DLQ", r.dead));
        }
    }
    for value in retried.keys() {
        if !sends.contains_key(value) {
            v.unexpected
                .add(|| format!("retry copy of {value:?}, never sent"));
        }
    }
}

/// One transactional value against [`txn_decision`]: `copies` is how often it is stored
/// in its topic.
fn check_transaction(v: &mut Verdict, value: &str, s: &Send, copies: usize, may_be_gone: bool) {
    let commits = txn_decision(value).is_some_and(|(_, commits)| commits);
    let acked = !s.acks.is_empty();
    if acked {
        v.txn_acked += 1;
    }
    if !commits && copies > 0 {
        v.txn_rolled_back_stored
            .add(|| format!("{value}: rolled back, stored {copies} times"));
    }
    if commits && acked && copies == 0 && may_be_gone {
        v.expired += 1;
    } else if commits && ((acked && copies != 1) || copies > 1) {
        v.txn_commit_wrong.add(|| {
            format!("{value}: commits (half acknowledged: {acked}), stored {copies} times")
        });
    }
}

/// One listener call of an orderly consumer, for one message.
#[derive(Debug, Clone)]
struct Processed {
    start_us: u64,
    end_us: u64,
    consumer: String,
    queue: QueueRef,
    offset: i64,
    value: String,
    suspended: bool,
    /// Sent by this run (not a value an attached cluster kept from an earlier one).
    ours: bool,
}

/// The orderly consumers' calls: no overlap between clients on one queue, no skipping
/// ahead, every acknowledged value of the ordered topic taken (module doc).
fn check_orderly(
    v: &mut Verdict,
    sends: &BTreeMap<String, Send>,
    stored_at: &BTreeMap<(QueueRef, i64), String>,
    processed: Vec<Processed>,
    expiry: &Expiry,
) {
    v.orderly_calls = processed.len();
    let mut by_queue: BTreeMap<QueueRef, Vec<Processed>> = BTreeMap::new();
    let mut taken: BTreeSet<&str> = BTreeSet::new();
    for p in &processed {
        if !p.suspended {
            taken.insert(p.value.as_str());
        }
        if p.ours
            && !expiry.gone(&p.queue, p.offset)
            && stored_at.get(&(p.queue.clone(), p.offset)) != Some(&p.value)
        {
            v.divergent.add(|| {
                format!(
                    "{} took {} at {}@{}; stored there: {:?}",
                    p.consumer,
                    p.value,
                    p.queue,
                    p.offset,
                    stored_at.get(&(p.queue.clone(), p.offset))
                )
            });
        }
    }
    for p in processed.iter().cloned() {
        by_queue.entry(p.queue.clone()).or_default().push(p);
    }
    for (queue, mut calls) in by_queue {
        calls.sort_by_key(|c| (c.start_us, c.end_us));
        // The latest end of each client's calls so far: a call of another client that
        // starts before it overlaps.
        let mut last_end: BTreeMap<&str, (u64, i64)> = BTreeMap::new();
        for c in &calls {
            for (other, (end, offset)) in &last_end {
                if *other != c.consumer && *end > c.start_us {
                    v.orderly_overlap.add(|| {
                        format!(
                            "{queue}: {} took offset {} at {:.1} ms while {other} ran offset {offset} until {:.1} ms",
                            c.consumer,
                            c.offset,
                            ms(c.start_us),
                            ms(*end)
                        )
                    });
                }
            }
            let entry = last_end.entry(c.consumer.as_str()).or_insert((0, c.offset));
            *entry = (entry.0.max(c.end_us), c.offset);
        }
        // Order: the first call sets where the group started; after that no call goes
        // past one beyond the highest offset taken, and a suspended offset is the next
        // one called.
        let mut highest: Option<i64> = None;
        let mut pending_suspended: Option<i64> = None;
        let mut seen: BTreeSet<i64> = BTreeSet::new();
        for c in &calls {
            if let Some(s) = pending_suspended {
                if c.offset > s {
                    v.orderly_out_of_order.add(|| {
                        format!(
                            "{queue}: {} took offset {} while offset {s} was suspended",
                            c.consumer, c.offset
                        )
                    });
                }
            }
            if let Some(h) = highest {
                if c.offset > h + 1 {
                    v.orderly_out_of_order.add(|| {
                        format!(
                            "{queue}: {} took offset {} when the highest taken was {h}",
                            c.consumer, c.offset
                        )
                    });
                }
            }
            if c.suspended {
                pending_suspended = Some(c.offset);
                continue;
            }
            if pending_suspended.is_some_and(|s| c.offset >= s) {
                pending_suspended = None;
            }
            if !seen.insert(c.offset) {
                v.orderly_redelivered += 1;
            }
            highest = Some(highest.map_or(c.offset, |h| h.max(c.offset)));
        }
    }
    let mut missing = Finding::default();
    for (value, s) in sends {
        if s.topic == crate::workload::ORDERED_TOPIC
            && !s.acks.is_empty()
            && !taken.contains(value.as_str())
            && !expiry.may_be_gone(value)
        {
            missing.add(|| value.clone());
        }
    }
    v.not_delivered.insert("orderly".into(), missing);
}

#[derive(Default)]
struct Send {
    topic: String,
    kind: Option<SendKind>,
    sharding_key: Option<String>,
    /// attempt -> invoke time
    invoked_us: BTreeMap<u32, u64>,
    acks: Vec<(u32, QueueRef, i64)>,
    failed: usize,
    unknown: usize,
}

/// What retention may have taken (`--retention-seconds`; nothing without it).
#[derive(Default)]
struct Expiry {
    retention_us: u64,
    /// Each drained queue's first kept offset, where it is not 0, and when the drain
    /// found it.
    queue_min: BTreeMap<QueueRef, (i64, u64)>,
    /// Values whose every attempt was invoked long enough before the end of the run
    /// that retention may have deleted them.
    expirable: BTreeSet<String>,
    /// A fill-disk fault ran: forced deletion may have taken unexpired segments.
    forced: bool,
}

impl Expiry {
    /// How much sooner than the retention after its last write a segment may go: its age
    /// is its file's modification time, which an mmap write sets only when a clean page
    /// is first written (ASYNC_FLUSH cleans them every flush interval).
    const SLACK_US: u64 = 3_000_000;

    fn new(
        retention_ms: Option<u64>,
        queue_min: BTreeMap<QueueRef, (i64, u64)>,
        end_us: u64,
        sends: &BTreeMap<String, Send>,
        forced: bool,
    ) -> Expiry {
        let Some(retention_ms) = retention_ms else {
            return Expiry::default();
        };
        let retention_us = retention_ms * 1000;
        let cutoff = (end_us + Self::SLACK_US).saturating_sub(retention_us);
        Expiry {
            retention_us,
            queue_min,
            expirable: sends
                .iter()
                .filter(|(_, s)| s.invoked_us.values().all(|t| *t < cutoff))
                .map(|(value, _)| value.clone())
                .collect(),
            forced,
        }
    }

    fn first_kept(&self, queue: &QueueRef) -> i64 {
        self.queue_min.get(queue).map_or(0, |m| m.0)
    }

    /// Whether a value last invoked at `invoked_us` may be gone from `queue`: the drain
    /// found the queue long enough after it.
    fn old_enough(&self, queue: &QueueRef, invoked_us: u64) -> bool {
        self.queue_min.get(queue).is_some_and(|(_, drained_us)| {
            invoked_us + self.retention_us <= drained_us + Self::SLACK_US
        })
    }

    /// Offset `offset` of `queue` lies below the first kept one.
    fn gone(&self, queue: &QueueRef, offset: i64) -> bool {
        offset < self.first_kept(queue)
    }

    /// `value` may be absent because retention deleted it.
    fn may_be_gone(&self, value: &str) -> bool {
        self.expirable.contains(value)
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn stats(recoveries: &[&Recovery]) -> RecoveryStats {
    let mut times: Vec<f64> = recoveries.iter().filter_map(|r| r.recovery_ms).collect();
    times.sort_by(f64::total_cmp);
    let mut gaps: Vec<f64> = recoveries.iter().map(|r| r.ack_gap_ms).collect();
    gaps.sort_by(f64::total_cmp);
    RecoveryStats {
        ack_gap_p50_ms: percentile(&gaps, 50.0),
        ack_gap_p99_ms: percentile(&gaps, 99.0),
        ack_gap_max_ms: gaps.last().copied().unwrap_or(0.0),
        faults: recoveries.len(),
        disrupted: recoveries
            .iter()
            .filter(|r| r.disrupted_at_ms.is_some())
            .count(),
        never_recovered: recoveries
            .iter()
            .filter(|r| r.disrupted_at_ms.is_some() && r.recovery_ms.is_none())
            .count(),
        p50_ms: percentile(&times, 50.0),
        p99_ms: percentile(&times, 99.0),
        max_ms: times.last().copied().unwrap_or(0.0),
    }
}

/// Checks a history. `replicas` comes from comparing CommitLogs after a clean stop.
pub fn check(events: &[Event], replicas: Vec<ReplicaCheck>) -> Verdict {
    let mut v = Verdict {
        replicas,
        ..Default::default()
    };
    let mut sends: BTreeMap<String, Send> = BTreeMap::new();
    // (completion time, invoke time, broker_name) of every ack, in time order.
    let mut acks: Vec<(u64, u64, String)> = Vec::new();
    // (completion time, invoke time) of every failed or unknown attempt.
    let mut troubles: Vec<(u64, u64)> = Vec::new();
    let mut receipts: BTreeMap<String, Vec<(QueueRef, i64, String)>> = BTreeMap::new();
    let mut faults: Vec<(u32, String, String, u64, Option<u64>)> = Vec::new();
    let mut retried: BTreeMap<String, Retries> = BTreeMap::new();
    let mut processed: Vec<Processed> = Vec::new();
    let mut retention_ms: Option<u64> = None;
    let mut queue_min: BTreeMap<QueueRef, (i64, u64)> = BTreeMap::new();

    let mut tag: Option<String> = None;
    for event in events {
        match event {
            Event::Invoke {
                t_us,
                value,
                topic,
                kind,
                sharding_key,
                attempt,
            } => {
                v.sends_invoked += 1;
                let s = sends.entry(value.clone()).or_default();
                s.topic = topic.clone();
                s.kind = Some(*kind);
                s.sharding_key = sharding_key.clone();
                s.invoked_us.insert(*attempt, *t_us);
            }
            Event::Ok {
                t_us,
                value,
                attempt,
                queue,
                queue_offset,
                ..
            } => {
                v.acked += 1;
                let s = sends.entry(value.clone()).or_default();
                s.acks.push((*attempt, queue.clone(), *queue_offset));
                let invoked = s.invoked_us.get(attempt).copied().unwrap_or(*t_us);
                acks.push((*t_us, invoked, queue.broker_name.clone()));
            }
            Event::Fail {
                t_us,
                value,
                attempt,
                ..
            }
            | Event::Unknown {
                t_us,
                value,
                attempt,
                ..
            } => {
                let s = sends.entry(value.clone()).or_default();
                if matches!(event, Event::Fail { .. }) {
                    v.failed += 1;
                    s.failed += 1;
                } else {
                    v.unknown += 1;
                    s.unknown += 1;
                }
                let invoked = s.invoked_us.get(attempt).copied().unwrap_or(*t_us);
                troubles.push((*t_us, invoked));
            }
            Event::Recv { value, .. }
                if tag.as_deref().is_some_and(|tag| {
                    value
                        .strip_prefix(tag)
                        .and_then(|v| v.strip_prefix('.'))
                        .is_none()
                }) =>
            {
                v.foreign += 1;
            }
            Event::Recv {
                consumer,
                queue,
                queue_offset,
                value,
                due_ms,
                stored_ms,
                ..
            } => {
                if let (Some(due), Some(stored)) = (due_ms, stored_ms) {
                    if stored < due && consumer == DRAIN {
                        v.delivered_early.add(|| {
                            format!(
                                "{value} stored at {stored}, due at {due} ({} ms early)",
                                due - stored
                            )
                        });
                    }
                }
                receipts.entry(consumer.clone()).or_default().push((
                    queue.clone(),
                    *queue_offset,
                    value.clone(),
                ));
            }
            Event::Processed {
                t_us,
                start_us,
                consumer,
                queue,
                queue_offset,
                value,
                suspended,
            } => processed.push(Processed {
                start_us: *start_us,
                end_us: *t_us,
                consumer: consumer.clone(),
                queue: queue.clone(),
                offset: *queue_offset,
                value: value.clone(),
                suspended: *suspended,
                ours: tag.as_deref().is_none_or(|tag| {
                    value
                        .strip_prefix(tag)
                        .and_then(|v| v.strip_prefix('.'))
                        .is_some()
                }),
            }),
            Event::Retried {
                value,
                place,
                reconsume_times,
                ..
            } => {
                v.retries_checked = true;
                let r = retried.entry(value.clone()).or_default();
                match place.as_str() {
                    "consumer" => r.seen.push(*reconsume_times),
                    "retry" => r.copies.push(*reconsume_times),
                    _ => {
                        r.dead += 1;
                        r.dead_by_fallback |= *reconsume_times == RETRY_MAX;
                    }
                }
            }
            Event::FaultStart {
                t_us,
                id,
                fault,
                target,
            } => {
                faults.push((*id, fault.clone(), target.clone(), *t_us, None));
            }
            Event::FaultEnd { t_us, id, .. } => {
                if let Some(f) = faults.iter_mut().rev().find(|f| f.0 == *id) {
                    f.4 = Some(*t_us);
                }
            }
            Event::Start { tag: t, .. } => tag = Some(t.clone()),
            Event::Retention {
                retention_ms: r, ..
            } => retention_ms = Some(*r),
            Event::QueueMin {
                t_us,
                queue,
                min_offset,
            } => {
                queue_min.insert(queue.clone(), (*min_offset, *t_us));
            }
            Event::Note { text, .. } => {
                if let Some(problem) = text.strip_prefix(LIVENESS) {
                    v.liveness.push(problem.to_string());
                }
                if let Some(problem) = text.strip_prefix(ACCESS) {
                    v.access.push(problem.to_string());
                }
                v.notes.push(text.clone());
            }
        }
    }
    v.values = sends.len();
    let end_us = events.iter().map(Event::t_us).max().unwrap_or(0);
    let forced = faults.iter().any(|f| f.1 == "fill-disk");
    let expiry = Expiry::new(retention_ms, queue_min, end_us, &sends, forced);
    for (consumer, list) in &receipts {
        v.received.insert(consumer.clone(), list.len());
    }

    // The store, as drained: place -> value, value -> places.
    let drained = receipts.get(DRAIN).cloned().unwrap_or_default();
    v.stored_messages = drained.len();
    let mut stored_at: BTreeMap<(QueueRef, i64), String> = BTreeMap::new();
    let mut places: BTreeMap<String, Vec<(QueueRef, i64)>> = BTreeMap::new();
    let mut per_queue: BTreeMap<QueueRef, Vec<i64>> = BTreeMap::new();
    for (queue, offset, value) in &drained {
        stored_at.insert((queue.clone(), *offset), value.clone());
        places
            .entry(value.clone())
            .or_default()
            .push((queue.clone(), *offset));
        per_queue.entry(queue.clone()).or_default().push(*offset);
    }
    for (queue, offsets) in &per_queue {
        let first = expiry.first_kept(queue);
        for (i, offset) in offsets.iter().enumerate() {
            if *offset != first + i as i64 {
                v.reordered.add(|| {
                    format!("drained {queue}: offset {offset} at position {i} (gap or repeat)")
                });
                break;
            }
        }
    }

    for (value, s) in &sends {
        let stored = places.get(value);
        let delayed = s.kind == Some(SendKind::Delayed);
        let txn = s.kind == Some(SendKind::Transactional);
        let may_be_gone = expiry.may_be_gone(value);
        if txn {
            check_transaction(&mut v, value, s, stored.map_or(0, Vec::len), may_be_gone);
        }
        if delayed && !s.acks.is_empty() {
            v.delayed_acked += 1;
        }
        if delayed && stored.is_some_and(|p| p.len() > 1) {
            v.delayed_twice
                .add(|| format!("{value} stored at {:?}", stored.unwrap_or(&Vec::new())));
        }
        let mut expired = false;
        for (attempt, queue, offset) in &s.acks {
            match stored {
                // Acknowledged at its schedule queue (or its half queue); delivered to
                // its topic later. Transactions are checked by `check_transaction`.
                Some(_) if delayed => {}
                _ if txn => {}
                None if delayed && may_be_gone => expired = true,
                None if !delayed && expiry.gone(queue, *offset) => {
                    let invoked = s.invoked_us.values().copied().max().unwrap_or(0);
                    if expiry.old_enough(queue, invoked) || expiry.forced {
                        expired = true;
                    } else {
                        v.expired_early.add(|| {
                            format!(
                                "{value} (acked at {queue}@{offset}, first kept offset {})",
                                expiry.first_kept(queue)
                            )
                        });
                    }
                }
                None => v
                    .lost
                    .add(|| format!("{value} (acked at {queue}@{offset}, attempt {attempt})")),
                Some(p) if !p.contains(&(queue.clone(), *offset)) => v
                    .misplaced
                    .add(|| format!("{value} acked at {queue}@{offset}, stored at {p:?}")),
                Some(_) => {}
            }
        }
        if expired {
            v.expired += 1;
        }
        if s.unknown > 0 {
            if stored.is_some() {
                v.unknown_stored += s.unknown;
            } else {
                v.unknown_not_stored += s.unknown;
            }
        }
        if let Some(p) = stored {
            if s.acks.is_empty() && s.unknown == 0 && s.failed > 0 {
                v.failed_but_stored
                    .add(|| format!("{value}: {} definite failures, stored at {p:?}", s.failed));
            }
            if p.len() > 1 {
                if s.invoked_us.len() > 1 && s.unknown > 0 {
                    v.duplicates.stored_by_retry_of_unknown += 1;
                } else {
                    v.duplicates
                        .stored_unexplained
                        .add(|| format!("{value} stored at {p:?}"));
                }
            }
        }
    }

    // Consumers.
    for (consumer, list) in &receipts {
        let mut seen: BTreeMap<QueueRef, BTreeSet<i64>> = BTreeMap::new();
        let mut max_offset: BTreeMap<QueueRef, i64> = BTreeMap::new();
        let mut value_places: BTreeMap<&str, BTreeSet<(QueueRef, i64)>> = BTreeMap::new();
        let mut redelivered = 0;
        for (queue, offset, value) in list {
            if !sends.contains_key(value) {
                v.unexpected
                    .add(|| format!("{consumer} got {value:?} at {queue}@{offset}"));
            }
            if consumer != DRAIN && !expiry.gone(queue, *offset) {
                match stored_at.get(&(queue.clone(), *offset)) {
                    Some(stored) if stored == value => {}
                    other => v.divergent.add(|| {
                        format!(
                            "{consumer} got {value} at {queue}@{offset}; stored there: {other:?}"
                        )
                    }),
                }
            }
            let offsets = seen.entry(queue.clone()).or_default();
            if offsets.contains(offset) {
                redelivered += 1;
            } else {
                let max = max_offset.entry(queue.clone()).or_insert(-1);
                if *offset < *max {
                    v.reordered
                        .add(|| format!("{consumer} got {queue}@{offset} after offset {max}"));
                }
                *max = (*max).max(*offset);
                offsets.insert(*offset);
            }
            value_places
                .entry(value.as_str())
                .or_default()
                .insert((queue.clone(), *offset));
        }
        v.duplicates
            .redelivered
            .insert(consumer.clone(), redelivered);
        v.duplicates.received_stored_twice.insert(
            consumer.clone(),
            value_places.values().filter(|p| p.len() > 1).count(),
        );
        if consumer != DRAIN {
            let mut missing = Finding::default();
            for (value, s) in &sends {
                let rolled_back = s.kind == Some(SendKind::Transactional)
                    && !txn_decision(value).is_some_and(|(_, commits)| commits);
                if !s.acks.is_empty()
                    && !rolled_back
                    && !value_places.contains_key(value.as_str())
                    && !expiry.may_be_gone(value)
                {
                    missing.add(|| value.clone());
                }
            }
            v.not_delivered.insert(consumer.clone(), missing);
        }
    }

    if v.retries_checked {
        check_retries(&mut v, &sends, &retried, &expiry);
    }
    if !processed.is_empty() {
        check_orderly(&mut v, &sends, &stored_at, processed, &expiry);
    }

    // Ordered sends: each key's acknowledged values, in invocation order, in one queue
    // at increasing offsets.
    let mut by_key: BTreeMap<&str, Vec<(u64, &str, &QueueRef, i64)>> = BTreeMap::new();
    for (value, s) in &sends {
        if let (Some(SendKind::Ordered), Some(key)) = (s.kind, s.sharding_key.as_deref()) {
            for (attempt, queue, offset) in &s.acks {
                let invoked = s.invoked_us.get(attempt).copied().unwrap_or(0);
                by_key
                    .entry(key)
                    .or_default()
                    .push((invoked, value.as_str(), queue, *offset));
            }
        }
    }
    for (key, mut list) in by_key {
        list.sort();
        for pair in list.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if a.2 != b.2 {
                v.ordered_key_moved.add(|| {
                    format!(
                        "key {key}: {} at {}@{} then {} at {}@{}",
                        a.1, a.2, a.3, b.1, b.2, b.3
                    )
                });
            } else if a.3 >= b.3 {
                v.reordered.add(|| {
                    format!(
                        "key {key}: {} at {}@{} then {} at {}@{}",
                        a.1, a.2, a.3, b.1, b.2, b.3
                    )
                });
            }
        }
    }

    // Faults: quorum and recovery.
    let last_ack_us = acks.iter().map(|a| a.0).max().unwrap_or(0);
    for (id, fault, target, start, end) in &faults {
        *v.faults_by_kind.entry(fault.clone()).or_default() += 1;
        let group = target.split('/').next().unwrap_or_default();
        if fault == "kill-two" {
            let end = end.unwrap_or(u64::MAX);
            for (done, invoked, broker) in &acks {
                if broker == group && *invoked >= *start && *done < end {
                    v.acked_without_quorum.add(|| {
                        format!(
                            "fault {id}: send invoked at {:.0} ms acked at {:.0} ms",
                            ms(*invoked),
                            ms(*done)
                        )
                    });
                }
            }
        }
        let next_start = faults
            .iter()
            .map(|f| f.3)
            .filter(|t| t > start)
            .min()
            .unwrap_or(u64::MAX);
        // Troubles of sends invoked before the previous fault was healed belong to it.
        let previous_end = faults
            .iter()
            .filter(|f| f.3 < *start)
            .filter_map(|f| f.4)
            .max()
            .unwrap_or(0);
        let disrupted = troubles
            .iter()
            .filter(|(done, invoked)| {
                *done >= *start && *done < next_start && *invoked >= previous_end
            })
            .map(|(_, invoked)| (*invoked).max(*start))
            .min();
        let recovered = disrupted.and_then(|d| {
            acks.iter()
                .filter(|(_, invoked, _)| *invoked >= d)
                .map(|(done, _, _)| *done)
                .min()
                .map(|done| ms(done - d))
        });
        let window_end = next_start.min(last_ack_us).max(*start);
        let mut group_acks = acks
            .iter()
            .filter(|(done, _, broker)| broker == group && *done <= window_end)
            .map(|(done, _, _)| *done)
            .collect::<Vec<_>>();
        group_acks.sort_unstable();
        let from = group_acks
            .iter()
            .copied()
            .filter(|t| t < start)
            .max()
            .unwrap_or(*start);
        let mut in_window = vec![from];
        in_window.extend(group_acks.into_iter().filter(|t| *t >= from));
        in_window.push(window_end);
        let ack_gap_ms = in_window
            .windows(2)
            .map(|w| ms(w[1].saturating_sub(w[0])))
            .fold(0.0, f64::max);
        v.recovery.push(Recovery {
            ack_gap_ms,
            id: *id,
            fault: fault.clone(),
            target: target.clone(),
            start_ms: ms(*start),
            end_ms: end.map(ms),
            disrupted_at_ms: disrupted.map(ms),
            recovery_ms: if disrupted.is_some() {
                recovered
            } else {
                Some(0.0)
            },
        });
    }
    let all: Vec<&Recovery> = v.recovery.iter().collect();
    v.recovery_stats = stats(&all);
    for kind in v.faults_by_kind.keys() {
        let of_kind: Vec<&Recovery> = v.recovery.iter().filter(|r| &r.fault == kind).collect();
        v.recovery_by_kind.insert(kind.clone(), stats(&of_kind));
    }

    v.passed = v.failures().is_empty();
    v
}

#[cfg(test)]
mod tests {
    //! Hand-made histories: each kind of violation is caught, and a clean history
    //! passes (a checker that cannot fail is a defect).
    use super::*;

    fn q(id: i32) -> QueueRef {
        QueueRef {
            topic: "T".into(),
            broker_name: "broker-a".into(),
            queue_id: id,
        }
    }

    fn invoke(t: u64, value: &str, attempt: u32) -> Event {
        Event::Invoke {
            t_us: t,
            value: value.into(),
            topic: "T".into(),
            kind: SendKind::Sync,
            sharding_key: None,
            attempt,
        }
    }

    fn ordered(t: u64, value: &str, key: &str) -> Event {
        Event::Invoke {
            t_us: t,
            value: value.into(),
            topic: "T".into(),
            kind: SendKind::Ordered,
            sharding_key: Some(key.into()),
            attempt: 1,
        }
    }

    fn ok(t: u64, value: &str, attempt: u32, queue: i32, offset: i64) -> Event {
        Event::Ok {
            t_us: t,
            value: value.into(),
            attempt,
            queue: q(queue),
            queue_offset: offset,
            latency_us: 1,
        }
    }

    fn unknown(t: u64, value: &str, attempt: u32) -> Event {
        Event::Unknown {
            t_us: t,
            value: value.into(),
            attempt,
            error: "timeout".into(),
            latency_us: 1,
        }
    }

    fn fail(t: u64, value: &str) -> Event {
        Event::Fail {
            t_us: t,
            value: value.into(),
            attempt: 1,
            error: "refused".into(),
            latency_us: 1,
        }
    }

    fn recv(consumer: &str, queue: i32, offset: i64, value: &str) -> Event {
        Event::Recv {
            t_us: 0,
            consumer: consumer.into(),
            queue: q(queue),
            queue_offset: offset,
            value: value.into(),
            due_ms: None,
            stored_ms: None,
        }
    }

    /// A timer message `d0` acknowledged at its schedule queue (offset 9), then drained
    /// from queue 1 at `offsets`, stored at `stored_ms` and due at 1000.
    fn delayed(offsets: &[i64], stored_ms: i64) -> Vec<Event> {
        let mut h = clean();
        h.push(Event::Invoke {
            t_us: 5,
            value: "d0".into(),
            topic: "ChaosDelayed".into(),
            kind: SendKind::Delayed,
            sharding_key: None,
            attempt: 1,
        });
        h.push(ok(6, "d0", 1, 0, 9));
        for (i, offset) in offsets.iter().enumerate() {
            for consumer in ["push", DRAIN] {
                if consumer == "push" && i > 0 {
                    continue;
                }
                h.push(Event::Recv {
                    t_us: 7,
                    consumer: consumer.into(),
                    queue: q(1),
                    queue_offset: *offset,
                    value: "d0".into(),
                    due_ms: Some(1_000),
                    stored_ms: Some(stored_ms),
                });
            }
        }
        h
    }

    /// A value of the retry consumer's topic, acknowledged and stored; the tries its
    /// listener saw, its retry copies and its copies in the DLQ.
    fn retried(value: &str, seen: &[i32], copies: &[i32], dead: usize) -> Vec<Event> {
        let mut h = clean();
        h.push(Event::Invoke {
            t_us: 5,
            value: value.into(),
            topic: crate::workload::RETRY_TOPIC.into(),
            kind: SendKind::Sync,
            sharding_key: None,
            attempt: 1,
        });
        h.push(ok(6, value, 1, 0, 2));
        h.push(recv("push", 0, 2, value));
        h.push(recv(DRAIN, 0, 2, value));
        let events = seen
            .iter()
            .map(|r| ("consumer", *r))
            .chain(copies.iter().map(|r| ("retry", *r)))
            .chain((0..dead).map(|_| ("dlq", RETRY_MAX + 1)));
        for (i, (place, reconsume_times)) in events.enumerate() {
            h.push(Event::Retried {
                t_us: 10 + i as u64,
                value: value.into(),
                place: place.into(),
                reconsume_times,
            });
        }
        h
    }

    #[test]
    fn retries_one_per_allowed_try_then_the_dlq_pass() {
        assert_eq!(failures_for("t.p3-40"), Some(i32::MAX));
        assert_eq!(failures_for("t.p3-60"), Some(1));
        assert_eq!(failures_for("t.p3-61"), None);
        for (value, seen, copies, dead) in [
            ("p0-40", &[0, 1, 2][..], &[1, 2][..], 1),
            ("p0-20", &[0, 1][..], &[1][..], 0),
            // Given back only once: the client tried again locally.
            ("p0-20", &[0, 1][..], &[][..], 0),
        ] {
            let v = check(&retried(value, seen, copies, dead), agree());
            assert!(v.passed, "{value}: {:?}", v.failures());
        }
        // A try seen twice (the consumer got the message twice) is reported, not failed.
        let v = check(&retried("p0-40", &[0, 1, 1, 2], &[1, 1, 2], 1), agree());
        assert!(v.passed, "{:?}", v.failures());
        assert_eq!(v.retries_repeated, 1);
    }

    /// A fault made CONSUMER_SEND_MSG_BACK fail after try 1 (the client tried once more
    /// locally, or not), the client re-sent with RECONSUME_TIME 2 and the broker put that
    /// straight into the DLQ: try 2 is never seen, and the dead letter says so by its
    /// RECONSUMETIMES (2, where the usual path gives 3). Accepted and counted; the same
    /// tries with a usual dead letter are not.
    #[test]
    fn a_dead_letter_from_a_fallback_re_send_may_skip_the_last_try() {
        let mut h = retried("p0-40", &[0, 1], &[], 0);
        h.push(Event::Retried {
            t_us: 50,
            value: "p0-40".into(),
            place: "dlq".into(),
            reconsume_times: RETRY_MAX,
        });
        let v = check(&h, agree());
        assert!(v.passed, "{:?}", v.failures());
        assert_eq!(v.dead_lettered_early, 1);
        let v = check(&retried("p0-40", &[0, 1], &[], 1), agree());
        assert!(
            !v.passed,
            "a usual dead letter with a try never seen passed"
        );
    }

    #[test]
    fn wrong_retries_and_dead_letters_are_caught() {
        for (value, seen, copies, dead, what) in [
            ("p0-40", &[0, 1][..], &[1][..], 1, "a try never seen"),
            (
                "p0-40",
                &[0, 1, 2][..],
                &[1, 2, 3][..],
                1,
                "a copy past the limit",
            ),
            ("p0-40", &[0, 1, 2][..], &[1, 2][..], 0, "not dead-lettered"),
            (
                "p0-20",
                &[0, 1][..],
                &[1][..],
                1,
                "dead-lettered after one failure",
            ),
            ("p0-21", &[][..], &[1][..], 0, "a copy though never failed"),
        ] {
            let v = check(&retried(value, seen, copies, dead), agree());
            assert!(!v.passed, "{what} passed");
            assert_eq!(
                v.retries_wrong.count + v.dead_letters_wrong.count,
                1,
                "{what}: {:?}",
                v.failures()
            );
        }
    }

    #[test]
    fn a_timer_message_delivered_once_when_due_passes() {
        let v = check(&delayed(&[0], 1_000), agree());
        assert!(v.passed, "{:?}", v.failures());
        assert_eq!(
            v.misplaced.count, 0,
            "a schedule queue's ack is not a placement"
        );
    }

    #[test]
    fn a_timer_message_stored_before_due_is_caught() {
        let v = check(&delayed(&[0], 999), agree());
        assert_eq!(v.delivered_early.count, 1, "{v:?}");
        assert!(!v.passed);
    }

    #[test]
    fn a_timer_message_delivered_twice_is_caught() {
        let v = check(&delayed(&[0, 1], 1_200), agree());
        assert_eq!(v.delayed_twice.count, 1, "{v:?}");
        assert!(!v.passed);
    }

    fn agree() -> Vec<ReplicaCheck> {
        vec![ReplicaCheck {
            group: "broker-a".into(),
            from_position: 0,
            lengths_bytes: vec![10, 10, 10],
            identical: true,
            tail_only: false,
            tail_allowed: false,
        }]
    }

    /// Two acked values, stored and delivered once each.
    fn clean() -> Vec<Event> {
        vec![
            invoke(1, "p0-0", 1),
            ok(2, "p0-0", 1, 0, 0),
            invoke(3, "p0-1", 1),
            ok(4, "p0-1", 1, 0, 1),
            recv("push", 0, 0, "p0-0"),
            recv("push", 0, 1, "p0-1"),
            recv(DRAIN, 0, 0, "p0-0"),
            recv(DRAIN, 0, 1, "p0-1"),
        ]
    }

    fn processed(consumer: &str, offset: i64, span: (u64, u64), suspended: bool) -> Event {
        Event::Processed {
            t_us: span.1,
            start_us: span.0,
            consumer: consumer.into(),
            queue: q(0),
            queue_offset: offset,
            value: format!("p0-{offset}"),
            suspended,
        }
    }

    /// The clean history plus `p0-2` at offset 2, and the orderly calls given.
    fn orderly(calls: Vec<Event>) -> Verdict {
        let mut h = clean();
        h.extend([
            invoke(5, "p0-2", 1),
            ok(6, "p0-2", 1, 0, 2),
            recv("push", 0, 2, "p0-2"),
            recv(DRAIN, 0, 2, "p0-2"),
        ]);
        h.extend(calls);
        check(&h, agree())
    }

    #[test]
    fn orderly_calls_in_order_with_a_suspension_and_a_handover_pass() {
        let v = orderly(vec![
            processed("a", 0, (0, 10), false),
            processed("a", 1, (10, 20), true),
            processed("a", 1, (40, 50), false),
            // The queue moves to b, which starts again from the committed offset.
            processed("b", 1, (60, 70), false),
            processed("b", 2, (70, 80), false),
        ]);
        assert!(v.passed, "{:?}", v.failures());
        assert_eq!((v.orderly_calls, v.orderly_redelivered), (5, 1));
    }

    #[test]
    fn overlapping_orderly_clients_are_caught() {
        let v = orderly(vec![
            processed("a", 0, (0, 10), false),
            processed("b", 1, (5, 15), false),
        ]);
        assert!(!v.passed);
        assert_eq!(v.orderly_overlap.count, 1, "{:?}", v.orderly_overlap);
    }

    #[test]
    fn orderly_calls_that_skip_or_pass_a_suspended_offset_are_caught() {
        let skip = orderly(vec![
            processed("a", 0, (0, 10), false),
            processed("a", 2, (10, 20), false),
        ]);
        assert_eq!(skip.orderly_out_of_order.count, 1);
        assert!(!skip.passed);
        let passed = orderly(vec![
            processed("a", 0, (0, 10), true),
            processed("a", 1, (20, 30), false),
        ]);
        assert_eq!(passed.orderly_out_of_order.count, 1);
        assert!(!passed.passed);
    }

    /// The clean history plus transactional values `t-<seq>` with their half acks, each
    /// stored (drained) at the given offsets of queue 1.
    fn transactions(values: &[(u64, bool, &[i64])]) -> Verdict {
        let mut h = clean();
        for (seq, acked, offsets) in values {
            let value = format!("t-{seq}");
            h.push(Event::Invoke {
                t_us: 5,
                value: value.clone(),
                topic: crate::workload::TXN_TOPIC.into(),
                kind: SendKind::Transactional,
                sharding_key: None,
                attempt: 1,
            });
            if *acked {
                h.push(ok(6, &value, 1, 0, 0));
            } else {
                h.push(unknown(6, &value, 1));
            }
            for offset in *offsets {
                h.push(recv("push", 1, *offset, &value));
                h.push(recv(DRAIN, 1, *offset, &value));
            }
        }
        check(&h, agree())
    }

    #[test]
    fn transactions_committed_once_and_rolled_back_never_pass() {
        // 0 and 2 commit, 1 and 3 roll back; 6 commits but its half's send was unknown
        // and never stored.
        let v = transactions(&[
            (0, true, &[0]),
            (1, true, &[]),
            (2, true, &[1]),
            (3, true, &[]),
            (6, false, &[]),
        ]);
        assert!(v.passed, "{:?}", v.failures());
        assert_eq!(v.txn_acked, 4);
    }

    #[test]
    fn a_lost_commit_a_double_commit_and_a_delivered_rollback_are_caught() {
        let lost = transactions(&[(0, true, &[])]);
        assert_eq!(lost.txn_commit_wrong.count, 1);
        assert!(!lost.passed);
        let twice = transactions(&[(2, false, &[0, 1])]);
        assert_eq!(twice.txn_commit_wrong.count, 1);
        let rolled_back = transactions(&[(3, true, &[0])]);
        assert_eq!(rolled_back.txn_rolled_back_stored.count, 1);
        assert!(!rolled_back.passed);
    }

    #[test]
    fn a_clean_history_passes() {
        let v = check(&clean(), agree());
        assert!(v.passed, "{:?}", v.failures());
        assert_eq!(v.acked, 2);
        assert_eq!(v.stored_messages, 2);
    }

    #[test]
    fn a_lost_message_is_caught() {
        let mut h = clean();
        h.retain(|e| !matches!(e, Event::Recv { value, .. } if value == "p0-1"));
        let v = check(&h, agree());
        assert_eq!(v.lost.count, 1, "{v:?}");
        assert!(!v.passed);
    }

    #[test]
    fn a_misplaced_ack_is_caught() {
        let mut h = clean();
        h[3] = ok(4, "p0-1", 1, 0, 7);
        let v = check(&h, agree());
        assert_eq!(v.misplaced.count, 1);
        assert!(!v.passed);
    }

    #[test]
    fn an_unexpected_message_is_caught() {
        let mut h = clean();
        h.push(recv(DRAIN, 0, 2, "ghost"));
        let v = check(&h, agree());
        assert_eq!(v.unexpected.count, 1);
        assert!(!v.passed);
    }

    #[test]
    fn a_definitely_failed_send_that_is_stored_is_caught() {
        let mut h = clean();
        h.push(invoke(5, "p0-2", 1));
        h.push(fail(6, "p0-2"));
        h.push(recv(DRAIN, 0, 2, "p0-2"));
        let v = check(&h, agree());
        assert_eq!(v.failed_but_stored.count, 1);
        assert!(!v.passed);
    }

    #[test]
    fn a_consumer_reorder_is_caught() {
        let mut h = clean();
        h.swap(4, 5);
        let v = check(&h, agree());
        assert_eq!(v.reordered.count, 1, "{:?}", v.reordered);
        assert!(!v.passed);
    }

    #[test]
    fn a_gap_in_a_drained_queue_is_caught() {
        let mut h = clean();
        h[7] = recv(DRAIN, 0, 2, "p0-1");
        h[3] = ok(4, "p0-1", 1, 0, 2);
        h[5] = recv("push", 0, 2, "p0-1");
        let v = check(&h, agree());
        assert_eq!(v.reordered.count, 1, "{:?}", v.reordered);
    }

    #[test]
    fn an_ordered_key_out_of_order_is_caught() {
        let h = vec![
            ordered(1, "p1-0", "k"),
            ok(2, "p1-0", 1, 0, 1),
            ordered(3, "p1-1", "k"),
            ok(4, "p1-1", 1, 0, 0),
            recv(DRAIN, 0, 0, "p1-1"),
            recv(DRAIN, 0, 1, "p1-0"),
        ];
        let v = check(&h, agree());
        assert_eq!(v.reordered.count, 1, "{:?}", v.reordered);
        assert!(!v.passed);
    }

    #[test]
    fn an_ordered_key_that_moves_queue_is_caught() {
        let h = vec![
            ordered(1, "p1-0", "k"),
            ok(2, "p1-0", 1, 0, 0),
            ordered(3, "p1-1", "k"),
            ok(4, "p1-1", 1, 1, 0),
            recv(DRAIN, 0, 0, "p1-0"),
            recv(DRAIN, 1, 0, "p1-1"),
        ];
        let v = check(&h, agree());
        assert_eq!(v.ordered_key_moved.count, 1);
        assert_eq!(v.reordered.count, 0);
        assert!(!v.passed);
    }

    #[test]
    fn duplicates_are_attributed() {
        let mut h = clean();
        // Re-delivery of offset 0 to the push consumer.
        h.push(recv("push", 0, 0, "p0-0"));
        // p0-2: attempt 1 unknown but stored, attempt 2 acked: stored twice.
        h.extend([
            invoke(5, "p0-2", 1),
            unknown(6, "p0-2", 1),
            invoke(7, "p0-2", 2),
            ok(8, "p0-2", 2, 0, 3),
            recv(DRAIN, 0, 2, "p0-2"),
            recv(DRAIN, 0, 3, "p0-2"),
            recv("push", 0, 2, "p0-2"),
            recv("push", 0, 3, "p0-2"),
        ]);
        // p0-3 stored twice with no retry.
        h.extend([
            invoke(9, "p0-3", 1),
            ok(10, "p0-3", 1, 1, 0),
            recv(DRAIN, 1, 0, "p0-3"),
            recv(DRAIN, 1, 1, "p0-3"),
            recv("push", 1, 0, "p0-3"),
        ]);
        let v = check(&h, agree());
        assert!(v.passed, "{:?}", v.failures());
        assert_eq!(v.duplicates.redelivered["push"], 1);
        assert_eq!(v.duplicates.stored_by_retry_of_unknown, 1);
        assert_eq!(v.duplicates.stored_unexplained.count, 1);
        assert_eq!(v.duplicates.received_stored_twice["push"], 1);
        assert_eq!(v.unknown_stored, 1);
    }

    #[test]
    fn an_uncommitted_read_and_a_missed_delivery_are_caught() {
        let mut h = clean();
        h[5] = recv("push", 0, 1, "p0-9");
        let v = check(&h, agree());
        assert_eq!(v.divergent.count, 1);
        assert_eq!(v.not_delivered["push"].count, 1);
        assert!(!v.passed);
    }

    #[test]
    fn an_ack_without_quorum_is_caught() {
        let mut h = vec![Event::FaultStart {
            t_us: 0,
            id: 1,
            fault: "kill-two".into(),
            target: "broker-a/n0,n1".into(),
        }];
        h.extend(clean());
        h.push(Event::FaultEnd {
            t_us: 100,
            id: 1,
            fault: "kill-two".into(),
        });
        let v = check(&h, agree());
        assert_eq!(v.acked_without_quorum.count, 2);
    }

    #[test]
    fn a_liveness_note_fails_the_run() {
        let mut h = clean();
        h.push(Event::Note {
            t_us: 9,
            text: format!("{LIVENESS}fault #3: no ack within 30000 ms after healing"),
        });
        let v = check(&h, agree());
        assert_eq!(v.liveness.len(), 1);
        assert!(!v.passed);
    }

    #[test]
    fn an_access_note_fails_the_run() {
        let mut h = clean();
        h.push(Event::Note {
            t_us: 9,
            text: format!("{ACCESS}an unsigned send was accepted"),
        });
        let v = check(&h, agree());
        assert_eq!(v.access.len(), 1);
        assert!(!v.passed);
    }

    #[test]
    fn replica_disagreement_fails_the_run() {
        let v = check(
            &clean(),
            vec![ReplicaCheck {
                group: "broker-a".into(),
                from_position: 0,
                lengths_bytes: vec![10, 9, 10],
                identical: false,
                tail_only: true,
                tail_allowed: false,
            }],
        );
        assert!(!v.passed);
    }

    #[test]
    fn a_missing_tail_passes_only_where_allowed() {
        let replica = |tail_only, tail_allowed| ReplicaCheck {
            group: "broker-a".into(),
            from_position: 1 << 20,
            lengths_bytes: vec![10, 9, 10],
            identical: false,
            tail_only,
            tail_allowed,
        };
        assert!(check(&clean(), vec![replica(true, true)]).passed);
        assert!(!check(&clean(), vec![replica(false, true)]).passed);
        assert!(!check(&clean(), vec![replica(true, false)]).passed);
    }

    /// Three values in queue 0 (offsets 0-2) under 30 s of retention; the drain found the
    /// queue starting at offset 2 and the run ended at `end_us`.
    fn retention_history(end_us: u64) -> Vec<Event> {
        vec![
            Event::Retention {
                t_us: 0,
                retention_ms: 30_000,
            },
            invoke(1_000, "p0-0", 1),
            ok(2_000, "p0-0", 1, 0, 0),
            invoke(3_000, "p0-1", 1),
            ok(4_000, "p0-1", 1, 0, 1),
            invoke(5_000, "p0-2", 1),
            ok(6_000, "p0-2", 1, 0, 2),
            Event::QueueMin {
                t_us: end_us - 1,
                queue: q(0),
                min_offset: 2,
            },
            recv(DRAIN, 0, 2, "p0-2"),
            Event::Note {
                t_us: end_us,
                text: "end".into(),
            },
        ]
    }

    #[test]
    fn values_below_the_first_kept_offset_expire_once_old_enough() {
        // 60 s after the sends: older than 30 s of retention less the 10 s of slack.
        let v = check(&retention_history(60_000_000), agree());
        assert!(v.passed, "{:?}", v.failures());
        assert_eq!((v.expired, v.lost.count), (2, 0));
        assert_eq!(
            v.reordered.count, 0,
            "the drain starts at the first kept offset"
        );

        // 15 s after the sends: too young for retention to have taken them.
        let v = check(&retention_history(15_000_000), agree());
        assert!(!v.passed);
        assert_eq!(v.expired_early.count, 2, "{:?}", v.expired_early);
    }

    #[test]
    fn an_old_value_missing_at_or_above_the_first_kept_offset_is_lost() {
        let mut h = retention_history(60_000_000);
        h.retain(|e| !matches!(e, Event::Recv { .. }));
        let v = check(&h, agree());
        assert_eq!(v.lost.count, 1, "{:?}", v.lost);
        assert!(!v.passed);
    }

    #[test]
    fn without_retention_a_queue_that_starts_late_loses_values() {
        let mut h = retention_history(60_000_000);
        h.retain(|e| !matches!(e, Event::Retention { .. }));
        let v = check(&h, agree());
        assert_eq!(v.expired, 0);
        assert!(
            !v.passed,
            "values below the first kept offset: {:?}",
            v.failures()
        );
    }

    #[test]
    fn recovery_runs_from_first_trouble_to_next_ack() {
        let h = vec![
            Event::FaultStart {
                t_us: 1_000,
                id: 1,
                fault: "kill-leader".into(),
                target: "broker-a/n0".into(),
            },
            invoke(2_000, "p0-0", 1),
            unknown(5_000, "p0-0", 1),
            invoke(5_000, "p0-1", 1),
            ok(9_000, "p0-1", 1, 0, 0),
            recv(DRAIN, 0, 0, "p0-1"),
        ];
        let v = check(&h, agree());
        // From p0-0's invocation (2 ms) to p0-1's ack (9 ms).
        assert_eq!(v.recovery[0].recovery_ms, Some(7.0));
        assert_eq!(v.recovery_stats.max_ms, 7.0);
        // No ack from the fault (1 ms) to p0-1's (9 ms).
        assert_eq!(v.recovery[0].ack_gap_ms, 8.0);
    }
}
