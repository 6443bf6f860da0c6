//! Proves transactional messages with real processes: a committed transaction is
//! delivered once and a rolled-back one never; a half left unknown is checked back and the
//! answer honoured; one never resolved is checked `transactionCheckMax` times and then
//! discarded to TRANS_CHECK_MAX_TIME_TOPIC, never delivered; a producer that is gone
//! leaves its half to be checked back on another producer of its group; halves and
//! commits survive leader SIGKILLs, and a commit repeated across failovers is delivered
//! exactly once.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{
    ClientError, LocalTransactionState, Message, MessageExt, Producer, ProducerConfig, SendResult,
    TransactionProducer,
};
use remoting::header::EndTransactionRequestHeader;
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};

const TOPIC: &str = "TxnTopic";
const DISCARD_TOPIC: &str = "TRANS_CHECK_MAX_TIME_TOPIC";

/// Check-backs each producer saw, by message key.
type Checks = Arc<Mutex<BTreeMap<String, usize>>>;

fn producer_config(namesrv: &str, group: &str) -> ProducerConfig {
    let mut config = ProducerConfig::new(namesrv, group);
    config.client.poll_name_server_interval_ms = 500;
    config.client.heartbeat_broker_interval_ms = 1_000;
    config.send_msg_timeout_ms = 10_000;
    config
}

/// A transactional producer whose check-back answer for a message is `answers[key]`
/// (unknown when absent), counting the checks it gets.
async fn txn_producer(
    namesrv: &str,
    group: &str,
    answers: Arc<Mutex<HashMap<String, LocalTransactionState>>>,
) -> (TransactionProducer, Checks) {
    let checks: Checks = Arc::default();
    let seen = checks.clone();
    let listener = move |m: &MessageExt| {
        assert_eq!(m.topic, TOPIC, "a check names the real topic");
        let key = m.keys().unwrap_or_default().to_string();
        *seen.lock().unwrap().entry(key.clone()).or_default() += 1;
        answers
            .lock()
            .unwrap()
            .get(&key)
            .copied()
            .unwrap_or(LocalTransactionState::Unknow)
    };
    let p = TransactionProducer::start(producer_config(namesrv, group), Arc::new(listener))
        .await
        .unwrap();
    (p, checks)
}

fn msg(key: &str) -> Message {
    Message::new(TOPIC, format!("body of {key}")).with_keys([key])
}

/// Sends `key` in a transaction whose local transaction answers `state`.
async fn send(p: &TransactionProducer, key: &str, state: LocalTransactionState) -> SendResult {
    let r = p
        .send_message_in_transaction(msg(key), |_, _| state)
        .await
        .unwrap();
    assert_eq!(r.local_transaction_state, state);
    r.send_result
}

/// How many times each key appears in `topic` (none while it has no route).
async fn delivered(namesrv: &str, topic: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let ns = client::NameServerClient::new(namesrv, Duration::from_secs(2)).unwrap();
    let routed = ns.topic_route(topic).await.ok().flatten();
    if !routed.is_some_and(|r| r.queue_datas.iter().any(|q| q.read_queue_nums > 0)) {
        return out;
    }
    for messages in common::drain_topic(namesrv, topic).await.into_values() {
        for m in messages {
            *out.entry(m.keys().unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    out
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// END_TRANSACTION sent two-way, straight to `addr`: the broker's answer.
async fn end_two_way(
    addr: &str,
    group: &str,
    sent: &SendResult,
    commit_or_rollback: i32,
) -> RemotingCommand {
    let conn = Connection::connect(
        addr,
        &ConnectionConfig::default(),
        Arc::new(remoting::connection::NoRequests),
    )
    .await
    .unwrap();
    let (_, offset) = remoting::message::decode_message_id(&sent.offset_msg_id).unwrap();
    let header = EndTransactionRequestHeader {
        producer_group: group.into(),
        tran_state_table_offset: sent.queue_offset,
        commit_log_offset: offset,
        commit_or_rollback,
        from_transaction_check: Some(false),
        msg_id: sent.msg_id.clone(),
        transaction_id: Some(sent.msg_id.clone()),
    };
    let request = RemotingCommand::request(RequestCode::END_TRANSACTION, &header);
    conn.request(request, Duration::from_secs(5)).await.unwrap()
}

const COMMIT: i32 = 8;

/// [`end_two_way`] on whichever member leads: a member that answers "not the leader" (an
/// election still settling on a loaded machine) is asked again once the group has one.
async fn end_on_leader(
    cluster: &common::Cluster,
    group: &str,
    sent: &SendResult,
    commit_or_rollback: i32,
) -> RemotingCommand {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let leader = cluster.wait_for_leader(None, Duration::from_secs(15)).await;
        let r = end_two_way(&leader, group, sent, commit_or_rollback).await;
        if r.response_code() != Some(ResponseCode::SERVICE_NOT_AVAILABLE) {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no settled leader: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commit_rollback_check_back_and_discard() {
    let cluster = common::Cluster::start(
        "transactionTimeOut=1500\ntransactionCheckInterval=500\ntransactionCheckMax=3",
    );
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let ns = cluster.namesrv_addr.clone();
    let answers: Arc<Mutex<HashMap<String, LocalTransactionState>>> = Arc::default();
    let (p, checks) = txn_producer(&ns, "txn-producers", answers.clone()).await;
    use LocalTransactionState::{CommitMessage, RollbackMessage, Unknow};

    let commit = send(&p, "commit", CommitMessage).await;
    send(&p, "rollback", RollbackMessage).await;
    send(&p, "late-commit", Unknow).await;
    send(&p, "late-rollback", Unknow).await;
    let never = send(&p, "never", Unknow).await;
    // A half is stored in the half topic, answered as RocketMQ answers it.
    assert_eq!(commit.queue.topic, TOPIC);
    answers
        .lock()
        .unwrap()
        .insert("late-commit".into(), CommitMessage);
    answers
        .lock()
        .unwrap()
        .insert("late-rollback".into(), RollbackMessage);

    // The committed one appears; the unknown ones are not visible before their check.
    wait_until("the commit delivered", Duration::from_secs(10), || async {
        delivered(&ns, TOPIC).await.contains_key("commit")
    })
    .await;
    let seen = delivered(&ns, TOPIC).await;
    assert!(!seen.contains_key("late-commit"), "{seen:?}");

    // Validation, two-way: a repeated commit and a wrong group are refused clearly.
    let r = end_two_way(&leader, "txn-producers", &commit, COMMIT).await;
    assert_eq!(r.response_code(), Some(ResponseCode::SYSTEM_ERROR));
    assert!(
        r.remark
            .as_deref()
            .unwrap_or("")
            .contains("no pending half"),
        "{r:?}"
    );
    let r = end_two_way(&leader, "someone-else", &never, COMMIT).await;
    assert_eq!(r.response_code(), Some(ResponseCode::SYSTEM_ERROR));
    assert!(
        r.remark
            .as_deref()
            .unwrap_or("")
            .contains("producer group wrong"),
        "{r:?}"
    );
    // A client may not forge the origin property.
    let plain = Producer::start(producer_config(&ns, "plain-producers"))
        .await
        .unwrap();
    let forged = plain
        .send(Message::new(TOPIC, "forged").with_property("__TRANSACTION_ORIGIN", "0"))
        .await;
    assert!(
        matches!(&forged, Err(ClientError::Broker { code, .. }) if *code == ResponseCode::MESSAGE_ILLEGAL as i32),
        "{forged:?}"
    );

    // The unknown ones are checked back and the answers honoured; the one never resolved
    // is checked transactionCheckMax (3) times and then discarded.
    wait_until("the discard", Duration::from_secs(30), || async {
        delivered(&ns, DISCARD_TOPIC).await.contains_key("never")
    })
    .await;
    wait_until("the late commit", Duration::from_secs(10), || async {
        delivered(&ns, TOPIC).await.contains_key("late-commit")
    })
    .await;
    // Time for anything wrong (a second delivery, another check) to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = delivered(&ns, TOPIC).await;
    println!("delivered: {seen:?}; checks: {:?}", checks.lock().unwrap());
    let expected: BTreeMap<String, usize> = [("commit".to_string(), 1), ("late-commit".into(), 1)]
        .into_iter()
        .collect();
    assert_eq!(seen, expected);
    let discarded = delivered(&ns, DISCARD_TOPIC).await;
    assert_eq!(discarded, [("never".to_string(), 1)].into_iter().collect());
    let checks = checks.lock().unwrap().clone();
    assert_eq!(checks.get("never"), Some(&3), "{checks:?}");
    assert_eq!(checks.get("late-commit"), Some(&1), "{checks:?}");
    assert_eq!(checks.get("late-rollback"), Some(&1), "{checks:?}");
    assert_eq!(checks.get("commit"), None, "{checks:?}");
    assert_eq!(checks.get("rollback"), None, "{checks:?}");
    // Every replica holds the same queues: the half topic has all five halves, the real
    // topic exactly the two commits, on each node.
    for node in &cluster.nodes {
        let mut real = 0;
        for q in 0..4 {
            real += common::pull_queue_from(&node.addr, TOPIC, q).await.len();
        }
        assert_eq!(real, 2, "{}", node.addr);
        let halves = common::pull_queue_from(&node.addr, "RMQ_SYS_TRANS_HALF_TOPIC", 0).await;
        assert_eq!(halves.len(), 5, "{}", node.addr);
    }
    p.shutdown().await;
    plain.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gone_producers_half_is_checked_on_another_of_its_group() {
    let cluster = common::Cluster::start(
        "transactionTimeOut=1500\ntransactionCheckInterval=500\ntransactionCheckMax=15",
    );
    cluster.wait_ready(Duration::from_secs(30)).await;
    let ns = cluster.namesrv_addr.clone();
    let group = "txn-group";
    let answers: Arc<Mutex<HashMap<String, LocalTransactionState>>> = Arc::default();
    answers
        .lock()
        .unwrap()
        .insert("orphan".into(), LocalTransactionState::CommitMessage);
    let (gone, gone_checks) = txn_producer(&ns, group, Arc::default()).await;
    let (survivor, survivor_checks) = txn_producer(&ns, group, answers).await;
    survivor.register_topic(TOPIC).await.unwrap();
    send(&gone, "orphan", LocalTransactionState::Unknow).await;
    gone.shutdown().await;
    wait_until("the orphan committed", Duration::from_secs(20), || async {
        delivered(&ns, TOPIC).await.contains_key("orphan")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(delivered(&ns, TOPIC).await.get("orphan"), Some(&1));
    assert_eq!(survivor_checks.lock().unwrap().get("orphan"), Some(&1));
    assert!(gone_checks.lock().unwrap().is_empty());
    survivor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn halves_and_commits_survive_leader_kills() {
    // No check-backs here: every decision is the producer's own END_TRANSACTION.
    let mut cluster = common::Cluster::start("transactionTimeOut=600000");
    let first = cluster.wait_ready(Duration::from_secs(30)).await;
    let ns = cluster.namesrv_addr.clone();
    let (p, _) = txn_producer(&ns, "txn-failover", Arc::default()).await;

    // Halves sent, leader killed, then committed (or rolled back) after the failover.
    let mut halves = Vec::new();
    for i in 0..10 {
        halves.push(send(&p, &format!("a{i}"), LocalTransactionState::Unknow).await);
    }
    // The killed node stays down until the ends are sent: a oneway END_TRANSACTION to
    // a demoted leader that is still up would be dropped (and left to a check-back, as in
    // RocketMQ); to a dead one it is refused at connect, and the producer finds the new
    // leader.
    let first_index = cluster.node_index(&first);
    cluster.kill(first_index);
    let second = cluster
        .wait_for_leader(Some(&first), Duration::from_secs(15))
        .await;
    println!("leader {first} killed; {second} leads");
    for (i, sent) in halves.iter().enumerate() {
        let state = match i < 5 {
            true => LocalTransactionState::CommitMessage,
            false => LocalTransactionState::RollbackMessage,
        };
        p.end_transaction(sent, state).await.unwrap();
    }
    // Committed, then the leader killed: each is delivered exactly once, also when the
    // producer repeats its commits after the failover.
    let mut committed = Vec::new();
    for i in 0..10 {
        committed.push(send(&p, &format!("b{i}"), LocalTransactionState::CommitMessage).await);
    }
    wait_until(
        "a0-a4 and b0-b9 delivered",
        Duration::from_secs(20),
        || async { delivered(&ns, TOPIC).await.len() == 15 },
    )
    .await;
    // The oneway rollbacks have applied: a two-way one finds nothing pending.
    for sent in halves.iter().skip(5) {
        let r = end_on_leader(&cluster, "txn-failover", sent, 12).await;
        assert_eq!(r.response_code(), Some(ResponseCode::SYSTEM_ERROR), "{r:?}");
    }
    cluster.start_node(first_index);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second_index = cluster.node_index(&second);
    cluster.kill(second_index);
    let third = cluster
        .wait_for_leader(Some(&second), Duration::from_secs(15))
        .await;
    println!("leader {second} killed; {third} leads");
    // Every decision repeated on the new leader (commits of rolled-back halves too).
    for sent in halves.iter().chain(&committed) {
        p.end_transaction(sent, LocalTransactionState::CommitMessage)
            .await
            .unwrap();
    }
    // A repeated commit, two-way, is refused with a clear error.
    let r = end_on_leader(&cluster, "txn-failover", &committed[0], COMMIT).await;
    assert_eq!(r.response_code(), Some(ResponseCode::SYSTEM_ERROR), "{r:?}");
    cluster.start_node(second_index);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = delivered(&ns, TOPIC).await;
    let expected: BTreeMap<String, usize> = (0..5)
        .map(|i| format!("a{i}"))
        .chain((0..10).map(|i| format!("b{i}")))
        .map(|k| (k, 1))
        .collect();
    assert_eq!(seen, expected);
    p.shutdown().await;
}
