//! GET_BROKER_RUNTIME_INFO (28, `mqadmin brokerStatus`, the dashboard, the exporter): this
//! node's figures as a `KVTable` with every key RocketMQ 4.9.8's broker gives (the
//! exporter reads each one and fails on a missing key), and `raft*` keys for what Raft adds.
//! Any member answers for itself. Figures come from [`crate::stats`], the store and the
//! Raft log. Where RocketMQ's figure is of something rocketraft does not have, the key holds
//! what is true here, as RocketMQ reports its own absent parts: no request thread pools
//! (queue sizes, capacities and head waits 0), no put lock (`pageCacheLockTimeMills` 0), no
//! dispatch buffer (`dispatchMaxBuffer` 0), no transient store pool
//! (`remainTransientStoreBufferNumbs` `Integer.MAX_VALUE`, RocketMQ's value when it is
//! off). `remainHowManyDataToFlush` is what this node has written and the group not yet
//! committed.

use std::collections::BTreeMap;

use remoting::admin_body::KVTable;
use remoting::route::to_json;
use remoting::{Connection, RemotingCommand};

use super::ProcessResult;
use crate::broker::Broker;
use crate::stats::{latencies_text, tps_text, StatsSnapshot};

/// MQVersion's name for the protocol version rocketraft announces (ordinal 401).
const VERSION_DESC: &str = "V4_9_4_SNAPSHOT";

/// GET_BROKER_RUNTIME_INFO (28).
pub fn handle(broker: &Broker, _conn: &Connection, _request: &RemotingCommand) -> ProcessResult {
    let mut table = Table::new();
    counts(&mut table, &broker.stats().snapshot());
    store(&mut table, broker);
    absent_parts(&mut table);
    raft(&mut table, broker);
    Ok(RemotingCommand::success().with_body(to_json(&KVTable { table })))
}

type Table = BTreeMap<String, String>;

fn put(t: &mut Table, key: &str, value: impl ToString) {
    t.insert(key.to_string(), value.to_string());
}

/// Message counts, rates and latencies ([`crate::stats`]).
fn counts(t: &mut Table, s: &StatsSnapshot) {
    put(t, "msgPutTotalTodayNow", s.put_total);
    put(t, "msgPutTotalTodayMorning", s.put_today_morning);
    put(t, "msgPutTotalYesterdayMorning", s.put_yesterday_morning);
    put(t, "msgGetTotalTodayNow", s.get_total);
    put(t, "msgGetTotalTodayMorning", s.get_today_morning);
    put(t, "msgGetTotalYesterdayMorning", s.get_yesterday_morning);
    put(t, "putTps", tps_text(&s.put_tps));
    put(t, "getTransferedTps", tps_text(&s.get_tps));
    put(t, "getFoundTps", tps_text(&s.found_tps));
    put(t, "getMissTps", tps_text(&s.miss_tps));
    put(t, "getTotalTps", tps_text(&s.pull_tps));
    put(t, "putMessageTimesTotal", s.put_total);
    put(t, "putMessageSizeTotal", s.put_bytes);
    put(
        t,
        "putMessageAverageSize",
        s.put_bytes as f64 / s.put_total as f64,
    );
    put(t, "putMessageEntireTimeMax", s.put_time_max_ms);
    put(
        t,
        "putMessageDistributeTime",
        latencies_text(&s.put_latencies),
    );
    put(t, "getMessageEntireTimeMax", s.get_time_max_ms);
}

/// Versions, uptime, CommitLog bounds and disk.
fn store(t: &mut Table, broker: &Broker) {
    let (applied, written) = broker.log_positions();
    put(t, "brokerVersionDesc", VERSION_DESC);
    put(t, "brokerVersion", remoting::command::PROTOCOL_VERSION);
    put(t, "rocketraftVersion", env!("CARGO_PKG_VERSION"));
    put(t, "bootTimestamp", broker.started_ms());
    let up_ms = super::send::now_ms() - broker.started_ms();
    put(t, "runtime", format_runtime(up_ms));
    let earliest = broker.earliest_store_timestamp().unwrap_or(-1);
    put(t, "earliestMessageTimeStamp", earliest);
    put(t, "commitLogMinOffset", broker.commit_log_start());
    put(t, "commitLogMaxOffset", written);
    put(t, "dispatchBehindBytes", written.saturating_sub(applied));
    let unflushed = written.saturating_sub(broker.committed_position());
    put(t, "remainHowManyDataToFlush", human_bytes(unflushed));
    put(t, "brokerPermission", broker.broker_permission());
    if let Ok((total, free)) = crate::disk::capacity(&broker.config().store_path) {
        let capacity = format!(
            "Total : {}, Free : {}.",
            human_bytes(total),
            human_bytes(free)
        );
        put(t, "commitLogDirCapacity", capacity);
    }
    // As `diskSpaceWarningLevelRatio` reads it (`crate::disk`), 0..1 as RocketMQ shows it;
    // the ConsumeQueues lie on the same disk.
    let ratio = broker.disk().used_percent() / 100.0;
    put(t, "commitLogDiskRatio", ratio);
    put(t, "consumeQueueDiskRatio", ratio);
}

/// RocketMQ's figures of parts rocketraft does not have, as RocketMQ reports them when the
/// part is empty or off (module doc).
fn absent_parts(t: &mut Table) {
    for key in [
        "sendThreadPoolQueueSize",
        "sendThreadPoolQueueCapacity",
        "sendThreadPoolQueueHeadWaitTimeMills",
        "pullThreadPoolQueueSize",
        "pullThreadPoolQueueCapacity",
        "pullThreadPoolQueueHeadWaitTimeMills",
        "queryThreadPoolQueueSize",
        "queryThreadPoolQueueCapacity",
        "queryThreadPoolQueueHeadWaitTimeMills",
        "EndTransactionQueueSize",
        "EndTransactionThreadPoolQueueCapacity",
        "pageCacheLockTimeMills",
        "dispatchMaxBuffer",
        "startAcceptSendRequestTimeStamp",
    ] {
        put(t, key, 0);
    }
    put(t, "remainTransientStoreBufferNumbs", i32::MAX);
}

/// What Raft adds: this node's role, term, leader and log positions.
fn raft(t: &mut Table, broker: &Broker) {
    let role = broker.role();
    let (applied, written) = broker.log_positions();
    put(t, "raftRole", format!("{:?}", role.role).to_uppercase());
    put(t, "raftTerm", role.term);
    put(t, "raftNodeId", format!("n{}", role.node_id));
    if let Some(leader) = role.leader_id {
        put(t, "raftLeaderId", format!("n{leader}"));
    }
    put(t, "raftCommittedPosition", broker.committed_position());
    put(t, "raftAppliedPosition", applied);
    put(t, "raftWrittenPosition", written);
}

/// RocketMQ's `getFormatRuntime`: `[ d days, h hours, m minutes, s seconds ]`.
fn format_runtime(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    format!(
        "[ {} days, {} hours, {} minutes, {} seconds ]",
        secs / 86_400,
        secs / 3_600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

/// RocketMQ's `MixAll.humanReadableByteCount(bytes, false)`: `1.5 GiB`, `512 B`.
fn human_bytes(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let exp = ((bytes as f64).ln() / 1024f64.ln()) as i32;
    let unit = "KMGTPE".chars().nth(exp as usize - 1).unwrap_or('E');
    format!("{:.1} {unit}iB", bytes as f64 / 1024f64.powi(exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_rocketmq_writes_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(
            format_runtime(90_061_000),
            "[ 1 days, 1 hours, 1 minutes, 1 seconds ]"
        );
    }
}
