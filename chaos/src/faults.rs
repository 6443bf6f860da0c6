//! Faults and their seeded schedule. A schedule is a deck of fault kinds (the mix,
//! e.g. four leader kills, two pauses, ...) shuffled by the seed and dealt repeatedly
//! until the fault count is reached; each fault gets a target group, a hold time and a
//! quiet gap from the same seed, so a seed names one run's plan exactly.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Shortest and longest time a fault is held before it is healed.
pub const HOLD_MS: (u64, u64) = (1_000, 3_000);
/// Shortest and longest quiet time between a heal and the next fault.
pub const GAP_MS: (u64, u64) = (500, 1_500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL the leader, hold, restart it.
    KillLeader,
    /// SIGSTOP the leader (a new one is elected), hold, SIGCONT: the ex-leader wakes up.
    PauseLeader,
    /// SIGKILL a follower, hold, restart it.
    KillFollower,
    /// SIGKILL a follower and drop the tail of its CommitLog as an OS crash that lost
    /// unsynced page-cache writes would (ASYNC_FLUSH only: under SYNC_FLUSH every byte
    /// acknowledged was fsync'd, and the node is only killed), hold, restart it: it must
    /// fetch the lost entries again without applying them twice.
    CrashFollower,
    /// SIGKILL the leader and a follower: no quorum, writes must fail or be unknown;
    /// restart one (service returns), then the other.
    KillTwo,
    /// SIGKILL all three nodes, restart all three.
    RestartGroup,
    /// Cut the leader off the network (network namespaces), hold, reconnect.
    PartitionLeader,
    /// Cut the link between the leader and one follower only; the third node still
    /// reaches both (Jepsen's "bridge"), hold, mend.
    PartitionBridge,
    /// Move the leadership to a follower (TRANSFER_LEADERSHIP, as `rocketraft admin
    /// transfer-leader` does) under load; nothing to heal.
    TransferLeader,
    /// SIGKILL a follower, remove it from its group (`rocketraft admin remove-node`),
    /// delete its data directory, start it again empty with `joinExistingGroup=true` and
    /// add it back (`admin add-node`): a dead disk replaced under load.
    ReplaceNode,
    /// Fill a node's own small disk (a tmpfs, see [`crate::disks`]) completely, hold, free
    /// it: the node stops on ENOSPC, says why and leaves the name servers, and starts
    /// again by itself once there is room. The leader on even fault ids, a follower on odd.
    FillDisk,
}

pub const ALL: [FaultKind; 11] = [
    FaultKind::KillLeader,
    FaultKind::PauseLeader,
    FaultKind::KillFollower,
    FaultKind::CrashFollower,
    FaultKind::KillTwo,
    FaultKind::RestartGroup,
    FaultKind::PartitionLeader,
    FaultKind::PartitionBridge,
    FaultKind::TransferLeader,
    FaultKind::ReplaceNode,
    FaultKind::FillDisk,
];

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::CrashFollower => "crash-follower",
            FaultKind::KillTwo => "kill-two",
            FaultKind::RestartGroup => "restart-group",
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::PartitionBridge => "partition-bridge",
            FaultKind::TransferLeader => "transfer-leader",
            FaultKind::ReplaceNode => "replace-node",
            FaultKind::FillDisk => "fill-disk",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        ALL.into_iter()
            .find(|k| k.name() == s)
            .with_context(|| format!("unknown fault `{s}`; known: {ALL:?}"))
    }
}

/// The default deck: mostly leader kills and pauses, each other kind once or twice.
pub const DEFAULT_MIX: &str = "kill-leader=4,pause-leader=2,kill-follower=2,crash-follower=1,\
kill-two=1,restart-group=1,partition-leader=1,partition-bridge=1,transfer-leader=2,\
replace-node=1";

/// Parses `kind=count,...` into a deck.
pub fn parse_mix(mix: &str) -> anyhow::Result<Vec<FaultKind>> {
    let mut deck = Vec::new();
    for part in mix.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, count) = part.split_once('=').unwrap_or((part, "1"));
        let kind: FaultKind = name.trim().parse()?;
        let count: usize = count
            .trim()
            .parse()
            .with_context(|| format!("count in `{part}`"))?;
        deck.extend(std::iter::repeat_n(kind, count.min(1_000)));
    }
    if deck.is_empty() {
        bail!("empty fault mix `{mix}`");
    }
    Ok(deck)
}

/// One planned fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub kind: FaultKind,
    /// Index into the cluster's groups.
    pub group: usize,
    pub hold_ms: u64,
    pub gap_ms: u64,
}

/// `count` faults dealt from the shuffled `deck`, for `groups` groups.
pub fn schedule(count: usize, deck: &[FaultKind], groups: usize, seed: u64) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut plan = Vec::with_capacity(count);
    let mut hand: Vec<FaultKind> = Vec::new();
    while plan.len() < count && !deck.is_empty() {
        if hand.is_empty() {
            hand = deck.to_vec();
            hand.shuffle(&mut rng);
        }
        let kind = hand.pop().expect("non-empty hand");
        plan.push(Planned {
            kind,
            group: rng.gen_range(0..groups.max(1)),
            hold_ms: rng.gen_range(HOLD_MS.0..=HOLD_MS.1),
            gap_ms: rng.gen_range(GAP_MS.0..=GAP_MS.1),
        });
    }
    plan
}

impl FaultKind {
    /// Whether the fault needs nodes in network namespaces.
    pub fn is_partition(self) -> bool {
        matches!(
            self,
            FaultKind::PartitionLeader | FaultKind::PartitionBridge
        )
    }
}

#[cfg(test)]
mod tests {
    //! The schedule is a pure function of its seed and honours the mix.
    use super::*;

    #[test]
    fn a_seed_names_one_plan_and_the_mix_is_dealt_whole() {
        let deck = parse_mix("kill-leader=5,pause-leader=1").unwrap();
        let a = schedule(12, &deck, 2, 7);
        assert_eq!(a, schedule(12, &deck, 2, 7));
        assert_ne!(a, schedule(12, &deck, 2, 8));
        let first = &a[..6];
        assert_eq!(
            first
                .iter()
                .filter(|p| p.kind == FaultKind::KillLeader)
                .count(),
            5
        );
        assert!(a
            .iter()
            .all(|p| p.group < 2 && (HOLD_MS.0..=HOLD_MS.1).contains(&p.hold_ms)));
        assert!(parse_mix("kill-everything=1").is_err());
    }
}
