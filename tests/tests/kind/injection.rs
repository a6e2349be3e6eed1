//! Scenario 2: the webhook meshes pods of annotated namespaces (as native
//! sidecars) and leaves every other pod alone.

use k8s_openapi::api::core::v1::Pod;

use crate::cluster::{self, SHOP};

/// Names of the pod's init containers that run for the pod's whole life
/// (native sidecars), and of its regular containers.
fn sidecars_and_containers(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let spec = pod.spec.as_ref().expect("a pod has a spec");
    let native = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.clone())
        .collect();
    let containers = spec.containers.iter().map(|c| c.name.clone()).collect();
    (native, containers)
}

fn init_names(pod: &Pod) -> Vec<String> {
    let spec = pod.spec.as_ref().expect("a pod has a spec");
    spec.init_containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect()
}

#[tokio::test]
#[ignore = "needs a kind cluster with Mycel and the shop: tests/kind/run.sh test"]
async fn shop_pods_carry_a_native_sidecar_and_other_pods_do_not() {
    let client = cluster::client().await;
    for app in ["frontend", "catalog", "ratings", "reviews"] {
        let pods = cluster::pods(&client, SHOP, &format!("app={app}")).await;
        assert!(!pods.is_empty(), "no {app} pod in {SHOP}");
        for pod in &pods {
            let (native, containers) = sidecars_and_containers(pod);
            assert_eq!(
                native,
                ["mycel-proxy"],
                "{}: the proxy is a native sidecar",
                cluster::name(pod)
            );
            assert!(
                !containers.contains(&"mycel-proxy".to_string()),
                "{}: {containers:?}",
                cluster::name(pod)
            );
            assert!(
                init_names(pod).contains(&"mycel-init".to_string()),
                "{}: the capture is installed",
                cluster::name(pod)
            );
        }
    }
    // The gateway is a proxy itself, annotated out.
    for pod in cluster::pods(&client, SHOP, "app=gateway").await {
        assert!(
            init_names(&pod).is_empty(),
            "the gateway is not injected: {:?}",
            init_names(&pod)
        );
    }

    let manifest = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kind-plain\n{}{}",
        cluster::demo_pod("plain", "kind-plain", &[]),
        cluster::demo_pod("opted-out", SHOP, &[("mycel.io/inject", "disabled")]),
    );
    cluster::apply(&manifest);
    for (ns, name) in [("kind-plain", "plain"), (SHOP, "opted-out")] {
        let api: kube::Api<Pod> = kube::Api::namespaced(client.clone(), ns);
        let pod = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{ns}/{name}: {e}"));
        let (native, containers) = sidecars_and_containers(&pod);
        assert!(
            native.is_empty() && init_names(&pod).is_empty(),
            "{ns}/{name} was injected: {:?}",
            init_names(&pod)
        );
        assert_eq!(containers, ["app"], "{ns}/{name}");
        let meshed = pod
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("mycel.io/meshed");
        assert!(!meshed, "{ns}/{name} is not labelled meshed");
    }
    cluster::delete(&manifest);
}
