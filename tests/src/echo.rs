//! A TCP app for the tunnel tests: every read is written back behind a
//! prefix, so a test can tell the app's answer from its own bytes.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves on `addr` until the test ends, answering each read with
/// `prefix` followed by the bytes read.
pub async fn tcp_echo(addr: SocketAddr, prefix: &'static [u8]) {
    let listener = TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("echo app cannot bind {addr}: {e}"));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut reply = prefix.to_vec();
                    reply.extend_from_slice(&buf[..n]);
                    if conn.write_all(&reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Serves HTTP/1.1 and h2c on `addr` until the test ends, answering every
/// request 200 with a JSON object of its headers (name → values), so a
/// test sees exactly what reached the app.
pub async fn http_headers_echo(addr: SocketAddr) {
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;

    let listener = TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("headers echo app cannot bind {addr}: {e}"));
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| {
                        let mut seen = serde_json::Map::new();
                        for name in req.headers().keys() {
                            let values: Vec<serde_json::Value> = req
                                .headers()
                                .get_all(name)
                                .iter()
                                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned().into())
                                .collect();
                            seen.insert(name.as_str().to_string(), values.into());
                        }
                        let body = serde_json::Value::Object(seen).to_string();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .header(http::header::CONTENT_TYPE, "application/json")
                                    .body(Full::new(bytes::Bytes::from(body)))
                                    .expect("a static response"),
                            )
                        }
                    });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(conn), svc)
                    .await;
            });
        }
    });
}

/// Serves HTTP/1.1 and h2c on `addr` until the test ends, as a cacheable
/// backend: every response has `ETag: "v1"` and the `Cache-Control` the
/// request's `cc` query parameter names (`+` for a space, `_` for `=`:
/// `?cc=public,max-age_60`), its body `{"served": N}` counting the full
/// answers the app gave. A request with `If-None-Match: "v1"` gets 304.
/// Returns the count of 304s and full answers, for the test to read.
pub async fn cacheable_http_app(
    addr: SocketAddr,
) -> std::sync::Arc<(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;

    let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let listener = TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("cacheable app cannot bind {addr}: {e}"));
    let served = counts.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let served = served.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let served = served.clone();
                        async move {
                            let cc = req
                                .uri()
                                .query()
                                .unwrap_or("")
                                .split('&')
                                .find_map(|kv| kv.strip_prefix("cc="))
                                .unwrap_or("")
                                .replace('+', " ")
                                .replace('_', "=");
                            let mut res = http::Response::builder()
                                .header(http::header::ETAG, "\"v1\"")
                                .header(http::header::CACHE_CONTROL, cc);
                            let not_modified = req
                                .headers()
                                .get(http::header::IF_NONE_MATCH)
                                .is_some_and(|v| v.as_bytes() == b"\"v1\"");
                            let body = if not_modified {
                                served.0.fetch_add(1, Ordering::SeqCst);
                                res = res.status(http::StatusCode::NOT_MODIFIED);
                                bytes::Bytes::new()
                            } else {
                                let n = served.1.fetch_add(1, Ordering::SeqCst) + 1;
                                res = res.header(http::header::CONTENT_TYPE, "application/json");
                                bytes::Bytes::from(format!("{{\"served\": {n}}}"))
                            };
                            Ok::<_, std::convert::Infallible>(
                                res.body(Full::new(body)).expect("a valid response"),
                            )
                        }
                    });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(conn), svc)
                    .await;
            });
        }
    });
    counts
}
