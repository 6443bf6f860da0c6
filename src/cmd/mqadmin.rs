//! `rocketraft admin`'s verbs with mqadmin's names (`updateTopic`, `consumerProgress`, ...)
//! and `groupStatus`: each runs one [`client::mqadmin`] request family and prints a table,
//! or JSON with `--json`.

use std::collections::BTreeMap;
use std::time::Duration;

use client::NameServerClient;
use remoting::cluster_auth::ClusterSecret;
use serde_json::{json, Value};

/// Each request's deadline.
const T: Duration = Duration::from_secs(10);

/// The mqadmin verbs.
#[derive(clap::Subcommand)]
pub enum Verb {
    /// Create or update a topic on every broker group (UPDATE_AND_CREATE_TOPIC, through each
    /// group's Raft log); `-o true` also records it as ordered on the name servers.
    #[command(name = "updateTopic", alias = "create-topic")]
    UpdateTopic {
        #[arg(short = 't', long)]
        topic: String,
        /// Read and write queues (both; `-r`/`-w` set one).
        #[arg(short = 'q', long, default_value_t = 8)]
        queues: i32,
        #[arg(short = 'r', long = "readQueueNums")]
        read: Option<i32>,
        #[arg(short = 'w', long = "writeQueueNums")]
        write: Option<i32>,
        /// Permission: 6 read and write, 4 read only, 2 write only.
        #[arg(short = 'p', long, default_value_t = 6)]
        perm: i32,
        /// An ordered topic: its layout (`broker-a:8;broker-b:8`) goes into every name
        /// server's KV config (ORDER_TOPIC_CONFIG), as mqadmin's `-o true` does.
        #[arg(short = 'o', long, default_value_t = false, action = clap::ArgAction::Set)]
        order: bool,
    },
    /// Create or update many topics on every broker group, 1,000 per request
    /// (UPDATE_AND_CREATE_TOPIC_LIST, one entry in each group's Raft log per request): named
    /// one per line in `-f FILE` (blank lines and `#` comments skipped), or `--prefix P
    /// --count N` for P-0 ... P-<N-1>. A request with a name that breaks RocketMQ's rules is
    /// refused whole, naming it; requests before it stand.
    #[command(name = "updateTopicList")]
    UpdateTopicList {
        #[arg(
            short = 'f',
            long,
            required_unless_present = "prefix",
            conflicts_with = "prefix"
        )]
        file: Option<std::path::PathBuf>,
        #[arg(long, requires = "count")]
        prefix: Option<String>,
        #[arg(long, requires = "prefix")]
        count: Option<usize>,
        /// Read and write queues of each topic.
        #[arg(short = 'q', long, default_value_t = 8)]
        queues: i32,
    },
    /// Delete a topic from every broker group (of one cluster) and from the name servers'
    /// routes (DELETE_TOPIC_IN_BROKER, DELETE_TOPIC_IN_NAMESRV).
    #[command(name = "deleteTopic")]
    DeleteTopic {
        #[arg(short = 't', long)]
        topic: String,
        #[arg(short = 'c', long = "clusterName")]
        cluster: Option<String>,
    },
    /// Every topic, or one cluster's (GET_ALL_TOPIC_LIST_FROM_NAMESERVER, GET_TOPICS_BY_CLUSTER).
    #[command(name = "topicList", alias = "topic-list")]
    TopicList {
        #[arg(short = 'c', long = "clusterName")]
        cluster: Option<String>,
    },
    /// A topic's route (GET_ROUTEINFO_BY_TOPIC).
    #[command(name = "topicRoute", alias = "topic-route")]
    TopicRoute {
        #[arg(short = 't', long)]
        topic: String,
    },
    /// Each queue's min and max offset and last store time (GET_TOPIC_STATS_INFO).
    #[command(name = "topicStatus")]
    TopicStatus {
        #[arg(short = 't', long)]
        topic: String,
    },
    /// Every cluster and broker group (GET_BROKER_CLUSTER_INFO).
    #[command(name = "clusterList", alias = "cluster-list")]
    ClusterList,
    /// A consumer group's offset against each queue's end: lag per queue and in total
    /// (GET_CONSUME_STATS).
    #[command(name = "consumerProgress")]
    ConsumerProgress {
        #[arg(short = 'g', long = "groupName")]
        group: String,
        #[arg(short = 't', long)]
        topic: Option<String>,
    },
    /// A consumer group's live clients and subscriptions (GET_CONSUMER_CONNECTION_LIST).
    #[command(name = "consumerConnection")]
    ConsumerConnection {
        #[arg(short = 'g', long = "consumerGroup")]
        group: String,
    },
    /// What each live client of a consumer group reports of itself (GET_CONSUMER_RUNNING_INFO,
    /// passed on by the broker to the client): one line per client, or with `-i` one
    /// client's queues, rates, subscriptions and settings.
    #[command(name = "consumerStatus")]
    ConsumerStatus {
        #[arg(short = 'g', long = "consumerGroup")]
        group: String,
        /// One client (its id as `consumerConnection` lists it).
        #[arg(short = 'i', long = "clientId")]
        client_id: Option<String>,
        /// Ask for a thread dump too (a Rust client says it has none).
        #[arg(short = 's', long = "jstack", default_value_t = false)]
        jstack: bool,
    },
    /// A producer group's live clients (GET_PRODUCER_CONNECTION_LIST).
    #[command(name = "producerConnection")]
    ProducerConnection {
        #[arg(short = 'g', long = "producerGroup")]
        group: String,
        /// Accepted for mqadmin's sake; every group is asked.
        #[arg(short = 't', long)]
        topic: Option<String>,
    },
    /// Move a consumer group's offsets in a topic to the first message stored at or after a
    /// time (INVOKE_BROKER_TO_RESET_OFFSET, through each group's Raft log; live clients are
    /// told with RESET_CONSUMER_CLIENT_OFFSET).
    #[command(name = "resetOffsetByTime")]
    ResetOffsetByTime {
        #[arg(short = 'g', long)]
        group: String,
        #[arg(short = 't', long)]
        topic: String,
        /// `now`, milliseconds since the epoch, `-1` (the end of each queue), or
        /// `yyyy-MM-dd#HH:mm:ss:SSS` in local time (mqadmin's forms).
        #[arg(short = 's', long, allow_hyphen_values = true)]
        timestamp: String,
        /// Move forward too (mqadmin's default); `-f false`: only backwards.
        #[arg(short = 'f', long, default_value_t = true, action = clap::ArgAction::Set)]
        force: bool,
    },
    /// A broker node's config (GET_BROKER_CONFIG): one node (`-b ADDR`) or every node of
    /// every group (of one cluster).
    #[command(name = "getBrokerConfig")]
    GetBrokerConfig {
        #[arg(short = 'b', long = "brokerAddr")]
        addr: Option<String>,
        #[arg(short = 'c', long = "clusterName")]
        cluster: Option<String>,
    },
    /// Change a broker config key that may change at runtime (UPDATE_BROKER_CONFIG:
    /// brokerPermission, autoCreateTopicEnable, autoCreateSubscriptionGroup) for a whole
    /// group, through its Raft log: `-b` a group name or a member's address, or every group.
    #[command(name = "updateBrokerConfig")]
    UpdateBrokerConfig {
        #[arg(short = 'b', long = "brokerAddr")]
        broker: Option<String>,
        #[arg(short = 'k', long)]
        key: String,
        #[arg(short = 'v', long)]
        value: String,
    },
    /// A broker node's runtime figures (GET_BROKER_RUNTIME_INFO): one node or every node.
    #[command(name = "brokerStatus")]
    BrokerStatus {
        #[arg(short = 'b', long = "brokerAddr")]
        addr: Option<String>,
        #[arg(short = 'c', long = "clusterName")]
        cluster: Option<String>,
    },
    /// Routes show a broker group read-only on every name server (WIPE_WRITE_PERM_OF_BROKER;
    /// needs `--cluster-secret-file` where name servers authenticate).
    #[command(name = "wipeWritePerm")]
    WipeWritePerm {
        #[arg(short = 'b', long = "brokerName")]
        broker_name: String,
    },
    /// Give a broker group its write permission back in routes (ADD_WRITE_PERM_OF_BROKER).
    #[command(name = "addWritePerm")]
    AddWritePerm {
        #[arg(short = 'b', long = "brokerName")]
        broker_name: String,
    },
    /// A broker group's Raft status: term, leader, each member's role, committed, applied
    /// and written positions, and how far behind the leader it is.
    #[command(name = "groupStatus")]
    GroupStatus {
        #[arg(short = 'g', long, alias = "brokerName")]
        group: String,
    },
}

/// Runs `verb`; `secret` signs the requests that change routes.
pub async fn run(
    namesrv: &NameServerClient,
    verb: Verb,
    json_out: bool,
    secret: Option<&ClusterSecret>,
) -> anyhow::Result<()> {
    let out = match verb {
        Verb::UpdateTopic {
            topic,
            queues,
            read,
            write,
            perm,
            order,
        } => {
            let queues = (read.unwrap_or(queues), write.unwrap_or(queues));
            update_topic(namesrv, &topic, queues, perm, order, secret).await?
        }
        Verb::UpdateTopicList {
            file,
            prefix,
            count,
            queues,
        } => {
            let topics = match (file, prefix, count) {
                (Some(file), _, _) => topic_names_in(&file)?,
                (None, Some(prefix), Some(count)) => {
                    (0..count).map(|i| format!("{prefix}-{i}")).collect()
                }
                _ => anyhow::bail!("give -f FILE, or --prefix P and --count N"),
            };
            update_topic_list(namesrv, &topics, queues).await?
        }
        Verb::DeleteTopic { topic, cluster } => {
            let groups =
                client::mqadmin::delete_topic(namesrv, &topic, cluster.as_deref(), secret, T)
                    .await?;
            Out::Line(format!(
                "delete topic [{topic}] from {} and every name server success",
                groups.join(", ")
            ))
        }
        Verb::TopicList { cluster } => topic_list(namesrv, cluster.as_deref()).await?,
        Verb::TopicRoute { topic } => match namesrv.topic_route(&topic).await? {
            Some(route) => route_table(&route)?,
            None => anyhow::bail!("TOPIC_NOT_EXIST: no route for topic `{topic}`"),
        },
        Verb::TopicStatus { topic } => topic_status(namesrv, &topic).await?,
        Verb::ClusterList => cluster_list(namesrv).await?,
        Verb::ConsumerProgress { group, topic } => {
            consumer_progress(namesrv, &group, topic.as_deref()).await?
        }
        Verb::ConsumerConnection { group } => consumer_connection(namesrv, &group).await?,
        Verb::ConsumerStatus {
            group,
            client_id,
            jstack,
        } => consumer_status(namesrv, &group, client_id.as_deref(), jstack).await?,
        Verb::ProducerConnection { group, .. } => {
            let c = client::mqadmin::producer_connection(namesrv, &group, T).await?;
            Out::Table(
                CONNECTION_COLUMNS.to_vec(),
                connection_rows(&c.connection_set),
                serde_json::to_value(&c)?,
            )
        }
        Verb::ResetOffsetByTime {
            group,
            topic,
            timestamp,
            force,
        } => reset_offset_by_time(namesrv, &group, &topic, &timestamp, force).await?,
        Verb::GetBrokerConfig { addr, cluster } => {
            let mut all = BTreeMap::new();
            for addr in node_addrs(namesrv, addr, cluster.as_deref()).await? {
                let config = client::mqadmin::broker_config(namesrv, &addr, T).await?;
                all.insert(addr, config);
            }
            key_values(all)
        }
        Verb::UpdateBrokerConfig { broker, key, value } => {
            let group = match broker {
                Some(b) => Some(group_of(namesrv, &b).await?),
                None => None,
            };
            let groups =
                client::mqadmin::update_broker_config(namesrv, group.as_deref(), &key, &value, T)
                    .await?;
            Out::Line(format!(
                "update broker config {key}={value} on {} (every member, through the Raft log) success",
                groups.join(", ")
            ))
        }
        Verb::BrokerStatus { addr, cluster } => {
            let mut all = BTreeMap::new();
            for addr in node_addrs(namesrv, addr, cluster.as_deref()).await? {
                let info = client::mqadmin::broker_runtime_info(namesrv, &addr, T).await?;
                all.insert(addr, info);
            }
            key_values(all)
        }
        Verb::WipeWritePerm { broker_name } => {
            write_perm(namesrv, &broker_name, true, secret).await?
        }
        Verb::AddWritePerm { broker_name } => {
            write_perm(namesrv, &broker_name, false, secret).await?
        }
        Verb::GroupStatus { group } => group_status(namesrv, &group).await?,
    };
    out.print(json_out)
}

/// `updateTopic`: on every group; with `order`, its layout in every name server's KV config.
async fn update_topic(
    namesrv: &NameServerClient,
    topic: &str,
    (r, w): (i32, i32),
    perm: i32,
    order: bool,
    secret: Option<&ClusterSecret>,
) -> anyhow::Result<Out> {
    let groups = client::admin::update_topic(namesrv, topic, (r, w), perm, order, T).await?;
    anyhow::ensure!(!groups.is_empty(), "no broker group is registered");
    if order {
        let layout: Vec<String> = groups.iter().map(|g| format!("{g}:{w}")).collect();
        client::mqadmin::set_kv_config(
            namesrv,
            client::mqadmin::NAMESPACE_ORDER_TOPIC_CONFIG,
            topic,
            Some(&layout.join(";")),
            secret,
            T,
        )
        .await?;
    }
    Ok(Out::Line(format!(
        "create topic {topic} (read {r}, write {w}, perm {perm}, order {order}) on {} success",
        groups.join(", ")
    )))
}

/// `updateTopicList`: every topic on every group, in batches.
async fn update_topic_list(
    namesrv: &NameServerClient,
    topics: &[String],
    queues: i32,
) -> anyhow::Result<Out> {
    anyhow::ensure!(!topics.is_empty(), "no topic names given");
    let begin = std::time::Instant::now();
    let groups = client::admin::create_topics(namesrv, topics, queues, T).await?;
    anyhow::ensure!(!groups.is_empty(), "no broker group is registered");
    let seconds = begin.elapsed().as_secs_f64();
    Ok(Out::Line(format!(
        "create {} topics (read {queues}, write {queues}, perm 6) on {} in {seconds:.2} s \
         ({:.0} topics/s) success",
        topics.len(),
        groups.join(", "),
        topics.len() as f64 / seconds
    )))
}

/// The topic names in `file`, one per line; blank lines and `#` comments are skipped.
fn topic_names_in(file: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect())
}

async fn topic_list(namesrv: &NameServerClient, cluster: Option<&str>) -> anyhow::Result<Out> {
    let list = match cluster {
        Some(c) => client::mqadmin::topics_by_cluster(namesrv, c).await?,
        None => namesrv.all_topics().await?,
    };
    let value = serde_json::to_value(&list)?;
    let rows = list.topic_list.into_iter().map(|t| vec![t]).collect();
    Ok(Out::Table(vec!["topic"], rows, value))
}

const CONNECTION_COLUMNS: [&str; 4] = ["clientId", "clientAddr", "language", "version"];

fn connection_rows(connections: &[remoting::admin_body::ConnectionData]) -> Vec<Vec<String>> {
    connections
        .iter()
        .map(|x| {
            vec![
                x.client_id.clone(),
                x.client_addr.clone(),
                x.language.clone(),
                x.version.to_string(),
            ]
        })
        .collect()
}

async fn consumer_connection(namesrv: &NameServerClient, group: &str) -> anyhow::Result<Out> {
    let c = client::mqadmin::consumer_connection(namesrv, group, T).await?;
    let mut footer: Vec<String> = c
        .subscription_table
        .iter()
        .map(|(topic, s)| format!("subscription: {topic} {}", s.sub_string))
        .collect();
    footer.push(format!(
        "consumeType: {}  messageModel: {}  consumeFromWhere: {}",
        c.consume_type.as_deref().unwrap_or("-"),
        c.message_model.as_deref().unwrap_or("-"),
        c.consume_from_where.as_deref().unwrap_or("-")
    ));
    Ok(Out::TableWith(
        CONNECTION_COLUMNS.to_vec(),
        connection_rows(&c.connection_set),
        footer,
        serde_json::to_value(&c)?,
    ))
}

async fn consumer_status(
    namesrv: &NameServerClient,
    group: &str,
    client_id: Option<&str>,
    jstack: bool,
) -> anyhow::Result<Out> {
    use client::mqadmin::consumer_running_info;
    let Some(client_id) = client_id else {
        // Every live client, one line each (mqadmin's overview).
        let connection = client::mqadmin::consumer_connection(namesrv, group, T).await?;
        let mut rows = Vec::new();
        let mut all = serde_json::Map::new();
        for c in &connection.connection_set {
            let info = consumer_running_info(namesrv, group, &c.client_id, false, T).await?;
            let rates = info.status_table.values();
            let (ok_tps, failed_tps) = rates.fold((0.0, 0.0), |(ok, failed), s| {
                (ok + s.consume_ok_tps, failed + s.consume_failed_tps)
            });
            let cached: i64 = info
                .mq_table
                .0
                .values()
                .map(|q| q.cached_msg_count as i64)
                .sum();
            rows.push(vec![
                c.client_id.clone(),
                c.version.to_string(),
                info.mq_table.0.len().to_string(),
                cached.to_string(),
                format!("{ok_tps:.2}"),
                format!("{failed_tps:.2}"),
            ]);
            all.insert(c.client_id.clone(), running_info_json(&info));
        }
        return Ok(Out::Table(
            vec![
                "clientId",
                "version",
                "queues",
                "cachedMsgs",
                "consumeOKTPS",
                "consumeFailedTPS",
            ],
            rows,
            Value::Object(all),
        ));
    };
    let info = consumer_running_info(namesrv, group, client_id, jstack, T).await?;
    let rows = info
        .mq_table
        .0
        .iter()
        .map(|(q, p)| {
            vec![
                q.topic.clone(),
                q.broker_name.clone(),
                q.queue_id.to_string(),
                p.commit_offset.to_string(),
                p.cached_msg_count.to_string(),
                p.cached_msg_min_offset.to_string(),
                p.cached_msg_max_offset.to_string(),
                p.locked.to_string(),
                p.last_pull_timestamp.to_string(),
                p.last_consume_timestamp.to_string(),
            ]
        })
        .collect();
    let mut footer: Vec<String> = info
        .subscription_set
        .iter()
        .map(|s| {
            format!(
                "subscription: {} {} ({})",
                s.topic, s.sub_string, s.expression_type
            )
        })
        .collect();
    for (topic, s) in &info.status_table {
        footer.push(format!(
            "{topic}: pullRT {:.2} ms, pullTPS {:.2}, consumeRT {:.2} ms, consumeOKTPS {:.2}, \
             consumeFailedTPS {:.2}, failed in the last hour {}",
            s.pull_rt,
            s.pull_tps,
            s.consume_rt,
            s.consume_ok_tps,
            s.consume_failed_tps,
            s.consume_failed_msgs
        ));
    }
    for (k, v) in &info.properties {
        footer.push(format!("{k}: {v}"));
    }
    if let Some(jstack) = &info.jstack {
        footer.push(format!("jstack: {jstack}"));
    }
    Ok(Out::TableWith(
        vec![
            "topic",
            "brokerName",
            "queueId",
            "commitOffset",
            "cachedMsgs",
            "cachedMin",
            "cachedMax",
            "locked",
            "lastPull",
            "lastConsume",
        ],
        rows,
        footer,
        running_info_json(&info),
    ))
}

/// A running info as JSON, its queue table a list (JSON keys cannot be objects).
fn running_info_json(info: &remoting::admin_body::ConsumerRunningInfo) -> Value {
    let queues: Vec<Value> = info
        .mq_table
        .0
        .iter()
        .map(|(q, p)| json!({"topic": q.topic, "brokerName": q.broker_name, "queueId": q.queue_id, "state": p}))
        .collect();
    json!({
        "properties": info.properties,
        "subscriptionSet": info.subscription_set,
        "mqTable": queues,
        "statusTable": info.status_table,
        "jstack": info.jstack,
    })
}

async fn reset_offset_by_time(
    namesrv: &NameServerClient,
    group: &str,
    topic: &str,
    timestamp: &str,
    force: bool,
) -> anyhow::Result<Out> {
    let at = parse_time(timestamp)?;
    let body = client::mqadmin::reset_offset_by_time(namesrv, group, topic, at, force, T).await?;
    let mut rows = Vec::new();
    let mut j = Vec::new();
    for (q, o) in &body.offset_table.0 {
        rows.push(vec![
            q.broker_name.clone(),
            q.queue_id.to_string(),
            o.to_string(),
        ]);
        j.push(json!({"brokerName": q.broker_name, "queueId": q.queue_id, "offset": o}));
    }
    Ok(Out::Table(
        vec!["brokerName", "queueId", "offset"],
        rows,
        json!(j),
    ))
}

/// What a verb prints: a line, or a table (with lines after it) and its JSON form.
enum Out {
    Line(String),
    Table(Vec<&'static str>, Vec<Vec<String>>, Value),
    TableWith(Vec<&'static str>, Vec<Vec<String>>, Vec<String>, Value),
}

impl Out {
    fn print(self, json_out: bool) -> anyhow::Result<()> {
        match self {
            Out::Line(line) if json_out => println!("{}", json!({ "result": line })),
            Out::Line(line) => println!("{line}"),
            Out::Table(_, _, value) | Out::TableWith(_, _, _, value) if json_out => {
                println!("{}", serde_json::to_string_pretty(&value)?)
            }
            Out::Table(headers, rows, _) => print_table(&headers, &rows),
            Out::TableWith(headers, rows, footer, _) => {
                print_table(&headers, &rows);
                for line in footer {
                    println!("{line}");
                }
            }
        }
        Ok(())
    }
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<width$}", width = *w))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn route_table(route: &remoting::route::TopicRouteData) -> anyhow::Result<Out> {
    let mut rows = Vec::new();
    for q in &route.queue_datas {
        let addrs = route
            .broker_datas
            .iter()
            .find(|b| b.broker_name == q.broker_name)
            .map(|b| {
                b.broker_addrs
                    .iter()
                    .map(|(id, a)| format!("{id}={a}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        rows.push(vec![
            q.broker_name.clone(),
            q.read_queue_nums.to_string(),
            q.write_queue_nums.to_string(),
            q.perm.to_string(),
            addrs,
        ]);
    }
    Ok(Out::Table(
        vec![
            "brokerName",
            "readQueues",
            "writeQueues",
            "perm",
            "brokerAddrs (0 = leader)",
        ],
        rows,
        serde_json::to_value(route)?,
    ))
}

async fn cluster_list(namesrv: &NameServerClient) -> anyhow::Result<Out> {
    let info = namesrv.cluster_info().await?;
    let mut rows = Vec::new();
    for (cluster, names) in &info.cluster_addr_table {
        for name in names {
            let Some(data) = info.broker_addr_table.get(name) else {
                continue;
            };
            for (id, addr) in &data.broker_addrs {
                let role = if *id == 0 { "leader" } else { "follower" };
                rows.push(vec![
                    cluster.clone(),
                    name.clone(),
                    id.to_string(),
                    addr.clone(),
                    role.into(),
                ]);
            }
        }
    }
    Ok(Out::Table(
        vec!["cluster", "brokerName", "brokerId", "addr", "role"],
        rows,
        serde_json::to_value(&info)?,
    ))
}

fn time_text(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let secs = (ms / 1000) as libc::time_t;
    // SAFETY: `localtime_r` writes only into `tm`, which lives on this stack.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return ms.to_string();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        ms % 1000
    )
}

async fn topic_status(namesrv: &NameServerClient, topic: &str) -> anyhow::Result<Out> {
    let table = client::mqadmin::topic_stats(namesrv, topic, T).await?;
    let mut rows = Vec::new();
    let mut j = Vec::new();
    for (q, o) in &table.offset_table.0 {
        rows.push(vec![
            q.broker_name.clone(),
            q.queue_id.to_string(),
            o.min_offset.to_string(),
            o.max_offset.to_string(),
            time_text(o.last_update_timestamp),
        ]);
        j.push(json!({"brokerName": q.broker_name, "queueId": q.queue_id, "minOffset": o.min_offset, "maxOffset": o.max_offset, "lastUpdateTimestamp": o.last_update_timestamp}));
    }
    Ok(Out::Table(
        vec![
            "brokerName",
            "queueId",
            "minOffset",
            "maxOffset",
            "lastUpdated",
        ],
        rows,
        json!(j),
    ))
}

async fn consumer_progress(
    namesrv: &NameServerClient,
    group: &str,
    topic: Option<&str>,
) -> anyhow::Result<Out> {
    let stats = client::mqadmin::consume_stats(namesrv, group, topic, T).await?;
    let mut rows = Vec::new();
    let mut j = Vec::new();
    for (q, o) in &stats.offset_table.0 {
        let lag = o.broker_offset - o.consumer_offset;
        rows.push(vec![
            q.topic.clone(),
            q.broker_name.clone(),
            q.queue_id.to_string(),
            o.broker_offset.to_string(),
            o.consumer_offset.to_string(),
            lag.to_string(),
            time_text(o.last_timestamp),
        ]);
        j.push(json!({"topic": q.topic, "brokerName": q.broker_name, "queueId": q.queue_id, "brokerOffset": o.broker_offset, "consumerOffset": o.consumer_offset, "lag": lag, "lastTimestamp": o.last_timestamp}));
    }
    let total = stats.total_diff();
    Ok(Out::TableWith(
        vec![
            "topic",
            "brokerName",
            "queueId",
            "brokerOffset",
            "consumerOffset",
            "lag",
            "lastConsumed",
        ],
        rows,
        vec![
            format!("Consume TPS: {:.2}", stats.consume_tps),
            format!("Diff Total: {total}"),
        ],
        json!({"queues": j, "consumeTps": stats.consume_tps, "diffTotal": total}),
    ))
}

/// `-b ADDR`, or every member of every group (of `cluster`).
async fn node_addrs(
    namesrv: &NameServerClient,
    addr: Option<String>,
    cluster: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    if let Some(addr) = addr {
        return Ok(vec![addr]);
    }
    let info = namesrv.cluster_info().await?;
    let mut addrs = Vec::new();
    for (name, data) in &info.broker_addr_table {
        let in_cluster = cluster.is_none_or(|c| {
            info.cluster_addr_table
                .get(c)
                .is_some_and(|names| names.contains(name))
        });
        if in_cluster {
            addrs.extend(data.broker_addrs.values().cloned());
        }
    }
    anyhow::ensure!(!addrs.is_empty(), "no broker node is registered");
    Ok(addrs)
}

/// The group named `broker`, or the group one of whose members has address `broker`.
async fn group_of(namesrv: &NameServerClient, broker: &str) -> anyhow::Result<String> {
    let info = namesrv.cluster_info().await?;
    if info.broker_addr_table.contains_key(broker) {
        return Ok(broker.to_string());
    }
    info.broker_addr_table
        .iter()
        .find(|(_, d)| d.broker_addrs.values().any(|a| a == broker))
        .map(|(name, _)| name.clone())
        .ok_or_else(|| anyhow::anyhow!("no broker group is named {broker} or has a member at it"))
}

fn key_values(all: BTreeMap<String, BTreeMap<String, String>>) -> Out {
    let mut rows = Vec::new();
    for (addr, kv) in &all {
        for (k, v) in kv {
            rows.push(vec![addr.clone(), k.clone(), v.clone()]);
        }
    }
    let value = serde_json::to_value(&all).unwrap_or_default();
    Out::Table(vec!["addr", "key", "value"], rows, value)
}

async fn write_perm(
    namesrv: &NameServerClient,
    broker_name: &str,
    wipe: bool,
    secret: Option<&ClusterSecret>,
) -> anyhow::Result<Out> {
    let counts = client::mqadmin::write_perm(namesrv, broker_name, wipe, secret, T).await?;
    let what = if wipe { "wipe" } else { "add" };
    let rows = counts
        .iter()
        .map(|(addr, n)| vec![addr.clone(), n.to_string()])
        .collect();
    let j: Vec<Value> = counts
        .iter()
        .map(|(addr, n)| json!({"namesrvAddr": addr, "topicCount": n}))
        .collect();
    Ok(Out::TableWith(
        vec!["namesrvAddr", "topicCount"],
        rows,
        vec![format!(
            "{what} write perm of broker[{broker_name}] on {} name server(s) success",
            counts.len()
        )],
        json!(j),
    ))
}

async fn group_status(namesrv: &NameServerClient, group: &str) -> anyhow::Result<Out> {
    let s = client::mqadmin::group_status(namesrv, group, T).await?;
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let rows = s
        .members
        .iter()
        .map(|m| {
            vec![
                m.node_id.clone(),
                m.addr.clone(),
                m.role.clone(),
                opt(m.term),
                opt(m.committed_position),
                opt(m.applied_position),
                opt(m.written_position),
                opt(m.matched_index),
                opt(m.lag_entries),
            ]
        })
        .collect();
    let footer = vec![format!(
        "{group}: term {}, leader {}, last log index {}",
        s.term,
        s.leader_id.as_deref().unwrap_or("none"),
        opt(s.last_log_index)
    )];
    Ok(Out::TableWith(
        vec![
            "node",
            "addr",
            "role",
            "term",
            "committed",
            "applied",
            "written",
            "matchedIndex",
            "lagEntries",
        ],
        rows,
        footer,
        serde_json::to_value(&s)?,
    ))
}

/// mqadmin's time forms: `now`, `-1`, milliseconds, `yyyy-MM-dd#HH:mm:ss:SSS` (local).
fn parse_time(text: &str) -> anyhow::Result<i64> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("now") {
        return Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64);
    }
    if let Ok(ms) = text.parse::<i64>() {
        anyhow::ensure!(ms >= -1, "a timestamp is -1 or a time in ms, not {ms}");
        return Ok(ms);
    }
    let bad = || anyhow::anyhow!("`{text}`: give now, -1, milliseconds or yyyy-MM-dd#HH:mm:ss:SSS");
    let (date, time) = text.split_once('#').ok_or_else(bad)?;
    let d: Vec<i32> = date
        .split('-')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let t: Vec<i32> = time
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    if d.len() != 3 || t.len() != 4 {
        return Err(bad());
    }
    // SAFETY: a zeroed `tm` is valid; `mktime` reads and normalises it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = d[0] - 1900;
    tm.tm_mon = d[1] - 1;
    tm.tm_mday = d[2];
    tm.tm_hour = t[0];
    tm.tm_min = t[1];
    tm.tm_sec = t[2];
    tm.tm_isdst = -1;
    let secs = unsafe { libc::mktime(&mut tm) };
    if secs < 0 {
        return Err(bad());
    }
    Ok(secs as i64 * 1000 + i64::from(t[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqadmin_time_forms_parse() {
        assert_eq!(parse_time("-1").unwrap(), -1);
        assert_eq!(parse_time("1700000000000").unwrap(), 1_700_000_000_000);
        assert!(parse_time("now").unwrap() > 1_700_000_000_000);
        let local = parse_time("2024-01-02#03:04:05:678").unwrap();
        assert_eq!(local % 1000, 678);
        assert_eq!(time_text(local), "2024-01-02 03:04:05.678");
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("-5").is_err());
    }
}
