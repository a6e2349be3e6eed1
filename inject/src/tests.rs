use serde_json::json;

use super::*;

fn pod(value: serde_json::Value) -> Pod {
    serde_json::from_value(value).unwrap()
}

fn web() -> Pod {
    pod(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"containers": [{
            "name": "web",
            "image": "web:1",
            "ports": [{"name": "http", "containerPort": 8080}, {"name": "grpc-api", "containerPort": 9090}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "timeoutSeconds": 3},
            "readinessProbe": {"tcpSocket": {"port": 8080}}
        }]}
    }))
}

fn with_annotations(mut p: Pod, pairs: &[(&str, &str)]) -> Pod {
    let a = p.metadata.annotations.get_or_insert_with(Default::default);
    for (k, v) in pairs {
        a.insert(k.to_string(), v.to_string());
    }
    p
}

fn proxy(p: &Pod) -> &k8s_openapi::api::core::v1::Container {
    let s = p.spec.as_ref().unwrap();
    s.init_containers
        .iter()
        .flatten()
        .chain(&s.containers)
        .find(|c| c.name == PROXY_NAME)
        .unwrap()
}

fn env<'a>(c: &'a k8s_openapi::api::core::v1::Container, name: &str) -> Option<&'a str> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)?
        .value
        .as_deref()
}

#[test]
fn native_sidecar_comes_first_and_classic_goes_last() {
    let cfg = InjectConfig::default();
    let out = inject_pod(web(), &cfg).unwrap();
    let s = out.spec.as_ref().unwrap();
    let inits: Vec<_> = s
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, [INIT_NAME, PROXY_NAME]);
    assert_eq!(proxy(&out).restart_policy.as_deref(), Some("Always"));
    assert_eq!(s.containers.len(), 1);

    let classic = with_annotations(web(), &[(annotations::SIDECAR_MODE, "classic")]);
    let mut with_init = classic.clone();
    with_init.spec.as_mut().unwrap().init_containers = Some(vec![Default::default()]);
    let out = inject_pod(with_init, &cfg).unwrap();
    let s = out.spec.as_ref().unwrap();
    let inits: Vec<_> = s
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, ["", INIT_NAME]);
    assert_eq!(s.containers.last().unwrap().name, PROXY_NAME);
    assert_eq!(proxy(&out).restart_policy, None);
    let annotations = out.metadata.annotations.unwrap();
    assert_eq!(annotations[annotations::INJECTED], "classic");
    assert_eq!(annotations[annotations::DEFAULT_CONTAINER], "web");
}

#[test]
fn proxy_is_locked_down_and_init_has_only_net_caps() {
    let out = inject_pod(web(), &InjectConfig::default()).unwrap();
    let sc = proxy(&out).security_context.clone().unwrap();
    assert_eq!(sc.run_as_user, Some(1337));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let caps = sc.capabilities.unwrap();
    assert_eq!(caps.drop.unwrap(), ["ALL"]);
    assert!(caps.add.is_none());
    let init = &out.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    let sc = init.security_context.clone().unwrap();
    assert_eq!(sc.run_as_user, Some(0));
    assert_eq!(
        sc.capabilities.unwrap().add.unwrap(),
        ["NET_ADMIN", "NET_RAW"]
    );
    assert_eq!(init.args.as_ref().unwrap()[0], "init");
}

#[test]
fn ports_and_probes_are_handed_to_the_proxy() {
    let out = inject_pod(web(), &InjectConfig::default()).unwrap();
    let p = proxy(&out);
    let args = p.args.as_ref().unwrap();
    assert!(
        args.contains(&"--app-port=http:8080:http".to_string()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--app-port=grpc-api:9090:grpc".to_string()),
        "{args:?}"
    );
    let probes =
        mycel_api::probes::parse(env(p, mycel_api::probes::ENV_APP_PROBES).unwrap()).unwrap();
    let live = &probes["/app-health/web/livez"];
    assert_eq!(
        (live.port, live.path.as_str(), live.timeout_seconds),
        (8080, "/healthz", 3)
    );
    assert_eq!(probes.len(), 1, "a TCP probe is not rewritten");
    let app = &out.spec.as_ref().unwrap().containers[0];
    let get = app
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(get.path.as_deref(), Some("/app-health/web/livez"));
    assert_eq!(
        get.port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(15000)
    );
    assert!(app.readiness_probe.as_ref().unwrap().tcp_socket.is_some());
}

#[test]
fn second_injection_changes_nothing() {
    let cfg = InjectConfig::default();
    let once = inject_pod(web(), &cfg).unwrap();
    assert_eq!(unchanged(&once), Some(Unchanged::AlreadyInjected));
    assert_eq!(inject_pod(once.clone(), &cfg).unwrap(), once);
    assert!(patch(&once, &cfg).unwrap().0.is_empty());
    // Also when a tool dropped the annotation but kept the containers.
    let mut stripped = once.clone();
    stripped.metadata.annotations = None;
    assert_eq!(inject_pod(stripped.clone(), &cfg).unwrap(), stripped);
}

#[test]
fn patch_applied_to_the_pod_gives_the_injected_pod() {
    let cfg = InjectConfig::default();
    for p in [
        web(),
        with_annotations(web(), &[(annotations::SIDECAR_MODE, "classic")]),
    ] {
        let ops = patch(&p, &cfg).unwrap();
        assert!(!ops.0.is_empty());
        let mut doc = serde_json::to_value(&p).unwrap();
        json_patch::patch(&mut doc, &ops).unwrap();
        let want = serde_json::to_value(inject_pod(p, &cfg).unwrap()).unwrap();
        assert_eq!(doc, want);
    }
}

#[test]
fn host_network_pods_are_left_alone() {
    let mut p = web();
    p.spec.as_mut().unwrap().host_network = Some(true);
    assert_eq!(unchanged(&p), Some(Unchanged::HostNetwork));
    assert_eq!(inject_pod(p.clone(), &InjectConfig::default()).unwrap(), p);
}

#[test]
fn annotations_reach_the_init_container_and_the_proxy() {
    let p = with_annotations(
        web(),
        &[
            (annotations::EXCLUDE_INBOUND_PORTS, "9091,9092"),
            (annotations::EXCLUDE_OUTBOUND_PORTS, "5432"),
            (annotations::OPAQUE_PORTS, "6379"),
            (annotations::PROXY_LOG_LEVEL, "debug"),
            (annotations::PROXY_CPU_LIMIT, "500m"),
            (annotations::PROXY_MEMORY_REQUEST, "64Mi"),
        ],
    );
    let out = inject_pod(p, &InjectConfig::default()).unwrap();
    let init = &out.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    let args = init.args.as_ref().unwrap();
    assert!(
        args.contains(&"--exclude-inbound-ports=9091,9092".to_string()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--exclude-outbound-ports=5432".to_string()),
        "{args:?}"
    );
    let p = proxy(&out);
    assert!(p
        .args
        .as_ref()
        .unwrap()
        .contains(&"--opaque-port=6379".to_string()));
    assert_eq!(env(p, "MYCEL_LOG"), Some("debug"));
    let r = p.resources.as_ref().unwrap();
    assert_eq!(r.limits.as_ref().unwrap()["cpu"].0, "500m");
    assert_eq!(r.requests.as_ref().unwrap()["memory"].0, "64Mi");
}

fn mtls_flags(p: &Pod) -> Vec<&str> {
    proxy(p)
        .args
        .iter()
        .flatten()
        .filter(|a| a.starts_with("--mtls-mode"))
        .map(String::as_str)
        .collect()
}

#[test]
fn mtls_mode_comes_from_the_settings_unless_the_pod_says_otherwise() {
    let permissive = InjectConfig::default();
    let strict = InjectConfig {
        mtls_mode: MtlsMode::Strict,
        ..InjectConfig::default()
    };
    let annotated = |v| with_annotations(web(), &[(annotations::MTLS_MODE, v)]);
    let cases = [
        (web(), &permissive, "--mtls-mode=permissive"),
        (web(), &strict, "--mtls-mode=strict"),
        (annotated("strict"), &permissive, "--mtls-mode=strict"),
        (annotated("permissive"), &strict, "--mtls-mode=permissive"),
        // An empty value is no override, as for every other annotation.
        (annotated(""), &strict, "--mtls-mode=strict"),
    ];
    for (pod, cfg, want) in cases {
        let out = inject_pod(pod, cfg).unwrap();
        assert_eq!(mtls_flags(&out), [want], "exactly one flag, {want}");
    }
}

#[test]
fn bad_mtls_mode_is_refused_naming_the_annotation_and_the_choices() {
    let p = with_annotations(web(), &[(annotations::MTLS_MODE, "off")]);
    let err = inject_pod(p.clone(), &InjectConfig::default())
        .unwrap_err()
        .to_string();
    for want in [annotations::MTLS_MODE, "\"off\"", "strict", "permissive"] {
        assert!(err.contains(want), "{want}: {err}");
    }
    // The webhook answers with the patch: refused there too.
    assert!(patch(&p, &InjectConfig::default()).is_err());
}

#[test]
fn bad_pods_are_refused_naming_the_field() {
    let cfg = InjectConfig::default();
    let cases: Vec<(Pod, &str)> = vec![
        (
            with_annotations(web(), &[(annotations::PROXY_MEMORY_REQUEST, "1Gi")]),
            annotations::PROXY_MEMORY_REQUEST,
        ),
        (
            with_annotations(web(), &[(annotations::EXCLUDE_INBOUND_PORTS, "http")]),
            annotations::EXCLUDE_INBOUND_PORTS,
        ),
        (
            with_annotations(web(), &[(annotations::PROXY_CPU_REQUEST, "fast")]),
            annotations::PROXY_CPU_REQUEST,
        ),
        (
            pod(
                json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 15006}]}]}}),
            ),
            "spec.containers[0].ports[0].containerPort",
        ),
        (
            pod(
                json!({"spec": {"containers": [{"name": "a", "livenessProbe": {"httpGet": {"port": "nope"}}}]}}),
            ),
            "spec.containers[0].livenessProbe.httpGet.port",
        ),
        (
            pod(
                json!({"spec": {"containers": [{"name": "a"}], "volumes": [{"name": "mycel-token", "emptyDir": {}}]}}),
            ),
            "spec.volumes",
        ),
        (pod(json!({"metadata": {"name": "x"}})), "no spec"),
    ];
    for (p, needle) in cases {
        let err = inject_pod(p, &cfg).unwrap_err().to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn config_from_values_is_checked() {
    let mut cfg = InjectConfig::default();
    assert!(check_config(&cfg).is_ok());
    cfg.proxy_resources.memory_limit = Some("big".into());
    assert!(check_config(&cfg)
        .unwrap_err()
        .to_string()
        .contains("proxyResources.memoryLimit"));
    let mut cfg = InjectConfig::default();
    cfg.ports.admin = cfg.ports.mesh;
    assert!(check_config(&cfg).is_err());
}

#[test]
fn config_reads_from_values_and_refuses_unknown_keys() {
    let cfg: InjectConfig = serde_json::from_value(json!({
        "proxyImage": "mycel-proxy:0.1.0",
        "sidecarMode": "classic",
        "mtlsMode": "strict",
        "ports": {"admin": 15020},
    }))
    .unwrap();
    assert_eq!(cfg.sidecar_mode, SidecarMode::Classic);
    assert_eq!(cfg.mtls_mode, MtlsMode::Strict);
    assert_eq!(
        InjectConfig::default().mtls_mode,
        MtlsMode::Permissive,
        "meshing a workload must not cut off its callers outside the mesh"
    );
    let err = serde_json::from_value::<InjectConfig>(json!({"mtlsMode": "on"})).unwrap_err();
    assert!(err.to_string().contains("on"), "{err}");
    assert_eq!(cfg.ports.admin, 15020);
    assert_eq!(cfg.ports.mesh, 15006, "unset ports keep their defaults");
    assert_eq!(
        cfg.controller_address,
        "mycel-controller.mycel-system.svc:15010"
    );
    let err = serde_json::from_value::<InjectConfig>(json!({"proxyImg": "x"})).unwrap_err();
    assert!(err.to_string().contains("proxyImg"), "{err}");
}

fn telemetry_args(p: &Pod) -> Vec<&str> {
    proxy(p)
        .args
        .iter()
        .flatten()
        .filter(|a| a.starts_with("--trace-sampling") || a.starts_with("--access-log"))
        .map(String::as_str)
        .collect()
}

fn traced() -> InjectConfig {
    InjectConfig {
        tracing: Tracing {
            otlp_endpoint: Some("http://otel-collector.observability.svc:4318".into()),
            protocol: OtlpProtocol::Grpc,
            sampling: Ratio::new(0.1),
        },
        access_log: AccessLog::Stdout,
        ..InjectConfig::default()
    }
}

#[test]
fn no_telemetry_settings_add_nothing() {
    let out = inject_pod(web(), &InjectConfig::default()).unwrap();
    assert!(telemetry_args(&out).is_empty());
    let p = proxy(&out);
    assert!(
        !p.env.iter().flatten().any(|e| e.name.starts_with("OTEL_")),
        "{:?}",
        p.env
    );
}

#[test]
fn telemetry_settings_reach_every_proxy() {
    let out = inject_pod(web(), &traced()).unwrap();
    assert_eq!(
        telemetry_args(&out),
        ["--trace-sampling=0.1", "--access-log=stdout"]
    );
    let p = proxy(&out);
    assert_eq!(
        env(p, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        Some("http://otel-collector.observability.svc:4318")
    );
    assert_eq!(env(p, "OTEL_EXPORTER_OTLP_PROTOCOL"), Some("grpc"));
    // Spans are named by workload: no label, the service account.
    assert_eq!(env(p, "OTEL_SERVICE_NAME"), Some("default"));
    assert_eq!(
        env(p, "OTEL_RESOURCE_ATTRIBUTES"),
        Some("k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME)")
    );
    let mut labelled = web();
    labelled.metadata.labels = Some(
        [("app".to_string(), "web".to_string())]
            .into_iter()
            .collect(),
    );
    labelled.spec.as_mut().unwrap().service_account_name = Some("web-sa".into());
    let out = inject_pod(labelled.clone(), &traced()).unwrap();
    assert_eq!(env(proxy(&out), "OTEL_SERVICE_NAME"), Some("web"));
    labelled.metadata.labels.as_mut().unwrap().insert(
        "app.kubernetes.io/name".to_string(),
        "storefront".to_string(),
    );
    let out = inject_pod(labelled.clone(), &traced()).unwrap();
    assert_eq!(env(proxy(&out), "OTEL_SERVICE_NAME"), Some("storefront"));
    labelled.metadata.labels = None;
    let out = inject_pod(labelled, &traced()).unwrap();
    assert_eq!(env(proxy(&out), "OTEL_SERVICE_NAME"), Some("web-sa"));

    // The protocol is written with its default too; without an endpoint
    // neither variable is.
    let mut cfg = traced();
    cfg.tracing.protocol = OtlpProtocol::default();
    let out = inject_pod(web(), &cfg).unwrap();
    assert_eq!(
        env(proxy(&out), "OTEL_EXPORTER_OTLP_PROTOCOL"),
        Some("http/protobuf")
    );
    for off in [None, Some(String::new())] {
        cfg.tracing.otlp_endpoint = off;
        let out = inject_pod(web(), &cfg).unwrap();
        let p = proxy(&out);
        assert_eq!(env(p, "OTEL_EXPORTER_OTLP_ENDPOINT"), None);
        assert_eq!(env(p, "OTEL_EXPORTER_OTLP_PROTOCOL"), None);
        assert_eq!(env(p, "OTEL_SERVICE_NAME"), None);
    }
}

#[test]
fn telemetry_annotations_override_the_settings() {
    let annotated = |pairs: &[(&str, &str)]| with_annotations(web(), pairs);
    let cases: Vec<(Pod, InjectConfig, Vec<&str>)> = vec![
        (
            annotated(&[
                (annotations::TRACE_SAMPLING, "0.5"),
                (annotations::ACCESS_LOG, "stdout"),
            ]),
            InjectConfig::default(),
            vec!["--trace-sampling=0.5", "--access-log=stdout"],
        ),
        (
            annotated(&[
                (annotations::TRACE_SAMPLING, "0"),
                (annotations::ACCESS_LOG, "off"),
            ]),
            traced(),
            vec!["--trace-sampling=0"],
        ),
        // Written as the number it is, whatever its spelling.
        (
            annotated(&[(annotations::TRACE_SAMPLING, "1e-2")]),
            InjectConfig::default(),
            vec!["--trace-sampling=0.01"],
        ),
        // An empty value is no override.
        (
            annotated(&[
                (annotations::TRACE_SAMPLING, ""),
                (annotations::ACCESS_LOG, ""),
            ]),
            traced(),
            vec!["--trace-sampling=0.1", "--access-log=stdout"],
        ),
    ];
    for (pod, cfg, want) in cases {
        let out = inject_pod(pod, &cfg).unwrap();
        assert_eq!(telemetry_args(&out), want);
    }
}

#[test]
fn bad_telemetry_annotations_are_refused_naming_the_annotation_and_the_value() {
    for (key, value, why) in [
        (annotations::TRACE_SAMPLING, "1.5", "from 0 to 1"),
        (annotations::TRACE_SAMPLING, "ten percent", "from 0 to 1"),
        (annotations::TRACE_SAMPLING, "NaN", "from 0 to 1"),
        (annotations::ACCESS_LOG, "yes", "stdout or off"),
        (annotations::ACCESS_LOG, "/var/log/access.log", "read-only"),
    ] {
        let p = with_annotations(web(), &[(key, value)]);
        let err = inject_pod(p.clone(), &traced()).unwrap_err().to_string();
        for want in [key, &format!("{value:?}"), why] {
            assert!(err.contains(want), "{want}: {err}");
        }
        assert!(patch(&p, &traced()).is_err());
    }
}

#[test]
fn telemetry_settings_are_checked() {
    assert!(check_config(&traced()).is_ok());
    for endpoint in [
        "https://collector:4317",
        "http://[::1]:4318",
        "http://10.0.0.1:4318/v1",
    ] {
        let mut cfg = traced();
        cfg.tracing.otlp_endpoint = Some(endpoint.into());
        assert!(check_config(&cfg).is_ok(), "{endpoint}");
    }
    for endpoint in [
        "otel-collector:4318",
        "grpc://collector:4317",
        "http://",
        "http://:4318",
        "http://collector:port",
        "http://collector:4318 x",
    ] {
        let mut cfg = traced();
        cfg.tracing.otlp_endpoint = Some(endpoint.into());
        let err = check_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("tracing.otlpEndpoint"), "{err}");
        assert!(err.contains(&format!("{endpoint:?}")), "{err}");
    }
    let mut cfg = traced();
    cfg.tracing.sampling = serde_json::from_value(json!(1.5)).unwrap();
    let err = check_config(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("tracing.sampling") && err.contains("1.5"),
        "{err}"
    );
}

#[test]
fn telemetry_settings_read_from_values_name_a_bad_field() {
    let cfg: InjectConfig = serde_json::from_value(json!({
        "tracing": {
            "otlpEndpoint": "http://otel-collector.observability.svc:4318",
            "protocol": "grpc",
            "sampling": 0.1,
        },
        "accessLog": "stdout",
    }))
    .unwrap();
    assert_eq!(cfg, traced());
    let empty: InjectConfig = serde_json::from_value(json!({"accessLog": ""})).unwrap();
    assert_eq!(empty.access_log, AccessLog::Off);
    for (values, field, value) in [
        (
            json!({"tracing": {"protocol": "http"}}),
            "tracing.protocol",
            "\"http\"",
        ),
        (
            json!({"accessLog": "/var/log/access.log"}),
            "accessLog",
            "read-only",
        ),
        (json!({"tracing": {"sampler": 1}}), "sampler", "sampler"),
    ] {
        let err = serde_json::from_value::<InjectConfig>(values)
            .unwrap_err()
            .to_string();
        assert!(err.contains(field) && err.contains(value), "{err}");
    }
    // Written back as read, so the settings survive a round trip.
    let text = serde_json::to_value(traced()).unwrap();
    assert_eq!(text["tracing"]["protocol"], "grpc");
    assert_eq!(text["accessLog"], "stdout");
    assert_eq!(
        serde_json::from_value::<InjectConfig>(text).unwrap(),
        traced()
    );
}
