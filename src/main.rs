//! `rocketraft`: the one binary. Each subcommand lives in its own module under `cmd/`.

mod cmd;

/// mimalloc instead of the system allocator: the send path allocates small, short-lived
/// buffers on several threads, where glibc malloc spent about a fifth of the broker's
/// and the client's CPU (docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its number in the `mi_option_t` enum of the mimalloc
/// v3 that `libmimalloc-sys` builds (a test below checks it still names that option).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// How long freed memory stays with mimalloc before it goes back to the kernel (ms), unless
/// `MIMALLOC_PURGE_DELAY` says otherwise. mimalloc's default is 1 s: memory freed under load
/// went back and was then touched anew, and on this project's VM, whose free memory goes
/// back to its host, a newly touched page costs a host fault. 10 s keeps it for a steady
/// load (R3 ASYNC_FLUSH about +5%, docs/PERFORMANCE.md) and still returns it after a burst.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

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
    /// Operate a cluster: mqadmin's everyday verbs under mqadmin's names, groupStatus, and
    /// rocketraft's own (leadership, membership, dead letters, message queries).
    Admin(cmd::admin::Args),
    /// Chaos runs: a cluster under seeded faults, a recorded workload, a checker.
    Chaos(cmd::chaos::Args),
}

fn main() -> std::process::ExitCode {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options; any thread may, at any time.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
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

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`): human-readable lines, or
/// with `ROCKETRAFT_LOG_FORMAT=json` one JSON object per line (tracing-subscriber's
/// `json`: `timestamp`, `level`, `target`, the message and the event's fields at the top
/// level, and the spans it ran in), for log shippers.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let format = std::env::var("ROCKETRAFT_LOG_FORMAT").unwrap_or_default();
    match format.as_str() {
        "json" => builder.json().flatten_event(true).init(),
        "" | "text" => builder.init(),
        other => {
            builder.init();
            tracing::warn!(
                format = other,
                "unknown ROCKETRAFT_LOG_FORMAT (json or text): logging text"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    extern "C" {
        fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    }

    /// The option number still names the purge delay: unset, it reads mimalloc v3's
    /// documented default of 1000 ms, and setting it through that number reads back.
    #[test]
    fn the_purge_delay_option_number_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            eprintln!("skipped: MIMALLOC_PURGE_DELAY is set");
            return;
        }
        // SAFETY: reads and sets mimalloc options.
        unsafe {
            assert_eq!(mi_option_get(super::MI_OPTION_PURGE_DELAY), 1000);
            super::mi_option_set(super::MI_OPTION_PURGE_DELAY, super::PURGE_DELAY_MS);
            assert_eq!(
                mi_option_get(super::MI_OPTION_PURGE_DELAY),
                super::PURGE_DELAY_MS
            );
        }
    }
}
