//! `kind: TrafficPolicy` documents of mesh.yaml: read as the CRD's type,
//! checked by [`TrafficPolicySpec::validate`] (the schema's rules, as the
//! API server would apply them in a cluster), then attached to the
//! Services of the same file. A policy whose Service or port is not in the
//! file, or a second policy for the same target, is an error: in local
//! mode the file is the whole mesh, so either is a mistake, and applying
//! the rest would leave the mesh half-configured.

use std::collections::BTreeMap;

use mycel_crds::traffic_policy::Fault;
use mycel_crds::TrafficPolicy;
use serde_json::Value;

use super::{check_header, deserialize_strict, object_key, Doc, ParseError};
use crate::model::{Service, ServiceKey, ServicePolicy};

pub const KIND: &str = "TrafficPolicy";
const API_VERSION: &str = "mycel.io/v1alpha1";

/// One policy document, validated on its own.
pub struct Parsed {
    document: usize,
    namespace: String,
    name: String,
    policy: TrafficPolicy,
}

pub fn parse_document(document: usize, mut value: Value) -> Result<Parsed, ParseError> {
    let d = Doc { document };
    check_header(&d, &mut value, API_VERSION, KIND)?;
    let policy: TrafficPolicy = deserialize_strict(&d, value, "a mycel.io/v1alpha1 TrafficPolicy")?;
    let (namespace, name) = object_key(&d, &policy.metadata)?;
    policy
        .spec
        .validate()
        .map_err(|e| d.err(&e.field, e.message))?;
    Ok(Parsed {
        document,
        namespace,
        name,
        policy,
    })
}

/// The fault section of every policy by `(namespace, name)`, for routes'
/// `ExtensionRef`s.
pub fn faults(parsed: &[Parsed]) -> BTreeMap<(String, String), Option<Fault>> {
    parsed
        .iter()
        .map(|p| {
            (
                (p.namespace.clone(), p.name.clone()),
                p.policy.spec.fault.clone(),
            )
        })
        .collect()
}

/// Groups the policies by their Service, which must be in `services`.
pub fn attach(
    services: &[Service],
    parsed: Vec<Parsed>,
) -> Result<BTreeMap<ServiceKey, ServicePolicy>, ParseError> {
    let by_key: BTreeMap<ServiceKey, &Service> = services.iter().map(|s| (s.key(), s)).collect();
    let mut out: BTreeMap<ServiceKey, ServicePolicy> = BTreeMap::new();
    // (service, port) -> document of the first policy on it.
    let mut targets: BTreeMap<(ServiceKey, Option<u16>), usize> = BTreeMap::new();
    for p in parsed {
        let d = Doc {
            document: p.document,
        };
        let target = &p.policy.spec.target_ref;
        let key = ServiceKey::new(&target.name, &p.namespace)
            .map_err(|e| d.err("spec.targetRef.name", e.to_string()))?;
        let Some(svc) = by_key.get(&key) else {
            return Err(d.err(
                "spec.targetRef.name",
                format!(
                    "no Service {:?} in namespace {:?} in this file (a policy applies to a Service of its own namespace)",
                    target.name, p.namespace
                ),
            ));
        };
        if let Some(port) = target.port {
            if !svc.ports.iter().any(|sp| sp.port == port) {
                return Err(d.err(
                    "spec.targetRef.port",
                    format!(
                        "service {key} has no port {port} (it has {})",
                        svc.ports
                            .iter()
                            .map(|sp| sp.port.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        if let Some(first) = targets.insert((key.clone(), target.port), p.document) {
            let what = match target.port {
                Some(port) => format!("port {port} of service {key}"),
                None => format!("service {key}"),
            };
            return Err(ParseError::Document {
                document: p.document,
                message: format!(
                    "{what} already has a traffic policy (document {first}); a target takes one policy"
                ),
            });
        }
        let port = target.port;
        out.entry(key).or_default().attach(
            format!("{}/{}", p.namespace, p.name),
            port,
            p.policy.spec,
        );
    }
    Ok(out)
}
