//! `rocketraft`: the one binary. Each subcommand lives in its own module under `cmd/`.

mod cmd;

/// mimalloc instead of the system allocator: the send path allocates small, short-lived
/// buffers on several threads, where glibc malloc spent about a fifth of the broker's
/// and the client's CPU (docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Start a name server and a three-node broker group on loopback (conf/), for trying it out.
    Dev(cmd::dev::Args),
    /// Run a name server.
    Namesrv(cmd::namesrv::Args),
    /// Run one node of a broker group.
    Broker(cmd::broker::Args),
    /// Send messages (like RocketMQ's quickstart producer).
    Send(cmd::send::Args),
    /// Consume and print messages (like RocketMQ's quickstart consumer).
    Consume(cmd::consume::Args),
    /// Benchmarks against a running cluster.
    Bench(cmd::bench::Args),
    /// Ask name servers about routes, clusters and topics (like RocketMQ's mqadmin).
    Admin(cmd::admin::Args),
    /// Chaos runs: a cluster under seeded faults, a recorded workload, a checker.
    Chaos(cmd::chaos::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            let result = runtime.block_on(async move {
                match cli.command {
                    Command::Dev(args) => cmd::dev::run(args).await,
                    Command::Namesrv(args) => cmd::namesrv::run(args).await,
                    Command::Broker(args) => cmd::broker::run(args).await,
                    Command::Send(args) => cmd::send::run(args).await,
                    Command::Consume(args) => cmd::consume::run(args).await,
                    Command::Bench(args) => cmd::bench::run(args).await,
                    Command::Admin(args) => cmd::admin::run(args).await,
                    Command::Chaos(args) => cmd::chaos::run(args).await,
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
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
