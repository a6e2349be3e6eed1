//! TrafficPolicy objects through a real kube-apiserver: the mesh CRDs from
//! `crds/generated/` installed, the controller running as a ServiceAccount
//! bound to exactly `rbac::REQUIRED` (so its status writes prove the rights
//! suffice), a sidecar subscribed to the target Service. A policy reaches
//! the sidecar and reads `Accepted`; the schema refuses an invalid one at
//! admission naming the field; a second policy on the same target is
//! `Conflicted` until the first is deleted; a policy for a Service not yet
//! created waits as `TargetNotFound`; the controller does not rewrite a
//! status that is already right.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use mycel_crds::TrafficPolicy;
use mycel_tests::k8s;
use mycel_tests::mesh::{Mesh, Sidecar, SidecarSpec};
use serde_json::{json, Value};

use super::k8s::{create, sa_token, seed};

const NS: &str = "shop";
const LIMIT: Duration = Duration::from_secs(20);

/// Creates every CRD of `crds/generated/` and waits until each is served.
pub(super) async fn install_crds(admin: &Client) {
    let names = install_crd_dir(admin, "crds/generated").await;
    assert!(
        names.contains(&"trafficpolicies.mycel.io".to_string()),
        "{names:?}"
    );
}

/// Creates every CRD of the repository folder `dir` and waits until each
/// is served; returns their names.
pub(super) async fn install_crd_dir(admin: &Client, dir: &str) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(dir);
    let api = Api::<CustomResourceDefinition>::all(admin.clone());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).unwrap();
        names.push(crd.metadata.name.clone().unwrap());
        api.create(&PostParams::default(), &crd).await.unwrap();
    }
    for name in &names {
        poll(&format!("CRD {name} established"), || {
            let (api, name) = (api.clone(), name.clone());
            async move {
                let crd = api.get(&name).await.ok()?;
                crd.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        })
        .await;
    }
    names
}

/// Polls `f` every 100 ms until it gives a value, for at most [`LIMIT`].
pub(super) async fn poll<T, F, Fut>(what: &str, f: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn policy(name: &str, service: &str, attempts: u32) -> Value {
    json!({
        "apiVersion": "mycel.io/v1alpha1",
        "kind": "TrafficPolicy",
        "metadata": {"name": name},
        "spec": {
            "targetRef": {"kind": "Service", "name": service},
            "retry": {"attempts": attempts},
        },
    })
}

async fn service(admin: &Client, name: &str) {
    let _: Service = create(
        admin,
        Some(NS),
        json!({"metadata": {"name": name}, "spec": {"ports": [{"name": "http", "port": 80}]}}),
    )
    .await;
}

/// `(status, reason, message, observedGeneration)` of the policy's
/// `Accepted` condition, once it has one.
async fn accepted(api: &Api<TrafficPolicy>, name: &str) -> Option<(String, String, String, i64)> {
    let p = api.get(name).await.ok()?;
    let c = p
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Accepted")?;
    Some((c.status, c.reason, c.message, c.observed_generation?))
}

/// Waits until the policy's `Accepted` condition has `status` and `reason`;
/// returns its message.
async fn wait_accepted(api: &Api<TrafficPolicy>, name: &str, status: &str, reason: &str) -> String {
    poll(&format!("{name}: Accepted={status} {reason}"), || async {
        accepted(api, name)
            .await
            .filter(|(s, r, _, g)| s == status && r == reason && *g == 1)
            .map(|(_, _, m, _)| m)
    })
    .await
}

/// Waits until the sidecar holds `service`'s policy with `attempts` tries.
async fn wait_attempts(sidecar: &Sidecar, service: &str, attempts: u64) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let dump = sidecar.admin_json("/config_dump").await;
        let policy = &dump["snapshot"]["services"][service]["policy"];
        if policy["rules"]["retry"]["attempts"] == attempts {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{service}: the sidecar never held a policy with {attempts} attempts; it holds {policy}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_policies_reach_proxies_and_report_accepted_conflicted_and_target_not_found() {
    if !k8s::available() {
        return;
    }
    let (api, admin, _controller) = super::k8s_ca::cluster().await;
    install_crds(&admin).await;
    seed(&admin, &[]).await;
    service(&admin, "web").await;
    let controller_kubeconfig = api.dir().join("kubeconfig-mycel-controller");
    let mesh = Mesh::start_kubernetes(&controller_kubeconfig, &[]).await;
    let policies: Api<TrafficPolicy> = Api::namespaced(admin.clone(), NS);

    // A valid policy: pushed to a subscribed sidecar, and Accepted.
    let _: TrafficPolicy = create(&admin, Some(NS), policy("first", "web", 3)).await;
    let token = sa_token(&admin, mesh.dir.path(), "client", "mycel").await;
    let client = mesh
        .sidecar(
            SidecarSpec::new("client-0", "client")
                .token_file(token)
                .arg("--subscribe")
                .arg("web.shop")
                .arg("--subscribe")
                .arg("late.shop"),
        )
        .await;
    wait_attempts(&client, "web.shop", 3).await;
    let message = wait_accepted(&policies, "first", "True", "Accepted").await;
    assert_eq!(message, "applied to Service web");

    // The schema refuses what the controller would call invalid, at
    // admission, naming the field.
    let bad: TrafficPolicy = serde_json::from_value(policy("bad", "web", 11)).unwrap();
    let err = policies
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec.retry.attempts"), "{err}");

    // A second policy on the same target loses to the older one.
    let _: TrafficPolicy = create(&admin, Some(NS), policy("second", "web", 5)).await;
    let message = wait_accepted(&policies, "second", "False", "Conflicted").await;
    assert!(
        message.contains("shop/first"),
        "the winner is named: {message}"
    );
    wait_attempts(&client, "web.shop", 3).await;

    // Nothing more to write: the statuses stay as they are (no write loop
    // between the controller and its own writes coming back).
    let version = |p: TrafficPolicy| p.metadata.resource_version.unwrap();
    let before = version(policies.get("second").await.unwrap());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(version(policies.get("second").await.unwrap()), before);

    // The winner deleted: the other applies.
    policies
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    wait_attempts(&client, "web.shop", 5).await;
    wait_accepted(&policies, "second", "True", "Accepted").await;

    // A policy for a Service that does not exist yet waits for it.
    let _: TrafficPolicy = create(&admin, Some(NS), policy("early", "late", 4)).await;
    let message = wait_accepted(&policies, "early", "False", "TargetNotFound").await;
    assert!(message.contains("late"), "{message}");
    service(&admin, "late").await;
    wait_accepted(&policies, "early", "True", "Accepted").await;
    wait_attempts(&client, "late.shop", 4).await;
    drop(api);
}
