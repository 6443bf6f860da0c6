//! `rocketraft admin`: look-ups against name servers, printed as JSON.

use std::time::Duration;

use client::NameServerClient;

#[derive(clap::Args)]
pub struct Args {
    /// Name servers, `;`-separated (RocketMQ's namesrvAddr).
    #[arg(
        short = 'n',
        long = "namesrv",
        default_value = "127.0.0.1:9876",
        global = true
    )]
    namesrv: String,
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// The route of one topic (GET_ROUTEINFO_BY_TOPIC).
    TopicRoute {
        #[arg(short = 't', long)]
        topic: String,
    },
    /// Every cluster and broker group (GET_BROKER_CLUSTER_INFO).
    ClusterList,
    /// Every topic (GET_ALL_TOPIC_LIST_FROM_NAMESERVER).
    TopicList,
    /// Create or update a topic on every broker group (UPDATE_AND_CREATE_TOPIC).
    CreateTopic {
        #[arg(short = 't', long)]
        topic: String,
        /// Read and write queues.
        #[arg(short = 'q', long, default_value_t = 8)]
        queues: i32,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = NameServerClient::new(&args.namesrv, Duration::from_secs(3))?;
    let json = match args.what {
        What::TopicRoute { topic } => match client.topic_route(&topic).await? {
            Some(route) => serde_json::to_string_pretty(&route)?,
            None => anyhow::bail!("TOPIC_NOT_EXIST: no route for topic `{topic}`"),
        },
        What::ClusterList => serde_json::to_string_pretty(&client.cluster_info().await?)?,
        What::TopicList => serde_json::to_string_pretty(&client.all_topics().await?)?,
        What::CreateTopic { topic, queues } => {
            let groups =
                client::admin::create_topic(&client, &topic, queues, Duration::from_secs(5))
                    .await?;
            anyhow::ensure!(!groups.is_empty(), "no broker group is registered");
            format!(
                "created topic {topic} with {queues} queues on {}",
                groups.join(", ")
            )
        }
    };
    println!("{json}");
    Ok(())
}
