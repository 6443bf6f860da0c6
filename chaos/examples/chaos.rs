//! The chaos tool without the `rocketraft` binary around it, for working on the tool
//! itself: `cargo run -p chaos --example chaos -- run --binary <rocketraft> ...`
//! (`--binary` is required here: this executable cannot start nodes).

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: chaos::Args,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    chaos::main(Cli::parse().args).await
}
