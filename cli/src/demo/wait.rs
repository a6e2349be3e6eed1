//! Readiness polling: plain HTTP/1.1 GETs on loopback until an endpoint
//! answers as wanted or a deadline passes.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Pause between two polls.
pub const POLL: Duration = Duration::from_millis(200);
/// Bound of one GET, so a stuck server cannot eat the whole deadline at once.
const ATTEMPT: Duration = Duration::from_secs(3);
const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("GET http://{addr}{path}: {source}")]
    Get {
        addr: SocketAddr,
        path: String,
        #[source]
        source: GetError,
    },
    #[error("{what} not ready after {waited:?}; last answer: {last}")]
    Deadline {
        what: String,
        waited: Duration,
        last: String,
    },
}

/// An HTTP answer: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// One GET `path` to `addr` with `Host: host`, bounded by [`ATTEMPT`].
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<Answer, WaitError> {
    let result = match tokio::time::timeout(ATTEMPT, exchange(addr, host, path)).await {
        Ok(r) => r,
        Err(_) => Err(GetError::Timeout(ATTEMPT)),
    };
    result.map_err(|source| WaitError::Get {
        addr,
        path: path.to_string(),
        source,
    })
}

/// Why one GET got no answer.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("handshake: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("request: {0}")]
    Request(#[source] http::Error),
    #[error("send: {0}")]
    Send(#[source] hyper::Error),
    #[error("body: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

async fn exchange(addr: SocketAddr, host: &str, path: &str) -> Result<Answer, GetError> {
    let stream = TcpStream::connect(addr).await.map_err(GetError::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(GetError::Handshake)?;
    // Ends with the exchange or when the server hangs up.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = http::Request::get(path)
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(GetError::Request)?;
    let response = sender.send_request(request).await.map_err(GetError::Send)?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(GetError::Body)?
        .to_bytes();
    Ok(Answer { status, body })
}

/// Polls `addr` `path` until `accept` says yes, or fails at `deadline`
/// with the last answer or error.
pub async fn until(
    what: &str,
    addr: SocketAddr,
    host: &str,
    path: &str,
    deadline: Instant,
    accept: impl Fn(&Answer) -> bool,
) -> Result<Answer, WaitError> {
    let start = Instant::now();
    loop {
        let last = match get(addr, host, path).await {
            Ok(answer) if accept(&answer) => return Ok(answer),
            Ok(answer) => format!(
                "HTTP {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ),
            Err(e) => e.to_string(),
        };
        if Instant::now() + POLL >= deadline {
            return Err(WaitError::Deadline {
                what: what.to_string(),
                waited: start.elapsed(),
                last,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls until `path` answers 200.
pub async fn until_ok(
    what: &str,
    addr: SocketAddr,
    path: &str,
    deadline: Instant,
) -> Result<Answer, WaitError> {
    until(what, addr, "localhost", path, deadline, |a| a.status == 200).await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Answers 503 `not_ready` times, then 200, one request per connection.
    async fn server(not_ready: usize) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let status = if n < not_ready {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi"
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn polls_until_ok() {
        let (addr, seen) = server(2).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let answer = until_ok("test", addr, "/ready", deadline).await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(&answer.body[..], b"hi");
        assert_eq!(seen.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn deadline_reports_the_last_answer() {
        let (addr, _) = server(usize::MAX).await;
        let deadline = Instant::now() + Duration::from_millis(500);
        let err = until_ok("thing", addr, "/ready", deadline)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("thing not ready") && text.contains("HTTP 503"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn refused_connection_is_an_error_naming_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = get(addr, "localhost", "/x").await.unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
