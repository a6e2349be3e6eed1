//! Gateway API mesh routing (GAMMA) between real processes: the controller
//! reads HTTPRoute and GRPCRoute documents from mesh.yaml and pushes them;
//! a client sidecar routes calls for `ratings` and `reviews` to their
//! version Services, and each version's server sidecar counts what reached
//! it.

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use mycel_demo::proto::reviews::GetReviewsRequest;
use mycel_tests::grpc::reviews_via;
use mycel_tests::http;
use mycel_tests::mesh::{Mesh, Sidecar, SidecarSpec};
use mycel_tests::shop::{mesh_yaml, workload, Workload};

/// A Service selecting one version of `app`.
fn version_service(app: &str, version: &str, port: u16, proto: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {app}-{version}\n  namespace: shop\nspec:\n  selector:\n    app: {app}\n    version: {version}\n  ports:\n  - name: {proto}\n    port: {port}\n    targetPort: {}\n    appProtocol: {proto}\n",
        mycel_tests::mesh::APP_PORT
    )
}

/// The ratings split: `x-canary: yes` goes to v2, the rest `v1`/`v2` by
/// weight, with a response header naming the rule.
fn ratings_route(v1: u32, v2: u32) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: ratings-split
  namespace: shop
spec:
  parentRefs:
  - {{group: "", kind: Service, name: ratings, port: 80}}
  rules:
  - matches:
    - headers:
      - {{name: x-canary, value: "yes"}}
    backendRefs:
    - {{name: ratings-v2, port: 80}}
  - filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set:
        - {{name: x-route, value: split}}
    backendRefs:
    - {{name: ratings-v1, port: 80, weight: {v1}}}
    - {{name: ratings-v2, port: 80, weight: {v2}}}
"#
    )
}

fn ratings_mesh(v1: u32, v2: u32) -> String {
    mesh_yaml(&format!(
        "{}{}{}",
        version_service("ratings", "v1", 80, "http"),
        version_service("ratings", "v2", 80, "http"),
        ratings_route(v1, v2)
    ))
}

async fn ratings_version(mesh: &Mesh, version: &str) -> Workload {
    workload(
        mesh,
        &format!("ratings-{version}"),
        "ratings",
        "http",
        &[],
        |s| s.label("version", version),
    )
    .await
}

/// Waits until the client's snapshot holds routes for `service` that
/// `holds` accepts.
async fn wait_routes(client: &Sidecar, service: &str, holds: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dump = client.admin_json("/config_dump").await;
        let routes = &dump["snapshot"]["services"][service]["routes"];
        if holds(routes) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the client never got the routes of {service}; it holds {routes}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn weights(routes: &serde_json::Value) -> Vec<u64> {
    routes["routes"][0]["rules"][1]["backends"]
        .as_array()
        .map(|b| b.iter().filter_map(|b| b["weight"].as_u64()).collect())
        .unwrap_or_default()
}

/// `count` GETs of ratings through `client`, `concurrency` at a time; how
/// many answered 200 with the split rule's header. Stops after 180 s.
async fn load(client: &Sidecar, count: u64, concurrency: usize, headers: &[(&str, &str)]) -> u64 {
    let started = Instant::now();
    let outbound = client.outbound();
    let oks: Vec<bool> = stream::iter(0..count)
        .map(|i| async move {
            if started.elapsed() > Duration::from_secs(180) {
                return false;
            }
            let path = format!("/ratings/{}", i % 50 + 1);
            match http::request(outbound, "ratings", &path, headers).await {
                Ok(r) => r.status == 200,
                Err(_) => false,
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    oks.into_iter().filter(|ok| *ok).count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_route_splits_ninety_ten_over_ten_thousand_requests() {
    let mesh = Mesh::start(&ratings_mesh(90, 10)).await;
    let v1 = ratings_version(&mesh, "v1").await;
    let v2 = ratings_version(&mesh, "v2").await;
    let client = mesh.sidecar(SidecarSpec::new("client", "frontend")).await;
    let first = http::get(client.outbound(), "ratings", "/ratings/1")
        .await
        .unwrap();
    assert_eq!(first.status, 200, "{}", first.body);
    wait_routes(&client, "ratings.shop", |r| weights(r) == [90, 10]).await;
    let routed = http::get(client.outbound(), "ratings", "/ratings/1")
        .await
        .unwrap();
    assert_eq!(routed.headers["x-route"], "split");

    let before = (
        v1.sidecar.served_inbound().await,
        v2.sidecar.served_inbound().await,
    );
    let n = 10_000;
    assert_eq!(load(&client, n, 16, &[]).await, n);
    let got1 = v1.sidecar.served_inbound().await - before.0;
    let got2 = v2.sidecar.served_inbound().await - before.1;
    assert_eq!(got1 + got2, n, "v1 {got1}, v2 {got2}");
    let share = got2 as f64 / n as f64;
    assert!(
        (0.08..=0.12).contains(&share),
        "v2 got {share} of the requests"
    );

    // A header match wins over the split.
    let before2 = v2.sidecar.served_inbound().await;
    assert_eq!(load(&client, 200, 8, &[("x-canary", "yes")]).await, 200);
    assert_eq!(v2.sidecar.served_inbound().await - before2, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_change_applies_without_a_restart() {
    let mesh = Mesh::start(&ratings_mesh(100, 0)).await;
    let v1 = ratings_version(&mesh, "v1").await;
    let v2 = ratings_version(&mesh, "v2").await;
    let client = mesh.sidecar(SidecarSpec::new("client", "frontend")).await;
    let _ = http::get(client.outbound(), "ratings", "/ratings/1").await;
    wait_routes(&client, "ratings.shop", |r| weights(r) == [100, 0]).await;
    assert_eq!(load(&client, 100, 4, &[]).await, 100);
    assert_eq!(v2.sidecar.served_inbound().await, 0);

    mesh.write_mesh_yaml(&ratings_mesh(0, 100));
    wait_routes(&client, "ratings.shop", |r| weights(r) == [0, 100]).await;
    let before = v1.sidecar.served_inbound().await;
    assert_eq!(load(&client, 100, 4, &[]).await, 100);
    assert_eq!(v2.sidecar.served_inbound().await, 100);
    assert_eq!(v1.sidecar.served_inbound().await, before);

    // An invalid route is refused and the last good one stays.
    mesh.write_mesh_yaml(
        &ratings_mesh(0, 100).replace("port: 80, weight: 100", "port: 80, weight: -1"),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(load(&client, 20, 4, &[]).await, 20);
    assert_eq!(v2.sidecar.served_inbound().await, 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_route_picks_the_backend_by_method_and_header() {
    let route = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: reviews-canary
  namespace: shop
spec:
  parentRefs:
  - {group: "", kind: Service, name: reviews, port: 9090}
  rules:
  - matches:
    - method: {service: shop.v1.Reviews, method: GetReviews}
      headers:
      - {name: x-canary, value: "yes"}
    backendRefs:
    - {name: reviews-v2, port: 9090}
  - backendRefs:
    - {name: reviews-v1, port: 9090}
"#;
    let mesh = Mesh::start(&mesh_yaml(&format!(
        "{}{}{route}",
        version_service("reviews", "v1", 9090, "grpc"),
        version_service("reviews", "v2", 9090, "grpc"),
    )))
    .await;
    let reviews = |version: &'static str| {
        let mesh = &mesh;
        async move {
            workload(
                mesh,
                &format!("reviews-{version}"),
                "reviews",
                "grpc",
                &["--version", version],
                |s| s.label("version", version),
            )
            .await
        }
    };
    let _v1 = reviews("v1").await;
    let _v2 = reviews("v2").await;
    let client = mesh.sidecar(SidecarSpec::new("client", "frontend")).await;
    let mut rc = reviews_via(client.outbound()).await;
    let call = |canary: bool| {
        let mut req = tonic::Request::new(GetReviewsRequest {
            product_id: "1".into(),
        });
        if canary {
            req.metadata_mut()
                .insert("x-canary", "yes".parse().unwrap());
        }
        req
    };
    // The first call subscribes the client; wait for the routes.
    let _ = rc.get_reviews(call(false)).await;
    wait_routes(&client, "reviews.shop", |r| {
        r["routes"][0]["kind"] == "grpc"
    })
    .await;
    for _ in 0..20 {
        let plain = rc.get_reviews(call(false)).await.unwrap().into_inner();
        assert_eq!(plain.version, "v1");
        let canary = rc.get_reviews(call(true)).await.unwrap().into_inner();
        assert_eq!(canary.version, "v2");
    }
}
