//! Gateway API mesh routing (GAMMA) through the whole data path on
//! loopback: an app calls `reviews`, whose routes send it to `reviews-v1`
//! or `reviews-v2` (each its own workload behind its own inbound sidecar),
//! with filters, redirects, mirrors and faults.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::identity::{spiffe, ProxyIdentity, TestCa};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mycel_sidecar::core::directory::gateway_policy::{ApiKey, ApiKeyAuth, GatewayPolicy};
use mycel_sidecar::core::directory::policy::{Fault, FaultAbort};
use mycel_sidecar::core::directory::routes::{
    Backend, Filter, Header, HeaderMatch, HeaderModifier, ListenerProtocol, Mirror, PathMatch,
    PathModifier, Redirect, Route, RouteKind, RouteMatch, RouteRule, ServiceRoutes, StringMatch,
    UrlRewrite,
};
use mycel_sidecar::core::directory::{
    Discovery, Endpoint, Protocol, Service, ServicePort, ServiceState, Snapshot, Subscriptions,
};
use mycel_sidecar::core::serve::{Limits, Server};
use mycel_sidecar::gateway::{self, RouteSource};
use mycel_sidecar::inbound::{self, InboundContext};
use mycel_sidecar::metrics::ProxyMetrics;
use mycel_sidecar::outbound::pool::PoolSettings;
use mycel_sidecar::outbound::{Outbound, OutboundContext};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(20);
const PORT: u16 = 9080;

/// Each request an app saw: method, path, headers, body.
type Seen = Arc<Mutex<Vec<(Method, String, HeaderMap, Bytes)>>>;

struct Workload {
    seen: Seen,
    state: ServiceState,
}

struct Mesh {
    outbound_http: SocketAddr,
    /// A gateway serving the Gateway `shop-gw.shop`.
    gateway: SocketAddr,
    /// A gateway serving a Gateway the controller has not answered for.
    gateway_unanswered: SocketAddr,
    v1: Seen,
    v2: Seen,
    shadow: Seen,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn listen() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// An app that answers `<version> <path>` and records what it got.
fn spawn_app(
    listener: TcpListener,
    version: &'static str,
    seen: Seen,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let path = parts.uri.path().to_string();
                        seen.lock().unwrap().push((
                            parts.method,
                            path.clone(),
                            parts.headers,
                            body,
                        ));
                        let mut res =
                            Response::new(Full::new(Bytes::from(format!("{version} {path}"))));
                        res.headers_mut()
                            .insert("x-app-version", HeaderValue::from_static(version));
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}

/// A workload `name` (app + inbound sidecar) behind service `name`.
async fn workload(
    ca: &TestCa,
    name: &str,
    version: &'static str,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Workload {
    let seen: Seen = Arc::default();
    let app = listen().await;
    let app_port = app.local_addr().unwrap().port();
    tasks.push(spawn_app(app, version, seen.clone()));
    let inbound_listener = listen().await;
    let mesh_addr = inbound_listener.local_addr().unwrap();
    tasks.push(tokio::spawn(inbound::serve(
        inbound_listener,
        InboundContext {
            identity: ca.identity(&spiffe(name)),
            app_host: "127.0.0.1".parse().unwrap(),
            app_ports: vec![app_port],
            metrics: ProxyMetrics::new(&mut prometheus_client::registry::Registry::default()),
            app_pool_idle_timeout: Limits::default().app_pool_idle_timeout,
            discovery: crate::no_policy(),
        },
        Server::standalone(Limits::default()),
    )));
    Workload {
        seen,
        state: known(
            name,
            app_port,
            vec![endpoint(name, mesh_addr)],
            ServiceRoutes::default(),
        ),
    }
}

fn endpoint(name: &str, mesh_addr: SocketAddr) -> Endpoint {
    Endpoint {
        mesh_addr,
        identity: spiffe(name).parse().unwrap(),
        workload: format!("{name}-1"),
        zone: String::new(),
        weight: 1,
        ready: true,
    }
}

fn known(
    name: &str,
    target_port: u16,
    endpoints: Vec<Endpoint>,
    routes: ServiceRoutes,
) -> ServiceState {
    ServiceState::Known {
        service: Arc::new(Service {
            name: name.into(),
            namespace: "shop".into(),
            ports: vec![ServicePort {
                name: "http".into(),
                port: PORT,
                target_port,
                protocol: Protocol::Http,
            }],
            vips: vec![],
        }),
        endpoints: Arc::from(endpoints),
        policy: Default::default(),
        routes: Arc::new(routes),
    }
}

fn backend(key: &str, weight: u32) -> Backend {
    Backend {
        service_key: key.into(),
        port: None,
        weight,
        filters: vec![],
    }
}

fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path: Some(PathMatch::PathPrefix(p.into())),
        ..RouteMatch::default()
    }
}

fn header(name: &'static str, value: &'static str) -> Header {
    Header {
        name: HeaderName::from_static(name),
        value: HeaderValue::from_static(value),
    }
}

/// The routes of `reviews` every test runs against.
fn reviews_routes() -> ServiceRoutes {
    let rule = |matches, filters, backends| RouteRule {
        matches,
        filters,
        backends,
        timeout: None,
    };
    ServiceRoutes {
        routes: vec![Route {
            name: "shop/reviews".into(),
            kind: RouteKind::Http,
            ports: vec![PORT],
            hostnames: vec![],
            listener: ListenerProtocol::Any,
            rules: vec![
                // Testers see v2.
                rule(
                    vec![RouteMatch {
                        headers: vec![HeaderMatch {
                            name: HeaderName::from_static("x-user"),
                            value: StringMatch::Exact("tester".into()),
                        }],
                        ..prefix("/reviews")
                    }],
                    vec![],
                    vec![backend("reviews-v2.shop", 1)],
                ),
                // Everyone else: 90/10, with a response header naming the split.
                rule(
                    vec![prefix("/reviews")],
                    vec![Filter::ResponseHeaderModifier(HeaderModifier {
                        add: vec![header("x-split", "90-10")],
                        ..HeaderModifier::default()
                    })],
                    vec![
                        backend("reviews-v1.shop", 90),
                        backend("reviews-v2.shop", 10),
                    ],
                ),
                // The old API path: rewritten, tagged, and copied to the shadow.
                rule(
                    vec![prefix("/old")],
                    vec![
                        Filter::RequestHeaderModifier(HeaderModifier {
                            set: vec![header("x-route", "legacy")],
                            remove: vec![HeaderName::from_static("x-drop-me")],
                            ..HeaderModifier::default()
                        }),
                        Filter::UrlRewrite(UrlRewrite {
                            hostname: None,
                            path: Some(PathModifier::ReplacePrefixMatch("/reviews".into())),
                        }),
                        Filter::RequestMirror(Mirror {
                            service_key: "shadow.shop".into(),
                            port: None,
                            percent: 100,
                        }),
                        // A mirror whose service does not exist: never seen
                        // by the caller.
                        Filter::RequestMirror(Mirror {
                            service_key: "ghost.shop".into(),
                            port: None,
                            percent: 100,
                        }),
                    ],
                    vec![backend("reviews-v1.shop", 1)],
                ),
                rule(
                    vec![prefix("/moved")],
                    vec![Filter::RequestRedirect(Redirect {
                        scheme: None,
                        hostname: Some("reviews.example".into()),
                        path: Some(PathModifier::ReplaceFullPath("/reviews".into())),
                        port: None,
                        status_code: StatusCode::MOVED_PERMANENTLY,
                    })],
                    vec![],
                ),
                rule(
                    vec![prefix("/broken")],
                    vec![Filter::Fault(Fault {
                        delay: None,
                        abort: Some(FaultAbort {
                            status: 418,
                            percent: 100.0,
                        }),
                    })],
                    vec![backend("reviews-v1.shop", 1)],
                ),
                rule(
                    vec![prefix("/nowhere")],
                    vec![],
                    vec![backend("missing.shop", 1)],
                ),
                rule(
                    vec![prefix("/weightless")],
                    vec![],
                    vec![backend("reviews-v1.shop", 0)],
                ),
                // A GatewayPolicy on a mesh route: no sidecar enforces it,
                // so none lets the requests through unchecked.
                rule(
                    vec![prefix("/guarded")],
                    vec![Filter::GatewayPolicy(partner_policy())],
                    vec![backend("reviews-v1.shop", 1)],
                ),
            ],
        }],
    }
}

/// Partners name themselves with an API key (`partner-key-1`).
fn partner_policy() -> Arc<GatewayPolicy> {
    use sha2::Digest;
    Arc::new(GatewayPolicy {
        name: "shop/partners".into(),
        jwt: None,
        api_keys: Some(ApiKeyAuth {
            header: HeaderName::from_static("x-api-key"),
            keys: vec![ApiKey {
                name: "partner-1".into(),
                sha256: sha2::Sha256::digest(b"partner-key-1").into(),
            }],
            forward_name_header: None,
        }),
        rate_limit: None,
        cors: None,
        max_request_body_bytes: None,
        cache: false,
        aggregate: None,
    })
}

/// The routes of the Gateway `shop-gw.shop`: the shop's public host to
/// v1 (its `/partners` only with an API key), any API host to v2.
fn gateway_routes() -> ServiceRoutes {
    let route = |name: &str, hostnames: Vec<String>, rules| Route {
        name: name.into(),
        kind: RouteKind::Http,
        ports: vec![],
        hostnames,
        listener: ListenerProtocol::Any,
        rules,
    };
    let to = |key: &str, p: &str| RouteRule {
        matches: vec![prefix(p)],
        filters: vec![],
        backends: vec![Backend {
            port: Some(PORT),
            ..backend(key, 1)
        }],
        timeout: None,
    };
    ServiceRoutes {
        routes: vec![
            route(
                "shop/www",
                vec!["shop.example".into()],
                vec![to("reviews-v1.shop", "/reviews"), {
                    let mut partners = to("reviews-v1.shop", "/partners");
                    partners.filters = vec![Filter::GatewayPolicy(partner_policy())];
                    partners
                }],
            ),
            route(
                "shop/api",
                vec!["*.api.example".into()],
                vec![to("reviews-v2.shop", "/")],
            ),
        ],
    }
}

async fn start() -> Mesh {
    mycel_test_support::init_tracing();
    let ca = TestCa::new("routes");
    let mut tasks = Vec::new();
    let v1 = workload(&ca, "reviews-v1", "v1", &mut tasks).await;
    let v2 = workload(&ca, "reviews-v2", "v2", &mut tasks).await;
    let shadow = workload(&ca, "shadow", "shadow", &mut tasks).await;
    let ServiceState::Known { endpoints, .. } = &v1.state else {
        unreachable!()
    };
    // The parent's own endpoints are v1's, as a Service selecting every
    // version would have; routed requests never use them directly.
    let parent = known("reviews", 1, endpoints.to_vec(), reviews_routes());
    let mut snapshot = Snapshot::default();
    for (key, state) in [
        ("reviews.shop", parent),
        ("reviews-v1.shop", v1.state),
        ("reviews-v2.shop", v2.state),
        ("shadow.shop", shadow.state),
        ("ghost.shop", ServiceState::NotFound),
        ("missing.shop", ServiceState::NotFound),
    ] {
        snapshot.services.insert(key.into(), state);
    }
    snapshot
        .gateway_routes
        .insert("shop-gw.shop".into(), Some(Arc::new(gateway_routes())));
    snapshot.gateway_routes.insert("gone-gw.shop".into(), None);
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(snapshot));
    tasks.push(tokio::spawn(async move { tx.closed().await }));
    let outbound = Arc::new(Outbound::new(OutboundContext {
        zone: String::new(),
        identity: ca.identity(&spiffe("productpage")),
        discovery: Discovery::new(rx, Subscriptions::default()),
        namespace: "shop".into(),
        cluster_domain: "cluster.local".into(),
        metrics: ProxyMetrics::new(&mut prometheus_client::registry::Registry::default()),
        pool: PoolSettings::from_limits(&Limits::default()),
    }));
    let http_listener = listen().await;
    let outbound_http = http_listener.local_addr().unwrap();
    tasks.push(tokio::spawn(
        outbound
            .clone()
            .serve_http(http_listener, Server::standalone(Limits::default())),
    ));
    let mut gateways = Vec::new();
    for key in ["shop-gw.shop", "later-gw.shop"] {
        let listener = listen().await;
        gateways.push(listener.local_addr().unwrap());
        tasks.push(tokio::spawn(gateway::serve(
            listener,
            gateway::Gateway::new(RouteSource::Gateway(key.into()), outbound.clone()),
            Server::standalone(Limits::default()),
        )));
    }
    Mesh {
        outbound_http,
        gateway: gateways[0],
        gateway_unanswered: gateways[1],
        v1: v1.seen,
        v2: v2.seen,
        shadow: shadow.seen,
        tasks,
    }
}

/// A keep-alive HTTP/1.1 client of the outbound proxy.
struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    async fn new(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client { sender }
    }

    async fn send(&mut self, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, String) {
        tokio::time::timeout(LIMIT, async {
            self.sender.ready().await.unwrap();
            let res = self.sender.send_request(req).await.unwrap();
            let (parts, body) = res.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            (
                parts.status,
                parts.headers,
                String::from_utf8_lossy(&body).into_owned(),
            )
        })
        .await
        .expect("answered in time")
    }

    async fn get(
        &mut self,
        path: &str,
        headers: &[(&'static str, &'static str)],
    ) -> (StatusCode, HeaderMap, String) {
        self.get_from("reviews:9080", path, headers).await
    }

    async fn get_from(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&'static str, &'static str)],
    ) -> (StatusCode, HeaderMap, String) {
        let mut b = Request::builder().uri(path).header("host", host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Full::default()).unwrap()).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testers_get_v2_and_everyone_else_splits_ninety_ten() {
    let mesh = start().await;
    let mut client = Client::new(mesh.outbound_http).await;
    for _ in 0..20 {
        let (status, _, body) = client.get("/reviews/1", &[("x-user", "tester")]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "v2 /reviews/1"));
    }
    let n = 2_000;
    let mut v2 = 0;
    for _ in 0..n {
        let (status, headers, body) = client.get("/reviews/1", &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers["x-split"], "90-10");
        if body.starts_with("v2") {
            v2 += 1;
        }
    }
    let share = f64::from(v2) / f64::from(n);
    // Three standard deviations of a 10% share over 2,000 requests.
    assert!((0.08..=0.12).contains(&share), "v2 share {share}");
    assert_eq!(
        mesh.v1.lock().unwrap().len() + mesh.v2.lock().unwrap().len(),
        20 + n as usize
    );
}

#[tokio::test]
async fn filters_rewrite_the_path_and_headers_and_mirror_a_copy() {
    let mesh = start().await;
    let mut client = Client::new(mesh.outbound_http).await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/old/7?full=1")
        .header("host", "reviews:9080")
        .header("x-drop-me", "secret")
        .body(Full::new(Bytes::from_static(b"{\"stars\":5}")))
        .unwrap();
    let (status, _, body) = client.send(req).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "v1 /reviews/7"));
    let seen = mesh.v1.lock().unwrap().clone();
    let (method, path, headers, got) = seen.last().unwrap();
    assert_eq!((method, path.as_str()), (&Method::POST, "/reviews/7"));
    assert_eq!(headers["x-route"], "legacy");
    assert!(headers.get("x-drop-me").is_none());
    assert_eq!(got.as_ref(), b"{\"stars\":5}");
    // The copy arrives on its own time; it carries the same rewritten
    // request and body.
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        if let Some((method, path, headers, got)) = mesh.shadow.lock().unwrap().last().cloned() {
            assert_eq!((method, path.as_str()), (Method::POST, "/reviews/7"));
            assert_eq!(headers["x-route"], "legacy");
            assert_eq!(got.as_ref(), b"{\"stars\":5}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mirror got no copy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_mirror_that_is_down_never_touches_the_callers_answer() {
    let mesh = start().await;
    let mut client = Client::new(mesh.outbound_http).await;
    // Every /old request is also copied to ghost.shop, which does not exist.
    for i in 0..50 {
        let (status, _, body) = client.get("/old/1", &[]).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "v1 /reviews/1"),
            "request {i}"
        );
    }
}

#[tokio::test]
async fn redirect_answers_without_reaching_a_backend() {
    let mesh = start().await;
    let mut client = Client::new(mesh.outbound_http).await;
    let (status, headers, _) = client.get("/moved/here", &[]).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(headers["location"], "http://reviews.example:9080/reviews");
    assert!(mesh.v1.lock().unwrap().is_empty() && mesh.v2.lock().unwrap().is_empty());
}

#[tokio::test]
async fn unmatched_requests_get_404_and_broken_rules_500_naming_why() {
    let mesh = start().await;
    let mut client = Client::new(mesh.outbound_http).await;
    let (status, headers, body) = client.get("/elsewhere", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(headers["mycel-proxy-error"], "no-route");
    assert!(
        body.contains("no route of reviews.shop port 9080 matches GET /elsewhere"),
        "{body}"
    );

    let (status, _, body) = client.get("/nowhere", &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        body.contains("backend missing.shop of route shop/reviews"),
        "{body}"
    );

    let (status, _, body) = client.get("/weightless", &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(body.contains("has no backend with a weight"), "{body}");

    // Even with the right key: the mesh route has nobody to check it.
    let (status, _, body) = client
        .get("/guarded", &[("x-api-key", "partner-key-1")])
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        body.contains("carries GatewayPolicy shop/partners, which only a gateway enforces"),
        "{body}"
    );
    assert!(mesh.v1.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_rule_fault_aborts_its_requests_only() {
    let mesh = start().await;
    let mut client = Client::new(mesh.outbound_http).await;
    let (status, headers, _) = client.get("/broken", &[]).await;
    assert_eq!(status.as_u16(), 418);
    assert_eq!(headers["mycel-proxy-error"], "fault");
    let (status, _, _) = client.get("/reviews/1", &[("x-user", "tester")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(mesh.v1.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_gateway_routes_by_its_gateway_routes_and_their_hostnames() {
    let mesh = start().await;
    let mut gw = Client::new(mesh.gateway).await;
    let (status, _, body) = gw.get_from("shop.example", "/reviews/3", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "v1 /reviews/3"));
    let (status, _, body) = gw.get_from("eu.api.example:8080", "/reviews/3", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "v2 /reviews/3"));
    // Dot-segments are resolved before matching: still the shop's
    // /reviews rule, still v1.
    let (status, _, body) = gw.get_from("shop.example", "/x/../reviews/4", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "v1 /reviews/4"));
    // No route for this host: 404, and an external caller is told no more.
    let (status, headers, body) = gw.get_from("other.example", "/reviews/3", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["mycel-proxy-error"], "no-route");
    assert!(!body.contains("shop-gw"), "{body}");
    // The apex is not covered by the wildcard.
    let (status, _, _) = gw.get_from("api.example", "/", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A rule with a GatewayPolicy: the gateway checks it, then routes.
    let (status, headers, _) = gw.get_from("shop.example", "/partners/1", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["mycel-proxy-error"], "unauthenticated");
    let (status, _, body) = gw
        .get_from(
            "shop.example",
            "/partners/1",
            &[("x-api-key", "partner-key-1")],
        )
        .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "v1 /partners/1"));
    let seen = mesh.v1.lock().unwrap();
    let (_, _, headers, _) = seen
        .iter()
        .find(|(_, path, _, _)| path == "/partners/1")
        .expect("v1 got the partner's request");
    assert!(
        headers.get("x-api-key").is_none(),
        "the key is a credential the backend never sees: {headers:?}"
    );
}

#[tokio::test]
async fn a_gateway_without_an_answer_for_its_gateway_is_unavailable() {
    let mesh = start().await;
    let mut gw = Client::new(mesh.gateway_unanswered).await;
    let (status, headers, _) = gw.get_from("shop.example", "/reviews/3", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["mycel-proxy-error"], "no-answer");
}
