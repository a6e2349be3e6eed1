//! Transparent mode in one process on loopback: captured connections reach
//! the transparent listeners with a fake original destination (no root, no
//! iptables), and go out through the real mesh data path.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::identity::{spiffe, ProxyIdentity, TestCa};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mycel_sidecar::config::{MtlsMode, UnknownDestination};
use mycel_sidecar::core::directory::{
    Discovery, Endpoint, Protocol, Service, ServicePort, ServiceState, Snapshot, Subscriptions,
};
use mycel_sidecar::core::orig_dst::OrigDst;
use mycel_sidecar::core::serve::{Limits, Server};
use mycel_sidecar::inbound::{self, capture, InboundContext};
use mycel_sidecar::metrics::ProxyMetrics;
use mycel_sidecar::outbound::pool::PoolSettings;
use mycel_sidecar::outbound::transparent::TransparentOptions;
use mycel_sidecar::outbound::{Outbound, OutboundContext};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const LIMIT: Duration = Duration::from_secs(20);
const VIP: &str = "198.19.0.10";

async fn listen() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

fn port_of(l: &TcpListener) -> u16 {
    l.local_addr().unwrap().port()
}

/// HTTP app: answers `<path> <peer id>`.
fn spawn_http_app(listener: TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let peer = req
                        .headers()
                        .get("x-mycel-peer-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_string();
                    let body = format!("{} {peer}", req.uri().path());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}

/// Echo, optionally after a greeting (a server-first protocol) or after
/// answering an HTTP/1 upgrade (a WebSocket server, minus framing).
#[derive(Clone, Copy)]
enum Raw {
    Echo,
    Banner,
    Upgrade,
}

fn spawn_raw(listener: TcpListener, kind: Raw) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                match kind {
                    Raw::Echo => {}
                    Raw::Banner => {
                        let _ = tcp.write_all(b"220 mail ready\r\n").await;
                    }
                    Raw::Upgrade => {
                        let mut head = Vec::new();
                        let mut b = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                            if tcp.read(&mut b).await.unwrap_or(0) == 0 {
                                return;
                            }
                            head.push(b[0]);
                        }
                        let _ = tcp
                            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                            .await;
                    }
                }
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    })
}

fn sport(name: &str, port: u16, target_port: u16, protocol: Protocol) -> ServicePort {
    ServicePort {
        name: name.into(),
        port,
        target_port,
        protocol,
    }
}

/// Original destinations by client source address: each scenario connects
/// from its own loopback IP.
type Table = Arc<Mutex<HashMap<IpAddr, SocketAddr>>>;

fn fake_orig(table: Table) -> Arc<dyn OrigDst> {
    Arc::new(move |tcp: &TcpStream| {
        let ip = tcp.peer_addr()?.ip();
        table
            .lock()
            .unwrap()
            .get(&ip)
            .copied()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no entry"))
    })
}

struct World {
    table: Table,
    transparent: SocketAddr,
    denying: SocketAddr,
    capture_permissive: SocketAddr,
    capture_strict: SocketAddr,
    registry: Registry,
    ports: HashMap<&'static str, u16>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for World {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn start() -> World {
    mycel_test_support::init_tracing();
    let ca = TestCa::new("transparent");
    let mut tasks = Vec::new();
    let mut ports = HashMap::new();
    for (name, kind) in [
        ("http", None),
        ("echo", Some(Raw::Echo)),
        ("banner", Some(Raw::Banner)),
        ("ws", Some(Raw::Upgrade)),
        ("outside", Some(Raw::Echo)),
    ] {
        let l = listen().await;
        ports.insert(name, port_of(&l));
        tasks.push(match kind {
            None => spawn_http_app(l),
            Some(k) => spawn_raw(l, k),
        });
    }
    let app_ports: Vec<u16> = ["http", "echo", "banner", "ws"]
        .iter()
        .map(|n| ports[n])
        .collect();
    let capture_ports = app_ports.clone();

    let mut registry = Registry::default();
    let metrics = ProxyMetrics::new(&mut registry);
    let inbound_listener = listen().await;
    let mesh_addr = inbound_listener.local_addr().unwrap();
    tasks.push(tokio::spawn(inbound::serve(
        inbound_listener,
        InboundContext {
            identity: ca.identity(&spiffe("ratings")),
            app_host: "127.0.0.1".parse().unwrap(),
            app_ports,
            metrics: metrics.clone(),
            app_pool_idle_timeout: Limits::default().app_pool_idle_timeout,
            discovery: crate::no_policy(),
        },
        observed(&metrics),
    )));

    let mut snapshot = Snapshot::default();
    snapshot.services.insert(
        "ratings.shop".into(),
        ServiceState::Known {
            routes: Default::default(),
            policy: Default::default(),
            service: Arc::new(Service {
                name: "ratings".into(),
                namespace: "shop".into(),
                ports: vec![
                    sport("http", 80, ports["http"], Protocol::Http),
                    sport("db", 5432, ports["echo"], Protocol::Http),
                    sport("smtp", 25, ports["banner"], Protocol::Http),
                    sport("mail", 2525, ports["banner"], Protocol::Http),
                    sport("ws", 8081, ports["ws"], Protocol::Http),
                ],
                vips: vec![VIP.parse().unwrap()],
            }),
            endpoints: Arc::from(vec![Endpoint {
                mesh_addr,
                identity: spiffe("ratings").parse().unwrap(),
                workload: "ratings-1".into(),
                zone: String::new(),
                weight: 1,
                ready: true,
            }]),
        },
    );
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(snapshot));
    tasks.push(tokio::spawn(async move { tx.closed().await }));

    let outbound = Arc::new(Outbound::new(OutboundContext {
        zone: String::new(),
        identity: ca.identity(&spiffe("frontend")),
        discovery: Discovery::new(rx, Subscriptions::default()),
        namespace: "shop".into(),
        cluster_domain: "cluster.local".into(),
        metrics: metrics.clone(),
        pool: PoolSettings::from_limits(&Limits::default()),
    }));
    let table: Table = Arc::default();
    let mut addrs = Vec::new();
    for unknown in [UnknownDestination::Passthrough, UnknownDestination::Deny] {
        let l = listen().await;
        addrs.push(l.local_addr().unwrap());
        tasks.push(tokio::spawn(outbound.clone().serve_transparent(
            l,
            fake_orig(table.clone()),
            TransparentOptions {
                unknown,
                opaque_ports: vec![],
            },
            observed(&metrics),
        )));
    }
    for mode in [MtlsMode::Permissive, MtlsMode::Strict] {
        let l = listen().await;
        addrs.push(l.local_addr().unwrap());
        tasks.push(tokio::spawn(capture::serve(
            l,
            capture::CaptureContext {
                mode,
                app_ports: capture_ports.clone(),
                all_ports: false,
                metrics: metrics.clone(),
                orig: fake_orig(table.clone()),
                discovery: crate::no_policy(),
            },
            Server::standalone(Limits::default()),
        )));
    }
    World {
        table,
        transparent: addrs[0],
        denying: addrs[1],
        capture_permissive: addrs[2],
        capture_strict: addrs[3],
        registry,
        ports,
        tasks,
    }
}

impl World {
    /// Connects to `listener` from `client_ip`, pretending the app had
    /// dialed `orig`.
    async fn dial(&self, listener: SocketAddr, client_ip: &str, orig: SocketAddr) -> TcpStream {
        let ip: IpAddr = client_ip.parse().unwrap();
        self.table.lock().unwrap().insert(ip, orig);
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(ip, 0)).unwrap();
        sock.connect(listener).await.unwrap()
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }
}

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP.parse().unwrap(), port)
}

/// Writes `send`, then reads until `want_len` bytes came (or the peer closed).
async fn exchange(tcp: &mut TcpStream, send: &[u8], want_len: usize) -> String {
    tokio::time::timeout(LIMIT, async {
        tcp.write_all(send).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < want_len {
            let n = tcp.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    })
    .await
    .expect("exchange finished in time")
}

/// The bodies of GETs of `paths` to the VIP, one after another on `tcp`.
async fn http_get(tcp: TcpStream, paths: &[&str]) -> Vec<String> {
    let replies = mycel_test_support::http::get_each(tcp, VIP, paths)
        .await
        .unwrap();
    replies.into_iter().map(|r| r.body).collect()
}

#[tokio::test]
async fn http_to_a_vip_is_routed_per_request_with_the_callers_identity() {
    let w = start().await;
    let tcp = w.dial(w.transparent, "127.0.0.2", vip(80)).await;
    let got = http_get(tcp, &["/a", "/b"]).await;
    let me = spiffe("frontend");
    assert_eq!(got, vec![format!("/a {me}"), format!("/b {me}")]);
    let m = w.metrics();
    assert!(
        m.contains(r#"mycel_captured_connections_total{direction="outbound",target="service",protocol="http",port="80"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(
            r#"mycel_requests_total{direction="outbound",service="ratings.shop",code="200"} 2"#
        ),
        "{m}"
    );
}

#[tokio::test]
async fn non_http_bytes_to_a_vip_are_tunnelled() {
    let w = start().await;
    let mut tcp = w.dial(w.transparent, "127.0.0.3", vip(5432)).await;
    let hello = b"\x00\x00\x00\x08\x04\x12\x16\x2f";
    let got = exchange(&mut tcp, hello, hello.len()).await;
    assert_eq!(got.as_bytes(), hello);
    assert!(w
        .metrics()
        .contains(r#"target="service",protocol="opaque",port="5432"} 1"#));
}

#[tokio::test]
async fn server_first_protocols_get_their_greeting() {
    let w = start().await;
    // Port 25 is a known server-first port and skips detection; 2525 is
    // not, and gets the greeting once detection gives up on the silent client.
    for (ip, port) in [("127.0.0.4", 25), ("127.0.0.5", 2525)] {
        let mut tcp = w.dial(w.transparent, ip, vip(port)).await;
        let got = exchange(&mut tcp, b"", 16).await;
        assert_eq!(got, "220 mail ready\r\n", "port {port}");
    }
    let m = w.metrics();
    for want in [
        r#"target="service",protocol="opaque_declared",port="25"} 1"#,
        r#"target="service",protocol="opaque_silent",port="2525"} 1"#,
    ] {
        assert!(m.contains(want), "missing {want} in\n{m}");
    }
}

#[tokio::test]
async fn websocket_upgrade_works_end_to_end() {
    let w = start().await;
    let mut tcp = w.dial(w.transparent, "127.0.0.6", vip(8081)).await;
    let head = "GET /chat HTTP/1.1\r\nHost: ratings\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let want =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let got = exchange(&mut tcp, head.as_bytes(), want.len()).await;
    assert_eq!(got, want);
    let got = exchange(&mut tcp, b"frame-1", 7).await;
    assert_eq!(got, "frame-1");
    assert!(w
        .metrics()
        .contains(r#"target="service",protocol="upgrade",port="8081"} 1"#));
}

#[tokio::test]
async fn a_meshed_endpoint_address_goes_over_mtls_to_that_endpoint() {
    let w = start().await;
    let dst = SocketAddr::from(([127, 0, 0, 1], w.ports["echo"]));
    let mut tcp = w.dial(w.transparent, "127.0.0.7", dst).await;
    assert_eq!(exchange(&mut tcp, b"ping", 4).await, "ping");
    let m = w.metrics();
    assert!(m.contains(r#"target="endpoint""#), "{m}");
    assert!(
        m.contains(
            r#"mycel_inbound_connections_total{peer="spiffe://cluster.local/ns/shop/sa/frontend"}"#
        ),
        "{m}"
    );
}

#[tokio::test]
async fn http_to_an_endpoint_address_is_forwarded_per_request_to_that_endpoint() {
    let w = start().await;
    let dst = SocketAddr::from(([127, 0, 0, 1], w.ports["http"]));
    let tcp = w.dial(w.transparent, "127.0.0.13", dst).await;
    let got = http_get(tcp, &["/x", "/y"]).await;
    let me = spiffe("frontend");
    assert_eq!(got, vec![format!("/x {me}"), format!("/y {me}")]);
    let m = w.metrics();
    assert!(
        m.contains(&format!(
            r#"target="endpoint",protocol="http",port="{}"}} 1"#,
            dst.port()
        )),
        "{m}"
    );
    assert!(
        m.contains(
            r#"mycel_requests_total{direction="outbound",service="ratings.shop",code="200"} 2"#
        ),
        "{m}"
    );
}

#[tokio::test]
async fn unknown_destinations_pass_through_or_are_denied() {
    let w = start().await;
    let outside = SocketAddr::from(([127, 0, 0, 1], w.ports["outside"]));
    let mut tcp = w.dial(w.transparent, "127.0.0.8", outside).await;
    assert_eq!(exchange(&mut tcp, b"plain", 5).await, "plain");
    let mut tcp = w.dial(w.denying, "127.0.0.9", outside).await;
    assert_eq!(exchange(&mut tcp, b"plain", 5).await, "");
    let m = w.metrics();
    let port = outside.port();
    assert!(
        m.contains(&format!(
            r#"target="passthrough",protocol="opaque",port="{port}"}} 1"#
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            r#"target="denied",protocol="opaque",port="{port}"}} 1"#
        )),
        "{m}"
    );
}

#[tokio::test]
async fn the_capture_port_itself_is_never_a_destination() {
    let w = start().await;
    let mut tcp = w.dial(w.transparent, "127.0.0.10", w.transparent).await;
    assert_eq!(exchange(&mut tcp, b"loop", 4).await, "");
}

#[tokio::test]
async fn inbound_plaintext_is_allowed_and_marked_in_permissive_and_refused_in_strict() {
    let w = start().await;
    let app = SocketAddr::from(([127, 0, 0, 1], w.ports["echo"]));
    let mut tcp = w.dial(w.capture_permissive, "127.0.0.11", app).await;
    assert_eq!(exchange(&mut tcp, b"hi", 2).await, "hi");
    let mut tcp = w.dial(w.capture_strict, "127.0.0.12", app).await;
    assert_eq!(exchange(&mut tcp, b"hi", 2).await, "");
    // Permissive passes declared app ports only.
    let undeclared = SocketAddr::from(([127, 0, 0, 1], w.ports["outside"]));
    let mut tcp = w.dial(w.capture_permissive, "127.0.0.13", undeclared).await;
    assert_eq!(exchange(&mut tcp, b"hi", 2).await, "");
    let m = w.metrics();
    let port = app.port();
    assert!(
        m.contains(&format!(
            r#"{{direction="inbound",target="allowed",protocol="plaintext",port="{port}"}} 1"#
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            r#"{{direction="inbound",target="refused",protocol="plaintext",port="{port}"}} 1"#
        )),
        "{m}"
    );
}

/// A server whose requests are counted in `metrics`, as the proxy's are.
fn observed(metrics: &ProxyMetrics) -> Server {
    Server::standalone(Limits::default()).with_observer(mycel_sidecar::observe::Observer::new(
        metrics.clone(),
        None,
        None,
    ))
}
