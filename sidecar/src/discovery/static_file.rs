//! Static-config mode: the whole view of the mesh and the identity files
//! from one YAML file, for running without a controller.
//!
//! ```yaml
//! identity: {cert: chain.pem, key: key.pem, bundle: roots.pem}
//! services:
//!   - name: catalog
//!     namespace: shop
//!     ports: [{name: http, port: 80, targetPort: 8080, protocol: http}]
//!     vips: []
//!     endpoints: [{address: 127.0.0.1, meshPort: 15006,
//!                  spiffeId: "spiffe://cluster.local/ns/shop/sa/catalog"}]
//! ```
//! Relative identity paths are relative to the file's directory.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mycel_api::names::{self, service_key, NameKind};
use mycel_api::spiffe::SpiffeId;
use serde::Deserialize;

use crate::core::directory::model::{
    Endpoint, Protocol, Service, ServicePort, ServiceState, Snapshot,
};

#[derive(Debug, thiserror::Error)]
pub enum StaticError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid static config: {reason}")]
    Syntax { path: String, reason: String },
    #[error("{path}: {field}: {reason}")]
    Invalid {
        path: String,
        field: String,
        reason: String,
    },
}

/// Where the workload certificate, key and trust bundle are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub bundle: PathBuf,
}

#[derive(Debug)]
pub struct StaticConfig {
    pub identity: IdentityFiles,
    /// Every listed service is `Known`.
    pub snapshot: Snapshot,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    identity: RawIdentity,
    #[serde(default)]
    services: Vec<RawService>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    cert: PathBuf,
    key: PathBuf,
    bundle: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawService {
    name: String,
    namespace: String,
    #[serde(default)]
    ports: Vec<RawPort>,
    #[serde(default)]
    vips: Vec<String>,
    #[serde(default)]
    endpoints: Vec<RawEndpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPort {
    #[serde(default)]
    name: String,
    port: u32,
    target_port: Option<u32>,
    protocol: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawEndpoint {
    address: String,
    mesh_port: u32,
    spiffe_id: String,
    #[serde(default)]
    workload: String,
    #[serde(default)]
    zone: String,
}

pub fn load(path: &Path) -> Result<StaticConfig, StaticError> {
    let text = std::fs::read_to_string(path).map_err(|source| StaticError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, &path.display().to_string(), base)
}

/// `name` is used in errors; `base` resolves relative identity paths.
pub fn parse(text: &str, name: &str, base: &Path) -> Result<StaticConfig, StaticError> {
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| StaticError::Syntax {
        path: name.to_string(),
        reason: e.to_string(),
    })?;
    let invalid = |field: String, reason: String| StaticError::Invalid {
        path: name.to_string(),
        field,
        reason,
    };
    let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
    let identity = IdentityFiles {
        cert: resolve(raw.identity.cert),
        key: resolve(raw.identity.key),
        bundle: resolve(raw.identity.bundle),
    };
    let mut services = BTreeMap::new();
    let mut versions = BTreeMap::new();
    for (i, s) in raw.services.iter().enumerate() {
        let at = format!("services[{i}]");
        let (key, state) =
            service(s).map_err(|(field, reason)| invalid(format!("{at}.{field}"), reason))?;
        if services.insert(key.clone(), state).is_some() {
            return Err(invalid(
                format!("{at}.name"),
                format!("service {key} listed twice"),
            ));
        }
        versions.insert(format!("service/{key}"), "static".to_string());
    }
    let mut vips = BTreeMap::new();
    for (key, state) in &services {
        if let ServiceState::Known { service, .. } = state {
            for ip in &service.vips {
                vips.entry(*ip).or_insert_with(|| key.clone());
            }
        }
    }
    Ok(StaticConfig {
        identity,
        snapshot: Snapshot {
            services,
            versions,
            vips,
            gateway_routes: Default::default(),
            gateway_certificates: Default::default(),
            inbound: None,
            complete: true,
        },
    })
}

type FieldError = (String, String);

fn port(field: String, v: u32) -> Result<u16, FieldError> {
    match u16::try_from(v) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err((field, format!("{v} is not a port number in 1..=65535"))),
    }
}

fn protocol(field: String, v: Option<&str>) -> Result<Protocol, FieldError> {
    match v.unwrap_or("http") {
        "http" => Ok(Protocol::Http),
        "http2" => Ok(Protocol::Http2),
        "grpc" => Ok(Protocol::Grpc),
        "tcp" => Ok(Protocol::Tcp),
        other => Err((
            field,
            format!("{other:?} is not one of http, http2, grpc, tcp"),
        )),
    }
}

fn service(s: &RawService) -> Result<(String, ServiceState), FieldError> {
    names::validate(NameKind::Service, &s.name).map_err(|e| ("name".into(), e.to_string()))?;
    names::validate(NameKind::Namespace, &s.namespace)
        .map_err(|e| ("namespace".into(), e.to_string()))?;
    let mut ports: Vec<ServicePort> = Vec::new();
    for (i, p) in s.ports.iter().enumerate() {
        let number = port(format!("ports[{i}].port"), p.port)?;
        if ports.iter().any(|o| o.port == number) {
            return Err((
                format!("ports[{i}].port"),
                format!("port {number} listed twice"),
            ));
        }
        ports.push(ServicePort {
            name: p.name.clone(),
            port: number,
            target_port: match p.target_port {
                None => number,
                Some(t) => port(format!("ports[{i}].targetPort"), t)?,
            },
            protocol: protocol(format!("ports[{i}].protocol"), p.protocol.as_deref())?,
        });
    }
    let vips = s
        .vips
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.parse::<IpAddr>()
                .map_err(|_| (format!("vips[{i}]"), format!("{v:?} is not an IP address")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let endpoints = s
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let ip: IpAddr = e.address.parse().map_err(|_| {
                (
                    format!("endpoints[{i}].address"),
                    format!("{:?} is not an IP address", e.address),
                )
            })?;
            let mesh_port = port(format!("endpoints[{i}].meshPort"), e.mesh_port)?;
            let identity: SpiffeId = e
                .spiffe_id
                .parse()
                .map_err(|err| (format!("endpoints[{i}].spiffeId"), format!("{err}")))?;
            Ok(Endpoint {
                mesh_addr: SocketAddr::new(ip, mesh_port),
                identity,
                workload: e.workload.clone(),
                zone: e.zone.clone(),
                weight: 1,
                ready: true,
            })
        })
        .collect::<Result<Vec<_>, FieldError>>()?;
    let service = Service {
        name: s.name.clone(),
        namespace: s.namespace.clone(),
        ports,
        vips,
    };
    Ok((
        service_key(&s.name, &s.namespace),
        ServiceState::Known {
            service: Arc::new(service),
            endpoints: endpoints.into(),
            // A static file carries no policies or routes: the defaults
            // apply and requests go to the service itself.
            policy: Default::default(),
            routes: Default::default(),
        },
    ))
}
