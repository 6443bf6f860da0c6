//! Retention: which CommitLog segments go, decided by the leader and carried out by every
//! replica through the Raft log.
//!
//! Owns the decision ([`decide`]: RocketMQ's `CleanCommitLogService` rules over whole
//! segments), the leader's task that makes it every `cleanResourceInterval` ms or when an
//! operator asks ([`run`]), the task on every replica that purges the Raft log once a
//! decision is applied ([`purge`]), and the index compaction filter ([`index_filter`]).
//!
//! Why through the log: the retention point is state a new leader must know (DESIGN.md's
//! one rule), and every replica must drop the same bytes so that their CommitLogs stay
//! byte-identical from the first kept segment. So the leader decides a position B (the
//! start of the first segment to keep) and proposes `BrokerCommand::Retain { below: B }`;
//! applying it on every replica stores B in the applied batch (key `R`), moves each
//! ConsumeQueue's minimum to its first entry at or above B and deletes ConsumeQueue files
//! wholly below it. Only then does each replica purge its Raft log below B
//! (`DLedgerNode::purge_below`, outside the apply hook, which runs inside openraft's
//! state-machine worker), which deletes the segment files. A replica that stops between
//! the two purges again when it starts, since its stored B is ahead of its first segment.
//!
//! Promises: B is segment-aligned, never inside the segment being written, never past what
//! the leader has applied, and never past the oldest scheduled message (timer, delay level,
//! retry) or transaction half still pending, since those are read back from the CommitLog
//! when due. B only grows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::broker::Broker;
use crate::command::BrokerCommand;
use crate::keys;

/// Most segments one pass deletes (RocketMQ's `DELETE_FILES_BATCH_MAX`).
pub const MAX_SEGMENTS_PER_PASS: usize = 10;

/// Passes after a DELETE_EXPIRED_COMMITLOG that count as "time to delete" (RocketMQ's
/// `MAX_MANUAL_DELETE_FILE_TIMES`).
pub const MANUAL_PASSES: u32 = 20;

/// Timer and half keys read per RocksDB scan while looking for the oldest pending one.
const SCAN_CHUNK: usize = 4096;

/// The hours of `deleteWhen` (`04;05`), or `None` for `*`: every hour.
pub fn parse_delete_when(text: &str) -> Result<Option<Vec<u32>>, String> {
    if text.trim() == "*" {
        return Ok(None);
    }
    let mut hours = Vec::new();
    for word in text.split(';').map(str::trim).filter(|w| !w.is_empty()) {
        match word.parse::<u32>() {
            Ok(h) if h < 24 => hours.push(h),
            _ => {
                return Err(format!(
                    "`{word}` is not an hour 0..=23 (or `*` for every hour)"
                ))
            }
        }
    }
    if hours.is_empty() {
        return Err("no hour given (use `*` for every hour)".into());
    }
    Ok(Some(hours))
}

/// The retention rules, from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// `fileReservedTime` (or `fileReservedTimeSeconds`) in ms.
    pub file_reserved_ms: u64,
    /// `deleteWhen`; `None`: every hour.
    pub delete_hours: Option<Vec<u32>>,
    /// `diskMaxUsedSpaceRatio` (%).
    pub disk_max_used_space_ratio: f64,
    /// `diskSpaceCleanForciblyRatio` (%).
    pub disk_space_clean_forcibly_ratio: f64,
}

impl Policy {
    pub fn from_config(config: &crate::BrokerConfig) -> Self {
        Policy {
            file_reserved_ms: config.file_reserved_ms(),
            delete_hours: parse_delete_when(&config.delete_when).unwrap_or(Some(vec![4])),
            disk_max_used_space_ratio: f64::from(config.disk_max_used_space_ratio),
            disk_space_clean_forcibly_ratio: f64::from(config.disk_space_clean_forcibly_ratio),
        }
    }
}

/// One CommitLog segment as the decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start_position: u64,
    pub end_position: u64,
    /// When it was last written (its file's mtime), ms since the epoch.
    pub last_write_ms: u64,
}

/// What the leader knows when it decides.
#[derive(Debug, Clone)]
pub struct Situation {
    /// Every stored segment, oldest first; the last one is being written.
    pub segments: Vec<Segment>,
    pub now_ms: u64,
    /// The local hour now (0..=23), for `deleteWhen`.
    pub hour: u32,
    /// Used share of the store's filesystem (%).
    pub disk_used_percent: f64,
    /// An operator asked (DELETE_EXPIRED_COMMITLOG) within the last [`MANUAL_PASSES`].
    pub manual: bool,
    /// No segment ending above this may go: min(applied point, oldest pending timer,
    /// oldest pending transaction half).
    pub keep_from: u64,
}

/// The start of the first segment to keep, if any segment should go now.
///
/// RocketMQ's rules: expired segments (last write older than `fileReservedTime`) go when it
/// is a `deleteWhen` hour, when an operator asked, or when the disk is more than
/// `diskMaxUsedSpaceRatio` full; above `diskSpaceCleanForciblyRatio` the oldest go even if
/// not expired. Oldest first, stopping at the first that must stay (no hole in the middle),
/// at most [`MAX_SEGMENTS_PER_PASS`] a pass, never the last segment (being written), never a
/// segment ending above `keep_from`. Ratios compare strictly, as RocketMQ's do.
pub fn decide(policy: &Policy, now: &Situation) -> Option<u64> {
    let time_up = now.manual
        || policy
            .delete_hours
            .as_ref()
            .is_none_or(|hours| hours.contains(&now.hour));
    let space_full = now.disk_used_percent > policy.disk_max_used_space_ratio;
    let forcibly = now.disk_used_percent > policy.disk_space_clean_forcibly_ratio;
    if !(time_up || space_full || forcibly) {
        return None;
    }
    let closed = now.segments.len().saturating_sub(1);
    let mut below = None;
    for segment in now.segments[..closed].iter().take(MAX_SEGMENTS_PER_PASS) {
        let expired = now.now_ms
            >= segment
                .last_write_ms
                .saturating_add(policy.file_reserved_ms);
        if segment.end_position > now.keep_from || !(expired || forcibly) {
            break;
        }
        below = Some(segment.end_position);
    }
    below
}

/// A compaction filter for the message index: drops `K` keys (whose last 8 bytes are
/// `u64::MAX - commitLogOffset`) that point below the retention point. No replica answers
/// with them any more (reads below the CommitLog's start are skipped), so when each replica
/// drops them does not matter.
pub fn index_filter(retention_point: Arc<AtomicU64>) -> dledger::IndexFilter {
    Arc::new(move |key: &[u8]| {
        let below = retention_point.load(Ordering::Acquire);
        key.len() == crate::index::ENTRY_KEY_BYTES
            && key.first() == Some(&crate::index::INDEX_PREFIX)
            && key[key.len() - 8..]
                .try_into()
                .map(|b: [u8; 8]| u64::MAX - u64::from_be_bytes(b) < below)
                .unwrap_or(false)
    })
}

/// The lowest CommitLog offset a pending timer or transaction half still needs, if any.
pub fn oldest_pending(store: &dledger::HookStore) -> Result<Option<u64>, dledger::DLedgerError> {
    // Halves are keyed by offset: the first is the oldest.
    let half = store
        .scan(keys::HALF_PREFIX, b"Y", 1)?
        .first()
        .and_then(|(key, _)| key.get(1..9))
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
    // Timers are keyed by due time: every one is read, a chunk at a time.
    let mut oldest = half;
    let mut from = keys::TIMER_PREFIX.to_vec();
    loop {
        let chunk = store.scan(&from, b"U", SCAN_CHUNK)?;
        for (key, _) in &chunk {
            if let Some((_, offset)) = keys::parse_timer_key(key) {
                oldest = Some(oldest.map_or(offset, |o: u64| o.min(offset)));
            }
        }
        match chunk.last() {
            Some((key, _)) if chunk.len() == SCAN_CHUNK => {
                from = key.clone();
                from.push(0);
            }
            _ => return Ok(oldest),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The local hour (RocketMQ's `deleteWhen` is in the broker's local time).
fn local_hour() -> u32 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    match local_time(now) {
        Some(tm) => tm.tm_hour as u32,
        None => ((now / 3600) % 24) as u32,
    }
}

/// The local day of `epoch_secs` as days since the epoch in local time (for the daily
/// totals of `crate::stats`); UTC's day when the local time is unknown.
pub(crate) fn local_day(epoch_secs: i64) -> i64 {
    let offset = local_time(epoch_secs).map_or(0, |tm| tm.tm_gmtoff);
    (epoch_secs + offset).div_euclid(86_400)
}

fn local_time(epoch_secs: i64) -> Option<libc::tm> {
    let at = epoch_secs as libc::time_t;
    // SAFETY: `localtime_r` writes only into `tm`, which lives on this stack.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    (!unsafe { libc::localtime_r(&at, &mut tm) }.is_null()).then_some(tm)
}

fn mtime_ms(path: &std::path::Path) -> u64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(u64::MAX, |d| d.as_millis() as u64)
}

/// What the leader sees now. The applied point is read before the pending timers and
/// halves: their keys are written to RocksDB before the apply that stores them is published
/// (`write_now`), so a pending record below the applied point read is always found.
async fn situation(broker: &Broker, manual: bool) -> Result<Situation, dledger::DLedgerError> {
    let (applied, _) = broker.log_positions();
    // A scan of every pending timer: off the async workers.
    let store = broker.hook_store();
    let pending = tokio::task::spawn_blocking(move || oldest_pending(&store))
        .await
        .map_err(|e| dledger::DLedgerError::Raft {
            node_id: 0,
            reason: format!("the pending-timer scan stopped: {e}"),
        })??;
    let segments = broker
        .segments()
        .into_iter()
        .map(|s| Segment {
            start_position: s.start_position,
            end_position: s.end_position,
            last_write_ms: mtime_ms(&s.path),
        })
        .collect();
    Ok(Situation {
        segments,
        now_ms: now_ms(),
        hour: local_hour(),
        disk_used_percent: broker.disk().refresh(),
        manual,
        keep_from: pending.map_or(applied, |p| p.min(applied)),
    })
}

/// One pass on the leader: decide, and propose the new retention point if it moved.
pub async fn pass(broker: &Broker, manual: bool) {
    // Any leader may decide: the bound is what it has applied, which a lagging new leader
    // only makes lower (not `is_up_to_date_leader`, which a leader under load never is).
    if !broker.is_leader() {
        return;
    }
    let now = match situation(broker, manual).await {
        Ok(now) => now,
        Err(e) => {
            warn!(error = %e, "retention: cannot read the pending timers and halves");
            return;
        }
    };
    let policy = Policy::from_config(broker.config());
    let Some(below) = decide(&policy, &now) else {
        return;
    };
    if below <= broker.retention_point() {
        return;
    }
    info!(
        below,
        disk_used_percent = now.disk_used_percent,
        manual,
        "retention: purging CommitLog segments"
    );
    if let Err(e) = broker.propose(&BrokerCommand::Retain { below }).await {
        warn!(error = %e, below, "retention: could not propose the purge point");
    }
}

/// The leader's retention task: a pass every `cleanResourceInterval` ms, and at once when
/// an operator asks (DELETE_EXPIRED_COMMITLOG); on followers it only keeps the disk figure
/// fresh. The disk figure is refreshed every second on every node.
pub async fn run(broker: Arc<Broker>) {
    let interval = Duration::from_millis(broker.config().clean_resource_interval_ms);
    let mut next_pass = tokio::time::Instant::now() + interval;
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let asked = tokio::select! {
            _ = tick.tick() => false,
            _ = broker.clean_requested() => true,
        };
        broker.disk().refresh();
        if asked || tokio::time::Instant::now() >= next_pass {
            next_pass = tokio::time::Instant::now() + interval;
            let manual = broker.take_manual_pass();
            pass(&broker, manual).await;
        }
    }
}

/// The task on every replica that purges its Raft log (and so its segment files) below the
/// applied retention point: whenever the point moves, at start (a replica that stopped
/// between applying a point and purging) and every `cleanResourceInterval` (a purge that
/// failed, or that waited for the apply to catch up).
pub async fn purge(broker: Arc<Broker>) {
    let mut changed = broker.retention_watch();
    let interval = Duration::from_millis(broker.config().clean_resource_interval_ms);
    loop {
        let below = *changed.borrow_and_update();
        if below > broker.commit_log_start() {
            if let Err(e) = broker.purge_commit_log_below(below).await {
                warn!(error = %e, below, "retention: purging the Raft log failed; retrying later");
            }
        }
        let _ = tokio::time::timeout(interval, changed.changed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;
    const HOUR_MS: u64 = 3_600_000;

    fn policy() -> Policy {
        Policy {
            file_reserved_ms: 72 * HOUR_MS,
            delete_hours: Some(vec![4]),
            disk_max_used_space_ratio: 75.0,
            disk_space_clean_forcibly_ratio: 85.0,
        }
    }

    /// `n` segments of 1 MiB, segment i last written at `written_ms[i]`.
    fn situation(written_ms: &[u64]) -> Situation {
        Situation {
            segments: written_ms
                .iter()
                .enumerate()
                .map(|(i, w)| Segment {
                    start_position: i as u64 * MB,
                    end_position: (i as u64 + 1) * MB,
                    last_write_ms: *w,
                })
                .collect(),
            now_ms: 100 * HOUR_MS,
            hour: 4,
            disk_used_percent: 10.0,
            manual: false,
            keep_from: u64::MAX,
        }
    }

    #[test]
    fn delete_when_reads_rocketmq_lists_and_star() {
        assert_eq!(parse_delete_when("04").unwrap(), Some(vec![4]));
        assert_eq!(
            parse_delete_when("04;05; 23").unwrap(),
            Some(vec![4, 5, 23])
        );
        assert_eq!(parse_delete_when("*").unwrap(), None);
        for bad in ["", "24", "four", ";"] {
            assert!(parse_delete_when(bad).is_err(), "{bad}");
        }
    }

    /// Expired segments go at the deleteWhen hour, oldest first, up to the first unexpired.
    #[test]
    fn expired_segments_go_at_the_delete_hour() {
        let p = policy();
        // Written at hours 1, 2, 50, 99: the first two are older than 72 h at hour 100.
        let mut now = situation(&[HOUR_MS, 2 * HOUR_MS, 50 * HOUR_MS, 99 * HOUR_MS]);
        assert_eq!(decide(&p, &now), Some(2 * MB));
        now.hour = 5;
        assert_eq!(decide(&p, &now), None, "not the hour, disk not full");
        now.manual = true;
        assert_eq!(decide(&p, &now), Some(2 * MB), "an operator asked");
        now.manual = false;
        let p = Policy {
            delete_hours: None,
            ..policy()
        };
        assert_eq!(decide(&p, &now), Some(2 * MB), "`*`: every hour");
    }

    /// An unexpired segment stops the pass even if older ones behind it expired (no hole).
    #[test]
    fn no_hole_in_the_middle() {
        let p = policy();
        let now = situation(&[HOUR_MS, 90 * HOUR_MS, 2 * HOUR_MS, 99 * HOUR_MS]);
        assert_eq!(decide(&p, &now), Some(MB));
    }

    /// Above diskMaxUsedSpaceRatio expired segments go at any hour; above
    /// diskSpaceCleanForciblyRatio unexpired ones go too.
    #[test]
    fn disk_ratios() {
        let p = policy();
        let mut now = situation(&[HOUR_MS, 90 * HOUR_MS, 95 * HOUR_MS, 99 * HOUR_MS]);
        now.hour = 12;
        now.disk_used_percent = 75.0;
        assert_eq!(
            decide(&p, &now),
            None,
            "ratios compare strictly, as RocketMQ's"
        );
        now.disk_used_percent = 76.0;
        assert_eq!(decide(&p, &now), Some(MB), "expired only");
        now.disk_used_percent = 86.0;
        assert_eq!(decide(&p, &now), Some(3 * MB), "forcibly: all but the last");
    }

    /// Never the segment being written, never past keep_from (applied point, oldest
    /// pending timer or half), at most MAX_SEGMENTS_PER_PASS a pass.
    #[test]
    fn bounds() {
        let p = policy();
        let mut now = situation(&[0; 4]);
        assert_eq!(decide(&p, &now), Some(3 * MB), "the last segment stays");
        now.keep_from = 2 * MB + 10;
        assert_eq!(
            decide(&p, &now),
            Some(2 * MB),
            "a segment holding keep_from stays"
        );
        now.keep_from = 2 * MB;
        assert_eq!(
            decide(&p, &now),
            Some(2 * MB),
            "a segment ending at it goes"
        );
        now.keep_from = 10;
        assert_eq!(decide(&p, &now), None);
        let now = situation(&[0; 30]);
        assert_eq!(
            decide(&p, &now),
            Some(MAX_SEGMENTS_PER_PASS as u64 * MB),
            "batched"
        );
        assert_eq!(
            decide(&p, &situation(&[0])),
            None,
            "one segment: it is being written"
        );
        assert_eq!(decide(&p, &situation(&[])), None);
    }

    #[test]
    fn index_filter_drops_only_index_keys_below_the_point() {
        let point = Arc::new(AtomicU64::new(0));
        let filter = index_filter(point.clone());
        let key = |offset: u64| {
            let mut k = vec![crate::index::INDEX_PREFIX];
            k.extend_from_slice(&7u64.to_be_bytes());
            k.extend_from_slice(&(u64::MAX - 1234).to_be_bytes());
            k.extend_from_slice(&(u64::MAX - offset).to_be_bytes());
            k
        };
        assert!(!filter(&key(100)));
        point.store(1000, Ordering::Release);
        assert!(filter(&key(100)));
        assert!(filter(&key(999)));
        assert!(!filter(&key(1000)));
        assert!(!filter(b"k"), "the newest-indexed key stays");
        assert!(!filter(&key(100)[..20]), "other lengths stay");
    }
}
