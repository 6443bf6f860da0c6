//! `rocketraft dev`: a name server and the three-node group of `conf/` on loopback, as
//! child processes of this one, with all data and logs under one directory. Prints
//! where everything is and who leads; Ctrl-C stops them all cleanly.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use client::NameServerClient;

/// The group's configs, as shipped in `conf/` (built into the binary).
const NODE_CONFS: [(&str, &str); 3] = [
    ("n0", include_str!("../../conf/broker-n0.conf")),
    ("n1", include_str!("../../conf/broker-n1.conf")),
    ("n2", include_str!("../../conf/broker-n2.conf")),
];
const NAMESRV_CONF: &str = include_str!("../../conf/namesrv.conf");

#[derive(clap::Args)]
pub struct Args {
    /// Directory for every node's data, config and log.
    #[arg(long, default_value = "/tmp/rocketraft-dev")]
    data_dir: PathBuf,
    /// Remove the data directory first.
    #[arg(long)]
    clean: bool,
    /// SYNC_FLUSH or ASYNC_FLUSH (default: as in conf/, SYNC_FLUSH).
    #[arg(long)]
    flush_disk_type: Option<String>,
    /// A `key=value` line for every broker's config (repeatable): it replaces the line of
    /// conf/ that sets the same key, else it is added; e.g. `aclEnable=true`,
    /// `tls.server.mode=enforcing` or `messageDelayLevel=1s 2s 3s`. Relative paths are read
    /// from the data directory.
    #[arg(long = "broker-conf", value_name = "KEY=VALUE")]
    broker_conf: Vec<String>,
    /// A `key=value` line for the name server's config (repeatable), as `--broker-conf`.
    #[arg(long = "namesrv-conf", value_name = "KEY=VALUE")]
    namesrv_conf: Vec<String>,
    /// Prometheus endpoints on loopback: the name server on this port, n0, n1 and n2 on the
    /// next three (`metricsExporterType=PROM`, `metricsPromExporterPort`). 0: off.
    #[arg(long, env = "ROCKETRAFT_DEV_METRICS_PORT", default_value_t = remoting::metrics_http::DEFAULT_PORT)]
    metrics_port: u16,
}

/// The metrics keys of the process at `offset` from the base port (none when off).
fn metrics_lines(base: u16, offset: u16) -> Vec<String> {
    match base {
        0 => Vec::new(),
        base => vec![
            "metricsExporterType=PROM".into(),
            format!("metricsPromExporterPort={}", base.saturating_add(offset)),
        ],
    }
}

/// `conf` with each of the `extra` `key=value` lines in place of the line that sets the
/// same key, or added at the end when no line does.
fn with_lines(conf: &str, extra: &[String]) -> String {
    let key_of = |line: &str| -> Option<String> {
        let line = line.trim_start();
        if line.starts_with('#') || line.starts_with('!') {
            return None;
        }
        let end = line.find(['=', ':', ' ', '\t'])?;
        Some(line[..end].to_string())
    };
    let mut lines: Vec<String> = conf.lines().map(str::to_string).collect();
    for line in extra {
        let key = key_of(line);
        match lines.iter_mut().find(|l| key.is_some() && key_of(l) == key) {
            Some(existing) => *existing = line.clone(),
            None => lines.push(line.clone()),
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// The command line that starts it again, for the operator.
    restart: String,
    exited: bool,
}

fn terminate(procs: &mut [Proc]) {
    for p in procs.iter().filter(|p| !p.exited) {
        // SIGTERM: each process leaves its name servers and stops Raft cleanly.
        unsafe {
            libc::kill(p.child.id() as i32, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for p in procs.iter_mut().filter(|p| !p.exited) {
        loop {
            match p.child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > deadline => {
                    eprintln!("{} did not stop in time; killing it", p.name);
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// Runtime threads per child process: four processes share this machine, so each gets
/// a quarter of its cores (at least one) unless `TOKIO_WORKER_THREADS` says otherwise. On
/// the 2-core machine of docs/PERFORMANCE.md, one thread each gave 11% more throughput
/// than the default of one per core, which four processes oversubscribe.
fn worker_threads() -> String {
    std::env::var("TOKIO_WORKER_THREADS").unwrap_or_else(|_| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / 4).max(1).to_string()
    })
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = &args.data_dir;
    if args.clean && dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("logs"))?;
    // Every config names `clusterSecretFile=cluster.secret`, next to it: one new secret per
    // data directory, kept across runs on the same directory.
    remoting::cluster_auth::ensure_secret_file(&dir.join("cluster.secret"))
        .context("writing the cluster secret")?;
    let exe = std::env::current_exe().context("locating the rocketraft binary")?;
    let namesrv_conf = dir.join("namesrv.conf");
    let mut namesrv_lines = args.namesrv_conf.clone();
    namesrv_lines.extend(metrics_lines(args.metrics_port, 0));
    std::fs::write(&namesrv_conf, with_lines(NAMESRV_CONF, &namesrv_lines))?;

    let mut procs: Vec<Proc> = Vec::new();
    let threads = worker_threads();
    let mut spawn = |name: &str, args: Vec<String>| -> anyhow::Result<()> {
        let log = dir.join("logs").join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(&exe)
            .args(&args)
            .env("TOKIO_WORKER_THREADS", &threads)
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let restart = format!(
            "{} {} >> {} 2>&1 &",
            exe.display(),
            args.join(" "),
            log.display()
        );
        procs.push(Proc {
            name: name.to_string(),
            child,
            log,
            restart,
            exited: false,
        });
        Ok(())
    };
    spawn(
        "namesrv",
        vec![
            "namesrv".into(),
            "-c".into(),
            namesrv_conf.display().to_string(),
        ],
    )?;
    for (i, (node, conf)) in NODE_CONFS.into_iter().enumerate() {
        let conf_path = dir.join(format!("broker-{node}.conf"));
        let mut lines = args.broker_conf.clone();
        lines.extend(metrics_lines(args.metrics_port, i as u16 + 1));
        std::fs::write(&conf_path, with_lines(conf, &lines))?;
        let mut a = vec![
            "broker".to_string(),
            "-c".into(),
            conf_path.display().to_string(),
            "--store-path".into(),
            dir.join(node).display().to_string(),
        ];
        if let Some(f) = &args.flush_disk_type {
            a.push("--flush-disk-type".into());
            a.push(f.clone());
        }
        spawn(&format!("broker-a-{node}"), a)?;
    }

    println!(
        "rocketraft dev: data, configs and logs under {}",
        dir.display()
    );
    for p in &procs {
        println!(
            "  {:<12} pid {:<7} log {}",
            p.name,
            p.child.id(),
            p.log.display()
        );
    }
    println!("  name server  127.0.0.1:9876");
    println!("  runtime threads per process: {threads} (TOKIO_WORKER_THREADS)");
    println!("  broker-a     n0 127.0.0.1:10911, n1 127.0.0.1:10921, n2 127.0.0.1:10931 (Raft peers 40911-40913)");
    match args.metrics_port {
        0 => println!("  metrics      off (--metrics-port 0)"),
        base => println!(
            "  metrics      http://127.0.0.1:{base}/metrics (name server), n0 :{}, n1 :{}, n2 :{} (Grafana: docs/grafana/)",
            base.saturating_add(1),
            base.saturating_add(2),
            base.saturating_add(3)
        ),
    }

    let client = NameServerClient::new("127.0.0.1:9876", Duration::from_secs(2))?;
    let mut last_leader = None;
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let started = Instant::now();
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        for p in procs.iter_mut() {
            if p.exited {
                continue;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                p.exited = true;
                println!(
                    "{} exited ({status}); log {}. The others carry on; restart it with: {}",
                    p.name,
                    p.log.display(),
                    p.restart
                );
            }
        }
        let leader = client.cluster_info().await.ok().and_then(|info| {
            info.broker_addr_table
                .get("broker-a")
                .and_then(|b| b.leader_addr().map(str::to_string))
        });
        if leader != last_leader {
            match &leader {
                Some(addr) => println!(
                    "broker-a leader: {addr} ({:.1} s after start); ready for clients at name server 127.0.0.1:9876",
                    started.elapsed().as_secs_f64()
                ),
                None => println!("broker-a has no leader right now"),
            }
            last_leader = leader;
        }
    }
    println!("stopping...");
    terminate(&mut procs);
    println!("stopped; data kept in {}", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::with_lines;

    #[test]
    fn an_override_replaces_the_line_that_sets_its_key() {
        let conf = "# messageDelayLevel=commented\nlistenPort=10911\nmessageDelayLevel=1s 5s\n";
        let out = with_lines(
            conf,
            &["messageDelayLevel=1s 2s".into(), "aclEnable=true".into()],
        );
        assert_eq!(
            out,
            "# messageDelayLevel=commented\nlistenPort=10911\nmessageDelayLevel=1s 2s\naclEnable=true\n"
        );
    }
}
