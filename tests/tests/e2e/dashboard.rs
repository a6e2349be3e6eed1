//! The controller's web dashboard, rendered by headless Chromium against a
//! real local mesh (the demo shop, which turns the dashboard on) under
//! traffic: the page must show the services, an edge with its rps, and
//! the proxies' identities. The screenshot is kept in
//! `target/test-artifacts/dashboard.png`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mycel_tests::{bin, http, skip};
use serde_json::Value;

use super::stat::drive;
use mycel_tests::demo::Demo;

/// A Chromium run (page load, scripts, one data fetch) takes seconds; this
/// bounds a hung browser.
const BROWSER_LIMIT: Duration = Duration::from_secs(90);

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// `target/test-artifacts/`, beside the binaries' profile directory.
fn artifacts() -> PathBuf {
    let dir = bin("mycelctl")
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("test-artifacts"))
        .unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn browse(chromium: &Path, profile: &Path, extra: &[String], url: &str) -> Output {
    let mut cmd = tokio::process::Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--window-size=1280,900",
        "--virtual-time-budget=8000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .kill_on_drop(true);
    tokio::time::timeout(BROWSER_LIMIT, cmd.output())
        .await
        .expect("chromium finished in time")
        .expect("run chromium")
}

/// The dashboard's data, once it shows frontend calling catalog.
async fn live_data(admin: std::net::SocketAddr) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let r = http::get(admin, "localhost", "/dashboard/data")
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let data = r.json();
        let live = data["edges"].as_array().is_some_and(|edges| {
            edges.iter().any(|e| {
                e["from"] == "frontend"
                    && e["to"] == "catalog.shop"
                    && e["rps"].as_f64() > Some(0.0)
            })
        });
        if live {
            return data;
        }
        assert!(
            Instant::now() < deadline,
            "no live edge frontend -> catalog: {data:#}"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

/// The rps figures of the edge labels the page drew.
fn edge_rps(dom: &str) -> Vec<f64> {
    dom.split("class=\"edge-label\">")
        .skip(1)
        .filter_map(|rest| rest.split(" rps").next()?.trim().parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_renders_services_edges_and_proxies_in_chromium() {
    let Some(chromium) = chromium() else {
        skip::require("chromium (Debian package chromium) is not installed", false);
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Demo::start("mycelctl-demo-dashboard", dir.path(), &[]).await;
    let url = format!("http://{}/dashboard", demo.controller_admin());
    assert!(
        demo.proc
            .log()
            .lines()
            .any(|l| l.trim() == format!("dashboard: {url}")),
        "the demo banner names the dashboard:\n{}",
        demo.proc.log()
    );

    let (stop, traffic) = drive(demo.gateway(), 5000);
    let data = live_data(demo.controller_admin()).await;
    for p in data["proxies"].as_array().unwrap() {
        assert_eq!(p["ack_state"], "ACK", "{p}");
        assert!(p["cert_expires_in_secs"].as_i64() > Some(0), "{p}");
        assert!(
            p["config_version"].as_str().is_some_and(|v| v.len() == 8),
            "{p}"
        );
    }

    let profile = tempfile::tempdir().unwrap();
    let dom = browse(&chromium, profile.path(), &["--dump-dom".into()], &url).await;
    let shot = artifacts().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let screenshot = browse(
        &chromium,
        profile.path(),
        &[format!("--screenshot={}", shot.display())],
        &url,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let (ok, bad) = traffic.await.unwrap();
    assert!(ok > 0 && bad == 0, "traffic: {ok} ok, {bad} failed");

    let html = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.status.success(),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    for service in [
        "frontend",
        "catalog",
        "reviews-v1",
        "reviews-v2",
        "ratings",
        "gateway",
    ] {
        assert!(
            html.contains(&format!(">{service}<")),
            "{service} missing from the page:\n{html}"
        );
    }
    for sa in ["frontend", "catalog", "ratings", "gateway"] {
        let id = format!("spiffe://cluster.local/ns/shop/sa/{sa}");
        assert!(
            html.contains(&id),
            "identity {id} missing from the page:\n{html}"
        );
    }
    assert!(
        html.contains("catalog.shop"),
        "no edge row to catalog.shop:\n{html}"
    );
    let rps = edge_rps(&html);
    assert!(
        rps.iter().any(|r| *r > 0.0),
        "no edge label with a positive rps ({rps:?}):\n{html}"
    );
    assert!(!html.contains("cannot load data"), "{html}");

    assert!(
        screenshot.status.success(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&screenshot.stderr)
    );
    let png = std::fs::read(&shot).unwrap_or_default();
    assert!(
        png.len() > 10_000 && png.starts_with(b"\x89PNG"),
        "no screenshot at {}",
        shot.display()
    );
    eprintln!("dashboard screenshot: {}", shot.display());

    demo.proc.terminate(Duration::from_secs(10)).await;
}
