//! Kubernetes objects to mesh terms: pure functions, shared by the cluster
//! source and the mesh.yaml parser, so a manifest means the same in both.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::{Protocol, Service, ServiceKey, ServicePort};

/// The label every EndpointSlice carries with the name of its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A field of an object that cannot be used, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn field_error(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// The protocol of a service port, as Kubernetes users declare it: the
/// `appProtocol` when set, else the port name (`grpc`, `grpc-web`,
/// `http2-api`, `tcp-db`, ...), else HTTP/1.1. An `appProtocol` Mycel does
/// not know is an error, so the caller decides whether that refuses the
/// object (mesh.yaml) or only the hint (a cluster object).
pub fn port_protocol(name: &str, app_protocol: Option<&str>) -> Result<Protocol, String> {
    if let Some(ap) = app_protocol.filter(|s| !s.is_empty()) {
        return match ap {
            "kubernetes.io/h2c" => Ok(Protocol::Http2),
            // WebSockets start as HTTP/1.1 upgrades.
            "kubernetes.io/ws" => Ok(Protocol::Http),
            other => Protocol::parse(other).ok_or_else(|| {
                format!("{other:?} is not one of http, http2, grpc, tcp, kubernetes.io/h2c, kubernetes.io/ws")
            }),
        };
    }
    let prefix = name.split('-').next().unwrap_or("");
    Ok(match prefix {
        "grpc" => Protocol::Grpc,
        "http2" | "h2c" => Protocol::Http2,
        "tcp" => Protocol::Tcp,
        _ => Protocol::Http,
    })
}

/// The VIPs of a service: `spec.clusterIPs` (with `spec.clusterIP` as the
/// older single form); "None" (headless) and "" (unset) carry none.
pub fn service_vips(spec: &core::ServiceSpec) -> Result<Vec<IpAddr>, FieldError> {
    let mut raw: Vec<(String, &str)> = Vec::new();
    if let Some(ip) = &spec.cluster_ip {
        raw.push(("spec.clusterIP".into(), ip));
    }
    for (i, ip) in spec.cluster_ips.iter().flatten().enumerate() {
        raw.push((format!("spec.clusterIPs[{i}]"), ip));
    }
    let mut vips = Vec::new();
    for (field, s) in raw {
        if s.is_empty() || s == "None" {
            continue;
        }
        let ip: IpAddr = s
            .parse()
            .map_err(|_| field_error(field, format!("{s:?} is not an IP address")))?;
        if !vips.contains(&ip) {
            vips.push(ip);
        }
    }
    Ok(vips)
}

/// How strictly [`service`] reads an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    /// mesh.yaml: whatever Mycel cannot honour is an error naming the field.
    Manifest,
    /// An object the API server already accepted: what Mycel cannot use
    /// (UDP ports, an unknown appProtocol) is skipped or falls back.
    Cluster,
}

/// A Kubernetes Service as the mesh sees it. `named_targets` resolves a
/// named `targetPort` (Kubernetes resolves it per Pod; EndpointSlices carry
/// the result, keyed by the service port's name).
pub fn service(
    svc: &core::Service,
    strictness: Strictness,
    named_targets: &BTreeMap<String, u16>,
) -> Result<Service, FieldError> {
    let meta = &svc.metadata;
    let name = meta
        .name
        .clone()
        .ok_or_else(|| field_error("metadata.name", "is missing"))?;
    let namespace = meta
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    ServiceKey::new(&name, &namespace).map_err(|e| field_error("metadata", e.to_string()))?;
    let spec = svc
        .spec
        .as_ref()
        .ok_or_else(|| field_error("spec", "is missing"))?;
    let vips = service_vips(spec)?;
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let at = format!("spec.ports[{i}]");
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        if proto != "TCP" {
            match strictness {
                Strictness::Manifest => {
                    return Err(field_error(
                        format!("{at}.protocol"),
                        format!("{proto:?} is not supported (only TCP)"),
                    ))
                }
                Strictness::Cluster => continue,
            }
        }
        let port = u16::try_from(p.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                field_error(
                    format!("{at}.port"),
                    format!("{} is not a port number (1-65535)", p.port),
                )
            })?;
        let name = p.name.clone().unwrap_or_default();
        let target_port = match &p.target_port {
            None => port,
            Some(IntOrString::Int(n)) => {
                u16::try_from(*n).ok().filter(|p| *p != 0).ok_or_else(|| {
                    field_error(
                        format!("{at}.targetPort"),
                        format!("{n} is not a port number (1-65535)"),
                    )
                })?
            }
            Some(IntOrString::String(target)) => match strictness {
                Strictness::Manifest => {
                    return Err(field_error(
                        format!("{at}.targetPort"),
                        format!(
                            "{target:?}: named target ports are not supported here, give a number"
                        ),
                    ))
                }
                // Unknown until an EndpointSlice names it; the service
                // port is the likeliest guess meanwhile.
                Strictness::Cluster => named_targets.get(&name).copied().unwrap_or(port),
            },
        };
        let protocol = match port_protocol(&name, p.app_protocol.as_deref()) {
            Ok(p) => p,
            Err(message) => match strictness {
                Strictness::Manifest => {
                    return Err(field_error(format!("{at}.appProtocol"), message))
                }
                Strictness::Cluster => port_protocol(&name, None).unwrap_or(Protocol::Http),
            },
        };
        ports.push(ServicePort {
            name,
            port,
            target_port,
            protocol,
        });
    }
    Ok(Service {
        name,
        namespace,
        // Cluster endpoints come from EndpointSlices, never from proxies'
        // own registrations, so a cluster service selects no workload.
        selector: match strictness {
            Strictness::Manifest => spec.selector.clone().unwrap_or_default(),
            Strictness::Cluster => BTreeMap::new(),
        },
        ports,
        vips,
    })
}

/// One address of an EndpointSlice, with the Pod it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub address: String,
    /// `(namespace, name)` of the Pod behind the address, if the slice says.
    pub pod: Option<(String, String)>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub zone: String,
}

/// What the mesh reads from one EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    pub service: ServiceKey,
    pub endpoints: Vec<SliceEndpoint>,
    /// Service port name → resolved target port, from `ports`.
    pub target_ports: BTreeMap<String, u16>,
}

/// Reads an EndpointSlice; `None` for one the mesh does not use (no
/// service label, FQDN addresses, or a service name that is not valid).
pub fn slice(es: &discovery::EndpointSlice) -> Option<Slice> {
    let meta = &es.metadata;
    let namespace = meta.namespace.as_deref()?;
    let service_name = meta.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    let service = ServiceKey::new(service_name, namespace).ok()?;
    if es.address_type != "IPv4" && es.address_type != "IPv6" {
        return None;
    }
    let endpoints = es
        .endpoints
        .iter()
        .flat_map(|ep| {
            let cond = ep.conditions.clone().unwrap_or_default();
            // Kubernetes: an unset `ready` means ready; `serving` defaults to
            // `ready`; `terminating` to false.
            let ready = cond.ready.unwrap_or(true);
            let serving = cond.serving.unwrap_or(ready);
            let terminating = cond.terminating.unwrap_or(false);
            let pod = ep
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| {
                    Some((
                        r.namespace.clone().unwrap_or_else(|| namespace.to_string()),
                        r.name.clone()?,
                    ))
                });
            let zone = ep.zone.clone().unwrap_or_default();
            ep.addresses
                .iter()
                .filter(|a| a.parse::<IpAddr>().is_ok())
                .map(move |address| SliceEndpoint {
                    address: address.clone(),
                    pod: pod.clone(),
                    ready,
                    serving,
                    terminating,
                    zone: zone.clone(),
                })
        })
        .collect();
    let target_ports = es
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let port = u16::try_from(p.port?).ok()?;
            Some((p.name.clone().unwrap_or_default(), port))
        })
        .collect();
    Some(Slice {
        service,
        endpoints,
        target_ports,
    })
}

/// What the mesh reads from a Pod: who it runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub service_account: String,
    /// Whether the Pod runs Mycel's proxy (injected), and so speaks mTLS on
    /// the mesh port.
    pub meshed: bool,
}

/// Annotation the injector sets on every Pod it gave a proxy.
pub const INJECTED_ANNOTATION: &str = "mycel.io/injected";

pub fn pod(p: &core::Pod) -> PodInfo {
    let service_account = p
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_string());
    let meshed = p
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(INJECTED_ANNOTATION));
    PodInfo {
        service_account,
        meshed,
    }
}
