//! Response aggregation at the gateway: a GatewayPolicy's `aggregate`
//! answers `/api/product-view/{id}` by asking the catalog and the ratings
//! (real demo apps behind real sidecars) in parallel and merging their
//! JSON. The ratings app is slow: as an optional part it is `null` and
//! named in `_partial` once its timeout passes, so the answer waits for
//! the timeout, not for the slow app; as a required part it fails the
//! answer with 504.

use std::time::{Duration, Instant};

use serde_json::Value;

use mycel_tests::gateway_yaml::{gateway, http_listener, path_prefix, route, rule};
use mycel_tests::http;
use mycel_tests::mesh::SidecarSpec;
use mycel_tests::shop::{mesh_yaml, workload};

const HOST: &str = "api.shop.example";

fn gateway_yaml() -> String {
    let view = |name: &str, required: bool| {
        format!(
            r#"---
apiVersion: mycel.io/v1alpha1
kind: GatewayPolicy
metadata: {{name: {name}, namespace: shop}}
spec:
  aggregate:
    parts:
      - {{name: product, backendRef: {{name: catalog, port: 80}}, path: "/products/{{last}}", timeout: 2s}}
      - {{name: rating, backendRef: {{name: ratings, port: 80}}, path: "/ratings/{{last}}", timeout: 300ms, required: {required}}}
"#
        )
    };
    let guarded = |prefix: &str, policy: &str| rule(&path_prefix(prefix), Some(policy), None);
    [
        gateway(&[http_listener("web", None)]),
        route("HTTPRoute", "api", None, &[HOST]),
        guarded("/api/product-view", "product-view"),
        guarded("/api/strict-view", "strict-view"),
        view("product-view", false),
        view("strict-view", true),
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregated_view_merges_its_parts_and_a_slow_optional_one_costs_only_its_timeout() {
    let mesh = mycel_tests::mesh::Mesh::start(&mesh_yaml(&gateway_yaml())).await;
    let _catalog = workload(&mesh, "catalog", "catalog", "http", &[], |s| s).await;
    let _ratings = workload(
        &mesh,
        "ratings",
        "ratings",
        "http",
        &["--latency-ms", "3000"],
        |s| s,
    )
    .await;
    let gateway = mesh
        .sidecar(SidecarSpec::new("gateway", "gateway").gateway("shop-gateway"))
        .await;
    let gw = gateway.listen();

    let deadline = Instant::now() + Duration::from_secs(20);
    let (started, got) = loop {
        let started = Instant::now();
        let got = http::get(gw, HOST, "/api/product-view/p1").await.unwrap();
        if got.status == 200 || Instant::now() > deadline {
            break (started, got);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = started.elapsed();
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(
        got.headers.get("mycel-aggregate").map(|v| v.as_bytes()),
        Some(&b"partial"[..])
    );
    let body: Value = got.json();
    assert_eq!(body["product"]["id"], "p1", "{body}");
    assert!(body["rating"].is_null(), "{body}");
    assert_eq!(body["_partial"][0]["part"], "rating", "{body}");
    assert_eq!(body["_partial"][0]["error"], "timeout", "{body}");
    assert!(
        took < Duration::from_millis(2500),
        "the slow optional part held the answer {took:?}"
    );

    // The same slow part, required: the whole answer is a 504.
    let got = http::get(gw, HOST, "/api/strict-view/p1").await.unwrap();
    assert_eq!(got.status, 504, "{}", got.body);
    let body: Value = got.json();
    assert_eq!(body["part"], "rating", "{body}");
    // Each part's result is counted, by policy and part.
    let metrics = gateway.metrics().await;
    for line in [
        r#"mycel_gateway_aggregate_parts_total{policy="shop/product-view",part="rating",result="timeout"}"#,
        r#"mycel_gateway_aggregate_parts_total{policy="shop/strict-view",part="rating",result="timeout"}"#,
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(line)),
            "{line} in\n{metrics}"
        );
    }
    assert!(
        metrics.lines().any(|l| l.starts_with(
            r#"mycel_gateway_aggregate_parts_total{policy="shop/product-view",part="product",result="ok"}"#
        )),
        "{metrics}"
    );

    // A last segment that would climb out of the part's path never gets
    // there: the gateway resolves dot segments before routing (here to
    // `/api/`, which no rule takes). An encoded `?` stays encoded: the
    // catalog is asked for the product `p1%3Fadmin=1`, which it does not
    // have, and never for `p1` with a query the client chose.
    let got = http::get(gw, HOST, "/api/product-view/%2e%2e")
        .await
        .unwrap();
    assert_eq!(got.status, 404, "{}", got.body);
    let got = http::get(gw, HOST, "/api/product-view/p1%3Fadmin=1")
        .await
        .unwrap();
    assert_eq!(got.status, 502, "{}", got.body);
    assert_eq!(got.json()["reason"], "status 404", "{}", got.body);
}
