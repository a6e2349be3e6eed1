//! A `TrafficPolicy` as the watch delivers it, read field by field.
//!
//! The watch carries untyped objects (`DynamicObject`): with the typed
//! `Api<TrafficPolicy>`, one object the type cannot read (a CRD installed
//! from an older chart, whose schema let it through) would fail the whole
//! list, and with it every policy of the cluster. Here such an object is
//! one invalid policy, reported on its own status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DynamicObject;
use mycel_crds::traffic_policy::FieldError;
use mycel_crds::{TrafficPolicySpec, TrafficPolicyStatus};
use serde_json::Value;

use crate::model::ServiceKey;
use crate::sources::k8s::cluster::{obj_key, ObjKey};

/// What a policy is attached to: a Service of its own namespace, one port
/// of it or all of them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub service: ServiceKey,
    pub port: Option<u16>,
}

/// A spec that passed [`TrafficPolicySpec::validate`], with its target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Valid {
    pub target: Target,
    pub spec: TrafficPolicySpec,
}

/// One `TrafficPolicy` object.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyObject {
    /// `(namespace, name)`.
    pub key: ObjKey,
    pub generation: i64,
    /// Decides conflicts: the oldest policy on a target wins.
    pub created: Option<Time>,
    pub spec: Result<Valid, FieldError>,
    /// The status as last read, to write only what differs.
    pub status: Option<TrafficPolicyStatus>,
}

impl PolicyObject {
    /// `<namespace>/<name>`, as statuses and `ServicePolicy::sources` name
    /// policies.
    pub fn source(&self) -> String {
        format!("{}/{}", self.key.0, self.key.1)
    }
}

/// Reads one object; `None` without a name or namespace (the API server
/// always sets both on a namespaced kind).
pub fn read(obj: &DynamicObject) -> Option<PolicyObject> {
    let key = obj_key(&obj.metadata)?;
    let spec = read_spec(&key.0, obj.data.get("spec"));
    // A status this version cannot read is simply written anew.
    let status = obj
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    Some(PolicyObject {
        generation: obj.metadata.generation.unwrap_or(0),
        created: obj.metadata.creation_timestamp.clone(),
        spec,
        status,
        key,
    })
}

fn read_spec(namespace: &str, raw: Option<&Value>) -> Result<Valid, FieldError> {
    let raw = match raw {
        Some(v) if !v.is_null() => v.clone(),
        _ => {
            return Err(FieldError {
                field: "spec".into(),
                message: "is missing".into(),
            })
        }
    };
    let spec: TrafficPolicySpec = serde_path_to_error::deserialize(raw).map_err(|e| {
        let path = e.path().to_string();
        FieldError {
            field: if path == "." {
                "spec".into()
            } else {
                format!("spec.{path}")
            },
            message: e.into_inner().to_string(),
        }
    })?;
    spec.validate()?;
    let service = ServiceKey::new(&spec.target_ref.name, namespace).map_err(|e| FieldError {
        field: "spec.targetRef.name".into(),
        message: e.to_string(),
    })?;
    Ok(Valid {
        target: Target {
            service,
            port: spec.target_ref.port,
        },
        spec,
    })
}
