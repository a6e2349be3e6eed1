//! What the discovery stream has accepted so far, and the snapshot built
//! from it. Synchronous and free of I/O: the stream task feeds it responses
//! and publishes the snapshots; tests drive it directly.

use std::collections::BTreeMap;
use std::sync::Arc;

use mycel_api::v1 as pb;
use rustls_pki_types::CertificateDer;

use super::convert::{self, ConvertError, Converted, Kind};
use crate::core::directory::gateway_certs::GatewayCertificates;
use crate::core::directory::model::{Endpoint, Service, ServiceState, Snapshot};
use crate::core::directory::policy::TrafficPolicy;
use crate::core::directory::routes::ServiceRoutes;

#[derive(Debug, Default)]
pub struct Cache {
    /// `None` = the controller says the service does not exist.
    services: BTreeMap<String, Option<Arc<Service>>>,
    endpoints: BTreeMap<String, Arc<[Endpoint]>>,
    policies: BTreeMap<String, Arc<TrafficPolicy>>,
    routes: BTreeMap<String, Arc<ServiceRoutes>>,
    /// `None` = the controller says the Gateway does not exist.
    gateway_routes: BTreeMap<String, Option<Arc<ServiceRoutes>>>,
    /// Kept as received (one `Arc` per version), so the gateway can tell
    /// a new set from a snapshot rebuilt for another reason.
    gateway_certificates: BTreeMap<String, Arc<GatewayCertificates>>,
    vips: BTreeMap<std::net::IpAddr, String>,
    inbound: Option<Arc<mycel_api::authz::InboundPolicy>>,
    versions: BTreeMap<(Kind, String), String>,
}

/// What applying a response changed beyond the snapshot.
#[derive(Debug, Default)]
pub struct Applied {
    /// A new trust bundle to install.
    pub bundle: Option<Vec<CertificateDer<'static>>>,
}

impl Cache {
    /// Applies a whole response, or nothing if any part of it is invalid.
    pub fn apply(&mut self, resp: &pb::DiscoveryResponse) -> Result<Applied, ConvertError> {
        let converted = resp
            .resources
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (kind, name) = convert::key(i, r.key.as_ref())?;
                Ok((kind, name, r.version.clone(), convert::resource(i, r)?))
            })
            .collect::<Result<Vec<_>, ConvertError>>()?;
        let removed = resp
            .removed
            .iter()
            .enumerate()
            .map(|(i, k)| {
                convert::key(i, Some(k)).map_err(|mut e| {
                    e.field = format!("removed[{i}].{}", e.field);
                    e
                })
            })
            .collect::<Result<Vec<_>, ConvertError>>()?;

        let mut applied = Applied::default();
        for (kind, name) in removed {
            match kind {
                Kind::Service => {
                    self.services.remove(&name);
                }
                Kind::Endpoints => {
                    self.endpoints.remove(&name);
                }
                // The bundle is never withdrawn: peers would become unverifiable.
                Kind::TrustBundle => continue,
                Kind::ServiceVips => self.vips.clear(),
                Kind::TrafficPolicy => {
                    self.policies.remove(&name);
                }
                Kind::Routes => {
                    self.routes.remove(&name);
                }
                Kind::GatewayRoutes => {
                    self.gateway_routes.remove(&name);
                }
                // Withdrawn: the gateway serves its files only.
                Kind::GatewayCertificates => {
                    self.gateway_certificates.remove(&name);
                }
                // Like the bundle, never withdrawn: a proxy with no policy
                // would fall back to the default and admit more than its
                // policies do.
                Kind::InboundPolicy => continue,
            }
            self.versions.remove(&(kind, name));
        }
        for (kind, name, version, c) in converted {
            match c {
                Converted::Service { key, service } => {
                    self.services.insert(key, Some(service));
                }
                Converted::NotFound { key } => {
                    self.services.insert(key, None);
                }
                Converted::Endpoints { key, endpoints } => {
                    self.endpoints.insert(key, endpoints);
                }
                Converted::TrustBundle { roots } => applied.bundle = Some(roots),
                Converted::ServiceVips { vips } => self.vips = vips,
                Converted::TrafficPolicy { key, policy } => {
                    self.policies.insert(key, policy);
                }
                Converted::Routes { key, routes } => {
                    self.routes.insert(key, routes);
                }
                Converted::GatewayRoutes { key, routes } => {
                    self.gateway_routes.insert(key, routes);
                }
                Converted::InboundPolicy { policy } => self.inbound = Some(policy),
                Converted::GatewayCertificates { key, certs } => {
                    self.gateway_certificates.insert(key, certs);
                }
            }
            self.versions.insert((kind, name), version);
        }
        Ok(applied)
    }

    /// Drops what is held for a service this proxy unsubscribed from, so
    /// its entry leaves the snapshot and `Hello.known`.
    pub fn forget(&mut self, key: &str) {
        self.services.remove(key);
        self.endpoints.remove(key);
        self.policies.remove(key);
        self.routes.remove(key);
        for kind in [
            Kind::Service,
            Kind::Endpoints,
            Kind::TrafficPolicy,
            Kind::Routes,
        ] {
            self.versions.remove(&(kind, key.to_string()));
        }
    }

    /// The data path's view: every subscribed service, answered or not.
    pub fn snapshot(&self, subscribed: &[String]) -> Snapshot {
        let mut services = BTreeMap::new();
        for key in subscribed {
            services.insert(key.clone(), ServiceState::Pending);
        }
        for (key, service) in &self.services {
            let state = match service {
                None => ServiceState::NotFound,
                Some(service) => ServiceState::Known {
                    service: service.clone(),
                    endpoints: self
                        .endpoints
                        .get(key)
                        .cloned()
                        .unwrap_or_else(|| Arc::from(Vec::new())),
                    policy: self.policies.get(key).cloned().unwrap_or_default(),
                    routes: self.routes.get(key).cloned().unwrap_or_default(),
                },
            };
            services.insert(key.clone(), state);
        }
        let versions = self
            .versions
            .iter()
            .map(|((kind, name), v)| (format!("{}/{}", kind.as_str(), name), v.clone()))
            .collect();
        Snapshot {
            services,
            versions,
            vips: self.vips.clone(),
            gateway_routes: self.gateway_routes.clone(),
            gateway_certificates: self.gateway_certificates.clone(),
            inbound: self.inbound.clone(),
            complete: false,
        }
    }

    /// What this proxy holds, for `Hello.known` on reconnect.
    pub fn known(&self) -> Vec<pb::ResourceVersion> {
        self.versions
            .iter()
            .map(|((kind, name), version)| pb::ResourceVersion {
                key: Some(pb::ResourceKey {
                    r#type: kind.to_wire() as i32,
                    name: name.clone(),
                }),
                version: version.clone(),
            })
            .collect()
    }
}
