//! Probes of a configuration from outside: a tiny HTTP GET, the check that
//! a mesh-side port refuses plaintext and certificate-less clients, TLS
//! handshakes per second, and bulk TCP throughput.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mycel_test_support::tls::AcceptAnyServer;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::ClientConfig;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::stats::{self, histogram, Summary};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{addr}: {message}")]
    Io { addr: SocketAddr, message: String },
    #[error("TLS client setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("bulk transfer through {addr}: sent {sent} bytes, the sink counted {counted}")]
    Short {
        addr: SocketAddr,
        sent: u64,
        counted: u64,
    },
}

fn io(addr: SocketAddr) -> impl Fn(std::io::Error) -> ProbeError {
    move |e| ProbeError::Io {
        addr,
        message: e.to_string(),
    }
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Status line and body of a plaintext `GET path` (HTTP/1.1, Connection: close).
pub async fn http_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<(u16, String), ProbeError> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.map_err(io(addr))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(io(addr))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(io(addr))?;
        Ok::<_, ProbeError>(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(PROBE_TIMEOUT, fut)
        .await
        .map_err(|_| ProbeError::Io {
            addr,
            message: "no answer".into(),
        })??;
    Ok(parse_response(&text))
}

/// (status, body) of a raw HTTP/1.1 response; status 0 if there is none.
pub fn parse_response(text: &str) -> (u16, String) {
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// What a client without mTLS got from a mesh-side port.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefusalCheck {
    pub port: SocketAddr,
    /// What a plaintext HTTP request got ("connection closed", "status 400").
    pub plaintext: String,
    /// What a TLS client without a certificate got.
    pub tls_without_cert: String,
    /// True when neither reached the backend.
    pub refused: bool,
}

/// A plaintext request that reached the backend would be answered 200 with
/// the 1 KB body; anything else means the port refused it.
pub fn reached_backend(status: u16, body: &str) -> bool {
    status == 200 && body.len() >= crate::backend::PAYLOAD_LEN
}

/// Tries a plaintext request and a certificate-less TLS request on `port`.
pub async fn check_refuses_without_mtls(port: SocketAddr, host: &str) -> RefusalCheck {
    let (plain, plain_ok) = match http_get(port, host, "/").await {
        Ok((s, b)) => (format!("status {s}"), reached_backend(s, &b)),
        Err(e) => (format!("failed: {e}"), false),
    };
    let (tls, tls_ok) = match tls_get_without_cert(port, host).await {
        Ok((s, b)) => (format!("status {s}"), reached_backend(s, &b)),
        Err(e) => (format!("failed: {e}"), false),
    };
    RefusalCheck {
        port,
        plaintext: plain,
        tls_without_cert: tls,
        refused: !plain_ok && !tls_ok,
    }
}

async fn tls_get_without_cert(addr: SocketAddr, host: &str) -> Result<(u16, String), ProbeError> {
    let config = client_config(None, vec![b"h2".to_vec(), b"http/1.1".to_vec()])?;
    let fut = async {
        let tcp = TcpStream::connect(addr).await.map_err(io(addr))?;
        let name = ServerName::try_from(host.to_string()).map_err(|e| ProbeError::Io {
            addr,
            message: e.to_string(),
        })?;
        let mut s = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(io(addr))?;
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(io(addr))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(io(addr))?;
        Ok::<_, ProbeError>(parse_response(&String::from_utf8_lossy(&buf)))
    };
    tokio::time::timeout(PROBE_TIMEOUT, fut)
        .await
        .map_err(|_| ProbeError::Io {
            addr,
            message: "no answer".into(),
        })?
}

/// A client certificate chain and its PKCS#8 key, DER.
#[derive(Clone, Debug)]
pub struct ClientCert {
    pub chain: Vec<Vec<u8>>,
    pub key_pkcs8: Vec<u8>,
}

/// TLS 1.3 client config (ring) with an optional client certificate. It
/// accepts any server certificate: the handshake test measures the server
/// side (the proxy), and the client skips verification for every
/// configuration alike, so its own cost does not depend on how the server
/// names itself.
pub fn client_config(
    cert: Option<&ClientCert>,
    alpn: Vec<Vec<u8>>,
) -> Result<ClientConfig, ProbeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer::new(provider)));
    let mut config = match cert {
        Some(c) => builder.with_client_auth_cert(
            c.chain
                .iter()
                .map(|d| CertificateDer::from(d.clone()))
                .collect(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key_pkcs8.clone())),
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn;
    // Every connection is a full handshake: no resumption.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// Full mTLS handshakes per second against one port.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HandshakeResult {
    pub handshakes: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub per_second: f64,
    pub latency: Summary,
}

/// `concurrency` tasks each connect, complete a full handshake (and wait for
/// the server's first flight after it, so a rejected certificate counts as
/// an error), then close, for `duration`.
pub async fn handshakes(
    addr: SocketAddr,
    config: ClientConfig,
    server_name: &str,
    concurrency: usize,
    duration: Duration,
) -> HandshakeResult {
    let connector = TlsConnector::from(Arc::new(config));
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let connector = connector.clone();
        let name = ServerName::try_from(server_name.to_string()).ok();
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let (mut ok, mut errors, mut first) = (0u64, 0u64, None::<String>);
            // Bounded by time; each attempt by PROBE_TIMEOUT.
            while Instant::now() < end {
                let t = Instant::now();
                let r = tokio::time::timeout(PROBE_TIMEOUT, async {
                    let tcp = TcpStream::connect(addr).await?;
                    let _ = tcp.set_nodelay(true);
                    let name = name
                        .clone()
                        .ok_or_else(|| std::io::Error::other("bad server name"))?;
                    let mut s = connector.connect(name, tcp).await?;
                    s.shutdown().await
                })
                .await;
                match r {
                    Ok(Ok(())) => {
                        stats::record(&mut h, t.elapsed());
                        ok += 1;
                    }
                    Ok(Err(e)) => {
                        errors += 1;
                        first.get_or_insert_with(|| e.to_string());
                    }
                    Err(_) => {
                        errors += 1;
                        first.get_or_insert_with(|| "timeout".into());
                    }
                }
            }
            (h, ok, errors, first)
        }));
    }
    let mut hist = histogram();
    let (mut ok, mut errors, mut first) = (0, 0, None);
    for t in tasks {
        if let Ok((h, o, e, f)) = t.await {
            let _ = hist.add(&h);
            ok += o;
            errors += e;
            if first.is_none() {
                first = f;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    HandshakeResult {
        handshakes: ok,
        errors,
        first_error: first,
        per_second: ok as f64 / secs,
        latency: stats::summarize(&hist),
    }
}

/// Bulk TCP throughput: `bytes` sent through `addr` to the sink.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BulkResult {
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
}

/// Sends an 8-byte length then `bytes` bytes to the backend's TCP sink
/// (through whatever listens on `addr`) and waits for its count.
pub async fn tcp_bulk(addr: SocketAddr, bytes: u64) -> Result<BulkResult, ProbeError> {
    let chunk = vec![0x5au8; 256 * 1024];
    let start = Instant::now();
    let fut = async {
        let mut s = TcpStream::connect(addr).await.map_err(io(addr))?;
        s.write_all(&bytes.to_be_bytes()).await.map_err(io(addr))?;
        let mut sent = 0u64;
        while sent < bytes {
            let n = chunk
                .len()
                .min(usize::try_from(bytes - sent).unwrap_or(chunk.len()));
            s.write_all(&chunk[..n]).await.map_err(io(addr))?;
            sent += n as u64;
        }
        s.flush().await.map_err(io(addr))?;
        let mut count = [0u8; 8];
        s.read_exact(&mut count).await.map_err(io(addr))?;
        Ok::<_, ProbeError>(u64::from_be_bytes(count))
    };
    let limit = Duration::from_secs(120);
    let counted = tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| ProbeError::Io {
            addr,
            message: format!("bulk transfer not done within {limit:?}"),
        })??;
    if counted != bytes {
        return Err(ProbeError::Short {
            addr,
            sent: bytes,
            counted,
        });
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(BulkResult {
        bytes,
        seconds,
        mb_per_s: bytes as f64 / 1e6 / seconds.max(1e-9),
    })
}

/// Connections to a mesh-side port kept open after one request each.
pub struct HeldConnections {
    /// Connections that completed the handshake and got an answer.
    pub answered: u64,
    /// Open connections (and their tasks), closed when this drops.
    _senders: Vec<Box<dyn std::any::Any + Send>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for HeldConnections {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Opens `n` mTLS connections to `addr`, one after the other, and sends
/// one `GET /` on each over the protocol ALPN picked (HTTP/2 or HTTP/1.1),
/// reading its answer whatever its status; the connections stay open
/// until the result drops. What a pooled peer costs the accepting side.
pub async fn held_connections(
    addr: SocketAddr,
    config: ClientConfig,
    server_name: &str,
    n: usize,
) -> Result<HeldConnections, ProbeError> {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| ProbeError::Io {
        addr,
        message: format!("server name {server_name:?}: {e}"),
    })?;
    let failed = |message: String| ProbeError::Io { addr, message };
    let mut held = HeldConnections {
        answered: 0,
        _senders: Vec::with_capacity(n),
        tasks: Vec::with_capacity(n),
    };
    let request = || {
        http::Request::get("/")
            .header(http::header::HOST, server_name)
            .body(Empty::<bytes::Bytes>::new())
    };
    for _ in 0..n {
        let one = async {
            let tcp = TcpStream::connect(addr).await.map_err(io(addr))?;
            let _ = tcp.set_nodelay(true);
            let tls = connector
                .connect(name.clone(), tcp)
                .await
                .map_err(io(addr))?;
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let io = TokioIo::new(tls);
            let req = request().map_err(|e| failed(e.to_string()))?;
            let held: (Box<dyn std::any::Any + Send>, _) = if h2 {
                let (mut sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .map_err(|e| failed(format!("HTTP/2 handshake: {e}")))?;
                let task = keep(conn);
                read_answer(sender.send_request(req).await, &failed).await?;
                (Box::new(sender), task)
            } else {
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| failed(format!("HTTP/1.1 handshake: {e}")))?;
                let task = keep(conn);
                read_answer(sender.send_request(req).await, &failed).await?;
                (Box::new(sender), task)
            };
            Ok::<_, ProbeError>(held)
        };
        let (sender, task) = tokio::time::timeout(PROBE_TIMEOUT, one)
            .await
            .map_err(|_| failed("timed out opening a held connection".into()))??;
        held._senders.push(sender);
        held.tasks.push(task);
        held.answered += 1;
    }
    Ok(held)
}

/// Runs a client connection until it ends.
fn keep<C>(conn: C) -> tokio::task::JoinHandle<()>
where
    C: std::future::Future + Send + 'static,
{
    tokio::spawn(async move {
        let _ = conn.await;
    })
}

/// Reads a response to its end, whatever its status.
async fn read_answer(
    res: Result<http::Response<hyper::body::Incoming>, hyper::Error>,
    failed: &impl Fn(String) -> ProbeError,
) -> Result<(), ProbeError> {
    use http_body_util::BodyExt;
    let res = res.map_err(|e| failed(format!("request: {e}")))?;
    let _ = res.into_body().collect().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_responses() {
        let (s, b) = parse_response("HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\nThe plain HTTP request was sent to HTTPS port");
        assert_eq!(s, 400);
        assert!(b.contains("plain HTTP"));
        assert_eq!(parse_response(""), (0, String::new()));
        assert!(!reached_backend(400, &"x".repeat(2000)));
        assert!(!reached_backend(200, "short"));
        assert!(reached_backend(200, &"x".repeat(1024)));
    }
}
