//! `TrafficPolicy` objects in Kubernetes mode: the objects the watch saw,
//! and from them each Service's [`ServicePolicy`] and each object's
//! [`Verdict`] (what its `Accepted` condition says). Pure and synchronous,
//! like [`super::Cluster`]: every change returns the services it may have
//! altered, and the caller recomputes only those.
//!
//! The API server's schema refuses most bad specs, but the controller does
//! not trust it (a CRD from an older chart may hold a looser one): every
//! spec is read and checked with [`TrafficPolicySpec::validate`], the rules
//! mesh.yaml is held to. Two policies on one target (the same Service, or
//! the same port of it) do not merge: the oldest (`creationTimestamp`, then
//! name) is applied, the other is `Conflicted`. A policy whose Service is
//! not known is kept (the index holds it until the Service appears) and
//! says `TargetNotFound`. A policy that turns invalid on an update keeps
//! its last valid version applied, as proxies keep their last good config,
//! if that version was the one applied; nothing is kept across a controller
//! restart (the valid version is not stored anywhere).

pub mod object;
pub mod status;
pub mod write;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use mycel_crds::traffic_policy::FieldError;

use super::cluster::ObjKey;
use crate::model::{ServiceKey, ServicePolicy};
use crate::routes::PolicyFault;
pub use object::{PolicyObject, Target, Valid};

/// What a policy's `Accepted` condition reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Applied to its target.
    Accepted { target: Target },
    /// The spec is refused. `kept`: the generation of the previous version,
    /// still applied in its place.
    Invalid {
        error: FieldError,
        kept: Option<i64>,
    },
    /// An older policy (`winner`, `<namespace>/<name>`) has the same target
    /// and is applied instead.
    Conflicted { target: Target, winner: String },
    /// The Service is not known, or (`port_missing`) has no such port.
    TargetNotFound { target: Target, port_missing: bool },
}

#[derive(Clone, Debug)]
struct Entry {
    object: PolicyObject,
    /// While `object.spec` is invalid: the last valid version and its
    /// generation, which stays applied.
    kept: Option<(i64, Valid)>,
}

impl Entry {
    /// The version this policy applies when it wins its target.
    fn effective(&self) -> Option<&Valid> {
        match &self.object.spec {
            Ok(v) => Some(v),
            Err(_) => self.kept.as_ref().map(|(_, v)| v),
        }
    }

    /// Decides conflicts: older first, objects without a creation time
    /// (never from an API server) last, then by name.
    fn rank(
        &self,
    ) -> (
        bool,
        Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
        &ObjKey,
    ) {
        (
            self.object.created.is_none(),
            self.object.created.as_ref(),
            &self.object.key,
        )
    }
}

#[derive(Clone, Debug, Default)]
pub struct Policies {
    entries: BTreeMap<ObjKey, Entry>,
}

impl Policies {
    /// Adds or replaces a policy; returns the services whose policy may
    /// have changed (none when only its status changed).
    pub fn apply(&mut self, object: PolicyObject) -> BTreeSet<ServiceKey> {
        let key = object.key.clone();
        let kept = match &object.spec {
            Ok(_) => None,
            Err(_) => self.applied_version(&key),
        };
        let next = Entry { object, kept };
        let old = self.entries.insert(key, next.clone());
        let before = old.as_ref().map(|e| (e.effective(), &e.object.created));
        if before == Some((next.effective(), &next.object.created)) {
            return BTreeSet::new();
        }
        old.iter()
            .chain(std::iter::once(&next))
            .filter_map(|e| e.effective().map(|v| v.target.service.clone()))
            .collect()
    }

    /// Removes a policy; returns the service it was attached to.
    pub fn delete(&mut self, key: &ObjKey) -> BTreeSet<ServiceKey> {
        self.entries
            .remove(key)
            .and_then(|e| e.effective().map(|v| v.target.service.clone()))
            .into_iter()
            .collect()
    }

    pub fn keys(&self) -> Vec<ObjKey> {
        self.entries.keys().cloned().collect()
    }

    pub fn object(&self, key: &ObjKey) -> Option<&PolicyObject> {
        self.entries.get(key).map(|e| &e.object)
    }

    /// The policies attached (or, invalid, still applying a kept version)
    /// to any of `services`.
    pub fn on_services(&self, services: &BTreeSet<ServiceKey>) -> Vec<ObjKey> {
        self.entries
            .iter()
            .filter(|(_, e)| {
                e.effective()
                    .is_some_and(|v| services.contains(&v.target.service))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// What the index holds for `service`: the winner of each target.
    /// Independent of whether the Service exists, so the index can hold it
    /// until the Service appears.
    pub fn service_policy(&self, service: &ServiceKey) -> Option<ServicePolicy> {
        let mut winners: BTreeMap<Option<u16>, &Entry> = BTreeMap::new();
        for e in self.entries.values() {
            let Some(v) = e.effective().filter(|v| &v.target.service == service) else {
                continue;
            };
            let slot = winners.entry(v.target.port).or_insert(e);
            if e.rank() < slot.rank() {
                *slot = e;
            }
        }
        if winners.is_empty() {
            return None;
        }
        let mut policy = ServicePolicy::default();
        for (port, e) in winners {
            if let Some(v) = e.effective() {
                policy.attach(e.object.source(), port, v.spec.clone());
            }
        }
        Some(policy)
    }

    /// The fault section of a policy, as a route's `ExtensionRef` to it
    /// applies it (an invalid policy with no version kept counts as
    /// missing).
    pub fn fault(&self, key: &ObjKey) -> PolicyFault {
        match self.entries.get(key).and_then(Entry::effective) {
            None => PolicyFault::Missing,
            Some(v) => match &v.spec.fault {
                Some(f) => PolicyFault::Fault(f.clone()),
                None => PolicyFault::NoFault,
            },
        }
    }

    /// The verdict on one policy; `ports(service)` gives the ports of a
    /// known Service, `None` for an unknown one.
    pub fn verdict(
        &self,
        key: &ObjKey,
        ports: impl Fn(&ServiceKey) -> Option<Vec<u16>>,
    ) -> Option<Verdict> {
        let entry = self.entries.get(key)?;
        let valid = match &entry.object.spec {
            Ok(v) => v,
            Err(error) => {
                let kept = entry
                    .kept
                    .as_ref()
                    .filter(|_| self.wins(entry))
                    .map(|(generation, _)| *generation);
                return Some(Verdict::Invalid {
                    error: error.clone(),
                    kept,
                });
            }
        };
        let target = valid.target.clone();
        match (ports(&target.service), target.port) {
            (None, _) => {
                return Some(Verdict::TargetNotFound {
                    target,
                    port_missing: false,
                })
            }
            (Some(known), Some(port)) if !known.contains(&port) => {
                return Some(Verdict::TargetNotFound {
                    target,
                    port_missing: true,
                })
            }
            _ => {}
        }
        Some(match self.winner(&target) {
            Some(w) if w.object.key != *key => Verdict::Conflicted {
                target,
                winner: w.object.source(),
            },
            _ => Verdict::Accepted { target },
        })
    }

    fn winner(&self, target: &Target) -> Option<&Entry> {
        self.entries
            .values()
            .filter(|e| e.effective().is_some_and(|v| &v.target == target))
            .min_by(|a, b| a.rank().cmp(&b.rank()))
    }

    fn wins(&self, entry: &Entry) -> bool {
        entry.effective().is_some_and(|v| {
            self.winner(&v.target)
                .is_some_and(|w| w.object.key == entry.object.key)
        })
    }

    /// The version of `key` applied right now, if it is applied: what an
    /// invalid update keeps. A version that lost its conflict was never
    /// applied, so it is not brought back later.
    fn applied_version(&self, key: &ObjKey) -> Option<(i64, Valid)> {
        let e = self.entries.get(key).filter(|e| self.wins(e))?;
        match &e.object.spec {
            Ok(v) => Some((e.object.generation, v.clone())),
            Err(_) => e.kept.clone(),
        }
    }
}
