//! Discovery scoped to what a workload may reach, between real processes:
//! the controller limits what proxies discover (`--discovery-namespaces`),
//! a workload narrows it with its `mycel.io/discovery-namespaces` label,
//! and a service out of scope is as unknown to the proxy as one that does
//! not exist: its calls get "unknown service" and its `/config_dump` holds
//! nothing of it, not even its VIP.

use mycel_tests::http;
use mycel_tests::mesh::{Mesh, Sidecar, SidecarSpec, APP_PORT};
use mycel_tests::shop::workload;

const SCOPE: &str = "mycel.io/discovery-namespaces";
const BILLING_VIP: &str = "198.19.7.7";
const OPS_VIP: &str = "198.19.7.8";

/// `ratings` in namespaces billing and ops, each with a VIP.
fn mesh_yaml() -> String {
    [("billing", BILLING_VIP), ("ops", OPS_VIP)]
        .iter()
        .map(|(ns, vip)| {
            format!(
                "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: ratings\n  namespace: {ns}\nspec:\n  clusterIP: {vip}\n  selector:\n    app: ratings\n  ports:\n  - name: http\n    port: 80\n    targetPort: {APP_PORT}\n    appProtocol: http\n"
            )
        })
        .collect()
}

fn in_namespace(mut spec: SidecarSpec, ns: &str) -> SidecarSpec {
    spec.namespace = ns.into();
    spec
}

/// A proxy's snapshot as its admin shows it.
async fn snapshot(proxy: &Sidecar) -> serde_json::Value {
    proxy.admin_json("/config_dump").await["snapshot"].clone()
}

fn vips(snapshot: &serde_json::Value) -> String {
    snapshot["vips"].to_string()
}

/// Asserts a call through `proxy` to `host` is answered "unknown service".
async fn unknown(proxy: &Sidecar, host: &str) {
    let r = http::get(proxy.outbound(), host, "/ratings/1")
        .await
        .unwrap();
    assert_eq!(r.status, 503, "{host}: {}", r.body);
    assert!(r.body.contains("unknown service"), "{host}: {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_discovers_only_the_namespaces_of_its_scope() {
    let mesh = Mesh::start_with(&mesh_yaml(), &["--discovery-namespaces", "billing"]).await;
    let _billing = workload(&mesh, "ratings-b", "ratings", "http", &[], |s| {
        in_namespace(s, "billing")
    })
    .await;
    let _ops = workload(&mesh, "ratings-o", "ratings", "http", &[], |s| {
        in_namespace(s, "ops")
    })
    .await;
    let narrow = mesh
        .sidecar(SidecarSpec::new("narrow-0", "narrow").label(SCOPE, "shop"))
        .await;
    let wide = mesh
        .sidecar(SidecarSpec::new("wide-0", "wide").label(SCOPE, "shop,billing,ops"))
        .await;

    // Positive control: the mesh setting and its label let it reach billing.
    let ok = http::get(wide.outbound(), "ratings.billing", "/ratings/1")
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.body);
    // Its label cannot widen what the mesh setting leaves out.
    unknown(&wide, "ratings.ops").await;
    let seen = snapshot(&wide).await;
    assert_eq!(
        seen["services"]["ratings.billing"]["state"], "known",
        "{seen}"
    );
    assert!(vips(&seen).contains(BILLING_VIP), "{seen}");
    assert!(!vips(&seen).contains(OPS_VIP), "{seen}");

    // Scoped to its own namespace: billing is as unknown as a service that
    // does not exist.
    unknown(&narrow, "ratings.billing").await;
    unknown(&narrow, "nosuch.billing").await;
    let mut seen = snapshot(&narrow).await;
    for key in ["ratings.billing", "nosuch.billing"] {
        let services = seen["services"].as_object_mut().unwrap();
        assert_eq!(services[key]["state"], "not_found", "{key}: {services:?}");
        services.remove(key);
        // The not_found answer's version, which names only the key.
        let versions = seen["versions"].as_object_mut().unwrap();
        assert!(versions.remove(&format!("service/{key}")).is_some());
    }
    // Nothing else in its snapshot names billing or ops: no endpoints, no
    // SPIFFE IDs, no VIPs.
    let text = seen.to_string();
    for hidden in ["billing", ".ops", "ns/ops", BILLING_VIP, OPS_VIP] {
        assert!(!text.contains(hidden), "{hidden} in {text}");
    }
}
