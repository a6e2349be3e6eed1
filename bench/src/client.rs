//! One request of each protocol, as the load generator sends it: an
//! HTTP/1.1 or h2c GET, or a gRPC unary call, checked for a 1 KB answer.
//! HTTP/1.1 and HTTP/2 may also go over TLS (the gateway scenario's
//! HTTPS fronts), with the protocol chosen by ALPN.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::backend::proto::echo_client::EchoClient;
use crate::backend::proto::GetRequest;
use crate::backend::PAYLOAD_LEN;

/// Longest a single request may take before it counts as an error.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol the client speaks to the first hop.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Http1,
    H2,
    Grpc,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Http1 => "http1",
            Proto::H2 => "h2",
            Proto::Grpc => "grpc",
        }
    }
}

/// Where a client sends: the first hop's address and the authority
/// (`Host` / `:authority`) that names the destination.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub authority: String,
    /// HTTPS to the first hop (HTTP/1.1 and HTTP/2 only); None: cleartext.
    pub tls: Option<TlsTarget>,
    /// Sent with every request (e.g. `authorization`), HTTP/1.1 and HTTP/2.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The request path (HTTP/1.1 and HTTP/2).
    pub path: String,
    /// The body length a good answer has ([`PAYLOAD_LEN`] from the
    /// harness's backend; the pod scenario's nginx answers 17 bytes).
    pub body_len: usize,
}

impl Target {
    /// A cleartext target without extra headers.
    pub fn plain(addr: SocketAddr, authority: impl Into<String>) -> Target {
        Target {
            addr,
            authority: authority.into(),
            tls: None,
            headers: Vec::new(),
            path: "/".into(),
            body_len: PAYLOAD_LEN,
        }
    }
}

/// How the load generator speaks TLS to an HTTPS front: TLS 1.3 only,
/// trusting one CA, sending `server_name` as SNI and checking the
/// certificate against it, ALPN `http/1.1` or `h2` by the protocol asked
/// for. Session resumption stays on (rustls' default): connections are
/// long-lived, so it is rarely used, as for a browser.
#[derive(Clone, Debug)]
pub struct TlsTarget {
    pub http1: Arc<rustls::ClientConfig>,
    pub h2: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("TLS client: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("server name {name:?}: {message}")]
    Name { name: String, message: String },
}

impl TlsTarget {
    pub fn new(ca_der: &[u8], server_name: &str) -> Result<TlsTarget, TlsSetupError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca_der.to_vec()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = |alpn: &[u8]| -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
            let mut c = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            c.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(c))
        };
        let name =
            ServerName::try_from(server_name.to_string()).map_err(|e| TlsSetupError::Name {
                name: server_name.to_string(),
                message: e.to_string(),
            })?;
        Ok(TlsTarget {
            http1: config(b"http/1.1")?,
            h2: config(b"h2")?,
            server_name: name,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("connect to {addr}: {message}")]
    Connect { addr: SocketAddr, message: String },
    #[error("status {0}")]
    Status(u16),
    #[error("body of {got} bytes, want {want}")]
    Body { got: usize, want: usize },
    #[error("{0}")]
    Transport(String),
    #[error("no answer within {CALL_TIMEOUT:?}")]
    Timeout,
}

impl CallError {
    /// What kind of failure this is, for the per-kind error counts of a
    /// run: the status for refusals (`status 429`), else the variant.
    pub fn kind(&self) -> String {
        match self {
            CallError::Connect { .. } => "connect".into(),
            CallError::Status(s) => format!("status {s}"),
            CallError::Body { .. } => "short body".into(),
            CallError::Transport(_) => "transport".into(),
            CallError::Timeout => "timeout".into(),
        }
    }
}

fn transport(e: impl std::fmt::Display) -> CallError {
    CallError::Transport(e.to_string())
}

/// A connection ready to send requests on. HTTP/2 and gRPC connections are
/// cheap to clone and multiplex; an HTTP/1.1 one serves one request at a time.
pub enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
    Grpc(EchoClient<tonic::transport::Channel>),
}

async fn tcp(addr: SocketAddr) -> Result<TcpStream, CallError> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| CallError::Connect {
            addr,
            message: e.to_string(),
        })?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// TCP then a TLS handshake offering only `alpn`; fails unless the server
/// agreed to it (a front that fell back to another protocol would be
/// measured doing something else).
async fn tls(
    target: &Target,
    tls: &TlsTarget,
    proto: Proto,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, CallError> {
    let connect_err = |message: String| CallError::Connect {
        addr: target.addr,
        message,
    };
    let config = match proto {
        Proto::H2 => tls.h2.clone(),
        _ => tls.http1.clone(),
    };
    let want = config.alpn_protocols.first().cloned();
    let stream = TlsConnector::from(config)
        .connect(tls.server_name.clone(), tcp(target.addr).await?)
        .await
        .map_err(|e| connect_err(format!("TLS: {e}")))?;
    let got = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    if got != want {
        return Err(connect_err(format!(
            "ALPN: asked {:?}, server chose {:?}",
            want.as_deref().map(String::from_utf8_lossy),
            got.as_deref().map(String::from_utf8_lossy)
        )));
    }
    Ok(stream)
}

impl Conn {
    pub async fn connect(proto: Proto, target: &Target) -> Result<Conn, CallError> {
        let connect_err = |e: &dyn std::fmt::Display| CallError::Connect {
            addr: target.addr,
            message: e.to_string(),
        };
        match (proto, &target.tls) {
            (Proto::Http1, None) => {
                let io = TokioIo::new(tcp(target.addr).await?);
                let (send, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| connect_err(&e))?;
                tokio::spawn(conn);
                Ok(Conn::H1(send))
            }
            (Proto::Http1, Some(t)) => {
                let io = TokioIo::new(tls(target, t, proto).await?);
                let (send, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| connect_err(&e))?;
                tokio::spawn(conn);
                Ok(Conn::H1(send))
            }
            (Proto::H2, None) => {
                let io = TokioIo::new(tcp(target.addr).await?);
                let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .handshake(io)
                    .await
                    .map_err(|e| connect_err(&e))?;
                tokio::spawn(conn);
                Ok(Conn::H2(send))
            }
            (Proto::H2, Some(t)) => {
                let io = TokioIo::new(tls(target, t, proto).await?);
                let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .handshake(io)
                    .await
                    .map_err(|e| connect_err(&e))?;
                tokio::spawn(conn);
                Ok(Conn::H2(send))
            }
            (Proto::Grpc, Some(_)) => Err(connect_err(
                &"gRPC over TLS is not part of the harness (the HTTPS fronts are measured with HTTP/1.1 and HTTP/2)",
            )),
            (Proto::Grpc, None) => {
                let origin: http::Uri = format!("http://{}", target.authority)
                    .parse()
                    .map_err(|e| connect_err(&e))?;
                let channel =
                    tonic::transport::Channel::from_shared(format!("http://{}", target.addr))
                        .map_err(|e| connect_err(&e))?
                        .origin(origin)
                        .tcp_nodelay(true)
                        .connect()
                        .await
                        .map_err(|e| connect_err(&e))?;
                Ok(Conn::Grpc(EchoClient::new(channel)))
            }
        }
    }

    /// Another handle on the same connection (HTTP/2 and gRPC only).
    pub fn share(&self) -> Option<Conn> {
        match self {
            Conn::H1(_) => None,
            Conn::H2(s) => Some(Conn::H2(s.clone())),
            Conn::Grpc(c) => Some(Conn::Grpc(c.clone())),
        }
    }

    /// Whether this connection can no longer be used (HTTP/1.1 closed).
    pub fn is_closed(&self) -> bool {
        match self {
            Conn::H1(s) => s.is_closed(),
            Conn::H2(s) => s.is_closed(),
            Conn::Grpc(_) => false,
        }
    }

    /// One request; Ok when the answer is 200 with the 1 KB body.
    pub async fn call(&mut self, target: &Target) -> Result<(), CallError> {
        match tokio::time::timeout(CALL_TIMEOUT, self.call_inner(target)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout),
        }
    }

    /// The request every HTTP call sends: `GET /` for the target's
    /// authority with its extra headers.
    fn request(target: &Target, h2: bool) -> Result<http::Request<Empty<Bytes>>, CallError> {
        let mut req = if h2 {
            let scheme = if target.tls.is_some() {
                "https"
            } else {
                "http"
            };
            http::Request::get(format!("{scheme}://{}{}", target.authority, target.path))
        } else {
            http::Request::get(target.path.as_str())
                .header(http::header::HOST, target.authority.as_str())
        }
        .body(Empty::new())
        .map_err(transport)?;
        for (name, value) in &target.headers {
            req.headers_mut().append(name.clone(), value.clone());
        }
        Ok(req)
    }

    /// One request with these extra headers instead of the target's;
    /// returns the status and response headers (the body is read and
    /// dropped). For the setup's checks of what a front enforces.
    pub async fn probe(
        &mut self,
        target: &Target,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
    ) -> Result<(u16, http::HeaderMap), CallError> {
        let target = Target {
            headers,
            ..target.clone()
        };
        let fut = async {
            let resp = match self {
                Conn::H1(send) => {
                    send.ready().await.map_err(transport)?;
                    send.send_request(Self::request(&target, false)?)
                        .await
                        .map_err(transport)?
                }
                Conn::H2(send) => {
                    send.ready().await.map_err(transport)?;
                    send.send_request(Self::request(&target, true)?)
                        .await
                        .map_err(transport)?
                }
                Conn::Grpc(_) => {
                    return Err(CallError::Transport("no probe over gRPC".into()));
                }
            };
            let (parts, body) = resp.into_parts();
            body.collect().await.map_err(transport)?;
            Ok((parts.status.as_u16(), parts.headers))
        };
        tokio::time::timeout(CALL_TIMEOUT, fut)
            .await
            .map_err(|_| CallError::Timeout)?
    }

    async fn call_inner(&mut self, target: &Target) -> Result<(), CallError> {
        let resp = match self {
            Conn::H1(send) => {
                send.ready().await.map_err(transport)?;
                send.send_request(Self::request(target, false)?)
                    .await
                    .map_err(transport)?
            }
            Conn::H2(send) => {
                send.ready().await.map_err(transport)?;
                send.send_request(Self::request(target, true)?)
                    .await
                    .map_err(transport)?
            }
            Conn::Grpc(client) => {
                let reply = client
                    .get(GetRequest { id: 1 })
                    .await
                    .map_err(|s| {
                        CallError::Transport(format!("grpc {:?}: {}", s.code(), s.message()))
                    })?
                    .into_inner();
                return match reply.payload.len() {
                    PAYLOAD_LEN => Ok(()),
                    got => Err(CallError::Body {
                        got,
                        want: PAYLOAD_LEN,
                    }),
                };
            }
        };
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(transport)?
            .to_bytes();
        if status != http::StatusCode::OK {
            return Err(CallError::Status(status.as_u16()));
        }
        match body.len() {
            n if n == target.body_len => Ok(()),
            got => Err(CallError::Body {
                got,
                want: target.body_len,
            }),
        }
    }
}

/// What one bulk download moved.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Download {
    pub bytes: u64,
    pub seconds: f64,
    /// Megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
}

/// `GET target.path` over one new HTTP/1.1 connection (cleartext), its
/// body counted as it streams in, never held; the time runs from sending
/// the request to the last byte. Fails on a status other than 200, on a
/// body shorter than `want` bytes, or after `limit`.
pub async fn download(target: &Target, want: u64, limit: Duration) -> Result<Download, CallError> {
    let fut = async {
        let io = TokioIo::new(tcp(target.addr).await?);
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(transport)?;
        tokio::spawn(conn);
        let start = std::time::Instant::now();
        let resp = send
            .send_request(Conn::request(target, false)?)
            .await
            .map_err(transport)?;
        if resp.status() != http::StatusCode::OK {
            return Err(CallError::Status(resp.status().as_u16()));
        }
        let mut body = resp.into_body();
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.map_err(transport)?.data_ref() {
                bytes += data.len() as u64;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        if bytes < want {
            return Err(CallError::Body {
                got: usize::try_from(bytes).unwrap_or(usize::MAX),
                want: usize::try_from(want).unwrap_or(usize::MAX),
            });
        }
        Ok(Download {
            bytes,
            seconds,
            mb_per_s: bytes as f64 / 1e6 / seconds.max(1e-9),
        })
    };
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| CallError::Timeout)?
}
