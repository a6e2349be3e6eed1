//! Gateway mode: a plaintext HTTP listener (HTTP/1.1 and h2c) and an HTTPS
//! listener ([`https`], certificates by SNI from [`tls`]) that route to
//! mesh services, through the same outbound pool and identity checks as a
//! sidecar. Routes are either the `--route` flags (host and path prefix) or
//! the HTTPRoutes and GRPCRoutes of a Gateway (Gateway API) that the
//! controller sends (`--gateway`), matched by the same engine as mesh
//! routes.

pub mod aggregate;
pub mod cache;
pub mod https;
pub mod jwt;
pub mod policy;
pub mod ratelimit;
pub mod route;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::core::directory::routes::GatewaySocket;
use crate::core::http::{boxed, proxy_error, redact_proxy_error, Body, Caller};
use crate::core::serve::{HttpMode, Server};
use crate::metrics::{Direction, ErrorKind};
use crate::outbound::plan::Destination;
use crate::outbound::{request_authority, Outbound, Parent};
pub use route::GatewayRoute;

/// Where the gateway's routes come from.
#[derive(Clone, Debug)]
pub enum RouteSource {
    /// `--route` flags.
    Static(Arc<[GatewayRoute]>),
    /// `<name>.<namespace>` of the Gateway whose routes the controller
    /// sends.
    Gateway(Arc<str>),
}

/// Set by the gateway on every request it forwards (any copy the client
/// sent is replaced): `https` or `http`, the scheme the client used.
pub const FORWARDED_PROTO: &str = "x-forwarded-proto";

/// Set by the HTTPS listener to the client certificate it verified
/// (`--tls-client-ca`), and removed from every other request: a backend may
/// trust it because no client can send it through the gateway.
pub const FORWARDED_CLIENT_CERT: &str = "x-forwarded-client-cert";

/// What both listeners serve requests with.
pub struct Gateway {
    pub routes: RouteSource,
    pub outbound: Arc<Outbound>,
    /// The GatewayPolicies of the Gateway API routes.
    pub policies: policy::Policies,
}

impl Gateway {
    /// A gateway whose global rate limits have no Redis (they answer as
    /// their policies say Redis failures do), with the default cache size.
    pub fn new(routes: RouteSource, outbound: Arc<Outbound>) -> Arc<Gateway> {
        let cache = cache::Cache::new(cache::CacheConfig::default())
            .expect("the default cache settings are valid");
        Self::with(routes, outbound, None, cache)
    }

    pub fn with(
        routes: RouteSource,
        outbound: Arc<Outbound>,
        redis: Option<ratelimit::GlobalLimiter>,
        cache: cache::Cache,
    ) -> Arc<Gateway> {
        let fetch: Arc<dyn aggregate::Fetch> = Arc::new(MeshFetch(outbound.clone()));
        let policies = policy::Policies::new(outbound.metrics().clone(), redis, cache, Some(fetch));
        Arc::new(Gateway {
            routes,
            outbound,
            policies,
        })
    }
}

/// Aggregation parts asked over the mesh, as the gateway's own requests:
/// through the outbound pool, under each service's traffic policy.
struct MeshFetch(Arc<Outbound>);

impl aggregate::Fetch for MeshFetch {
    fn get(
        &self,
        part: &aggregate::Part,
        path_and_query: &str,
        headers: &http::HeaderMap,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<Response<Body>, aggregate::FetchError>> + Send + '_>,
    > {
        let built = Request::get(path_and_query)
            .body(crate::core::http::empty())
            .map_err(|e| aggregate::FetchError(e.to_string()));
        let dest = Destination {
            host: part.service.clone(),
            service_key: part.service.clone(),
            port: Some(part.port),
        };
        let authority = format!("{}:{}", part.service, part.port);
        let headers = headers.clone();
        Box::pin(async move {
            let mut req = built?;
            *req.headers_mut() = headers;
            Ok(self
                .0
                .forward(Direction::Gateway, &dest, &authority, req)
                .await)
        })
    }
}

/// Serves the gateway listener until the task is dropped.
pub fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    server: Server,
) -> impl Future<Output = ()> {
    server.serve("gateway", listener, move |tcp, _, conn| {
        let gateway = gateway.clone();
        async move {
            conn.serve_http(tcp, HttpMode::FirstHop, move |mut req| {
                let gateway = gateway.clone();
                async move {
                    let headers = req.headers_mut();
                    headers.insert(FORWARDED_PROTO, http::HeaderValue::from_static("http"));
                    headers.remove(FORWARDED_CLIENT_CERT);
                    handle(&gateway, req, GatewaySocket::Plaintext).await
                }
            })
            .await;
        }
    })
}

/// A request the gateway answers itself, before any route: counted, logged
/// with its detail, answered generically.
fn refuse(
    outbound: &Outbound,
    caller: Caller,
    status: StatusCode,
    kind: ErrorKind,
    detail: &str,
) -> Response<Body> {
    tracing::info!(kind = kind.as_str(), %detail, "gateway: request refused");
    outbound.metrics().error(Direction::Gateway, kind);
    proxy_error(status, kind, detail, caller)
}

/// Routes one request. `socket` is the listener it came in on, said by that
/// listener (never read from the request: a header would let a plaintext
/// client reach routes attached only to HTTPS listeners).
async fn handle(
    gateway: &Gateway,
    mut req: Request<Incoming>,
    socket: GatewaySocket,
) -> Response<Body> {
    let (routes, outbound) = (&gateway.routes, &gateway.outbound);
    let caller = Caller::of(req.headers(), true);
    // A gateway is not a forward proxy: a tunnel to wherever the caller
    // names would reach inside the mesh.
    if req.method() == Method::CONNECT {
        return refuse(
            outbound,
            caller,
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::MethodNotAllowed,
            "CONNECT is not served by the gateway",
        );
    }
    let path = match route::normalize_path(req.uri().path()) {
        Ok(p) => p,
        Err(e) => {
            let detail = format!("path {:?}: {e}", req.uri().path());
            return refuse(
                outbound,
                caller,
                StatusCode::BAD_REQUEST,
                ErrorKind::BadPath,
                &detail,
            );
        }
    };
    if path != req.uri().path() {
        // The service gets the path the route was chosen by.
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = PathAndQuery::try_from(pq).ok();
        match http::Uri::from_parts(parts) {
            Ok(uri) => *req.uri_mut() = uri,
            Err(e) => {
                let detail = format!("cannot rebuild normalized path {path:?}: {e}");
                return refuse(
                    outbound,
                    caller,
                    StatusCode::BAD_REQUEST,
                    ErrorKind::BadPath,
                    &detail,
                );
            }
        }
    }
    let authority = request_authority(&req).unwrap_or_default();
    let host = route::host_only(&authority).to_ascii_lowercase();
    let routes = match routes {
        RouteSource::Static(routes) => routes,
        RouteSource::Gateway(key) => {
            return gateway_api(gateway, key, &authority, &host, socket, req, caller).await
        }
    };
    let Some(route) = route::select(routes, &host, &path) else {
        let detail = format!("no route for {host}{path}");
        return refuse(
            outbound,
            caller,
            StatusCode::NOT_FOUND,
            ErrorKind::NoRoute,
            &detail,
        );
    };
    let dest = Destination {
        host: route.service.clone(),
        service_key: route.service.clone(),
        port: Some(route.port),
    };
    // The service sees the public host it was called by, as most gateways
    // do; without one, the service's own name.
    let authority = if authority.is_empty() {
        format!("{}:{}", route.service, route.port)
    } else {
        authority
    };
    let (parts, body) = req.into_parts();
    outbound
        .forward(
            Direction::Gateway,
            &dest,
            &authority,
            Request::from_parts(parts, boxed(body)),
        )
        .await
}

/// A request routed by the Gateway API routes of the Gateway `key`.
async fn gateway_api(
    gateway: &Gateway,
    key: &str,
    authority: &str,
    host: &str,
    socket: GatewaySocket,
    req: Request<Incoming>,
    caller: Caller,
) -> Response<Body> {
    let outbound = &gateway.outbound;
    let snapshot = outbound.snapshot();
    let routes = match snapshot.gateway_routes.get(key) {
        Some(Some(routes)) => routes,
        Some(None) => {
            let detail = format!("gateway {key} does not exist at the controller");
            return refuse(
                outbound,
                caller,
                StatusCode::NOT_FOUND,
                ErrorKind::NoRoute,
                &detail,
            );
        }
        None => {
            let detail = format!("no routes from the control plane yet for gateway {key}");
            return refuse(
                outbound,
                caller,
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::NoAnswer,
                &detail,
            );
        }
    };
    gateway.policies.follow(routes);
    if authority.is_empty() {
        return refuse(
            outbound,
            caller,
            StatusCode::BAD_REQUEST,
            ErrorKind::BadRequest,
            "the request names no host",
        );
    }
    let parent = Parent {
        key,
        routes,
        port: 0,
        host: Some(host),
        socket: Some(socket),
    };
    let (parts, body) = req.into_parts();
    let req = Request::from_parts(parts, boxed(body));
    let routed = outbound
        .route(
            Direction::Gateway,
            parent,
            authority,
            req,
            caller,
            Some(&gateway.policies),
        )
        .await;
    let mut res = routed.response;
    if let Some(backend) = routed.backend {
        crate::observe::served(&mut res).service = Some(backend);
    }
    redact_proxy_error(res, caller)
}
