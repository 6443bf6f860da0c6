//! `rocketraft admin query-msg`: find stored messages by key (`mqadmin queryMsgByKey`), by
//! unique key, or by message id (`mqadmin queryMsgById`: an offset message id, or a unique
//! key of `--topic` when the id is not an offset id or no broker holds it), and print each
//! message found.

use std::time::Duration;

use client::query::{self, KeyQuery};
use client::{MessageExt, NameServerClient};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("by").required(true).args(["key", "unique_key", "id"])))]
pub struct Args {
    /// The topic (required for --key and --unique-key; with --id, used for the unique-key
    /// fallback).
    #[arg(short = 't', long)]
    topic: Option<String>,
    /// A key (one of the message's KEYS).
    #[arg(short = 'k', long)]
    key: Option<String>,
    /// A unique key (UNIQ_KEY, the msgId the producer returned).
    #[arg(short = 'u', long = "unique-key")]
    unique_key: Option<String>,
    /// A message id: an offset message id (store host + CommitLog offset), else a unique key.
    #[arg(short = 'i', long)]
    id: Option<String>,
    /// With --key: stored at or after this time (ms since the epoch).
    #[arg(long, default_value_t = 0)]
    begin: i64,
    /// With --key: stored at or before this time (ms since the epoch).
    #[arg(long, default_value_t = i64::MAX)]
    end: i64,
    /// With --key: at most this many messages per broker group (brokers allow 64).
    #[arg(long, default_value_t = query::MAX_MSGS_NUM_BATCH)]
    max: i32,
    /// Request timeout.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

/// `namesrv` carries how to connect (ACL, TLS): see `admin::Access`.
pub async fn run(namesrv: NameServerClient, args: Args) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let topic = || {
        args.topic
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--topic is required with --key and --unique-key"))
    };
    let found: Vec<MessageExt> = if let Some(key) = &args.key {
        let q = KeyQuery {
            begin_ms: args.begin,
            end_ms: args.end,
            max_num: args.max,
            ..KeyQuery::new(topic()?, key.clone())
        };
        query::query_by_key(&namesrv, &q, timeout).await?
    } else if let Some(unique_key) = &args.unique_key {
        query::query_by_unique_key(&namesrv, &topic()?, unique_key, timeout)
            .await?
            .into_iter()
            .collect()
    } else {
        let id = args.id.as_deref().expect("clap requires one of the three");
        query::view_by_id_or_unique_key(&namesrv, args.topic.as_deref(), id, timeout)
            .await?
            .into_iter()
            .collect()
    };
    anyhow::ensure!(!found.is_empty(), "no message found");
    for m in &found {
        print_message(m);
    }
    println!("{} message(s) found", found.len());
    Ok(())
}

/// One message, as `mqadmin queryMsgById` prints it (with a body preview).
fn print_message(m: &MessageExt) {
    let preview: String = String::from_utf8_lossy(&m.body).chars().take(64).collect();
    let rows = [
        ("OffsetID", m.offset_msg_id.clone()),
        ("Msg ID", m.msg_id().to_string()),
        ("Topic", m.topic.clone()),
        ("Tags", format!("[{}]", m.tags().unwrap_or(""))),
        ("Keys", format!("[{}]", m.keys().unwrap_or(""))),
        ("Broker", m.broker_name.clone()),
        ("Queue ID", m.queue_id.to_string()),
        ("Queue Offset", m.queue_offset.to_string()),
        ("CommitLog Offset", m.commit_log_offset.to_string()),
        ("Reconsume Times", m.reconsume_times.to_string()),
        ("Born Timestamp", m.born_timestamp.to_string()),
        ("Store Timestamp", m.store_timestamp.to_string()),
        ("Born Host", m.born_host.to_string()),
        ("Store Host", m.store_host.to_string()),
        ("System Flag", m.sys_flag.to_string()),
        ("Body Size", m.body.len().to_string()),
        ("Body", preview.escape_debug().to_string()),
    ];
    for (name, value) in rows {
        println!("{:<20} {value}", format!("{name}:"));
    }
    println!();
}
