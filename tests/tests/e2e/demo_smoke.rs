//! `mycelctl demo` from start to a clean stop.

use std::path::Path;
use std::time::{Duration, Instant};

use mycel_tests::process::processes_mentioning;
use mycel_tests::{bin, http, Proc};

/// `mycelctl demo` on ports from `base`, with its data (and logs) in `data`.
fn demo(name: &str, base: u16, data: &Path, log_dir: &Path) -> Proc {
    let args = [
        "demo".to_string(),
        "--base-port".into(),
        base.to_string(),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    Proc::spawn(name, &bin("mycelctl"), &args, log_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_starts_serves_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo-data");
    // Below the ephemeral range, so no test socket can be sitting on it.
    let base = 20_000 + (std::process::id() % 10_000) as u16;
    let mut demo = demo("mycelctl-demo", base, &data, dir.path());

    let deadline = Instant::now() + Duration::from_secs(90);
    let gateway = loop {
        demo.assert_running();
        let log = demo.log();
        if let Some(line) = log
            .lines()
            .find(|l| l.trim_start().starts_with("gateway: http://"))
        {
            let url = line.trim().trim_start_matches("gateway: http://");
            break url
                .trim_end_matches('/')
                .parse::<std::net::SocketAddr>()
                .unwrap();
        }
        assert!(Instant::now() < deadline, "demo never became ready:\n{log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let r = http::get(gateway, "localhost", "/api/products")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["products"]
        .as_array()
        .is_some_and(|p| !p.is_empty()));
    let page = http::get(gateway, "localhost", "/").await.unwrap();
    assert_eq!(page.status, 200);

    let needle = data.display().to_string();
    assert!(
        processes_mentioning(&needle).len() >= 5,
        "expected the controller, apps and sidecars to be running: {:?}",
        processes_mentioning(&needle)
    );

    // A gateway registers no workload: its readiness is null, not false.
    let controller_admin = std::net::SocketAddr::new(gateway.ip(), gateway.port() - 1);
    let proxies = http::get(controller_admin, "localhost", "/debug/proxies")
        .await
        .unwrap()
        .json();
    let proxies = proxies.as_array().cloned().unwrap_or_default();
    assert_eq!(proxies.len(), 6, "{proxies:#?}");
    for p in &proxies {
        let want = if p["mode"] == "gateway" {
            serde_json::Value::Null
        } else {
            serde_json::Value::Bool(true)
        };
        assert_eq!(p["ready"], want, "{p:#}");
    }

    let logs: Vec<_> = std::fs::read_dir(data.join("logs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(logs.len() >= 5, "{logs:?}");
    for log in &logs {
        let text = std::fs::read(log).unwrap();
        assert!(
            !text.contains(&0x1b),
            "{} holds terminal escape codes",
            log.display()
        );
    }

    demo.signal(nix::sys::signal::Signal::SIGINT as i32);
    let status = demo
        .wait(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("demo did not stop on SIGINT:\n{}", demo.log()));
    assert!(
        status.success(),
        "demo exited with {status}:\n{}",
        demo.log()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left = processes_mentioning(&needle);
    assert!(left.is_empty(), "processes left behind: {left:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_reports_a_busy_port_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo-data");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = busy.local_addr().unwrap().port();
    let mut demo = demo("mycelctl-demo-busy", base, &data, dir.path());
    let status = demo
        .wait(Duration::from_secs(20))
        .await
        .expect("demo must exit");
    assert!(!status.success());
    let log = demo.log();
    assert!(
        log.contains(&base.to_string()),
        "error must name the busy port: {log}"
    );
    assert!(processes_mentioning(&data.display().to_string()).is_empty());
}
