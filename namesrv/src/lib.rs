//! The name server: brokers register with it, clients ask it for routes.
//!
//! # Layout
//!
//! - [`config`]: `conf/namesrv.conf` keys and their defaults.
//! - [`route_table`]: broker groups, their members and topics; leader tracking by
//!   term (a stale leader is never brokerId 0).
//! - [`kv_config`]: the KV config (PUT/GET/DELETE_KV_CONFIG), kept in `kvConfigPath`.
//! - [`server`]: the remoting request handler.
//! - [`metrics`]: the Prometheus endpoint's figures, read from the route table per scrape.
//!
//! Brokers sign what they tell a name server (register, unregister, data-version
//! queries) with the cluster secret ([`remoting::cluster_auth`]); an unsigned or wrongly
//! signed one is refused with NO_PERMISSION, so only a broker of the cluster can claim a
//! place in a route. The admin's requests that change routes (PUT/DELETE_KV_CONFIG,
//! WIPE/ADD_WRITE_PERM_OF_BROKER, DELETE_TOPIC_IN_NAMESRV) must be signed with the same secret
//! (`rocketraft admin --cluster-secret-file`). Clients' requests (routes, cluster info, topic
//! lists, GET_KV_CONFIG) need no signature.
//!
//! Stateless: several name servers run side by side with no sync between them; every
//! broker registers with each. A broker silent for `broker_expiry_ms` is dropped on the
//! next scan, and one whose connection closes is dropped at once.

pub mod config;
pub mod kv_config;
pub mod metrics;
pub mod route_table;
pub mod server;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use remoting::ConnectionConfig;
use tokio::net::TcpListener;
use tracing::info;

pub use config::NamesrvConfig;
use route_table::RouteTable;
use server::NamesrvHandler;

/// Runs a name server on an already bound listener until `shutdown` resolves; an error
/// (an unreadable `kvConfigPath`) before it serves.
pub async fn run(
    listener: TcpListener,
    config: NamesrvConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    run_with_metrics(listener, None, config, shutdown).await
}

/// [`run`], also serving the Prometheus endpoint (`GET /metrics`, [`metrics`]) on
/// `metrics_listener` when given.
pub async fn run_with_metrics(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    config: NamesrvConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let kv = kv_config::KvConfig::open(config.kv_config_path.clone())?;
    let table = Arc::new(Mutex::new(RouteTable::default()));
    let node_id = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let metrics = metrics::NamesrvMetrics::new(table.clone(), node_id);
    // Ends with the name server (aborted below).
    let endpoint = metrics_listener.map(|metrics_listener| {
        let m = metrics.clone();
        tokio::spawn(remoting::metrics_http::serve(
            metrics_listener,
            remoting::metrics_http::MetricsHttpConfig::default(),
            Arc::new(move || m.render()),
            std::future::pending(),
        ))
    });
    let scan_table = table.clone();
    let scan_interval = Duration::from_millis(config.scan_interval_ms);
    let expiry = Duration::from_millis(config.broker_expiry_ms);
    let scanner = tokio::spawn(async move {
        let mut tick = tokio::time::interval(scan_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = tokio::time::Instant::now();
            scan_table.lock().unwrap().expire(now, expiry);
        }
    });
    info!(addr = ?listener.local_addr().ok(), "name server listening");
    let connection_config = ConnectionConfig {
        max_frame_bytes: config.max_frame_bytes,
        server_tls: Some(config.server_tls.clone()),
        idle_timeout_ms: config.server_idle_seconds * 1000,
        max_connections: config.server_max_connections.max(1),
        max_header_bytes: config.server_max_header_bytes,
        open_connections: Some(metrics.connections.clone()),
        ..ConnectionConfig::default()
    };
    let secret = config.auth.secret().ok().flatten().cloned();
    if secret.is_none() {
        tracing::warn!("cluster authentication is off: anyone who reaches this name server can register a broker");
    }
    remoting::connection::serve(
        listener,
        connection_config,
        Arc::new(NamesrvHandler::new(table, secret).with_kv(kv, config.order_message_enable)),
        shutdown,
    )
    .await;
    scanner.abort();
    if let Some(endpoint) = endpoint {
        endpoint.abort();
    }
    Ok(())
}
