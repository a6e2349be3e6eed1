//! A minimal HTTP/1.1 client for loopback assertions.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

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
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = http::Request::get(path).header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = send.send_request(req.body(Empty::<Bytes>::new())?).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .with_context(|| format!("GET http://{host}{path} via {addr} timed out"))?
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
