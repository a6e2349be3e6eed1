//! The cluster as the watchers last saw it: Services, EndpointSlices and
//! meshed Pods, and from them each service's mesh view. Pure and
//! synchronous: every change returns the services it may have altered, and
//! [`Cluster::service_view`] says what the index should hold for one.
//!
//! Identities come from each endpoint's Pod (its service account); an
//! address whose Pod is unknown or runs no proxy is not a mesh endpoint.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1 as core;
use mycel_api::spiffe::SpiffeId;

use super::convert::{self, PodInfo, Slice, Strictness};
use crate::model::{Endpoint, Service, ServiceKey};

/// `(namespace, name)` of an object.
pub type ObjKey = (String, String);

/// Settings the cluster view needs from the mesh.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub trust_domain: String,
    /// The port every injected proxy serves mTLS on.
    pub mesh_port: u16,
}

#[derive(Debug)]
pub struct Cluster {
    settings: ClusterSettings,
    services: BTreeMap<ServiceKey, core::Service>,
    slices: BTreeMap<ObjKey, Slice>,
    slices_of: BTreeMap<ServiceKey, BTreeSet<ObjKey>>,
    pods: BTreeMap<ObjKey, PodInfo>,
    /// Pod → services whose slices name it (with how many slices do), so a
    /// Pod change touches only its own services.
    pod_refs: BTreeMap<ObjKey, BTreeMap<ServiceKey, usize>>,
}

/// What the index should hold for one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceView {
    /// `None`: the Service is gone (or unusable) and is deleted.
    pub service: Option<Service>,
    pub endpoints: Vec<Endpoint>,
}

impl Cluster {
    pub fn new(settings: ClusterSettings) -> Self {
        Self {
            settings,
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            slices_of: BTreeMap::new(),
            pods: BTreeMap::new(),
            pod_refs: BTreeMap::new(),
        }
    }

    /// Adds or replaces a Service; `None` if it has no name or namespace.
    pub fn apply_service(&mut self, svc: core::Service) -> Option<ServiceKey> {
        let key = service_key(&svc.metadata)?;
        self.services.insert(key.clone(), svc);
        Some(key)
    }

    pub fn delete_service(&mut self, key: &ObjKey) -> Option<ServiceKey> {
        let key = ServiceKey::new(&key.1, &key.0).ok()?;
        self.services.remove(&key).map(|_| key)
    }

    /// Adds or replaces an EndpointSlice; returns the services it was and
    /// is part of.
    pub fn apply_slice(&mut self, key: ObjKey, slice: Option<Slice>) -> BTreeSet<ServiceKey> {
        let mut affected = self.remove_slice(&key);
        if let Some(slice) = slice {
            affected.insert(slice.service.clone());
            self.slices_of
                .entry(slice.service.clone())
                .or_default()
                .insert(key.clone());
            for pod in slice.endpoints.iter().filter_map(|e| e.pod.clone()) {
                *self
                    .pod_refs
                    .entry(pod)
                    .or_default()
                    .entry(slice.service.clone())
                    .or_default() += 1;
            }
            self.slices.insert(key, slice);
        }
        affected
    }

    pub fn delete_slice(&mut self, key: &ObjKey) -> BTreeSet<ServiceKey> {
        self.remove_slice(key)
    }

    fn remove_slice(&mut self, key: &ObjKey) -> BTreeSet<ServiceKey> {
        let Some(old) = self.slices.remove(key) else {
            return BTreeSet::new();
        };
        if let Some(set) = self.slices_of.get_mut(&old.service) {
            set.remove(key);
            if set.is_empty() {
                self.slices_of.remove(&old.service);
            }
        }
        for pod in old.endpoints.iter().filter_map(|e| e.pod.as_ref()) {
            if let Some(refs) = self.pod_refs.get_mut(pod) {
                if let Some(n) = refs.get_mut(&old.service) {
                    *n -= 1;
                    if *n == 0 {
                        refs.remove(&old.service);
                    }
                }
                if refs.is_empty() {
                    self.pod_refs.remove(pod);
                }
            }
        }
        BTreeSet::from([old.service])
    }

    /// Adds or replaces a Pod; returns the services whose endpoints name it
    /// (nothing when what the mesh reads from it did not change).
    pub fn apply_pod(&mut self, key: ObjKey, pod: PodInfo) -> BTreeSet<ServiceKey> {
        if self.pods.get(&key) == Some(&pod) {
            return BTreeSet::new();
        }
        self.pods.insert(key.clone(), pod);
        self.services_of_pod(&key)
    }

    pub fn delete_pod(&mut self, key: &ObjKey) -> BTreeSet<ServiceKey> {
        match self.pods.remove(key) {
            Some(_) => self.services_of_pod(key),
            None => BTreeSet::new(),
        }
    }

    fn services_of_pod(&self, key: &ObjKey) -> BTreeSet<ServiceKey> {
        self.pod_refs
            .get(key)
            .map(|refs| refs.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Keys of the objects of each kind, for a re-list to drop what it no
    /// longer saw.
    pub fn service_keys(&self) -> Vec<ObjKey> {
        self.services
            .keys()
            .map(|k| (k.namespace().to_string(), k.name().to_string()))
            .collect()
    }

    pub fn slice_keys(&self) -> Vec<ObjKey> {
        self.slices.keys().cloned().collect()
    }

    pub fn pod_keys(&self) -> Vec<ObjKey> {
        self.pods.keys().cloned().collect()
    }

    /// The mesh view of one service, computed from scratch, so that the
    /// result after any sequence of events equals a fresh start's.
    pub fn service_view(&self, key: &ServiceKey) -> ServiceView {
        let Some(raw) = self.services.get(key) else {
            return ServiceView {
                service: None,
                endpoints: Vec::new(),
            };
        };
        let slices: Vec<&Slice> = self
            .slices_of
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.get(k))
            .collect();
        let mut named_targets = BTreeMap::new();
        for s in &slices {
            for (name, port) in &s.target_ports {
                named_targets.entry(name.clone()).or_insert(*port);
            }
        }
        let service = match convert::service(raw, Strictness::Cluster, &named_targets) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(service = %key, error = %e, "service not usable by the mesh");
                return ServiceView {
                    service: None,
                    endpoints: Vec::new(),
                };
            }
        };
        // Like registered workloads, only ready endpoints are sent: a
        // terminating Pod gets no new requests. One address may sit in two
        // slices while the endpoint controller moves it: it counts once.
        let mut by_address: BTreeMap<String, Endpoint> = BTreeMap::new();
        for ep in slices.iter().flat_map(|s| &s.endpoints) {
            if !ep.ready || ep.terminating {
                continue;
            }
            let Some(pod_key) = &ep.pod else { continue };
            let Some(pod) = self.pods.get(pod_key).filter(|p| p.meshed) else {
                continue;
            };
            let Ok(identity) = SpiffeId::new(
                &self.settings.trust_domain,
                &pod_key.0,
                &pod.service_account,
            ) else {
                continue;
            };
            by_address.entry(ep.address.clone()).or_insert(Endpoint {
                address: ep.address.clone(),
                mesh_port: self.settings.mesh_port,
                spiffe_id: identity.to_string(),
                workload: pod_key.1.clone(),
                zone: ep.zone.clone(),
                weight: 1,
                ready: true,
            });
        }
        ServiceView {
            service: Some(service),
            endpoints: by_address.into_values().collect(),
        }
    }
}

fn service_key(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<ServiceKey> {
    ServiceKey::new(meta.name.as_deref()?, meta.namespace.as_deref()?).ok()
}

/// `(namespace, name)` of an object's metadata, if it has both.
pub fn obj_key(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<ObjKey> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}
