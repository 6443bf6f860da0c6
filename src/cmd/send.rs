//! `rocketraft send`: send messages from the shell, like RocketMQ's quickstart Producer.

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
