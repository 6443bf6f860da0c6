//! `rocketraft`: the one binary. Each subcommand lives in its own module under `cmd/`.

mod cmd;

use clap::{Parser, Subcommand};

/// Apache RocketMQ rebuilt in Rust, every broker group a Raft group.
#[derive(Parser)]
#[command(name = "rocketraft", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a name server.
    Namesrv(cmd::namesrv::Args),
    /// Ask name servers about routes, clusters and topics (like RocketMQ's mqadmin).
    Admin(cmd::admin::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            let result = runtime.block_on(async move {
                match cli.command {
                    Command::Namesrv(args) => cmd::namesrv::run(args).await,
                    Command::Admin(args) => cmd::admin::run(args).await,
                }
            });
            // Servers have shut down gracefully by now; do not wait on idle workers.
            runtime.shutdown_background();
            result
        });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
