//! Gateway API mesh routing (GAMMA): HTTPRoute and GRPCRoute objects,
//! read as the types generated from the upstream CRDs
//! (`mycel_crds::gateway_api`), validated and turned into the [`model`]
//! the `ROUTES` resource carries. Shared by mesh.yaml and the Kubernetes
//! watch, so a route means the same whichever source gave it.
//!
//! A route attaches to the Services its parentRefs name (mesh routing) and
//! to the Gateways they name ([`gateway`]: listeners, hostnames); parents
//! of other kinds are another controller's and are left alone.
//! Every refusal names the field as the API server would
//! (`spec.rules[0].backendRefs[1].weight`).

pub mod gateway;
pub mod model;

mod convert;
mod filters;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use mycel_crds::traffic_policy::Fault;
use mycel_crds::GatewayPolicySpec;

pub use convert::{grpc_route, http_route};
pub use model::{ListenerSide, Route, RouteKind, RouteRule};
pub use validate::PATTERN_SIZE_LIMIT;

use crate::model::ServiceKey;

/// The `controllerName` of this controller's entries in a route's
/// `status.parents` (a Gateway API domain-prefixed path).
pub const CONTROLLER_NAME: &str = "mycel.io/mesh-controller";

/// Why a route is refused, for its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A value the Gateway API refuses.
    Invalid,
    /// Valid Gateway API that Mycel does not implement.
    Unsupported,
    /// A reference to another namespace (needs a ReferenceGrant, which
    /// Mycel does not read yet).
    RefNotPermitted,
    /// An `ExtensionRef` to a TrafficPolicy or a GatewayPolicy that does
    /// not exist.
    RefNotFound,
}

/// A refused route: the field at fault, as the API server names it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RouteError {
    pub field: String,
    pub message: String,
    pub reason: Reason,
}

impl RouteError {
    fn new(field: impl Into<String>, message: impl Into<String>, reason: Reason) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            reason,
        }
    }

    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(field, message, Reason::Invalid)
    }
}

/// What a route's `ExtensionRef` to a TrafficPolicy of its namespace
/// finds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyFault {
    /// No TrafficPolicy of that name.
    Missing,
    /// The policy exists but has no `fault` section.
    NoFault,
    Fault(Fault),
}

/// The object being read: its namespace and name, and how its
/// `ExtensionRef`s find TrafficPolicies and GatewayPolicies (by name, in
/// that namespace).
pub struct Source<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub policies: &'a dyn Fn(&str) -> PolicyFault,
    /// A GatewayPolicy that passed [`GatewayPolicySpec::validate`]; None:
    /// no such policy (or none valid).
    pub gateway_policies: &'a dyn Fn(&str) -> Option<GatewayPolicySpec>,
}

/// A parentRef that names a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceParent {
    /// Position in `spec.parentRefs`.
    pub index: usize,
    pub service: ServiceKey,
    pub port: Option<u16>,
}

/// A Service a rule sends to or mirrors to, where the route names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRef {
    pub field: String,
    pub service: ServiceKey,
    pub port: u16,
}

/// A valid route object, not yet attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Converted {
    pub kind: RouteKind,
    /// `<namespace>/<name>`.
    pub name: String,
    pub parents: Vec<ServiceParent>,
    /// The parentRefs naming a Gateway.
    pub gateways: Vec<gateway::GatewayParent>,
    pub hostnames: Vec<String>,
    pub rules: Vec<RouteRule>,
    /// Every Service the rules send or mirror to, for the source to check
    /// they exist.
    pub refs: Vec<ServiceRef>,
    /// Where the first GatewayPolicy filter sits
    /// (`spec.rules[0].filters[1].extensionRef`), if any: only a gateway
    /// enforces one, so the route attaches to no Service parent.
    pub gateway_only: Option<String>,
}

impl Converted {
    /// The Services the route attaches to.
    pub fn parent_services(&self) -> BTreeSet<ServiceKey> {
        self.parents.iter().map(|p| p.service.clone()).collect()
    }

    /// Why the route cannot attach to a Service parent, if it cannot: a
    /// GatewayPolicy filter, which a Service's sidecars would not enforce
    /// (the requests would go through unchecked).
    pub fn mesh_refusal(&self) -> Option<String> {
        self.gateway_only.as_ref().map(|at| {
            format!(
                "{at} names a GatewayPolicy, which only a gateway enforces (a Service's sidecars would let the requests through unchecked): the route attaches to Gateways, not to a Service"
            )
        })
    }

    /// The route as `parent` receives it: the ports of every parentRef
    /// naming it, or every port when one of them names no port. None when
    /// no parentRef names it, or when the route refuses every Service
    /// parent ([`Self::mesh_refusal`]).
    pub fn for_parent(&self, parent: &ServiceKey) -> Option<Route> {
        if self.gateway_only.is_some() {
            return None;
        }
        let refs: Vec<&ServiceParent> = self
            .parents
            .iter()
            .filter(|p| &p.service == parent)
            .collect();
        if refs.is_empty() {
            return None;
        }
        let mut ports: Vec<u16> = if refs.iter().any(|p| p.port.is_none()) {
            Vec::new()
        } else {
            refs.iter().filter_map(|p| p.port).collect()
        };
        ports.sort_unstable();
        ports.dedup();
        Some(Route {
            name: self.name.clone(),
            kind: self.kind,
            ports,
            hostnames: self.hostnames.clone(),
            rules: self.rules.clone(),
            listener: ListenerSide::Any,
        })
    }
}
