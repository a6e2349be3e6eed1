//! Metrics, dashboards and alert rules checked by the real tools: promtool
//! checks and unit-tests the rules file and lints every `/metrics` of a
//! running demo mesh (controller, sidecars, gateway); a real Prometheus
//! server scrapes that mesh and answers the success rate; every PromQL
//! expression of the dashboards and rules evaluates there, and names only
//! metrics the processes export (or docs/observability.md lists, for
//! families no demo request creates).
//!
//! promtool and prometheus come from Debian's `prometheus` package
//! (tests/run.sh installs it); helm from tests/k8s/build-binaries.sh.
//! Without them the tests that need them skip, saying why (or fail under
//! MYCEL_REQUIRE_ALL=1).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mycel_tests::demo::Demo;
use mycel_tests::{http, skip, Proc};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn chart() -> PathBuf {
    repo().join("helm/mycel")
}

/// A tool on PATH, if installed.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn require_tool(name: &str) -> Option<PathBuf> {
    let found = tool(name);
    skip::require(
        &format!(
            "{name} not installed (Debian package prometheus; tests/run.sh installs it as root)"
        ),
        found.is_some(),
    )
    .then_some(found)
    .flatten()
}

fn run(program: &Path, args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ----- the PromQL of the dashboards and rules -------------------------------

fn dashboards() -> Vec<(String, Value)> {
    let dir = chart().join("dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every `expr` of a dashboard's panels (nested rows too) and the queries
/// of its template variables.
fn dashboard_exprs(board: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&board["panels"], &mut out);
    out
}

/// `label_values(<selector>, label)` of the template variables: the
/// selector is PromQL too.
fn variable_selectors(board: &Value) -> Vec<String> {
    board["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["definition"].as_str())
        .filter_map(|d| {
            let inner = d.strip_prefix("label_values(")?.strip_suffix(')')?;
            let (selector, _label) = inner.rsplit_once(',')?;
            Some(selector.trim().to_string())
        })
        .collect()
}

/// The rules file's groups: (record or alert name, expr).
fn rules() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(chart().join("rules/mycel-alerts.yaml")).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    let mut out = Vec::new();
    for g in doc["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["record"].as_str().or(r["alert"].as_str()).unwrap();
            out.push((name.to_string(), r["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

fn recorded_names() -> BTreeSet<String> {
    let text = std::fs::read_to_string(chart().join("rules/mycel-alerts.yaml")).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .filter_map(|r| r["record"].as_str().map(str::to_string))
        .collect()
}

/// Every expression a Prometheus will evaluate, with where it comes from;
/// Grafana's variables replaced by what they stand for.
fn all_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (file, board) in dashboards() {
        for e in dashboard_exprs(&board)
            .into_iter()
            .chain(variable_selectors(&board))
        {
            let e = e
                .replace("$__rate_interval", "1m")
                .replace("$namespace", ".*")
                .replace("$workload", ".*");
            out.push((file.clone(), e));
        }
    }
    for (name, e) in rules() {
        out.push((format!("mycel-alerts.yaml {name}"), e));
    }
    out
}

/// The metric names an expression reads: identifiers starting `mycel_`
/// (recording rules' names contain colons and start with a level instead).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("mycel_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail.find(|c: char| !ident(c)).unwrap_or(tail.len());
        if !before.is_some_and(ident) {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

fn observability_doc() -> String {
    std::fs::read_to_string(repo().join("docs/observability.md")).unwrap()
}

/// A histogram's series names map to its family name, as the doc lists it.
fn family_of(name: &str) -> &str {
    ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

#[test]
fn dashboards_parse_and_read_only_documented_metrics() {
    let boards = dashboards();
    let names: Vec<&str> = boards.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        names,
        [
            "mycel-certificates.json",
            "mycel-control-plane.json",
            "mycel-overview.json",
            "mycel-workload.json"
        ]
    );
    let mut uids = BTreeSet::new();
    for (file, board) in &boards {
        assert!(
            uids.insert(board["uid"].as_str().unwrap().to_string()),
            "{file}: uid reused"
        );
        let exprs = dashboard_exprs(board);
        assert!(exprs.len() >= 6, "{file}: only {} queries", exprs.len());
        let mut ids = BTreeSet::new();
        for p in board["panels"].as_array().unwrap() {
            assert!(
                ids.insert(p["id"].as_i64().unwrap()),
                "{file}: panel id reused"
            );
            let pos = &p["gridPos"];
            let (x, w) = (pos["x"].as_i64().unwrap(), pos["w"].as_i64().unwrap());
            assert!(
                x + w <= 24,
                "{file}: panel {} overflows the grid",
                p["title"]
            );
        }
    }
    let workload = &boards[3].1;
    let vars: Vec<&str> = workload["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vars, ["datasource", "namespace", "workload"]);

    let doc = observability_doc();
    let recorded = recorded_names();
    let mut undocumented = Vec::new();
    for (from, e) in all_exprs() {
        for name in metric_names(&e) {
            if name.contains(':') {
                assert!(
                    recorded.contains(&name),
                    "{from}: {name} is recorded by no rule"
                );
                continue;
            }
            let listed = |n: &str| doc.contains(&format!("`{n}`"));
            if !listed(&name) && !listed(family_of(&name)) {
                undocumented.push(format!("{from}: {name}"));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "metrics not in docs/observability.md:\n{}",
        undocumented.join("\n")
    );
}

#[test]
fn metric_names_are_found_in_promql() {
    let e = r#"sum by (service) (rate(mycel_requests_total{code!~"5.."}[1m])) / service:mycel_requests:rate5m + histogram_quantile(0.9, mycel_request_duration_seconds_bucket)"#;
    assert_eq!(
        metric_names(e).into_iter().collect::<Vec<_>>(),
        [
            "mycel_request_duration_seconds_bucket",
            "mycel_requests_total"
        ]
    );
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let Some(promtool) = require_tool("promtool") else {
        return;
    };
    let rules = chart().join("rules");
    let (ok, out) = run(&promtool, &["check", "rules", "mycel-alerts.yaml"], &rules);
    assert!(ok, "promtool check rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    let (ok, out) = run(
        &promtool,
        &["test", "rules", "mycel-alerts.test.yaml"],
        &rules.join("tests"),
    );
    assert!(ok, "promtool test rules:\n{out}");
    // The unit tests cover the alerts the issue names, at least.
    let tests = std::fs::read_to_string(rules.join("tests/mycel-alerts.test.yaml")).unwrap();
    for alert in [
        "MycelHighErrorRate",
        "MycelCACertificateExpiringSoon",
        "MycelWorkloadCertificateExpiringSoon",
        "MycelProxyDisconnected",
        "MycelConfigRejected",
    ] {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} untested"
        );
    }
}

#[test]
fn chart_renders_dashboards_and_the_prometheus_rule_only_when_asked() {
    let helm = mycel_tests::k8s::bin_dir().join("helm");
    if !skip::require(
        &format!(
            "helm missing at {} (tests/k8s/build-binaries.sh builds it)",
            helm.display()
        ),
        helm.is_file(),
    ) {
        return;
    }
    let chart = chart().display().to_string();
    let render = |sets: &[&str]| {
        let mut args = vec!["template", "mycel", chart.as_str(), "-n", "mycel-system"];
        for s in sets {
            args.extend(["--set", s]);
        }
        let (ok, out) = run(&helm, &args, &repo());
        assert!(ok, "helm {args:?}:\n{out}");
        serde_saphyr::from_multiple::<Value>(&out)
            .unwrap()
            .into_iter()
            .filter(|d| !d.is_null())
            .collect::<Vec<Value>>()
    };
    let default = render(&[]);
    assert!(
        !default.iter().any(|d| d["kind"] == "PrometheusRule"
            || d["metadata"]["labels"]["grafana_dashboard"].is_string()),
        "off by default"
    );

    let docs = render(&[
        "dashboards.enabled=true",
        "prometheusRule.enabled=true",
        "prometheusRule.labels.release=prom",
    ]);
    let maps: Vec<&Value> = docs
        .iter()
        .filter(|d| d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .collect();
    assert_eq!(maps.len(), 4, "one ConfigMap per dashboard");
    let files: BTreeMap<String, Value> = dashboards().into_iter().collect();
    for m in maps {
        assert_eq!(m["kind"], "ConfigMap");
        let data = m["data"].as_object().unwrap();
        assert_eq!(data.len(), 1);
        let (file, json) = data.iter().next().unwrap();
        let parsed: Value = serde_json::from_str(json.as_str().unwrap()).unwrap();
        assert_eq!(Some(&parsed), files.get(file), "{file} changed on the way");
    }
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["labels"]["release"], "prom");
    let file: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(chart_path("rules/mycel-alerts.yaml")).unwrap(),
    )
    .unwrap();
    // The same groups, templates in annotations untouched by helm.
    assert_eq!(rule["spec"]["groups"], file["groups"]);
    let rendered = serde_json::to_string(&rule["spec"]).unwrap();
    assert!(rendered.contains("{{ $labels.service }}"), "{rendered}");
}

fn chart_path(p: &str) -> PathBuf {
    chart().join(p)
}

// ----- a running demo --------------------------------------------------------

/// Requests through the gateway: bounded in count and time.
async fn drive(gateway: SocketAddr, count: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let mut ok = 0;
    for _ in 0..count {
        if Instant::now() > deadline {
            break;
        }
        if let Ok(r) = http::get(gateway, "localhost", "/api/products").await {
            assert!(r.status < 500, "{} {}", r.status, r.body);
            ok += 1;
        }
    }
    ok
}

async fn metrics_of(addr: SocketAddr) -> String {
    let r = http::get(addr, "localhost", "/metrics").await.unwrap();
    assert_eq!(r.status, 200, "{addr}/metrics: {}", r.body);
    r.body
}

/// Metric names a `/metrics` text exports: every sample's name, and for
/// families with no sample yet the names their type gives them.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_count", "_sum"],
                _ => &[""],
            };
            out.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            if end > 0 {
                out.insert(line[..end].to_string());
            }
        }
    }
    out
}

/// `text` is what `/metrics` serves a client that does not ask for
/// OpenMetrics: the Prometheus text format promtool reads.
fn promtool_check_metrics(promtool: &Path, who: &str, text: &str) {
    use std::io::Write;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics on the {who}'s /metrics:\n{said}"
    );
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query over Prometheus's HTTP API: the `data` of a success,
/// or the error it answered.
async fn query(prom: SocketAddr, q: &str) -> Result<Value, String> {
    let r = http::get(
        prom,
        "localhost",
        &format!("/api/v1/query?query={}", encode(q)),
    )
    .await
    .map_err(|e| format!("{e:#}"))?;
    let v: Value = serde_json::from_str(&r.body).map_err(|e| format!("{e}: {}", r.body))?;
    if v["status"] == "success" {
        Ok(v["data"].clone())
    } else {
        Err(format!("{} {}", r.status, r.body))
    }
}

/// The value of a one-sample vector answer.
fn scalar(data: &Value) -> Option<f64> {
    let sample = data["result"].as_array()?.first()?;
    sample["value"][1].as_str()?.parse().ok()
}

/// The value of a one-sample query once it is a number, driving traffic
/// through the gateway between tries; bounded to a minute.
async fn answer(prom: SocketAddr, q: &str, gateway: SocketAddr) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        drive(gateway, 10, Duration::from_secs(10)).await;
        let got = query(prom, q).await.unwrap();
        if let Some(v) = scalar(&got).filter(|v| v.is_finite()) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{q}: no answer after 60 s: {got}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn prometheus_config(demo: &Demo, rules: &Path) -> String {
    let mut proxies = String::new();
    for (name, addr) in &demo.banner.proxies {
        // What a Kubernetes scrape config's relabelling gives (namespace and
        // workload from the Pod), here written out for local mode.
        proxies.push_str(&format!(
            "      - targets: ['{addr}']\n        labels: {{namespace: shop, workload: {name}}}\n"
        ));
    }
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n\
         \x20 - job_name: mycel-controller\n    static_configs:\n      - targets: ['{controller}']\n\
         \x20 - job_name: mycel-proxy\n    static_configs:\n{proxies}",
        rules = rules.display(),
        controller = demo.controller_admin(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_metrics_pass_promtool_and_prometheus_answers_the_success_rate() {
    let promtool = require_tool("promtool");
    let prometheus = require_tool("prometheus");
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Demo::start("mycelctl-demo-prometheus", dir.path(), &[]).await;
    let sent = drive(demo.gateway(), 20, Duration::from_secs(30)).await;
    assert!(sent >= 10, "only {sent} requests got through");

    // (b) every /metrics is clean for promtool, and together they export
    // every metric the dashboards and rules read (or the doc lists it, for
    // families only failures create).
    let mut exported = BTreeSet::new();
    let mut scraped = vec![("controller".to_string(), demo.controller_admin())];
    scraped.extend(demo.banner.proxies.iter().cloned());
    for (who, addr) in &scraped {
        let text = metrics_of(*addr).await;
        if let Some(promtool) = &promtool {
            promtool_check_metrics(promtool, who, &text);
        }
        exported.extend(exported_names(&text));
        if who == "controller" {
            // Every proxy got a certificate and ACKed its first push, so
            // both controller histograms hold observations, not just types.
            for want in [
                "mycel_controller_csr_duration_seconds_count{result=\"ok\"}",
                "mycel_controller_push_ack_duration_seconds_count{result=\"ack\",type=",
            ] {
                assert!(text.contains(want), "no {want} in\n{text}");
            }
        }
    }
    for want in [
        "mycel_controller_push_ack_duration_seconds_bucket",
        "mycel_controller_csr_duration_seconds_bucket",
        "mycel_requests_total",
        "mycel_identity_cert_expiry_timestamp_seconds",
        "mycel_discovery_connected",
    ] {
        assert!(exported.contains(want), "{want} not exported");
    }
    let doc = observability_doc();
    let mut only_documented = BTreeSet::new();
    for (from, e) in all_exprs() {
        for name in metric_names(&e) {
            if name.contains(':') || exported.contains(&name) {
                continue;
            }
            let listed = |n: &str| doc.contains(&format!("`{n}`"));
            assert!(
                listed(&name) || listed(family_of(&name)),
                "{from}: {name} is neither exported by the demo nor documented"
            );
            only_documented.insert(name);
        }
    }
    if !only_documented.is_empty() {
        println!("read by dashboards/rules, documented, not exported by the demo yet: {only_documented:?}");
    }

    // (c) a real Prometheus scrapes the mesh.
    let Some(prometheus) = prometheus else {
        return;
    };
    let port = mycel_tests::ports::free_block(1);
    let prom: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        prometheus_config(&demo, &chart_path("rules/mycel-alerts.yaml")),
    )
    .unwrap();
    let storage = dir.path().join("prometheus-data");
    let args: Vec<String> = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", storage.display()),
        format!("--web.listen-address={prom}"),
        "--storage.tsdb.retention.time=1h".into(),
    ];
    let mut server = Proc::spawn("prometheus", &prometheus, &args, dir.path());
    http::wait_ok(prom, "/-/ready", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", server.log()));

    // Every target up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        server.assert_running();
        let up = query(prom, "sum(up)").await.ok().and_then(|d| scalar(&d));
        if up == Some(scraped.len() as f64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "targets not all up ({up:?} of {}):\n{}",
            scraped.len(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Traffic while Prometheus watches, then the success rate and the
    // gateway's p99: a rate needs two scrapes of a changed counter within
    // its window, and each target is scraped on its own clock.
    let success =
        "sum(rate(mycel_requests_total{code!~\"5..\"}[1m])) / sum(rate(mycel_requests_total[1m]))";
    let rate = answer(prom, success, demo.gateway()).await;
    println!("success rate over the demo: {rate}");
    assert!(rate > 0.99 && rate <= 1.0, "success rate {rate}");
    let p99 = "histogram_quantile(0.99, sum by (le) (rate(mycel_request_duration_seconds_bucket{direction=\"gateway\"}[1m])))";
    let p99 = answer(prom, p99, demo.gateway()).await;
    println!("gateway p99: {p99} s");
    assert!(p99 > 0.0 && p99 < 10.0, "{p99}");

    // The rules file loaded, and its recording rules produce series.
    let groups = http::get(prom, "localhost", "/api/v1/rules").await.unwrap();
    let groups: Value = serde_json::from_str(&groups.body).unwrap();
    let names: Vec<&str> = groups["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert!(names.contains(&"mycel-traffic"), "{names:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = query(prom, "service:mycel_requests:rate5m").await.unwrap();
        if got["result"].as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "no recorded series: {got}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Every expression of the dashboards and rules is PromQL Prometheus
    // accepts, and every dashboard shows something of the running mesh
    // (panels of failures, retries and TCP stay empty in a healthy demo).
    let mut with_data: BTreeMap<String, usize> = BTreeMap::new();
    for (from, e) in all_exprs() {
        match query(prom, &e).await {
            Ok(data) => {
                let has = data["result"].as_array().is_some_and(|r| !r.is_empty());
                *with_data.entry(from).or_default() += usize::from(has);
            }
            Err(err) => panic!("{from}: {e}\n{err}"),
        }
    }
    println!("expressions with data: {with_data:?}");
    // A healthy mesh is quiet: no alert's condition holds.
    let firing: Vec<&String> = with_data
        .iter()
        .filter(|(from, n)| from.starts_with("mycel-alerts.yaml Mycel") && **n > 0)
        .map(|(from, _)| from)
        .collect();
    assert!(firing.is_empty(), "alerts on a healthy demo: {firing:?}");
    for (file, _) in dashboards() {
        let n = with_data.get(&file).copied().unwrap_or(0);
        assert!(n >= 4, "{file}: only {n} queries have data");
    }
    server.kill().await;
    demo.proc.signal(nix::sys::signal::Signal::SIGINT as i32);
    let _ = demo.proc.wait(Duration::from_secs(20)).await;
}
