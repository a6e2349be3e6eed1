//! The proxy's view of the mesh: immutable snapshots the data path reads.
//!
//! Built from discovery resources (or a static file); never awaited on the
//! request path beyond the first resolution of a service.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mycel_api::spiffe::SpiffeId;
use serde::Serialize;

pub use mycel_api::protocol::Protocol;

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
    pub ports: Vec<ServicePort>,
    pub vips: Vec<IpAddr>,
}

impl Service {
    /// `<name>.<namespace>`
    pub fn key(&self) -> String {
        mycel_api::names::service_key(&self.name, &self.namespace)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// Where the endpoint's sidecar accepts mTLS (address + mesh port).
    pub mesh_addr: SocketAddr,
    /// The identity its sidecar must present.
    #[serde(serialize_with = "display")]
    pub identity: SpiffeId,
    pub workload: String,
    pub zone: String,
    pub weight: u32,
    pub ready: bool,
}

fn vip_table<S: serde::Serializer>(v: &BTreeMap<IpAddr, String>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(ip, svc)| (ip.to_string(), svc)))
}

fn display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// What the proxy knows of one service.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ServiceState {
    /// Subscribed, no answer from the controller yet.
    Pending,
    /// The controller says no such service exists.
    NotFound,
    Known {
        service: Arc<Service>,
        endpoints: Arc<[Endpoint]>,
        /// The defaults when the service has no policy.
        policy: Arc<super::policy::TrafficPolicy>,
        /// Routes whose parent is this service (GAMMA); empty when none
        /// attach, and requests go to the service itself.
        routes: Arc<super::routes::ServiceRoutes>,
    },
}

/// Everything the data path needs, swapped as a whole.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// Keyed by `<name>.<namespace>`.
    pub services: BTreeMap<String, ServiceState>,
    /// Version of each resource as received, keyed by `<type>/<name>`.
    pub versions: BTreeMap<String, String>,
    /// Every service VIP in the mesh and the service key it belongs to,
    /// including services this proxy has not subscribed to.
    #[serde(serialize_with = "vip_table")]
    pub vips: BTreeMap<IpAddr, String>,
    /// Gateway mode: the routes of the Gateway this proxy serves, keyed by
    /// `<name>.<namespace>`; `None` when the controller says it does not
    /// exist. Absent until the controller answers.
    pub gateway_routes: BTreeMap<String, Option<Arc<super::routes::ServiceRoutes>>>,
    /// Gateway mode: the certificates of the HTTPS listeners of the
    /// Gateway this proxy serves, keyed by `<name>.<namespace>`; absent
    /// until the controller sends them (and for a proxy it sends none).
    /// Serialized without their keys.
    pub gateway_certificates: BTreeMap<String, Arc<super::gateway_certs::GatewayCertificates>>,
    /// Who may call this proxy's workload; `None` until the controller
    /// sends it (the mesh default, `mesh-authenticated`, applies until then:
    /// see `inbound::authorize`).
    pub inbound: Option<Arc<mycel_api::authz::InboundPolicy>>,
    /// True when the snapshot holds every service there is (a static
    /// config file): a service missing from it does not exist, rather than
    /// waiting for a controller's answer.
    pub complete: bool,
}

impl Snapshot {
    pub fn service(&self, key: &str) -> Option<&ServiceState> {
        match self.services.get(key) {
            None if self.complete => Some(&ServiceState::NotFound),
            found => found,
        }
    }

    /// The service key a VIP belongs to, subscribed or not.
    pub fn vip_owner(&self, ip: IpAddr) -> Option<&str> {
        self.vips.get(&ip).map(String::as_str)
    }

    /// The service, if any, that owns a virtual IP (transparent mode).
    pub fn service_by_vip(&self, ip: IpAddr) -> Option<&Arc<Service>> {
        self.services.values().find_map(|s| match s {
            ServiceState::Known { service, .. } if service.vips.contains(&ip) => Some(service),
            _ => None,
        })
    }
}
