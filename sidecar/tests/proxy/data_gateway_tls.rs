//! A gateway following a Gateway whose HTTPS listeners bring their own
//! certificates, through both of its sockets on loopback: the certificate
//! pushed for `a.test` is what a TLS client gets (none before it arrives),
//! and a route attached only to HTTPS listeners answers on the TLS socket
//! and is 404 on the plaintext one. Routes answer with redirects, so no
//! mesh workload is needed behind the gateway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use mycel_sidecar::core::directory::gateway_certs::{GatewayCertificate, GatewayCertificates};
use mycel_sidecar::core::directory::routes::{
    Filter, ListenerProtocol, PathMatch, Redirect, Route, RouteKind, RouteMatch, RouteRule,
    ServiceRoutes,
};
use mycel_sidecar::core::directory::{Discovery, Snapshot, Subscriptions};
use mycel_sidecar::core::serve::{Limits, Server};
use mycel_sidecar::core::server_cert::ServerCert;
use mycel_sidecar::gateway::https::{Https, HttpsConfig};
use mycel_sidecar::gateway::{self, RouteSource};
use mycel_sidecar::identity::IdentityState;
use mycel_sidecar::metrics::ProxyMetrics;
use mycel_sidecar::outbound::pool::PoolSettings;
use mycel_sidecar::outbound::{Outbound, OutboundContext};
use prometheus_client::registry::Registry;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

const GATEWAY: &str = "shop-gw.shop";
const LIMIT: Duration = Duration::from_secs(10);

/// A CA, and a leaf for `a.test` it signed, as a Secret would hold them.
struct Pki {
    root: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    chain_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["a.test".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    Pki {
        root: ca.der().clone(),
        leaf: leaf.der().clone(),
        chain_pem: leaf.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A route for `host` on `listener` sockets answering every request with
/// a redirect to `to`, which tells the client which route took it.
fn redirect_route(name: &str, host: &str, listener: ListenerProtocol, to: &str) -> Route {
    Route {
        name: name.into(),
        kind: RouteKind::Http,
        ports: vec![],
        hostnames: vec![host.into()],
        listener,
        rules: vec![RouteRule {
            matches: vec![RouteMatch {
                path: Some(PathMatch::PathPrefix("/".into())),
                ..RouteMatch::default()
            }],
            filters: vec![Filter::RequestRedirect(Redirect {
                scheme: None,
                hostname: Some(to.into()),
                path: None,
                port: None,
                status_code: StatusCode::FOUND,
            })],
            backends: vec![],
            timeout: None,
        }],
    }
}

struct World {
    snapshots: watch::Sender<Arc<Snapshot>>,
    plain: SocketAddr,
    tls: SocketAddr,
    registry: Registry,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for World {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl World {
    fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }
}

async fn start(routes: ServiceRoutes) -> World {
    mycel_test_support::init_tracing();
    let mut snapshot = Snapshot::default();
    snapshot
        .gateway_routes
        .insert(GATEWAY.into(), Some(Arc::new(routes)));
    let (snapshots, rx) = watch::channel(Arc::new(snapshot));
    let discovery = Discovery::new(rx, Subscriptions::default());
    let mut registry = Registry::default();
    let metrics = ProxyMetrics::new(&mut registry);
    let outbound = Arc::new(Outbound::new(OutboundContext {
        zone: String::new(),
        identity: IdentityState::new(),
        discovery: discovery.clone(),
        namespace: "shop".into(),
        cluster_domain: "cluster.local".into(),
        metrics: metrics.clone(),
        pool: PoolSettings::from_limits(&Limits::default()),
    }));
    // No --tls-cert: every certificate comes from the Gateway.
    let https = Https::load(&HttpsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        certs: vec![],
        client_ca: None,
        reload_interval: Duration::from_secs(5),
        redirect: false,
    })
    .unwrap();
    let gw = gateway::Gateway::new(RouteSource::Gateway(GATEWAY.into()), outbound);
    let plain_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (plain, tls) = (
        plain_listener.local_addr().unwrap(),
        tls_listener.local_addr().unwrap(),
    );
    let tasks = vec![
        tokio::spawn(https.follow_gateway(discovery, GATEWAY.into(), metrics)),
        tokio::spawn(gateway::https::serve(
            tls_listener,
            &https,
            gw.clone(),
            Server::standalone(Limits::default()),
        )),
        tokio::spawn(gateway::serve(
            plain_listener,
            gw,
            Server::standalone(Limits::default()),
        )),
    ];
    World {
        snapshots,
        plain,
        tls,
        registry,
        tasks,
    }
}

/// Pushes the certificates of the Gateway, as a discovery response would.
fn push(world: &World, pki: &Pki) {
    let cert = ServerCert::from_pem(pki.chain_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap();
    world.snapshots.send_modify(|snapshot| {
        let mut next = (**snapshot).clone();
        next.gateway_certificates.insert(
            GATEWAY.into(),
            Arc::new(GatewayCertificates {
                certificates: vec![GatewayCertificate {
                    source: "shop/a-tls".into(),
                    cert,
                }],
            }),
        );
        *snapshot = Arc::new(next);
    });
}

fn connector(root: &CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to the gateway with SNI `a.test`.
async fn dial_tls(
    world: &World,
    root: &CertificateDer<'static>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(world.tls).await?;
    let name = ServerName::try_from("a.test").unwrap();
    tokio::time::timeout(LIMIT, connector(root).connect(name, tcp))
        .await
        .expect("handshake finished")
}

/// One HTTP/1.1 GET for `host`; the status and the `location` it answers.
async fn get<S>(io: S, host: &str) -> (StatusCode, Option<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::time::timeout(LIMIT, async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get("/x")
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        let location = res
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        (res.status(), location)
    })
    .await
    .expect("answered in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_serves_its_pushed_certificate_and_https_only_routes_on_tls_only() {
    let world = start(ServiceRoutes {
        routes: vec![
            redirect_route(
                "shop/secure",
                "a.test",
                ListenerProtocol::Https,
                "tls.example",
            ),
            redirect_route("shop/both", "b.test", ListenerProtocol::Any, "any.example"),
        ],
    })
    .await;
    let pki = pki();

    // No certificate yet: the handshake fails, counted as such.
    assert!(dial_tls(&world, &pki.root).await.is_err());
    let metrics = world.metrics();
    assert!(
        metrics.contains(r#"direction="gateway",reason="no_certificate""#),
        "{metrics}"
    );

    push(&world, &pki);
    // The follower applies it soon after the snapshot changes.
    let deadline = tokio::time::Instant::now() + LIMIT;
    let tls = loop {
        match dial_tls(&world, &pki.root).await {
            Ok(tls) => break tls,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("never served: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(served, pki.leaf, "the pushed certificate for a.test");
    let metrics = world.metrics();
    assert!(
        metrics.contains(r#"mycel_gateway_certificate_expiry_timestamp_seconds{name="a.test"}"#),
        "{metrics}"
    );

    // The HTTPS-only route answers on TLS...
    let (status, location) = get(tls, "a.test").await;
    assert_eq!(status, StatusCode::FOUND);
    assert!(location.unwrap().contains("tls.example"));
    // ...and is no route at all on plaintext.
    let plain = TcpStream::connect(world.plain).await.unwrap();
    let (status, _) = get(plain, "a.test").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A route of both sockets answers on both.
    let plain = TcpStream::connect(world.plain).await.unwrap();
    assert_eq!(get(plain, "b.test").await.0, StatusCode::FOUND);
    let tls = dial_tls(&world, &pki.root).await.unwrap();
    assert_eq!(get(tls, "b.test").await.0, StatusCode::FOUND);
}
