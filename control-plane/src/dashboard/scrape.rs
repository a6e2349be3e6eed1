//! Reading proxies' `/metrics` for the dashboard: plain HTTP/1.1 GETs, a
//! bounded number at a time, each with a deadline and a body limit, since
//! the addresses and what answers there are the proxies' word.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mycel_api::plain_http;
use mycel_api::stats::{self, Sample};
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
    #[error(transparent)]
    Get(#[from] plain_http::Error),
    #[error("answered HTTP {0}")]
    Status(u16),
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
            let result = get(addr).await;
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
    let host = addr.to_string();
    let answer = plain_http::get(addr, &host, "/metrics", MAX_BODY, TIMEOUT).await?;
    if answer.status != 200 {
        return Err(ScrapeError::Status(answer.status));
    }
    Ok(stats::parse(&String::from_utf8_lossy(&answer.body))?)
}
