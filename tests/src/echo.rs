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
