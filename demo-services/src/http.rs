//! The small HTTP server the REST services share: an accept loop serving
//! HTTP/1.1 and h2c, a graceful stop, and JSON/HTML response helpers.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::PEER_ID_HEADER;

pub type Body = Full<Bytes>;

/// How long open connections get to finish after a stop was asked.
const DRAIN: Duration = Duration::from_secs(5);
/// How long a client may take to send a request's headers: a client that
/// trickles them (or opens a connection and says nothing) is cut off
/// rather than holding a connection for ever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen backlog, so a flood
/// of idle connections cannot take every descriptor of the process.
pub const MAX_CONNECTIONS: usize = 512;

/// Handles one request; implemented by each REST service.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}

/// Serves `handler` on `listener` until `shutdown` completes, then lets open
/// connections finish for a bounded time.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler.handle(req).await) }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // hyper's header timeout starts with the first byte (it must
            // first tell HTTP/1.1 from h2c): a client that says nothing is
            // cut off here instead.
            let mut first = [0u8; 1];
            match tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN:?}; stopping anyway");
    }
    Ok(())
}

/// The caller identity the sidecar vouched for, if any.
pub fn peer_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(PEER_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => respond(status, "application/json", bytes),
        Err(e) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("cannot encode response: {e}\n").into_bytes(),
        ),
    }
}

/// `{"error": message, "caller": ...}` with the given status.
pub fn json_error(status: StatusCode, message: &str, caller: Option<String>) -> Response<Body> {
    json(
        status,
        &serde_json::json!({ "error": message, "caller": caller }),
    )
}

pub fn html(status: StatusCode, page: String) -> Response<Body> {
    respond(status, "text/html; charset=utf-8", page.into_bytes())
}

pub fn text(status: StatusCode, body: &str) -> Response<Body> {
    respond(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// The `--health` listener: `GET /healthz` answers 200 while the process
/// serves, anything else 404. Never faulted: the fault knobs are for the
/// mesh to carry, not for the kubelet to restart the pod over.
pub struct Healthz;

impl Handler for Healthz {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            path => text(StatusCode::NOT_FOUND, &format!("no route {path}\n")),
        }
    }
}

/// `/prefix/{id}` → `Some(id)` when `id` is one non-empty segment.
pub fn path_param<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_param_table() {
        let cases = [
            ("/products/p1", Some("p1")),
            ("/products/", None),
            ("/products", None),
            ("/products/p1/x", None),
            ("/productsx/p1", None),
        ];
        for (path, want) in cases {
            assert_eq!(path_param(path, "/products"), want, "{path}");
        }
    }

    #[test]
    fn peer_id_reads_header() {
        let mut h = HeaderMap::new();
        assert_eq!(peer_id(&h), None);
        h.insert(
            PEER_ID_HEADER,
            "spiffe://cluster.local/ns/shop/sa/frontend"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            peer_id(&h).as_deref(),
            Some("spiffe://cluster.local/ns/shop/sa/frontend")
        );
    }
}
