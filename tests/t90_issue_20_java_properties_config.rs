//! Issue 20: a config file in the forms Java's `Properties.load` reads starts a process, and
//! a key set twice takes its last value with a warning. Proves it on the name server, the
//! lightest process: its config sets `listenAddr` twice (`key : value`, then `key value`
//! continued over two lines) and turns authentication off through a continued key. The
//! process must start, listen on the second address, and log the repeat.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn a_java_style_config_starts_a_name_server_and_its_repeated_key_is_warned() {
    let dir = tempfile::tempdir().unwrap();
    let ports = chaos::cluster::free_ports(2).unwrap();
    let conf = dir.path().join("namesrv.conf");
    let text = format!(
        "# Java forms\n\
         listenAddr : 127.0.0.1:{first}\n\
         clusterAuth\\\n    Enable = false\n\
         listenAddr 127.0.0.1:\\\n    {second}\n",
        first = ports[0],
        second = ports[1],
    );
    std::fs::write(&conf, text).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args(["namesrv", "-c"])
        .arg(&conf)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, first_line) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = lines.send(line);
    });
    let listening = first_line.recv_timeout(Duration::from_secs(30));
    child.kill().unwrap();
    child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();

    let listening = listening.unwrap_or_else(|_| panic!("no start-up line; stderr: {stderr}"));
    assert_eq!(
        listening.trim(),
        format!("rocketraft name server listening on 127.0.0.1:{}", ports[1]),
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains("config key set more than once")
            && stderr.contains("namesrv.conf:5: listenAddr (also set at line 2"),
        "{stderr}"
    );
}
