//! Proves RocketMQ's plain ACL on a real three-node group (`aclEnable=true`): requests
//! signed as the Java client signs them are served by what the account may do; unsigned,
//! wrongly signed and not-permitted requests are answered NO_PERMISSION; creating a topic
//! needs an admin account; and the rules hold on whichever node leads.

mod common;

use std::time::Duration;

use client::{
    ClientError, Message, MessageQueue, Producer, ProducerConfig, PullConsumer, PullConsumerConfig,
    PullResult,
};
use remoting::acl::AclCredentials;
use remoting::connection::{NoRequests, RequestHook};
use remoting::header::CreateTopicRequestHeader;
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};

const ACL: &str = r#"
globalWhiteRemoteAddresses:
accounts:
  - accessKey: admin0001
    secretKey: admin-secret-0001
    admin: true
  - accessKey: writer001
    secretKey: writer-secret-001
    defaultTopicPerm: DENY
    defaultGroupPerm: DENY
    topicPerms:
      - AclOrders=PUB
      - TBW102=PUB
  - accessKey: reader001
    secretKey: reader-secret-001
    defaultTopicPerm: DENY
    defaultGroupPerm: DENY
    topicPerms:
      - AclOrders=SUB
    groupPerms:
      - acl-readers=SUB
"#;

fn producer_config(namesrv: &str, credentials: Option<(&str, &str)>) -> ProducerConfig {
    let mut config = ProducerConfig::new(namesrv, "acl-producers");
    if let Some((ak, sk)) = credentials {
        config.client = config.client.with_acl(ak, sk);
    }
    config.retry_times_when_send_failed = 0;
    config
}

async fn send_as(namesrv: &str, credentials: Option<(&str, &str)>) -> Result<(), ClientError> {
    let producer = Producer::start(producer_config(namesrv, credentials)).await?;
    let sent = producer.send(Message::new("AclOrders", "an order")).await;
    producer.shutdown().await;
    sent.map(|_| ())
}

fn refused(result: Result<(), ClientError>, why: &str) {
    match result {
        Err(ClientError::Broker { code, remark, .. }) => {
            assert_eq!(code, ResponseCode::NO_PERMISSION as i32, "{remark}");
            assert!(remark.contains(why), "`{remark}` lacks `{why}`");
        }
        other => panic!("expected NO_PERMISSION ({why}), got {other:?}"),
    }
}

async fn create_topic_as(leader: &str, credentials: &str, secret: &str) -> RemotingCommand {
    let config = ConnectionConfig {
        request_hook: Some(RequestHook::acl(AclCredentials::new(credentials, secret))),
        ..ConnectionConfig::default()
    };
    let conn = Connection::connect(leader, &config, std::sync::Arc::new(NoRequests))
        .await
        .unwrap();
    let header = CreateTopicRequestHeader {
        topic: "AclAdminMade".into(),
        default_topic: "TBW102".into(),
        read_queue_nums: 2,
        write_queue_nums: 2,
        perm: 6,
        topic_filter_type: "SINGLE_TAG".into(),
        ..Default::default()
    };
    let request = RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_TOPIC, &header);
    conn.request(request, Duration::from_secs(10))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plain_acl_on_a_raft_group() {
    let acl_dir = tempfile::tempdir().unwrap();
    let acl_file = acl_dir.path().join("plain_acl.yml");
    std::fs::write(&acl_file, ACL).unwrap();
    let mut cluster =
        common::Cluster::start(&format!("aclEnable=true\naclFile={}\n", acl_file.display()));
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let namesrv = cluster.namesrv_addr.clone();

    // Admin-only: a writer may not create a topic; the admin may.
    let denied = create_topic_as(&leader, "writer001", "writer-secret-001").await;
    assert_eq!(denied.code, ResponseCode::NO_PERMISSION as i32);
    assert!(denied
        .remark
        .as_deref()
        .unwrap_or("")
        .contains("Need admin permission"));
    let made = create_topic_as(&leader, "admin0001", "admin-secret-0001").await;
    assert_eq!(made.code, ResponseCode::SUCCESS as i32, "{:?}", made.remark);

    // Sends: the writer may (retried while a young group may still move its leader);
    // nobody else.
    writer_sends(&namesrv).await;
    refused(send_as(&namesrv, None).await, "No accessKey is configured");
    refused(
        send_as(&namesrv, Some(("writer001", "a-guessed-secret"))).await,
        "Check signature failed for accessKey=writer001",
    );
    refused(
        send_as(&namesrv, Some(("reader001", "reader-secret-001"))).await,
        "No default permission for topic:AclOrders",
    );
    refused(
        send_as(&namesrv, Some(("nobody001", "whatever-secret"))).await,
        "No acl config for nobody001",
    );

    // Pulls: the reader, in its group, reads what the writer sent; the writer may not.
    let mut config = PullConsumerConfig::new(&namesrv, "acl-readers");
    config.client = config.client.with_acl("reader001", "reader-secret-001");
    let reader = PullConsumer::start(config).await.unwrap();
    let queues = reader.fetch_queues("AclOrders").await.unwrap();
    let mut read = 0;
    for queue in &queues {
        if let PullResult::Found { messages, .. } = reader
            .pull(queue, 0, 32, "*", Duration::ZERO)
            .await
            .unwrap()
        {
            read += messages.len();
        }
    }
    // At least the one acknowledged (a retried send whose outcome was unknown may be there too).
    assert!(read >= 1, "the reader reads what the writer sent");
    let mut config = PullConsumerConfig::new(&namesrv, "acl-readers");
    config.client = config.client.with_acl("writer001", "writer-secret-001");
    let writer = PullConsumer::start(config).await.unwrap();
    let queue: &MessageQueue = &queues[0];
    match writer.pull(queue, 0, 32, "*", Duration::ZERO).await {
        Err(ClientError::Broker { code, .. }) => {
            assert_eq!(code, ResponseCode::NO_PERMISSION as i32)
        }
        other => panic!("the writer pulled: {other:?}"),
    }
    reader.shutdown().await;
    writer.shutdown().await;

    // The same rules on the next leader.
    let old = cluster.node_index(&leader);
    cluster.kill(old);
    let next = cluster
        .wait_for_leader(Some(&leader), Duration::from_secs(15))
        .await;
    assert_ne!(next, leader);
    refused(send_as(&namesrv, None).await, "No accessKey is configured");
    writer_sends(&namesrv).await;
}

/// The writer's send, retried for up to 10 s; panics with the last error.
async fn writer_sends(namesrv: &str) {
    let mut last = None;
    for _ in 0..40 {
        match send_as(namesrv, Some(("writer001", "writer-secret-001"))).await {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the writer could not send: {last:?}");
}
