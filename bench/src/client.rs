//! One request of each protocol, as the load generator sends it: an
//! HTTP/1.1 or h2c GET, or a gRPC unary call, checked for a 1 KB answer.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

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
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("connect to {addr}: {message}")]
    Connect { addr: SocketAddr, message: String },
    #[error("status {0}")]
    Status(u16),
    #[error("body of {0} bytes, want {PAYLOAD_LEN}")]
    Body(usize),
    #[error("{0}")]
    Transport(String),
    #[error("no answer within {CALL_TIMEOUT:?}")]
    Timeout,
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

impl Conn {
    pub async fn connect(proto: Proto, target: &Target) -> Result<Conn, CallError> {
        let connect_err = |e: &dyn std::fmt::Display| CallError::Connect {
            addr: target.addr,
            message: e.to_string(),
        };
        match proto {
            Proto::Http1 => {
                let io = TokioIo::new(tcp(target.addr).await?);
                let (send, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| connect_err(&e))?;
                tokio::spawn(conn);
                Ok(Conn::H1(send))
            }
            Proto::H2 => {
                let io = TokioIo::new(tcp(target.addr).await?);
                let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .handshake(io)
                    .await
                    .map_err(|e| connect_err(&e))?;
                tokio::spawn(conn);
                Ok(Conn::H2(send))
            }
            Proto::Grpc => {
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

    async fn call_inner(&mut self, target: &Target) -> Result<(), CallError> {
        let resp = match self {
            Conn::H1(send) => {
                send.ready().await.map_err(transport)?;
                let req = http::Request::get("/")
                    .header(http::header::HOST, target.authority.as_str())
                    .body(Empty::new())
                    .map_err(transport)?;
                send.send_request(req).await.map_err(transport)?
            }
            Conn::H2(send) => {
                send.ready().await.map_err(transport)?;
                let req = http::Request::get(format!("http://{}/", target.authority))
                    .body(Empty::new())
                    .map_err(transport)?;
                send.send_request(req).await.map_err(transport)?
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
                    n => Err(CallError::Body(n)),
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
            PAYLOAD_LEN => Ok(()),
            n => Err(CallError::Body(n)),
        }
    }
}
