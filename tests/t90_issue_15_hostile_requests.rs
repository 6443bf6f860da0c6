//! Regressions of issue 15, with real processes: one request with a NUL in its consumer
//! group no longer bricks a group (it is refused, and records an older version wrote with
//! such names are skipped at start), and one forged leader claim to the name server fences
//! the real leader only while the forger stays registered.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Message, Producer, ProducerConfig};
use remoting::cluster_auth::{sign_broker_request, ClusterSecret};
use remoting::connection::NoRequests;
use remoting::header::{
    OffsetResponseHeader, QueryConsumerOffsetRequestHeader, RegisterBrokerRequestHeader,
    UpdateConsumerOffsetRequestHeader,
};
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};

const TIMEOUT: Duration = Duration::from_secs(5);

async fn connect(addr: &str) -> Connection {
    Connection::connect(addr, &ConnectionConfig::default(), Arc::new(NoRequests))
        .await
        .unwrap()
}

fn commit(group: &str, offset: i64) -> RemotingCommand {
    RemotingCommand::request(
        RequestCode::UPDATE_CONSUMER_OFFSET,
        &UpdateConsumerOffsetRequestHeader {
            consumer_group: group.into(),
            topic: "TBW102".into(),
            queue_id: 0,
            commit_offset: offset,
        },
    )
}

async fn committed(leader: &str, group: &str) -> i64 {
    let conn = connect(leader).await;
    let request = RemotingCommand::request(
        RequestCode::QUERY_CONSUMER_OFFSET,
        &QueryConsumerOffsetRequestHeader {
            consumer_group: group.into(),
            topic: "TBW102".into(),
            queue_id: 0,
            set_zero_if_not_found: Some(false),
        },
    );
    let response = conn.request(request, TIMEOUT).await.unwrap();
    assert_eq!(
        response.response_code(),
        Some(ResponseCode::SUCCESS),
        "{response:?}"
    );
    response.header::<OffsetResponseHeader>().unwrap().offset
}

/// Writes into a stopped node's meta store what versions before issue 15 could write:
/// the offset record of a group named `app\0g` (it bricked every replica), an unreadable
/// topic config, and a well-formed offset in the old key form, to be read and migrated.
fn plant_old_records(store: &Path) {
    let path = store.join("meta");
    // Every column family the node created must be opened (`raft`, `app`, `app_index`).
    let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).unwrap();
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, &families).unwrap();
    let app = db.cf_handle("app").unwrap();
    db.put_cf(app, b"o/app\0g\0TBW102\x000", 1i64.to_be_bytes())
        .unwrap();
    db.put_cf(app, b"t/Broken", b"{not json").unwrap();
    db.put_cf(app, b"o/legacy-group\0TBW102\x000", 5i64.to_be_bytes())
        .unwrap();
    db.flush_cf(app).unwrap();
}

async fn restart_all(cluster: &mut common::Cluster) -> String {
    for i in 0..3 {
        cluster.stop(i);
    }
    for i in 0..3 {
        cluster.start_node(i);
    }
    cluster.wait_ready(Duration::from_secs(30)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nul_in_a_consumer_group_is_refused_and_old_records_never_stop_a_start() {
    let mut cluster = common::Cluster::start("");
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let conn = connect(&leader).await;

    // The sequence of the issue: one oneway commit, group "app\0g".
    conn.oneway(commit("app\0g", 1)).await.unwrap();
    // The same as a request shows the answer the oneway one got.
    let refused = conn.request(commit("app\0g", 1), TIMEOUT).await.unwrap();
    assert_eq!(refused.response_code(), Some(ResponseCode::SYSTEM_ERROR));
    let remark = refused.remark.unwrap_or_default();
    assert!(
        remark.contains("consumerGroup") && remark.contains("app\\0g"),
        "{remark}"
    );
    conn.oneway(commit("good-group", 3)).await.unwrap();
    // A follower knows only what went through the log.
    let follower = cluster
        .nodes
        .iter()
        .map(|n| n.addr.clone())
        .find(|a| *a != leader)
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while committed(&follower, "good-group").await != 3 {
        assert!(Instant::now() < deadline, "the good commit never landed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Stop and start the group on the same data: every replica starts.
    let leader = restart_all(&mut cluster).await;
    assert_eq!(committed(&leader, "good-group").await, 3);

    // Records an older version could write are reported and skipped, not fatal.
    for i in 0..3 {
        cluster.stop(i);
        plant_old_records(&cluster.nodes[i].store);
    }
    for i in 0..3 {
        cluster.start_node(i);
    }
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    // Every node reports them (a quorum may be serving before the third has opened).
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in &cluster.nodes {
        while !std::fs::read_to_string(&node.log)
            .unwrap()
            .contains("unreadable record in the meta store left out")
        {
            assert!(
                Instant::now() < deadline,
                "{} did not report the bad records",
                node.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(committed(&leader, "good-group").await, 3);
    assert_eq!(committed(&leader, "legacy-group").await, 5);

    // An apply rewrites the old-form key; after another restart it is read in its new form.
    let producer = Producer::start(ProducerConfig::new(&cluster.namesrv_addr, "t90-producers"))
        .await
        .unwrap();
    producer.send(Message::new("Issue15", "x")).await.unwrap();
    producer.shutdown().await;
    let leader = restart_all(&mut cluster).await;
    assert_eq!(committed(&leader, "legacy-group").await, 5);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn forged_claim(term: u64) -> RemotingCommand {
    RemotingCommand::request(
        RequestCode::REGISTER_BROKER,
        &RegisterBrokerRequestHeader {
            broker_name: common::GROUP.into(),
            broker_addr: "127.0.0.1:1".into(),
            cluster_name: "TestCluster".into(),
            ha_server_addr: String::new(),
            broker_id: 0,
            compressed: Some(false),
            raft_term: Some(term),
            ..Default::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_leader_claim_fences_only_while_the_forger_is_registered() {
    let cluster = common::Cluster::start("");
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;

    // A stranger's claim (no cluster secret) is refused outright (issue 19).
    let stranger = connect(&cluster.namesrv_addr).await;
    let answer = stranger
        .request(forged_claim(i64::MAX as u64), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(answer.response_code(), Some(ResponseCode::NO_PERMISSION));
    assert!(answer.remark.as_deref().unwrap_or("").contains("unsigned"));
    let mut wrongly_signed = forged_claim(i64::MAX as u64);
    let guessed = ClusterSecret::new(b"a guessed secret, long enough".to_vec()).unwrap();
    sign_broker_request(&mut wrongly_signed, &guessed, now_ms());
    let answer = stranger.request(wrongly_signed, TIMEOUT).await.unwrap();
    assert_eq!(answer.response_code(), Some(ResponseCode::NO_PERMISSION));
    assert_ne!(
        cluster.routed_leader().await.as_deref(),
        Some("127.0.0.1:1")
    );

    // An insider (it holds the secret: a compromised broker) can still claim, and fences
    // the real leader only while it stays registered.
    let secret = ClusterSecret::load(&cluster.path().join("cluster.secret")).unwrap();
    let mut claim = forged_claim(i64::MAX as u64);
    sign_broker_request(&mut claim, &secret, now_ms());
    let forger = connect(&cluster.namesrv_addr).await;
    let answer = forger.request(claim, TIMEOUT).await.unwrap();
    assert_eq!(answer.response_code(), Some(ResponseCode::SUCCESS));
    assert_eq!(
        cluster.routed_leader().await.as_deref(),
        Some("127.0.0.1:1"),
        "the signed claim leads while it is registered"
    );

    // The forger goes; the real leader is routed again well within one registration
    // interval (2 s in these configs).
    forger.close();
    let gone = Instant::now();
    let routed = cluster
        .wait_for_leader(Some("127.0.0.1:1"), Duration::from_secs(2))
        .await;
    // A real member: the group may have elected another leader since `wait_ready` (in
    // openraft 0.9 a higher node id can take over within term 1 at start).
    assert!(
        cluster.nodes.iter().any(|n| n.addr == routed),
        "{routed} is not a member (the leader was {leader})"
    );
    println!(
        "real leader routed again {} ms after the forger left",
        gone.elapsed().as_millis()
    );
    // And it stays routed, so sends work.
    let producer = Producer::start(ProducerConfig::new(&cluster.namesrv_addr, "t90-producers"))
        .await
        .unwrap();
    let sent = producer
        .send(Message::new("Issue15Route", "y"))
        .await
        .unwrap();
    assert!(cluster.nodes.iter().any(|n| n.addr == sent.broker_addr));
    assert_ne!(
        cluster.routed_leader().await.as_deref(),
        Some("127.0.0.1:1")
    );
}

/// One frame as Apache's C++ client writes it: a JSON header whose `int` fields are JSON
/// numbers, with its ACL fields, sorted keys and a trailing newline.
fn cpp_frame(code: i32, opaque: i32, ext: &str, body: &[u8]) -> Vec<u8> {
    let header = format!(
        "{{\"code\":{code},\"extFields\":{{\"AccessKey\":\"\",\"OnsChannel\":\"ALIYUN\",\"Signature\":\"q1Vq6zJ9fZQ3m4vZl2Y8m7GJx0w=\",{ext}}},\"flag\":0,\"language\":\"CPP\",\"opaque\":{opaque},\"remark\":\"\",\"version\":333}}\n"
    );
    let mut frame = Vec::new();
    frame.extend_from_slice(&((4 + header.len() + body.len()) as i32).to_be_bytes());
    frame.extend_from_slice(&(header.len() as i32).to_be_bytes());
    frame.extend_from_slice(header.as_bytes());
    frame.extend_from_slice(body);
    frame
}

async fn exchange(stream: &mut tokio::net::TcpStream, frame: &[u8]) -> RemotingCommand {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(frame).await.unwrap();
    let total = stream.read_i32().await.unwrap() as usize;
    let header_len = (stream.read_i32().await.unwrap() & 0x00FF_FFFF) as usize;
    let mut rest = vec![0u8; total - 4];
    stream.read_exact(&mut rest).await.unwrap();
    let mut response =
        RemotingCommand::decode_header(remoting::SerializeType::Json, &rest[..header_len]).unwrap();
    response.body = bytes::Bytes::copy_from_slice(&rest[header_len..]);
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cpp_clients_send_and_pull_are_served() {
    let cluster = common::Cluster::start("");
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let mut stream = tokio::net::TcpStream::connect(&leader).await.unwrap();
    // Booleans as the C++ client of the issue wrote them ("0"), numbers as numbers.
    let send = cpp_frame(
        310,
        1,
        r#""a":"PG","b":"Issue15Cpp","c":"TBW102","d":4,"e":0,"f":0,"g":"1700000000123","h":0,"i":"UNIQ_KEY\u0001C0A8000100002A9F0000000000000001\u0002WAIT\u0001true\u0002","j":"0","k":"0","l":16,"m":"0""#,
        b"from c++",
    );
    let response = exchange(&mut stream, &send).await;
    assert_eq!(
        response.response_code(),
        Some(ResponseCode::SUCCESS),
        "{response:?}"
    );
    assert_eq!(response.ext("queueOffset"), Some("0"));
    let pull = cpp_frame(
        11,
        2,
        r#""commitOffset":"0","consumerGroup":"CG","maxMsgNums":32,"queueId":0,"queueOffset":"0","subVersion":"1700000000000","subscription":"*","suspendTimeoutMillis":"1000","sysFlag":6,"topic":"Issue15Cpp""#,
        b"",
    );
    let response = exchange(&mut stream, &pull).await;
    assert_eq!(
        response.response_code(),
        Some(ResponseCode::SUCCESS),
        "{response:?}"
    );
    let records = remoting::message::decode_records(&response.body).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].body, b"from c++");
}
