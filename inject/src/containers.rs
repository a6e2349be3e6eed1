//! The containers and volumes the injector adds. Every value of the proxy's
//! command line is a flag `mycel-proxy --help` documents
//! (docs/reference/mycel-proxy.md).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, ObjectFieldSelector, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecurityContext, ServiceAccountTokenProjection, Volume,
    VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mycel_api::probes::{AppProbes, ENV_APP_PROBES};
use mycel_api::report::OTLP_ENDPOINT_ENV;

use crate::annotations::Overrides;
use crate::config::{AccessLog, InjectConfig, Resources, SidecarMode};
use crate::ports::AppPort;

pub const INIT_NAME: &str = "mycel-init";
pub const PROXY_NAME: &str = "mycel-proxy";
pub const TOKEN_VOLUME: &str = "mycel-token";
pub const TRUST_VOLUME: &str = "mycel-trust-bundle";
/// The projected token is the file `token` in this directory.
pub const TOKEN_DIR: &str = "/var/run/secrets/mycel";
pub const TRUST_DIR: &str = "/var/run/mycel/trust";
/// The proxy container's named ports: tools find the admin port of a pod
/// injected with other settings by this name (`mycelctl cert`).
pub const MESH_PORT_NAME: &str = "mycel-mesh";
pub const ADMIN_PORT_NAME: &str = "mycel-admin";

/// The iptables init container: root with NET_ADMIN and NET_RAW only, runs
/// once and exits. Its root filesystem stays writable: iptables takes its
/// lock file under /run.
pub fn init_container(cfg: &InjectConfig, o: &Overrides) -> Container {
    let p = &cfg.ports;
    let mut args = vec![
        "init".to_string(),
        format!("--proxy-uid={}", cfg.proxy_uid),
        format!("--outbound-capture-port={}", p.outbound_capture),
        format!("--inbound-capture-port={}", p.inbound_capture),
        format!("--mesh-port={}", p.mesh),
        format!("--admin-port={}", p.admin),
    ];
    let list = |v: &[u16]| v.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    if !o.exclude_inbound_ports.is_empty() {
        args.push(format!(
            "--exclude-inbound-ports={}",
            list(&o.exclude_inbound_ports)
        ));
    }
    if !o.exclude_outbound_ports.is_empty() {
        args.push(format!(
            "--exclude-outbound-ports={}",
            list(&o.exclude_outbound_ports)
        ));
    }
    if !o.exclude_outbound_cidrs.is_empty() {
        args.push(format!(
            "--exclude-outbound-cidrs={}",
            o.exclude_outbound_cidrs.join(",")
        ));
    }
    Container {
        name: INIT_NAME.into(),
        image: Some(cfg.proxy_image.clone()),
        image_pull_policy: cfg.image_pull_policy.clone(),
        command: Some(vec!["mycel-proxy".into()]),
        args: Some(args),
        resources: resources(&cfg.init_resources),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The proxy: UID 1337, read-only root, no privilege escalation, no
/// capabilities. `mode` decides whether it is a native sidecar;
/// `trace_service` is the service name of its spans.
pub fn proxy_container(
    cfg: &InjectConfig,
    o: &Overrides,
    mode: SidecarMode,
    app_ports: &[AppPort],
    probes: &AppProbes,
    trace_service: &str,
) -> Container {
    let p = &cfg.ports;
    let mut args = vec![
        format!("--controller={}", cfg.controller_address),
        format!("--controller-name={}", cfg.controller_name),
        format!("--ca-root={TRUST_DIR}/{}", cfg.trust_bundle_key),
        format!("--token-file={TOKEN_DIR}/token"),
        format!("--trust-domain={}", cfg.trust_domain),
        format!("--cluster-domain={}", cfg.cluster_domain),
        // Expanded by the kubelet from the downward-API variables below.
        "--workload=$(POD_NAME)".into(),
        "--namespace=$(POD_NAMESPACE)".into(),
        "--service-account=$(SERVICE_ACCOUNT)".into(),
        "--address=$(POD_IP)".into(),
        format!("--inbound=0.0.0.0:{}", p.mesh),
        format!("--admin=0.0.0.0:{}", p.admin),
        format!("--transparent-outbound=127.0.0.1:{}", p.outbound_capture),
        format!("--inbound-capture=0.0.0.0:{}", p.inbound_capture),
        // Always written, even when it is the proxy's own default, so the
        // pod spec says which mode the pod runs in.
        format!(
            "--mtls-mode={}",
            o.mtls_mode.unwrap_or(cfg.mtls_mode).as_str()
        ),
    ];
    args.extend(app_ports.iter().map(|a| format!("--app-port={}", a.flag())));
    args.extend(
        o.opaque_ports
            .iter()
            .map(|port| format!("--opaque-port={port}")),
    );
    if let Some(ratio) = o.trace_sampling.or(cfg.tracing.sampling) {
        args.push(format!("--trace-sampling={ratio}"));
    }
    if o.access_log.unwrap_or(cfg.access_log) == AccessLog::Stdout {
        args.push("--access-log=stdout".into());
    }

    let field = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let value = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        ..EnvVar::default()
    };
    let mut env = vec![
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("POD_IP", "status.podIP"),
        field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ];
    if let Some(level) = o.log_level.as_ref().or(cfg.log_level.as_ref()) {
        env.push(value("MYCEL_LOG", level.clone()));
    }
    if let Some(endpoint) = cfg.tracing.endpoint() {
        env.push(value(OTLP_ENDPOINT_ENV, endpoint.into()));
        // Written even when it is the default, so the pod spec says how its
        // spans travel.
        env.push(value(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            cfg.tracing.protocol.as_str().into(),
        ));
        // Spans are grouped by workload, not by pod; the pod and namespace
        // ride along as resource attributes (expanded by the kubelet).
        env.push(value("OTEL_SERVICE_NAME", trace_service.into()));
        env.push(value(
            "OTEL_RESOURCE_ATTRIBUTES",
            "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME)".into(),
        ));
    }
    if !probes.is_empty() {
        // BTreeMap keys: the same pod always gives the same text.
        let json = serde_json::to_string(probes).unwrap_or_default();
        env.push(value(ENV_APP_PROBES, json));
    }

    let r = &cfg.proxy_resources;
    let res = Resources {
        cpu_request: o.cpu_request.clone().or(r.cpu_request.clone()),
        cpu_limit: o.cpu_limit.clone().or(r.cpu_limit.clone()),
        memory_request: o.memory_request.clone().or(r.memory_request.clone()),
        memory_limit: o.memory_limit.clone().or(r.memory_limit.clone()),
    };
    let admin_get = |path: &str| HTTPGetAction {
        path: Some(path.into()),
        port: IntOrString::Int(i32::from(p.admin)),
        ..HTTPGetAction::default()
    };
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(admin_get(path)),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let native = mode == SidecarMode::Native;
    Container {
        name: PROXY_NAME.into(),
        image: Some(cfg.proxy_image.clone()),
        image_pull_policy: cfg.image_pull_policy.clone(),
        command: Some(vec!["mycel-proxy".into()]),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![
            port(MESH_PORT_NAME, p.mesh),
            port(ADMIN_PORT_NAME, p.admin),
        ]),
        // A native sidecar is an init container that keeps running; the
        // kubelet starts the next container only once its startup probe
        // passes, so the app never starts before the proxy can carry it.
        restart_policy: native.then(|| "Always".to_string()),
        startup_probe: native.then(|| probe("/ready", 1, 120)),
        readiness_probe: Some(probe("/ready", 5, 3)),
        liveness_probe: Some(probe("/live", 10, 3)),
        resources: resources(&res),
        security_context: Some(SecurityContext {
            run_as_user: Some(cfg.proxy_uid),
            run_as_group: Some(cfg.proxy_uid),
            run_as_non_root: Some(true),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount(TOKEN_VOLUME, TOKEN_DIR),
            mount(TRUST_VOLUME, TRUST_DIR),
        ]),
        ..Container::default()
    }
}

/// The projected service-account token (audience `mycel`, short-lived,
/// renewed by the kubelet) and the trust bundle.
pub fn volumes(cfg: &InjectConfig) -> [Volume; 2] {
    [
        Volume {
            name: TOKEN_VOLUME.into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(cfg.token_audience.clone()),
                        expiration_seconds: Some(cfg.token_expiration_seconds),
                        path: "token".into(),
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: TRUST_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: cfg.trust_bundle_config_map.clone(),
                items: Some(vec![KeyToPath {
                    key: cfg.trust_bundle_key.clone(),
                    path: cfg.trust_bundle_key.clone(),
                    ..KeyToPath::default()
                }]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
    ]
}

fn port(name: &str, number: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(number),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

fn resources(r: &Resources) -> Option<ResourceRequirements> {
    let list = |cpu: &Option<String>, memory: &Option<String>| {
        let map: BTreeMap<String, Quantity> = [("cpu", cpu), ("memory", memory)]
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), Quantity(v))))
            .collect();
        (!map.is_empty()).then_some(map)
    };
    let requests = list(&r.cpu_request, &r.memory_request);
    let limits = list(&r.cpu_limit, &r.memory_limit);
    (requests.is_some() || limits.is_some()).then(|| ResourceRequirements {
        requests,
        limits,
        ..ResourceRequirements::default()
    })
}
