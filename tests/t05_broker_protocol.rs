//! Proves the broker speaks RocketMQ's protocol end to end over real processes: sends to
//! the leader are acknowledged with consecutive queue offsets, a follower refuses writes
//! naming the leader, pulls return exactly what was sent with offsets filled in, long
//! polling answers as soon as a message arrives, and offsets round-trip.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use remoting::connection::NoRequests;
use remoting::header::{
    OffsetResponseHeader, PullMessageRequestHeader, PullMessageResponseHeader,
    QueryConsumerOffsetRequestHeader, SendMessageRequestHeader, SendMessageResponseHeader,
    UpdateConsumerOffsetRequestHeader,
};
use remoting::message::{decode_records, encode_properties};
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};

const T: Duration = Duration::from_secs(5);

async fn connect(addr: &str) -> Connection {
    Connection::connect(addr, &ConnectionConfig::default(), Arc::new(NoRequests))
        .await
        .unwrap()
}

fn send_request(topic: &str, queue_id: i32, body: &[u8]) -> RemotingCommand {
    let props = encode_properties([("TAGS", "TagA"), ("KEYS", "k1")]);
    RemotingCommand::request(
        RequestCode::SEND_MESSAGE,
        &SendMessageRequestHeader {
            producer_group: "pg".into(),
            topic: topic.into(),
            default_topic: "TBW102".into(),
            default_topic_queue_nums: 4,
            queue_id,
            born_timestamp: 1,
            properties: Some(props),
            ..Default::default()
        },
    )
    .with_body(body.to_vec())
}

fn pull_request(topic: &str, queue_id: i32, offset: i64, suspend_ms: i64) -> RemotingCommand {
    pull_tags(topic, queue_id, offset, suspend_ms, "*")
}

fn pull_tags(
    topic: &str,
    queue_id: i32,
    offset: i64,
    suspend_ms: i64,
    tags: &str,
) -> RemotingCommand {
    RemotingCommand::request(
        RequestCode::PULL_MESSAGE,
        &PullMessageRequestHeader {
            consumer_group: "cg".into(),
            topic: topic.into(),
            queue_id,
            queue_offset: offset,
            max_msg_nums: 32,
            // Subscription flag (4), plus suspend (2) when held.
            sys_flag: if suspend_ms > 0 { 4 | 2 } else { 4 },
            commit_offset: 0,
            suspend_timeout_millis: suspend_ms,
            subscription: Some(tags.into()),
            sub_version: 0,
            expression_type: Some("TAG".into()),
            max_msg_bytes: None,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_pull_and_offsets_over_the_wire() {
    let cluster = common::Cluster::start("");
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let conn = connect(&leader).await;

    // Sends to queue 1 get consecutive queue offsets.
    for i in 0..50i64 {
        let r = conn
            .request(send_request("TopicA", 1, format!("m{i}").as_bytes()), T)
            .await
            .unwrap();
        assert_eq!(r.response_code(), Some(ResponseCode::SUCCESS), "{r:?}");
        let h: SendMessageResponseHeader = r.header().unwrap();
        assert_eq!((h.queue_id, h.queue_offset), (1, i));
        assert_eq!(h.msg_id.len(), 32);
    }

    // A follower refuses writes and names the leader.
    let follower = cluster.nodes.iter().find(|n| n.addr != leader).unwrap();
    let fconn = connect(&follower.addr).await;
    let mut named = None;
    for _ in 0..100 {
        let r = fconn
            .request(send_request("TopicA", 1, b"x"), T)
            .await
            .unwrap();
        assert_eq!(r.response_code(), Some(ResponseCode::SERVICE_NOT_AVAILABLE));
        named = r.ext("leaderAddr").map(str::to_string);
        if named.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(named.as_deref(), Some(leader.as_str()));

    // Pull everything back, with offsets filled in, from the leader and from a follower.
    for addr in [&leader, &follower.addr] {
        let c = connect(addr).await;
        let mut offset = 0i64;
        let mut bodies = Vec::new();
        let deadline = Instant::now() + T;
        while offset < 50 && Instant::now() < deadline {
            let r = c
                .request(pull_request("TopicA", 1, offset, 0), T)
                .await
                .unwrap();
            if r.response_code() != Some(ResponseCode::SUCCESS) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let h: PullMessageResponseHeader = r.header().unwrap();
            for rec in decode_records(&r.body).unwrap() {
                assert_eq!(rec.queue_offset, offset);
                assert!(rec.body_crc_ok());
                assert_eq!(rec.property("TAGS"), Some("TagA"));
                bodies.push(String::from_utf8(rec.body.to_vec()).unwrap());
                offset += 1;
            }
            assert_eq!(h.next_begin_offset, offset);
        }
        let expected: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
        assert_eq!(bodies, expected, "pulled from {addr}");
    }

    // Tag filtering by hash: a subscription no message matches skips them all.
    let r = conn
        .request(pull_tags("TopicA", 1, 0, 0, "TagB"), T)
        .await
        .unwrap();
    assert_eq!(
        r.response_code(),
        Some(ResponseCode::PULL_RETRY_IMMEDIATELY)
    );
    let h: PullMessageResponseHeader = r.header().unwrap();
    assert!(h.next_begin_offset > 0);
    let r = conn
        .request(pull_tags("TopicA", 1, 0, 0, "TagB || TagA"), T)
        .await
        .unwrap();
    assert_eq!(r.response_code(), Some(ResponseCode::SUCCESS));

    // At the end of the queue: not found; past it: offset moved.
    let r = conn
        .request(pull_request("TopicA", 1, 50, 0), T)
        .await
        .unwrap();
    assert_eq!(r.response_code(), Some(ResponseCode::PULL_NOT_FOUND));
    let r = conn
        .request(pull_request("TopicA", 1, 500, 0), T)
        .await
        .unwrap();
    assert_eq!(r.response_code(), Some(ResponseCode::PULL_OFFSET_MOVED));

    // Long polling: a held pull is answered as soon as a message arrives.
    let held = {
        let c = conn.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = c
                .request(
                    pull_request("TopicA", 1, 50, 10_000),
                    Duration::from_secs(15),
                )
                .await
                .unwrap();
            (r, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.request(send_request("TopicA", 1, b"late"), T)
        .await
        .unwrap();
    let (r, waited) = held.await.unwrap();
    assert_eq!(r.response_code(), Some(ResponseCode::SUCCESS));
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    // Offsets: a new group starts at 0; a committed offset is read back.
    let q = |g: &str| {
        RemotingCommand::request(
            RequestCode::QUERY_CONSUMER_OFFSET,
            &QueryConsumerOffsetRequestHeader {
                consumer_group: g.into(),
                topic: "TopicA".into(),
                queue_id: 1,
                set_zero_if_not_found: None,
            },
        )
    };
    let r = conn.request(q("fresh"), T).await.unwrap();
    assert_eq!(r.header::<OffsetResponseHeader>().unwrap().offset, 0);
    conn.oneway(RemotingCommand::request(
        RequestCode::UPDATE_CONSUMER_OFFSET,
        &UpdateConsumerOffsetRequestHeader {
            consumer_group: "g1".into(),
            topic: "TopicA".into(),
            queue_id: 1,
            commit_offset: 42,
        },
    ))
    .await
    .unwrap();
    let deadline = Instant::now() + T;
    loop {
        let r = conn.request(q("g1"), T).await.unwrap();
        if r.header::<OffsetResponseHeader>().map(|h| h.offset).ok() == Some(42) {
            break;
        }
        assert!(Instant::now() < deadline, "offset never read back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and reaches the followers through the Raft log.
    let deadline = Instant::now() + T;
    loop {
        let r = fconn.request(q("g1"), T).await.unwrap();
        if r.header::<OffsetResponseHeader>().map(|h| h.offset).ok() == Some(42) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "offset never reached the follower"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Bad input gets clear errors and leaves the connection up.
    let r = conn
        .request(RemotingCommand::bare_request(RequestCode::SEND_MESSAGE), T)
        .await
        .unwrap();
    assert_eq!(r.response_code(), Some(ResponseCode::SYSTEM_ERROR));
    let r = conn
        .request(send_request("bad topic!", 0, b"x"), T)
        .await
        .unwrap();
    // As RocketMQ's broker answers an illegal topic (TopicValidator.validateTopic).
    assert_eq!(r.response_code(), Some(ResponseCode::SYSTEM_ERROR));
    assert!(r.remark.unwrap_or_default().contains("topic"));
    let r = conn
        .request(send_request("TopicA", 99, b"x"), T)
        .await
        .unwrap();
    assert_eq!(r.response_code(), Some(ResponseCode::SYSTEM_ERROR));
    let big = vec![0u8; 4 * 1024 * 1024 + 1];
    let r = conn
        .request(send_request("TopicA", 0, &big), T)
        .await
        .unwrap();
    assert_eq!(r.response_code(), Some(ResponseCode::MESSAGE_ILLEGAL));
    assert!(!conn.is_closed());
}
