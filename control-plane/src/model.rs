//! Domain types of the control plane: services, workloads, endpoints and the
//! per-proxy view the index computes. No I/O and no wire types here, so the
//! index and the sources can be tested without a gRPC stack.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use mycel_api::spiffe::SpiffeId;
use serde::Serialize;

pub use mycel_api::names::ServiceKey;
pub use mycel_api::protocol::Protocol;
pub use mycel_crds::TrafficPolicySpec;

pub use crate::routes::model::Route;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub target_port: u16,
    pub protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    /// Labels a workload must carry to be an endpoint. Empty selects nothing,
    /// as in Kubernetes, where such services get endpoints by other means.
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    pub vips: Vec<IpAddr>,
}

impl Service {
    pub fn key(&self) -> ServiceKey {
        // Sources validate both names with the same rules before a Service
        // exists (mesh.yaml parser, Kubernetes' own API validation).
        ServiceKey::new(&self.name, &self.namespace)
            .expect("service names are validated by every source")
    }

    /// Whether a workload is selected by this service (readiness aside).
    pub fn selects(&self, workload: &Workload) -> bool {
        self.selects_labels(workload.identity.namespace(), &workload.labels)
    }

    /// Whether a workload of `namespace` with `labels` is behind this
    /// service.
    pub fn selects_labels(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        !self.selector.is_empty()
            && namespace == self.namespace
            && self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkloadPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// A workload that registered itself over its proxy's discovery stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub proxy_id: String,
    pub name: String,
    /// Carries the namespace and service account; proven by the proxy's
    /// client certificate.
    pub identity: SpiffeId,
    pub labels: BTreeMap<String, String>,
    pub address: String,
    pub mesh_port: u16,
    pub ports: Vec<WorkloadPort>,
    pub ready: bool,
    pub zone: String,
}

impl Workload {
    pub fn namespace(&self) -> &str {
        self.identity.namespace()
    }

    pub fn service_account(&self) -> &str {
        self.identity.service_account()
    }
}

/// One address of a service, as proxies dial it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Endpoint {
    pub address: String,
    pub mesh_port: u16,
    pub spiffe_id: String,
    pub workload: String,
    pub zone: String,
    pub weight: u32,
    pub ready: bool,
}

impl Endpoint {
    pub fn of(workload: &Workload) -> Self {
        Self {
            address: workload.address.clone(),
            mesh_port: workload.mesh_port,
            spiffe_id: workload.identity.to_string(),
            workload: workload.name.clone(),
            zone: workload.zone.clone(),
            weight: 1,
            ready: workload.ready,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ResourceKind {
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

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Endpoints => "endpoints",
            Self::TrustBundle => "trust_bundle",
            Self::ServiceVips => "service_vips",
            Self::TrafficPolicy => "traffic_policy",
            Self::Routes => "routes",
            Self::GatewayRoutes => "gateway_routes",
            Self::InboundPolicy => "inbound_policy",
            Self::GatewayCertificates => "gateway_certificates",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ResourceKey {
    pub kind: ResourceKind,
    /// The service key (the Gateway's for gateway routes), or "" for the
    /// trust bundle and the VIP table.
    pub name: String,
}

impl ResourceKey {
    pub fn service(key: &ServiceKey) -> Self {
        Self {
            kind: ResourceKind::Service,
            name: key.to_string(),
        }
    }

    pub fn endpoints(key: &ServiceKey) -> Self {
        Self {
            kind: ResourceKind::Endpoints,
            name: key.to_string(),
        }
    }

    pub fn traffic_policy(key: &ServiceKey) -> Self {
        Self {
            kind: ResourceKind::TrafficPolicy,
            name: key.to_string(),
        }
    }

    pub fn routes(key: &ServiceKey) -> Self {
        Self {
            kind: ResourceKind::Routes,
            name: key.to_string(),
        }
    }

    /// The routes of a Gateway, for the gateway proxies that follow it.
    pub fn gateway_routes(gateway: &ServiceKey) -> Self {
        Self {
            kind: ResourceKind::GatewayRoutes,
            name: gateway.to_string(),
        }
    }

    /// The certificates and keys of a Gateway's HTTPS listeners, for the
    /// gateway proxies that follow it and may hold them.
    pub fn gateway_certificates(gateway: &ServiceKey) -> Self {
        Self {
            kind: ResourceKind::GatewayCertificates,
            name: gateway.to_string(),
        }
    }

    /// Who may call the proxy's own workload; each proxy's body differs.
    pub fn inbound_policy() -> Self {
        Self {
            kind: ResourceKind::InboundPolicy,
            name: String::new(),
        }
    }

    pub fn trust_bundle() -> Self {
        Self {
            kind: ResourceKind::TrustBundle,
            name: String::new(),
        }
    }

    pub fn service_vips() -> Self {
        Self {
            kind: ResourceKind::ServiceVips,
            name: String::new(),
        }
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ResourceBody {
    Service(Service),
    Endpoints {
        service: ServiceKey,
        endpoints: Vec<Endpoint>,
    },
    TrustBundle {
        roots_der: Vec<Vec<u8>>,
    },
    /// Every service VIP in the mesh and its service, sent to every proxy.
    ServiceVips(BTreeMap<IpAddr, ServiceKey>),
    /// A subscribed service that does not exist (yet).
    NotFound,
    /// How clients reach a service.
    TrafficPolicy {
        service: ServiceKey,
        policy: Box<ServicePolicy>,
    },
    /// The Gateway API routes attached to a service (key kind `Routes`)
    /// or to a Gateway (key kind `GatewayRoutes`, `parent` is then the
    /// Gateway's `<name>.<namespace>`), oldest first.
    Routes {
        parent: ServiceKey,
        routes: Vec<Route>,
    },
    /// The authorization of one proxy's workload.
    InboundPolicy(Box<mycel_api::authz::InboundPolicy>),
    /// A Gateway's HTTPS certificates (empty for a proxy that may not hold
    /// them). Keys serialize as digests only (see
    /// [`crate::routes::gateway::certificates::KeyPem`]).
    GatewayCertificates(Vec<crate::routes::gateway::certificates::GatewayCertificate>),
}

/// The traffic policy objects attached to one service, already validated
/// and with conflicts resolved (one object per target).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServicePolicy {
    /// `<namespace>/<name>` of every object applied, sorted.
    pub sources: Vec<String>,
    /// The policy of the whole service.
    pub service_wide: Option<TrafficPolicySpec>,
    /// Policies of single service ports, replacing the service-wide one
    /// for their port.
    pub ports: BTreeMap<u16, TrafficPolicySpec>,
}

impl ServicePolicy {
    /// Adds the policy object `source` (`<namespace>/<name>`) for `port`
    /// (`None`: the whole service). Both sources build their policies with
    /// this, after each has settled which object a target takes (local mode
    /// refuses a second one, Kubernetes keeps the oldest), so a policy reads
    /// the same whichever source it came from.
    pub fn attach(&mut self, source: String, port: Option<u16>, spec: TrafficPolicySpec) {
        if let Err(at) = self.sources.binary_search(&source) {
            self.sources.insert(at, source);
        }
        match port {
            Some(port) => {
                self.ports.insert(port, spec);
            }
            None => self.service_wide = Some(spec),
        }
    }
}

/// A resource with its content version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub key: ResourceKey,
    pub version: String,
    pub body: ResourceBody,
}

/// What one proxy should hold right now: the trust bundle plus the services
/// it subscribed to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyView {
    pub resources: BTreeMap<ResourceKey, std::sync::Arc<Resource>>,
}

impl ProxyView {
    /// Whether both views hold the same resources at the same versions.
    pub fn same_versions(&self, other: &ProxyView) -> bool {
        self.resources.len() == other.resources.len()
            && self
                .resources
                .iter()
                .zip(other.resources.iter())
                .all(|((ka, ra), (kb, rb))| ka == kb && ra.version == rb.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_key_display() {
        let k = ServiceKey::new("a", "b").unwrap();
        assert_eq!(ResourceKey::service(&k).to_string(), "service/a.b");
        assert_eq!(ResourceKey::endpoints(&k).to_string(), "endpoints/a.b");
        assert_eq!(ResourceKey::trust_bundle().to_string(), "trust_bundle/");
    }
}
