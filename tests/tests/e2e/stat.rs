//! `mycelctl stat` and `mycelctl top` against a real local mesh (the demo
//! shop), with traffic driven through its gateway while they measure.

use std::net::SocketAddr;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mycel_tests::demo::Demo;
use mycel_tests::{bin, http};
use serde_json::Value;

/// No mycelctl run here may take longer (windows are a few seconds).
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Requests the shop page API through the gateway until stopped, at most
/// `most` times; returns how many answered 200 and how many did not.
pub(super) fn drive(
    gateway: SocketAddr,
    most: usize,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<(usize, usize)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let (mut ok, mut bad) = (0, 0);
        for _ in 0..most {
            if flag.load(Ordering::Relaxed) {
                break;
            }
            match http::get(gateway, "localhost", "/api/products").await {
                Ok(r) if r.status == 200 => ok += 1,
                _ => bad += 1,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (ok, bad)
    });
    (stop, task)
}

async fn mycelctl(args: &[&str]) -> Output {
    let run = tokio::process::Command::new(bin("mycelctl"))
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(RUN_LIMIT, run)
        .await
        .expect("mycelctl finished in time")
        .expect("run mycelctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every proxy has told the controller its admin address.
async fn all_admin_addresses_known(controller_admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http::get(controller_admin, "localhost", "/debug/proxies")
            .await
            .unwrap();
        let proxies: Value = r.json();
        let list = proxies.as_array().cloned().unwrap_or_default();
        if list.len() >= 6 && list.iter().all(|p| p["admin_addr"].is_string()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "proxies without an admin address: {proxies:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_and_top_show_workloads_and_edges_of_the_demo_shop() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Demo::start("mycelctl-demo-stat", dir.path(), &[]).await;
    let admin = demo.controller_admin().to_string();
    all_admin_addresses_known(demo.controller_admin()).await;

    let (stop, traffic) = drive(demo.gateway(), 2000);
    // Let traffic start before the first read, so every hop is in the window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let json = mycelctl(&[
        "stat",
        "--controller-admin",
        &admin,
        "--window",
        "3s",
        "-o",
        "json",
    ])
    .await;
    let table = mycelctl(&[
        "stat",
        "--controller-admin",
        &admin,
        "--window",
        "2s",
        "-n",
        "shop",
    ])
    .await;
    let one = mycelctl(&[
        "stat",
        "deploy/catalog",
        "--controller-admin",
        &admin,
        "--window",
        "1s",
    ])
    .await;
    let top = mycelctl(&[
        "top",
        "--controller-admin",
        &admin,
        "--window",
        "1s",
        "--iterations",
        "2",
    ])
    .await;
    stop.store(true, Ordering::Relaxed);
    let (ok, bad) = traffic.await.unwrap();
    assert!(ok > 0 && bad == 0, "traffic: {ok} ok, {bad} failed");

    assert!(
        json.status.success(),
        "stat -o json failed: {}",
        text(&json.stderr)
    );
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    let workloads = report["workloads"].as_array().unwrap();
    for name in ["frontend", "catalog", "reviews-v1", "ratings", "gateway"] {
        let w = workloads
            .iter()
            .find(|w| w["name"] == name)
            .unwrap_or_else(|| panic!("no workload {name}: {report:#}"));
        assert_eq!(w["namespace"], "shop", "{w}");
        assert!(
            w["rps"].as_f64().unwrap() > 0.0,
            "{name} has no traffic: {w}"
        );
        assert_eq!(w["success_rate"].as_f64(), Some(1.0), "{w}");
        if report["latency"] == true {
            assert!(w["p99_ms"].as_f64().unwrap() > 0.0, "{w}");
        }
    }
    let edges = report["edges"].as_array().unwrap();
    let edge = |from: &str, to: &str| {
        edges
            .iter()
            .find(|e| e["from"] == from && e["to"] == to)
            .unwrap_or_else(|| panic!("no edge {from} -> {to}: {report:#}"))
            .clone()
    };
    let fc = edge("frontend", "catalog.shop");
    assert!(fc["rps"].as_f64().unwrap() > 0.0, "{fc}");
    assert_eq!(fc["success_rate"].as_f64(), Some(1.0), "{fc}");
    if report["latency"] == true {
        // The catalog proxy saw frontend's certificate identity.
        assert_eq!(fc["to_workloads"], serde_json::json!(["catalog"]), "{fc}");
        assert!(fc["server"]["rps"].as_f64().unwrap() > 0.0, "{fc}");
    }
    let gw = edge("gateway", "frontend.shop");
    assert_eq!(gw["direction"], "gateway", "{gw}");

    let table_out = text(&table.stdout);
    assert!(table.status.success(), "{}", text(&table.stderr));
    let row = table_out
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("catalog"))
        .unwrap_or_else(|| panic!("no catalog row:\n{table_out}"));
    assert!(row.contains("100.00%"), "{table_out}");
    assert!(
        table_out
            .lines()
            .any(|l| l.starts_with("shop/frontend") && l.contains("catalog.shop")),
        "no edge row:\n{table_out}"
    );

    let one_out = text(&one.stdout);
    assert!(one.status.success(), "{}", text(&one.stderr));
    let rows: Vec<&str> = one_out
        .lines()
        .take_while(|l| !l.is_empty())
        .skip(1)
        .collect();
    assert_eq!(
        rows.len(),
        1,
        "deploy/catalog shows only catalog:\n{one_out}"
    );

    let top_out = text(&top.stdout);
    assert!(top.status.success(), "{}", text(&top.stderr));
    assert_eq!(
        top_out.matches("mycelctl top: round").count(),
        2,
        "{top_out}"
    );
    assert!(
        top_out.contains("BUSIEST EDGES") && top_out.contains("frontend.shop"),
        "{top_out}"
    );

    // Bad arguments are refused naming what is wrong.
    let bad = mycelctl(&["stat", "svc/catalog", "--controller-admin", &admin]).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("does not read kind"),
        "{}",
        text(&bad.stderr)
    );
    let bad = mycelctl(&["stat", "--controller-admin", &admin, "--window", "0s"]).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("--window"),
        "{}",
        text(&bad.stderr)
    );
    let missing = mycelctl(&[
        "stat",
        "deploy/nope",
        "--controller-admin",
        &admin,
        "--window",
        "200ms",
    ])
    .await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("deploy/nope"),
        "{}",
        text(&missing.stderr)
    );

    demo.proc.terminate(Duration::from_secs(10)).await;
}

/// Kubernetes mode: the meshed pods of a namespace, each proxy's /metrics
/// read through the API server's pods/proxy subresource (a real
/// kube-apiserver and a real proxy in a network-namespace pod; see
/// `k8s_proxy_config.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_reads_a_real_proxy_through_the_api_server() {
    use super::k8s::{can_run_pods, cluster_with_live_proxy, running_meshed_pod};
    if !mycel_tests::k8s::available() || !can_run_pods() {
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
        Some(mycel_tests::netns::ADMIN_PORT),
    )
    .await;
    let vip = kube::Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), "shop")
        .get("web")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap();
    // Calls to the Service from inside the pod during the window: nothing
    // backs it, so the proxy answers them itself, and counts them.
    let stat = tokio::process::Command::new(bin("mycelctl"))
        .args([
            "stat",
            "-n",
            "shop",
            "--kubeconfig",
            &kc,
            "--window",
            "3s",
            "-o",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        let _ = web.exec("curl", &["-s", "-m", "2", &format!("http://{vip}/")]);
    }
    let out = tokio::time::timeout(RUN_LIMIT, stat.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let workloads = report["workloads"].as_array().unwrap();
    assert_eq!(
        workloads.len(),
        1,
        "only the pod with a ready proxy: {report:#}"
    );
    assert_eq!(workloads[0]["name"], "web-live", "{report:#}");
    assert_eq!(workloads[0]["namespace"], "shop", "{report:#}");
    assert_eq!(workloads[0]["proxies"], 1, "{report:#}");
    let edge = report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["to"] == "web.shop")
        .unwrap_or_else(|| panic!("no edge to web.shop: {report:#}"));
    assert_eq!(edge["from"], "web-live");
    assert_eq!(
        edge["from_identity"],
        "spiffe://cluster.local/ns/shop/sa/web"
    );
    assert!(edge["requests"].as_f64().unwrap() > 0.0, "{edge}");

    // pod/NAME in a table; a missing Deployment is named.
    let one = mycelctl(&[
        "stat",
        "pod/web-live",
        "-n",
        "shop",
        "--kubeconfig",
        &kc,
        "--window",
        "200ms",
    ])
    .await;
    assert!(one.status.success(), "{}", text(&one.stderr));
    assert!(
        text(&one.stdout)
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("web-live")),
        "{}",
        text(&one.stdout)
    );
    let none = mycelctl(&[
        "stat",
        "deploy/nope",
        "-n",
        "shop",
        "--kubeconfig",
        &kc,
        "--window",
        "200ms",
    ])
    .await;
    assert_eq!(none.status.code(), Some(1), "{}", text(&none.stderr));
    assert!(
        text(&none.stderr).contains("deploy/nope"),
        "{}",
        text(&none.stderr)
    );
}
