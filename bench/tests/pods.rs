//! The pod scenario end to end, shortened: `mycel-bench pods --quick` with
//! the binaries beside the harness (the debug ones under `cargo test`, so
//! the figures mean nothing), checking that every configuration was
//! started in its pods, measured in every shape without an error, and
//! that no namespace of the run is left. Asserts nothing about speed.
//!
//! Needs root, `ip`, `iptables`, `setpriv`, `curl`, nginx with its stream
//! module, HAProxy and the Mycel binaries; skips saying what is missing, or
//! fails under `MYCEL_REQUIRE_ALL=1`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|dir| Path::new(dir).join(program).is_file())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(false)
}

/// What this machine lacks for the scenario, if anything.
fn missing() -> Option<String> {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root (network namespaces and iptables)".to_string());
    }
    for p in ["ip", "iptables", "setpriv", "curl", "nginx", "haproxy"] {
        if !on_path(p) {
            missing.push(format!("{p} installed"));
        }
    }
    let stream = mycel_bench::pods::confs::NGINX_STREAM_MODULE;
    if !Path::new(stream).exists() {
        missing.push(format!(
            "nginx's stream module {stream} (libnginx-mod-stream)"
        ));
    }
    let dir = Path::new(env!("CARGO_BIN_EXE_mycel-bench"))
        .parent()
        .unwrap();
    for b in ["mycel-controller", "mycel-proxy", "mycelctl"] {
        if !dir.join(b).is_file() {
            missing.push(format!(
                "{b} built in {} (cargo build --workspace --bins)",
                dir.display()
            ));
        }
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

#[test]
fn pods_scenario_measures_every_configuration_and_leaves_no_namespace() {
    if let Some(what) = missing() {
        mycel_test_support::skip::require(&format!("needs {what}"), false);
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mycel-bench"))
        .args(["pods", "--quick", "--duration-ms", "300", "--out"])
        .arg(out.path())
        .spawn()
        .unwrap();
    let pid = child.id();
    let status = child.wait().unwrap();
    eprintln!("mycel-bench pods took {:?}", started.elapsed());

    // Nothing of the run is left, whatever it found.
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    let prefix = format!("mycbench-{pid}-");
    assert!(
        !list.lines().any(|l| l.starts_with(&prefix)),
        "namespaces left behind:\n{list}"
    );
    assert!(status.success(), "mycel-bench pods failed: {status}");

    let json = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a JSON report");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    assert!(
        report["problems"].as_array().unwrap().is_empty(),
        "{}",
        report["problems"]
    );
    let pods = &report["pods"];
    assert!(
        pods["skipped"].as_array().unwrap().is_empty(),
        "{}",
        pods["skipped"]
    );
    let configs = [
        "direct",
        "mycel",
        "nginx",
        "nginx-captured",
        "haproxy",
        "nginx-l4",
    ];
    let names: Vec<&str> = report["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, configs);
    let runs = pods["runs"].as_array().unwrap();
    for c in configs {
        for shape in ["c1", "c32", "close-c8"] {
            let run = runs
                .iter()
                .find(|r| r["config"] == c && r["shape"] == shape)
                .unwrap_or_else(|| panic!("no {shape} run for {c}: {runs:?}"));
            assert!(run["ok"].as_u64().unwrap() > 0, "{run}");
            assert_eq!(run["errors"], 0, "{run}");
            assert_eq!(run["rounds_rps"].as_array().unwrap().len(), 2, "{run}");
        }
        let bulk = pods["bulk"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["config"] == c)
            .unwrap_or_else(|| panic!("no bulk row for {c}"));
        assert_eq!(bulk["errors"], 0, "{bulk}");
        assert_eq!(
            bulk["rounds_mb_per_s"].as_array().unwrap().len(),
            2,
            "{bulk}"
        );
    }
    let resources = pods["resources"].as_array().unwrap();
    for &c in &configs[1..] {
        let rows: Vec<_> = resources.iter().filter(|r| r["config"] == c).collect();
        assert_eq!(
            rows.len(),
            2,
            "a row per pod's proxy for {c}: {resources:?}"
        );
        for r in rows {
            for field in ["start_rss_kb", "idle_rss_kb", "load_rss_kb", "peak_rss_kb"] {
                assert!(r[field].as_u64().unwrap() > 0, "{field}: {r}");
            }
            assert!(r["requests"]["c32"].as_u64().unwrap() > 0, "{r}");
        }
    }
    let md = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .expect("a markdown report");
    assert!(
        md.contains("### Pods: the transparent path between two network namespaces"),
        "{md}"
    );
    assert!(md.contains("load average at start"), "{md}");
    for c in configs {
        assert!(
            md.lines().any(|l| l.starts_with(&format!("| {c} | "))),
            "no row for {c}:\n{md}"
        );
    }
}
