//! The whole data path in one process on loopback: app → outbound → mTLS
//! HTTP/2 → inbound → app, with discovery fed from a watch channel.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::identity::{spiffe, ProxyIdentity, TestCa};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mycel_sidecar::core::directory::{
    Discovery, Endpoint, Protocol, Service, ServicePort, ServiceState, Snapshot, Subscriptions,
};
use mycel_sidecar::core::serve::{Limits, Server};
use mycel_sidecar::inbound::{self, InboundContext};
use mycel_sidecar::metrics::{Direction, ErrorKind, ProxyMetrics};
use mycel_sidecar::outbound::pool::PoolSettings;
use mycel_sidecar::outbound::{Outbound, OutboundContext};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(20);

/// What the app saw: path and headers of every request.
type Seen = Arc<Mutex<Vec<(String, HeaderMap)>>>;

struct Mesh {
    outbound_http: SocketAddr,
    tcp_upstream: SocketAddr,
    seen: Seen,
    client_metrics: ProxyMetrics,
    server_metrics: ProxyMetrics,
    server_registry: prometheus_client::registry::Registry,
    outbound: Arc<Outbound>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn listen() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

type AppBody = BoxBody<Bytes, Infallible>;

async fn app(seen: Seen, req: Request<Incoming>) -> Result<Response<AppBody>, Infallible> {
    let path = req.uri().path().to_string();
    seen.lock()
        .unwrap()
        .push((path.clone(), req.headers().clone()));
    let peer = req
        .headers()
        .get("x-mycel-peer-id")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    if path.starts_with("/shop.Catalog/") {
        // gRPC-like: echo the message, then trailers.
        let version = req.version();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(body)),
            Ok(Frame::trailers(trailers)),
        ];
        let mut res = Response::new(StreamBody::new(futures::stream::iter(frames)).boxed());
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        res.headers_mut().insert(
            "x-app-version",
            HeaderValue::from_str(&format!("{version:?}")).unwrap(),
        );
        return Ok(res);
    }
    let host = req
        .headers()
        .get("host")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = format!("hello {path} from {peer} via {host}");
    Ok(Response::new(Full::new(Bytes::from(text)).boxed()))
}

fn spawn_app(listener: TcpListener, seen: Seen) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| app(seen.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}

fn spawn_echo(listener: TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    })
}

fn port(name: &str, port: u16, target_port: u16, protocol: Protocol) -> ServicePort {
    ServicePort {
        name: name.into(),
        port,
        target_port,
        protocol,
    }
}

fn service(name: &str, ports: Vec<ServicePort>, mesh_addr: SocketAddr, sa: &str) -> ServiceState {
    ServiceState::Known {
        routes: Default::default(),
        policy: Default::default(),
        service: Arc::new(Service {
            name: name.into(),
            namespace: "shop".into(),
            ports,
            vips: vec![],
        }),
        endpoints: Arc::from(vec![Endpoint {
            mesh_addr,
            identity: spiffe(sa).parse().unwrap(),
            workload: format!("{name}-1"),
            zone: String::new(),
            weight: 1,
            ready: true,
        }]),
    }
}

async fn start() -> Mesh {
    mycel_test_support::init_tracing();
    let ca = TestCa::new("mesh");
    let seen: Seen = Arc::default();
    let app_listener = listen().await;
    let app_port = app_listener.local_addr().unwrap().port();
    let echo_listener = listen().await;
    let echo_port = echo_listener.local_addr().unwrap().port();
    // Declared by the workload but with nothing listening.
    let dead_port = listen().await.local_addr().unwrap().port();
    let mut tasks = vec![
        spawn_app(app_listener, seen.clone()),
        spawn_echo(echo_listener),
    ];

    let mut server_registry = prometheus_client::registry::Registry::default();
    let server_metrics = ProxyMetrics::new(&mut server_registry);
    let inbound_listener = listen().await;
    let mesh_addr = inbound_listener.local_addr().unwrap();
    tasks.push(tokio::spawn(inbound::serve(
        inbound_listener,
        InboundContext {
            identity: ca.identity(&spiffe("catalog")),
            app_host: "127.0.0.1".parse().unwrap(),
            app_ports: vec![app_port, echo_port, dead_port],
            metrics: server_metrics.clone(),
            app_pool_idle_timeout: Limits::default().app_pool_idle_timeout,
            discovery: crate::no_policy(),
        },
        Server::standalone(Limits::default()),
    )));

    let mut snapshot = Snapshot::default();
    snapshot.services.insert(
        "catalog.shop".into(),
        service(
            "catalog",
            vec![
                port("http", 80, app_port, Protocol::Http),
                port("grpc", 9090, app_port, Protocol::Grpc),
                port("db", 5432, echo_port, Protocol::Tcp),
                port("undeclared", 81, 1, Protocol::Http),
                port("dead", 82, dead_port, Protocol::Http),
            ],
            mesh_addr,
            "catalog",
        ),
    );
    snapshot.services.insert(
        "impostor.shop".into(),
        service(
            "impostor",
            vec![port("http", 80, app_port, Protocol::Http)],
            mesh_addr,
            "reviews",
        ),
    );
    snapshot
        .services
        .insert("ghost.shop".into(), ServiceState::NotFound);
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(snapshot));
    // Keep the sender alive for the whole test so resolve() never sees a
    // closed channel.
    tasks.push(tokio::spawn(async move {
        tx.closed().await;
    }));

    let client_metrics = ProxyMetrics::new(&mut prometheus_client::registry::Registry::default());
    let outbound = Arc::new(Outbound::new(OutboundContext {
        zone: String::new(),
        identity: ca.identity(&spiffe("frontend")),
        discovery: Discovery::new(rx, Subscriptions::default()),
        namespace: "shop".into(),
        cluster_domain: "cluster.local".into(),
        metrics: client_metrics.clone(),
        pool: PoolSettings::from_limits(&Limits::default()),
    }));
    let http_listener = listen().await;
    let outbound_http = http_listener.local_addr().unwrap();
    tasks.push(tokio::spawn(
        outbound
            .clone()
            .serve_http(http_listener, Server::standalone(Limits::default())),
    ));
    let tcp_listener = listen().await;
    let tcp_upstream = tcp_listener.local_addr().unwrap();
    tasks.push(tokio::spawn(outbound.clone().serve_tcp(
        tcp_listener,
        "catalog.shop".into(),
        5432,
        Server::standalone(Limits::default()),
    )));
    Mesh {
        outbound_http,
        tcp_upstream,
        seen,
        client_metrics,
        server_metrics,
        server_registry,
        outbound,
        _tasks: tasks,
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for t in &self._tasks {
            t.abort();
        }
    }
}

/// One HTTP/1.1 request to the outbound proxy; status and body text.
async fn http1(addr: SocketAddr, req: Request<Empty<Bytes>>) -> (StatusCode, String) {
    tokio::time::timeout(LIMIT, async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let res = sender.send_request(req).await.unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
    .await
    .expect("request finished in time")
}

fn get(uri: &str, host: Option<&str>) -> Request<Empty<Bytes>> {
    let mut b = Request::builder().uri(uri);
    if let Some(h) = host {
        b = b.header("host", h);
    }
    b.body(Empty::new()).unwrap()
}

fn seen_paths(seen: &Seen) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p.clone())
        .collect()
}

#[tokio::test]
async fn http1_request_reaches_the_app_with_the_verified_peer_id() {
    let mesh = start().await;
    let mut req = get("/items?page=2", Some("catalog"));
    req.headers_mut().insert(
        "x-mycel-peer-id",
        HeaderValue::from_static("spiffe://cluster.local/ns/shop/sa/forged"),
    );
    req.headers_mut()
        .insert("mycel-dst-port", HeaderValue::from_static("22"));
    let (status, body) = http1(mesh.outbound_http, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        format!("hello /items from {} via catalog", spiffe("frontend"))
    );
    let seen = mesh.seen.lock().unwrap();
    let (path, headers) = &seen[0];
    assert_eq!(path, "/items");
    let ids: Vec<_> = headers.get_all("x-mycel-peer-id").iter().collect();
    assert_eq!(ids, vec![spiffe("frontend").as_str()]);
    assert!(headers.get("mycel-dst-port").is_none());
    assert!(headers.get("mycel-app-protocol").is_none());
}

#[tokio::test]
async fn absolute_form_requests_are_routed_and_share_one_connection() {
    let mesh = start().await;
    for i in 0..3 {
        let (status, body) = http1(
            mesh.outbound_http,
            get(
                &format!("http://catalog.shop.svc.cluster.local/abs/{i}"),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(seen_paths(&mesh.seen), vec!["/abs/0", "/abs/1", "/abs/2"]);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &mesh.server_registry).unwrap();
    // One pooled mTLS connection carried all three requests.
    let line = format!(
        "mycel_inbound_connections_total{{peer=\"{}\"}} 1",
        spiffe("frontend")
    );
    assert!(text.contains(&line), "{text}");
}

#[tokio::test]
async fn wrong_peer_identity_gets_502_and_sends_nothing() {
    let mesh = start().await;
    let (status, body) = http1(mesh.outbound_http, get("/secret", Some("impostor"))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.starts_with("upstream connect failed: "), "{body}");
    assert!(
        body.contains(&format!(
            "identity mismatch: expected {}, got {}",
            spiffe("reviews"),
            spiffe("catalog")
        )),
        "{body}"
    );
    assert!(seen_paths(&mesh.seen).is_empty());
    assert_eq!(
        mesh.client_metrics
            .error_count(Direction::Outbound, ErrorKind::IdentityMismatch),
        1
    );
}

#[tokio::test]
async fn unknown_services_get_503_naming_them() {
    let mesh = start().await;
    for (host, want) in [
        ("ghost", "unknown service: ghost\n"),
        ("example.com.evil", "unknown service: example.com.evil\n"),
        (
            "catalog:7777",
            "port 7777 is not a port of service catalog.shop\n",
        ),
    ] {
        let (status, body) = http1(mesh.outbound_http, get("/", Some(host))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{host}");
        assert_eq!(body, want);
    }
    assert!(seen_paths(&mesh.seen).is_empty());
}

#[tokio::test]
async fn inbound_refuses_undeclared_ports_and_reports_dead_apps() {
    let mesh = start().await;
    let (status, body) = http1(mesh.outbound_http, get("/", Some("catalog:81"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, "port 1 is not a port of this workload\n");

    let (status, body) = http1(mesh.outbound_http, get("/", Some("catalog:82"))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.starts_with("app unreachable at 127.0.0.1:"), "{body}");
    assert_eq!(
        mesh.server_metrics
            .error_count(Direction::Inbound, ErrorKind::AppConnect),
        1
    );
    assert!(seen_paths(&mesh.seen).is_empty());
}

#[tokio::test]
async fn grpc_like_h2_request_keeps_streams_and_trailers() {
    let mesh = start().await;
    let (status, version, body, trailers) = tokio::time::timeout(LIMIT, async {
        let tcp = TcpStream::connect(mesh.outbound_http).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = Request::builder()
            .method("POST")
            .uri("http://catalog:9090/shop.Catalog/Get")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\x03abc")))
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        let status = res.status();
        let version = res
            .headers()
            .get("x-app-version")
            .map(|v| v.to_str().unwrap().to_string());
        let collected = res.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (status, version, collected.to_bytes(), trailers)
    })
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"\0\0\0\0\x03abc");
    assert_eq!(trailers.unwrap().get("grpc-status").unwrap(), "0");
    // The app was reached over h2c, as a gRPC server needs.
    assert_eq!(version.as_deref(), Some("HTTP/2.0"));
    let seen = mesh.seen.lock().unwrap();
    assert_eq!(seen[0].1.get("te").unwrap(), "trailers");
}

#[tokio::test]
async fn tcp_upstream_tunnels_bytes_both_ways() {
    let mesh = start().await;
    tokio::time::timeout(LIMIT, async {
        let mut tcp = TcpStream::connect(mesh.tcp_upstream).await.unwrap();
        for msg in [&b"hello"[..], &b"mesh tunnel"[..]] {
            tcp.write_all(msg).await.unwrap();
            let mut buf = vec![0u8; msg.len()];
            tcp.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, msg);
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn gateway_routes_by_host_and_prefix() {
    let mut mesh = start().await;
    let listener = listen().await;
    let addr = listener.local_addr().unwrap();
    let routes = vec![mycel_sidecar::config::GatewayRoute {
        host: Some("shop.example.com".into()),
        prefix: "/api".into(),
        service: "catalog.shop".into(),
        port: 80,
    }];
    mesh._tasks.push(tokio::spawn(mycel_sidecar::gateway::serve(
        listener,
        mycel_sidecar::gateway::Gateway::new(
            mycel_sidecar::gateway::RouteSource::Static(routes.into()),
            mesh.outbound.clone(),
        ),
        Server::standalone(Limits::default()),
    )));
    let (status, body) = http1(addr, get("/api/items", Some("shop.example.com:8080"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        format!(
            "hello /api/items from {} via shop.example.com:8080",
            spiffe("frontend")
        )
    );
    let (status, body) = http1(addr, get("/other", Some("shop.example.com"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // External callers get the kind, never internal detail.
    assert_eq!(body, "Not Found (no-route)\n");
    let (status, _) = http1(addr, get("/api/items", Some("else.example.com"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(seen_paths(&mesh.seen), vec!["/api/items"]);
}
