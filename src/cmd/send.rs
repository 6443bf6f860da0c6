//! `rocketraft send`: send messages from the shell, like RocketMQ's quickstart Producer.
//! `--delay-level`, `--deliver-at` and `--delay` send delayed messages (one of them per
//! run).

use std::time::Duration;

use client::{Message, Producer, ProducerConfig};

#[derive(clap::Args)]
pub struct Args {
    /// Name servers, `;`-separated.
    #[arg(short = 'n', long = "namesrv", default_value = "127.0.0.1:9876")]
    namesrv: String,
    #[arg(short = 't', long, default_value = "TopicTest")]
    topic: String,
    /// How many messages.
    #[arg(short = 'c', long, default_value_t = 10)]
    count: u64,
    /// Body; `{i}` is replaced by the message's number.
    #[arg(short = 'b', long, default_value = "Hello RocketMQ {i}")]
    body: String,
    #[arg(long, default_value = "TagA")]
    tags: String,
    /// Message keys, space-separated.
    #[arg(long)]
    keys: Option<String>,
    /// Ordered send: messages with the same sharding key go to the same queue, in order.
    #[arg(long)]
    sharding_key: Option<String>,
    #[arg(short = 'g', long, default_value = "please_rename_unique_group_name")]
    group: String,
    /// Delay every message by a RocketMQ 4.x delay level (1 = 1s, 2 = 5s, 3 = 10s,
    /// 4 = 30s, 5 = 1m, ... 18 = 2h with the broker's default levels).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..),
          conflicts_with_all = ["deliver_at", "delay"])]
    delay_level: Option<i32>,
    /// Deliver every message at this time, in milliseconds since the Unix epoch (a
    /// RocketMQ 5 timer message, TIMER_DELIVER_MS).
    #[arg(long, value_name = "EPOCH_MS", value_parser = clap::value_parser!(i64).range(0..),
          conflicts_with = "delay")]
    deliver_at: Option<i64>,
    /// Deliver every message this long after it is stored (a RocketMQ 5 timer message,
    /// TIMER_DELAY_MS): a number with a unit, `500ms`, `10s`, `2m`, `1h`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    delay: Option<Duration>,
}

/// `500ms`, `10s`, `2m`, `1h` (a whole number and a unit).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` has no unit: write 500ms, 10s, 2m or 1h"))?;
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` does not start with a whole number"))?;
    let ms_per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("unknown unit `{unit}` in `{s}`: use ms, s, m or h")),
    };
    n.checked_mul(ms_per_unit)
        .filter(|ms| i64::try_from(*ms).is_ok())
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{s}` is too long"))
}

impl Args {
    /// The message's delay, as the flags ask.
    fn schedule(&self, msg: Message) -> Message {
        if let Some(level) = self.delay_level {
            msg.with_delay_time_level(level)
        } else if let Some(at) = self.deliver_at {
            msg.with_deliver_time_ms(at)
        } else if let Some(delay) = self.delay {
            // parse_duration keeps it within i64 milliseconds.
            msg.with_delay_time_ms(delay.as_millis() as i64)
        } else {
            msg
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let producer = Producer::start(ProducerConfig::new(&args.namesrv, &args.group)).await?;
    let mut failed = 0;
    for i in 0..args.count {
        let mut msg = Message::new(&args.topic, args.body.replace("{i}", &i.to_string()))
            .with_tags(&args.tags);
        if let Some(keys) = &args.keys {
            msg = msg.with_keys(keys.split_whitespace());
        }
        msg = args.schedule(msg);
        let result = match &args.sharding_key {
            Some(key) => producer.send_ordered(msg, key).await,
            None => producer.send(msg).await,
        };
        match result {
            Ok(r) => println!(
                "SendResult [sendStatus={}, msgId={}, offsetMsgId={}, messageQueue={}, queueOffset={}]",
                status_name(r.status), r.msg_id, r.offset_msg_id, r.queue, r.queue_offset
            ),
            Err(e) if e.is_outcome_unknown() => {
                failed += 1;
                println!("message {i}: outcome unknown (it may be stored): {e}");
            }
            Err(e) => {
                failed += 1;
                println!("message {i}: not sent: {e}");
            }
        }
    }
    producer.shutdown().await;
    if failed > 0 {
        anyhow::bail!("{failed} of {} sends did not succeed", args.count);
    }
    Ok(())
}

fn status_name(status: client::SendStatus) -> &'static str {
    match status {
        client::SendStatus::SendOk => "SEND_OK",
        client::SendStatus::FlushDiskTimeout => "FLUSH_DISK_TIMEOUT",
        client::SendStatus::FlushSlaveTimeout => "FLUSH_SLAVE_TIMEOUT",
        client::SendStatus::SlaveNotAvailable => "SLAVE_NOT_AVAILABLE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves `--delay` reads the units it documents and refuses the rest.
    #[test]
    fn durations_parse_with_their_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["10", "s", "-1s", "1.5s", "10d", "99999999999999999999ms"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
