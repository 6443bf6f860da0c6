//! Proves the name server's routing promises over real TCP on loopback: the leader with
//! the newest term is brokerId 0, a stale leader never is, silent brokers expire, a
//! closed connection drops its broker at once, and garbage closes only its connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use client::NameServerClient;
use namesrv::NamesrvConfig;
use remoting::connection::NoRequests;
use remoting::header::{
    QueryDataVersionRequestHeader, QueryDataVersionResponseHeader, RegisterBrokerRequestHeader,
};
use remoting::route::{to_json, DataVersion, RegisterBrokerBody, TopicConfig};
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUT: Duration = Duration::from_secs(3);

async fn start(config: NamesrvConfig) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(namesrv::run(listener, config, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

async fn connect(addr: &str) -> Connection {
    Connection::connect(addr, &ConnectionConfig::default(), Arc::new(NoRequests))
        .await
        .unwrap()
}

fn body(topics: &[&str], counter: i64) -> Vec<u8> {
    let mut b = RegisterBrokerBody::default();
    for t in topics {
        b.topic_config_serialize_wrapper.topic_config_table.insert(
            t.to_string(),
            TopicConfig {
                topic_name: t.to_string(),
                read_queue_nums: 4,
                write_queue_nums: 4,
                ..Default::default()
            },
        );
    }
    b.topic_config_serialize_wrapper.data_version = DataVersion {
        state_version: 0,
        timestamp: 1,
        counter,
    };
    to_json(&b)
}

async fn register(
    conn: &Connection,
    broker_addr: &str,
    broker_id: i64,
    term: u64,
) -> RemotingCommand {
    let header = RegisterBrokerRequestHeader {
        broker_name: "broker-a".into(),
        broker_addr: broker_addr.into(),
        cluster_name: "DefaultCluster".into(),
        ha_server_addr: String::new(),
        broker_id,
        compressed: Some(false),
        raft_term: Some(term),
        ..Default::default()
    };
    let request = RemotingCommand::request(RequestCode::REGISTER_BROKER, &header)
        .with_body(body(&["TopicTest"], 1));
    let response = conn.request(request, TIMEOUT).await.unwrap();
    assert_eq!(
        response.response_code(),
        Some(ResponseCode::SUCCESS),
        "{response:?}"
    );
    response
}

async fn addrs(client: &NameServerClient) -> BTreeMap<i64, String> {
    match client.topic_route("TopicTest").await.unwrap() {
        Some(route) => route.broker_datas[0].broker_addrs.clone(),
        None => BTreeMap::new(),
    }
}

#[tokio::test]
async fn the_newest_leader_is_broker_id_zero_and_a_stale_one_never_is() {
    let (addr, _stop) = start(NamesrvConfig::default()).await;
    let client = NameServerClient::new(&addr, TIMEOUT).unwrap();
    assert_eq!(client.topic_route("NoSuchTopic").await.unwrap(), None);

    let (a, b, c) = (
        connect(&addr).await,
        connect(&addr).await,
        connect(&addr).await,
    );
    register(&a, "127.0.0.1:10911", 0, 1).await;
    register(&b, "127.0.0.1:10921", 1, 1).await;
    register(&c, "127.0.0.1:10931", 2, 1).await;
    let route = addrs(&client).await;
    assert_eq!(route.len(), 3);
    assert_eq!(route[&0], "127.0.0.1:10911");

    // b is elected in term 2.
    register(&b, "127.0.0.1:10921", 0, 2).await;
    assert_eq!(addrs(&client).await[&0], "127.0.0.1:10921");

    // a wakes from a pause still claiming term 1: recorded, but as a follower.
    let answer = register(&a, "127.0.0.1:10911", 0, 1).await;
    assert_eq!(answer.ext("staleLeaderClaim"), Some("true"));
    assert_eq!(answer.ext("masterAddr"), Some("127.0.0.1:10921"));
    let route = addrs(&client).await;
    assert_eq!(route[&0], "127.0.0.1:10921");
    assert!(route.values().any(|v| v == "127.0.0.1:10911"));

    // Cluster info and the topic list agree.
    let info = client.cluster_info().await.unwrap();
    assert_eq!(
        info.broker_addr_table["broker-a"].broker_addrs[&0],
        "127.0.0.1:10921"
    );
    assert!(info.cluster_addr_table["DefaultCluster"].contains("broker-a"));
    assert!(client
        .all_topics()
        .await
        .unwrap()
        .topic_list
        .contains("TopicTest"));
}

#[tokio::test]
async fn a_closed_connection_drops_its_broker_at_once() {
    let (addr, _stop) = start(NamesrvConfig::default()).await;
    let client = NameServerClient::new(&addr, TIMEOUT).unwrap();
    let (a, b) = (connect(&addr).await, connect(&addr).await);
    register(&a, "127.0.0.1:10911", 0, 3).await;
    register(&b, "127.0.0.1:10921", 1, 3).await;
    a.close();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let route = addrs(&client).await;
        if !route.contains_key(&0) {
            assert_eq!(route.values().collect::<Vec<_>>(), vec!["127.0.0.1:10921"]);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "leader still routed: {route:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn silent_brokers_expire_after_the_configured_timeout() {
    let config = NamesrvConfig {
        scan_interval_ms: 50,
        broker_expiry_ms: 300,
        ..NamesrvConfig::default()
    };
    let (addr, _stop) = start(config).await;
    let client = NameServerClient::new(&addr, TIMEOUT).unwrap();
    let (a, b) = (connect(&addr).await, connect(&addr).await);
    register(&a, "127.0.0.1:10911", 0, 1).await;
    register(&b, "127.0.0.1:10921", 1, 1).await;
    // b keeps itself alive with data-version queries (which carry no topic table); a is silent.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(700) {
        let header = QueryDataVersionRequestHeader {
            broker_name: "broker-a".into(),
            broker_addr: "127.0.0.1:10921".into(),
            cluster_name: "DefaultCluster".into(),
            broker_id: 1,
            raft_term: Some(1),
        };
        let request = RemotingCommand::request(RequestCode::QUERY_DATA_VERSION, &header).with_body(
            to_json(&DataVersion {
                state_version: 0,
                timestamp: 1,
                counter: 1,
            }),
        );
        let response = b.request(request, TIMEOUT).await.unwrap();
        let answer: QueryDataVersionResponseHeader = response.header().unwrap();
        assert!(
            !answer.changed,
            "an unchanged version must not ask for the topic table"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let route = addrs(&client).await;
    assert_eq!(
        route.values().collect::<Vec<_>>(),
        vec!["127.0.0.1:10921"],
        "{route:?}"
    );
    assert!(!a.is_closed(), "expiry is by silence, not by connection");
    // Once b is silent too, the group keeps its queues (with no address) for one more
    // expiry period, then leaves the route.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut saw_addressless = false;
    loop {
        match client.topic_route("TopicTest").await.unwrap() {
            None => break,
            Some(route) => saw_addressless |= route.broker_datas[0].broker_addrs.is_empty(),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group never left the route"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        saw_addressless,
        "an emptied group's queues must stay for an expiry period"
    );
}

#[tokio::test]
async fn garbage_on_a_socket_closes_only_that_connection() {
    let (addr, _stop) = start(NamesrvConfig::default()).await;
    let good = connect(&addr).await;
    register(&good, "127.0.0.1:10911", 0, 1).await;
    for garbage in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0x7F, 0xFF, 0xFF, 0xFF][..],
        &[0, 0, 0, 8, 9, 0, 0, 0, 1, 2, 3, 4][..],
        &[0, 0, 0, 6, 0, 0, 0, 2, b'{', b'{'][..],
    ] {
        let mut bad = TcpStream::connect(&addr).await.unwrap();
        bad.write_all(garbage).await.unwrap();
        let mut sink = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(3), bad.read(&mut sink))
            .await
            .expect("the name server closes a connection that sent garbage")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    // The good connection, and its registration, are untouched.
    let client = NameServerClient::new(&addr, TIMEOUT).unwrap();
    assert_eq!(addrs(&client).await[&0], "127.0.0.1:10911");
    assert!(!good.is_closed());
}

#[tokio::test]
async fn unknown_codes_and_bad_headers_get_clear_errors() {
    let (addr, _stop) = start(NamesrvConfig::default()).await;
    let conn = connect(&addr).await;
    let response = conn
        .request(RemotingCommand::bare_request(4242), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        response.response_code(),
        Some(ResponseCode::REQUEST_CODE_NOT_SUPPORTED)
    );
    let response = conn
        .request(
            RemotingCommand::bare_request(RequestCode::GET_ROUTEINFO_BY_TOPIC),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(response.response_code(), Some(ResponseCode::SYSTEM_ERROR));
    assert!(response.remark.unwrap().contains("topic"));
    let response = conn
        .request(
            RemotingCommand::request(
                RequestCode::REGISTER_BROKER,
                &RegisterBrokerRequestHeader::default(),
            )
            .with_body(&b"{not json"[..]),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(response.response_code(), Some(ResponseCode::SYSTEM_ERROR));
    assert!(!conn.is_closed());
}

// Proves 100,000 topics of 127 characters register in the compressed form (the JSON form
// is 38 MB, past the 16 MiB frame limit) and every one routes; a body whose bodyCrc32 does
// not match is refused.
#[tokio::test]
async fn a_hundred_thousand_topics_register_compressed_and_route() {
    let (addr, _stop) = start(NamesrvConfig::default()).await;
    let conn = connect(&addr).await;
    let name = |i: usize| format!("{i:06}{}", "t".repeat(121));
    let mut b = RegisterBrokerBody::default();
    for i in 0..100_000 {
        b.topic_config_serialize_wrapper.topic_config_table.insert(
            name(i),
            TopicConfig {
                topic_name: name(i),
                read_queue_nums: 8,
                write_queue_nums: 8,
                perm: 6,
                ..Default::default()
            },
        );
    }
    let compressed = remoting::register_body::encode_compressed(&b);
    assert!(compressed.len() < 1 << 20, "{} bytes", compressed.len());
    let header = |crc: i32| RegisterBrokerRequestHeader {
        broker_name: "broker-a".into(),
        broker_addr: "127.0.0.1:10911".into(),
        cluster_name: "DefaultCluster".into(),
        ha_server_addr: String::new(),
        broker_id: 0,
        compressed: Some(true),
        body_crc32: Some(crc),
        raft_term: Some(1),
        ..Default::default()
    };
    let crc = remoting::register_body::body_crc32(&compressed);
    let wrong = RemotingCommand::request(RequestCode::REGISTER_BROKER, &header(crc ^ 1))
        .with_body(compressed.clone());
    let answer = conn.request(wrong, TIMEOUT).await.unwrap();
    assert_eq!(answer.remark.as_deref(), Some("crc32 not match"));
    let request =
        RemotingCommand::request(RequestCode::REGISTER_BROKER, &header(crc)).with_body(compressed);
    let answer = conn
        .request(request, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        answer.response_code(),
        Some(ResponseCode::SUCCESS),
        "{answer:?}"
    );

    let client = NameServerClient::new(&addr, TIMEOUT).unwrap();
    for i in [0, 1, 49_999, 99_999] {
        let route = client.topic_route(&name(i)).await.unwrap().expect("routed");
        assert_eq!(route.queue_datas[0].write_queue_nums, 8);
        assert_eq!(route.broker_datas[0].broker_addrs[&0], "127.0.0.1:10911");
    }
    assert_eq!(client.all_topics().await.unwrap().topic_list.len(), 100_000);
}
