//! A stock RocketMQ client against `rocketraft dev`: the npm package `ali-ons` (pure
//! JavaScript, RocketMQ 4.x remoting), pinned by `tests/stock-clients/ali-ons/package-lock.json`
//! and installed from the npm registry into the build's temporary directory.
//!
//! `tests/stock-clients/ali-ons/scenarios.js` uses only ali-ons' public API: sync sends with
//! tags and keys (one body big enough for the client to compress),
//! push consume in clustering and broadcasting mode, a tag filter and an SQL92 filter,
//! `delayTimeLevel`, retry by `ACTION_RETRY` (a CONSUMER_SEND_MSG_BACK and a redelivery from
//! `%RETRY%`), a dead letter after `maxReconsumeTimes`; then, with `aclEnable=true`, signed
//! sends and consumes, and refusals of a wrong secret, a read-only account and an unsigned
//! send. This test checks, on the broker's side, what the client cannot see: the dead
//! letter in `%DLQ%`, and that only the signed sends were stored.
//!
//! ali-ons has no batch send, no ordered consumption and no transactions (those are tested
//! with the Rust client: t10, t31, t32), and cannot send to a topic that does not exist yet
//! (see `create_topics`). `rocketraft dev` listens on the fixed ports of
//! `conf/`; the test stops at once, saying so, if the name server's port is taken.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use client::{ClientConfig, NameServerClient};

const NAMESRV: &str = "127.0.0.1:9876";
const PACKAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/stock-clients/ali-ons");

/// Retries wait 1 s (levels 3 and 4 are what a send-back at reconsume times 0 and 1 uses)
/// and level 18 is 3 s, so that the scenarios take seconds, not minutes.
const DELAY_LEVELS: &str =
    "messageDelayLevel=1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 3s";

const ACL: &str = r#"
globalWhiteRemoteAddresses:
accounts:
  - accessKey: ali-admin
    secretKey: ali-admin-secret
    admin: true
  - accessKey: ali-reader
    secretKey: ali-reader-secret
    defaultTopicPerm: DENY
    defaultGroupPerm: DENY
    topicPerms:
      - AliAcl=SUB
    groupPerms:
      - ali-acl-readers=SUB
"#;

/// `rocketraft dev` as a child; stopped (SIGTERM: it stops its own children) when dropped.
struct Dev {
    child: Child,
    lines: mpsc::Receiver<String>,
    dir: tempfile::TempDir,
}

impl Dev {
    fn start(extra: &[&str], files: &[(&str, &str)]) -> Dev {
        if std::net::TcpListener::bind(NAMESRV).is_err() {
            panic!(
                "{NAMESRV} is taken: t47 runs `rocketraft dev` on conf/'s fixed ports; \
                 stop the other rocketraft dev first"
            );
        }
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write a data-dir file");
        }
        // A new directory, so no `--clean` (it would remove `files`).
        let mut args: Vec<String> = vec![
            "dev".into(),
            "--data-dir".into(),
            dir.path().display().to_string(),
        ];
        for line in extra {
            args.push("--broker-conf".into());
            args.push(line.to_string());
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .spawn()
            .expect("start rocketraft dev");
        let stdout = child.stdout.take().expect("dev's stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("dev: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let dev = Dev { child, lines, dir };
        dev.wait_for("ready for clients", Duration::from_secs(120));
        dev
    }

    fn wait_for(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(_) => {}
                Err(e) => panic!("rocketraft dev never printed `{text}` ({e:?})"),
            }
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "rocketraft dev did not stop in 20 s; killing it (its nodes' logs: {})",
            self.dir.path().join("logs").display()
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The package installed (once per lock file) where the build keeps its temporary files.
fn installed_package() -> PathBuf {
    for tool in ["node", "npm"] {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "`{tool}` not found: t47 runs the stock npm client ali-ons; \
             scripts/ensure-deps.sh installs Node.js and npm"
        );
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("stock-clients/ali-ons");
    std::fs::create_dir_all(&dir).expect("package dir");
    let lock = std::fs::read(Path::new(PACKAGE).join("package-lock.json")).expect("lock file");
    let installed_lock = std::fs::read(dir.join("package-lock.json")).ok();
    for file in ["package.json", "package-lock.json", "scenarios.js"] {
        std::fs::copy(Path::new(PACKAGE).join(file), dir.join(file)).expect("copy package");
    }
    if installed_lock.as_deref() != Some(&lock[..]) || !dir.join("node_modules/ali-ons").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
            .current_dir(&dir)
            .status()
            .expect("run npm ci");
        assert!(
            status.success(),
            "npm ci of ali-ons failed in {}",
            dir.display()
        );
    }
    dir
}

/// Runs the scenarios; returns their `fact KEY VALUE` lines after asserting all passed.
fn run_scenarios(package: &Path, mode: &str, home: &Path) -> Vec<(String, serde_json::Value)> {
    let started = Instant::now();
    let mut child = Command::new("node")
        .args(["scenarios.js", mode, NAMESRV])
        .current_dir(package)
        // Broadcasting consumers keep their offsets under $HOME.
        .env("HOME", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node");
    let stdout = child.stdout.take().expect("node's stdout");
    let mut out = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        println!("ali-ons {mode}: {line}");
        out.push(line);
    }
    let status = child.wait().expect("wait for node");
    println!(
        "ali-ons {mode}: ran {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let failed: Vec<&String> = out.iter().filter(|l| l.starts_with("FAILED")).collect();
    assert!(
        status.success() && failed.is_empty(),
        "ali-ons scenarios ({mode}) failed: {failed:#?}"
    );
    let summary = out.last().cloned().unwrap_or_default();
    assert!(
        summary.starts_with("ali-ons: ") && summary.ends_with(" passed, 0 failed"),
        "no summary line: {summary}"
    );
    out.iter()
        .filter_map(|l| l.strip_prefix("fact "))
        .map(|l| {
            let (key, value) = l.split_once(' ').expect("fact KEY VALUE");
            (
                key.to_string(),
                serde_json::from_str(value).expect("a JSON fact"),
            )
        })
        .collect()
}

fn fact<'a>(facts: &'a [(String, serde_json::Value)], key: &str) -> &'a serde_json::Value {
    &facts
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("the scenarios stated no `{key}`"))
        .1
}

/// ali-ons cannot send to a topic that does not exist yet: on the name server's
/// TOPIC_NOT_EXIST it throws, where the Java client falls back to `TBW102`'s route and lets
/// the broker create the topic. So the topics are made first, as an operator would.
async fn create_topics(config: &ClientConfig, topics: &[&str]) {
    let namesrv = NameServerClient::new(NAMESRV, Duration::from_secs(3))
        .unwrap()
        .with_connection(config.connection.clone());
    for topic in topics {
        client::admin::create_topic(&namesrv, topic, 4, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("create {topic}: {e}"));
    }
}

fn bodies(messages: &[client::message::MessageExt]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ali_ons_against_rocketraft_dev() {
    let package = installed_package();

    // Plain: everything ali-ons can do.
    {
        let dev = Dev::start(&[DELAY_LEVELS, "enablePropertyFilter=true"], &[]);
        create_topics(
            &ClientConfig::new(NAMESRV),
            &["AliOrders", "AliRetry", "AliDlq", "AliDelay", "AliSql"],
        )
        .await;
        let facts = run_scenarios(&package, "plain", dev.dir.path());
        let group = fact(&facts, "dlq-group").as_str().unwrap().to_string();
        let body = fact(&facts, "dlq-body").as_str().unwrap().to_string();
        let config = ClientConfig::new(NAMESRV);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let dead = client::admin::dead_letters(&config, &group).await.unwrap();
            if bodies(&dead).contains(&body) {
                let letter = dead.iter().find(|m| m.body == body.as_bytes()).unwrap();
                assert_eq!(
                    letter.properties.get("RETRY_TOPIC").map(String::as_str),
                    Some("AliDlq"),
                    "the dead letter names the topic it failed on"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "%DLQ%{group} never held `{body}`: {:?}",
                bodies(&dead)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    // ACL: signed requests from ali-ons, and refusals.
    {
        let dev = Dev::start(
            &["aclEnable=true", "aclFile=plain_acl.yml"],
            &[("plain_acl.yml", ACL)],
        );
        let config = ClientConfig::new(NAMESRV).with_acl("ali-admin", "ali-admin-secret");
        create_topics(&config, &["AliAcl"]).await;
        let facts = run_scenarios(&package, "acl", dev.dir.path());
        let want: Vec<String> = serde_json::from_value(fact(&facts, "acl-stored").clone()).unwrap();
        let mut stored = bodies(&client::admin::read_topic(&config, "AliAcl").await.unwrap());
        stored.sort();
        assert_eq!(stored, want, "AliAcl holds exactly the signed sends");
    }
}
