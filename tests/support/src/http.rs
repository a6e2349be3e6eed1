//! The one HTTP/1.1 client of the tests: plaintext, on loopback, every
//! call bounded by a timeout so a silent server fails the test instead of
//! hanging it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Bound for one whole request, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// GET `path` from `addr` with the given Host header, on a new connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<Reply> {
    request(addr, host, path, &[]).await
}

/// GET with extra request headers, on a new connection.
pub async fn request(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply> {
    let fut = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        let mut send = handshake(stream).await?;
        send_get(&mut send, host, path, headers).await
    };
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .with_context(|| format!("GET http://{host}{path} via {addr} timed out"))?
}

/// `method path` with `headers` and `body`, on a new connection.
pub async fn send(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Reply> {
    let fut = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = send
            .send_request(req.body(http_body_util::Full::new(Bytes::from(body.to_string())))?)
            .await
            .with_context(|| format!("{method} {path}"))?;
        reply(resp).await
    };
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .with_context(|| format!("{method} http://{host}{path} via {addr} timed out"))?
}

/// GETs every path in turn on one kept-alive connection over `io` (a
/// connection the test opened itself, e.g. to a captured destination).
pub async fn get_each<IO>(io: IO, host: &str, paths: &[&str]) -> Result<Vec<Reply>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let fut = async {
        let mut send = handshake(io).await?;
        let mut replies = Vec::with_capacity(paths.len());
        for path in paths {
            replies.push(send_get(&mut send, host, path, &[]).await?);
        }
        Ok(replies)
    };
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .with_context(|| format!("GET {paths:?} from {host} timed out"))?
}

async fn handshake<IO>(io: IO) -> Result<SendRequest<Empty<Bytes>>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(conn);
    Ok(send)
}

async fn send_get(
    send: &mut SendRequest<Empty<Bytes>>,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply> {
    let mut req = http::Request::get(path).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Empty::<Bytes>::new())?)
        .await
        .with_context(|| format!("GET {path}"))?;
    reply(resp).await
}

async fn reply(resp: http::Response<hyper::body::Incoming>) -> Result<Reply> {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Polls `GET path` until it answers 200, or fails after `limit`.
pub async fn wait_ok(addr: SocketAddr, path: &str, limit: Duration) -> Result<Reply> {
    let start = tokio::time::Instant::now();
    let mut last = String::from("no attempt");
    while start.elapsed() < limit {
        match get(addr, "localhost", path).await {
            Ok(r) if r.status == 200 => return Ok(r),
            Ok(r) => last = format!("status {}: {}", r.status, r.body),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{addr}{path} not ready after {limit:?}: {last}")
}
