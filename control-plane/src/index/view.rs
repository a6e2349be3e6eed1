//! Resource construction and content versions.

use std::collections::BTreeSet;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::model::{
    ProxyView, Resource, ResourceBody, ResourceKey, Route, Service, ServiceKey, ServicePolicy,
};

/// A content hash: equal bodies get equal versions, across restarts too, so
/// a reconnecting proxy that declares what it holds is sent nothing new.
pub fn version_of(key: &ResourceKey, body: &ResourceBody) -> String {
    let mut h = Sha256::new();
    // Serializing plain data (maps are BTreeMaps) cannot fail; an empty
    // fallback would only make versions less specific, never wrong twice.
    h.update(serde_json::to_vec(key).unwrap_or_default());
    h.update([0]);
    h.update(serde_json::to_vec(body).unwrap_or_default());
    let digest = hex::encode(h.finalize());
    digest[..16].to_string()
}

pub fn resource(key: ResourceKey, body: ResourceBody) -> Arc<Resource> {
    let version = version_of(&key, &body);
    Arc::new(Resource { key, version, body })
}

/// The resources of one existing service.
#[derive(Debug, Clone)]
pub struct ServiceResources {
    pub service: Arc<Resource>,
    pub endpoints: Arc<Resource>,
    /// Absent when no policy is attached: proxies use the defaults.
    pub policy: Option<Arc<Resource>>,
    /// Absent when no route attaches: requests go to the service itself.
    pub routes: Option<Arc<Resource>>,
    pub endpoint_count: usize,
}

impl ServiceResources {
    /// Every resource of the service, as proxies receive them.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Resource>> {
        [&self.service, &self.endpoints]
            .into_iter()
            .chain(self.policy.as_ref())
            .chain(self.routes.as_ref())
    }

    /// Whether `other` holds the same resources at the same versions.
    pub fn same_versions(&self, other: &ServiceResources) -> bool {
        self.service.version == other.service.version
            && self.endpoints.version == other.endpoints.version
            && self.policy.as_ref().map(|r| &r.version) == other.policy.as_ref().map(|r| &r.version)
            && self.routes.as_ref().map(|r| &r.version) == other.routes.as_ref().map(|r| &r.version)
    }
}

/// The keys of every resource a service may have.
pub fn service_keys(key: &ServiceKey) -> [ResourceKey; 4] {
    [
        ResourceKey::service(key),
        ResourceKey::endpoints(key),
        ResourceKey::traffic_policy(key),
        ResourceKey::routes(key),
    ]
}

pub fn service_resources(
    svc: &Service,
    endpoints: Vec<crate::model::Endpoint>,
    policy: Option<&ServicePolicy>,
    routes: Option<&[Route]>,
) -> ServiceResources {
    let key = svc.key();
    let endpoint_count = endpoints.len();
    let policy = policy.map(|p| {
        resource(
            ResourceKey::traffic_policy(&key),
            ResourceBody::TrafficPolicy {
                service: key.clone(),
                policy: Box::new(p.clone()),
            },
        )
    });
    // An empty list is no routes: the proxy then needs no resource at all.
    let routes = routes.filter(|r| !r.is_empty()).map(|r| {
        resource(
            ResourceKey::routes(&key),
            ResourceBody::Routes {
                parent: key.clone(),
                routes: r.to_vec(),
            },
        )
    });
    ServiceResources {
        service: resource(
            ResourceKey::service(&key),
            ResourceBody::Service(svc.clone()),
        ),
        endpoints: resource(
            ResourceKey::endpoints(&key),
            ResourceBody::Endpoints {
                service: key,
                endpoints,
            },
        ),
        policy,
        routes,
        endpoint_count,
    }
}

/// The mesh-wide VIP table. A VIP claimed by two services (a config error
/// the source should have refused) goes to the first by key, so every proxy
/// agrees.
pub fn service_vips<'a>(services: impl Iterator<Item = &'a Service>) -> Arc<Resource> {
    let mut vips = std::collections::BTreeMap::new();
    for svc in services {
        for ip in &svc.vips {
            vips.entry(*ip).or_insert_with(|| svc.key());
        }
    }
    resource(ResourceKey::service_vips(), ResourceBody::ServiceVips(vips))
}

/// Builds a proxy's view: the resources every proxy holds, then those of
/// the services it subscribed to.
pub fn proxy_view<'a>(
    global: [&Arc<Resource>; 2],
    subscriptions: &BTreeSet<ServiceKey>,
    lookup: impl Fn(&ServiceKey) -> Option<&'a ServiceResources>,
) -> ProxyView {
    let mut view = ProxyView::default();
    for r in global {
        view.resources.insert(r.key.clone(), r.clone());
    }
    for key in subscriptions {
        match lookup(key) {
            Some(res) => {
                for r in res.all() {
                    view.resources.insert(r.key.clone(), r.clone());
                }
            }
            None => {
                let nf = resource(ResourceKey::service(key), ResourceBody::NotFound);
                view.resources.insert(nf.key.clone(), nf);
            }
        }
    }
    view
}
