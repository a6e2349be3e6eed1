//! Proves the harness runs end to end; asserts nothing about speed.
//!
//! `tiny_direct_run_writes_a_report` needs nothing but this crate.
//! `every_configuration_runs_in_quick_mode` runs every configuration with
//! the binaries beside the harness (debug ones under `cargo test`: the figures
//! mean nothing there, the run proves every setup starts, refuses what it
//! must and reports); it needs nginx and HAProxy, and skips with the reason
//! when they are missing (a failure under `MYCEL_REQUIRE_ALL=1`).
//! `tracing_scenario_counts_what_an_unreachable_collector_loses` runs the
//! tracing scenario shortened the same way (about 30 s with debug binaries)
//! and checks only that its figures are printed and that the dead and
//! black-hole collectors' lost spans were counted, nothing about speed.
//! `gateway_scenario_runs_in_quick_mode` runs the gateway scenario (HTTPS
//! fronts: the backend's own TLS, nginx, the Mycel gateway with and
//! without JWT and a rate limit) shortened the same way (about 30 s) and
//! checks that every front started, enforced what it is configured to
//! (401 without the token where JWT is on, the rate-limit headers) and
//! was reported, with no error; it needs nginx and the Mycel binaries.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;

fn run(out: &Path, args: &[&str]) -> serde_json::Value {
    let status = Command::new(env!("CARGO_BIN_EXE_mycel-bench"))
        .args(args)
        .arg("--out")
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "mycel-bench {args:?} failed: {status}");
    let json = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a JSON report");
    serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap()
}

#[test]
fn tiny_direct_run_writes_a_report() {
    let out = tempfile::tempdir().unwrap();
    let report = run(
        out.path(),
        &[
            "latency",
            "--quick",
            "--configs",
            "direct",
            "--duration-ms",
            "200",
            "--rates",
            "200",
        ],
    );
    let rows = report["latency"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "one row per protocol: {rows:?}");
    for r in rows {
        assert_eq!(r["errors"], 0, "{r}");
        assert!(r["ok"].as_u64().unwrap() >= 30, "{r}");
    }
    let files: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.iter().any(|f| f.ends_with(".md")), "{files:?}");
    assert!(
        files.iter().any(|f| f.ends_with("latency-http1.svg")),
        "{files:?}"
    );
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|dir| Path::new(dir).join(program).is_file())
}

#[test]
fn every_configuration_runs_in_quick_mode() {
    let missing: Vec<&str> = ["nginx", "haproxy"]
        .into_iter()
        .filter(|p| !on_path(p))
        .collect();
    if !missing.is_empty() {
        let what = format!(
            "nginx and haproxy installed (missing: {})",
            missing.join(", ")
        );
        mycel_test_support::skip::require(&what, false);
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let report = run(
        out.path(),
        &["all", "--quick", "--duration-ms", "300", "--rates", "500"],
    );
    let configs: Vec<&str> = report["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        configs,
        [
            "direct",
            "mycel",
            "mycel-policy",
            "mycel-routes",
            "mycel-authz",
            "nginx",
            "haproxy",
            "direct-tls",
            "nginx-tls",
            "gateway-tls",
            "gateway-tls-jwt",
            "gateway-tls-jwt-ratelimit"
        ]
    );
    for c in report["configs"].as_array().unwrap() {
        for check in c["refusal_checks"].as_array().unwrap() {
            assert_eq!(check["refused"], true, "{check}");
        }
    }
    assert!(report["control_plane"]["csr_signed"].as_u64().unwrap() > 0);
    // Every proxy pair held its quick plan's 200 connections to the
    // mesh-side port, and the server side's memory per connection was read.
    let handshakes = report["handshakes"].as_array().unwrap();
    for c in ["mycel", "nginx", "haproxy"] {
        let row = handshakes
            .iter()
            .find(|h| h["config"] == c)
            .unwrap_or_else(|| panic!("no handshake row for {c}: {handshakes:?}"));
        assert_eq!(row["held"], 200, "{row}");
        assert!(row["server_kb_per_held"].as_f64().unwrap() > 0.0, "{row}");
    }
    assert!(
        report["problems"].as_array().unwrap().is_empty(),
        "{}",
        report["problems"]
    );
}

/// The Mycel binaries the configurations start, beside the harness (the
/// debug ones under `cargo test`), or why the test cannot run.
fn mycel_binaries() -> Result<(), String> {
    let dir = Path::new(env!("CARGO_BIN_EXE_mycel-bench"))
        .parent()
        .unwrap()
        .to_path_buf();
    let missing: Vec<&str> = ["mycel-controller", "mycel-proxy", "mycelctl"]
        .into_iter()
        .filter(|b| !dir.join(b).is_file())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} built in {} (cargo build --workspace --bins)",
            missing.join(", "),
            dir.display()
        ))
    }
}

#[test]
fn tracing_scenario_counts_what_an_unreachable_collector_loses() {
    if let Err(what) = mycel_binaries() {
        mycel_test_support::skip::require(&format!("needs {what}"), false);
        return;
    }
    let out = tempfile::tempdir().unwrap();
    // A small span queue, so the black hole (whose first batch hangs for
    // the exporter's 10 s timeout) overflows it within a short run.
    let report = run(
        out.path(),
        &[
            "tracing",
            "--quick",
            "--duration-ms",
            "300",
            "--rates",
            "500",
            "--trace-queue",
            "64",
        ],
    );
    let configs = [
        "mycel",
        "mycel-trace-live",
        "mycel-trace-dead",
        "mycel-trace-blackhole",
    ];
    let names: Vec<&str> = report["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, configs);
    // `run` asserted a successful exit: no problem was reported, so the
    // live collector got spans and the unreachable ones lost spans visibly.
    let rows = report["trace_export"].as_array().unwrap();
    assert_eq!(rows.len(), configs.len(), "{rows:?}");
    let counter = |row: &serde_json::Value, name: &str| {
        ["client", "server"]
            .iter()
            .map(|side| row[side][name].as_u64().unwrap())
            .sum::<u64>()
    };
    for row in rows {
        let lost = counter(row, "dropped") + counter(row, "export_failures");
        match row["config"].as_str().unwrap() {
            "mycel" => assert_eq!(counter(row, "exported") + lost, 0, "{row}"),
            "mycel-trace-live" => assert!(counter(row, "exported") > 0, "{row}"),
            _ => {
                assert!(lost > 0, "nothing counted as lost: {row}");
                assert_eq!(counter(row, "exported"), 0, "{row}");
            }
        }
    }
    for row in report["latency"].as_array().unwrap() {
        assert!(row["ok"].as_u64().unwrap() > 0, "{row}");
        assert_eq!(row["errors"], 0, "{row}");
    }
    let md = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .expect("a markdown report");
    assert!(md.contains("### Tracing export: open-loop latency"), "{md}");
    for c in configs {
        assert!(
            md.lines()
                .any(|l| l.starts_with(&format!("| http1 | 500 | {c} |"))),
            "no latency row for {c}:\n{md}"
        );
        assert!(
            md.lines().any(|l| l.starts_with(&format!("| {c} | "))),
            "no span row for {c}:\n{md}"
        );
    }
}

/// Skips (or fails under `MYCEL_REQUIRE_ALL=1`) when `why` is Some.
fn require(why: Option<String>) -> bool {
    let Some(what) = why else { return true };
    mycel_test_support::skip::require(&format!("needs {what}"), false)
}

#[test]
fn gateway_scenario_runs_in_quick_mode() {
    let mut missing = Vec::new();
    if !on_path("nginx") {
        missing.push("nginx installed (apt-get install -y nginx)".to_string());
    }
    if let Err(what) = mycel_binaries() {
        missing.push(what);
    }
    let why = (!missing.is_empty()).then(|| missing.join(" and "));
    if !require(why) {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let report = run(
        out.path(),
        &[
            "gateway",
            "--quick",
            "--duration-ms",
            "300",
            "--rates",
            "500",
        ],
    );
    let configs = [
        "direct-tls",
        "nginx-tls",
        "gateway-tls",
        "gateway-tls-jwt",
        "gateway-tls-jwt-ratelimit",
    ];
    let names: Vec<&str> = report["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, configs);
    // `run` asserted a successful exit: no problem was reported, so every
    // front answered as configured and no gateway refused a measured
    // request. Check what the report says about it anyway.
    for c in report["configs"].as_array().unwrap() {
        let check = &c["front_check"];
        assert_eq!(check["expected"], true, "{c}");
        assert!(
            check["with_token"].as_str().unwrap().starts_with("200"),
            "{c}"
        );
        let jwt = c["name"].as_str().unwrap().contains("jwt");
        let without = check["without_token"].as_str().unwrap();
        assert_eq!(without.starts_with("401"), jwt, "{c}");
        let limited = c["name"] == "gateway-tls-jwt-ratelimit";
        assert_eq!(check["rate_limit_headers"].is_string(), limited, "{c}");
    }
    let rows = report["latency"].as_array().unwrap();
    assert_eq!(rows.len(), configs.len() * 2, "http1 and h2 each: {rows:?}");
    for row in rows.iter().chain(report["throughput"].as_array().unwrap()) {
        assert!(row["ok"].as_u64().unwrap() > 0, "{row}");
        assert_eq!(row["errors"], 0, "{row}");
    }
    let decisions = report["gateway_policy"].as_array().unwrap();
    assert_eq!(decisions.len(), 3, "one per Mycel gateway: {decisions:?}");
    for d in decisions {
        let counts = &d["decisions"];
        assert!(counts["rate_limited"].is_null(), "{d}");
        if d["config"].as_str().unwrap().contains("jwt") {
            assert!(counts["allowed"].as_u64().unwrap() > 0, "{d}");
        }
    }
    let files: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with("gateway-latency-h2.svg")),
        "{files:?}"
    );
    let md = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .expect("a markdown report");
    for heading in [
        "### Gateway: HTTPS fronts, open-loop latency",
        "### Gateway: throughput (closed loop), CPU and memory",
        "### Gateway: what each front enforced",
    ] {
        assert!(md.contains(heading), "no {heading:?}:\n{md}");
    }
    for c in configs {
        for proto in ["http1", "h2"] {
            assert!(
                md.lines()
                    .any(|l| l.starts_with(&format!("| {proto} | 500 | {c} |"))),
                "no {proto} latency row for {c}:\n{md}"
            );
        }
    }
}
