//! `rocketraft consume`: a push consumer that prints what it receives, like RocketMQ's
//! quickstart Consumer. Stops after `--count` messages, or on Ctrl-C.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::{
    ConsumeFromWhere, ConsumeOrderlyStatus, ConsumeStatus, MessageModel, PushConsumer,
    PushConsumerConfig,
};

#[derive(clap::Args)]
pub struct Args {
    /// Name servers, `;`-separated.
    #[arg(short = 'n', long = "namesrv", default_value = "127.0.0.1:9876")]
    namesrv: String,
    #[arg(short = 't', long, default_value = "TopicTest")]
    topic: String,
    /// Tag expression: `*`, `TagA`, `TagA || TagB`.
    #[arg(long, default_value = "*")]
    tags: String,
    #[arg(short = 'g', long, default_value = "please_rename_unique_group_name_4")]
    group: String,
    /// Stop after this many messages (default: run until Ctrl-C).
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// A new group starts from the first stored message (default: RocketMQ's rule).
    #[arg(long)]
    from_first: bool,
    /// Broadcasting: every consumer of the group gets every message.
    #[arg(long)]
    broadcast: bool,
    /// Orderly: each queue's messages one at a time, in queue order, only while this
    /// consumer holds the queue's lock (RocketMQ's `MessageListenerOrderly`).
    #[arg(long)]
    orderly: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = PushConsumerConfig::new(&args.namesrv, &args.group);
    if args.from_first {
        config.consume_from_where = ConsumeFromWhere::FirstOffset;
    }
    if args.broadcast {
        config.message_model = MessageModel::Broadcasting;
    }
    let mut consumer = PushConsumer::new(config);
    consumer.subscribe(&args.topic, &args.tags)?;
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    {
        let (received, done, count) = (received.clone(), done.clone(), args.count);
        let print = move |msgs: &[client::MessageExt]| {
            for m in msgs {
                println!(
                    "Receive New Message: topic={} queueId={} queueOffset={} msgId={} tags={} body={}",
                    m.topic,
                    m.queue_id,
                    m.queue_offset,
                    m.msg_id(),
                    m.tags().unwrap_or(""),
                    String::from_utf8_lossy(&m.body)
                );
                let n = received.fetch_add(1, Ordering::Relaxed) + 1;
                if count.is_some_and(|c| n >= c) {
                    done.notify_one();
                }
            }
        };
        if args.orderly {
            consumer.register_orderly_listener(move |msgs| {
                print(msgs);
                ConsumeOrderlyStatus::Success
            });
        } else {
            consumer.register_message_listener(move |msgs| {
                print(msgs);
                ConsumeStatus::ConsumeSuccess
            });
        }
    }
    consumer.start().await?;
    eprintln!(
        "{} consumer started: group {} topic {} tags {}",
        if args.orderly {
            "orderly"
        } else {
            "concurrent"
        },
        args.group,
        args.topic,
        args.tags
    );
    tokio::select! {
        _ = done.notified() => {}
        _ = super::shutdown_signal() => {}
    }
    // Give in-flight listener calls a moment, then commit offsets and leave the group.
    tokio::time::sleep(Duration::from_millis(100)).await;
    consumer.shutdown().await;
    eprintln!("received {} messages", received.load(Ordering::Relaxed));
    Ok(())
}
