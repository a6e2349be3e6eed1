//! What the proxy records about each HTTP request it serves, in one place:
//! the request counter and latency histogram, the gRPC status, the trace
//! span (client side for the outbound listener, server side for the mesh
//! port and the gateway) and the access log line.
//!
//! [`crate::core::serve`] calls [`Observer::start`] when a request arrives
//! and [`Started::finish`] with its response; in between, the handler notes
//! on the response what only it knows (the service, the route, the caller,
//! the endpoint) as a [`Served`] extension. Counting and latency are taken
//! when the response headers leave; the span and the access line end with
//! the response body, so they carry its size and a gRPC trailer's status.

pub mod access_log;
mod body;
pub mod propagate;
mod span;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, Request, Response};

use crate::core::http::Body;
use crate::metrics::{Direction, ProxyMetrics, RequestKey};
pub use access_log::AccessLog;
pub use span::{Tracing, TunnelEnd, TunnelSpan};

/// The label of a request whose service is unknown (not a mesh name, or a
/// refusal before routing).
pub const UNKNOWN_SERVICE: &str = crate::outbound::UNKNOWN_SERVICE_LABEL;

/// What a handler notes on its response for the telemetry of the request.
#[derive(Clone, Debug, Default)]
pub struct Served {
    /// Outbound and gateway: `<name>.<namespace>` of the service called.
    pub service: Option<String>,
    /// Inbound: the app port the request went to.
    pub app_port: Option<u16>,
    /// `<namespace>/<name>` of the route that matched.
    pub route: Option<String>,
    /// Inbound: the caller's SPIFFE ID.
    pub peer: Option<Arc<str>>,
    /// The endpoint (mesh address) that answered.
    pub endpoint: Option<SocketAddr>,
    /// Tries after the first.
    pub retries: u32,
}

/// The response's [`Served`], created empty if the handler noted nothing.
pub fn served<B>(res: &mut Response<B>) -> &mut Served {
    res.extensions_mut().get_or_insert_default::<Served>()
}

/// Shared by every listener of the proxy.
pub struct Observer {
    metrics: ProxyMetrics,
    tracing: Option<Tracing>,
    access_log: Option<AccessLog>,
}

impl Observer {
    pub fn new(
        metrics: ProxyMetrics,
        tracing: Option<Tracing>,
        access_log: Option<AccessLog>,
    ) -> Arc<Self> {
        Arc::new(Self {
            metrics,
            tracing,
            access_log,
        })
    }

    /// Spans of TCP tunnels are made by their handlers, which know when a
    /// tunnel ends.
    pub fn tracing(&self) -> Option<&Tracing> {
        self.tracing.as_ref()
    }

    /// The listener a request came in on, as a metric direction; None for
    /// listeners whose requests are not the mesh's traffic.
    pub fn direction_of(listener: &str) -> Option<Direction> {
        match listener {
            "inbound" => Some(Direction::Inbound),
            "outbound" | "transparent_outbound" => Some(Direction::Outbound),
            "gateway" | "gateway_https" => Some(Direction::Gateway),
            _ => None,
        }
    }

    /// A request arrives: the clock starts and, when the trace is
    /// recorded, a span opens and the request's trace headers name it as
    /// the parent of the next hop.
    pub fn start<B>(
        self: &Arc<Self>,
        direction: Direction,
        req: &mut Request<B>,
        client: SocketAddr,
    ) -> Started {
        // A CONNECT's span is its tunnel's, for the tunnel's whole life
        // (see `TunnelSpan`), not this exchange's.
        let span = self
            .tracing
            .as_ref()
            .filter(|_| req.method() != http::Method::CONNECT)
            .and_then(|t| t.start(direction, req, client));
        let request = self.access_log.as_ref().map(|_| RequestLine::of(req));
        Started {
            observer: self.clone(),
            direction,
            at: Instant::now(),
            span,
            request,
        }
    }
}

/// The request line and host, kept for the access log.
#[derive(Debug)]
pub(crate) struct RequestLine {
    pub method: http::Method,
    pub authority: String,
    pub path: String,
    pub user_agent: Option<String>,
}

impl RequestLine {
    fn of<B>(req: &Request<B>) -> Self {
        Self {
            method: req.method().clone(),
            authority: crate::outbound::request_authority(req).unwrap_or_default(),
            path: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
            user_agent: req
                .headers()
                .get(http::header::USER_AGENT)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string),
        }
    }
}

/// A request on its way.
pub struct Started {
    observer: Arc<Observer>,
    direction: Direction,
    at: Instant,
    span: Option<span::RequestSpan>,
    request: Option<RequestLine>,
}

/// `app:<port>` without a heap allocation.
fn app_label(port: Option<u16>, buf: &mut [u8; 16]) -> &str {
    use std::io::Write as _;
    let Some(port) = port else {
        return "app:unknown";
    };
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    if write!(cursor, "app:{port}").is_err() {
        return "app:unknown";
    }
    let len = cursor.position() as usize;
    std::str::from_utf8(&buf[..len]).unwrap_or("app:unknown")
}

/// The `grpc-status` of a header or trailer map.
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Started {
    /// The response headers are ready: count the request and its latency,
    /// and let the body carry the span and the access line to its end.
    pub fn finish(self, mut res: Response<Body>) -> Response<Body> {
        let served = res.extensions_mut().remove::<Served>().unwrap_or_default();
        let code = res.status().as_u16();
        let mut buf = [0u8; 16];
        let service = match (self.direction, served.service.as_deref()) {
            (Direction::Inbound, _) => app_label(served.app_port, &mut buf),
            (_, Some(s)) => s,
            (_, None) => UNKNOWN_SERVICE,
        };
        let handles = self.observer.metrics.requests().handles(RequestKey {
            direction: self.direction,
            service,
            route: served.route.as_deref().unwrap_or(""),
            peer: served.peer.as_deref().unwrap_or(""),
            code,
        });
        handles.requests.inc();
        handles.duration.observe(self.at.elapsed().as_secs_f64());
        let trailers_only = grpc_status(res.headers());
        if let Some(status) = trailers_only {
            handles.grpc_status(status);
        }
        let grpc = res
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        let awaits_trailers = grpc && trailers_only.is_none();
        if self.span.is_none() && self.request.is_none() && !awaits_trailers {
            return res;
        }
        let service = service.to_string();
        let end = body::End {
            observer: self.observer,
            direction: self.direction,
            at: self.at,
            code,
            service,
            served,
            grpc_status: trailers_only,
            grpc_handles: awaits_trailers.then_some(handles),
            span: self.span,
            request: self.request,
        };
        res.map(|b| body::observed(b, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_labels_are_written_without_allocating() {
        let mut buf = [0u8; 16];
        assert_eq!(app_label(Some(8080), &mut buf), "app:8080");
        assert_eq!(app_label(Some(65535), &mut buf), "app:65535");
        assert_eq!(app_label(None, &mut buf), "app:unknown");
    }

    #[test]
    fn listeners_map_to_directions() {
        assert_eq!(Observer::direction_of("inbound"), Some(Direction::Inbound));
        assert_eq!(
            Observer::direction_of("transparent_outbound"),
            Some(Direction::Outbound)
        );
        assert_eq!(Observer::direction_of("gateway"), Some(Direction::Gateway));
        assert_eq!(Observer::direction_of("admin"), None);
    }
}
