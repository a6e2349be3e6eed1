//! AuthorizationPolicy objects through a real kube-apiserver: the mesh
//! CRDs installed, the controller running as a ServiceAccount bound to
//! exactly `rbac::REQUIRED` (so its watch and status writes prove the
//! rights suffice). A policy reaches the sidecar of the workload it selects
//! and reads `Accepted`; an invalid update is `Invalid` naming the field
//! while the sidecar keeps the last valid version; a deleted policy leaves
//! the sidecar. PeerAuthentication objects the same way, resolved per port.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::Api;
use mycel_crds::{AuthorizationPolicy, PeerAuthentication};
use mycel_tests::k8s;
use mycel_tests::mesh::{Mesh, Sidecar, SidecarSpec};
use serde_json::{json, Value};

use super::k8s::{create, sa_token, seed};
use super::k8s_policy::{install_crds, poll};

const NS: &str = "shop";
const LIMIT: Duration = Duration::from_secs(20);

fn policy(service_account: &str) -> Value {
    json!({
        "apiVersion": "mycel.io/v1alpha1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "web-callers"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "rules": [{"from": [{"serviceAccounts": [service_account]}]}],
        },
    })
}

/// The service accounts of the sidecar's policy `name`, once it holds it;
/// `None` in `want` waits until it holds no such policy.
async fn wait_held(sidecar: &Sidecar, name: &str, want: Option<&str>) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let dump = sidecar.admin_json("/config_dump").await;
        let policies = dump["snapshot"]["inbound"]["policies"].clone();
        let held = policies
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .map(|p| p["rules"][0]["from"][0]["serviceAccounts"][0].clone());
        let ok = match (want, &held) {
            // Only once the controller sent a policy at all.
            (None, None) => dump["snapshot"]["inbound"].is_object(),
            (Some(sa), Some(v)) => v == sa,
            _ => false,
        };
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the sidecar never held {name} = {want:?}; it holds {policies}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn accepted(
    api: &Api<AuthorizationPolicy>,
    generation: i64,
) -> Option<(String, String, String)> {
    let p = api.get("web-callers").await.ok()?;
    let c = p
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Accepted" && c.observed_generation == Some(generation))?;
    Some((c.status, c.reason, c.message))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_policies_reach_the_selected_sidecar_and_report_accepted_and_invalid() {
    if !k8s::available() {
        return;
    }
    let (api, admin, _controller) = super::k8s_ca::cluster().await;
    install_crds(&admin).await;
    // Pods are not needed: sidecars prove their service account with a
    // token and name their labels; seed creates the accounts of its pods.
    seed(&admin, &[("web-0", "web"), ("other-0", "other")]).await;
    let controller_kubeconfig = api.dir().join("kubeconfig-mycel-controller");
    let mesh = Mesh::start_kubernetes(&controller_kubeconfig, &[]).await;
    let policies: Api<AuthorizationPolicy> = Api::namespaced(admin.clone(), NS);

    // The Pods' labels, not what a proxy says, choose its policies: the
    // seeded Pods are labelled app=web; other-0 is relabelled app=other
    // and its proxy claims app=web.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(admin.clone(), NS);
    let relabel = json!({"metadata": {"labels": {"app": "other"}}});
    pods.patch("other-0", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    let _: AuthorizationPolicy = create(&admin, Some(NS), policy("shop/frontend")).await;
    let token = sa_token(&admin, mesh.dir.path(), "web", "mycel").await;
    let web = mesh
        .sidecar(SidecarSpec::new("web-0", "web").token_file(token))
        .await;
    let other_token = sa_token(&admin, mesh.dir.path(), "other", "mycel").await;
    let other = mesh
        .sidecar(
            SidecarSpec::new("other-0", "other")
                .label("app", "web")
                .token_file(other_token),
        )
        .await;
    wait_held(&web, "shop/web-callers", Some("shop/frontend")).await;
    let (status, reason, _) = poll("web-callers Accepted", || accepted(&policies, 1)).await;
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Accepted"));
    // A workload the selector does not match gets no such policy, whatever
    // its proxy claims.
    wait_held(&other, "shop/web-callers", None).await;

    // An update the schema lets through but the controller refuses: the
    // status names the field and the sidecar keeps the valid version.
    let patch = json!({"spec": {"rules": [{"from": [{"serviceAccounts": ["frontend"]}]}]}});
    policies
        .patch(
            "web-callers",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let (status, reason, message) = poll("web-callers Invalid", || accepted(&policies, 2)).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "Invalid"),
        "{message}"
    );
    assert!(
        message.contains("spec.rules[0].from[0].serviceAccounts[0]")
            && message.contains("generation 1"),
        "{message}"
    );
    wait_held(&web, "shop/web-callers", Some("shop/frontend")).await;

    // A valid update applies; a delete removes it.
    let patch = json!({"spec": {"rules": [{"from": [{"serviceAccounts": ["shop/checkout"]}]}]}});
    policies
        .patch(
            "web-callers",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    wait_held(&web, "shop/web-callers", Some("shop/checkout")).await;
    policies
        .delete("web-callers", &DeleteParams::default())
        .await
        .unwrap();
    wait_held(&web, "shop/web-callers", None).await;
    drop(api);
}

/// The sidecar's resolved peer authentication, as `(mode, policy)` of the
/// workload and of `port`.
async fn held_modes(sidecar: &Sidecar, port: u16) -> (Value, Value) {
    let dump = sidecar.admin_json("/config_dump").await;
    let peer = &dump["snapshot"]["inbound"]["peerAuthentication"];
    let workload = json!([peer["mode"]["mode"], peer["mode"]["policy"]]);
    let on_port = peer["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"] == port)
        .map_or(Value::Null, |p| json!([p["mode"], p["policy"]]));
    (workload, on_port)
}

async fn wait_modes(sidecar: &Sidecar, port: u16, want: (Value, Value)) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = held_modes(sidecar, port).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the sidecar never held {want:?}; it holds {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_authentications_resolve_per_port_and_report_accepted_and_invalid() {
    if !k8s::available() {
        return;
    }
    let (api, admin, _controller) = super::k8s_ca::cluster().await;
    install_crds(&admin).await;
    seed(&admin, &[("web-0", "web")]).await;
    let controller_kubeconfig = api.dir().join("kubeconfig-mycel-controller");
    let mesh = Mesh::start_kubernetes(&controller_kubeconfig, &[]).await;
    let peer: Api<PeerAuthentication> = Api::namespaced(admin.clone(), NS);
    let token = sa_token(&admin, mesh.dir.path(), "web", "mycel").await;
    let web = mesh
        .sidecar(SidecarSpec::new("web-0", "web").token_file(token))
        .await;

    let _: PeerAuthentication = create(
        &admin,
        Some(NS),
        json!({
            "apiVersion": "mycel.io/v1alpha1", "kind": "PeerAuthentication",
            "metadata": {"name": "shop-strict"},
            "spec": {"mtls": {"mode": "STRICT"}},
        }),
    )
    .await;
    let _: PeerAuthentication = create(
        &admin,
        Some(NS),
        json!({
            "apiVersion": "mycel.io/v1alpha1", "kind": "PeerAuthentication",
            "metadata": {"name": "web-metrics"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "portLevelMtls": {"9102": {"mode": "PERMISSIVE"}},
            },
        }),
    )
    .await;
    wait_modes(
        &web,
        9102,
        (
            json!(["STRICT", "shop/shop-strict"]),
            json!(["PERMISSIVE", "shop/web-metrics"]),
        ),
    )
    .await;
    let accepted_peer = |name: &'static str, generation: i64| {
        let peer = peer.clone();
        async move {
            let c = peer
                .get(name)
                .await
                .ok()?
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Accepted" && c.observed_generation == Some(generation))?;
            Some((c.status, c.reason, c.message))
        }
    };
    let (status, _, _) = poll("web-metrics Accepted", || accepted_peer("web-metrics", 1)).await;
    assert_eq!(status, "True");

    // A key that is not a port is refused by the API server itself.
    let bad_key = peer
        .patch(
            "web-metrics",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"portLevelMtls": {"metrics": {"mode": "STRICT"}}}})),
        )
        .await
        .unwrap_err();
    assert!(
        bad_key
            .to_string()
            .contains("portLevelMtls keys are port numbers"),
        "{bad_key}"
    );
    // A port entry without a mode passes the schema; the controller
    // refuses it, names the field and keeps the valid version.
    let patch = json!({"spec": {"portLevelMtls": {"9102": {"mode": "UNSET"}}}});
    peer.patch(
        "web-metrics",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap();
    let (status, reason, message) =
        poll("web-metrics Invalid", || accepted_peer("web-metrics", 2)).await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Invalid"));
    assert!(
        message.contains(r#"spec.portLevelMtls["9102"].mode"#) && message.contains("generation 1"),
        "{message}"
    );
    wait_modes(
        &web,
        9102,
        (
            json!(["STRICT", "shop/shop-strict"]),
            json!(["PERMISSIVE", "shop/web-metrics"]),
        ),
    )
    .await;

    // Deleting both leaves nothing set: the sidecar's own flag applies.
    for name in ["web-metrics", "shop-strict"] {
        peer.delete(name, &DeleteParams::default()).await.unwrap();
    }
    wait_modes(&web, 9102, (json!([null, null]), Value::Null)).await;
    drop(api);
}
