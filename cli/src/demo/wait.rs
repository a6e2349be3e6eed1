//! Readiness polling: plain HTTP/1.1 GETs on loopback until an endpoint
//! answers as wanted or a deadline passes.

use std::net::SocketAddr;
use std::time::Duration;

use mycel_api::plain_http;
pub use mycel_api::plain_http::Answer;
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
        source: plain_http::Error,
    },
    #[error("{what} not ready after {waited:?}; last answer: {last}")]
    Deadline {
        what: String,
        waited: Duration,
        last: String,
    },
}

/// One GET `path` to `addr` with `Host: host`, bounded by [`ATTEMPT`].
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<Answer, WaitError> {
    plain_http::get(addr, host, path, MAX_BODY, ATTEMPT)
        .await
        .map_err(|source| WaitError::Get {
            addr,
            path: path.to_string(),
            source,
        })
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
