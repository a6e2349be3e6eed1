//! `mycelctl cert inspect` and `cert check` on a cluster: a real
//! kube-apiserver, the controller following it, and a real proxy in a
//! network-namespace pod that mycelctl reads only through the API server's
//! pods/proxy subresource (the harness of `k8s.rs`).
//!
//! No kube-controller-manager or kubelet runs: the Deployment is an object
//! whose selector matches the Pod objects, and the test writes the Pods'
//! status as a kubelet would.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use mycel_tests::k8s::{self, ApiServer};
use mycel_tests::netns::ADMIN_PORT;
use serde_json::{json, Value};

use super::cert_inspect::{mycelctl, text};
use super::k8s::{can_run_pods, cluster_with_live_proxy, create, running_meshed_pod};

const NS: &str = "shop";
const ID: &str = "spiffe://cluster.local/ns/shop/sa/web";

/// Runs mycelctl; whether it exited 0, its stdout and stderr. Every
/// command here has timeouts, so none may take long.
pub(super) async fn run(args: &[&str]) -> (bool, String, String) {
    let started = Instant::now();
    let out = mycelctl(args).await;
    let (stdout, stderr) = text(&out);
    // Shown when the test fails (libtest captures it otherwise).
    println!("$ mycelctl {}\n{stdout}{stderr}", args.join(" "));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "mycelctl {args:?} took {:?}",
        started.elapsed()
    );
    (out.status.success(), stdout, stderr)
}

/// `mycelctl cert ARGS --kubeconfig KC`.
async fn cert(kc: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["cert"];
    all.extend_from_slice(args);
    all.extend(["--kubeconfig", kc]);
    run(&all).await
}

pub(super) fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// A Deployment selecting `app=<app>`, as `kubectl create deployment`
/// would write it; no controller-manager makes Pods for it here.
pub(super) async fn deployment(client: &Client, name: &str, app: &str) {
    let _: Deployment = create(
        client,
        Some(NS),
        json!({
            "metadata": {"name": name},
            "spec": {
                "selector": {"matchLabels": {"app": app}},
                "template": {
                    "metadata": {"labels": {"app": app}},
                    "spec": {"containers": [{"name": "app", "image": "mycel-demo"}]},
                },
            },
        }),
    )
    .await;
}

/// Labels the namespace for injection and waits until the controller has
/// published its trust bundle there.
async fn mesh_namespace(client: &Client) {
    Api::<Namespace>::all(client.clone())
        .patch(
            NS,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"mycel.io/inject": "enabled"}}})),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(30);
    while cms.get_opt("mycel-trust-bundle").await.unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the controller never published mycel-trust-bundle in {NS}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The users' named use: a pod's and a Deployment's certificate chain, and
/// every meshed pod's, read from a real proxy through the API server and
/// verified against the trust bundle the controller published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_inspect_and_check_read_a_real_proxy_through_the_api_server() {
    if !k8s::available() || !can_run_pods() {
        return;
    }
    let (_node, api, client, web) =
        cluster_with_live_proxy(&["--trust-bundle-configmap", "mycel-trust-bundle"]).await;
    let kc = api.kubeconfig.display().to_string();
    mesh_namespace(&client).await;
    running_meshed_pod(
        &client,
        "web-live",
        "web",
        &web,
        &[("app", "web")],
        Some(ADMIN_PORT),
    )
    .await;
    // What the proxy itself says it holds, read inside its pod.
    let live = json_of(&web.admin("/certs").stdout);
    let serial = live["serial"].as_str().unwrap();

    // pod/NAME: the proxy's real certificate, verified against the
    // namespace's published bundle.
    let (ok, out, err) = cert(&kc, &["inspect", "-n", NS, "pod/web-live"]).await;
    assert!(ok, "{out}{err}");
    for want in [
        "Source: pod shop/web-live",
        &format!(
            "Pod: shop/web-live (its proxy's admin port {ADMIN_PORT}, through the API server)"
        ),
        ID,
        serial,
        "Chain: verified",
        "Trust bundle (1 root) from ConfigMap shop/mycel-trust-bundle (key ca.crt):",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }
    assert!(!out.contains('\x1b'), "colour on a pipe: {out:?}");

    // A bare pod name with -n, as JSON.
    let (ok, out, err) = cert(&kc, &["inspect", "-n", NS, "web-live", "-o", "json"]).await;
    assert!(ok, "{out}{err}");
    let doc = json_of(&out);
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["source"], "pod shop/web-live");
    assert_eq!(doc["pod"]["name"], "web-live");
    assert_eq!(doc["pod"]["admin_port"], ADMIN_PORT);
    assert_eq!(doc["chain"][0]["spiffe_id"], ID);
    assert_eq!(doc["chain"][0]["serial"], serial);
    assert_eq!(doc["chain"][0]["role"], "leaf");
    assert_eq!(
        doc["chain"].as_array().unwrap().len(),
        1 + live["issuer_chain"].as_array().unwrap().len(),
        "the whole chain the proxy presents: {doc}"
    );
    assert_eq!(doc["verification"]["status"], "verified");
    assert_eq!(
        doc["trust_bundle_source"],
        "ConfigMap shop/mycel-trust-bundle (key ca.crt)"
    );
    assert_eq!(
        doc["trust_bundle"][0]["sha256"], live["trust_bundle"][0]["sha256"],
        "the published root is the proxy's"
    );

    // deploy/NAME: of the three pods it selects only web-live has a ready
    // proxy (web-0 and web-1 have none), and the output says so.
    deployment(&client, "web", "web").await;
    let (ok, out, err) = cert(&kc, &["inspect", "-n", NS, "deploy/web"]).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("Source: deploy/web in shop: pod web-live"),
        "{out}"
    );
    assert!(
        out.contains("picked from deployment shop/web: the first by name of 1 pod(s) with a ready proxy (3 selected)"),
        "{out}"
    );
    assert!(out.contains(ID) && out.contains("Chain: verified"), "{out}");

    // cert check -A: web-0 and web-1 are labelled meshed but run no proxy
    // (k8s.rs seeds them so), so there is no certificate to read: each is
    // named, and the exit status is non-zero.
    let (ok, out, err) = cert(&kc, &["check", "-A"]).await;
    assert!(!ok, "{out}{err}");
    for pod in ["shop/web-0", "shop/web-1"] {
        assert!(
            err.contains(&format!(
                "{pod}: not meshed: it has no mycel-proxy container"
            )),
            "{pod} not named in: {err}"
        );
    }
    assert!(!err.contains("shop/web-live"), "{err}");
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    for name in ["web-0", "web-1"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    // Unscheduled Pods go at once; wait for the list to say so.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pods.get_opt("web-0").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "web-0 not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Now every meshed pod passes: one aligned row, exit 0.
    let (ok, out, err) = cert(&kc, &["check", "-A"]).await;
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAMESPACE  POD"), "{out}");
    assert!(
        lines[1].starts_with("shop       web-live") && lines[1].contains(ID),
        "{out}"
    );
    assert_eq!(
        lines[1].find("yes"),
        lines[0].find("VERIFIED"),
        "columns aligned:\n{out}"
    );
    assert!(
        out.contains("1 meshed pod(s) in all namespaces: 1 ok, 0 not"),
        "{out}"
    );

    // --warn longer than the certificate's life (24h): the pod is named.
    let (ok, out, err) = cert(&kc, &["check", "-A", "--warn", "48h"]).await;
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains("shop/web-live: leaf expires in") && err.contains("(within --warn 2d)"),
        "{err}"
    );

    // JSON, one namespace.
    let (ok, out, err) = cert(&kc, &["check", "-n", NS, "-o", "json"]).await;
    assert!(ok, "{out}{err}");
    let doc = json_of(&out);
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["namespace"], NS);
    assert_eq!(doc["pods"].as_array().unwrap().len(), 1, "{doc}");
    let row = &doc["pods"][0];
    assert_eq!(row["pod"], "web-live");
    assert_eq!(row["spiffe_id"], ID);
    assert_eq!(row["serial"], serial);
    assert_eq!(row["verified"], true);
    assert!(row["seconds_left"].as_i64().unwrap() > 23 * 3600, "{row}");
}

/// A Pod object: meshed (a native proxy, status as given) or not.
pub(super) fn pod_object(name: &str, app: &str, meshed: bool) -> Value {
    let mut labels = json!({"app": app});
    let mut spec = json!({"containers": [{"name": "app", "image": "mycel-demo"}]});
    if meshed {
        labels["mycel.io/meshed"] = json!("true");
        spec["initContainers"] =
            json!([{"name": "mycel-proxy", "image": "mycel-proxy", "restartPolicy": "Always"}]);
    }
    json!({"metadata": {"name": name, "labels": labels}, "spec": spec})
}

/// Each way of not getting a certificate is an error that says which:
/// no such pod or deployment, a pod or deployment not meshed, a proxy not
/// ready, a kind not read, an account without rights. Needs the API
/// server only (no root).
#[tokio::test]
async fn cert_inspect_and_check_say_what_is_wrong_in_the_cluster() {
    if !k8s::available() {
        return;
    }
    let api = ApiServer::start().await.unwrap();
    let client = api.client().await.unwrap();
    let kc = api.kubeconfig.display().to_string();
    let _: Namespace = Api::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await
        .unwrap();
    // Pods run as `default`; no controller-manager makes it here.
    let _: ServiceAccount =
        create(&client, Some(NS), json!({"metadata": {"name": "default"}})).await;
    let _: Pod = create(&client, Some(NS), pod_object("plain", "plain", false)).await;
    let _: Pod = create(&client, Some(NS), pod_object("starting", "web", true)).await;
    Api::<Pod>::namespaced(client.clone(), NS)
        .patch_status(
            "starting",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Running",
                "initContainerStatuses": [{
                    "name": "mycel-proxy", "ready": false, "restartCount": 3,
                    "image": "mycel-proxy", "imageID": "", "started": false,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                }],
            }})),
        )
        .await
        .unwrap();
    deployment(&client, "plain", "plain").await;
    deployment(&client, "empty", "none").await;

    for (target, want) in [
        ("pod/plain", "pod shop/plain: not meshed: it has no mycel-proxy container"),
        (
            "pod/starting",
            "pod shop/starting: its proxy is not ready (waiting: CrashLoopBackOff)",
        ),
        ("pod/missing", "no pod missing in namespace shop"),
        ("deploy/missing", "no deployment missing in namespace shop"),
        (
            "deploy/plain",
            "deployment shop/plain is not meshed: none of its pods (plain) has a mycel-proxy container",
        ),
        ("deploy/empty", "deployment shop/empty selects no pod (app=none)"),
        (
            "svc/web",
            "svc/web: cert inspect does not read kind \"svc\"; give deploy/NAME, pod/NAME, or a pod's NAME with -n NS",
        ),
    ] {
        let (ok, out, err) = cert(&kc, &["inspect", "-n", NS, target]).await;
        assert!(!ok && out.is_empty(), "{target}: {out}");
        assert!(err.contains(want), "{target}: want {want:?}, got: {err}");
    }

    // A ServiceAccount with no rights is told the API server's refusal.
    let nobody = api.account_kubeconfig(NS, "nobody").await.unwrap();
    let nobody = nobody.display().to_string();
    let (ok, _, err) = cert(&nobody, &["inspect", "-n", NS, "deploy/plain"]).await;
    assert!(!ok);
    assert!(
        err.contains("getting deployment shop/plain: forbidden:")
            && err.contains("system:serviceaccount:shop:nobody"),
        "{err}"
    );
    let (ok, _, err) = cert(&nobody, &["check", "-A"]).await;
    assert!(!ok);
    assert!(
        err.contains("listing meshed pods in all namespaces: forbidden:"),
        "{err}"
    );

    // cert check lists meshed pods only (not `plain`) and names the one
    // whose certificate it cannot read.
    let (ok, out, err) = cert(&kc, &["check", "-n", NS]).await;
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains("1 of 1 meshed pod(s) failed: shop/starting: its proxy is not ready (waiting: CrashLoopBackOff)"),
        "{err}"
    );
    assert!(!out.contains("plain"), "{out}");
}

/// An API server that never answers: both commands fail within their
/// timeout, naming the call, instead of hanging. No Kubernetes binaries
/// needed.
#[tokio::test]
async fn cert_commands_time_out_on_a_silent_api_server() {
    let silent = k8s::SilentApiServer::start().await.unwrap();
    let kc = silent.kubeconfig.display().to_string();
    for args in [
        ["inspect", "-n", NS, "deploy/web", "--timeout", "1s"].as_slice(),
        &["check", "-A", "--timeout", "1s"],
    ] {
        let started = Instant::now();
        let (ok, _, err) = cert(&kc, args).await;
        let took = started.elapsed();
        assert!(!ok, "{args:?}");
        assert!(took < Duration::from_secs(10), "{args:?} took {took:?}");
        assert!(
            err.contains("the API server did not answer within 1s"),
            "{args:?}: {err}"
        );
    }
}
