//! The chart installed into a real API server (etcd + kube-apiserver on
//! loopback): the controller under the chart's RBAC, and the webhook's
//! selectors as the API server applies them.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use mycel_control_plane::sources::k8s::rbac::{self, Scope, REQUIRED};
use mycel_tests::k8s::{self, ApiServer};
use mycel_tests::mesh::spiffe;
use mycel_tests::{bin, Mesh, SidecarSpec};
use serde_json::{json, Value};

use super::{chart, helm, text, NS, SA};

/// Flags the harness sets itself: loopback ports, a temporary data dir,
/// `--kubernetes` with `--kubeconfig`.
/// The chart's `--inject-config` file is the mounted ConfigMap, checked by
/// `rendered_inject_settings_are_read_by_the_controller`.
const HARNESS_FLAGS: &[&str] = &[
    "--kubernetes",
    "--data-dir",
    "--grpc-addr",
    "--admin-addr",
    "--inject-config",
];

async fn client_for(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Whether the client's user may do `verb` (SelfSubjectAccessReview).
async fn may(
    client: &Client,
    group: &str,
    resource: &str,
    verb: &str,
    ns: &str,
    name: &str,
) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.into()),
                resource: Some(resource.into()),
                verb: Some(verb.into()),
                namespace: Some(ns.into()).filter(|n: &String| !n.is_empty()),
                name: Some(name.into()).filter(|n: &String| !n.is_empty()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    answer.status.unwrap().allowed
}

fn expect_forbidden<T: std::fmt::Debug>(what: &str, r: Result<T, kube::Error>) {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// A token of the chart's ServiceAccount, from the API server (TokenRequest).
async fn controller_token(admin: &Client) -> String {
    let req: TokenRequest =
        serde_json::from_value(json!({"spec": {"expirationSeconds": 3600}})).unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), NS)
        .create_token_request(SA, &PostParams::default(), &req)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

/// The chart's controller args for a local run; every flag the chart
/// passes must be one the controller knows.
fn local_args(chart_args: &[String], help: &str) -> Vec<String> {
    let known =
        |flag: &str| help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n"));
    let mut args = Vec::new();
    for arg in chart_args {
        let flag = arg.split('=').next().unwrap();
        if HARNESS_FLAGS.contains(&flag) {
            continue;
        }
        assert!(
            known(flag),
            "the chart passes {arg}, which mycel-controller does not know"
        );
        if flag == "--webhook-addr" {
            let port = mycel_tests::ports::free_block(1);
            args.push(format!("--webhook-addr=127.0.0.1:{port}"));
        } else {
            args.push(arg.clone());
        }
    }
    args
}

/// Waits until `check` holds, or fails with `what` and the controller's log.
async fn eventually<F, Fut>(mesh: &Mesh, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what}: not done within 30 s; controller log:\n{}",
            mesh.controller.as_ref().unwrap().log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A fresh API server with the chart installed (no --wait: without
/// kube-controller-manager no Pod ever starts); helm's output.
async fn installed() -> (ApiServer, Client, std::process::Output) {
    let api = ApiServer::start().await.unwrap();
    let admin = api.client().await.unwrap();
    let kubeconfig = api.kubeconfig.display().to_string();
    let out = helm(&[
        "install",
        "mycel",
        &chart(),
        "-n",
        NS,
        "--create-namespace",
        "--kubeconfig",
        &kubeconfig,
    ]);
    assert!(out.status.success(), "helm install: {}", text(&out));
    (api, admin, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_the_controller_under_chart_rbac_refused_nothing_it_needs() {
    if !k8s::available() || !k8s::tools_available() {
        return;
    }
    let (api, admin, out) = installed().await;
    let kubeconfig = api.kubeconfig.display().to_string();
    let chart = chart();
    assert!(
        text(&out).contains("mycelctl check"),
        "NOTES name the next step: {}",
        text(&out)
    );
    let deploy = Api::<Deployment>::namespaced(admin.clone(), NS)
        .get(SA)
        .await
        .unwrap();
    let chart_args = deploy.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    assert!(hooks.get("mycel-injector").await.is_ok());

    // A meshed namespace, and an account whose proxy asks for a certificate.
    let ns: Namespace = serde_json::from_value(
        json!({"metadata": {"name": "shop", "labels": {"mycel.io/inject": "enabled"}}}),
    )
    .unwrap();
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let web: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "web"}})).unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), "shop")
        .create(&PostParams::default(), &web)
        .await
        .unwrap();

    let token = controller_token(&admin).await;
    let sa_kubeconfig = api.token_kubeconfig(SA, &token).unwrap();
    let as_sa = client_for(&sa_kubeconfig).await;

    // Every call the controller makes is allowed by the installed chart...
    for p in REQUIRED {
        let ns = match p.scope {
            Scope::Cluster => "",
            Scope::ControllerNamespace => NS,
        };
        let names: Vec<&str> = if p.resource_names.is_empty() {
            vec![""]
        } else {
            p.resource_names.to_vec()
        };
        for verb in p.verbs {
            for name in &names {
                assert!(
                    may(&as_sa, p.group, p.resource, verb, ns, name).await,
                    "the chart's account may not {verb} {}/{} {name:?} in {ns:?}",
                    p.group,
                    p.resource
                );
            }
        }
    }
    // ...and what it must not do is refused.
    for (group, resource, verb, ns, name) in [
        // Secrets are listed and watched (HTTPS listeners' certificates;
        // RBAC cannot narrow that to kubernetes.io/tls, the watch's field
        // selector does), never read one by one, written or deleted.
        ("", "secrets", "get", "kube-system", rbac::CA_SECRET),
        ("", "secrets", "get", NS, "another-secret"),
        ("", "secrets", "update", "shop", "shop-tls"),
        ("", "secrets", "delete", "shop", "shop-tls"),
        ("", "secrets", "delete", NS, rbac::CA_SECRET),
        ("", "secrets", "patch", NS, "another-secret"),
        ("", "configmaps", "get", "shop", "app-config"),
        ("", "configmaps", "list", "shop", ""),
        (
            "",
            "configmaps",
            "delete",
            "shop",
            rbac::TRUST_BUNDLE_CONFIGMAP,
        ),
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            "patch",
            "",
            "another-webhook",
        ),
        (
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            "patch",
            "",
            "",
        ),
        ("", "pods", "create", "shop", ""),
        ("", "pods", "delete", "shop", ""),
        ("", "services", "update", "shop", ""),
        ("coordination.k8s.io", "leases", "get", "kube-system", ""),
        // The CA Secret is only patched (owner references, the rotation
        // record), never updated whole (ca_secret.rs).
        ("", "secrets", "update", NS, rbac::CA_SECRET),
        ("coordination.k8s.io", "leases", "create", NS, ""),
        (
            "rbac.authorization.k8s.io",
            "clusterroles",
            "escalate",
            "",
            "",
        ),
    ] {
        assert!(
            !may(&as_sa, group, resource, verb, ns, name).await,
            "the chart's account may {verb} {group}/{resource} {name:?} in {ns:?}"
        );
    }
    expect_forbidden(
        "reading a Secret of kube-system by name",
        Api::<Secret>::namespaced(as_sa.clone(), "kube-system")
            .get("bootstrap-token-abcdef")
            .await,
    );
    expect_forbidden(
        "listing ConfigMaps in a meshed namespace",
        Api::<ConfigMap>::namespaced(as_sa.clone(), "shop")
            .list(&ListParams::default())
            .await,
    );

    // The controller itself, with the chart's flags and the account's token:
    // ready means every watch listed.
    let help = text(
        &Command::new(bin("mycel-controller"))
            .arg("--help")
            .output()
            .unwrap(),
    );
    let args = local_args(&chart_args, &help);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mesh = Mesh::start_kubernetes(&sa_kubeconfig, &args).await;

    // A proxy's token goes through a TokenReview made with that account.
    let req: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": ["mycel"], "expirationSeconds": 600}}))
            .unwrap();
    let proxy_token = Api::<ServiceAccount>::namespaced(admin.clone(), "shop")
        .create_token_request("web", &PostParams::default(), &req)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let token_file = mesh.path("web.jwt");
    std::fs::write(&token_file, proxy_token).unwrap();
    let sc = mesh
        .sidecar(SidecarSpec::new("web-0", "web").token_file(token_file))
        .await;
    let certs = sc.admin_json("/certs").await.to_string();
    assert!(certs.contains(&spiffe("shop", "web")), "{certs}");

    // With the webhook, CA-Secret and trust-bundle flags in force, the
    // controller's writes happen (each one allowed by the chart).
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    eventually(&mesh, "the CA Secret written", || async {
        secrets
            .get_opt(rbac::CA_SECRET)
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    eventually(&mesh, "the webhook's caBundle patched", || async {
        hooks
            .get("mycel-injector")
            .await
            .ok()
            .and_then(|h| h.webhooks?.first()?.client_config.ca_bundle.clone())
            .is_some_and(|b| !b.0.is_empty())
    })
    .await;
    let bundles: Api<ConfigMap> = Api::namespaced(admin.clone(), "shop");
    eventually(&mesh, "the trust bundle published into shop", || async {
        bundles
            .get_opt(rbac::TRUST_BUNDLE_CONFIGMAP)
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    // The published bundle is the root stored in the Secret: the CA the
    // controller signs with is the one every replica shares.
    let root = secrets.get(rbac::CA_SECRET).await.unwrap().data.unwrap()["root.pem"].clone();
    let bundle = bundles
        .get(rbac::TRUST_BUNDLE_CONFIGMAP)
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(
        bundle["ca.crt"].trim(),
        String::from_utf8(root.0).unwrap().trim(),
        "the trust bundle is not the Secret's root"
    );
    // What the controller created is owned by the webhook configuration
    // helm installed, so `helm uninstall` garbage-collects it.
    let uid = hooks
        .get("mycel-injector")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let owned_by_hook = |meta: &kube::api::ObjectMeta| {
        meta.owner_references.iter().flatten().any(|r| {
            r.kind == "MutatingWebhookConfiguration" && r.name == "mycel-injector" && r.uid == uid
        })
    };
    let secret = secrets.get(rbac::CA_SECRET).await.unwrap();
    assert!(owned_by_hook(&secret.metadata), "{:?}", secret.metadata);
    eventually(&mesh, "the trust bundle owned", || async {
        bundles
            .get(rbac::TRUST_BUNDLE_CONFIGMAP)
            .await
            .is_ok_and(|cm| owned_by_hook(&cm.metadata))
    })
    .await;
    // An upgrade leaves the patched caBundle alone: the chart never
    // sets the field, so helm does not own it.
    let out = helm(&[
        "upgrade",
        "mycel",
        &chart,
        "-n",
        NS,
        "--kubeconfig",
        &kubeconfig,
    ]);
    assert!(out.status.success(), "helm upgrade: {}", text(&out));
    let hook = hooks.get("mycel-injector").await.unwrap();
    let bundle = hook.webhooks.unwrap()[0].client_config.ca_bundle.clone();
    assert!(
        bundle.is_some_and(|b| !b.0.is_empty()),
        "helm upgrade dropped the caBundle the controller patched in"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = mesh.controller.as_ref().unwrap().log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.to_lowercase().contains("forbidden"))
        .collect();
    assert!(
        refused.is_empty(),
        "the controller was refused by RBAC:\n{}",
        refused.join("\n")
    );

    // `helm uninstall` leaves nothing behind: the controller goes with the
    // release, and the garbage collector deletes what it created once helm
    // has deleted their owner, the webhook configuration.
    if !k8s::controller_manager_available() {
        return;
    }
    drop(sc);
    drop(mesh);
    let gc = api.start_garbage_collector();
    let out = helm(&["uninstall", "mycel", "-n", NS, "--kubeconfig", &kubeconfig]);
    assert!(out.status.success(), "helm uninstall: {}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let secret = secrets.get_opt(rbac::CA_SECRET).await.unwrap();
        let bundle = bundles.get_opt(rbac::TRUST_BUNDLE_CONFIGMAP).await.unwrap();
        if secret.is_none() && bundle.is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind by helm uninstall: CA Secret {}, trust bundle {}; kube-controller-manager log:\n{}",
            secret.is_some(),
            bundle.is_some(),
            gc.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates a Pod (admin rights); the API server's answer.
async fn create_pod(
    admin: &Client,
    ns: &str,
    name: &str,
    labels: Value,
    annotations: Value,
) -> Result<k8s_openapi::api::core::v1::Pod, kube::Error> {
    let pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "serviceAccountName": "app",
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "mycel-demo"}],
        },
    }))
    .unwrap();
    Api::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_sees_only_meshed_pods_and_never_system_namespaces() {
    if !k8s::available() || !k8s::tools_available() {
        return;
    }
    let (_api, admin, _) = installed().await;

    // Point the installed webhook at a closed loopback port: a Pod the
    // webhook is asked about is refused (failurePolicy Fail), any other is
    // created. Only the selectors and conditions of the chart decide.
    let closed = mycel_tests::ports::free_block(1);
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    let mut hook = hooks.get("mycel-injector").await.unwrap();
    for w in hook.webhooks.iter_mut().flatten() {
        w.client_config.service = None;
        w.client_config.url = Some(format!("https://127.0.0.1:{closed}/inject"));
    }
    hooks
        .replace("mycel-injector", &PostParams::default(), &hook)
        .await
        .unwrap();

    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let meshed = json!({"mycel.io/inject": "enabled"});
    for (name, labels) in [("shop", meshed.clone()), ("plain", json!({}))] {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    // Even labelled for injection, the system namespaces stay out.
    for name in ["kube-system", NS] {
        let patch = json!({"metadata": {"labels": meshed}});
        namespaces
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    for ns in ["shop", "plain", "kube-system", NS] {
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "app"}})).unwrap();
        Api::<ServiceAccount>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &sa)
            .await
            .unwrap();
    }

    let none = json!({});
    let disabled = json!({"mycel.io/inject": "disabled"});
    for (what, ns, name, labels, annotations, sent) in [
        (
            "a Pod of a meshed namespace",
            "shop",
            "web-0",
            &none,
            &none,
            true,
        ),
        (
            "a Pod annotated disabled",
            "shop",
            "web-1",
            &none,
            &disabled,
            false,
        ),
        (
            "a Pod labelled disabled",
            "shop",
            "web-2",
            &disabled,
            &none,
            false,
        ),
        (
            "a Pod of an unmeshed namespace",
            "plain",
            "web-3",
            &none,
            &none,
            false,
        ),
        (
            "a Pod of kube-system",
            "kube-system",
            "web-4",
            &none,
            &none,
            false,
        ),
        (
            "a Pod of the mesh's namespace",
            NS,
            "web-5",
            &none,
            &none,
            false,
        ),
    ] {
        let r = create_pod(&admin, ns, name, labels.clone(), annotations.clone()).await;
        match (sent, r) {
            (false, Ok(_)) => {}
            (true, Err(kube::Error::Api(s))) if s.message.contains("inject.mycel.io") => {}
            (sent, r) => panic!("{what}: sent to the webhook should be {sent}, got {r:?}"),
        }
    }
}
