//! Gateway mode: a plaintext HTTP listener (HTTP/1.1 and h2c) that routes by
//! host and path prefix to mesh services, through the same outbound pool
//! and identity checks as a sidecar.

pub mod route;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

pub use crate::config::GatewayRoute;
use crate::metrics::{Direction, ErrorKind};
use crate::outbound::http::{boxed, text, Body};
use crate::outbound::plan::Destination;
use crate::outbound::{request_authority, Outbound};

/// Serves the gateway listener until the task is dropped.
pub fn serve(
    listener: TcpListener,
    routes: Vec<GatewayRoute>,
    outbound: Arc<Outbound>,
) -> impl Future<Output = ()> {
    let routes: Arc<[GatewayRoute]> = routes.into();
    async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "gateway: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let routes = routes.clone();
            let outbound = outbound.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let routes = routes.clone();
                    let outbound = outbound.clone();
                    async move { Ok::<_, Infallible>(handle(&routes, &outbound, req).await) }
                });
                if let Err(e) = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await
                {
                    tracing::debug!(%remote, error = %e, "gateway: connection ended with error");
                }
            });
        }
    }
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
