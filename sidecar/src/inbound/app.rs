//! Pooled plaintext clients from the sidecar to its own app.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::target::AppProtocol;
use crate::core::http::Body;

/// The app is local: a connect that takes longer is a stuck app.
const APP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Forwarding to the app failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("app unreachable at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: hyper_util::client::legacy::Error,
    },
    #[error("request to app at {addr} failed: {source}")]
    Request {
        addr: SocketAddr,
        source: hyper_util::client::legacy::Error,
    },
    #[error("cannot build app URI for {addr}: {source}")]
    Uri {
        addr: SocketAddr,
        source: http::Error,
    },
}

/// One pool per app protocol; connections are keyed by port inside each.
#[derive(Clone)]
pub struct AppClient {
    host: IpAddr,
    http1: Client<HttpConnector, Body>,
    h2c: Client<HttpConnector, Body>,
}

impl AppClient {
    /// Pooled connections idle for `idle_timeout` are closed, before an
    /// app's own keep-alive timeout is likely to race a reused connection.
    pub fn new(host: IpAddr, idle_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(APP_CONNECT_TIMEOUT));
        let builder = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_idle_timeout(idle_timeout);
            b
        };
        let http1 = builder().build(connector.clone());
        let h2c = builder().http2_only(true).build(connector);
        Self { host, http1, h2c }
    }

    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.host, port)
    }

    /// Sends `req` (already stripped of mesh headers) to the app on `port`.
    /// `authority` is what the caller addressed, kept for the app's `Host`.
    pub async fn send(
        &self,
        mut req: Request<Body>,
        port: u16,
        protocol: AppProtocol,
    ) -> Result<Response<Incoming>, AppError> {
        let addr = self.addr(port);
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        let authority = req.uri().authority().map(|a| a.to_string());
        *req.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(addr.to_string())
            .path_and_query(path)
            .build()
            .map_err(|source| AppError::Uri { addr, source })?;
        let client = match protocol {
            AppProtocol::Http1 => {
                *req.version_mut() = Version::HTTP_11;
                // The app sees the name it was called by, not our loopback
                // address.
                if let Some(authority) = authority {
                    if !req.headers().contains_key(http::header::HOST) {
                        if let Ok(v) = http::HeaderValue::from_str(&authority) {
                            req.headers_mut().insert(http::header::HOST, v);
                        }
                    }
                }
                &self.http1
            }
            AppProtocol::H2c => {
                *req.version_mut() = Version::HTTP_2;
                req.headers_mut().remove(http::header::HOST);
                &self.h2c
            }
        };
        client.request(req).await.map_err(|source| {
            if source.is_connect() {
                AppError::Connect { addr, source }
            } else {
                AppError::Request { addr, source }
            }
        })
    }
}
