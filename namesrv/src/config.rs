//! The name server's config: `conf/namesrv.conf` keys, each overridable by a flag.

use std::net::SocketAddr;
use std::path::Path;

use remoting::cluster_auth::ClusterAuth;
use remoting::config_file::{ConfigError, Properties};
use remoting::DEFAULT_MAX_FRAME_BYTES;

#[derive(Debug, Clone)]
pub struct NamesrvConfig {
    /// Where clients and brokers connect.
    pub listen_addr: SocketAddr,
    /// How often silent brokers are looked for.
    pub scan_interval_ms: u64,
    /// A broker silent this long is dropped.
    pub broker_expiry_ms: u64,
    /// The largest frame accepted; larger ones close the connection.
    pub max_frame_bytes: usize,
    /// `clusterAuthEnable` and `clusterSecretFile`: brokers sign what they tell a name
    /// server with the cluster secret, and unsigned requests that change routes are refused.
    pub auth: ClusterAuth,
    /// `tls.server.mode` and the `tls.server.*` keys: TLS for brokers and clients.
    pub server_tls: std::sync::Arc<remoting::tls::ServerTls>,
    /// `serverChannelMaxIdleTimeSeconds`, `serverMaxConnections`, `serverMaxHeaderBytes`:
    /// as on a broker (idle connections closed, connections and header bytes capped).
    pub server_idle_seconds: u64,
    pub server_max_connections: usize,
    pub server_max_header_bytes: usize,
    /// `kvConfigPath` (RocketMQ's key): the file the KV config is kept in, relative to the
    /// config file's directory; `None`: in memory only.
    pub kv_config_path: Option<std::path::PathBuf>,
    /// `orderMessageEnable` (RocketMQ's key): routes carry an ordered topic's
    /// `ORDER_TOPIC_CONFIG` value as `orderTopicConf`.
    pub order_message_enable: bool,
    /// `metricsExporterType=PROM`, `metricsPromExporterHost`, `metricsPromExporterPort`
    /// (RocketMQ 5's keys): where the Prometheus endpoint listens; `None`, the default: off.
    pub metrics_addr: Option<SocketAddr>,
}

impl Default for NamesrvConfig {
    fn default() -> Self {
        NamesrvConfig {
            listen_addr: "127.0.0.1:9876".parse().unwrap(),
            scan_interval_ms: 10_000,
            broker_expiry_ms: 120_000,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            auth: ClusterAuth::default(),
            server_tls: Default::default(),
            server_idle_seconds: remoting::connection::DEFAULT_IDLE_TIMEOUT_MS / 1000,
            server_max_connections: remoting::connection::DEFAULT_MAX_CONNECTIONS,
            server_max_header_bytes: remoting::codec::DEFAULT_MAX_HEADER_BYTES,
            kv_config_path: None,
            order_message_enable: false,
            metrics_addr: None,
        }
    }
}

impl NamesrvConfig {
    /// Reads a config file; returns the config and the keys it did not know.
    pub fn load(path: &Path) -> Result<(Self, Vec<String>), ConfigError> {
        let props = Properties::load(path)?;
        Self::from_properties(props)
    }

    pub fn from_properties(mut props: Properties) -> Result<(Self, Vec<String>), ConfigError> {
        let mut config = NamesrvConfig::default();
        if let Some(port) = props.take::<u16>("listenPort")? {
            config.listen_addr.set_port(port);
        }
        if let Some(addr) = props.take::<SocketAddr>("listenAddr")? {
            config.listen_addr = addr;
        }
        if let Some(v) = props.take("scanNotActiveBrokerInterval")? {
            config.scan_interval_ms = v;
        }
        if let Some(v) = props.take("brokerChannelExpiredTime")? {
            config.broker_expiry_ms = v;
        }
        if let Some(v) = props.take("maxFrameBytes")? {
            config.max_frame_bytes = v;
        }
        config.auth = ClusterAuth::from_properties(&mut props)?;
        if let Some(v) = props.take("serverChannelMaxIdleTimeSeconds")? {
            config.server_idle_seconds = v;
        }
        if let Some(v) = props.take("serverMaxConnections")? {
            config.server_max_connections = v;
        }
        if let Some(v) = props.take("serverMaxHeaderBytes")? {
            config.server_max_header_bytes = v;
        }
        config.server_tls =
            std::sync::Arc::new(remoting::tls::ServerTls::from_properties(&mut props)?);
        if let Some(path) = props.take::<String>("kvConfigPath")? {
            config.kv_config_path = Some(remoting::cluster_auth::resolve_config_path(
                &props.origin,
                path.trim(),
            ));
        }
        if let Some(v) = props.take("orderMessageEnable")? {
            config.order_message_enable = v;
        }
        config.metrics_addr = remoting::metrics_http::exporter_addr(&mut props)?;
        if config.scan_interval_ms == 0 || config.broker_expiry_ms == 0 {
            return Err(ConfigError::BadValue {
                origin: props.origin.clone(),
                key: "scanNotActiveBrokerInterval/brokerChannelExpiredTime".into(),
                value: "0".into(),
                reason: "must be above zero".into(),
            });
        }
        Ok((config, props.unknown_keys()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_override_defaults_and_unknown_keys_are_reported() {
        let props = Properties::parse(
            "n.conf",
            "listenPort=9999\nscanNotActiveBrokerInterval=500\nbrokerChannelExpiredTime=2000\nbogus=1\n",
        )
        .unwrap();
        let (c, unknown) = NamesrvConfig::from_properties(props).unwrap();
        assert_eq!(c.listen_addr.port(), 9999);
        assert_eq!(c.scan_interval_ms, 500);
        assert_eq!(c.broker_expiry_ms, 2000);
        assert_eq!(unknown, vec!["n.conf:4: bogus".to_string()]);
        let props = Properties::parse("n.conf", "brokerChannelExpiredTime=0").unwrap();
        assert!(NamesrvConfig::from_properties(props).is_err());
    }

    #[test]
    fn the_shipped_config_file_parses_with_no_unknown_keys() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/namesrv.conf");
        let (c, unknown) = NamesrvConfig::load(&path).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(c.listen_addr.to_string(), "127.0.0.1:9876");
    }
}
