//! The proxy's own spans: a client span per request on the outbound side,
//! a server span per request on the mesh port and at the gateway, with
//! the OpenTelemetry HTTP (and RPC, for gRPC) attribute names and the
//! mesh's own under `mycel.*`.
//!
//! A caller's sampling decision is always followed; a request with no
//! trace starts one at the configured ratio (by default only at the
//! gateway). A request that is not recorded costs one header lookup.

use std::net::SocketAddr;

use http::Request;
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

    pub(super) fn start<B>(
        &self,
        direction: Direction,
        req: &mut Request<B>,
        client: SocketAddr,
    ) -> Option<RequestSpan> {
        let (parent, formats) = match propagate::extract(req.headers()) {
            Incoming::NotSampled => return None,
            Incoming::Sampled { parent, formats } => {
                (Context::new().with_remote_span_context(parent), formats)
            }
            Incoming::None => {
                if self.root_ratio <= 0.0 || rand::random::<f64>() >= self.root_ratio {
                    return None;
                }
                (Context::new(), Formats::NEW_TRACE)
            }
        };
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

/// The statuses that are a server's fault; for a client every non-OK one.
fn grpc_failed(kind: &SpanKind, status: u32) -> bool {
    match kind {
        SpanKind::Client => status != 0,
        _ => matches!(status, 2 | 4 | 12 | 13 | 14 | 15),
    }
}
