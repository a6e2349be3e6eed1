//! How a service reaches another one by name: through the sidecar's explicit
//! outbound proxy (connect to the proxy, name the service in `Host` /
//! `:authority`), by the service's own name resolved by DNS (in
//! Kubernetes: `http://catalog:80`, whose ClusterIP the sidecar captures),
//! or, without a mesh, at a `--direct` address.

pub mod target;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

pub use target::{Target, TargetError};

use crate::trace::TraceHeaders;

/// Largest response body a service reads from another one.
const MAX_BODY: usize = 1024 * 1024;

/// Where a call to a service without a `--direct` entry goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fallback {
    /// Nowhere: the call fails with [`UpstreamError::NoRoute`].
    #[default]
    None,
    /// The sidecar's explicit outbound proxy (`--proxy`).
    Proxy(SocketAddr),
    /// The service's own name and the port it is called on, looked up at
    /// each connection (`--dns`).
    Dns,
}

/// Where calls to other services go.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Upstreams {
    pub fallback: Fallback,
    /// Per-service overrides that bypass the fallback.
    pub direct: BTreeMap<String, Target>,
}

/// One resolved call target: where to dial and the authority to name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub connect: Target,
    pub authority: String,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no route to service {0:?}: give --proxy, --dns or --direct {0}=ADDR")]
    NoRoute(String),
    #[error("looking up {host:?} (for {service}): {source}")]
    Resolve {
        service: String,
        host: String,
        source: std::io::Error,
    },
    #[error("{target} has no address (for {service})")]
    NoAddress { service: String, target: String },
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
    /// Every service through the explicit proxy at `addr`.
    pub fn proxy(addr: SocketAddr) -> Self {
        Upstreams {
            fallback: Fallback::Proxy(addr),
            direct: BTreeMap::new(),
        }
    }

    /// Only the services named, each at its address.
    pub fn direct<T: Into<Target>>(pairs: impl IntoIterator<Item = (String, T)>) -> Self {
        Upstreams {
            fallback: Fallback::None,
            direct: pairs.into_iter().map(|(n, t)| (n, t.into())).collect(),
        }
    }

    /// Resolves `service` on `port`. Port 80 is left out of the authority
    /// (`Host: catalog`), as an HTTP client would; other ports are kept
    /// (`reviews:9090`).
    pub fn route(&self, service: &str, port: u16) -> Result<Route, UpstreamError> {
        let authority = if port == 80 {
            service.to_string()
        } else {
            format!("{service}:{port}")
        };
        let connect = match (self.direct.get(service), self.fallback) {
            (Some(target), _) => target.clone(),
            (None, Fallback::Proxy(addr)) => Target::Addr(addr),
            (None, Fallback::Dns) => Target::Host {
                host: service.to_string(),
                port,
            },
            (None, Fallback::None) => return Err(UpstreamError::NoRoute(service.to_string())),
        };
        Ok(Route { connect, authority })
    }

    /// A lazily connecting gRPC channel to `service:port`; `:authority` names
    /// the service while the TCP connection goes to the proxy. A host name
    /// is looked up by tonic's connector at every (re)connection, as
    /// [`target::connect`] does for HTTP calls.
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
    trace: &TraceHeaders,
) -> Result<T, UpstreamError> {
    let route = upstreams.route(service, 80)?;
    let exchange = get(&route, service, path, trace);
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
pub async fn get(
    route: &Route,
    service: &str,
    path: &str,
    trace: &TraceHeaders,
) -> Result<(u16, Bytes), UpstreamError> {
    let stream = target::connect(&target::SystemResolver, &route.connect, service).await?;
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
    let mut request = http::Request::get(path)
        .header(http::header::HOST, &route.authority)
        .body(Empty::<Bytes>::new())
        .map_err(|source| UpstreamError::Request {
            service: service.to_string(),
            source,
        })?;
    trace.apply(request.headers_mut());
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
        let proxy_only = Upstreams::proxy(addr("127.0.0.1:15001"));
        let mixed = Upstreams {
            fallback: Fallback::Proxy(addr("127.0.0.1:15001")),
            direct: [("ratings".to_string(), Target::Addr(addr("127.0.0.1:9999")))].into(),
        };
        let dns = Upstreams {
            fallback: Fallback::Dns,
            direct: [(
                "ratings".to_string(),
                Target::parse("ratings.other.svc:8080").unwrap(),
            )]
            .into(),
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
            // DNS: the name and port the caller uses, as in `http://catalog`.
            (&dns, "catalog", 80, Some(("catalog:80", "catalog"))),
            (
                &dns,
                "reviews",
                9090,
                Some(("reviews:9090", "reviews:9090")),
            ),
            // A --direct entry wins over DNS; the authority still names
            // the service.
            (
                &dns,
                "ratings",
                80,
                Some(("ratings.other.svc:8080", "ratings")),
            ),
            (&none, "catalog", 80, None),
        ];
        for (up, service, port, want) in cases {
            let got = up.route(service, port).ok();
            let want = want.map(|(c, a)| Route {
                connect: Target::parse(c).unwrap(),
                authority: a.to_string(),
            });
            assert_eq!(got, want, "{service}:{port}");
        }
    }

    #[test]
    fn no_route_error_says_what_to_do() {
        let err = Upstreams::default().route("catalog", 80).unwrap_err();
        for flag in ["--proxy", "--dns", "--direct catalog="] {
            assert!(err.to_string().contains(flag), "{err}");
        }
    }

    #[tokio::test]
    async fn grpc_channels_accept_host_names() {
        // Lazy: nothing is looked up or dialled until the first call.
        let dns = Upstreams {
            fallback: Fallback::Dns,
            direct: BTreeMap::new(),
        };
        assert!(dns
            .grpc_channel("reviews", 9090, Duration::from_secs(1))
            .is_ok());
    }
}
