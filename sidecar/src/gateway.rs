//! Gateway mode: a plaintext HTTP listener (HTTP/1.1 and h2c) that routes by
//! host and path prefix to mesh services, through the same outbound pool
//! and identity checks as a sidecar.

pub mod route;

use std::future::Future;
use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::core::http::{boxed, proxy_error, Body, Caller};
use crate::core::serve::{HttpMode, Server};
use crate::metrics::{Direction, ErrorKind};
use crate::outbound::plan::Destination;
use crate::outbound::{request_authority, Outbound};
pub use route::GatewayRoute;

/// Serves the gateway listener until the task is dropped.
pub fn serve(
    listener: TcpListener,
    routes: Vec<GatewayRoute>,
    outbound: Arc<Outbound>,
    server: Server,
) -> impl Future<Output = ()> {
    let routes: Arc<[GatewayRoute]> = routes.into();
    server.serve("gateway", listener, move |tcp, _, conn| {
        let (routes, outbound) = (routes.clone(), outbound.clone());
        async move {
            conn.serve_http(tcp, HttpMode::FirstHop, move |req| {
                let (routes, outbound) = (routes.clone(), outbound.clone());
                async move { handle(&routes, &outbound, req).await }
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
    let metrics = outbound.metrics();
    metrics.error(Direction::Gateway, kind);
    metrics.request(
        Direction::Gateway,
        crate::outbound::UNKNOWN_SERVICE_LABEL,
        status.as_u16(),
    );
    proxy_error(status, kind, detail, caller)
}

async fn handle(
    routes: &[GatewayRoute],
    outbound: &Arc<Outbound>,
    mut req: Request<Incoming>,
) -> Response<Body> {
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
