//! `GatewayPolicy` objects in Kubernetes mode, kept as the authorization
//! kinds are ([`super::authz`]: one object the type cannot read is one
//! invalid policy, an invalid update keeps the last valid version, and the
//! `Accepted` condition says which). Each is checked by
//! [`GatewayPolicySpec::validate`], the rules mesh.yaml is held to, and
//! found by the `ExtensionRef`s of routes of its namespace, which copy it
//! in: the watch converts the routes again on every change
//! ([`super::routes::Routes::reconvert`]), as for a TrafficPolicy.

use kube::api::DynamicObject;
use mycel_api::authz::InvalidPolicy;
use mycel_crds::GatewayPolicySpec;

use super::authz::{read_as, PolicyObject, PolicyObjects};

pub type GatewayPolicies = PolicyObjects<GatewayPolicySpec>;

/// The store the watch keeps.
pub fn store() -> GatewayPolicies {
    PolicyObjects::accepted_saying(
        "valid; gateways apply it to the route rules whose ExtensionRef names it",
    )
}

pub fn read(obj: &DynamicObject) -> Option<PolicyObject<GatewayPolicySpec>> {
    read_as(obj, |_, _, spec: &GatewayPolicySpec| {
        spec.validate()
            .map(|()| spec.clone())
            .map_err(|e| InvalidPolicy {
                field: e.field,
                problem: e.message,
            })
    })
}

/// A policy as routes' `ExtensionRef`s find it, by namespace and name
/// (an invalid one that keeps no valid version counts as missing).
pub fn lookup(store: &GatewayPolicies) -> impl Fn(&str, &str) -> Option<GatewayPolicySpec> + '_ {
    |namespace, name| {
        store
            .effective(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
}

#[cfg(test)]
mod tests;
