//! `rocketraft admin`: mqadmin's everyday verbs with mqadmin's names and `groupStatus`
//! ([`super::mqadmin`]: tables, or JSON with `--json`), a consumer group's dead letters (`admin dlq list|resend`), and stored messages by key or id
//! (`admin query-msg`, [`super::query_msg`]), a retention pass now
//! (`admin delete-expired-commitlog`), moving a group's leadership
//! (`admin transfer-leader`), and changing its membership (`admin members / add-node /
//! remove-node`).

use std::time::Duration;

use client::NameServerClient;
use remoting::cluster_auth::ClusterSecret;

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
    #[command(flatten)]
    access: Access,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// The cluster secret's file (as the name servers' `clusterSecretFile`): signs the
    /// requests that change routes (deleteTopic, wipeWritePerm, addWritePerm, updateTopic -o), which name
    /// servers with authentication on refuse unsigned. Also from
    /// ROCKETRAFT_CLUSTER_SECRET_FILE.
    #[arg(long, global = true, env = "ROCKETRAFT_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    what: What,
}

/// How `admin` reaches a cluster with ACL or TLS on.
#[derive(clap::Args, Clone, Default)]
pub struct Access {
    /// ACL access key (RocketMQ's AccessKey); signs every request. Also from
    /// ROCKETRAFT_ACCESS_KEY.
    #[arg(long, global = true, env = "ROCKETRAFT_ACCESS_KEY")]
    access_key: Option<String>,
    /// ACL secret key; from ROCKETRAFT_SECRET_KEY rather than the command line, which
    /// other users can read.
    #[arg(
        long,
        global = true,
        env = "ROCKETRAFT_SECRET_KEY",
        hide_env_values = true
    )]
    secret_key: Option<String>,
    /// Connect over TLS (trusting any server certificate, as RocketMQ's client does).
    #[arg(long, global = true)]
    tls: bool,
}

impl Access {
    /// `config`, signing and using TLS as asked.
    pub fn apply(&self, mut config: client::ClientConfig) -> anyhow::Result<client::ClientConfig> {
        match (&self.access_key, &self.secret_key) {
            (Some(ak), Some(sk)) => config = config.with_acl(ak, sk),
            (None, None) => {}
            _ => anyhow::bail!("give both --access-key and --secret-key, or neither"),
        }
        if self.tls {
            config = config.use_tls();
        }
        Ok(config)
    }

    /// A name-server client whose connections (and the admin requests sent to brokers
    /// through it) sign and use TLS as asked.
    fn namesrv(&self, namesrv: &str) -> anyhow::Result<NameServerClient> {
        let config = self.apply(client::ClientConfig::new(namesrv))?;
        Ok(NameServerClient::new(namesrv, Duration::from_secs(3))?
            .with_connection(config.connection))
    }
}

#[derive(clap::Subcommand)]
enum What {
    /// mqadmin's verbs, with mqadmin's names.
    #[command(flatten)]
    Mq(super::mqadmin::Verb),
    /// Ask every broker group's leader for a retention pass now: expired CommitLog segments
    /// go whatever the `deleteWhen` hour (DELETE_EXPIRED_COMMITLOG, like `mqadmin
    /// deleteExpiredCommitLog`).
    DeleteExpiredCommitlog,
    /// A consumer group's dead-letter queue (`%DLQ%<group>`).
    #[command(subcommand)]
    Dlq(Dlq),
    /// Find stored messages by key, unique key or message id (QUERY_MESSAGE,
    /// VIEW_MESSAGE_BY_ID).
    QueryMsg(super::query_msg::Args),
    /// Hand a broker group's leadership to another member (TRANSFER_LEADERSHIP, rocketraft's
    /// own request code 9001): appends pause only for the hand-over.
    TransferLeader {
        /// The broker group (brokerName).
        #[arg(short = 'g', long)]
        group: String,
        /// The member to lead, as in dLegerPeers: `n1`.
        #[arg(long)]
        to: String,
    },
    /// A broker group's Raft membership: voters, learners, who leads, how far each member
    /// has replicated (GET_GROUP_MEMBERS, rocketraft's own code 9004).
    Members {
        #[arg(short = 'g', long)]
        group: String,
    },
    /// Add a node to a running broker group (ADD_GROUP_NODE, 9002). Start the node first
    /// with `joinExistingGroup=true` and a `dLegerPeers` naming the current members and
    /// itself; it joins as a learner, catches up (by snapshot when the others have purged
    /// what it lacks) and then votes, and registers with the name servers.
    AddNode {
        #[arg(short = 'g', long)]
        group: String,
        /// The new node's id, as in its dLegerSelfId: `n3`.
        #[arg(long)]
        id: String,
        /// The new node's peer address, as in its dLegerPeers entry: `127.0.0.1:40914`.
        #[arg(long)]
        addr: String,
        /// How long to wait for the node to catch up and vote.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Remove a node from a broker group (REMOVE_GROUP_NODE, 9003); the leader's own
    /// removal first moves its leadership. Refused when the voters left would have no
    /// majority answering. A running removed node is told, and exits; one that was down
    /// must not be started on its old store.
    RemoveNode {
        #[arg(short = 'g', long)]
        group: String,
        /// The node to remove: `n2`.
        #[arg(long)]
        id: String,
    },
}

#[derive(clap::Subcommand)]
enum Dlq {
    /// List the group's dead letters: id, original topic, tries, store time, body.
    List {
        #[arg(short = 'g', long)]
        group: String,
    },
    /// Send dead letters again to the topic they were first consumed from (they stay in
    /// the DLQ too, as in RocketMQ).
    Resend {
        #[arg(short = 'g', long)]
        group: String,
        /// Every dead letter of the group.
        #[arg(long, conflicts_with = "msg_id")]
        all: bool,
        /// The dead letters with these ids (the id `dlq list` prints, or the original
        /// message id).
        #[arg(long = "msg-id", required_unless_present = "all")]
        msg_id: Vec<String>,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let what = match args.what {
        What::Dlq(dlq) => {
            let client = args
                .access
                .apply(client::ClientConfig::new(&args.namesrv))?;
            return run_dlq(&client, dlq, args.json).await;
        }
        What::QueryMsg(query) => {
            return super::query_msg::run(args.access.namesrv(&args.namesrv)?, query).await
        }
        What::TransferLeader { group, to } => {
            return transfer_leader(&args.access.namesrv(&args.namesrv)?, &group, &to).await
        }
        What::Members { .. } | What::AddNode { .. } | What::RemoveNode { .. } => {
            return membership(&args.access.namesrv(&args.namesrv)?, args.what).await
        }
        What::Mq(verb) => {
            let secret = match &args.cluster_secret_file {
                Some(path) => Some(ClusterSecret::load(path).map_err(anyhow::Error::msg)?),
                None => None,
            };
            let namesrv = args.access.namesrv(&args.namesrv)?;
            return super::mqadmin::run(&namesrv, verb, args.json, secret.as_ref()).await;
        }
        what => what,
    };
    let client = args.access.namesrv(&args.namesrv)?;
    let json = match what {
        What::DeleteExpiredCommitlog => {
            let groups =
                client::admin::delete_expired_commit_log(&client, Duration::from_secs(5)).await?;
            anyhow::ensure!(!groups.is_empty(), "no broker group is registered");
            format!(
                "asked {} for a retention pass (expired CommitLog segments are deleted in the background)",
                groups.join(", ")
            )
        }
        What::Mq(_)
        | What::Dlq(_)
        | What::QueryMsg(_)
        | What::TransferLeader { .. }
        | What::Members { .. }
        | What::AddNode { .. }
        | What::RemoveNode { .. } => {
            unreachable!("handled above")
        }
    };
    println!("{json}");
    Ok(())
}

/// `admin transfer-leader`: asks the group's leader to hand over, then waits (bounded) until
/// the name servers route the group's writes elsewhere.
async fn transfer_leader(client: &NameServerClient, group: &str, to: &str) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let done = client::admin::transfer_leadership(client, group, to, Duration::from_secs(10))
        .await
        .map_err(|e| anyhow::anyhow!("transfer of {group}'s leadership to {to} failed: {e}"))?;
    println!(
        "{group}: leadership moved from {} to {} (term {}): appends held {} ms, transfer took {} ms",
        done.from_addr, done.leader_id, done.term, done.held_ms, done.elapsed_ms
    );
    let deadline = started + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let info = client.cluster_info().await?;
        let routed = info
            .broker_addr_table
            .get(group)
            .and_then(|d| d.leader_addr())
            .filter(|addr| *addr != done.from_addr)
            .map(str::to_string);
        if let Some(addr) = routed {
            println!(
                "{group}: name servers route writes to {addr} ({} ms after the request)",
                started.elapsed().as_millis()
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!(
        "{group}: the name servers still route writes to {} after 10 s",
        done.from_addr
    )
}

/// `admin members / add-node / remove-node`: prints the membership after the change.
async fn membership(client: &NameServerClient, what: What) -> anyhow::Result<()> {
    let per_request = Duration::from_secs(10);
    let (group, members) = match what {
        What::Members { group } => {
            let m = client::admin::group_members(client, &group, per_request).await?;
            (group, m)
        }
        What::AddNode {
            group,
            id,
            addr,
            timeout_secs,
        } => {
            let started = std::time::Instant::now();
            let deadline = Duration::from_secs(timeout_secs);
            let m = client::admin::add_node(client, &group, &id, &addr, deadline)
                .await
                .map_err(|e| anyhow::anyhow!("adding {id} to {group} failed: {e}"))?;
            println!(
                "{group}: {id} at {addr} caught up and votes ({} ms)",
                started.elapsed().as_millis()
            );
            (group, m)
        }
        What::RemoveNode { group, id } => {
            let m = client::admin::remove_node(client, &group, &id, per_request)
                .await
                .map_err(|e| anyhow::anyhow!("removing {id} from {group} failed: {e}"))?;
            println!(
                "{group}: {id} removed; if it was running it has been told and exits (its store \
                 is marked REMOVED); if it was down, do not start it on its old store"
            );
            (group, m)
        }
        _ => unreachable!("membership verbs only"),
    };
    println!("{group}: {}", serde_json::to_string_pretty(&members)?);
    Ok(())
}

/// The ids a dead letter answers to: its own, its UNIQ_KEY and the id it first had.
fn dlq_ids(m: &client::MessageExt) -> Vec<&str> {
    let mut ids = vec![m.offset_msg_id.as_str()];
    for name in ["UNIQ_KEY", "ORIGIN_MESSAGE_ID"] {
        ids.extend(m.property(name));
    }
    ids
}

async fn run_dlq(client: &client::ClientConfig, dlq: Dlq, json: bool) -> anyhow::Result<()> {
    match dlq {
        Dlq::List { group } => {
            let letters = client::admin::dead_letters(client, &group).await?;
            if json {
                let rows: Vec<_> = letters
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "msgId": m.offset_msg_id,
                            "originMsgId": m.property("ORIGIN_MESSAGE_ID"),
                            "originTopic": m.property("RETRY_TOPIC"),
                            "reconsumeTimes": m.reconsume_times,
                            "storeTimestamp": m.store_timestamp,
                            "properties": m.properties,
                            "body": String::from_utf8_lossy(&m.body),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!(
                "{:<34} {:<24} {:>5} {:>14}  body",
                "msgId", "originTopic", "tries", "storeTimestamp"
            );
            for m in &letters {
                let body: String = String::from_utf8_lossy(&m.body).chars().take(40).collect();
                println!(
                    "{:<34} {:<24} {:>5} {:>14}  {}",
                    m.offset_msg_id,
                    m.property("RETRY_TOPIC").unwrap_or("-"),
                    m.reconsume_times,
                    m.store_timestamp,
                    body.escape_debug()
                );
            }
            println!("{} dead letter(s) in %DLQ%{group}", letters.len());
        }
        Dlq::Resend { group, all, msg_id } => {
            let letters = client::admin::dead_letters(client, &group).await?;
            let chosen: Vec<_> = letters
                .iter()
                .filter(|m| all || dlq_ids(m).iter().any(|id| msg_id.iter().any(|w| w == id)))
                .collect();
            if !all {
                for wanted in &msg_id {
                    anyhow::ensure!(
                        chosen.iter().any(|m| dlq_ids(m).contains(&wanted.as_str())),
                        "no dead letter of group {group} has the id {wanted}"
                    );
                }
            }
            let mut config = client::ProducerConfig::new(&client.namesrv_addr, "TOOLS_DLQ_RESEND");
            config.client = client.clone();
            let producer = client::Producer::start(config).await?;
            let mut failed = 0;
            for m in &chosen {
                let message = client::admin::resend_message(m);
                let topic = message.topic.clone();
                match producer.send(message).await {
                    Ok(r) => println!("{} -> {topic} as {}", m.offset_msg_id, r.msg_id),
                    Err(e) => {
                        failed += 1;
                        eprintln!("{} -> {topic}: {e}", m.offset_msg_id);
                    }
                }
            }
            producer.shutdown().await;
            anyhow::ensure!(failed == 0, "{failed} of {} re-sends failed", chosen.len());
            println!("re-sent {} dead letter(s) of group {group}", chosen.len());
        }
    }
    Ok(())
}
