//! `rocketraft broker`: run one node of a broker group.

use std::path::PathBuf;

use anyhow::Context;
use broker::BrokerConfig;
use remoting::config_file::Properties;
use tokio::net::TcpListener;
use tracing::warn;

#[derive(clap::Args, Clone, Default)]
pub struct Args {
    /// Config file (RocketMQ properties with DLedger keys), e.g. conf/broker-n0.conf.
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// Overrides `listenPort`.
    #[arg(long)]
    pub listen_port: Option<u16>,
    /// Overrides `storePathRootDir`.
    #[arg(long)]
    pub store_path: Option<PathBuf>,
    /// Overrides `namesrvAddr`.
    #[arg(short = 'n', long = "namesrv")]
    pub namesrv_addr: Option<String>,
    /// Overrides `dLegerSelfId` (n0, n1, ...).
    #[arg(long)]
    pub self_id: Option<String>,
    /// Overrides `dLegerPeers`.
    #[arg(long)]
    pub peers: Option<String>,
    /// Overrides `flushDiskType` (SYNC_FLUSH or ASYNC_FLUSH).
    #[arg(long)]
    pub flush_disk_type: Option<String>,
}

/// Reads the config file (if any) and applies the flags over it.
pub fn load(args: &Args) -> anyhow::Result<BrokerConfig> {
    let mut props = match &args.config {
        Some(path) => Properties::load(path)?,
        None => Properties::default(),
    };
    let mut set = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            props.entries.insert(key.to_string(), (v, 0));
        }
    };
    set("listenPort", args.listen_port.map(|p| p.to_string()));
    set(
        "storePathRootDir",
        args.store_path.as_ref().map(|p| p.display().to_string()),
    );
    set("namesrvAddr", args.namesrv_addr.clone());
    set("dLegerSelfId", args.self_id.clone());
    set("dLegerPeers", args.peers.clone());
    set("flushDiskType", args.flush_disk_type.clone());
    let (config, unknown, ignored) = BrokerConfig::from_properties(props)?;
    for key in unknown {
        warn!(key, "unknown config key ignored");
    }
    for key in ignored {
        warn!(key, "RocketMQ key accepted but has no effect in rocketraft");
    }
    Ok(config)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = load(&args)?;
    let addr = config.listen_addr().map_err(anyhow::Error::msg)?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    println!(
        "rocketraft broker {} {} listening on {} (store {})",
        config.broker_name,
        config.dledger_self_id,
        listener.local_addr()?,
        config.store_path.display()
    );
    broker::run(listener, config, super::shutdown_signal()).await?;
    Ok(())
}
