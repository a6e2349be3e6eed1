//! One plain HTTP/1.1 exchange over TCP (no TLS, no pooling): connect,
//! send one request, read the answer's body up to a limit, all within one
//! deadline. For the loopback admin ports and the proxies' `/metrics`,
//! where what answers is not trusted to be small or quick.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Empty, Full, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// An HTTP answer: status and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// A request body and its `Content-Type`.
#[derive(Debug, Clone)]
pub struct Content<'a> {
    pub content_type: &'a str,
    pub bytes: Bytes,
}

/// Why an exchange got no whole answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("HTTP/1.1 handshake: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("request: {0}")]
    Request(#[source] http::Error),
    #[error("send: {0}")]
    Send(#[source] hyper::Error),
    #[error("body: {0}")]
    Body(#[source] BodyError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Why the answer's body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("over the limit of {0} bytes")]
    TooLong(usize),
    #[error(transparent)]
    Read(Box<dyn std::error::Error + Send + Sync>),
}

/// `GET path` on `addr` with `Host: host`; see [`exchange`].
pub async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    max_body: usize,
    timeout: Duration,
) -> Result<Answer, Error> {
    exchange(addr, http::Method::GET, host, path, None, max_body, timeout).await
}

/// One `method path` request on a new connection to `addr` with
/// `Host: host` and `content` as its body (none: an empty body, no
/// `Content-Type`). A body longer than `max_body` bytes is an error;
/// `timeout` bounds the whole exchange, connect to last byte. The
/// connection is closed on return.
pub async fn exchange(
    addr: SocketAddr,
    method: http::Method,
    host: &str,
    path: &str,
    content: Option<Content<'_>>,
    max_body: usize,
    timeout: Duration,
) -> Result<Answer, Error> {
    let once = async {
        let stream = TcpStream::connect(addr).await.map_err(Error::Connect)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(Error::Handshake)?;
        // Drives the connection; aborted when this returns or times out, so
        // a server that never answers holds no task or socket.
        let mut driver = JoinSet::new();
        driver.spawn(async move {
            let _ = conn.await;
        });
        let builder = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, host);
        let request = match content {
            Some(c) => builder
                .header(http::header::CONTENT_TYPE, c.content_type)
                .body(Either::Left(Full::new(c.bytes))),
            None => builder.body(Either::Right(Empty::<Bytes>::new())),
        }
        .map_err(Error::Request)?;
        let response = sender.send_request(request).await.map_err(Error::Send)?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| {
                Error::Body(if e.is::<LengthLimitError>() {
                    BodyError::TooLong(max_body)
                } else {
                    BodyError::Read(e)
                })
            })?
            .to_bytes();
        Ok(Answer { status, body })
    };
    tokio::time::timeout(timeout, once)
        .await
        .map_err(|_| Error::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// Answers every connection with `reply` after reading its request,
    /// which it sends back on the channel.
    async fn server(reply: String) -> (SocketAddr, tokio::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, and the body when there is a content-length.
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let _ = tx
                    .send(String::from_utf8_lossy(&request).into_owned())
                    .await;
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        (addr, rx)
    }

    fn ok(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn a_200_with_its_body() {
        let (addr, mut requests) = server(ok("hello")).await;
        let answer = get(addr, "example.test", "/ready", 1024, SECOND)
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(&answer.body[..], b"hello");
        let request = requests.recv().await.unwrap();
        assert!(request.starts_with("GET /ready HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("host: example.test\r\n"), "{request}");
        assert!(!request.contains("content-type"), "{request}");
    }

    #[tokio::test]
    async fn a_post_sends_its_body_and_content_type() {
        let (addr, mut requests) = server(ok("{}")).await;
        let content = Content {
            content_type: "application/json",
            bytes: Bytes::from_static(b"{\"a\":1}"),
        };
        let answer = exchange(
            addr,
            http::Method::POST,
            "localhost",
            "/ca/rotate",
            Some(content),
            1024,
            SECOND,
        )
        .await
        .unwrap();
        assert_eq!((answer.status, &answer.body[..]), (200, &b"{}"[..]));
        let request = requests.recv().await.unwrap();
        assert!(
            request.starts_with("POST /ca/rotate HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("content-type: application/json\r\n"),
            "{request}"
        );
        assert!(request.ends_with("\r\n\r\n{\"a\":1}"), "{request}");
    }

    #[tokio::test]
    async fn other_statuses_are_answers() {
        let reply = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy";
        let (addr, _requests) = server(reply.into()).await;
        let answer = get(addr, "localhost", "/", 1024, SECOND).await.unwrap();
        assert_eq!((answer.status, &answer.body[..]), (503, &b"busy"[..]));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_saying_so() {
        let (addr, _requests) = server(ok(&"x".repeat(100))).await;
        let err = get(addr, "localhost", "/metrics", 99, SECOND)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Body(BodyError::TooLong(99))),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "body: over the limit of 99 bytes");
        // Exactly the limit is fine.
        let answer = get(addr, "localhost", "/metrics", 100, SECOND)
            .await
            .unwrap();
        assert_eq!(answer.body.len(), 100);
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts and reads, never writes; says when the client hangs up.
        let (closed, mut hung_up) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            let _ = closed.send(());
        });
        let limit = Duration::from_millis(200);
        let start = std::time::Instant::now();
        let err = get(addr, "localhost", "/", 1024, limit).await.unwrap_err();
        assert!(matches!(err, Error::Timeout(d) if d == limit), "{err:?}");
        assert_eq!(err.to_string(), "no answer within 200ms");
        assert!(start.elapsed() < 5 * SECOND);
        // The connection is not left open behind the error.
        tokio::time::timeout(5 * SECOND, &mut hung_up)
            .await
            .expect("the client closes the connection")
            .unwrap();
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = get(addr, "localhost", "/", 1024, SECOND).await.unwrap_err();
        match &err {
            Error::Connect(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}")
            }
            other => panic!("not a connect error: {other:?}"),
        }
        assert!(err.to_string().starts_with("connect: "), "{err}");
    }
}
