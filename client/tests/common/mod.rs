//! Scripted peers for the client's protocol tests: a remoting server on 127.0.0.1:0
//! that records every request and answers with a test's script, and a name server
//! that serves routes from a table the test can change.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures::future::BoxFuture;
use remoting::header::GetRouteInfoRequestHeader;
use remoting::message::{body_crc, encode_properties, MessageRecord};
use remoting::route::{perm, to_json, BrokerData, QueueData, TopicRouteData};
use remoting::{
    Connection, ConnectionConfig, RemotingCommand, RequestCode, RequestHandler, ResponseCode,
};
use tokio::net::TcpListener;

pub type Script = Arc<
    dyn Fn(Connection, RemotingCommand) -> BoxFuture<'static, Option<RemotingCommand>>
        + Send
        + Sync,
>;

/// A server that answers with a script and records what it was sent.
pub struct Scripted {
    pub addr: String,
    pub requests: Arc<Mutex<Vec<RemotingCommand>>>,
    pub conns: Arc<Mutex<Vec<Connection>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

struct Handler {
    script: Script,
    requests: Arc<Mutex<Vec<RemotingCommand>>>,
    conns: Arc<Mutex<Vec<Connection>>>,
}

impl RequestHandler for Handler {
    fn handle(
        &self,
        conn: Connection,
        request: RemotingCommand,
    ) -> BoxFuture<'static, Option<RemotingCommand>> {
        self.requests.lock().unwrap().push(request.clone());
        {
            let mut conns = self.conns.lock().unwrap();
            if !conns.iter().any(|c| c.id() == conn.id()) {
                conns.push(conn.clone());
            }
        }
        (self.script)(conn, request)
    }
}

impl Scripted {
    pub async fn start(script: Script) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(Handler {
            script,
            requests: requests.clone(),
            conns: conns.clone(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(remoting::connection::serve(
            listener,
            ConnectionConfig::default(),
            handler,
            async move {
                let _ = stopped.await;
            },
        ));
        Scripted {
            addr,
            requests,
            conns,
            stop: Some(stop),
        }
    }

    /// A server whose script is a plain function of the request.
    pub async fn answering<F>(f: F) -> Scripted
    where
        F: Fn(&RemotingCommand) -> Option<RemotingCommand> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        Scripted::start(Arc::new(move |_conn, req| {
            let answer = f(&req);
            Box::pin(async move { answer })
        }))
        .await
    }

    pub fn received(&self, code: RequestCode) -> Vec<RemotingCommand> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.code == code as i32)
            .cloned()
            .collect()
    }

    pub fn count(&self, code: RequestCode) -> usize {
        self.received(code).len()
    }

    /// Stops accepting and closes every connection: the peer is dead.
    pub fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An address nothing listens on: connecting is refused at once.
pub async fn dead_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

/// A name server serving the routes in `routes`.
pub struct NameServer {
    pub server: Scripted,
    pub routes: Arc<Mutex<HashMap<String, TopicRouteData>>>,
}

impl NameServer {
    pub async fn start() -> NameServer {
        let routes: Arc<Mutex<HashMap<String, TopicRouteData>>> = Arc::default();
        let table = routes.clone();
        let server = Scripted::answering(move |req| {
            if req.code != RequestCode::GET_ROUTEINFO_BY_TOPIC as i32 {
                return Some(RemotingCommand::error(
                    ResponseCode::REQUEST_CODE_NOT_SUPPORTED,
                    "no",
                ));
            }
            let topic = req.header::<GetRouteInfoRequestHeader>().unwrap().topic;
            Some(match table.lock().unwrap().get(&topic) {
                Some(route) => RemotingCommand::success().with_body(to_json(route)),
                None => RemotingCommand::error(ResponseCode::TOPIC_NOT_EXIST, "no route"),
            })
        })
        .await;
        NameServer { server, routes }
    }

    pub fn addr(&self) -> &str {
        &self.server.addr
    }

    pub fn set_route(&self, topic: &str, route: TopicRouteData) {
        self.routes.lock().unwrap().insert(topic.to_string(), route);
    }
}

/// A route: each group `(broker_name, [leader, follower, ...])` with `queues`
/// read and write queues.
pub fn route(groups: &[(&str, Vec<String>)], queues: i32) -> TopicRouteData {
    TopicRouteData {
        queue_datas: groups
            .iter()
            .map(|(name, _)| QueueData {
                broker_name: name.to_string(),
                read_queue_nums: queues,
                write_queue_nums: queues,
                perm: perm::READ_WRITE,
                topic_sys_flag: 0,
            })
            .collect(),
        broker_datas: groups
            .iter()
            .map(|(name, addrs)| BrokerData {
                cluster: "DefaultCluster".into(),
                broker_name: name.to_string(),
                broker_addrs: addrs
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (i as i64, a.clone()))
                    .collect(),
                enable_acting_master: false,
            })
            .collect(),
        ..Default::default()
    }
}

/// A client config for tests: fixed IP, fast deadlines.
pub fn client_config(namesrv_addr: &str) -> client::ClientConfig {
    let mut c = client::ClientConfig::new(namesrv_addr);
    c.client_ip = Some("127.0.0.1".into());
    c.connection.connect_timeout_ms = 1000;
    c
}

/// A SEND_OK answer as a broker gives it.
pub fn send_ok(req: &RemotingCommand, queue_offset: i64) -> RemotingCommand {
    let queue_id = req
        .ext("queueId")
        .or_else(|| req.ext("e"))
        .unwrap_or("0")
        .to_string();
    RemotingCommand::success()
        .with_ext("msgId", "7F00000100002A9F0000000000001000")
        .with_ext("queueId", queue_id)
        .with_ext("queueOffset", queue_offset.to_string())
}

/// The not-leader answer of a follower.
pub fn not_leader(leader: Option<&str>) -> RemotingCommand {
    let mut r = RemotingCommand::error(
        ResponseCode::SERVICE_NOT_AVAILABLE,
        format!(
            "not the leader; the leader is {}",
            leader.unwrap_or("unknown")
        ),
    );
    if let Some(l) = leader {
        r = r.with_ext("leaderAddr", l);
    }
    r
}

/// Stored records as a pull body: one per `(queue_offset, tags)`.
pub fn records(topic: &str, queue_id: i32, messages: &[(i64, Option<&str>)]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for (offset, tags) in messages {
        let uniq = format!("{:032X}", offset);
        let mut props: Vec<(&str, &str)> = vec![("UNIQ_KEY", &uniq)];
        if let Some(t) = tags {
            props.push(("TAGS", t));
        }
        encode_record(&mut buf, topic, queue_id, *offset, &props, 0);
    }
    buf.to_vec()
}

/// One stored record as a test writes it: its queue offset, properties and reconsume
/// times. Its commit-log offset is `1000 + queue_offset * 100`, its body `body-<offset>`.
#[derive(Debug, Clone)]
pub struct Rec {
    pub queue_offset: i64,
    pub properties: Vec<(String, String)>,
    pub reconsume_times: i32,
}

impl Rec {
    pub fn new(queue_offset: i64, properties: &[(&str, &str)], reconsume_times: i32) -> Rec {
        Rec {
            queue_offset,
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            reconsume_times,
        }
    }
}

/// Stored records with chosen properties as a pull body.
pub fn records_with(topic: &str, queue_id: i32, recs: &[Rec]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for r in recs {
        let props: Vec<(&str, &str)> = r
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        encode_record(
            &mut buf,
            topic,
            queue_id,
            r.queue_offset,
            &props,
            r.reconsume_times,
        );
    }
    buf.to_vec()
}

fn encode_record(
    buf: &mut BytesMut,
    topic: &str,
    queue_id: i32,
    offset: i64,
    props: &[(&str, &str)],
    reconsume_times: i32,
) {
    let props = encode_properties(props.iter().copied());
    let body = format!("body-{offset}");
    MessageRecord {
        topic,
        queue_id,
        flag: 0,
        queue_offset: offset,
        commit_log_offset: 1000 + offset * 100,
        sys_flag: 0,
        born_timestamp: 1,
        born_host: "127.0.0.1:5000".parse().unwrap(),
        store_timestamp: 2,
        store_host: "127.0.0.1:10911".parse().unwrap(),
        reconsume_times,
        prepared_transaction_offset: 0,
        body: body.as_bytes(),
        properties: &props,
        body_crc: body_crc(body.as_bytes()),
    }
    .encode(buf)
    .unwrap();
}

/// A pull answer with the offsets header.
pub fn pull_answer(code: ResponseCode, next: i64, min: i64, max: i64) -> RemotingCommand {
    RemotingCommand::response(code, None)
        .with_ext("nextBeginOffset", next.to_string())
        .with_ext("minOffset", min.to_string())
        .with_ext("maxOffset", max.to_string())
        .with_ext("suggestWhichBrokerId", "0")
}

/// Waits until `cond` holds, up to `within`.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}
