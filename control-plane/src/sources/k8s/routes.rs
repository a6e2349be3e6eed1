//! HTTPRoutes and GRPCRoutes in Kubernetes mode: the objects the watch
//! saw, converted by [`crate::routes`] (the rules mesh.yaml is held to),
//! the routes of each parent Service, and what each Service parentRef's
//! status entry says. Pure and synchronous, like [`super::Policies`]:
//! every change returns the parents it may have altered.
//!
//! A route refused on an update keeps its last valid conversion applied,
//! as proxies keep their last good config; nothing is kept across a
//! controller restart. A route's `ExtensionRef`s read TrafficPolicies and
//! GatewayPolicies, so a change of either converts the routes again
//! ([`Routes::reconvert`]). A route that names a GatewayPolicy attaches to
//! no Service parent (only a gateway enforces one); those parents say so.
//! Routes of one parent are ordered oldest first (`creationTimestamp`,
//! then `<namespace>/<name>`), the order the Gateway API breaks ties by.

pub mod object;
pub mod status;
pub mod write;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use mycel_crds::GatewayPolicySpec;

use crate::model::{Route, ServiceKey};
use crate::routes::{Converted, PolicyFault, Reason, RouteError};
pub use object::{RouteKey, RouteObject};

#[derive(Clone, Debug)]
struct Entry {
    object: RouteObject,
    converted: Result<Converted, RouteError>,
    /// While `converted` is an error: the last valid conversion and the
    /// generation it came from, which stays applied.
    kept: Option<(i64, Converted)>,
}

impl Entry {
    fn effective(&self) -> Option<&Converted> {
        match &self.converted {
            Ok(c) => Some(c),
            Err(_) => self.kept.as_ref().map(|(_, c)| c),
        }
    }

    fn parents(&self) -> BTreeSet<ServiceKey> {
        self.effective()
            .map(Converted::parent_services)
            .unwrap_or_default()
    }

    fn applied(&self) -> Option<(i64, Converted)> {
        match &self.converted {
            Ok(c) => Some((self.object.generation, c.clone())),
            Err(_) => self.kept.clone(),
        }
    }
}

/// How routes find the policies their `ExtensionRef`s name, by namespace
/// and name.
#[derive(Clone, Copy)]
pub struct PolicyLookup<'a> {
    /// A TrafficPolicy's fault section.
    pub faults: &'a dyn Fn(&str, &str) -> PolicyFault,
    /// A GatewayPolicy (valid, or the valid version it keeps).
    pub gateway_policies: &'a dyn Fn(&str, &str) -> Option<GatewayPolicySpec>,
}

#[cfg(test)]
impl PolicyLookup<'static> {
    /// Finds no policy.
    pub const NONE: Self = Self {
        faults: &|_, _| PolicyFault::Missing,
        gateway_policies: &|_, _| None,
    };
}

#[derive(Clone, Debug, Default)]
pub struct Routes {
    entries: BTreeMap<RouteKey, Entry>,
}

/// What one Service parentRef's conditions say: `(status, reason,
/// message)` of `Accepted` and of `ResolvedRefs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentVerdict {
    pub accepted: (bool, &'static str, String),
    pub resolved: (bool, &'static str, String),
}

impl Routes {
    /// Adds or replaces a route; returns the parents whose routes may have
    /// changed.
    pub fn apply(
        &mut self,
        object: RouteObject,
        policies: PolicyLookup<'_>,
    ) -> BTreeSet<ServiceKey> {
        let converted = object.convert(policies);
        let key = object.key.clone();
        let old = self.entries.remove(&key);
        let kept = match (&converted, &old) {
            (Ok(_), _) | (_, None) => None,
            (Err(_), Some(e)) => e.applied(),
        };
        let next = Entry {
            object,
            converted,
            kept,
        };
        let mut affected = next.parents();
        if let Some(old) = &old {
            affected.extend(old.parents());
        }
        self.entries.insert(key, next);
        affected
    }

    pub fn delete(&mut self, key: &RouteKey) -> BTreeSet<ServiceKey> {
        self.entries
            .remove(key)
            .map(|e| e.parents())
            .unwrap_or_default()
    }

    /// Converts every route again (a TrafficPolicy or a GatewayPolicy
    /// changed); returns the parents of the routes whose conversion changed.
    pub fn reconvert(&mut self, policies: PolicyLookup<'_>) -> BTreeSet<ServiceKey> {
        let keys: Vec<RouteKey> = self.entries.keys().cloned().collect();
        let mut affected = BTreeSet::new();
        for key in keys {
            let Some(entry) = self.entries.get(&key) else {
                continue;
            };
            let converted = entry.object.convert(policies);
            if converted == entry.converted {
                continue;
            }
            let object = entry.object.clone();
            affected.extend(self.apply(object, policies));
        }
        affected
    }

    /// Keys of the routes of one kind, for a re-list.
    pub fn keys(&self) -> Vec<RouteKey> {
        self.entries.keys().cloned().collect()
    }

    pub fn object(&self, key: &RouteKey) -> Option<&RouteObject> {
        self.entries.get(key).map(|e| &e.object)
    }

    /// The routes attached to `parent`, oldest first.
    pub fn routes_of(&self, parent: &ServiceKey) -> Vec<Route> {
        let mut attached: Vec<(&Entry, Route)> = self
            .entries
            .values()
            .filter_map(|e| Some((e, e.effective()?.for_parent(parent)?)))
            .collect();
        attached.sort_by(|(a, _), (b, _)| age(&a.object).cmp(&age(&b.object)));
        attached.into_iter().map(|(_, r)| r).collect()
    }

    /// Every route oldest first, as a Gateway reads them: the conversion
    /// it serves (the last valid one of a refused route) and, when it is
    /// refused, the verdict its parent entries carry.
    pub fn views(&self) -> Vec<RouteView<'_>> {
        let mut out: Vec<RouteView<'_>> = self
            .entries
            .values()
            .map(|e| RouteView {
                object: &e.object,
                serving: e.effective(),
                refused: e
                    .converted
                    .as_ref()
                    .err()
                    .map(|err| refused(err, e.kept.as_ref().map(|(g, _)| *g))),
            })
            .collect();
        out.sort_by(|a, b| age(a.object).cmp(&age(b.object)));
        out
    }

    /// The verdict on each Service parentRef of a route, by position in
    /// `spec.parentRefs`. `ports(service)` gives the ports of a known
    /// Service, `None` for an unknown one.
    pub fn verdicts(
        &self,
        key: &RouteKey,
        ports: impl Fn(&ServiceKey) -> Option<Vec<u16>>,
    ) -> Vec<(usize, ParentVerdict)> {
        let Some(entry) = self.entries.get(key) else {
            return Vec::new();
        };
        let ours = service_parent_positions(&entry.object);
        let converted = match &entry.converted {
            Ok(c) => c,
            Err(e) => {
                let v = refused(e, entry.kept.as_ref().map(|(g, _)| *g));
                return ours.into_iter().map(|i| (i, v.clone())).collect();
            }
        };
        let resolved = resolved(converted, &ports);
        let mesh_refusal = converted.mesh_refusal();
        ours.into_iter()
            .filter_map(|i| {
                let parent = converted.parents.iter().find(|p| p.index == i)?;
                let name = parent.service.name();
                let accepted = match (&mesh_refusal, ports(&parent.service), parent.port) {
                    // The Gateway API's reason for filters a parent cannot take.
                    (Some(why), _, _) => (false, "IncompatibleFilters", why.clone()),
                    (None, None, _) => (
                        false,
                        "NoMatchingParent",
                        format!(
                            "Service {name} does not exist in namespace {}; the route attaches once it does",
                            parent.service.namespace()
                        ),
                    ),
                    (None, Some(known), Some(port)) if !known.contains(&port) => (
                        false,
                        "NoMatchingParent",
                        format!("Service {name} has no port {port}"),
                    ),
                    _ => (true, "Accepted", format!("attached to Service {name}")),
                };
                Some((
                    i,
                    ParentVerdict {
                        accepted,
                        resolved: resolved.clone(),
                    },
                ))
            })
            .collect()
    }
}

/// Orders routes oldest first; objects without a creation time (never from
/// an API server) last.
fn age(
    o: &RouteObject,
) -> (
    bool,
    &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    &str,
    &str,
) {
    (o.created.is_none(), &o.created, &o.key.1, &o.key.2)
}

/// One route as [`Routes::views`] shows it.
pub struct RouteView<'a> {
    pub object: &'a RouteObject,
    pub serving: Option<&'a Converted>,
    pub refused: Option<ParentVerdict>,
}

/// Positions of the parentRefs this controller answers for: those naming
/// a Service (another kind belongs to a gateway's controller).
pub fn service_parent_positions(object: &RouteObject) -> Vec<usize> {
    object
        .parent_refs
        .iter()
        .enumerate()
        .filter(|(_, p)| p.get("kind").and_then(|k| k.as_str()) == Some("Service"))
        .map(|(i, _)| i)
        .collect()
}

fn refused(e: &RouteError, kept: Option<i64>) -> ParentVerdict {
    let mut message = format!("not applied: {e}");
    if let Some(generation) = kept {
        message.push_str(&format!(
            "; the previous version (generation {generation}) stays applied"
        ));
    }
    let resolved = match e.reason {
        Reason::RefNotPermitted => (false, "RefNotPermitted", e.to_string()),
        Reason::RefNotFound => (false, "BackendNotFound", e.to_string()),
        Reason::Invalid | Reason::Unsupported => {
            (true, "ResolvedRefs", "no reference was refused".to_string())
        }
    };
    ParentVerdict {
        accepted: (false, "UnsupportedValue", message),
        resolved,
    }
}

/// `ResolvedRefs` of a valid route: every Service it sends or mirrors to
/// exists with the port named.
pub fn resolved(
    c: &Converted,
    ports: &impl Fn(&ServiceKey) -> Option<Vec<u16>>,
) -> (bool, &'static str, String) {
    for r in &c.refs {
        let name = r.service.name();
        match ports(&r.service) {
            None => {
                return (
                    false,
                    "BackendNotFound",
                    format!("{}: Service {name} does not exist", r.field),
                )
            }
            Some(known) if !known.contains(&r.port) => {
                return (
                    false,
                    "BackendNotFound",
                    format!("{}: Service {name} has no port {}", r.field, r.port),
                )
            }
            Some(_) => {}
        }
    }
    (true, "ResolvedRefs", "every reference resolved".to_string())
}

/// The ports of each Service the cluster knows (`None`: no such Service).
pub fn ports(cluster: &super::Cluster) -> impl Fn(&ServiceKey) -> Option<Vec<u16>> + '_ {
    |svc: &ServiceKey| {
        cluster
            .service_view(svc)
            .service
            .map(|s| s.ports.iter().map(|p| p.port).collect())
    }
}

/// Attaches every route to our Gateways (see [`super::gateways`]).
pub fn attach_gateways(
    cluster: &super::Cluster,
    store: &Routes,
    gateways: &super::gateways::Gateways,
) -> super::gateways::Outcome {
    let ports = ports(cluster);
    gateways.attach(store, |c| resolved(c, &ports))
}

/// Sends the statuses each route, each GatewayClass of ours and each
/// Gateway of ours should carry (`None` when it already does, which drops
/// a queued write). A route's entries for its Service parents and for its
/// Gateway parents are decided here together: one write per route.
pub fn send_statuses(
    cluster: &super::Cluster,
    store: &Routes,
    gateways: &super::gateways::Gateways,
    outcome: &super::gateways::Outcome,
    tx: &tokio::sync::mpsc::UnboundedSender<write::StatusUpdate>,
) {
    use super::gateways::status as gw_status;
    use write::{StatusUpdate, Target};
    // Whole seconds: the API server keeps no more, and a value it would
    // round differs from what it echoes back.
    let now = k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let ports = ports(cluster);
    // Only a closed writer fails a send, at shutdown.
    for key in store.keys() {
        let Some(object) = store.object(&key) else {
            continue;
        };
        let verdicts = store.verdicts(&key, &ports);
        let on_gateways = outcome
            .verdicts
            .get(&key)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let write = status::desired(object, &verdicts, on_gateways, &now)
            .map(|parents| (object.resource_version.clone(), parents));
        let _ = tx.send(StatusUpdate::route(key, write));
    }
    for class in gateways.our_classes() {
        let write = gw_status::class(class, &now).map(|s| (class.resource_version.clone(), s));
        let _ = tx.send(StatusUpdate {
            key: Target::GatewayClass(class.name.clone()),
            write,
        });
    }
    for gw in gateways.ours() {
        let attached = outcome
            .attached
            .get(&gw.key)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let unresolved = outcome.unresolved.get(&gw.key);
        let write = gw_status::gateway(gw, attached, unresolved, &now)
            .map(|s| (gw.resource_version.clone(), s));
        let _ = tx.send(StatusUpdate {
            key: Target::Gateway(gw.key.0.clone(), gw.key.1.clone()),
            write,
        });
    }
}
