//! HTTP probes rewritten to the proxy's admin port, so they keep working
//! under strict mTLS (see `mycel_api::probes`). Only plain-HTTP probes
//! without a `host` are rewritten: an HTTPS probe would need the proxy to
//! speak TLS to the app, and a probe with a host goes elsewhere than the
//! app; both are left as they are (exclude their port from capture with
//! `mycel.io/exclude-inbound-ports` if the pod is strict). TCP, gRPC and
//! exec probes are left as they are too.

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mycel_api::probes::{self as contract, AppProbe, AppProbes, ProbeHeader, ProbeKind};

use crate::InjectError;

/// Rewrites the probes of `container` (index `index` in `spec.containers`)
/// in place and records their original targets in `out`.
pub fn rewrite(
    container: &mut Container,
    index: usize,
    admin_port: u16,
    out: &mut AppProbes,
) -> Result<(), InjectError> {
    let ports = container.ports.clone().unwrap_or_default();
    let name = container.name.clone();
    for kind in ProbeKind::ALL {
        let (probe, field) = match kind {
            ProbeKind::Liveness => (&mut container.liveness_probe, "livenessProbe"),
            ProbeKind::Readiness => (&mut container.readiness_probe, "readinessProbe"),
            ProbeKind::Startup => (&mut container.startup_probe, "startupProbe"),
        };
        let Some(probe) = probe.as_mut() else {
            continue;
        };
        let timeout = probe_timeout(probe);
        let Some(get) = probe.http_get.as_mut().filter(|g| rewritable(g)) else {
            continue;
        };
        let field = format!("spec.containers[{index}].{field}.httpGet.port");
        let port = resolve_port(&get.port, &ports, &field)?;
        let path = contract::path(&name, kind);
        out.insert(path.clone(), target(get, port, timeout));
        *get = HTTPGetAction {
            path: Some(path),
            port: IntOrString::Int(i32::from(admin_port)),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        };
    }
    Ok(())
}

fn rewritable(get: &HTTPGetAction) -> bool {
    let http = get
        .scheme
        .as_deref()
        .is_none_or(|s| s.eq_ignore_ascii_case("http"));
    http && get.host.as_deref().is_none_or(str::is_empty)
}

fn probe_timeout(probe: &Probe) -> u32 {
    // Kubernetes' default is 1 s; the proxy refuses more than the cap, and a
    // kubelet waiting longer than that for a probe is not a useful probe.
    let t = probe.timeout_seconds.unwrap_or(1);
    u32::try_from(t)
        .unwrap_or(1)
        .clamp(1, contract::MAX_TIMEOUT_SECONDS)
}

fn target(get: &HTTPGetAction, port: u16, timeout_seconds: u32) -> AppProbe {
    let path = match get.path.as_deref() {
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) if !p.is_empty() => format!("/{p}"),
        _ => "/".to_string(),
    };
    AppProbe {
        port,
        path,
        headers: get
            .http_headers
            .iter()
            .flatten()
            .map(|h| ProbeHeader {
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect(),
        timeout_seconds,
    }
}

/// A probe port is a number or the name of one of the container's ports.
fn resolve_port(
    port: &IntOrString,
    ports: &[k8s_openapi::api::core::v1::ContainerPort],
    field: &str,
) -> Result<u16, InjectError> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok().filter(|p| *p != 0).ok_or_else(|| {
            InjectError::field(field, format!("{n} is not a port number (1-65535)"))
        }),
        IntOrString::String(name) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                InjectError::field(field, format!("no container port is named {name:?}"))
            }),
    }
}
