//! An HTTPRoute or GRPCRoute as the watch delivers it. Untyped on the
//! wire (`DynamicObject`), as policies are: one object the generated type
//! cannot read is one refused route, not a failed list of every route.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DynamicObject;
use mycel_crds::gateway_api::grpcroutes::GrpcRouteSpec;
use mycel_crds::gateway_api::httproutes::HttpRouteSpec;
use serde_json::Value;

use super::PolicyLookup;
use crate::routes::{self, Converted, Reason, RouteError, RouteKind, Source};

/// `(kind, namespace, name)`.
pub type RouteKey = (RouteKind, String, String);

#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    Http(Box<HttpRouteSpec>),
    Grpc(Box<GrpcRouteSpec>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct RouteObject {
    pub key: RouteKey,
    pub generation: i64,
    /// Orders the routes of one parent: oldest first.
    pub created: Option<Time>,
    /// Sent with a status write so that a write over a newer object (and
    /// another controller's entries in it) fails instead of erasing them.
    pub resource_version: Option<String>,
    pub spec: Result<Spec, RouteError>,
    /// `spec.parentRefs` as written, echoed in status.
    pub parent_refs: Vec<Value>,
    /// `status.parents` as last read, every controller's.
    pub status_parents: Vec<Value>,
}

impl RouteObject {
    /// `<namespace>/<name>`.
    pub fn source(&self) -> String {
        format!("{}/{}", self.key.1, self.key.2)
    }

    /// Converts the spec, looking the policies its `ExtensionRef`s name
    /// up in the route's namespace.
    pub fn convert(&self, policies: PolicyLookup<'_>) -> Result<Converted, RouteError> {
        let namespace = &self.key.1;
        let faults = |name: &str| (policies.faults)(namespace, name);
        let gateway_policies = |name: &str| (policies.gateway_policies)(namespace, name);
        let source = Source {
            namespace,
            name: &self.key.2,
            policies: &faults,
            gateway_policies: &gateway_policies,
        };
        match &self.spec {
            Ok(Spec::Http(s)) => routes::http_route(&source, s),
            Ok(Spec::Grpc(s)) => routes::grpc_route(&source, s),
            Err(e) => Err(e.clone()),
        }
    }
}

/// Reads one object of `kind`; `None` without a name or namespace.
pub fn read(kind: RouteKind, obj: &DynamicObject) -> Option<RouteObject> {
    let namespace = obj.metadata.namespace.clone()?;
    let name = obj.metadata.name.clone()?;
    let raw = obj.data.get("spec").cloned().unwrap_or(Value::Null);
    let list = |v: Option<&Value>| {
        v.and_then(Value::as_array)
            .map(|a| a.to_vec())
            .unwrap_or_default()
    };
    let parent_refs = list(raw.get("parentRefs"));
    let status_parents = list(obj.data.get("status").and_then(|s| s.get("parents")));
    let spec = match kind {
        RouteKind::Http => typed(raw).map(|s| Spec::Http(Box::new(s))),
        RouteKind::Grpc => typed(raw).map(|s| Spec::Grpc(Box::new(s))),
    };
    Some(RouteObject {
        key: (kind, namespace, name),
        generation: obj.metadata.generation.unwrap_or(0),
        created: obj.metadata.creation_timestamp.clone(),
        resource_version: obj.metadata.resource_version.clone(),
        spec,
        parent_refs,
        status_parents,
    })
}

fn typed<T: serde::de::DeserializeOwned>(raw: Value) -> Result<T, RouteError> {
    if raw.is_null() {
        return Err(RouteError {
            field: "spec".into(),
            message: "is missing".into(),
            reason: Reason::Invalid,
        });
    }
    serde_path_to_error::deserialize(raw).map_err(|e| {
        let path = e.path().to_string();
        RouteError {
            field: if path == "." {
                "spec".into()
            } else {
                format!("spec.{path}")
            },
            message: e.into_inner().to_string(),
            reason: Reason::Invalid,
        }
    })
}
