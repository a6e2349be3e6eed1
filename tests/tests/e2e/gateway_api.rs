//! A gateway proxy serving a Gateway's routes (`--gateway`): a Gateway and
//! HTTPRoutes in mesh.yaml route real requests through a real gateway
//! process to real apps by host and path, a route change applies without
//! a restart, and a host no route takes is 404.

use std::time::Duration;

use mycel_tests::gateway_yaml::{gateway, http_listener, path_prefix, route, rule};
use mycel_tests::http;
use mycel_tests::mesh::{spiffe, Mesh, Sidecar, SidecarSpec};
use mycel_tests::shop::{mesh_yaml, workload};

/// The Gateway and two routes; `store_host` is the catalog route's
/// hostname.
fn gateway_yaml(store_host: &str) -> String {
    [
        gateway(&[http_listener("web", Some("*.shop.example"))]),
        route("HTTPRoute", "store", Some("web"), &[store_host]),
        rule(&path_prefix("/products"), None, Some(("catalog", 80))),
        route(
            "HTTPRoute",
            "ratings",
            None,
            &["ratings.shop.example", "ratings.elsewhere.example"],
        ),
        rule(&path_prefix("/ratings"), None, Some(("ratings", 80))),
    ]
    .concat()
}

/// Status of `GET host path` through the gateway.
async fn status(gw: &Sidecar, host: &str, path: &str) -> u16 {
    http::get(gw.listen(), host, path)
        .await
        .map(|r| r.status)
        .unwrap_or(0)
}

/// Waits until `GET host path` answers `want`.
async fn wait_status(gw: &Sidecar, host: &str, path: &str, want: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut last = 0;
    while tokio::time::Instant::now() < deadline {
        last = status(gw, host, path).await;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "GET {host}{path} through the gateway: {last}, want {want}\n{}",
        gw.proc.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_routes_from_mesh_yaml_route_by_host_and_path_and_follow_changes() {
    let mesh = Mesh::start(&mesh_yaml(&gateway_yaml("catalog.shop.example"))).await;
    let _catalog = workload(&mesh, "catalog", "catalog", "http", &[], |s| s).await;
    let _ratings = workload(&mesh, "ratings", "ratings", "http", &[], |s| s).await;
    let gw = mesh
        .sidecar(SidecarSpec::new("gateway", "gateway").gateway("shop-gateway"))
        .await;
    let pid = gw.proc.pid();

    // By host and path, to real apps over the mesh.
    wait_status(&gw, "catalog.shop.example", "/products", 200).await;
    let r = http::get(gw.listen(), "ratings.shop.example", "/ratings/p1")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["caller"],
        spiffe("shop", "gateway"),
        "ratings sees the gateway's verified identity: {}",
        r.body
    );
    // The path decides within a host; a host no route takes is 404, as
    // is a route hostname the listener does not serve.
    assert_eq!(
        status(&gw, "catalog.shop.example", "/ratings/p1").await,
        404
    );
    assert_eq!(status(&gw, "nobody.shop.example", "/products").await, 404);
    assert_eq!(
        status(&gw, "ratings.elsewhere.example", "/ratings/p1").await,
        404
    );

    // The controller sent the Gateway's routes, hostnames cut to the
    // listener's.
    let dump = gw.admin_json("/config_dump").await;
    let routes = &dump["snapshot"]["gateway_routes"]["shop-gateway.shop"];
    assert!(!routes.is_null(), "no gateway routes in {dump}");
    let text = routes.to_string();
    assert!(text.contains("catalog.shop.example"), "{text}");
    assert!(!text.contains("elsewhere"), "{text}");

    // A route change in mesh.yaml applies without a restart.
    mesh.write_mesh_yaml(&mesh_yaml(&gateway_yaml("store.shop.example")));
    wait_status(&gw, "store.shop.example", "/products", 200).await;
    wait_status(&gw, "catalog.shop.example", "/products", 404).await;
    assert_eq!(gw.proc.pid(), pid, "the gateway was not restarted");
}
