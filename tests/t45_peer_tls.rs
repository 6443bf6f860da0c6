//! Proves a broker group runs with mutual TLS on its Raft peer ports (`tls.peer.mode=enforcing`,
//! the certificate and trust file taken from the client port's `tls.server.*` keys, whose own
//! mode stays disabled): a leader is elected and a send acknowledged; each peer port serves
//! TLS with the group's certificate to a client presenting one of the group's CA, and closes
//! a TLS client that presents none; the leader, killed, is replaced and sends are acknowledged
//! again by the two that are left, over TLS.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use client::{Message, Producer, ProducerConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use remoting::tls::ClientTls;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A CA and one certificate for 127.0.0.1 that allows server and client authentication (a
/// peer is both), as PEM files in `dir`.
fn make_pki(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "t45 CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut node = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    node.distinguished_name.push(DnType::CommonName, "t45 node");
    node.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = node.signed_by(&key, &ca_cert, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("node.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("node.key"), key.serialize_pem()).unwrap();
}

/// A TLS client that verifies the server against the test CA, presenting the node
/// certificate when `with_certificate`.
fn tls_client(pki: &Path, with_certificate: bool) -> Arc<ClientTls> {
    let path = |name: &str| Some(pki.join(name).display().to_string());
    let tls = ClientTls::from_lookup("t45", |key| match key {
        "tls.enable" | "tls.client.authServer" => Some("true".into()),
        "tls.client.trustCertPath" => path("ca.pem"),
        "tls.client.certPath" if with_certificate => path("node.pem"),
        "tls.client.keyPath" if with_certificate => path("node.key"),
        _ => None,
    });
    Arc::new(tls.unwrap().expect("tls.enable=true"))
}

/// Sends one message, retrying while the group may still move its leadership, within 20 s.
async fn send_acknowledged(producer: &Producer, body: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match producer
            .send(Message::new("PeerTls", body.to_string()))
            .await
        {
            Ok(_) => return,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "send {body}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_with_peer_tls_elects_commits_and_fails_over() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let file = |name: &str| pki.path().join(name).display().to_string();
    let peer_tls = format!(
        "tls.peer.mode=enforcing\ntls.server.certPath={}\ntls.server.keyPath={}\n\
         tls.server.trustCertPath={}\n",
        file("node.pem"),
        file("node.key"),
        file("ca.pem"),
    );
    let mut cluster = common::Cluster::start(&peer_tls);
    let leader = cluster.wait_ready(Duration::from_secs(30)).await;
    let producer = Producer::start(ProducerConfig::new(&cluster.namesrv_addr, "t45-producers"))
        .await
        .unwrap();
    send_acknowledged(&producer, "before the kill").await;

    for node in &cluster.nodes {
        let addr = node.peer_addr.as_str();
        let tcp = TcpStream::connect(addr).await.unwrap();
        tls_client(pki.path(), true)
            .connect(addr, tcp)
            .await
            .unwrap_or_else(|e| panic!("{addr} serves TLS with the group's certificate: {e}"));
        let tcp = TcpStream::connect(addr).await.unwrap();
        if let Ok(mut anonymous) = tls_client(pki.path(), false).connect(addr, tcp).await {
            // TLS 1.3: the server's refusal of a missing certificate arrives as a read.
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(3), anonymous.read(&mut byte));
            let closed = matches!(read.await, Ok(Ok(0)) | Ok(Err(_)));
            assert!(closed, "{addr} closes a TLS client without a certificate");
        }
    }

    let killed = cluster.node_index(&leader);
    cluster.kill(killed);
    let new_leader = cluster
        .wait_for_leader(Some(&leader), Duration::from_secs(15))
        .await;
    assert_ne!(new_leader, leader);
    send_acknowledged(&producer, "after the kill").await;
    producer.shutdown().await;
}
