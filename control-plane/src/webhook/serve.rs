//! The webhook's HTTPS listener. The API server is its only expected
//! client, but the port is reachable in the cluster, so it has the limits
//! of every Mycel listener: a connection cap, a time for the request head
//! and for the whole exchange, and a body cap (an AdmissionReview of the
//! largest Pod the API server stores is under 3 MiB).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::reflector::{ObjectRef, Store};
use mycel_inject::InjectConfig;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::admit::{self, NamespaceInfo};

/// How long a review waits for the namespace watch (well within the
/// webhook's 10 s timeout).
const NAMESPACE_WAIT: Duration = Duration::from_secs(3);
const NAMESPACE_POLL: Duration = Duration::from_millis(100);

/// The webhook's path, as the MutatingWebhookConfiguration names it.
pub const PATH: &str = "/inject";

#[derive(Clone, Debug)]
pub struct WebhookLimits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    /// The whole exchange, body and answer; the API server gives up at 30 s.
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
}

impl Default for WebhookLimits {
    fn default() -> Self {
        Self {
            max_connections: 128,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 4 << 20,
        }
    }
}

pub struct WebhookState {
    pub config: InjectConfig,
    pub namespaces: Store<Namespace>,
}

impl WebhookState {
    fn namespace(&self, name: &str) -> Option<NamespaceInfo> {
        let ns = self.namespaces.get(&ObjectRef::new(name))?;
        Some(NamespaceInfo {
            labels: ns.metadata.labels.clone().unwrap_or_default(),
            annotations: ns.metadata.annotations.clone().unwrap_or_default(),
        })
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

async fn handle(
    state: Arc<WebhookState>,
    limits: WebhookLimits,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.uri().path() != PATH {
        return Ok(reply(StatusCode::NOT_FOUND, TEXT, "not found\n"));
    }
    if req.method() != Method::POST {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "POST an AdmissionReview\n",
        ));
    }
    let body = match Limited::new(req.into_body(), limits.max_body_bytes)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_big = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return Ok(if too_big {
                reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    TEXT,
                    "AdmissionReview too large\n",
                )
            } else {
                reply(
                    StatusCode::BAD_REQUEST,
                    TEXT,
                    format!("cannot read the body: {e}\n"),
                )
            });
        }
    };
    Ok(answer(&state, &body).await)
}

/// The answer to one AdmissionReview body.
async fn answer(state: &WebhookState, body: &[u8]) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    // After a restart the namespace watch may not have listed yet, and a
    // namespace created a moment ago may not have reached it: wait a little
    // for either rather than decide without the namespace's labels.
    let deadline = tokio::time::Instant::now() + NAMESPACE_WAIT;
    if tokio::time::timeout(NAMESPACE_WAIT, state.namespaces.wait_until_ready())
        .await
        .is_err()
    {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "the controller has not read the cluster's namespaces yet; retry\n",
        );
    }
    let answer = loop {
        match admit::review(body, &state.config, |name| state.namespace(name)) {
            Err(admit::ReviewError::UnknownNamespace(_))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(NAMESPACE_POLL).await;
            }
            other => break other,
        }
    };
    match answer.and_then(|v| serde_json::to_vec(&v).map_err(admit::ReviewError::Body)) {
        Ok(json) => reply(StatusCode::OK, "application/json", json),
        Err(e @ admit::ReviewError::UnknownNamespace(_)) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            format!("{e}; retry\n"),
        ),
        Err(e) => reply(StatusCode::BAD_REQUEST, TEXT, format!("{e}\n")),
    }
}

/// Serves the webhook until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    state: Arc<WebhookState>,
    limits: WebhookLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "webhook accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the cap the connection is closed at once rather than queued,
        // so a flood cannot hold the API server's calls behind it.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(tcp);
            continue;
        };
        let (tls, state, limits) = (tls.clone(), state.clone(), limits.clone());
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let stream = match tokio::time::timeout(limits.handshake_timeout, tls.accept(tcp)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let request_timeout = limits.request_timeout;
            let header_read_timeout = limits.header_read_timeout;
            let service = service_fn(move |req| {
                let (state, limits) = (state.clone(), limits.clone());
                async move {
                    match tokio::time::timeout(request_timeout, handle(state, limits, req)).await {
                        Ok(r) => r,
                        Err(_) => Ok(reply(
                            StatusCode::REQUEST_TIMEOUT,
                            "text/plain; charset=utf-8",
                            "request timed out\n",
                        )),
                    }
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "webhook connection ended");
                    }
                }
                _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::runtime::reflector::{self, store::Writer};
    use kube::runtime::watcher::Event;
    use serde_json::json;

    use super::*;

    fn review_body(ns: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "1d7b4c3e-0000-4000-8000-000000000002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": ns,
                "operation": "CREATE",
                "userInfo": {"username": "alice"},
                "object": {
                    "metadata": {"name": "web-0", "namespace": ns},
                    "spec": {"containers": [{"name": "app", "image": "app:1"}]},
                },
                "dryRun": false,
            },
        }))
        .unwrap()
    }

    fn meshed(name: &str) -> Namespace {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"mycel.io/inject": "enabled"}},
        }))
        .unwrap()
    }

    fn state() -> (Arc<WebhookState>, Writer<Namespace>) {
        let (namespaces, writer) = reflector::store();
        let state = WebhookState {
            config: InjectConfig::default(),
            namespaces,
        };
        (Arc::new(state), writer)
    }

    async fn text(r: Response<Full<Bytes>>) -> (StatusCode, String) {
        let status = r.status();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Before the namespace watch has listed once (a controller just
    /// started), no pod is admitted on a guess: the API server gets 503
    /// and its failure policy, and the pod is retried.
    #[tokio::test(start_paused = true)]
    async fn before_the_namespaces_are_read_no_pod_is_answered() {
        let (state, _writer) = state();
        let (status, body) = text(answer(&state, &review_body("shop")).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("namespaces"), "{body}");
    }

    /// A namespace the watch delivers while the review waits is used; one
    /// it never delivers is a 503 naming it, never "not meshed".
    #[tokio::test(start_paused = true)]
    async fn a_namespace_late_from_the_watch_is_waited_for() {
        let (state, mut writer) = state();
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        let late = {
            let state = state.clone();
            tokio::spawn(async move { text(answer(&state, &review_body("shop")).await).await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        writer.apply_watcher_event(&Event::Apply(meshed("shop")));
        let (status, body) = late.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("\"patch\""), "meshed: {body}");

        let (status, body) = text(answer(&state, &review_body("nowhere")).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("namespace nowhere"), "{body}");
    }
}
