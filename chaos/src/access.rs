//! A run with `--acl`: the brokers enforce RocketMQ's plain ACL, every client of the run
//! signs as one admin account, and after the faults [`probe`] checks that the rules still
//! hold on the group's leader, whichever node it is by then.
//!
//! The account is process-wide ([`sign_as`]): the workload's producers and consumers, the
//! drain and the tool's own admin requests (topic creation, membership, leadership) are
//! built in many places, and all of them sign the same way.

use std::sync::OnceLock;
use std::time::Duration;

use client::{ClientConfig, Message, NameServerClient, Producer, ProducerConfig};
use remoting::acl::AclCredentials;
use remoting::connection::RequestHook;
use remoting::ResponseCode;

/// The run's account: an admin, so it may also create topics and move members.
pub const ACCESS_KEY: &str = "chaos-admin";

static HOOK: OnceLock<RequestHook> = OnceLock::new();

/// From now on every client built here signs as `ACCESS_KEY` with `secret`. Once per
/// process; a later call keeps the first secret.
pub fn sign_as(secret: &str) {
    let _ = HOOK.set(RequestHook::acl(AclCredentials::new(ACCESS_KEY, secret)));
}

/// `config`, signing as the run's account if there is one.
pub fn client(mut config: ClientConfig) -> ClientConfig {
    if let Some(hook) = HOOK.get() {
        config.connection.request_hook = Some(hook.clone());
    }
    config
}

/// `namesrv`, its admin requests signing as the run's account if there is one.
pub fn namesrv(namesrv: NameServerClient) -> NameServerClient {
    let Some(hook) = HOOK.get() else {
        return namesrv;
    };
    let mut connection = namesrv.connection_config().clone();
    connection.request_hook = Some(hook.clone());
    namesrv.with_connection(connection)
}

/// The `plain_acl.yml` of a run (RocketMQ 4.x's format): the run's admin account, every
/// topic and group writable and readable by default, and no address whitelisted.
pub fn plain_acl_yml(secret: &str) -> String {
    format!(
        "globalWhiteRemoteAddresses: []\n\
         accounts:\n\
         - accessKey: {ACCESS_KEY}\n  \
           secretKey: {secret}\n  \
           whiteRemoteAddress:\n  \
           admin: true\n  \
           defaultTopicPerm: PUB|SUB\n  \
           defaultGroupPerm: PUB|SUB\n"
    )
}

/// A fresh secret for a run: 32 hex digits.
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One send of [`probe`]: who signs (access and secret key), and whether it may.
struct Case<'a> {
    what: &'a str,
    keys: Option<(&'a str, &'a str)>,
    allowed: bool,
}

impl<'a> Case<'a> {
    fn refused(what: &'a str, keys: Option<(&'a str, &'a str)>) -> Self {
        Case {
            what,
            keys,
            allowed: false,
        }
    }
}

/// Sends one message to `topic` as each of: nobody (unsigned), the run's account with a
/// wrong secret, an unknown account, and the run's account. Returns what went wrong: a
/// send that should have been refused and was not, one refused for another reason than
/// NO_PERMISSION, or the run's own send refused. Empty when the rules held.
pub async fn probe(namesrv_addr: &str, topic: &str, secret: &str) -> Vec<String> {
    let wrong = format!("{secret}x");
    let cases = [
        Case::refused("an unsigned send", None),
        Case::refused("a send with a wrong secret", Some((ACCESS_KEY, &wrong))),
        Case::refused(
            "a send by an unknown account",
            Some(("chaos-nobody", secret)),
        ),
        Case {
            what: "a send by the run's account",
            keys: Some((ACCESS_KEY, secret)),
            allowed: true,
        },
    ];
    let mut problems = Vec::new();
    for Case {
        what,
        keys,
        allowed,
    } in cases
    {
        let mut config = ProducerConfig::new(namesrv_addr, "chaos-acl-probe");
        config.send_msg_timeout_ms = 5_000;
        config.retry_times_when_send_failed = 0;
        if let Some((ak, sk)) = keys {
            config.client = config.client.with_acl(ak, sk);
        }
        let outcome = async {
            let producer = Producer::start(config).await?;
            let sent = producer
                .send(Message::new(topic, format!("acl probe: {what}")))
                .await;
            producer.shutdown().await;
            sent
        };
        let outcome = tokio::time::timeout(Duration::from_secs(20), outcome).await;
        match (outcome, allowed) {
            (Err(_), _) => problems.push(format!("{what}: no answer within 20 s")),
            (Ok(Ok(_)), true) => {}
            (Ok(Ok(_)), false) => problems.push(format!("{what} was accepted")),
            (Ok(Err(client::ClientError::Broker { code, .. })), false)
                if code == ResponseCode::NO_PERMISSION as i32 => {}
            (Ok(Err(e)), false) => {
                problems.push(format!("{what} failed, but not with NO_PERMISSION: {e}"))
            }
            (Ok(Err(e)), true) => problems.push(format!("{what} was refused: {e}")),
        }
    }
    problems
}
