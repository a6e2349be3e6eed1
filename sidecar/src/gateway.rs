//! Gateway mode: a plaintext HTTP listener (HTTP/1.1 and h2c) that routes by
//! host and path prefix to mesh services, through the same outbound pool
//! and identity checks as a sidecar.

pub mod route;

use std::future::Future;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;

pub use crate::config::GatewayRoute;
use crate::core::serve::{HttpMode, Server};
use crate::metrics::{Direction, ErrorKind};
use crate::outbound::http::{boxed, text, Body};
use crate::outbound::plan::Destination;
use crate::outbound::{request_authority, Outbound};

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

async fn handle(
    routes: &[GatewayRoute],
    outbound: &Outbound,
    req: Request<Incoming>,
) -> Response<Body> {
    let authority = request_authority(&req).unwrap_or_default();
    let host = route::host_only(&authority).to_ascii_lowercase();
    let path = req.uri().path().to_string();
    let Some(route) = route::select(routes, &host, &path) else {
        tracing::info!(%host, %path, "gateway: no route");
        outbound
            .metrics()
            .error(Direction::Gateway, ErrorKind::NoRoute);
        outbound
            .metrics()
            .request(Direction::Gateway, "", StatusCode::NOT_FOUND.as_u16());
        return text(StatusCode::NOT_FOUND, format!("no route for {host}{path}"));
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
