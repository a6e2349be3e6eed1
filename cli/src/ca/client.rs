//! One HTTP/1.1 exchange with the controller's admin port.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use mycel_api::plain_http::{self, Content};

/// A status document for a large mesh stays far below this.
const MAX_BODY: usize = 16 * 1024 * 1024;

pub struct Answer {
    pub status: u16,
    pub body: String,
}

pub async fn get(
    addr: SocketAddr,
    path: &str,
    limit: Duration,
) -> Result<Answer, plain_http::Error> {
    exchange(addr, http::Method::GET, path, None, limit).await
}

/// POSTs `json` as `application/json`.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    json: String,
    limit: Duration,
) -> Result<Answer, plain_http::Error> {
    let content = Content {
        content_type: "application/json",
        bytes: Bytes::from(json),
    };
    exchange(addr, http::Method::POST, path, Some(content), limit).await
}

async fn exchange(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    content: Option<Content<'_>>,
    limit: Duration,
) -> Result<Answer, plain_http::Error> {
    let answer =
        plain_http::exchange(addr, method, "localhost", path, content, MAX_BODY, limit).await?;
    Ok(Answer {
        status: answer.status,
        body: String::from_utf8_lossy(&answer.body).into_owned(),
    })
}
