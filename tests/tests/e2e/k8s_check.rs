//! `mycelctl check` and `mycelctl install --apply` as real processes
//! against a real kube-apiserver on loopback.
//!
//! There is no kube-controller-manager or kubelet here: Deployments get no
//! Pods and Pods never run. Where a check reads what those would write (a
//! Deployment's ready replicas, a Pod's container statuses), the test
//! writes it through the status subresource as they would, and says so.

use std::process::Output;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use mycel_tests::k8s::{self, ApiServer};
use mycel_tests::process;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::{json, Value};

const NS: &str = "mycel-system";

async fn mycelctl(args: &[&str]) -> Output {
    let started = Instant::now();
    let out = tokio::process::Command::new(process::bin("mycelctl"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    // Every call has a timeout: a check never takes long, even when a pod
    // cannot be reached.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "mycelctl {args:?} took {:?}",
        started.elapsed()
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `mycelctl check` with `extra` flags; its text, and whether it exited 0.
async fn check(kubeconfig: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["check", "--kubeconfig", kubeconfig];
    args.extend_from_slice(extra);
    let out = mycelctl(&args).await;
    let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    // Shown when the test fails (libtest captures it otherwise).
    println!("$ mycelctl {}\n{text}", args.join(" "));
    (out.status.success(), text)
}

/// The line of check `name` (with its hint line, if any).
fn line<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.get(7..)
                .is_some_and(|rest| rest.starts_with(&format!("{name} ")))
        })
        .collect()
}

fn assert_line(text: &str, mark: &str, name: &str, words: &str) {
    assert!(
        line(text, name)
            .iter()
            .any(|l| l.starts_with(mark) && l.contains(words)),
        "no {mark} {name} line with {words:?} in:\n{text}"
    );
}

async fn create<K>(api: Api<K>, value: Value) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let obj: K = serde_json::from_value(value).unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create {obj:?}: {e}"))
}

/// A self-signed CA certificate valid for `days` more days (negative:
/// expired that long ago), as PEM, with its key.
fn ca_cert(cn: &str, days: i64) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(400);
    // An hour away from a whole day, so the days counted are `days`.
    let hour = time::Duration::hours(days.signum().max(0) * 2 - 1);
    p.not_after = now + time::Duration::days(days) + hour;
    (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

/// The CA Secret in Mycel's format with `root` as its root (the issuer is
/// the root again: the check reads certificates only).
async fn ca_secret(admin: &Client, root: &(String, String)) {
    let api = Api::<Secret>::namespaced(admin.clone(), NS);
    let _ = api.delete("mycel-ca", &DeleteParams::default()).await;
    let _: Secret = create(
        api,
        json!({"metadata": {"name": "mycel-ca"}, "stringData": {
            "root.pem": root.0, "root.key": root.1, "issuer.pem": root.0, "issuer.key": root.1,
        }}),
    )
    .await;
}

async fn set_ca_bundle(admin: &Client, pem: &str) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
    let patch = json!([{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": b64}]);
    let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
    Api::<MutatingWebhookConfiguration>::all(admin.clone())
        .patch(
            "mycel-injector",
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
        .unwrap();
}

/// Points the webhook at a loopback port where nothing listens. Installed,
/// it names the webhook Service, which the API server would dial at its
/// cluster IP: an address of no network namespace here, so test traffic
/// could leave the machine. Loopback keeps the refusal local.
async fn webhook_to_closed_loopback_port(admin: &Client) {
    let port = mycel_tests::ports::free_block(1);
    let patch = json!([
        {"op": "remove", "path": "/webhooks/0/clientConfig/service"},
        {"op": "add", "path": "/webhooks/0/clientConfig/url",
         "value": format!("https://127.0.0.1:{port}/inject")},
    ]);
    let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
    Api::<MutatingWebhookConfiguration>::all(admin.clone())
        .patch(
            "mycel-injector",
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn on_an_empty_cluster_check_fails_naming_what_is_missing_and_pre_needs_rights() {
    if !k8s::available() {
        return;
    }
    let api = ApiServer::start().await.unwrap();
    let admin = api.client().await.unwrap();
    let kc = api.kubeconfig.display().to_string();

    let (ok, text) = check(&kc, &[]).await;
    assert!(!ok, "{text}");
    assert_line(&text, "[ok]", "kubernetes-api", "v1.35");
    assert_line(
        &text,
        "[FAIL]",
        "crds",
        "meshconfigs.mycel.io is not installed",
    );
    assert_line(
        &text,
        "[FAIL]",
        "controller",
        "no Deployment mycel-controller in namespace mycel-system",
    );
    assert_line(
        &text,
        "[FAIL]",
        "webhook",
        "no MutatingWebhookConfiguration mycel-injector",
    );
    assert!(text.contains("hint: install Mycel"), "{text}");

    let out = mycelctl(&["check", "--kubeconfig", &kc, "-o", "json"]).await;
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false, "{report}");
    let crds = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "crds")
        .unwrap();
    assert_eq!(crds["status"], "fail");
    assert!(!crds["hint"].as_str().unwrap().is_empty());

    // --pre: an administrator may create everything the chart creates...
    let (ok, text) = check(&kc, &["--pre"]).await;
    assert!(ok, "{text}");
    assert_line(&text, "[ok]", "permissions", "allowed all");
    assert!(
        line(&text, "crds").is_empty(),
        "--pre checks no install:\n{text}"
    );

    // ...a ServiceAccount with no rights may not, and is told what it lacks.
    let _: Namespace = create(
        Api::all(admin.clone()),
        json!({"metadata": {"name": "nobody"}}),
    )
    .await;
    let nobody = api.account_kubeconfig("nobody", "nobody").await.unwrap();
    let (ok, text) = check(&nobody.display().to_string(), &["--pre"]).await;
    assert!(!ok, "{text}");
    assert_line(
        &text,
        "[FAIL]",
        "permissions",
        "create customresourcedefinitions",
    );
    assert!(
        text.contains("create deployments in mycel-system"),
        "{text}"
    );
    assert!(
        text.contains("hint: install as a cluster administrator"),
        "{text}"
    );
}

#[tokio::test]
async fn install_apply_then_check_follows_crds_controller_ca_webhook_and_proxies() {
    if !k8s::available() {
        return;
    }
    let api = ApiServer::start().await.unwrap();
    let admin = api.client().await.unwrap();
    let kc = api.kubeconfig.display().to_string();

    let out = mycelctl(&["install", "--apply", "--kubeconfig", &kc]).await;
    assert!(
        out.status.success(),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let log = stdout(&out);
    assert!(
        log.contains("established CustomResourceDefinition meshconfigs.mycel.io"),
        "{log}"
    );
    assert!(log.contains("applied Deployment mycel-controller"), "{log}");
    // Applying again changes nothing and still succeeds (server-side apply).
    let again = mycelctl(&["install", "--apply", "--kubeconfig", &kc]).await;
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let (ok, text) = check(&kc, &[]).await;
    assert!(!ok, "{text}");
    assert_line(
        &text,
        "[ok]",
        "crds",
        "meshconfigs.mycel.io installed and current",
    );
    // No kube-controller-manager: the Deployment never gets a Pod.
    assert_line(&text, "[FAIL]", "controller", "no ready replica");
    assert_line(&text, "[FAIL]", "ca", "no CA Secret mycel-system/mycel-ca");
    assert_line(&text, "[FAIL]", "webhook", "no caBundle");
    assert_line(&text, "[FAIL]", "webhook-endpoints", "no ready endpoint");

    // What the controller-manager would write once two Pods are ready.
    Api::<Deployment>::namespaced(admin.clone(), NS)
        .patch_status(
            "mycel-controller",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 2, "readyReplicas": 2}})),
        )
        .await
        .unwrap();
    // ...and the EndpointSlice controller for the webhook Service.
    let _: EndpointSlice = create(
        Api::namespaced(admin.clone(), NS),
        json!({
            "metadata": {"name": "mycel-webhook-a", "labels": {"kubernetes.io/service-name": "mycel-webhook"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["198.18.0.10"], "conditions": {"ready": true}}],
            "ports": [{"name": "https-webhook", "port": 9443, "protocol": "TCP"}],
        }),
    )
    .await;
    // The mesh CA, 10 days left, and a caBundle of another CA.
    let root = ca_cert("mycel-test-root", 10);
    ca_secret(&admin, &root).await;
    set_ca_bundle(&admin, &ca_cert("someone-else", 300).0).await;
    let (ok, text) = check(&kc, &[]).await;
    assert!(!ok, "{text}");
    assert_line(&text, "[ok]", "controller", "2 replica(s) ready");
    assert_line(&text, "[ok]", "webhook-endpoints", "1 ready endpoint");
    assert_line(&text, "[warn]", "ca", "root certificate expires in 10 days");
    assert_line(&text, "[FAIL]", "webhook", "a caBundle is not the mesh CA");

    // The caBundle the controller would write: the mesh root. Every check
    // passes now, the warning does not fail the run.
    set_ca_bundle(&admin, &root.0).await;
    let (ok, text) = check(&kc, &[]).await;
    assert!(ok, "{text}");
    assert_line(&text, "[ok]", "webhook", "caBundle is the mesh CA");
    assert_line(&text, "[ok]", "trust-bundle", "all 0 meshed namespace");
    assert_line(&text, "[ok]", "webhook-call", "not tried");

    // A meshed namespace without its trust bundle, then with it.
    let _: Namespace = create(
        Api::all(admin.clone()),
        json!({"metadata": {"name": "shop", "labels": {"mycel.io/inject": "enabled"}}}),
    )
    .await;
    let (ok, text) = check(&kc, &[]).await;
    assert!(!ok, "{text}");
    assert_line(
        &text,
        "[FAIL]",
        "trust-bundle",
        "no ConfigMap mycel-trust-bundle in shop",
    );
    // Without the namespace's default account the dry run cannot be
    // tried: a warning, not a failure.
    assert_line(
        &text,
        "[warn]",
        "webhook-call",
        "serviceaccount \"default\" not found",
    );
    let _: ConfigMap = create(
        Api::namespaced(admin.clone(), "shop"),
        json!({"metadata": {"name": "mycel-trust-bundle"}, "data": {"ca.crt": root.0}}),
    )
    .await;
    // The account every Pod of shop runs as (no controller-manager makes it).
    let _: ServiceAccount = create(
        Api::namespaced(admin.clone(), "shop"),
        json!({"metadata": {"name": "default"}}),
    )
    .await;
    // A dry-run Pod in shop makes the API server call the webhook, which
    // nothing serves here: that is reported, and the trust bundle is now
    // fine.
    webhook_to_closed_loopback_port(&admin).await;
    let (ok, text) = check(&kc, &[]).await;
    assert!(!ok, "{text}");
    assert_line(
        &text,
        "[ok]",
        "trust-bundle",
        "present in all 1 meshed namespace",
    );
    assert_line(&text, "[FAIL]", "webhook-call", "failed calling webhook");
    assert!(
        Api::<Pod>::namespaced(admin.clone(), "shop")
            .get_opt("mycelctl-check-dry-run")
            .await
            .unwrap()
            .is_none(),
        "a dry run stores nothing"
    );

    // An expired root fails.
    let expired = ca_cert("mycel-test-root", -3);
    ca_secret(&admin, &expired).await;
    set_ca_bundle(&admin, &expired.0).await;
    let (ok, text) = check(&kc, &[]).await;
    assert!(!ok, "{text}");
    assert_line(&text, "[FAIL]", "ca", "root certificate expired 3 days ago");

    // A drifted CRD is named.
    let crds = Api::<CustomResourceDefinition>::all(admin.clone());
    let drift = json!([{"op": "add",
        "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/drifted",
        "value": {"type": "string"}}]);
    crds.patch(
        "meshconfigs.mycel.io",
        &PatchParams::default(),
        &Patch::<()>::Json(serde_json::from_value(drift).unwrap()),
    )
    .await
    .unwrap();
    let (ok, text) = check(&kc, &[]).await;
    assert!(!ok, "{text}");
    assert_line(
        &text,
        "[FAIL]",
        "crds",
        "meshconfigs.mycel.io is installed but its schema differs",
    );
}

#[tokio::test]
async fn check_proxy_names_meshed_pods_without_a_ready_or_reachable_proxy() {
    if !k8s::available() {
        return;
    }
    let api = ApiServer::start().await.unwrap();
    let admin = api.client().await.unwrap();
    let kc = api.kubeconfig.display().to_string();
    // Not labelled for injection: the install's webhook (failurePolicy
    // Fail, no endpoints here) must not be asked. The check lists Pods by
    // their mycel.io/meshed label, which the injector sets.
    let out = mycelctl(&["install", "--apply", "--kubeconfig", &kc]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _: Namespace = create(
        Api::all(admin.clone()),
        json!({"metadata": {"name": "shop"}}),
    )
    .await;
    let _: ServiceAccount = create(
        Api::namespaced(admin.clone(), "shop"),
        json!({"metadata": {"name": "web"}}),
    )
    .await;
    let pods = Api::<Pod>::namespaced(admin.clone(), "shop");
    for name in ["web-1", "web-2"] {
        let _: Pod = create(
            pods.clone(),
            json!({
                "metadata": {"name": name, "labels": {"mycel.io/meshed": "true"}},
                "spec": {
                    "serviceAccountName": "web",
                    "automountServiceAccountToken": false,
                    "initContainers": [{"name": "mycel-proxy", "image": "mycel-proxy:test", "restartPolicy": "Always"}],
                    "containers": [{"name": "app", "image": "app:test"}],
                },
            }),
        )
        .await;
    }
    let (ok, text) = check(&kc, &["--proxy"]).await;
    assert!(!ok, "{text}");
    assert_line(
        &text,
        "[FAIL]",
        "proxies",
        "2 of 2 meshed pod(s) without a ready proxy: shop/web-1, shop/web-2",
    );

    // What a kubelet would report for web-1: the native sidecar ready, on a
    // loopback pod IP, which the API server's pod proxy refuses to dial
    // (so no test traffic goes anywhere); the check names the pod.
    // A real proxy behind the pod proxy: k8s.rs
    // (check_proxy_reads_a_real_proxy_certificate_through_the_api_server).
    pods.patch_status(
        "web-1",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "phase": "Running",
            "podIP": "127.0.0.20",
            "podIPs": [{"ip": "127.0.0.20"}],
            "initContainerStatuses": [{
                "name": "mycel-proxy", "ready": true, "restartCount": 0, "image": "mycel-proxy:test",
                "imageID": "", "started": true, "state": {"running": {}},
            }],
        }})),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let (ok, text) = check(&kc, &["--proxy"]).await;
    assert!(!ok, "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_line(
        &text,
        "[FAIL]",
        "proxies",
        "1 of 2 meshed pod(s) without a ready proxy: shop/web-2",
    );
    assert_line(&text, "[FAIL]", "proxy-certs", "shop/web-1");
}

/// The documented path without helm: `mycelctl install | kubectl apply -f -`,
/// into a namespace of the user's choosing, and check finds it there.
#[tokio::test]
async fn printed_manifests_apply_with_kubectl_into_another_namespace() {
    if !k8s::available() || !k8s::tools_available() {
        return;
    }
    let api = ApiServer::start().await.unwrap();
    let admin = api.client().await.unwrap();
    let kc = api.kubeconfig.display().to_string();
    let printed = mycelctl(&["install", "--namespace", "mesh-a"]).await;
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );

    let mut kubectl = tokio::process::Command::new(k8s::bin_dir().join("kubectl"))
        .args(["--kubeconfig", &kc, "apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = kubectl.stdin.take().unwrap();
        stdin.write_all(&printed.stdout).await.unwrap();
    }
    let applied = kubectl.wait_with_output().await.unwrap();
    assert!(
        applied.status.success(),
        "kubectl apply: {}{}",
        stdout(&applied),
        String::from_utf8_lossy(&applied.stderr)
    );

    let hook = Api::<MutatingWebhookConfiguration>::all(admin.clone())
        .get("mycel-injector")
        .await
        .unwrap();
    let service = hook.webhooks.unwrap()[0]
        .client_config
        .service
        .clone()
        .unwrap();
    assert_eq!(service.namespace, "mesh-a");
    let (ok, text) = check(&kc, &["--namespace", "mesh-a"]).await;
    assert!(!ok, "{text}");
    assert_line(
        &text,
        "[ok]",
        "crds",
        "meshconfigs.mycel.io installed and current",
    );
    assert_line(
        &text,
        "[FAIL]",
        "controller",
        "mycel-controller in mesh-a has no ready replica",
    );
    assert_line(&text, "[FAIL]", "ca", "no CA Secret mesh-a/mycel-ca");
    // Hints name the namespace it is installed in.
    assert!(text.contains("kubectl -n mesh-a get pods"), "{text}");
    assert!(!text.contains("-n mycel-system"), "{text}");
}

/// An API server that accepts connections and never answers: check fails
/// with one line and a hint, within its timeouts, instead of hanging. No
/// Kubernetes binaries needed.
#[tokio::test]
async fn a_silent_api_server_is_a_failed_line_not_a_hang() {
    let silent = k8s::SilentApiServer::start().await.unwrap();
    let started = Instant::now();
    let (ok, text) = check(&silent.kubeconfig.display().to_string(), &[]).await;
    let took = started.elapsed();
    drop(silent);
    assert!(!ok, "{text}");
    assert!(took < Duration::from_secs(20), "took {took:?}:\n{text}");
    assert_line(&text, "[FAIL]", "kubernetes-api", "not reachable");
    assert!(text.contains("hint: check the kubeconfig"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with('[')).count(),
        1,
        "{text}"
    );
}
