#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

//! Protocol handling at the first hop (explicit outbound proxy, gateway):
//! hosts, subscriptions, upgrades, HTTP versions, gateway paths and the
//! error responses the mesh makes itself.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mycel_tests::http;
use mycel_tests::mesh::{Mesh, Sidecar, SidecarSpec, APP_PORT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// `mesh.yaml` with one HTTP service per name, each on port 80 to the app
/// port, selected by `app=<name>`.
fn services(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| {
            format!(
                "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n  selector:\n    app: {name}\n  ports:\n  - name: http\n    port: 80\n    targetPort: {APP_PORT}\n    appProtocol: http\n"
            )
        })
        .collect()
}

/// An HTTP/1.1-only app (no h2c) answering `<name> <path>`, so a test sees
/// which service got the request and with which path.
async fn http1_app(addr: SocketAddr, name: &'static str) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let body = format!("{name} {}", req.uri().path());
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(Bytes::from(body)),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
}

/// A WebSocket echo server.
async fn websocket_app(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// A workload of service `name` whose app the test started at
/// `spec.app_addr()`.
async fn workload(mesh: &Mesh, spec: SidecarSpec) -> Sidecar {
    let workload = spec.workload.clone();
    let sidecar = mesh.sidecar(spec).await;
    mesh.wait_registered(&workload).await;
    sidecar
}

/// The WebSocket echo app of service `chat`, behind its registered sidecar.
async fn websocket_workload(mesh: &Mesh) -> Sidecar {
    let spec = server_spec("chat");
    websocket_app(spec.app_addr()).await;
    workload(mesh, spec).await
}

/// Sends one message and waits (at most 5 s) for the echo.
async fn echoed<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, msg: Message) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(msg).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("an echo within 5 s")
        .expect("the socket stays open")
        .unwrap()
}

/// An HTTP/1 app that answers `<name> <path>`, behind its registered sidecar.
async fn http1_workload(mesh: &Mesh, name: &'static str) -> Sidecar {
    let spec = server_spec(name);
    http1_app(spec.app_addr(), name).await;
    workload(mesh, spec).await
}

fn server_spec(name: &str) -> SidecarSpec {
    SidecarSpec::new(name, name)
        .label("app", name)
        .app_port(&format!("http:{APP_PORT}:http"))
}

/// Sends raw bytes and reads the whole answer (the server closes, or 5 s).
async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.windows(4).any(|w| w == b"\r\n\r\n") {
                        // Headers are enough; bodies here are short and sent at once.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if let Ok(Ok(n)) =
                            tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf))
                                .await
                        {
                            out.extend_from_slice(&buf[..n]);
                        }
                        break;
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

fn assert_proxy_error(reply: &http::Reply, status: u16, kind: &str) {
    assert_eq!(reply.status, status, "body: {}", reply.body);
    assert_eq!(
        reply
            .headers
            .get("mycel-proxy-error")
            .and_then(|v| v.to_str().ok()),
        Some(kind),
        "headers: {:?}",
        reply.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_host_header_is_refused_before_subscribing() {
    let mesh = Mesh::start(&services(&["catalog"])).await;
    let _catalog = http1_workload(&mesh, "catalog").await;
    let client = mesh.sidecar(SidecarSpec::new("client", "client")).await;

    for host in [".shop", "-x.shop", "a..b", "a_b.shop"] {
        let reply = http::get(client.outbound(), host, "/").await.unwrap();
        assert_proxy_error(&reply, 400, "bad-host");
        assert!(reply.body.contains("bad host"), "{}", reply.body);
    }
    // The stream to the controller never saw the key: the sidecar stays
    // registered, ready, and routes.
    let reply = http::get(client.outbound(), "catalog", "/x").await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "catalog /x"));
    let ready = http::get(client.admin, "localhost", "/ready")
        .await
        .unwrap();
    assert_eq!(ready.status, 200, "{}", ready.body);
    let log = client.proc.log();
    assert!(!log.contains("discovery stream lost"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_hosts_flood_is_capped_and_metrics_stay_bounded() {
    let mesh = Mesh::start(&services(&["catalog"])).await;
    let _catalog = http1_workload(&mesh, "catalog").await;
    let client = mesh
        .sidecar(
            SidecarSpec::new("client", "client")
                .arg("--max-subscriptions")
                .arg("50"),
        )
        .await;
    // The real service first, so it holds a subscription of its own.
    let reply = http::get(client.outbound(), "catalog", "/").await.unwrap();
    assert_eq!(reply.status, 200);

    let outbound = client.outbound();
    let mut limited = 0;
    for batch in 0..30 {
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let host = format!("flood-{}.shop", batch * 10 + i);
                tokio::spawn(async move { http::get(outbound, &host, "/").await })
            })
            .collect();
        for t in tasks {
            let reply = t.await.unwrap().unwrap();
            assert_eq!(reply.status, 503, "{}", reply.body);
            let kind = reply.headers.get("mycel-proxy-error").unwrap();
            if kind == "subscription-limit" {
                limited += 1;
            } else {
                assert_eq!(kind, "unknown-service");
            }
        }
    }
    assert!(limited >= 240, "only {limited} of 300 hit the cap");

    // Requests to a real service are still served, promptly.
    let start = std::time::Instant::now();
    let reply = http::get(client.outbound(), "catalog", "/").await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(start.elapsed() < Duration::from_secs(5));

    let metrics = client.metrics().await;
    assert!(!metrics.contains("flood-"), "a raw host became a label");
    let lines = metrics.lines().count();
    assert!(lines < 150, "/metrics grew to {lines} lines");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_outbound_proxy() {
    let mesh = Mesh::start(&services(&["chat"])).await;
    let _chat = websocket_workload(&mesh).await;
    let client = mesh.sidecar(SidecarSpec::new("client", "client")).await;

    let tcp = tokio::net::TcpStream::connect(client.outbound())
        .await
        .unwrap();
    let (mut ws, res) = tokio_tungstenite::client_async("ws://chat.shop/room", tcp)
        .await
        .unwrap();
    assert_eq!(res.status(), 101);
    for text in ["hello", "through the mesh"] {
        let got = echoed(&mut ws, Message::text(text)).await;
        assert_eq!(got.into_text().unwrap(), text);
    }
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_gateway_and_sidecars() {
    let mesh = Mesh::start(&services(&["chat"])).await;
    let _chat = websocket_workload(&mesh).await;
    let gateway = mesh
        .sidecar(SidecarSpec::new("gateway", "gateway").route("/=chat.shop:80"))
        .await;

    let tcp = tokio::net::TcpStream::connect(gateway.listen())
        .await
        .unwrap();
    let (mut ws, res) = tokio_tungstenite::client_async("ws://chat.example.com/live", tcp)
        .await
        .unwrap();
    assert_eq!(res.status(), 101);
    let payload = vec![7u8; 100_000];
    let got = echoed(&mut ws, Message::binary(payload.clone())).await;
    assert_eq!(got.into_data().to_vec(), payload);
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_client_to_http1_app() {
    let mesh = Mesh::start(&services(&["catalog"])).await;
    let _catalog = http1_workload(&mesh, "catalog").await;
    let client = mesh.sidecar(SidecarSpec::new("client", "client")).await;

    let tcp = tokio::net::TcpStream::connect(client.outbound())
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("http://catalog.shop/items")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(&body[..], b"catalog /items");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_refuses_connect() {
    let mesh = Mesh::start(&services(&["catalog"])).await;
    let catalog = http1_workload(&mesh, "catalog").await;
    let gateway = mesh
        .sidecar(SidecarSpec::new("gateway", "gateway").route("/=catalog.shop:80"))
        .await;

    let target = catalog.inbound();
    let reply = raw(
        gateway.listen(),
        &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
    assert!(
        reply.contains("mycel-proxy-error: method-not-allowed"),
        "{reply}"
    );
    let reply = raw(
        gateway.listen(),
        "CONNECT catalog.shop:80 HTTP/1.1\r\nHost: catalog.shop:80\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_path_traversal_cannot_escape_route() {
    let mesh = Mesh::start(&services(&["public", "admin"])).await;
    let _public = http1_workload(&mesh, "public").await;
    let _admin = http1_workload(&mesh, "admin").await;
    // Only /public is exposed; /internal goes to admin and must stay
    // reachable only by its own prefix.
    let gateway = mesh
        .sidecar(
            SidecarSpec::new("gateway", "gateway")
                .route("/public=public.shop:80")
                .route("/internal=admin.shop:80"),
        )
        .await;
    let gw = gateway.listen();

    let reply = http::get(gw, "example.com", "/public/./a").await.unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "public /public/a")
    );
    // Normalized before matching: the route is the one of the real path,
    // and the service gets that path.
    for path in [
        "/public/../internal/secret",
        "/public/%2e%2e/internal/secret",
        "/public/.%2E/internal/secret",
    ] {
        let reply = http::get(gw, "example.com", path).await.unwrap();
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "admin /internal/secret"),
            "{path}"
        );
    }
    for path in ["/public/../x", "/public/%2E%2E/x"] {
        let reply = http::get(gw, "example.com", path).await.unwrap();
        assert_proxy_error(&reply, 404, "no-route");
    }
    for path in [
        "/public/..%2finternal",
        "/public%2F..%2Finternal",
        "/public/..%5Cinternal",
        "/../public",
    ] {
        let reply = http::get(gw, "example.com", path).await.unwrap();
        assert_proxy_error(&reply, 400, "bad-path");
        assert!(!reply.body.contains("public"), "{}", reply.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_errors_leak_no_internal_names() {
    // `ghost` is declared but has no workload.
    let mesh = Mesh::start(&services(&["catalog", "ghost"])).await;
    let catalog = http1_workload(&mesh, "catalog").await;
    let gateway = mesh
        .sidecar(
            SidecarSpec::new("gateway", "gateway")
                .route("/ghost=ghost.shop:80")
                .route("/wrong-port=catalog.shop:81")
                .route("/nowhere=nowhere.shop:80"),
        )
        .await;
    let gw = gateway.listen();
    let internal = [
        "ghost".to_string(),
        "catalog".to_string(),
        "nowhere".to_string(),
        ".shop".to_string(),
        "spiffe".to_string(),
        "127.".to_string(),
        catalog.inbound().to_string(),
    ];
    for (path, status, kind) in [
        ("/ghost", 503, "no-endpoints"),
        ("/wrong-port", 503, "bad-port"),
        ("/nowhere", 503, "unknown-service"),
        ("/other", 404, "no-route"),
    ] {
        let reply = http::get(gw, "example.com", path).await.unwrap();
        assert_proxy_error(&reply, status, kind);
        for name in &internal {
            assert!(
                !reply.body.contains(name.as_str()),
                "{path}: body leaks {name:?}: {}",
                reply.body
            );
        }
    }
    // The detail is in the gateway's log instead.
    assert!(gateway.proc.log().contains("ghost.shop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_caller_gets_grpc_status_unavailable() {
    let mesh = Mesh::start(&services(&["ghost"])).await;
    let gateway = mesh
        .sidecar(SidecarSpec::new("gateway", "gateway").route("/=ghost.shop:80"))
        .await;
    let tcp = tokio::net::TcpStream::connect(gateway.listen())
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post("http://api.example.com/shop.Reviews/List")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert_eq!(h["grpc-status"], "14", "{h:?}");
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/grpc"));
    assert_eq!(h["mycel-proxy-error"], "no-endpoints");
    let message = h["grpc-message"].to_str().unwrap();
    assert!(!message.contains("ghost"), "{message}");
}

/// A sidecar whose discovery stream stays down (a controller gone, or one
/// that keeps refusing the stream) must not keep saying ready; a short
/// outage is absorbed, and the stream coming back makes it ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_says_not_ready_while_the_discovery_stream_stays_down() {
    let mut mesh = Mesh::start(&services(&["catalog"])).await;
    let client = mesh.sidecar(SidecarSpec::new("client", "client")).await;
    mesh.kill_controller().await;

    let ready = || async {
        http::get(client.admin, "localhost", "/ready")
            .await
            .unwrap()
    };
    let first = ready().await;
    assert_eq!(
        first.status, 200,
        "a short outage is absorbed: {}",
        first.body
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let down = loop {
        let r = ready().await;
        if r.status != 200 {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "still ready");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(down.status, 503, "{}", down.body);
    assert!(down.body.contains("discovery stream down"), "{}", down.body);

    mesh.start_controller().await;
    client.wait_ready().await;
}
