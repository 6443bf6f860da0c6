//! Proves message query with real processes: QUERY_MESSAGE by key and by unique key and
//! VIEW_MESSAGE_BY_ID by CommitLog offset are answered with the stored message (queue and
//! CommitLog offsets filled in) by the leader and by each follower, each asked directly; a
//! key outside the time range, an unknown key and an offset inside a message are refused;
//! the client finds messages by key, unique key and offset message id; a delayed message is
//! found under SCHEDULE_TOPIC_XXXX and, once delivered, under its topic. Then the leader is
//! SIGKILLed: the survivors still answer for the old messages, and the client still resolves
//! an offset message id that names the dead leader.

mod common;

use std::time::{Duration, Instant};

use client::query::{self, KeyQuery};
use client::{Message, MessageExt, Producer, ProducerConfig, SendResult};
use remoting::header::{
    QueryMessageRequestHeader, QueryMessageResponseHeader, ViewMessageRequestHeader,
    UNIQUE_MSG_QUERY_FLAG,
};
use remoting::message::decode_message_id;
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};

const TOPIC: &str = "QueryTopic";
const TIMEOUT: Duration = Duration::from_secs(3);

async fn ask(addr: &str, request: RemotingCommand) -> RemotingCommand {
    let conn = Connection::connect(
        addr,
        &ConnectionConfig::default(),
        std::sync::Arc::new(remoting::connection::NoRequests),
    )
    .await
    .unwrap();
    let response = conn.request(request, TIMEOUT).await.unwrap();
    conn.close();
    response
}

fn query_request(topic: &str, key: &str, begin: i64, end: i64, unique: bool) -> RemotingCommand {
    let header = QueryMessageRequestHeader {
        topic: topic.into(),
        key: key.into(),
        max_num: 64,
        begin_timestamp: begin,
        end_timestamp: end,
    };
    let request = RemotingCommand::request(RequestCode::QUERY_MESSAGE, &header);
    if unique {
        request.with_ext(UNIQUE_MSG_QUERY_FLAG, "true")
    } else {
        request
    }
}

/// The messages `addr` answers for a query, waiting (up to 10 s) until it answers
/// `expected` of them: a follower applies, and the index becomes readable, a moment after
/// the leader acknowledged the send.
async fn query_at(
    addr: &str,
    request: impl Fn() -> RemotingCommand,
    expected: usize,
) -> Vec<MessageExt> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = ask(addr, request()).await;
        let found = match response.response_code() {
            Some(ResponseCode::SUCCESS) => {
                let header: QueryMessageResponseHeader = response.header().unwrap();
                assert!(header.index_last_update_phyoffset > 0, "{header:?}");
                MessageExt::decode_all(&response.body, "broker-a").unwrap()
            }
            Some(ResponseCode::QUERY_NOT_FOUND) => Vec::new(),
            other => panic!("{addr} answered {other:?}: {:?}", response.remark),
        };
        if found.len() >= expected || Instant::now() > deadline {
            assert_eq!(found.len(), expected, "{addr}");
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn view_request(offset: i64) -> RemotingCommand {
    RemotingCommand::request(
        RequestCode::VIEW_MESSAGE_BY_ID,
        &ViewMessageRequestHeader { offset },
    )
}

fn commit_log_offset(sent: &SendResult) -> i64 {
    decode_message_id(&sent.offset_msg_id).unwrap().1
}

/// Checks that a found message is the one `sent` acknowledged, offsets filled in.
fn assert_is(found: &MessageExt, sent: &SendResult, body: &str) {
    assert_eq!(found.topic, TOPIC);
    assert_eq!(std::str::from_utf8(&found.body).unwrap(), body);
    assert_eq!(found.msg_id(), sent.msg_id);
    assert_eq!(found.offset_msg_id, sent.offset_msg_id);
    assert_eq!(found.commit_log_offset, commit_log_offset(sent));
    assert_eq!(found.queue_id, sent.queue.queue_id);
    assert_eq!(found.queue_offset, sent.queue_offset);
}

/// Every direct request each of `addrs` must answer for the messages sent.
async fn check_member(addr: &str, sent: &[(SendResult, String)]) {
    // By key: one message per key, and all of them under the key they share.
    for (i, (result, body)) in sent.iter().enumerate().step_by(7) {
        let key = format!("order-{i}");
        let found = query_at(addr, || query_request(TOPIC, &key, 0, i64::MAX, false), 1).await;
        assert_is(&found[0], result, body);
        let found = query_at(
            addr,
            || query_request(TOPIC, &result.msg_id, 0, i64::MAX, true),
            1,
        )
        .await;
        assert_is(&found[0], result, body);
        let response = ask(addr, view_request(commit_log_offset(result))).await;
        assert_eq!(
            response.response_code(),
            Some(ResponseCode::SUCCESS),
            "{:?}",
            response.remark
        );
        let found = MessageExt::decode_all(&response.body, "broker-a").unwrap();
        assert_eq!(found.len(), 1);
        assert_is(&found[0], result, body);
    }
    let all = query_at(
        addr,
        || query_request(TOPIC, "common", 0, i64::MAX, false),
        sent.len(),
    )
    .await;
    let mut offsets: Vec<i64> = all.iter().map(|m| m.commit_log_offset).collect();
    let mut expected: Vec<i64> = sent.iter().map(|(r, _)| commit_log_offset(r)).collect();
    offsets.sort();
    expected.sort();
    assert_eq!(
        offsets, expected,
        "{addr}: every message under the shared key"
    );

    // The time range is on the store time: a range that ends before the first store finds
    // nothing; one around a message's store time finds it.
    let first = &all[0];
    let none = ask(
        addr,
        query_request(TOPIC, "common", 0, first.store_timestamp - 1, false),
    )
    .await;
    assert_eq!(
        none.response_code(),
        Some(ResponseCode::QUERY_NOT_FOUND),
        "{addr}"
    );
    let key = first.keys().unwrap().split(' ').next().unwrap().to_string();
    let (t, o) = (first.store_timestamp, first.commit_log_offset);
    let found = query_at(addr, || query_request(TOPIC, &key, t, t, false), 1).await;
    assert_eq!(found[0].commit_log_offset, o);
    // A unique key asked as a plain key, an unknown key and another topic find nothing.
    let uniq = &sent[0].0.msg_id;
    for request in [
        query_request(TOPIC, uniq, 0, i64::MAX, false),
        query_request(TOPIC, "no-such-key", 0, i64::MAX, false),
        query_request("OtherTopic", "common", 0, i64::MAX, false),
    ] {
        let response = ask(addr, request).await;
        assert_eq!(
            response.response_code(),
            Some(ResponseCode::QUERY_NOT_FOUND),
            "{addr}"
        );
    }
    // An offset inside a message, a negative one and one past the end are refused clearly.
    for offset in [commit_log_offset(&sent[0].0) + 1, -1, i64::MAX / 2] {
        let response = ask(addr, view_request(offset)).await;
        assert_eq!(
            response.response_code(),
            Some(ResponseCode::SYSTEM_ERROR),
            "{offset}"
        );
        let remark = response.remark.unwrap_or_default();
        assert!(
            remark.contains("can not find message by the offset"),
            "{remark}"
        );
    }
}

/// What the client finds through the name server for each message.
async fn check_client(namesrv: &client::NameServerClient, sent: &[(SendResult, String)]) {
    for (i, (result, body)) in sent.iter().enumerate().step_by(5) {
        let found = query::query_by_key(
            namesrv,
            &KeyQuery::new(TOPIC, format!("order-{i}")),
            TIMEOUT,
        )
        .await
        .unwrap();
        assert_eq!(found.len(), 1, "order-{i}");
        assert_is(&found[0], result, body);
        let found = query::query_by_unique_key(namesrv, TOPIC, &result.msg_id, TIMEOUT)
            .await
            .unwrap()
            .expect("found by unique key");
        assert_is(&found, result, body);
        let found = query::view_by_id(namesrv, &result.offset_msg_id, TIMEOUT)
            .await
            .unwrap()
            .expect("found by offset message id");
        assert_is(&found, result, body);
        // mqadmin queryMsgById's fallback: a unique key given as the id.
        let found = query::view_by_id_or_unique_key(namesrv, Some(TOPIC), &result.msg_id, TIMEOUT)
            .await
            .unwrap()
            .expect("found by id or unique key");
        assert_is(&found, result, body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_by_key_unique_key_and_id_on_every_member_across_a_failover() {
    let mut cluster = common::Cluster::start("messageDelayLevel=1s 2s");
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let mut config = ProducerConfig::new(&cluster.namesrv_addr, "query-producers");
    config.client.poll_name_server_interval_ms = 500;
    let producer = Producer::start(config).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..30 {
        let body = format!("query body {i}");
        let msg = Message::new(TOPIC, body.clone())
            .with_tags("TagQ")
            .with_keys([format!("order-{i}"), "common".to_string()]);
        sent.push((producer.send(msg).await.unwrap(), body));
    }
    for node in &cluster.nodes {
        check_member(&node.addr, &sent).await;
    }
    let namesrv = cluster.namesrv();
    check_client(&namesrv, &sent).await;

    // A delayed message is indexed where it is queued: under SCHEDULE_TOPIC_XXXX when
    // stored, and under its topic when its delivery is applied.
    let delayed = producer
        .send(
            Message::new(TOPIC, "delayed")
                .with_keys(["delayed-1"])
                .with_delay_time_level(1),
        )
        .await
        .unwrap();
    let scheduled = query_at(
        &leader,
        || query_request("SCHEDULE_TOPIC_XXXX", "delayed-1", 0, i64::MAX, false),
        1,
    )
    .await;
    assert_eq!(scheduled[0].commit_log_offset, commit_log_offset(&delayed));
    let delivered = query_at(
        &leader,
        || query_request(TOPIC, "delayed-1", 0, i64::MAX, false),
        1,
    )
    .await;
    assert!(delivered[0].commit_log_offset > commit_log_offset(&delayed));
    assert_eq!(std::str::from_utf8(&delivered[0].body).unwrap(), "delayed");

    // Failover: the leader dies; every id it stored names it.
    let old = cluster.node_index(&leader);
    cluster.kill(old);
    let new_leader = cluster
        .wait_for_leader(Some(&leader), Duration::from_secs(30))
        .await;
    assert_ne!(new_leader, leader);
    for (i, node) in cluster.nodes.iter().enumerate() {
        if i != old {
            check_member(&node.addr, &sent).await;
        }
    }
    for (result, _) in &sent {
        assert_eq!(
            decode_message_id(&result.offset_msg_id)
                .unwrap()
                .0
                .to_string(),
            leader
        );
    }
    check_client(&namesrv, &sent).await;
    // A message stored by the new leader is found too, by each means.
    let after = producer
        .send(Message::new(TOPIC, "after failover").with_keys(["after-1"]))
        .await
        .unwrap();
    let found = query::view_by_id(&namesrv, &after.offset_msg_id, TIMEOUT)
        .await
        .unwrap()
        .expect("the new leader's message by id");
    assert_eq!(&found.body[..], b"after failover");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = query::query_by_key(&namesrv, &KeyQuery::new(TOPIC, "after-1"), TIMEOUT)
            .await
            .unwrap();
        if found.len() == 1 || Instant::now() > deadline {
            assert_eq!(found.len(), 1);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    producer.shutdown().await;
}

/// `messageIndexEnable=false`: no index is built, a query by key is refused with a
/// reason, and a message is still found by its offset message id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_index_key_queries_are_refused_and_ids_still_work() {
    let cluster = common::Cluster::start("messageIndexEnable=false");
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let producer = Producer::start(ProducerConfig::new(&cluster.namesrv_addr, "no-index-p"))
        .await
        .unwrap();
    let sent = producer
        .send(Message::new(TOPIC, "unindexed").with_keys(["k-1"]))
        .await
        .unwrap();
    let refused = ask(&leader, query_request(TOPIC, "k-1", 0, i64::MAX, false)).await;
    assert_eq!(refused.code, ResponseCode::SYSTEM_ERROR as i32);
    assert!(
        refused
            .remark
            .as_deref()
            .is_some_and(|r| r.contains("messageIndexEnable=false")),
        "{:?}",
        refused.remark
    );
    let viewed = ask(&leader, view_request(commit_log_offset(&sent))).await;
    assert_eq!(
        viewed.code,
        ResponseCode::SUCCESS as i32,
        "{:?}",
        viewed.remark
    );
    let found = MessageExt::decode_all(&viewed.body, "broker-a").unwrap();
    assert_is(&found[0], &sent, "unindexed");
    producer.shutdown().await;
}
