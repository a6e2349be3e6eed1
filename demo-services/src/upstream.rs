//! How a service reaches another one by name: through the sidecar's explicit
//! outbound proxy (connect to the proxy, name the service in `Host` /
//! `:authority`), or, without a mesh, straight to a `--direct` address.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

/// Largest response body a service reads from another one.
const MAX_BODY: usize = 1024 * 1024;

/// Where calls to other services go.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Upstreams {
    pub proxy: Option<SocketAddr>,
    /// Per-service overrides that bypass the proxy.
    pub direct: BTreeMap<String, SocketAddr>,
}

/// One resolved call target: the socket to dial and the authority to name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub connect: SocketAddr,
    pub authority: String,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no route to service {0:?}: give --proxy or --direct {0}=ADDR")]
    NoRoute(String),
    #[error("connecting to {addr} (for {service}): {source}")]
    Connect {
        service: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP exchange with {service}: {source}")]
    Http {
        service: String,
        source: hyper::Error,
    },
    #[error("building the request to {service}: {source}")]
    Request {
        service: String,
        source: http::Error,
    },
    #[error("reading the body from {service}: {message}")]
    Body { service: String, message: String },
    #[error("{service} did not answer within {timeout:?}")]
    Timeout { service: String, timeout: Duration },
    #[error("{service} answered HTTP {status}: {body}")]
    Status {
        service: String,
        status: u16,
        body: String,
    },
    #[error("{service} sent JSON we cannot read: {source}")]
    Json {
        service: String,
        source: serde_json::Error,
    },
    #[error("bad gRPC endpoint for {service}: {source}")]
    Endpoint {
        service: String,
        source: tonic::transport::Error,
    },
}

impl Upstreams {
    /// Resolves `service` on `port`. Port 80 is left out of the authority
    /// (`Host: catalog`), as an HTTP client would; other ports are kept
    /// (`reviews:9090`).
    pub fn route(&self, service: &str, port: u16) -> Result<Route, UpstreamError> {
        let authority = if port == 80 {
            service.to_string()
        } else {
            format!("{service}:{port}")
        };
        let connect = self
            .direct
            .get(service)
            .or(self.proxy.as_ref())
            .copied()
            .ok_or_else(|| UpstreamError::NoRoute(service.to_string()))?;
        Ok(Route { connect, authority })
    }

    /// A lazily connecting gRPC channel to `service:port`; `:authority` names
    /// the service while the TCP connection goes to the proxy.
    pub fn grpc_channel(
        &self,
        service: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Channel, UpstreamError> {
        let route = self.route(service, port)?;
        let endpoint_err = |source| UpstreamError::Endpoint {
            service: service.to_string(),
            source,
        };
        let origin: http::Uri = format!("http://{}", route.authority)
            .parse()
            .map_err(|_| UpstreamError::NoRoute(service.to_string()))?;
        let endpoint = Endpoint::from_shared(format!("http://{}", route.connect))
            .map_err(endpoint_err)?
            .origin(origin)
            .connect_timeout(timeout)
            .timeout(timeout);
        Ok(endpoint.connect_lazy())
    }
}

/// GETs `path` from `service` (port 80) and decodes a JSON answer.
/// Any non-2xx status is an error carrying the body.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    upstreams: &Upstreams,
    service: &str,
    path: &str,
    timeout: Duration,
) -> Result<T, UpstreamError> {
    let route = upstreams.route(service, 80)?;
    let exchange = get(&route, service, path);
    let (status, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| UpstreamError::Timeout {
            service: service.to_string(),
            timeout,
        })??;
    if !(200..300).contains(&status) {
        return Err(UpstreamError::Status {
            service: service.to_string(),
            status,
            body: String::from_utf8_lossy(&body).chars().take(300).collect(),
        });
    }
    serde_json::from_slice(&body).map_err(|source| UpstreamError::Json {
        service: service.to_string(),
        source,
    })
}

/// One HTTP/1.1 GET on a fresh connection, origin-form with a `Host` header:
/// what an explicit-proxy client sends on loopback. Returns status and body.
pub async fn get(route: &Route, service: &str, path: &str) -> Result<(u16, Bytes), UpstreamError> {
    let stream =
        TcpStream::connect(route.connect)
            .await
            .map_err(|source| UpstreamError::Connect {
                service: service.to_string(),
                addr: route.connect,
                source,
            })?;
    let http_err = |source| UpstreamError::Http {
        service: service.to_string(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_err)?;
    // The connection task ends when the exchange is over or the peer hangs up.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    let request = http::Request::get(path)
        .header(http::header::HOST, &route.authority)
        .body(Empty::<Bytes>::new())
        .map_err(|source| UpstreamError::Request {
            service: service.to_string(),
            source,
        })?;
    let response = sender.send_request(request).await.map_err(http_err)?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| UpstreamError::Body {
            service: service.to_string(),
            message: e.to_string(),
        })?
        .to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn route_table() {
        let proxy_only = Upstreams {
            proxy: Some(addr("127.0.0.1:15001")),
            direct: BTreeMap::new(),
        };
        let mixed = Upstreams {
            proxy: Some(addr("127.0.0.1:15001")),
            direct: [("ratings".to_string(), addr("127.0.0.1:9999"))].into(),
        };
        let none = Upstreams::default();
        let cases = [
            (
                &proxy_only,
                "catalog",
                80,
                Some(("127.0.0.1:15001", "catalog")),
            ),
            (
                &proxy_only,
                "reviews",
                9090,
                Some(("127.0.0.1:15001", "reviews:9090")),
            ),
            (&mixed, "ratings", 80, Some(("127.0.0.1:9999", "ratings"))),
            (&mixed, "catalog", 80, Some(("127.0.0.1:15001", "catalog"))),
            (&none, "catalog", 80, None),
        ];
        for (up, service, port, want) in cases {
            let got = up.route(service, port).ok();
            let want = want.map(|(c, a)| Route {
                connect: addr(c),
                authority: a.to_string(),
            });
            assert_eq!(got, want, "{service}:{port}");
        }
    }

    #[test]
    fn no_route_error_says_what_to_do() {
        let err = Upstreams::default().route("catalog", 80).unwrap_err();
        assert!(err.to_string().contains("--proxy"), "{err}");
    }
}
