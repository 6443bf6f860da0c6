//! One module per subcommand.

pub mod admin;
pub mod bench;
pub mod broker;
pub mod catchup_bench;
pub mod chaos;
pub mod consume;
pub mod delay_bench;
pub mod dev;
pub mod e2e_bench;
pub mod failover_bench;
pub mod mqadmin;
pub mod namesrv;
pub mod orderly_bench;
pub mod query_bench;
pub mod query_msg;
pub mod send;
pub mod transfer_bench;
pub mod txn_bench;

/// The Prometheus endpoint's listener (`metricsExporterType=PROM`), if one is configured;
/// prints where it serves, naming the server `who`.
async fn bind_metrics(
    addr: Option<std::net::SocketAddr>,
    who: &str,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    use anyhow::Context;
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    println!(
        "rocketraft {who} metrics on http://{}/metrics",
        listener.local_addr()?
    );
    Ok(Some(listener))
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down");
}

/// Reads a broker or name server config file and warns about each key it sets more than
/// once (the last value is used, as Java's `Properties.load` does).
pub fn load_config_file(
    path: &std::path::Path,
) -> anyhow::Result<remoting::config_file::Properties> {
    let props = remoting::config_file::Properties::load(path)?;
    for key in props.duplicate_keys() {
        tracing::warn!(key, "config key set more than once");
    }
    Ok(props)
}
