//! Discovery resources from the wire into the proxy's model, validated
//! field by field. Nothing here mutates state: a response is converted as a
//! whole first, so one bad resource rejects it all (NACK) and the last good
//! snapshot stays in use.

mod gateway_certs;
mod gateway_policy;
mod policy;
mod routes;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mycel_api::names::{service_key, ServiceKey};
use mycel_api::spiffe::SpiffeId;
use mycel_api::v1 as pb;
use pb::resource::Body;
use rustls_pki_types::CertificateDer;

use crate::core::directory::gateway_certs::GatewayCertificates;
use crate::core::directory::model::{Endpoint, Protocol, Service, ServicePort};
use crate::core::directory::policy::TrafficPolicy;
use crate::core::directory::routes::ServiceRoutes;

/// A resource, converted. Keyed by service key except the trust bundle.
#[derive(Clone, Debug, PartialEq)]
pub enum Converted {
    Service {
        key: String,
        service: Arc<Service>,
    },
    NotFound {
        key: String,
    },
    Endpoints {
        key: String,
        endpoints: Arc<[Endpoint]>,
    },
    TrustBundle {
        roots: Vec<CertificateDer<'static>>,
    },
    /// The mesh-wide VIP table: address → service key.
    ServiceVips {
        vips: BTreeMap<IpAddr, String>,
    },
    TrafficPolicy {
        key: String,
        policy: Arc<TrafficPolicy>,
    },
    /// The routes whose parent is the service `key`.
    Routes {
        key: String,
        routes: Arc<ServiceRoutes>,
    },
    /// The routes attached to the Gateway `key`; None: no such Gateway.
    GatewayRoutes {
        key: String,
        routes: Option<Arc<ServiceRoutes>>,
    },
    /// Who may call this proxy's workload.
    InboundPolicy {
        policy: Arc<mycel_api::authz::InboundPolicy>,
    },
    /// The HTTPS certificates of the Gateway `key`; empty: none.
    GatewayCertificates {
        key: String,
        certs: Arc<GatewayCertificates>,
    },
}

/// Which resource and which field are wrong, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("resource {resource}: {field}: {reason}")]
pub struct ConvertError {
    /// `<TYPE>/<name>` as received, or `#<index>` when the key is unusable.
    pub resource: String,
    pub field: String,
    pub reason: String,
}

/// The kind of a resource, as the model names it in versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    Endpoints,
    TrustBundle,
    ServiceVips,
    TrafficPolicy,
    Routes,
    GatewayRoutes,
    InboundPolicy,
    GatewayCertificates,
}

impl Kind {
    pub fn from_wire(t: i32) -> Option<Kind> {
        match pb::ResourceType::try_from(t).ok()? {
            pb::ResourceType::Service => Some(Kind::Service),
            pb::ResourceType::Endpoints => Some(Kind::Endpoints),
            pb::ResourceType::TrustBundle => Some(Kind::TrustBundle),
            pb::ResourceType::ServiceVips => Some(Kind::ServiceVips),
            pb::ResourceType::TrafficPolicy => Some(Kind::TrafficPolicy),
            pb::ResourceType::Routes => Some(Kind::Routes),
            pb::ResourceType::GatewayRoutes => Some(Kind::GatewayRoutes),
            pb::ResourceType::InboundPolicy => Some(Kind::InboundPolicy),
            pb::ResourceType::GatewayCertificates => Some(Kind::GatewayCertificates),
            pb::ResourceType::Unspecified => None,
        }
    }

    pub fn to_wire(self) -> pb::ResourceType {
        match self {
            Kind::Service => pb::ResourceType::Service,
            Kind::Endpoints => pb::ResourceType::Endpoints,
            Kind::TrustBundle => pb::ResourceType::TrustBundle,
            Kind::ServiceVips => pb::ResourceType::ServiceVips,
            Kind::TrafficPolicy => pb::ResourceType::TrafficPolicy,
            Kind::Routes => pb::ResourceType::Routes,
            Kind::GatewayRoutes => pb::ResourceType::GatewayRoutes,
            Kind::InboundPolicy => pb::ResourceType::InboundPolicy,
            Kind::GatewayCertificates => pb::ResourceType::GatewayCertificates,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Endpoints => "endpoints",
            Kind::TrustBundle => "trust_bundle",
            Kind::ServiceVips => "service_vips",
            Kind::TrafficPolicy => "traffic_policy",
            Kind::Routes => "routes",
            Kind::GatewayRoutes => "gateway_routes",
            Kind::InboundPolicy => "inbound_policy",
            Kind::GatewayCertificates => "gateway_certificates",
        }
    }
}

struct Ctx {
    resource: String,
}

impl Ctx {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> ConvertError {
        ConvertError {
            resource: self.resource.clone(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Checks a resource key; returns the kind and the name.
pub fn key(index: usize, key: Option<&pb::ResourceKey>) -> Result<(Kind, String), ConvertError> {
    let ctx = Ctx {
        resource: format!("#{index}"),
    };
    let key = key.ok_or_else(|| ctx.err("key", "missing"))?;
    let kind = Kind::from_wire(key.r#type)
        .ok_or_else(|| ctx.err("key.type", format!("unknown resource type {}", key.r#type)))?;
    let ctx = Ctx {
        resource: format!("{}/{}", kind.as_str(), key.name),
    };
    match kind {
        Kind::TrustBundle | Kind::ServiceVips | Kind::InboundPolicy if !key.name.is_empty() => {
            return Err(ctx.err("key.name", "must be empty for this resource type"))
        }
        Kind::Service
        | Kind::Endpoints
        | Kind::TrafficPolicy
        | Kind::Routes
        | Kind::GatewayRoutes
        | Kind::GatewayCertificates => {
            if let Err(e) = ServiceKey::parse(&key.name) {
                return Err(ctx.err("key.name", e.to_string()));
            }
        }
        _ => {}
    }
    Ok((kind, key.name.clone()))
}

/// Converts one resource (index = its position, for errors).
pub fn resource(index: usize, r: &pb::Resource) -> Result<Converted, ConvertError> {
    let (kind, name) = key(index, r.key.as_ref())?;
    let ctx = Ctx {
        resource: format!("{}/{}", kind.as_str(), name),
    };
    if r.version.is_empty() {
        return Err(ctx.err("version", "missing"));
    }
    match (kind, &r.body) {
        (Kind::Service, Some(Body::Service(s))) => Ok(Converted::Service {
            service: Arc::new(service(&ctx, &name, s)?),
            key: name,
        }),
        (Kind::Service, Some(Body::NotFound(_))) => Ok(Converted::NotFound { key: name }),
        (Kind::Endpoints, Some(Body::Endpoints(e))) => Ok(Converted::Endpoints {
            endpoints: endpoints(&ctx, &name, e)?.into(),
            key: name,
        }),
        (Kind::TrustBundle, Some(Body::TrustBundle(b))) => Ok(Converted::TrustBundle {
            roots: trust_bundle(&ctx, b)?,
        }),
        (Kind::ServiceVips, Some(Body::ServiceVips(v))) => Ok(Converted::ServiceVips {
            vips: service_vips(&ctx, v)?,
        }),
        (Kind::TrafficPolicy, Some(Body::TrafficPolicy(p))) => Ok(Converted::TrafficPolicy {
            policy: Arc::new(policy::traffic_policy(&ctx, &name, p)?),
            key: name,
        }),
        (Kind::InboundPolicy, Some(Body::InboundPolicy(p))) => Ok(Converted::InboundPolicy {
            policy: Arc::new(
                mycel_api::authz::from_proto(p).map_err(|e| ctx.err(e.field, e.problem))?,
            ),
        }),
        (Kind::Routes, Some(Body::Routes(r))) => Ok(Converted::Routes {
            routes: Arc::new(routes::routes(&ctx, &name, r)?),
            key: name,
        }),
        (Kind::GatewayRoutes, Some(Body::Routes(r))) => Ok(Converted::GatewayRoutes {
            routes: Some(Arc::new(routes::routes(&ctx, &name, r)?)),
            key: name,
        }),
        (Kind::GatewayRoutes, Some(Body::NotFound(_))) => Ok(Converted::GatewayRoutes {
            routes: None,
            key: name,
        }),
        (Kind::GatewayCertificates, Some(Body::GatewayCertificates(c))) => {
            Ok(Converted::GatewayCertificates {
                certs: Arc::new(gateway_certs::gateway_certificates(&ctx, c)?),
                key: name,
            })
        }
        // A Gateway that does not exist has no certificates to serve.
        (Kind::GatewayCertificates, Some(Body::NotFound(_))) => {
            Ok(Converted::GatewayCertificates {
                certs: Arc::default(),
                key: name,
            })
        }
        (_, None) => Err(ctx.err("body", "missing")),
        (_, Some(_)) => Err(ctx.err("body", "does not match the resource type")),
    }
}

fn port(ctx: &Ctx, field: String, v: u32) -> Result<u16, ConvertError> {
    match u16::try_from(v) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ctx.err(field, format!("{v} is not a port number in 1..=65535"))),
    }
}

fn protocol(ctx: &Ctx, field: String, v: i32) -> Result<Protocol, ConvertError> {
    // Unset means the mesh default, as in mesh.yaml.
    Protocol::from_proto(v).ok_or_else(|| ctx.err(field, format!("unknown protocol {v}")))
}

fn service(ctx: &Ctx, key: &str, s: &pb::Service) -> Result<Service, ConvertError> {
    if s.name.is_empty() {
        return Err(ctx.err("service.name", "missing"));
    }
    if s.namespace.is_empty() {
        return Err(ctx.err("service.namespace", "missing"));
    }
    let own = service_key(&s.name, &s.namespace);
    if own != key {
        return Err(ctx.err("service.name", format!("names {own}, not the resource key")));
    }
    let mut ports: Vec<ServicePort> = Vec::with_capacity(s.ports.len());
    for (i, p) in s.ports.iter().enumerate() {
        let number = port(ctx, format!("service.ports[{i}].port"), p.port)?;
        // Unset target port means "same as port", as in Kubernetes.
        let target = match p.target_port {
            0 => number,
            t => port(ctx, format!("service.ports[{i}].target_port"), t)?,
        };
        if ports.iter().any(|o| o.port == number) {
            return Err(ctx.err(
                format!("service.ports[{i}].port"),
                format!("port {number} listed twice"),
            ));
        }
        ports.push(ServicePort {
            name: p.name.clone(),
            port: number,
            target_port: target,
            protocol: protocol(ctx, format!("service.ports[{i}].protocol"), p.protocol)?,
        });
    }
    let vips = s
        .vips
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.parse::<IpAddr>().map_err(|_| {
                ctx.err(
                    format!("service.vips[{i}]"),
                    format!("{v:?} is not an IP address"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Service {
        name: s.name.clone(),
        namespace: s.namespace.clone(),
        ports,
        vips,
    })
}

fn endpoints(ctx: &Ctx, key: &str, e: &pb::Endpoints) -> Result<Vec<Endpoint>, ConvertError> {
    if !e.service.is_empty() && e.service != key {
        return Err(ctx.err(
            "endpoints.service",
            format!("{:?} is not the resource key", e.service),
        ));
    }
    e.endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| {
            let ip: IpAddr = ep.address.parse().map_err(|_| {
                ctx.err(
                    format!("endpoints[{i}].address"),
                    format!("{:?} is not an IP address", ep.address),
                )
            })?;
            let mesh_port = port(ctx, format!("endpoints[{i}].mesh_port"), ep.mesh_port)?;
            let identity: SpiffeId = ep
                .spiffe_id
                .parse()
                .map_err(|e| ctx.err(format!("endpoints[{i}].spiffe_id"), format!("{e}")))?;
            Ok(Endpoint {
                mesh_addr: SocketAddr::new(ip, mesh_port),
                identity,
                workload: ep.workload.clone(),
                zone: ep.zone.clone(),
                // Unset weight is the default weight, never "no traffic".
                weight: ep.weight.max(1),
                ready: ep.ready,
            })
        })
        .collect()
}

fn trust_bundle(
    ctx: &Ctx,
    b: &pb::TrustBundle,
) -> Result<Vec<CertificateDer<'static>>, ConvertError> {
    if b.roots_der.is_empty() {
        return Err(ctx.err("trust_bundle.roots_der", "empty"));
    }
    b.roots_der
        .iter()
        .enumerate()
        .map(|(i, der)| {
            x509_parser::parse_x509_certificate(der).map_err(|e| {
                ctx.err(
                    format!("trust_bundle.roots_der[{i}]"),
                    format!("not a DER certificate: {e}"),
                )
            })?;
            Ok(CertificateDer::from(der.clone()))
        })
        .collect()
}

fn service_vips(ctx: &Ctx, v: &pb::ServiceVips) -> Result<BTreeMap<IpAddr, String>, ConvertError> {
    let mut vips = BTreeMap::new();
    for (i, entry) in v.vips.iter().enumerate() {
        let ip: IpAddr = entry.address.parse().map_err(|_| {
            ctx.err(
                format!("service_vips.vips[{i}].address"),
                format!("{:?} is not an IP address", entry.address),
            )
        })?;
        if ServiceKey::parse(&entry.service).is_err() {
            return Err(ctx.err(
                format!("service_vips.vips[{i}].service"),
                format!("{:?} is not of the form <name>.<namespace>", entry.service),
            ));
        }
        if vips.insert(ip, entry.service.clone()).is_some() {
            return Err(ctx.err(
                format!("service_vips.vips[{i}].address"),
                format!("{ip} is listed twice"),
            ));
        }
    }
    Ok(vips)
}
