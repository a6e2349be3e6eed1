//! One request on the mesh port: check the app port, rewrite the mesh
//! headers, forward to the app (or open a tunnel for CONNECT).

use std::net::IpAddr;
use std::sync::Arc;

use mycel_api::authz::{Attributes, HttpAttributes};
use mycel_api::spiffe::SpiffeId;

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::app::{AppClient, AppError};
use super::authorize::{Authorizer, Denied};
use super::target::{connect_target, http_target};
use crate::core::http::{
    boxed, empty, proxy_error, strip_hop_by_hop, Body, Caller, APP_PROTOCOL, DST_PORT, PEER_ID,
};
use crate::core::serve::header_list_bytes;
use crate::metrics::{Direction, ErrorKind, Flow, ProxyMetrics};
use crate::observe::{Observer, TunnelEnd, TunnelSpan};

/// What every request on one connection shares.
pub(super) struct Conn {
    pub peer: Arc<str>,
    /// The identity proved in the handshake, the only one authorization
    /// looks at.
    pub peer_id: SpiffeId,
    pub source_ip: IpAddr,
    pub authz: Arc<Authorizer>,
    pub app: AppClient,
    pub app_ports: Arc<[u16]>,
    pub metrics: ProxyMetrics,
    /// The largest app response header list passed on (`--max-header-bytes`).
    pub max_header_bytes: usize,
    /// For the spans of tunnels.
    pub observer: Option<Arc<Observer>>,
}

pub(super) async fn handle(conn: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    let (mut res, port) = if req.method() == Method::CONNECT {
        tunnel(&conn, req).await
    } else {
        forward(&conn, req).await
    };
    let code = res.status().as_u16();
    conn.metrics.inbound_request(&conn.peer, code);
    let served = crate::observe::served(&mut res);
    served.app_port = port;
    served.peer = Some(conn.peer.clone());
    res
}

fn service_label(port: Option<u16>) -> String {
    port.map_or_else(|| "app:unknown".to_string(), |p| format!("app:{p}"))
}

async fn forward(conn: &Conn, req: Request<Incoming>) -> (Response<Body>, Option<u16>) {
    let caller = Caller::of(req.headers(), false);
    let target = match http_target(req.headers(), &conn.app_ports) {
        Ok(t) => t,
        Err(e) => return (refuse(conn, &e, caller), None),
    };
    let label = Some(target.port);
    if let Err(denied) = authorize_http(conn, target.port, &req) {
        return (forbidden(conn, &denied, caller), label);
    }
    let (mut parts, body) = req.into_parts();
    parts.headers.remove(DST_PORT);
    parts.headers.remove(APP_PROTOCOL);
    parts.headers.remove(PEER_ID);
    strip_hop_by_hop(&mut parts.headers);
    // The peer ID was verified in the handshake; SPIFFE IDs are ASCII.
    if let Ok(v) = HeaderValue::from_str(&conn.peer) {
        parts.headers.insert(PEER_ID, v);
    }
    let req = Request::from_parts(parts, boxed(body));
    match conn.app.send(req, target.port, target.protocol).await {
        Ok(res) => {
            let (mut parts, body) = res.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            if let Err(e) = check_response_headers(&parts.headers, conn.max_header_bytes) {
                tracing::warn!(peer = %conn.peer, port = target.port, error = %e, "inbound: app response refused");
                conn.metrics
                    .error(Direction::Inbound, ErrorKind::ResponseHeaderTooLarge);
                let res = proxy_error(
                    StatusCode::BAD_GATEWAY,
                    ErrorKind::ResponseHeaderTooLarge,
                    e,
                    caller,
                );
                return (res, label);
            }
            (Response::from_parts(parts, boxed(body)), label)
        }
        Err(e) => {
            let kind = match e {
                AppError::Connect { .. } => ErrorKind::AppConnect,
                AppError::Request { .. } | AppError::Uri { .. } => ErrorKind::Upstream,
            };
            tracing::warn!(peer = %conn.peer, port = target.port, error = %e, "inbound: app request failed");
            conn.metrics.error(Direction::Inbound, kind);
            (proxy_error(StatusCode::BAD_GATEWAY, kind, e, caller), label)
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the app's response headers are {size} bytes; the mesh carries at most {limit} (--max-header-bytes)")]
struct ResponseHeaderTooLarge {
    size: usize,
    limit: usize,
}

/// The same cap as on requests: a larger header list could exceed what the
/// caller's sidecar accepts, and a peer refusing a header block on the
/// shared HTTP/2 connection may end it for every caller on it.
fn check_response_headers(headers: &HeaderMap, limit: usize) -> Result<(), ResponseHeaderTooLarge> {
    let size = header_list_bytes(headers);
    if size > limit {
        return Err(ResponseHeaderTooLarge { size, limit });
    }
    Ok(())
}

fn refuse(conn: &Conn, e: &super::target::TargetError, caller: Caller) -> Response<Body> {
    let kind = match e {
        super::target::TargetError::Refused(_) => ErrorKind::PortRefused,
        _ => ErrorKind::BadRequest,
    };
    tracing::warn!(peer = %conn.peer, error = %e, "inbound: request refused");
    conn.metrics.error(Direction::Inbound, kind);
    proxy_error(e.status(), kind, e, caller)
}

fn authorize_http(conn: &Conn, port: u16, req: &Request<Incoming>) -> Result<(), Denied> {
    // The client sidecar sends the original authority; a request without
    // one has no host to match.
    let host = req
        .uri()
        .host()
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host))
        })
        .unwrap_or_default();
    conn.authz.check(&Attributes {
        peer: Some(&conn.peer_id),
        source_ip: Some(conn.source_ip),
        port,
        http: Some(HttpAttributes {
            method: req.method().as_str(),
            path: req.uri().path(),
            host,
            headers: req.headers(),
            claims: None,
        }),
    })
}

fn forbidden(conn: &Conn, denied: &Denied, caller: Caller) -> Response<Body> {
    conn.metrics.error(Direction::Inbound, ErrorKind::Forbidden);
    proxy_error(StatusCode::FORBIDDEN, ErrorKind::Forbidden, denied, caller)
}

/// HTTP/2 CONNECT: the stream becomes a byte pipe to the app port.
async fn tunnel(conn: &Conn, mut req: Request<Incoming>) -> (Response<Body>, Option<u16>) {
    let caller = Caller::of(req.headers(), false);
    let authority = req.uri().authority().map(|a| a.as_str().to_string());
    let port = match connect_target(req.method(), authority.as_deref(), &conn.app_ports) {
        Ok(p) => p,
        Err(e) => return (refuse(conn, &e, caller), None),
    };
    let label = Some(port);
    let span = conn
        .observer
        .as_ref()
        .and_then(|o| o.tracing())
        .and_then(|t| t.accept_tunnel(req.headers(), port, &conn.peer, conn.source_ip));
    let failed = |span: Option<TunnelSpan>, reason: &dyn std::fmt::Display| {
        if let Some(span) = span {
            span.end(TunnelEnd::Failed(reason));
        }
    };
    let attrs = Attributes {
        peer: Some(&conn.peer_id),
        source_ip: Some(conn.source_ip),
        port,
        http: None,
    };
    // Checked before the app is dialled: a denied tunnel never opens a
    // connection to the app.
    if let Err(denied) = conn.authz.check(&attrs) {
        failed(span, &denied);
        return (forbidden(conn, &denied, caller), label);
    }
    let addr = conn.app.addr(port);
    // Connect before answering, so the client learns of a dead app as a 502
    // rather than as a tunnel that closes at once.
    let mut app = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(peer = %conn.peer, %addr, error = %e, "inbound: tunnel to app failed");
            conn.metrics
                .error(Direction::Inbound, ErrorKind::AppConnect);
            let reason = format!("app unreachable at {addr}: {e}");
            failed(span, &reason);
            return (
                proxy_error(
                    StatusCode::BAD_GATEWAY,
                    ErrorKind::AppConnect,
                    reason,
                    caller,
                ),
                label,
            );
        }
    };
    let _ = app.set_nodelay(true);
    let upgrade = hyper::upgrade::on(&mut req);
    let metrics = conn.metrics.clone();
    let peer = conn.peer.clone();
    let service = service_label(label);
    let opened = std::time::Instant::now();
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "inbound: tunnel upgrade failed");
                failed(span, &e);
                return;
            }
        };
        let mut client = TokioIo::new(upgraded);
        let end = match tokio::io::copy_bidirectional(&mut client, &mut app).await {
            Ok((to_app, from_app)) => {
                metrics.tunnel_bytes(Direction::Inbound, &service, Flow::ClientToServer, to_app);
                metrics.tunnel_bytes(Direction::Inbound, &service, Flow::ServerToClient, from_app);
                Ok((to_app, from_app))
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "inbound: tunnel ended with error");
                Err(e)
            }
        };
        metrics.tcp_connection(Direction::Inbound, &service, opened.elapsed());
        if let Some(span) = span {
            span.end_piped(&end);
        }
    });
    (Response::new(empty()), label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_header_list_over_the_cap_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert("x-big", HeaderValue::from_static("0123456789"));
        // "x-big" + 10 value bytes + 32 per field.
        assert!(check_response_headers(&headers, 47).is_ok());
        let e = check_response_headers(&headers, 46).unwrap_err();
        assert_eq!((e.size, e.limit), (47, 46));
        assert!(e.to_string().contains("--max-header-bytes"), "{e}");
    }
}
