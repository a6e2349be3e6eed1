//! A small OTLP trace receiver: the collector's gRPC service (the
//! `opentelemetry-proto` server types) and its HTTP/protobuf endpoint
//! (`POST /v1/traces`), keeping the spans it is sent in memory (the latest
//! [`KEEP`]), each with the `service.name` of the resource that sent it.
//! The local demo serves them as trace trees (`GET /traces`); the tests
//! read them directly. Not a collector: no persistence, no forwarding.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use tokio::net::TcpListener;

/// Spans kept at most; older ones are forgotten first.
pub const KEEP: usize = 20_000;
/// Connections served at once; more wait in the kernel's backlog, so a
/// flood of idle clients costs bounded memory (each is cut after the
/// header-read timeout).
pub const MAX_CONNECTIONS: usize = 64;
/// The largest export request read (the exporters send 512-span batches).
const MAX_BODY: usize = 16 << 20;

/// One received span, flattened.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// 1 internal, 2 server, 3 client (OTLP's SpanKind).
    pub kind: i32,
    pub attributes: Vec<(String, String)>,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What was received, shared with the servers.
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<VecDeque<ReceivedSpan>>>);

impl Received {
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.0
            .lock()
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn add(&self, req: ExportTraceServiceRequest) {
        let mut out = Vec::new();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| {
                    r.attributes
                        .iter()
                        .find(|kv| kv.key == "service.name")
                        .map(value_text)
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(ReceivedSpan {
                        service: service.clone(),
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        kind: s.kind,
                        attributes: s
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), value_text(kv)))
                            .collect(),
                        status: s.status.map_or(0, |st| st.code),
                        start_unix_nanos: s.start_time_unix_nano,
                        end_unix_nanos: s.end_time_unix_nano,
                    });
                }
            }
        }
        if let Ok(mut v) = self.0.lock() {
            v.extend(out);
            while v.len() > KEEP {
                v.pop_front();
            }
        }
    }

    /// The latest `n` traces as indented trees (root first, children by
    /// start time), newest trace first: what the demo shows.
    pub fn render(&self, n: usize) -> String {
        let spans = self.spans();
        let mut traces: BTreeMap<&str, Vec<&ReceivedSpan>> = BTreeMap::new();
        for s in &spans {
            traces.entry(s.trace_id.as_str()).or_default().push(s);
        }
        let mut order: Vec<(&str, u64)> = traces
            .iter()
            .map(|(id, spans)| {
                (
                    *id,
                    spans.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0),
                )
            })
            .collect();
        order.sort_by_key(|t| std::cmp::Reverse(t.1));
        let mut out = String::new();
        if order.is_empty() {
            out.push_str("no traces yet: send a request through the gateway\n");
        }
        for (id, _) in order.into_iter().take(n) {
            let spans = &traces[id];
            let _ = writeln!(out, "trace {id} ({} spans)", spans.len());
            let ids: std::collections::HashSet<&str> =
                spans.iter().map(|s| s.span_id.as_str()).collect();
            let mut roots: Vec<&ReceivedSpan> = spans
                .iter()
                .copied()
                .filter(|s| s.parent_span_id.is_empty() || !ids.contains(s.parent_span_id.as_str()))
                .collect();
            roots.sort_by_key(|s| s.start_unix_nanos);
            for root in roots {
                render_tree(&mut out, spans, root, 1);
            }
            out.push('\n');
        }
        out
    }

    /// Waits until `done` holds for what was received, or `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) || tokio::time::Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn render_tree(out: &mut String, spans: &[&ReceivedSpan], span: &ReceivedSpan, depth: usize) {
    let kind = match span.kind {
        2 => "server",
        3 => "client",
        _ => "internal",
    };
    let micros = span.end_unix_nanos.saturating_sub(span.start_unix_nanos) / 1000;
    let status = span.attr("http.response.status_code").unwrap_or("-");
    let _ = writeln!(
        out,
        "{:indent$}{} {} [{kind}] {status} {micros}us",
        "",
        span.service,
        span.name,
        indent = depth * 2
    );
    if depth > 32 {
        return;
    }
    let mut children: Vec<&ReceivedSpan> = spans
        .iter()
        .copied()
        .filter(|s| s.parent_span_id == span.span_id)
        .collect();
    children.sort_by_key(|s| s.start_unix_nanos);
    for c in children {
        render_tree(out, spans, c, depth + 1);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value_text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

struct Service(Received);

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A receiver serving OTLP over gRPC on `listener`.
pub fn grpc_receiver(listener: TcpListener) -> Received {
    let received = Received::default();
    let svc = TraceServiceServer::new(Service(received.clone()));
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await;
    });
    received
}

/// A receiver serving OTLP over HTTP/protobuf (`POST /v1/traces`) on
/// `listener`, and the traces it holds as text trees (`GET /traces`).
pub fn http_receiver(listener: TcpListener) -> Received {
    let received = Received::default();
    let store = received.clone();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    // Out of file descriptors and the like: wait, never
                    // stop serving.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let store = store.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let store = store.clone();
                    async move {
                        if req.method() == hyper::Method::GET && req.uri().path() == "/traces" {
                            let mut res =
                                hyper::Response::new(Full::new(Bytes::from(store.render(20))));
                            res.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static(
                                    "text/plain; charset=utf-8",
                                ),
                            );
                            return Ok::<_, std::convert::Infallible>(res);
                        }
                        let ok =
                            req.method() == hyper::Method::POST && req.uri().path() == "/v1/traces";
                        let body = Limited::new(req.into_body(), MAX_BODY)
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let status = match ExportTraceServiceRequest::decode(body) {
                            Ok(r) if ok => {
                                store.add(r);
                                200
                            }
                            _ => 400,
                        };
                        let reply = ExportTraceServiceResponse::default().encode_to_vec();
                        let mut res = hyper::Response::new(Full::new(Bytes::from(reply)));
                        *res.status_mut() = hyper::StatusCode::from_u16(status)
                            .unwrap_or(hyper::StatusCode::BAD_REQUEST);
                        res.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/x-protobuf"),
                        );
                        Ok::<_, std::convert::Infallible>(res)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(tcp), svc);
                // A client that never finishes is cut off.
                let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
            });
        }
    });
    received
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_flood_of_idle_connections_is_capped_and_the_receiver_keeps_serving() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _received = http_receiver(listener);
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // Give the receiver time to take every idle connection.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut late = tokio::net::TcpStream::connect(addr).await.unwrap();
        late.write_all(b"GET /traces HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let early = tokio::time::timeout(Duration::from_millis(500), late.read(&mut buf)).await;
        assert!(early.is_err(), "served past the connection cap");
        // One idle client leaves: the waiting one is served.
        drop(idle.pop());
        let n = tokio::time::timeout(Duration::from_secs(5), late.read(&mut buf))
            .await
            .expect("not served after a slot freed")
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
}
