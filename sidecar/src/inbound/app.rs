//! Pooled plaintext clients from the sidecar to its own app.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::target::AppProtocol;
use crate::core::http::Body;

/// The app is local: a connect that takes longer is a stuck app.
const APP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Ports whose URI authority [`AppClient`] keeps built.
const AUTHORITY_CACHE_PORTS: usize = 64;

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
    /// [`Self::authority`]'s cache: one entry per app port called.
    authorities: Arc<RwLock<HashMap<u16, Authority>>>,
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
        Self {
            host,
            authorities: Arc::default(),
            http1,
            h2c,
        }
    }

    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.host, port)
    }

    /// The URI authority of the app's `port`, built once per port: the
    /// client needs it on every request (its pool key and dial address).
    fn authority(&self, port: u16) -> Result<Authority, http::Error> {
        let cached = self
            .authorities
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&port)
            .cloned();
        if let Some(a) = cached {
            return Ok(a);
        }
        let a = Authority::try_from(self.addr(port).to_string())?;
        let mut cache = self.authorities.write().unwrap_or_else(|e| e.into_inner());
        // Bounded, in case callers reach many ports: past it, the rest are
        // built per request.
        if cache.len() < AUTHORITY_CACHE_PORTS {
            cache.insert(port, a.clone());
        }
        Ok(a)
    }

    /// Sends `req` (already stripped of mesh headers) to the app on `port`.
    /// `authority` is what the caller addressed, kept for the app's `Host`.
    pub async fn send(
        &self,
        req: Request<Body>,
        port: u16,
        protocol: AppProtocol,
    ) -> Result<Response<Incoming>, AppError> {
        let addr = self.addr(port);
        let (mut head, body) = req.into_parts();
        // The request's own path is moved, not copied, into the app's URI.
        let mut uri = std::mem::take(&mut head.uri).into_parts();
        let called = uri.authority.take();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(
            self.authority(port)
                .map_err(|source| AppError::Uri { addr, source })?,
        );
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        head.uri = Uri::from_parts(uri).map_err(|e| AppError::Uri {
            addr,
            source: e.into(),
        })?;
        let mut req = Request::from_parts(head, body);
        let client = match protocol {
            AppProtocol::Http1 => {
                *req.version_mut() = Version::HTTP_11;
                // The app sees the name it was called by, not our loopback
                // address.
                if let Some(called) = called {
                    if !req.headers().contains_key(http::header::HOST) {
                        if let Ok(v) = http::HeaderValue::from_str(called.as_str()) {
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use http_body_util::{BodyExt, Full};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::core::http::boxed;

    /// An app on loopback that answers every request with its own head.
    async fn echo_head_app() -> u16 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let res = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        head.len()
                    );
                    let _ = tcp.write_all(res.as_bytes()).await;
                    let _ = tcp.write_all(&head).await;
                });
            }
        });
        port
    }

    async fn head_seen(client: &AppClient, uri: &str, port: u16) -> String {
        let req = Request::builder()
            .uri(uri)
            .body(boxed(Full::new(bytes::Bytes::new())))
            .unwrap();
        let res = client.send(req, port, AppProtocol::Http1).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec())
            .unwrap()
            .to_ascii_lowercase()
    }

    #[tokio::test]
    async fn the_app_gets_the_path_query_and_called_host_on_each_of_its_ports() {
        let client = AppClient::new(Ipv4Addr::LOCALHOST.into(), Duration::from_secs(5));
        let (a, b) = (echo_head_app().await, echo_head_app().await);
        for _ in 0..2 {
            let head = head_seen(&client, "http://reviews.shop:9080/r/1?x=a%20b&y", a).await;
            assert!(
                head.starts_with("get /r/1?x=a%20b&y http/1.1\r\n"),
                "{head}"
            );
            assert!(head.contains("\r\nhost: reviews.shop:9080\r\n"), "{head}");
            let head = head_seen(&client, "/", b).await;
            assert!(head.starts_with("get / http/1.1\r\n"), "{head}");
            // No authority called: the app sees its own address.
            assert!(
                head.contains(&format!("\r\nhost: 127.0.0.1:{b}\r\n")),
                "{head}"
            );
        }
        assert_eq!(client.authorities.read().unwrap().len(), 2);
    }

    #[test]
    fn callers_reaching_many_app_ports_cannot_grow_the_authority_cache() {
        let client = AppClient::new(Ipv4Addr::LOCALHOST.into(), Duration::from_secs(5));
        for port in 9000..9000 + 3 * AUTHORITY_CACHE_PORTS as u16 {
            let a = client.authority(port).unwrap();
            assert_eq!(a.as_str(), format!("127.0.0.1:{port}"));
        }
        assert_eq!(
            client.authorities.read().unwrap().len(),
            AUTHORITY_CACHE_PORTS
        );
        // Past the bound the authority is still right, only built anew.
        assert_eq!(client.authority(9999).unwrap().as_str(), "127.0.0.1:9999");
    }
}
