//! Gateways and GatewayClasses in Kubernetes mode: the objects the watch
//! saw, which of them are this controller's, and the routes attached to
//! each of its Gateways. Pure and synchronous, like [`super::Routes`].
//!
//! A GatewayClass is ours when its `spec.controllerName` is
//! [`GATEWAY_CONTROLLER_NAME`], and a Gateway when its class is ours. A
//! Gateway of another class (or a class not seen yet) is another
//! controller's: a route's parentRef to it, or to a Gateway that does not
//! exist, is skipped (no status entry, nothing served), never an error
//! that would drop the route's other parents. A route attaches to our
//! Gateways by the same pure rules as in mesh.yaml
//! ([`crate::routes::gateway`]).

pub mod status;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use kube::api::DynamicObject;
use mycel_crds::gateway_api::gateways::GatewaySpec;
use serde_json::Value;

use super::cluster::ObjKey;
use super::routes::{ParentVerdict, RouteKey, Routes};
use super::tls_secrets::TlsSecrets;
use crate::model::{Route, ServiceKey};
use crate::routes::gateway::certificates::{self, GatewayCertificates, Unresolved};
use crate::routes::gateway::{self, Attachment, Gateway, GATEWAY_CONTROLLER_NAME, GROUP};
use crate::routes::{Converted, Reason, RouteError};

/// A GatewayClass as the watch delivers it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassObject {
    pub name: String,
    pub generation: i64,
    pub resource_version: Option<String>,
    pub controller: Option<String>,
    /// `status.conditions` as last read.
    pub conditions: Vec<Value>,
}

impl ClassObject {
    pub fn ours(&self) -> bool {
        self.controller.as_deref() == Some(GATEWAY_CONTROLLER_NAME)
    }
}

/// A Gateway as the watch delivers it.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayObject {
    /// `(namespace, name)`.
    pub key: ObjKey,
    pub generation: i64,
    pub resource_version: Option<String>,
    pub class: String,
    /// Read by the pure Gateway logic; an error is a Gateway refused whole.
    pub gateway: Result<Gateway, RouteError>,
    /// `status` as last read (`Null` when none).
    pub status: Value,
}

/// Reads a GatewayClass; `None` without a name.
pub fn read_class(obj: &DynamicObject) -> Option<ClassObject> {
    let status = obj.data.get("status");
    Some(ClassObject {
        name: obj.metadata.name.clone()?,
        generation: obj.metadata.generation.unwrap_or(0),
        resource_version: obj.metadata.resource_version.clone(),
        controller: obj
            .data
            .get("spec")
            .and_then(|s| s.get("controllerName"))
            .and_then(Value::as_str)
            .map(str::to_string),
        conditions: list(status.and_then(|s| s.get("conditions"))),
    })
}

/// Reads a Gateway; `None` without a name or namespace.
pub fn read_gateway(obj: &DynamicObject) -> Option<GatewayObject> {
    let namespace = obj.metadata.namespace.clone()?;
    let name = obj.metadata.name.clone()?;
    let raw = obj.data.get("spec").cloned().unwrap_or(Value::Null);
    let class = raw
        .get("gatewayClassName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let gateway = serde_path_to_error::deserialize::<_, GatewaySpec>(raw)
        .map_err(|e| RouteError {
            field: format!("spec.{}", e.path()),
            message: e.into_inner().to_string(),
            reason: Reason::Invalid,
        })
        .and_then(|spec| gateway::gateway(&namespace, &name, &spec))
        .and_then(|g| g.with_annotations(obj.metadata.annotations.as_ref()));
    Some(GatewayObject {
        key: (namespace, name),
        generation: obj.metadata.generation.unwrap_or(0),
        resource_version: obj.metadata.resource_version.clone(),
        class,
        gateway,
        status: obj.data.get("status").cloned().unwrap_or(Value::Null),
    })
}

fn list(v: Option<&Value>) -> Vec<Value> {
    v.and_then(Value::as_array).cloned().unwrap_or_default()
}

#[derive(Clone, Debug, Default)]
pub struct Gateways {
    classes: BTreeMap<String, ClassObject>,
    gateways: BTreeMap<ObjKey, GatewayObject>,
}

/// What the routes make of our Gateways.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Every Gateway of ours that is valid, with its routes oldest first
    /// (for the index: `GATEWAY_ROUTES`).
    pub routes: BTreeMap<ServiceKey, Vec<Route>>,
    /// Routes attached to each listener of each of our Gateways, by
    /// listener position.
    pub attached: BTreeMap<ObjKey, Vec<u32>>,
    /// The verdict on each parentRef naming one of our Gateways, by route
    /// and position in `spec.parentRefs`.
    pub verdicts: BTreeMap<RouteKey, Vec<(usize, ParentVerdict)>>,
    /// The HTTPS listener references of each of our Gateways that did not
    /// resolve, by listener position (see [`Gateways::certificates`]).
    pub unresolved: BTreeMap<ObjKey, BTreeMap<usize, Unresolved>>,
}

impl Gateways {
    /// Adds or replaces a GatewayClass.
    pub fn apply_class(&mut self, class: ClassObject) {
        self.classes.insert(class.name.clone(), class);
    }

    pub fn delete_class(&mut self, name: &str) {
        self.classes.remove(name);
    }

    pub fn class_names(&self) -> Vec<String> {
        self.classes.keys().cloned().collect()
    }

    pub fn apply_gateway(&mut self, gateway: GatewayObject) {
        self.gateways.insert(gateway.key.clone(), gateway);
    }

    pub fn delete_gateway(&mut self, key: &ObjKey) {
        self.gateways.remove(key);
    }

    pub fn gateway_keys(&self) -> Vec<ObjKey> {
        self.gateways.keys().cloned().collect()
    }

    /// Our GatewayClasses.
    pub fn our_classes(&self) -> impl Iterator<Item = &ClassObject> {
        self.classes.values().filter(|c| c.ours())
    }

    /// The Gateways of our classes.
    pub fn ours(&self) -> impl Iterator<Item = &GatewayObject> {
        self.gateways
            .values()
            .filter(|g| self.classes.get(&g.class).is_some_and(ClassObject::ours))
    }

    /// One of our Gateways by `<name>.<namespace>`.
    fn our_gateway(&self, key: &ServiceKey) -> Option<&GatewayObject> {
        let obj = self
            .gateways
            .get(&(key.namespace().to_string(), key.name().to_string()))?;
        self.classes
            .get(&obj.class)
            .is_some_and(ClassObject::ours)
            .then_some(obj)
    }

    /// The certificates of each of our valid Gateways with HTTPS
    /// listeners (for the index), and the references that did not resolve
    /// (for their statuses).
    pub fn certificates(
        &self,
        secrets: &TlsSecrets,
    ) -> (
        BTreeMap<ServiceKey, GatewayCertificates>,
        BTreeMap<ObjKey, BTreeMap<usize, Unresolved>>,
    ) {
        let mut certs = BTreeMap::new();
        let mut unresolved = BTreeMap::new();
        for g in self.ours() {
            let Ok(gw) = &g.gateway else { continue };
            if !gw.listeners.iter().any(|l| l.https) {
                continue;
            }
            let (c, u) = certificates::resolve(gw, &gw.service_account, |r| secrets.get(r));
            certs.insert(gw.key.clone(), c);
            if !u.is_empty() {
                unresolved.insert(g.key.clone(), u);
            }
        }
        (certs, unresolved)
    }

    /// Attaches every route to our Gateways. `resolved` is a valid route's
    /// `ResolvedRefs` (its backends exist).
    pub fn attach(
        &self,
        routes: &Routes,
        resolved: impl Fn(&Converted) -> (bool, &'static str, String),
    ) -> Outcome {
        let mut out = Outcome::default();
        for g in self.ours() {
            if let Ok(gw) = &g.gateway {
                out.routes.insert(gw.key.clone(), Vec::new());
                out.attached
                    .insert(g.key.clone(), vec![0; gw.listeners.len()]);
            }
        }
        for view in routes.views() {
            let object = view.object;
            let namespace = &object.key.1;
            let mut verdicts = Vec::new();
            // Per Gateway: the attachments of this route's parentRefs.
            let mut attached: BTreeMap<ServiceKey, Vec<Attachment>> = BTreeMap::new();
            if let Some(c) = view.serving {
                for p in &c.gateways {
                    let Some(Ok(gw)) = self.our_gateway(&p.gateway).map(|g| &g.gateway) else {
                        continue;
                    };
                    if let Ok(a) = gateway::attach(gw, p, c.kind, namespace, &c.hostnames) {
                        attached.entry(gw.key.clone()).or_default().push(a);
                    }
                }
                for (key, list) in &attached {
                    let refs: Vec<&Attachment> = list.iter().collect();
                    if let Some(r) = out.routes.get_mut(key) {
                        r.extend(gateway::gateway_route(c, &refs));
                    }
                    let listeners: BTreeSet<usize> = list
                        .iter()
                        .flat_map(|a| a.listeners.iter().copied())
                        .collect();
                    let mut counts = out
                        .attached
                        .get_mut(&(key.namespace().to_string(), key.name().to_string()));
                    for i in listeners {
                        if let Some(n) = counts.as_deref_mut().and_then(|c| c.get_mut(i)) {
                            *n += 1;
                        }
                    }
                }
            }
            for (i, key) in gateway_refs(object) {
                let Some(g) = self.our_gateway(&key) else {
                    continue;
                };
                let verdict = match (&view.refused, &g.gateway, view.serving) {
                    (Some(refused), _, _) => refused.clone(),
                    (None, Err(e), _) => ParentVerdict {
                        accepted: (
                            false,
                            "NoMatchingParent",
                            format!("Gateway {key} is not accepted: {e}"),
                        ),
                        resolved: (true, "ResolvedRefs", "every reference resolved".into()),
                    },
                    (None, Ok(gw), Some(c)) => {
                        let accepted = match c.gateways.iter().find(|p| p.index == i) {
                            Some(p) => {
                                match gateway::attach(gw, p, c.kind, namespace, &c.hostnames) {
                                    Ok(_) => {
                                        (true, "Accepted", format!("attached to Gateway {key}"))
                                    }
                                    Err(e) => (false, e.reason.as_str(), e.message),
                                }
                            }
                            None => continue,
                        };
                        ParentVerdict {
                            accepted,
                            resolved: resolved(c),
                        }
                    }
                    (None, Ok(_), None) => continue,
                };
                verdicts.push((i, verdict));
            }
            if !verdicts.is_empty() {
                out.verdicts.insert(object.key.clone(), verdicts);
            }
        }
        out
    }
}

/// The parentRefs of a route that name a Gateway, as written (so that a
/// refused route's entries are still found): kind and group default to
/// the Gateway API's, the namespace to the route's.
fn gateway_refs(object: &super::routes::RouteObject) -> Vec<(usize, ServiceKey)> {
    object
        .parent_refs
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let s = |k: &str| p.get(k).and_then(Value::as_str);
            if s("kind").unwrap_or("Gateway") != "Gateway" || s("group").unwrap_or(GROUP) != GROUP {
                return None;
            }
            let key = ServiceKey::new(s("name")?, s("namespace").unwrap_or(&object.key.1)).ok()?;
            Some((i, key))
        })
        .collect()
}
