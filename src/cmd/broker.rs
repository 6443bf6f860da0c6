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

impl Args {
    /// The override flags given, by their long name (keys in `broker::config::OVERRIDE_FLAGS`).
    fn overrides(&self) -> Vec<(&'static str, String)> {
        [
            ("--listen-port", self.listen_port.map(|p| p.to_string())),
            (
                "--store-path",
                self.store_path.as_ref().map(|p| p.display().to_string()),
            ),
            ("--namesrv", self.namesrv_addr.clone()),
            ("--self-id", self.self_id.clone()),
            ("--peers", self.peers.clone()),
            ("--flush-disk-type", self.flush_disk_type.clone()),
        ]
        .into_iter()
        .filter_map(|(flag, value)| Some((flag, value?)))
        .collect()
    }
}

/// Reads the config file (if any) and applies the flags over it.
pub fn load(args: &Args) -> anyhow::Result<BrokerConfig> {
    let mut props = match &args.config {
        Some(path) => super::load_config_file(path)?,
        None => Properties::default(),
    };
    for (flag, value) in args.overrides() {
        let key = broker::config::override_key(flag).expect("every override flag has a key");
        props.entries.insert(key.to_string(), (value, 0));
    }
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
    let mut config = load(&args)?;
    config.auth.load().map_err(anyhow::Error::msg)?;
    if config.auth.secret().map_err(anyhow::Error::msg)?.is_none() {
        warn!("clusterAuthEnable=false: Raft peers and name-server registrations are not authenticated");
    }
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
    let who = format!("broker {} {}", config.broker_name, config.dledger_self_id);
    let metrics_listener = super::bind_metrics(config.metrics_addr, &who).await?;
    broker::run_with_metrics(listener, metrics_listener, config, super::shutdown_signal()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    // Proves the command line and `broker::config::OVERRIDE_FLAGS` (which the chaos tool
    // reads a running broker's command line with) agree: every flag in the table parses
    // and overrides the key the table names, and every override flag is in the table.
    #[test]
    fn override_flags_match_the_shared_table() {
        for (flags, key) in broker::config::OVERRIDE_FLAGS {
            for flag in *flags {
                let value = if *key == "listenPort" { "10999" } else { "n9" };
                let cli = Cli::try_parse_from(["broker", flag, value])
                    .unwrap_or_else(|e| panic!("{flag}: {e}"));
                let overrides = cli.args.overrides();
                assert_eq!(overrides.len(), 1, "{flag}");
                assert_eq!(
                    broker::config::override_key(overrides[0].0),
                    Some(*key),
                    "{flag}"
                );
                assert_eq!(overrides[0].1, value);
            }
        }
        let all = Cli::try_parse_from([
            "broker",
            "--listen-port",
            "1",
            "--store-path",
            "s",
            "-n",
            "a:1",
            "--self-id",
            "n0",
            "--peers",
            "p",
            "--flush-disk-type",
            "SYNC_FLUSH",
        ])
        .unwrap();
        let overrides = all.args.overrides();
        assert_eq!(overrides.len(), broker::config::OVERRIDE_FLAGS.len());
        for (flag, _) in overrides {
            assert!(broker::config::override_key(flag).is_some(), "{flag}");
        }
    }
}
