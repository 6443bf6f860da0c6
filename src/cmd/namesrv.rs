//! `rocketraft namesrv`: run a name server.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use namesrv::NamesrvConfig;
use tokio::net::TcpListener;
use tracing::warn;

#[derive(clap::Args)]
pub struct Args {
    /// Config file (RocketMQ-style properties), e.g. conf/namesrv.conf.
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Address to listen on; overrides `listenAddr`/`listenPort`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Drop brokers silent this long (ms); overrides `brokerChannelExpiredTime`.
    #[arg(long)]
    broker_expiry_ms: Option<u64>,
    /// Look for silent brokers this often (ms); overrides `scanNotActiveBrokerInterval`.
    #[arg(long)]
    scan_interval_ms: Option<u64>,
    /// The cluster secret's file; overrides `clusterSecretFile`.
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => {
            let (config, unknown) = NamesrvConfig::from_properties(super::load_config_file(path)?)?;
            for key in unknown {
                warn!(key, "unknown config key ignored");
            }
            config
        }
        None => NamesrvConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen_addr = listen;
    }
    if let Some(v) = args.broker_expiry_ms {
        config.broker_expiry_ms = v;
    }
    if let Some(v) = args.scan_interval_ms {
        config.scan_interval_ms = v;
    }
    if let Some(path) = &args.cluster_secret_file {
        config.auth.secret_file = Some(path.clone());
    }
    config.auth.load().map_err(anyhow::Error::msg)?;
    if config.auth.secret().map_err(anyhow::Error::msg)?.is_none() {
        warn!("clusterAuthEnable=false: any process that reaches this name server can register a broker");
    }
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
    println!(
        "rocketraft name server listening on {}",
        listener.local_addr()?
    );
    let metrics_listener = super::bind_metrics(config.metrics_addr, "name server").await?;
    namesrv::run_with_metrics(listener, metrics_listener, config, super::shutdown_signal())
        .await
        .map_err(anyhow::Error::msg)
}
