//! Network namespaces for partition faults.
//!
//! Processes on one loopback cannot be cut off from each other, so a run that
//! partitions starts every node in a network namespace of its own, created by this
//! tool and removed when the run ends:
//!
//! ```text
//!   rrc<pid>-hub: bridge br0 10.213.0.1/24  (name server, workload, checker)
//!      ├── v0 ══ veth ══ eth0 10.213.0.10  rrc<pid>-0 (node 0)
//!      ├── v1 ══ veth ══ eth0 10.213.0.11  rrc<pid>-1 (node 1)
//!      └── v2 ══ veth ══ eth0 10.213.0.12  rrc<pid>-2 (node 2)
//! ```
//!
//! The hub namespace holds a bridge; the chaos run itself (its workload, name-server
//! client and the name server it starts) runs in the hub by entering it on a thread of
//! its own (see [`Net::enter_hub`]). Nothing is added to the host's own network.
//!
//! Two cuts:
//! - **isolate** a node: its veth is set down on the hub side, so it reaches no one
//!   (peers, name server, clients) and packets to it vanish silently;
//! - **cut a link** between two nodes: a blackhole route to each other in both
//!   namespaces, so the two cannot talk while each still reaches everyone else. With
//!   three nodes this is Jepsen's "bridge", the three-node form of a majorities ring:
//!   every node still sees a majority (itself and the middle node), but the two ends
//!   see different ones.

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context};

/// The first three octets of the run's private subnet (it exists only inside the
/// namespaces this module creates).
const SUBNET: &str = "10.213.0";
/// Nodes' addresses start at `.10`.
const FIRST_NODE_HOST: usize = 10;

/// Runs `ip` with `args`; an error names the command and its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("run `ip {}`", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The namespaces of one run. Dropping it deletes them (their processes must have
/// ended first; a namespace lives on while a process is inside it).
pub struct Net {
    prefix: String,
    nodes: usize,
    /// Cut links, as (lower, higher) node indexes.
    cuts: Mutex<BTreeSet<(usize, usize)>>,
    /// Isolated nodes.
    isolated: Mutex<BTreeSet<usize>>,
}

impl Net {
    /// Creates the hub and `nodes` node namespaces, wired as in the module docs.
    pub fn create(nodes: usize) -> anyhow::Result<Net> {
        let net = Net {
            prefix: format!("rrc{}", std::process::id()),
            nodes,
            cuts: Mutex::new(BTreeSet::new()),
            isolated: Mutex::new(BTreeSet::new()),
        };
        // On error, dropping `net` removes whatever was created.
        let hub = net.hub();
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        let hub_cidr = format!("{}/24", net.hub_ip());
        ip(&["-n", &hub, "addr", "add", &hub_cidr, "dev", "br0"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for k in 0..nodes {
            let ns = net.node_ns(k);
            let veth = format!("v{k}");
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &veth, "master", "br0", "up"])?;
            let cidr = format!("{}/24", net.node_ip(k));
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(net)
    }

    /// Whether this machine lets us create namespaces; `Err` says why not.
    pub fn probe() -> Result<(), String> {
        let name = format!("rrc{}-probe", std::process::id());
        match ip(&["netns", "add", &name]) {
            Ok(()) => {
                let _ = ip(&["netns", "del", &name]);
                Ok(())
            }
            Err(e) => Err(format!("network namespaces are not available: {e:#}")),
        }
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    /// Node `k`'s namespace.
    pub fn node_ns(&self, k: usize) -> String {
        format!("{}-{k}", self.prefix)
    }

    /// The hub's address (the name server listens there).
    pub fn hub_ip(&self) -> String {
        format!("{SUBNET}.1")
    }

    /// Node `k`'s address.
    pub fn node_ip(&self, k: usize) -> String {
        format!("{SUBNET}.{}", FIRST_NODE_HOST + k)
    }

    /// The command prefix that runs a program inside node `k`'s namespace
    /// (`ip netns exec` execs the program, so its PID is the one spawned).
    pub fn exec_prefix(&self, k: usize) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.node_ns(k)]
    }

    /// Moves the calling thread into the hub namespace. Threads it starts afterwards
    /// (a Tokio runtime's workers) and processes it spawns are in the hub too.
    pub fn enter_hub(&self) -> anyhow::Result<()> {
        let path = format!("/var/run/netns/{}", self.hub());
        let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        // SAFETY: setns(2) on a namespace file descriptor we own, for this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            bail!("setns({path}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Cuts node `k` off from everyone (`on`), or reconnects it.
    pub fn isolate(&self, k: usize, on: bool) -> anyhow::Result<()> {
        let veth = format!("v{k}");
        let state = if on { "down" } else { "up" };
        ip(&["-n", &self.hub(), "link", "set", &veth, state])?;
        let mut isolated = self.isolated.lock().expect("isolated lock");
        if on {
            isolated.insert(k);
        } else {
            isolated.remove(&k);
        }
        Ok(())
    }

    /// Cuts (`on`) or mends the link between nodes `a` and `b`, both ways.
    pub fn cut(&self, a: usize, b: usize, on: bool) -> anyhow::Result<()> {
        let verb = if on { "add" } else { "del" };
        for (from, to) in [(a, b), (b, a)] {
            let dest = format!("{}/32", self.node_ip(to));
            ip(&["-n", &self.node_ns(from), "route", verb, "blackhole", &dest])?;
        }
        let mut cuts = self.cuts.lock().expect("cuts lock");
        if on {
            cuts.insert((a.min(b), a.max(b)));
        } else {
            cuts.remove(&(a.min(b), a.max(b)));
        }
        Ok(())
    }

    /// Undoes every cut and isolation still in place.
    pub fn heal(&self) -> anyhow::Result<()> {
        let cuts: Vec<_> = self
            .cuts
            .lock()
            .expect("cuts lock")
            .iter()
            .copied()
            .collect();
        for (a, b) in cuts {
            self.cut(a, b, false)?;
        }
        let isolated: Vec<_> = self
            .isolated
            .lock()
            .expect("isolated lock")
            .iter()
            .copied()
            .collect();
        for k in isolated {
            self.isolate(k, false)?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for k in 0..self.nodes {
            let _ = ip(&["netns", "del", &self.node_ns(k)]);
        }
        let _ = ip(&["netns", "del", &self.hub()]);
    }
}
