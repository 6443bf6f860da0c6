//! Route look-ups against name servers.
//!
//! Each request tries the name servers in turn, starting after the one that answered
//! last; a dead connection is dropped and re-dialled next time. A name server's "no
//! such topic" (TOPIC_NOT_EXIST) is an answer, not a failure.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use remoting::connection::NoRequests;
use remoting::header::GetRouteInfoRequestHeader;
use remoting::route::{from_json, ClusterInfo, TopicList, TopicRouteData};
use remoting::{Connection, ConnectionConfig, RemotingCommand, RequestCode, ResponseCode};
use tokio::sync::Mutex;

use crate::error::{ClientError, Result};

/// A client of one or more name servers.
pub struct NameServerClient {
    addrs: Vec<String>,
    next: AtomicUsize,
    connections: Mutex<HashMap<String, Connection>>,
    config: ConnectionConfig,
    timeout: Duration,
}

impl NameServerClient {
    /// `namesrv_addr` is RocketMQ's `namesrvAddr`: addresses separated by `;`.
    pub fn new(namesrv_addr: &str, timeout: Duration) -> Result<Self> {
        let addrs: Vec<String> = namesrv_addr
            .split(';')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        if addrs.is_empty() {
            return Err(ClientError::NoNameServer);
        }
        Ok(NameServerClient {
            addrs,
            next: AtomicUsize::new(0),
            connections: Mutex::new(HashMap::new()),
            config: ConnectionConfig::default(),
            timeout,
        })
    }

    /// Uses `config` for its connections (TLS, request hook, limits).
    pub fn with_connection(mut self, config: ConnectionConfig) -> Self {
        self.config = config;
        self
    }

    /// The settings of its connections.
    pub fn connection_config(&self) -> &ConnectionConfig {
        &self.config
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    async fn connection(&self, addr: &str) -> remoting::Result<Connection> {
        let mut conns = self.connections.lock().await;
        if let Some(conn) = conns.get(addr) {
            if !conn.is_closed() {
                return Ok(conn.clone());
            }
        }
        let conn = Connection::connect(addr, &self.config, Arc::new(NoRequests)).await?;
        conns.insert(addr.to_string(), conn.clone());
        Ok(conn)
    }

    /// Sends a request to the first name server that answers; returns the answer and
    /// the address that gave it.
    pub async fn request(&self, request: RemotingCommand) -> Result<(String, RemotingCommand)> {
        let start = self.next.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.addrs.len() {
            let index = (start + i) % self.addrs.len();
            let addr = &self.addrs[index];
            let attempt = match self.connection(addr).await {
                Ok(conn) => conn.request(request.clone(), self.timeout).await,
                Err(e) => Err(e),
            };
            match attempt {
                Ok(response) => {
                    self.next.store(index, Ordering::Relaxed);
                    return Ok((addr.clone(), response));
                }
                Err(e) => {
                    tracing::debug!(namesrv = %addr, error = %e, "name server failed; trying the next");
                    last = Some(e);
                }
            }
        }
        Err(ClientError::NameServersUnavailable {
            tried: self.addrs.len(),
            last: last.expect("at least one name server"),
        })
    }

    /// The route of a topic, or `None` when no name server knows it.
    pub async fn topic_route(&self, topic: &str) -> Result<Option<TopicRouteData>> {
        let request = RemotingCommand::request(
            RequestCode::GET_ROUTEINFO_BY_TOPIC,
            &GetRouteInfoRequestHeader {
                topic: topic.to_string(),
            },
        );
        let (addr, response) = self.request(request).await?;
        match response.response_code() {
            Some(ResponseCode::SUCCESS) => Ok(Some(from_json("topic route", &response.body)?)),
            Some(ResponseCode::TOPIC_NOT_EXIST) => Ok(None),
            _ => Err(refused(addr, response)),
        }
    }

    /// Every broker group and cluster the name server knows.
    pub async fn cluster_info(&self) -> Result<ClusterInfo> {
        let request = RemotingCommand::bare_request(RequestCode::GET_BROKER_CLUSTER_INFO);
        let (addr, response) = self.request(request).await?;
        match response.response_code() {
            Some(ResponseCode::SUCCESS) => Ok(from_json("cluster info", &response.body)?),
            _ => Err(refused(addr, response)),
        }
    }

    /// Every topic the name server knows.
    pub async fn all_topics(&self) -> Result<TopicList> {
        let request =
            RemotingCommand::bare_request(RequestCode::GET_ALL_TOPIC_LIST_FROM_NAMESERVER);
        let (addr, response) = self.request(request).await?;
        match response.response_code() {
            Some(ResponseCode::SUCCESS) => Ok(from_json("topic list", &response.body)?),
            _ => Err(refused(addr, response)),
        }
    }
}

fn refused(addr: String, response: RemotingCommand) -> ClientError {
    ClientError::Refused {
        addr,
        code: response.code,
        remark: response.remark.unwrap_or_default(),
    }
}
