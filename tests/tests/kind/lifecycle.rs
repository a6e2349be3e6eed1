//! Scenario 1: the chart's whole life. Installed (by tests/kind/run.sh
//! install), `mycelctl check` is green; an upgrade to other values applies
//! them; uninstalling leaves nothing that would block or mesh a pod. Run
//! last, on its own, by run.sh: it reinstalls the chart at the end, and the
//! shop's pods are restarted under the new CA.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::ListParams;
use kube::Api;
use mycel_crds::gateway_api::gatewayclasses::GatewayClass;

use crate::cluster::{self, SHOP, SYSTEM};

fn check_is_green() {
    let out = cluster::mycelctl(&["check", "--proxy", "-o", "json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mycelctl check:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_str(&text).expect("check -o json");
    let checks = doc["checks"].as_array().expect("checks");
    assert!(!checks.is_empty(), "{doc}");
    for c in checks {
        assert_ne!(c["status"], "fail", "{c}");
    }
}

#[tokio::test]
#[ignore = "needs a kind cluster with Mycel and the shop: tests/kind/run.sh test"]
async fn check_is_green_upgrades_apply_and_uninstall_leaves_nothing_behind() {
    std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .expect("cd to the checkout");
    let client = cluster::client().await;
    check_is_green();

    // Upgrade to other values: one replica, debug logs.
    cluster::helm_upgrade(&["replicas=1", "controller.logLevel=debug"]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), SYSTEM);
    let d = deployments
        .get("mycel-controller")
        .await
        .expect("the controller Deployment");
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(1));
    let env = serde_json::to_string(&d.spec.as_ref().map(|s| &s.template)).unwrap_or_default();
    assert!(
        env.contains("debug"),
        "the log level reached the pods: {env}"
    );
    cluster::rollout_status(SYSTEM, "mycel-controller");
    check_is_green();

    cluster::helm(&[
        "uninstall",
        "mycel",
        "-n",
        SYSTEM,
        "--wait",
        "--timeout",
        "5m",
    ]);
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    assert!(
        webhooks
            .get_opt("mycel-injector")
            .await
            .expect("API")
            .is_none(),
        "the webhook is gone"
    );
    // Pods go after their ReplicaSet, a moment after helm returns.
    cluster::eventually("the release's objects gone", Duration::from_secs(90), || async {
        let left = cluster::kubectl(&[
        "get", "all,configmaps,secrets,serviceaccounts,roles,rolebindings,clusterroles,clusterrolebindings,\
         networkpolicies,poddisruptionbudgets,mutatingwebhookconfigurations",
        "-A", "-l", "app.kubernetes.io/instance=mycel", "-o", "name",
    ]);
        if left.trim().is_empty() { Ok(()) } else { Err(format!("left:\n{left}")) }
    })
    .await;
    // What the controller made itself goes with the webhook it hangs from.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), SYSTEM);
    let maps: Api<ConfigMap> = Api::all(client.clone());
    let classes: Api<GatewayClass> = Api::all(client.clone());
    cluster::eventually(
        "the CA Secret, trust bundles and GatewayClass collected",
        Duration::from_secs(60),
        || async {
            let ca = secrets
                .get_opt("mycel-ca")
                .await
                .map_err(|e| e.to_string())?;
            let bundles = maps
                .list(&ListParams::default().fields("metadata.name=mycel-trust-bundle"))
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            let class = classes.get_opt("mycel").await.map_err(|e| e.to_string())?;
            if ca.is_none() && bundles == 0 && class.is_none() {
                Ok(())
            } else {
                Err(format!(
                    "CA Secret present: {}, trust bundles: {bundles}, GatewayClass present: {}",
                    ca.is_some(),
                    class.is_some()
                ))
            }
        },
    )
    .await;
    // The shop namespace is still labelled for injection: without Mycel a
    // pod is created, unmeshed, rather than refused.
    let manifest = cluster::demo_pod("after-uninstall", SHOP, &[]);
    cluster::apply(&manifest);
    let pods: Api<Pod> = Api::namespaced(client.clone(), SHOP);
    let pod = pods
        .get("after-uninstall")
        .await
        .expect("the pod was created");
    let inits = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .map_or(0, Vec::len);
    assert_eq!(inits, 0, "nothing injected it");
    cluster::delete(&manifest);

    // Back as it was, for whoever uses the cluster next.
    cluster::helm(&[
        "install",
        "mycel",
        "helm/mycel",
        "-n",
        SYSTEM,
        "--wait",
        "--timeout",
        "5m",
    ]);
    cluster::restart_shop();
    cluster::eventually(
        "the shop answers again",
        Duration::from_secs(60),
        || async {
            match cluster::shop_get("/api/products").await {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("HTTP {}", r.status)),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    check_is_green();
}
