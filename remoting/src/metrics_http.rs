//! The Prometheus scrape endpoint: `GET /metrics` over plain HTTP/1.x, answered with
//! whatever the server's render function returns (Prometheus text format), nothing else.
//!
//! It is an operator's port, not a way in: one path, GET or HEAD only, a request head of at
//! most [`MetricsHttpConfig::max_request_bytes`] (no body is read), one deadline for reading
//! the request and writing the answer, at most [`MetricsHttpConfig::max_connections`]
//! connections at once (one more is closed at accept), and every connection closed after
//! its answer. The render runs on the blocking pool, so a slow scrape never stalls the
//! runtime's workers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

/// Default `metricsPromExporterPort`, RocketMQ 5's.
pub const DEFAULT_PORT: u16 = 5557;

/// Reads RocketMQ 5's exporter keys: `metricsExporterType` (`DISABLE`, the default, or
/// `PROM`), `metricsPromExporterHost` (an IP address; default `127.0.0.1`, where RocketMQ
/// takes `brokerIP1`: the port is not reachable from other machines unless asked) and
/// `metricsPromExporterPort` (default 5557; 0 picks a free port, logged at start). Returns
/// the address to serve on, `None` when off. RocketMQ's other exporters (`OTLP_GRPC`,
/// `LOG`) are refused, and so are host or port keys without `PROM`, which would otherwise
/// leave an operator wondering why nothing listens.
pub fn exporter_addr(
    p: &mut crate::config_file::Properties,
) -> Result<Option<std::net::SocketAddr>, crate::config_file::ConfigError> {
    use crate::config_file::ConfigError;
    let kind: Option<String> = p.take("metricsExporterType")?;
    let host: Option<std::net::IpAddr> = p.take("metricsPromExporterHost")?;
    let port: Option<u16> = p.take("metricsPromExporterPort")?;
    let bad = |key: &str, value: &str, reason: &str| ConfigError::BadValue {
        origin: p.origin.clone(),
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    };
    match kind.as_deref().map(str::trim) {
        Some("PROM") => {}
        None | Some("DISABLE") => {
            if host.is_some() || port.is_some() {
                let reason = "the Prometheus endpoint is off: set metricsExporterType=PROM";
                return Err(bad("metricsPromExporterPort", "", reason));
            }
            return Ok(None);
        }
        Some(other) => {
            let reason = "rocketraft exports metrics only as PROM (a Prometheus endpoint)";
            return Err(bad("metricsExporterType", other, reason));
        }
    }
    let host = host.unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    Ok(Some((host, port.unwrap_or(DEFAULT_PORT)).into()))
}

/// The text the endpoint serves, made anew for every scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// `Content-Type` of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The endpoint's limits.
#[derive(Debug, Clone)]
pub struct MetricsHttpConfig {
    /// Connections held at once.
    pub max_connections: usize,
    /// Bytes of request line and headers read at most; a longer head is answered 431.
    pub max_request_bytes: usize,
    /// Deadline for reading one request and writing its answer (ms).
    pub request_timeout_ms: u64,
}

impl Default for MetricsHttpConfig {
    fn default() -> Self {
        MetricsHttpConfig {
            max_connections: 16,
            max_request_bytes: 8 * 1024,
            request_timeout_ms: 10_000,
        }
    }
}

/// Serves `GET /metrics` on an already bound listener until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: MetricsHttpConfig,
    render: Render,
    shutdown: impl Future<Output = ()>,
) {
    let open = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let config = Arc::new(config);
    info!(addr = ?listener.local_addr().ok(), "metrics endpoint listening");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = open.clone().try_acquire_owned() else {
                        debug!(%peer, "metrics connection refused: too many open");
                        continue;
                    };
                    let (config, render) = (config.clone(), render.clone());
                    tokio::spawn(async move {
                        let deadline = Duration::from_millis(config.request_timeout_ms);
                        match tokio::time::timeout(deadline, answer(stream, &config, render)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => debug!(%peer, error = %e, "metrics connection failed"),
                            Err(_) => debug!(%peer, "metrics request timed out"),
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = &mut shutdown => break,
        }
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Metrics { head_only: bool },
    BadRequest,
    NotFound,
    MethodNotAllowed,
}

/// Reads one request head and answers it; the connection closes after.
async fn answer(
    mut stream: TcpStream,
    config: &MetricsHttpConfig,
    render: Render,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let parsed = loop {
        if let Some(end) = head_end(&head) {
            break parse(&head[..end]);
        }
        if head.len() >= config.max_request_bytes {
            return reply(&mut stream, "431 Request Header Fields Too Large", "", b"").await;
        }
        let room = (config.max_request_bytes - head.len()).min(chunk.len());
        let n = stream.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    };
    match parsed {
        Parsed::Metrics { head_only } => {
            let body = tokio::task::spawn_blocking(move || render())
                .await
                .map_err(std::io::Error::other)?;
            let body = if head_only { &[][..] } else { body.as_bytes() };
            let length = if head_only { None } else { Some(body.len()) };
            reply_with(&mut stream, "200 OK", CONTENT_TYPE, length, "", body).await
        }
        Parsed::BadRequest => reply(&mut stream, "400 Bad Request", "", b"bad request\n").await,
        Parsed::NotFound => reply(&mut stream, "404 Not Found", "", b"only /metrics\n").await,
        Parsed::MethodNotAllowed => {
            let allow = "Allow: GET, HEAD\r\n";
            reply(&mut stream, "405 Method Not Allowed", allow, b"GET only\n").await
        }
    }
}

/// Where the request head ends (the blank line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n"))
}

fn parse(head: &[u8]) -> Parsed {
    let Ok(head) = std::str::from_utf8(head) else {
        return Parsed::BadRequest;
    };
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Parsed::BadRequest;
    }
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return Parsed::NotFound;
    }
    match method {
        "GET" => Parsed::Metrics { head_only: false },
        "HEAD" => Parsed::Metrics { head_only: true },
        _ => Parsed::MethodNotAllowed,
    }
}

async fn reply(
    stream: &mut TcpStream,
    status: &str,
    extra_headers: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let content_type = "text/plain; charset=utf-8";
    reply_with(
        stream,
        status,
        content_type,
        Some(body.len()),
        extra_headers,
        body,
    )
    .await
}

async fn reply_with(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    length: Option<usize>,
    extra_headers: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let length = length.map(|n| format!("Content-Length: {n}\r\n"));
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{}{extra_headers}Connection: close\r\n\r\n",
        length.unwrap_or_default()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_or_head_of_the_metrics_path_is_served() {
        let p = |s: &str| parse(s.as_bytes());
        assert_eq!(
            p("GET /metrics HTTP/1.1\r\nHost: x"),
            Parsed::Metrics { head_only: false }
        );
        assert_eq!(
            p("GET /metrics?x=1 HTTP/1.0"),
            Parsed::Metrics { head_only: false }
        );
        assert_eq!(
            p("HEAD /metrics HTTP/1.1"),
            Parsed::Metrics { head_only: true }
        );
        assert_eq!(p("POST /metrics HTTP/1.1"), Parsed::MethodNotAllowed);
        assert_eq!(p("GET / HTTP/1.1"), Parsed::NotFound);
        assert_eq!(p("GET /metrics/../etc HTTP/1.1"), Parsed::NotFound);
        assert_eq!(p("GET /metrics"), Parsed::BadRequest);
        assert_eq!(p("GET /metrics SPDY/3"), Parsed::BadRequest);
        assert_eq!(p("GET  /metrics HTTP/1.1"), Parsed::BadRequest);
    }

    #[test]
    fn exporter_keys_turn_the_endpoint_on_only_with_prom() {
        use crate::config_file::Properties;
        let read = |text: &str| exporter_addr(&mut Properties::parse("t.conf", text).unwrap());
        assert_eq!(read("").unwrap(), None);
        assert_eq!(read("metricsExporterType=DISABLE\n").unwrap(), None);
        assert_eq!(
            read("metricsExporterType=PROM\n").unwrap(),
            Some("127.0.0.1:5557".parse().unwrap())
        );
        assert_eq!(
            read("metricsExporterType=PROM\nmetricsPromExporterHost=::1\nmetricsPromExporterPort=0\n")
                .unwrap(),
            Some("[::1]:0".parse().unwrap())
        );
        assert!(read("metricsPromExporterPort=9100\n").is_err());
        assert!(read("metricsExporterType=OTLP_GRPC\n").is_err());
        assert!(read("metricsExporterType=PROM\nmetricsPromExporterHost=example\n").is_err());
    }

    async fn ask(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_the_render_and_refuses_everything_else() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = MetricsHttpConfig {
            max_request_bytes: 256,
            ..MetricsHttpConfig::default()
        };
        let render: Render = Arc::new(|| "up 1\n".to_string());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, config, render, async {
            let _ = stop_rx.await;
        }));
        let ok = ask(addr, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 5\r\n") && ok.ends_with("\r\n\r\nup 1\n"));
        let other = ask(addr, b"GET /admin HTTP/1.1\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.1 404 "), "{other}");
        let long = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(400));
        let refused = ask(addr, long.as_bytes()).await;
        assert!(refused.starts_with("HTTP/1.1 431 "), "{refused}");
        stop_tx.send(()).unwrap();
        server.await.unwrap();
    }
}
