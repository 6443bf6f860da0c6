//! Proves UPDATE_AND_CREATE_TOPIC_LIST (18) against a real name server and three-node
//! group with auto-creation off: 5,000 topics created by `client::admin::create_topics` go
//! in as five requests, one Raft entry each, on every replica; the name server routes every
//! one of them with its queue count and sends to a sample succeed; a request with one bad
//! name (a NUL, 200 characters) is refused naming it and creates none of its topics; a
//! follower answers with the leader's address; `rocketraft admin updateTopicList` creates
//! topics from a file and from a prefix; and after the leader is SIGKILLed the new leader
//! holds every topic.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Message, Producer, ProducerConfig};
use futures::{StreamExt, TryStreamExt};
use remoting::connection::NoRequests;
use remoting::route::{from_json, TopicConfig, TopicConfigSerializeWrapper};
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};

const T: Duration = Duration::from_secs(10);
const TOPICS: usize = 5_000;
const QUEUES: i32 = 3;

async fn connect(addr: &str) -> Connection {
    Connection::connect(addr, &ConnectionConfig::default(), Arc::new(NoRequests))
        .await
        .unwrap()
}

/// The topic table node `addr` holds (GET_ALL_TOPIC_CONFIG, answered from its own state).
async fn topics_of(addr: &str) -> BTreeMap<String, TopicConfig> {
    let conn = connect(addr).await;
    let request = RemotingCommand::bare_request(RequestCode::GET_ALL_TOPIC_CONFIG);
    let answer = conn.request(request, T).await.unwrap();
    conn.close();
    let wrapper: TopicConfigSerializeWrapper = from_json("topics", &answer.body).unwrap();
    wrapper.topic_config_table
}

/// Waits until node `addr` holds every topic of `names` with [`QUEUES`] queues.
async fn wait_holds_all(addr: &str, names: &[String]) {
    let deadline = Instant::now() + T;
    loop {
        let table = topics_of(addr).await;
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| {
                table
                    .get(*n)
                    .is_none_or(|c| (c.read_queue_nums, c.write_queue_nums) != (QUEUES, QUEUES))
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} lacks {} topics, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(3)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A topic in the JSON RocketMQ 5.x's Java client writes for each `TopicConfig`.
fn java_topic(name: &str) -> String {
    format!(
        r#"{{"attributes":{{}},"order":false,"perm":6,"readQueueNums":{QUEUES},"topicFilterType":"SINGLE_TAG","topicName":{},"topicSysFlag":0,"writeQueueNums":{QUEUES}}}"#,
        serde_json::to_string(name).unwrap()
    )
}

/// UPDATE_AND_CREATE_TOPIC_LIST of `names`, as the Java client sends it.
fn list_request(names: &[String]) -> RemotingCommand {
    let list: Vec<String> = names.iter().map(|n| java_topic(n)).collect();
    let body = format!(r#"{{"topicConfigList":[{}]}}"#, list.join(","));
    RemotingCommand::bare_request(RequestCode::UPDATE_AND_CREATE_TOPIC_LIST)
        .with_body(body.into_bytes())
}

/// How many lines of node `i`'s log say a topic list was applied in one entry.
fn list_entries_applied(cluster: &common::Cluster, i: usize) -> usize {
    std::fs::read_to_string(&cluster.nodes[i].log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("topics updated in one entry"))
        .count()
}

/// The routed leader once it has stayed the same for half a second (without
/// auto-creation there is no TBW102 for `Cluster::wait_ready` to wait for).
async fn settled_leader(cluster: &common::Cluster) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut leader = cluster.wait_for_leader(None, Duration::from_secs(30)).await;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = cluster.wait_for_leader(None, Duration::from_secs(30)).await;
        if now == leader {
            return leader;
        }
        assert!(Instant::now() < deadline, "the leader never settled");
        leader = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_are_created_in_batches_through_raft() {
    let mut cluster = common::Cluster::start("autoCreateTopicEnable=false");
    let leader = settled_leader(&cluster).await;
    let namesrv = cluster.namesrv();

    // 5,000 topics, 1,000 per request: five entries, applied by every replica.
    let names: Vec<String> = (0..TOPICS).map(|i| format!("Batch-{i}")).collect();
    let begin = Instant::now();
    let groups = client::admin::create_topics(&namesrv, &names, QUEUES, T)
        .await
        .unwrap();
    eprintln!("created {TOPICS} topics in {:?}", begin.elapsed());
    assert_eq!(groups, vec![common::GROUP.to_string()]);
    for node in &cluster.nodes {
        wait_holds_all(&node.addr, &names).await;
    }
    for i in 0..3 {
        assert_eq!(list_entries_applied(&cluster, i), 5, "n{i}");
    }

    // The name server routes every one of them with its queue count.
    let listed = namesrv.all_topics().await.unwrap().topic_list;
    assert!(names.iter().all(|n| listed.contains(n)));
    futures::stream::iter(&names)
        .map(|name| {
            let namesrv = &namesrv;
            async move {
                let route = namesrv.topic_route(name).await?;
                let queues = route.as_ref().and_then(|r| {
                    r.queue_datas
                        .iter()
                        .find(|q| q.broker_name == common::GROUP)
                        .map(|q| (q.read_queue_nums, q.write_queue_nums))
                });
                assert_eq!(queues, Some((QUEUES, QUEUES)), "{name}: {route:?}");
                Ok::<_, client::ClientError>(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();

    // Sends to a sample succeed (there is no auto-creation: the topics exist).
    let mut config = ProducerConfig::new(&cluster.namesrv_addr, "t23-producers");
    config.send_msg_timeout_ms = 3_000;
    let producer = Producer::start(config).await.unwrap();
    for name in names.iter().step_by(250).chain(names.last()) {
        let sent = producer.send(Message::new(name, "x")).await.unwrap();
        assert!(sent.queue.queue_id < QUEUES, "{name}: {sent:?}");
    }

    // One bad name refuses its whole request, naming it; none of the request is created.
    let conn = connect(&leader).await;
    let long = "L".repeat(200);
    for (bad, at, shown) in [
        ("Bad\0Nul", 7, "topic `Bad\\0Nul` may contain only"),
        (long.as_str(), 0, "is longer than 127 characters"),
    ] {
        let mut batch: Vec<String> = (0..20).map(|i| format!("Refused-{i}")).collect();
        batch.insert(at, bad.to_string());
        let answer = conn.request(list_request(&batch), T).await.unwrap();
        assert_eq!(answer.response_code(), Some(ResponseCode::SYSTEM_ERROR));
        let remark = answer.remark.unwrap_or_default();
        assert!(
            remark.contains(&format!("topicConfigList[{at}]")),
            "{remark}"
        );
        assert!(remark.contains(shown), "{remark}");
        assert!(
            remark.contains("no topic of this request was created"),
            "{remark}"
        );
    }
    // The client says the same.
    let with_bad: Vec<String> = vec!["Refused-a".into(), "Bad\0Nul".into()];
    let err = client::admin::create_topics(&namesrv, &with_bad, QUEUES, T)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("topicConfigList[1]"), "{err}");
    // Hostile bodies of 8 MiB (a client frame may hold 9 MiB: twice maxMessageSize and
    // 1 MiB): not JSON, one 8 MiB name, and nesting 100,000 deep. Each is refused at once,
    // nothing is created, the leader stays. A 10 MiB frame closes its connection.
    let big = 8 << 20;
    let garbage: Vec<u8> = (0..big).map(|i| (i * 7 % 251) as u8).collect();
    let huge_name = format!(
        r#"{{"topicConfigList":[{},{}]}}"#,
        java_topic("Refused-h0"),
        java_topic(&"H".repeat(big))
    );
    let deep = format!(
        r#"{{"topicConfigList":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    for (what, body, shown) in [
        ("garbage", garbage, "UPDATE_AND_CREATE_TOPIC_LIST body"),
        (
            "an 8 MiB name",
            huge_name.into_bytes(),
            "is longer than 127 characters",
        ),
        (
            "deep nesting",
            deep.into_bytes(),
            "UPDATE_AND_CREATE_TOPIC_LIST body",
        ),
    ] {
        let request = RemotingCommand::bare_request(RequestCode::UPDATE_AND_CREATE_TOPIC_LIST)
            .with_body(body);
        let started = std::time::Instant::now();
        let answer = conn.request(request, T).await.unwrap();
        assert_eq!(
            answer.response_code(),
            Some(ResponseCode::SYSTEM_ERROR),
            "{what}"
        );
        let remark = answer.remark.unwrap_or_default();
        assert!(
            remark.contains(shown),
            "{what}: {}",
            &remark[..remark.len().min(300)]
        );
        assert!(remark.len() < 4096, "{what}: the remark repeats the input");
        println!("{what}: refused in {:?}", started.elapsed());
    }
    let too_big = RemotingCommand::bare_request(RequestCode::UPDATE_AND_CREATE_TOPIC_LIST)
        .with_body(vec![b'['; 10 << 20]);
    let closing = connect(&leader).await;
    assert!(
        closing.request(too_big, T).await.is_err(),
        "a 10 MiB frame closes its connection"
    );
    let table = topics_of(&leader).await;
    let refused: Vec<&String> = table.keys().filter(|t| t.starts_with("Refused")).collect();
    assert!(
        refused.is_empty(),
        "created from refused requests: {refused:?}"
    );
    assert!(!table.keys().any(|t| t.contains("Bad")));
    assert_eq!(
        list_entries_applied(&cluster, cluster.node_index(&leader)),
        5
    );

    // A follower does not take it: it answers with the leader's address.
    let follower = cluster.nodes.iter().find(|n| n.addr != leader).unwrap();
    let answer = connect(&follower.addr)
        .await
        .request(list_request(&["Follower-0".to_string()]), T)
        .await
        .unwrap();
    assert_eq!(
        answer.response_code(),
        Some(ResponseCode::SERVICE_NOT_AVAILABLE)
    );
    assert_eq!(answer.ext("leaderAddr"), Some(leader.as_str()));

    // `rocketraft admin updateTopicList`: from a file of names, and from a prefix.
    let file = cluster.path().join("topics.txt");
    std::fs::write(
        &file,
        "# made by t23\nFromFile-0\n\n  FromFile-1  \nFromFile-2\n",
    )
    .unwrap();
    let out = cluster.admin(&["updateTopicList", "-f", file.to_str().unwrap(), "-q", "3"]);
    assert!(
        out.contains("create 3 topics") && out.contains("success"),
        "{out}"
    );
    let out = cluster.admin(&[
        "updateTopicList",
        "--prefix",
        "Prefixed",
        "--count",
        "40",
        "-q",
        "3",
    ]);
    assert!(
        out.contains("create 40 topics") && out.contains("success"),
        "{out}"
    );
    let mut all = names.clone();
    all.extend((0..3).map(|i| format!("FromFile-{i}")));
    all.extend((0..40).map(|i| format!("Prefixed-{i}")));
    wait_holds_all(&leader, &all).await;

    // SIGKILL the leader: the new one holds every topic and takes sends to them.
    cluster.kill(cluster.node_index(&leader));
    let new_leader = cluster
        .wait_for_leader(Some(&leader), Duration::from_secs(30))
        .await;
    wait_holds_all(&new_leader, &all).await;
    for name in all.iter().step_by(500) {
        let sent = producer.send(Message::new(name, "after")).await.unwrap();
        assert!(sent.queue.queue_id < QUEUES, "{name}: {sent:?}");
    }
    producer.shutdown().await;
}
