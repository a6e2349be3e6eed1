//! The proxy's own spans: a client span per request on the outbound side,
//! a server span per request on the mesh port and at the gateway, with
//! the OpenTelemetry HTTP (and RPC, for gRPC) attribute names and the
//! mesh's own under `mycel.*`.
//!
//! A TCP tunnel (an opaque or server-first port) gets one span for its
//! whole life instead: a client span in the sidecar that opened it, a
//! server span in the sidecar that pipes it to the app, linked through the
//! CONNECT request's `traceparent`.
//!
//! A caller's sampling decision is always followed; a request with no
//! trace starts one at the configured ratio (by default only at the
//! gateway). A request that is not recorded costs one header lookup.

use std::net::SocketAddr;

use http::{HeaderMap, Request};
use mycel_telemetry::traces::{SdkSpan, SdkTracer};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};

use super::propagate::{self, Formats, Incoming};
use super::Served;
use crate::metrics::Direction;

/// The tracer and when to start a trace.
pub struct Tracing {
    tracer: SdkTracer,
    root_ratio: f64,
}

/// Whether a span that would be recorded is worth making: not while export
/// is paused (a dead collector), when the trace context passes through
/// untouched and the span is only counted.
fn exporting() -> bool {
    if mycel_telemetry::traces::accepting() {
        return true;
    }
    mycel_telemetry::traces::skipped();
    false
}

/// A recorded request's span, ended with its response.
pub struct RequestSpan {
    span: SdkSpan,
    kind: SpanKind,
    grpc: bool,
}

impl Tracing {
    pub fn new(tracer: SdkTracer, root_ratio: f64) -> Self {
        Self { tracer, root_ratio }
    }

    /// Whether a request without a caller's trace starts one.
    fn starts_root(&self) -> bool {
        self.root_ratio > 0.0 && rand::random::<f64>() < self.root_ratio
    }

    /// The caller's context of a request, or a new trace's when this
    /// proxy starts one; None when nothing is recorded.
    fn parent_of(&self, headers: &HeaderMap) -> Option<(Context, Formats)> {
        let parent = match propagate::extract(headers) {
            Incoming::NotSampled => None,
            Incoming::Sampled { parent, formats } => {
                Some((Context::new().with_remote_span_context(parent), formats))
            }
            Incoming::None => self
                .starts_root()
                .then(|| (Context::new(), Formats::NEW_TRACE)),
        }?;
        exporting().then_some(parent)
    }

    /// An outbound tunnel to `service` opens for the app's connection from
    /// `client`: a client span, the root of a new trace at the configured
    /// ratio (a TCP stream carries no trace context of its own).
    pub fn start_tunnel(&self, service: &str, client: SocketAddr) -> Option<TunnelSpan> {
        if !self.starts_root() || !exporting() {
            return None;
        }
        Some(self.tunnel_span(
            SpanKind::Client,
            &Context::new(),
            service,
            vec![KeyValue::new("client.address", client.ip().to_string())],
        ))
    }

    /// An inbound CONNECT from another sidecar becomes a tunnel to app
    /// port `port`: a server span under the caller's tunnel span.
    pub fn accept_tunnel(
        &self,
        headers: &HeaderMap,
        port: u16,
        peer: &str,
        client: std::net::IpAddr,
    ) -> Option<TunnelSpan> {
        let (parent, _) = self.parent_of(headers)?;
        let service = format!("app:{port}");
        Some(self.tunnel_span(
            SpanKind::Server,
            &parent,
            &service,
            vec![
                KeyValue::new("client.address", client.to_string()),
                KeyValue::new("server.port", i64::from(port)),
                KeyValue::new("mycel.peer.spiffe_id", peer.to_string()),
            ],
        ))
    }

    fn tunnel_span(
        &self,
        kind: SpanKind,
        parent: &Context,
        service: &str,
        mut attributes: Vec<KeyValue>,
    ) -> TunnelSpan {
        let direction = match kind {
            SpanKind::Client => Direction::Outbound,
            _ => Direction::Inbound,
        };
        attributes.extend([
            KeyValue::new("network.transport", "tcp"),
            KeyValue::new("mycel.direction", direction.as_str()),
            KeyValue::new("mycel.service", service.to_string()),
        ]);
        let span = self
            .tracer
            .span_builder(format!("tcp {service}"))
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, parent);
        TunnelSpan { span }
    }

    pub(super) fn start<B>(
        &self,
        direction: Direction,
        req: &mut Request<B>,
        client: SocketAddr,
    ) -> Option<RequestSpan> {
        let (parent, formats) = self.parent_of(req.headers())?;
        let kind = match direction {
            Direction::Outbound => SpanKind::Client,
            Direction::Inbound | Direction::Gateway => SpanKind::Server,
        };
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        let path = req.uri().path();
        let name = if grpc {
            path.trim_start_matches('/').to_string()
        } else {
            req.method().as_str().to_string()
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", req.method().as_str().to_string()),
            KeyValue::new("url.path", path.to_string()),
            KeyValue::new("network.protocol.version", protocol_version(req.version())),
            KeyValue::new("mycel.direction", direction.as_str()),
        ];
        if let Some(host) = req
            .uri()
            .host()
            .or_else(|| req.headers().get(http::header::HOST)?.to_str().ok())
        {
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            attributes.push(KeyValue::new("server.address", host.to_string()));
        }
        if kind == SpanKind::Server {
            attributes.push(KeyValue::new("client.address", client.ip().to_string()));
        }
        if grpc {
            attributes.push(KeyValue::new("rpc.system", "grpc"));
            if let Some((service, method)) = path.trim_start_matches('/').split_once('/') {
                attributes.push(KeyValue::new("rpc.service", service.to_string()));
                attributes.push(KeyValue::new("rpc.method", method.to_string()));
            }
        }
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind.clone())
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        propagate::inject(req.headers_mut(), span.span_context(), formats);
        Some(RequestSpan { span, kind, grpc })
    }
}

fn protocol_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

impl RequestSpan {
    /// The span's ids, for the access log.
    pub fn ids(&self) -> (String, String) {
        let cx = self.span.span_context();
        (cx.trace_id().to_string(), cx.span_id().to_string())
    }

    pub fn end(
        mut self,
        code: u16,
        service: &str,
        served: &Served,
        grpc_status: Option<u32>,
        bytes: u64,
    ) {
        let span = &mut self.span;
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
        span.set_attribute(KeyValue::new("mycel.service", service.to_string()));
        span.set_attribute(KeyValue::new("http.response.body.size", bytes as i64));
        if let Some(route) = &served.route {
            span.set_attribute(KeyValue::new("mycel.route", route.clone()));
        }
        if let Some(peer) = &served.peer {
            span.set_attribute(KeyValue::new("mycel.peer.spiffe_id", peer.to_string()));
        }
        if let Some(endpoint) = served.endpoint {
            span.set_attribute(KeyValue::new("mycel.endpoint", endpoint.to_string()));
            span.set_attribute(KeyValue::new("server.port", i64::from(endpoint.port())));
        }
        if served.retries > 0 {
            span.set_attribute(KeyValue::new("mycel.retries", i64::from(served.retries)));
        }
        let failed = match (self.grpc, grpc_status) {
            (true, Some(status)) => {
                span.set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(status)));
                grpc_failed(&self.kind, status)
            }
            _ => code >= 500 || (self.kind == SpanKind::Client && code >= 400),
        };
        if failed {
            span.set_status(Status::error(match grpc_status {
                Some(s) if self.grpc => format!("grpc-status {s}"),
                _ => format!("HTTP {code}"),
            }));
        }
        span.end();
    }
}

/// A TCP tunnel's span, open for as long as the tunnel is.
pub struct TunnelSpan {
    span: SdkSpan,
}

/// How a tunnel ended.
pub enum TunnelEnd<'a> {
    /// Piped until both sides closed: bytes from the client toward the
    /// server, and back.
    Closed { to_server: u64, to_client: u64 },
    /// Never opened, or broken while piping.
    Failed(&'a dyn std::fmt::Display),
}

impl TunnelSpan {
    /// Names this span as the parent of the next sidecar's, on the CONNECT
    /// request that opens the tunnel there.
    pub fn inject(&self, headers: &mut HeaderMap) {
        let formats = Formats {
            w3c: true,
            b3_single: false,
            b3_multi: false,
        };
        propagate::inject(headers, self.span.span_context(), formats);
    }

    /// The endpoint (mesh address) the tunnel was opened to.
    pub fn set_endpoint(&mut self, endpoint: SocketAddr) {
        self.span
            .set_attribute(KeyValue::new("mycel.endpoint", endpoint.to_string()));
        self.span
            .set_attribute(KeyValue::new("server.port", i64::from(endpoint.port())));
    }

    /// Ends the span with what piping the tunnel gave: the bytes each way
    /// (client to server first), or the error that broke it.
    pub fn end_piped(self, piped: &std::io::Result<(u64, u64)>) {
        self.end(match piped {
            Ok((to_server, to_client)) => TunnelEnd::Closed {
                to_server: *to_server,
                to_client: *to_client,
            },
            Err(e) => TunnelEnd::Failed(e),
        });
    }

    pub fn end(mut self, end: TunnelEnd<'_>) {
        match end {
            TunnelEnd::Closed {
                to_server,
                to_client,
            } => {
                self.span
                    .set_attribute(KeyValue::new("mycel.tcp.bytes_to_server", to_server as i64));
                self.span
                    .set_attribute(KeyValue::new("mycel.tcp.bytes_to_client", to_client as i64));
            }
            TunnelEnd::Failed(reason) => self.span.set_status(Status::error(reason.to_string())),
        }
        self.span.end();
    }
}

/// The statuses that are a server's fault; for a client every non-OK one.
fn grpc_failed(kind: &SpanKind, status: u32) -> bool {
    match kind {
        SpanKind::Client => status != 0,
        _ => matches!(status, 2 | 4 | 12 | 13 | 14 | 15),
    }
}
