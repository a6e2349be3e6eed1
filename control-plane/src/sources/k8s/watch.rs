//! The watchers: Services, EndpointSlices and meshed Pods from the API
//! server into [`Cluster`], `TrafficPolicy` objects into [`Policies`], and
//! each changed service's view and policy into the index. Policy statuses
//! go to the writer task ([`policies::write`]) once everything is listed:
//! before, a Service not yet seen would read as missing.
//!
//! kube-runtime's watcher re-lists after a restart (a dropped watch, an
//! expired resource version, a controller restart): the objects of a
//! re-list arrive between `Init` and `InitDone`, and whatever the cluster
//! view held that the re-list did not show was deleted meanwhile.

use std::collections::BTreeSet;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use mycel_crds::TrafficPolicy;
use tokio::sync::{mpsc, watch};

use super::cluster::{obj_key, Cluster, ObjKey};
use super::convert;
use super::policies::{self, write::StatusUpdate, Policies};
use crate::index::SharedIndex;
use crate::model::ServiceKey;

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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Service,
    Slice,
    Pod,
    Policy,
}

/// Every kind the controller lists before it is ready.
const KINDS: usize = 4;

/// A watch that failed, and of which kind.
struct Failure {
    kind: Kind,
    error: watcher::Error,
}

impl Failure {
    /// The API server does not serve the kind: the TrafficPolicy CRD is
    /// not installed (yet). Its watch keeps retrying meanwhile. The code,
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
}

impl Relist {
    fn slot(&mut self, kind: Kind) -> &mut Option<BTreeSet<ObjKey>> {
        match kind {
            Kind::Service => &mut self.services,
            Kind::Slice => &mut self.slices,
            Kind::Pod => &mut self.pods,
            Kind::Policy => &mut self.policies,
        }
    }
}

/// Runs the watchers until `shutdown`. `synced` turns true once every kind
/// has been listed once (the controller is ready to serve from the cluster;
/// TrafficPolicies count as listed while their CRD is not installed).
/// Policy statuses to write go to `statuses`.
pub async fn run(
    client: Client,
    mut cluster: Cluster,
    index: SharedIndex,
    statuses: mpsc::UnboundedSender<StatusUpdate>,
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
        Api::<DynamicObject>::all_with(client, &ApiResource::erase::<TrafficPolicy>(&())),
        watcher::Config::default(),
    )
    .map(move |e| e.map(Change::Policy).map_err(tag(Kind::Policy)));
    let mut events = futures::stream::select_all([
        services.boxed(),
        slices.boxed(),
        pods.boxed(),
        policy_objects.boxed(),
    ]);
    let mut policies = Policies::default();
    let mut relist = Relist::default();
    let mut listed: BTreeSet<Kind> = BTreeSet::new();
    let mut crd_missing_logged = false;
    loop {
        let next = tokio::select! {
            next = events.next() => next,
            _ = shutdown.changed() => return,
        };
        let Some(next) = next else { return };
        let was_synced = listed.len() == KINDS;
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
                (kind, affected, touched)
            }
            Ok(change) => {
                let (kind, affected) = apply(&mut cluster, &mut relist, change);
                publish(&cluster, &index, affected.clone());
                (kind, affected, None)
            }
            Err(f) if f.kind == Kind::Policy && f.kind_not_served() => {
                if !crd_missing_logged {
                    tracing::info!(
                        "TrafficPolicy CRD not installed; traffic policies are followed once it is"
                    );
                    crd_missing_logged = true;
                }
                (Some(Kind::Policy), BTreeSet::new(), None)
            }
            Err(f) => {
                // The backoff in `changes` retries; the view stays as it was.
                tracing::warn!(error = %f.error, kind = ?f.kind, "kubernetes watch failed; retrying");
                continue;
            }
        };
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
        send_statuses(&cluster, &policies, keys, &statuses);
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
        // Policies are not part of the cluster view (see `apply_policy`).
        Change::Policy(_) => (None, BTreeSet::new()),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde_json::json;

    use super::*;
    use crate::sources::k8s::ClusterSettings;

    fn cluster() -> Cluster {
        Cluster::new(ClusterSettings {
            trust_domain: "cluster.local".into(),
            mesh_port: 15006,
        })
    }

    fn slice(name: &str, ip: &str, pod: &str) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": true},
                           "targetRef": {"kind": "Pod", "name": pod, "namespace": "shop"}}],
        }))
        .unwrap()
    }

    fn pod(name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                annotations: Some(BTreeMap::from([(
                    convert::INJECTED_ANNOTATION.to_string(),
                    "true".to_string(),
                )])),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn service() -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"ports": [{"name": "http", "port": 80}]},
        }))
        .unwrap()
    }

    fn feed(c: &mut Cluster, r: &mut Relist, changes: Vec<Change>) -> Vec<Option<Kind>> {
        changes.into_iter().map(|ch| apply(c, r, ch).0).collect()
    }

    fn policy(name: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "mycel.io/v1alpha1", "kind": "TrafficPolicy",
            "metadata": {"name": name, "namespace": "shop", "generation": 1,
                         "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"targetRef": {"kind": "Service", "name": "web"}},
        }))
        .unwrap()
    }

    #[test]
    fn a_policy_relist_drops_policies_deleted_meanwhile() {
        let web = ServiceKey::new("web", "shop").unwrap();
        let mut p = Policies::default();
        let mut r = Relist::default();
        let (_, affected) = apply_policy(&mut p, &mut r, Event::Apply(policy("a")));
        assert_eq!(affected, BTreeSet::from([web.clone()]));
        apply_policy(&mut p, &mut r, Event::Apply(policy("b")));
        // The watch restarts; `a` was deleted meanwhile.
        apply_policy(&mut p, &mut r, Event::Init);
        apply_policy(&mut p, &mut r, Event::InitApply(policy("b")));
        let (done, affected) = apply_policy(&mut p, &mut r, Event::InitDone);
        assert_eq!(done, Some(Kind::Policy));
        assert_eq!(affected, BTreeSet::from([web.clone()]));
        assert_eq!(p.keys(), [("shop".to_string(), "b".to_string())]);
        assert_eq!(p.service_policy(&web).unwrap().sources, ["shop/b"]);
    }

    #[test]
    fn a_relist_drops_what_disappeared_and_equals_a_fresh_start() {
        let key = ServiceKey::new("web", "shop").unwrap();
        let mut c = cluster();
        let mut r = Relist::default();
        feed(
            &mut c,
            &mut r,
            vec![
                Change::Service(Event::Apply(service())),
                Change::Pod(Event::Apply(pod("a"))),
                Change::Pod(Event::Apply(pod("b"))),
                Change::Slice(Event::Apply(slice("s1", "198.18.0.2", "a"))),
                Change::Slice(Event::Apply(slice("s2", "198.18.0.3", "b"))),
            ],
        );
        assert_eq!(c.service_view(&key).endpoints.len(), 2);

        // The watches restart; meanwhile slice s1 and pod a were deleted.
        let done = feed(
            &mut c,
            &mut r,
            vec![
                Change::Slice(Event::Init),
                Change::Slice(Event::InitApply(slice("s2", "198.18.0.3", "b"))),
                Change::Slice(Event::InitDone),
                Change::Pod(Event::Init),
                Change::Pod(Event::InitApply(pod("b"))),
                Change::Pod(Event::InitDone),
            ],
        );
        assert_eq!(done[2], Some(Kind::Slice));
        assert_eq!(done[5], Some(Kind::Pod));

        let mut fresh = cluster();
        let mut fr = Relist::default();
        feed(
            &mut fresh,
            &mut fr,
            vec![
                Change::Service(Event::InitApply(service())),
                Change::Pod(Event::InitApply(pod("b"))),
                Change::Slice(Event::InitApply(slice("s2", "198.18.0.3", "b"))),
            ],
        );
        assert_eq!(c.service_view(&key), fresh.service_view(&key));
        assert_eq!(c.slice_keys(), fresh.slice_keys());
        assert_eq!(c.pod_keys(), fresh.pod_keys());

        // A re-list of services that no longer shows `web` deletes it.
        feed(
            &mut c,
            &mut r,
            vec![
                Change::Service(Event::Init),
                Change::Service(Event::InitDone),
            ],
        );
        assert_eq!(c.service_view(&key).service, None);
    }
}
