//! Name-server registration: every node registers with every name server every
//! `registerNameServerPeriod` and at once when its role, term or topics change. brokerId
//! 0 with `raftTerm` T means "I lead this group in term T"; followers send their node id
//! plus one. Between full registrations a QUERY_DATA_VERSION (322) serves as the
//! heartbeat, and the topic table is sent again only when its version changed. A node that
//! does not vote in its group (a learner still catching up, a node removed) is not
//! registered: it leaves the name servers until it votes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use dledger::Role;
use remoting::connection::NoRequests;
use remoting::header::{
    QueryDataVersionRequestHeader, QueryDataVersionResponseHeader, RegisterBrokerRequestHeader,
    UnRegisterBrokerRequestHeader,
};
use remoting::route::{
    to_json, DataVersion, RegisterBrokerBody, TopicConfig, TopicConfigSerializeWrapper,
};
use remoting::throttle::Throttle;
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};
use tracing::{debug, error, info, warn};

use crate::broker::Broker;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a registered node must stay out of the voters before it leaves the name
/// servers.
const NOT_VOTER_GRACE: Duration = Duration::from_secs(2);

/// What a name server last accepted from us.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Registered {
    broker_id: i64,
    term: u64,
    version: DataVersion,
}

fn namesrv_addrs(broker: &Broker) -> Vec<String> {
    broker
        .config()
        .namesrv_addr
        .split(';')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

fn broker_id(broker: &Broker) -> (i64, u64) {
    let role = broker.role();
    let id = if role.role == Role::Leader {
        0
    } else {
        role.node_id as i64 + 1
    };
    (id, role.term)
}

async fn connect(
    broker: &Broker,
    conns: &mut HashMap<String, Connection>,
    addr: &str,
) -> Option<Connection> {
    if let Some(c) = conns.get(addr).filter(|c| !c.is_closed()) {
        return Some(c.clone());
    }
    let config = ConnectionConfig {
        tls: broker.config().client_tls.clone(),
        ..ConnectionConfig::default()
    };
    match Connection::connect(addr, &config, Arc::new(NoRequests)).await {
        Ok(c) => {
            conns.insert(addr.to_string(), c.clone());
            Some(c)
        }
        Err(e) => {
            debug!(namesrv = addr, error = %e, "name server unreachable");
            None
        }
    }
}

pub async fn run(broker: Arc<Broker>) {
    let mut conns = HashMap::new();
    let mut registered: HashMap<String, Registered> = HashMap::new();
    let period = Duration::from_millis(broker.config().register_namesrv_interval_ms);
    let mut routed = true;
    loop {
        if broker.role().role == Role::Shutdown {
            // The Raft core stopped (a storage or apply failure): this node can no longer
            // take writes nor follow the log, so it must not stay routed as a member.
            error!(
                "the Raft core has stopped: leaving the name servers until this node starts \
                 again"
            );
            unregister_all(&broker).await;
            return;
        }
        let role = broker.role();
        if !role.voter && role.role != Role::Leader {
            // A learner still catching up, or a node removed from the group: clients must
            // not be routed to it. It registers once it votes. A node replaying old
            // configurations from the log passes through "not a voter" for a moment:
            // only a state that lasts counts.
            if routed && !still_not_voter(&broker, NOT_VOTER_GRACE).await {
                continue;
            }
            if routed {
                info!(
                    role = ?role.role,
                    "not a voter of this group (joining, or removed): not registered with the \
                     name servers"
                );
                unregister_all(&broker).await;
                registered.clear();
                routed = false;
            }
            tokio::select! {
                _ = broker.register_requested() => {}
                _ = tokio::time::sleep(period) => {}
            }
            continue;
        }
        routed = true;
        let (broker_id, term) = broker_id(&broker);
        let version = broker.data_version();
        let now = Registered {
            broker_id,
            term,
            version,
        };
        for addr in namesrv_addrs(&broker) {
            let Some(conn) = connect(&broker, &mut conns, &addr).await else {
                registered.remove(&addr);
                continue;
            };
            let fresh = registered.get(&addr) == Some(&now)
                && !query_changed(&broker, &conn, now).await.unwrap_or(true);
            if fresh {
                continue;
            }
            match register(&broker, &conn, now).await {
                Ok(()) => {
                    registered.insert(addr, now);
                }
                Err(e) => {
                    warn!(namesrv = %addr, error = %e, "registration failed");
                    registered.remove(&addr);
                }
            }
        }
        // Retry sooner while some name server is missing us.
        let wait = if registered.len() < namesrv_addrs(&broker).len() {
            period.min(Duration::from_secs(1))
        } else {
            period
        };
        // A name server drops a member whose connection closes, so a closed connection
        // is a reason to register again at once, not at the next period.
        conns.retain(|_, c| !c.is_closed());
        tokio::select! {
            _ = broker.register_requested() => {}
            _ = any_closed(&conns) => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Whether this node is still not a voter (nor leader) after `grace`; false as soon as it
/// is one again.
async fn still_not_voter(broker: &Broker, grace: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let role = broker.role();
        if role.voter || role.role == Role::Leader {
            return false;
        }
        if tokio::time::Instant::now() >= deadline {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resolves when one of `conns` closes; never when there are none.
async fn any_closed(conns: &HashMap<String, Connection>) {
    if conns.is_empty() {
        return std::future::pending().await;
    }
    futures::future::select_all(conns.values().map(|c| Box::pin(c.closed()))).await;
}

/// Signs a request to a name server with the cluster secret (unless authentication is off).
fn signed(broker: &Broker, mut request: RemotingCommand) -> RemotingCommand {
    if let Ok(Some(secret)) = broker.config().auth.secret() {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        remoting::cluster_auth::sign_broker_request(&mut request, secret, now_ms);
    }
    request
}

async fn query_changed(broker: &Broker, conn: &Connection, now: Registered) -> Option<bool> {
    let header = QueryDataVersionRequestHeader {
        broker_name: broker.config().broker_name.clone(),
        broker_addr: broker.config().broker_addr(),
        cluster_name: broker.config().cluster_name.clone(),
        broker_id: now.broker_id,
        raft_term: Some(now.term),
    };
    let request = signed(
        broker,
        RemotingCommand::request(RequestCode::QUERY_DATA_VERSION, &header)
            .with_body(to_json(&now.version)),
    );
    let response = conn.request(request, REQUEST_TIMEOUT).await.ok()?;
    let answer: QueryDataVersionResponseHeader = response.header().ok()?;
    Some(answer.changed)
}

/// Topics left out of registrations, logged at most once a minute.
static LEFT_OUT_TOPICS: Throttle = Throttle::new(60_000);

/// The topic table to register, without names that break RocketMQ's rules: a name server
/// refuses a table holding one, and no client could ask for its route. Only a store an
/// older version wrote holds such names (it created `%RETRY%<group>` for groups longer than
/// 120 characters); they stay in the store, unrouted.
///
/// A group whose `brokerPermission` lacks read or write (UPDATE_BROKER_CONFIG) registers each
/// topic's permission masked by it, as RocketMQ registers its topics with the broker's
/// permission then, so clients stop sending to (or pulling from) it.
fn routable_topics(broker: &Broker) -> BTreeMap<String, TopicConfig> {
    let mut topics = broker.topics();
    let permission = broker.broker_permission();
    if permission & remoting::route::perm::READ_WRITE != remoting::route::perm::READ_WRITE {
        for topic in topics.values_mut() {
            topic.perm &= permission | remoting::route::perm::INHERIT;
        }
    }
    topics.retain(|name, _| match remoting::names::check_topic(name) {
        Ok(()) => true,
        Err(e) => {
            if let Some(left_out) = LEFT_OUT_TOPICS.admit() {
                warn!(reason = %e, left_out, "topic left out of the name-server registration");
            }
            false
        }
    });
    topics
}

async fn register(broker: &Broker, conn: &Connection, now: Registered) -> Result<(), String> {
    let compressed = broker.config().compressed_register;
    let body = RegisterBrokerBody {
        topic_config_serialize_wrapper: TopicConfigSerializeWrapper {
            topic_config_table: routable_topics(broker),
            data_version: now.version,
        },
        filter_server_list: Vec::new(),
    };
    let body = match compressed {
        true => remoting::register_body::encode_compressed(&body),
        false => to_json(&body),
    };
    let header = RegisterBrokerRequestHeader {
        broker_name: broker.config().broker_name.clone(),
        broker_addr: broker.config().broker_addr(),
        cluster_name: broker.config().cluster_name.clone(),
        ha_server_addr: String::new(),
        broker_id: now.broker_id,
        heartbeat_timeout_millis: None,
        enable_acting_master: Some(false),
        compressed: Some(compressed),
        body_crc32: Some(remoting::register_body::body_crc32(&body)),
        raft_term: Some(now.term),
    };
    let request = signed(
        broker,
        RemotingCommand::request(RequestCode::REGISTER_BROKER, &header).with_body(body),
    );
    let response = conn
        .request(request, REQUEST_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    if response.response_code() != Some(ResponseCode::SUCCESS) {
        return Err(format!("{:?}", response.remark));
    }
    info!(
        namesrv = %conn.peer(),
        broker_id = now.broker_id,
        term = now.term,
        stale = response.ext("staleLeaderClaim").is_some(),
        "registered with name server"
    );
    Ok(())
}

/// Leaves every name server (graceful shutdown).
pub async fn unregister_all(broker: &Broker) {
    let (broker_id, _) = broker_id(broker);
    let mut conns = HashMap::new();
    for addr in namesrv_addrs(broker) {
        let Some(conn) = connect(broker, &mut conns, &addr).await else {
            continue;
        };
        let header = UnRegisterBrokerRequestHeader {
            broker_name: broker.config().broker_name.clone(),
            broker_addr: broker.config().broker_addr(),
            cluster_name: broker.config().cluster_name.clone(),
            broker_id,
        };
        let request = signed(
            broker,
            RemotingCommand::request(RequestCode::UNREGISTER_BROKER, &header),
        );
        let _ = conn.request(request, Duration::from_secs(1)).await;
    }
}
