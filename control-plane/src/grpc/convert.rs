//! Conversions between the domain model and the wire types.

mod gateway_policy;
mod policy;
mod routes;

use mycel_api::names::{self, NameKind};
use mycel_api::spiffe::SpiffeId;
use mycel_api::v1;
use mycel_api::validate::{self, limits};

use crate::model::{
    Endpoint, Protocol, Resource, ResourceBody, ResourceKey, ResourceKind, Service, ServiceKey,
    Workload, WorkloadPort,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("hello.workload is missing")]
    MissingWorkload,
    #[error("workload.{field}: {message}")]
    Workload {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    ServiceKey(#[from] mycel_api::names::ServiceKeyError),
}

pub fn protocol_to_proto(p: Protocol) -> v1::Protocol {
    p.to_proto()
}

/// Unknown and unspecified protocols are treated as HTTP, the mesh default.
pub fn protocol_from_proto(p: i32) -> Protocol {
    Protocol::from_proto(p).unwrap_or_default()
}

pub fn kind_to_proto(k: ResourceKind) -> v1::ResourceType {
    match k {
        ResourceKind::Service => v1::ResourceType::Service,
        ResourceKind::Endpoints => v1::ResourceType::Endpoints,
        ResourceKind::TrustBundle => v1::ResourceType::TrustBundle,
        ResourceKind::ServiceVips => v1::ResourceType::ServiceVips,
        ResourceKind::TrafficPolicy => v1::ResourceType::TrafficPolicy,
        ResourceKind::Routes => v1::ResourceType::Routes,
        ResourceKind::GatewayRoutes => v1::ResourceType::GatewayRoutes,
        ResourceKind::InboundPolicy => v1::ResourceType::InboundPolicy,
        ResourceKind::GatewayCertificates => v1::ResourceType::GatewayCertificates,
    }
}

pub fn key_to_proto(k: &ResourceKey) -> v1::ResourceKey {
    v1::ResourceKey {
        r#type: kind_to_proto(k.kind) as i32,
        name: k.name.clone(),
    }
}

/// `None` for resource types this controller does not serve.
pub fn key_from_proto(k: &v1::ResourceKey) -> Option<ResourceKey> {
    let kind = match v1::ResourceType::try_from(k.r#type).ok()? {
        v1::ResourceType::Service => ResourceKind::Service,
        v1::ResourceType::Endpoints => ResourceKind::Endpoints,
        v1::ResourceType::TrustBundle => ResourceKind::TrustBundle,
        v1::ResourceType::ServiceVips => ResourceKind::ServiceVips,
        v1::ResourceType::TrafficPolicy => ResourceKind::TrafficPolicy,
        v1::ResourceType::Routes => ResourceKind::Routes,
        v1::ResourceType::GatewayRoutes => ResourceKind::GatewayRoutes,
        v1::ResourceType::InboundPolicy => ResourceKind::InboundPolicy,
        // Pushed with the Gateway a proxy follows, never subscribed to.
        v1::ResourceType::GatewayCertificates | v1::ResourceType::Unspecified => return None,
    };
    Some(ResourceKey {
        kind,
        name: k.name.clone(),
    })
}

pub fn service_to_proto(s: &Service) -> v1::Service {
    v1::Service {
        name: s.name.clone(),
        namespace: s.namespace.clone(),
        ports: s
            .ports
            .iter()
            .map(|p| v1::ServicePort {
                name: p.name.clone(),
                port: u32::from(p.port),
                target_port: u32::from(p.target_port),
                protocol: protocol_to_proto(p.protocol) as i32,
            })
            .collect(),
        vips: s.vips.iter().map(|ip| ip.to_string()).collect(),
    }
}

pub fn endpoint_to_proto(e: &Endpoint) -> v1::Endpoint {
    v1::Endpoint {
        address: e.address.clone(),
        mesh_port: u32::from(e.mesh_port),
        spiffe_id: e.spiffe_id.clone(),
        workload: e.workload.clone(),
        zone: e.zone.clone(),
        weight: e.weight,
        ready: e.ready,
    }
}

pub fn resource_to_proto(r: &Resource) -> v1::Resource {
    let body = match &r.body {
        ResourceBody::Service(s) => v1::resource::Body::Service(service_to_proto(s)),
        ResourceBody::Endpoints { service, endpoints } => {
            v1::resource::Body::Endpoints(v1::Endpoints {
                service: service.to_string(),
                endpoints: endpoints.iter().map(endpoint_to_proto).collect(),
            })
        }
        ResourceBody::TrustBundle { roots_der } => {
            v1::resource::Body::TrustBundle(v1::TrustBundle {
                roots_der: roots_der.clone(),
            })
        }
        ResourceBody::ServiceVips(vips) => v1::resource::Body::ServiceVips(v1::ServiceVips {
            vips: vips
                .iter()
                .map(|(ip, svc)| v1::ServiceVip {
                    address: ip.to_string(),
                    service: svc.to_string(),
                })
                .collect(),
        }),
        ResourceBody::NotFound => v1::resource::Body::NotFound(v1::NotFound {}),
        ResourceBody::TrafficPolicy { service, policy } => {
            v1::resource::Body::TrafficPolicy(policy::policy_to_proto(service, policy))
        }
        ResourceBody::Routes { parent, routes } => {
            v1::resource::Body::Routes(routes::routes_to_proto(parent, routes))
        }
        ResourceBody::InboundPolicy(p) => {
            v1::resource::Body::InboundPolicy(mycel_api::authz::to_proto(p))
        }
        ResourceBody::GatewayCertificates(certs) => {
            v1::resource::Body::GatewayCertificates(v1::GatewayCertificates {
                certificates: certs
                    .iter()
                    .map(|c| v1::GatewayCertificate {
                        source: c.source.clone(),
                        chain_pem: c.chain_pem.clone(),
                        key_pem: c.key_pem.0.clone(),
                    })
                    .collect(),
            })
        }
    };
    v1::Resource {
        key: Some(key_to_proto(&r.key)),
        version: r.version.clone(),
        body: Some(body),
    }
}

pub fn service_key_from_proto(s: &str) -> Result<ServiceKey, ConvertError> {
    Ok(ServiceKey::parse(s)?)
}

fn field(field: &'static str, message: impl Into<String>) -> ConvertError {
    ConvertError::Workload {
        field,
        message: message.into(),
    }
}

fn port(name: &'static str, p: u32) -> Result<u16, ConvertError> {
    validate::port(name, p).map_err(|e| field(name, e.message))
}

/// Longest zone or proxy id accepted (they are copied into every
/// subscriber's endpoints and the debug pages).
const MAX_TEXT: usize = 253;

/// Builds the workload a proxy registers, with the same rules the proxies
/// apply to the endpoints made from it (an IP address, valid ports, bounded
/// labels), so the controller never accepts what a subscriber would NACK.
/// The identity comes from its client certificate (the caller checked it
/// matches the message).
pub fn workload_from_proto(
    proxy_id: &str,
    w: &v1::Workload,
    identity: SpiffeId,
) -> Result<Workload, ConvertError> {
    names::validate(NameKind::Workload, &w.name).map_err(|e| field("name", e.to_string()))?;
    if proxy_id.len() > MAX_TEXT {
        return Err(field("proxy_id", format!("longer than {MAX_TEXT} bytes")));
    }
    let address =
        validate::address("address", &w.address).map_err(|e| field("address", e.message))?;
    let mesh_port = port("mesh_port", w.mesh_port)?;
    if w.ports.len() > limits::MAX_PORTS {
        return Err(field(
            "ports",
            format!("{} ports; at most {}", w.ports.len(), limits::MAX_PORTS),
        ));
    }
    let ports = w
        .ports
        .iter()
        .map(|p| {
            Ok(WorkloadPort {
                name: p.name.clone(),
                port: port("ports.port", p.port)?,
                protocol: protocol_from_proto(p.protocol),
            })
        })
        .collect::<Result<Vec<_>, ConvertError>>()?;
    if w.zone.len() > MAX_TEXT {
        return Err(field("zone", format!("longer than {MAX_TEXT} bytes")));
    }
    let labels = w
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    crate::ca::tokens::validate_labels(&labels).map_err(|e| field("labels", e.to_string()))?;
    Ok(Workload {
        proxy_id: proxy_id.to_string(),
        name: w.name.clone(),
        identity,
        labels,
        // The canonical spelling, so equal addresses compare equal.
        address: address.to_string(),
        mesh_port,
        ports,
        ready: w.ready,
        zone: w.zone.clone(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::ServicePort;

    fn id() -> SpiffeId {
        SpiffeId::new("cluster.local", "shop", "catalog").unwrap()
    }

    fn wire_workload() -> v1::Workload {
        v1::Workload {
            name: "catalog".into(),
            namespace: "shop".into(),
            service_account: "catalog".into(),
            labels: [("app".to_string(), "catalog".to_string())].into(),
            address: "127.0.0.1".into(),
            mesh_port: 15001,
            ports: vec![v1::WorkloadPort {
                name: "http".into(),
                port: 8080,
                protocol: v1::Protocol::Grpc as i32,
            }],
            ready: true,
            zone: "z".into(),
        }
    }

    #[test]
    fn protocols_round_trip() {
        for p in [
            Protocol::Http,
            Protocol::Http2,
            Protocol::Grpc,
            Protocol::Tcp,
        ] {
            assert_eq!(protocol_from_proto(protocol_to_proto(p) as i32), p);
        }
        assert_eq!(protocol_from_proto(0), Protocol::Http);
        assert_eq!(protocol_from_proto(99), Protocol::Http);
    }

    #[test]
    fn keys_round_trip() {
        let k = ServiceKey::new("a", "b").unwrap();
        for key in [
            ResourceKey::service(&k),
            ResourceKey::endpoints(&k),
            ResourceKey::traffic_policy(&k),
            ResourceKey::routes(&k),
            ResourceKey::trust_bundle(),
        ] {
            assert_eq!(key_from_proto(&key_to_proto(&key)), Some(key));
        }
        assert_eq!(
            key_from_proto(&v1::ResourceKey {
                r#type: 0,
                name: "x".into()
            }),
            None
        );
        assert_eq!(
            key_from_proto(&v1::ResourceKey {
                r#type: 42,
                name: "x".into()
            }),
            None
        );
    }

    #[test]
    fn service_resource_to_proto() {
        let svc = Service {
            name: "catalog".into(),
            namespace: "shop".into(),
            selector: BTreeMap::new(),
            ports: vec![ServicePort {
                name: "grpc".into(),
                port: 9090,
                target_port: 19090,
                protocol: Protocol::Grpc,
            }],
            vips: vec!["10.0.0.1".parse().unwrap()],
        };
        let r = Resource {
            key: ResourceKey::service(&svc.key()),
            version: "v1".into(),
            body: ResourceBody::Service(svc),
        };
        let p = resource_to_proto(&r);
        assert_eq!(p.version, "v1");
        assert_eq!(p.key.unwrap().r#type, v1::ResourceType::Service as i32);
        match p.body.unwrap() {
            v1::resource::Body::Service(s) => {
                assert_eq!(s.name, "catalog");
                assert_eq!(s.vips, ["10.0.0.1"]);
                assert_eq!(s.ports[0].target_port, 19090);
                assert_eq!(s.ports[0].protocol, v1::Protocol::Grpc as i32);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn endpoints_not_found_and_bundle_to_proto() {
        let k = ServiceKey::new("a", "b").unwrap();
        let ep = Endpoint {
            address: "127.0.0.2".into(),
            mesh_port: 15001,
            spiffe_id: "spiffe://cluster.local/ns/b/sa/a".into(),
            workload: "a".into(),
            zone: "z".into(),
            weight: 1,
            ready: true,
        };
        let r = Resource {
            key: ResourceKey::endpoints(&k),
            version: "v".into(),
            body: ResourceBody::Endpoints {
                service: k.clone(),
                endpoints: vec![ep],
            },
        };
        match resource_to_proto(&r).body.unwrap() {
            v1::resource::Body::Endpoints(e) => {
                assert_eq!(e.service, "a.b");
                assert_eq!(e.endpoints[0].mesh_port, 15001);
                assert_eq!(e.endpoints[0].spiffe_id, "spiffe://cluster.local/ns/b/sa/a");
                assert_eq!(e.endpoints[0].weight, 1);
                assert!(e.endpoints[0].ready);
            }
            other => panic!("{other:?}"),
        }
        let nf = Resource {
            key: ResourceKey::service(&k),
            version: "v".into(),
            body: ResourceBody::NotFound,
        };
        assert!(matches!(
            resource_to_proto(&nf).body,
            Some(v1::resource::Body::NotFound(_))
        ));
        let tb = Resource {
            key: ResourceKey::trust_bundle(),
            version: "v".into(),
            body: ResourceBody::TrustBundle {
                roots_der: vec![vec![9]],
            },
        };
        let p = resource_to_proto(&tb);
        assert_eq!(p.key.unwrap().name, "");
        assert!(
            matches!(p.body, Some(v1::resource::Body::TrustBundle(t)) if t.roots_der == vec![vec![9]])
        );
    }

    #[test]
    fn workload_from_wire() {
        let w = workload_from_proto("p1", &wire_workload(), id()).unwrap();
        assert_eq!(w.proxy_id, "p1");
        assert_eq!(w.namespace(), "shop");
        assert_eq!(w.mesh_port, 15001);
        assert_eq!(w.ports[0].protocol, Protocol::Grpc);
        assert_eq!(w.labels["app"], "catalog");
        assert!(w.ready);
    }

    #[test]
    fn workload_errors() {
        type Mutate = fn(&mut v1::Workload);
        let cases: Vec<(Mutate, &str)> = vec![
            (
                |w| w.name = String::new(),
                "workload.name: workload name \"\" is not valid",
            ),
            (
                |w| w.name = "Cat".into(),
                "workload.name: workload name \"Cat\"",
            ),
            (|w| w.address = String::new(), "workload.address"),
            (|w| w.address = "a b".into(), "workload.address"),
            (
                |w| w.address = "catalog.example".into(),
                "workload.address: \"catalog.example\" is not an IP address",
            ),
            (
                |w| w.address = "0.0.0.0".into(),
                "workload.address: 0.0.0.0 is not a dialable",
            ),
            (|w| w.address = "10.0.0.1/8".into(), "workload.address"),
            (|w| w.zone = "z".repeat(300), "workload.zone"),
            (
                |w| {
                    w.ports = (0..65)
                        .map(|i| v1::WorkloadPort {
                            name: String::new(),
                            port: 1000 + i,
                            protocol: 0,
                        })
                        .collect()
                },
                "workload.ports: 65 ports",
            ),
            (
                |w| {
                    w.labels = (0..65)
                        .map(|i| (format!("k{i}"), "v".to_string()))
                        .collect()
                },
                "workload.labels",
            ),
            (
                |w| {
                    w.labels.insert("k".into(), "v".repeat(300));
                },
                "workload.labels",
            ),
            (
                |w| {
                    w.labels.insert(String::new(), "v".into());
                },
                "workload.labels",
            ),
            (
                |w| w.mesh_port = 0,
                "workload.mesh_port: 0 is not a port number",
            ),
            (|w| w.mesh_port = 70000, "workload.mesh_port: 70000"),
            (|w| w.ports[0].port = 0, "workload.ports.port: 0"),
        ];
        for (mutate, want) in cases {
            let mut w = wire_workload();
            mutate(&mut w);
            let e = workload_from_proto("p", &w, id()).unwrap_err().to_string();
            assert!(e.contains(want), "want {want:?} in {e:?}");
        }
    }

    #[test]
    fn service_keys_from_wire() {
        assert_eq!(
            service_key_from_proto("a.b").unwrap(),
            ServiceKey::new("a", "b").unwrap()
        );
        assert_eq!(
            service_key_from_proto("nope").unwrap_err().to_string(),
            "service key \"nope\" is not of the form <name>.<namespace>"
        );
    }
}
