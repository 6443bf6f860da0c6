//! `rocketraft chaos`: the chaos tool (crate `chaos/`). `rocketraft chaos run` starts
//! its own cluster from this executable, injects faults under a recorded workload,
//! checks the history and exits non-zero if anything acknowledged was lost, anything
//! unexpected or reordered was read, or replicas disagree.

pub use chaos::Args;

pub async fn run(args: Args) -> anyhow::Result<()> {
    chaos::main(args).await
}
