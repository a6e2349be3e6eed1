//! Sidecar injection as a pure function: a Pod and the mesh settings in,
//! the meshed Pod (or the JSONPatch that makes it) out. The admission
//! webhook and `mycelctl inject` call the same code, so what the cluster
//! does is what the CLI prints.
//!
//! A meshed pod gets, in this order:
//! * `mycel-init` (`mycel-proxy init`: iptables, root with NET_ADMIN and
//!   NET_RAW only) as its first init container;
//! * `mycel-proxy` as a native sidecar (the next init container, with
//!   `restartPolicy: Always`), or as its last container in classic mode,
//!   in which case `mycel-init` goes last among the init containers so the
//!   pod's own init containers are not captured before a proxy runs;
//! * the projected token and trust-bundle volumes;
//! * its HTTP probes pointed at the proxy's admin port ([`probes`]);
//! * the annotation `mycel.io/injected: <mode>`, which makes a second
//!   injection a no-op, and the label `mycel.io/meshed: "true"`, which the
//!   controller's Pod watch selects on.

pub mod annotations;
mod config;
mod containers;
pub mod decision;
mod error;
mod ports;
mod probes;
mod quantity;

use k8s_openapi::api::core::v1::{Pod, PodSpec};

pub use config::{
    AccessLog, InjectConfig, MtlsMode, OtlpProtocol, ProxyPorts, Ratio, Resources, SidecarMode,
    Tracing,
};
pub use containers::{
    ADMIN_PORT_NAME, INIT_NAME, MESH_PORT_NAME, PROXY_NAME, TOKEN_DIR, TOKEN_VOLUME, TRUST_DIR,
    TRUST_VOLUME,
};
pub use decision::{should_inject, Decision, Reason};
pub use error::InjectError;

use annotations::Overrides;

/// Why a pod is returned as it came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unchanged {
    /// It carries `mycel.io/injected` or a container named `mycel-proxy`.
    AlreadyInjected,
    /// `hostNetwork: true`: iptables in its namespace would capture the
    /// node's own traffic.
    HostNetwork,
}

impl std::fmt::Display for Unchanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::AlreadyInjected => {
                "already meshed (it has mycel.io/injected or a mycel-proxy container)"
            }
            Self::HostNetwork => {
                "hostNetwork pods are not meshed (capture would take the node's traffic)"
            }
        })
    }
}

/// Whether [`inject_pod`] leaves this pod alone, and why.
pub fn unchanged(pod: &Pod) -> Option<Unchanged> {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(annotations::INJECTED));
    let spec = pod.spec.as_ref();
    let has_proxy = spec.is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == PROXY_NAME || c.name == INIT_NAME)
    });
    if annotated || has_proxy {
        return Some(Unchanged::AlreadyInjected);
    }
    spec.and_then(|s| s.host_network)
        .filter(|h| *h)
        .map(|_| Unchanged::HostNetwork)
}

/// The meshed pod. A pod that [`unchanged`] names is returned as it came;
/// whether a pod *should* be meshed is [`should_inject`]'s question.
/// The service name of a pod's spans: its workload as the usual labels
/// name it (`app.kubernetes.io/name`, then `app`), else its service
/// account, which every pod of a workload shares.
fn trace_service_name(pod: &Pod) -> String {
    let labels = pod.metadata.labels.as_ref();
    ["app.kubernetes.io/name", "app"]
        .iter()
        .find_map(|k| labels?.get(*k).filter(|v| !v.is_empty()).cloned())
        .or_else(|| pod.spec.as_ref()?.service_account_name.clone())
        .unwrap_or_else(|| "default".to_string())
}

pub fn inject_pod(mut pod: Pod, cfg: &InjectConfig) -> Result<Pod, InjectError> {
    if unchanged(&pod).is_some() {
        return Ok(pod);
    }
    let overrides = Overrides::parse(&pod.metadata.annotations.clone().unwrap_or_default())?;
    let mode = overrides.sidecar_mode.unwrap_or(cfg.sidecar_mode);
    quantity::check_request_below_limit(&overrides, &cfg.proxy_resources)?;

    let trace_service = trace_service_name(&pod);
    let spec: &mut PodSpec = pod.spec.as_mut().ok_or(InjectError::NoSpec)?;
    if spec.containers.is_empty() {
        return Err(InjectError::NoContainers);
    }
    for v in containers::volumes(cfg) {
        let taken = spec.volumes.iter().flatten().any(|o| o.name == v.name);
        if taken {
            return Err(InjectError::field(
                "spec.volumes",
                format!(
                    "a volume is already named {:?}, a name the mesh needs",
                    v.name
                ),
            ));
        }
    }
    let app_ports = ports::app_ports(&spec.containers, &cfg.ports)?;
    let mut probes = mycel_api::probes::AppProbes::new();
    for (i, c) in spec.containers.iter_mut().enumerate() {
        probes::rewrite(c, i, cfg.ports.admin, &mut probes)?;
    }
    let first_app = spec.containers[0].name.clone();

    let init = containers::init_container(cfg, &overrides);
    let proxy =
        containers::proxy_container(cfg, &overrides, mode, &app_ports, &probes, &trace_service);
    let inits = spec.init_containers.get_or_insert_with(Vec::new);
    match mode {
        SidecarMode::Native => {
            inits.insert(0, proxy);
            inits.insert(0, init);
        }
        SidecarMode::Classic => {
            inits.push(init);
            spec.containers.push(proxy);
        }
    }
    spec.volumes
        .get_or_insert_with(Vec::new)
        .extend(containers::volumes(cfg));

    let annotations = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(annotations::INJECTED.into(), mode.as_str().into());
    annotations
        .entry(annotations::DEFAULT_CONTAINER.into())
        .or_insert(first_app);
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(annotations::MESHED_LABEL.into(), "true".into());
    Ok(pod)
}

/// The JSONPatch (RFC 6902) that turns `pod` into [`inject_pod`]'s result:
/// what the admission webhook answers. Empty when the pod is left alone.
pub fn patch(pod: &Pod, cfg: &InjectConfig) -> Result<json_patch::Patch, InjectError> {
    let before = serde_json::to_value(pod).map_err(|e| InjectError::Serialize(e.to_string()))?;
    let after = serde_json::to_value(inject_pod(pod.clone(), cfg)?)
        .map_err(|e| InjectError::Serialize(e.to_string()))?;
    Ok(json_patch::diff(&before, &after))
}

/// Checks settings that come from values files: quantities, ports and
/// telemetry. The protocol and the access log are checked as they are
/// read, being enums.
pub fn check_config(cfg: &InjectConfig) -> Result<(), InjectError> {
    if let Some(endpoint) = cfg.tracing.endpoint().filter(|e| !is_http_url(e)) {
        return Err(InjectError::field(
            "tracing.otlpEndpoint",
            format!(
                "{endpoint:?} is not an http:// or https:// URL, e.g. \
                 http://otel-collector.observability.svc:4318"
            ),
        ));
    }
    if let Some(ratio) = cfg.tracing.sampling.filter(|r| !r.is_valid()) {
        return Err(InjectError::field(
            "tracing.sampling",
            format!("{} is not a ratio from 0 to 1", ratio.get()),
        ));
    }
    for (field, r) in [
        ("proxyResources", &cfg.proxy_resources),
        ("initResources", &cfg.init_resources),
    ] {
        for (name, v) in [
            ("cpuRequest", &r.cpu_request),
            ("cpuLimit", &r.cpu_limit),
            ("memoryRequest", &r.memory_request),
            ("memoryLimit", &r.memory_limit),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !annotations::is_quantity(v)) {
                return Err(InjectError::field(
                    format!("{field}.{name}"),
                    format!("{v:?} is not a Kubernetes quantity"),
                ));
            }
        }
    }
    let mut ports = cfg.ports.all().to_vec();
    ports.sort_unstable();
    ports.dedup();
    if ports.len() != 4 || ports.contains(&0) {
        return Err(InjectError::field(
            "ports",
            format!(
                "the proxy's four ports must be distinct and non-zero: {:?}",
                cfg.ports.all()
            ),
        ));
    }
    Ok(())
}

/// `http(s)://host[:port][/path]`: what an OTLP exporter dials. Checked
/// here because a typo (`collector:4318`, no scheme) would otherwise only
/// show as export failures in every proxy.
fn is_http_url(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.rsplit_once(':') {
        // An IPv6 literal's colons are inside its brackets.
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (host_port, None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p != 0));
    s.len() <= 2048
        && !host.is_empty()
        && port_ok
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests;
