//! The shop behind a tiny stand-in for the sidecar's outbound proxy: each
//! service gets its own forwarder that routes by `Host` / `:authority`
//! (exactly what the real sidecar receives) and stamps `x-mycel-peer-id`
//! with that service's identity, as the server-side sidecar would. Checks
//! that the services name each other the way the mesh expects and echo the
//! identity they saw.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mycel_demo::config::{ServiceConfig, ServiceKind, Version};
use mycel_demo::frontend::view::ProductsView;
use mycel_demo::upstream::{get_json, Upstreams};
use tokio::net::TcpListener;

fn identity(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/shop/sa/{sa}")
}

/// Authorities the forwarders were asked for, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// A forwarder for calls made by `caller`, routing authorities to backends.
async fn forwarder(caller: &str, routes: HashMap<String, SocketAddr>, seen: Seen) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let h1: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build_http();
    let h2: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let peer = identity(caller);
    let routes = Arc::new(routes);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (h1, h2, peer, routes, seen) = (
                h1.clone(),
                h2.clone(),
                peer.clone(),
                routes.clone(),
                seen.clone(),
            );
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let (h1, h2, peer, routes, seen) = (
                    h1.clone(),
                    h2.clone(),
                    peer.clone(),
                    routes.clone(),
                    seen.clone(),
                );
                async move {
                    let authority = req
                        .uri()
                        .authority()
                        .map(|a| a.to_string())
                        .or_else(|| {
                            req.headers()
                                .get(http::header::HOST)
                                .and_then(|h| h.to_str().ok())
                                .map(str::to_string)
                        })
                        .unwrap_or_default();
                    seen.lock().unwrap().push(authority.clone());
                    let backend = routes[&authority];
                    let path = req.uri().path_and_query().unwrap().clone();
                    *req.uri_mut() = Uri::builder()
                        .scheme("http")
                        .authority(backend.to_string())
                        .path_and_query(path)
                        .build()
                        .unwrap();
                    req.headers_mut()
                        .insert("x-mycel-peer-id", peer.parse().unwrap());
                    let client = if req.version() == http::Version::HTTP_2 {
                        h2
                    } else {
                        h1
                    };
                    Ok::<_, Infallible>(client.request(req).await.unwrap())
                }
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn serve(config: ServiceConfig) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(mycel_demo::run_with_listener(
        config,
        listener,
        std::future::pending(),
    ));
    addr
}

fn with_proxy(kind: ServiceKind, proxy: Option<SocketAddr>) -> ServiceConfig {
    let mut c = ServiceConfig::new(kind, "127.0.0.1:0".parse().unwrap());
    if let Some(addr) = proxy {
        c.upstreams = Upstreams::proxy(addr);
    }
    c
}

#[tokio::test]
async fn services_name_each_other_and_echo_the_caller() {
    let seen: Seen = Arc::default();
    let catalog = serve(with_proxy(ServiceKind::Catalog, None)).await;
    let ratings = serve(with_proxy(ServiceKind::Ratings, None)).await;
    let notifications = serve(with_proxy(ServiceKind::Notifications, None)).await;
    let reviews_proxy = forwarder(
        "reviews",
        [("ratings".to_string(), ratings)].into(),
        seen.clone(),
    )
    .await;
    let mut reviews_cfg = with_proxy(ServiceKind::Reviews, Some(reviews_proxy));
    reviews_cfg.version = Version::V2;
    let reviews = serve(reviews_cfg).await;
    let frontend_proxy = forwarder(
        "frontend",
        [
            ("catalog".to_string(), catalog),
            ("ratings".to_string(), ratings),
            ("reviews:9090".to_string(), reviews),
            ("notifications".to_string(), notifications),
        ]
        .into(),
        seen.clone(),
    )
    .await;
    let frontend = serve(with_proxy(ServiceKind::Frontend, Some(frontend_proxy))).await;

    let to_frontend = Upstreams::direct([("frontend".to_string(), frontend)]);
    let view: ProductsView = get_json(
        &to_frontend,
        "frontend",
        "/api/products",
        Duration::from_secs(10),
        &mycel_demo::trace::TraceHeaders::NONE,
    )
    .await
    .unwrap();
    assert!(!view.products.is_empty());
    assert!(view.calls.iter().all(|c| c.ok), "{:?}", view.calls);
    // Every service saw the frontend's identity...
    for call in &view.calls {
        assert_eq!(
            call.caller.as_deref(),
            Some(identity("frontend").as_str()),
            "{call:?}"
        );
    }
    // ...and ratings, asked by reviews v2, saw the reviews identity.
    for p in &view.products {
        assert_eq!(
            p.reviews_ratings_caller.as_deref(),
            Some(identity("reviews").as_str())
        );
        assert!(p.reviews.iter().all(|r| r.stars == p.stars));
    }
    // Notifications, by name like the others, saw the frontend too.
    assert_eq!(view.notifications.error, None);
    assert_eq!(
        view.notifications.caller.as_deref(),
        Some(identity("frontend").as_str())
    );
    let seen = seen.lock().unwrap().clone();
    for authority in ["catalog", "ratings", "reviews:9090", "notifications"] {
        assert!(
            seen.iter().any(|a| a == authority),
            "{authority} not in {seen:?}"
        );
    }
    assert!(seen
        .iter()
        .all(|a| ["catalog", "ratings", "reviews:9090", "notifications"].contains(&a.as_str())));
}
