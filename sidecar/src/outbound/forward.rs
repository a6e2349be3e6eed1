//! The client half of the sidecar-to-sidecar protocol: route a request or a
//! tunnel to an endpoint and send it over the pooled mesh connection.

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::client::conn::http2::SendRequest;
use hyper::upgrade::Upgraded;

use super::plan::{plan, Destination, Plan, PlanError};
use super::pool::DialOptions;
use super::Outbound;
use crate::core::directory::{Endpoint, Protocol, ServicePort, SubscribeError};
use crate::core::http::{
    boxed, empty, proxy_error, redact_proxy_error, strip_hop_by_hop, Body, Caller, APP_PROTOCOL,
    DST_PORT, PEER_ID,
};
use crate::metrics::{Direction, ErrorKind};
use crate::observe::TunnelSpan;

/// How long a request waits for the controller's first answer on a service.
pub const RESOLVE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The metric label of requests whose service is not known: hosts are
/// chosen by callers, so only known services may become labels.
pub const UNKNOWN_SERVICE_LABEL: &str = "unknown";

/// A failure that ends in an error response (and a metric and a log line).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("upstream connect failed: {endpoint}: {source}")]
    Dial {
        endpoint: String,
        source: super::pool::DialError,
    },
    #[error("upstream request failed: {endpoint}: {source}")]
    Request {
        endpoint: String,
        source: hyper::Error,
    },
    #[error("cannot build upstream request: {0}")]
    Build(#[from] http::Error),
    #[error("tunnel refused by {endpoint}: status {status}")]
    TunnelRefused {
        endpoint: String,
        status: StatusCode,
    },
    #[error("upgrade through {endpoint} failed: {source}")]
    Upgrade {
        endpoint: String,
        source: hyper::Error,
    },
    /// A circuit breaker limit of the service's policy.
    #[error("overflow: {0}")]
    Overflow(#[from] super::breaker::Overflow),
    #[error("{what} took longer than {after:?}")]
    Timeout {
        what: &'static str,
        after: std::time::Duration,
    },
    #[error(transparent)]
    Body(#[from] super::retry::BufferError),
}

impl ForwardError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ForwardError::Plan(e) => e.kind(),
            ForwardError::Dial { source, .. } => source.kind(),
            ForwardError::Request { .. } | ForwardError::TunnelRefused { .. } => {
                ErrorKind::Upstream
            }
            ForwardError::Build(_) | ForwardError::Body(_) => ErrorKind::BadRequest,
            ForwardError::Upgrade { .. } => ErrorKind::Upgrade,
            ForwardError::Overflow(_) => ErrorKind::Overflow,
            ForwardError::Timeout { .. } => ErrorKind::Timeout,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ForwardError::Plan(e) => e.status(),
            ForwardError::Build(_) | ForwardError::Body(_) => StatusCode::BAD_REQUEST,
            ForwardError::Overflow(_) => StatusCode::SERVICE_UNAVAILABLE,
            ForwardError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

pub(super) fn endpoint_name(e: &Endpoint) -> String {
    if e.workload.is_empty() {
        e.mesh_addr.to_string()
    } else {
        format!("{} ({})", e.mesh_addr, e.workload)
    }
}

impl Outbound {
    /// Resolves `dest` to its service, port, endpoints and policy.
    pub(crate) async fn resolve(&self, dest: &Destination) -> Result<Plan, PlanError> {
        let state = self
            .discovery
            .resolve(&dest.service_key, RESOLVE_WAIT)
            .await
            .map_err(|e| match e {
                SubscribeError::Limit(max) => PlanError::SubscriptionLimit(max),
                SubscribeError::BadKey(_) => PlanError::BadHost(dest.host.clone()),
            })?;
        plan(dest, &state)
    }

    /// Sends `req` to `dest` and returns the peer's response, or an error
    /// response naming what failed. `authority` is what the app addressed;
    /// the server side passes it on to its app.
    pub(crate) async fn forward(
        self: &std::sync::Arc<Self>,
        direction: Direction,
        dest: &Destination,
        authority: &str,
        req: Request<Body>,
    ) -> Response<Body> {
        let caller = Caller::of(req.headers(), direction == Direction::Gateway);
        let (mut res, label) = match self.resolve(dest).await {
            Ok(plan) => {
                let label = plan.service.key();
                let res = if plan.routed() {
                    self.call_routed(direction, &plan, authority, req, caller)
                        .await
                } else {
                    let origin = super::call::Origin {
                        direction,
                        caller,
                        authority,
                    };
                    let rule = super::call::RuleOverrides::default();
                    self.call(&plan, &label, req, origin, rule).await
                };
                (res, label)
            }
            Err(e) => {
                let label = if e.service_is_known() {
                    dest.service_key.clone()
                } else {
                    UNKNOWN_SERVICE_LABEL.to_string()
                };
                let res = self.fail(direction, &dest.service_key, &e.into(), caller);
                (res, label)
            }
        };
        crate::observe::served(&mut res).service = Some(label);
        if caller.external {
            redact_proxy_error(res, caller)
        } else {
            res
        }
    }

    /// The error response for `e`, logged with its detail and counted.
    pub(crate) fn fail(
        &self,
        direction: Direction,
        service: &str,
        e: &ForwardError,
        caller: Caller,
    ) -> Response<Body> {
        tracing::warn!(?direction, %service, error = %e, "request failed");
        self.metrics.error(direction, e.kind());
        proxy_error(e.status(), e.kind(), e, caller)
    }

    /// Sends `req` to one endpoint already chosen (transparent mode: the
    /// app dialed that endpoint's address), for app port `port` of
    /// `service`.
    pub(crate) async fn forward_to(
        &self,
        direction: Direction,
        endpoint: &Endpoint,
        port: &ServicePort,
        service: &str,
        authority: &str,
        req: Request<Body>,
    ) -> Response<Body> {
        let caller = Caller::of(req.headers(), false);
        let opts = super::pool::DialOptions::default();
        let mut res = match self.send_to(endpoint, port, authority, req, opts).await {
            Ok(res) => res,
            Err(e) => self.fail(direction, service, &e, caller),
        };
        let served = crate::observe::served(&mut res);
        served.service = Some(service.to_string());
        served.endpoint = Some(endpoint.mesh_addr);
        res
    }

    /// The pooled mesh connection to `endpoint`, with its name for errors.
    async fn sender_to(
        &self,
        endpoint: &Endpoint,
        opts: DialOptions,
    ) -> Result<(String, SendRequest<Body>), ForwardError> {
        let name = endpoint_name(endpoint);
        match self
            .pool
            .get(endpoint.mesh_addr, &endpoint.identity, opts)
            .await
        {
            Ok(sender) => Ok((name, sender)),
            Err(source) => {
                if let Some(reason) = source.handshake_reason() {
                    self.metrics.handshake_failure(Direction::Outbound, reason);
                }
                Err(ForwardError::Dial {
                    endpoint: name,
                    source,
                })
            }
        }
    }

    pub(super) async fn send_to(
        &self,
        endpoint: &Endpoint,
        port: &ServicePort,
        authority: &str,
        req: Request<Body>,
        opts: DialOptions,
    ) -> Result<Response<Body>, ForwardError> {
        if super::upgrade::wants_upgrade(&req, port.protocol) {
            return self.upgrade(endpoint, port, authority, req, opts).await;
        }
        let req = mesh_request(req, authority, port)?;
        let res = self
            .pool
            .send(endpoint.mesh_addr, &endpoint.identity, req, opts)
            .await
            .map_err(|e| {
                let endpoint = endpoint_name(endpoint);
                match e {
                    super::pool::SendError::Dial(source) => ForwardError::Dial { endpoint, source },
                    super::pool::SendError::Request(source) => {
                        ForwardError::Request { endpoint, source }
                    }
                }
            })?;
        let (mut parts, body) = res.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, boxed(body)))
    }

    /// Opens a CONNECT tunnel to `dest` and returns its byte stream and
    /// what must be held while it is open (the circuit breaker's count of
    /// the service's connections). `span`, when the tunnel is traced, learns
    /// the endpoint and becomes the parent of the server side's span.
    pub(crate) async fn open_tunnel(
        &self,
        dest: &Destination,
        span: Option<&mut TunnelSpan>,
    ) -> Result<(Upgraded, TunnelGuard), ForwardError> {
        let plan = self.resolve(dest).await?;
        let service = plan.service.key();
        let rules = plan.rules();
        let permit = match &rules.circuit_breaker {
            Some(cb) => Some(self.breakers.connection(&service, cb).map_err(|e| {
                self.metrics.overflow(&service, e.limit.as_str());
                ForwardError::Overflow(e)
            })?),
            None => None,
        };
        let input = super::balance::PickInput {
            hash: None,
            local_zone: &self.zone,
            now: std::time::Instant::now(),
        };
        let pick = self
            .balancer
            .pick(
                &service,
                &plan.endpoints,
                &rules.load_balancer,
                rules.outlier_detection.as_ref(),
                &input,
                None,
            )
            .ok_or_else(|| PlanError::NoReadyEndpoints(service.clone()))?;
        let opts = DialOptions {
            connect_timeout: rules
                .timeouts
                .connect
                .unwrap_or(super::pool::CONNECT_TIMEOUT),
            idle_timeout: rules.timeouts.idle,
        };
        let opened = self
            .tunnel_with(&pick.endpoint, plan.port.target_port, opts, span)
            .await;
        pick.finish(match &opened {
            Ok(_) => super::balance::Outcome::Success,
            Err(ForwardError::Dial { .. }) => super::balance::Outcome::ConnectFailure,
            Err(_) => super::balance::Outcome::Reset,
        });
        Ok((opened?, TunnelGuard { _permit: permit }))
    }

    /// Opens a CONNECT tunnel to app port `target_port` behind one chosen
    /// endpoint's sidecar.
    pub(crate) async fn tunnel_to(
        &self,
        endpoint: &Endpoint,
        target_port: u16,
        span: Option<&mut TunnelSpan>,
    ) -> Result<Upgraded, ForwardError> {
        self.tunnel_with(endpoint, target_port, DialOptions::default(), span)
            .await
    }

    pub(super) async fn tunnel_with(
        &self,
        endpoint: &Endpoint,
        target_port: u16,
        opts: DialOptions,
        span: Option<&mut TunnelSpan>,
    ) -> Result<Upgraded, ForwardError> {
        let (name, mut sender) = self.sender_to(endpoint, opts).await?;
        let target = std::net::SocketAddr::new(endpoint.mesh_addr.ip(), target_port);
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .version(Version::HTTP_2)
            .uri(target.to_string())
            .body(empty())?;
        if let Some(span) = span {
            span.set_endpoint(endpoint.mesh_addr);
            span.inject(req.headers_mut());
        }
        let res = sender
            .send_request(req)
            .await
            .map_err(|source| ForwardError::Request {
                endpoint: name.clone(),
                source,
            })?;
        if !res.status().is_success() {
            return Err(ForwardError::TunnelRefused {
                endpoint: name,
                status: res.status(),
            });
        }
        hyper::upgrade::on(res)
            .await
            .map_err(|source| ForwardError::Request {
                endpoint: name,
                source,
            })
    }
}

/// Held for as long as a tunnel is open.
pub struct TunnelGuard {
    _permit: Option<super::breaker::ConnectionPermit>,
}

/// Rewrites an app's request into the mesh form (see the architecture
/// document): HTTP/2, origin authority kept, mesh headers set by us only.
fn mesh_request(
    req: Request<Body>,
    authority: &str,
    port: &ServicePort,
) -> Result<Request<Body>, http::Error> {
    // The declared port protocol decides, never the caller's HTTP version:
    // an h2c client may call an HTTP/1 app.
    let app_h2 = matches!(port.protocol, Protocol::Grpc | Protocol::Http2);
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    parts.uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()?;
    parts.version = Version::HTTP_2;
    strip_hop_by_hop(&mut parts.headers);
    // HTTP/2 carries the authority itself; an app must not be able to pick
    // the port or claim an identity through headers.
    parts.headers.remove(header::HOST);
    parts.headers.remove(PEER_ID);
    parts.headers.remove(APP_PROTOCOL);
    parts
        .headers
        .insert(DST_PORT, HeaderValue::from(port.target_port));
    if app_h2 {
        parts
            .headers
            .insert(APP_PROTOCOL, HeaderValue::from_static("h2"));
    }
    Ok(Request::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::directory::Service;

    fn plan_with(protocol: Protocol) -> Plan {
        Plan {
            service: Arc::new(Service {
                name: "catalog".into(),
                namespace: "shop".into(),
                ports: vec![],
                vips: vec![],
            }),
            port: ServicePort {
                name: "http".into(),
                port: 80,
                target_port: 8080,
                protocol,
            },
            endpoints: Arc::from(Vec::new()),
            policy: Default::default(),
            routes: Default::default(),
        }
    }

    #[test]
    fn mesh_request_rewrites() {
        let cases = [
            (Version::HTTP_11, Protocol::Http, None),
            // h2c_client_to_http1_app: the app's declared protocol wins.
            (Version::HTTP_2, Protocol::Http, None),
            (Version::HTTP_2, Protocol::Grpc, Some("h2")),
            (Version::HTTP_11, Protocol::Grpc, Some("h2")),
            (Version::HTTP_11, Protocol::Http2, Some("h2")),
        ];
        for (version, protocol, want_proto) in cases {
            let req = Request::builder()
                .version(version)
                .uri("http://catalog/items?x=1")
                .header("host", "catalog")
                .header("connection", "close")
                .header(
                    "x-mycel-peer-id",
                    "spiffe://cluster.local/ns/shop/sa/forged",
                )
                .header("mycel-dst-port", "22")
                .header("mycel-app-protocol", "h2")
                .header("x-app", "kept")
                .body(empty())
                .unwrap();
            let out = mesh_request(req, "catalog:80", &plan_with(protocol).port).unwrap();
            assert_eq!(out.uri(), "http://catalog:80/items?x=1");
            assert_eq!(out.version(), Version::HTTP_2);
            let h = out.headers();
            assert_eq!(h.get("mycel-dst-port").unwrap(), "8080");
            assert_eq!(h.get_all("mycel-dst-port").iter().count(), 1);
            assert_eq!(
                h.get("mycel-app-protocol").map(|v| v.to_str().unwrap()),
                want_proto,
                "{version:?} {protocol:?}"
            );
            assert!(h.get("x-mycel-peer-id").is_none());
            assert!(h.get("host").is_none());
            assert!(h.get("connection").is_none());
            assert_eq!(h.get("x-app").unwrap(), "kept");
        }
    }
}
