//! Discovery scope through a real kube-apiserver: a Pod's
//! `mycel.io/discovery-namespaces` annotation narrows what its sidecar
//! discovers, and follows the live Pod. The controller runs as its
//! ServiceAccount with exactly `rbac::REQUIRED` (its Pod watch proves the
//! rights suffice) and the sidecar is a real proxy on loopback holding a
//! service-account token of that Pod's account.
//!
//! Out of scope is answered as a Service that does not exist: the proxy's
//! `/config_dump` says `not_found` and a call gets "unknown service"; in
//! scope, the same call gets past discovery ("no ready endpoints": the
//! Services here have none, no traffic leaves loopback).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use mycel_tests::http;
use mycel_tests::k8s;
use mycel_tests::mesh::{Mesh, Sidecar, SidecarSpec};
use serde_json::json;

use super::k8s::{create, sa_token, seed};
use super::k8s_policy::install_crds;

const NS: &str = "shop";
const SCOPE: &str = "mycel.io/discovery-namespaces";
const LIMIT: Duration = Duration::from_secs(20);
/// One Service per namespace; the sidecar subscribes to all three.
const SERVICES: [(&str, &str); 3] = [
    ("catalog", "shop"),
    ("ratings", "billing"),
    ("metrics", "ops"),
];

fn key((name, ns): (&str, &str)) -> String {
    format!("{name}.{ns}")
}

/// Namespaces billing and ops, and each Service of [`SERVICES`]; the
/// ClusterIP the API server gave each, by service key.
async fn services(admin: &Client) -> Vec<(String, String)> {
    for ns in ["billing", "ops"] {
        let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &obj)
            .await
            .unwrap();
    }
    let mut vips = Vec::new();
    for (name, ns) in SERVICES {
        let svc: Service = create(
            admin,
            Some(ns),
            json!({
                "metadata": {"name": name},
                "spec": {"selector": {"app": name},
                         "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
            }),
        )
        .await;
        let vip = svc.spec.and_then(|s| s.cluster_ip).unwrap();
        vips.push((key((name, ns)), vip));
    }
    vips
}

/// Sets (Some) or removes (None) the Pod's scope annotation.
async fn annotate(pods: &Api<Pod>, value: Option<&str>) {
    let patch = json!({"metadata": {"annotations": {SCOPE: value}}});
    pods.patch("web-0", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// What the proxy holds of each Service: its state in `/config_dump`
/// (`known`, `not_found`, ...), and whether its VIP is in the proxy's VIP
/// table.
async fn held(web: &Sidecar, vips: &[(String, String)]) -> Vec<(String, String, bool)> {
    let dump = web.admin_json("/config_dump").await;
    let snapshot = &dump["snapshot"];
    let table = snapshot["vips"].to_string();
    vips.iter()
        .map(|(key, vip)| {
            let state = snapshot["services"][key]["state"]
                .as_str()
                .unwrap_or("-")
                .to_string();
            (key.clone(), state, table.contains(&format!("\"{vip}\"")))
        })
        .collect()
}

/// Waits until the proxy sees exactly the namespaces `visible` of
/// [`SERVICES`]: theirs known with their VIPs, the others not_found and
/// without. Then checks the same through the proxy's outbound port.
async fn wait_scope(web: &Sidecar, vips: &[(String, String)], visible: &[&str], why: &str) {
    let want: Vec<(String, String, bool)> = SERVICES
        .iter()
        .map(|s| {
            let seen = visible.contains(&s.1);
            let state = if seen { "known" } else { "not_found" };
            (key(*s), state.to_string(), seen)
        })
        .collect();
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = held(web, vips).await;
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{why}: the proxy never held {want:?}; it holds {got:?}\n{}",
            web.proc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in SERVICES {
        let host = key(s);
        let r = http::get(web.outbound(), &host, "/").await.unwrap();
        let says = if visible.contains(&s.1) {
            format!("no ready endpoints for {host}")
        } else {
            format!("unknown service: {host}")
        };
        assert!(
            r.status == 503 && r.body.contains(&says),
            "{why}: a call to {host} got {} {:?}, not {says:?}",
            r.status,
            r.body
        );
    }
}

/// The Pod's annotation decides, not the proxy's own label; a change of
/// it (set, widened, removed, malformed) re-scopes the connected proxy
/// with nothing restarted; and a value that does not parse narrows to the
/// Pod's own namespace, as docs/authorization.md says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_scope_annotation_narrows_its_proxy_and_follows_the_live_pod() {
    if !k8s::available() {
        return;
    }
    let (api, admin, _controller) = super::k8s_ca::cluster().await;
    install_crds(&admin).await;
    // Pod web-0 (account web, labelled meshed) in shop, before any proxy.
    seed(&admin, &[("web-0", "web")]).await;
    let vips = services(&admin).await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    annotate(&pods, Some("shop")).await;
    let controller_kubeconfig = api.dir().join("kubeconfig-mycel-controller");
    let mesh = Mesh::start_kubernetes(&controller_kubeconfig, &[]).await;
    let token = sa_token(&admin, mesh.dir.path(), "web", "mycel").await;
    // The proxy claims a wider list of its own: the Pod's word wins.
    let mut spec = SidecarSpec::new("web-0", "web")
        .label(SCOPE, "shop,billing")
        .token_file(token);
    for s in SERVICES {
        spec = spec.arg("--subscribe").arg(&key(s));
    }
    let web = mesh.sidecar(spec).await;
    let pids =
        |mesh: &Mesh, web: &Sidecar| (mesh.controller.as_ref().map(|c| c.pid()), web.proc.pid());
    let started = pids(&mesh, &web);

    wait_scope(&web, &vips, &["shop"], "annotation shop").await;

    annotate(&pods, Some("shop,billing")).await;
    wait_scope(&web, &vips, &["shop", "billing"], "annotation shop,billing").await;

    // Removed: a known Pod without the annotation is not narrowed, and
    // its proxy's label (shop,billing) does not apply either.
    annotate(&pods, None).await;
    wait_scope(
        &web,
        &vips,
        &["shop", "billing", "ops"],
        "annotation removed",
    )
    .await;

    // Malformed (a space-separated list, a capital letter): the Pod's own
    // namespace only, never wider.
    for bad in ["billing ops", "shop,Billing"] {
        annotate(&pods, Some("*")).await;
        wait_scope(&web, &vips, &["shop", "billing", "ops"], "annotation *").await;
        annotate(&pods, Some(bad)).await;
        wait_scope(&web, &vips, &["shop"], &format!("annotation {bad:?}")).await;
    }

    // Empty is no narrowing, as an empty --discovery-namespaces is.
    annotate(&pods, Some("")).await;
    wait_scope(&web, &vips, &["shop", "billing", "ops"], "annotation \"\"").await;

    // Nothing was restarted: the same processes throughout, and every
    // change came over the proxy's first discovery stream.
    assert_eq!(pids(&mesh, &web), started);
    let dump = web.admin_json("/config_dump").await;
    assert_eq!(dump["synced"], true, "{dump}");
    assert_eq!(dump["discovery"]["connects"], 1, "{}", dump["discovery"]);
    drop(api);
}
