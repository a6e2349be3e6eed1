//! The helm chart (`helm/mycel`): lint clean, values typed by its schema,
//! manifests valid for Kubernetes 1.35 (kubernetes-validate --strict) and
//! clean under checkov, RBAC equal to the controller's list of calls
//! (`rbac::REQUIRED`), and installed into a real API server, where the
//! controller runs with the chart's ServiceAccount and is refused nothing it
//! needs and everything else.
//!
//! helm comes from tests/k8s/build-binaries.sh, the Python tools from
//! tests/k8s/python-tools.sh (run here when missing); without them the tests
//! skip and say why.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use mycel_control_plane::sources::k8s::rbac::{Scope, REQUIRED};
use mycel_tests::k8s::{self, K8S_VERSION};
use mycel_tests::skip;
use serde_json::{json, Value};

/// `helm install` into a real API server.
mod cluster;
/// `mycelctl install` renders the chart.
mod install;

/// Where the chart is installed, as the README says.
const NS: &str = "mycel-system";
const SA: &str = "mycel-controller";

/// checkov rules the chart skips on purpose, each with its reason in an
/// annotation beside the object (`checkov.io/skipN`); any other finding
/// fails. checkov gives no severities without its vendor's service, so
/// "no high findings" is held as "no findings".
const CHECKOV_SKIPS: &[&str] = &["CKV_K8S_15", "CKV_K8S_43", "CKV_K8S_155"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn chart() -> String {
    repo().join("helm/mycel").display().to_string()
}

fn helm(args: &[&str]) -> Output {
    Command::new(k8s::bin_dir().join("helm"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm template` with `--set`s, CRDs included; panics with helm's words.
fn render(sets: &[&str]) -> String {
    let chart = chart();
    let mut args = vec!["template", "mycel", &chart, "-n", NS, "--include-crds"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = helm(&args);
    assert!(out.status.success(), "helm {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// The documents of a multi-document YAML stream.
fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap()
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("the chart renders no {kind} {name}"))
}

/// The bin directory of the Python tools' virtualenv, installed once per
/// test binary by tests/k8s/python-tools.sh; `None` (and a reported skip)
/// when they cannot be had here.
fn python_tools() -> Option<PathBuf> {
    static TOOLS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let tools = TOOLS.get_or_init(|| {
        let script = repo().join("tests/k8s/python-tools.sh");
        let run = |args: &[&str]| Command::new("bash").arg(&script).args(args).output();
        match run(&[]) {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Err(format!("tests/k8s/python-tools.sh failed: {}", text(&o))),
            Err(e) => return Err(format!("cannot run tests/k8s/python-tools.sh: {e}")),
        }
        let dir = run(&["--print-dir"]).map_err(|e| e.to_string())?;
        Ok(PathBuf::from(String::from_utf8_lossy(&dir.stdout).trim()))
    });
    match tools {
        Ok(dir) => Some(dir.clone()),
        Err(why) => {
            skip::require(why, false);
            None
        }
    }
}

/// The injector settings the chart mounts (`--inject-config`) are what the
/// controller reads: every field known, every quantity valid.
#[test]
fn rendered_inject_settings_are_read_by_the_controller() {
    if !k8s::tools_available() {
        return;
    }
    let docs = docs(&render(&[]));
    let config = find(&docs, "ConfigMap", "mycel-config");
    let text = config["data"]["inject.yaml"].as_str().unwrap();
    let settings: mycel_inject::InjectConfig = serde_saphyr::from_str(text)
        .unwrap_or_else(|e| panic!("the chart's inject.yaml is refused: {e}\n{text}"));
    mycel_inject::check_config(&settings).unwrap();
    assert_eq!(
        settings.controller_address,
        "mycel-controller.mycel-system.svc:15010"
    );
    assert_eq!(settings.mtls_mode, mycel_inject::MtlsMode::Permissive);
}

/// `proxy.mtlsMode` reaches the injector's settings, so every injected proxy
/// gets it as `--mtls-mode` (unless its pod's annotation says otherwise).
#[test]
fn proxy_mtls_mode_reaches_the_injector() {
    if !k8s::tools_available() {
        return;
    }
    let docs = docs(&render(&["proxy.mtlsMode=strict"]));
    let text = find(&docs, "ConfigMap", "mycel-config")["data"]["inject.yaml"]
        .as_str()
        .unwrap();
    let settings: mycel_inject::InjectConfig = serde_saphyr::from_str(text).unwrap();
    assert_eq!(settings.mtls_mode, mycel_inject::MtlsMode::Strict, "{text}");
    let pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"containers": [{"name": "web", "image": "web:1"}]},
    }))
    .unwrap();
    let meshed = mycel_inject::inject_pod(pod, &settings).unwrap();
    let args = serde_json::to_string(&meshed.spec.unwrap().init_containers).unwrap();
    assert!(args.contains("--mtls-mode=strict"), "{args}");
}

/// The chart's telemetry values reach the injector's settings, and through
/// them every injected proxy: OTLP variables (the mesh's collector,
/// `tracing.*`), `--trace-sampling` and `--access-log`. Left empty, nothing
/// of them is written.
#[test]
fn proxy_telemetry_values_reach_the_injector() {
    if !k8s::tools_available() {
        return;
    }
    let settings = |sets: &[&str]| -> mycel_inject::InjectConfig {
        let docs = docs(&render(sets));
        let text = find(&docs, "ConfigMap", "mycel-config")["data"]["inject.yaml"]
            .as_str()
            .unwrap()
            .to_string();
        let settings = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("the chart's inject.yaml is refused: {e}\n{text}"));
        mycel_inject::check_config(&settings).unwrap();
        settings
    };
    let defaults = settings(&[]);
    assert_eq!(defaults.tracing, mycel_inject::Tracing::default());
    assert_eq!(defaults.access_log, mycel_inject::AccessLog::Off);

    let endpoint = "http://otel-collector.observability.svc:4317";
    let set = settings(&[
        &format!("tracing.otlpEndpoint={endpoint}"),
        "tracing.protocol=grpc",
        // What --set makes of it is a string; the chart writes a number.
        "proxy.tracing.sampling=0.25",
        "proxy.accessLog=stdout",
    ]);
    assert_eq!(set.tracing.otlp_endpoint.as_deref(), Some(endpoint));
    assert_eq!(set.tracing.protocol, mycel_inject::OtlpProtocol::Grpc);
    assert_eq!(set.tracing.sampling, mycel_inject::Ratio::new(0.25));
    assert_eq!(set.access_log, mycel_inject::AccessLog::Stdout);
    // 0 is a setting too (no trace starts in a sidecar), not "unset".
    let zero = settings(&["proxy.tracing.sampling=0"]);
    assert_eq!(zero.tracing.sampling, mycel_inject::Ratio::new(0.0));

    let pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"containers": [{"name": "web", "image": "web:1"}]},
    }))
    .unwrap();
    let meshed = mycel_inject::inject_pod(pod, &set).unwrap();
    let proxy = serde_json::to_value(&meshed.spec.unwrap().init_containers.unwrap()[1]).unwrap();
    let args = proxy["args"].to_string();
    for want in ["--trace-sampling=0.25", "--access-log=stdout"] {
        assert!(args.contains(want), "{want}: {args}");
    }
    let env = proxy["env"].to_string();
    for want in [endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"] {
        assert!(env.contains(want), "{want}: {env}");
    }
}

/// The controller Deployment's environment, by name: the value, or the
/// `valueFrom` as JSON; in order.
fn controller_env(docs: &[Value]) -> Vec<(String, Value)> {
    find(docs, "Deployment", SA)["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let v = e.get("value").unwrap_or(&e["valueFrom"]).clone();
            (e["name"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// The mesh's collector (`tracing.otlpEndpoint`, `tracing.protocol`)
/// reaches the controller as it reaches the proxies: its Deployment carries
/// `OTEL_EXPORTER_OTLP_ENDPOINT`, `_PROTOCOL` and `OTEL_SERVICE_NAME`, which
/// the controller's telemetry reads as export to that collector, and the
/// injector gets the same. Left empty: no `OTEL_` variable at all. The old
/// names `proxy.tracing.otlpEndpoint` and `proxy.tracing.protocol` still
/// set both; the install's notes list what a gateway needs.
#[test]
fn the_controller_exports_its_spans_to_the_meshs_collector() {
    if !k8s::tools_available() {
        return;
    }
    let otel = |env: &[(String, Value)]| -> Vec<String> {
        env.iter()
            .map(|(name, _)| name.clone())
            .filter(|name| name.starts_with("OTEL_"))
            .collect()
    };
    let inject_tracing = |docs: &[Value]| -> mycel_inject::Tracing {
        let text = find(docs, "ConfigMap", "mycel-config")["data"]["inject.yaml"]
            .as_str()
            .unwrap();
        serde_saphyr::from_str::<mycel_inject::InjectConfig>(text)
            .unwrap()
            .tracing
    };
    let defaults = docs(&render(&[]));
    assert_eq!(otel(&controller_env(&defaults)), Vec::<String>::new());
    assert_eq!(inject_tracing(&defaults), mycel_inject::Tracing::default());

    let endpoint = "http://otel-collector.observability.svc:4317";
    for (sets, protocol) in [
        (
            vec![
                format!("tracing.otlpEndpoint={endpoint}"),
                "tracing.protocol=grpc".to_string(),
            ],
            "grpc",
        ),
        // The old names, as an install before tracing.* set them.
        (
            vec![format!("proxy.tracing.otlpEndpoint={endpoint}")],
            "http/protobuf",
        ),
        (
            vec![
                format!("proxy.tracing.otlpEndpoint={endpoint}"),
                "proxy.tracing.protocol=grpc".to_string(),
            ],
            "grpc",
        ),
        // Both names, the same values: no conflict.
        (
            vec![
                format!("tracing.otlpEndpoint={endpoint}"),
                format!("proxy.tracing.otlpEndpoint={endpoint}"),
                "proxy.tracing.protocol=grpc".to_string(),
            ],
            "grpc",
        ),
    ] {
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        let docs = docs(&render(&sets));
        let env = controller_env(&docs);
        let var = |name: &str| {
            env.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("--set {sets:?}: the controller has no {name}: {env:?}"))
        };
        assert_eq!(var("OTEL_EXPORTER_OTLP_ENDPOINT"), endpoint, "{sets:?}");
        assert_eq!(var("OTEL_EXPORTER_OTLP_PROTOCOL"), protocol, "{sets:?}");
        assert_eq!(var("OTEL_SERVICE_NAME"), "mycel-controller", "{sets:?}");
        // $(VAR) is expanded by the kubelet from variables listed before.
        let attributes = var("OTEL_RESOURCE_ATTRIBUTES");
        assert_eq!(
            attributes,
            "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME)"
        );
        let at = |name: &str| env.iter().position(|(n, _)| n == name).unwrap();
        for field in ["POD_NAMESPACE", "POD_NAME"] {
            assert!(at(field) < at("OTEL_RESOURCE_ATTRIBUTES"), "{env:?}");
        }
        // What the controller makes of them (mycel_telemetry::traces).
        let read = mycel_telemetry::traces::settings(|name| {
            env.iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| v.as_str().map(str::to_string))
        });
        assert!(read.warnings.is_empty(), "{sets:?}: {:?}", read.warnings);
        let export = read
            .export
            .unwrap_or_else(|| panic!("--set {sets:?}: the controller would not export"));
        let want = match protocol {
            "grpc" => mycel_telemetry::traces::Protocol::Grpc,
            _ => mycel_telemetry::traces::Protocol::HttpProtobuf,
        };
        assert_eq!(export.protocol, want, "{sets:?}");
        assert_eq!(export.service_name.as_deref(), Some("mycel-controller"));
        // The injected proxies get the same collector.
        let tracing = inject_tracing(&docs);
        assert_eq!(tracing.otlp_endpoint.as_deref(), Some(endpoint), "{sets:?}");
        assert_eq!(tracing.protocol.as_str(), protocol, "{sets:?}");
    }

    // The notes of an install with a collector say what a gateway (not
    // injected) needs; without one they say nothing of it.
    let notes = |sets: &[&str]| -> String {
        let chart = chart();
        let mut args = vec!["install", "mycel", &chart, "-n", NS, "--dry-run=client"];
        for s in sets {
            args.extend(["--set", s]);
        }
        let out = helm(&args);
        assert!(out.status.success(), "helm {args:?}: {}", text(&out));
        let all = String::from_utf8(out.stdout).unwrap();
        all[all.find("NOTES:").unwrap()..].to_string()
    };
    let set = format!("tracing.otlpEndpoint={endpoint}");
    let with = notes(&[&set, "tracing.protocol=grpc"]);
    for want in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        &format!("value: \"{endpoint}\""),
        "value: \"grpc\"",
        "OTEL_SERVICE_NAME",
        "--trace-sampling",
    ] {
        assert!(with.contains(want), "{want}: {with}");
    }
    assert!(!notes(&[]).contains("OTEL_"));
}

#[test]
fn chart_lints_clean_and_renders_every_object() {
    if !k8s::tools_available() {
        return;
    }
    let out = helm(&["lint", "--strict", &chart()]);
    let said = text(&out);
    assert!(out.status.success(), "helm lint --strict: {said}");
    assert!(
        !said.contains("[WARNING]") && !said.contains("[ERROR]"),
        "helm lint --strict: {said}"
    );

    let docs = docs(&render(&[]));
    for (kind, name) in [
        ("ServiceAccount", SA),
        ("ClusterRole", SA),
        ("ClusterRoleBinding", SA),
        ("Role", SA),
        ("RoleBinding", SA),
        ("Deployment", SA),
        ("PodDisruptionBudget", SA),
        ("Service", "mycel-controller"),
        ("Service", "mycel-controller-admin"),
        ("Service", "mycel-webhook"),
        ("MutatingWebhookConfiguration", "mycel-injector"),
        ("ConfigMap", "mycel-config"),
        ("NetworkPolicy", SA),
    ] {
        let _ = find(&docs, kind, name);
    }
    let deploy = find(&docs, "Deployment", SA);
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/live");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    assert!(pod["affinity"]["podAntiAffinity"].is_object());

    let hook = &find(&docs, "MutatingWebhookConfiguration", "mycel-injector")["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Fail");
    assert_eq!(hook["sideEffects"], "None");
    assert!(hook["clientConfig"].get("caBundle").is_none(), "{hook}");
    assert_eq!(hook["clientConfig"]["service"]["path"], "/inject");
    let exprs = hook["namespaceSelector"]["matchExpressions"].to_string();
    for want in ["mycel.io/inject", "enabled", "NotIn", "kube-system", NS] {
        assert!(
            exprs.contains(want),
            "namespaceSelector lacks {want}: {exprs}"
        );
    }
    assert!(hook["objectSelector"].to_string().contains("disabled"));
    assert!(hook["matchConditions"].to_string().contains("disabled"));
}

/// The controller's args in a rendering.
fn controller_args(docs: &[Value]) -> Vec<String> {
    let deploy = find(docs, "Deployment", SA);
    deploy["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The generated CA is owned by the webhook configuration (deleted on
/// uninstall); a Secret the user names is kept (`--keep-ca-secret`).
#[test]
fn only_the_users_ca_secret_is_kept_on_uninstall() {
    if !k8s::tools_available() {
        return;
    }
    let generated = controller_args(&docs(&render(&[])));
    assert!(generated.contains(&format!("--ca-secret={NS}/mycel-ca")));
    assert!(generated.contains(&"--webhook-config=mycel-injector".to_string()));
    assert!(
        !generated.iter().any(|a| a == "--keep-ca-secret"),
        "{generated:?}"
    );

    let docs = docs(&render(&["ca.generate=false", "ca.existingSecret=my-ca"]));
    let users = controller_args(&docs);
    assert!(users.contains(&format!("--ca-secret={NS}/my-ca")));
    assert!(users.iter().any(|a| a == "--keep-ca-secret"), "{users:?}");
    // The Role lets it patch (its owner references) that Secret only.
    let role = find(&docs, "Role", SA).to_string();
    assert!(
        role.contains("my-ca") && !role.contains("mycel-ca"),
        "{role}"
    );
}

#[test]
fn values_of_the_wrong_type_fail_naming_the_value() {
    if !k8s::tools_available() {
        return;
    }
    let chart = chart();
    for (set, want) in [
        ("replicas=abc", "/replicas"),
        ("replicas=0", "/replicas"),
        ("webhook.failurePolicy=Maybe", "/webhook/failurePolicy"),
        (
            "controller.resources.limits.memory=lots",
            "/controller/resources/limits/memory",
        ),
        ("proxy.ports.mesh=70000", "/proxy/ports/mesh"),
        ("proxy.mtlsMode=off", "/proxy/mtlsMode"),
        ("proxy.tracing.sampling=1.5", "/proxy/tracing/sampling"),
        ("proxy.tracing.sampling=often", "/proxy/tracing/sampling"),
        ("proxy.tracing.protocol=http", "/proxy/tracing/protocol"),
        (
            "proxy.tracing.otlpEndpoint=otel-collector:4318",
            "/proxy/tracing/otlpEndpoint",
        ),
        ("proxy.accessLog=/var/log/access.log", "/proxy/accessLog"),
        ("tracing.protocol=http", "/tracing/protocol"),
        (
            "tracing.otlpEndpoint=otel-collector:4318",
            "/tracing/otlpEndpoint",
        ),
        // A key and its old name, set to different values.
        (
            "tracing.otlpEndpoint=http://a.svc:4318,proxy.tracing.otlpEndpoint=http://b.svc:4318",
            "tracing.otlpEndpoint=\"http://a.svc:4318\" and proxy.tracing.otlpEndpoint=\"http://b.svc:4318\" differ",
        ),
        (
            "tracing.protocol=grpc,proxy.tracing.protocol=http/protobuf",
            "set only tracing.protocol",
        ),
        ("trustDomain=Not_A_Name", "/trustDomain"),
        ("replica=2", "replica"),
        ("ca.existingSecret=my-ca", "ca.existingSecret"),
    ] {
        // What a user runs; --dry-run=client needs no cluster.
        let out = helm(&[
            "install",
            "mycel",
            &chart,
            "-n",
            NS,
            "--dry-run=client",
            "--set",
            set,
        ]);
        let said = text(&out);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(
            said.contains(want),
            "--set {set}: the error should name {want}: {said}"
        );
    }
    // The documented way to bring one's own CA renders.
    let docs = docs(&render(&["ca.generate=false", "ca.existingSecret=my-ca"]));
    let args = find(&docs, "Deployment", SA)["spec"]["template"]["spec"]["containers"][0]["args"]
        .to_string();
    assert!(args.contains("--ca-secret=mycel-system/my-ca"), "{args}");
}

/// Renders of the defaults and of every switch the values offer; checkov
/// sees only those that keep the chart's hardening (the NetworkPolicy).
fn renders(for_checkov: bool) -> Vec<(String, String)> {
    [
        vec![],
        vec![
            "controller.antiAffinity=hard",
            "controller.podDisruptionBudget.enabled=false",
            "proxy.sidecarMode=classic",
            "proxy.mtlsMode=strict",
            "proxy.logLevel=debug",
            "tracing.otlpEndpoint=http://otel-collector.observability.svc:4317",
            "tracing.protocol=grpc",
            "proxy.tracing.sampling=0.1",
            "proxy.accessLog=stdout",
            "webhook.failurePolicy=Ignore",
            "webhook.caBundle=Zm9v",
            "ca.generate=false",
            "ca.existingSecret=my-ca",
            "imagePullSecrets[0]=regcred",
            "images.controller.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "replicas=1",
        ],
        vec!["networkPolicy.enabled=false"],
    ]
    .into_iter()
    .filter(|sets| !for_checkov || !sets.contains(&"networkPolicy.enabled=false"))
    .map(|sets| (sets.join(","), render(&sets)))
    .collect()
}

#[test]
fn rendered_manifests_pass_kubernetes_validate_strict() {
    if !k8s::tools_available() {
        return;
    }
    let Some(tools) = python_tools() else { return };
    let minor = K8S_VERSION.rsplit_once('.').unwrap().0;
    let version = format!("{minor}.0");
    let dir = tempfile::tempdir().unwrap();
    let validate = |file: &Path| {
        Command::new(tools.join("kubernetes-validate"))
            .args(["--strict", "--quiet", "-k", &version])
            .arg(file)
            .output()
            .unwrap()
    };
    for (sets, yaml) in renders(false) {
        let file = dir.path().join("chart.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = validate(&file);
        assert!(
            out.status.success(),
            "kubernetes-validate --strict ({version}) with --set {sets}: {}",
            text(&out)
        );
    }
    // The validator is strict indeed: an unknown field fails it.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 80}], bogusField: 1}\n",
    )
    .unwrap();
    assert!(
        !validate(&bad).status.success(),
        "kubernetes-validate accepted a bogus field"
    );
}

#[test]
fn rendered_manifests_have_no_checkov_findings() {
    if !k8s::tools_available() {
        return;
    }
    let Some(tools) = python_tools() else { return };
    for (sets, yaml) in renders(true) {
        // checkov skips hidden directories, as tempdir()'s `.tmpXXXX` is.
        let dir = tempfile::Builder::new()
            .prefix("mycel-checkov-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("chart.yaml"), yaml).unwrap();
        // --skip-download: no calls to the vendor's service (none is
        // reachable, and the rules are in the package).
        let out = Command::new(tools.join("checkov"))
            .args([
                "--framework",
                "kubernetes",
                "--compact",
                "--skip-download",
                "-o",
                "json",
                "-d",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("checkov said no JSON ({e}): {}", text(&out)));
        let reports = match report {
            Value::Array(v) => v,
            one => vec![one],
        };
        let mut passed = 0;
        for r in &reports {
            passed += r["summary"]["passed"].as_u64().unwrap_or(0);
            let failed: Vec<String> = r["results"]["failed_checks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| format!("{} {} ({})", c["check_id"], c["check_name"], c["resource"]))
                .collect();
            assert!(
                failed.is_empty(),
                "checkov findings with --set {sets}:\n{}",
                failed.join("\n")
            );
            for c in r["results"]["skipped_checks"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let id = c["check_id"].as_str().unwrap_or_default();
                assert!(
                    CHECKOV_SKIPS.contains(&id),
                    "checkov rule {id} is skipped by the chart but not allowed here: {c}"
                );
            }
        }
        assert!(passed > 50, "checkov ran hardly any check: {}", text(&out));
    }
}

/// One grant: scope, group, resource, the names it is limited to, verb.
type Grant = (Scope, String, String, Vec<String>, String);

fn required_grants() -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for p in REQUIRED {
        let mut names: Vec<String> = p.resource_names.iter().map(|n| n.to_string()).collect();
        names.sort();
        for v in p.verbs {
            out.insert((
                p.scope,
                p.group.into(),
                p.resource.into(),
                names.clone(),
                v.to_string(),
            ));
        }
    }
    out
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn chart_grants(docs: &[Value]) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for d in docs {
        let scope = match d["kind"].as_str() {
            Some("ClusterRole") => Scope::Cluster,
            Some("Role") => {
                assert_eq!(d["metadata"]["namespace"], NS, "a Role outside {NS}: {d}");
                Scope::ControllerNamespace
            }
            _ => continue,
        };
        assert_eq!(
            d["metadata"]["name"], SA,
            "a role the controller does not use: {d}"
        );
        for rule in d["rules"].as_array().unwrap() {
            let mut names = strings(&rule["resourceNames"]);
            names.sort();
            for g in strings(&rule["apiGroups"]) {
                for r in strings(&rule["resources"]) {
                    for v in strings(&rule["verbs"]) {
                        assert!(g != "*" && r != "*" && v != "*", "a wildcard: {rule}");
                        out.insert((scope, g.clone(), r.clone(), names.clone(), v));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn chart_rbac_equals_the_calls_the_controller_makes() {
    if !k8s::tools_available() {
        return;
    }
    let docs = docs(&render(&[]));
    let chart = chart_grants(&docs);
    let code = required_grants();
    let extra: Vec<_> = chart.difference(&code).collect();
    let missing: Vec<_> = code.difference(&chart).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "the chart's RBAC differs from rbac::REQUIRED\n  granted but not used: {extra:?}\n  used but not granted: {missing:?}"
    );
    // Both roles are bound to the controller's account, and only to it.
    for (kind, role) in [
        ("ClusterRoleBinding", "ClusterRole"),
        ("RoleBinding", "Role"),
    ] {
        let b = find(&docs, kind, SA);
        assert_eq!(b["roleRef"]["kind"], role);
        assert_eq!(b["roleRef"]["name"], SA);
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": SA, "namespace": NS}])
        );
    }
    assert_eq!(
        find(&docs, "Deployment", SA)["spec"]["template"]["spec"]["serviceAccountName"],
        SA
    );
}
