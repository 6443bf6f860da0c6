//! Proves TLS end to end with RocketMQ's `tls.server.mode=enforcing` on the name server and
//! on every broker's client port: a client with `use_tls` finds routes, sends and pulls;
//! brokers register over TLS (`tls.enable=true`); a plaintext client is refused by both.

mod common;

use std::path::Path;
use std::time::Duration;

use client::{
    ClientConfig, Message, NameServerClient, Producer, ProducerConfig, PullConsumer,
    PullConsumerConfig, PullResult,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use remoting::connection::NoRequests;
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode};

/// A CA and a server certificate for 127.0.0.1, as PEM files in `dir`.
fn make_pki(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "t41 CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "t41 server");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = server.signed_by(&key, &ca_cert, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enforcing_tls_on_name_server_and_brokers() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let server_tls = format!(
        "tls.server.mode=enforcing\ntls.server.certPath={}\ntls.server.keyPath={}\n",
        pki.path().join("server.pem").display(),
        pki.path().join("server.key").display()
    );
    let cluster =
        common::Cluster::start_with(&format!("{server_tls}tls.enable=true\n"), None, &server_tls);
    let namesrv = cluster.namesrv_addr.clone();

    // A verified TLS client: it trusts the CA, and the routes come over TLS.
    let verified = remoting::tls::ClientTls::from_lookup("t41", |key| match key {
        "tls.enable" | "tls.client.authServer" => Some("true".into()),
        "tls.client.trustCertPath" => Some(pki.path().join("ca.pem").display().to_string()),
        _ => None,
    })
    .unwrap()
    .map(std::sync::Arc::new);
    let mut tls_client = ClientConfig::new(&namesrv);
    tls_client.connection.tls = verified;
    let lookup = NameServerClient::new(&namesrv, Duration::from_secs(3))
        .unwrap()
        .with_connection(tls_client.connection.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(info) = lookup.cluster_info().await {
            if info
                .broker_addr_table
                .values()
                .any(|b| b.leader_addr().is_some())
            {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "brokers registered over TLS within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut config = ProducerConfig::new(&namesrv, "tls-producers");
    config.client = ClientConfig::new(&namesrv).use_tls();
    let producer = Producer::start(config).await.unwrap();
    // The group may still move its leadership in its first seconds: a send is retried
    // until acknowledged (an unknown outcome may also be stored, so reads are checked
    // against the acknowledged set, not its size).
    let mut acked = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for i in 0..20 {
        let body = format!("order {i}");
        loop {
            match producer.send(Message::new("TlsOrders", body.clone())).await {
                Ok(_) => break,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "send {i} over TLS: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        acked.insert(body);
    }
    producer.shutdown().await;

    let mut config = PullConsumerConfig::new(&namesrv, "tls-readers");
    config.client = tls_client;
    let reader = PullConsumer::start(config).await.unwrap();
    let mut read = std::collections::BTreeSet::new();
    for queue in reader.fetch_queues("TlsOrders").await.unwrap() {
        if let PullResult::Found { messages, .. } = reader
            .pull(&queue, 0, 64, "*", Duration::ZERO)
            .await
            .unwrap()
        {
            read.extend(
                messages
                    .iter()
                    .map(|m| String::from_utf8_lossy(&m.body).into_owned()),
            );
        }
    }
    assert!(
        acked.is_subset(&read),
        "pulled over TLS {read:?}, acknowledged {acked:?}"
    );
    reader.shutdown().await;

    // Plaintext is refused by the name server and by a broker: the connection closes
    // without an answer.
    for addr in [namesrv.as_str(), cluster.nodes[0].addr.as_str()] {
        let plain = Connection::connect(
            addr,
            &ConnectionConfig::default(),
            std::sync::Arc::new(NoRequests),
        )
        .await
        .unwrap();
        let asked = plain
            .request(
                RemotingCommand::bare_request(RequestCode::GET_BROKER_CLUSTER_INFO),
                Duration::from_secs(3),
            )
            .await;
        assert!(asked.is_err(), "{addr} answered plaintext: {asked:?}");
    }
}
