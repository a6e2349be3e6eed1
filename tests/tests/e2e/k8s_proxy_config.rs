//! `mycelctl proxy-config` with cluster targets (`pod/NAME`, a bare NAME
//! with -n, `deploy/NAME`): a real kube-apiserver, the controller following
//! it, and a real proxy in a network-namespace pod whose admin mycelctl
//! reads only through the API server's pods/proxy subresource (the harness
//! of `k8s.rs`, as `k8s_cert.rs` uses it for `cert inspect`).
//!
//! No kubelet runs: the test writes the Pods' status as a kubelet would.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use mycel_tests::k8s::{self, ApiServer};
use mycel_tests::netns::ADMIN_PORT;

use super::cert_inspect::{mycelctl, text};
use super::k8s::{can_run_pods, cluster_with_live_proxy, create, running_meshed_pod, seed};
use super::k8s_cert::{deployment, json_of, pod_object, run};

const NS: &str = "shop";
const ID: &str = "spiffe://cluster.local/ns/shop/sa/web";

/// `mycelctl proxy-config ARGS --kubeconfig KC`: whether it exited 0, its
/// stdout and stderr.
async fn proxy_config(kc: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["proxy-config"];
    all.extend_from_slice(args);
    all.extend(["--kubeconfig", kc]);
    run(&all).await
}

/// What an operator asks of a workload's proxy, answered from the real
/// proxy through the API server and equal to what the proxy itself says
/// inside its pod; and a pod whose admin does not answer is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_config_reads_a_real_proxy_through_the_api_server() {
    if !k8s::available() || !can_run_pods() {
        return;
    }
    let (_node, api, client, web) = cluster_with_live_proxy(&[]).await;
    let kc = api.kubeconfig.display().to_string();
    running_meshed_pod(
        &client,
        "web-live",
        "web",
        &web,
        &[("app", "web")],
        Some(ADMIN_PORT),
    )
    .await;
    // A connection to the Service's VIP from inside the pod subscribes its
    // proxy to web.shop (nothing backs it: no traffic leaves the pod).
    let vip = Api::<Service>::namespaced(client.clone(), NS)
        .get("web")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = web.exec("curl", &["-s", "-m", "2", &format!("http://{vip}/")]);
        if web.admin("/config_dump").stdout.contains("\"web.shop\"") {
            break;
        }
        assert!(Instant::now() < deadline, "web.shop never subscribed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let live_certs = json_of(&web.admin("/certs").stdout);
    let serial = live_certs["serial"].as_str().unwrap();

    // pod/NAME, one section: the heading names the pod and the port.
    let (ok, out, err) = proxy_config(&kc, &["-n", NS, "pod/web-live", "services"]).await;
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("Proxy: pod shop/web-live (its admin port {ADMIN_PORT}, through the API server)")
    );
    assert!(lines[2].starts_with("SERVICE "), "{out}");
    let row = lines
        .iter()
        .find(|l| l.starts_with("web.shop "))
        .unwrap_or_else(|| panic!("no web.shop row: {out}"));
    assert!(
        row.contains("known") && row.contains(&vip) && row.contains("0/0 ready"),
        "{out}"
    );
    assert_eq!(
        row.find("known"),
        lines[2].find("STATE"),
        "columns aligned:\n{out}"
    );

    // A bare name with -n, every section, as JSON: what the proxy holds.
    let (ok, out, err) = proxy_config(&kc, &["-n", NS, "web-live", "-o", "json"]).await;
    assert!(ok, "{out}{err}");
    let doc = json_of(&out);
    assert_eq!(doc["proxy"], "pod shop/web-live");
    assert_eq!(doc["pod"]["name"], "web-live");
    assert_eq!(doc["pod"]["namespace"], NS);
    assert_eq!(doc["pod"]["admin_port"], ADMIN_PORT);
    assert_eq!(doc["synced"], true);
    assert_eq!(doc["certs"]["spiffe_id"], ID);
    assert_eq!(doc["certs"]["serial"], serial);
    assert_eq!(doc["authz"]["received"], true, "{doc}");
    assert!(
        doc["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["service"] == "web.shop" && s["state"] == "known"),
        "{doc}"
    );

    // YAML too.
    let (ok, out, err) = proxy_config(&kc, &["-n", NS, "pod/web-live", "-o", "yaml"]).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("proxy: pod shop/web-live") && out.contains(ID),
        "{out}"
    );

    // deploy/NAME: of the three pods it selects only web-live has a ready
    // proxy (web-0 and web-1 have none), and the output says which.
    deployment(&client, "web", "web").await;
    let (ok, out, err) = proxy_config(&kc, &["-n", NS, "deploy/web", "certs"]).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.starts_with("Proxy: deploy/web in shop: pod web-live (its admin port"),
        "{out}"
    );
    assert!(
        out.contains("Selected: picked from deployment shop/web: the first by name of 1 pod(s) with a ready proxy (3 selected)"),
        "{out}"
    );
    assert!(out.contains(ID) && out.contains(serial), "{out}");

    // A meshed, ready pod whose spec names an admin port the proxy does
    // not serve: the API server gets no answer there (the pod's capture
    // takes the connection), and the error says where it stopped.
    running_meshed_pod(&client, "web-deaf", "web", &web, &[], Some(15999)).await;
    let (ok, out, err) = proxy_config(&kc, &["-n", NS, "pod/web-deaf", "--timeout", "2s"]).await;
    assert!(!ok, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.starts_with(
            "error: pod shop/web-deaf: reading its proxy's /config_dump through the API server: "
        ),
        "{err}"
    );
}

/// Each way of not reaching a proxy is an error that says which: no such
/// pod or deployment, a pod without a sidecar, a sidecar that has not
/// started (no kubelet reported it), an account without rights; and a
/// TARGET in no accepted form is a usage error (exit 2) before anything is
/// asked. Needs the API server only.
#[tokio::test]
async fn proxy_config_says_what_is_wrong_in_the_cluster() {
    if !k8s::available() {
        return;
    }
    let api = ApiServer::start().await.unwrap();
    let client = api.client().await.unwrap();
    // Namespace shop and the accounts of its Pods (the ones below run as
    // `default`; no controller-manager makes it here). Seed's own Pod is
    // not read.
    seed(&client, &[("seeded", "default")]).await;
    for (name, meshed) in [("plain", false), ("pending", true)] {
        let _: Pod = create(&client, Some(NS), pod_object(name, name, meshed)).await;
        deployment(&client, name, name).await;
    }
    let kc = api.kubeconfig.display().to_string();

    let unstarted = "its proxy is not ready (no status reported for mycel-proxy yet)";
    for (target, want) in [
        ("pod/missing", "no pod missing in namespace shop".to_string()),
        ("deploy/missing", "no deployment missing in namespace shop".into()),
        (
            "pod/plain",
            "pod shop/plain: not meshed: it has no mycel-proxy container".into(),
        ),
        (
            "deploy/plain",
            "deployment shop/plain is not meshed: none of its pods (plain) has a mycel-proxy container".into(),
        ),
        ("pending", format!("pod shop/pending: {unstarted}")),
        (
            "deploy/pending",
            "deployment shop/pending has no pod with a ready proxy: pending (no status reported for mycel-proxy yet)".into(),
        ),
    ] {
        let (ok, out, err) = proxy_config(&kc, &["-n", NS, target]).await;
        assert!(!ok && out.is_empty(), "{target}: {out}");
        assert!(err.contains(&want), "{target}: want {want:?}, got: {err}");
    }

    // Refused before any call: exit 2, saying what is accepted.
    for (args, want) in [
        (
            &["-n", NS, "svc/web"][..],
            "svc/web: proxy-config does not read kind \"svc\"; give deploy/NAME, pod/NAME, or a pod's NAME with -n NS",
        ),
        (
            &["-n", NS, "127.0.0.1:15000"][..],
            "\"127.0.0.1:15000\" is a proxy's admin address: -n, --kubeconfig and --context are for",
        ),
        (&["-n", NS, "pod/Web"][..], "is not a valid Kubernetes pod name"),
        (&["-n", "Shop", "pod/web"][..], "\"Shop\" is not a valid namespace"),
    ] {
        let mut all = vec!["proxy-config", "--kubeconfig", &kc];
        all.extend_from_slice(args);
        let out = mycelctl(&all).await;
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?}, got: {err}");
    }

    // A ServiceAccount with no rights is told the API server's refusal.
    let nobody = api.account_kubeconfig(NS, "nobody").await.unwrap();
    let nobody = nobody.display().to_string();
    let (ok, _, err) = proxy_config(&nobody, &["-n", NS, "pod/plain"]).await;
    assert!(!ok);
    assert!(
        err.contains("getting pod shop/plain: forbidden:")
            && err.contains("system:serviceaccount:shop:nobody"),
        "{err}"
    );
}

/// An API server that never answers: proxy-config fails within its
/// timeout, naming the call, instead of hanging. No Kubernetes binaries
/// needed.
#[tokio::test]
async fn proxy_config_times_out_on_a_silent_api_server() {
    let silent = k8s::SilentApiServer::start().await.unwrap();
    let kc = silent.kubeconfig.display().to_string();
    let (ok, _, err) = proxy_config(&kc, &["-n", NS, "deploy/web", "--timeout", "1s"]).await;
    assert!(!ok, "{err}");
    assert!(
        err.contains("getting deployment shop/web: the API server did not answer within 1s"),
        "{err}"
    );
}
