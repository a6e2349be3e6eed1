//! One HTTP/1.1 exchange with the controller's admin port.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A status document for a large mesh stays far below this.
const MAX_BODY: usize = 16 * 1024 * 1024;

pub struct Answer {
    pub status: u16,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[source] hyper::Error),
    #[error("request: {0}")]
    Request(#[source] http::Error),
    #[error("body: {0}")]
    Body(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

pub async fn get(addr: SocketAddr, path: &str, limit: Duration) -> Result<Answer, ClientError> {
    exchange(addr, http::Method::GET, path, String::new(), limit).await
}

pub async fn post(
    addr: SocketAddr,
    path: &str,
    body: String,
    limit: Duration,
) -> Result<Answer, ClientError> {
    exchange(addr, http::Method::POST, path, body, limit).await
}

async fn exchange(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    body: String,
    limit: Duration,
) -> Result<Answer, ClientError> {
    let fut = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(ClientError::Connect)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ClientError::Http)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(ClientError::Request)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(ClientError::Http)?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| ClientError::Body(e.to_string()))?
            .to_bytes();
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    };
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| ClientError::Timeout(limit))?
}
