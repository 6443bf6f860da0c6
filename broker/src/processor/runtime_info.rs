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

use remoting::admin_body::KVTable;
use remoting::route::to_json;
use remoting::{Connection, RemotingCommand};

use super::ProcessResult;
use crate::broker::Broker;
use crate::stats::{latencies_text, tps_text};

/// MQVersion's name for the protocol version rocketraft announces (ordinal 401).
const VERSION_DESC: &str = "V4_9_4_SNAPSHOT";

/// GET_BROKER_RUNTIME_INFO (28).
pub fn handle(broker: &Broker, _conn: &Connection, _request: &RemotingCommand) -> ProcessResult {
    let table = runtime_info(broker);
    Ok(RemotingCommand::success().with_body(to_json(&KVTable { table })))
}

fn runtime_info(broker: &Broker) -> std::collections::BTreeMap<String, String> {
    let s = broker.stats().snapshot();
    let role = broker.role();
    let (applied, written) = broker.log_positions();
    let now = super::send::now_ms();
    let mut t = std::collections::BTreeMap::new();
    let mut put = |key: &str, value: String| {
        t.insert(key.to_string(), value);
    };
    put("brokerVersionDesc", VERSION_DESC.into());
    put(
        "brokerVersion",
        remoting::command::PROTOCOL_VERSION.to_string(),
    );
    put("rocketraftVersion", env!("CARGO_PKG_VERSION").into());
    put("msgPutTotalTodayNow", s.put_total.to_string());
    put("msgPutTotalTodayMorning", s.put_today_morning.to_string());
    put(
        "msgPutTotalYesterdayMorning",
        s.put_yesterday_morning.to_string(),
    );
    put("msgGetTotalTodayNow", s.get_total.to_string());
    put("msgGetTotalTodayMorning", s.get_today_morning.to_string());
    put(
        "msgGetTotalYesterdayMorning",
        s.get_yesterday_morning.to_string(),
    );
    put("putTps", tps_text(&s.put_tps));
    put("getTransferedTps", tps_text(&s.get_tps));
    put("getFoundTps", tps_text(&s.found_tps));
    put("getMissTps", tps_text(&s.miss_tps));
    put("getTotalTps", tps_text(&s.pull_tps));
    put("putMessageTimesTotal", s.put_total.to_string());
    put("putMessageSizeTotal", s.put_bytes.to_string());
    put(
        "putMessageAverageSize",
        (s.put_bytes as f64 / s.put_total as f64).to_string(),
    );
    put("putMessageEntireTimeMax", s.put_time_max_ms.to_string());
    put("putMessageDistributeTime", latencies_text(&s.put_latencies));
    put("getMessageEntireTimeMax", s.get_time_max_ms.to_string());
    put(
        "earliestMessageTimeStamp",
        broker.earliest_store_timestamp().unwrap_or(-1).to_string(),
    );
    put(
        "remainHowManyDataToFlush",
        human_bytes(written.saturating_sub(broker.committed_position())),
    );
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
        put(key, "0".into());
    }
    put("remainTransientStoreBufferNumbs", i32::MAX.to_string());
    put("bootTimestamp", broker.started_ms().to_string());
    put("runtime", format_runtime(now - broker.started_ms()));
    put("commitLogMinOffset", broker.commit_log_start().to_string());
    put("commitLogMaxOffset", written.to_string());
    put(
        "dispatchBehindBytes",
        written.saturating_sub(applied).to_string(),
    );
    put("brokerPermission", broker.broker_permission().to_string());
    if let Ok((total, free)) = crate::disk::capacity(&broker.config().store_path) {
        put(
            "commitLogDirCapacity",
            format!(
                "Total : {}, Free : {}.",
                human_bytes(total),
                human_bytes(free)
            ),
        );
    }
    // As `diskSpaceWarningLevelRatio` reads it (`crate::disk`), 0..1 as RocketMQ shows it;
    // the ConsumeQueues lie on the same disk.
    let ratio = (broker.disk().used_percent() / 100.0).to_string();
    put("commitLogDiskRatio", ratio.clone());
    put("consumeQueueDiskRatio", ratio);
    put("raftRole", format!("{:?}", role.role).to_uppercase());
    put("raftTerm", role.term.to_string());
    put("raftNodeId", format!("n{}", role.node_id));
    if let Some(leader) = role.leader_id {
        put("raftLeaderId", format!("n{leader}"));
    }
    put(
        "raftCommittedPosition",
        broker.committed_position().to_string(),
    );
    put("raftAppliedPosition", applied.to_string());
    put("raftWrittenPosition", written.to_string());
    t
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
