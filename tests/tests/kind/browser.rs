//! Scenario 9: the shop's page loads in a real browser (headless Chromium)
//! through the gateway's host port; the screenshot is kept as an artifact.

use std::process::Command;
use std::time::Duration;

use crate::cluster;

fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            let out = Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
}

#[tokio::test]
#[ignore = "needs a kind cluster with Mycel and the shop: tests/kind/run.sh test"]
async fn the_shop_page_renders_in_headless_chromium() {
    let browser = chromium();
    if !mycel_tests::skip::require(
        "headless Chromium (apt-get install chromium)",
        browser.is_some(),
    ) {
        return;
    }
    let browser = browser.unwrap_or_default();
    let shot = cluster::artifacts().join("shop.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("http://{}/", cluster::gateway());
    // Nothing but the page: no background requests to any service on the
    // internet (updates, metrics, safe browsing), which this machine must
    // never send.
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-sync",
        "--no-first-run",
        "--no-pings",
        "--metrics-recording-only",
        "--window-size=1280,900",
        "--virtual-time-budget=5000",
    ];
    let dom = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(&browser)
            .args(args)
            .arg("--dump-dom")
            .arg(&url)
            .output(),
    )
    .await
    .expect("chromium --dump-dom within 90 s")
    .expect("chromium runs");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("Oyster mushroom"),
        "the rendered page lists the catalog:\n{dom}"
    );

    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(&browser)
            .args(args)
            .arg(format!("--screenshot={}", shot.display()))
            .arg(&url)
            .output(),
    )
    .await
    .expect("chromium --screenshot within 90 s")
    .expect("chromium runs");
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot at {} ({e}): {}",
            shot.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "a real screenshot ({} bytes)",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}
