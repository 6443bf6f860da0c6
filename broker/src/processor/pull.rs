//! PULL_MESSAGE (11), with long polling.
//!
//! Only applied, hence committed, messages are in a ConsumeQueue, so a pull never sees
//! an uncommitted message (invariant 2). A pull with nothing new and the suspend flag is
//! held up to `min(suspendTimeoutMillis, longPollingHoldMaxMs)` and answered as soon as
//! a message for its queue is applied. Records are read from the CommitLog at the
//! positions their ConsumeQueue entries give, checked against those entries (size and
//! magic), and their QUEUEOFFSET and PHYSICALOFFSET are filled in from the entry.

use std::collections::HashSet;
use std::time::Duration;

use bytes::BytesMut;
use remoting::header::{PullMessageRequestHeader, PullMessageResponseHeader};
use remoting::message::{patch_offsets, MAGIC_V1, MAGIC_V2};
use remoting::route::perm;
use remoting::{RemotingCommand, ResponseCode};
use tracing::error;

use super::pull_filter::{self, Subscription};
use super::{fail, ProcessResult};
use crate::broker::Broker;
use crate::consume_queue::CqEntry;

/// RocketMQ's PullSysFlag bits.
pub const FLAG_COMMIT_OFFSET: i32 = 1;
pub const FLAG_SUSPEND: i32 = 1 << 1;
pub const FLAG_SUBSCRIPTION: i32 = 1 << 2;

pub(super) enum Outcome {
    /// `count` messages in `body`; the last one ends at CommitLog position `pulled_end`.
    Found {
        body: BytesMut,
        next: u64,
        count: u64,
        pulled_end: u64,
    },
    NotFound {
        next: u64,
    },
    NoMatch {
        next: u64,
    },
    OffsetMoved {
        next: u64,
    },
}

pub async fn handle(
    broker: &Broker,
    conn: &remoting::Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let header: PullMessageRequestHeader = request.header()?;
    // `brokerPermission` without read (UPDATE_BROKER_CONFIG): RocketMQ's refusal.
    if broker.broker_permission() & perm::READ == 0 {
        return Err(fail(
            ResponseCode::NO_PERMISSION,
            format!(
                "the broker[{}] pulling message is forbidden",
                broker.config().broker_name
            ),
        ));
    }
    let Some(topic) = broker.topic(&header.topic) else {
        return Err(fail(
            ResponseCode::TOPIC_NOT_EXIST,
            format!("topic[{}] not exist, apply first please!", header.topic),
        ));
    };
    if topic.perm & perm::READ == 0 {
        return Err(fail(
            ResponseCode::NO_PERMISSION,
            format!("topic[{}] is not readable", header.topic),
        ));
    }
    if header.queue_id < 0 || header.queue_id >= topic.read_queue_nums {
        return Err(fail(
            ResponseCode::SYSTEM_ERROR,
            format!(
                "queueId[{}] is illegal, topic {} has {} read queues",
                header.queue_id, header.topic, topic.read_queue_nums
            ),
        ));
    }
    if header.sys_flag & FLAG_COMMIT_OFFSET != 0 && header.commit_offset >= 0 && broker.is_leader()
    {
        broker.commit_offset(
            &header.consumer_group,
            &header.topic,
            header.queue_id,
            header.commit_offset,
        );
    }
    let filter = match pull_filter::resolve(broker, &header)? {
        Subscription::Tag(expression) => Filter::Tag(HashFilter(expression.tag_hashes())),
        Subscription::Sql92(expression) => Filter::Sql92(expression),
    };
    let max_nums = header
        .max_msg_nums
        .clamp(1, broker.config().max_pull_msg_nums) as usize;
    let max_bytes = header
        .max_msg_bytes
        .filter(|b| *b > 0)
        .map(|b| b as usize)
        .unwrap_or(usize::MAX)
        .min(broker.config().max_pull_bytes);
    // Read only with `slaveReadEnable`: the plain pull path does not pay for it.
    let role = broker.config().slave_read_enable.then(|| broker.role());
    // A follower that sends caught-up readers back to the leader (`suggest`) answers at
    // once: a held pull would keep them here.
    let sends_back = role
        .as_ref()
        .is_some_and(|r| r.role != dledger::Role::Leader && r.leader_id.is_some());
    let hold_ms = if header.sys_flag & FLAG_SUSPEND != 0 && !sends_back {
        (header.suspend_timeout_millis.max(0) as u64).min(broker.config().pull_hold_ms_max)
    } else {
        0
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(hold_ms);
    let offset = header.queue_offset.max(0) as u64;

    // Taken when the pull first waits, kept until it is answered.
    let mut held = None;
    // The last read's time, for GET_BROKER_RUNTIME_INFO (`crate::stats`).
    let mut read_took;
    let outcome = loop {
        // Register for a wake-up before looking, so that a creation or an append in between
        // is not missed: for the queue's creation first (a new topic's queue exists only
        // from its first message on), then for appends to it. Both are `notify_waiters`,
        // which wakes every `Notified` created before it, polled or not: creating one is
        // registering (an atomic load), with no lock on this path.
        let created = broker.queue_created();
        let queue = broker.consume_queue(&header.topic, header.queue_id);
        let wake = queue.as_ref().map(|q| q.appended.notified());
        let started = std::time::Instant::now();
        let outcome = read(
            broker,
            queue.as_deref(),
            offset,
            max_nums,
            max_bytes,
            &filter,
        )?;
        read_took = started.elapsed();
        let Outcome::NotFound { .. } = outcome else {
            break outcome;
        };
        if tokio::time::Instant::now() >= deadline {
            break outcome;
        }
        if held.is_none() {
            let place = broker
                .held_pulls()
                .hold(conn.id())
                .map_err(|why| fail(ResponseCode::SYSTEM_BUSY, why))?;
            held = Some(place);
            // Waiting is not work: the connection's other requests need not queue behind it.
            remoting::connection::release_request_slot();
        }
        // An append to the queue, or, while the queue does not exist, some queue's creation.
        let woken = async {
            match wake {
                Some(w) => w.await,
                None => created.await,
            }
        };
        tokio::select! {
            _ = tokio::time::timeout_at(deadline, woken) => {}
            // No one is left to answer: give back the place now, not at the deadline.
            _ = conn.closed() => break outcome,
        }
    };

    let (min, max) = broker.queue_bounds(&header.topic, header.queue_id);
    let pulled_end = match &outcome {
        Outcome::Found { pulled_end, .. } => Some(*pulled_end),
        _ => None,
    };
    let suggested = role.map_or(0, |role| suggest(broker, &role, pulled_end));
    let (code, next, body) = match outcome {
        Outcome::Found {
            body, next, count, ..
        } => {
            broker.stats().add_get(count, read_took);
            broker.stats_items().add_get(
                &header.topic,
                &header.consumer_group,
                count,
                body.len() as u64,
            );
            (broker.metrics().traffic).record_out(
                &header.topic,
                &header.consumer_group,
                count as usize,
                body.len(),
            );
            (ResponseCode::SUCCESS, next, body.freeze())
        }
        Outcome::NotFound { next } => {
            broker.stats().add_get(0, read_took);
            (ResponseCode::PULL_NOT_FOUND, next, Default::default())
        }
        Outcome::NoMatch { next } => {
            broker.stats().add_get(0, read_took);
            (
                ResponseCode::PULL_RETRY_IMMEDIATELY,
                next,
                Default::default(),
            )
        }
        Outcome::OffsetMoved { next } => {
            broker.stats().add_get(0, read_took);
            (ResponseCode::PULL_OFFSET_MOVED, next, Default::default())
        }
    };
    // A follower sending a reader back that has nothing for it: pull again, now, from
    // the leader (RocketMQ's slave answers PULL_RETRY_IMMEDIATELY).
    let code = match (sends_back && suggested == 0, code) {
        (true, ResponseCode::PULL_NOT_FOUND) => ResponseCode::PULL_RETRY_IMMEDIATELY,
        (_, code) => code,
    };
    Ok(RemotingCommand::response(code, None)
        .with_header(&PullMessageResponseHeader {
            suggest_which_broker_id: suggested,
            next_begin_offset: next as i64,
            min_offset: min as i64,
            max_offset: max as i64,
        })
        .with_body(body))
}

/// Physical memory, for `accessMessageInMemoryMaxRatio`.
fn physical_memory() -> u64 {
    static MEMORY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *MEMORY.get_or_init(|| {
        // SAFETY: sysconf reads a system constant; it has no preconditions.
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        (pages.max(0) as u64).saturating_mul(page.max(0) as u64)
    })
}

/// The broker id a pull's answer suggests for the queue's next pull (RocketMQ's
/// `suggestWhichBrokerId`, 0 = the leader), with `slaveReadEnable` on. A reader whose last
/// message lies more than `accessMessageInMemoryMaxRatio` % of physical memory behind
/// this node's applied end is lagging: it is sent to a follower, and kept there until it
/// has caught up, then sent back to the leader. With no follower, or no leader known,
/// always the leader.
///
/// A follower is named in the name servers' numbering, which clients route by: the
/// leader is 0 and the other members 1, 2, ... (in address order). Every member names 1
/// (RocketMQ's default `whichBrokerWhenConsumeSlowly`), so a reader stays on the member
/// the leader sent it to, and cold reads load one follower only: the other keeps
/// acknowledging appends at full speed, and a commit needs just one of them (spreading
/// queues over both followers cut the producers' throughput to 0.41x while a cold
/// consumer read: docs/PERFORMANCE.md).
fn suggest(broker: &Broker, role: &dledger::RoleState, pulled_end: Option<u64>) -> i64 {
    let config = broker.config();
    let behind = |end: u64| {
        let (applied, _) = broker.log_positions();
        let bound = physical_memory() / 100 * config.access_message_in_memory_max_ratio as u64;
        applied.saturating_sub(end) > bound
    };
    if role.leader_id.is_none() || !pulled_end.is_some_and(behind) {
        return 0;
    }
    match broker.members().voters.len() {
        0 | 1 => 0,
        _ => 1,
    }
}

fn read(
    broker: &Broker,
    queue: Option<&crate::consume_queue::ConsumeQueue>,
    offset: u64,
    max_nums: usize,
    max_bytes: usize,
    filter: &Filter,
) -> Result<Outcome, super::ProcessError> {
    let (min, max) = queue.map_or((0, 0), |q| (q.min_offset(), q.max_offset()));
    if offset < min {
        return Ok(Outcome::OffsetMoved { next: min });
    }
    if offset >= max {
        // Past the end of this replica's queue. A follower, or a leader that has not
        // applied all it has written (just elected, or busy), may simply be behind: the
        // consumer keeps its offset and waits, as RocketMQ's slaves answer. Only an
        // up-to-date leader moves it (RocketMQ's master rule: to 0 while the queue still
        // holds its first message, else to the end). Moving a consumer to 0 because it
        // asked a lagging replica would re-deliver the whole queue.
        return Ok(if offset == max || !broker.is_up_to_date_leader() {
            Outcome::NotFound { next: offset }
        } else {
            Outcome::OffsetMoved {
                next: if min == 0 { 0 } else { max },
            }
        });
    }
    let queue = queue.expect("a queue with entries exists");
    let filter = match filter {
        Filter::Tag(hashes) => hashes,
        Filter::Sql92(expression) => {
            return pull_filter::scan_sql92(broker, queue, offset, max_nums, max_bytes, expression)
        }
    };
    // Scan a bounded window of entries for matches.
    let scan = (max_nums * 4).max(64);
    let entries = queue
        .read(offset, scan)
        .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))?;
    // Retention moved the queue's minimum past these entries while they were read (the
    // minimum moves at apply, before the segments are deleted): answer as below the minimum.
    if entries
        .first()
        .is_some_and(|e| (e.commit_log_offset as u64) < broker.commit_log_start())
    {
        return Ok(Outcome::OffsetMoved {
            next: queue.min_offset().max(offset),
        });
    }
    let mut body = BytesMut::new();
    let mut taken = 0usize;
    let mut next = offset;
    let mut pulled_end = 0;
    let mut run: Vec<(u64, CqEntry)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if taken == max_nums
            || (taken > 0 && body.len() + run_bytes(&run) + entry.size as usize > max_bytes)
        {
            break;
        }
        next = offset + i as u64 + 1;
        if !filter.matches(entry.tag_hash) {
            continue;
        }
        // Coalesce records that lie back to back in the CommitLog into one read.
        if let Some((_, last)) = run.last() {
            if last.commit_log_offset + last.size as i64 != entry.commit_log_offset {
                flush_run(broker, &mut run, &mut body)?;
            }
        }
        run.push((offset + i as u64, *entry));
        pulled_end = entry.commit_log_offset as u64 + entry.size as u64;
        taken += 1;
    }
    flush_run(broker, &mut run, &mut body)?;
    Ok(if taken > 0 {
        Outcome::Found {
            body,
            next,
            count: taken as u64,
            pulled_end,
        }
    } else {
        Outcome::NoMatch { next }
    })
}

/// What a pull filters by: the tag code in each ConsumeQueue entry, or a SQL92
/// expression on each record's properties ([`pull_filter`]).
enum Filter {
    Tag(HashFilter),
    Sql92(remoting::sql92::Sql92Filter),
}

/// The broker's half of tag filtering: by the tag code in each ConsumeQueue entry.
struct HashFilter(Option<HashSet<i64>>);

impl HashFilter {
    fn matches(&self, tag_hash: i64) -> bool {
        self.0.as_ref().is_none_or(|set| set.contains(&tag_hash))
    }
}

fn run_bytes(run: &[(u64, CqEntry)]) -> usize {
    run.iter().map(|(_, e)| e.size as usize).sum()
}

fn flush_run(
    broker: &Broker,
    run: &mut Vec<(u64, CqEntry)>,
    body: &mut BytesMut,
) -> Result<(), super::ProcessError> {
    let Some((_, first)) = run.first() else {
        return Ok(());
    };
    let total = run_bytes(run);
    let bytes = broker
        .read_commit_log(first.commit_log_offset as u64, total)
        .map_err(|e| {
            fail(
                ResponseCode::SYSTEM_ERROR,
                format!("reading the CommitLog: {e}"),
            )
        })?;
    if bytes.len() != total {
        return Err(corrupt(first, "short read"));
    }
    let mut at = 0usize;
    for (queue_offset, entry) in run.iter() {
        let record = &bytes[at..at + entry.size as usize];
        // Pair assertion: what the ConsumeQueue says must be what the CommitLog holds.
        let size = i32::from_be_bytes(record[0..4].try_into().unwrap());
        let magic = u32::from_be_bytes(record[4..8].try_into().unwrap());
        if size != entry.size || (magic != MAGIC_V1 && magic != MAGIC_V2) {
            return Err(corrupt(
                entry,
                "record does not match its ConsumeQueue entry",
            ));
        }
        let start = body.len();
        body.extend_from_slice(record);
        patch_offsets(
            &mut body[start..],
            *queue_offset as i64,
            entry.commit_log_offset,
        );
        at += entry.size as usize;
    }
    run.clear();
    Ok(())
}

pub(super) fn corrupt(entry: &CqEntry, what: &str) -> super::ProcessError {
    error!(
        commit_log_offset = entry.commit_log_offset,
        size = entry.size,
        what,
        "ConsumeQueue and CommitLog disagree"
    );
    fail(
        ResponseCode::SYSTEM_ERROR,
        format!(
            "store inconsistency at commit log offset {}: {what}",
            entry.commit_log_offset
        ),
    )
}
