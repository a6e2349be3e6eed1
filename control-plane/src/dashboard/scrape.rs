//! Reading proxies' `/metrics` for the dashboard: plain HTTP/1.1 GETs, a
//! bounded number at a time, each with a deadline and a body limit, since
//! the addresses and what answers there are the proxies' word.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use mycel_api::stats::{self, Sample};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Scrapes in flight at once.
pub const CONCURRENCY: usize = 16;
/// Whole exchange, connect to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// A proxy's metrics are far smaller; more is refused.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[source] hyper::Error),
    #[error("request: {0}")]
    Request(#[source] http::Error),
    #[error("body: {0}")]
    Body(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Parse(#[from] stats::ParseError),
}

/// Each target's samples, or why not, by the ID given with it.
pub async fn all(targets: &[(String, SocketAddr)]) -> Vec<(String, Result<Vec<Sample>, String>)> {
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = JoinSet::new();
    for (id, addr) in targets.iter().cloned() {
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let result = match tokio::time::timeout(TIMEOUT, get(addr)).await {
                Ok(r) => r,
                Err(_) => Err(ScrapeError::Timeout(TIMEOUT)),
            };
            (id, result.map_err(|e| format!("{addr}: {e}")))
        });
    }
    let mut out = Vec::with_capacity(targets.len());
    while let Some(done) = tasks.join_next().await {
        if let Ok(r) = done {
            out.push(r);
        }
    }
    out
}

async fn get(addr: SocketAddr) -> Result<Vec<Sample>, ScrapeError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(ScrapeError::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ScrapeError::Http)?;
    // Ends with the exchange or when the proxy hangs up.
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = http::Request::get("/metrics")
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(ScrapeError::Request)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(ScrapeError::Http)?;
    let status = response.status().as_u16();
    if status != 200 {
        conn.abort();
        return Err(ScrapeError::Status(status));
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| ScrapeError::Body(e.to_string()))?
        .to_bytes();
    conn.abort();
    Ok(stats::parse(&String::from_utf8_lossy(&body))?)
}
