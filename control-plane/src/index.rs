//! The in-memory mesh state: services, registered workloads and connected
//! proxies. Every method is synchronous and does no I/O. A change
//! recomputes the resources of the services it can affect, then re-publishes
//! only the proxies subscribed to a service whose version changed, so the
//! cost of one workload coming or going does not grow with every stream
//! connected. A proxy's view is updated in place for the keys that changed
//! (a new subscription touches one service, not the whole view), and each
//! proxy holds at most `max_subscriptions` on-demand subscriptions.
//! A proxy only discovers the namespaces its scope lets it see (see
//! [`scope`]): a subscription outside it is answered `not_found` and its
//! VIP table leaves those services out.

mod gateways;
mod inbound;
mod labels;
pub mod scope;
mod scoping;
mod services;
mod view;
mod vips;
mod workloads;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

pub use scope::{Namespaces, ProxyOrigin, DISCOVERY_NAMESPACES_KEY};
pub use services::DuplicateService;
pub use view::version_of;

use crate::authz::Authorization;
use crate::model::{
    Endpoint, ProxyView, Resource, ResourceBody, ResourceKey, Route, Service, ServiceKey,
    ServicePolicy, Workload,
};
use gateways::Gateways;
pub use inbound::{ProxyWorkload, WorkloadLabels};
use scope::PodScopes;
use services::Services;
use view::ServiceResources;
use vips::VipTables;
use workloads::Workloads;

/// Identifies one discovery stream (one connection of one proxy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

struct Proxy {
    subscriptions: BTreeSet<ServiceKey>,
    /// A sidecar's workload: what its inbound policy is computed for. None
    /// for a gateway.
    workload: Option<ProxyWorkload>,
    /// The Gateway a gateway proxy follows (its Hello named it), and the
    /// proxy's service account (which decides whether it gets the
    /// Gateway's private keys).
    gateway: Option<(ServiceKey, String)>,
    /// Who it is, for its discovery scope; None until the stream says.
    origin: Option<ProxyOrigin>,
    /// The namespaces it may discover (its VIP table is that scope's).
    visible: Namespaces,
    tx: watch::Sender<Arc<ProxyView>>,
}

pub struct Index {
    services: Services,
    workloads: Workloads,
    trust_bundle: Arc<Resource>,
    /// The VIP table of each scope; every proxy's view holds its own.
    vips: VipTables,
    /// The namespaces a proxy may discover besides its own.
    discovery: Namespaces,
    /// Per-workload narrowing from Pod annotations.
    pod_scopes: PodScopes,
    /// Endpoints a source gives directly, per service.
    source_endpoints: BTreeMap<ServiceKey, Vec<Endpoint>>,
    /// Traffic policies by the service they are attached to; kept while
    /// the service is unknown, since sources deliver them in any order.
    policies: BTreeMap<ServiceKey, ServicePolicy>,
    /// Routes by their parent service, oldest first; kept while the
    /// service is unknown, like policies.
    routes: BTreeMap<ServiceKey, Vec<Route>>,
    resources: BTreeMap<ServiceKey, ServiceResources>,
    /// Gateways and their routes, by `<name>.<namespace>`.
    gateways: Gateways,
    /// Authorization policies and the mesh default.
    authz: Authorization,
    /// Labels of Kubernetes Pods by (namespace, name): in a cluster these,
    /// not a proxy's own word, choose the policies of its workload.
    pod_labels: BTreeMap<(String, String), BTreeMap<String, String>>,
    proxies: BTreeMap<ConnId, Proxy>,
    /// The proxies subscribed to each service, so a change reaches its
    /// subscribers without looking at every proxy.
    subscribers: BTreeMap<ServiceKey, BTreeSet<ConnId>>,
    next_conn: u64,
    max_subscriptions: usize,
}

/// Subscriptions one proxy may hold unless configured otherwise.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 1024;

impl Default for Index {
    fn default() -> Self {
        Self::new()
    }
}

impl Index {
    pub fn new() -> Self {
        Self {
            services: Services::default(),
            workloads: Workloads::default(),
            trust_bundle: view::resource(
                ResourceKey::trust_bundle(),
                ResourceBody::TrustBundle {
                    roots_der: Vec::new(),
                },
            ),
            vips: VipTables::default(),
            discovery: Namespaces::All,
            pod_scopes: PodScopes::default(),
            source_endpoints: BTreeMap::new(),
            policies: BTreeMap::new(),
            routes: BTreeMap::new(),
            resources: BTreeMap::new(),
            gateways: Gateways::default(),
            authz: Authorization::default(),
            pod_labels: BTreeMap::new(),
            proxies: BTreeMap::new(),
            subscribers: BTreeMap::new(),
            next_conn: 1,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
        }
    }

    pub fn set_max_subscriptions(&mut self, max: usize) {
        self.max_subscriptions = max;
    }

    pub fn max_subscriptions(&self) -> usize {
        self.max_subscriptions
    }

    /// A fresh id for a new stream.
    pub fn allocate_conn(&mut self) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        id
    }

    pub fn set_trust_bundle(&mut self, roots_der: Vec<Vec<u8>>) {
        let next = view::resource(
            ResourceKey::trust_bundle(),
            ResourceBody::TrustBundle { roots_der },
        );
        if next.version != self.trust_bundle.version {
            self.trust_bundle = next;
            self.publish_trust_bundle();
        }
    }

    /// Replaces the whole set of services (mesh.yaml is applied whole).
    pub fn apply_services(&mut self, services: Vec<Service>) -> Result<(), DuplicateService> {
        if self.services.replace_all(services)? {
            self.recompute();
        }
        Ok(())
    }

    /// Adds or replaces one service (a watch event): only its own
    /// resources and the VIP table are recomputed.
    pub fn apply_service(&mut self, svc: Service) {
        let key = svc.key();
        if self.services.apply(svc) {
            self.recompute_vips();
            self.recompute_services(BTreeSet::from([key]));
        }
    }

    pub fn delete_service(&mut self, key: &ServiceKey) {
        if self.services.delete(key) {
            self.recompute_vips();
            self.recompute_services(BTreeSet::from([key.clone()]));
        }
    }

    /// Sets the endpoints a source knows directly (Kubernetes
    /// EndpointSlices) for a service, next to the workloads that registered
    /// themselves. Kept even while the service itself is unknown, since
    /// watches deliver the two in any order.
    pub fn set_source_endpoints(&mut self, key: &ServiceKey, mut endpoints: Vec<Endpoint>) {
        endpoints.sort();
        endpoints.dedup();
        let changed = if endpoints.is_empty() {
            self.source_endpoints.remove(key).is_some()
        } else {
            self.source_endpoints.insert(key.clone(), endpoints.clone()) != Some(endpoints)
        };
        if changed {
            self.recompute_services(BTreeSet::from([key.clone()]));
        }
    }

    /// Replaces every traffic policy (mesh.yaml is applied whole); only
    /// services whose policy changed are recomputed.
    pub fn apply_policies(&mut self, policies: BTreeMap<ServiceKey, ServicePolicy>) {
        let mut changed: BTreeSet<ServiceKey> = self
            .policies
            .iter()
            .filter(|(k, p)| policies.get(*k) != Some(*p))
            .map(|(k, _)| k.clone())
            .collect();
        changed.extend(
            policies
                .iter()
                .filter(|(k, p)| self.policies.get(*k) != Some(*p))
                .map(|(k, _)| k.clone()),
        );
        self.policies = policies;
        if !changed.is_empty() {
            self.recompute_services(changed);
        }
    }

    /// Sets or removes the traffic policy of one service (a watch event).
    pub fn set_policy(&mut self, key: &ServiceKey, policy: Option<ServicePolicy>) {
        let changed = match policy {
            Some(p) => self.policies.insert(key.clone(), p.clone()) != Some(p),
            None => self.policies.remove(key).is_some(),
        };
        if changed {
            self.recompute_services(BTreeSet::from([key.clone()]));
        }
    }

    /// Replaces every route (mesh.yaml is applied whole): the routes of
    /// each parent service, oldest first. Only parents whose routes
    /// changed are recomputed; an empty list counts as no routes.
    pub fn apply_routes(&mut self, mut routes: BTreeMap<ServiceKey, Vec<Route>>) {
        routes.retain(|_, r| !r.is_empty());
        let mut changed: BTreeSet<ServiceKey> = self
            .routes
            .iter()
            .filter(|(k, r)| routes.get(*k) != Some(*r))
            .map(|(k, _)| k.clone())
            .collect();
        changed.extend(
            routes
                .iter()
                .filter(|(k, r)| self.routes.get(*k) != Some(*r))
                .map(|(k, _)| k.clone()),
        );
        self.routes = routes;
        if !changed.is_empty() {
            self.recompute_services(changed);
        }
    }

    /// Sets the routes of one parent service, oldest first (a watch
    /// event); an empty list removes them.
    pub fn set_routes(&mut self, key: &ServiceKey, routes: Vec<Route>) {
        let changed = if routes.is_empty() {
            self.routes.remove(key).is_some()
        } else {
            self.routes.insert(key.clone(), routes.clone()) != Some(routes)
        };
        if changed {
            self.recompute_services(BTreeSet::from([key.clone()]));
        }
    }

    /// The routes attached to a service, oldest first.
    pub fn routes(&self, key: &ServiceKey) -> &[Route] {
        self.routes.get(key).map(Vec::as_slice).unwrap_or_default()
    }

    /// The traffic policy attached to a service, if any.
    pub fn policy(&self, key: &ServiceKey) -> Option<&ServicePolicy> {
        self.policies.get(key)
    }

    pub fn register_workload(&mut self, conn: ConnId, workload: Workload) {
        let mut affected = self.selecting(self.workloads.get(conn));
        affected.extend(self.selecting(Some(&workload)));
        if self.workloads.register(conn, workload) {
            self.recompute_services(affected);
        }
    }

    pub fn unregister_workload(&mut self, conn: ConnId) {
        let affected = self.selecting(self.workloads.get(conn));
        if self.workloads.unregister(conn) {
            self.recompute_services(affected);
        }
    }

    pub fn set_ready(&mut self, conn: ConnId, ready: bool) {
        let affected = self.selecting(self.workloads.get(conn));
        if self.workloads.set_ready(conn, ready) {
            self.recompute_services(affected);
        }
    }

    /// The services whose endpoints may include `workload`.
    fn selecting(&self, workload: Option<&Workload>) -> BTreeSet<ServiceKey> {
        let Some(w) = workload else {
            return BTreeSet::new();
        };
        self.services.selecting(w.identity.namespace(), &w.labels)
    }

    pub fn workload(&self, conn: ConnId) -> Option<&Workload> {
        self.workloads.get(conn)
    }

    /// Starts tracking a proxy; its view is computed right away. Only the
    /// first `max_subscriptions` keys are taken: the caller refuses the
    /// rest (see [`Self::max_subscriptions`]).
    pub fn connect_proxy(
        &mut self,
        conn: ConnId,
        subscriptions: impl IntoIterator<Item = ServiceKey>,
    ) -> watch::Receiver<Arc<ProxyView>> {
        let subscriptions: BTreeSet<ServiceKey> = subscriptions
            .into_iter()
            .take(self.max_subscriptions)
            .collect();
        let visible = self.visible_for(None);
        // Held until the proxy's scope changes or it disconnects.
        self.vips.acquire(&self.services, &visible);
        let view = self.view_for(&subscriptions, &visible);
        let (tx, rx) = watch::channel(Arc::new(view));
        for key in &subscriptions {
            self.subscribers
                .entry(key.clone())
                .or_default()
                .insert(conn);
        }
        self.proxies.insert(
            conn,
            Proxy {
                subscriptions,
                workload: None,
                gateway: None,
                origin: None,
                visible,
                tx,
            },
        );
        rx
    }

    /// Makes a connected proxy (of `service_account`, in the Gateway's
    /// namespace) follow a Gateway: its view gets that Gateway's
    /// `GATEWAY_ROUTES` (`not_found` while it does not exist) and
    /// `GATEWAY_CERTIFICATES` (empty unless it is the Gateway's service
    /// account), now and on every change.
    pub fn follow_gateway(&mut self, conn: ConnId, gateway: ServiceKey, service_account: &str) {
        let Some(proxy) = self.proxies.get_mut(&conn) else {
            return;
        };
        proxy.gateway = Some((gateway.clone(), service_account.to_string()));
        self.update_gateway_views(&BTreeSet::from([gateway]));
    }

    /// Replaces every Gateway's HTTPS certificates (mesh.yaml is applied
    /// whole).
    pub fn apply_gateway_certificates(
        &mut self,
        certificates: BTreeMap<
            ServiceKey,
            crate::routes::gateway::certificates::GatewayCertificates,
        >,
    ) {
        let changed = self.gateways.replace_certificates(certificates);
        if !changed.is_empty() {
            self.update_gateway_views(&changed);
        }
    }

    /// Sets (Some) or removes (None) one Gateway's HTTPS certificates.
    pub fn set_gateway_certificates(
        &mut self,
        key: &ServiceKey,
        certificates: Option<crate::routes::gateway::certificates::GatewayCertificates>,
    ) {
        if self.gateways.set_certificates(key, certificates) {
            self.update_gateway_views(&BTreeSet::from([key.clone()]));
        }
    }

    /// Replaces every Gateway (mesh.yaml is applied whole): each with its
    /// routes, oldest first. Only proxies following a changed one are
    /// re-published.
    pub fn apply_gateways(&mut self, gateways: BTreeMap<ServiceKey, Vec<Route>>) {
        let changed = self.gateways.replace_all(gateways);
        if !changed.is_empty() {
            self.update_gateway_views(&changed);
        }
    }

    /// Sets (Some: it exists, with these routes oldest first) or removes
    /// (None) one Gateway (a watch event).
    pub fn set_gateway(&mut self, key: &ServiceKey, routes: Option<Vec<Route>>) {
        if self.gateways.set(key, routes) {
            self.update_gateway_views(&BTreeSet::from([key.clone()]));
        }
    }

    /// The routes of a Gateway; None when it does not exist.
    pub fn gateway_routes(&self, key: &ServiceKey) -> Option<&[Route]> {
        self.gateways.routes(key)
    }

    pub fn gateway_count(&self) -> usize {
        self.gateways.len()
    }

    /// Puts the current resource of each Gateway in `keys` in the views
    /// of the proxies following it.
    fn update_gateway_views(&mut self, keys: &BTreeSet<ServiceKey>) {
        for proxy in self.proxies.values() {
            let Some((gw, account)) = proxy.gateway.as_ref().filter(|(g, _)| keys.contains(g))
            else {
                continue;
            };
            let next = [
                self.gateways.resource(gw),
                self.gateways.certificates_for(gw, account),
            ];
            proxy.tx.send_if_modified(|cur| {
                let stale: Vec<&Arc<Resource>> = next
                    .iter()
                    .filter(|n| cur.resources.get(&n.key).map(|r| &r.version) != Some(&n.version))
                    .collect();
                if stale.is_empty() {
                    return false;
                }
                let view = Arc::make_mut(cur);
                for n in stale {
                    view.resources.insert(n.key.clone(), n.clone());
                }
                true
            });
        }
    }

    pub fn disconnect_proxy(&mut self, conn: ConnId) {
        if let Some(p) = self.proxies.remove(&conn) {
            self.vips.release(&p.visible);
            for key in &p.subscriptions {
                self.unsubscribed(key, conn);
            }
        }
    }

    fn unsubscribed(&mut self, key: &ServiceKey, conn: ConnId) {
        if let Some(conns) = self.subscribers.get_mut(key) {
            conns.remove(&conn);
            if conns.is_empty() {
                self.subscribers.remove(key);
            }
        }
    }

    /// Changes a proxy's subscriptions (removals first); unknown proxies
    /// are ignored. Returns the keys refused because the proxy already
    /// holds `max_subscriptions`. Only the changed keys of the view are
    /// touched.
    pub fn subscribe(
        &mut self,
        conn: ConnId,
        add: &[ServiceKey],
        remove: &[ServiceKey],
    ) -> Vec<ServiceKey> {
        let max = self.max_subscriptions;
        let Some(proxy) = self.proxies.get_mut(&conn) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        let mut touched = BTreeSet::new();
        for k in remove {
            if proxy.subscriptions.remove(k) {
                removed.push(k.clone());
                touched.insert(k.clone());
            }
        }
        let mut refused = Vec::new();
        for k in add {
            if proxy.subscriptions.contains(k) {
                continue;
            }
            if proxy.subscriptions.len() >= max {
                refused.push(k.clone());
                continue;
            }
            proxy.subscriptions.insert(k.clone());
            touched.insert(k.clone());
            self.subscribers.entry(k.clone()).or_default().insert(conn);
        }
        for k in &removed {
            self.unsubscribed(k, conn);
        }
        self.update_view(conn, &touched);
        refused
    }

    pub fn subscriptions(&self, conn: ConnId) -> Option<&BTreeSet<ServiceKey>> {
        self.proxies.get(&conn).map(|p| &p.subscriptions)
    }

    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.services.get(key)
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Ready endpoints summed over every service.
    pub fn endpoint_count(&self) -> usize {
        self.resources.values().map(|r| r.endpoint_count).sum()
    }

    pub fn proxy_count(&self) -> usize {
        self.proxies.len()
    }

    fn view_for(&self, subscriptions: &BTreeSet<ServiceKey>, visible: &Namespaces) -> ProxyView {
        let vips = self.vips.get(visible);
        view::proxy_view([&self.trust_bundle, &vips], subscriptions, |k| {
            self.resources
                .get(k)
                .filter(|_| visible.contains(k.namespace()))
        })
    }

    /// Recomputes the resources of every service (the service set
    /// changed), then re-publishes the proxies that see a difference.
    fn recompute(&mut self) {
        self.recompute_vips();
        let all: BTreeSet<ServiceKey> = self
            .services
            .iter()
            .map(|(k, _)| k.clone())
            .chain(self.resources.keys().cloned())
            .collect();
        self.recompute_services(all);
    }

    fn recompute_vips(&mut self) {
        if self.vips.update(&self.services) {
            self.publish_vips(None);
        }
    }

    /// Recomputes the resources of `keys` (dropping those of services that
    /// no longer exist) and re-publishes every proxy subscribed to one whose
    /// version changed.
    fn recompute_services(&mut self, keys: BTreeSet<ServiceKey>) {
        let mut changed = BTreeSet::new();
        for key in keys {
            let next = self.services.get(&key).map(|svc| {
                let mut eps = self.workloads.endpoints_of(svc);
                if let Some(more) = self.source_endpoints.get(&key) {
                    eps.extend(more.iter().cloned());
                    eps.sort();
                    eps.dedup();
                }
                view::service_resources(
                    svc,
                    eps,
                    self.policies.get(&key),
                    self.routes.get(&key).map(Vec::as_slice),
                )
            });
            let same = match (self.resources.get(&key), &next) {
                (Some(a), Some(b)) => a.same_versions(b),
                (None, None) => true,
                _ => false,
            };
            match next {
                Some(res) => {
                    self.resources.insert(key.clone(), res);
                }
                None => {
                    self.resources.remove(&key);
                }
            }
            if !same {
                changed.insert(key);
            }
        }
        if changed.is_empty() {
            return;
        }
        let mut conns: BTreeMap<ConnId, BTreeSet<ServiceKey>> = BTreeMap::new();
        for key in &changed {
            for conn in self.subscribers.get(key).into_iter().flatten() {
                conns.entry(*conn).or_default().insert(key.clone());
            }
        }
        for (conn, keys) in conns {
            self.update_view(conn, &keys);
        }
    }

    /// Puts the current trust bundle in every view.
    fn publish_trust_bundle(&mut self) {
        for proxy in self.proxies.values() {
            put(&proxy.tx, &self.trust_bundle);
        }
    }

    /// Puts the VIP table of its scope in the view of one proxy (or all).
    fn publish_vips(&mut self, only: Option<ConnId>) {
        for (conn, proxy) in &self.proxies {
            if only.is_none_or(|c| c == *conn) {
                put(&proxy.tx, &self.vips.get(&proxy.visible));
            }
        }
    }

    /// Brings the resources of `keys` in one proxy's view up to date: those
    /// of a subscribed service (or NotFound), none for an unsubscribed one.
    /// The view is changed in place; the stream task holds no reference to
    /// it between pushes, so this does not copy the whole view.
    fn update_view(&mut self, conn: ConnId, keys: &BTreeSet<ServiceKey>) {
        let Some(proxy) = self.proxies.get(&conn) else {
            return;
        };
        let resources = &self.resources;
        proxy.tx.send_if_modified(|cur| {
            let mut changed = false;
            for key in keys {
                // Out of scope reads exactly as not existing, so a proxy
                // cannot tell the two apart.
                let found = resources
                    .get(key)
                    .filter(|_| proxy.visible.contains(key.namespace()));
                let wanted: Vec<Arc<Resource>> = if !proxy.subscriptions.contains(key) {
                    Vec::new()
                } else if let Some(res) = found {
                    res.all().cloned().collect()
                } else {
                    vec![view::resource(
                        ResourceKey::service(key),
                        ResourceBody::NotFound,
                    )]
                };
                for rk in view::service_keys(key) {
                    let next = wanted.iter().find(|r| r.key == rk);
                    let now = cur.resources.get(&rk);
                    if now.map(|r| &r.version) == next.map(|r| &r.version) {
                        continue;
                    }
                    let view = Arc::make_mut(cur);
                    match next {
                        Some(r) => view.resources.insert(rk, r.clone()),
                        None => view.resources.remove(&rk),
                    };
                    changed = true;
                }
            }
            changed
        });
    }
}

/// Puts `r` in a view unless it already holds that version.
fn put(tx: &watch::Sender<Arc<ProxyView>>, r: &Arc<Resource>) {
    tx.send_if_modified(|cur| {
        if cur.resources.get(&r.key).map(|c| &c.version) == Some(&r.version) {
            return false;
        }
        Arc::make_mut(cur)
            .resources
            .insert(r.key.clone(), r.clone());
        true
    });
}

/// The index shared between the sources and the gRPC streams. The lock is
/// only held for synchronous updates, never across an await.
#[derive(Clone, Default)]
pub struct SharedIndex(Arc<Mutex<Index>>);

impl SharedIndex {
    pub fn new(index: Index) -> Self {
        Self(Arc::new(Mutex::new(index)))
    }

    /// Locks the index. A panic while holding the lock cannot leave the
    /// index half-updated in a way later calls would misread (every update
    /// recomputes views from the maps), so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, Index> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
