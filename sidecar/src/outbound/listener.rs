//! The explicit outbound HTTP proxy apps call on loopback: HTTP/1.1 (origin
//! or absolute form) and HTTP/2 with prior knowledge (gRPC).

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use super::plan::destination;
use super::Outbound;
use crate::core::http::{boxed, proxy_error, Body, Caller};
use crate::core::serve::{HttpMode, Server};
use crate::metrics::{Direction, ErrorKind};

/// The authority the app addressed: the request target's (absolute form,
/// HTTP/2 `:authority`) or else the `Host` header.
pub fn request_authority<B>(req: &Request<B>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    req.headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}

pub(super) async fn serve_http(outbound: Arc<Outbound>, listener: TcpListener, server: Server) {
    server
        .serve("outbound", listener, move |tcp, _, conn| {
            let outbound = outbound.clone();
            async move {
                conn.serve_http(tcp, HttpMode::FirstHop, move |req| {
                    let outbound = outbound.clone();
                    async move { handle(&outbound, req).await }
                })
                .await;
            }
        })
        .await;
}

async fn handle(outbound: &Arc<Outbound>, req: Request<Incoming>) -> Response<Body> {
    let caller = Caller::of(req.headers(), false);
    if req.method() == http::Method::CONNECT {
        tracing::warn!(uri = %req.uri(), "outbound: CONNECT refused on the HTTP proxy");
        outbound
            .metrics
            .error(Direction::Outbound, ErrorKind::MethodNotAllowed);
        return proxy_error(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::MethodNotAllowed,
            "CONNECT is not supported by the outbound HTTP proxy; use a TCP upstream port",
            caller,
        );
    }
    let Some(authority) = request_authority(&req) else {
        tracing::warn!("outbound: request without host");
        outbound
            .metrics
            .error(Direction::Outbound, ErrorKind::BadRequest);
        return proxy_error(
            StatusCode::BAD_REQUEST,
            ErrorKind::BadRequest,
            "request names no host (no Host header, no absolute URI)",
            caller,
        );
    };
    let dest = match destination(&authority, &outbound.namespace, &outbound.cluster_domain) {
        Ok(d) => d,
        Err(e) => {
            let e = super::forward::ForwardError::Plan(e);
            // The host is the caller's choice: never a metric label (the
            // request is counted as `unknown`).
            return outbound.fail(Direction::Outbound, &authority, &e, caller);
        }
    };
    let (parts, body) = req.into_parts();
    let req = Request::from_parts(parts, boxed(body));
    outbound
        .forward(Direction::Outbound, &dest, &authority, req)
        .await
}
