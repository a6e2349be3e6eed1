//! Runs the four services in-process on loopback, wired with `--direct`
//! overrides instead of a mesh, and checks what the frontend aggregates and
//! that the reviews streams end with the requested status.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::net::SocketAddr;
use std::time::Duration;

use mycel_demo::config::{ServiceConfig, ServiceKind, Version};
use mycel_demo::faults::FaultConfig;
use mycel_demo::frontend::view::{CatalogFailed, ProductsView};
use mycel_demo::proto::reviews::reviews_client::ReviewsClient;
use mycel_demo::proto::reviews::{ChatMessage, StreamReviewsRequest};
use mycel_demo::trace::TraceHeaders;
use mycel_demo::upstream::{get, get_json, Target, Upstreams};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The tests' calls start no trace.
static NO_TRACE: &TraceHeaders = &mycel_demo::trace::NO_TRACE;

const TIMEOUT: Duration = Duration::from_secs(10);

struct Running {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start(config: ServiceConfig) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        mycel_demo::run_with_listener(config, listener, shutdown)
            .await
            .unwrap();
    });
    Running { addr, _stop: stop }
}

fn direct(pairs: &[(&str, SocketAddr)]) -> Upstreams {
    Upstreams::direct(pairs.iter().map(|(n, a)| (n.to_string(), *a)))
}

fn config(kind: ServiceKind, upstreams: Upstreams) -> ServiceConfig {
    let mut c = ServiceConfig::new(kind, "127.0.0.1:0".parse().unwrap());
    c.upstreams = upstreams;
    c
}

struct Shop {
    frontend: Running,
    reviews: Running,
    _others: Vec<Running>,
}

async fn shop(catalog_faults: FaultConfig) -> Shop {
    let mut catalog_cfg = config(ServiceKind::Catalog, Upstreams::default());
    catalog_cfg.faults = catalog_faults;
    let catalog = start(catalog_cfg).await;
    let ratings = start(config(ServiceKind::Ratings, Upstreams::default())).await;
    let mut reviews_cfg = config(ServiceKind::Reviews, direct(&[("ratings", ratings.addr)]));
    reviews_cfg.version = Version::V2;
    let reviews = start(reviews_cfg).await;
    let frontend = start(config(
        ServiceKind::Frontend,
        direct(&[
            ("catalog", catalog.addr),
            ("reviews", reviews.addr),
            ("ratings", ratings.addr),
        ]),
    ))
    .await;
    Shop {
        frontend,
        reviews,
        _others: vec![catalog, ratings],
    }
}

#[tokio::test]
async fn frontend_aggregates_catalog_reviews_and_ratings() {
    let shop = shop(FaultConfig::default()).await;
    let to_frontend = direct(&[("frontend", shop.frontend.addr)]);
    let view: ProductsView = get_json(&to_frontend, "frontend", "/api/products", TIMEOUT, NO_TRACE)
        .await
        .unwrap();
    assert_eq!(view.products.len(), mycel_demo::catalog::products().len());
    for p in &view.products {
        assert_eq!(p.reviews.len(), 2, "{p:?}");
        assert_eq!(p.stars, Some(mycel_demo::ratings::stars(&p.id)));
        assert_eq!(p.reviews_version.as_deref(), Some("v2"));
        // v2 reviews got their stars from ratings.
        assert!(p.reviews.iter().all(|r| r.stars == p.stars), "{p:?}");
    }
    assert_eq!(view.calls.len(), 1 + 2 * view.products.len());
    assert_eq!(view.calls[0].service, "catalog");
    assert!(view.calls.iter().all(|c| c.ok), "{:?}", view.calls);
    // No sidecar in front of the services: nobody vouched for a caller.
    assert!(view.calls.iter().all(|c| c.caller.is_none()));

    let route = to_frontend.route("frontend", 80).unwrap();
    let (status, body) = get(&route, "frontend", "/", NO_TRACE).await.unwrap();
    assert_eq!(status, 200);
    let page = String::from_utf8(body.to_vec()).unwrap();
    assert!(page.contains("Oyster mushroom grow kit"), "{page}");
    let (status, _) = get(&route, "frontend", "/healthz", NO_TRACE).await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn failing_catalog_is_a_502_with_the_call_reported() {
    let shop = shop(FaultConfig {
        error_rate: 1.0,
        ..FaultConfig::default()
    })
    .await;
    let route = direct(&[("frontend", shop.frontend.addr)])
        .route("frontend", 80)
        .unwrap();
    let (status, body) = get(&route, "frontend", "/api/products", NO_TRACE)
        .await
        .unwrap();
    assert_eq!(status, 502);
    let failed: CatalogFailed = serde_json::from_slice(&body).unwrap();
    assert_eq!(failed.calls.len(), 1);
    assert!(!failed.calls[0].ok);
    assert!(failed.error.contains("503"), "{}", failed.error);
    assert!(failed.error.contains("injected fault"), "{}", failed.error);
}

#[tokio::test]
async fn stream_reviews_ends_with_requested_status_and_chat_echoes() {
    let shop = shop(FaultConfig::default()).await;
    let channel = direct(&[("reviews", shop.reviews.addr)])
        .grpc_channel("reviews", 9090, TIMEOUT)
        .unwrap();
    let mut client = ReviewsClient::new(channel);

    let mut stream = client
        .stream_reviews(StreamReviewsRequest {
            product_id: "p1".into(),
            count: 3,
            final_status_code: tonic::Code::FailedPrecondition as i32,
            final_message: "that is all".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = 0;
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => got += 1,
            Ok(None) => panic!("stream ended OK, wanted FAILED_PRECONDITION"),
            Err(status) => break status,
        }
    };
    assert_eq!(got, 3);
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(status.message(), "that is all");

    let mut ok_stream = client
        .stream_reviews(StreamReviewsRequest {
            product_id: "p1".into(),
            count: 2,
            final_status_code: 0,
            final_message: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok_stream.message().await.unwrap().is_some());
    assert!(ok_stream.message().await.unwrap().is_some());
    assert!(ok_stream.message().await.unwrap().is_none());

    let outbound = futures::stream::iter((1..=3).map(|i| ChatMessage {
        sequence: 0,
        text: format!("hello {i}"),
        caller: String::new(),
    }));
    let mut request = tonic::Request::new(outbound);
    request.metadata_mut().insert(
        "x-mycel-peer-id",
        "spiffe://test/ns/shop/sa/t".parse().unwrap(),
    );
    let mut echoes = client.chat(request).await.unwrap().into_inner();
    for i in 1..=3u64 {
        let m = echoes.message().await.unwrap().unwrap();
        assert_eq!(m.sequence, i);
        assert_eq!(m.text, format!("hello {i}"));
        assert_eq!(m.caller, "spiffe://test/ns/shop/sa/t");
    }
    assert!(echoes.message().await.unwrap().is_none());
}

/// `--direct NAME=HOST:PORT` with host names, as in a cluster where every
/// service is a DNS name: `localhost` (from /etc/hosts, no DNS server
/// needed) for each, over HTTP and gRPC. Reviews answers `/healthz` on its
/// `--health` listener while its own port speaks only gRPC.
#[tokio::test]
async fn services_reach_each_other_by_host_name() {
    let by_name = |pairs: &[(&str, SocketAddr)]| {
        Upstreams::direct(pairs.iter().map(|(n, a)| {
            let target = Target::Host {
                host: "localhost".into(),
                port: a.port(),
            };
            (n.to_string(), target)
        }))
    };
    let catalog = start(config(ServiceKind::Catalog, Upstreams::default())).await;
    let ratings = start(config(ServiceKind::Ratings, Upstreams::default())).await;
    let health = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut reviews_cfg = config(ServiceKind::Reviews, by_name(&[("ratings", ratings.addr)]));
    reviews_cfg.version = Version::V2;
    reviews_cfg.health = Some(health);
    let reviews = start(reviews_cfg).await;
    let frontend = start(config(
        ServiceKind::Frontend,
        by_name(&[
            ("catalog", catalog.addr),
            ("reviews", reviews.addr),
            ("ratings", ratings.addr),
        ]),
    ))
    .await;

    let view: ProductsView = get_json(
        &by_name(&[("frontend", frontend.addr)]),
        "frontend",
        "/api/products",
        TIMEOUT,
        NO_TRACE,
    )
    .await
    .unwrap();
    assert!(view.calls.iter().all(|c| c.ok), "{:?}", view.calls);
    assert!(view
        .products
        .iter()
        .all(|p| p.reviews_version.as_deref() == Some("v2")
            && p.reviews.iter().all(|r| r.stars == p.stars)));

    // The spawned service binds its health listener itself, maybe after
    // `start` returned: retry briefly.
    let route = direct(&[("reviews", health)]).route("reviews", 80).unwrap();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let status = loop {
        match get(&route, "reviews", "/healthz", NO_TRACE).await {
            Ok((status, _)) => break status,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("reviews --health: {e}"),
        }
    };
    assert_eq!(status, 200);
    let (status, _) = get(&route, "reviews", "/products", NO_TRACE).await.unwrap();
    assert_eq!(status, 404);
}
