//! The admin HTTP server: `/live`, `/ready`, `/metrics`, `/config_dump`,
//! `/certs`, and the app's probes under `/app-health/` ([`probe`]). Answers
//! other than probes are built by [`respond`], a plain function of the
//! shared state, so they are tested without a socket.

mod certs;
pub mod probe;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::core::directory::Discovery;
use crate::core::http::boxed;
use crate::core::serve::{HttpMode, Server};
use crate::discovery::DiscoveryStatus;
use crate::identity::IdentityState;

pub use certs::certs_json;

/// Everything the admin pages read.
pub struct AdminState {
    pub config: Arc<Config>,
    pub identity: Arc<IdentityState>,
    pub discovery: Discovery,
    pub status: Arc<DiscoveryStatus>,
    pub registry: Arc<Registry>,
}

/// What `/ready` is waiting for; empty when ready.
pub fn missing(state: &AdminState) -> Vec<&'static str> {
    let mut missing = Vec::new();
    match state.identity.cert() {
        None => missing.push("no workload certificate yet"),
        // Peers refuse an expired certificate, so this proxy can neither
        // serve nor call anyone until a renewal gets through.
        Some(c) if c.not_after_unix <= unix_now() => missing.push("workload certificate expired"),
        Some(_) => {}
    }
    if !state.config.is_static() && !state.status.is_synced() {
        missing.push("no discovery response applied yet");
    }
    // Serving the last snapshot is right for a while; a stream that keeps
    // failing (a refused Hello, a controller gone for good) is not ready.
    if !state.config.is_static()
        && state
            .status
            .down_longer_than(crate::discovery::status::STREAM_DOWN_GRACE)
    {
        missing.push("discovery stream down (see /config_dump for the last error)");
    }
    missing
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", body.into())
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let body =
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    reply(status, "application/json", body)
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

/// `accept` is the request's `Accept` header: `/metrics` is OpenMetrics
/// when it asks for it, the Prometheus text format otherwise.
pub fn respond(
    state: &AdminState,
    method: &Method,
    path: &str,
    accept: Option<&str>,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match path {
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" => {
            let missing = missing(state);
            if missing.is_empty() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}\n", missing.join("; ")),
                )
            }
        }
        "/metrics" => {
            let mut out = String::new();
            match prometheus_client::encoding::text::encode(&mut out, &state.registry) {
                Ok(()) => {
                    let (content_type, body) = mycel_api::exposition::negotiate(accept, out);
                    reply(StatusCode::OK, content_type, body)
                }
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("encoding metrics: {e}\n"),
                ),
            }
        }
        "/config_dump" => json(
            StatusCode::OK,
            &serde_json::json!({
                "config": &*state.config,
                "subscriptions": state.discovery.subscriptions().all(),
                "snapshot": &*state.discovery.snapshot(),
                "discovery": state.status.state(),
                "synced": state.status.is_synced(),
            }),
        ),
        "/certs" => match certs_json(&state.identity) {
            Some(v) => json(StatusCode::OK, &v),
            None => json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": "no workload certificate yet"}),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /live /ready /metrics /config_dump /certs\n",
        ),
    }
}

/// Probes go to the app; everything else is [`respond`].
pub async fn route(
    state: &AdminState,
    method: &Method,
    path: &str,
    headers: &http::HeaderMap,
) -> Response<Full<Bytes>> {
    if !path.starts_with(mycel_api::probes::PATH_PREFIX) {
        let accept = headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        return respond(state, method, path, accept);
    }
    let user_agent = headers.get(http::header::USER_AGENT).cloned();
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match state.config.app_probes.get(path) {
        Some(p) => probe::forward(p, state.config.app_host, user_agent).await,
        None => text(
            StatusCode::NOT_FOUND,
            format!(
                "no app probe at {path} (see {})\n",
                mycel_api::probes::ENV_APP_PROBES
            ),
        ),
    }
}

/// Serves until the proxy drains; each connection on its own task.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, server: Server) {
    server
        .serve("admin", listener, move |tcp, _, conn| {
            let state = state.clone();
            async move {
                conn.serve_http(tcp, HttpMode::Admin, move |req: Request<Incoming>| {
                    let state = state.clone();
                    async move {
                        route(&state, req.method(), req.uri().path(), req.headers())
                            .await
                            .map(boxed)
                    }
                })
                .await;
            }
        })
        .await;
}
