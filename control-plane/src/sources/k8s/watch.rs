//! The watchers: Services, EndpointSlices and meshed Pods from the API
//! server into [`Cluster`], `TrafficPolicy` objects into [`Policies`],
//! `AuthorizationPolicy` and `PeerAuthentication` objects into
//! [`PolicyObjects`] (and the index), `GatewayPolicy` objects into
//! [`GatewayPolicies`] (which routes copy in),
//! HTTPRoutes and GRPCRoutes into [`Routes`], Gateways and GatewayClasses
//! into [`Gateways`], and each changed service's view, policy and routes,
//! and the routes of each of our Gateways, into the index. Policy and route statuses go to
//! their writer tasks ([`policies::write`], [`routes::write`], which also
//! writes Gateway and GatewayClass statuses) once
//! everything is listed: before, a Service not yet seen would read as
//! missing. A kind whose CRD is not installed (TrafficPolicy, GatewayPolicy,
//! or the Gateway API's kinds) counts as listed and empty, so a cluster without
//! the Gateway API runs with no routes and no Gateways.
//!
//! kube-runtime's watcher re-lists after a restart (a dropped watch, an
//! expired resource version, a controller restart): the objects of a
//! re-list arrive between `Init` and `InitDone`, and whatever the cluster
//! view held that the re-list did not show was deleted meanwhile.

use std::collections::BTreeSet;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use mycel_crds::authorization_policy::AuthorizationPolicyStatus;
use mycel_crds::gateway_api::gatewayclasses::GatewayClass;
use mycel_crds::gateway_api::gateways::Gateway;
use mycel_crds::gateway_api::grpcroutes::GrpcRoute;
use mycel_crds::gateway_api::httproutes::HttpRoute;
use mycel_crds::{AuthorizationPolicy, GatewayPolicy, PeerAuthentication, TrafficPolicy};
use tokio::sync::{mpsc, watch};

use super::authz::{self, AuthzPolicies, PeerAuthPolicies, PolicyObject, PolicyObjects};
use super::cluster::{obj_key, Cluster, ObjKey};
use super::convert;
use super::gateway_policies::{self, GatewayPolicies};
use super::gateways::{self, Gateways};
use super::policies::{self, write::StatusUpdate, Policies};
use super::routes::{self, PolicyLookup, Routes};
use super::tls_secrets::TlsSecrets;
use crate::index::SharedIndex;
use crate::model::ServiceKey;
use crate::routes::{PolicyFault, RouteKind};

/// Label the injector puts on every Pod it gave a proxy; the Pod watch
/// selects on it, so the controller holds meshed Pods only.
pub const MESHED_LABEL: &str = "mycel.io/meshed";

// One event at a time moves through here; boxing would only add an
// allocation per event.
#[allow(clippy::large_enum_variant)]
enum Change {
    Service(Event<Service>),
    Slice(Event<EndpointSlice>),
    Pod(Event<Pod>),
    Policy(Event<DynamicObject>),
    Route(RouteKind, Event<DynamicObject>),
    Gateway(Event<DynamicObject>),
    Class(Event<DynamicObject>),
    Authz(Event<DynamicObject>),
    PeerAuth(Event<DynamicObject>),
    GatewayPolicy(Event<DynamicObject>),
    TlsSecret(Event<Secret>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Service,
    Slice,
    Pod,
    Policy,
    HttpRoute,
    GrpcRoute,
    Gateway,
    GatewayClass,
    Authz,
    PeerAuth,
    GatewayPolicy,
    TlsSecret,
}

impl Kind {
    fn of_route(kind: RouteKind) -> Self {
        match kind {
            RouteKind::Http => Kind::HttpRoute,
            RouteKind::Grpc => Kind::GrpcRoute,
        }
    }

    /// A kind served by a CRD that may not be installed.
    fn optional(self) -> Option<&'static str> {
        match self {
            Kind::Policy => {
                Some("TrafficPolicy CRD not installed; traffic policies are followed once it is")
            }
            Kind::HttpRoute => {
                Some("Gateway API HTTPRoute CRD not installed; HTTPRoutes are followed once it is")
            }
            Kind::GrpcRoute => {
                Some("Gateway API GRPCRoute CRD not installed; GRPCRoutes are followed once it is")
            }
            Kind::Gateway => {
                Some("Gateway API Gateway CRD not installed; Gateways are followed once it is")
            }
            Kind::GatewayClass => Some(
                "Gateway API GatewayClass CRD not installed; GatewayClasses are followed once it is",
            ),
            Kind::Authz => Some(
                "AuthorizationPolicy CRD not installed; authorization policies are followed once it is",
            ),
            Kind::PeerAuth => Some(
                "PeerAuthentication CRD not installed; peer authentication policies are followed once it is",
            ),
            Kind::GatewayPolicy => Some(
                "GatewayPolicy CRD not installed; gateway policies are followed once it is",
            ),
            Kind::Service | Kind::Slice | Kind::Pod | Kind::TlsSecret => None,
        }
    }
}

/// Every kind the controller lists before it is ready.
const KINDS: usize = 12;

/// A watch that failed, and of which kind.
struct Failure {
    kind: Kind,
    error: watcher::Error,
}

impl Failure {
    /// The API server does not serve the kind: its CRD is not installed
    /// (yet). Its watch keeps retrying meanwhile. The code,
    /// not the reason: for a path it does not serve the API server answers
    /// a plain `404 page not found`, not a `Status` with reason NotFound.
    fn kind_not_served(&self) -> bool {
        matches!(
            &self.error,
            watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404
        )
    }
}

/// Keys seen during a re-list of each kind, `None` outside one.
#[derive(Default)]
struct Relist {
    services: Option<BTreeSet<ObjKey>>,
    slices: Option<BTreeSet<ObjKey>>,
    pods: Option<BTreeSet<ObjKey>>,
    policies: Option<BTreeSet<ObjKey>>,
    http_routes: Option<BTreeSet<ObjKey>>,
    grpc_routes: Option<BTreeSet<ObjKey>>,
    gateways: Option<BTreeSet<ObjKey>>,
    classes: Option<BTreeSet<ObjKey>>,
    authz: Option<BTreeSet<ObjKey>>,
    peer_auth: Option<BTreeSet<ObjKey>>,
    gateway_policies: Option<BTreeSet<ObjKey>>,
    tls_secrets: Option<BTreeSet<ObjKey>>,
}

impl Relist {
    fn slot(&mut self, kind: Kind) -> &mut Option<BTreeSet<ObjKey>> {
        match kind {
            Kind::Service => &mut self.services,
            Kind::Slice => &mut self.slices,
            Kind::Pod => &mut self.pods,
            Kind::Policy => &mut self.policies,
            Kind::HttpRoute => &mut self.http_routes,
            Kind::GrpcRoute => &mut self.grpc_routes,
            Kind::Gateway => &mut self.gateways,
            Kind::GatewayClass => &mut self.classes,
            Kind::Authz => &mut self.authz,
            Kind::PeerAuth => &mut self.peer_auth,
            Kind::GatewayPolicy => &mut self.gateway_policies,
            Kind::TlsSecret => &mut self.tls_secrets,
        }
    }
}

/// Where the watch sends the statuses it wants written, one writer task
/// per kind.
pub struct StatusSinks {
    pub policies: mpsc::UnboundedSender<StatusUpdate>,
    pub routes: mpsc::UnboundedSender<routes::write::StatusUpdate>,
    pub authz: mpsc::UnboundedSender<StatusUpdate<AuthorizationPolicyStatus>>,
    /// PeerAuthentication statuses (the same shape).
    pub peer_auth: mpsc::UnboundedSender<StatusUpdate<AuthorizationPolicyStatus>>,
    /// GatewayPolicy statuses (the same shape).
    pub gateway_policies: mpsc::UnboundedSender<StatusUpdate<AuthorizationPolicyStatus>>,
}

/// Runs the watchers until `shutdown`. `synced` turns true once every kind
/// has been listed once (the controller is ready to serve from the cluster;
/// TrafficPolicies count as listed while their CRD is not installed).
/// Statuses to write go to `sinks` (AuthorizationPolicy, PeerAuthentication
/// and GatewayPolicy statuses at once, since they depend on the object
/// alone; the others once every kind is listed).
pub async fn run(
    client: Client,
    mut cluster: Cluster,
    index: SharedIndex,
    sinks: StatusSinks,
    synced: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let tag = |kind| move |e: watcher::Error| Failure { kind, error: e };
    let services = changes(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .map(move |e| e.map(Change::Service).map_err(tag(Kind::Service)));
    let slices = changes(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(convert::SERVICE_NAME_LABEL),
    )
    .map(move |e| e.map(Change::Slice).map_err(tag(Kind::Slice)));
    let pods = changes(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().labels(MESHED_LABEL),
    )
    .map(move |e| e.map(Change::Pod).map_err(tag(Kind::Pod)));
    let policy_objects = changes(
        Api::<DynamicObject>::all_with(client.clone(), &ApiResource::erase::<TrafficPolicy>(&())),
        watcher::Config::default(),
    )
    .map(move |e| e.map(Change::Policy).map_err(tag(Kind::Policy)));
    let http_routes = changes(
        Api::<DynamicObject>::all_with(client.clone(), &ApiResource::erase::<HttpRoute>(&())),
        watcher::Config::default(),
    )
    .map(move |e| {
        e.map(|e| Change::Route(RouteKind::Http, e))
            .map_err(tag(Kind::HttpRoute))
    });
    let grpc_routes = changes(
        Api::<DynamicObject>::all_with(client.clone(), &ApiResource::erase::<GrpcRoute>(&())),
        watcher::Config::default(),
    )
    .map(move |e| {
        e.map(|e| Change::Route(RouteKind::Grpc, e))
            .map_err(tag(Kind::GrpcRoute))
    });
    let gateway_objects = changes(
        Api::<DynamicObject>::all_with(client.clone(), &ApiResource::erase::<Gateway>(&())),
        watcher::Config::default(),
    )
    .map(move |e| e.map(Change::Gateway).map_err(tag(Kind::Gateway)));
    let authz_objects = changes(
        Api::<DynamicObject>::all_with(
            client.clone(),
            &ApiResource::erase::<AuthorizationPolicy>(&()),
        ),
        watcher::Config::default(),
    )
    .map(move |e| e.map(Change::Authz).map_err(tag(Kind::Authz)));
    let peer_auth_objects = changes(
        Api::<DynamicObject>::all_with(
            client.clone(),
            &ApiResource::erase::<PeerAuthentication>(&()),
        ),
        watcher::Config::default(),
    )
    .map(move |e| e.map(Change::PeerAuth).map_err(tag(Kind::PeerAuth)));
    let gateway_policy_objects = changes(
        Api::<DynamicObject>::all_with(client.clone(), &ApiResource::erase::<GatewayPolicy>(&())),
        watcher::Config::default(),
    )
    .map(move |e| {
        e.map(Change::GatewayPolicy)
            .map_err(tag(Kind::GatewayPolicy))
    });
    // Only the Secrets HTTPS listeners can name: the selector keeps every
    // other Secret (and its data) out of the controller.
    let tls_secrets = changes(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default().fields(&format!(
            "type={}",
            crate::routes::gateway::certificates::TLS_SECRET_TYPE
        )),
    )
    .map(move |e| e.map(Change::TlsSecret).map_err(tag(Kind::TlsSecret)));
    let classes = changes(
        Api::<DynamicObject>::all_with(client, &ApiResource::erase::<GatewayClass>(&())),
        watcher::Config::default(),
    )
    .map(move |e| {
        e.map(|e| Change::Class(e.modify(cluster_scoped)))
            .map_err(tag(Kind::GatewayClass))
    });
    let mut events = futures::stream::select_all([
        services.boxed(),
        slices.boxed(),
        pods.boxed(),
        policy_objects.boxed(),
        http_routes.boxed(),
        grpc_routes.boxed(),
        gateway_objects.boxed(),
        classes.boxed(),
        authz_objects.boxed(),
        peer_auth_objects.boxed(),
        gateway_policy_objects.boxed(),
        tls_secrets.boxed(),
    ]);
    let mut authz_store = AuthzPolicies::default();
    let mut peer_auth_store = PeerAuthPolicies::default();
    let mut policies = Policies::default();
    let mut gateway_policy_store = gateway_policies::store();
    let mut route_store = Routes::default();
    let mut gateway_store = Gateways::default();
    let mut tls_secret_store = TlsSecrets::default();
    let mut outcome = gateways::Outcome::default();
    let mut relist = Relist::default();
    let mut listed: BTreeSet<Kind> = BTreeSet::new();
    let mut crd_missing_logged: BTreeSet<Kind> = BTreeSet::new();
    loop {
        let next = tokio::select! {
            next = events.next() => next,
            _ = shutdown.changed() => return,
        };
        let Some(next) = next else { return };
        let was_synced = listed.len() == KINDS;
        // Whether route statuses may have changed: their Services, the
        // policies they name or the routes themselves.
        let mut routes_touched = false;
        let (kind, affected, touched) = match next {
            Ok(Change::Policy(e)) => {
                let touched = match &e {
                    Event::Apply(o) | Event::InitApply(o) | Event::Delete(o) => {
                        obj_key(&o.metadata)
                    }
                    Event::Init | Event::InitDone => None,
                };
                let (kind, affected) = apply_policy(&mut policies, &mut relist, e);
                publish_policies(&policies, &index, &affected);
                let (faults, gateway) = lookups(&policies, &gateway_policy_store);
                let parents = route_store.reconvert(PolicyLookup {
                    faults: &faults,
                    gateway_policies: &gateway,
                });
                publish_routes(&route_store, &index, &parents);
                routes_touched = true;
                (kind, affected, touched)
            }
            Ok(Change::Route(route_kind, e)) => {
                let (faults, gateway) = lookups(&policies, &gateway_policy_store);
                let lookup = PolicyLookup {
                    faults: &faults,
                    gateway_policies: &gateway,
                };
                let (kind, parents) =
                    apply_route(&mut route_store, lookup, &mut relist, route_kind, e);
                publish_routes(&route_store, &index, &parents);
                routes_touched = true;
                (kind, BTreeSet::new(), None)
            }
            Ok(Change::Gateway(e)) => {
                routes_touched = true;
                (
                    apply_gateway(&mut gateway_store, &mut relist, e),
                    BTreeSet::new(),
                    None,
                )
            }
            Ok(Change::Authz(e)) => {
                // A policy's status depends on the object alone: written
                // at once, without waiting for the other kinds' lists.
                let touched = match &e {
                    Event::Apply(o) | Event::InitApply(o) => obj_key(&o.metadata),
                    _ => None,
                };
                let kind = apply_policy_object(
                    &mut authz_store,
                    &mut relist,
                    Kind::Authz,
                    e,
                    authz::read,
                    |name, p| index.lock().set_authz_policy(name, p),
                );
                send_policy_statuses(&authz_store, touched, &sinks.authz);
                (kind, BTreeSet::new(), None)
            }
            Ok(Change::PeerAuth(e)) => {
                let touched = match &e {
                    Event::Apply(o) | Event::InitApply(o) => obj_key(&o.metadata),
                    _ => None,
                };
                let kind = apply_policy_object(
                    &mut peer_auth_store,
                    &mut relist,
                    Kind::PeerAuth,
                    e,
                    authz::read_peer_auth,
                    |name, p| index.lock().set_peer_auth_policy(name, p),
                );
                send_policy_statuses(&peer_auth_store, touched, &sinks.peer_auth);
                (kind, BTreeSet::new(), None)
            }
            Ok(Change::GatewayPolicy(e)) => {
                let touched = match &e {
                    Event::Apply(o) | Event::InitApply(o) => obj_key(&o.metadata),
                    _ => None,
                };
                // Nothing of it goes to the index on its own: routes copy
                // it in, so they are converted again.
                let kind = apply_policy_object(
                    &mut gateway_policy_store,
                    &mut relist,
                    Kind::GatewayPolicy,
                    e,
                    gateway_policies::read,
                    |_, _| {},
                );
                send_policy_statuses(&gateway_policy_store, touched, &sinks.gateway_policies);
                let (faults, gateway) = lookups(&policies, &gateway_policy_store);
                let parents = route_store.reconvert(PolicyLookup {
                    faults: &faults,
                    gateway_policies: &gateway,
                });
                publish_routes(&route_store, &index, &parents);
                routes_touched = true;
                (kind, BTreeSet::new(), None)
            }
            Ok(Change::TlsSecret(e)) => {
                let (kind, changed) = apply_tls_secret(&mut tls_secret_store, &mut relist, e);
                // Gateways' certificates and listener statuses follow.
                routes_touched = changed;
                (kind, BTreeSet::new(), None)
            }
            Ok(Change::Class(e)) => {
                routes_touched = true;
                (
                    apply_class(&mut gateway_store, &mut relist, e),
                    BTreeSet::new(),
                    None,
                )
            }
            Ok(change) => {
                routes_touched = matches!(change, Change::Service(_));
                if let Change::Pod(e) = &change {
                    publish_pod_labels(&index, e);
                }
                let (kind, affected) = apply(&mut cluster, &mut relist, change);
                publish(&cluster, &index, affected.clone());
                (kind, affected, None)
            }
            Err(f) if f.kind_not_served() && f.kind.optional().is_some() => {
                if crd_missing_logged.insert(f.kind) {
                    tracing::info!("{}", f.kind.optional().unwrap_or_default());
                }
                (Some(f.kind), BTreeSet::new(), None)
            }
            Err(f) => {
                // The backoff in `changes` retries; the view stays as it was.
                tracing::warn!(error = %f.error, kind = ?f.kind, "kubernetes watch failed; retrying");
                continue;
            }
        };
        if routes_touched {
            // Recomputed whole: a Gateway, its class, a route or a
            // Service may each change what a Gateway serves, and the
            // index pushes only the Gateways whose routes changed.
            outcome = routes::attach_gateways(&cluster, &route_store, &gateway_store);
            let (certificates, unresolved) = gateway_store.certificates(&tls_secret_store);
            outcome.unresolved = unresolved;
            let mut ix = index.lock();
            ix.apply_gateways(outcome.routes.clone());
            ix.apply_gateway_certificates(certificates);
        }
        if let Some(kind) = kind {
            listed.insert(kind);
            if listed.len() == KINDS {
                synced.send_if_modified(|s| !std::mem::replace(s, true));
            }
        }
        if listed.len() < KINDS {
            continue;
        }
        // Statuses wait for every list: a policy whose Service is not
        // listed yet would be written TargetNotFound, then Accepted.
        let keys: BTreeSet<ObjKey> = if was_synced {
            policies
                .on_services(&affected)
                .into_iter()
                .chain(touched)
                .collect()
        } else {
            policies.keys().into_iter().collect()
        };
        send_statuses(&cluster, &policies, keys, &sinks.policies);
        if routes_touched || !was_synced {
            routes::send_statuses(
                &cluster,
                &route_store,
                &gateway_store,
                &outcome,
                &sinks.routes,
            );
        }
    }
}

/// TrafficPolicy faults as routes' `ExtensionRef`s read them.
fn faults(policies: &Policies) -> impl Fn(&str, &str) -> PolicyFault + '_ {
    |namespace, name| policies.fault(&(namespace.to_string(), name.to_string()))
}

/// What a [`PolicyLookup`] borrows: the TrafficPolicy faults and the
/// GatewayPolicies, by namespace and name.
fn lookups<'a>(
    policies: &'a Policies,
    gateway_policy_store: &'a GatewayPolicies,
) -> (
    impl Fn(&str, &str) -> PolicyFault + 'a,
    impl Fn(&str, &str) -> Option<mycel_crds::GatewayPolicySpec> + 'a,
) {
    (
        faults(policies),
        gateway_policies::lookup(gateway_policy_store),
    )
}

/// Applies one route event; returns the kind whose re-list just finished
/// (if it did) and the parents whose routes may have changed.
fn apply_route(
    store: &mut Routes,
    lookup: PolicyLookup<'_>,
    relist: &mut Relist,
    kind: RouteKind,
    event: Event<DynamicObject>,
) -> (Option<Kind>, BTreeSet<ServiceKey>) {
    on_event(
        store,
        relist,
        Kind::of_route(kind),
        event,
        |s, o| match routes::object::read(kind, &o) {
            Some(obj) => {
                let key = (obj.key.1.clone(), obj.key.2.clone());
                (Some(key), s.apply(obj, lookup))
            }
            None => (None, BTreeSet::new()),
        },
        |s, (ns, name)| s.delete(&(kind, ns.clone(), name.clone())),
        |s| {
            s.keys()
                .into_iter()
                .filter(|k| k.0 == kind)
                .map(|(_, ns, name)| (ns, name))
                .collect()
        },
    )
}

/// Puts the routes of each affected parent into the index.
fn publish_routes(store: &Routes, index: &SharedIndex, parents: &BTreeSet<ServiceKey>) {
    if parents.is_empty() {
        return;
    }
    let mut index = index.lock();
    for parent in parents {
        index.set_routes(parent, store.routes_of(parent));
    }
}

fn changes<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    watcher::watcher(api, config).default_backoff()
}

/// Applies one TrafficPolicy event; returns the kind whose re-list just
/// finished (if it did) and the services whose policy may have changed.
fn apply_policy(
    policies: &mut Policies,
    relist: &mut Relist,
    event: Event<DynamicObject>,
) -> (Option<Kind>, BTreeSet<ServiceKey>) {
    on_event(
        policies,
        relist,
        Kind::Policy,
        event,
        |p, o| match policies::object::read(&o) {
            Some(obj) => {
                let key = obj.key.clone();
                (Some(key), p.apply(obj))
            }
            None => (None, BTreeSet::new()),
        },
        |p, k| p.delete(k),
        Policies::keys,
    )
}

/// Applies one watch event; returns the kind whose re-list just finished
/// (if it did) and the services to re-publish.
fn apply(
    cluster: &mut Cluster,
    relist: &mut Relist,
    change: Change,
) -> (Option<Kind>, BTreeSet<ServiceKey>) {
    match change {
        Change::Service(e) => on_event(
            cluster,
            relist,
            Kind::Service,
            e,
            |c, s| {
                let key = obj_key(&s.metadata);
                let affected = c.apply_service(s).into_iter().collect();
                (key, affected)
            },
            |c, k| c.delete_service(k).into_iter().collect(),
            Cluster::service_keys,
        ),
        Change::Slice(e) => on_event(
            cluster,
            relist,
            Kind::Slice,
            e,
            |c, s| match obj_key(&s.metadata) {
                Some(key) => {
                    let affected = c.apply_slice(key.clone(), convert::slice(&s));
                    (Some(key), affected)
                }
                None => (None, BTreeSet::new()),
            },
            |c, k| c.delete_slice(k),
            Cluster::slice_keys,
        ),
        // Policies, routes and Gateways are not part of the cluster view
        // (see `apply_policy`, `apply_route`, `apply_gateway`).
        Change::Policy(_)
        | Change::Route(..)
        | Change::Gateway(_)
        | Change::Class(_)
        | Change::Authz(_)
        | Change::PeerAuth(_)
        | Change::GatewayPolicy(_)
        | Change::TlsSecret(_) => (None, BTreeSet::new()),
        Change::Pod(e) => on_event(
            cluster,
            relist,
            Kind::Pod,
            e,
            |c, p| match obj_key(&p.metadata) {
                Some(key) => {
                    let affected = c.apply_pod(key.clone(), convert::pod(&p));
                    (Some(key), affected)
                }
                None => (None, BTreeSet::new()),
            },
            |c, k| c.delete_pod(k),
            Cluster::pod_keys,
        ),
    }
}

type Applied = (Option<ObjKey>, BTreeSet<ServiceKey>);

fn on_event<S, K: kube::Resource>(
    cluster: &mut S,
    relist: &mut Relist,
    kind: Kind,
    event: Event<K>,
    apply: impl Fn(&mut S, K) -> Applied,
    delete: impl Fn(&mut S, &ObjKey) -> BTreeSet<ServiceKey>,
    keys: impl Fn(&S) -> Vec<ObjKey>,
) -> (Option<Kind>, BTreeSet<ServiceKey>) {
    match event {
        Event::Apply(obj) => (None, apply(cluster, obj).1),
        Event::Delete(obj) => match obj_key(obj.meta()) {
            Some(k) => (None, delete(cluster, &k)),
            None => (None, BTreeSet::new()),
        },
        Event::Init => {
            *relist.slot(kind) = Some(BTreeSet::new());
            (None, BTreeSet::new())
        }
        Event::InitApply(obj) => {
            let (key, affected) = apply(cluster, obj);
            if let (Some(seen), Some(key)) = (relist.slot(kind).as_mut(), key) {
                seen.insert(key);
            }
            (None, affected)
        }
        Event::InitDone => {
            let seen = relist.slot(kind).take().unwrap_or_default();
            let mut affected = BTreeSet::new();
            for gone in keys(cluster).into_iter().filter(|k| !seen.contains(k)) {
                affected.extend(delete(cluster, &gone));
            }
            (Some(kind), affected)
        }
    }
}

/// A Pod's labels choose the authorization policies of its sidecar, its
/// `mycel.io/discovery-namespaces` annotation its discovery scope. A Pod
/// gone while the watch was down keeps its entry until a Pod of that name
/// comes again (its sidecar is gone too, so nothing reads it).
fn publish_pod_labels(index: &SharedIndex, event: &Event<Pod>) {
    let (pod, gone) = match event {
        Event::Apply(p) | Event::InitApply(p) => (p, false),
        Event::Delete(p) => (p, true),
        Event::Init | Event::InitDone => return,
    };
    let Some((ns, name)) = obj_key(&pod.metadata) else {
        return;
    };
    let labels = (!gone).then(|| pod.metadata.labels.clone().unwrap_or_default());
    // Its annotations may narrow what its proxy discovers (only the one
    // key is kept, so they are not copied).
    let none = std::collections::BTreeMap::new();
    let annotations = (!gone).then(|| pod.metadata.annotations.as_ref().unwrap_or(&none));
    let mut ix = index.lock();
    ix.set_pod_annotations(&ns, &name, annotations);
    ix.set_pod_labels(&ns, &name, labels);
}

/// Puts the current view of each affected service into the index.
fn publish(cluster: &Cluster, index: &SharedIndex, affected: BTreeSet<ServiceKey>) {
    if affected.is_empty() {
        return;
    }
    let mut index = index.lock();
    for key in affected {
        let view = cluster.service_view(&key);
        match view.service {
            Some(svc) => {
                index.apply_service(svc);
                index.set_source_endpoints(&key, view.endpoints);
            }
            None => {
                index.delete_service(&key);
                index.set_source_endpoints(&key, Vec::new());
            }
        }
    }
}

/// Puts the policy of each affected service into the index.
fn publish_policies(policies: &Policies, index: &SharedIndex, affected: &BTreeSet<ServiceKey>) {
    if affected.is_empty() {
        return;
    }
    let mut index = index.lock();
    for key in affected {
        index.set_policy(key, policies.service_policy(key));
    }
}

/// Sends the status each of `keys` should carry (`None` when it already
/// does, or the object is gone, which drops a queued write).
fn send_statuses(
    cluster: &Cluster,
    policies: &Policies,
    keys: BTreeSet<ObjKey>,
    tx: &mpsc::UnboundedSender<StatusUpdate>,
) {
    if keys.is_empty() {
        return;
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let ports = |svc: &ServiceKey| {
        cluster
            .service_view(svc)
            .service
            .map(|s| s.ports.iter().map(|p| p.port).collect())
    };
    for key in keys {
        let status = policies.object(&key).and_then(|obj| {
            let verdict = policies.verdict(&key, ports)?;
            policies::status::desired(&verdict, obj.generation, obj.status.as_ref(), &now)
        });
        // Only a closed writer fails this, at shutdown.
        let _ = tx.send(StatusUpdate { key, status });
    }
}

/// Applies one AuthorizationPolicy or PeerAuthentication event and hands
/// what now applies for a changed object to `publish(name, policy)`;
/// returns the kind whose re-list just finished (if it did).
fn apply_policy_object<T: Clone + PartialEq>(
    store: &mut PolicyObjects<T>,
    relist: &mut Relist,
    kind: Kind,
    event: Event<DynamicObject>,
    read: fn(&DynamicObject) -> Option<PolicyObject<T>>,
    publish: impl Fn(&str, Option<T>),
) -> Option<Kind> {
    let publish = |store: &PolicyObjects<T>, key: &ObjKey| {
        publish(
            &format!("{}/{}", key.0, key.1),
            store.effective(key).cloned(),
        );
    };
    let (kind, _) = on_event(
        store,
        relist,
        kind,
        event,
        |s, o| match read(&o) {
            Some(obj) => {
                let key = obj.key.clone();
                if s.apply(obj) {
                    publish(s, &key);
                }
                (Some(key), BTreeSet::new())
            }
            None => (None, BTreeSet::new()),
        },
        |s, k| {
            if s.delete(k) {
                publish(s, k);
            }
            BTreeSet::new()
        },
        PolicyObjects::keys,
    );
    kind
}

fn send_policy_statuses<T: Clone + PartialEq>(
    store: &PolicyObjects<T>,
    key: Option<ObjKey>,
    tx: &mpsc::UnboundedSender<StatusUpdate<AuthorizationPolicyStatus>>,
) {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    if let Some(key) = key {
        let status = store.desired_status(&key, &now);
        // Only a closed writer fails this, at shutdown.
        let _ = tx.send(StatusUpdate { key, status });
    }
}

mod gateway_kinds;
#[cfg(test)]
mod tests;

use gateway_kinds::{apply_class, apply_gateway, apply_tls_secret, cluster_scoped};
