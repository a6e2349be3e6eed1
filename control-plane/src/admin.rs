//! The admin HTTP server: `/live`, `/ready`, `/metrics`, `/debug/proxies`,
//! `/ca/status`, and `POST /ca/rotate` (local mode; from a loopback peer
//! only, since starting a rotation changes what the whole mesh trusts).
//! Routing is a pure function of the request and the shared state, so it
//! is tested without sockets.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::index::SharedIndex;
use crate::metrics::Metrics;
use crate::registry::ProxyRegistry;
use crate::rotation::{RotationDriver, RotationError, StartRequest};

mod explain;

/// What the admin endpoints read.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub registry: Arc<ProxyRegistry>,
    pub index: SharedIndex,
    /// Set once the CA is loaded and the gRPC port listens.
    pub ready: Arc<AtomicBool>,
    pub rotation: Option<RotationAdmin>,
    /// `--dashboard`: `/dashboard` and its data; `None` when off.
    pub dashboard: Option<Arc<crate::dashboard::Dashboard>>,
}

/// The trust-anchor rotation as the admin port sees it. `POST /ca/rotate`
/// starts one in local mode only: with `--ca-secret` the Secret is the
/// CA's source of truth, and the driver refuses, saying to change it.
pub struct RotationAdmin {
    pub driver: Arc<RotationDriver>,
}

/// Largest `POST /ca/rotate` body (three PEMs fit many times over).
const MAX_ROTATE_BODY: usize = 64 * 1024;

fn json(status: StatusCode, value: &impl serde::Serialize) -> Reply {
    match serde_json::to_string_pretty(value) {
        Ok(body) => Reply {
            status,
            content_type: "application/json",
            body: body + "\n",
        },
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode: {e}\n"),
        ),
    }
}

/// `POST /ca/rotate` with `body` (JSON [`StartRequest`], empty for a
/// generated CA), from a peer that `loopback` says is local.
pub fn rotate(state: &AdminState, loopback: bool, body: &[u8]) -> Reply {
    let Some(rotation) = &state.rotation else {
        return text(StatusCode::NOT_FOUND, "no CA rotation here\n");
    };
    if !loopback {
        return text(
            StatusCode::FORBIDDEN,
            "a rotation may only be started from the controller's own host (loopback)\n",
        );
    }
    let req: StartRequest = if body.iter().all(u8::is_ascii_whitespace) {
        StartRequest::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("bad request body: {e}\n")),
        }
    };
    match rotation.driver.start(req) {
        Ok(status) => json(StatusCode::OK, &status),
        Err(e @ RotationError::Busy(_)) => text(StatusCode::CONFLICT, format!("{e}\n")),
        Err(e @ (RotationError::Refused(_) | RotationError::Partial(_))) => {
            text(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
        Err(e @ RotationError::Store(_)) => {
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
        }
        Err(e @ RotationError::Shared(_)) => text(StatusCode::FORBIDDEN, format!("{e}\n")),
    }
}

/// A response before it becomes HTTP.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
}

fn text(status: StatusCode, body: impl Into<String>) -> Reply {
    Reply {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.into(),
    }
}

/// `/metrics`: OpenMetrics for a client whose `accept` asks for it, the
/// Prometheus text format otherwise.
pub fn metrics(state: &AdminState, accept: Option<&str>) -> Reply {
    {
        let ix = state.index.lock();
        state.metrics.index_services.set(ix.service_count() as i64);
        state
            .metrics
            .index_endpoints
            .set(ix.endpoint_count() as i64);
    }
    let (content_type, body) = mycel_api::exposition::negotiate(accept, state.metrics.encode());
    Reply {
        status: StatusCode::OK,
        content_type,
        body,
    }
}

/// Answers one admin request.
pub fn route(state: &AdminState, method: &Method, path: &str) -> Reply {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported\n");
    }
    match path {
        "/live" => text(StatusCode::OK, "ok\n"),
        "/ready" if state.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => metrics(state, None),
        "/ca/status" => match &state.rotation {
            Some(r) => json(StatusCode::OK, &r.driver.status()),
            None => text(StatusCode::NOT_FOUND, "no CA rotation here\n"),
        },
        "/debug/proxies" => match serde_json::to_string_pretty(&state.registry.snapshot()) {
            Ok(json) => Reply {
                status: StatusCode::OK,
                content_type: "application/json",
                body: json + "\n",
            },
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode: {e}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /live, /ready, /metrics, /debug/proxies, /ca/status\n",
        ),
    }
}

async fn read_body(body: Incoming) -> Result<Bytes, Reply> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, MAX_ROTATE_BODY);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body refused: {e}\n"),
        )),
    }
}

fn to_http(reply: Reply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
    *resp.status_mut() = reply.status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(reply.content_type),
    );
    resp
}

/// The admin port is for probes and operators, so its limits are small
/// and fixed: a slow or flooding client must not hold it.
#[derive(Clone, Copy, Debug)]
pub struct AdminLimits {
    /// A client must send a whole request head within this.
    pub header_read_timeout: Duration,
    /// Connections served at once; more wait in the kernel backlog.
    pub max_connections: usize,
}

impl Default for AdminLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 256,
        }
    }
}

/// Serves until `shutdown` turns true (or its sender is dropped).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    limits: AdminLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // Waiting for a slot before accepting leaves extra clients in the
        // backlog instead of holding a task and a socket for each.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Transient (e.g. out of file descriptors): back off briefly.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    let reply = if req.method() == Method::POST && req.uri().path() == "/ca/rotate"
                    {
                        match read_body(req.into_body()).await {
                            Ok(body) => rotate(&state, peer.ip().is_loopback(), &body),
                            Err(reply) => reply,
                        }
                    } else if crate::dashboard::owns(req.uri().path()) {
                        // Its data is scraped from the proxies: async.
                        let d = state.dashboard.as_deref();
                        crate::dashboard::reply(d, req.method(), req.uri().path()).await
                    } else if req.uri().path() == "/metrics" && req.method() == Method::GET {
                        let accept = req
                            .headers()
                            .get(http::header::ACCEPT)
                            .and_then(|v| v.to_str().ok());
                        metrics(&state, accept)
                    } else if req.uri().path() == explain::PATH {
                        // Explain reads the query, which `route` does not take.
                        explain::reply(&state, req.method(), req.uri().query())
                    } else {
                        route(&state, req.method(), req.uri().path())
                    };
                    Ok::<_, Infallible>(to_http(reply))
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "admin connection error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{now_rfc3339, ProxyRecord};

    fn state() -> AdminState {
        AdminState {
            metrics: Arc::new(Metrics::new()),
            registry: Arc::new(ProxyRegistry::default()),
            index: SharedIndex::default(),
            ready: Arc::new(AtomicBool::new(false)),
            rotation: None,
            dashboard: None,
        }
    }

    /// Slowloris on the admin port: a client that sends a request head a
    /// byte at a time is cut at the header-read timeout, and a normal probe
    /// is answered meanwhile.
    #[tokio::test]
    async fn slow_header_client_is_cut_and_probes_still_answered() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop, stop_rx) = watch::channel(false);
        let limits = AdminLimits {
            header_read_timeout: Duration::from_millis(300),
            max_connections: 4,
        };
        tokio::spawn(serve(listener, Arc::new(state()), limits, stop_rx));

        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();

        let mut probe = tokio::net::TcpStream::connect(addr).await.unwrap();
        probe
            .write_all(b"GET /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        probe.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

        // The slow client is closed by the server well before this bound.
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the slow client was never disconnected");
    }

    #[test]
    fn live_and_ready() {
        let s = state();
        assert_eq!(
            route(&s, &Method::GET, "/live"),
            text(StatusCode::OK, "ok\n")
        );
        assert_eq!(
            route(&s, &Method::GET, "/ready").status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        s.ready.store(true, Ordering::Release);
        assert_eq!(route(&s, &Method::GET, "/ready").status, StatusCode::OK);
    }

    #[test]
    fn metrics_include_index_gauges() {
        let s = state();
        s.index.lock().apply_service(crate::model::Service {
            name: "a".into(),
            namespace: "b".into(),
            selector: Default::default(),
            ports: vec![],
            vips: vec![],
        });
        let r = route(&s, &Method::GET, "/metrics");
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            r.body.contains("mycel_controller_index_services 1"),
            "{}",
            r.body
        );
    }

    #[test]
    fn debug_proxies_is_a_json_array() {
        let s = state();
        assert_eq!(route(&s, &Method::GET, "/debug/proxies").body.trim(), "[]");
        s.registry.insert(
            1,
            ProxyRecord {
                proxy_id: "p".into(),
                workload: "w".into(),
                namespace: "n".into(),
                spiffe_id: "spiffe://cluster.local/ns/n/sa/w".into(),
                mode: "sidecar".into(),
                registered: false,
                ready: None,
                connected_since: now_rfc3339(),
                subscriptions: vec!["a.b".into()],
                acked: Default::default(),
                last_nack: None,
                leaf_serial: String::new(),
                leaf_chain: Vec::new(),
                admin_addr: None,
            },
        );
        let r = route(&s, &Method::GET, "/debug/proxies");
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v[0]["proxy_id"], "p");
        assert_eq!(v[0]["subscriptions"][0], "a.b");
        assert_eq!(v[0]["last_nack"], serde_json::Value::Null);
        // Not registered (a gateway): nothing to be ready, so null, not false.
        assert_eq!(v[0]["ready"], serde_json::Value::Null);
    }

    #[test]
    fn unknown_paths_and_methods() {
        let s = state();
        assert_eq!(
            route(&s, &Method::GET, "/nope").status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            route(&s, &Method::POST, "/live").status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
